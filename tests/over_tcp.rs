//! End to end over real TCP: an axum app with its own routes, state and the layer, a hyper
//! client, and a spec-compliant SSE parser on the receiving side.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::http::{TestServer, get_text, next_event, post_form, subscribe};
use futures::StreamExt;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_sse_pubsub::{Hub, MemoryBroker, Publisher};

#[derive(Clone)]
struct AppState {
    visits: Arc<AtomicUsize>,
    publisher: Publisher,
}

fn app(hub: &Hub) -> Router {
    let state = AppState {
        visits: Arc::new(AtomicUsize::new(0)),
        publisher: hub.publisher(),
    };
    Router::new()
        .route(
            "/visits",
            get(|State(state): State<AppState>| async move {
                (state.visits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
            }),
        )
        .route(
            "/announce",
            post(
                |State(state): State<AppState>, Json(body): Json<serde_json::Value>| async move {
                    match state.publisher.publish_json("news", &body).await {
                        Ok(id) => (StatusCode::CREATED, id.to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                    }
                },
            ),
        )
        .with_state(state)
        .layer(hub.layer())
}

fn open_hub() -> Hub {
    Hub::builder()
        .allow_anonymous_publish()
        .build()
        .expect("valid hub")
}

#[tokio::test]
async fn app_routes_state_and_the_layer_work_side_by_side() {
    let hub = open_hub();
    let server = TestServer::start(&hub, app(&hub)).await;
    assert_eq!(
        get_text(&server.url("/visits")).await,
        (StatusCode::OK, "1".into())
    );
    assert_eq!(
        get_text(&server.url("/visits")).await,
        (StatusCode::OK, "2".into())
    );
    assert_eq!(
        get_text(&server.url("/nope")).await.0,
        StatusCode::NOT_FOUND
    );

    let mut news = subscribe(&server.url("/events?topic=news"), None).await;
    // Over HTTP, through the publish endpoint.
    let (status, id) = post_form(&server.url("/publish"), "topic=news&data=hello&event=note").await;
    assert_eq!(status, StatusCode::OK);
    let event = next_event(&mut news).await;
    assert_eq!(
        (event.event.as_str(), event.data.as_str(), event.id.as_str()),
        ("note", "hello", id.as_str())
    );

    // From a handler of the app, through the publisher in its state.
    let request = http::Request::post(server.url("/announce"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"headline":"hi"}"#,
        )))
        .expect("valid request");
    let response = common::http::client()
        .request(request)
        .await
        .expect("announce");
    assert_eq!(response.status(), StatusCode::CREATED);
    let event = next_event(&mut news).await;
    assert_eq!(event.data, r#"{"headline":"hi"}"#);
}

#[tokio::test]
async fn a_reconnecting_client_resumes_without_gaps_or_duplicates() {
    let hub = open_hub();
    let server = TestServer::start(&hub, app(&hub)).await;
    let publish = |data: &'static str| {
        let url = server.url("/publish");
        async move {
            let (status, id) = post_form(&url, &format!("topic=feed&data={data}")).await;
            assert_eq!(status, StatusCode::OK);
            id
        }
    };
    let url = server.url("/events?topic=feed");
    let mut first = subscribe(&url, None).await;
    publish("one").await;
    publish("two").await;
    assert_eq!(next_event(&mut first).await.data, "one");
    let seen = next_event(&mut first).await;
    assert_eq!(seen.data, "two");
    drop(first);

    publish("three").await;
    publish("four").await;
    // The header, as EventSource sends it on reconnect.
    let mut resumed = subscribe(&url, Some(&seen.id)).await;
    publish("five").await;
    let data: Vec<String> = [
        next_event(&mut resumed).await,
        next_event(&mut resumed).await,
        next_event(&mut resumed).await,
    ]
    .into_iter()
    .map(|e| e.data)
    .collect();
    assert_eq!(data, ["three", "four", "five"]);

    // The query parameter, for a first connect that cannot set headers.
    let mut by_query = subscribe(&format!("{url}&lastEventID={}", seen.id), None).await;
    assert_eq!(next_event(&mut by_query).await.data, "three");
}

#[tokio::test]
async fn graceful_shutdown_completes_while_streams_are_open() {
    let hub = open_hub();
    let mut server = TestServer::start(&hub, app(&hub)).await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(subscribe(&server.url("/events?topic=a"), None).await);
    }
    assert_eq!(hub.subscriber_count(), 5);
    server.stop();
    let finished = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await;
    let served = finished.expect("graceful shutdown completes promptly");
    served.expect("server task").expect("server ran cleanly");
    for mut stream in streams {
        let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        assert!(
            end.expect("the stream ends").is_none(),
            "no more events after shutdown"
        );
    }
    assert_eq!(hub.subscriber_count(), 0);
}

/// A client that subscribes to `topic` with a small receive buffer, reads the response head and
/// the opening comment (sent once the subscription is registered), and never reads again.
async fn open_stalled(addr: std::net::SocketAddr, topic: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stalled = socket.connect(addr).await.expect("connect");
    let request = format!("GET /events?topic={topic} HTTP/1.1\r\nhost: test\r\n\r\n");
    stalled
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut head = Vec::new();
    while !head.ends_with(b": ok\n\n") {
        let mut byte = [0u8; 1];
        stalled.read_exact(&mut byte).await.expect("response head");
        head.push(byte[0]);
    }
    stalled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_neither_delays_the_others_nor_grows_memory() {
    const QUEUE: usize = 64;
    const EVENTS: usize = 2_048;
    let broker = MemoryBroker::builder().subscriber_queue(QUEUE).build();
    let hub = Hub::builder()
        .broker(broker.clone())
        .allow_anonymous_publish()
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, app(&hub)).await;

    let stalled = open_stalled(server.addr, "load").await;

    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(subscribe(&server.url("/events?topic=load"), None).await);
    }
    assert_eq!(broker.topic_subscriptions(), 4);

    // The publisher runs in batches of half a queue and waits for the fast readers after each,
    // so they never fall behind; only the stalled client does.
    let batch = QUEUE / 2;
    let batch_done = Arc::new(tokio::sync::Barrier::new(readers.len() + 1));
    let payload = "x".repeat(4 * 1024);
    let publisher = hub.publisher();
    let consumers: Vec<_> = readers
        .into_iter()
        .map(|mut events| {
            let batch_done = batch_done.clone();
            tokio::spawn(async move {
                let mut received = 0;
                while received < EVENTS {
                    next_event(&mut events).await;
                    received += 1;
                    if received % batch == 0 {
                        batch_done.wait().await;
                    }
                }
                (received, events)
            })
        })
        .collect();
    for published in 1..=EVENTS {
        publisher
            .publish_text("load", payload.as_str())
            .await
            .expect("publish");
        if published % batch == 0 {
            batch_done.wait().await;
        }
    }
    let mut still_open = Vec::new();
    for consumer in consumers {
        let (received, events) = consumer.await.expect("reader");
        assert_eq!(received, EVENTS, "every fast reader got every event");
        still_open.push(events);
    }
    // 8 MiB went out; the stalled client could hold a little of that in socket buffers and one
    // chunk in hyper's. Nothing else is kept for it: it holds a position in the topic's log, and
    // the log (shared by every reader) stays within its bound of history and lag window.
    assert_eq!(
        broker.topic_subscriptions(),
        4,
        "the stalled one holds only a position"
    );
    let frame = payload.len() + 64;
    assert!(
        broker.retained_bytes() <= 1_000 * frame,
        "the log stays bounded: {} bytes",
        broker.retained_bytes()
    );
    drop(stalled);
}

#[tokio::test]
async fn plain_hyper_serves_the_layer_and_shuts_down_gracefully() {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let hub = open_hub();
    let service = tower::ServiceBuilder::new()
        .layer(hub.layer())
        .service(tower::service_fn(
            |_request: http::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"from hyper"),
                )))
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let connections = GracefulShutdown::new();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let server_hub = hub.clone();
    let server = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted.expect("accept");
                    let connection = http1::Builder::new().serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(service.clone()),
                    );
                    let connection = connections.watch(connection);
                    tokio::spawn(connection);
                }
                _ = &mut stopped => break,
            }
        }
        server_hub.shutdown();
        connections.shutdown().await;
    });

    let url = |path: &str| format!("http://{addr}{path}");
    assert_eq!(
        get_text(&url("/")).await,
        (StatusCode::OK, "from hyper".into())
    );
    let mut events = subscribe(&url("/events?topic=a"), None).await;
    let (status, _) = post_form(&url("/publish"), "topic=a&data=hi").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_event(&mut events).await.data, "hi");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("graceful shutdown completes with a stream open")
        .expect("server task");
    let end = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(end.expect("the stream ends").is_none());
}

/// Serves `app(hub)` with `deadlines` on every connection, and the client address as
/// `ConnectInfo` (which a wrapped listener must still provide).
#[cfg(feature = "axum")]
async fn serve_with(
    hub: &Hub,
    deadlines: tower_sse_pubsub::ConnectionDeadlines,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let app = app(hub).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener = deadlines.listener(listener);
    (
        addr,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    )
}

/// Reads until the server closes the connection; returns how long that took.
#[cfg(feature = "axum")]
async fn time_until_closed(stream: &mut tokio::net::TcpStream) -> Duration {
    let started = tokio::time::Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("the server closed the connection in time");
        if matches!(read, Ok(0) | Err(_)) {
            return started.elapsed();
        }
    }
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_and_trickled_requests_are_closed_at_their_deadline() {
    use tower_sse_pubsub::ConnectionDeadlines;

    let hub = open_hub();
    let limit = Duration::from_millis(300);
    let deadlines = ConnectionDeadlines::new()
        .unanswered(limit)
        .idle(Duration::from_secs(30));
    let (addr, server) = serve_with(&hub, deadlines).await;

    // Headers that never end.
    let mut unfinished = tokio::net::TcpStream::connect(addr).await.expect("connect");
    unfinished
        .write_all(b"GET /visits HTTP/1.1\r\nhost: test\r\n")
        .await
        .expect("send");
    let waited = time_until_closed(&mut unfinished).await;
    assert!(waited >= limit - Duration::from_millis(50), "{waited:?}");

    // Headers trickled a line every 50 ms, forever: the bytes keep coming (so the connection
    // is never idle), but the request never completes.
    let mut trickled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut read_half, mut write_half) = trickled.split();
    let trickle = async {
        write_half
            .write_all(b"GET /visits HTTP/1.1\r\n")
            .await
            .expect("send");
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write_half.write_all(b"x-slow: 1\r\n").await.is_err() {
                return;
            }
        }
    };
    let closed = async {
        let mut buffer = [0u8; 64];
        let started = tokio::time::Instant::now();
        while !matches!(read_half.read(&mut buffer).await, Ok(0) | Err(_)) {}
        started.elapsed()
    };
    let waited = tokio::select! {
        waited = closed => waited,
        () = trickle => panic!("the trickle stopped before the connection closed"),
    };
    assert!(
        waited >= limit - Duration::from_millis(50) && waited < Duration::from_secs(10),
        "{waited:?}"
    );

    // A complete request is answered as usual, and the app's routes still work.
    assert_eq!(
        get_text(&format!("http://{addr}/visits")).await,
        (StatusCode::OK, "1".into())
    );
    server.abort();
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_but_quiet_event_streams_stay_open() {
    use tower_sse_pubsub::ConnectionDeadlines;

    // Keep-alive comments every second at most: a stream is never silent for longer, so an
    // idle limit of 1.5 s never ends it.
    let hub = Hub::builder()
        .keep_alive(Duration::from_secs(1))
        .build()
        .expect("valid hub");
    let idle = Duration::from_millis(1500);
    let (addr, server) = serve_with(&hub, ConnectionDeadlines::new().idle(idle)).await;

    // One request, answered, then nothing: the keep-alive connection is closed once idle.
    let mut keep_alive = tokio::net::TcpStream::connect(addr).await.expect("connect");
    keep_alive
        .write_all(b"GET /visits HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("send");
    let mut stream = open_stalled(addr, "quiet").await;
    let waited = time_until_closed(&mut keep_alive).await;
    assert!(waited >= idle - Duration::from_millis(100), "{waited:?}");

    // The event stream, opened at the same time and read all along, is still open: it has
    // received keep-alive comments and is served.
    assert_eq!(hub.subscriber_count(), 1);
    let mut seen = Vec::new();
    while !seen.windows(13).any(|w| w == b": keep-alive\n") {
        let mut buffer = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("a keep-alive in time")
            .expect("read");
        assert!(read > 0, "the stream was closed");
        seen.extend_from_slice(&buffer[..read]);
    }
    assert_eq!(hub.subscriber_count(), 1);
    server.abort();
}

#[cfg(feature = "axum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_its_slot_released() {
    use tower_sse_pubsub::ConnectionDeadlines;

    let hub = open_hub();
    let deadlines = ConnectionDeadlines::new().stalled_write(Duration::from_millis(300));
    let (addr, server) = serve_with(&hub, deadlines).await;

    let stalled = open_stalled(addr, "feed").await;
    let mut fast = subscribe(&format!("http://{addr}/events?topic=feed"), None).await;
    assert_eq!(hub.subscriber_count(), 2);

    // Enough to fill the stalled client's socket buffers many times over.
    let payload = "x".repeat(32 * 1024);
    let publisher = hub.publisher();
    for _ in 0..200 {
        publisher
            .publish_text("feed", payload.as_str())
            .await
            .expect("publish");
        assert_eq!(next_event(&mut fast).await.data.len(), payload.len());
    }
    // The server ends the stalled connection once a write has waited 300 ms; wait for that,
    // bounded, by watching the slot count.
    let waited = tokio::time::Instant::now();
    while hub.subscriber_count() > 1 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the stalled stream was never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hub.subscriber_count(), 1, "only the fast reader is left");
    // The fast reader is unaffected.
    publisher
        .publish_text("feed", "after")
        .await
        .expect("publish");
    assert_eq!(next_event(&mut fast).await.data, "after");
    // Held open (never read) until here: the server, not the client, ended its stream.
    drop(stalled);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_route_streams_the_topics_of_its_session_with_resume() {
    use axum::extract::Request;
    use axum::http::request::Parts;
    use axum::middleware::{self, Next};
    use tower_sse_pubsub::{EventsBody, Topic};

    /// What a login middleware would put in the request; here, from a header.
    #[derive(Clone)]
    struct Session(String);

    async fn login(mut request: Request, next: Next) -> axum::response::Response {
        let user = request
            .headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(user) = user {
            request.extensions_mut().insert(Session(user));
        }
        next.run(request).await
    }

    async fn live(State(hub): State<Hub>, parts: Parts) -> http::Response<EventsBody> {
        let session = parts.extensions.get::<Session>().cloned();
        let topics = session.and_then(|Session(user)| Topic::new(format!("todos/{user}")).ok());
        hub.stream_topics(&parts, topics).await
    }

    let hub = Hub::builder()
        .max_subscribers(2)
        .build()
        .expect("valid hub");
    let app = Router::new()
        .route("/todos/live", get(live))
        .with_state(hub.clone())
        .layer(middleware::from_fn(login))
        .layer(hub.layer());
    let server = TestServer::start(&hub, app).await;
    let open = |user: Option<&str>, last: Option<&str>, query: &str| {
        let mut request = http::Request::get(server.url(&format!("/todos/live{query}")));
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .expect("valid request")
    };
    let client = test_support::http_client::client();

    // Ada's stream carries her topic, whatever topics the query names.
    let response = client
        .request(open(Some("ada"), None, "?topic=todos/bob"))
        .await
        .expect("request");
    let mut ada = test_support::http_client::events(response);
    let publisher = hub.publisher();
    publisher
        .publish_text("todos/bob", "not for ada")
        .await
        .expect("publish");
    let first = publisher
        .publish_text("todos/ada", "buy milk")
        .await
        .expect("publish");
    let event = next_event(&mut ada).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first.as_str(), "buy milk")
    );
    publisher
        .publish_text("todos/ada", "walk the dog")
        .await
        .expect("publish");
    assert_eq!(next_event(&mut ada).await.data, "walk the dog");

    // Reconnecting with the last id it saw, it gets what it missed.
    let response = client
        .request(open(Some("ada"), Some(first.as_str()), ""))
        .await
        .expect("request");
    let mut resumed = test_support::http_client::events(response);
    assert_eq!(next_event(&mut resumed).await.data, "walk the dog");

    // No session, no topics: a 400 with a reason, not an empty stream. Full: the 503 of the hub.
    let response = client.request(open(None, None, "")).await.expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = client
        .request(open(Some("cy"), None, ""))
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let stats = hub.stats();
    assert_eq!(
        (stats.streams_opened, stats.resumes.complete),
        (2, 1),
        "{stats:?}"
    );
}
