//! Attacks a running SSE pub/sub server as hostile and broken clients would, at full scale, and
//! reports what each attack cost it. The same attacks run small and with assertions in
//! `tests/adversarial.rs`; this runs them against any server with `/events` and `/publish`, so
//! an older build can be measured the same way (the before/after figures of BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --features axum --example chat &          # the server under attack
//! cargo run --release --example attack -- --target 127.0.0.1:3000 --pid $! \
//!     --scenario resume-flood [--redis 127.0.0.1:6379]
//! ```
//!
//! Scenarios (each on its own topics; run each against a fresh server for clean figures):
//!
//! - `resume-flood`: fills 32 topics with 1,000 events of 1 KiB, then 200 clients that never
//!   read resume on all 32 with an id the server never issued, while a publisher sends 100
//!   events/s for 10 s: publish latency, refusals, the server's RSS and Redis's memory.
//! - `stalled`: 50 clients subscribe and never read while 200 events of 60 KiB are published:
//!   how many the server cuts, and its RSS.
//! - `slow`: 2,000 unfinished request heads and 2,000 unfinished publish bodies: how many are
//!   still open after `--hold` seconds (default 45), and the server's RSS.
//! - `unique-topics`: `--topics` (default 200,000) publishes of 100 bytes, each to a new topic:
//!   the server's RSS and Redis's memory.
//! - `topic-bytes`: 400 publishes of 30 KiB, each to the same 32 topics (12 MB published): what
//!   the history costs the server and Redis.
//! - `file-limit`: opens `--streams` streams (start the server under `ulimit -n`): how many are
//!   served, refused, or left without an answer, and whether the app's `/` still answers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use test_support::attack::{self, Subscribe, Target};

struct Options {
    target: SocketAddr,
    pid: Option<u32>,
    redis: Option<SocketAddr>,
    scenario: String,
    hold: Duration,
    topics: usize,
    streams: usize,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        target: SocketAddr::from(([127, 0, 0, 1], 3000)),
        pid: None,
        redis: None,
        scenario: String::new(),
        hold: Duration::from_secs(45),
        topics: 200_000,
        streams: 1_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => options.target = value()?.parse().map_err(|e| format!("{e}"))?,
            "--pid" => options.pid = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--redis" => options.redis = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--scenario" => options.scenario = value()?,
            "--hold" => {
                options.hold = Duration::from_secs(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--topics" => options.topics = value()?.parse().map_err(|e| format!("{e}"))?,
            "--streams" => options.streams = value()?.parse().map_err(|e| format!("{e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

/// Samples the server's RSS (KiB) and Redis's memory (bytes) until stopped; reports the peaks.
struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Sampler {
    fn start(options: &Options) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (pid, redis) = (options.pid, options.redis);
        let task = tokio::spawn(async move {
            let mut peaks = (0u64, 0u64);
            loop {
                if let Some(rss) = pid.and_then(attack::rss_kib) {
                    peaks.0 = peaks.0.max(rss);
                }
                if let Some(addr) = redis
                    && let Some(used) = attack::redis_used_memory(addr).await
                {
                    peaks.1 = peaks.1.max(used);
                }
                tokio::select! {
                    _ = stopped.changed() => return peaks,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        Self { stop, task }
    }

    async fn peaks(self) -> (u64, u64) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The server's RSS (MiB) and Redis's memory (MB) now.
async fn memory(options: &Options) -> String {
    let rss = options
        .pid
        .and_then(attack::rss_kib)
        .map_or("?".to_owned(), |kib| {
            format!("{:.1} MiB", kib as f64 / 1024.0)
        });
    let redis = match options.redis {
        Some(addr) => attack::redis_used_memory(addr)
            .await
            .map_or("?".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        None => "-".to_owned(),
    };
    format!("server RSS {rss}, Redis used_memory {redis}")
}

fn peaks_text(peaks: (u64, u64)) -> String {
    format!(
        "peak server RSS {:.1} MiB, peak Redis used_memory {:.1} MB",
        peaks.0 as f64 / 1024.0,
        peaks.1 as f64 / 1e6
    )
}

fn latency_text(latencies: &attack::Latencies) -> String {
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1e3)
        })
    };
    format!(
        "publishes {}/{} ok at {:.0}/s, p50 {}, p99 {}, max {}",
        latencies.ok,
        latencies.sent,
        latencies.rate(),
        ms(latencies.quantile(0.5)),
        ms(latencies.quantile(0.99)),
        ms(latencies.quantile(1.0)),
    )
}

async fn resume_flood(options: &Options, target: &Target) -> Result<(), String> {
    let topics: Vec<String> = (0..32).map(|i| format!("flood{i}")).collect();
    println!("filling 32 topics with 1,000 events of 1 KiB...");
    attack::fill(target, &topics, 1_000, 1024).await?;
    println!("before: {}", memory(options).await);
    let baseline = attack::probe(target, "probe", 100.0, 200).await;
    println!("baseline, no attack: {}", latency_text(&baseline));
    let sampler = Sampler::start(options);
    let probe = tokio::spawn({
        let target = target.clone();
        async move { attack::probe(&target, "probe", 100.0, 1_000).await }
    });
    let request = Subscribe {
        topics,
        last_event_id: Some("never-issued-1".to_owned()),
        receive_buffer: Some(4096),
        ..Subscribe::default()
    };
    let held = attack::subscribe_many(target, &request, 200, 50, Duration::from_secs(30)).await;
    println!("flood: {:?}", attack::tally(&held));
    let latencies = probe.await.map_err(|e| e.to_string())?;
    println!("during the flood: {}", latency_text(&latencies));
    println!("{}", peaks_text(sampler.peaks().await));
    println!("with the flood still connected: {}", memory(options).await);
    drop(held);
    Ok(())
}

async fn stalled(options: &Options, target: &Target) -> Result<(), String> {
    let request = Subscribe {
        topics: vec!["stalled".to_owned()],
        receive_buffer: Some(4096),
        ..Subscribe::default()
    };
    let held = attack::subscribe_many(target, &request, 50, 50, Duration::from_secs(30)).await;
    println!("stalled readers: {:?}", attack::tally(&held));
    let mut streams = attack::open_streams(held);
    println!("before: {}", memory(options).await);
    let sampler = Sampler::start(options);
    let client = test_support::http_client::client();
    let data = "x".repeat(60 * 1024);
    let topic = ["stalled".to_owned()];
    let started = Instant::now();
    for _ in 0..200 {
        attack::publish(&client, target, &topic, &data).await?;
    }
    println!(
        "published 200 events of 60 KiB in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("after publishing: {}", memory(options).await);
    let closed = attack::closed_after(&mut streams, options.hold, Duration::from_secs(5)).await;
    println!(
        "{closed} of {} stalled streams closed by the server after {:?} unread",
        streams.len(),
        options.hold
    );
    println!("{}", peaks_text(sampler.peaks().await));
    println!("after: {}", memory(options).await);
    Ok(())
}

async fn slow(options: &Options, target: &Target) -> Result<(), String> {
    println!("before: {}", memory(options).await);
    let mut heads = attack::unfinished_heads(target, 2_000).await;
    // 1,000 bytes announced: under any body limit, so only a deadline can end them.
    let mut bodies = attack::unfinished_bodies(target, 2_000, 1_000).await;
    println!(
        "{} unfinished heads and {} unfinished bodies sent",
        heads.len(),
        bodies.len()
    );
    println!("with them open: {}", memory(options).await);
    let (heads_closed, bodies_closed) = tokio::join!(
        attack::closed_within(&mut heads, options.hold),
        attack::closed_within(&mut bodies, options.hold),
    );
    println!(
        "closed by the server within {:?}: {heads_closed} of {} heads, {bodies_closed} of {} \
         bodies",
        options.hold,
        heads.len(),
        bodies.len()
    );
    println!("after: {}", memory(options).await);
    Ok(())
}

async fn unique_topics(options: &Options, target: &Target) -> Result<(), String> {
    println!("before: {}", memory(options).await);
    let sampler = Sampler::start(options);
    let client = test_support::http_client::client();
    let data = "u".repeat(100);
    let started = Instant::now();
    let mut ok = 0;
    for i in 0..options.topics {
        let topic = [format!("unique-{i}")];
        if let Ok((http::StatusCode::OK, _)) = attack::publish(&client, target, &topic, &data).await
        {
            ok += 1;
        }
    }
    println!(
        "{ok} of {} publishes to unique topics ok in {:.1} s",
        options.topics,
        started.elapsed().as_secs_f64()
    );
    println!("{}", peaks_text(sampler.peaks().await));
    println!("after: {}", memory(options).await);
    Ok(())
}

async fn topic_bytes(options: &Options, target: &Target) -> Result<(), String> {
    println!("before: {}", memory(options).await);
    let client = test_support::http_client::client();
    let topics: Vec<String> = (0..32).map(|i| format!("wide{i}")).collect();
    let data = "w".repeat(30 * 1024);
    let mut ok = 0;
    for _ in 0..400 {
        if let Ok((http::StatusCode::OK, _)) =
            attack::publish(&client, target, &topics, &data).await
        {
            ok += 1;
        }
    }
    println!("{ok} of 400 publishes of 30 KiB to 32 topics ok");
    println!("after: {}", memory(options).await);
    Ok(())
}

async fn file_limit(options: &Options, target: &Target) -> Result<(), String> {
    let request = Subscribe {
        topics: vec!["crowd".to_owned()],
        ..Subscribe::default()
    };
    let held = attack::subscribe_many(
        target,
        &request,
        options.streams,
        64,
        Duration::from_secs(5),
    )
    .await;
    println!(
        "{} streams asked for: {:?}",
        options.streams,
        attack::tally(&held)
    );
    let answers = attack::answers(target, "/", Duration::from_secs(5)).await;
    println!("the app's / answered within 5 s while full: {answers}");
    println!("{}", memory(options).await);
    drop(held);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("attack: {error}");
            return ExitCode::FAILURE;
        }
    };
    let target = Target::new(options.target);
    let result = match options.scenario.as_str() {
        "resume-flood" => resume_flood(&options, &target).await,
        "stalled" => stalled(&options, &target).await,
        "slow" => slow(&options, &target).await,
        "unique-topics" => unique_topics(&options, &target).await,
        "topic-bytes" => topic_bytes(&options, &target).await,
        "file-limit" => file_limit(&options, &target).await,
        other => Err(format!(
            "unknown scenario {other:?}: resume-flood, stalled, slow, unique-topics, topic-bytes or file-limit"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("attack: {error}");
            ExitCode::FAILURE
        }
    }
}
