//! Many event streams from one page: HTTP/2 over TLS in headless Chromium, with HTTP/1.1 as the
//! control.
//!
//! **What.** On HTTP/1.1 a browser opens at most six connections per origin and an
//! `EventSource` holds one for as long as it is open, so the seventh stream of a page waits.
//! HTTP/2 carries every stream on one connection. Each test serves the chat app through the
//! example's TLS mode (`TLS=1 cargo run --features axum --example chat`, the same code:
//! `examples/chat/tls.rs`) on a certificate generated for the test, which the browser is told
//! to trust by its key's hash. A page opens eight `EventSource`s, one per topic. Over HTTP/2
//! all eight open, each receives what is published to its topic, and the server sees all eight
//! requests as HTTP/2 from one client address and port: one TCP connection. The control offers
//! only HTTP/1.1 in ALPN: the same page gets six streams on six connections, the other two wait
//! until two of the six close. That the control shows the limit proves the first test measures
//! something real.
//!
//! **How to run.** `cargo test --test http2` (add `-- --nocapture` to see a skip notice).
//!
//! **What it needs.** `chromium` and `chromedriver` on `PATH`, as the other browser tests
//! (`tests/browser.rs`): when either is missing the tests skip, unless `CI` is set, where they
//! fail. Every wait polls with a bound ([`WAIT_LIMIT`]) and fails with what it saw.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Html;
use axum::routing::get;
use common::chat;
use common::chat::tls::{self, Certificate, Protocols};
use http::{Request, Version};
use serde::Deserialize;
use serde_json::json;
use test_support::WAIT_LIMIT;
use test_support::browser::{Browser, ChromeDriver, POLL_INTERVAL, browser_tools};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tower::util::MapRequestLayer;
use tower_sse_pubsub::{ConnectionDeadlines, Hub};

/// Streams the page opens: more than the six connections per origin a browser allows itself
/// on HTTP/1.1.
const STREAMS: usize = 8;
/// Chromium's limit of HTTP/1.1 connections per origin.
const HTTP1_CONNECTIONS_PER_ORIGIN: usize = 6;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Over HTTP/2, eight streams from one page all open on one connection, and each receives.
#[tokio::test]
async fn eight_event_streams_in_one_page_share_one_http2_connection() {
    let Some(tools) = browser_tools() else { return };
    let mut server = TlsServer::start(Protocols::Http2AndHttp1).await;
    let driver = ChromeDriver::start(&tools).await;
    let page = StreamsPage::open(&driver, &server).await;

    let opened = page.wait_until_open(STREAMS).await;
    assert_eq!(opened.len(), STREAMS, "every stream opens: {opened:?}");
    assert_eq!(server.hub.subscriber_count(), STREAMS);
    let per_topic = server.hub.open_streams_per_topic();
    assert_eq!(
        per_topic.len(),
        STREAMS,
        "one stream per topic: {per_topic:?}"
    );
    assert!(per_topic.iter().all(|(_, streams)| *streams == 1));

    for topic in topics() {
        server.publish_to(&topic).await;
    }
    let streams = page.wait_until_received(&topics()).await;
    for stream in &streams {
        assert_eq!(
            stream.received,
            [event_for(&stream.topic)],
            "{} receives its own event, once",
            stream.topic
        );
    }

    // The server's view: eight event-stream requests, all HTTP/2, all from one client address
    // and port, so on one TCP connection; the page itself came the same way.
    let seen = server.seen();
    let streams_seen: Vec<&Seen> = seen.iter().filter(|s| s.path == "/events").collect();
    assert_eq!(streams_seen.len(), STREAMS, "seen: {seen:?}");
    assert!(
        streams_seen.iter().all(|s| s.version == Version::HTTP_2),
        "every stream is served over HTTP/2: {streams_seen:?}"
    );
    let connections: BTreeSet<SocketAddr> = streams_seen.iter().map(|s| s.peer).collect();
    assert_eq!(
        connections.len(),
        1,
        "all streams share one connection: {connections:?}"
    );
    let page_request = seen
        .iter()
        .find(|s| s.path == "/streams")
        .expect("the page was requested");
    assert_eq!(page_request.version, Version::HTTP_2);
    assert!(connections.contains(&page_request.peer));
    assert_eq!(
        page.protocol().await,
        "h2",
        "the browser's view of the page"
    );

    // Graceful shutdown completes with the eight streams open: the hub ends them, and the one
    // connection closes.
    server.stop().await;

    // The browser's view of each stream, which its resource timing holds once a stream ends.
    let protocols = page.stream_protocols().await;
    assert_eq!(
        protocols,
        topics()
            .into_iter()
            .map(|topic| (topic, "h2".to_owned()))
            .collect::<Vec<_>>(),
        "the browser fetched every stream over HTTP/2"
    );
    page.0.quit().await;
}

/// The control: over HTTP/1.1 the same page gets six streams, on six connections, and the
/// other two wait until two of the six close.
#[tokio::test]
async fn over_http1_a_page_gets_six_event_streams_and_the_rest_wait() {
    let Some(tools) = browser_tools() else { return };
    let mut server = TlsServer::start(Protocols::Http1Only).await;
    let driver = ChromeDriver::start(&tools).await;
    let page = StreamsPage::open(&driver, &server).await;

    let opened = page.wait_until_open(HTTP1_CONNECTIONS_PER_ORIGIN).await;
    assert_eq!(
        opened.len(),
        HTTP1_CONNECTIONS_PER_ORIGIN,
        "six streams open, no more: {opened:?}"
    );
    assert_eq!(server.hub.subscriber_count(), HTTP1_CONNECTIONS_PER_ORIGIN);

    // A round trip through every open stream: whatever was going to open has had the time.
    for topic in topics() {
        server.publish_to(&topic).await;
    }
    let streams = page.wait_until_received(&opened).await;
    let waiting: Vec<&StreamState> = streams.iter().filter(|s| !s.opened).collect();
    assert_eq!(
        waiting.len(),
        STREAMS - HTTP1_CONNECTIONS_PER_ORIGIN,
        "two streams wait: {streams:?}"
    );
    for stream in &waiting {
        assert_eq!(
            stream.ready_state, 0,
            "{} is still connecting",
            stream.topic
        );
        assert!(
            stream.received.is_empty(),
            "{} received nothing",
            stream.topic
        );
    }
    assert_eq!(server.hub.subscriber_count(), HTTP1_CONNECTIONS_PER_ORIGIN);

    let seen = server.seen();
    let streams_seen: Vec<&Seen> = seen.iter().filter(|s| s.path == "/events").collect();
    assert_eq!(
        streams_seen.len(),
        HTTP1_CONNECTIONS_PER_ORIGIN,
        "the server saw six stream requests: {seen:?}"
    );
    assert!(streams_seen.iter().all(|s| s.version == Version::HTTP_11));
    let connections: BTreeSet<SocketAddr> = streams_seen.iter().map(|s| s.peer).collect();
    assert_eq!(
        connections.len(),
        HTTP1_CONNECTIONS_PER_ORIGIN,
        "one connection per stream: {connections:?}"
    );
    assert_eq!(page.protocol().await, "http/1.1");

    // They were waiting for a connection, not failing: close two and the two waiting open.
    let closed = page.close_two_open_streams().await;
    let waiting: Vec<String> = waiting.iter().map(|s| s.topic.clone()).collect();
    let opened = page.wait_until_open(HTTP1_CONNECTIONS_PER_ORIGIN).await;
    for topic in &waiting {
        assert!(
            opened.contains(topic),
            "{topic} opened once two closed ({closed:?})"
        );
    }
    for topic in &waiting {
        server.publish_to(topic).await;
    }
    let streams = page.wait_until_received(&waiting).await;
    for stream in streams.iter().filter(|s| waiting.contains(&s.topic)) {
        assert_eq!(stream.received, [event_for(&stream.topic)]);
    }

    server.stop().await;
    page.0.quit().await;
}

// ---------------------------------------------------------------------------------------------
// The server: the chat app over the example's TLS mode, recording the requests it serves
// ---------------------------------------------------------------------------------------------

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    version: Version,
    /// The client's address and port: one per TCP connection.
    peer: SocketAddr,
}

/// The chat app with the streams page, served over TLS by the example's code.
struct TlsServer {
    hub: Hub,
    addr: SocketAddr,
    /// The SPKI hash of the server's certificate, for the browser to trust.
    spki: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TlsServer {
    async fn start(protocols: Protocols) -> Self {
        let hub = chat::hub(Hub::builder().count_streams_per_topic());
        let certificate = Certificate::self_signed().expect("a certificate for the test");
        let config = certificate
            .server_config(protocols)
            .expect("a TLS configuration");
        let spki = certificate
            .spki_sha256()
            .expect("the certificate's SPKI hash");

        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = {
            let seen = seen.clone();
            move |request: Request<Body>| {
                let peer = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .expect("the TLS server gives every request the client's address")
                    .0;
                seen.lock().expect("seen list").push(Seen {
                    path: request.uri().path().to_owned(),
                    version: request.version(),
                    peer,
                });
                request
            }
        };
        let app = chat::app(&hub)
            .route("/streams", get(|| async { Html(STREAMS_PAGE) }))
            .layer(MapRequestLayer::new(record));

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = {
            let hub = hub.clone();
            async move {
                let _ = stopped.await;
                hub.shutdown();
            }
        };
        let task = tokio::spawn(tls::serve(
            listener,
            config,
            app,
            ConnectionDeadlines::new(),
            shutdown,
        ));
        Self {
            hub,
            addr,
            spki,
            seen,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen list").clone()
    }

    async fn publish_to(&self, topic: &str) {
        self.hub
            .publisher()
            .publish_text(topic, event_for(topic))
            .await
            .expect("publish");
    }

    /// Shuts down gracefully and waits for it: the hub ends the streams, then the connections
    /// close.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(WAIT_LIMIT, &mut self.task)
            .await
            .expect("graceful shutdown completes with streams open")
            .expect("the server task does not panic");
    }
}

fn topics() -> Vec<String> {
    (0..STREAMS).map(|i| format!("stream-{i}")).collect()
}

fn event_for(topic: &str) -> String {
    format!("for {topic}")
}

// ---------------------------------------------------------------------------------------------
// The page: eight EventSources, one per topic
// ---------------------------------------------------------------------------------------------

/// Opens one `EventSource` per topic `stream-0` to `stream-7` and keeps what each sees.
const STREAMS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>eight streams</title>
<script>
window.streams = Array.from({ length: 8 }, (_, i) => {
  const stream = { topic: 'stream-' + i, opened: false, received: [] };
  stream.source = new EventSource('/events?topic=' + stream.topic);
  stream.source.onopen = () => { stream.opened = true; };
  stream.source.onmessage = (event) => { stream.received.push(event.data); };
  return stream;
});
</script>
</html>"#;

/// What the page knows of one stream.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamState {
    topic: String,
    /// `EventSource.readyState`: 0 connecting, 1 open, 2 closed.
    ready_state: u8,
    /// Whether it has ever opened.
    opened: bool,
    received: Vec<String>,
}

const READ_STREAMS: &str = "return window.streams.map((s) => ({
    topic: s.topic, readyState: s.source.readyState, opened: s.opened, received: s.received,
}));";

/// The streams page in one browser window that trusts the server's certificate.
struct StreamsPage(Browser);

impl StreamsPage {
    async fn open(driver: &ChromeDriver, server: &TlsServer) -> Self {
        let trust = format!("--ignore-certificate-errors-spki-list={}", server.spki);
        let browser = driver.new_session_with_args(&[trust]).await;
        browser.navigate(&server.url("/streams")).await;
        let title = browser.execute("return document.title;", json!([])).await;
        assert_eq!(title, "eight streams", "the page loaded over TLS");
        Self(browser)
    }

    async fn streams(&self) -> Vec<StreamState> {
        let value = self.0.execute(READ_STREAMS, json!([])).await;
        serde_json::from_value(value.clone())
            .unwrap_or_else(|error| panic!("unexpected streams report {value}: {error}"))
    }

    /// Waits until at least `count` streams are open, and returns the topics of those open.
    async fn wait_until_open(&self, count: usize) -> Vec<String> {
        self.wait_for(&format!("{count} open streams"), |streams| {
            let open: Vec<String> = streams
                .iter()
                .filter(|s| s.ready_state == 1)
                .map(|s| s.topic.clone())
                .collect();
            (open.len() >= count).then_some(open)
        })
        .await
    }

    /// Waits until every stream of `topics` has received an event, and returns every stream.
    async fn wait_until_received(&self, topics: &[String]) -> Vec<StreamState> {
        self.wait_for(&format!("an event on each of {topics:?}"), |streams| {
            let done = streams
                .iter()
                .filter(|s| topics.contains(&s.topic))
                .all(|s| !s.received.is_empty());
            done.then_some(())
        })
        .await;
        self.streams().await
    }

    /// Closes the first two open streams and returns their topics.
    async fn close_two_open_streams(&self) -> Vec<String> {
        let closed = self
            .0
            .execute(
                "const open = window.streams.filter((s) => s.source.readyState === 1).slice(0, 2);
                 open.forEach((s) => s.source.close());
                 return open.map((s) => s.topic);",
                json!([]),
            )
            .await;
        let closed: Vec<String> = serde_json::from_value(closed).expect("closed topics");
        assert_eq!(closed.len(), 2);
        closed
    }

    /// The protocol the page itself was loaded with, as the browser reports it (`h2`,
    /// `http/1.1`).
    async fn protocol(&self) -> String {
        let protocol = self
            .0
            .execute(
                "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
                json!([]),
            )
            .await;
        protocol.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the browser's resource timing has an entry for every stream (it makes one
    /// when a stream ends), and returns the protocol of each topic's first request, by topic.
    async fn stream_protocols(&self) -> Vec<(String, String)> {
        let script = "const first = new Map();
            for (const entry of performance.getEntriesByType('resource')) {
              const topic = new URL(entry.name).searchParams.get('topic');
              if (topic !== null && !first.has(topic)) first.set(topic, entry.nextHopProtocol);
            }
            return Array.from(first).sort();";
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let value = self.0.execute(script, json!([])).await;
            let protocols: Vec<(String, String)> = serde_json::from_value(value.clone())
                .unwrap_or_else(|error| panic!("unexpected resource report {value}: {error}"));
            if protocols.len() == STREAMS {
                return protocols;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT_LIMIT:?} waiting for the streams' resource timing: {value}"
            );
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls the streams until `accept` takes them, at most [`WAIT_LIMIT`].
    async fn wait_for<T>(&self, what: &str, accept: impl Fn(&[StreamState]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let streams = self.streams().await;
            if let Some(accepted) = accept(&streams) {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT_LIMIT:?} waiting for {what}; the streams: {streams:?}"
            );
            sleep(POLL_INTERVAL).await;
        }
    }
}
