//! [`Publisher`]: the handle app code publishes with.

use std::fmt;
use std::sync::Arc;

use crate::broker::{Broker, BrokerError, PublishRequest};
use crate::event::{Event, EventError, EventId, Topic, TopicError};
use crate::stats::Counters;

/// Publishes events from app code: request handlers, gRPC methods, background jobs.
///
/// Cheap to clone and usable from any task. It goes straight to the broker, so it needs no HTTP
/// authorization; every subscriber of the topic, on every instance that shares the broker,
/// receives the event.
///
/// ```
/// use tower_sse_pubsub::{Event, Hub, Topic};
///
/// #[derive(serde::Serialize)]
/// struct Message<'a> { from: &'a str, text: &'a str }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new();
/// let publisher = hub.publisher();
///
/// let id = publisher.publish_json("chat", &Message { from: "ada", text: "hi" }).await?;
/// publisher.publish_text("chat", "plain text").await?;
/// publisher.publish("chat", Event::text("typed")?.with_event_type("notice")?).await?;
///
/// // One event to several topics: a subscriber of both receives it once.
/// let topics = [Topic::new("chat")?, Topic::new("audit")?];
/// publisher.publish_to(&topics, Event::text("both")?).await?;
/// # let _ = id;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
    /// The hub's counters, for a publisher made by [`Hub::publisher`](crate::Hub::publisher).
    counters: Option<Arc<Counters>>,
}

impl Publisher {
    /// A publisher that publishes through `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self {
            broker,
            counters: None,
        }
    }

    /// A publisher whose publishes count in a hub's [`HubStats`](crate::HubStats).
    pub(crate) fn counted(broker: Arc<dyn Broker>, counters: Arc<Counters>) -> Self {
        Self {
            broker,
            counters: Some(counters),
        }
    }

    /// Publishes `event` to `topic` and returns its id.
    ///
    /// # Errors
    ///
    /// [`PublishError::InvalidTopic`] for an invalid topic name, [`PublishError::Broker`] when
    /// the broker could not store the event (nothing was published then).
    pub async fn publish(
        &self,
        topic: impl AsRef<str>,
        event: Event,
    ) -> Result<EventId, PublishError> {
        let topic = Topic::new(topic).map_err(PublishError::InvalidTopic)?;
        self.publish_to(std::slice::from_ref(&topic), event).await
    }

    /// Publishes `event` to all of `topics` at once, under one id.
    ///
    /// # Errors
    ///
    /// [`PublishError::Broker`] when `topics` is empty or the broker could not store the event.
    pub async fn publish_to(
        &self,
        topics: &[Topic],
        event: Event,
    ) -> Result<EventId, PublishError> {
        let request = PublishRequest::new(topics.iter().cloned(), event);
        self.send(&request).await
    }

    /// Publishes a request built in full: several topics, an idempotency key, a private event.
    ///
    /// ```
    /// use tower_sse_pubsub::{Event, Hub, IdempotencyKey, PublishRequest, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let publisher = Hub::new().publisher();
    /// let request = PublishRequest::new([Topic::new("orders")?], Event::text("shipped")?)
    ///     .idempotency_key(IdempotencyKey::new("order-42-shipped")?);
    /// let first = publisher.send(&request).await?;
    /// // A retry (say, after a timeout) publishes nothing new and returns the same id.
    /// assert_eq!(publisher.send(&request).await?, first);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PublishError::Broker`] when the request has no topic or the broker could not store
    /// the event.
    pub async fn send(&self, request: &PublishRequest) -> Result<EventId, PublishError> {
        let published = self.broker.publish(request).await;
        if let Some(counters) = &self.counters {
            match &published {
                Ok(_) => counters.published(),
                Err(BrokerError::NoTopics) => {}
                Err(_) => counters.publish_failed(),
            }
        }
        match &published {
            Ok(id) => {
                tracing::trace!(target: "tower_sse_pubsub", id = %id, topics = request.topics().len(), "published")
            }
            Err(error) => tracing::debug!(target: "tower_sse_pubsub", %error, "publish failed"),
        }
        Ok(published?)
    }

    /// Publishes `value` as JSON data to `topic`.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`], plus [`PublishError::InvalidEvent`] when `value` cannot be
    /// serialized.
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        topic: impl AsRef<str>,
        value: &T,
    ) -> Result<EventId, PublishError> {
        let event = Event::json(value)?;
        self.publish(topic, event).await
    }

    /// Publishes `text` as the data of an event to `topic`.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`], plus [`PublishError::InvalidEvent`] when `text` is empty.
    pub async fn publish_text(
        &self,
        topic: impl AsRef<str>,
        text: impl Into<String>,
    ) -> Result<EventId, PublishError> {
        let event = Event::text(text)?;
        self.publish(topic, event).await
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// Why [`Publisher`] could not publish.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is invalid.
    InvalidTopic(TopicError),
    /// The event could not be built.
    InvalidEvent(EventError),
    /// The broker did not store the event; nothing was published.
    Broker(BrokerError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTopic(e) => write!(f, "cannot publish: {e}"),
            Self::InvalidEvent(e) => write!(f, "cannot publish: {e}"),
            Self::Broker(e) => write!(f, "cannot publish: {e}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidTopic(e) => Some(e),
            Self::InvalidEvent(e) => Some(e),
            Self::Broker(e) => Some(e),
        }
    }
}

impl From<BrokerError> for PublishError {
    fn from(e: BrokerError) -> Self {
        Self::Broker(e)
    }
}

impl From<EventError> for PublishError {
    fn from(e: EventError) -> Self {
        Self::InvalidEvent(e)
    }
}
