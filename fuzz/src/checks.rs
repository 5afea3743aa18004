//! The properties the fuzz targets check, as plain functions of the fuzz input's bytes.
//!
//! The fuzz targets (`fuzz/fuzz_targets/*.rs`, on nightly with cargo-fuzz) and the stable test
//! suite (`tests/fuzz_properties.rs`, which includes this file with `#[path]`) call the very same
//! functions, so the short run in the normal suite and a long fuzzing run check the same things.
//! Everything here goes through the crate's public API only.
//!
//! * [`Harness::publish_body`]: a `POST /publish` with one of several content types and any body
//!   gets 200 (with an event id), a 4xx with a reason, never a 5xx or a panic; 200 only when the
//!   body is UTF-8 (JSON) or percent-decodes to UTF-8 (form).
//! * [`Harness::subscribe_query`]: a `GET /events` from an EventSource client with any query and
//!   any `Last-Event-ID` gets a stream or a 400 with a reason, never a 5xx; the resume id (header,
//!   or a `lastEventID` query parameter of any bytes) never changes the status, and an id the hub
//!   did not issue opens the stream with the `resync` notice.
//! * [`encode`]: any event the constructors accept encodes to one frame that the reference reader
//!   of the WHATWG algorithm (`test_support::sse_spec`) reads back as exactly that event.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use test_support::sse_spec::{SpecEvent, spec_parse, sse_normalized};
use tower::{ServiceExt, service_fn};
use tower_sse_pubsub::{
    DEFAULT_EVENTS_PATH, DEFAULT_PUBLISH_PATH, Event, EventId, Frame, Hub, MAX_EVENT_ID_LEN,
    MAX_EVENT_TYPE_LEN, RESUME_HEADER, RESYNC_EVENT, ResponseBody, Topic,
};

type Body = Full<Bytes>;

/// The hub's body limit, set explicitly so the publish oracle knows it.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The topic the harness publishes its seed events to, so resume ids can name real events.
pub const SEED_TOPIC: &str = "a";

/// A hub, a runtime to drive requests through its layer, and the ids of the events it published
/// when it was made.
///
/// `block_on` returns as soon as a request is answered, so the hub's keep-alive ticker (a
/// spawned task) rarely runs: the waiters that departed streams leave in the ticker's list and
/// in a quiet topic's list are only cleared at their next firing, so a long fuzzing run's memory
/// grows by some tens of bytes per subscribe.
pub struct Harness {
    hub: Hub,
    runtime: tokio::runtime::Runtime,
    seed_ids: Vec<EventId>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A hub as `tests/hostile_inputs.rs` builds it, with three events published to
    /// [`SEED_TOPIC`].
    pub fn new() -> Self {
        let hub = Hub::builder()
            .allow_anonymous_publish()
            .max_topics_per_request(8)
            .max_body_bytes(BODY_LIMIT)
            .build()
            .expect("valid hub");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let publisher = hub.publisher();
        let seed_ids = runtime.block_on(async {
            let mut ids = Vec::new();
            for data in ["one", "two\nlines", "three"] {
                let event = Event::text(data).expect("non-empty data");
                ids.push(
                    publisher
                        .publish(SEED_TOPIC, event)
                        .await
                        .expect("published"),
                );
            }
            ids
        });
        Self {
            hub,
            runtime,
            seed_ids,
        }
    }

    /// The ids of the seed events, oldest first.
    pub fn seed_ids(&self) -> &[EventId] {
        &self.seed_ids
    }

    /// Runs `request` through the hub's layer (in front of an app that answers 200 to anything
    /// else) to its response, and reads at most the first few chunks of the body that are ready
    /// at once: an event stream is never waited on.
    fn respond(&self, request: Request<Body>) -> (Response<()>, Vec<u8>) {
        let service = tower::ServiceBuilder::new()
            .layer(self.hub.layer())
            .service(service_fn(|_: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::default()))
            }));
        self.runtime.block_on(async {
            let response: Response<ResponseBody<Body>> =
                service.oneshot(request).await.expect("infallible");
            let (parts, mut body) = response.into_parts();
            let mut read = Vec::new();
            for _ in 0..8 {
                match body.frame().now_or_never() {
                    Some(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            read.extend_from_slice(&data);
                        }
                    }
                    Some(Some(Err(error))) => match error {},
                    Some(None) | None => break,
                }
            }
            (Response::from_parts(parts, ()), read)
        })
    }

    /// Publish: `data[0]` picks the `Content-Type` (see [`PUBLISH_CONTENT_TYPES`]), the rest is
    /// the body.
    pub fn publish_body(&self, data: &[u8]) {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let content_type =
            PUBLISH_CONTENT_TYPES[usize::from(selector) % PUBLISH_CONTENT_TYPES.len()];
        self.publish(content_type, body);
    }

    /// Publishes `body` with `content_type` and checks the answer.
    pub fn publish(&self, (content_type, format): (Option<&str>, Format), body: &[u8]) {
        let mut request = Request::post(DEFAULT_PUBLISH_PATH);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Body::new(Bytes::copy_from_slice(body)))
            .expect("valid request");
        let (response, reply) = self.respond(request);
        let status = response.status();
        let shown = || {
            format!(
                "{content_type:?} {:?} -> {status} {:?}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&reply)
            )
        };
        assert!(!status.is_server_error(), "5xx: {}", shown());
        let expected: &[StatusCode] = match format {
            Format::Other => &[StatusCode::UNSUPPORTED_MEDIA_TYPE],
            _ if body.len() > BODY_LIMIT => &[StatusCode::PAYLOAD_TOO_LARGE],
            _ => &[StatusCode::OK, StatusCode::BAD_REQUEST],
        };
        assert!(expected.contains(&status), "unexpected status: {}", shown());
        if status == StatusCode::OK {
            // Names and values must be UTF-8 once percent-decoded (form), the body must be UTF-8
            // (JSON). The form's separators are ASCII, so the parts decode to UTF-8 exactly when
            // the whole body does.
            let utf8 = match format {
                Format::Form => {
                    std::str::from_utf8(&percent_decode(body).collect::<Vec<u8>>()).is_ok()
                }
                _ => std::str::from_utf8(body).is_ok(),
            };
            assert!(utf8, "published a body that is not UTF-8: {}", shown());
            let id = std::str::from_utf8(&reply).expect("the id is text");
            assert!(EventId::new(id).is_ok(), "not an event id: {}", shown());
        } else {
            assert!(
                reply.len() > 1 && reply.ends_with(b"\n"),
                "a refusal without a reason: {}",
                shown()
            );
        }
    }

    /// Subscribe: `data[0]` holds flags (bits 0-1: the `Last-Event-ID` header: none, the bytes
    /// after the query, a seed id, a seed id followed by those bytes; bit 2: start the query with
    /// `topic=a&`), `data[1..3]` the query's length (little-endian, capped at what is there), then
    /// the query's bytes, then the header's.
    pub fn subscribe_query(&self, data: &[u8]) {
        let flags = data.first().copied().unwrap_or(0);
        let rest = data.get(3..).unwrap_or(&[]);
        let len = match data.get(1..3) {
            Some(&[low, high]) => usize::from(u16::from_le_bytes([low, high])),
            _ => 0,
        };
        let (query, tail) = rest.split_at(len.min(rest.len()));
        let seed = || &self.seed_ids[usize::from(tail.first().copied().unwrap_or(0)) % 3];
        let last_event_id: Option<Vec<u8>> = match flags & 0b11 {
            0 => None,
            1 => Some(tail.to_vec()),
            2 => Some(seed().as_str().as_bytes().to_vec()),
            _ => Some([seed().as_str().as_bytes(), tail.get(1..).unwrap_or(&[])].concat()),
        };
        let mut query_text = String::new();
        if flags & 0b100 != 0 {
            query_text.push_str("topic=a&");
        }
        query_text.extend(percent_encode(query, QUERY_ESCAPED));
        self.subscribe(&query_text, last_event_id.as_deref());
    }

    /// Subscribes with `query` (as it would appear after `?`) and `last_event_id` as an
    /// EventSource does (`Accept: text/event-stream`) and checks the answer against the same
    /// request without any resume id.
    pub fn subscribe(&self, query: &str, last_event_id: Option<&[u8]>) {
        let header_value = match last_event_id.map(HeaderValue::from_bytes) {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(_)) => return, // not a header value: it cannot reach the server
        };
        let Some((response, stream)) = self.get(query, header_value.as_ref()) else {
            return; // not a URI at all: no server would pass it on
        };
        let status = response.status();
        let shown = || {
            format!(
                "{query:?} Last-Event-ID {:?} -> {status} {:?}",
                last_event_id.map(String::from_utf8_lossy),
                String::from_utf8_lossy(&stream)
            )
        };
        assert!(!status.is_server_error(), "5xx: {}", shown());
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "unexpected status: {}",
            shown()
        );

        // The same request without any resume id gets the same status: no resume id is a
        // reason to refuse an EventSource, which would never reconnect after a 400.
        let (plain, _) = self
            .get(&without_resume_params(query), None)
            .expect("a URI less some of its parameters is still one");
        assert_eq!(
            plain.status(),
            status,
            "the resume id changed the status: {}",
            shown()
        );

        if status == StatusCode::BAD_REQUEST {
            assert!(stream.len() > 1, "a 400 without a reason: {}", shown());
            return;
        }
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("text/event-stream")),
            "{}",
            shown()
        );
        let text = std::str::from_utf8(&stream).expect("event streams are UTF-8");
        assert!(
            text.starts_with(": ok\n\n"),
            "no opening comment: {}",
            shown()
        );
        let events = spec_parse(text);
        let resume = response.headers().get(RESUME_HEADER);

        // Only the header is looked at from here on; an empty header is as good as none.
        let Some(header_value) = header_value.filter(|value| !value.is_empty()) else {
            return;
        };
        // The hub reads the header as UTF-8 (a browser sends back the id it got, whatever its
        // characters).
        let header_id = std::str::from_utf8(header_value.as_bytes())
            .ok()
            .and_then(|value| EventId::new(value).ok());
        if let Some(at) = self
            .seed_ids
            .iter()
            .position(|id| Some(id) == header_id.as_ref())
        {
            // One of ours, still retained: no notice, and only later events.
            assert_eq!(resume, None, "resume from a retained id: {}", shown());
            let later: Vec<&str> = self.seed_ids[at + 1..]
                .iter()
                .map(EventId::as_str)
                .collect();
            for event in &events {
                assert_ne!(event.event_type, RESYNC_EVENT, "{}", shown());
                assert!(
                    later.contains(&event.last_event_id.as_str()),
                    "replayed an event not after the resume id: {}",
                    shown()
                );
            }
            return;
        }
        let epoch = self.seed_ids[0]
            .as_str()
            .split_once('-')
            .map_or("", |(epoch, _)| epoch);
        if header_value
            .as_bytes()
            .starts_with(format!("{epoch}-").as_bytes())
        {
            return; // looks like one of ours (maybe not issued yet): not checked here
        }
        // Not an id of this hub: the stream opens with the resync notice, which names the id
        // when it is a valid one.
        assert_eq!(
            resume.map(HeaderValue::as_bytes),
            Some(&b"unknown"[..]),
            "{}",
            shown()
        );
        let notice = events.first().expect("the resync notice");
        assert_eq!(notice.event_type, RESYNC_EVENT, "{}", shown());
        let notice: serde_json::Value =
            serde_json::from_str(&notice.data).expect("the notice is JSON");
        assert_eq!(notice["reason"], "unknown", "{}", shown());
        let named = header_id.map(|id| serde_json::Value::from(id.as_str()));
        assert_eq!(
            notice["lastEventId"],
            named.unwrap_or(serde_json::Value::Null),
            "{}",
            shown()
        );
    }

    /// `GET /events?{query}` with `Accept: text/event-stream`, or `None` when it is not a URI.
    fn get(
        &self,
        query: &str,
        last_event_id: Option<&HeaderValue>,
    ) -> Option<(Response<()>, Vec<u8>)> {
        let mut request = Request::get(format!("{DEFAULT_EVENTS_PATH}?{query}"))
            .header(header::ACCEPT, "text/event-stream")
            .body(Body::default())
            .ok()?;
        if let Some(value) = last_event_id {
            request.headers_mut().insert("last-event-id", value.clone());
        }
        Some(self.respond(request))
    }
}

/// How the publish endpoint should read a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json`.
    Json,
    /// Anything else, or no `Content-Type`: refused with 415.
    Other,
}

/// The `Content-Type` headers the publish property sends, and how each should be read.
pub const PUBLISH_CONTENT_TYPES: [(Option<&str>, Format); 6] = [
    (Some("application/x-www-form-urlencoded"), Format::Form),
    (Some("application/json"), Format::Json),
    (Some("text/plain"), Format::Other),
    (
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        Format::Form,
    ),
    (Some("Application/JSON ; charset=utf-8"), Format::Json),
    (None, Format::Other),
];

/// Bytes escaped when fuzz bytes become a query: all but ASCII letters, digits and the
/// punctuation a query may hold as it is, so `&`, `=`, `+` and `%` keep their meaning (and a
/// stray `%` makes an invalid escape).
const QUERY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'?')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'%');

/// `query` less its `lastEventID` and `last_event_id` parameters, whatever their value's bytes
/// (one that is not UTF-8 is a resume id that cannot be ours, not a malformed query).
fn without_resume_params(query: &str) -> String {
    let decode = |raw: &str| {
        let spaced = raw.replace('+', " ");
        String::from_utf8(percent_decode(spaced.as_bytes()).collect())
    };
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            !matches!(decode(name).as_deref(), Ok("lastEventID" | "last_event_id"))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Encode: `data[0]` holds flags (bit 0: set an event type, bit 1: set a retry, bit 2: data as
/// [`Event::json`] of the text), `data[1..3]` and `data[3..5]` the id's and the event type's
/// lengths (little-endian, capped at what is there), `data[5..17]` the retry (seconds as a
/// little-endian `u64`, then nanoseconds as a `u32`, taken modulo 10⁹); then the id's, the event
/// type's and the data's bytes, each read as UTF-8 with invalid sequences replaced.
pub fn encode(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let id_len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
    let type_len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
    let secs = u64::from_le_bytes(std::array::from_fn(|_| input.byte()));
    let nanos = u32::from_le_bytes(std::array::from_fn(|_| input.byte())) % 1_000_000_000;
    let id = String::from_utf8_lossy(input.take(id_len)).into_owned();
    let event_type = String::from_utf8_lossy(input.take(type_len)).into_owned();
    let text = String::from_utf8_lossy(input.0).into_owned();
    check_encode(
        &id,
        (flags & 1 != 0).then_some(event_type.as_str()),
        (flags & 2 != 0).then(|| Duration::new(secs, nanos)),
        &text,
        flags & 4 != 0,
    );
}

/// The bytes of a fuzz input, read front to back; past the end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        first
    }

    fn take(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// Whether a line value (an id, an event type) is valid: 1..=`max` bytes without CR, LF or NUL.
fn valid_line(value: &str, max: usize) -> bool {
    (1..=max).contains(&value.len()) && !value.contains(['\r', '\n', '\0'])
}

/// Builds the event (when the constructors accept it, which they must exactly for valid input),
/// encodes it under `id`, and reads the frame back with the reference reader.
pub fn check_encode(
    id: &str,
    event_type: Option<&str>,
    retry: Option<Duration>,
    text: &str,
    json: bool,
) {
    let event_id = EventId::new(id);
    assert_eq!(
        event_id.is_ok(),
        valid_line(id, MAX_EVENT_ID_LEN),
        "EventId::new({id:?})"
    );
    let event = if json {
        Event::json(text).expect("a string serializes")
    } else {
        let event = Event::text(text);
        assert_eq!(event.is_ok(), !text.is_empty(), "Event::text({text:?})");
        let Ok(event) = event else { return };
        event
    };
    let data = event.data().to_owned();
    let event = match event_type {
        None => event,
        Some(event_type) => {
            let typed = event.with_event_type(event_type);
            assert_eq!(
                typed.is_ok(),
                valid_line(event_type, MAX_EVENT_TYPE_LEN),
                "with_event_type({event_type:?})"
            );
            let Ok(typed) = typed else { return };
            typed
        }
    };
    let event = match retry {
        None => event,
        Some(retry) => event.with_retry(retry),
    };
    let Ok(event_id) = event_id else { return };
    let topic = Topic::new("t").expect("valid topic");
    let frame = Frame::new(event_id.clone(), 1, std::slice::from_ref(&topic), &event);
    let text_frame = std::str::from_utf8(frame.bytes()).expect("frames are UTF-8");
    assert_eq!(frame.id(), &event_id);

    // Only field lines ended by LF, and exactly one blank line, at the very end.
    assert!(!text_frame.contains('\r'), "a CR in {text_frame:?}");
    assert_eq!(
        text_frame.find("\n\n"),
        Some(text_frame.len() - 2),
        "not one event: {text_frame:?}"
    );

    let expected = SpecEvent {
        event_type: event_type.unwrap_or("message").to_owned(),
        data: sse_normalized(&data),
        last_event_id: id.to_owned(),
        retry: retry.map(|retry| retry.as_millis()),
    };
    assert_eq!(
        spec_parse(text_frame),
        std::slice::from_ref(&expected),
        "read back from {text_frame:?}"
    );
    if json {
        let decoded: String =
            serde_json::from_str(&expected.data).expect("the data reads back as JSON");
        assert_eq!(decoded, text);
    }

    // Nothing bleeds into the next event: a plain one after it reads back plain.
    let next = Frame::new(
        EventId::new("next").expect("valid id"),
        2,
        &[topic],
        &Event::text("x").expect("non-empty data"),
    );
    let both = [frame.bytes().as_ref(), next.bytes().as_ref()].concat();
    let plain = SpecEvent {
        event_type: "message".to_owned(),
        data: "x".to_owned(),
        last_event_id: "next".to_owned(),
        retry: None,
    };
    assert_eq!(
        spec_parse(std::str::from_utf8(&both).expect("UTF-8")),
        [expected.clone(), plain],
        "two frames {both:?}"
    );

    // The frame's own reader agrees (its retry is a u64 of milliseconds).
    let fields = frame.fields();
    assert_eq!(fields.event_type.as_deref(), event_type, "{text_frame:?}");
    assert_eq!(fields.data, expected.data, "{text_frame:?}");
    let retry_ms = retry.and_then(|retry| u64::try_from(retry.as_millis()).ok());
    assert_eq!(
        fields.retry,
        retry_ms.map(Duration::from_millis),
        "{text_frame:?}"
    );
}

/// The harness the fuzz targets share: made once per process.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(Harness::new)
}
