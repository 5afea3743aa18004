//! The driver: runs each scenario against the hub and the comparator, alternating, each server
//! in its own process and the readers in client processes, and measures the server alone. With
//! `--servers N` (and `--redis`) it runs the hub alone on N servers sharing one Redis: the
//! comparator has no way to fan out across processes.

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::child::{ChildProcess, PROGRESS};
use crate::clients::ClientReport;
use crate::fleet::{self, Fleet};
use crate::options::{DriverOptions, HubSettings, Implementation, Mount, Rate};
use crate::report::{IdleRun, LoadRun, ScenarioResult, ServerSide};
use crate::usage;

/// File descriptors a server needs besides its streams: listener, Redis, stdio, runtime.
const SERVER_FDS: usize = 100;
/// How long a client process may take to open its streams; 15,000 take about 10 s here.
const OPENING: Duration = Duration::from_secs(600);

/// What a scenario does.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Readers on one topic, events published at a rate.
    Load(Load),
    /// Idle streams, to weigh each one.
    Idle(usize),
}

/// A publishing load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Reading streams.
    pub subscribers: usize,
    /// Events published.
    pub events: u64,
    /// Publish rate.
    pub rate: Rate,
    /// Bytes of data per event.
    pub size: usize,
    /// Server processes the streams are spread over (more than 1: hub on Redis only).
    pub servers: usize,
    /// Concurrent publishing tasks in the first server.
    pub publishers: u64,
}

impl Load {
    /// The implementations this load compares: the comparator has no cross-process fan-out.
    pub fn implementations(&self) -> &'static [Implementation] {
        match self.servers {
            0 | 1 => &[Implementation::Hub, Implementation::Axum],
            _ => &[Implementation::Hub],
        }
    }
}

/// The project's targets by name; `all` runs them in order.
const SCENARIOS: [&str; 5] = ["fanout-1k", "fanout-10k", "steady-5k", "latency-5k", "idle"];

/// The scenarios `--scenario` names, with event counts that make each run take 5 to 20 s here.
fn scenarios(options: &DriverOptions) -> Result<Vec<(String, Kind)>, String> {
    let load = |subscribers, events, rate: Rate| {
        Kind::Load(Load {
            subscribers,
            events,
            rate: if options.poisson {
                rate.poisson()
            } else {
                rate
            },
            size: options.size,
            servers: options.servers,
            publishers: options.publishers,
        })
    };
    let named = |name: &str| -> Result<Kind, String> {
        Ok(match name {
            "fanout-1k" => load(1_000, 4_000, Rate::Max),
            "fanout-10k" => load(10_000, 400, Rate::Max),
            "steady-5k" => load(5_000, 100, Rate::PerSecond(10.0)),
            "latency-5k" => load(5_000, 400, Rate::PerSecond(50.0)),
            "idle" => Kind::Idle(5_000),
            "custom" if options.idle > 0 => Kind::Idle(options.idle),
            "custom" => load(options.subscribers, options.events, options.rate),
            other => {
                return Err(format!(
                    "unknown scenario {other:?}; known: {SCENARIOS:?}, all, custom"
                ));
            }
        })
    };
    let names: Vec<&str> = match options.scenario.as_str() {
        "all" => SCENARIOS.to_vec(),
        one => vec![one],
    };
    names
        .into_iter()
        .map(|name| Ok((name.to_owned(), named(name)?)))
        .collect()
}

/// Runs every scenario asked for, printing each table as it completes.
pub fn run(options: &DriverOptions) -> Result<Vec<ScenarioResult>, Box<dyn Error>> {
    let mut results = Vec::new();
    for (name, kind) in scenarios(options)? {
        eprintln!("== {name}: {kind:?}, {} repeats", options.repeat);
        let result = match kind {
            Kind::Load(load) => {
                check_fds(load, options.stalled)?;
                if load.servers > 1 {
                    eprintln!(
                        "   axum comparator skipped: {} servers, and it has no cross-process fan-out",
                        load.servers
                    );
                }
                let mut runs = Vec::new();
                for round in 0..options.repeat {
                    for &implementation in load.implementations() {
                        let run = load_run(load, implementation, options)?;
                        eprintln!("   {round}: {}", run.one_line());
                        runs.push(run);
                    }
                }
                ScenarioResult::Load { name, load, runs }
            }
            Kind::Idle(streams) => {
                let mut runs = Vec::new();
                for round in 0..options.repeat {
                    for target in IdleTarget::ALL {
                        let run = idle_run(streams, target, options)?;
                        eprintln!(
                            "   {round}: {} {:.0} bytes per stream",
                            run.target, run.bytes_per_stream
                        );
                        runs.push(run);
                    }
                }
                ScenarioResult::Idle {
                    name,
                    streams,
                    runs,
                }
            }
        };
        result.print();
        results.push(result);
    }
    Ok(results)
}

/// The path a reading stream opens on each implementation.
fn load_path(implementation: Implementation) -> &'static str {
    match implementation {
        Implementation::Hub => "/events?topic=load",
        Implementation::Axum => "/broadcast",
    }
}

/// Refuses a load that would give one server more streams than it may hold file descriptors:
/// the server would stall accepting and the run would measure that instead.
fn check_fds(load: Load, stalled: usize) -> Result<(), String> {
    let limit = usage::open_files_limit().map_err(|e| format!("/proc/self/limits: {e}"))?;
    let per_server = load.subscribers.div_ceil(load.servers.max(1)) + stalled;
    if per_server + SERVER_FDS > limit {
        return Err(format!(
            "{per_server} streams per server, but a process may open only {limit} files; \
             spread them with --servers N --redis URL, or raise the limit (ulimit -n)"
        ));
    }
    Ok(())
}

/// One publishing run: fresh servers, fresh clients, the servers' CPU over the window from the
/// publish command to the last client's report.
fn load_run(
    load: Load,
    implementation: Implementation,
    options: &DriverOptions,
) -> Result<LoadRun, Box<dyn Error>> {
    // The comparator's channel holds the whole burst, so a receiver lags only if it is slower
    // than the entire run; the hub keeps its default per-subscriber queue.
    let servers = load.servers.max(1);
    let mut fleet = Fleet::spawn(implementation, servers, load.events as usize, &options.hub)?;
    let stalled = match implementation {
        Implementation::Hub => options.stalled,
        Implementation::Axum => 0,
    };
    let path = load_path(implementation);
    let burst = bursts(load, options).1;
    let mut clients = spawn_clients(fleet.addrs(), path, load, stalled, burst, options)?;
    std::thread::sleep(Duration::from_millis(300));

    let streams_at_start = fleet.streams(0)?;
    let before = fleet.usage()?;
    let started = Instant::now();
    let (publish, publisher_streams) =
        publish_all(fleet.publisher()?, &mut clients, load, options)?;
    let mut streams_at_end = vec![publisher_streams];
    streams_at_end.extend(fleet.streams(1)?);

    let deadline = Instant::now() + Duration::from_secs(options.grace_secs);
    let mut report = ClientReport::default();
    for client in &mut clients {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = match client.try_expect("report", wait)? {
            Some(line) => line,
            None => {
                client.send("stop")?;
                client.expect("report", Duration::from_secs(60))?
            }
        };
        report.merge(&serde_json::from_str(&line)?);
    }
    let after = fleet.usage()?;
    let window = started.elapsed();
    let server_side = ServerSide {
        window,
        publish,
        servers: fleet::shares(&before, &after, &streams_at_start, &streams_at_end),
    };
    Ok(LoadRun::new(
        implementation,
        load,
        &report,
        server_side,
        stalled,
    ))
}

/// How many bursts, of how many events: one for a paced rate or `--burst 0`.
fn bursts(load: Load, options: &DriverOptions) -> (u64, u64) {
    match load.rate {
        Rate::Max if options.burst > 0 => (load.events.div_ceil(options.burst), options.burst),
        _ => (1, load.events),
    }
}

/// Has the server publish every event, burst by burst; returns the time publishing took and the
/// streams the server had open at the end. With rate max, each burst stays below the hub's
/// per-subscriber queue (256 frames by default) and the next starts once every client has it,
/// so the load is as fast as the server delivers without outrunning the readers.
fn publish_all(
    server: &mut ChildProcess,
    clients: &mut [ChildProcess],
    load: Load,
    options: &DriverOptions,
) -> Result<(Duration, usize), Box<dyn Error>> {
    let (count, size) = bursts(load, options);
    let mut publishing = Duration::ZERO;
    let mut subscribers_at_end = 0;
    for burst in 0..count {
        let first = burst * size;
        let events = size.min(load.events - first);
        server.send(&format!(
            "publish {events} {} {} {first} {}",
            load.rate, load.size, load.publishers
        ))?;
        let limit = match load.rate {
            Rate::Max => Duration::from_secs(600),
            Rate::PerSecond(rate) | Rate::Poisson(rate) => {
                Duration::from_secs_f64(events as f64 / rate * 2.0 + 60.0)
            }
        };
        let published = server.expect("published", limit)?;
        let mut words = published.split_whitespace().skip(1);
        publishing += Duration::from_nanos(words.next().and_then(|w| w.parse().ok()).unwrap_or(0));
        subscribers_at_end = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        if count == 1 {
            break;
        }
        for client in clients.iter_mut() {
            let grace = Duration::from_secs(options.grace_secs);
            if client.try_expect(PROGRESS, grace)?.is_none() {
                // Some stream lost events and will never complete the burst; the report says so.
                eprintln!("   burst {burst} incomplete after {grace:?}; publishing stops");
                return Ok((publishing, subscribers_at_end));
            }
        }
    }
    Ok((publishing, subscribers_at_end))
}

/// Which idle stream is weighed.
#[derive(Debug, Clone, Copy)]
enum IdleTarget {
    /// The hub, mounted with `Router::layer` (or as `--mount` says).
    Hub,
    /// The hub's layer around the finished router.
    HubAround,
    Axum,
    /// Plain axum streaming response with no pub/sub: the floor.
    Hold,
}

impl IdleTarget {
    const ALL: [IdleTarget; 4] = [
        IdleTarget::Hub,
        IdleTarget::HubAround,
        IdleTarget::Axum,
        IdleTarget::Hold,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::HubAround => "hub-around",
            Self::Axum => "axum",
            Self::Hold => "hold",
        }
    }
}

/// The path of the hub's idle streams.
const HUB_IDLE: &str = "/events?topic=idle-{i}";

/// One idle run: a fresh server's RSS before and after `streams` streams open.
fn idle_run(
    streams: usize,
    target: IdleTarget,
    options: &DriverOptions,
) -> Result<IdleRun, Box<dyn Error>> {
    // Idle subscribers spread over a thousand topics, as a real app's would.
    let (implementation, path, mount) = match target {
        IdleTarget::Hub => (Implementation::Hub, HUB_IDLE, options.hub.mount),
        IdleTarget::HubAround => (Implementation::Hub, HUB_IDLE, Mount::Around),
        IdleTarget::Axum => (Implementation::Axum, "/broadcast", Mount::Layer),
        IdleTarget::Hold => (Implementation::Axum, "/hold", Mount::Layer),
    };
    let hub = HubSettings {
        mount,
        ..options.hub.clone()
    };
    let mut fleet = Fleet::spawn(implementation, 1, 1024, &hub)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = usage::of(fleet.publisher()?.pid())?;
    let idle = Load {
        subscribers: streams,
        events: 0,
        rate: Rate::Max,
        size: 0,
        servers: 1,
        publishers: 1,
    };
    let mut clients = spawn_clients(fleet.addrs(), path, idle, 0, 0, options)?;
    std::thread::sleep(Duration::from_secs(1));
    let after = usage::of(fleet.publisher()?.pid())?;
    for client in &mut clients {
        client.send("stop")?;
        client.expect("report", Duration::from_secs(30))?;
    }
    Ok(IdleRun {
        target: target.name().to_owned(),
        streams,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        bytes_per_stream: after.rss_kib.saturating_sub(before.rss_kib) as f64 * 1024.0
            / streams.max(1) as f64,
    })
}

/// Starts enough client children for `streams` streams and waits until every stream is live.
/// Streams take the servers in turn, across client processes.
fn spawn_clients(
    addrs: &[SocketAddr],
    path: &str,
    load: Load,
    stalled: usize,
    burst: u64,
    options: &DriverOptions,
) -> Result<Vec<ChildProcess>, Box<dyn Error>> {
    let streams = load.subscribers;
    let processes = streams.div_ceil(options.clients_per_process).max(1);
    let addrs: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    let addrs = addrs.join(",");
    let mut clients = Vec::with_capacity(processes);
    let mut first_stream = 0;
    for index in 0..processes {
        // An even split; the first process also takes the stalled streams.
        let share = streams / processes + usize::from(index < streams % processes);
        let args: Vec<String> = [
            "--role",
            "clients",
            "--addr",
            &addrs,
            "--first-stream",
            &first_stream.to_string(),
            "--path",
            path,
            "--streams",
            &share.to_string(),
            "--events",
            &load.events.to_string(),
            "--burst",
            &burst.to_string(),
            "--stalled",
            &(if index == 0 { stalled } else { 0 }).to_string(),
            "--publishers",
            &load.publishers.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        clients.push(ChildProcess::spawn(
            &format!("client process {index}"),
            &args,
        )?);
        first_stream += share;
    }
    for client in &mut clients {
        client.expect("ready", OPENING)?;
    }
    Ok(clients)
}
