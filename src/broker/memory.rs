//! [`MemoryBroker`]: the in-process broker, the default, and the one tests use. It assigns ids
//! and keeps idempotency keys; the fan-out engine holds the history and delivers.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    BoxFuture, Broker, BrokerError, IdempotencyKey, PublishRequest, Start, SubscribeRequest,
    Subscription,
};
use crate::event::EventId;
use crate::fanout::{Fanout, FanoutBuilder, Position};

/// How many idempotency keys are remembered by default.
const DEFAULT_IDEMPOTENCY_KEYS: usize = 10_000;
/// The history's default memory bound (the engine's).
const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;
/// The least memory the history spends per retained event (the engine's bookkeeping per frame):
/// the history holds at most its byte bound over this many events, and so many chosen ids are
/// remembered by default, so an id is not forgotten while its event may be retained.
const MIN_EVENT_COST: usize = 320;

/// An in-memory broker for one process.
///
/// Ids look like `5f3a9c01-42`: a random epoch, fixed when the broker is created, then a
/// counter. An id from another broker or from before a restart therefore cannot be mistaken for
/// one of ours; the subscription reports it as [`Resume::Unknown`](super::Resume::Unknown) and
/// replays all it has.
///
/// History is bounded three ways: per topic by count (default 1,000 events), over all topics by
/// what it costs in memory (default 64 MiB, oldest evicted first), and optionally by age
/// (checked on every publish and subscribe). A topic with neither history nor subscribers is
/// forgotten, so the number of topics is bounded too. A subscriber that falls further behind
/// than the history (or [`subscriber_queue`](MemoryBrokerBuilder::subscriber_queue) events,
/// whichever is more) lagged: its stream ends with
/// [`SubscriptionEnd::Lagged`](super::SubscriptionEnd::Lagged) and the client resumes.
///
/// Publishing assigns the id and appends the event under the engine's ingest lock; subscribers
/// are woken after it is released, so a publish to a busy topic never holds up another topic.
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
    fanout: Fanout,
    remembered: Mutex<Remembered>,
}

/// What publishes with an idempotency key or a chosen id leave behind.
struct Remembered {
    /// Idempotency keys and the ids they got.
    keys: Bounded<IdempotencyKey, EventId>,
    /// Chosen ids and the sequences their events got.
    chosen: Bounded<EventId, u64>,
}

/// A map that forgets its oldest entry past a capacity.
struct Bounded<K, V> {
    capacity: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl MemoryBroker {
    /// A broker with the default limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set history and queue limits.
    pub fn builder() -> MemoryBrokerBuilder {
        MemoryBrokerBuilder {
            fanout: Fanout::builder(),
            idempotency_keys: DEFAULT_IDEMPOTENCY_KEYS,
            history_bytes: DEFAULT_HISTORY_BYTES,
            chosen_ids: None,
        }
    }

    /// The fan-out engine that holds this broker's history and subscribers.
    pub fn fanout(&self) -> &Fanout {
        &self.shared.fanout
    }

    /// The number of (subscriber, topic) and (subscriber, pattern) registrations: a
    /// subscription to two topics counts twice.
    pub fn topic_subscriptions(&self) -> usize {
        self.shared.fanout.topic_subscriptions()
    }

    /// The number of distinct topic patterns subscribed to: subscribers of the same pattern
    /// share it, and it is matched once per event.
    pub fn pattern_count(&self) -> usize {
        self.shared.fanout.pattern_count()
    }

    /// The number of (topic, event) pairs currently retained for resuming clients.
    pub fn retained_count(&self) -> usize {
        self.shared.fanout.retained_count()
    }

    /// The bytes of encoded events currently retained (an event on two topics counts twice).
    pub fn retained_bytes(&self) -> usize {
        self.shared.fanout.retained_bytes()
    }

    /// What the history costs in memory as the broker estimates it (encoded events, their
    /// bookkeeping, and the topics): what
    /// [`history_max_bytes`](MemoryBrokerBuilder::history_max_bytes) bounds.
    pub fn memory_bytes(&self) -> usize {
        self.shared.fanout.memory_bytes()
    }

    /// The number of topics the broker knows: those with history or subscribers.
    pub fn topic_count(&self) -> usize {
        self.shared.fanout.topic_count()
    }

    fn publish_now(&self, request: &PublishRequest) -> Result<EventId, BrokerError> {
        if request.topics().is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &*self.shared;
        if request.key().is_none() && request.chosen_id().is_none() {
            return Ok(shared
                .fanout
                .publish(request, |sequence| shared.id_for(sequence))
                .id()
                .clone());
        }
        // Held across the publish, so two retries racing each other publish once, and two
        // publishes choosing the same id publish once.
        let mut remembered = shared.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = request.key().and_then(|key| remembered.keys.get(key)) {
            return Ok(id.clone());
        }
        if let Some(chosen) = request.chosen_id()
            && (remembered.chosen.get(chosen).is_some() || shared.sequence_of(chosen).is_some())
        {
            return Err(BrokerError::DuplicateId(chosen.clone()));
        }
        let frame = shared.fanout.publish(request, |sequence| {
            request
                .chosen_id()
                .cloned()
                .unwrap_or_else(|| shared.id_for(sequence))
        });
        if request.chosen_id().is_some() {
            remembered
                .chosen
                .insert(frame.id().clone(), frame.sequence());
        }
        if let Some(key) = request.key() {
            remembered.keys.insert(key.clone(), frame.id().clone());
        }
        Ok(frame.id().clone())
    }

    fn subscribe_now(&self, request: &SubscribeRequest) -> Result<Subscription, BrokerError> {
        if request.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &*self.shared;
        let (position, foreign) = match request.start_at() {
            Start::After(id) => match shared.placed(id) {
                Some(sequence) => (Position::After(sequence), false),
                None => (Position::Earliest, true),
            },
            Start::Earliest => (Position::Earliest, false),
            _ => (Position::Live, false),
        };
        let (reader, mut resume) = shared.fanout.subscribe_matching(
            request.topics(),
            request.patterns(),
            position,
            request.granted().clone(),
            request.budget(),
        );
        if foreign {
            resume = super::Resume::Unknown;
        }
        Ok(Subscription::new(reader, resume).with_deadline(request.deadline_at()))
    }
}

impl<K: Clone + Eq + std::hash::Hash, V> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn insert(&mut self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }
}

impl Shared {
    fn id_for(&self, sequence: u64) -> EventId {
        // Eight hex digits, a dash and at most twenty decimal digits: always a valid id.
        EventId::from_trusted(format!("{}-{sequence}", self.epoch))
    }

    /// The sequence of the event with this id: a chosen id still remembered, or one we made.
    fn placed(&self, id: &EventId) -> Option<u64> {
        let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        remembered
            .chosen
            .get(id)
            .copied()
            .or_else(|| self.sequence_of(id))
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
            .field("fanout", &self.shared.fanout)
            .finish_non_exhaustive()
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        request: &'a PublishRequest,
    ) -> BoxFuture<'a, Result<EventId, BrokerError>> {
        Box::pin(std::future::ready(self.publish_now(request)))
    }

    fn subscribe<'a>(
        &'a self,
        request: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        Box::pin(std::future::ready(self.subscribe_now(request)))
    }

    fn last_event_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BrokerError>> {
        let last = self.shared.fanout.last_sequence();
        // Our own id for the sequence places a resume after it, whatever id the event carries.
        let id = (last > 0).then(|| self.shared.id_for(last));
        Box::pin(std::future::ready(Ok(id)))
    }
}

/// Configures a [`MemoryBroker`]; see [`MemoryBroker::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the broker"]
pub struct MemoryBrokerBuilder {
    fanout: FanoutBuilder,
    idempotency_keys: usize,
    history_bytes: usize,
    chosen_ids: Option<usize>,
}

impl MemoryBrokerBuilder {
    /// How many events each topic keeps for resuming clients (default 1,000; 0 keeps none).
    pub fn history_per_topic(mut self, events: usize) -> Self {
        self.fanout = self.fanout.history(events);
        self
    }

    /// Drops retained events older than `age`, checked on every publish and subscribe
    /// (default: no age limit).
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.fanout = self.fanout.max_age(age);
        self
    }

    /// The most memory the history may cost over all topics: the encoded events, their
    /// bookkeeping (about 320 bytes per event per topic) and the topics themselves (about 320
    /// bytes each plus the name); past it the oldest events go first, and topics left with no
    /// event and no subscriber are forgotten (default 64 MiB). So a flood of unique topics is
    /// bounded too.
    pub fn history_max_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self.fanout = self.fanout.max_bytes(bytes);
        self
    }

    /// How many events a subscriber may fall behind, at least, before it counts as too slow and
    /// its stream ends (default 256; the history reaches further when it is longer). Nothing is
    /// queued per subscriber: this is how far back the topic's log reaches.
    pub fn subscriber_queue(mut self, events: usize) -> Self {
        self.fanout = self.fanout.lag_window(events);
        self
    }

    /// How many idempotency keys are remembered (default 10,000; the oldest is forgotten
    /// first). A retried publish whose key is still remembered returns the first id.
    pub fn idempotency_keys(mut self, keys: usize) -> Self {
        self.idempotency_keys = keys;
        self
    }

    /// How many chosen event ids ([`PublishRequest::id`]) are remembered, the oldest forgotten
    /// first, at about 100 bytes each. A remembered id cannot be chosen again, and a client
    /// resuming after it gets what followed; after a forgotten one it gets all that is retained,
    /// as after an unknown id. The default is the most events the history can hold
    /// ([`history_max_bytes`](Self::history_max_bytes) over 320 bytes, about 210,000 at the
    /// default 64 MiB), so an id is remembered as long as its event may be retained.
    pub fn chosen_ids(mut self, ids: usize) -> Self {
        self.chosen_ids = Some(ids);
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
                fanout: self.fanout.build(),
                remembered: Mutex::new(Remembered {
                    keys: Bounded::new(self.idempotency_keys),
                    chosen: Bounded::new(
                        self.chosen_ids
                            .unwrap_or(self.history_bytes / MIN_EVENT_COST),
                    ),
                }),
            }),
        }
    }
}
