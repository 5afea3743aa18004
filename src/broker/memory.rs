//! [`MemoryBroker`]: the in-process broker, the default, and the one tests use.
//!
//! One lock guards the id counter, every topic's history and every topic's subscriber list.
//! Publishing assigns the id, appends to history and fans out under that lock, and subscribing
//! reads the replay and registers the subscriber under it too: that is what makes the switch from
//! replay to live exact, with no gap and no duplicate even while publishers race a subscribe.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::subscription::{Mailbox, Resume, Subscription};
use super::{BoxFuture, Broker, BrokerError};
use crate::event::{Event, EventId, Frame, Topic};

/// Events kept per topic by default.
const DEFAULT_HISTORY: usize = 1_000;
/// Frames a subscriber may have queued by default before it counts as lagging.
const DEFAULT_QUEUE: usize = 256;

/// An in-memory broker for one process.
///
/// Ids look like `5f3a9c01-42`: a random epoch, fixed when the broker is created, then a
/// counter. An id from another broker or from before a restart therefore cannot be mistaken for
/// one of ours; the subscription reports it as [`Resume::Unknown`] and replays all it has.
///
/// History is bounded per topic by count (default 1,000) and optionally by age. Each
/// subscriber's live queue is bounded (default 256 frames); a subscriber that lets it fill up is
/// dropped and its stream ends with [`SubscriptionEnd::Lagged`](super::SubscriptionEnd::Lagged).
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::MemoryBroker;
///
/// let broker = MemoryBroker::builder()
///     .history_per_topic(100)
///     .history_max_age(Duration::from_secs(600))
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
    history_per_topic: usize,
    history_max_age: Option<Duration>,
    subscriber_queue: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The sequence of the last event issued; the first event gets 1.
    last_sequence: u64,
    next_subscriber: u64,
    topics: HashMap<Topic, TopicState>,
}

#[derive(Default)]
struct TopicState {
    history: VecDeque<(Instant, Frame)>,
    /// The highest sequence that has left this topic's history; 0 when none has.
    evicted_through: u64,
    subscribers: HashMap<u64, Mailbox>,
}

impl TopicState {
    fn evict(&mut self, max_len: usize, max_age: Option<Duration>, now: Instant) {
        while self.history.len() > max_len {
            self.pop_oldest();
        }
        if let Some(max_age) = max_age {
            while self
                .history
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > max_age)
            {
                self.pop_oldest();
            }
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, frame)) = self.history.pop_front() {
            self.evicted_through = frame.sequence();
        }
    }

    fn is_unused(&self) -> bool {
        self.history.is_empty() && self.subscribers.is_empty()
    }
}

impl MemoryBroker {
    /// A broker with the default limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set history and queue limits.
    pub fn builder() -> MemoryBrokerBuilder {
        MemoryBrokerBuilder {
            history_per_topic: DEFAULT_HISTORY,
            history_max_age: None,
            subscriber_queue: DEFAULT_QUEUE,
        }
    }

    /// The number of live subscriptions, summed over topics (a subscription to two topics
    /// counts twice).
    pub fn subscriber_count(&self) -> usize {
        self.shared
            .lock()
            .topics
            .values()
            .map(|t| t.subscribers.len())
            .sum()
    }

    /// The number of events currently retained, summed over topics.
    pub fn retained_count(&self) -> usize {
        self.shared
            .lock()
            .topics
            .values()
            .map(|t| t.history.len())
            .sum()
    }

    fn publish_now(&self, topics: &[Topic], event: &Event) -> Result<EventId, BrokerError> {
        if topics.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &*self.shared;
        let now = Instant::now();
        let mut state = shared.lock();
        let sequence = state.last_sequence + 1;
        let id = shared.id_for(sequence);
        let frame = Frame::new(id.clone(), sequence, topics, event);
        state.last_sequence = sequence;

        // A subscriber of several of these topics must get the frame once.
        let mut delivered: Option<HashSet<u64>> = (topics.len() > 1).then(HashSet::new);
        for topic in topics {
            let topic_state = state.topics.entry(topic.clone()).or_default();
            if topic_state
                .history
                .back()
                .is_some_and(|(_, last)| last.sequence() == sequence)
            {
                continue; // the same topic named twice
            }
            topic_state.history.push_back((now, frame.clone()));
            topic_state.evict(shared.history_per_topic, shared.history_max_age, now);
            topic_state.subscribers.retain(|subscriber, mailbox| {
                if let Some(seen) = delivered.as_mut() {
                    if !seen.insert(*subscriber) {
                        return true;
                    }
                }
                mailbox.deliver(&frame)
            });
            if topic_state.is_unused() {
                state.topics.remove(topic);
            }
        }
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
        let now = Instant::now();
        let mut state = shared.lock();
        let (resume, after_sequence) = match after {
            None => (Resume::Fresh, None),
            Some(id) => match shared.sequence_of(id) {
                Some(sequence) if sequence <= state.last_sequence => {
                    (Resume::Complete, Some(sequence))
                }
                _ => (Resume::Unknown, Some(0)),
            },
        };
        let mut resume = resume;

        let subscriber = state.next_subscriber;
        state.next_subscriber += 1;
        let (mailbox, live) = Mailbox::new(shared.subscriber_queue);
        let mut replay = Vec::new();
        let mut unique_topics: Vec<Topic> = Vec::with_capacity(topics.len());
        for topic in topics {
            if unique_topics.contains(topic) {
                continue;
            }
            unique_topics.push(topic.clone());
            let topic_state = state.topics.entry(topic.clone()).or_default();
            topic_state.evict(shared.history_per_topic, shared.history_max_age, now);
            if let Some(after) = after_sequence {
                if resume == Resume::Complete && topic_state.evicted_through > after {
                    resume = Resume::Expired;
                }
                let start = topic_state
                    .history
                    .partition_point(|(_, frame)| frame.sequence() <= after);
                replay.extend(topic_state.history.range(start..).map(|(_, f)| f.clone()));
            }
            topic_state.subscribers.insert(subscriber, mailbox.clone());
        }
        drop(state);
        if unique_topics.len() > 1 {
            replay.sort_unstable_by_key(Frame::sequence);
            replay.dedup_by_key(|frame| frame.sequence());
        }

        let weak = Arc::downgrade(&self.shared);
        let unsubscribe = Box::new(move || unsubscribe(&weak, subscriber, &unique_topics));
        Ok(Subscription::new(replay, live, resume, unsubscribe))
    }
}

fn unsubscribe(shared: &Weak<Shared>, subscriber: u64, topics: &[Topic]) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut state = shared.lock();
    for topic in topics {
        if let Entry::Occupied(mut entry) = state.topics.entry(topic.clone()) {
            entry.get_mut().subscribers.remove(&subscriber);
            if entry.get().is_unused() {
                entry.remove();
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // breaks an invariant we rely on, so keep serving rather than poisoning every caller.
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
        if epoch != self.epoch || sequence.starts_with('+') {
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
            .field("history_per_topic", &self.shared.history_per_topic)
            .field("history_max_age", &self.shared.history_max_age)
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
    history_per_topic: usize,
    history_max_age: Option<Duration>,
    subscriber_queue: usize,
}

impl MemoryBrokerBuilder {
    /// How many events each topic keeps for resuming clients (default 1,000; 0 keeps none).
    pub fn history_per_topic(mut self, events: usize) -> Self {
        self.history_per_topic = events;
        self
    }

    /// Drops retained events older than `age` (default: kept until the count limit).
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.history_max_age = Some(age);
        self
    }

    /// How many frames a subscriber may have waiting before it counts as too slow and its stream
    /// ends (default 256, at least 1).
    pub fn subscriber_queue(mut self, frames: usize) -> Self {
        self.subscriber_queue = frames.max(1);
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
                history_per_topic: self.history_per_topic,
                history_max_age: self.history_max_age,
                subscriber_queue: self.subscriber_queue,
                state: Mutex::new(State::default()),
            }),
        }
    }
}
