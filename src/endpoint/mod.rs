//! What the two endpoints do, sharing one [`Endpoints`] value: the configuration, the broker,
//! the authorizer, the count of open streams, and the hub-wide signals (shutdown, the
//! keep-alive ticker, the write-delay flush).
//!
//! `subscribe` and `publish` are the endpoints, `stream` the body of an open event stream,
//! `reply` the short answers; `admit` holds the checks both endpoints (and the gRPC service)
//! make before letting a request through.

pub(crate) mod admit;
pub(crate) mod clients;
pub(crate) mod flush;
pub(crate) mod form;
pub(crate) mod limits;
pub(crate) mod publish;
pub(crate) mod reply;
pub(crate) mod stream;
pub(crate) mod subscribe;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use http::Method;
use tokio::sync::watch;

use crate::auth::Authorizer;
use crate::broker::{Broker, ReplayBudget};
use crate::event::Topic;
use crate::signal::Signal;
use crate::stats::Counters;

/// The settings of a hub.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) events_path: String,
    pub(crate) publish_path: String,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) max_topics: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_subscribers: usize,
    pub(crate) anonymous_publish: bool,
    pub(crate) shutdown_retry: Duration,
    pub(crate) write_delay: Option<Duration>,
    pub(crate) body_timeout: Duration,
    pub(crate) replay_budget: ReplayBudget,
    pub(crate) max_streams_per_client: Option<usize>,
    pub(crate) client_header: Option<http::HeaderName>,
    pub(crate) max_replays: usize,
    pub(crate) max_publish_cost: usize,
    pub(crate) per_topic: bool,
    /// The Mercure hub endpoint, when mounted.
    #[cfg(feature = "mercure")]
    pub(crate) mercure: Option<Arc<crate::mercure::MercureHub>>,
}

/// Everything the endpoints share.
pub(crate) struct Endpoints {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) config: Config,
    pub(crate) authorizer: Option<Arc<dyn Authorizer>>,
    pub(crate) subscribers: AtomicUsize,
    /// Streams still sending a replay (see [`stream::ReplayPermit`]).
    pub(crate) replays: AtomicUsize,
    /// What the endpoints have done, for [`Hub::stats`](crate::Hub::stats).
    pub(crate) counters: Arc<Counters>,
    /// Open streams per topic, when the builder asked for them.
    pub(crate) topic_streams: Option<std::sync::Mutex<std::collections::HashMap<Topic, usize>>>,
    pub(crate) clients: clients::ClientStreams,
    /// Topics whose gauge the last metrics export set above zero, so the next export can zero
    /// the ones that have no stream left.
    #[cfg(feature = "metrics")]
    exported_topics: std::sync::Mutex<std::collections::HashSet<Topic>>,
    shut_down: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Notified when the last stream ends after shutdown.
    drained: tokio::sync::Notify,
    /// Fires every half keep-alive interval, and once at shutdown: idle streams wake on it.
    pub(crate) ticker: Signal,
    /// With a write delay: wakes parked streams together, up to the delay after their frames.
    pub(crate) flush: Option<Arc<flush::Flush>>,
    tasks: OnceLock<()>,
}

/// What a request is, as far as the hub is concerned.
pub(crate) enum Route {
    Subscribe,
    /// `HEAD` on the events path: the status and headers a `GET` would get, without the stream.
    Probe,
    Publish,
    /// The Mercure hub endpoint or its subscriptions API.
    #[cfg(feature = "mercure")]
    Mercure(crate::mercure::MercureRoute),
    WrongMethod(&'static str),
    PassThrough,
}

impl Endpoints {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        config: Config,
        authorizer: Option<Arc<dyn Authorizer>>,
    ) -> Self {
        let per_topic = config.per_topic;
        let flush = config.write_delay.map(flush::Flush::new);
        Self {
            broker,
            config,
            authorizer,
            subscribers: AtomicUsize::new(0),
            replays: AtomicUsize::new(0),
            counters: Arc::default(),
            topic_streams: per_topic.then(Default::default),
            #[cfg(feature = "metrics")]
            exported_topics: Default::default(),
            clients: clients::ClientStreams::default(),
            shut_down: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            drained: tokio::sync::Notify::new(),
            ticker: Signal::default(),
            flush,
            tasks: OnceLock::new(),
        }
    }

    pub(crate) fn route(&self, method: &Method, path: &str) -> Route {
        #[cfg(feature = "mercure")]
        if let Some(route) = self
            .config
            .mercure
            .as_ref()
            .and_then(|mercure| mercure.route(method, path))
        {
            return Route::Mercure(route);
        }
        let events = path == self.config.events_path;
        let publish = path == self.config.publish_path;
        match (events, publish) {
            (false, false) => Route::PassThrough,
            (true, _) if method == Method::GET => Route::Subscribe,
            (true, _) if method == Method::HEAD => Route::Probe,
            (_, true) if method == Method::POST => Route::Publish,
            (true, true) => Route::WrongMethod("GET, HEAD, POST"),
            (true, false) => Route::WrongMethod("GET, HEAD"),
            (false, true) => Route::WrongMethod("POST"),
        }
    }

    /// Why a new stream is refused when the hub is full.
    pub(crate) fn full_reason(&self) -> String {
        format!(
            "this server has reached its limit of {} open event streams; retry later",
            self.config.max_subscribers
        )
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Ends every stream: each sees the flag when the ticker's firing wakes it.
    pub(crate) fn shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
        self.ticker.fire();
    }

    /// Completes when no stream is open (after shutdown, none can open again).
    pub(crate) async fn streams_ended(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a stream ending in between still wakes us.
            notified.as_mut().enable();
            if self.subscribers.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Called when a stream's slot is released, with how many were taken before.
    pub(crate) fn slot_released(&self, before: usize) {
        if before == 1 && self.is_shut_down() {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Counts a stream on `topics` as opened (`+1`) or closed (`-1`), when counting per topic.
    pub(crate) fn count_topics(&self, topics: &[Topic], opened: bool) {
        let Some(map) = &self.topic_streams else {
            return;
        };
        let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for topic in topics {
            if opened {
                *map.entry(topic.clone()).or_insert(0) += 1;
            } else if let Some(count) = map.get_mut(topic) {
                *count -= 1;
                if *count == 0 {
                    map.remove(topic);
                }
            }
        }
    }

    /// Open streams per topic, busiest first; `None` when the hub does not count them.
    pub(crate) fn open_streams_per_topic(&self) -> Option<Vec<(Topic, usize)>> {
        let map = self.topic_streams.as_ref()?;
        let map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts: Vec<(Topic, usize)> =
            map.iter().map(|(topic, n)| (topic.clone(), *n)).collect();
        drop(map);
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        Some(counts)
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> crate::HubStats {
        self.counters
            .snapshot(self.subscribers.load(Ordering::Relaxed))
    }

    /// Writes the stats, and the open streams per topic when counted, to the `metrics` facade.
    ///
    /// A topic whose last stream closed is set to zero once and then left alone; a Prometheus
    /// exporter with an idle timeout for gauges then drops its series.
    #[cfg(feature = "metrics")]
    pub(crate) fn export_metrics(&self) {
        self.stats().export();
        let Some(open) = self.open_streams_per_topic() else {
            return;
        };
        let mut exported = self
            .exported_topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut now = std::collections::HashSet::with_capacity(open.len());
        for (topic, streams) in open {
            let label = topic.as_str().to_owned();
            metrics::gauge!("sse_topic_open_streams", "topic" => label).set(streams as f64);
            now.insert(topic);
        }
        for gone in exported.difference(&now) {
            let label = gone.as_str().to_owned();
            metrics::gauge!("sse_topic_open_streams", "topic" => label).set(0.0);
        }
        *exported = now;
    }

    /// Starts the hub-wide tickers once, from inside the runtime (the first stream's request).
    /// They stop when the hub is dropped.
    pub(crate) fn start_tickers(self: &Arc<Self>) {
        self.tasks.get_or_init(|| {
            #[cfg(feature = "metrics")]
            spawn_exporter(Arc::downgrade(self));
            if let Some(interval) = self.config.keep_alive {
                spawn_ticker(Arc::downgrade(self), interval / 2, |e| &e.ticker);
            }
            if let Some(flush) = &self.flush {
                flush.start();
            }
        });
    }
}

/// Writes the hub's stats to the `metrics` facade every second while the hub lives.
#[cfg(feature = "metrics")]
fn spawn_exporter(endpoints: Weak<Endpoints>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(endpoints) = endpoints.upgrade() else {
                return;
            };
            endpoints.export_metrics();
        }
    });
}

fn spawn_ticker(endpoints: Weak<Endpoints>, period: Duration, signal: fn(&Endpoints) -> &Signal) {
    let period = period.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(endpoints) = endpoints.upgrade() else {
                return;
            };
            signal(&endpoints).fire();
        }
    });
}
