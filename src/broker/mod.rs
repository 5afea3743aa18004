//! For broker authors: the [`Broker`] trait, and the fan-out engine ([`Fanout`]) every broker
//! feeds.
//!
//! An app picks a broker ([`MemoryBroker`], the default, `RedisBroker` or `NatsBroker`)
//! and hands it to [`HubBuilder::broker`](crate::HubBuilder::broker); it needs nothing from this
//! module. The requests, [`Subscription`] and [`BrokerError`]
//! are at the crate root, because apps use them too.
//!
//! A broker does two things. [`Broker::publish`] gives an event the next id, keeps it in the
//! topic's bounded history and delivers it to every current subscriber.
//! [`Broker::subscribe`] returns a [`Subscription`]: first every retained
//! event after a resume point, then live events, with no gap and no duplicate at the switch. The
//! trait is dyn-compatible, so a hub holds an `Arc<dyn Broker>` and tests and apps swap backends
//! without changing types.
//!
//! # The fan-out engine
//!
//! A broker's job is ids, history and moving events between processes; delivery inside the
//! process is this engine's. [`MemoryBroker`] publishes into it,
//! `RedisBroker` and `NatsBroker` append what arrives from Redis or NATS, and an outside
//! broker does the same with [`Fanout::append`].
//!
//! * **Per-topic rings.** A frame is appended once to each of its topics' rings, bounded by
//!   count and bytes (and, over all topics, by bytes and age). Readers share those frames: a
//!   subscriber costs its positions, not a queue.
//! * **No lock held while fanning out.** Appending takes the engine's ingest lock and each
//!   topic's ring lock for a few pointer moves; the readers are woken after both are released,
//!   and only the readers of the frame's topics. Readers take only their own topics' ring locks.
//! * **Order.** Frames enter in sequence order, so each ring is ordered; a reader of several
//!   topics merges them by sequence below the watermark (the sequence of the last frame fully
//!   appended), so it sees every event once and in order.
//! * **Lag.** A reader whose position fell out of the ring lagged: its stream ends and the client
//!   resumes from history. Nothing is pinned per subscriber.
//!
//! ```
//! use futures::StreamExt;
//! use tower_sse_pubsub::broker::{Fanout, Position};
//! use tower_sse_pubsub::{Event, EventId, Frame, Grant, Topic};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fanout = Fanout::builder().build();
//! let chat = Topic::new("chat")?;
//! let (mut reader, _) = fanout.subscribe(&[chat.clone()], Position::Live, Grant::PublicOnly);
//!
//! // A broker that assigns ids elsewhere appends frames in sequence order.
//! let frame = Frame::new(EventId::new("e-1")?, 1, &[chat], &Event::text("hi")?);
//! assert!(fanout.append(frame.clone()));
//! let delivered = reader.next().await.and_then(|d| d.into_event()).expect("an event");
//! assert_eq!(delivered.bytes(), frame.bytes());
//! # Ok(())
//! # }
//! ```

pub(crate) mod error;
pub(crate) mod memory;
#[cfg(feature = "nats")]
pub(crate) mod nats;
pub(crate) mod presence;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod request;
pub(crate) mod subscription;

pub use crate::fanout::{Fanout, FanoutBuilder, Position, Reader};
pub use presence::Presence;
pub use subscription::ReplayPages;

pub(crate) use crate::future::BoxFuture;
pub(crate) use error::BrokerError;
pub(crate) use memory::MemoryBroker;
pub(crate) use request::{
    Grant, IdempotencyKey, PublishRequest, ReplayBudget, Start, SubscribeRequest,
};
pub(crate) use subscription::{Delivery, Resume, Subscription, SubscriptionEnd};

use crate::event::EventId;

/// A pub/sub backend: assigns ids, keeps bounded history, and moves events between processes;
/// delivery inside the process is the [fan-out engine](Fanout)'s.
///
/// Implementations must uphold the crate's guarantees: ids are unique and totally ordered within
/// the broker, a subscription replays then goes live without gap or duplicate, and a publish that
/// returns `Ok` has been stored (it is not lost afterwards for lack of a subscriber).
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt;
/// use tower_sse_pubsub::broker::Broker;
/// use tower_sse_pubsub::{Event, MemoryBroker, PublishRequest, Start, SubscribeRequest, Topic};
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

    /// Subscribes to the request's topics and patterns (at least one of either) from its start:
    /// the retained events after it, in order, then live events. [`Subscription::resume`] tells
    /// whether the start could be placed. A broker that cannot serve patterns answers
    /// [`BrokerError::Unsupported`].
    fn subscribe<'a>(
        &'a self,
        request: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>>;

    /// An id that places a subscription after the newest event published so far (`None` when
    /// nothing was, or the broker cannot say): Mercure's subscriptions API reports it so a
    /// client can subscribe to what follows without a gap. The default says `None`.
    fn last_event_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BrokerError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Entries that every process sharing this broker can list ([`Presence`]), or `None` for a
    /// broker whose subscribers all live in one process (the default).
    fn presence(&self) -> Option<&dyn Presence> {
        None
    }
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

    fn last_event_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BrokerError>> {
        (**self).last_event_id()
    }

    fn presence(&self) -> Option<&dyn Presence> {
        (**self).presence()
    }
}
