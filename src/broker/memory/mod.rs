//! [`MemoryBroker`]: the in-process broker, the default, and the one tests use.
//!
//! The broker's state and retention rules live in `state`; this module is its public face and
//! its lock.

mod state;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use self::state::{Retention, State};
use super::subscription::{Mailbox, Subscription};
use super::{BoxFuture, Broker, BrokerError};
use crate::event::{Event, EventId, Topic};

/// Events kept per topic by default.
const DEFAULT_HISTORY: usize = 1_000;
/// Bytes of encoded events kept over all topics by default.
const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// Frames a subscriber may have queued by default before it counts as lagging.
const DEFAULT_QUEUE: usize = 256;
/// The largest subscriber queue accepted; larger settings are lowered to it.
pub const MAX_SUBSCRIBER_QUEUE: usize = 1 << 20;

/// An in-memory broker for one process.
///
/// Ids look like `5f3a9c01-42`: a random epoch, fixed when the broker is created, then a
/// counter. An id from another broker or from before a restart therefore cannot be mistaken for
/// one of ours; the subscription reports it as [`Resume::Unknown`](super::Resume::Unknown) and
/// replays all it has.
///
/// History is bounded three ways: per topic by count (default 1,000 events), over all topics by
/// the bytes of the encoded events (default 64 MiB, oldest evicted first), and optionally by age
/// (checked on every publish and subscribe). A topic with neither history nor subscribers is
/// forgotten, so the number of topics is bounded too. Each subscriber's live queue is bounded
/// (default 256 frames); a subscriber that lets it fill up is dropped and its stream ends with
/// [`SubscriptionEnd::Lagged`](super::SubscriptionEnd::Lagged).
///
/// One lock guards the counter, the histories and the subscriber lists: publishing assigns the
/// id, retains and fans out under it, and subscribing collects the replay and registers under it.
/// That makes the switch from replay to live exact, and keeps a subscriber of several topics
/// receiving events in id order, so its `Last-Event-ID` is always a correct resume point.
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::MemoryBroker;
///
/// let broker = MemoryBroker::builder()
///     .history_per_topic(100)
///     .history_max_age(Duration::from_secs(600))
///     .history_max_bytes(16 * 1024 * 1024)
///     .subscriber_queue(64)
///     .build();
/// # drop(broker);
/// ```
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: String,
    retention: Retention,
    subscriber_queue: usize,
    state: Mutex<State>,
}

impl MemoryBroker {
    /// A broker with the default limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set history and queue limits.
    pub fn builder() -> MemoryBrokerBuilder {
        MemoryBrokerBuilder {
            retention: Retention {
                per_topic: DEFAULT_HISTORY,
                max_age: None,
                max_bytes: DEFAULT_HISTORY_BYTES,
            },
            subscriber_queue: DEFAULT_QUEUE,
        }
    }

    /// The number of (subscriber, topic) registrations: a subscription to two topics counts
    /// twice. A subscriber that fell behind stops counting as soon as it is dropped from a
    /// topic's fan-out.
    pub fn topic_subscriptions(&self) -> usize {
        self.shared.lock().topic_subscriptions()
    }

    /// The number of (topic, event) pairs currently retained for resuming clients.
    pub fn retained_count(&self) -> usize {
        self.shared.lock().retained_count()
    }

    /// The bytes of encoded events currently retained (an event on two topics counts twice).
    pub fn retained_bytes(&self) -> usize {
        self.shared.lock().retained_bytes()
    }

    /// The number of topics the broker knows: those with history or subscribers.
    pub fn topic_count(&self) -> usize {
        self.shared.lock().topic_count()
    }

    fn publish_now(&self, topics: &[Topic], event: &Event) -> Result<EventId, BrokerError> {
        if topics.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &*self.shared;
        let now = Instant::now();
        let id = shared
            .lock()
            .publish(topics, event, |sequence| shared.id_for(sequence), now);
        Ok(id)
    }

    fn subscribe_now(
        &self,
        topics: &[Topic],
        after: Option<&EventId>,
    ) -> Result<Subscription, BrokerError> {
        if topics.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &*self.shared;
        let after = after.map(|id| shared.sequence_of(id));
        let (mailbox, live) = Mailbox::new(shared.subscriber_queue);
        let now = Instant::now();
        let (subscriber, placement) = shared.lock().subscribe(topics, after, &mailbox, now);
        drop(mailbox);

        let weak = Arc::downgrade(&self.shared);
        let mut registered = topics.to_vec();
        registered.sort_unstable();
        registered.dedup();
        let unsubscribe = Box::new(move || unsubscribe(&weak, subscriber, &registered));
        Ok(Subscription::from_parts(
            placement.replay,
            live,
            placement.resume,
            unsubscribe,
        ))
    }
}

fn unsubscribe(shared: &Weak<Shared>, subscriber: u64, topics: &[Topic]) {
    if let Some(shared) = shared.upgrade() {
        shared.lock().unsubscribe(subscriber, topics);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics; should something, serving on beats poisoning every
        // later caller, since each operation leaves the state consistent between steps.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn id_for(&self, sequence: u64) -> EventId {
        // Eight hex digits, a dash and at most twenty decimal digits: always a valid id.
        EventId::from_trusted(format!("{}-{sequence}", self.epoch))
    }

    /// The sequence inside one of our ids, or `None` when the id is not ours.
    fn sequence_of(&self, id: &EventId) -> Option<u64> {
        let (epoch, sequence) = id.as_str().split_once('-')?;
        if epoch != self.epoch || !sequence.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        sequence.parse().ok().filter(|&s| s > 0)
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("epoch", &self.shared.epoch)
            .field("retention", &self.shared.retention)
            .field("subscriber_queue", &self.shared.subscriber_queue)
            .finish_non_exhaustive()
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        topics: &'a [Topic],
        event: &'a Event,
    ) -> BoxFuture<'a, Result<EventId, BrokerError>> {
        let result = self.publish_now(topics, event);
        Box::pin(std::future::ready(result))
    }

    fn subscribe<'a>(
        &'a self,
        topics: &'a [Topic],
        after: Option<&'a EventId>,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        let result = self.subscribe_now(topics, after);
        Box::pin(std::future::ready(result))
    }
}

/// Configures a [`MemoryBroker`]; see [`MemoryBroker::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the broker"]
pub struct MemoryBrokerBuilder {
    retention: Retention,
    subscriber_queue: usize,
}

impl MemoryBrokerBuilder {
    /// How many events each topic keeps for resuming clients (default 1,000; 0 keeps none).
    pub fn history_per_topic(mut self, events: usize) -> Self {
        self.retention.per_topic = events;
        self
    }

    /// Drops retained events older than `age`, checked on every publish and subscribe
    /// (default: no age limit).
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.retention.max_age = Some(age);
        self
    }

    /// The most bytes of encoded events kept over all topics; past it the oldest events go first
    /// (default 64 MiB).
    pub fn history_max_bytes(mut self, bytes: usize) -> Self {
        self.retention.max_bytes = bytes;
        self
    }

    /// How many frames a subscriber may have waiting before it counts as too slow and its stream
    /// ends (default 256; at least 1, at most [`MAX_SUBSCRIBER_QUEUE`]).
    pub fn subscriber_queue(mut self, frames: usize) -> Self {
        self.subscriber_queue = frames.clamp(1, MAX_SUBSCRIBER_QUEUE);
        self
    }

    /// Builds the broker with a fresh epoch.
    pub fn build(self) -> MemoryBroker {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0);
        let epoch = format!("{:08x}", hasher.finish() as u32);
        MemoryBroker {
            shared: Arc::new(Shared {
                epoch,
                retention: self.retention,
                subscriber_queue: self.subscriber_queue,
                state: Mutex::new(State::new(self.retention)),
            }),
        }
    }
}
