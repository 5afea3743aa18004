//! A load generator: what fan-out costs, and what stalled subscribers cost everyone else.
//!
//! ```text
//! cargo run --release --example load -- --clients 100 --stalled 1 --events 5000 --rate 2000 --size 2048
//! ```
//!
//! It serves the hub on a loopback port, opens `--clients` event streams that read as fast as
//! they can and `--stalled` streams that send their request and never read again, then publishes
//! `--events` events of `--size` bytes at `--rate` per second. Each event carries its publish time,
//! so the readers measure publish-to-receipt latency. It prints latency percentiles for the fast
//! readers, throughput, the process's CPU time per delivery (server and readers share the process,
//! so this is an upper bound for the server), resident memory, and when the stalled streams were
//! cut off. Run it with `--stalled 0` and then with stalled clients to see their cost.
//!
//! With `--axum-broadcast true` the readers subscribe to a hand-written axum `Sse` endpoint over a
//! `tokio::sync::broadcast` channel instead of the hub, for comparison.
//!
//! With `--redis redis://127.0.0.1:6379` (and `--features redis`) events go through a
//! `RedisBroker`: the latency then includes the Lua publish and the pub/sub round trip.

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, MissedTickBehavior};
use tower_sse_pubsub::{Hub, MemoryBroker};

#[derive(Debug, Clone)]
struct Options {
    clients: usize,
    stalled: usize,
    events: usize,
    rate: f64,
    size: usize,
    queue: usize,
    idle: usize,
    baseline: bool,
    redis: Option<String>,
    axum_broadcast: bool,
}

fn options() -> Result<Options, String> {
    let mut values: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        values.insert(name.to_owned(), value);
    }
    fn take<T: std::str::FromStr>(
        values: &mut HashMap<String, String>,
        name: &str,
        default: T,
    ) -> Result<T, String> {
        match values.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot read {v:?}")),
        }
    }
    let options = Options {
        clients: take(&mut values, "clients", 100)?,
        stalled: take(&mut values, "stalled", 0)?,
        events: take(&mut values, "events", 5_000)?,
        rate: take(&mut values, "rate", 2_000.0)?,
        size: take(&mut values, "size", 2_048)?,
        queue: take(&mut values, "queue", 256)?,
        idle: take(&mut values, "idle", 0)?,
        baseline: take(&mut values, "baseline", false)?,
        redis: values.remove("redis"),
        axum_broadcast: take(&mut values, "axum-broadcast", false)?,
    };
    if let Some(name) = values.keys().next() {
        return Err(format!(
            "unknown option --{name}; known: --clients --stalled --events --rate --size --queue --idle --baseline --redis --axum-broadcast"
        ));
    }
    if options.rate <= 0.0 || options.size < 32 {
        return Err("--rate must be positive and --size at least 32".to_owned());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    let broker = MemoryBroker::builder()
        .subscriber_queue(options.queue)
        .build();
    let hub = match &options.redis {
        None => Hub::builder().broker(broker.clone()).build()?,
        Some(url) => redis_hub(url, options.queue).await?,
    };
    // `/hold` answers like an event stream that never sends an event, without the hub: the
    // baseline of what hyper and axum hold for an idle streaming response.
    let hold = axum::routing::get(|| async {
        let opening = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b": ok\n\n"))
        });
        axum::body::Body::from_stream(opening.chain(futures::stream::pending()))
    });
    // `/broadcast` is the hand-written alternative the hub competes with: axum's `Sse` over a
    // `tokio::sync::broadcast` channel, each subscriber encoding every event itself.
    let (broadcast, _) = tokio::sync::broadcast::channel::<String>(options.queue);
    let sender = broadcast.clone();
    let hand_written = axum::routing::get(move || {
        let receiver = sender.subscribe();
        async move {
            use axum::response::sse::{Event as SseEvent, Sse};
            let opening = futures::stream::once(async {
                Ok::<_, std::convert::Infallible>(SseEvent::default().comment("ok"))
            });
            let live = futures::stream::unfold(receiver, |mut receiver| async move {
                loop {
                    match receiver.recv().await {
                        Ok(data) => return Some((Ok(SseEvent::default().data(data)), receiver)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            Sse::new(opening.chain(live))
        }
    });
    let app = axum::Router::new()
        .route("/hold", hold)
        .route("/broadcast", hand_written)
        .layer(hub.layer());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    if options.idle > 0 {
        let (_, rss_before) = cpu_and_rss()?;
        let mut idle = Vec::with_capacity(options.idle);
        for i in 0..options.idle {
            // Spread idle subscribers over many topics, as a real app would.
            let path = if options.baseline {
                "/hold".to_owned()
            } else {
                format!("/events?topic=idle-{}", i % 1000)
            };
            idle.push(open_path(addr, &path, None).await?);
        }
        let (_, rss_after) = cpu_and_rss()?;
        println!(
            "{} idle {} streams: RSS grew {} KiB, {:.0} bytes per stream (server and client side)",
            options.idle,
            if options.baseline {
                "baseline (/hold)"
            } else {
                "hub"
            },
            rss_after.saturating_sub(rss_before),
            rss_after.saturating_sub(rss_before) as f64 * 1024.0 / options.idle as f64
        );
        drop(idle);
    }

    let start = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        options.clients * options.events,
    )));
    let mut readers = Vec::new();
    for _ in 0..options.clients {
        let path = if options.axum_broadcast {
            "/broadcast"
        } else {
            "/events?topic=load"
        };
        let stream = open_path(addr, path, None).await?;
        let latencies = latencies.clone();
        let events = options.events;
        readers.push(tokio::spawn(read_events(stream, events, start, latencies)));
    }
    let mut stalled = Vec::new();
    for _ in 0..options.stalled {
        stalled.push(open_stream(addr, Some(4096)).await?);
    }

    let publisher = hub.publisher();
    let (cpu_before, _) = cpu_and_rss()?;
    let publishing = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut stalled_cut_at = None;
    for _ in 0..options.events {
        ticker.tick().await;
        let sent = start.elapsed().as_nanos();
        let mut data = format!("{sent} ");
        data.extend(std::iter::repeat_n(
            'x',
            options.size.saturating_sub(data.len()),
        ));
        if options.axum_broadcast {
            let _ = broadcast.send(data);
        } else {
            publisher.publish_text("load", data).await?;
        }
        if stalled_cut_at.is_none()
            && options.redis.is_none()
            && options.stalled > 0
            && broker.topic_subscriptions() == options.clients
        {
            stalled_cut_at = Some(publishing.elapsed());
        }
    }
    let published_in = publishing.elapsed();
    for reader in readers {
        reader.await??;
    }
    let delivered_in = publishing.elapsed();
    let (cpu_after, rss) = cpu_and_rss()?;

    let mut latencies = latencies.lock().map_err(|_| "a reader panicked")?.clone();
    latencies.sort_unstable();
    let deliveries = latencies.len();
    let percentile = |p: f64| {
        let at = ((deliveries as f64 - 1.0) * p).round() as usize;
        Duration::from_nanos(latencies.get(at).copied().unwrap_or(0))
    };
    let cpu = cpu_after - cpu_before;
    println!(
        "broker {} clients {} stalled {} events {} rate {}/s size {} B queue {}",
        if options.axum_broadcast {
            "none (axum Sse + tokio broadcast)"
        } else {
            options.redis.as_deref().unwrap_or("memory")
        },
        options.clients,
        options.stalled,
        options.events,
        options.rate,
        options.size,
        options.queue
    );
    println!(
        "published in {:.2?}, all fast readers done in {:.2?}; {deliveries} deliveries, {:.0}/s",
        published_in,
        delivered_in,
        deliveries as f64 / delivered_in.as_secs_f64()
    );
    println!(
        "latency p50 {:.2?} p99 {:.2?} p99.9 {:.2?} max {:.2?}",
        percentile(0.5),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0)
    );
    println!(
        "process CPU {:.2?} = {:.2} µs per delivery (server and readers together); RSS {} MiB",
        cpu,
        cpu.as_secs_f64() * 1e6 / deliveries.max(1) as f64,
        rss / 1024
    );
    match (options.stalled, stalled_cut_at) {
        (0, _) => {}
        (_, None) if options.redis.is_some() => {}
        (_, Some(at)) => println!("stalled streams cut off after {at:.2?} of publishing"),
        (_, None) => println!(
            "stalled streams still subscribed ({} subscribers): socket buffers absorbed all",
            broker.topic_subscriptions()
        ),
    }
    drop(stalled);
    Ok(())
}

#[cfg(feature = "redis")]
async fn redis_hub(url: &str, queue: usize) -> Result<Hub, Box<dyn Error>> {
    let broker = tower_sse_pubsub::RedisBroker::builder(url)
        .key_prefix("load")
        .subscriber_queue(queue)
        .build()
        .await?;
    Ok(Hub::builder().broker(broker).build()?)
}

#[cfg(not(feature = "redis"))]
async fn redis_hub(_url: &str, _queue: usize) -> Result<Hub, Box<dyn Error>> {
    Err(
        "--redis needs the redis feature: cargo run --release --features redis --example load"
            .into(),
    )
}

/// Opens an event stream on the load topic; see [`open_path`].
async fn open_stream(addr: SocketAddr, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
    open_path(addr, "/events?topic=load", recv_buffer).await
}

/// Opens a streaming response and reads up to the opening comment, so the subscription is live.
async fn open_path(
    addr: SocketAddr,
    path: &str,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = socket.connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: load\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b": ok\n\n") {
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    Ok(stream)
}

/// Reads `events` events, recording each one's latency from the timestamp in its data.
async fn read_events(
    mut stream: TcpStream,
    events: usize,
    start: Instant,
    latencies: Arc<Mutex<Vec<u64>>>,
) -> Result<(), String> {
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut seen = Vec::with_capacity(events);
    while seen.len() < events {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("stream closed after {} events", seen.len()));
        }
        buffer.extend_from_slice(&chunk[..n]);
        // Everything up to the last blank line is complete frames.
        let Some(end) = buffer.windows(2).rposition(|w| w == b"\n\n") else {
            continue;
        };
        let now = start.elapsed().as_nanos() as u64;
        let mut rest = &buffer[..end];
        while let Some(at) = find(rest, b"data: ") {
            rest = &rest[at + 6..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let sent: u64 = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("malformed event data")?;
            seen.push(now.saturating_sub(sent));
        }
        buffer.drain(..end + 2);
    }
    latencies
        .lock()
        .map_err(|_| "latency list poisoned")?
        .extend(seen);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The process's CPU time (user + system) and resident set size in KiB, from /proc.
fn cpu_and_rss() -> Result<(Duration, u64), Box<dyn Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // Linux reports CPU time in clock ticks of 1/100 s on every mainstream configuration.
    let cpu = Duration::from_millis(ticks * 10);
    let status = std::fs::read_to_string("/proc/self/status")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((cpu, rss))
}
