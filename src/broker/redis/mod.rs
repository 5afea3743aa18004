//! [`RedisBroker`]: many app instances, one topic space, through Redis (feature `redis`).
//!
//! Publishing runs one Lua script on a pooled connection (`deadpool-redis`): it takes the next id
//! from one counter, appends the encoded frame to each topic's history (a Redis stream trimmed
//! to the retention) and PUBLISHes it, atomically. Every instance holds one pub/sub connection
//! for all its subscribers (see the dispatcher), so ten thousand browsers do not mean ten
//! thousand Redis connections. A client resumes on any instance: history and ids live in Redis.
//!
//! A publish may choose its event's id ([`PublishRequest::id`]): the script keeps it on the
//! frame's `id:` line, gives the event the next sequence as any other, and remembers where the
//! id goes in Redis (expiring with the histories), so a resume after it is placed on every
//! instance. An id still remembered, or one shaped like the broker's own, is refused with
//! [`BrokerError::DuplicateId`] and nothing is published.
//!
//! Subscriptions with topic patterns (`*`, URI templates) are served too. While a process has
//! any, its pub/sub connection also PSUBSCRIBEs every topic's channel (one wildcard feed per
//! process, however many patterns), and the fan-out engine keeps what some local pattern
//! matches. Since the topics a pattern matches are not known in advance, each publish also
//! appends its event, once, to a global history, which pattern subscriptions replay from
//! (filtered in-process) and which fills the wildcard feed's gaps after a reconnect: see
//! [`RedisBrokerBuilder::pattern_history`] for its cost and bounds.
//!
//! Requires Redis 7.0 or newer (RESP3 pub/sub, and streams that record what they trimmed),
//! checked when the broker connects. Redis Cluster is not supported: the publish script touches
//! keys of several topics at once. Run Redis with `maxmemory-policy noeviction`: evicting a
//! history stream would lose events without a trace, and since history keys expire when their
//! topic goes quiet, `volatile-*` policies may evict them too.

mod dispatcher;
mod link;
mod presence;
mod replay;
mod wire;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, Script};
use tokio::sync::{mpsc, oneshot};

use self::dispatcher::{Command, Dispatcher, HealthCheck, Settings};
use self::link::Link;
use self::wire::Keys;
use super::{
    BoxFuture, Broker, BrokerError, PublishRequest, Start, SubscribeRequest, Subscription,
};
use crate::event::{EventId, Topic};
use crate::fanout::{Fanout, Position};

/// How long a process's presence entries outlive its last heartbeat, by default.
const DEFAULT_PRESENCE_EXPIRY: Duration = Duration::from_secs(30);
/// How long an idempotency key is remembered by default.
const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Pooled connections for publishing and reading history, by default.
const DEFAULT_POOL_SIZE: usize = 16;
/// The most bytes a topic's history keeps by default.
const DEFAULT_HISTORY_BYTES: usize = 1024 * 1024;
/// The events the global history (for pattern subscriptions) keeps by default.
const DEFAULT_PATTERN_HISTORY: usize = 10_000;
/// The most bytes the global history keeps by default.
const DEFAULT_PATTERN_HISTORY_BYTES: usize = 10 * 1024 * 1024;
/// How long a quiet topic's history stays in Redis by default.
const DEFAULT_IDLE_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest idle expiry accepted (Redis refuses expiry times that overflow).
const MAX_IDLE_EXPIRY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A broker that shares topics, ids and history between processes through Redis.
///
/// ```no_run
/// use tower_sse_pubsub::{Hub, RedisBroker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = RedisBroker::builder("redis://127.0.0.1:6379")
///     .key_prefix("myapp:sse")
///     .history_per_topic(500)
///     .build()
///     .await?;
/// let hub = Hub::builder().broker(broker).build()?;
/// # drop(hub);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    pool: deadpool_redis::Pool,
    keys: Keys,
    publish: Script,
    replay: Script,
    budget_scan: Script,
    history_per_topic: usize,
    /// 0: no limit.
    history_bytes_per_topic: usize,
    retention: wire::Retention,
    /// The events the global history keeps, for pattern subscriptions (0: none).
    pattern_history: usize,
    /// 0: no limit.
    pattern_history_bytes: usize,
    idempotency_window_ms: u64,
    replay_page: usize,
    /// The server's run id, as pooled connections learned it when they were made.
    run_id: Arc<std::sync::Mutex<String>>,
    /// The connection publishes share, once one was taken from the pool.
    publishing: std::sync::Mutex<Option<PublishingConnection>>,
    gap_fills: Arc<std::sync::atomic::AtomicU64>,
    fanout: Fanout,
    commands: mpsc::UnboundedSender<Command>,
    presence: presence::RedisPresence,
}

impl RedisBroker {
    /// A builder for a broker on the Redis at `url` (e.g. `redis://127.0.0.1:6379/0`).
    pub fn builder(url: impl Into<String>) -> RedisBrokerBuilder {
        RedisBrokerBuilder {
            url: url.into(),
            publish_url: None,
            pool_size: DEFAULT_POOL_SIZE,
            key_prefix: "sse".to_owned(),
            history_per_topic: 1_000,
            history_bytes_per_topic: DEFAULT_HISTORY_BYTES,
            history_max_age: None,
            history_idle_expiry: DEFAULT_IDLE_EXPIRY,
            pattern_history: DEFAULT_PATTERN_HISTORY,
            pattern_history_bytes: DEFAULT_PATTERN_HISTORY_BYTES,
            subscriber_queue: 256,
            replay_page: 256,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            push_queue: link::DEFAULT_PUSH_QUEUE,
            connect_timeout: Duration::from_secs(5),
            connect_lazily: false,
            health_check: HealthCheck {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
            },
            presence_expiry: DEFAULT_PRESENCE_EXPIRY,
        }
    }

    /// The topics this process holds a Redis subscription for (those with local subscribers),
    /// as of after every subscribe and unsubscribe made before the call.
    pub async fn subscribed_topics(&self) -> Vec<Topic> {
        let (done, topics) = oneshot::channel();
        if self.shared.commands.send(Command::Topics { done }).is_err() {
            return Vec::new();
        }
        topics.await.unwrap_or_default()
    }

    /// How many times this process filled a gap in its pub/sub feed from history: after a
    /// reconnect, a replaced connection, or an overflowing message queue.
    pub fn gap_fills(&self) -> u64 {
        self.shared
            .gap_fills
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fan-out engine this process delivers Redis messages through.
    pub fn fanout(&self) -> &Fanout {
        &self.shared.fanout
    }

    async fn publish_now(&self, request: &PublishRequest) -> Result<EventId, BrokerError> {
        let topics = request.topics();
        if topics.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &*self.shared;
        let mut connection = shared.publishing_connection().await?;
        let mut invocation = shared.publish.prepare_invoke();
        let key = request
            .key()
            .map_or_else(String::new, |key| shared.keys.idempotency(key.as_str()));
        let chosen = request
            .chosen_id()
            .map_or_else(String::new, |id| shared.keys.chosen(id));
        let (global, global_size) = if shared.pattern_history > 0 {
            (
                shared.keys.global.as_str(),
                shared.keys.global_size.as_str(),
            )
        } else {
            ("", "")
        };
        invocation
            .key(&shared.keys.sequence)
            .key(&shared.keys.epoch)
            .key(&shared.keys.run)
            .key(key)
            .key(&shared.keys.checkpoints)
            .key(chosen)
            .key(global)
            .key(global_size)
            .key(&shared.keys.newest_checkpoint);
        for topic in topics {
            invocation
                .key(shared.keys.history(topic))
                .key(shared.keys.size(topic));
        }
        let channel = match topics {
            [only] => shared.keys.channel(only),
            _ => shared.keys.multi(),
        };
        invocation
            .arg(request.event().encode_fields().as_ref())
            .arg(shared.history_per_topic)
            .arg(nonce())
            .arg(shared.retention.max_age_ms)
            .arg(wire::header(request.is_private(), topics))
            .arg(channel)
            .arg(shared.idempotency_window_ms)
            .arg(shared.run_id())
            .arg(shared.history_bytes_per_topic)
            .arg(shared.retention.expiry_ms)
            .arg(request.chosen_id().map_or("", EventId::as_str))
            .arg(shared.pattern_history)
            .arg(shared.pattern_history_bytes);
        let reply: redis::Value = match invocation.invoke_async(&mut connection).await {
            Ok(reply) => {
                shared.mark_publishing_used();
                reply
            }
            Err(error) => {
                // The connection may be broken (or the server restarted): the next publish
                // takes a fresh one, which also learns the server's run id.
                shared.forget_publishing_connection();
                return Err(BrokerError::unavailable(
                    "Redis did not confirm the publish",
                    error,
                ));
            }
        };
        let malformed = || {
            BrokerError::unavailable(
                "Redis answered the publish in an unexpected shape",
                std::io::Error::from(std::io::ErrorKind::InvalidData),
            )
        };
        match reply {
            redis::Value::BulkString(id) => {
                let id = String::from_utf8(id).map_err(|_| malformed())?;
                EventId::new(id)
                    .map_err(|e| BrokerError::unavailable("Redis returned a malformed id", e))
            }
            redis::Value::SimpleString(id) => EventId::new(id)
                .map_err(|e| BrokerError::unavailable("Redis returned a malformed id", e)),
            // The chosen id is taken (remembered, or shaped like ours); nothing was stored.
            redis::Value::Array(_) => match request.chosen_id() {
                Some(id) => Err(BrokerError::DuplicateId(id.clone())),
                None => Err(malformed()),
            },
            _ => Err(malformed()),
        }
    }

    async fn subscribe_now(&self, request: &SubscribeRequest) -> Result<Subscription, BrokerError> {
        if request.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let topics = request.topics().to_vec();
        let patterns = request.patterns().to_vec();
        let wildcard = !patterns.is_empty();
        let shared = &self.shared;
        let (done, registered) = oneshot::channel();
        shared
            .commands
            .send(Command::Register {
                topics: topics.clone(),
                wildcard,
                done,
            })
            .map_err(|_| closed())?;
        // From here on the topics are registered (or the attempt failed); unregister on every
        // way out, including an error below.
        let registration = Registration {
            commands: shared.commands.clone(),
            topics: topics.clone(),
            wildcard,
        };
        registered.await.map_err(|_| closed())??;

        // Placed before the replay is read: every event the replay does not hold arrives here.
        let (reader, _) = shared.fanout.subscribe_matching(
            &topics,
            &patterns,
            Position::Live,
            request.granted().clone(),
            None,
        );
        let from = match request.start_at() {
            Start::After(id) => Some(replay::From::After(id)),
            Start::Earliest => Some(replay::From::Earliest),
            _ => None,
        };
        let mut subscription = match from {
            None => Subscription::new(reader, super::Resume::Fresh),
            Some(from) => {
                let scope = if wildcard {
                    replay::Scope::Matching(replay::Interest { topics, patterns })
                } else {
                    replay::Scope::Topics(topics)
                };
                let first =
                    replay::first_page(shared.clone(), scope, from, request.budget()).await?;
                Subscription::new(reader, first.resume.clone())
                    .skip_through(first.seen_through)
                    .with_replay(first.into_pages())
            }
        };
        subscription = subscription
            .with_replay_budget(request.budget())
            .with_deadline(request.deadline_at())
            .on_drop(move || drop(registration));
        Ok(subscription)
    }
}

impl Shared {
    /// The connection publishes share. It is taken out of the pool once and shared: a
    /// multiplexed connection carries concurrent publishes at once, and a connection taken from
    /// the pool for every publish would cost a second round trip (the pool checks each one it
    /// hands out with a PING).
    async fn publishing_connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let cached = self.lock_publishing().clone();
        if let Some(shared) = cached {
            if shared.used.elapsed() < PUBLISHING_IDLE_CHECK {
                return Ok(shared.connection);
            }
            // Idle for a while: it may have died unnoticed (a restart, a dropped NAT entry).
            let mut connection = shared.connection;
            let ping = redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await;
            if ping.is_ok() {
                self.mark_publishing_used();
                return Ok(connection);
            }
            self.forget_publishing_connection();
        }
        let pooled = self
            .pool
            .get()
            .await
            .map_err(|e| BrokerError::unavailable("no Redis connection for publishing", e))?;
        let connection = deadpool_redis::Connection::take(pooled);
        let mut cached = self.lock_publishing();
        // Another publish may have taken one meanwhile; keep the first.
        let shared = cached.get_or_insert(PublishingConnection {
            connection,
            used: tokio::time::Instant::now(),
        });
        Ok(shared.connection.clone())
    }

    fn mark_publishing_used(&self) {
        if let Some(shared) = self.lock_publishing().as_mut() {
            shared.used = tokio::time::Instant::now();
        }
    }

    fn forget_publishing_connection(&self) {
        *self.lock_publishing() = None;
    }

    fn lock_publishing(&self) -> std::sync::MutexGuard<'_, Option<PublishingConnection>> {
        self.publishing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_id(&self) -> String {
        self.run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Reads the server's run id on a new connection and records it.
async fn learn_run_id(
    connection: &mut redis::aio::MultiplexedConnection,
    learned: &std::sync::Mutex<String>,
) -> redis::RedisResult<()> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(connection)
        .await?;
    if let Some(id) = info.lines().find_map(|line| line.strip_prefix("run_id:")) {
        *learned.lock().unwrap_or_else(|p| p.into_inner()) = id.trim().to_owned();
    }
    Ok(())
}

/// The connection publishes share, and when it last answered.
#[derive(Clone)]
struct PublishingConnection {
    connection: MultiplexedConnection,
    used: tokio::time::Instant,
}

/// How long the shared publishing connection may sit unused before it is checked with a PING.
const PUBLISHING_IDLE_CHECK: Duration = Duration::from_secs(1);

/// Unregisters topics (and a use of the wildcard feed) from the dispatcher when dropped.
struct Registration {
    commands: mpsc::UnboundedSender<Command>,
    topics: Vec<Topic>,
    wildcard: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unregister {
            topics: std::mem::take(&mut self.topics),
            wildcard: self.wildcard,
        });
    }
}

/// Eight random hex digits; with the server's clock they make a new epoch unique.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    format!("{:08x}", hasher.finish() as u32)
}

fn closed() -> BrokerError {
    BrokerError::unavailable(
        "the Redis broker's pub/sub task has stopped",
        std::io::Error::from(std::io::ErrorKind::BrokenPipe),
    )
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        request: &'a PublishRequest,
    ) -> BoxFuture<'a, Result<EventId, BrokerError>> {
        Box::pin(self.publish_now(request))
    }

    fn subscribe<'a>(
        &'a self,
        request: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        Box::pin(self.subscribe_now(request))
    }

    fn last_event_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BrokerError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut connection = shared.pool.get().await.map_err(|e| {
                BrokerError::unavailable("no Redis connection to read the last id", e)
            })?;
            let (epoch, sequence): (Option<String>, Option<u64>) = redis::cmd("MGET")
                .arg(&shared.keys.epoch)
                .arg(&shared.keys.sequence)
                .query_async(&mut connection)
                .await
                .map_err(|e| BrokerError::unavailable("Redis did not give the last id", e))?;
            // The broker's own id for the newest sequence places a resume after it, whatever id
            // the event carries.
            Ok(match (epoch, sequence) {
                (Some(epoch), Some(sequence)) if sequence > 0 => {
                    EventId::new(format!("{epoch}-{sequence}")).ok()
                }
                _ => None,
            })
        })
    }

    fn presence(&self) -> Option<&dyn super::Presence> {
        Some(&self.shared.presence)
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("keys", &self.shared.keys)
            .field("history_per_topic", &self.shared.history_per_topic)
            .field("fanout", &self.shared.fanout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisBroker`]; see [`RedisBroker::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use tower_sse_pubsub::{Hub, RedisBroker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = RedisBroker::builder("redis://:secret@redis.internal:6379/0")
///     .key_prefix("shop:sse") // several apps can share one Redis
///     .history_per_topic(500)
///     .history_bytes_per_topic(512 * 1024)
///     .history_max_age(Duration::from_secs(3600))
///     .history_idle_expiry(Duration::from_secs(6 * 3600))
///     .connect_timeout(Duration::from_secs(2))
///     .build()
///     .await?; // fails at once when Redis is unreachable; see connect_lazily()
/// let hub = Hub::builder().broker(broker).build()?;
/// # drop(hub);
/// # Ok(())
/// # }
/// ```
#[must_use = "call .build().await to connect"]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisBrokerBuilder {
    url: String,
    publish_url: Option<String>,
    pool_size: usize,
    key_prefix: String,
    history_per_topic: usize,
    history_bytes_per_topic: usize,
    history_max_age: Option<Duration>,
    history_idle_expiry: Duration,
    pattern_history: usize,
    pattern_history_bytes: usize,
    subscriber_queue: usize,
    replay_page: usize,
    idempotency_window: Duration,
    push_queue: usize,
    connect_timeout: Duration,
    connect_lazily: bool,
    health_check: HealthCheck,
    presence_expiry: Duration,
}

impl RedisBrokerBuilder {
    /// Publishes and reads history through connections to this URL instead of the broker's
    /// URL, which then carries only the pub/sub connection: for a setup where the two take
    /// different routes to the same Redis (a proxy for long-lived connections, say). Both must
    /// reach the same server.
    pub fn publish_url(mut self, url: impl Into<String>) -> Self {
        self.publish_url = Some(url.into());
        self
    }

    /// The most pooled connections for publishing and reading history (default 16). Publishes
    /// share one multiplexed connection; replays and the health of that connection take others.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }

    /// The prefix of every key and channel (default `sse`), so several apps share one Redis.
    /// Prefixes must not nest: `app` and `app:c` would share keys, and a process of the first
    /// with pattern subscribers would read the channels of the second.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How many events each topic's history keeps (default 1,000; 0 keeps none).
    pub fn history_per_topic(mut self, events: usize) -> Self {
        self.history_per_topic = events;
        self
    }

    /// The most bytes each topic's history keeps, counting its frames and their headers
    /// (default 1 MiB; 0: no byte limit). The oldest events are trimmed first; a single event
    /// larger than this is published but not kept. Redis spends about the same again on its
    /// own structures: see the README for the worst case.
    pub fn history_bytes_per_topic(mut self, bytes: usize) -> Self {
        self.history_bytes_per_topic = bytes;
        self
    }

    /// Drops retained events older than `age` (by the Redis server's clock): trimmed when their
    /// topic is next published to, and never replayed once too old (default: no age limit). A
    /// topic's keys also expire `age` after its last publish, if that is sooner than the
    /// [idle expiry](Self::history_idle_expiry).
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.history_max_age = Some(age.max(Duration::from_millis(1)));
        self
    }

    /// How long after its last publish a topic's history expires from Redis (default 24 hours,
    /// at most 10 years), so topics that go quiet give their memory back. A client resuming
    /// from before then, on any topic, is told it may have missed events (the `resync` notice),
    /// never that its replay is complete.
    pub fn history_idle_expiry(mut self, expiry: Duration) -> Self {
        self.history_idle_expiry = expiry.clamp(Duration::from_millis(1), MAX_IDLE_EXPIRY);
        self
    }

    /// How many events the global history keeps (default 10,000; 0 keeps none): the history
    /// subscriptions with topic patterns (`*`, URI templates) replay from, since the topics a
    /// pattern matches are not known in advance, and the one the wildcard feed's gaps are filled
    /// from after a reconnect. A subscription with patterns and exact topics replays its exact
    /// topics from it too, so this bounds how far back any of its replays reach; one that
    /// resumes from before its oldest event is told it missed some.
    ///
    /// Every publish appends its event to it once, whatever its topics: one more stream append
    /// in the publish script, whether or not any process has pattern subscribers. It is
    /// trimmed in batches, once it is a 64th over this count or over
    /// [`pattern_history_bytes`](Self::pattern_history_bytes), so most publishes only append;
    /// the age limit applies as to topics, and it expires when nothing is published for the
    /// [idle expiry](Self::history_idle_expiry). It takes about as much Redis memory as a
    /// topic's history of the same size (see the README's worst case).
    ///
    /// With 0, publishes skip it, and pattern subscriptions are live only: one that asks to
    /// resume replays nothing, and is told it missed events when any were published since its
    /// start; after a reconnect, pattern subscribers are told so as well. Give every instance
    /// sharing a prefix the same setting: an instance with 0 leaves its events out of the
    /// global history the others replay from.
    pub fn pattern_history(mut self, events: usize) -> Self {
        self.pattern_history = events;
        self
    }

    /// The most bytes the global history keeps, counting frames and headers as for
    /// [`history_bytes_per_topic`](Self::history_bytes_per_topic) (default 10 MiB; 0: no byte
    /// limit).
    pub fn pattern_history_bytes(mut self, bytes: usize) -> Self {
        self.pattern_history_bytes = bytes;
        self
    }

    /// How many events a local subscriber may fall behind the live feed before it is ended as
    /// too slow (default 256): the length of each topic's in-process log. Nothing is queued per
    /// subscriber.
    pub fn subscriber_queue(mut self, events: usize) -> Self {
        self.subscriber_queue = events.max(1);
        self
    }

    /// How many history entries one Redis call reads when replaying to a resuming subscriber
    /// (default 256), shared evenly by the subscriber's topics (at least one each), and never
    /// more than 256 KiB of them: replays are read in pages, never all at once, so a replay
    /// holds about one page in memory.
    pub fn replay_page(mut self, entries: usize) -> Self {
        self.replay_page = entries.max(1);
        self
    }

    /// How many pub/sub messages may wait for this process's dispatcher (default 65,536). Past
    /// it, messages are dropped instead of queued without bound, and the dispatcher fills the
    /// gap from history, as after a reconnect ([`RedisBroker::gap_fills`] counts these).
    pub fn push_queue(mut self, messages: usize) -> Self {
        self.push_queue = messages.max(1);
        self
    }

    /// How long a publish's idempotency key is remembered (default 10 minutes): a retry within
    /// it returns the first id and publishes nothing.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }

    /// How long connecting to Redis, or one command, may take before it counts as failed
    /// (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Builds without waiting for Redis: [`build`](Self::build) then only fails on invalid
    /// settings, and the broker connects (and reconnects, with backoff) when it is first used.
    /// Until Redis answers, publishing and subscribing fail with
    /// [`BrokerError::Unavailable`](crate::BrokerError::Unavailable) (503 over HTTP). Without
    /// this, `build` fails at once when Redis is unreachable.
    pub fn connect_lazily(mut self) -> Self {
        self.connect_lazily = true;
        self
    }

    /// How often the pub/sub connection is PINGed, and how long the answer may take (default
    /// every 5 s, within 3 s). A connection that does not answer is silently dead (a dropped NAT
    /// entry, a half-open socket): it is replaced, resubscribed, and the missed events are filled
    /// in from history, so the failure is noticed within `interval + timeout`.
    pub fn health_check(mut self, interval: Duration, timeout: Duration) -> Self {
        self.health_check = HealthCheck {
            interval: interval.max(Duration::from_millis(10)),
            timeout,
        };
        self
    }

    /// How long this process's presence entries (say, Mercure's subscriptions list) outlive
    /// its last heartbeat (default 30 s; the heartbeat runs every third of it). A process that
    /// stops without removing its entries drops out of every list within this time.
    pub fn presence_expiry(mut self, expiry: Duration) -> Self {
        self.presence_expiry = expiry.max(Duration::from_millis(30));
        self
    }

    /// Connects the pub/sub connection and starts the task that owns it.
    ///
    /// # Errors
    ///
    /// [`RedisConnectError`] when the URL is invalid, the pool cannot be made, Redis cannot be
    /// reached, or it is older than 7.0.
    pub async fn build(self) -> Result<RedisBroker, RedisConnectError> {
        let info = self.url.as_str().into_connection_info().map_err(|e| {
            RedisConnectError::new(format!("invalid Redis URL {:?}", redacted(&self.url)), e)
        })?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(resp3);
        let client = redis::Client::open(info.clone())
            .map_err(|e| RedisConnectError::new("invalid Redis connection settings", e))?;
        let link = Link {
            client,
            timeout: self.connect_timeout,
            push_queue: self.push_queue,
        };
        let connection = if self.connect_lazily {
            link.connect_lazily()
                .map_err(|e| RedisConnectError::new("invalid Redis connection settings", e))?
        } else {
            link.connect().await.map_err(|e| {
                RedisConnectError::new(
                    format!("cannot connect to Redis at {}", redacted(&self.url)),
                    e,
                )
            })?
        };

        // The server's run id, learned on every new pooled connection: a restarted server is only
        // reached through new connections, so a publish always knows the run it executes in, and
        // the script needs no INFO call to notice a restart.
        let run_id = Arc::new(std::sync::Mutex::new(String::new()));
        let pool_info = match &self.publish_url {
            None => info,
            Some(url) => url.as_str().into_connection_info().map_err(|e| {
                RedisConnectError::new(format!("invalid Redis publish URL {:?}", redacted(url)), e)
            })?,
        };
        let pooled = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout));
        let manager = deadpool_redis::Manager::new_with_config(pool_info, pooled)
            .map_err(|e| RedisConnectError::new("invalid Redis connection settings", e))?;
        let learned = run_id.clone();
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(self.pool_size)
            .post_create(deadpool_redis::Hook::async_fn(move |connection, _| {
                let learned = learned.clone();
                Box::pin(async move {
                    learn_run_id(connection, &learned)
                        .await
                        .map_err(deadpool_redis::HookError::Backend)
                })
            }))
            .wait_timeout(Some(self.connect_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| RedisConnectError::new("cannot create the Redis pool", e))?;
        if !self.connect_lazily {
            check_version(&pool).await?;
        }

        let keys = Keys::new(&self.key_prefix);
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let retention = wire::Retention {
            max_age_ms: self.history_max_age.map_or(0, millis),
            expiry_ms: millis(
                self.history_max_age
                    .map_or(self.history_idle_expiry, |age| {
                        age.min(self.history_idle_expiry)
                    }),
            ),
        };
        let gap_fills = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Redis keeps the history; the engine only holds the live feed for local readers.
        let fanout = Fanout::builder()
            .history(0)
            .lag_window(self.subscriber_queue)
            .keep_idle_topics(false)
            .build();
        let dispatcher = Dispatcher::new(
            link,
            connection,
            command_receiver,
            Settings {
                keys: keys.clone(),
                health: self.health_check,
                retention,
                pattern_history: self.pattern_history > 0,
                fanout: fanout.clone(),
                gap_fills: gap_fills.clone(),
            },
        );
        tokio::spawn(dispatcher.run());
        Ok(RedisBroker {
            shared: Arc::new(Shared {
                keys,
                publish: Script::new(wire::PUBLISH),
                replay: Script::new(wire::REPLAY),
                budget_scan: Script::new(wire::BUDGET_SCAN),
                history_per_topic: self.history_per_topic,
                history_bytes_per_topic: self.history_bytes_per_topic,
                retention,
                pattern_history: self.pattern_history,
                pattern_history_bytes: self.pattern_history_bytes,
                idempotency_window_ms: u64::try_from(self.idempotency_window.as_millis())
                    .unwrap_or(u64::MAX),
                replay_page: self.replay_page,
                run_id,
                publishing: std::sync::Mutex::new(None),
                gap_fills,
                presence: presence::RedisPresence::new(
                    pool.clone(),
                    &self.key_prefix,
                    self.presence_expiry,
                ),
                pool,
                fanout,
                commands,
            }),
        })
    }
}

/// Refuses servers older than Redis 7.0, whose streams cannot record what was trimmed.
async fn check_version(pool: &deadpool_redis::Pool) -> Result<(), RedisConnectError> {
    let mut connection = pool
        .get()
        .await
        .map_err(|e| RedisConnectError::new("cannot connect to Redis for publishing", e))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .map_err(|e| RedisConnectError::new("cannot read the Redis version", e))?;
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(RedisConnectError::new(
            format!("Redis {version} is too old"),
            "RedisBroker needs Redis 7.0 or newer (streams that record what they trimmed)",
        ));
    }
    Ok(())
}

impl fmt::Debug for RedisBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBrokerBuilder")
            .field("url", &redacted(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("history_per_topic", &self.history_per_topic)
            .field("history_bytes_per_topic", &self.history_bytes_per_topic)
            .field("history_max_age", &self.history_max_age)
            .field("history_idle_expiry", &self.history_idle_expiry)
            .field("pattern_history", &self.pattern_history)
            .field("pattern_history_bytes", &self.pattern_history_bytes)
            .field("subscriber_queue", &self.subscriber_queue)
            .finish_non_exhaustive()
    }
}

/// `url` with the password (or a lone user-info part, which some clients read as one) replaced
/// by `***`, for messages and `Debug` output.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user_info = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user_info}@{host}{path}")
}

/// Why a [`RedisBroker`] could not be built.
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisConnectError {
    reason: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl RedisConnectError {
    fn new(
        reason: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            reason: reason.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for RedisConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.source)
    }
}

impl std::error::Error for RedisConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_messages() {
        for (url, shown) in [
            (
                "redis://user:s3cret@cache:6379/0",
                "redis://user:***@cache:6379/0",
            ),
            ("redis://:s3cret@cache", "redis://:***@cache"),
            ("rediss://s3cret@cache:6380", "rediss://***@cache:6380"),
            ("redis://user:p@ss@word@cache/1", "redis://user:***@cache/1"),
            ("redis://cache:6379/0?x=a@b", "redis://cache:6379/0?x=a@b"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
