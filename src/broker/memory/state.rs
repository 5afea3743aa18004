//! The in-memory broker's state: the id counter, every topic's history and subscribers, and the
//! retention limits that keep the history bounded by count per topic, and by age and bytes over
//! all topics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::subscription::{Mailbox, Resume};
use crate::event::{Event, EventId, Frame, Topic};

/// How much history to keep.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retention {
    pub(super) per_topic: usize,
    pub(super) max_age: Option<Duration>,
    pub(super) max_bytes: usize,
}

/// One (topic, event) pair in the retention log.
struct Retained {
    at: Instant,
    topic: Topic,
    sequence: u64,
}

#[derive(Default)]
struct TopicState {
    /// Events in publish order; they only ever leave from the front.
    history: VecDeque<Frame>,
    /// The highest sequence that has left this topic's history, or that may have: a topic that
    /// was forgotten and is seen again starts at the broker's `forgotten_through`.
    evicted_through: u64,
    subscribers: HashMap<u64, Mailbox>,
}

impl TopicState {
    fn is_unused(&self) -> bool {
        self.history.is_empty() && self.subscribers.is_empty()
    }
}

/// The state of `topic`, created from the forgotten floor if the broker does not know it.
fn topic_entry<'a>(
    topics: &'a mut HashMap<Topic, TopicState>,
    topic: &Topic,
    forgotten_through: u64,
) -> &'a mut TopicState {
    topics.entry(topic.clone()).or_insert_with(|| TopicState {
        evicted_through: forgotten_through,
        ..TopicState::default()
    })
}

/// What a subscribe found: the replay and how the resume point was placed.
pub(super) struct Placement {
    pub(super) replay: Vec<Frame>,
    pub(super) resume: Resume,
}

pub(super) struct State {
    retention: Retention,
    /// The sequence of the last event issued; the first event gets 1.
    last_sequence: u64,
    next_subscriber: u64,
    topics: HashMap<Topic, TopicState>,
    /// Every retained (topic, event) pair in publish order, so age and byte limits evict the
    /// oldest events whatever their topic. Entries whose event already left its topic through the
    /// per-topic count are skipped when reached, and compacted away when they pile up.
    log: VecDeque<Retained>,
    live_entries: usize,
    live_bytes: usize,
    /// Topics are forgotten once they have neither history nor subscribers, and with them what
    /// they had evicted. A topic seen again starts from this floor, so a resume point older than
    /// something any forgotten topic lost is reported as expired, never as complete.
    forgotten_through: u64,
}

impl State {
    pub(super) fn new(retention: Retention) -> Self {
        Self {
            retention,
            last_sequence: 0,
            next_subscriber: 0,
            topics: HashMap::new(),
            log: VecDeque::new(),
            live_entries: 0,
            live_bytes: 0,
            forgotten_through: 0,
        }
    }

    pub(super) fn retained_count(&self) -> usize {
        self.live_entries
    }

    pub(super) fn retained_bytes(&self) -> usize {
        self.live_bytes
    }

    pub(super) fn topic_subscriptions(&self) -> usize {
        self.topics.values().map(|t| t.subscribers.len()).sum()
    }

    pub(super) fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Issues the next id, retains the event on every topic, and delivers it to every subscriber
    /// once. Returns the id.
    pub(super) fn publish(
        &mut self,
        topics: &[Topic],
        event: &Event,
        id_for: impl FnOnce(u64) -> EventId,
        now: Instant,
    ) -> EventId {
        self.expire(now);
        let sequence = self.last_sequence + 1;
        self.last_sequence = sequence;
        let id = id_for(sequence);
        let frame = Frame::new(id.clone(), sequence, topics, event);
        let bytes = frame.bytes().len();

        // A subscriber of several of these topics must get the frame once.
        let mut delivered: Option<HashSet<u64>> = (topics.len() > 1).then(HashSet::new);
        for topic in topics {
            let state = topic_entry(&mut self.topics, topic, self.forgotten_through);
            if state.history.back().map(Frame::sequence) == Some(sequence) {
                continue; // the same topic named twice
            }
            state.history.push_back(frame.clone());
            self.log.push_back(Retained {
                at: now,
                topic: topic.clone(),
                sequence,
            });
            self.live_entries += 1;
            self.live_bytes += bytes;
            while state.history.len() > self.retention.per_topic {
                if let Some(evicted) = state.history.pop_front() {
                    state.evicted_through = evicted.sequence();
                    self.live_entries -= 1;
                    self.live_bytes -= evicted.bytes().len();
                }
            }
            state.subscribers.retain(|subscriber, mailbox| {
                if let Some(seen) = delivered.as_mut()
                    && !seen.insert(*subscriber)
                {
                    return true;
                }
                mailbox.deliver(&frame)
            });
            self.forget_if_unused(topic);
        }
        self.enforce_bytes();
        self.compact();
        id
    }

    /// Registers `mailbox` on `topics` (deduplicated) and collects the replay after `after`.
    /// Returns the subscriber's key for [`State::unsubscribe`].
    pub(super) fn subscribe(
        &mut self,
        topics: &[Topic],
        after: Option<Option<u64>>,
        mailbox: &Mailbox,
        now: Instant,
    ) -> (u64, Placement) {
        self.expire(now);
        let (mut resume, after) = match after {
            None => (Resume::Fresh, None),
            Some(Some(sequence)) if sequence <= self.last_sequence => {
                (Resume::Complete, Some(sequence))
            }
            // Not one of our ids, or one we never issued: replay all we have.
            Some(_) => (Resume::Unknown, Some(0)),
        };
        let subscriber = self.next_subscriber;
        self.next_subscriber += 1;
        let mut replay = Vec::new();
        let mut distinct = 0;
        for topic in topics {
            let state = topic_entry(&mut self.topics, topic, self.forgotten_through);
            if state
                .subscribers
                .insert(subscriber, mailbox.clone())
                .is_some()
            {
                continue; // the same topic named twice
            }
            distinct += 1;
            if let Some(after) = after {
                if resume == Resume::Complete && state.evicted_through > after {
                    resume = Resume::Expired;
                }
                let start = state.history.partition_point(|f| f.sequence() <= after);
                replay.extend(state.history.range(start..).cloned());
            }
        }
        if distinct > 1 {
            replay.sort_unstable_by_key(Frame::sequence);
            replay.dedup_by_key(|frame| frame.sequence());
        }
        (subscriber, Placement { replay, resume })
    }

    pub(super) fn unsubscribe(&mut self, subscriber: u64, topics: &[Topic]) {
        for topic in topics {
            if let Some(state) = self.topics.get_mut(topic) {
                state.subscribers.remove(&subscriber);
                self.forget_if_unused(topic);
            }
        }
    }

    fn forget_if_unused(&mut self, topic: &Topic) {
        if let Some(state) = self.topics.get(topic)
            && state.is_unused()
        {
            self.forgotten_through = self.forgotten_through.max(state.evicted_through);
            self.topics.remove(topic);
        }
    }

    /// Whether the log entry's event is still in its topic's history.
    fn is_live(&self, entry: &Retained) -> bool {
        self.topics
            .get(&entry.topic)
            .and_then(|t| t.history.front())
            .is_some_and(|oldest| oldest.sequence() <= entry.sequence)
    }

    /// Evicts the oldest retained event, whatever its topic, if `evict` says so.
    /// Returns whether the log's front was consumed (evicted or found stale).
    fn pop_oldest_if(&mut self, evict: impl FnOnce(&Self, &Retained) -> bool) -> bool {
        let Some(entry) = self.log.front() else {
            return false;
        };
        if self.is_live(entry) {
            if !evict(self, entry) {
                return false;
            }
            let topic = entry.topic.clone();
            if let Some(state) = self.topics.get_mut(&topic)
                && let Some(evicted) = state.history.pop_front()
            {
                state.evicted_through = evicted.sequence();
                self.live_entries -= 1;
                self.live_bytes -= evicted.bytes().len();
            }
            self.forget_if_unused(&topic);
        }
        self.log.pop_front();
        true
    }

    /// Drops every retained event older than the age limit.
    fn expire(&mut self, now: Instant) {
        let Some(max_age) = self.retention.max_age else {
            return;
        };
        while self.pop_oldest_if(|_, e| now.saturating_duration_since(e.at) > max_age) {}
    }

    /// Drops the oldest events until the retained bytes fit the limit.
    fn enforce_bytes(&mut self) {
        while self.pop_oldest_if(|s, _| s.live_bytes > s.retention.max_bytes) {}
    }

    /// Removes log entries of events that already left their topic, once they outnumber the
    /// live ones, so the log stays proportional to what is retained.
    fn compact(&mut self) {
        if self.log.len() > 2 * self.live_entries + 1024 {
            let mut log = std::mem::take(&mut self.log);
            log.retain(|entry| self.is_live(entry));
            self.log = log;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(per_topic: usize) -> State {
        State::new(Retention {
            per_topic,
            max_age: None,
            max_bytes: usize::MAX,
        })
    }

    fn id(sequence: u64) -> EventId {
        EventId::from_trusted(format!("test-{sequence}"))
    }

    #[test]
    fn retention_log_stays_proportional_to_what_is_retained() {
        let mut state = state(10);
        let topic = [Topic::new("busy").expect("valid topic")];
        let event = Event::text("x").expect("valid event");
        let now = Instant::now();
        for _ in 0..50_000 {
            state.publish(&topic, &event, id, now);
            assert!(state.log.len() <= 2 * state.live_entries + 1024 + 1);
        }
        assert_eq!(state.retained_count(), 10);
    }

    #[test]
    fn live_counters_match_the_histories() {
        let mut state = state(3);
        let topics: Vec<Topic> = ["a", "b", "c"]
            .iter()
            .map(|t| Topic::new(t).expect("valid topic"))
            .collect();
        let event = Event::text("payload").expect("valid event");
        let now = Instant::now();
        for i in 0..100 {
            let chosen = &topics[..1 + i % 3];
            state.publish(chosen, &event, id, now);
            let entries: usize = state.topics.values().map(|t| t.history.len()).sum();
            let bytes: usize = state
                .topics
                .values()
                .flat_map(|t| t.history.iter())
                .map(|f| f.bytes().len())
                .sum();
            assert_eq!((state.live_entries, state.live_bytes), (entries, bytes));
        }
    }
}
