//! [`NatsBrokerBuilder`]: the servers, the stream and its limits, and the timeouts of a
//! [`NatsBroker`], and [`NatsConnectError`] when it cannot be built.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::sync::oneshot;

use super::feed::Feed;
use super::subject::{self, Subjects};
use super::wire::Epoch;
use super::{NatsBroker, Shared};
use crate::broker::Fanout;

/// Configures and connects a [`NatsBroker`]; made by [`NatsBroker::builder`].
///
/// The stream is created with these settings when it does not exist yet; an existing stream
/// keeps its own (change them with the `nats` CLI).
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub struct NatsBrokerBuilder {
    urls: Vec<String>,
    token: Option<String>,
    user_and_password: Option<(String, String)>,
    credentials: Option<Credentials>,
    nkey: Option<String>,
    stream_name: String,
    subject_prefix: String,
    replicas: usize,
    memory_storage: bool,
    history_per_topic: usize,
    history_max_age: Option<Duration>,
    history_max_bytes: Option<u64>,
    duplicate_window: Duration,
    timeout: Duration,
    health_check: Duration,
    subscriber_queue: usize,
    replay_page: usize,
    presence_expiry: Duration,
}

impl NatsBrokerBuilder {
    pub(super) fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            token: None,
            user_and_password: None,
            credentials: None,
            nkey: None,
            stream_name: "SSE".to_owned(),
            subject_prefix: "sse".to_owned(),
            replicas: 1,
            memory_storage: false,
            history_per_topic: 1_000,
            history_max_age: None,
            history_max_bytes: None,
            duplicate_window: Duration::from_secs(2 * 60),
            timeout: Duration::from_secs(5),
            health_check: Duration::from_secs(5),
            subscriber_queue: 256,
            replay_page: 256,
            presence_expiry: Duration::from_secs(30),
        }
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticates with a user name and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.user_and_password = Some((user.into(), password.into()));
        self
    }

    /// Authenticates with the user JWT and NKey seed of a `.creds` file (as made by `nsc` or
    /// Synadia Cloud), read when the broker is built.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials = Some(Credentials::File(path.into()));
        self
    }

    /// Authenticates with the contents of a `.creds` file (say, from a secret store).
    pub fn credentials(mut self, contents: impl Into<String>) -> Self {
        self.credentials = Some(Credentials::Contents(contents.into()));
        self
    }

    /// Authenticates with an NKey seed (`SU…`), the server knowing the user's public key.
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.nkey = Some(seed.into());
        self
    }

    /// The JetStream stream that holds the events (default `SSE`; no spaces, `.`, `*`, `>`).
    pub fn stream_name(mut self, name: impl Into<String>) -> Self {
        self.stream_name = name.into();
        self
    }

    /// The prefix of every subject of the stream (default `sse`), so several apps share one
    /// NATS account.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// How many servers keep a copy of the stream (default 1; 3 or 5 in a cluster).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Keeps the stream in memory instead of files: faster, but a restarted server has lost
    /// it (the broker creates it again, with a new epoch, and subscribers are told to resync).
    pub fn memory_storage(mut self) -> Self {
        self.memory_storage = true;
        self
    }

    /// How many events each topic's history keeps (default 1,000: JetStream's
    /// `max_msgs_per_subject`). Events on several topics share one subject, and so one history
    /// of this length. 0 replays nothing (the stream still keeps the newest event per topic).
    pub fn history_per_topic(mut self, events: usize) -> Self {
        self.history_per_topic = events;
        self
    }

    /// Drops events older than `age` (JetStream's `max_age`; default: no age limit).
    pub fn history_max_age(mut self, age: Duration) -> Self {
        self.history_max_age = Some(age.max(Duration::from_millis(1)));
        self
    }

    /// The most bytes the whole stream keeps, oldest events dropped first (JetStream's
    /// `max_bytes`; default: no byte limit).
    pub fn history_max_bytes(mut self, bytes: u64) -> Self {
        self.history_max_bytes = Some(bytes.max(1));
        self
    }

    /// How long a publish's idempotency key is remembered (default 2 minutes: the stream's
    /// duplicate window): a retry within it returns the first id and stores nothing. Longer
    /// windows cost the server memory for every key. JetStream allows no window longer than
    /// [`history_max_age`](Self::history_max_age): with an age limit, the window is at most it.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window.max(Duration::from_millis(1));
        self
    }

    /// How long connecting, or one JetStream request, may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often the live feed checks that the stream is still the one it reads (default 5 s):
    /// a stream recreated meanwhile (a server with memory storage restarted) is noticed within
    /// this time.
    pub fn health_check(mut self, interval: Duration) -> Self {
        self.health_check = interval.max(Duration::from_millis(10));
        self
    }

    /// How many events a local subscriber may fall behind the live feed before it is ended as
    /// too slow (default 256).
    pub fn subscriber_queue(mut self, events: usize) -> Self {
        self.subscriber_queue = events.max(1);
        self
    }

    /// How many stream messages one replay page reads (default 256).
    pub fn replay_page(mut self, messages: usize) -> Self {
        self.replay_page = messages.max(1);
        self
    }

    /// How long this process's presence entries (say, Mercure's subscriptions list) outlive
    /// its last heartbeat when it stops without removing them (default 30 s). They live in two
    /// key-value buckets, `<stream>_presence` and `<stream>_presence_live`, made on first use.
    pub fn presence_expiry(mut self, expiry: Duration) -> Self {
        self.presence_expiry = expiry.max(Duration::from_millis(30));
        self
    }

    /// Connects, creates the stream if it does not exist, and starts the live feed.
    ///
    /// # Errors
    ///
    /// [`NatsConnectError`] when a setting is invalid, the servers cannot be reached, or
    /// JetStream refuses the stream (not enabled, or an existing stream with other subjects).
    pub async fn build(self) -> Result<NatsBroker, NatsConnectError> {
        subject::check_stream_name(&self.stream_name)
            .map_err(|e| NatsConnectError::new("invalid stream name", e))?;
        subject::check_prefix(&self.subject_prefix)
            .map_err(|e| NatsConnectError::new("invalid subject prefix", e))?;
        let servers = self
            .urls
            .iter()
            .map(|url| {
                url.parse::<async_nats::ServerAddr>().map_err(|e| {
                    NatsConnectError::new(format!("invalid NATS server URL {url:?}"), e)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(NatsConnectError::new(
                "no NATS server",
                "give at least one URL, such as nats://127.0.0.1:4222",
            ));
        }
        let credentials = match &self.credentials {
            // A small file, read once at start-up.
            Some(Credentials::File(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                NatsConnectError::new(format!("cannot read NATS credentials {path:?}"), e)
            })?),
            Some(Credentials::Contents(contents)) => Some(contents.clone()),
            None => None,
        };
        // Counts (re)connections, so a publish acknowledged over a new connection checks which
        // stream it landed in (the server may have restarted without the stream).
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let client = self
            .options(credentials.as_deref(), "tower-sse-pubsub")?
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    counted.fetch_add(1, Ordering::AcqRel);
                }
                std::future::ready(())
            })
            .connect(servers.clone())
            .await
            .map_err(|e| NatsConnectError::new("cannot connect to NATS", e))?;
        // The live feed reads on a connection of its own: a message the client cannot parse
        // (another program's, on the prefix) breaks the connection it arrives on, and must not
        // break publishes and replays with it.
        // Each (re)connection of the feed's: it checks the stream anew (a restarted server may
        // have lost it, and another instance made it again meanwhile).
        let (connected, feed_connected) = tokio::sync::watch::channel(0_u64);
        let feed_client = self
            .options(credentials.as_deref(), "tower-sse-pubsub feed")?
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    connected.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .connect(servers)
            .await
            .map_err(|e| NatsConnectError::new("cannot connect to NATS", e))?;
        // Advisories about the stream, on the publishing connection: one that arrived before a
        // publish's acknowledgement is seen when the acknowledgement is.
        let advisories = client
            .subscribe(subject::advisories(&self.stream_name))
            .await
            .ok();
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(self.timeout)
            .build(client);
        let subjects = Subjects::new(&self.subject_prefix);
        let config = stream::Config {
            name: self.stream_name.clone(),
            subjects: vec![subjects.all()],
            max_messages_per_subject: i64::try_from(self.history_per_topic.max(1))
                .unwrap_or(i64::MAX),
            max_age: self.history_max_age.unwrap_or_default(),
            max_bytes: self
                .history_max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            storage: if self.memory_storage {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            num_replicas: self.replicas,
            // Every stored message, republished at once: the live feed reads those, so a
            // per-topic limit cannot drop an event before the feed has seen it.
            republish: Some(subjects.republish()),
            // JetStream refuses a duplicate window longer than the age limit.
            duplicate_window: self
                .history_max_age
                .map_or(self.duplicate_window, |age| self.duplicate_window.min(age)),
            ..stream::Config::default()
        };
        // Subscribed to the republished messages before the stream's end is read: the feed
        // starts at that end, and every message stored after it arrives on this subscription.
        let live = feed_client
            .subscribe(subjects.republished())
            .await
            .map_err(|e| NatsConnectError::new("cannot subscribe to the NATS live feed", e))?;
        let stream = jetstream
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| {
                NatsConnectError::new(
                    format!(
                        "cannot create the JetStream stream {:?} (is JetStream enabled?)",
                        self.stream_name
                    ),
                    e,
                )
            })?;
        let info = stream.cached_info();
        let current = Epoch::of(info);
        let epoch = Arc::new(Mutex::new(current.clone()));
        let current_for_acks = current.clone();
        // The stream keeps the history; the engine only holds the live feed for local readers.
        let fanout = Fanout::builder()
            .history(0)
            .lag_window(self.subscriber_queue)
            .keep_idle_topics(false)
            .build();
        let gap_fills = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let feed = Feed {
            jetstream: jetstream::ContextBuilder::new()
                .timeout(self.timeout)
                .build(feed_client),
            config: config.clone(),
            subjects: subjects.clone(),
            fanout: fanout.clone(),
            current,
            epoch: epoch.clone(),
            last: info.state.last_sequence,
            health_check: self.health_check,
            gap_fills: gap_fills.clone(),
            stop: stopped,
            live: Some(live),
            live_through: 1,
            connected: feed_connected,
        };
        tokio::spawn(feed.run());
        let presence = super::presence::NatsPresence::new(
            jetstream.clone(),
            &config.name,
            self.memory_storage,
            self.replicas,
            self.presence_expiry,
        );
        Ok(NatsBroker {
            shared: Arc::new(Shared {
                jetstream,
                config,
                subjects,
                epoch,
                history_per_topic: self.history_per_topic,
                replay_page: self.replay_page,
                claim_stale_after: self.timeout.saturating_mul(4),
                connections,
                verified: AtomicU64::new(0),
                highest_acknowledged: Mutex::new((current_for_acks, 0)),
                advisories: Mutex::new(advisories),
                advised: AtomicU64::new(0),
                verified_advice: AtomicU64::new(0),
                verifying: tokio::sync::Mutex::new(()),
                gap_fills,
                fanout,
                presence,
                _stop: stop,
            }),
        })
    }
}

impl NatsBrokerBuilder {
    /// The connection options every connection of the broker shares.
    fn options(
        &self,
        credentials: Option<&str>,
        name: &str,
    ) -> Result<async_nats::ConnectOptions, NatsConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout));
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some((user, password)) = &self.user_and_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.clone());
        }
        if let Some(credentials) = credentials {
            options = options
                .credentials(credentials)
                .map_err(|e| NatsConnectError::new("invalid NATS credentials", e))?;
        }
        Ok(options)
    }
}

/// Where a [`NatsBrokerBuilder`]'s `.creds` come from.
enum Credentials {
    File(PathBuf),
    Contents(String),
}

impl fmt::Debug for NatsBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBrokerBuilder")
            .field("urls", &self.urls)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field(
                "user",
                &self.user_and_password.as_ref().map(|(user, _)| user),
            )
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("nkey", &self.nkey.as_ref().map(|_| "***"))
            .field("stream_name", &self.stream_name)
            .field("subject_prefix", &self.subject_prefix)
            .field("replicas", &self.replicas)
            .field("history_per_topic", &self.history_per_topic)
            .field("history_max_age", &self.history_max_age)
            .field("history_max_bytes", &self.history_max_bytes)
            .field("duplicate_window", &self.duplicate_window)
            .finish_non_exhaustive()
    }
}

/// Why a [`NatsBroker`] could not be built.
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub struct NatsConnectError {
    reason: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl NatsConnectError {
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

impl fmt::Display for NatsConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.source)
    }
}

impl std::error::Error for NatsConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
