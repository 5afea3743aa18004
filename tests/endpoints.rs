//! The layer's HTTP behaviour, request by request through `oneshot`: routing and pass-through,
//! status codes and reasons, headers, authorization, limits, keep-alive, resync and shutdown.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt, service_fn};
use tower_sse_pubsub::BoxFuture;
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::{
    Access, Allowed, BrokerError, Denied, Event, EventId, Grant, Hub, MemoryBroker, PublishRequest,
    ResponseBody, Selector, SubscribeRequest, Subscription, Topic, authorize_fn,
};

type Body = Full<Bytes>;

/// An inner app that echoes what reached it, so pass-through can be checked field by field.
#[derive(Clone, Debug)]
struct Marker(&'static str);

async fn echo(request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let marker = request.extensions().get::<Marker>().map_or("none", |m| m.0);
    let header = request
        .headers()
        .get("x-test")
        .map_or("none".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let body = request.into_body().collect().await.map(|c| c.to_bytes());
    let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
    let text = format!("{method} {uri} header={header} ext={marker} body={body}");
    Ok(Response::builder()
        .header("x-inner", "yes")
        .body(Full::new(Bytes::from(text)))
        .expect("valid response"))
}

fn app(
    hub: &Hub,
) -> impl Service<
    Request<Body>,
    Response = Response<ResponseBody<Body>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::ServiceBuilder::new()
        .layer(hub.layer())
        .service(service_fn(echo))
}

fn open_hub() -> Hub {
    Hub::builder()
        .allow_anonymous_publish()
        .build()
        .expect("valid hub")
}

async fn call(hub: &Hub, request: Request<Body>) -> Response<ResponseBody<Body>> {
    app(hub).oneshot(request).await.expect("infallible")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::default())
        .expect("valid request")
}

fn post(uri: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request")
}

fn form(body: &str) -> Request<Body> {
    post("/publish", "application/x-www-form-urlencoded", body)
}

async fn text_of(response: Response<ResponseBody<Body>>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body reads")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

/// The next chunk of a streaming body, failing instead of hanging.
async fn next_chunk(body: &mut ResponseBody<Body>) -> Option<String> {
    next_chunk_within(body, Duration::from_secs(10)).await
}

/// As [`next_chunk`], with a deadline; under paused time it must exceed the timers under test,
/// since the clock jumps straight to the earliest one.
async fn next_chunk_within(body: &mut ResponseBody<Body>, deadline: Duration) -> Option<String> {
    let frame = tokio::time::timeout(deadline, body.frame())
        .await
        .expect("a chunk in time")?
        .expect("no body error");
    let data = frame.into_data().expect("a data frame");
    Some(String::from_utf8(data.to_vec()).expect("UTF-8 chunk"))
}

/// Whether a stream has nothing more to send right now (it stays open, silent, for 20 ms).
async fn is_quiet(body: &mut ResponseBody<Body>) -> bool {
    tokio::time::timeout(Duration::from_millis(20), body.frame())
        .await
        .is_err()
}

async fn assert_refused(hub: &Hub, request: Request<Body>, status: StatusCode, reason: &str) {
    let response = call(hub, request).await;
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = text_of(response).await;
    assert!(body.contains(reason), "{body:?} should contain {reason:?}");
}

#[tokio::test]
async fn other_requests_reach_the_inner_service_untouched() {
    let hub = open_hub();
    let mut request = Request::put("/api/things?x=1")
        .header("x-test", "kept")
        .body(Full::new(Bytes::from_static(b"payload")))
        .expect("valid request");
    request.extensions_mut().insert(Marker("kept"));
    let response = call(&hub, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-inner"], "yes");
    assert_eq!(
        text_of(response).await,
        "PUT /api/things?x=1 header=kept ext=kept body=payload"
    );
    // A path that only starts like ours is not ours.
    let response = call(&hub, get("/events/extra?topic=a")).await;
    assert_eq!(response.headers()["x-inner"], "yes");
}

#[tokio::test]
async fn subscribe_answers_with_an_open_event_stream() {
    let hub = open_hub();
    let response = call(&hub, get("/events?topic=chat")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-length").is_none());
    assert!(headers.get("sse-resume").is_none());
    let mut body = response.into_body();
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some(": ok\n\n"));

    let id = hub
        .publisher()
        .publish_text("chat", "hello")
        .await
        .expect("publish");
    let frame = next_chunk(&mut body).await.expect("a frame");
    assert_eq!(frame, format!("id: {id}\ndata: hello\n\n"));
    assert_eq!(hub.subscriber_count(), 1);
    drop(body);
    assert_eq!(hub.subscriber_count(), 0);
}

#[tokio::test]
async fn bad_subscribe_requests_get_400_with_a_reason() {
    let hub = Hub::builder()
        .max_topics_per_request(2)
        .build()
        .expect("valid hub");
    let long = "x".repeat(1025);
    let cases = [
        ("/events".to_owned(), "no topic"),
        ("/events?topic=".to_owned(), "topic must be 1..=1024 bytes"),
        ("/events?topic=a%0Ab".to_owned(), "control characters"),
        (
            format!("/events?topic={long}"),
            "topic must be 1..=1024 bytes",
        ),
        ("/events?topic=a&topic=b&topic=c".to_owned(), "at most 2"),
        ("/events?topic=%FF".to_owned(), "not valid UTF-8"),
    ];
    for (uri, reason) in cases {
        assert_refused(&hub, get(&uri), StatusCode::BAD_REQUEST, reason).await;
    }
}

#[tokio::test]
async fn an_unusable_resume_id_opens_the_stream_with_a_resync_notice() {
    let hub = open_hub();
    let long = "x".repeat(1025);
    let mut requests = vec![
        get("/events?topic=a&lastEventID=a%0Ab"),
        get(&format!("/events?topic=a&last_event_id={long}")),
        get("/events?topic=a&lastEventID=nul%00"),
    ];
    let mut with_header = get("/events?topic=a");
    with_header.headers_mut().insert(
        "last-event-id",
        HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid header value"),
    );
    requests.push(with_header);
    for request in requests {
        let uri = request.uri().clone();
        let response = call(&hub, request).await;
        // A 400 would end a browser's EventSource for good.
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(response.headers()["sse-resume"], "unknown", "{uri}");
        let mut body = response.into_body();
        let opening = next_chunk(&mut body).await.expect("opening");
        assert!(opening.contains("event: resync\n"), "{uri}: {opening:?}");
        assert!(
            opening.contains(r#""lastEventId":null"#),
            "{uri}: {opening:?}"
        );
    }
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let hub = open_hub();
    let response = call(&hub, post("/events?topic=a", "text/plain", "x")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let response = call(&hub, get("/publish")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");

    let shared = Hub::builder()
        .events_path("/hub")
        .publish_path("/hub")
        .allow_anonymous_publish()
        .build()
        .expect("valid hub");
    let response = call(
        &shared,
        Request::delete("/hub").body(Body::default()).expect("req"),
    )
    .await;
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST");
    let response = call(
        &shared,
        post("/hub", "application/json", r#"{"topic":"a","data":"x"}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn publishing_over_http_is_refused_unless_enabled() {
    let hub = Hub::new();
    assert_refused(
        &hub,
        form("topic=a&data=x"),
        StatusCode::FORBIDDEN,
        "allow_anonymous_publish",
    )
    .await;
    // App code can still publish.
    hub.publisher()
        .publish_text("a", "from the app")
        .await
        .expect("publisher needs no HTTP authorization");
}

#[tokio::test]
async fn publish_accepts_form_and_json_and_returns_the_id() {
    let hub = open_hub();
    let mut stream = call(&hub, get("/events?topic=a&topic=b")).await.into_body();
    assert_eq!(next_chunk(&mut stream).await.as_deref(), Some(": ok\n\n"));

    let response = call(
        &hub,
        form("topic=a&data=line1%0Aline2&event=note&retry=2500"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let id = text_of(response).await;
    EventId::new(&id).expect("the reply is the id");
    assert_eq!(
        next_chunk(&mut stream).await.expect("frame"),
        format!("id: {id}\nevent: note\nretry: 2500\ndata: line1\ndata: line2\n\n")
    );

    let response = call(
        &hub,
        post(
            "/publish",
            "application/json; charset=utf-8",
            r#"{"topics":["a","b"],"data":{"user":"ada","n":1}}"#,
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = text_of(response).await;
    assert_eq!(
        next_chunk(&mut stream).await.expect("frame"),
        format!("id: {id}\ndata: {{\"n\":1,\"user\":\"ada\"}}\n\n"),
        "one delivery for an event on both subscribed topics"
    );
}

#[tokio::test]
async fn bad_publish_requests_get_a_clear_status() {
    let hub = Hub::builder()
        .allow_anonymous_publish()
        .max_topics_per_request(2)
        .build()
        .expect("valid hub");
    assert_refused(&hub, form("data=x"), StatusCode::BAD_REQUEST, "no topic").await;
    assert_refused(
        &hub,
        form("topic=a&topic=b&topic=c&data=x"),
        StatusCode::BAD_REQUEST,
        "at most 2",
    )
    .await;
    assert_refused(&hub, form("topic=a"), StatusCode::BAD_REQUEST, "no data").await;
    assert_refused(
        &hub,
        post("/publish", "application/json", "{not json"),
        StatusCode::BAD_REQUEST,
        "invalid JSON",
    )
    .await;
    assert_refused(
        &hub,
        post("/publish", "text/plain", "topic=a&data=x"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "application/json",
    )
    .await;
    let no_type = Request::post("/publish")
        .body(Full::new(Bytes::from_static(b"topic=a&data=x")))
        .expect("valid request");
    assert_refused(
        &hub,
        no_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "missing Content-Type",
    )
    .await;
}

/// A request body that never ends and counts what was read from it.
struct EndlessBody {
    read: Arc<AtomicUsize>,
}

impl http_body::Body for EndlessBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.read.fetch_add(1024, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'a';
            1024
        ])))))
    }
}

#[tokio::test]
async fn oversized_publish_bodies_get_413_without_reading_past_the_limit() {
    let hub = Hub::builder()
        .allow_anonymous_publish()
        .max_body_bytes(4096)
        .build()
        .expect("valid hub");
    // Declared too large: refused before reading anything.
    let read = Arc::new(AtomicUsize::new(0));
    let request = Request::post("/publish")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "1000000")
        .body(EndlessBody { read: read.clone() })
        .expect("valid request");
    let service = tower::ServiceBuilder::new()
        .layer(hub.layer())
        .service(service_fn(|_: Request<EndlessBody>| async {
            Ok::<_, Infallible>(Response::new(Body::default()))
        }));
    let response = service.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read.load(Ordering::SeqCst), 0);

    // No Content-Length (chunked): refused once the limit is passed, and no more is read.
    let read = Arc::new(AtomicUsize::new(0));
    let request = Request::post("/publish")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(EndlessBody { read: read.clone() })
        .expect("valid request");
    let response = service.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(read.load(Ordering::SeqCst) <= 4096 + 1024, "read {read:?}");
}

#[tokio::test]
async fn the_authorizer_sees_the_apps_extensions_and_the_topics() {
    #[derive(Clone)]
    struct User(&'static str);
    let hub = Hub::builder()
        .authorizer(authorize_fn(
            |parts: &http::request::Parts, access: Access, topics: &[Topic]| {
                let user = parts.extensions.get::<User>().map(|u| u.0);
                let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
                async move {
                    match (access, user) {
                        (_, None) => Err(Denied::unauthorized("log in first")
                            .with_challenge(HeaderValue::from_static("Cookie"))),
                        (Access::Publish, Some("admin")) => Ok(()),
                        (Access::Publish, Some(_)) => {
                            Err(Denied::forbidden("only admin publishes"))
                        }
                        (_, Some(_)) if topics.iter().any(|t| t.starts_with("private/")) => {
                            Err(Denied::forbidden("private topic"))
                        }
                        _ => Ok(()),
                    }
                }
            },
        ))
        .build()
        .expect("valid hub");
    let as_user = |mut request: Request<Body>, user: &'static str| {
        request.extensions_mut().insert(User(user));
        request
    };
    let response = call(&hub, get("/events?topic=a")).await;
    assert_eq!(response.headers()["www-authenticate"], "Cookie");
    assert_refused(
        &hub,
        get("/events?topic=a"),
        StatusCode::UNAUTHORIZED,
        "log in first",
    )
    .await;
    let response = call(&hub, as_user(get("/events?topic=a"), "bob")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_refused(
        &hub,
        as_user(get("/events?topic=a&topic=private/x"), "bob"),
        StatusCode::FORBIDDEN,
        "private topic",
    )
    .await;
    assert_refused(
        &hub,
        as_user(form("topic=a&data=x"), "bob"),
        StatusCode::FORBIDDEN,
        "only admin",
    )
    .await;
    let response = call(&hub, as_user(form("topic=a&data=x"), "admin")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A hub whose authorizer grants every subscriber private events on `users/{id}` topics
/// (matched by a selector) and a stream that ends `lifetime` from now.
fn granting_hub(lifetime: Option<Duration>) -> Hub {
    Hub::builder()
        .authorizer(authorize_fn(
            move |_: &http::request::Parts, _: Access, _: &[Topic]| {
                let selectors: Arc<[Selector]> =
                    Arc::from([Selector::new("users/{id}").expect("valid selector")]);
                let mut allowed = Allowed::new().with_grant(Grant::Selectors(selectors));
                if let Some(lifetime) = lifetime {
                    // Wall-clock time: the deadline of a token's `exp`.
                    allowed = allowed.until(std::time::SystemTime::now() + lifetime);
                }
                async move { Ok(allowed) }
            },
        ))
        .build()
        .expect("valid hub")
}

#[tokio::test]
async fn the_authorizers_grant_decides_which_private_events_a_stream_receives() {
    let hub = granting_hub(None);
    let response = call(&hub, get("/events?topic=users/ada&topic=news")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    next_chunk(&mut body).await.expect("the opening comment");
    let publisher = hub.publisher();
    let send = |topic: &str, data: &str, private: bool| {
        let mut request = PublishRequest::new(
            [Topic::new(topic).expect("valid topic")],
            Event::text(data).expect("valid event"),
        );
        if private {
            request = request.private();
        }
        request
    };
    publisher
        .send(&send("news", "private news", true))
        .await
        .expect("publish");
    publisher
        .send(&send("users/ada", "for ada", true))
        .await
        .expect("publish");
    publisher
        .send(&send("news", "public news", false))
        .await
        .expect("publish");
    let mut received = String::new();
    while !received.contains("public news") {
        received.push_str(&next_chunk(&mut body).await.expect("a chunk"));
    }
    assert!(received.contains("data: for ada"), "{received:?}");
    assert!(
        !received.contains("private news"),
        "a private event no selector of the grant matches: {received:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_at_the_authorizers_deadline_and_an_expired_one_is_refused() {
    let hub = granting_hub(Some(Duration::from_secs(600)));
    let response = call(&hub, get("/events?topic=news")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    while let Some(chunk) = next_chunk_within(&mut body, Duration::from_secs(3600)).await {
        last = chunk;
    }
    let lasted = started.elapsed();
    assert!(
        (Duration::from_secs(599)..=Duration::from_secs(601)).contains(&lasted),
        "the stream lasted {lasted:?}"
    );
    assert!(
        last.contains("deadline passed; reconnect with fresh credentials"),
        "{last:?}"
    );
    drop(body);
    assert_eq!(hub.stats().streams_closed.deadline, 1);

    // A deadline already past: 401, as for expired credentials.
    let expired = Hub::builder()
        .authorizer(authorize_fn(
            |_: &http::request::Parts, _: Access, _: &[Topic]| {
                let past = std::time::SystemTime::now() - Duration::from_secs(1);
                async move { Ok(Allowed::new().until(past)) }
            },
        ))
        .build()
        .expect("valid hub");
    let response = call(&expired, get("/events?topic=news")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(text_of(response).await.contains("credentials have expired"));
}

#[tokio::test]
async fn too_many_subscribers_get_503_and_their_connection_is_closed() {
    let hub = Hub::builder()
        .max_subscribers(2)
        .build()
        .expect("valid hub");
    let first = call(&hub, get("/events?topic=a")).await;
    let second = call(&hub, get("/events?topic=b")).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = call(&hub, get("/events?topic=c")).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));
    // A refused client must not keep holding a connection (a file) on a full server.
    assert_eq!(third.headers()["connection"], "close");
    drop(first);
    let again = call(&hub, get("/events?topic=c")).await;
    assert_eq!(again.status(), StatusCode::OK);
}

/// A broker whose backend is down: every call fails as unavailable.
struct DownBroker;

impl Broker for DownBroker {
    fn publish<'a>(&'a self, _: &'a PublishRequest) -> BoxFuture<'a, Result<EventId, BrokerError>> {
        Box::pin(async {
            Err(BrokerError::unavailable(
                "backend down",
                std::io::Error::other("refused"),
            ))
        })
    }

    fn subscribe<'a>(
        &'a self,
        _: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        Box::pin(async {
            Err(BrokerError::unavailable(
                "backend down",
                std::io::Error::other("refused"),
            ))
        })
    }
}

#[tokio::test]
async fn broker_failures_become_503_with_the_reason() {
    let hub = Hub::builder()
        .broker(DownBroker)
        .allow_anonymous_publish()
        .build()
        .expect("valid hub");
    assert_refused(
        &hub,
        form("topic=a&data=x"),
        StatusCode::SERVICE_UNAVAILABLE,
        "backend down",
    )
    .await;
    assert_refused(
        &hub,
        get("/events?topic=a"),
        StatusCode::SERVICE_UNAVAILABLE,
        "backend down",
    )
    .await;
    assert_eq!(
        hub.subscriber_count(),
        0,
        "a failed subscribe holds no slot"
    );
}

/// Publishes the events "0", "1", … to topic `a` and returns the first one's id.
async fn publish_numbered(hub: &Hub, count: usize) -> EventId {
    let publisher = hub.publisher();
    let first = publisher.publish_text("a", "0").await.expect("publish");
    for i in 1..count {
        publisher
            .publish_text("a", i.to_string())
            .await
            .expect("publish");
    }
    first
}

/// A subscribe to topic `a` that resumes after `id`.
fn resuming_after(id: &EventId) -> Request<Body> {
    let mut request = get("/events?topic=a");
    request.headers_mut().insert(
        "last-event-id",
        HeaderValue::from_str(id.as_str()).expect("valid"),
    );
    request
}

#[tokio::test]
async fn expired_resume_point_opens_with_a_resync_event_and_header() {
    let hub = Hub::builder()
        .broker(MemoryBroker::builder().history_per_topic(2).build())
        .build()
        .expect("valid hub");
    let first = publish_numbered(&hub, 5).await;
    let response = call(&hub, resuming_after(&first)).await;
    assert_eq!(response.headers()["sse-resume"], "expired");
    let mut body = response.into_body();
    let opening = next_chunk(&mut body).await.expect("opening");
    assert_eq!(
        opening,
        format!(
            ": ok\n\nevent: resync\ndata: {{\"lastEventId\":\"{first}\",\"reason\":\"expired\"}}\n\n"
        )
    );
    // Then what is retained, the last two, in one write.
    let replay = next_chunk(&mut body).await.expect("replay");
    let (three, four) = (replay.find("data: 3\n"), replay.find("data: 4\n"));
    assert!(three.is_some() && three < four, "{replay:?}");
}

#[tokio::test]
async fn unknown_resume_point_is_flagged_too() {
    let hub = open_hub();
    let response = call(&hub, get("/events?topic=a&lastEventID=from-elsewhere")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["sse-resume"], "unknown");
    let mut body = response.into_body();
    assert!(
        next_chunk(&mut body)
            .await
            .expect("opening")
            .contains("event: resync\n")
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_comments_fill_silence_but_not_busy_streams() {
    let hub = Hub::builder()
        .keep_alive(Duration::from_secs(15))
        .build()
        .expect("valid hub");
    let started = tokio::time::Instant::now();
    let mut body = call(&hub, get("/events?topic=a")).await.into_body();
    assert_eq!(
        next_chunk_within(&mut body, Duration::from_secs(100))
            .await
            .as_deref(),
        Some(": ok\n\n")
    );
    // Idle: a keep-alive after exactly one interval, and again after the next.
    assert_eq!(
        next_chunk_within(&mut body, Duration::from_secs(100))
            .await
            .as_deref(),
        Some(": keep-alive\n\n")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(
        next_chunk_within(&mut body, Duration::from_secs(100))
            .await
            .as_deref(),
        Some(": keep-alive\n\n")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    // Busy: the hub's ticker fires every half interval, and a stream sends a keep-alive on a
    // tick only when it wrote nothing since the one before. An event at 35 s silences the tick
    // at 37.5 s; the keep-alive comes at 45 s, so no silence is ever longer than the interval.
    tokio::time::advance(Duration::from_secs(5)).await;
    hub.publisher()
        .publish_text("a", "x")
        .await
        .expect("publish");
    assert!(
        next_chunk_within(&mut body, Duration::from_secs(100))
            .await
            .expect("event")
            .contains("data: x")
    );
    assert_eq!(
        next_chunk_within(&mut body, Duration::from_secs(100))
            .await
            .as_deref(),
        Some(": keep-alive\n\n")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(45));
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_a_jittered_retry_and_refuses_new_ones() {
    let hub = Hub::builder()
        .shutdown_retry(Duration::from_secs(4))
        .build()
        .expect("valid hub");
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let mut body = call(&hub, get("/events?topic=a")).await.into_body();
        assert_eq!(next_chunk(&mut body).await.as_deref(), Some(": ok\n\n"));
        bodies.push(body);
    }
    hub.shutdown();
    for mut body in bodies {
        let last = next_chunk(&mut body).await.expect("a closing frame");
        let retry: u64 = last
            .strip_prefix("retry: ")
            .and_then(|rest| rest.split('\n').next())
            .and_then(|ms| ms.parse().ok())
            .expect("the closing frame starts with retry");
        assert!(
            (2000..=6000).contains(&retry),
            "retry {retry} within 2..=6 s"
        );
        assert!(!last.contains("id:"), "control frames carry no id");
        assert_eq!(next_chunk(&mut body).await, None, "then the stream ends");
    }
    assert_eq!(hub.subscriber_count(), 0);
    assert_refused(
        &hub,
        get("/events?topic=a"),
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down",
    )
    .await;
}

/// Under a write delay a parked stream is woken once, `delay` after the first frame that reached
/// it, and writes every frame of that window in one chunk; the hub's shutdown still reaches it.
#[tokio::test(start_paused = true)]
async fn a_write_delay_gathers_a_windows_frames_into_one_write() {
    let hub = Hub::builder()
        .allow_anonymous_publish()
        .write_delay(Duration::from_millis(10))
        .build()
        .expect("valid hub");
    let mut body = call(&hub, get("/events?topic=a")).await.into_body();
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some(": ok\n\n"));
    let started = tokio::time::Instant::now();
    // The reader parks on its empty stream, as hyper's connection task would.
    let reader = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(chunk) = next_chunk_within(&mut body, Duration::from_secs(100)).await {
            chunks.push((started.elapsed(), chunk));
        }
        chunks
    });
    // Paused time moves on only once every task is idle: the reader is parked by then.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let publisher = hub.publisher();
    for data in ["one", "two", "three"] {
        publisher.publish_text("a", data).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // The window closed at 11 ms; a frame after it opens the next one.
    tokio::time::sleep(Duration::from_millis(10)).await;
    publisher.publish_text("a", "four").await.expect("publish");
    tokio::time::sleep(Duration::from_millis(20)).await;
    hub.shutdown();
    let chunks = reader.await.expect("reader");
    let data = |chunk: &str| -> Vec<String> {
        chunk
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0].0, Duration::from_millis(11));
    assert_eq!(data(&chunks[0].1), ["one", "two", "three"]);
    assert_eq!(chunks[1].0, Duration::from_millis(30));
    assert_eq!(data(&chunks[1].1), ["four"]);
    assert!(chunks[2].1.starts_with("retry: "), "{:?}", chunks[2]);
}

#[tokio::test]
async fn a_slow_subscriber_gets_a_final_comment_and_its_stream_ends() {
    let broker = MemoryBroker::builder()
        .history_per_topic(8)
        .subscriber_queue(8)
        .build();
    let hub = Hub::builder()
        .broker(broker.clone())
        .build()
        .expect("valid hub");
    let mut slow = call(&hub, get("/events?topic=a")).await.into_body();
    let mut fast = call(&hub, get("/events?topic=a")).await.into_body();
    assert_eq!(next_chunk(&mut fast).await.as_deref(), Some(": ok\n\n"));
    for i in 0..100 {
        hub.publisher()
            .publish_text("a", format!("{i}"))
            .await
            .expect("publish");
        assert!(
            next_chunk(&mut fast)
                .await
                .expect("event")
                .contains(&format!("data: {i}\n"))
        );
    }
    // Nothing was queued for the slow one: it holds a position, which fell out of the topic's
    // log of 8. When it reads again it learns so, and its stream ends.
    assert_eq!(broker.retained_count(), 8);
    let mut chunks = Vec::new();
    while let Some(chunk) = next_chunk(&mut slow).await {
        chunks.push(chunk);
    }
    assert_eq!(chunks.first().map(String::as_str), Some(": ok\n\n"));
    assert_eq!(
        chunks.len(),
        2,
        "opening, then the final comment: {chunks:?}"
    );
    assert!(chunks.last().expect("final").contains("fell behind"));
    drop(slow);
    assert_eq!(broker.topic_subscriptions(), 1, "its place is released");
}

#[tokio::test]
async fn builder_rejects_settings_that_cannot_work() {
    assert!(Hub::builder().events_path("events").build().is_err());
    assert!(Hub::builder().publish_path("/p?x=1").build().is_err());
    let error = Hub::builder()
        .max_body_bytes(0)
        .build()
        .expect_err("zero limit");
    assert_eq!(
        error.to_string(),
        "max_body_bytes must be greater than zero"
    );
    let error = Hub::builder()
        .keep_alive(Duration::from_millis(1))
        .build()
        .expect_err("keep-alive too short");
    assert_eq!(
        error.to_string(),
        "keep_alive must be at least 1 s (or without_keep_alive()), got 1ms"
    );
    assert!(
        Hub::builder()
            .shutdown_retry(Duration::MAX)
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn extreme_but_valid_settings_do_not_panic() {
    let hub = Hub::builder()
        .keep_alive(Duration::MAX)
        .shutdown_retry(Duration::from_secs(3600))
        .broker(MemoryBroker::builder().subscriber_queue(usize::MAX).build())
        .build()
        .expect("valid hub");
    let mut body = call(&hub, get("/events?topic=a")).await.into_body();
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some(": ok\n\n"));
    hub.publisher()
        .publish_text("a", "x")
        .await
        .expect("publish");
    assert!(
        next_chunk(&mut body)
            .await
            .expect("event")
            .contains("data: x")
    );
    hub.shutdown();
    assert!(
        next_chunk(&mut body)
            .await
            .expect("closing")
            .starts_with("retry: ")
    );
}

#[test]
fn handles_are_clone_send_sync_and_bodies_are_send() {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    fn send<T: Send + 'static>() {}
    clone_send_sync::<tower_sse_pubsub::SsePubSubLayer>();
    clone_send_sync::<tower_sse_pubsub::SsePubSub<axum::Router>>();
    clone_send_sync::<Hub>();
    clone_send_sync::<tower_sse_pubsub::Publisher>();
    clone_send_sync::<MemoryBroker>();
    send::<ResponseBody<axum::body::Body>>();
    send::<
        tower_sse_pubsub::ResponseFuture<
            <axum::Router as Service<Request<axum::body::Body>>>::Future,
        >,
    >();
}

/// A subscribe request as a browser's EventSource sends it.
fn event_source(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("accept", "text/event-stream")
        .body(Body::default())
        .expect("valid request")
}

#[tokio::test]
async fn event_source_clients_are_told_to_retry_instead_of_failing_for_good() {
    // EventSource gives up for good on any status but 200, so temporary refusals reach it as a
    // stream that sets a retry delay and ends.
    let hub = Hub::builder()
        .max_subscribers(1)
        .shutdown_retry(Duration::from_secs(2))
        .build()
        .expect("valid hub");
    let _only = call(&hub, get("/events?topic=a")).await;
    for request in [event_source("/events?topic=a"), {
        let mut r = event_source("/events?topic=a");
        r.headers_mut().insert(
            "accept",
            HeaderValue::from_static("text/html, text/event-stream;q=0.9"),
        );
        r
    }] {
        let response = call(&hub, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = text_of(response).await;
        let retry: u64 = text
            .strip_prefix("retry: ")
            .and_then(|rest| rest.split('\n').next())
            .and_then(|ms| ms.parse().ok())
            .expect("a retry line first");
        assert!((1000..=3000).contains(&retry), "{retry}");
        assert!(text.contains("limit of 1 open event streams"), "{text:?}");
        assert!(!text.contains("data:"), "no event is dispatched");
    }
    // Clients that do not speak EventSource still get the plain 503.
    assert_refused(
        &hub,
        get("/events?topic=a"),
        StatusCode::SERVICE_UNAVAILABLE,
        "limit of 1",
    )
    .await;

    let down = Hub::builder()
        .broker(DownBroker)
        .build()
        .expect("valid hub");
    let text = text_of(call(&down, event_source("/events?topic=a")).await).await;
    assert!(
        text.starts_with("retry: ") && text.contains("backend down"),
        "{text:?}"
    );

    hub.shutdown();
    let response = call(&hub, event_source("/events?topic=b")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text_of(response).await.contains("shutting down"));
}

#[tokio::test]
async fn head_answers_as_get_would_without_keeping_a_stream() {
    let hub = open_hub();
    let head = |uri: &str| {
        Request::head(uri)
            .body(Body::default())
            .expect("valid request")
    };
    let response = call(&hub, head("/events?topic=a")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(hub.subscriber_count(), 0, "nothing is subscribed");
    assert_eq!(text_of(response).await, "");
    let response = call(&hub, head("/events")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn a_publish_body_that_never_finishes_gets_408() {
    type Trickle = http_body_util::StreamBody<
        std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send>,
        >,
    >;
    let hub = Hub::builder()
        .allow_anonymous_publish()
        .publish_body_timeout(Duration::from_secs(5))
        .build()
        .expect("valid hub");
    // The first bytes of a form, then nothing more, ever.
    let chunks = futures::StreamExt::chain(
        futures::stream::once(async {
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"topic=a&da")))
        }),
        futures::stream::pending(),
    );
    let request = Request::post("/publish")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Trickle::new(Box::pin(chunks)))
        .expect("valid request");
    let service = tower::ServiceBuilder::new()
        .layer(hub.layer())
        .service(service_fn(|_request: Request<Trickle>| async {
            Ok::<_, Infallible>(Response::new(Body::default()))
        }));
    let started = tokio::time::Instant::now();
    let response = service.oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn head_agrees_with_get_when_the_hub_is_full() {
    let hub = Hub::builder()
        .max_subscribers(1)
        .build()
        .expect("valid hub");
    let open = call(&hub, get("/events?topic=a")).await;
    assert_eq!(open.status(), StatusCode::OK);
    let head = Request::head("/events?topic=a")
        .body(Body::default())
        .expect("valid request");
    assert_refused(&hub, head, StatusCode::SERVICE_UNAVAILABLE, "limit of 1").await;
    assert_refused(
        &hub,
        get("/events?topic=a"),
        StatusCode::SERVICE_UNAVAILABLE,
        "limit of 1",
    )
    .await;
    drop(open);
    let head = Request::head("/events?topic=a")
        .body(Body::default())
        .expect("valid request");
    assert_eq!(call(&hub, head).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_resume_past_the_replay_budget_gets_the_newest_events_and_a_resync() {
    let hub = Hub::builder()
        .max_replay(3, 1 << 20)
        .build()
        .expect("valid hub");
    let first = publish_numbered(&hub, 10).await;
    let response = call(&hub, resuming_after(&first)).await;
    assert_eq!(response.headers()["sse-resume"], "expired");
    let mut body = response.into_body();
    let opening = next_chunk(&mut body).await.expect("opening");
    assert!(opening.contains("event: resync\n"), "{opening:?}");
    let replay = next_chunk(&mut body).await.expect("replay");
    let data: Vec<&str> = replay
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data, ["7", "8", "9"], "the newest three");
}

#[tokio::test]
async fn a_client_over_its_stream_limit_gets_429_and_others_are_served() {
    let hub = Hub::builder()
        .max_streams_per_client(2)
        .build()
        .expect("valid hub");
    let from = |address: &str| {
        let mut request = get("/events?topic=a");
        let peer: std::net::SocketAddr = address.parse().expect("valid address");
        request.extensions_mut().insert(peer);
        request
    };
    let first = call(&hub, from("192.0.2.1:1000")).await;
    let second = call(&hub, from("192.0.2.1:1001")).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let refused = call(&hub, from("192.0.2.1:1002")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert!(
        text_of(refused)
            .await
            .contains("already has 2 event streams")
    );
    // An EventSource is never given a status that would end it for good.
    let mut event_source = from("192.0.2.1:1003");
    event_source
        .headers_mut()
        .insert("accept", HeaderValue::from_static("text/event-stream"));
    let answer = call(&hub, event_source).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(text_of(answer).await.starts_with("retry: "));
    // Another address is served; and a closed stream frees its place.
    assert_eq!(
        call(&hub, from("198.51.100.7:1000")).await.status(),
        StatusCode::OK
    );
    drop(first);
    assert_eq!(
        call(&hub, from("192.0.2.1:1004")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn head_agrees_with_get_when_the_broker_is_down() {
    let hub = Hub::builder()
        .broker(DownBroker)
        .build()
        .expect("valid hub");
    let head = Request::head("/events?topic=a")
        .body(Body::default())
        .expect("valid request");
    assert_refused(&hub, head, StatusCode::SERVICE_UNAVAILABLE, "backend down").await;
}

#[tokio::test]
async fn resumes_beyond_the_replay_limit_are_told_to_come_back_and_nothing_is_lost() {
    let hub = Hub::builder()
        .max_concurrent_replays(1)
        .build()
        .expect("valid hub");
    let first = publish_numbered(&hub, 5).await;
    // The first resume takes the only replay slot and keeps it until its body has caught up.
    let replaying = call(&hub, resuming_after(&first)).await;
    assert_eq!(replaying.status(), StatusCode::OK);
    assert_refused(
        &hub,
        resuming_after(&first),
        StatusCode::SERVICE_UNAVAILABLE,
        "1 streams are replaying",
    )
    .await;
    // An EventSource is told to reconnect later (with its id), not failed for good.
    let mut event_source = resuming_after(&first);
    event_source
        .headers_mut()
        .insert("accept", HeaderValue::from_static("text/event-stream"));
    let text = text_of(call(&hub, event_source).await).await;
    assert!(text.starts_with("retry: "), "{text:?}");
    // A client without a resume point starts live and needs no replay slot.
    assert_eq!(
        call(&hub, get("/events?topic=a")).await.status(),
        StatusCode::OK
    );

    // Once the first stream has sent its replay and caught up, the slot is free again.
    let mut body = replaying.into_body();
    let mut seen = String::new();
    while !seen.contains("data: 4\n") {
        seen.push_str(&next_chunk(&mut body).await.expect("replay"));
    }
    assert!(is_quiet(&mut body).await, "caught up");
    let again = call(&hub, resuming_after(&first)).await;
    assert_eq!(again.status(), StatusCode::OK);
    let mut body = again.into_body();
    let mut replay = String::new();
    while !replay.contains("data: 4\n") {
        replay.push_str(&next_chunk(&mut body).await.expect("replay"));
    }
    let data: Vec<&str> = replay
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data, ["1", "2", "3", "4"], "everything after the id");
}

#[tokio::test]
async fn a_publish_costing_more_than_the_limit_gets_413_and_is_not_stored() {
    let hub = Hub::builder()
        .allow_anonymous_publish()
        .max_publish_cost(1000)
        .build()
        .expect("valid hub");
    let data = "x".repeat(290);
    // 290 bytes of data encode to 290 + "data: " + two line ends = 298: to three topics, 894,
    // accepted; to four, 1,192, refused.
    let ok = call(&hub, form(&format!("topic=a&topic=b&topic=c&data={data}"))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_refused(
        &hub,
        form(&format!("topic=a&topic=b&topic=c&topic=d&data={data}")),
        StatusCode::PAYLOAD_TOO_LARGE,
        "costs 1192 bytes (298 bytes encoded, to 4 topics)",
    )
    .await;
    // Line breaks cost what they are stored as: 150 of them are 151 `data:` lines, over 1,000
    // bytes from 150 bytes of data.
    assert_refused(
        &hub,
        form(&format!("topic=e&data={}", "%0A".repeat(150))),
        StatusCode::PAYLOAD_TOO_LARGE,
        "to 1 topic)",
    )
    .await;
    let response = call(&hub, get("/events?topic=d&lastEventID=x")).await;
    let mut body = response.into_body();
    let opening = next_chunk(&mut body).await.expect("opening");
    assert!(!opening.contains("data: x"), "{opening:?}");
    assert!(is_quiet(&mut body).await, "nothing was published to d");
}

/// Reads every chunk a stream has ready (until it goes quiet) and returns them joined.
async fn read_ready(body: &mut ResponseBody<Body>) -> String {
    let mut text = String::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(20), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                let data = frame.into_data().expect("a data frame");
                text.push_str(std::str::from_utf8(&data).expect("UTF-8 chunk"));
            }
            Ok(_) => return text,
            Err(_) => return text,
        }
    }
}

#[tokio::test]
async fn stats_count_a_scripted_session_exactly() {
    let hub = Hub::builder()
        .allow_anonymous_publish()
        .max_subscribers(3)
        .build()
        .expect("valid hub");
    let mut one = call(&hub, get("/events?topic=a")).await.into_body();
    let mut two = call(&hub, get("/events?topic=a&topic=b")).await.into_body();
    let mut bytes = read_ready(&mut one).await.len() + read_ready(&mut two).await.len();

    for body in ["topic=a&data=1", "topic=a&data=2", "topic=b&data=3"] {
        assert_eq!(call(&hub, form(body)).await.status(), StatusCode::OK);
    }
    hub.publisher()
        .publish_text("b", "4")
        .await
        .expect("publish");
    assert_eq!(
        call(&hub, form("topic=b")).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&hub, get("/events")).await.status(),
        StatusCode::BAD_REQUEST
    );
    let (first, second) = (read_ready(&mut one).await, read_ready(&mut two).await);
    assert_eq!(first.matches("data: ").count(), 2);
    assert_eq!(second.matches("data: ").count(), 4);
    bytes += first.len() + second.len();

    // A resume from an id this hub never issued: the notice, then both events of `a` replayed.
    let mut three = call(&hub, get("/events?topic=a&lastEventID=elsewhere"))
        .await
        .into_body();
    let replay = read_ready(&mut three).await;
    assert_eq!(replay.matches("data: ").count(), 3, "{replay:?}");
    bytes += replay.len();
    // Full now; a HEAD probe is answered but not counted.
    assert_eq!(
        call(&hub, get("/events?topic=c")).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let head = Request::head("/events?topic=c")
        .body(Body::default())
        .expect("valid request");
    assert_eq!(
        call(&hub, head).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let open = hub.stats();
    assert_eq!(open.open_streams, 3);
    drop((one, two, three));
    let stats = hub.stats();
    assert_eq!(stats.open_streams, 0);
    assert_eq!(stats.streams_opened, 3);
    assert_eq!(stats.streams_closed.client_gone, 3);
    assert_eq!(
        stats.streams_closed.lagged + stats.streams_closed.shutdown,
        0
    );
    assert_eq!(stats.subscribes_refused.bad_request, 1);
    assert_eq!(stats.subscribes_refused.full, 1);
    assert_eq!(stats.resumes.unknown, 1);
    assert_eq!(stats.resumes.complete + stats.resumes.expired, 0);
    assert_eq!(stats.events_published, 4);
    assert_eq!(stats.publishes_refused, 1);
    assert_eq!(stats.publish_failures, 0);
    assert_eq!(stats.frames_delivered, 2 + 4 + 2);
    assert_eq!(stats.frames_replayed, 2);
    assert_eq!(stats.resyncs, 1);
    assert_eq!(
        stats.bytes_written, bytes as u64,
        "every byte the clients read"
    );
}

#[tokio::test]
async fn shutdown_resolves_once_every_stream_has_ended_and_can_be_bounded() {
    let hub = open_hub();
    let mut one = call(&hub, get("/events?topic=a")).await.into_body();
    let mut two = call(&hub, get("/events?topic=b")).await.into_body();
    let mut ended = std::pin::pin!(hub.shutdown());
    assert!(
        futures::FutureExt::now_or_never(ended.as_mut()).is_none(),
        "two streams are open"
    );
    // Each stream, polled, ends with its closing frame; the server then drops it.
    for body in [&mut one, &mut two] {
        let closing = read_ready(body).await;
        assert!(closing.contains("retry: "), "{closing:?}");
    }
    drop(one);
    assert!(
        futures::FutureExt::now_or_never(ended.as_mut()).is_none(),
        "one is left"
    );
    drop(two);
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("resolved once the last stream ended");

    // A stream nobody polls (a client that stopped reading) holds shutdown up: bounded.
    let hub = open_hub();
    let held = call(&hub, get("/events?topic=a")).await;
    let error = hub
        .shutdown_within(Duration::from_millis(50))
        .await
        .expect_err("the held stream never ends");
    assert_eq!(error.open, 1);
    assert!(
        error
            .to_string()
            .contains("1 event streams were still open")
    );
    drop(held);
    hub.shutdown_within(Duration::from_secs(5))
        .await
        .expect("nothing open any more");
}

#[tokio::test]
async fn rust_code_subscribes_through_the_hub_within_its_replay_budget() {
    use futures::StreamExt;
    use tower_sse_pubsub::{Delivery, Resume};

    let hub = Hub::builder()
        .max_replay(2, 1 << 20)
        .build()
        .expect("valid hub");
    let first = publish_numbered(&hub, 5).await;
    let topic = Topic::new("a").expect("valid topic");
    let mut subscription = hub
        .subscribe_with(SubscribeRequest::new([topic.clone()]).after(Some(first)))
        .await
        .expect("subscribe");
    // Four events after the first, two fit: the newest two, and the gap is said.
    assert_eq!(subscription.resume(), &Resume::Expired);
    for expected in ["3", "4"] {
        match subscription.next().await {
            Some(Delivery::Event(frame)) => assert_eq!(frame.fields().data, expected),
            other => panic!("unexpected {other:?}"),
        }
    }
    // A live subscription gets what is published from now on.
    let mut live = hub.subscribe([topic]).await.expect("subscribe");
    hub.publisher()
        .publish_text("a", "5")
        .await
        .expect("publish");
    let frame = live.next().await.and_then(Delivery::into_event);
    assert_eq!(frame.map(|f| f.fields().data).as_deref(), Some("5"));
    assert!(hub.subscribe([]).await.is_err(), "no topic");
}

#[tokio::test]
async fn open_streams_are_counted_per_topic_when_asked() {
    let hub = Hub::builder()
        .count_streams_per_topic()
        .build()
        .expect("valid hub");
    let one = call(&hub, get("/events?topic=a")).await;
    let two = call(&hub, get("/events?topic=a&topic=b")).await;
    let topic = |name: &str| Topic::new(name).expect("valid topic");
    assert_eq!(
        hub.open_streams_per_topic(),
        [(topic("a"), 2), (topic("b"), 1)]
    );
    drop(two);
    assert_eq!(hub.open_streams_per_topic(), [(topic("a"), 1)]);
    drop(one);
    assert!(hub.open_streams_per_topic().is_empty());
    // Off by default.
    let plain = open_hub();
    let _stream = call(&plain, get("/events?topic=a")).await;
    assert!(plain.open_streams_per_topic().is_empty());
}
