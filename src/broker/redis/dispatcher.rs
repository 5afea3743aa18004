//! The one task per process that owns the Redis pub/sub connection.
//!
//! It keeps a reference count per topic: a channel is SUBSCRIBEd when its first local subscriber
//! arrives and UNSUBSCRIBEd when its last leaves; the channel of events published to several
//! topics at once is always subscribed. Each message is read once into a [`Frame`] and appended,
//! in O(1), to the fan-out engine, which delivers it to the local subscribers.
//!
//! While any local subscriber has topic patterns, the connection also holds one PSUBSCRIBE of
//! every topic's channel (`P:c:*`): the wildcard feed. Every event of the prefix then reaches
//! the engine, which keeps those some local pattern matches. A message on a channel that is
//! also SUBSCRIBEd arrives twice, as a message and as a pmessage: Redis writes both for one
//! PUBLISH, one after the other, and publishes (one per event, from the atomic publish script)
//! come in sequence order, so the pushes are in sequence order with each duplicate right behind
//! its original. The engine ignores a frame at or below the last sequence appended, so each
//! event is appended once and in order, whichever feeds carry it and whenever the wildcard
//! comes and goes.
//!
//! The dispatcher never waits on Redis while forwarding: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE,
//! PUNSUBSCRIBE and the health check's PING go to a worker that sends them in order, and a
//! subscriber is answered when its channels (and the wildcard feed) are confirmed. The queue of pushes is bounded; when it overflows, the gap is filled
//! from history as after a reconnect.
//!
//! When the connection drops, `redis`'s connection manager reconnects; the dispatcher then
//! resubscribes every channel, reads what each topic published since the last frame the engine
//! got (and, for the wildcard feed, what the global history holds since), and appends that in
//! sequence order before any newer live message, so subscribers see no gap and no duplicate. If the gap cannot be filled (history was trimmed meanwhile) or
//! the store was reset (a new epoch: Redis restarted without persistence), the affected
//! subscriptions stay open and receive a [`Delivery::Resync`](crate::Delivery::Resync) in place
//! of the missing events, then carry on.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Script, Value};
use tokio::sync::{mpsc, oneshot};

use super::link::{Link, Pushes};
use super::wire::{self, Keys, Source};
use super::worker::{self, Job, Request};
use crate::broker::{BrokerError, Resume};
use crate::event::{Frame, Topic};
use crate::fanout::Fanout;

/// What the broker asks of the dispatcher.
pub(super) enum Command {
    /// Count a subscriber of these topics (and, with `wildcard`, of the wildcard feed: it has
    /// patterns); answers once every topic's channel, and the wildcard feed, is subscribed.
    Register {
        topics: Vec<Topic>,
        wildcard: bool,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Uncount a subscriber of these topics (and of the wildcard feed).
    Unregister { topics: Vec<Topic>, wildcard: bool },
    /// Answers with the topics that have local subscribers, after every earlier command.
    Topics { done: oneshot::Sender<Vec<Topic>> },
}

struct Channel {
    topic: Topic,
    subscribers: usize,
    /// `false` while its SUBSCRIBE is on the way.
    confirmed: bool,
}

/// The wildcard feed: a PSUBSCRIBE of every topic's channel, held while local subscribers have
/// patterns.
struct Wildcard {
    subscribers: usize,
    /// `false` while its PSUBSCRIBE is on the way.
    confirmed: bool,
}

/// A subscriber waiting for its channels (and maybe the wildcard feed) to be confirmed.
struct Waiting {
    names: HashSet<String>,
    wildcard: bool,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// How often the pub/sub connection is checked, and how long a PING may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct HealthCheck {
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
}

type Outcome = Pin<Box<dyn Future<Output = (Finished, bool)> + Send>>;

/// What a job the dispatcher waits for was.
enum Finished {
    Subscribed(Vec<String>),
    PSubscribed,
    Pinged,
}

/// Channels per SUBSCRIBE during recovery, and per history read.
const RECOVERY_CHUNK: usize = 1_000;
/// History entries per topic per read during recovery.
const RECOVERY_PAGE: usize = 256;

pub(super) struct Dispatcher {
    link: Link,
    connection: ConnectionManager,
    pushes: Pushes,
    keys: Keys,
    replay: Script,
    commands: mpsc::UnboundedReceiver<Command>,
    worker: mpsc::UnboundedSender<Request>,
    outcomes: FuturesUnordered<Outcome>,
    waiting: Vec<Waiting>,
    health: HealthCheck,
    pinging: bool,
    retention: wire::Retention,
    channels: HashMap<String, Channel>,
    wildcard: Option<Wildcard>,
    /// The wildcard feed lost its last subscriber while the connection was being recovered, so
    /// its PUNSUBSCRIBE was not sent: recovery sends it (the connection may be the same one).
    wildcard_stale: bool,
    /// Whether publishes append to the global history, which fills the wildcard feed's gaps.
    pattern_history: bool,
    fanout: Fanout,
    epoch: Option<String>,
    needs_recovery: bool,
    /// Whether the first connection was set up; later recoveries fill a gap.
    started: bool,
    gap_fills: Arc<AtomicU64>,
}

/// What the dispatcher is set up with, besides its connection.
pub(super) struct Settings {
    pub(super) keys: Keys,
    pub(super) health: HealthCheck,
    pub(super) retention: wire::Retention,
    /// Whether publishes append to the global history.
    pub(super) pattern_history: bool,
    pub(super) fanout: Fanout,
    pub(super) gap_fills: Arc<AtomicU64>,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

impl Dispatcher {
    pub(super) fn new(
        link: Link,
        (connection, pushes): (ConnectionManager, Pushes),
        commands: mpsc::UnboundedReceiver<Command>,
        settings: Settings,
    ) -> Self {
        let worker = worker::spawn(link.timeout.max(settings.health.timeout));
        Self {
            link,
            connection,
            pushes,
            keys: settings.keys,
            replay: Script::new(wire::REPLAY),
            commands,
            worker,
            outcomes: FuturesUnordered::new(),
            waiting: Vec::new(),
            health: settings.health,
            pinging: false,
            retention: settings.retention,
            channels: HashMap::new(),
            wildcard: None,
            wildcard_stale: false,
            pattern_history: settings.pattern_history,
            fanout: settings.fanout,
            epoch: None,
            // The first "recovery" subscribes the channel of multi-topic events.
            needs_recovery: true,
            started: false,
            gap_fills: settings.gap_fills,
        }
    }

    /// Runs until the broker is dropped.
    pub(super) async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut health = tokio::time::interval(self.health.interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.needs_recovery {
                let channels = self.channels.len();
                match self.recover().await {
                    Ok(()) => {
                        if self.started {
                            tracing::info!(
                                target: "tower_sse_pubsub",
                                channels,
                                "Redis pub/sub connection restored; the gap was filled from history"
                            );
                        } else {
                            tracing::debug!(target: "tower_sse_pubsub", "Redis pub/sub connected");
                        }
                        self.needs_recovery = false;
                        retry = FIRST_RETRY;
                        self.started = true;
                        continue;
                    }
                    Err(error) => tracing::warn!(
                        target: "tower_sse_pubsub",
                        %error,
                        retry_in = ?retry,
                        "Redis pub/sub connection is down; retrying"
                    ),
                }
                if !self.wait(retry).await {
                    return;
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return,
                },
                push = self.pushes.receiver.recv() => match push {
                    Some(push) => self.on_push(push),
                    // The connection manager is gone; only a replaced one ends like this.
                    None => {
                        tracing::warn!(target: "tower_sse_pubsub", "Redis pub/sub connection lost");
                        self.needs_recovery = true;
                    }
                },
                Some((finished, ok)) = self.outcomes.next(), if !self.outcomes.is_empty() => {
                    self.on_finished(finished, ok);
                }
                _ = health.tick() => self.check_health(),
            }
            if self.pushes.take_overflow() {
                // Messages were dropped: fill the gap from history, as after a reconnect.
                tracing::warn!(
                    target: "tower_sse_pubsub",
                    "Redis pub/sub messages arrived faster than they were dispatched; filling the gap from history"
                );
                self.needs_recovery = true;
            }
        }
    }

    /// Sends `job` to the worker; with `notify`, its outcome comes back to the run loop.
    fn send_job(&mut self, job: Job, notify: Option<Finished>) {
        let (done, outcome) = match notify {
            Some(finished) => {
                let (done, result) = oneshot::channel();
                let outcome: Outcome =
                    Box::pin(async move { (finished, result.await.unwrap_or(false)) });
                (Some(done), Some(outcome))
            }
            None => (None, None),
        };
        let request = Request {
            job,
            connection: self.connection.clone(),
            done,
        };
        if self.worker.send(request).is_ok()
            && let Some(outcome) = outcome
        {
            self.outcomes.push(outcome);
        }
    }

    /// Sends `job` to the worker and waits for it (during recovery, when nothing else runs).
    async fn run_job(&mut self, job: Job) -> bool {
        let (done, result) = oneshot::channel();
        let request = Request {
            job,
            connection: self.connection.clone(),
            done: Some(done),
        };
        self.worker.send(request).is_ok() && result.await.unwrap_or(false)
    }

    /// PINGs the pub/sub connection through the worker. One that does not answer in time is
    /// silently dead (a dropped NAT entry, a half-open socket): it is replaced, and the new one
    /// resubscribes and fills the gap from history.
    fn check_health(&mut self) {
        if self.needs_recovery || self.pinging {
            return;
        }
        self.pinging = true;
        self.send_job(Job::Ping, Some(Finished::Pinged));
    }

    fn on_finished(&mut self, finished: Finished, ok: bool) {
        match finished {
            Finished::Pinged => {
                self.pinging = false;
                if !ok {
                    tracing::warn!(
                        target: "tower_sse_pubsub",
                        timeout = ?self.health.timeout,
                        "the Redis pub/sub connection did not answer PING; replacing it"
                    );
                    self.replace_connection();
                }
            }
            Finished::Subscribed(names) => self.on_subscribed(names, ok),
            Finished::PSubscribed => self.on_psubscribed(ok),
        }
    }

    /// Drops the pub/sub connection for a new one (connected on first use) and schedules the
    /// resubscription and gap fill.
    fn replace_connection(&mut self) {
        if let Ok((connection, pushes)) = self.link.connect_lazily() {
            self.connection = connection;
            self.pushes = pushes;
        }
        self.needs_recovery = true;
    }

    /// Waits `delay` before the next recovery attempt while still answering commands: new
    /// topics are refused at once rather than kept waiting. Returns `false` when the broker
    /// is gone.
    async fn wait(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => return false,
                },
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                topics,
                wildcard,
                done,
            } => self.register(topics, wildcard, done),
            Command::Unregister { topics, wildcard } => self.unregister(&topics, wildcard),
            Command::Topics { done } => {
                let topics: Vec<Topic> = self.channels.values().map(|c| c.topic.clone()).collect();
                // Answered once the worker has sent every earlier SUBSCRIBE and UNSUBSCRIBE.
                let (flushed, finished) = oneshot::channel();
                let request = Request {
                    job: Job::Ping,
                    connection: self.connection.clone(),
                    done: Some(flushed),
                };
                if self.worker.send(request).is_ok() {
                    tokio::spawn(async move {
                        let _ = finished.await;
                        let _ = done.send(topics);
                    });
                } else {
                    let _ = done.send(topics);
                }
            }
        }
    }

    fn register(
        &mut self,
        topics: Vec<Topic>,
        wildcard: bool,
        done: oneshot::Sender<Result<(), BrokerError>>,
    ) {
        let names: Vec<(String, Topic)> = topics
            .into_iter()
            .map(|topic| (self.keys.channel(&topic), topic))
            .collect();
        let new: Vec<String> = names
            .iter()
            .filter(|(name, _)| !self.channels.contains_key(name))
            .map(|(name, _)| name.clone())
            .collect();
        let new_wildcard = wildcard && self.wildcard.is_none();
        if (!new.is_empty() || new_wildcard) && self.needs_recovery {
            let _ = done.send(Err(unavailable_now()));
            return;
        }
        let mut unconfirmed = HashSet::new();
        for (name, topic) in names {
            let channel = self.channels.entry(name.clone()).or_insert(Channel {
                topic,
                subscribers: 0,
                confirmed: false,
            });
            channel.subscribers += 1;
            if !channel.confirmed {
                unconfirmed.insert(name);
            }
        }
        let mut waits_for_wildcard = false;
        if wildcard {
            let feed = self.wildcard.get_or_insert(Wildcard {
                subscribers: 0,
                confirmed: false,
            });
            feed.subscribers += 1;
            waits_for_wildcard = !feed.confirmed;
        }
        if !new.is_empty() {
            self.send_job(Job::Subscribe(new.clone()), Some(Finished::Subscribed(new)));
        }
        if new_wildcard {
            self.wildcard_stale = false;
            let pattern = self.keys.every_channel();
            self.send_job(Job::PSubscribe(pattern), Some(Finished::PSubscribed));
        }
        if unconfirmed.is_empty() && !waits_for_wildcard {
            let _ = done.send(Ok(()));
        } else {
            self.waiting.push(Waiting {
                names: unconfirmed,
                wildcard: waits_for_wildcard,
                done,
            });
        }
    }

    fn on_psubscribed(&mut self, ok: bool) {
        if !ok {
            // As for a failed SUBSCRIBE: replace the connection; whoever waited for the feed
            // gets an error (and unregisters). A feed an earlier PSUBSCRIBE confirmed stays.
            let mut still = Vec::new();
            for waiting in std::mem::take(&mut self.waiting) {
                if waiting.wildcard {
                    let _ = waiting.done.send(Err(BrokerError::unavailable(
                        "Redis did not confirm PSUBSCRIBE",
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    )));
                } else {
                    still.push(waiting);
                }
            }
            self.waiting = still;
            if self.wildcard.as_ref().is_some_and(|feed| !feed.confirmed) {
                self.wildcard = None;
            }
            self.replace_connection();
            return;
        }
        match &mut self.wildcard {
            Some(feed) => feed.confirmed = true,
            // Its last subscriber left while the PSUBSCRIBE was on the way.
            None => {
                let pattern = self.keys.every_channel();
                self.send_job(Job::PUnsubscribe(pattern), None);
            }
        }
        self.release_waiting();
    }

    fn on_subscribed(&mut self, names: Vec<String>, ok: bool) {
        if !ok {
            // A connection that failed here may be dead: replace it; recovery resubscribes the
            // channels still in use. Whoever waited for these gets an error (and unregisters).
            let failed: HashSet<&String> = names.iter().collect();
            let mut still = Vec::new();
            for waiting in std::mem::take(&mut self.waiting) {
                if waiting.names.iter().any(|n| failed.contains(n)) {
                    let _ = waiting.done.send(Err(BrokerError::unavailable(
                        "Redis did not confirm SUBSCRIBE",
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    )));
                } else {
                    still.push(waiting);
                }
            }
            self.waiting = still;
            for name in &names {
                self.channels.remove(name);
            }
            self.replace_connection();
            return;
        }
        let mut gone = Vec::new();
        for name in names {
            match self.channels.get_mut(&name) {
                Some(channel) => channel.confirmed = true,
                // Its last subscriber left while the SUBSCRIBE was on the way.
                None => gone.push(name),
            }
        }
        if !gone.is_empty() {
            self.send_job(Job::Unsubscribe(gone), None);
        }
        self.release_waiting();
    }

    /// Answers every subscriber whose channels (and wildcard feed) are all confirmed.
    fn release_waiting(&mut self) {
        let channels = &self.channels;
        let wildcard = self.wildcard.as_ref().is_some_and(|feed| feed.confirmed);
        let mut still = Vec::new();
        for mut waiting in std::mem::take(&mut self.waiting) {
            waiting
                .names
                .retain(|name| !channels.get(name).is_some_and(|c| c.confirmed));
            waiting.wildcard &= !wildcard;
            if waiting.names.is_empty() && !waiting.wildcard {
                let _ = waiting.done.send(Ok(()));
            } else {
                still.push(waiting);
            }
        }
        self.waiting = still;
    }

    fn unregister(&mut self, topics: &[Topic], wildcard: bool) {
        if wildcard && let Some(feed) = &mut self.wildcard {
            feed.subscribers = feed.subscribers.saturating_sub(1);
            if feed.subscribers == 0 {
                let confirmed = feed.confirmed;
                self.wildcard = None;
                // An unconfirmed one is unsubscribed when its PSUBSCRIBE completes.
                if confirmed && self.needs_recovery {
                    self.wildcard_stale = true;
                } else if confirmed {
                    let pattern = self.keys.every_channel();
                    self.send_job(Job::PUnsubscribe(pattern), None);
                }
            }
        }
        let mut empty = Vec::new();
        for topic in topics {
            let name = self.keys.channel(topic);
            if let Some(channel) = self.channels.get_mut(&name) {
                channel.subscribers = channel.subscribers.saturating_sub(1);
                if channel.subscribers == 0 {
                    let confirmed = channel.confirmed;
                    self.channels.remove(&name);
                    // An unconfirmed one is unsubscribed when its SUBSCRIBE completes.
                    if confirmed {
                        empty.push(name);
                    }
                }
            }
        }
        if !empty.is_empty() && !self.needs_recovery {
            self.send_job(Job::Unsubscribe(empty), None);
        }
    }

    fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(_channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                self.on_message(Bytes::from(payload));
            }
            // From the wildcard feed: `[pattern, channel, payload]`. A message on a channel that
            // is also subscribed arrives twice, one push right after the other; the engine
            // ignores the second (its sequence is not above the last appended).
            PushKind::PMessage => {
                let mut data = push.data.into_iter().skip(2);
                let Some(Value::BulkString(payload)) = data.next() else {
                    return;
                };
                self.on_message(Bytes::from(payload));
            }
            PushKind::Disconnection => self.needs_recovery = true,
            _ => {}
        }
    }

    fn on_message(&mut self, payload: Bytes) {
        let Some(read) = wire::read_message(payload) else {
            return; // not written by our publish script
        };
        self.note_epoch(&read.epoch);
        // The engine drops what it already has (an event seen in a gap fill) and what no local
        // subscriber reads.
        self.fanout.append(read.frame);
    }

    /// Records the store's epoch. A different epoch than before means the store was reset or
    /// restarted: its sequences cannot be compared with the old ones, so every subscriber is
    /// told to resync and the engine accepts sequences from the start.
    fn note_epoch(&mut self, epoch: &str) {
        match &self.epoch {
            Some(known) if known == epoch => {}
            Some(_) => self.reset(Some(epoch.to_owned())),
            None => self.epoch = Some(epoch.to_owned()),
        }
    }

    fn reset(&mut self, epoch: Option<String>) {
        self.epoch = epoch;
        self.fanout.resync(None, Resume::Unknown);
    }

    /// Resubscribes every channel (and the wildcard feed) after a reconnect and fills the gap
    /// from history.
    ///
    /// Every channel is subscribed first (in chunks), then the counter is read once: that is the
    /// cut. Every event up to it is in the histories (or known to be trimmed), every later one
    /// arrives live on the new subscription. The histories are then read in chunks of channels
    /// and pages of entries, the events up to the cut appended in sequence order across all
    /// topics, and live messages the read already held are dropped by the engine. So recovery
    /// works with any number of channels, and no single Redis call grows with them.
    ///
    /// With the wildcard feed, the gap of the pattern readers is filled from the global history
    /// the same way; when that history no longer reaches back to the gap (or is off), they are
    /// told to resync instead.
    async fn recover(&mut self) -> Result<(), BrokerError> {
        let mut names: Vec<String> = self.channels.keys().cloned().collect();
        names.sort_unstable();
        let mut all = names.clone();
        all.push(self.keys.multi());
        for chunk in all.chunks(RECOVERY_CHUNK) {
            if !self.run_job(Job::Subscribe(chunk.to_vec())).await {
                return Err(BrokerError::unavailable(
                    "cannot resubscribe after reconnecting",
                    std::io::Error::from(std::io::ErrorKind::NotConnected),
                ));
            }
        }
        let pattern = self.keys.every_channel();
        if self.wildcard.is_some() {
            if !self.run_job(Job::PSubscribe(pattern)).await {
                return Err(BrokerError::unavailable(
                    "cannot resubscribe the wildcard feed after reconnecting",
                    std::io::Error::from(std::io::ErrorKind::NotConnected),
                ));
            }
        } else if self.wildcard_stale && self.run_job(Job::PUnsubscribe(pattern)).await {
            self.wildcard_stale = false;
        }
        for channel in self.channels.values_mut() {
            channel.confirmed = true;
        }
        let wildcard = match &mut self.wildcard {
            Some(feed) => {
                feed.confirmed = true;
                true
            }
            None => false,
        };
        self.release_waiting();
        if (names.is_empty() && !wildcard) || !self.started {
            return Ok(());
        }

        let (epoch, cut) = self.read_cut().await?;
        // An empty epoch: the store lost everything and makes a new one at the next publish.
        let changed = self
            .epoch
            .as_deref()
            .is_some_and(|known| epoch.is_empty() || known != epoch);
        if changed || cut < self.fanout.last_sequence() {
            // Restarted, reset or rolled back: nothing from before can be compared.
            self.reset((!epoch.is_empty()).then(|| epoch.clone()));
        } else if !epoch.is_empty() {
            self.epoch = Some(epoch.clone());
        }
        let after = self.fanout.last_sequence();
        let mut gap: Vec<Frame> = Vec::new();
        let mut missed: Vec<Topic> = Vec::new();
        for chunk in names.chunks(RECOVERY_CHUNK) {
            let sources: Vec<Source> = chunk
                .iter()
                .filter_map(|name| {
                    self.channels
                        .get(name)
                        .map(|c| Source::Topic(c.topic.clone()))
                })
                .collect();
            for (source, trimmed) in self.read_gap(sources, &epoch, after, cut, &mut gap).await? {
                if trimmed && let Source::Topic(topic) = source {
                    // Events this topic's subscribers never got are gone from history.
                    missed.push(topic);
                }
            }
        }
        let mut patterns_missed = false;
        if wildcard {
            if self.pattern_history {
                let read = self
                    .read_gap(vec![Source::Global], &epoch, after, cut, &mut gap)
                    .await?;
                patterns_missed = read.iter().any(|(_, trimmed)| *trimmed);
            } else {
                // No global history to fill it from: any event since may have matched.
                patterns_missed = cut > after;
            }
        }
        // Counted before the gap reaches anyone, so a reader that saw it sees the count.
        self.gap_fills.fetch_add(1, Ordering::Relaxed);
        if !missed.is_empty() {
            self.fanout.resync(Some(&missed), Resume::Expired);
        }
        if patterns_missed {
            self.fanout.resync_patterns(Resume::Expired);
        }
        gap.sort_by_key(Frame::sequence);
        gap.dedup_by_key(|frame| frame.sequence());
        for frame in gap {
            self.fanout.append(frame);
        }
        Ok(())
    }

    /// Reads `sources` from `after` up to the cut, a page at a time, adding their frames of this
    /// epoch to `gap`; returns each source, and whether entries after `after` were trimmed from
    /// it (its readers missed events).
    async fn read_gap(
        &mut self,
        sources: Vec<Source>,
        epoch: &str,
        after: u64,
        cut: u64,
        gap: &mut Vec<Frame>,
    ) -> Result<Vec<(Source, bool)>, BrokerError> {
        let mut trimmed = Vec::with_capacity(sources.len());
        let mut starts: Vec<(Source, u64)> = sources.into_iter().map(|s| (s, after)).collect();
        while !starts.is_empty() {
            let replay = self.read_history(&starts, epoch).await?;
            if !replay.placed || replay.epoch != epoch {
                return Err(BrokerError::unavailable(
                    "the Redis store was reset while recovering",
                    std::io::Error::from(std::io::ErrorKind::Interrupted),
                ));
            }
            let mut next = Vec::new();
            for ((source, from), part) in starts.into_iter().zip(replay.topics) {
                if from == after {
                    trimmed.push((source.clone(), part.trimmed_through > after));
                }
                let mut last = from;
                for read in part.frames {
                    last = last.max(read.frame.sequence());
                    if read.epoch == epoch && read.frame.sequence() <= cut {
                        gap.push(read.frame);
                    }
                }
                if part.more && last < cut {
                    next.push((source, last));
                }
            }
            starts = next;
        }
        Ok(trimmed)
    }

    /// The store's epoch and counter, read together.
    async fn read_cut(&mut self) -> Result<(String, u64), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.get(&self.keys.epoch).get(&self.keys.sequence);
        let (epoch, counter): (Option<String>, Option<u64>) = pipe
            .query_async(&mut self.connection)
            .await
            .map_err(|e| BrokerError::unavailable("cannot read the Redis counter", e))?;
        Ok((epoch.unwrap_or_default(), counter.unwrap_or(0)))
    }

    /// Reads a page of each topic's history after its start, in one atomic step.
    async fn read_history(
        &mut self,
        starts: &[(Source, u64)],
        epoch: &str,
    ) -> Result<wire::Replay, BrokerError> {
        let read = wire::PageRead {
            keys: &self.keys,
            script: &self.replay,
            starts,
            epoch,
            retention: self.retention,
            // The gap is gathered whole anyway (it is bounded by the push queue and the time
            // the connection was down): read each topic as far as a page at a time.
            page: RECOVERY_PAGE * starts.len(),
            page_bytes: 0,
        };
        wire::read_pages(
            read,
            &mut self.connection,
            "cannot read history to fill a gap",
        )
        .await
    }
}

fn unavailable_now() -> BrokerError {
    BrokerError::unavailable(
        "the Redis pub/sub connection is down and reconnecting",
        std::io::Error::from(std::io::ErrorKind::NotConnected),
    )
}
