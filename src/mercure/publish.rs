//! `POST /.well-known/mercure`: a Mercure publication (the protocol's "Publication").
//!
//! The body is `application/x-www-form-urlencoded`: `topic` once or more (the first is the
//! canonical topic, the others alternates; a subscriber of any receives the update), and
//! optionally `data`, `private`, `id`, `type` and `retry`. The publisher's token must allow every
//! topic. The answer is 200 `text/plain` with the update's id: the one given, or a fresh
//! `urn:uuid:`.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{Response, StatusCode, header};
use http_body::Body;

use super::hub::MercureHub;
use super::id;
use crate::broker::{BrokerError, PublishRequest};
use crate::endpoint::Endpoints;
use crate::endpoint::admit::{self, PublishRefused, add_topic};
use crate::endpoint::form;
use crate::endpoint::publish::{counted, read_limited, refusal_response};
use crate::endpoint::reply::{Reply, denied, refuse, text};
use crate::endpoint::stream::RESYNC_EVENT;
use crate::event::{Event, EventId, Topic};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An update as the form gives it.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) topics: Vec<Topic>,
    pub(crate) event: Event,
    pub(crate) id: Option<EventId>,
    pub(crate) private: bool,
}

pub(crate) async fn publish<B>(
    shared: Arc<Endpoints>,
    mercure: &MercureHub,
    parts: Parts,
    body: B,
) -> Response<Reply>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let response = handle(&shared, mercure, parts, body).await;
    counted(&shared.counters, response)
}

async fn handle<B>(
    shared: &Endpoints,
    mercure: &MercureHub,
    parts: Parts,
    body: B,
) -> Response<Reply>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if !is_form(&parts) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the update as application/x-www-form-urlencoded",
        );
    }
    let limit = shared.config.max_body_bytes;
    let bytes = match read_limited(&parts, body, limit, shared.config.body_timeout).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let update = match parse(&bytes, shared.config.max_topics) {
        Ok(update) => update,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    // Nothing is dispatched unless the token allows every topic, canonical and alternate.
    if let Err(denial) = mercure.authorizer.mercure_publisher(&parts, &update.topics) {
        return denied(&denial);
    }
    let id = match update.id {
        Some(id) => id,
        None => match id::generate() {
            Ok(id) => id,
            Err(error) => {
                let error = BrokerError::unavailable("no randomness to make an update id", error);
                return refusal_response(&PublishRefused::Broker(error));
            }
        },
    };
    let mut request = PublishRequest::new(update.topics, update.event).id(id);
    if update.private {
        request = request.private();
    }
    let stored = match admit::check_cost(shared, &request) {
        Ok(()) => admit::store(shared, &request).await,
        Err(refusal) => Err(refusal),
    };
    match stored {
        Ok(id) => text(StatusCode::OK, id.as_str()),
        Err(refusal) => refusal_response(&refusal),
    }
}

fn is_form(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| {
            essence
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Reads the form; every refusal says which field is wrong.
pub(crate) fn parse(body: &[u8], max_topics: usize) -> Result<Update, String> {
    let mut topics = Vec::new();
    let mut data: Option<String> = None;
    let mut id = None;
    let mut event_type = None;
    let mut retry = None;
    let mut private = false;
    for pair in form::pairs(body) {
        let (key, value) = pair.map_err(|e| format!("invalid form: {e}"))?;
        match key.as_str() {
            "topic" => add_topic(&mut topics, &value, max_topics)?,
            "data" => data = Some(value),
            "private" => private = true,
            // An empty id is one left out (as the reference hub reads it): the hub makes one.
            "id" if value.is_empty() => {}
            "id" => {
                if value.starts_with('#') {
                    return Err(format!(
                        "invalid id {value:?}: an id must not start with `#` (the hub's own ids \
                         may); choose another, or leave it out and the hub makes one"
                    ));
                }
                // The client sends the id back in a Last-Event-ID header: a control character
                // makes that request invalid, and whitespace around the value is stripped.
                if value.starts_with([' ', '\t'])
                    || value.ends_with([' ', '\t'])
                    || value.chars().any(|c| c.is_ascii_control() && c != '\t')
                {
                    return Err(format!(
                        "invalid id {value:?}: a client resumes by sending the id back in a \
                         Last-Event-ID header, so it must not contain control characters nor \
                         begin or end with whitespace"
                    ));
                }
                if value == super::subscribe::EARLIEST {
                    return Err(format!(
                        "invalid id {value:?}: `{value}` is the reserved resume point (everything \
                         retained), so no update may have it as its id"
                    ));
                }
                id = Some(EventId::new(&value).map_err(|e| format!("invalid id {value:?}: {e}"))?);
            }
            "type" if !value.is_empty() => event_type = Some(value),
            "retry" if !value.is_empty() => {
                let millis: u64 = value.parse().map_err(|_| {
                    format!("invalid retry {value:?}: give the reconnection time in milliseconds")
                })?;
                retry = Some(Duration::from_millis(millis));
            }
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err("no topic: give at least one `topic` field".to_owned());
    }
    let mut event = match data {
        Some(data) if !data.is_empty() => {
            Event::text(data).map_err(|e| format!("invalid data: {e}"))?
        }
        _ => Event::empty(),
    };
    if let Some(event_type) = event_type {
        if event_type == RESYNC_EVENT {
            return Err(format!(
                "invalid type: event type {RESYNC_EVENT:?} is reserved for the hub's own notices"
            ));
        }
        event = event
            .with_event_type(event_type)
            .map_err(|e| format!("invalid type: {e}"))?;
    }
    if let Some(retry) = retry {
        event = event.with_retry(retry);
    }
    Ok(Update {
        topics,
        event,
        id,
        private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_field() {
        let update = parse(
            b"topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&topic=alt&data=hello+world&private=on&id=urn%3Auuid%3A1&type=book&retry=1500",
            8,
        )
        .expect("valid form");
        let topics: Vec<_> = update.topics.iter().map(Topic::as_str).collect();
        assert_eq!(topics, ["https://example.com/books/1", "alt"]);
        assert_eq!(update.event.data(), "hello world");
        assert_eq!(update.event.event_type(), Some("book"));
        assert_eq!(update.event.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(update.id.as_ref().map(EventId::as_str), Some("urn:uuid:1"));
        assert!(update.private);
    }

    #[test]
    fn data_and_everything_else_may_be_left_out_and_private_may_be_empty() {
        let update = parse(b"topic=a&private=&id=", 8).expect("valid form");
        assert_eq!(update.event.data(), "");
        assert!(update.private && update.id.is_none());
        assert!(!parse(b"topic=a", 8).expect("valid").private);
    }

    #[test]
    fn refuses_ids_starting_with_a_hash_and_bad_fields() {
        let error = parse(b"topic=a&id=%23rev-1", 8).expect_err("400");
        assert!(error.contains("must not start with `#`"), "{error}");
        for id in [&b"a%01b"[..], b"%20a", b"a%09"] {
            let mut form = b"topic=a&id=".to_vec();
            form.extend_from_slice(id);
            let error = parse(&form, 8).expect_err("400");
            assert!(error.contains("Last-Event-ID"), "{error}");
        }
        let error = parse(b"topic=a&id=earliest", 8).expect_err("400");
        assert!(error.contains("reserved resume point"), "{error}");
        assert!(parse(b"data=x", 8).expect_err("400").contains("no topic"));
        assert!(
            parse(b"topic=a&retry=soon", 8)
                .expect_err("400")
                .contains("retry")
        );
        assert!(
            parse(b"topic=a&type=resync", 8)
                .expect_err("400")
                .contains("reserved")
        );
        assert!(
            parse(b"topic=a&type=a%0Ab", 8)
                .expect_err("400")
                .contains("type")
        );
        assert!(
            parse(b"topic=a&id=a%0Ab", 8)
                .expect_err("400")
                .contains("id")
        );
    }
}
