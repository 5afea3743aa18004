//! The one task per process that owns the Redis pub/sub connection.
//!
//! It keeps a reference count per topic: a channel is SUBSCRIBEd when its first local subscriber
//! arrives and UNSUBSCRIBEd when its last leaves; the channel of events published to several
//! topics at once is always subscribed. Each message is read once into a [`Frame`] and appended,
//! in O(1), to the fan-out engine, which delivers it to the local subscribers.
//!
//! When the connection drops, `redis`'s connection manager reconnects; the dispatcher then
//! resubscribes every channel, reads what each topic published since the last frame the engine
//! got, and appends that in sequence order before any newer live message, so subscribers see no
//! gap and no duplicate. If the gap cannot be filled (history was trimmed meanwhile) or
//! the store was reset (a new epoch: Redis restarted without persistence), the affected
//! subscriptions stay open and receive a [`Delivery::Resync`](crate::Delivery::Resync) in place
//! of the missing events, then carry on.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, PushInfo, PushKind, RedisResult, Script, Value};
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Keys};
use crate::broker::{BrokerError, Resume};
use crate::event::{Frame, Topic};
use crate::fanout::Fanout;

/// What the broker asks of the dispatcher.
pub(super) enum Command {
    /// Count a subscriber of these topics; answers once every topic's channel is subscribed.
    Register {
        topics: Vec<Topic>,
        done: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Uncount a subscriber of these topics.
    Unregister { topics: Vec<Topic> },
    /// Answers with the topics that have local subscribers, after every earlier command.
    Topics { done: oneshot::Sender<Vec<Topic>> },
}

struct Channel {
    topic: Topic,
    subscribers: usize,
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
    fanout: Fanout,
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
        fanout: Fanout,
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
            fanout,
            epoch: None,
            // The first "recovery" subscribes the channel of multi-topic events.
            needs_recovery: true,
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
            Command::Register { topics, done } => {
                let result = self.register(topics).await;
                let _ = done.send(result);
            }
            Command::Unregister { topics } => {
                self.unregister(&topics).await;
            }
            Command::Topics { done } => {
                let topics = self.channels.values().map(|c| c.topic.clone()).collect();
                let _ = done.send(topics);
            }
        }
    }

    async fn register(&mut self, topics: Vec<Topic>) -> Result<(), BrokerError> {
        let new: Vec<(String, Topic)> = topics
            .iter()
            .map(|topic| (self.keys.channel(topic), topic.clone()))
            .filter(|(name, _)| !self.channels.contains_key(name))
            .collect();
        if !new.is_empty() {
            if self.needs_recovery {
                return Err(unavailable_now());
            }
            let names: Vec<&String> = new.iter().map(|(name, _)| name).collect();
            let subscribe = self.connection.subscribe(&names);
            let confirmed = match tokio::time::timeout(self.link.timeout, subscribe).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(BrokerError::unavailable(
                    "Redis did not confirm SUBSCRIBE",
                    e,
                )),
                Err(e) => Err(BrokerError::unavailable("Redis did not answer in time", e)),
            };
            if let Err(error) = confirmed {
                // A connection that failed here may be dead: replace it, and resubscribe the
                // channels already in use.
                self.replace_connection();
                return Err(error);
            }
            for (name, topic) in new {
                self.channels.insert(
                    name,
                    Channel {
                        topic,
                        subscribers: 0,
                    },
                );
            }
        }
        for topic in &topics {
            if let Some(channel) = self.channels.get_mut(&self.keys.channel(topic)) {
                channel.subscribers += 1;
            }
        }
        Ok(())
    }

    async fn unregister(&mut self, topics: &[Topic]) {
        let mut empty = Vec::new();
        for topic in topics {
            let name = self.keys.channel(topic);
            if let Some(channel) = self.channels.get_mut(&name) {
                channel.subscribers = channel.subscribers.saturating_sub(1);
                if channel.subscribers == 0 {
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
                let (Some(Value::BulkString(_channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                else {
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

    /// Resubscribes every channel after a reconnect and fills the gap from history.
    ///
    /// History is read for all channels in one atomic step, which also returns the counter:
    /// every event up to it is in that read (or known to be trimmed), every later one arrives
    /// live on the new subscription. So the gap is appended in sequence order across all
    /// topics, and live messages the read already held are dropped by the engine.
    async fn recover(&mut self) -> Result<(), BrokerError> {
        let mut names: Vec<String> = self.channels.keys().cloned().collect();
        names.push(self.keys.multi());
        self.connection
            .subscribe(&names)
            .await
            .map_err(|e| BrokerError::unavailable("cannot resubscribe after reconnecting", e))?;
        names.pop();
        if names.is_empty() {
            return Ok(());
        }
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

        let after = self.fanout.last_sequence();
        let mut gap: Vec<Frame> = Vec::new();
        let mut missed: Vec<Topic> = Vec::new();
        for (name, part) in names.iter().zip(replay.topics) {
            if part.trimmed_through > after
                && let Some(channel) = self.channels.get(name)
            {
                // Events this topic's subscribers never got are gone from history.
                missed.push(channel.topic.clone());
            }
            gap.extend(
                part.frames
                    .into_iter()
                    .filter(|read| read.epoch == replay.epoch)
                    .map(|read| read.frame),
            );
        }
        if !missed.is_empty() {
            self.fanout.resync(Some(&missed), Resume::Expired);
        }
        gap.sort_by_key(Frame::sequence);
        for frame in gap {
            self.fanout.append(frame);
        }
        Ok(())
    }

    /// Reads every channel's history after what the engine has, in one atomic step.
    async fn read_history(&mut self, names: &[String]) -> Result<wire::Replay, BrokerError> {
        let after = self.fanout.last_sequence();
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
            .arg(self.history_max_age_ms)
            .arg(0);
        for _ in &topics {
            invocation.arg(after);
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

fn unavailable_now() -> BrokerError {
    BrokerError::unavailable(
        "the Redis pub/sub connection is down and reconnecting",
        std::io::Error::from(std::io::ErrorKind::NotConnected),
    )
}
