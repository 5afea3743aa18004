//! The subscribe endpoint: `GET /events?topic=a&topic=b`.
//!
//! Reads the topics and the resume point (the `Last-Event-ID` header, or the `lastEventID` /
//! `last_event_id` query parameter for a browser's first connect), authorizes, subscribes, and
//! answers with the event stream. Every refusal is a 4xx or 503 with a plain-text reason.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use super::Endpoints;
use super::admit::{self, Ask, Decider, Refused, ResumePoint, add_topic};
use super::form;
use super::reply::{Reply, denied as denied_response, refuse};
use super::stream::{SseStream, retry_frame};
use crate::broker::{BrokerError, Resume};
use crate::event::{EventId, Topic};
use crate::stats::Refusal;

/// The response header that reports a resume point that could not be honoured in full:
/// `expired` (events were missed) or `unknown` (the id was not issued by this broker).
pub const RESUME_HEADER: &str = "sse-resume";

/// Query parameters accepted as the resume point, for clients that cannot set headers.
const RESUME_PARAMS: [&str; 2] = ["lastEventID", "last_event_id"];

/// What a subscribe request asks for.
#[derive(Debug)]
struct Query {
    topics: Vec<Topic>,
    after: ResumePoint,
}

pub(crate) async fn subscribe(shared: Arc<Endpoints>, parts: Parts) -> Response<Reply> {
    open(shared, &parts, Mode::Stream).await
}

/// An event stream of `topics`, chosen by the app for this request (its session's topics, say):
/// the same limits, resume point, headers and counting as a subscribe, without reading topics
/// from the query and without asking the authorizer (the app has decided).
pub(crate) async fn stream_topics(
    shared: Arc<Endpoints>,
    parts: &Parts,
    topics: Vec<Topic>,
) -> Response<Reply> {
    open(shared, parts, Mode::App(topics)).await
}

/// `HEAD` on the events path: the status and headers a `GET` would get now, from the same
/// checks and the same broker call, without the stream (and without counting in the hub's
/// stats).
pub(crate) async fn probe(shared: Arc<Endpoints>, parts: Parts) -> Response<Reply> {
    let (head, body) = open(shared, &parts, Mode::Probe).await.into_parts();
    match body {
        // Dropping the stream unsubscribes and frees its slots.
        Reply::Events(_) => Response::from_parts(head, Reply::Full(bytes::Bytes::new())),
        refusal @ Reply::Full(_) => Response::from_parts(head, refusal),
    }
}

/// What kind of subscribe this is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// A `GET` naming its topics in the query.
    Stream,
    /// A `HEAD`: answered as the `GET` would be, not counted.
    Probe,
    /// Topics the app chose for the request.
    App(Vec<Topic>),
}

async fn open(shared: Arc<Endpoints>, parts: &Parts, mode: Mode) -> Response<Reply> {
    let counted = mode != Mode::Probe;
    // Topics the app chose need no authorizer: the app has decided.
    let decider = match mode {
        Mode::App(_) => Decider::App,
        _ => Decider::Authorizer,
    };
    let parsed = match mode {
        Mode::App(topics) => app_query(parts, topics),
        Mode::Stream | Mode::Probe => parse(parts, shared.config.max_topics),
    };
    let request = match parsed {
        Ok(request) => request,
        Err(reason) => {
            let response = refuse(StatusCode::BAD_REQUEST, reason);
            return refused(&shared, counted, Refusal::BadRequest, response);
        }
    };
    let ask = Ask {
        topics: request.topics,
        patterns: Vec::new(),
        after: request.after,
        decider,
        counted,
        on_close: None,
    };
    answer(shared, parts, ask).await.0
}

/// Counts a refused subscribe (unless it is not `counted`), and hands back its response.
pub(crate) fn refused(
    shared: &Endpoints,
    counted: bool,
    refusal: Refusal,
    response: Response<Reply>,
) -> Response<Reply> {
    if counted {
        shared.counters.refused(refusal);
        tracing::debug!(
            target: "tower_sse_pubsub",
            status = response.status().as_u16(),
            reason = ?refusal,
            "subscribe refused"
        );
    }
    response
}

/// Admits `ask` and answers with its event stream, or with the refusal (counted). With the
/// stream comes how its resume point was placed.
pub(crate) async fn answer(
    shared: Arc<Endpoints>,
    parts: &Parts,
    ask: Ask,
) -> (Response<Reply>, Option<Resume>) {
    let counted = ask.counted;
    let admitted = match admit::subscribe(&shared, parts, ask).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let response = match &refusal {
                Refused::ClientLimit(max) => too_many(&shared, parts, *max),
                Refused::Denied(denied) => denied_response(denied),
                // Permanent: retrying cannot help, so no retry advice.
                Refused::Broker(BrokerError::Unsupported(_)) => {
                    refuse(StatusCode::NOT_IMPLEMENTED, &refusal)
                }
                Refused::ShuttingDown
                | Refused::Full(_)
                | Refused::ReplayLimit(_)
                | Refused::Broker(_) => unavailable(&shared, parts, &refusal),
            };
            return (refused(&shared, counted, refusal.refusal(), response), None);
        }
    };

    let resume = admitted.resume;
    let stream = SseStream::new(
        admitted.account,
        admitted.subscription,
        resume.clone(),
        admitted.replay,
    );
    let mut response = Response::new(Reply::Events(Box::new(stream)));
    let headers = response.headers_mut();
    set_stream_headers(headers);
    if resume.is_gap() {
        headers.insert(
            HeaderName::from_static(RESUME_HEADER),
            HeaderValue::from_static(resume.as_str()),
        );
    }
    (response, Some(resume))
}

/// The answer when the stream cannot be served right now.
///
/// A browser's EventSource treats any status but 200 as final and never reconnects, so a
/// client that accepts `text/event-stream` gets a 200 stream holding only a jittered `retry:` and
/// the reason, and ends: it reconnects on its own after the delay. Other clients get 503 with
/// `Retry-After` and the reason.
fn unavailable(
    shared: &Endpoints,
    parts: &Parts,
    reason: impl std::fmt::Display,
) -> Response<Reply> {
    let mut response = if accepts_event_stream(parts) {
        let frame = retry_frame(shared.config.shutdown_retry, &reason.to_string());
        let mut response = Response::new(Reply::Full(frame));
        set_stream_headers(response.headers_mut());
        response
    } else {
        let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, reason);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        response
    };
    close_after(parts, &mut response);
    response
}

/// Asks an HTTP/1 server to close the connection after a refusal: a refused client that keeps
/// its connection open would hold a file descriptor, and refusals come when the server is short
/// of them (full, shutting down). HTTP/2 has no such header; its streams share one connection.
fn close_after(parts: &Parts, response: &mut Response<Reply>) {
    if parts.version < http::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The answer when the client already has as many streams open as it may: 429 with
/// `Retry-After`, or, for an EventSource (which never reconnects after a non-200 status), a 200
/// stream that tells it to retry later.
fn too_many(shared: &Endpoints, parts: &Parts, max: usize) -> Response<Reply> {
    let reason = Refused::ClientLimit(max).to_string();
    if accepts_event_stream(parts) {
        return unavailable(shared, parts, reason);
    }
    let mut response = refuse(StatusCode::TOO_MANY_REQUESTS, reason);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    close_after(parts, &mut response);
    response
}

fn accepts_event_stream(parts: &Parts) -> bool {
    parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

fn set_stream_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
}

fn parse(parts: &Parts, max_topics: usize) -> Result<Query, String> {
    let mut topics: Vec<Topic> = Vec::new();
    let mut query_after = ResumePoint::None;
    for pair in form::pairs(parts.uri.query().unwrap_or("").as_bytes()) {
        let (key, value) = match pair {
            Ok(pair) => pair,
            // A resume id of any bytes is one that cannot be ours, never a reason to end an
            // EventSource with 400.
            Err(error) if error.in_value && RESUME_PARAMS.contains(&error.field.as_str()) => {
                query_after = ResumePoint::Unusable;
                continue;
            }
            Err(error) => return Err(format!("invalid query: {error}")),
        };
        if key == "topic" {
            add_topic(&mut topics, &value, max_topics)?;
        } else if RESUME_PARAMS.contains(&key.as_str()) && !value.is_empty() {
            query_after = EventId::new(&value).map_or(ResumePoint::Unusable, ResumePoint::Id);
        }
    }
    if topics.is_empty() {
        return Err("no topic: name at least one, as in /events?topic=chat".to_owned());
    }
    Ok(Query {
        topics,
        after: with_header(parts, query_after),
    })
}

/// A request for topics the app chose: only the resume point is read from it (the
/// `Last-Event-ID` header, or a `lastEventID` query parameter); the rest of its query is the
/// app's.
fn app_query(parts: &Parts, topics: Vec<Topic>) -> Result<Query, String> {
    if topics.is_empty() {
        return Err("no topic: the app streams none to this request".to_owned());
    }
    let mut query_after = ResumePoint::None;
    for pair in form::pairs(parts.uri.query().unwrap_or("").as_bytes()) {
        match pair {
            Ok((key, value)) if RESUME_PARAMS.contains(&key.as_str()) && !value.is_empty() => {
                query_after = EventId::new(&value).map_or(ResumePoint::Unusable, ResumePoint::Id);
            }
            Err(error) if error.in_value && RESUME_PARAMS.contains(&error.field.as_str()) => {
                query_after = ResumePoint::Unusable;
            }
            _ => {}
        }
    }
    Ok(Query {
        topics,
        after: with_header(parts, query_after),
    })
}

/// The resume point: the `Last-Event-ID` header if there is one, else `query_after`. The header
/// wins: on reconnect a browser keeps the URL it started with (and its stale query parameter)
/// but sends the id of the last event it saw as the header.
fn with_header(parts: &Parts, query_after: ResumePoint) -> ResumePoint {
    let header_after = admit::last_event_id(parts, |value| {
        EventId::new(value).map_or(ResumePoint::Unusable, ResumePoint::Id)
    });
    match header_after {
        ResumePoint::None => query_after,
        header => header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, last_event_id: Option<&str>) -> Parts {
        let mut builder = http::Request::get(uri);
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    #[test]
    fn header_resume_point_wins_over_query_parameter() {
        let request = parse(&parts("/events?topic=a&lastEventID=old", Some("new")), 8)
            .expect("valid request");
        assert_eq!(request.after.id().map(EventId::as_str), Some("new"));
        let request =
            parse(&parts("/events?topic=a&last_event_id=q", None), 8).expect("valid request");
        assert_eq!(request.after.id().map(EventId::as_str), Some("q"));
    }

    #[test]
    fn topics_are_deduplicated_and_limited() {
        let request =
            parse(&parts("/events?topic=a&topic=a&topic=b", None), 2).expect("valid request");
        assert_eq!(request.topics.len(), 2);
        let error = parse(&parts("/events?topic=a&topic=b&topic=c", None), 2)
            .expect_err("three topics are too many");
        assert!(error.contains("at most 2"), "{error}");
    }

    #[test]
    fn a_resume_id_that_is_not_utf8_is_unusable_but_a_topic_is_refused() {
        let request =
            parse(&parts("/events?topic=a&lastEventID=%FF%00", None), 8).expect("valid request");
        assert_eq!(request.after, ResumePoint::Unusable);
        let error = parse(&parts("/events?topic=%FF", None), 8).expect_err("not UTF-8");
        assert!(error.contains("not valid UTF-8"), "{error}");
    }

    #[test]
    fn percent_encoded_topics_are_decoded() {
        let request =
            parse(&parts("/events?topic=room%2F1&topic=a+b", None), 8).expect("valid request");
        let names: Vec<_> = request.topics.iter().map(Topic::as_str).collect();
        assert_eq!(names, ["room/1", "a b"]);
    }
}
