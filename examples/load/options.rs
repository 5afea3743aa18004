//! Command-line flags for the three roles the example plays: driver, server and clients.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// `--name value` pairs, taken one by one so leftovers can be refused as unknown.
pub struct Flags(HashMap<String, String>);

impl Flags {
    /// Reads `--name value` pairs; every flag takes a value.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            let name = flag.strip_prefix("--").ok_or_else(|| {
                format!("unexpected argument {flag:?}; flags look like --name value")
            })?;
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(name.to_owned(), value);
        }
        Ok(Self(values))
    }

    /// The flag's value parsed, or `default` when absent.
    pub fn take<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, String> {
        match self.0.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot read {v:?}")),
        }
    }

    /// The flag's raw value, if given.
    pub fn take_text(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Refuses flags nobody took.
    pub fn finish(self, known: &str) -> Result<(), String> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!("unknown option --{name}; known: {known}")),
        }
    }
}

/// How fast the server publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Publish, yield to the runtime once, publish the next: as fast as the server serves.
    Max,
    /// Events per second, evenly spaced.
    PerSecond(f64),
    /// Events per second on average, at the random moments of a Poisson process (exponential
    /// gaps), as independent publishers make them: `poisson:RATE`, or `--arrivals poisson`.
    Poisson(f64),
}

impl Rate {
    /// The same rate with Poisson arrivals, for `--arrivals poisson`; `max` stays `max`.
    pub fn poisson(self) -> Self {
        match self {
            Self::PerSecond(rate) | Self::Poisson(rate) => Self::Poisson(rate),
            Self::Max => Self::Max,
        }
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Self::Max);
        }
        let (number, poisson) = match s.strip_prefix("poisson:") {
            Some(number) => (number, true),
            None => (s, false),
        };
        match number.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() && poisson => Ok(Self::Poisson(rate)),
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Self::PerSecond(rate)),
            _ => Err(format!(
                "rate must be a positive number, \"poisson:\" and one, or \"max\"; got {s:?}"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Max => f.write_str("max"),
            Self::PerSecond(rate) => write!(f, "{rate}"),
            Self::Poisson(rate) => write!(f, "poisson:{rate}"),
        }
    }
}

/// Which server answers the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// Our hub, mounted with `hub.layer()`.
    Hub,
    /// The hand-written comparator: axum `Sse` over a `tokio::sync::broadcast` channel.
    Axum,
}

impl FromStr for Implementation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hub" => Ok(Self::Hub),
            "axum" => Ok(Self::Axum),
            _ => Err(format!("--impl must be hub or axum, got {s:?}")),
        }
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hub => "hub",
            Self::Axum => "axum",
        })
    }
}

/// How a hub server mounts the hub on its axum router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mount {
    /// `router.layer(hub.layer())`, as most axum apps mount middleware. axum then rebuilds the
    /// router's routes for every connection, and every connection keeps them.
    #[default]
    Layer,
    /// The hub's layer around the finished router (`ServiceBuilder::new().layer(hub.layer())
    /// .service(router)`): a stream never reaches the router.
    Around,
}

impl FromStr for Mount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "layer" => Ok(Self::Layer),
            "around" => Ok(Self::Around),
            _ => Err(format!("--mount must be layer or around, got {s:?}")),
        }
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Layer => "layer",
            Self::Around => "around",
        })
    }
}

/// Settings of the hub side that the driver passes through to every hub server.
#[derive(Debug, Clone, Default)]
pub struct HubSettings {
    /// `--write-delay-ms`: needs `HubBuilder::write_delay`, which core v2 adds.
    pub write_delay_ms: u64,
    /// `--redis URL`: publish through a `RedisBroker` instead of the memory broker.
    pub redis: Option<String>,
    /// `--nats URL`: publish through a `NatsBroker` instead.
    pub nats: Option<String>,
    /// `--mount layer|around`: how the server mounts the hub.
    pub mount: Mount,
}

impl HubSettings {
    fn take(flags: &mut Flags) -> Result<Self, String> {
        Ok(Self {
            write_delay_ms: flags.take("write-delay-ms", 0)?,
            redis: flags.take_text("redis"),
            nats: flags.take_text("nats"),
            mount: flags.take("mount", Mount::Layer)?,
        })
    }

    /// The flags that carry these settings to a server child.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--write-delay-ms".to_owned(),
            self.write_delay_ms.to_string(),
            "--mount".to_owned(),
            self.mount.to_string(),
        ];
        if let Some(url) = &self.redis {
            args.extend(["--redis".to_owned(), url.clone()]);
        }
        if let Some(url) = &self.nats {
            args.extend(["--nats".to_owned(), url.clone()]);
        }
        args
    }
}

/// `--role server`: serve one implementation until stdin closes.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Which implementation to serve.
    pub implementation: Implementation,
    /// The broadcast channel's capacity (the comparator) and the hub's stream limit.
    pub capacity: usize,
    /// Hub-side settings.
    pub hub: HubSettings,
}

/// `--role clients`: open streams, read them, report on stdout.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The servers' addresses; streams take them in turn.
    pub addrs: Vec<SocketAddr>,
    /// The index of this process's first stream among all streams of the run, so that the turn
    /// continues across client processes and the servers get even shares.
    pub first_stream: usize,
    /// The path of each reading stream.
    pub path: String,
    /// How many reading streams.
    pub streams: usize,
    /// Events each stream expects; 0 holds the streams idle until told to stop.
    pub events: u64,
    /// Streams that send their request and never read.
    pub stalled: usize,
    /// Print `burst K` once every stream has the first (K+1)·burst events (0: never).
    pub burst: u64,
    /// Concurrent publishers: event SEQ comes from publisher SEQ mod this, and only each
    /// publisher's own events must arrive in order.
    pub publishers: u64,
}

/// The driver: which scenarios to run and where to write the results.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// A named scenario, `all`, or `custom` (built from the flags below).
    pub scenario: String,
    /// `custom`: reading subscribers.
    pub subscribers: usize,
    /// `custom`: events published.
    pub events: u64,
    /// `custom`: publish rate.
    pub rate: Rate,
    /// With rate max: events per burst; the next burst starts when every stream has this one
    /// (0: the whole run in one burst).
    pub burst: u64,
    /// Event data size in bytes, for every scenario.
    pub size: usize,
    /// `custom`: open this many idle streams instead of publishing (0: publish).
    pub idle: usize,
    /// Stalled streams added to hub runs only.
    pub stalled: usize,
    /// Runs of each implementation, alternating.
    pub repeat: usize,
    /// Most streams one client process opens.
    pub clients_per_process: usize,
    /// Seconds to wait for the last deliveries after publishing ended.
    pub grace_secs: u64,
    /// Hub server processes sharing one Redis (1: the usual hub against axum comparison).
    pub servers: usize,
    /// Tasks publishing concurrently in the (first) server.
    pub publishers: u64,
    /// `--arrivals poisson`: every scenario's fixed rate becomes the mean of a Poisson process.
    pub poisson: bool,
    /// Hub-side settings.
    pub hub: HubSettings,
    /// Where to write all results as JSON.
    pub json: Option<String>,
    /// Where to write the SVG chart.
    pub chart: Option<String>,
}

/// What this process is asked to be.
pub enum Role {
    /// Runs scenarios and reports.
    Driver(DriverOptions),
    /// Serves one implementation.
    Server(ServerOptions),
    /// Reads streams.
    Clients(ClientOptions),
}

const DRIVER_FLAGS: &str = "--scenario fanout-1k|fanout-10k|steady-5k|latency-5k|idle|all|custom \
    --subscribers --events --rate N|max --burst --size --idle --stalled --repeat --clients-per-process \
    --grace-s --servers --publishers --arrivals even|poisson --write-delay-ms --mount layer|around --redis --nats --json --chart";

/// Reads the role and its flags from the command line.
pub fn parse() -> Result<Role, String> {
    let mut flags = Flags::parse(std::env::args().skip(1))?;
    let role = flags
        .take_text("role")
        .unwrap_or_else(|| "driver".to_owned());
    match role.as_str() {
        "server" => {
            let options = ServerOptions {
                implementation: flags.take("impl", Implementation::Hub)?,
                capacity: flags.take("capacity", 1024)?,
                hub: HubSettings::take(&mut flags)?,
            };
            flags.finish("--impl --capacity --write-delay-ms --mount --redis --nats")?;
            Ok(Role::Server(options))
        }
        "clients" => {
            let addrs = flags
                .take_text("addr")
                .ok_or("--role clients needs --addr")?;
            let options = ClientOptions {
                addrs: parse_addrs(&addrs)?,
                first_stream: flags.take("first-stream", 0)?,
                path: flags.take("path", "/events?topic=load".to_owned())?,
                streams: flags.take("streams", 0)?,
                events: flags.take("events", 0)?,
                stalled: flags.take("stalled", 0)?,
                burst: flags.take("burst", 0)?,
                publishers: flags.take("publishers", 1)?,
            };
            flags.finish(
                "--addr ADDR[,ADDR...] --first-stream --path --streams --events --stalled --burst \
                 --publishers",
            )?;
            if options.publishers == 0 {
                return Err("--publishers must be at least 1".to_owned());
            }
            Ok(Role::Clients(options))
        }
        "driver" => {
            let options = DriverOptions {
                scenario: flags.take("scenario", "custom".to_owned())?,
                subscribers: flags.take("subscribers", 100)?,
                events: flags.take("events", 2_000)?,
                rate: flags.take("rate", Rate::PerSecond(1_000.0))?,
                burst: flags.take("burst", 200)?,
                size: flags.take("size", 512)?,
                idle: flags.take("idle", 0)?,
                stalled: flags.take("stalled", 0)?,
                repeat: flags.take("repeat", 3)?,
                clients_per_process: flags.take("clients-per-process", 5_000)?,
                grace_secs: flags.take("grace-s", 10)?,
                servers: flags.take("servers", 1)?,
                publishers: flags.take("publishers", 1)?,
                poisson: match flags.take("arrivals", "even".to_owned())?.as_str() {
                    "even" => false,
                    "poisson" => true,
                    other => {
                        return Err(format!("--arrivals must be even or poisson, got {other:?}"));
                    }
                },
                hub: HubSettings::take(&mut flags)?,
                json: flags.take_text("json"),
                chart: flags.take_text("chart"),
            };
            flags.finish(DRIVER_FLAGS)?;
            if options.size < 48 || options.repeat == 0 || options.clients_per_process == 0 {
                return Err(
                    "--size must be at least 48, --repeat and --clients-per-process at least 1"
                        .to_owned(),
                );
            }
            if options.clients_per_process > 15_000 {
                return Err(
                    "--clients-per-process at most 15000: a process may hold 20,000 fds".to_owned(),
                );
            }
            check_fleet(&options)?;
            Ok(Role::Driver(options))
        }
        other => Err(format!(
            "--role must be driver, server or clients, got {other:?}"
        )),
    }
}

/// Refuses `--servers` and `--publishers` values the run cannot honour.
fn check_fleet(options: &DriverOptions) -> Result<(), String> {
    if options.servers == 0 || options.publishers == 0 {
        return Err("--servers and --publishers must be at least 1".to_owned());
    }
    if options.servers > 1 && options.hub.redis.is_none() && options.hub.nats.is_none() {
        return Err(format!(
            "--servers {} needs --redis URL or --nats URL: only a shared broker carries events between hub \
             servers",
            options.servers
        ));
    }
    Ok(())
}

/// `A,B,C`: the addresses of one or more servers.
fn parse_addrs(list: &str) -> Result<Vec<SocketAddr>, String> {
    list.split(',')
        .map(|addr| {
            addr.parse()
                .map_err(|_| format!("--addr: cannot read {addr:?}"))
        })
        .collect()
}
