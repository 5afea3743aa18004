//! Behind a real reverse proxy: the chat demo's app behind Debian's nginx.
//!
//! **What.** Each test serves the same app as `cargo run --features axum --example chat` (the
//! page at `/`, the hub's `GET /events` and `POST /publish`) on a loopback port, starts its own
//! `nginx` in front of it on another, and talks to the app only through nginx:
//!
//! - with a plain `proxy_pass` location, nothing SSE-specific, events arrive one by one as they
//!   are published, not held back and batched (the hub's `X-Accel-Buffering: no` turns nginx's
//!   response buffering off); the same with the README's recommended snippet;
//! - an idle stream outlives a `proxy_read_timeout` shorter than its idleness, because the hub's
//!   keep-alive comments count as traffic; without keep-alive nginx cuts the same stream when the
//!   timeout runs out;
//! - the control for the first point: when nginx is told to ignore `X-Accel-Buffering`, it holds
//!   the events back until the stream ends.
//!
//! **How to run.**
//!
//! ```text
//! cargo test --test nginx
//! cargo test --test nginx -- --nocapture    # also shows the timings and the skip notice, if any
//! ```
//!
//! **What it needs.** `nginx` on `PATH` or in `/usr/sbin` (Debian: `apt-get install nginx`; only
//! the binary is used, run as the current user with its configuration, logs and temporary files
//! in a directory of its own). When it is missing, each test prints a skip notice and passes,
//! unless the environment variable `CI` is set to a non-empty value: CI installs it (see
//! `.ci/run`), so there a missing nginx fails the test instead.
//!
//! **Time.** The timeouts under test are real ones (nginx's timers, the hub's keep-alive), so
//! these tests wait in real time: the longest, the idle stream, about 5 s. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request as AxumRequest;
use common::chat;
use common::http::{TestServer, client, get_text, post_form};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use test_support::WAIT_LIMIT;
use tokio::time::timeout;
use tower::util::MapRequestLayer;
use tower_sse_pubsub::{Hub, HubBuilder};

/// The hub's keep-alive interval in these tests (the shortest it accepts).
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The `proxy_read_timeout` of the idle-stream tests: above [`KEEP_ALIVE`], below [`IDLE`].
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the idle stream stays without events: longer than [`READ_TIMEOUT`].
const IDLE: Duration = Duration::from_secs(5);

/// How soon a published event must reach the subscriber through nginx. Buffered events would
/// not arrive at all until the stream ends (see the control test), so any bound would show it;
/// this one is short enough to fail fast and long enough for a slow machine.
const ONE_BY_ONE_LIMIT: Duration = Duration::from_secs(2);

/// How long the buffering control waits to see that nothing comes through.
const HELD_BACK_FOR: Duration = Duration::from_secs(1);

/// How long nginx may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Nothing SSE-specific: the location a proxy gets when nobody thought about event streams.
fn plain_location(upstream: SocketAddr, extra: &str) -> String {
    format!("location / {{ proxy_pass http://{upstream}; {extra} }}")
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Through a plain `proxy_pass`, each event reaches the subscriber before the next is published.
/// nginx speaks HTTP/1.0 to the app by default; the stream works all the same.
#[tokio::test]
async fn events_arrive_one_by_one_through_a_plain_proxy_pass() {
    let Some(nginx) = nginx_program() else { return };
    let app = ChatApp::start(Hub::builder().keep_alive(KEEP_ALIVE)).await;
    let proxy = Nginx::start(&nginx, "", &plain_location(app.addr(), "")).await;

    events_arrive_one_by_one(&app, &proxy).await;

    assert_eq!(
        app.versions_seen(),
        [Version::HTTP_10],
        "nginx's default proxy_http_version is 1.0, for the stream and for every publish"
    );
    let (status, page) = get_text(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, chat::PAGE, "the chat page comes through too");
}

/// The same through the README's recommended snippet (HTTP/1.1 and kept-alive connections to
/// the app). Keep it in step with the README.
#[tokio::test]
async fn events_arrive_one_by_one_with_the_readme_snippet() {
    let Some(nginx) = nginx_program() else { return };
    let app = ChatApp::start(Hub::builder().keep_alive(KEEP_ALIVE)).await;
    let upstream = format!(
        "upstream sse_app {{
            server {};
            keepalive 16;
        }}",
        app.addr()
    );
    let location = "location / {
            proxy_pass http://sse_app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_read_timeout 60s;
        }";
    let proxy = Nginx::start(&nginx, &upstream, location).await;

    events_arrive_one_by_one(&app, &proxy).await;

    assert_eq!(app.versions_seen(), [Version::HTTP_11]);
}

/// An idle stream outlives a short `proxy_read_timeout`: the hub's keep-alive comments, not
/// events, are what nginx reads meanwhile. After the idle time, an event still arrives on it.
#[tokio::test]
async fn an_idle_stream_survives_a_short_proxy_read_timeout() {
    let Some(nginx) = nginx_program() else { return };
    let app = ChatApp::start(Hub::builder().keep_alive(KEEP_ALIVE)).await;
    let proxy = Nginx::start(&nginx, "", &plain_location(app.addr(), &read_timeout())).await;

    let mut stream = RawEvents::open(&proxy.url("/events?topic=chat")).await;
    assert_eq!(app.hub.subscriber_count(), 1);
    let opened = Instant::now();
    match timeout(IDLE, stream.events.next()).await {
        Err(_idle) => {}
        Ok(None) => panic!("nginx ended the idle stream after {:?}", opened.elapsed()),
        Ok(Some(Err(error))) => {
            panic!(
                "nginx cut the idle stream after {:?}: {error}",
                opened.elapsed()
            )
        }
        Ok(Some(Ok(event))) => panic!("nothing was published, yet {event:?} arrived"),
    }
    let keep_alives = stream.keep_alives.load(Ordering::Relaxed);
    println!(
        "idle for {:?} behind proxy_read_timeout {READ_TIMEOUT:?}: {keep_alives} keep-alives passed",
        opened.elapsed()
    );
    assert!(
        keep_alives >= 3,
        "keep-alives every {KEEP_ALIVE:?} came through nginx while idle, got {keep_alives}"
    );

    let id = publish(&proxy, "after the silence").await;
    let event = timeout(WAIT_LIMIT, stream.events.next())
        .await
        .expect("the event arrives in time")
        .expect("the stream is still open")
        .expect("the stream is still whole");
    assert_eq!((event.id, event.data), (id, "after the silence".to_owned()));
    assert!(
        !proxy.error_log().contains("upstream timed out"),
        "nginx logged no timeout:\n{}",
        proxy.error_log()
    );
}

/// The control for the keep-alive: without it, the same idle stream is cut by nginx when
/// `proxy_read_timeout` runs out, and an event published afterwards never reaches it.
#[tokio::test]
async fn without_keep_alive_nginx_cuts_the_idle_stream() {
    let Some(nginx) = nginx_program() else { return };
    let app = ChatApp::start(Hub::builder().without_keep_alive()).await;
    let proxy = Nginx::start(&nginx, "", &plain_location(app.addr(), &read_timeout())).await;

    let mut stream = RawEvents::open(&proxy.url("/events?topic=chat")).await;
    assert_eq!(app.hub.subscriber_count(), 1);
    let opened = Instant::now();
    let end = timeout(READ_TIMEOUT + Duration::from_secs(3), stream.events.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the stream was still open after {:?}, past proxy_read_timeout {READ_TIMEOUT:?}",
                opened.elapsed()
            )
        });
    let lasted = opened.elapsed();
    let how = match end {
        None => "ended cleanly".to_owned(),
        Some(Err(error)) => format!("cut mid-stream ({error})"),
        Some(Ok(event)) => panic!("nothing was published, yet {event:?} arrived"),
    };
    println!(
        "without keep-alive, behind proxy_read_timeout {READ_TIMEOUT:?}: the idle stream lasted {lasted:?}, {how}"
    );
    assert!(
        lasted >= READ_TIMEOUT - Duration::from_millis(500),
        "nginx cut the stream when its read timeout ran out, not before: {lasted:?}"
    );
    let log = proxy.error_log();
    assert!(
        log.contains("upstream timed out"),
        "nginx says why it cut the stream:\n{log}"
    );

    // What is published now reaches neither the cut stream nor, once the hub has noticed the
    // closed connection, any subscriber.
    publish(&proxy, "too late").await;
    let after = timeout(WAIT_LIMIT, stream.events.next())
        .await
        .expect("a cut stream stays ended");
    assert!(
        after.is_none_or(|item| item.is_err()),
        "nothing more arrives on a cut stream"
    );
    wait_until("the hub drops the subscriber nginx cut off", || {
        app.hub.subscriber_count() == 0
    })
    .await;
}

/// The control for the first test: told to ignore the hub's `X-Accel-Buffering: no`, nginx
/// buffers the response, and nothing of it comes through, not even its head, until the stream
/// ends; then the events arrive all at once. So the first test's per-event wait does tell
/// buffering apart.
#[tokio::test]
async fn ignoring_x_accel_buffering_nginx_holds_events_back() {
    let Some(nginx) = nginx_program() else { return };
    let mut app = ChatApp::start(Hub::builder()).await;
    let location = plain_location(app.addr(), "proxy_ignore_headers X-Accel-Buffering;");
    let proxy = Nginx::start(&nginx, "", &location).await;

    let url = proxy.url("/events?topic=chat");
    let mut opening = tokio::spawn(async move { RawEvents::open(&url).await });
    // The response head is held back too, so the subscription shows only at the hub.
    wait_until("the hub has the subscriber", || {
        app.hub.subscriber_count() == 1
    })
    .await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(publish(&proxy, &format!("held {n}")).await);
    }
    assert!(
        timeout(HELD_BACK_FOR, &mut opening).await.is_err(),
        "with response buffering on, not even the response head comes through within {HELD_BACK_FOR:?}"
    );

    // Shutting down ends the stream; nginx then sends what it held, in one go.
    app.server.stop();
    let mut stream = timeout(WAIT_LIMIT, opening)
        .await
        .expect("the response comes through once the stream ends")
        .expect("the subscribing task");
    let mut received = Vec::new();
    while let Some(item) = timeout(WAIT_LIMIT, stream.events.next())
        .await
        .expect("the stream ends in time")
    {
        let event = item.expect("a whole stream");
        if !event.data.is_empty() {
            received.push((event.id, event.data));
        }
    }
    let expected: Vec<(String, String)> = ids
        .into_iter()
        .zip(1..)
        .map(|(id, n)| (id, format!("held {n}")))
        .collect();
    assert_eq!(
        received, expected,
        "every held event, once the stream ended"
    );
}

// ---------------------------------------------------------------------------------------------
// Shared steps
// ---------------------------------------------------------------------------------------------

/// Subscribes through `proxy`, then publishes five events one at a time through it, each
/// received before the next is published.
async fn events_arrive_one_by_one(app: &ChatApp, proxy: &Nginx) {
    let response = open(&proxy.url("/events?topic=chat")).await;
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(
        headers.get("transfer-encoding").map(|v| v.as_bytes()),
        Some(&b"chunked"[..]),
        "nginx streams the response on to the client in chunks"
    );
    assert!(
        !headers.contains_key("x-accel-buffering"),
        "nginx takes X-Accel-Buffering as meant for itself and does not pass it on"
    );
    let mut events = test_support::http_client::events(response);
    assert_eq!(app.hub.subscriber_count(), 1);

    let mut latencies = Vec::new();
    for n in 1..=5 {
        let data = format!("message {n}");
        let published = Instant::now();
        let id = publish(proxy, &data).await;
        let event = timeout(ONE_BY_ONE_LIMIT, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!("event {n} did not come through nginx within {ONE_BY_ONE_LIMIT:?}")
            })
            .expect("the stream is open");
        latencies.push(published.elapsed());
        assert_eq!((event.id, event.data), (id, data), "event {n}, on its own");
    }
    println!("through nginx, each event arrived {latencies:?} after its publish request was sent");
}

/// Publishes `data` on the chat topic through `proxy` and returns the event's id.
async fn publish(proxy: &Nginx, data: &str) -> String {
    let form = format!("topic=chat&data={}", data.replace(' ', "+"));
    let (status, id) = post_form(&proxy.url("/publish"), &form).await;
    assert_eq!(status, StatusCode::OK, "publish through nginx: {id}");
    id
}

/// Waits, within [`WAIT_LIMIT`], until `condition` holds: polled, as it is another party's
/// state with nothing to await.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "{what}: not within {WAIT_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_timeout() -> String {
    format!("proxy_read_timeout {}s;", READ_TIMEOUT.as_secs())
}

/// GETs `url` and checks that it is answered with 200. A buffering proxy would hold back even
/// the response head (see the control test), so the wait for it is bounded.
async fn open(url: &str) -> Response<Incoming> {
    let request = Request::get(url)
        .body(Full::default())
        .expect("valid request");
    let response = timeout(WAIT_LIMIT, client().request(request))
        .await
        .unwrap_or_else(|_| panic!("no response head within {WAIT_LIMIT:?}"))
        .expect("subscribe request");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// An event stream read with the same parser as [`test_support::http_client::events`], but
/// which reports a cut stream as an error instead of panicking, and counts the keep-alives.
struct RawEvents {
    events: Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>,
    /// `: keep-alive` comments received.
    keep_alives: Arc<AtomicUsize>,
}

impl RawEvents {
    async fn open(url: &str) -> Self {
        let response = open(url).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let keep_alives = Arc::new(AtomicUsize::new(0));
        let counted = keep_alives.clone();
        let events = response
            .into_body()
            .into_data_stream()
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    let comments = chunk
                        .windows(b": keep-alive".len())
                        .filter(|window| *window == b": keep-alive")
                        .count();
                    counted.fetch_add(comments, Ordering::Relaxed);
                }
            })
            .eventsource()
            .map(|event| event.map_err(|error| error.to_string()));
        Self {
            events: Box::pin(events),
            keep_alives,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The app and the proxy
// ---------------------------------------------------------------------------------------------

/// The chat example's app on a loopback port, noting the HTTP version of each request it gets.
struct ChatApp {
    hub: Hub,
    server: TestServer,
    versions: Arc<Mutex<Vec<Version>>>,
}

impl ChatApp {
    async fn start(builder: HubBuilder) -> Self {
        let hub = chat::hub(builder);
        let versions = Arc::new(Mutex::new(Vec::new()));
        let noted = versions.clone();
        let app = chat::app(&hub).layer(MapRequestLayer::new(move |request: AxumRequest| {
            noted.lock().unwrap().push(request.version());
            request
        }));
        let server = TestServer::start(&hub, app).await;
        Self {
            hub,
            server,
            versions,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The HTTP versions of the requests so far, each once.
    fn versions_seen(&self) -> Vec<Version> {
        let mut seen = self.versions.lock().unwrap().clone();
        seen.dedup();
        seen
    }
}

/// The `nginx` binary, or `None` (after a skip notice) when it is not installed and `CI` is not
/// set.
fn nginx_program() -> Option<PathBuf> {
    test_support::tools::require_also_in(
        &["nginx"],
        &["/usr/sbin", "/usr/local/sbin", "/sbin"],
        "install nginx (Debian: apt-get install nginx)",
    )
    .map(|mut found| found.remove(0))
}

/// An `nginx` in the foreground, one process, on a free loopback port, with everything it writes
/// in a directory of its own. Killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx with `http_extra` in its `http` block and `server_extra` in the one server,
    /// and waits until it accepts connections.
    async fn start(program: &Path, http_extra: &str, server_extra: &str) -> Self {
        let port = common::free_port();
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-pubsub-nginx-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory for nginx");
        let path = |name: &str| dir.join(name).display().to_string();
        let config = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {error_log} info;
events {{ worker_connections 64; }}
http {{
    access_log {access_log};
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        {server_extra}
    }}
}}
",
            pid = path("nginx.pid"),
            error_log = path("error.log"),
            access_log = path("access.log"),
            body = path("client_body"),
            proxy = path("proxy"),
            fastcgi = path("fastcgi"),
            uwsgi = path("uwsgi"),
            scgi = path("scgi"),
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("write nginx.conf");
        let stderr = std::fs::File::create(dir.join("stderr.log")).expect("nginx's stderr file");
        let child = Command::new(program)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            // Errors before the configuration is read go here instead of the packaged default.
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self { child, port, dir };
        nginx.wait_until_listening().await;
        nginx
    }

    /// Waiting for another process to come up: there is no event to await, so poll for a
    /// connection within a bound, failing at once with nginx's own words if it exits.
    async fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("nginx's status") {
                panic!(
                    "nginx exited ({status}) instead of listening:\n{}{}",
                    std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default(),
                    self.error_log()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "nginx did not listen on port {} within {START_LIMIT:?}:\n{}",
                self.port,
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
