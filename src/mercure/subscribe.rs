//! `GET /.well-known/mercure?topic=…`: a Mercure subscription (the protocol's "Subscription"
//! and "Reconciliation").
//!
//! Reads the topic selectors (`topic`, or draft-08's `match`), the resume point (the
//! `Last-Event-ID` header, else the `lastEventID` or `last_event_id` query parameter; `earliest`
//! asks for everything retained), checks the token the Mercure way, and answers with the event
//! stream. Whenever a resume point was given, the response's `Last-Event-ID` (and draft-08's
//! `Mercure-Last-Event-ID`) header names the event before the first one sent: the requested id
//! when everything after it follows, else `earliest`.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use super::hub::MercureHub;
use super::{id, subscriptions};
use crate::broker::Resume;
use crate::endpoint::Endpoints;
use crate::endpoint::admit::{self, Ask, Decider, OnClose, ResumePoint};
use crate::endpoint::form;
use crate::endpoint::reply::{Reply, denied, refuse};
use crate::endpoint::subscribe::{answer, refused};
use crate::event::{EventId, Topic};
use crate::selector::Selector;
use crate::stats::Refusal;

/// The reserved resume point that asks for every retained update.
pub(crate) const EARLIEST: &str = "earliest";

/// Query parameters that carry the resume point (draft-07's name, then draft-08's).
const RESUME_PARAMS: [&str; 2] = ["lastEventID", "last_event_id"];

/// What a subscribe asks for.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) topics: Vec<Topic>,
    pub(crate) patterns: Vec<Selector>,
    /// Every selector as given, in order, each once.
    pub(crate) selectors: Vec<Selector>,
    pub(crate) after: ResumePoint,
}

pub(crate) async fn subscribe(
    shared: Arc<Endpoints>,
    mercure: &MercureHub,
    parts: Parts,
) -> Response<Reply> {
    let query = match parse(&parts, shared.config.max_topics) {
        Ok(query) => query,
        Err(reason) => {
            let response = refuse(StatusCode::BAD_REQUEST, reason);
            return refused(&shared, true, Refusal::BadRequest, response);
        }
    };
    let subscriber = match mercure.authorizer.mercure_subscriber(&parts) {
        Ok(subscriber) => subscriber,
        Err(denial) => return refused(&shared, true, Refusal::Denied, denied(&denial)),
    };
    let after = query.after.clone();
    // With active subscriptions, the stream's subscriptions are announced once it is admitted,
    // and withdrawn when it closes.
    let stream = match mercure.subscriptions.then(id::generate) {
        Some(Ok(id)) => Some(Arc::new(subscriptions::Stream {
            subscriber: id.as_str().to_owned(),
            selectors: query.selectors,
            payload: subscriber.payload.clone(),
            lifecycle: Default::default(),
        })),
        _ => None,
    };
    let on_close = stream.as_ref().map(|stream| {
        OnClose(Box::new(subscriptions::on_close(
            mercure.active.clone(),
            shared.broker.clone(),
            stream.clone(),
        )))
    });
    let broker = shared.broker.clone();
    let ask = Ask {
        topics: query.topics,
        patterns: query.patterns,
        after: query.after,
        decider: Decider::Decided(subscriber.allowed),
        counted: true,
        on_close,
    };
    let (mut response, resume) = answer(shared, &parts, ask).await;
    if let (Some(stream), Some(_)) = (stream, &resume) {
        // On a task of its own, so a client that hangs up meanwhile cannot cut it halfway (a
        // subscription listed in Redis, say, that nobody withdraws).
        let active = mercure.active.clone();
        let announcing = tokio::spawn(async move { active.opened(&*broker, &stream).await });
        // It only fails if the runtime is shutting down; the stream is answered anyway.
        let _ = announcing.await;
    }
    if let Some(resume) = resume {
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        if let Some(value) = last_event_id_header(&after, &resume) {
            headers.insert(HeaderName::from_static("last-event-id"), value.clone());
            headers.insert(HeaderName::from_static("mercure-last-event-id"), value);
        }
    }
    response
}

/// The `Last-Event-ID` response header for a stream that started from `after` and was placed
/// as `resume`: the id of the event before the first one sent, or `earliest` when the hub cannot
/// name it (nothing precedes, the id was unknown, or events after it were lost). `None` when
/// the client gave no resume point.
fn last_event_id_header(after: &ResumePoint, resume: &Resume) -> Option<HeaderValue> {
    let earliest = HeaderValue::from_static(EARLIEST);
    match (after, resume) {
        (ResumePoint::None, _) => None,
        (ResumePoint::Id(id), Resume::Complete) => {
            // Any UTF-8 id goes as its bytes (as the client sent it); only one with control
            // characters cannot be a header value.
            Some(HeaderValue::from_bytes(id.as_str().as_bytes()).unwrap_or(earliest))
        }
        _ => Some(earliest),
    }
}

/// Reads the selectors and the resume point.
pub(crate) fn parse(parts: &Parts, max_selectors: usize) -> Result<Query, String> {
    let mut query = Query {
        topics: Vec::new(),
        patterns: Vec::new(),
        selectors: Vec::new(),
        after: ResumePoint::None,
    };
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
        match key.as_str() {
            "topic" | "match" => add_selector(&mut query, &value, max_selectors)?,
            key if key.starts_with("match") => {
                return Err(format!(
                    "unknown parameter `{key}`: this hub matches topics by `topic` or `match` \
                     (exact topics, `*` and URI templates); URL patterns are not supported"
                ));
            }
            key if RESUME_PARAMS.contains(&key) && !value.is_empty() => {
                query_after = resume_point(&value);
            }
            _ => {}
        }
    }
    if query.selectors.is_empty() {
        return Err(
            "no topic selector: name at least one, as in /.well-known/mercure?topic=https://example.com/books/{id}"
                .to_owned(),
        );
    }
    let header_after = admit::last_event_id(parts, resume_point);
    // The header wins (a reconnecting EventSource sends it, and keeps its stale query).
    query.after = match header_after {
        ResumePoint::None => query_after,
        header => header,
    };
    Ok(query)
}

fn resume_point(value: &str) -> ResumePoint {
    if value == EARLIEST {
        return ResumePoint::Earliest;
    }
    EventId::new(value).map_or(ResumePoint::Unusable, ResumePoint::Id)
}

fn add_selector(query: &mut Query, source: &str, max: usize) -> Result<(), String> {
    let selector =
        Selector::new(source).map_err(|e| format!("invalid topic selector {source:?}: {e}"))?;
    if query.selectors.contains(&selector) {
        return Ok(());
    }
    if query.selectors.len() == max {
        return Err(format!(
            "too many topic selectors: at most {max} per request"
        ));
    }
    if selector.is_any() || selector.is_template() {
        query.patterns.push(selector.clone());
    } else {
        let topic = Topic::new(source).map_err(|e| format!("invalid topic {source:?}: {e}"))?;
        query.topics.push(topic);
    }
    query.selectors.push(selector);
    Ok(())
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
    fn selectors_split_into_topics_and_patterns() {
        let query = parse(
            &parts(
                "/.well-known/mercure?topic=https://example.com/books/%7Bid%7D&topic=a&match=*&topic=a",
                None,
            ),
            8,
        )
        .expect("valid");
        assert_eq!(query.topics.len(), 1);
        assert_eq!(query.patterns.len(), 2);
        assert_eq!(query.selectors.len(), 3);
        assert_eq!(query.after, ResumePoint::None);
    }

    #[test]
    fn the_header_wins_and_earliest_is_reserved() {
        let query = parse(&parts("/h?topic=a&lastEventID=q", Some("h")), 8).expect("valid");
        assert_eq!(query.after.id().map(EventId::as_str), Some("h"));
        let query = parse(&parts("/h?topic=a&last_event_id=earliest", None), 8).expect("valid");
        assert_eq!(query.after, ResumePoint::Earliest);
        let query = parse(&parts("/h?topic=a&lastEventID=%FF", None), 8).expect("valid");
        assert_eq!(query.after, ResumePoint::Unusable);
    }

    #[test]
    fn refuses_no_selector_unknown_match_parameters_and_too_many() {
        assert!(parse(&parts("/h", None), 8).is_err());
        let error = parse(&parts("/h?match_urlpattern=/books/:id", None), 8).expect_err("400");
        assert!(error.contains("match_urlpattern"), "{error}");
        let error = parse(&parts("/h?topic=a&topic=b&topic=c", None), 2).expect_err("400");
        assert!(error.contains("at most 2"), "{error}");
    }

    #[test]
    fn the_response_header_names_the_id_only_when_nothing_was_missed() {
        let id = ResumePoint::Id(EventId::new("urn:uuid:1").expect("valid"));
        let header = |after: &ResumePoint, resume: Resume| {
            last_event_id_header(after, &resume).map(|v| v.to_str().expect("ascii").to_owned())
        };
        assert_eq!(header(&id, Resume::Complete).as_deref(), Some("urn:uuid:1"));
        assert_eq!(header(&id, Resume::Expired).as_deref(), Some("earliest"));
        assert_eq!(header(&id, Resume::Unknown).as_deref(), Some("earliest"));
        assert_eq!(
            header(&ResumePoint::Earliest, Resume::Complete).as_deref(),
            Some("earliest")
        );
        assert_eq!(header(&ResumePoint::None, Resume::Fresh), None);
    }
}
