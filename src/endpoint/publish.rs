//! The publish endpoint: `POST /publish` with a form or a JSON body.
//!
//! Form (`application/x-www-form-urlencoded`): `topic` (repeatable), `data`, and optionally
//! `event` and `retry` (milliseconds, 100 to 3,600,000). Names and values must be UTF-8 once
//! percent-decoded. JSON (`application/json`): `{"topic": "a"}` or
//! `{"topics": ["a", "b"]}`, `"data"` as a string (sent as it is) or any other JSON value (sent
//! as compact JSON), and optionally `"event"` and `"retry"`. The reply is 200 with the event's id
//! as plain text.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::admit::{self, PublishRefused, add_topic};
use super::reply::{Reply, denied as denied_response, refuse, text};
use super::stream::RESYNC_EVENT;
use super::{Endpoints, form};
use crate::broker::{BrokerError, PublishRequest};
use crate::event::{Event, Topic};
use crate::stats::Counters;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body formats the endpoint reads.
#[derive(Debug, Clone, Copy)]
enum Format {
    Form,
    Json,
}

pub(crate) async fn publish<B>(shared: Arc<Endpoints>, parts: Parts, body: B) -> Response<Reply>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let counters = shared.counters.clone();
    counted(&counters, handle(shared, parts, body).await)
}

/// Counts a publish by how it was answered, and hands back the answer.
pub(crate) fn counted(counters: &Counters, response: Response<Reply>) -> Response<Reply> {
    let status = response.status();
    if status == StatusCode::OK {
        counters.published();
    } else if status.is_server_error() {
        counters.publish_failed();
        tracing::debug!(target: "tower_sse_pubsub", status = status.as_u16(), "publish failed");
    } else {
        counters.publish_refused();
        tracing::debug!(target: "tower_sse_pubsub", status = status.as_u16(), "publish refused");
    }
    response
}

async fn handle<B>(shared: Arc<Endpoints>, parts: Parts, body: B) -> Response<Reply>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if let Err(refusal) = admit::publishing_enabled(&shared) {
        return refusal_response(&refusal);
    }
    let format = match format_of(&parts) {
        Ok(format) => format,
        Err(reason) => return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason),
    };
    let limit = shared.config.max_body_bytes;
    let bytes = match read_limited(&parts, body, limit, shared.config.body_timeout).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let max_topics = shared.config.max_topics;
    let parsed = match format {
        Format::Form => parse_form(&bytes, max_topics),
        Format::Json => parse_json(&bytes, max_topics),
    };
    let request = match parsed {
        Ok(request) => request,
        Err(reason) => return refuse(StatusCode::BAD_REQUEST, reason),
    };
    match admit::publish(&shared, &parts, &request).await {
        Ok(id) => text(StatusCode::OK, id.as_str()),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// The answer to a publish the hub refused or could not store.
pub(crate) fn refusal_response(refusal: &PublishRefused) -> Response<Reply> {
    let reason = refusal.reason("HTTP");
    match refusal {
        PublishRefused::Disabled => refuse(StatusCode::FORBIDDEN, reason),
        PublishRefused::TooCostly(_) => refuse(StatusCode::PAYLOAD_TOO_LARGE, reason),
        PublishRefused::Denied(denied) => denied_response(denied),
        PublishRefused::NoTopics => refuse(StatusCode::BAD_REQUEST, reason),
        PublishRefused::DuplicateId(_) => refuse(StatusCode::CONFLICT, reason),
        PublishRefused::Broker(BrokerError::Unsupported(_)) => {
            refuse(StatusCode::NOT_IMPLEMENTED, reason)
        }
        PublishRefused::Broker(_) => {
            let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, reason);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

fn format_of(parts: &Parts) -> Result<Format, String> {
    let accepted = "send application/x-www-form-urlencoded or application/json";
    let Some(value) = parts.headers.get(header::CONTENT_TYPE) else {
        return Err(format!("missing Content-Type: {accepted}"));
    };
    let value = value.to_str().unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(Format::Form)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Ok(Format::Json)
    } else {
        Err(format!("unsupported Content-Type {value:?}: {accepted}"))
    }
}

/// Reads the whole body, but never more than `limit` bytes of it, nor for longer than `timeout`.
pub(crate) async fn read_limited<B>(
    parts: &Parts,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Response<Reply>>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // A body trickled a byte at a time must not hold the request (and its memory) forever.
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        return Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {timeout:?}"),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {error}"),
        )),
    }
}

/// Collects the fields both formats share, with the same checks and messages.
struct Fields {
    max_topics: usize,
    topics: Vec<Topic>,
    data: Option<String>,
    event_type: Option<String>,
    retry: Option<Duration>,
}

impl Fields {
    fn new(max_topics: usize) -> Self {
        Self {
            max_topics,
            topics: Vec::new(),
            data: None,
            event_type: None,
            retry: None,
        }
    }

    fn add_topic(&mut self, name: &str) -> Result<(), String> {
        add_topic(&mut self.topics, name, self.max_topics)
    }

    fn set_once<T>(slot: &mut Option<T>, field: &str, value: T) -> Result<(), String> {
        if slot.replace(value).is_some() {
            return Err(format!("field {field:?} given more than once"));
        }
        Ok(())
    }

    fn into_request(self) -> Result<PublishRequest, String> {
        if self.topics.is_empty() {
            return Err("no topic: give at least one \"topic\"".to_owned());
        }
        let data = self
            .data
            .ok_or_else(|| "no data: the \"data\" field is required".to_owned())?;
        let event = event(data, self.event_type, self.retry)?;
        Ok(PublishRequest::new(self.topics, event))
    }
}

/// The event a publisher asked for, with the messages every transport sends.
pub(crate) fn event(
    data: String,
    event_type: Option<String>,
    retry: Option<Duration>,
) -> Result<Event, String> {
    let mut event = Event::text(data).map_err(|e| e.to_string())?;
    if let Some(event_type) = event_type {
        if event_type == RESYNC_EVENT {
            return Err(format!(
                "event type {RESYNC_EVENT:?} is reserved for the hub's own notices"
            ));
        }
        event = event
            .with_event_type(event_type)
            .map_err(|e| e.to_string())?;
    }
    if let Some(retry) = retry {
        event = event.with_retry(retry);
    }
    Ok(event)
}

/// The reconnection times a publisher may set, in milliseconds: a client told to reconnect at
/// once would hammer the server, one told to wait days is as good as gone.
pub(crate) const RETRY_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

fn parse_retry(value: &str) -> Result<Duration, String> {
    let ms = value
        .parse::<u64>()
        .map_err(|_| format!("invalid retry {value:?}: expected whole milliseconds"))?;
    retry_in_range(ms)
}

fn retry_in_range(ms: u64) -> Result<Duration, String> {
    if RETRY_RANGE_MS.contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(format!(
            "retry must be {}..={} milliseconds (100 ms to 1 hour), got {ms}",
            RETRY_RANGE_MS.start(),
            RETRY_RANGE_MS.end()
        ))
    }
}

fn parse_form(body: &[u8], max_topics: usize) -> Result<PublishRequest, String> {
    let mut fields = Fields::new(max_topics);
    for pair in form::pairs(body) {
        let (key, value) = pair.map_err(|e| format!("invalid form body: {e}"))?;
        match key.as_str() {
            "topic" => fields.add_topic(&value)?,
            "data" => Fields::set_once(&mut fields.data, "data", value)?,
            "event" => Fields::set_once(&mut fields.event_type, "event", value)?,
            "retry" => Fields::set_once(&mut fields.retry, "retry", parse_retry(&value)?)?,
            other => {
                return Err(format!(
                    "unknown field {other:?}: expected topic, data, event or retry"
                ));
            }
        }
    }
    fields.into_request()
}

fn parse_json(body: &[u8], max_topics: usize) -> Result<PublishRequest, String> {
    let Members(members) = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            "JSON body must be an object with \"topic\" or \"topics\" and \"data\"".to_owned()
        }
        _ => format!("invalid JSON body: {e}"),
    })?;
    let mut fields = Fields::new(max_topics);
    for (key, value) in members {
        match (key.as_str(), value) {
            ("topic", serde_json::Value::String(topic)) => fields.add_topic(&topic)?,
            ("topics", serde_json::Value::Array(topics)) => {
                for topic in topics {
                    let serde_json::Value::String(topic) = topic else {
                        return Err("\"topics\" must be an array of strings".to_owned());
                    };
                    fields.add_topic(&topic)?;
                }
            }
            ("data", serde_json::Value::String(data)) => {
                Fields::set_once(&mut fields.data, "data", data)?;
            }
            ("data", other) => Fields::set_once(&mut fields.data, "data", other.to_string())?,
            ("event", serde_json::Value::String(event)) => {
                Fields::set_once(&mut fields.event_type, "event", event)?;
            }
            ("retry", serde_json::Value::Number(ms)) => {
                let ms = ms.as_u64().ok_or_else(|| {
                    format!("invalid retry {ms}: expected whole, non-negative milliseconds")
                })?;
                Fields::set_once(&mut fields.retry, "retry", retry_in_range(ms)?)?;
            }
            (field @ ("topic" | "topics" | "event" | "retry"), other) => {
                return Err(format!("field {field:?} has the wrong type: {other}"));
            }
            (other, _) => {
                return Err(format!(
                    "unknown field {other:?}: expected topic, topics, data, event or retry"
                ));
            }
        }
    }
    fields.into_request()
}

/// A JSON object's members in document order, duplicates kept, so a repeated field is refused
/// instead of silently keeping the last one (as `serde_json::Value` would).
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_reads_repeated_topics_and_optional_fields() {
        let request = parse_form(b"topic=a&topic=b&data=hi%0Athere&event=msg&retry=1500", 8)
            .expect("valid form");
        let names: Vec<_> = request.topics().iter().map(Topic::as_str).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(request.event().data(), "hi\nthere");
        assert_eq!(request.event().event_type(), Some("msg"));
        assert_eq!(request.event().retry(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn json_data_is_sent_as_is_when_a_string_and_as_json_otherwise() {
        let request = parse_json(br#"{"topic":"a","data":"plain"}"#, 8).expect("valid json");
        assert_eq!(request.event().data(), "plain");
        let request =
            parse_json(br#"{"topics":["a","b"],"data":{"x":[1,2]}}"#, 8).expect("valid json");
        assert_eq!(request.event().data(), r#"{"x":[1,2]}"#);
        assert_eq!(request.topics().len(), 2);
    }

    #[test]
    fn malformed_bodies_are_explained() {
        let cases: [(&[u8], &str, bool); 19] = [
            (b"topic=a&data=x&retry=0", "100..=3600000", false),
            (
                b"topic=a&data=x&retry=18446744073709551615",
                "100..=3600000",
                false,
            ),
            (
                br#"{"topic":"a","data":"x","retry":99}"#,
                "100..=3600000",
                true,
            ),
            (b"topic=a&data=%FF", "not valid UTF-8", false),
            (b"topic=%C3&data=x", "not valid UTF-8", false),
            (b"data=x", "no topic", false),
            (b"topic=a", "no data", false),
            (b"topic=a&data=", "must not be empty", false),
            (b"topic=a&data=x&retry=soon", "invalid retry", false),
            (b"topic=a&data=x&colour=red", "unknown field", false),
            (b"topic=a&data=x&data=y", "more than once", false),
            (b"topic=a&data=x&event=a%0Ab", "event type", false),
            (br#"{"topic":1,"data":"x"}"#, "wrong type", true),
            (br#"["a"]"#, "must be an object", true),
            (
                br#"{"topic":"a","data":"1","data":"2"}"#,
                "more than once",
                true,
            ),
            (
                br#"{"topic":"a","data":"1","event":"resync"}"#,
                "reserved",
                true,
            ),
            (b"topic=a&data=x&event=resync", "reserved", false),
            (b"topic=a&topic=b&topic=c&data=x", "at most 2", false),
            (br#"{"topics":["a","b","c"],"data":"x"}"#, "at most 2", true),
        ];
        for (body, expected, json) in cases {
            let error = if json {
                parse_json(body, 2)
            } else {
                parse_form(body, 2)
            }
            .expect_err("malformed body");
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }
}
