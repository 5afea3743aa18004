//! The one task per process that owns the Redis pub/sub connection.
//!
//! It keeps a reference count per topic: a channel is SUBSCRIBEd when its first local subscriber
//! arrives and UNSUBSCRIBEd when its last leaves. Each message is read once into a [`Frame`] and
//! the same bytes go to every local subscriber of the topic.
//!
//! When the connection drops, `redis`'s connection manager reconnects; the dispatcher then
//! resubscribes every channel, reads what each topic published since the last frame it
//! forwarded, and delivers that in sequence order before any newer live message, so subscribers
//! see no gap and no duplicate. If the gap cannot be filled (history was trimmed meanwhile) or
//! the store was reset (a new epoch: Redis restarted without persistence), the affected
//! subscriptions stay open and receive a [`Delivery::Resync`](crate::Delivery::Resync) in place
//! of the missing events, then carry on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, PushInfo, PushKind, RedisResult, Script, Value};
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Keys};
use crate::broker::BrokerError;
use crate::broker::subscription::{Mailbox, Resume};
use crate::event::{Frame, Topic};

/// What the broker asks of the dispatcher.
pub(super) enum Command {
    /// Add a subscriber to topics; answers once every topic's channel is subscribed in Redis.
    Register {
        subscriber: u64,
        topics: Vec<Topic>,
        mailbox: Mailbox,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Remove a subscriber.
    Unregister { subscriber: u64, topics: Vec<Topic> },
    /// Answers with the topics that have local subscribers, after every earlier command.
    Topics { done: oneshot::Sender<Vec<Topic>> },
}

struct Channel {
    topic: Topic,
    subscribers: HashMap<u64, Mailbox>,
    /// The highest sequence forwarded (or known to predate every subscriber).
    last_sequence: u64,
}

/// How the dispatcher makes (and remakes) its pub/sub connection.
pub(super) struct Link {
    pub(super) client: Client,
    pub(super) timeout: Duration,
}

impl Link {
    fn config(&self) -> (ConnectionManagerConfig, mpsc::UnboundedReceiver<PushInfo>) {
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(push_sender)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt per command: the dispatcher does its own backoff, and keeps answering
            // subscribers between attempts instead of stalling them in retries.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        (config, pushes)
    }

    /// Connects now, failing if Redis cannot be reached.
    pub(super) async fn connect(
        &self,
    ) -> RedisResult<(ConnectionManager, mpsc::UnboundedReceiver<PushInfo>)> {
        let (config, pushes) = self.config();
        let connection = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        Ok((connection, pushes))
    }

    /// Connects on first use.
    pub(super) fn connect_lazily(
        &self,
    ) -> RedisResult<(ConnectionManager, mpsc::UnboundedReceiver<PushInfo>)> {
        let (config, pushes) = self.config();
        let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok((connection, pushes))
    }
}

/// How often the pub/sub connection is checked, and how long a PING may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct HealthCheck {
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
}

pub(super) struct Dispatcher {
    link: Link,
    connection: ConnectionManager,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    keys: Keys,
    replay: Script,
    commands: mpsc::UnboundedReceiver<Command>,
    health: HealthCheck,
    history_max_age_ms: u64,
    channels: HashMap<String, Channel>,
    /// The last sequence forwarded to each subscriber of several topics, so an event published
    /// to several of them takes one place in its queue, not one per topic.
    multi_topic: HashMap<u64, u64>,
    epoch: Option<String>,
    needs_recovery: bool,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

impl Dispatcher {
    pub(super) fn new(
        link: Link,
        (connection, pushes): (ConnectionManager, mpsc::UnboundedReceiver<PushInfo>),
        keys: Keys,
        commands: mpsc::UnboundedReceiver<Command>,
        health: HealthCheck,
        history_max_age_ms: u64,
    ) -> Self {
        Self {
            link,
            connection,
            pushes,
            keys,
            replay: Script::new(wire::REPLAY),
            commands,
            health,
            history_max_age_ms,
            channels: HashMap::new(),
            multi_topic: HashMap::new(),
            epoch: None,
            needs_recovery: false,
        }
    }

    /// Runs until the broker is dropped.
    pub(super) async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        let mut health = tokio::time::interval(self.health.interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.needs_recovery {
                let attempt = tokio::time::timeout(self.link.timeout, self.recover()).await;
                if let Ok(Ok(())) = attempt {
                    self.needs_recovery = false;
                    retry = FIRST_RETRY;
                } else {
                    if !self.wait(retry).await {
                        return;
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                push = self.pushes.recv() => match push {
                    Some(push) => self.on_push(push),
                    // The connection manager is gone; only a replaced one ends like this.
                    None => self.needs_recovery = true,
                },
                _ = health.tick() => self.check_health().await,
            }
        }
    }

    /// PINGs the pub/sub connection. One that does not answer in time is silently dead (a
    /// dropped NAT entry, a half-open socket): it is replaced, and the new one resubscribes and
    /// fills the gap from history.
    async fn check_health(&mut self) {
        if self.needs_recovery {
            return;
        }
        let ping = redis::cmd("PING");
        let answer = ping.query_async::<String>(&mut self.connection);
        if let Ok(Ok(_)) = tokio::time::timeout(self.health.timeout, answer).await {
            return;
        }
        self.replace_connection();
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
                    Some(command) => self.handle(command).await,
                    None => return false,
                },
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                subscriber,
                topics,
                mailbox,
                done,
            } => {
                let result = self.register(subscriber, topics, mailbox).await;
                let _ = done.send(result);
            }
            Command::Unregister { subscriber, topics } => {
                self.unregister(subscriber, &topics).await;
            }
            Command::Topics { done } => {
                let topics = self.channels.values().map(|c| c.topic.clone()).collect();
                let _ = done.send(topics);
            }
        }
    }

    async fn register(
        &mut self,
        subscriber: u64,
        topics: Vec<Topic>,
        mailbox: Mailbox,
    ) -> Result<(), BrokerError> {
        let new: Vec<(String, Topic)> = topics
            .iter()
            .map(|topic| (self.keys.channel(topic), topic.clone()))
            .filter(|(name, _)| !self.channels.contains_key(name))
            .collect();
        if !new.is_empty() {
            if self.needs_recovery {
                return Err(unavailable_now());
            }
            if let Err(error) = self.subscribe_new(&new).await {
                // A connection that failed here may be dead: replace it, and resubscribe the
                // channels already in use.
                self.replace_connection();
                return Err(error);
            }
        }
        for topic in &topics {
            if let Some(channel) = self.channels.get_mut(&self.keys.channel(topic)) {
                channel.subscribers.insert(subscriber, mailbox.clone());
            }
        }
        if topics.len() > 1 {
            self.multi_topic.insert(subscriber, 0);
        }
        Ok(())
    }

    /// SUBSCRIBEs channels that have no local subscriber yet.
    async fn subscribe_new(&mut self, new: &[(String, Topic)]) -> Result<(), BrokerError> {
        let timeout = self.link.timeout;
        // Read the counter before subscribing: every message that then arrives is newer, and
        // anything older is for the subscriber's replay.
        let mut pipe = redis::pipe();
        pipe.get(&self.keys.epoch).get(&self.keys.sequence);
        let read = pipe.query_async::<(Option<String>, Option<u64>)>(&mut self.connection);
        let (epoch, sequence) = tokio::time::timeout(timeout, read)
            .await
            .map_err(|e| BrokerError::unavailable("Redis did not answer in time", e))?
            .map_err(|e| BrokerError::unavailable("cannot read the Redis counter", e))?;
        let names: Vec<&String> = new.iter().map(|(name, _)| name).collect();
        tokio::time::timeout(timeout, self.connection.subscribe(&names))
            .await
            .map_err(|e| BrokerError::unavailable("Redis did not answer in time", e))?
            .map_err(|e| BrokerError::unavailable("Redis did not confirm SUBSCRIBE", e))?;
        if let Some(epoch) = epoch {
            // A reset noticed here resyncs the existing subscribers; the new channels start
            // from the counter read above, which belongs to the current epoch.
            self.note_epoch(&epoch);
        }
        for (name, topic) in new {
            self.channels.insert(
                name.clone(),
                Channel {
                    topic: topic.clone(),
                    subscribers: HashMap::new(),
                    last_sequence: sequence.unwrap_or(0),
                },
            );
        }
        Ok(())
    }

    async fn unregister(&mut self, subscriber: u64, topics: &[Topic]) {
        self.multi_topic.remove(&subscriber);
        let mut empty = Vec::new();
        for topic in topics {
            let name = self.keys.channel(topic);
            if let Some(channel) = self.channels.get_mut(&name) {
                channel.subscribers.remove(&subscriber);
                if channel.subscribers.is_empty() {
                    self.channels.remove(&name);
                    empty.push(name);
                }
            }
        }
        if !empty.is_empty() && !self.needs_recovery {
            let unsubscribe = self.connection.unsubscribe(&empty);
            if !matches!(
                tokio::time::timeout(self.link.timeout, unsubscribe).await,
                Ok(Ok(()))
            ) {
                // The connection failed; a new one subscribes only to the channels in use.
                self.replace_connection();
            }
        }
    }

    fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
                    return;
                };
                let Ok(name) = String::from_utf8(channel) else {
                    return;
                };
                self.on_message(&name, Bytes::from(payload));
            }
            PushKind::Disconnection => self.needs_recovery = true,
            _ => {}
        }
    }

    fn on_message(&mut self, name: &str, payload: Bytes) {
        let Some(channel) = self.channels.get(name) else {
            return; // a message that crossed our UNSUBSCRIBE
        };
        let Some(read) = wire::read_frame(payload, &channel.topic) else {
            return; // not written by our publish script
        };
        self.note_epoch(&read.epoch);
        if let Some(channel) = self.channels.get_mut(name) {
            forward(channel, &read.frame, &mut self.multi_topic);
        }
    }

    /// Records the store's epoch. A different epoch than before means the store was reset or
    /// restarted: its sequences cannot be compared with the old ones, so every subscriber is
    /// told to resync and every channel accepts sequences from the start.
    fn note_epoch(&mut self, epoch: &str) {
        match &self.epoch {
            Some(known) if known == epoch => {}
            Some(_) => self.reset(Some(epoch.to_owned())),
            None => self.epoch = Some(epoch.to_owned()),
        }
    }

    fn reset(&mut self, epoch: Option<String>) {
        self.epoch = epoch;
        let names: Vec<String> = self.channels.keys().cloned().collect();
        self.resync(&names, Resume::Unknown);
        for channel in self.channels.values_mut() {
            channel.last_sequence = 0;
        }
        for last in self.multi_topic.values_mut() {
            *last = 0;
        }
    }

    /// Tells every subscriber of the channels `names` (once each) that it may have missed
    /// events. A subscriber whose queue is full lags out instead.
    fn resync(&mut self, names: &[String], reason: Resume) {
        let mut told = HashSet::new();
        let mut lagged = HashSet::new();
        for name in names {
            if let Some(channel) = self.channels.get(name) {
                for (subscriber, mailbox) in &channel.subscribers {
                    if told.insert(*subscriber) && !mailbox.resync(reason.clone()) {
                        lagged.insert(*subscriber);
                    }
                }
            }
        }
        if !lagged.is_empty() {
            for channel in self.channels.values_mut() {
                channel
                    .subscribers
                    .retain(|subscriber, _| !lagged.contains(subscriber));
            }
        }
    }

    /// Resubscribes every channel after a reconnect and fills the gap from history.
    ///
    /// History is read for all channels in one atomic step, which also returns the counter:
    /// every event up to it is in that read (or known to be trimmed), every later one arrives
    /// live on the new subscription. So the gap is delivered in sequence order across all
    /// topics, and then each channel goes on from the counter.
    async fn recover(&mut self) -> Result<(), BrokerError> {
        if self.channels.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self.channels.keys().cloned().collect();
        self.connection
            .subscribe(&names)
            .await
            .map_err(|e| BrokerError::unavailable("cannot resubscribe after reconnecting", e))?;
        let mut replay = self.read_history(&names).await?;
        let placed = self.epoch.is_none() || self.epoch.as_deref() == Some(replay.epoch.as_str());
        if !placed || !replay.placed {
            // Restarted, reset or rolled back: nothing from before can be compared.
            let epoch = (!replay.epoch.is_empty()).then(|| replay.epoch.clone());
            self.reset(epoch);
            replay = self.read_history(&names).await?;
        } else if !replay.epoch.is_empty() {
            self.epoch = Some(replay.epoch.clone());
        }

        let mut gap: Vec<(String, Frame)> = Vec::new();
        let mut missed: Vec<String> = Vec::new();
        for (name, part) in names.iter().zip(replay.topics) {
            let after = self.channels.get(name).map_or(0, |c| c.last_sequence);
            if part.trimmed_through > after {
                // Events this topic's subscribers never got are gone from history.
                missed.push(name.clone());
            }
            gap.extend(
                part.frames
                    .into_iter()
                    .filter(|read| read.epoch == replay.epoch)
                    .map(|read| (name.clone(), read.frame)),
            );
        }
        self.resync(&missed, Resume::Expired);
        gap.sort_by_key(|(_, frame)| frame.sequence());
        for (name, frame) in gap {
            if let Some(channel) = self.channels.get_mut(&name) {
                forward(channel, &frame, &mut self.multi_topic);
            }
        }
        for channel in self.channels.values_mut() {
            channel.last_sequence = channel.last_sequence.max(replay.counter);
        }
        Ok(())
    }

    /// Reads every channel's history after what it forwarded, in one atomic step.
    async fn read_history(&mut self, names: &[String]) -> Result<wire::Replay, BrokerError> {
        let mut invocation = self.replay.prepare_invoke();
        invocation.key(&self.keys.epoch).key(&self.keys.sequence);
        let mut topics = Vec::with_capacity(names.len());
        for name in names {
            if let Some(channel) = self.channels.get(name) {
                invocation.key(self.keys.history(&channel.topic));
                topics.push(channel.topic.clone());
            }
        }
        invocation
            .arg(self.epoch.as_deref().unwrap_or(""))
            .arg(self.history_max_age_ms);
        for name in names {
            if let Some(channel) = self.channels.get(name) {
                invocation.arg(channel.last_sequence);
            }
        }
        let reply: Value = invocation
            .invoke_async(&mut self.connection)
            .await
            .map_err(|e| BrokerError::unavailable("cannot read history to fill a gap", e))?;
        wire::read_replay(reply, &topics).ok_or_else(|| {
            BrokerError::unavailable(
                "Redis returned history in an unexpected shape",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        })
    }
}

/// Delivers `frame` to the channel's subscribers unless it was already forwarded, on this
/// channel or (for a subscriber of several topics) on another.
fn forward(channel: &mut Channel, frame: &Frame, multi_topic: &mut HashMap<u64, u64>) {
    let sequence = frame.sequence();
    if sequence <= channel.last_sequence {
        return;
    }
    channel.last_sequence = sequence;
    channel.subscribers.retain(|subscriber, mailbox| {
        if let Some(last) = multi_topic.get_mut(subscriber) {
            if *last >= sequence {
                return true;
            }
            *last = sequence;
        }
        mailbox.deliver(frame)
    });
}

fn unavailable_now() -> BrokerError {
    BrokerError::unavailable(
        "the Redis pub/sub connection is down and reconnecting",
        std::io::Error::from(std::io::ErrorKind::NotConnected),
    )
}
