//! The [`Hub`]: configuration, the broker, and the handles the app uses
//! ([`layer`](Hub::layer), [`publisher`](Hub::publisher), [`shutdown`](Hub::shutdown)).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::auth::Authorizer;
use crate::broker::{Broker, MemoryBroker, ReplayBudget};
use crate::endpoint::{Config, Endpoints};
use crate::layer::SsePubSubLayer;
use crate::publisher::Publisher;

/// Default path of the subscribe endpoint.
pub const DEFAULT_EVENTS_PATH: &str = "/events";
/// Default path of the publish endpoint.
pub const DEFAULT_PUBLISH_PATH: &str = "/publish";

/// The heart of the crate: owns the broker and the configuration, and hands out the tower layer,
/// publishers, and shutdown.
///
/// A `Hub` is cheap to clone; all clones share one broker and one shutdown signal.
///
/// ```
/// use tower_sse_pubsub::Hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::builder().allow_anonymous_publish().build()?;
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "home" }))
///     .layer(hub.layer());
///
/// let id = hub.publisher().publish_text("chat", "hello").await?;
/// println!("published {id}");
///
/// // On the way out: end every open stream so graceful shutdown completes.
/// hub.shutdown();
/// # drop(app);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Endpoints>,
}

impl Hub {
    /// A hub with every default: an in-memory broker, `GET /events`, and publishing over HTTP
    /// refused (app code can still publish through [`Hub::publisher`]).
    pub fn new() -> Self {
        Self::from_parts(
            Arc::new(MemoryBroker::new()),
            HubBuilder::new().config,
            None,
        )
    }

    /// A builder for every setting.
    pub fn builder() -> HubBuilder {
        HubBuilder::new()
    }

    fn from_parts(
        broker: Arc<dyn Broker>,
        config: Config,
        authorizer: Option<Arc<dyn Authorizer>>,
    ) -> Self {
        Self {
            shared: Arc::new(Endpoints::new(broker, config, authorizer)),
        }
    }

    /// The tower layer that mounts the subscribe and publish endpoints in front of a service.
    pub fn layer(&self) -> SsePubSubLayer {
        SsePubSubLayer::new(self.shared.clone())
    }

    /// The hub's pub/sub as the gRPC service `pubsub.v1.PubSub` (feature `grpc`), with the same
    /// authorizer, limits and counters as the HTTP endpoints; see the [`grpc`](crate::grpc)
    /// module.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    ///
    /// let hub = Hub::new();
    /// let router = tonic::transport::Server::builder()
    ///     .accept_http1(true)
    ///     .layer(hub.layer())
    ///     .add_service(hub.grpc_service().into_server());
    /// # drop(router);
    /// ```
    #[cfg(feature = "grpc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
    pub fn grpc_service(&self) -> crate::grpc::PubSubService {
        crate::grpc::PubSubService::new(self)
    }

    /// The state the hub shares with its endpoints.
    #[cfg(feature = "grpc")]
    pub(crate) fn endpoints(&self) -> &Arc<Endpoints> {
        &self.shared
    }

    /// A cloneable handle for publishing from app code: handlers, gRPC methods, jobs.
    pub fn publisher(&self) -> Publisher {
        Publisher::counted(self.shared.broker.clone(), self.shared.counters.clone())
    }

    /// Answers `request` with an event stream of `topics`, chosen by the app: the topics of the
    /// logged-in user's session, say, on a route of the app's own such as `/todos/live`.
    ///
    /// Everything else is as for the hub's own endpoint: the subscriber limits, the resume
    /// point (`Last-Event-ID`, or a `lastEventID` query parameter) with the same replay and
    /// `resync` notice, keep-alives, shutdown, the stats. The authorizer is not asked, since the
    /// app chose the topics; the request's query is not read for topics. A refusal (the hub is
    /// full, say) is answered as the endpoint would answer it.
    ///
    /// ```
    /// use axum::{Router, extract::State, http::request::Parts, response::Response, routing::get};
    /// use tower_sse_pubsub::{EventsBody, Hub, Topic};
    ///
    /// /// What the app's login middleware put in the request.
    /// #[derive(Clone)]
    /// struct Session {
    ///     user: String,
    /// }
    ///
    /// async fn live(State(hub): State<Hub>, parts: Parts) -> Response<EventsBody> {
    ///     let user = parts.extensions.get::<Session>().map(|s| s.user.clone());
    ///     let topics = user.and_then(|user| Topic::new(format!("todos/{user}")).ok());
    ///     hub.stream_topics(&parts, topics).await
    /// }
    ///
    /// let hub = Hub::new();
    /// let app: Router = Router::new().route("/todos/live", get(live)).with_state(hub.clone());
    /// # drop(app);
    /// ```
    pub async fn stream_topics(
        &self,
        request: &http::request::Parts,
        topics: impl IntoIterator<Item = crate::Topic>,
    ) -> http::Response<crate::EventsBody> {
        let mut chosen: Vec<crate::Topic> = Vec::new();
        for topic in topics {
            if !chosen.contains(&topic) {
                chosen.push(topic);
            }
        }
        let response =
            crate::endpoint::subscribe::stream_topics(self.shared.clone(), request, chosen).await;
        response.map(crate::EventsBody::new)
    }

    /// A subscription to live events of `topics`, for Rust code in the app (a background job,
    /// a gRPC stream, a test): the same events the hub's streams carry, in id order.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use tower_sse_pubsub::{Hub, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::new();
    /// let mut orders = hub.subscribe([Topic::new("orders")?]).await?;
    /// hub.publisher().publish_json("orders", &serde_json::json!({"order": 42})).await?;
    /// let frame = orders.next().await.and_then(|delivery| delivery.into_event());
    /// assert_eq!(frame.map(|f| f.fields().data).as_deref(), Some(r#"{"order":42}"#));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`BrokerError`](crate::BrokerError) when `topics` is empty or the broker cannot
    /// subscribe.
    pub async fn subscribe(
        &self,
        topics: impl IntoIterator<Item = crate::Topic>,
    ) -> Result<crate::Subscription, crate::BrokerError> {
        self.subscribe_with(crate::SubscribeRequest::new(topics))
            .await
    }

    /// A subscription as `request` describes it (a resume point, a grant for private events, a
    /// deadline), with the hub's replay budget ([`HubBuilder::max_replay`]) unless the request
    /// sets its own.
    ///
    /// # Errors
    ///
    /// As [`Hub::subscribe`].
    pub async fn subscribe_with(
        &self,
        request: crate::SubscribeRequest,
    ) -> Result<crate::Subscription, crate::BrokerError> {
        let request = match request.budget() {
            Some(_) => request,
            None => request.replay_budget(self.shared.config.replay_budget),
        };
        self.shared.broker.subscribe(&request).await
    }

    /// Open streams per topic, most first; empty unless the hub was built with
    /// [`HubBuilder::count_streams_per_topic`]. A stream of several topics counts in each.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    ///
    /// let hub = Hub::builder().count_streams_per_topic().build()?;
    /// assert!(hub.open_streams_per_topic().is_empty());
    /// # Ok::<(), tower_sse_pubsub::BuildError>(())
    /// ```
    pub fn open_streams_per_topic(&self) -> Vec<(crate::Topic, usize)> {
        self.shared.open_streams_per_topic().unwrap_or_default()
    }

    /// What this hub has done since it was built: streams opened and closed (and why),
    /// refusals, resumes, events published, frames and bytes delivered, resyncs.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::new();
    /// hub.publisher().publish_text("news", "hello").await?;
    /// assert_eq!(hub.stats().events_published, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> crate::HubStats {
        self.shared.stats()
    }

    /// Writes the hub's stats to the `metrics` facade now (feature `metrics`; see
    /// [`HubStats::export`](crate::HubStats::export) for the names). Once it has served its
    /// first stream, a hub also does it every second; call this before rendering a scrape so it
    /// is up to the moment.
    ///
    /// With [`HubBuilder::count_streams_per_topic`], it also sets the gauge
    /// `sse_topic_open_streams{topic="…"}` for every topic with open streams, and sets a topic's
    /// gauge to 0 once when its last stream closes. Every such topic is a label value, so count
    /// per topic only where topics are few (rooms, feeds), not one per user; to drop zeroed
    /// series, give the Prometheus exporter an idle timeout for gauges
    /// (`PrometheusBuilder::idle_timeout(MetricKindMask::GAUGE, ..)`, longer than a second).
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn export_metrics(&self) {
        self.shared.export_metrics();
    }

    /// The broker this hub uses.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.shared.broker
    }

    /// How many event streams are open right now (gRPC `Subscribe` streams included).
    pub fn subscriber_count(&self) -> usize {
        self.shared.subscribers.load(Ordering::Relaxed)
    }

    /// Ends every open event stream (each gets a final frame with a jittered `retry:` so clients
    /// do not all reconnect at once) and refuses new ones with 503. Call it when the server starts
    /// its graceful shutdown, so open streams do not hold it up.
    ///
    /// The shutdown starts at once; the future it returns completes when every stream has
    /// ended, which a client that stopped reading can put off for ever (serve through
    /// [`ConnectionDeadlines`](crate::ConnectionDeadlines), or wait with
    /// [`Hub::shutdown_within`]). Dropping the future does not undo anything.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// hub.shutdown().await; // no stream was open
    /// assert!(hub.is_shut_down());
    /// # }
    /// ```
    pub fn shutdown(&self) -> StreamsEnded {
        self.shared.shut_down();
        let shared = self.shared.clone();
        StreamsEnded(Box::pin(async move { shared.streams_ended().await }))
    }

    /// Shuts down as [`Hub::shutdown`] does, and waits at most `deadline` for the streams to
    /// end.
    ///
    /// # Errors
    ///
    /// [`ShutdownTimedOut`](crate::ShutdownTimedOut), with how many streams were still open,
    /// when the deadline passed first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse_pubsub::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_sse_pubsub::ShutdownTimedOut> {
    /// let hub = Hub::new();
    /// hub.shutdown_within(Duration::from_secs(10)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown_within(&self, deadline: Duration) -> Result<(), crate::ShutdownTimedOut> {
        match tokio::time::timeout(deadline, self.shutdown()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(crate::ShutdownTimedOut {
                open: self.subscriber_count(),
                deadline,
            }),
        }
    }

    /// Whether [`Hub::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.is_shut_down()
    }

    /// Completes once [`Hub::shutdown`] has been called (at once if it already was), so
    /// streams of other kinds (a gRPC subscribe, a WebSocket) can end with the SSE streams.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new();
    /// let stopped = hub.shutdown_requested();
    /// hub.shutdown();
    /// stopped.await;
    /// # }
    /// ```
    pub fn shutdown_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut shutdown = self.shared.shutdown_receiver();
        async move {
            // The sender lives as long as the hub's shared state, which this future does not
            // keep alive; if it is gone, no shutdown can come any more.
            if shutdown.wait_for(|down| *down).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.shared.config)
            .field("authorizer", &self.shared.authorizer.is_some())
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Hub`]. Every setting has a default; see [`Hub::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::{Hub, MemoryBroker};
///
/// let hub = Hub::builder()
///     .broker(MemoryBroker::builder().history_per_topic(500).build())
///     .events_path("/sse")
///     .publish_path("/sse/publish")
///     .keep_alive(Duration::from_secs(20))
///     .max_topics_per_request(8)
///     .max_body_bytes(16 * 1024)
///     .max_subscribers(20_000)
///     .allow_anonymous_publish()
///     .build()?;
/// # drop(hub);
/// # Ok::<(), tower_sse_pubsub::BuildError>(())
/// ```
#[must_use = "call .build() to get the hub"]
pub struct HubBuilder {
    broker: Option<Arc<dyn Broker>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    config: Config,
}

impl HubBuilder {
    fn new() -> Self {
        Self {
            broker: None,
            authorizer: None,
            config: Config {
                events_path: DEFAULT_EVENTS_PATH.to_owned(),
                publish_path: DEFAULT_PUBLISH_PATH.to_owned(),
                keep_alive: Some(Duration::from_secs(15)),
                max_topics: 32,
                max_body_bytes: 64 * 1024,
                max_subscribers: crate::endpoint::limits::default_max_subscribers()
                    .unwrap_or(FALLBACK_MAX_SUBSCRIBERS),
                anonymous_publish: false,
                shutdown_retry: Duration::from_secs(3),
                write_delay: None,
                body_timeout: Duration::from_secs(10),
                replay_budget: ReplayBudget::new(DEFAULT_REPLAY_EVENTS, DEFAULT_REPLAY_BYTES),
                max_streams_per_client: None,
                client_header: None,
                max_replays: DEFAULT_MAX_REPLAYS,
                max_publish_cost: DEFAULT_MAX_PUBLISH_COST,
                per_topic: false,
                #[cfg(feature = "mercure")]
                mercure: None,
            },
        }
    }

    /// The broker to use (default: a [`MemoryBroker`] with default limits).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// The broker to use, already shared (for example with another hub in the same process).
    pub fn shared_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The path of the subscribe endpoint, `GET` (default `/events`).
    pub fn events_path(mut self, path: impl Into<String>) -> Self {
        self.config.events_path = path.into();
        self
    }

    /// The path of the publish endpoint, `POST` (default `/publish`). It may equal the events
    /// path; then `GET` subscribes and `POST` publishes there.
    pub fn publish_path(mut self, path: impl Into<String>) -> Self {
        self.config.publish_path = path.into();
        self
    }

    /// How long a stream may stay silent before a keep-alive comment is sent (default 15 s,
    /// below the 60 s read timeout of common proxies; at least 1 s). A stream that carries
    /// events often enough sends no keep-alives; no stream is silent for longer than this.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.config.keep_alive = Some(interval);
        self
    }

    /// Sends no keep-alive comments.
    pub fn without_keep_alive(mut self) -> Self {
        self.config.keep_alive = None;
        self
    }

    /// The most topics one subscribe or publish request may name (default 32).
    pub fn max_topics_per_request(mut self, topics: usize) -> Self {
        self.config.max_topics = topics;
        self
    }

    /// The largest publish body accepted, in bytes (default 64 KiB); larger ones get 413. With
    /// feature `grpc`, also the largest gRPC request message (`OUT_OF_RANGE`).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_body_bytes = bytes;
        self
    }

    /// The most event streams open at once through this hub; more get 503 (or, for an
    /// EventSource, a stream that tells it to retry later). The default follows the process's
    /// open-file limit, read when the builder is made: the soft limit less a twentieth (at least
    /// 64) for the listener, Redis and the app's own connections, so a full hub still accepts
    /// connections and answers (100,000 where the limit cannot be read).
    pub fn max_subscribers(mut self, subscribers: usize) -> Self {
        self.config.max_subscribers = subscribers;
        self
    }

    /// Decides who may publish and subscribe over HTTP, and over gRPC with feature `grpc`
    /// (default: anyone may subscribe, nobody may publish). See [`Authorizer`].
    pub fn authorizer(mut self, authorizer: impl Authorizer) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// Lets anyone publish over HTTP (and gRPC) when no authorizer is set. Meant for demos and
    /// trusted networks: without it (and without an authorizer) the publish endpoint answers 403,
    /// and the gRPC `Publish` `PERMISSION_DENIED`.
    pub fn allow_anonymous_publish(mut self) -> Self {
        self.config.anonymous_publish = true;
        self
    }

    /// The reconnection delay sent to clients when the hub shuts down their stream; each client
    /// gets a random value between half and one and a half times this (default 3 s, at most
    /// 1 hour).
    pub fn shutdown_retry(mut self, retry: Duration) -> Self {
        self.config.shutdown_retry = retry;
        self
    }

    /// The most one resuming request replays: `events` events and `bytes` bytes of encoded
    /// frames (default 1,000 and 2 MiB, sized for a public endpoint: one request cannot make the
    /// server read and send megabytes). Past it, the client gets the `resync` notice and the
    /// newest events that fit, on every broker (the oldest are the ones left out), so
    /// it reloads its state instead of silently missing events.
    pub fn max_replay(mut self, events: usize, bytes: usize) -> Self {
        self.config.replay_budget = ReplayBudget::new(events, bytes);
        self
    }

    /// The most streams in this process that may be sending a replay at once (default 128).
    ///
    /// A stream replays from the moment it opens with a resume point until it has caught up
    /// with live events; each replay costs broker reads (on Redis, paged reads of its history)
    /// and up to [`max_replay`](Self::max_replay) bytes of writes. When every replay slot is
    /// taken, a resuming client gets 503 with `Retry-After` (an EventSource gets a stream telling
    /// it to reconnect after the [`shutdown_retry`](Self::shutdown_retry) delay, and resumes
    /// then with the same id, so nothing is lost). Clients without a resume point are not
    /// counted: they start live.
    pub fn max_concurrent_replays(mut self, replays: usize) -> Self {
        self.config.max_replays = replays;
        self
    }

    /// The most one publish may cost, counted as the event's encoded size (its `data:` lines and
    /// other fields) times the number of topics it goes to (default 1 MiB: a 64 KiB event to 16
    /// topics, or 32 KiB to all 32 a request may name). Each topic keeps the event in its
    /// history (on Redis, a copy per topic), so this bounds what one request can add to
    /// retained history; a costlier publish gets 413 (`RESOURCE_EXHAUSTED` over gRPC). Applies
    /// to the HTTP endpoint and the gRPC service; the app's own [`Publisher`](crate::Publisher)
    /// is trusted.
    pub fn max_publish_cost(mut self, bytes: usize) -> Self {
        self.config.max_publish_cost = bytes;
        self
    }

    /// Keeps a count of open streams per topic, read with [`Hub::open_streams_per_topic`] (off
    /// by default: it costs a lock and a map update when a stream opens or closes, and memory
    /// per topic with open streams).
    pub fn count_streams_per_topic(mut self) -> Self {
        self.config.per_topic = true;
        self
    }

    /// The most event streams one client address may hold open at once; more get 429 with
    /// `Retry-After` (an EventSource gets a stream telling it to retry later, since it never
    /// reconnects after a non-200 status; a gRPC `Subscribe` gets `RESOURCE_EXHAUSTED`). Off by
    /// default: the address is only known when the server provides it (axum's
    /// `into_make_service_with_connect_info` with feature `axum`, tonic's server with feature
    /// `grpc`, or a `SocketAddr` request extension), and many users can share one address behind
    /// a NAT.
    pub fn max_streams_per_client(mut self, streams: usize) -> Self {
        self.config.max_streams_per_client = Some(streams);
        self
    }

    /// Reads the client's address from this header (the last address in it, which your proxy
    /// added) instead of the connection, for a hub behind a reverse proxy that sets it, e.g.
    /// `x-forwarded-for`. Only set it when every request passes through that proxy: a client
    /// that reaches the hub directly can put any address in it.
    pub fn trusted_client_header(mut self, header: http::HeaderName) -> Self {
        self.config.client_header = Some(header);
        self
    }

    /// How long a publish request's body may take to arrive (default 10 s); a slower one gets
    /// 408, so a client trickling a body cannot hold a request open.
    pub fn publish_body_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_timeout = timeout;
        self
    }

    /// Holds frames back for up to `delay` before writing them (default: none; at most 1 s).
    ///
    /// A parked stream that gets a frame is not woken at once: the hub wakes every such stream
    /// together, `delay` after the first of them got its frame, and each writes everything that
    /// arrived meanwhile in one chunk. Where events come closer together than `delay`, that is
    /// fewer wakes and fewer writes per event, for at most `delay` more latency. Where they come
    /// further apart, it costs nothing but the latency. One timer serves the whole hub. It
    /// applies to the SSE streams (and the Mercure endpoint's); the gRPC service sends each
    /// event as it comes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse_pubsub::Hub;
    ///
    /// let hub = Hub::builder()
    ///     .write_delay(Duration::from_millis(10))
    ///     .build()?;
    /// # Ok::<(), tower_sse_pubsub::BuildError>(())
    /// ```
    pub fn write_delay(mut self, delay: Duration) -> Self {
        self.config.write_delay = (!delay.is_zero()).then_some(delay);
        self
    }

    /// Mounts a Mercure hub endpoint (`/.well-known/mercure` by default) in the hub's layer,
    /// sharing its broker, limits and counters; see [`mercure`](crate::mercure).
    ///
    /// The hub's own `/events` and `/publish` stay, and when the hub has no
    /// [`authorizer`](Self::authorizer) of its own they check the same tokens, so they are no
    /// way around the Mercure endpoint's rules (a subscriber without a token, say, when
    /// anonymous subscribers are not allowed).
    #[cfg(feature = "mercure")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mercure")))]
    pub fn mercure(mut self, hub: crate::mercure::MercureHub) -> Self {
        self.config.mercure = Some(Arc::new(hub));
        self
    }

    /// Checks the settings and builds the hub.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when a path does not start with `/`, or a limit is zero.
    pub fn build(self) -> Result<Hub, BuildError> {
        let config = self.config;
        #[cfg(feature = "mercure")]
        let mercure_path = config.mercure.as_ref().map(|m| &m.path);
        #[cfg(not(feature = "mercure"))]
        let mercure_path: Option<&String> = None;
        for path in [&config.events_path, &config.publish_path]
            .into_iter()
            .chain(mercure_path)
        {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return Err(BuildError::InvalidPath(path.clone()));
            }
        }
        for (name, value) in [
            ("max_topics_per_request", config.max_topics),
            ("max_body_bytes", config.max_body_bytes),
            ("max_subscribers", config.max_subscribers),
            ("max_concurrent_replays", config.max_replays),
            ("max_publish_cost", config.max_publish_cost),
            (
                "max_streams_per_client",
                config.max_streams_per_client.unwrap_or(1),
            ),
        ] {
            if value == 0 {
                return Err(BuildError::ZeroLimit(name));
            }
        }
        if let Some(interval) = config.keep_alive
            && interval < MIN_KEEP_ALIVE
        {
            return Err(BuildError::OutOfRange {
                setting: "keep_alive",
                expected: "at least 1 s (or without_keep_alive())",
                got: interval,
            });
        }
        if let Some(delay) = config.write_delay
            && delay > MAX_WRITE_DELAY
        {
            return Err(BuildError::OutOfRange {
                setting: "write_delay",
                expected: "at most 1 s",
                got: delay,
            });
        }
        if config.shutdown_retry > MAX_SHUTDOWN_RETRY {
            return Err(BuildError::OutOfRange {
                setting: "shutdown_retry",
                expected: "at most 1 hour",
                got: config.shutdown_retry,
            });
        }
        let broker = self.broker.unwrap_or_else(|| Arc::new(MemoryBroker::new()));
        #[cfg(feature = "mercure")]
        let authorizer = self.authorizer.or_else(|| {
            let mercure = config.mercure.as_ref()?;
            Some(Arc::new(mercure.authorizer.clone()) as Arc<dyn Authorizer>)
        });
        #[cfg(not(feature = "mercure"))]
        let authorizer = self.authorizer;
        Ok(Hub::from_parts(broker, config, authorizer))
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .field("authorizer", &self.authorizer.is_some())
            .finish_non_exhaustive()
    }
}

/// The shortest keep-alive interval accepted.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// The most events one resuming request replays by default.
const DEFAULT_REPLAY_EVENTS: usize = 1_000;
/// The most bytes of events one resuming request replays by default.
const DEFAULT_REPLAY_BYTES: usize = 2 * 1024 * 1024;
/// The most streams replaying at once by default.
const DEFAULT_MAX_REPLAYS: usize = 128;
/// The most a publish may cost by default (data size times topics).
const DEFAULT_MAX_PUBLISH_COST: usize = 1024 * 1024;
/// The subscriber limit where the open-file limit cannot be read.
const FALLBACK_MAX_SUBSCRIBERS: usize = 100_000;
/// The longest write delay accepted.
const MAX_WRITE_DELAY: Duration = Duration::from_secs(1);
/// The longest shutdown retry accepted.
const MAX_SHUTDOWN_RETRY: Duration = Duration::from_secs(60 * 60);

/// Completes when every event stream of a hub has ended, after [`Hub::shutdown`]. The
/// shutdown itself has already begun; awaiting this is optional.
pub struct StreamsEnded(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

impl std::future::Future for StreamsEnded {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for StreamsEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamsEnded").finish_non_exhaustive()
    }
}

/// The event streams had not all ended when [`Hub::shutdown_within`]'s deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownTimedOut {
    /// Streams still open at the deadline.
    pub open: usize,
    /// The deadline.
    pub deadline: Duration,
}

impl fmt::Display for ShutdownTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} event streams were still open {:?} after shutdown (clients that stopped reading; \
             serve through ConnectionDeadlines to cut them)",
            self.open, self.deadline
        )
    }
}

impl std::error::Error for ShutdownTimedOut {}

/// A hub setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// An endpoint path that does not start with `/` or has a query or fragment.
    InvalidPath(String),
    /// A limit set to zero, which would refuse every request; names the setting.
    ZeroLimit(&'static str),
    /// A duration outside the range that works.
    OutOfRange {
        /// The setting.
        setting: &'static str,
        /// The range it must be in.
        expected: &'static str,
        /// What it was set to.
        got: Duration,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPath(path) => write!(
                f,
                "endpoint path must start with '/' and have no query or fragment, got {path:?}"
            ),
            Self::ZeroLimit(name) => write!(f, "{name} must be greater than zero"),
            Self::OutOfRange {
                setting,
                expected,
                got,
            } => write!(f, "{setting} must be {expected}, got {got:?}"),
        }
    }
}

impl std::error::Error for BuildError {}
