//! Results: one record per run, medians and spreads per scenario, the tables and the JSON.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::clients::ClientReport;
use crate::driver::Load;
use crate::fleet::ServerShare;
use crate::options::{Implementation, Rate};

/// What the driver measured of the server processes during one run.
#[derive(Debug, Clone)]
pub struct ServerSide {
    /// The window's wall time, from the publish command to the last client's report.
    pub window: Duration,
    /// How long the (first) server took to publish every event.
    pub publish: Duration,
    /// Each server's CPU in the window, RSS at its end, and streams when publishing ended.
    pub servers: Vec<ServerShare>,
}

/// One publishing run of one implementation.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    /// `hub` or `axum`.
    pub implementation: String,
    /// Subscribers times events.
    pub expected: u64,
    /// Distinct events received over all subscribers.
    pub received: u64,
    /// Expected events never received.
    pub missing: u64,
    /// Events received twice.
    pub duplicates: u64,
    /// Events received after a later one.
    pub reordered: u64,
    /// Events whose data could not be read.
    pub malformed: u64,
    /// Streams that ended or were stopped before every event.
    pub incomplete_streams: u64,
    /// Server CPU seconds in the window, summed over the servers.
    pub server_cpu_s: f64,
    /// Server CPU per received event, in microseconds.
    pub cpu_per_delivery_us: f64,
    /// Of that, user CPU: the server's own code, without the kernel's sending.
    pub user_cpu_per_delivery_us: f64,
    /// Events per write system call of the servers: how many frames share a write.
    pub deliveries_per_write: f64,
    /// Publish-to-receipt latency percentiles, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Window wall time in seconds.
    pub window_s: f64,
    /// Publishing time in seconds.
    pub publish_s: f64,
    /// Deliveries per second of window.
    pub deliveries_per_s: f64,
    /// Server RSS at the end, MiB, summed over the servers.
    pub rss_mib: f64,
    /// Streams open on the servers when publishing ended (readers plus stalled).
    pub subscribers_at_end: usize,
    /// Each server's part; the first one published.
    pub servers: Vec<ServerShare>,
    /// Stalled streams opened (hub runs only).
    pub stalled: usize,
    /// Stalled streams the server had ended.
    pub stalled_cut: u64,
}

impl LoadRun {
    /// Combines the clients' and the server's view of a run.
    pub fn new(
        implementation: Implementation,
        load: Load,
        clients: &ClientReport,
        server: ServerSide,
        stalled: usize,
    ) -> Self {
        let expected = load.subscribers as u64 * load.events;
        let ms = |nanos: u64| nanos as f64 / 1e6;
        let cpu_s: f64 = server.servers.iter().map(|s| s.cpu_s).sum();
        let user_cpu_s: f64 = server.servers.iter().map(|s| s.user_cpu_s).sum();
        Self {
            implementation: implementation.to_string(),
            expected,
            received: clients.received,
            missing: expected.saturating_sub(clients.received),
            duplicates: clients.duplicates,
            reordered: clients.reordered,
            malformed: clients.malformed,
            incomplete_streams: clients.closed_early,
            server_cpu_s: cpu_s,
            cpu_per_delivery_us: cpu_s * 1e6 / clients.received.max(1) as f64,
            user_cpu_per_delivery_us: user_cpu_s * 1e6 / clients.received.max(1) as f64,
            deliveries_per_write: clients.received as f64
                / server.servers.iter().map(|s| s.writes).sum::<u64>().max(1) as f64,
            p50_ms: ms(clients.latency.quantile(0.5)),
            p99_ms: ms(clients.latency.quantile(0.99)),
            max_ms: ms(clients.latency.quantile(1.0)),
            window_s: server.window.as_secs_f64(),
            publish_s: server.publish.as_secs_f64(),
            deliveries_per_s: clients.received as f64 / server.window.as_secs_f64().max(1e-9),
            rss_mib: server.servers.iter().map(|s| s.rss_mib).sum(),
            subscribers_at_end: server.servers.iter().map(|s| s.streams_at_end).sum(),
            servers: server.servers,
            stalled,
            stalled_cut: clients.stalled_cut,
        }
    }

    /// Lost, duplicated, reordered or unreadable events: anything but zero is a bug.
    pub fn errors(&self) -> u64 {
        self.missing + self.duplicates + self.reordered + self.malformed
    }

    /// A progress line, with each server's part when there are several.
    pub fn one_line(&self) -> String {
        let mut line = format!(
            "{:<4} {:.2} µs/delivery, p50 {:.1} ms, p99 {:.1} ms, {} deliveries in {:.1} s, errors {}",
            self.implementation,
            self.cpu_per_delivery_us,
            self.p50_ms,
            self.p99_ms,
            self.received,
            self.window_s,
            self.errors()
        );
        if self.servers.len() > 1 {
            for (index, server) in self.servers.iter().enumerate() {
                line.push_str(&format!(
                    "\n        server {index}: {} streams, {:.2} s CPU, {:.0} MiB RSS{}",
                    server.streams_at_start,
                    server.cpu_s,
                    server.rss_mib,
                    if index == 0 { " (publisher)" } else { "" }
                ));
            }
        }
        line
    }
}

/// One idle-memory run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRun {
    /// `hub`, `axum` or `hold` (plain axum streaming response).
    pub target: String,
    /// Streams opened.
    pub streams: usize,
    /// Server RSS before the streams, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every stream open, KiB.
    pub rss_after_kib: u64,
    /// RSS growth per stream, bytes.
    pub bytes_per_stream: f64,
}

/// Every run of one scenario.
pub enum ScenarioResult {
    /// A publishing scenario.
    Load {
        /// Its name.
        name: String,
        /// Its load.
        load: Load,
        /// Runs, alternating hub and axum.
        runs: Vec<LoadRun>,
    },
    /// An idle-memory scenario.
    Idle {
        /// Its name.
        name: String,
        /// Streams per run.
        streams: usize,
        /// Runs, alternating hub, axum and hold.
        runs: Vec<IdleRun>,
    },
}

/// The median and range of one metric over repeats.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => values[n / 2],
            _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        Self {
            median,
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }

    fn show(&self) -> String {
        format!(
            "{} [{} – {}]",
            short(self.median),
            short(self.min),
            short(self.max)
        )
    }
}

/// Three significant digits, or a whole number when large.
fn short(value: f64) -> String {
    match value.abs() {
        v if v >= 1000.0 => format!("{value:.0}"),
        v if v >= 100.0 => format!("{value:.1}"),
        v if v >= 10.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// A table row: its label, its JSON key, and how to read it from a run.
type Metric = (&'static str, &'static str, fn(&LoadRun) -> f64);

/// The load metrics in the table, in order.
const LOAD_METRICS: [Metric; 12] = [
    (
        "server CPU per delivery (µs)",
        "cpu_per_delivery_us",
        |r| r.cpu_per_delivery_us,
    ),
    (
        "  of which user CPU (µs)",
        "user_cpu_per_delivery_us",
        |r| r.user_cpu_per_delivery_us,
    ),
    ("events per write", "deliveries_per_write", |r| {
        r.deliveries_per_write
    }),
    ("latency p50 (ms)", "p50_ms", |r| r.p50_ms),
    ("latency p99 (ms)", "p99_ms", |r| r.p99_ms),
    ("latency max (ms)", "max_ms", |r| r.max_ms),
    ("deliveries", "received", |r| r.received as f64),
    ("deliveries per second", "deliveries_per_s", |r| {
        r.deliveries_per_s
    }),
    ("server CPU (s)", "server_cpu_s", |r| r.server_cpu_s),
    ("publishing took (s)", "publish_s", |r| r.publish_s),
    ("server RSS at end (MiB)", "rss_mib", |r| r.rss_mib),
    ("lost+dup+reordered", "errors", |r| r.errors() as f64),
];

impl ScenarioResult {
    /// Lost, duplicated, reordered or unreadable events over every run.
    pub fn errors(&self) -> u64 {
        match self {
            Self::Load { runs, .. } => runs.iter().map(LoadRun::errors).sum(),
            Self::Idle { .. } => 0,
        }
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Load { name, .. } | Self::Idle { name, .. } => name,
        }
    }

    /// The median, min and max of `metric` over one implementation's (or target's) runs.
    pub fn spread(&self, who: &str, metric: &str) -> Spread {
        match self {
            Self::Load { runs, .. } => {
                let read = LOAD_METRICS
                    .iter()
                    .find(|(_, key, _)| *key == metric)
                    .map(|(_, _, read)| *read);
                let values = runs
                    .iter()
                    .filter(|r| r.implementation == who)
                    .filter_map(|r| read.map(|read| read(r)))
                    .collect();
                Spread::of(values)
            }
            Self::Idle { runs, .. } => Spread::of(
                runs.iter()
                    .filter(|r| r.target == who)
                    .map(|r| r.bytes_per_stream)
                    .collect(),
            ),
        }
    }

    /// Prints the scenario's table on stdout; correctness failures loudly, on stderr too.
    pub fn print(&self) {
        match self {
            Self::Load { name, load, runs } => {
                let implementations = load.implementations().len();
                println!();
                println!(
                    "{name}: {} subscribers, {} events of {} B, rate {}{}; {} runs each{}",
                    load.subscribers,
                    load.events,
                    load.size,
                    rate_label(load.rate),
                    fleet_label(*load),
                    runs.len() / implementations,
                    if implementations > 1 {
                        ", alternating hub/axum"
                    } else {
                        ""
                    }
                );
                if implementations == 1 {
                    println!(
                        "axum comparator skipped: it has no cross-process fan-out; CPU and RSS are sums over the {} servers",
                        load.servers
                    );
                }
                if implementations > 1 {
                    println!(
                        "{:<30} {:>28} {:>28} {:>9}",
                        "metric", "hub median [min – max]", "axum median [min – max]", "hub/axum"
                    );
                } else {
                    println!("{:<30} {:>28}", "metric", "hub median [min – max]");
                }
                for (label, key, _) in LOAD_METRICS {
                    let (hub, axum) = (self.spread("hub", key), self.spread("axum", key));
                    if implementations > 1 {
                        println!(
                            "{label:<30} {:>28} {:>28} {:>9}",
                            hub.show(),
                            axum.show(),
                            ratio(hub.median, axum.median)
                        );
                    } else {
                        println!("{label:<30} {:>28}", hub.show());
                    }
                }
                if let Some(stalled) = runs.iter().find(|r| r.stalled > 0) {
                    println!(
                        "hub stalled streams: {} opened, {} cut off (first run)",
                        stalled.stalled, stalled.stalled_cut
                    );
                }
                for run in runs.iter().filter(|r| r.errors() > 0) {
                    let message = format!(
                        "!!! CORRECTNESS FAILURE in {name} ({}): {} missing, {} duplicated, {} reordered, {} malformed of {} expected; {} streams incomplete",
                        run.implementation,
                        run.missing,
                        run.duplicates,
                        run.reordered,
                        run.malformed,
                        run.expected,
                        run.incomplete_streams
                    );
                    println!("{message}");
                    eprintln!("{message}");
                }
            }
            Self::Idle {
                name,
                streams,
                runs,
            } => {
                println!();
                println!(
                    "{name}: {streams} idle streams; {} runs each, alternating hub/hub-around/axum/hold",
                    runs.len() / 4
                );
                println!(
                    "{:<34} {:>28}",
                    "server RSS growth per stream", "bytes median [min – max]"
                );
                let targets = [
                    ("hub", "hub (/events)"),
                    ("hub-around", "hub around the router"),
                    ("axum", "axum Sse + broadcast"),
                    ("hold", "plain axum stream (/hold)"),
                ];
                for (who, label) in targets {
                    println!("{label:<34} {:>28}", self.spread(who, "").show());
                }
                let median = |who| self.spread(who, "").median;
                println!(
                    "hub − axum: {:+.0} bytes per stream (hub/axum {}); hub − hold: {:+.0}; axum − hold: {:+.0}",
                    median("hub") - median("axum"),
                    ratio(median("hub"), median("axum")),
                    median("hub") - median("hold"),
                    median("axum") - median("hold")
                );
                println!(
                    "hub around the router − axum: {:+.0} bytes per stream (axum's router, which \
                     `Router::layer` makes every connection rebuild, never sees the hub's streams)",
                    median("hub-around") - median("axum"),
                );
            }
        }
    }

    /// Every run and every summary, for `--json`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Load { name, load, runs } => {
                let mut summary = serde_json::Map::new();
                for (_, key, _) in LOAD_METRICS {
                    let (hub, axum) = (self.spread("hub", key), self.spread("axum", key));
                    let ratio = (axum.median != 0.0).then(|| hub.median / axum.median);
                    summary.insert(
                        key.to_owned(),
                        json!({"hub": hub, "axum": axum, "ratio_hub_axum": ratio}),
                    );
                }
                json!({
                    "scenario": name,
                    "subscribers": load.subscribers,
                    "events": load.events,
                    "rate": load.rate.to_string(),
                    "size": load.size,
                    "servers": load.servers,
                    "publishers": load.publishers,
                    "summary": summary,
                    "runs": runs,
                })
            }
            Self::Idle {
                name,
                streams,
                runs,
            } => {
                let median = |who| self.spread(who, "");
                json!({
                    "scenario": name,
                    "streams": streams,
                    "summary": {
                        "hub": median("hub"),
                        "hub_around": median("hub-around"),
                        "axum": median("axum"),
                        "hold": median("hold"),
                        "hub_minus_axum_bytes": median("hub").median - median("axum").median,
                        "hub_around_minus_axum_bytes":
                            median("hub-around").median - median("axum").median,
                    },
                    "runs": runs,
                })
            }
        }
    }
}

fn ratio(ours: f64, theirs: f64) -> String {
    if theirs == 0.0 {
        "-".to_owned()
    } else {
        format!("{:.2}", ours / theirs)
    }
}

/// How many servers and publishers, when not one of each.
fn fleet_label(load: Load) -> String {
    let mut label = String::new();
    if load.servers > 1 {
        label.push_str(&format!(", {} hub servers sharing Redis", load.servers));
    }
    if load.publishers > 1 {
        label.push_str(&format!(", {} concurrent publishers", load.publishers));
    }
    label
}

fn rate_label(rate: Rate) -> String {
    match rate {
        Rate::Max => "max".to_owned(),
        Rate::PerSecond(rate) => format!("{rate}/s"),
        Rate::Poisson(rate) => format!("{rate}/s, Poisson"),
    }
}
