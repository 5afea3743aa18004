//! Where events meet: the [`Broker`] trait, the [`Subscription`] stream it hands out, and the
//! backends.
//!
//! A broker does two things. [`Broker::publish`] gives an event the next id, keeps it in the
//! topic's bounded history and delivers it to every current subscriber.
//! [`Broker::subscribe`] returns a [`Subscription`]: first every retained event after a resume
//! point, then live events, with no gap and no duplicate at the switch.
//!
//! [`MemoryBroker`] is the in-process default. The trait is dyn-compatible, so a hub holds an
//! `Arc<dyn Broker>` and tests and apps swap backends without changing types.

mod memory;
#[cfg(feature = "redis")]
mod redis;
mod request;
mod subscription;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

#[cfg(feature = "redis")]
pub use self::redis::{RedisBroker, RedisBrokerBuilder, RedisConnectError};
pub use memory::{MemoryBroker, MemoryBrokerBuilder};
pub use request::{
    Grant, IdempotencyKey, IdempotencyKeyError, MAX_IDEMPOTENCY_KEY_LEN, PublishRequest,
    ReplayBudget, Start, SubscribeRequest,
};
pub use subscription::{Delivery, ReplayPages, Resume, Subscription, SubscriptionEnd};

use crate::event::EventId;

/// A boxed future, as returned by the dyn-compatible [`Broker`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A pub/sub backend: assigns ids, keeps bounded history, and moves events between processes;
/// delivery inside the process is the [`fanout`](crate::fanout) engine's.
///
/// Implementations must uphold the crate's guarantees: ids are unique and totally ordered within
/// the broker, a subscription replays then goes live without gap or duplicate, and a publish that
/// returns `Ok` has been stored (it is not lost afterwards for lack of a subscriber).
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use tower_sse_pubsub::{Broker, Event, MemoryBroker, PublishRequest, Start, SubscribeRequest, Topic};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
/// let chat = Topic::new("chat")?;
/// let first = broker.publish(&PublishRequest::new([chat.clone()], Event::text("one")?)).await?;
///
/// // A subscriber that resumes after `first` sees only what came later.
/// let request = SubscribeRequest::new([chat.clone()]).start(Start::After(first));
/// let mut subscription = broker.subscribe(&request).await?;
/// let second = broker.publish(&PublishRequest::new([chat], Event::text("two")?)).await?;
/// let frame = subscription.next().await.and_then(|d| d.into_event()).expect("live event");
/// assert_eq!(frame.id(), &second);
/// # Ok(())
/// # }
/// ```
pub trait Broker: Send + Sync + 'static {
    /// Publishes the request's event to its topics (at least one) and returns its id. A
    /// subscriber of several of these topics receives the event once.
    fn publish<'a>(
        &'a self,
        request: &'a PublishRequest,
    ) -> BoxFuture<'a, Result<EventId, BrokerError>>;

    /// Subscribes to the request's topics (at least one) from its start: the retained events
    /// after it, in order, then live events. [`Subscription::resume`] tells whether the start
    /// could be placed.
    fn subscribe<'a>(
        &'a self,
        request: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>>;
}

impl<B: Broker + ?Sized> Broker for std::sync::Arc<B> {
    fn publish<'a>(
        &'a self,
        request: &'a PublishRequest,
    ) -> BoxFuture<'a, Result<EventId, BrokerError>> {
        (**self).publish(request)
    }

    fn subscribe<'a>(
        &'a self,
        request: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        (**self).subscribe(request)
    }
}

/// Why a broker could not publish or subscribe.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerError {
    /// The call named no topic; publish and subscribe need at least one.
    NoTopics,
    /// The backend cannot be reached or did not confirm the operation. A publish that was not
    /// confirmed may still have been stored (it timed out after reaching the backend), never the
    /// reverse. Retrying later may succeed (HTTP: 503). Build it with
    /// [`BrokerError::unavailable`].
    #[non_exhaustive]
    Unavailable {
        /// What failed, for people.
        reason: String,
        /// The underlying error, if any.
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

impl BrokerError {
    /// An [`BrokerError::Unavailable`] with a reason and the error that caused it.
    pub fn unavailable(
        reason: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTopics => f.write_str("at least one topic is required"),
            // Not "nothing was stored": a publish that timed out after reaching the backend may
            // have been, and a failed subscribe stores nothing anyway.
            Self::Unavailable { reason, .. } => {
                write!(f, "broker unavailable: {reason}; retry later")
            }
        }
    }
}

impl StdError for BrokerError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Unavailable {
                source: Some(source),
                ..
            } => Some(&**source as &(dyn StdError + 'static)),
            _ => None,
        }
    }
}
