//! The fan-out engine every broker feeds; documented where it is public, in [`crate::broker`].

mod reader;
mod ring;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use self::reader::Cursor;
pub use self::reader::Reader;
use self::ring::{LogKey, Mark, TopicLog};
use crate::broker::{Grant, PublishRequest, ReplayBudget, Resume};
use crate::event::{EventId, Frame, Topic};
use crate::selector::Selector;
use crate::signal::Listing;

/// Where a reader starts in its topics' logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Position {
    /// After the newest frame: live frames only.
    Live,
    /// After the frame with this sequence (a resume point the broker placed).
    After(u64),
    /// At the oldest frame kept as history.
    Earliest,
}

/// The fan-out engine; cheap to clone, all clones share the logs. Dropping the last clone ends
/// every reader with [`SubscriptionEnd::Closed`](crate::SubscriptionEnd::Closed).
#[derive(Clone)]
pub struct Fanout {
    handle: Arc<Handle>,
}

/// Closes the engine when the last [`Fanout`] goes; readers keep the engine itself alive.
struct Handle(Arc<Engine>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    history: usize,
    lag_window: usize,
    topic_bytes: usize,
    max_bytes: usize,
    max_age: Option<Duration>,
    keep_idle_topics: bool,
}

pub(crate) struct Engine {
    limits: Limits,
    state: Mutex<Ingest>,
    /// The sequence of the last frame appended to all of its topics.
    watermark: AtomicU64,
    resync_generation: AtomicU64,
    closed: AtomicBool,
}

struct Entry {
    log: Arc<TopicLog>,
    readers: usize,
}

/// One (topic, frame) pair in the retention order, for the limits over all topics.
struct Retained {
    at: Instant,
    log: Arc<TopicLog>,
    sequence: u64,
}

struct Ingest {
    last_sequence: u64,
    topics: HashMap<Topic, Entry>,
    /// Every (topic, frame) pair in append order. Entries whose frame already left its ring are
    /// skipped when reached and compacted away when they pile up.
    retained: VecDeque<Retained>,
    live_entries: usize,
    live_bytes: usize,
    /// What the held frames, their index entries and the topics cost in memory (estimated):
    /// what the byte limit over all topics bounds.
    accounted: usize,
    /// Topics are forgotten once they have neither frames nor readers; one seen again starts
    /// from this floor, so a resume point older than anything a forgotten topic lost is
    /// reported as expired, never as complete.
    forgotten_through: u64,
    /// One log per distinct pattern with readers: its readers share it, so a pattern is matched
    /// once per event however many subscribers use it.
    patterns: HashMap<Selector, Entry>,
    /// Which pattern logs each recently seen topic feeds, so an event costs a lookup per topic,
    /// not a match per pattern; emptied whenever the set of patterns changes, and when it grows
    /// past [`MATCH_CACHE_TOPICS`].
    matched: HashMap<Topic, Arc<[Arc<TopicLog>]>>,
}

impl Fanout {
    /// A builder with the defaults: 1,000 frames of history per topic, readers may fall 256
    /// frames behind (or as far as the history reaches), 16 MiB per topic, 64 MiB over all
    /// topics, no age limit, topics with history kept while nobody reads them.
    pub fn builder() -> FanoutBuilder {
        FanoutBuilder {
            limits: Limits {
                history: 1_000,
                lag_window: 256,
                topic_bytes: 16 * 1024 * 1024,
                max_bytes: 64 * 1024 * 1024,
                max_age: None,
                keep_idle_topics: true,
            },
        }
    }

    fn engine(&self) -> &Arc<Engine> {
        &self.handle.0
    }

    /// Assigns the next sequence, builds the frame with `id_for(sequence)`, appends it to the
    /// request's topics and wakes their readers. For brokers whose ids are made in-process.
    pub fn publish(&self, request: &PublishRequest, id_for: impl FnOnce(u64) -> EventId) -> Frame {
        let engine = self.engine();
        let now = Instant::now();
        let (frame, touched) = {
            let mut state = engine.lock();
            state.expire(&engine.limits, now);
            let sequence = state.last_sequence + 1;
            state.last_sequence = sequence;
            let frame = Frame::for_request(id_for(sequence), sequence, request);
            let touched = state.append(&engine.limits, &frame, true, now);
            engine.watermark.store(sequence, Ordering::Release);
            (frame, touched)
        };
        for log in touched {
            log.signal.fire();
        }
        frame
    }

    /// Appends a frame whose sequence was assigned elsewhere (a Redis counter, a NATS stream)
    /// to those of its topics that have readers (or to all, for an engine that keeps idle
    /// topics), and wakes their readers. Frames must come in increasing sequence; one at or
    /// below the last appended is ignored and `false` returned (a duplicate, say an event that
    /// arrived once per topic).
    pub fn append(&self, frame: Frame) -> bool {
        let engine = self.engine();
        let now = Instant::now();
        let touched = {
            let mut state = engine.lock();
            if frame.sequence() <= state.last_sequence {
                return false;
            }
            state.expire(&engine.limits, now);
            state.last_sequence = frame.sequence();
            let create = engine.limits.keep_idle_topics;
            let touched = state.append(&engine.limits, &frame, create, now);
            engine.watermark.store(frame.sequence(), Ordering::Release);
            touched
        };
        for log in touched {
            log.signal.fire();
        }
        true
    }

    /// A reader of `topics` (at least one; duplicates count once) from `position`, and how its
    /// resume point was placed: [`Resume::Fresh`] for [`Position::Live`]; for
    /// [`Position::After`], [`Resume::Complete`], [`Resume::Expired`] when frames after it
    /// already left the history, or [`Resume::Unknown`] when the sequence was never issued;
    /// for [`Position::Earliest`], `Complete` or `Expired` alike.
    pub fn subscribe(
        &self,
        topics: &[Topic],
        position: Position,
        grant: Grant,
    ) -> (Reader, Resume) {
        self.subscribe_within(topics, position, grant, None)
    }

    /// As [`Fanout::subscribe`], replaying at most `budget`: when more is retained after the
    /// start, the replay begins at the oldest frame that still fits (the newest frames are
    /// kept) and the resume is [`Resume::Expired`] (or stays [`Resume::Unknown`]).
    pub fn subscribe_within(
        &self,
        topics: &[Topic],
        position: Position,
        grant: Grant,
        budget: Option<ReplayBudget>,
    ) -> (Reader, Resume) {
        self.subscribe_matching(topics, &[], position, grant, budget)
    }

    /// As [`Fanout::subscribe_within`], also reading every topic one of `patterns` matches (at
    /// least one topic or pattern in all). Readers of the same pattern share one log, so a
    /// pattern is matched once per event; which patterns a topic matches is cached. A reader
    /// that starts before [`Position::Live`] first replays the matching frames still held.
    pub fn subscribe_matching(
        &self,
        topics: &[Topic],
        patterns: &[Selector],
        position: Position,
        grant: Grant,
        budget: Option<ReplayBudget>,
    ) -> (Reader, Resume) {
        let engine = self.engine();
        let now = Instant::now();
        let mut state = engine.lock();
        state.expire(&engine.limits, now);
        let (position, mut resume) = match position {
            Position::After(sequence) if sequence > state.last_sequence => {
                (Position::Earliest, Resume::Unknown)
            }
            Position::Live => (Position::Live, Resume::Fresh),
            other => (other, Resume::Complete),
        };
        let generation = engine.resync_generation.load(Ordering::Acquire);
        let mut cursors: Vec<Cursor> = Vec::with_capacity(topics.len());
        for topic in topics {
            if cursors.iter().any(|c| c.log.topic() == Some(topic)) {
                continue;
            }
            let floor = state.forgotten_through;
            if !state.topics.contains_key(topic) {
                state.accounted += topic_cost(topic);
            }
            let entry = state.topics.entry(topic.clone()).or_insert_with(|| Entry {
                log: Arc::new(TopicLog::new(LogKey::Topic(topic.clone()), floor)),
                readers: 0,
            });
            entry.readers += 1;
            let ring = entry.log.read();
            let (first, before) = ring.replay_window(engine.limits.history);
            let index = match position {
                Position::Live => ring.frames.len(),
                Position::Earliest => {
                    if before > 0 && resume == Resume::Complete {
                        resume = Resume::Expired;
                    }
                    first
                }
                Position::After(after) => {
                    if before > after && resume == Resume::Complete {
                        resume = Resume::Expired;
                    }
                    ring.frames
                        .partition_point(|f| f.sequence() <= after)
                        .max(first)
                }
            };
            cursors.push(Cursor {
                log: entry.log.clone(),
                position: ring.start + index as u64,
                mark_seen: generation,
                parked: Listing::default(),
            });
        }
        let mut counted: Vec<&Selector> = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            if counted.contains(&pattern) {
                continue;
            }
            counted.push(pattern);
            let log = state.pattern_log(pattern);
            let head = log.read().head();
            cursors.push(Cursor {
                log,
                position: head,
                mark_seen: generation,
                parked: Listing::default(),
            });
        }
        // What patterns replay is read after the lock is released: matching every topic against
        // a pattern must not hold up publishes. The pattern logs above already receive every
        // frame after `cut`; the replay takes the matching frames up to it from the topics held
        // now (a topic made later only holds later frames).
        let replay_from = (position != Position::Live && !counted.is_empty()).then(|| Held {
            topics: state
                .topics
                .iter()
                .map(|(topic, entry)| (topic.clone(), entry.log.clone()))
                .collect(),
            forgotten_through: state.forgotten_through,
            cut: state.last_sequence,
        });
        drop(state);
        if let Some(held) = replay_from {
            for pattern in counted {
                let (replay, expired) =
                    held.matching_frames(pattern, position, engine.limits.history);
                if expired && resume == Resume::Complete {
                    resume = Resume::Expired;
                }
                if !replay.is_empty() {
                    cursors.push(Cursor {
                        log: Arc::new(TopicLog::replay(pattern.clone(), replay)),
                        position: 0,
                        mark_seen: generation,
                        parked: Listing::default(),
                    });
                }
            }
        }
        let mut seen = match position {
            Position::After(after) => after,
            _ => 0,
        };
        if let Some(budget) = budget
            && position != Position::Live
            && let Some(cutoff) = replay_cutoff(&cursors, budget)
        {
            for cursor in &mut cursors {
                let ring = cursor.log.read();
                // A cursor the ring moved past since it was placed has lagged; the reader says so.
                let Some(from) = cursor.position.checked_sub(ring.start) else {
                    continue;
                };
                let skip = ring
                    .frames
                    .range(from as usize..)
                    .take_while(|f| f.sequence() <= cutoff)
                    .count();
                drop(ring);
                cursor.position += skip as u64;
            }
            seen = seen.max(cutoff);
            if resume == Resume::Complete {
                resume = Resume::Expired;
            }
        }
        (Reader::new(engine.clone(), cursors, grant, seen), resume)
    }

    /// Tells the readers of `topics` (of every topic, when `None`) that they may have missed
    /// events, in-band: a [`Delivery::Resync`](crate::Delivery::Resync) after the frames
    /// they already had. With [`Resume::Unknown`] (the store was reset, its sequences start
    /// again) every topic's log is emptied, whatever `topics` says, and the next frame may have
    /// any sequence.
    pub fn resync(&self, topics: Option<&[Topic]>, reason: Resume) {
        let engine = self.engine();
        let touched: Vec<Arc<TopicLog>> = {
            let mut state = engine.lock();
            let generation = engine.resync_generation.fetch_add(1, Ordering::AcqRel) + 1;
            let reset = reason == Resume::Unknown;
            let every = |state: &Ingest| -> Vec<Arc<TopicLog>> {
                state
                    .topics
                    .values()
                    .chain(state.patterns.values())
                    .map(|e| e.log.clone())
                    .collect()
            };
            let logs: Vec<Arc<TopicLog>> = match topics {
                // A reset concerns the whole store, so every topic.
                _ if reset => every(&state),
                None => every(&state),
                Some(topics) => topics
                    .iter()
                    .filter_map(|t| state.topics.get(t).map(|e| e.log.clone()))
                    .chain(
                        state
                            .patterns
                            .iter()
                            .filter(|(pattern, _)| {
                                topics.iter().any(|t| pattern.matches(t.as_str()))
                            })
                            .map(|(_, e)| e.log.clone()),
                    )
                    .collect(),
            };
            for log in &logs {
                let mut ring = log.write();
                if reset {
                    ring.clear();
                }
                ring.mark = Some(Mark::new(
                    generation,
                    reason.clone(),
                    ring.head(),
                    ring.mark.as_ref(),
                ));
            }
            if reset {
                state.last_sequence = 0;
                state.retained.clear();
                state.live_entries = 0;
                state.live_bytes = 0;
                state.accounted = state.topics.keys().map(topic_cost).sum::<usize>()
                    + state.patterns.keys().map(pattern_cost).sum::<usize>();
                state.forgotten_through = 0;
                engine.watermark.store(0, Ordering::Release);
            }
            logs
        };
        for log in touched {
            log.signal.fire();
        }
    }

    /// Tells the readers of every pattern that they may have missed events, in-band, as
    /// [`Fanout::resync`] does for topics: for a broker that lost part of the feed its pattern
    /// readers draw from without knowing which topics that part carried. With
    /// [`Resume::Unknown`] it is [`Fanout::resync`]`(None, Resume::Unknown)`: a reset concerns
    /// every reader.
    pub fn resync_patterns(&self, reason: Resume) {
        if reason == Resume::Unknown {
            self.resync(None, reason);
            return;
        }
        let engine = self.engine();
        let touched: Vec<Arc<TopicLog>> = {
            let state = engine.lock();
            let generation = engine.resync_generation.fetch_add(1, Ordering::AcqRel) + 1;
            let logs: Vec<Arc<TopicLog>> = state.patterns.values().map(|e| e.log.clone()).collect();
            for log in &logs {
                let mut ring = log.write();
                ring.mark = Some(Mark::new(
                    generation,
                    reason.clone(),
                    ring.head(),
                    ring.mark.as_ref(),
                ));
            }
            logs
        };
        for log in touched {
            log.signal.fire();
        }
    }

    /// The sequence of the last frame appended (0 before the first, and after a reset).
    pub fn last_sequence(&self) -> u64 {
        self.engine().lock().last_sequence
    }

    /// The number of (reader, topic) and (reader, pattern) pairs: a reader of two topics
    /// counts twice.
    pub fn topic_subscriptions(&self) -> usize {
        let state = self.engine().lock();
        state
            .topics
            .values()
            .chain(state.patterns.values())
            .map(|e| e.readers)
            .sum()
    }

    /// The number of distinct patterns with readers.
    pub fn pattern_count(&self) -> usize {
        self.engine().lock().patterns.len()
    }

    /// The number of (topic, frame) pairs held.
    pub fn retained_count(&self) -> usize {
        self.engine().lock().live_entries
    }

    /// The bytes of frames held (a frame on two topics counts twice).
    pub fn retained_bytes(&self) -> usize {
        self.engine().lock().live_bytes
    }

    /// What the held frames, their bookkeeping and the known topics cost in memory, as the
    /// engine estimates it: what [`FanoutBuilder::max_bytes`] bounds.
    pub fn memory_bytes(&self) -> usize {
        self.engine().lock().accounted
    }

    /// The number of topics known: those with frames or readers.
    pub fn topic_count(&self) -> usize {
        self.engine().lock().topics.len()
    }
}

/// What one frame held in one topic costs beyond its encoded bytes: the frame's allocations
/// (its header, id, topic list and byte buffer) and its entries in the ring and the retention
/// list, with allocator rounding. Counted per topic, so a frame on several topics is charged
/// more than it costs: the limit errs on the safe side.
const FRAME_COST: usize = 320;
/// What a topic costs while known: its log, lock, wake list, map entry and name.
const TOPIC_COST: usize = 320;

fn topic_cost(topic: &Topic) -> usize {
    TOPIC_COST + topic.as_str().len()
}

/// What a pattern costs while it has readers: its log and its compiled matcher.
fn pattern_cost(pattern: &Selector) -> usize {
    TOPIC_COST + 4 * pattern.as_str().len()
}

/// The most topics whose matching patterns are cached; past it the cache starts over.
const MATCH_CACHE_TOPICS: usize = 4_096;

/// The highest sequence a replay from `cursors` must skip to fit `budget`, keeping the newest
/// frames; `None` when all of it fits. Called under the ingest lock, so the rings hold still.
/// The topics an engine held when a pattern reader was placed, to replay from without the lock.
struct Held {
    topics: Vec<(Topic, Arc<TopicLog>)>,
    forgotten_through: u64,
    /// The last sequence appended then: later frames reach the reader through its pattern logs.
    cut: u64,
}

impl Held {
    /// The frames held for topics `pattern` matches, after `position` and up to the cut,
    /// within each topic's history, in sequence order and each once; and whether frames after
    /// `position` that it may match are gone already.
    fn matching_frames(
        &self,
        pattern: &Selector,
        position: Position,
        history: usize,
    ) -> (Vec<Frame>, bool) {
        let after = match position {
            Position::After(after) => after,
            _ => 0,
        };
        // A forgotten topic may have matched: what it lost counts as missed.
        let mut expired = self.forgotten_through > after;
        let mut frames: Vec<Frame> = Vec::new();
        for (topic, log) in &self.topics {
            if !pattern.matches(topic.as_str()) {
                continue;
            }
            let ring = log.read();
            let (first, before) = ring.replay_window(history);
            expired |= before > after;
            frames.extend(
                ring.frames
                    .range(first..)
                    .filter(|f| f.sequence() > after && f.sequence() <= self.cut)
                    .cloned(),
            );
        }
        frames.sort_unstable_by_key(Frame::sequence);
        frames.dedup_by_key(|f| f.sequence());
        (frames, expired)
    }
}

fn replay_cutoff(cursors: &[Cursor], budget: ReplayBudget) -> Option<u64> {
    let mut pending: Vec<(u64, usize)> = Vec::new();
    for cursor in cursors {
        let ring = cursor.log.read();
        let Some(from) = cursor.position.checked_sub(ring.start) else {
            continue;
        };
        let from = from as usize;
        pending.extend(
            ring.frames
                .range(from..)
                .map(|f| (f.sequence(), f.bytes().len())),
        );
    }
    pending.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.0));
    pending.dedup_by_key(|entry| entry.0);
    let (mut events, mut bytes) = (0, 0);
    for (sequence, size) in pending {
        events += 1;
        bytes += size;
        if events > budget.events() || bytes > budget.bytes() {
            return Some(sequence);
        }
    }
    None
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, Ingest> {
        // Every step below leaves the state consistent; serving on beats poisoning every caller.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let logs: Vec<Arc<TopicLog>> = {
            let state = self.lock();
            state
                .topics
                .values()
                .chain(state.patterns.values())
                .map(|e| e.log.clone())
                .collect()
        };
        for log in logs {
            log.signal.fire();
        }
    }

    fn unsubscribe(&self, cursors: &[Cursor]) {
        let mut state = self.lock();
        for cursor in cursors {
            match &cursor.log.key {
                LogKey::Topic(topic) => {
                    if let Some(entry) = state.topics.get_mut(topic) {
                        entry.readers = entry.readers.saturating_sub(1);
                    }
                    state.forget_if_unused(&self.limits, topic);
                }
                LogKey::Pattern(pattern) => state.release_pattern(pattern),
                LogKey::Replay(_) => {}
            }
        }
    }
}

impl Ingest {
    /// Appends `frame` to each of its topics (creating missing ones when `create`), applies the
    /// bounds, and returns the logs whose readers must be woken.
    fn append(
        &mut self,
        limits: &Limits,
        frame: &Frame,
        create: bool,
        now: Instant,
    ) -> Vec<Arc<TopicLog>> {
        let mut touched = Vec::with_capacity(frame.topics().len());
        for topic in frame.topics() {
            let floor = self.forgotten_through;
            let log = match self.topics.get(topic) {
                Some(entry) => entry.log.clone(),
                None if create => {
                    self.accounted += topic_cost(topic);
                    let log = Arc::new(TopicLog::new(LogKey::Topic(topic.clone()), floor));
                    self.topics.insert(
                        topic.clone(),
                        Entry {
                            log: log.clone(),
                            readers: 0,
                        },
                    );
                    log
                }
                None => continue,
            };
            self.push(limits, &log, frame, now);
            touched.push(log);
        }
        if !self.patterns.is_empty() {
            let mut matching: Vec<Arc<TopicLog>> = Vec::new();
            for topic in frame.topics() {
                for log in self.patterns_matching(topic).iter() {
                    if !matching.iter().any(|m| Arc::ptr_eq(m, log)) {
                        matching.push(log.clone());
                    }
                }
            }
            for log in matching {
                self.push(limits, &log, frame, now);
                touched.push(log);
            }
        }
        while self.accounted > limits.max_bytes && self.pop_oldest(limits) {}
        self.compact();
        touched
    }

    /// Adds `frame` to `log`, within the log's bounds, and to the retention order.
    fn push(&mut self, limits: &Limits, log: &Arc<TopicLog>, frame: &Frame, now: Instant) {
        let size = frame.bytes().len();
        let capacity = limits.history.max(limits.lag_window).max(1);
        {
            let mut ring = log.write();
            ring.frames.push_back(frame.clone());
            ring.bytes += size;
            self.live_entries += 1;
            self.live_bytes += size;
            self.accounted += size + FRAME_COST;
            while ring.frames.len() > capacity
                || (ring.bytes > limits.topic_bytes && ring.frames.len() > 1)
            {
                if let Some(bytes) = ring.pop_front() {
                    self.live_entries -= 1;
                    self.live_bytes -= bytes;
                    self.accounted -= bytes + FRAME_COST;
                }
            }
        }
        self.retained.push_back(Retained {
            at: now,
            log: log.clone(),
            sequence: frame.sequence(),
        });
    }

    /// The pattern logs `topic` feeds: matched once per topic and kept until the patterns
    /// change.
    fn patterns_matching(&mut self, topic: &Topic) -> Arc<[Arc<TopicLog>]> {
        if let Some(logs) = self.matched.get(topic) {
            return logs.clone();
        }
        let logs: Arc<[Arc<TopicLog>]> = self
            .patterns
            .iter()
            .filter(|(pattern, _)| pattern.matches(topic.as_str()))
            .map(|(_, entry)| entry.log.clone())
            .collect();
        if self.matched.len() >= MATCH_CACHE_TOPICS {
            self.matched.clear();
        }
        self.matched.insert(topic.clone(), logs.clone());
        logs
    }

    /// The log of `pattern`, made when it gets its first reader, with one more reader counted.
    fn pattern_log(&mut self, pattern: &Selector) -> Arc<TopicLog> {
        if let Some(entry) = self.patterns.get_mut(pattern) {
            entry.readers += 1;
            return entry.log.clone();
        }
        self.accounted += pattern_cost(pattern);
        // A new pattern: topics cached before it may match it.
        self.matched.clear();
        let log = Arc::new(TopicLog::new(LogKey::Pattern(pattern.clone()), 0));
        self.patterns.insert(
            pattern.clone(),
            Entry {
                log: log.clone(),
                readers: 1,
            },
        );
        log
    }

    /// One reader of `pattern` fewer; the last one takes the pattern's log with it.
    fn release_pattern(&mut self, pattern: &Selector) {
        let Some(entry) = self.patterns.get_mut(pattern) else {
            return;
        };
        entry.readers = entry.readers.saturating_sub(1);
        if entry.readers > 0 {
            return;
        }
        let Some(entry) = self.patterns.remove(pattern) else {
            return;
        };
        self.empty_log(&entry.log);
        self.accounted -= pattern_cost(pattern);
        self.matched.clear();
    }

    /// Drops every frame `log` holds, and their share of the accounting; returns the sequence
    /// of the last frame it had held. Cleared, so retention entries that still point at it find
    /// nothing to evict.
    fn empty_log(&mut self, log: &TopicLog) -> u64 {
        let mut ring = log.write();
        let through = ring
            .frames
            .back()
            .map_or(ring.evicted_through, Frame::sequence);
        let count = ring.frames.len();
        let bytes = ring.clear();
        drop(ring);
        self.live_bytes -= bytes;
        self.live_entries -= count;
        self.accounted -= bytes + count * FRAME_COST;
        through
    }

    /// Evicts the oldest retained frame, whatever its topic. Returns whether anything was left.
    fn pop_oldest(&mut self, limits: &Limits) -> bool {
        let Some(entry) = self.retained.pop_front() else {
            return false;
        };
        let mut ring = entry.log.write();
        if ring
            .frames
            .front()
            .is_some_and(|f| f.sequence() <= entry.sequence)
            && let Some(bytes) = ring.pop_front()
        {
            self.live_entries -= 1;
            self.live_bytes -= bytes;
            self.accounted -= bytes + FRAME_COST;
        }
        let empty = ring.frames.is_empty();
        drop(ring);
        if empty && let Some(topic) = entry.log.topic().cloned() {
            self.forget_if_unused(limits, &topic);
        }
        true
    }

    /// Drops every frame older than the age limit.
    fn expire(&mut self, limits: &Limits, now: Instant) {
        let Some(max_age) = limits.max_age else {
            return;
        };
        while self
            .retained
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > max_age)
        {
            self.pop_oldest(limits);
        }
    }

    /// Removes retention entries whose frame already left its ring, once they outnumber the
    /// live ones, so the list stays proportional to what is held.
    fn compact(&mut self) {
        if self.retained.len() > 2 * self.live_entries + 1024 {
            self.retained.retain(|entry| {
                entry
                    .log
                    .read()
                    .frames
                    .front()
                    .is_some_and(|oldest| oldest.sequence() <= entry.sequence)
            });
        }
    }

    /// Forgets `topic` when nobody reads it and it holds no frames (or holds frames nobody
    /// needs: an engine that does not keep idle topics).
    fn forget_if_unused(&mut self, limits: &Limits, topic: &Topic) {
        let Some(entry) = self.topics.get(topic) else {
            return;
        };
        if entry.readers > 0 {
            return;
        }
        if !entry.log.read().frames.is_empty() && limits.keep_idle_topics {
            return;
        }
        let log = entry.log.clone();
        let through = self.empty_log(&log);
        self.accounted -= topic_cost(topic);
        self.forgotten_through = self.forgotten_through.max(through);
        self.topics.remove(topic);
    }
}

/// Configures a [`Fanout`]; see [`Fanout::builder`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get the engine"]
pub struct FanoutBuilder {
    limits: Limits,
}

impl FanoutBuilder {
    /// How many of each topic's newest frames count as history, replayed to resuming readers
    /// (default 1,000; 0 keeps none: an engine fed by a broker that replays from its own store).
    pub fn history(mut self, frames: usize) -> Self {
        self.limits.history = frames;
        self
    }

    /// How many frames a reader may fall behind before it lagged, at least (default 256; the
    /// history reaches further when it is longer).
    pub fn lag_window(mut self, frames: usize) -> Self {
        self.limits.lag_window = frames.max(1);
        self
    }

    /// The most bytes of frames one topic holds (default 16 MiB); the newest frame is always
    /// held.
    pub fn topic_bytes(mut self, bytes: usize) -> Self {
        self.limits.topic_bytes = bytes;
        self
    }

    /// The most memory the held frames may cost over all topics, counting their encoded bytes,
    /// their bookkeeping and the topics themselves (estimated; see [`Fanout::memory_bytes`]);
    /// past it the oldest frames go first, and topics left without frames or readers with them
    /// (default 64 MiB).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// Drops frames older than `age`, checked on every append and subscribe (default: none).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.limits.max_age = Some(age);
        self
    }

    /// Whether a topic nobody reads keeps its frames as history (default `true`). An engine fed
    /// by a broker with its own store sets `false`: frames for topics without local readers
    /// are not even appended.
    pub fn keep_idle_topics(mut self, keep: bool) -> Self {
        self.limits.keep_idle_topics = keep;
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Fanout {
        Fanout {
            handle: Arc::new(Handle(Arc::new(Engine {
                limits: self.limits,
                state: Mutex::new(Ingest {
                    last_sequence: 0,
                    topics: HashMap::new(),
                    retained: VecDeque::new(),
                    live_entries: 0,
                    live_bytes: 0,
                    accounted: 0,
                    forgotten_through: 0,
                    patterns: HashMap::new(),
                    matched: HashMap::new(),
                }),
                watermark: AtomicU64::new(0),
                resync_generation: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }))),
        }
    }
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("limits", &self.engine().limits)
            .finish_non_exhaustive()
    }
}
