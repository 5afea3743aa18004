//! The adversarial suite: what hostile and broken clients did to the server before it bounded
//! every resource, reproduced over real TCP, with what it costs now.
//!
//! Each test runs one attack at a small scale, bounded in count and time, on loopback, and
//! checks the bound that stops it; the figures it prints (run with `--nocapture`) are the same
//! ones `examples/attack.rs` measures at full scale against any server, which is how the
//! before/after figures were taken.
//!
//! - resume floods, on the memory broker and on Redis, with publish latency measured alongside;
//! - stalled readers of large events, with the process's memory measured;
//! - unfinished request heads and bodies;
//! - floods of unique topics;
//! - a server at its open-file limit.

#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::redis_server::RedisServer;
use test_support::attack::{self, Answer, Subscribe, Target};
use tower_sse_pubsub::{ConnectionDeadlines, Hub, HubBuilder, MemoryBroker, RedisBroker};

/// Serves an app route (`/`) and the hub, with `deadlines` on every connection.
async fn serve(hub: &Hub, deadlines: ConnectionDeadlines) -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let app = Router::new()
        .route("/", get(|| async { "the app" }))
        .layer(hub.layer());
    let listener = deadlines.listener(listener);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Target::new(addr)
}

/// A hub anyone may publish to, as the attacks need.
fn open_hub() -> Hub {
    Hub::builder()
        .allow_anonymous_publish()
        .build()
        .expect("valid hub")
}

/// Publishes 100 bytes to each of `count` new topics, checking each is accepted.
async fn publish_to_unique_topics(target: &Target, count: usize) {
    let client = test_support::http_client::client();
    let data = "u".repeat(100);
    for i in 0..count {
        let topic = [format!("unique-{i}")];
        let (status, _) = attack::publish(&client, target, &topic, &data)
            .await
            .expect("publish");
        assert_eq!(status, http::StatusCode::OK);
    }
}

fn topics(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

fn rss_kib() -> u64 {
    attack::rss_kib(std::process::id()).unwrap_or(0)
}

/// A flood of resumes from ids the server never issued (each asks for everything retained on
/// 8 topics, about 8 MB: more than the kernel buffers of a client that never reads, so each
/// replay stays in progress), by clients that never read, while a publisher keeps publishing.
async fn resume_flood(builder: HubBuilder, redis: Option<SocketAddr>) {
    const REPLAY_SLOTS: usize = 8;
    const CLIENTS: usize = 40;
    let hub = builder
        .allow_anonymous_publish()
        .max_concurrent_replays(REPLAY_SLOTS)
        .max_replay(100_000, 64 << 20)
        .build()
        .expect("valid hub");
    let target = serve(&hub, ConnectionDeadlines::new()).await;
    let flooded = topics("room", 8);
    attack::fill(&target, &flooded, 64, 16 * 1024)
        .await
        .expect("history filled");

    let redis_before = match redis {
        Some(addr) => attack::redis_used_memory(addr).await,
        None => None,
    };
    let rss_before = rss_kib();
    let request = Subscribe {
        topics: flooded.clone(),
        last_event_id: Some("never-issued-1".to_owned()),
        receive_buffer: Some(4096),
        ..Subscribe::default()
    };
    let held = attack::subscribe_many(&target, &request, CLIENTS, 8, Duration::from_secs(10)).await;
    let tally = attack::tally(&held);
    // An EventSource past the limit is told to come back later, not failed for good.
    let browser = attack::subscribe(
        &target,
        &Subscribe {
            event_source: true,
            ..request.clone()
        },
        Duration::from_secs(10),
    )
    .await
    .expect("subscribe");
    let latencies = attack::probe(&target, "probe", 100.0, 50).await;
    let rss_after = rss_kib();
    let redis_after = match redis {
        Some(addr) => attack::redis_used_memory(addr).await,
        None => None,
    };
    eprintln!(
        "resume flood: {tally:?}; publishes {}/{} ok, p50 {:?}, p99 {:?}; RSS {} -> {} KiB; \
         Redis used_memory {redis_before:?} -> {redis_after:?}",
        latencies.ok,
        latencies.sent,
        latencies.quantile(0.5),
        latencies.quantile(0.99),
        rss_before,
        rss_after,
    );

    // Never more replays at once than the slots; the others are told to retry.
    assert_eq!(tally.streams, REPLAY_SLOTS, "{tally:?}");
    assert_eq!(tally.refused, CLIENTS - REPLAY_SLOTS, "{tally:?}");
    assert_eq!(browser.answer, Answer::Refused(200), "a retry stream");
    // Publishing never stopped.
    assert_eq!(latencies.ok, latencies.sent);
    if let (Some(before), Some(after)) = (redis_before, redis_after) {
        // Replays are read a page at a time, and only as fast as the client reads.
        assert!(
            after.saturating_sub(before) < 16 << 20,
            "Redis grew from {before} to {after} bytes"
        );
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_flood_on_the_memory_broker_is_bounded_and_publishing_carries_on() {
    resume_flood(Hub::builder(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_flood_on_redis_is_bounded_and_publishing_carries_on() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = RedisBroker::builder(server.url())
        .build()
        .await
        .expect("broker connects");
    let redis = SocketAddr::from(([127, 0, 0, 1], server.port()));
    resume_flood(Hub::builder().broker(broker), Some(redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_of_large_events_are_cut_and_memory_stays_flat() {
    const READERS: usize = 20;
    let hub = open_hub();
    let deadlines = ConnectionDeadlines::new().stalled_write(Duration::from_millis(300));
    let target = serve(&hub, deadlines).await;
    let request = Subscribe {
        topics: vec!["big".to_owned()],
        receive_buffer: Some(4096),
        ..Subscribe::default()
    };
    let held = attack::subscribe_many(&target, &request, READERS, 8, Duration::from_secs(10)).await;
    assert_eq!(attack::tally(&held).streams, READERS);
    let mut stalled = attack::open_streams(held);
    let cuts_before = ConnectionDeadlines::cuts();

    // 60 KiB events, 12 MB of them: far more than a stalled socket's kernel buffers hold (about
    // 3 MB on loopback), so every reader's writes block.
    let rss_before = rss_kib();
    let client = test_support::http_client::client();
    let data = "x".repeat(60 * 1024);
    let topic = ["big".to_owned()];
    for _ in 0..200 {
        let (status, _) = attack::publish(&client, &target, &topic, &data)
            .await
            .expect("publish");
        assert_eq!(status, http::StatusCode::OK);
    }
    let rss_peak = rss_kib();
    // The server cuts each stalled connection once a write has waited 300 ms: left unread for
    // a second (the passing of time is what is under test), every one is closed.
    let closed = attack::closed_after(
        &mut stalled,
        Duration::from_secs(1),
        Duration::from_secs(10),
    )
    .await;
    let rss_after = rss_kib();
    eprintln!(
        "stalled readers: {closed}/{READERS} cut by the server; RSS {rss_before} -> {rss_peak} \
         (peak) -> {rss_after} KiB"
    );
    assert_eq!(closed, READERS);
    assert_eq!(hub.subscriber_count(), 0, "every slot released");
    // Counted as stalled by the deadlines (other tests here may add their own), and as gone
    // clients by the hub.
    let cut = ConnectionDeadlines::cuts().stalled - cuts_before.stalled;
    assert!(cut >= READERS as u64, "{cut} stalled cuts");
    assert_eq!(hub.stats().streams_closed.client_gone, READERS as u64);
    // Nothing is queued per reader: 20 readers of 12 MB do not cost 240 MB.
    assert!(
        rss_peak.saturating_sub(rss_before) < 32 * 1024,
        "RSS grew by {} KiB",
        rss_peak.saturating_sub(rss_before)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_heads_and_bodies_are_closed_at_their_deadline() {
    const EACH: usize = 50;
    let hub = open_hub();
    let deadlines = ConnectionDeadlines::new().unanswered(Duration::from_millis(300));
    let target = serve(&hub, deadlines).await;
    let cuts_before = ConnectionDeadlines::cuts();
    let mut heads = attack::unfinished_heads(&target, EACH).await;
    let mut bodies = attack::unfinished_bodies(&target, EACH, 10_000).await;
    assert_eq!((heads.len(), bodies.len()), (EACH, EACH));
    let (heads_closed, bodies_closed) = tokio::join!(
        attack::closed_within(&mut heads, Duration::from_secs(10)),
        attack::closed_within(&mut bodies, Duration::from_secs(10)),
    );
    eprintln!(
        "slow requests: {heads_closed}/{EACH} heads and {bodies_closed}/{EACH} bodies closed"
    );
    assert_eq!((heads_closed, bodies_closed), (EACH, EACH));
    let cut = ConnectionDeadlines::cuts().unanswered - cuts_before.unanswered;
    assert!(cut >= 2 * EACH as u64, "{cut} unanswered cuts");
    assert!(attack::answers(&target, "/", Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_topics_stays_within_the_memory_cap() {
    const TOPICS: usize = 5_000;
    let cap = 1 << 20;
    let broker = MemoryBroker::builder().history_max_bytes(cap).build();
    let hub = Hub::builder()
        .broker(broker.clone())
        .allow_anonymous_publish()
        .build()
        .expect("valid hub");
    let target = serve(&hub, ConnectionDeadlines::new()).await;
    let rss_before = rss_kib();
    publish_to_unique_topics(&target, TOPICS).await;
    let rss_after = rss_kib();
    eprintln!(
        "unique topics: {TOPICS} published, history {} bytes (cap {cap}); RSS {rss_before} -> \
         {rss_after} KiB",
        broker.memory_bytes()
    );
    assert!(broker.memory_bytes() <= cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_topics_on_redis_leaves_only_keys_that_expire() {
    const TOPICS: usize = 2_000;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = RedisBroker::builder(server.url())
        .build()
        .await
        .expect("broker connects");
    let hub = Hub::builder()
        .broker(broker)
        .allow_anonymous_publish()
        .build()
        .expect("valid hub");
    let target = serve(&hub, ConnectionDeadlines::new()).await;
    publish_to_unique_topics(&target, TOPICS).await;
    // `db0:keys=N,expires=M`: every key but the counter, the epoch, the run id, the
    // checkpoints and the newest checkpoint's hint expires once its topic goes quiet (the global
    // history and its size, once nothing is published).
    let keyspace = server.command(&["INFO", "keyspace"]);
    let counts: Vec<usize> = keyspace
        .lines()
        .find_map(|line| line.strip_prefix("db0:"))
        .expect("a keyspace line")
        .split(',')
        .take(2)
        .filter_map(|pair| pair.split_once('=')?.1.parse().ok())
        .collect();
    eprintln!("unique topics on Redis: {TOPICS} published, keys and expiring keys {counts:?}");
    assert_eq!(counts.len(), 2, "{keyspace}");
    assert_eq!(counts[0], 2 * TOPICS + 7, "{keyspace}");
    assert_eq!(counts[1], 2 * TOPICS + 2, "{keyspace}");
}

/// The open-file limit the server in `a_full_server...` runs under.
const FILE_LIMIT: usize = 256;
/// The variable that makes [`serve_under_a_low_file_limit`] serve instead of returning.
const SERVE_ROLE: &str = "ADVERSARIAL_SERVE_UNDER_FILE_LIMIT";

/// Not a test on its own: the server half of the file-limit test, which runs this test binary
/// again, under `ulimit -n`, with [`SERVE_ROLE`] set. It serves the default hub (whose
/// subscriber limit follows the file limit) until its standard input closes.
#[tokio::test]
#[ignore = "run by a_full_server_refuses_streams_with_503_and_keeps_serving_its_app"]
async fn serve_under_a_low_file_limit() {
    if std::env::var_os(SERVE_ROLE).is_none() {
        return;
    }
    let hub = Hub::new();
    let target = serve(&hub, ConnectionDeadlines::new()).await;
    println!("listening {}", target.addr);
    // Serve until the parent closes our standard input.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_refuses_streams_with_503_and_keeps_serving_its_app() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FILE_LIMIT} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args([
            "--exact",
            "serve_under_a_low_file_limit",
            "--ignored",
            "--nocapture",
        ])
        .env(SERVE_ROLE, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server process starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let addr = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening ")?.parse::<SocketAddr>().ok())
    })
    .await
    .expect("reader task")
    .expect("the server says where it listens");
    let target = Target::new(addr);

    // The default limit leaves a twentieth of the files, at least 64, for everything else.
    let max_streams = FILE_LIMIT - (FILE_LIMIT / 20).max(64);
    let request = Subscribe {
        topics: vec!["crowd".to_owned()],
        ..Subscribe::default()
    };
    let held = attack::subscribe_many(
        &target,
        &request,
        max_streams + 40,
        16,
        Duration::from_secs(10),
    )
    .await;
    let tally = attack::tally(&held);
    let app_answers = attack::answers(&target, "/", Duration::from_secs(5)).await;
    eprintln!("file limit {FILE_LIMIT}: {tally:?}; app route answered: {app_answers}");
    drop(held);
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(tally.streams, max_streams, "{tally:?}");
    assert_eq!(
        tally.refused, 40,
        "{tally:?}: every other one refused, none left hanging"
    );
    assert!(app_answers, "the app's own routes still answer");
}
