//! Active subscriptions (the protocol's optional part, which the reference hub ships): a private
//! update whenever a subscription opens or closes, and the web API that lists them.
//!
//! Each selector of a stream is one subscription, identified by the selector and the stream's
//! subscriber id (`urn:uuid:`). The updates reach subscribers on every instance through the
//! broker; the list spans every instance when the broker keeps a [`Presence`](crate::broker::Presence) (Redis does), and
//! is this process's otherwise (the in-memory broker serves one process anyway).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

use super::hub::{MercureHub, SUBSCRIPTIONS_PATH};
use super::id;
use crate::broker::{Broker, BrokerError, PublishRequest};
use crate::endpoint::Endpoints;
use crate::endpoint::reply::{Reply, denied, refuse};
use crate::event::{Event, Topic};
use crate::selector::Selector;

/// The JSON-LD context of every document.
const CONTEXT: &str = "https://mercure.rocks/";
/// The [`Presence`] group the subscriptions are listed in.
const GROUP: &str = "mercure-subscriptions";

/// RFC 6570 simple expansion keeps only the unreserved characters; every other byte is
/// percent-encoded (`:`, `/`, `{` and `}` included, as the protocol requires).
const EXPANDED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The subscriptions of this process's open streams.
#[derive(Debug, Default)]
pub(crate) struct Active {
    /// (selector, subscriber) → the subscription's document (without `@context`).
    entries: Mutex<BTreeMap<(String, String), Value>>,
}

/// One stream's subscriptions: what it registered, to withdraw when it closes.
pub(crate) struct Stream {
    pub(crate) subscriber: String,
    pub(crate) selectors: Vec<Selector>,
    pub(crate) payload: Option<Value>,
    /// Held while the subscriptions are announced or withdrawn, so a stream that closes while
    /// it is being announced is withdrawn after, never before (which would leave it listed).
    pub(crate) lifecycle: tokio::sync::Mutex<Lifecycle>,
}

/// Where a stream's announcement stands.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    opened: bool,
    closed: bool,
}

impl Active {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Value>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `stream`'s subscriptions and publishes their "active" updates, unless the
    /// stream closed already.
    pub(crate) async fn opened(&self, broker: &dyn Broker, stream: &Stream) {
        let mut lifecycle = stream.lifecycle.lock().await;
        if lifecycle.closed {
            return;
        }
        lifecycle.opened = true;
        let documents = documents(stream, true);
        {
            let mut entries = self.lock();
            for (selector, document) in stream.selectors.iter().zip(&documents) {
                entries.insert(
                    (selector.as_str().to_owned(), stream.subscriber.clone()),
                    document.clone(),
                );
            }
        }
        if let Some(presence) = broker.presence() {
            for document in &documents {
                let key = document["id"].as_str().unwrap_or_default();
                if let Err(error) = presence.join(GROUP, key, &document.to_string()).await {
                    tracing::debug!(target: "tower_sse_pubsub", %error, "subscription not listed");
                }
            }
        }
        announce(broker, documents).await;
    }

    /// Withdraws `stream`'s subscriptions; publishes their "inactive" updates if they were
    /// registered.
    pub(crate) async fn closed(&self, broker: &dyn Broker, stream: &Stream) {
        let mut lifecycle = stream.lifecycle.lock().await;
        lifecycle.closed = true;
        if !lifecycle.opened {
            return;
        }
        let removed = {
            let mut entries = self.lock();
            stream
                .selectors
                .iter()
                .filter(|selector| {
                    entries
                        .remove(&(selector.as_str().to_owned(), stream.subscriber.clone()))
                        .is_some()
                })
                .count()
        };
        if removed == 0 {
            return;
        }
        let documents = documents(stream, false);
        if let Some(presence) = broker.presence() {
            for document in &documents {
                let key = document["id"].as_str().unwrap_or_default();
                if let Err(error) = presence.leave(GROUP, key).await {
                    tracing::debug!(target: "tower_sse_pubsub", %error, "subscription not unlisted");
                }
            }
        }
        announce(broker, documents).await;
    }

    /// The documents of the subscriptions with `selector` (all when `None`), and of
    /// `subscriber` when given: of every instance when the broker keeps a presence, of this
    /// process otherwise.
    async fn list(
        &self,
        broker: &dyn Broker,
        selector: Option<&str>,
        subscriber: Option<&str>,
    ) -> Result<Vec<Value>, BrokerError> {
        let wanted = |document: &Value| {
            selector.is_none_or(|want| document["topic"] == want)
                && subscriber.is_none_or(|want| document["subscriber"] == want)
        };
        let Some(presence) = broker.presence() else {
            return Ok(self
                .lock()
                .values()
                .filter(|document| wanted(document))
                .cloned()
                .collect());
        };
        let mut listed: Vec<Value> = presence
            .list(GROUP)
            .await?
            .into_iter()
            .filter_map(|(_, value)| serde_json::from_str(&value).ok())
            .filter(|document| wanted(document))
            .collect();
        listed.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        Ok(listed)
    }
}

/// `/.well-known/mercure/subscriptions/{topic}/{subscriber}`, expanded.
fn topic_of(selector: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        utf8_percent_encode(selector, EXPANDED),
        utf8_percent_encode(subscriber, EXPANDED)
    )
}

/// One document per selector of `stream`.
fn documents(stream: &Stream, active: bool) -> Vec<Value> {
    stream
        .selectors
        .iter()
        .map(|selector| {
            let mut document = json!({
                "id": topic_of(selector.as_str(), &stream.subscriber),
                "type": "Subscription",
                "topic": selector.as_str(),
                "subscriber": stream.subscriber,
                "active": active,
            });
            if let (Some(payload), Value::Object(map)) = (&stream.payload, &mut document) {
                map.insert("payload".to_owned(), payload.clone());
            }
            document
        })
        .collect()
}

/// Publishes each document as a private update on its own topic (always a valid one: a
/// selector is at most a quarter of a topic's length, so it fits even fully percent-encoded).
async fn announce(broker: &dyn Broker, documents: Vec<Value>) {
    for mut document in documents {
        let Some(topic) = document["id"].as_str().and_then(|id| Topic::new(id).ok()) else {
            tracing::debug!(
                target: "tower_sse_pubsub",
                id = %document["id"],
                "subscription update not published: its topic is too long"
            );
            continue;
        };
        if let Value::Object(map) = &mut document {
            map.insert("@context".to_owned(), Value::from(CONTEXT));
        }
        let Ok(event) = Event::json(&document) else {
            continue;
        };
        let Ok(id) = id::generate() else { continue };
        let request = PublishRequest::new([topic], event).id(id).private();
        if let Err(error) = broker.publish(&request).await {
            tracing::debug!(
                target: "tower_sse_pubsub",
                %error,
                "subscription update not published"
            );
        }
    }
}

/// `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`.
pub(crate) async fn api(shared: &Endpoints, hub: &MercureHub, parts: &Parts) -> Response<Reply> {
    let path = parts.uri.path();
    if let Err(denial) = hub.authorizer.mercure_api(parts, path) {
        return denied(&denial);
    }
    let rest = path.strip_prefix(SUBSCRIPTIONS_PATH).unwrap_or("");
    let segments: Vec<String> = rest
        .split('/')
        .skip(1)
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    if segments.len() > 2 || segments.iter().any(String::is_empty) {
        return refuse(StatusCode::NOT_FOUND, "no such subscription resource");
    }
    let selector = segments.first().map(String::as_str);
    let subscriber = segments.get(1).map(String::as_str);
    let found = match hub.active.list(&*shared.broker, selector, subscriber).await {
        Ok(found) => found,
        Err(error) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot list the subscriptions: {error}"),
            );
        }
    };
    let last_event_id = match shared.broker.last_event_id().await {
        Ok(Some(id)) => id.as_str().to_owned(),
        Ok(None) => super::subscribe::EARLIEST.to_owned(),
        Err(error) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the last event id: {error}"),
            );
        }
    };
    let body = match subscriber {
        Some(_) => {
            let Some(Value::Object(mut document)) = found.into_iter().next() else {
                return refuse(StatusCode::NOT_FOUND, "no such subscription");
            };
            document.insert("@context".to_owned(), Value::from(CONTEXT));
            document.insert("lastEventID".to_owned(), Value::from(last_event_id));
            Value::Object(document)
        }
        None => json!({
            "@context": CONTEXT,
            "id": path,
            "type": "Subscriptions",
            "lastEventID": last_event_id,
            "subscriptions": found,
        }),
    };
    let mut response = crate::endpoint::reply::text(StatusCode::OK, body.to_string());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/ld+json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    response
}

/// What a stream that closes must do: withdraw its subscriptions, off the dropping thread.
pub(crate) fn on_close(
    active: Arc<Active>,
    broker: Arc<dyn Broker>,
    stream: Arc<Stream>,
) -> impl FnOnce() + Send + 'static {
    move || {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { active.closed(&*broker, &stream).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_expand_as_the_protocol_shows() {
        assert_eq!(
            topic_of(
                "https://example.com/{selector}",
                "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6"
            ),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bselector%7D/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
    }

    #[test]
    fn documents_carry_the_payload_and_the_state() {
        let stream = Stream {
            subscriber: "urn:uuid:1".to_owned(),
            selectors: vec![Selector::new("a").expect("valid")],
            payload: Some(json!({"foo": "bar"})),
            lifecycle: Default::default(),
        };
        let [document] = &documents(&stream, false)[..] else {
            panic!("one document");
        };
        assert_eq!(
            document,
            &json!({
                "id": "/.well-known/mercure/subscriptions/a/urn%3Auuid%3A1",
                "type": "Subscription",
                "topic": "a",
                "subscriber": "urn:uuid:1",
                "active": false,
                "payload": {"foo": "bar"},
            })
        );
    }
}
