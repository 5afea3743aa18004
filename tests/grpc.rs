//! The gRPC service (feature `grpc`) over real TCP, with the generated client: it goes through
//! the hub's authorizer, limits and counters exactly as the HTTP endpoints do.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use http::request::Parts;
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tower_sse_pubsub::grpc::proto::pub_sub_client::PubSubClient;
use tower_sse_pubsub::grpc::proto::pub_sub_server::PubSub;
use tower_sse_pubsub::grpc::proto::{Event, PublishRequest, SubscribeRequest};
use tower_sse_pubsub::grpc::{PUBLISH_PATH, SUBSCRIBE_PATH};
use tower_sse_pubsub::{
    Access, Denied, Hub, HubBuilder, HubStats, MemoryBroker, Topic, authorize_fn,
};

/// How long any single step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until the hub's stats satisfy `done`, re-reading them whenever the runtime has run
/// everything else (the server's tasks included).
async fn stats_until(hub: &Hub, what: &str, done: impl Fn(&HubStats) -> bool) -> HubStats {
    within(what, async {
        loop {
            let stats = hub.stats();
            if done(&stats) {
                return stats;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// The hub's layer and gRPC service on one loopback port, as an app serves them.
struct Server {
    hub: Hub,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    async fn start(hub: Hub) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let on_stop = hub.clone();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(hub.layer())
                .add_service(hub.grpc_service().into_server())
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                    let _ = stopped.await;
                    on_stop.shutdown();
                }),
        );
        Self {
            hub,
            addr,
            stop,
            task,
        }
    }

    async fn client(&self) -> PubSubClient<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr)).expect("endpoint");
        let channel = within("connect", endpoint.connect())
            .await
            .expect("connect");
        PubSubClient::new(channel)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        within("server shutdown", self.task)
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

fn build(builder: HubBuilder) -> Hub {
    builder.build().expect("valid hub")
}

fn publish(topics: &[&str], data: &str) -> PublishRequest {
    PublishRequest {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        data: data.to_owned(),
        event_type: None,
    }
}

fn subscribe(topics: &[&str], after_id: Option<&str>) -> SubscribeRequest {
    SubscribeRequest {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        after_id: after_id.map(str::to_owned),
    }
}

async fn open(
    client: &mut PubSubClient<Channel>,
    request: SubscribeRequest,
) -> Result<Streaming<Event>, Status> {
    within("Subscribe", client.subscribe(request))
        .await
        .map(tonic::Response::into_inner)
}

async fn send(
    client: &mut PubSubClient<Channel>,
    request: PublishRequest,
) -> Result<String, Status> {
    within("Publish", client.publish(request))
        .await
        .map(|reply| reply.into_inner().id)
}

async fn next(stream: &mut Streaming<Event>) -> Event {
    within("next event", stream.message())
        .await
        .expect("stream status")
        .expect("stream ended early")
}

/// What tonic writes for `event`: the encoded message and its 5-byte prefix.
fn wire_len(event: &Event) -> u64 {
    event.encoded_len() as u64 + 5
}

/// Publishing needs `x-api-key: k`, only over gRPC; subscribing to `private/...` is refused.
/// It also checks what it is shown: the call's path, and the connection's address carried over.
fn keyed_hub() -> Hub {
    build(Hub::builder().authorizer(authorize_fn(
        |parts: &Parts, access: Access, topics: &[Topic]| {
            let path = parts.uri.path().to_owned();
            let key = parts.headers.get("x-api-key").cloned();
            let connected = parts.extensions.get::<TcpConnectInfo>().is_some();
            let private = topics.iter().any(|t| t.as_str().starts_with("private/"));
            async move {
                assert!(connected, "the call's extensions reach the authorizer");
                match access {
                    Access::Publish => {
                        assert_eq!(path, PUBLISH_PATH);
                        match key {
                            Some(key) if key == "k" => Ok(()),
                            Some(_) => Err(Denied::forbidden("this key may not publish")),
                            None => Err(Denied::unauthorized("send an x-api-key").with_challenge(
                                http::HeaderValue::from_static("ApiKey realm=\"events\""),
                            )),
                        }
                    }
                    Access::Subscribe if private => {
                        assert_eq!(path, SUBSCRIBE_PATH);
                        Err(Denied::forbidden("private topics are not for you"))
                    }
                    _ => Ok(()),
                }
            }
        },
    )))
}

fn with_key(request: PublishRequest, key: &'static str) -> tonic::Request<PublishRequest> {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().expect("ASCII"));
    request
}

#[tokio::test]
async fn the_authorizer_refuses_a_publish_and_nothing_is_published() {
    let server = Server::start(keyed_hub()).await;
    let mut client = server.client().await;
    let mut stream = open(&mut client, subscribe(&["news"], None))
        .await
        .expect("anyone may subscribe");

    let status = send(&mut client, publish(&["news"], "no key"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "send an x-api-key");
    assert_eq!(
        status
            .metadata()
            .get("www-authenticate")
            .map(|v| v.as_encoded_bytes()),
        Some(&b"ApiKey realm=\"events\""[..])
    );
    let status = within(
        "Publish",
        client.publish(with_key(publish(&["news"], "wrong key"), "nope")),
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "this key may not publish");

    let id = within(
        "Publish",
        client.publish(with_key(publish(&["news"], "with the key"), "k")),
    )
    .await
    .expect("allowed")
    .into_inner()
    .id;
    // The refused events never reached the topic: the first one the subscriber sees is this.
    let event = next(&mut stream).await;
    assert_eq!((event.id, event.data.as_str()), (id, "with the key"));
    let stats = server.hub.stats();
    assert_eq!(
        (
            stats.events_published,
            stats.publishes_refused,
            stats.publish_failures
        ),
        (1, 2, 0),
        "{stats:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_authorizer_refuses_a_subscribe() {
    let server = Server::start(keyed_hub()).await;
    let mut client = server.client().await;
    let status = open(&mut client, subscribe(&["news", "private/ada"], None))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "private topics are not for you");
    let stats = server.hub.stats();
    assert_eq!(stats.subscribes_refused.denied, 1, "{stats:?}");
    assert_eq!((stats.streams_opened, stats.open_streams), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn without_an_authorizer_nobody_publishes_unless_the_hub_allows_anonymous_publishing() {
    let server = Server::start(Hub::new()).await;
    let mut client = server.client().await;
    let status = send(&mut client, publish(&["news"], "hi"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("publishing over gRPC is disabled"),
        "{status:?}"
    );
    assert_eq!(server.hub.stats().publishes_refused, 1);
    server.stop().await;
}

#[tokio::test]
async fn the_hub_s_limits_apply_to_topics_cost_and_size() {
    let hub = build(
        Hub::builder()
            .allow_anonymous_publish()
            .max_topics_per_request(2)
            .max_publish_cost(1_000)
            .max_body_bytes(4_096),
    );
    let server = Server::start(hub).await;
    let mut client = server.client().await;

    let status = open(&mut client, subscribe(&["a", "b", "c"], None))
        .await
        .expect_err("three topics");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "too many topics: at most 2 per request");
    // Repeats count once, as over HTTP.
    open(&mut client, subscribe(&["a", "b", "a"], None))
        .await
        .expect("two distinct topics");

    let status = send(&mut client, publish(&["a", "b", "c"], "x"))
        .await
        .expect_err("three topics");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "too many topics: at most 2 per request");
    let status = send(&mut client, publish(&["a", "b"], &"x".repeat(600)))
        .await
        .expect_err("costs 2 x 607 bytes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("over the limit of 1000"),
        "{status:?}"
    );
    let status = send(&mut client, publish(&["a"], &"x".repeat(5_000)))
        .await
        .expect_err("larger than the body limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    send(&mut client, publish(&["a"], &"x".repeat(900)))
        .await
        .expect("within every limit");

    let stats = server.hub.stats();
    assert_eq!(stats.subscribes_refused.bad_request, 1, "{stats:?}");
    // The message over the body limit is refused by tonic before the service sees it.
    assert_eq!(
        (stats.publishes_refused, stats.events_published),
        (2, 1),
        "{stats:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_full_hub_refuses_grpc_streams_with_unavailable_and_sse_counts_alike() {
    let server = Server::start(build(Hub::builder().max_subscribers(2))).await;
    let mut client = server.client().await;
    let _one = open(&mut client, subscribe(&["a"], None))
        .await
        .expect("first");
    let _two = open(&mut client, subscribe(&["b"], None))
        .await
        .expect("second");
    let status = open(&mut client, subscribe(&["c"], None))
        .await
        .expect_err("full");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "this server has reached its limit of 2 open event streams; retry later"
    );
    // The gRPC streams hold the slots an SSE client would need.
    let response = http1_get_status(server.addr, "/events?topic=d").await;
    assert_eq!(response, http::StatusCode::SERVICE_UNAVAILABLE);
    let stats = server.hub.stats();
    assert_eq!(
        (stats.open_streams, stats.subscribes_refused.full),
        (2, 2),
        "{stats:?}"
    );
    server.stop().await;
}

/// `GET path` over HTTP/1.1 on a raw socket; the response's status.
async fn http1_get_status(addr: SocketAddr, path: &str) -> http::StatusCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    within("response head", socket.read_exact(&mut head))
        .await
        .expect("read");
    let code = std::str::from_utf8(&head[9..12]).expect("ASCII status");
    http::StatusCode::from_bytes(code.as_bytes()).expect("a status code")
}

#[tokio::test]
async fn one_client_may_hold_only_its_share_of_streams() {
    let server = Server::start(build(Hub::builder().max_streams_per_client(1))).await;
    let mut client = server.client().await;
    let first = open(&mut client, subscribe(&["a"], None))
        .await
        .expect("first");
    let status = open(&mut client, subscribe(&["b"], None))
        .await
        .expect_err("a second stream from 127.0.0.1");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "this client already has 1 event streams open; close one or retry later"
    );
    assert_eq!(server.hub.stats().subscribes_refused.client_limit, 1);

    // Its slot comes back when it closes the first.
    drop(first);
    stats_until(&server.hub, "first stream closed", |s| s.open_streams == 0).await;
    open(&mut client, subscribe(&["b"], None))
        .await
        .expect("a stream again");
    server.stop().await;
}

#[tokio::test]
async fn a_scripted_session_is_counted_exactly() {
    let server = Server::start(build(Hub::builder().allow_anonymous_publish())).await;
    let mut client = server.client().await;
    let mut ids = Vec::new();
    for data in ["one", "two", "three"] {
        ids.push(
            send(&mut client, publish(&["feed"], data))
                .await
                .expect("publish"),
        );
    }
    send(&mut client, publish(&["bad\ntopic"], "x"))
        .await
        .expect_err("invalid topic");

    // Resumes after the first: two replayed, then one live.
    let mut stream = open(&mut client, subscribe(&["feed"], Some(&ids[0])))
        .await
        .expect("subscribe");
    let mut received = vec![next(&mut stream).await, next(&mut stream).await];
    let live = send(&mut client, publish(&["feed"], "four"))
        .await
        .expect("publish");
    received.push(next(&mut stream).await);
    let got: Vec<(&str, &str)> = received
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (ids[1].as_str(), "two"),
            (ids[2].as_str(), "three"),
            (live.as_str(), "four")
        ]
    );
    assert_eq!(server.hub.stats().open_streams, 1);

    drop(stream);
    let stats = stats_until(&server.hub, "stream closed", |s| s.open_streams == 0).await;
    let bytes: u64 = received.iter().map(wire_len).sum();
    let mut expected = HubStats::default();
    expected.streams_opened = 1;
    expected.streams_closed.client_gone = 1;
    expected.resumes.complete = 1;
    expected.events_published = 4;
    expected.publishes_refused = 1;
    expected.frames_delivered = 3;
    expected.frames_replayed = 2;
    expected.bytes_written = bytes;
    expected.connections_cut = stats.connections_cut;
    assert_eq!(stats, expected);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_after_id_opens_with_a_resync_then_replays_what_is_retained() {
    let server = Server::start(build(Hub::builder().allow_anonymous_publish())).await;
    let mut client = server.client().await;
    let kept = send(&mut client, publish(&["feed"], "kept"))
        .await
        .expect("publish");

    let mut stream = open(
        &mut client,
        subscribe(&["feed"], Some("from-another-server")),
    )
    .await
    .expect("subscribe");
    let notice = next(&mut stream).await;
    assert!(notice.resync, "{notice:?}");
    assert_eq!(
        (notice.id.as_str(), notice.resync_reason.as_str()),
        ("", "unknown")
    );
    let replayed = next(&mut stream).await;
    assert_eq!((replayed.id, replayed.resync), (kept, false));
    let stats = server.hub.stats();
    assert_eq!((stats.resumes.unknown, stats.resyncs), (1, 1), "{stats:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_slot_is_released_when_the_client_cancels_its_stream() {
    let server = Server::start(build(
        Hub::builder().max_subscribers(1).count_streams_per_topic(),
    ))
    .await;
    let mut client = server.client().await;
    let stream = open(&mut client, subscribe(&["a"], None))
        .await
        .expect("subscribe");
    assert_eq!(server.hub.open_streams_per_topic().len(), 1);
    let status = open(&mut client, subscribe(&["a"], None))
        .await
        .expect_err("the only slot is taken");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    drop(stream);
    let stats = stats_until(&server.hub, "slot released", |s| s.open_streams == 0).await;
    assert_eq!(stats.streams_closed.client_gone, 1, "{stats:?}");
    assert!(server.hub.open_streams_per_topic().is_empty());
    open(&mut client, subscribe(&["a"], None))
        .await
        .expect("the slot is free again");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_refuses_new_ones() {
    let server = Server::start(build(Hub::builder().allow_anonymous_publish())).await;
    let mut client = server.client().await;
    let mut stream = open(&mut client, subscribe(&["a"], None))
        .await
        .expect("subscribe");
    server.hub.shutdown();
    let status = within("stream end", stream.message())
        .await
        .expect_err("ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("after_id"), "{status:?}");
    let status = open(&mut client, subscribe(&["a"], None))
        .await
        .expect_err("refused while shutting down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "the server is shutting down; reconnect");
    let hub = server.hub.clone();
    server.stop().await;
    let stats = hub.stats();
    assert_eq!(
        (
            stats.open_streams,
            stats.streams_closed.shutdown,
            stats.subscribes_refused.shutting_down
        ),
        (0, 1, 1),
        "{stats:?}"
    );
}

// In-process from here: the service called as tonic calls it, without a network, where the
// test needs to hold a stream unread.

#[tokio::test]
async fn a_subscriber_that_falls_behind_ends_with_resource_exhausted() {
    let hub = build(
        Hub::builder().broker(
            MemoryBroker::builder()
                .history_per_topic(4)
                .subscriber_queue(4)
                .build(),
        ),
    );
    let service = hub.grpc_service();
    let mut stream = service
        .subscribe(tonic::Request::new(subscribe(&["busy"], None)))
        .await
        .expect("subscribe")
        .into_inner();
    let publisher = hub.publisher();
    for n in 0..20 {
        publisher
            .publish_text("busy", format!("event {n}"))
            .await
            .expect("publish");
    }
    let status = loop {
        match within("lag", stream.next()).await {
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("after_id"), "{status:?}");
    assert!(stream.next().await.is_none(), "the status is the last item");
    drop(stream);
    assert_eq!(hub.stats().streams_closed.lagged, 1);
}

#[tokio::test]
async fn replays_are_limited_and_a_permit_returns_once_the_stream_caught_up() {
    let hub = build(
        Hub::builder()
            .allow_anonymous_publish()
            .max_concurrent_replays(1),
    );
    let first = hub
        .publisher()
        .publish_text("feed", "one")
        .await
        .expect("publish");
    hub.publisher()
        .publish_text("feed", "two")
        .await
        .expect("publish");
    let service = hub.grpc_service();
    let resume = || tonic::Request::new(subscribe(&["feed"], Some(first.as_str())));

    let mut replaying = service
        .subscribe(resume())
        .await
        .expect("first")
        .into_inner();
    let status = service
        .subscribe(resume())
        .await
        .expect_err("replay slot taken");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "1 streams are replaying history already; reconnect later to resume"
    );
    // A live subscriber needs no replay slot.
    service
        .subscribe(tonic::Request::new(subscribe(&["feed"], None)))
        .await
        .expect("live");

    let event = replaying.next().await.expect("an event").expect("ok");
    assert_eq!(event.data, "two");
    // Caught up: the next poll finds nothing ready and gives the permit back.
    assert!(replaying.next().now_or_never().is_none());
    service
        .subscribe(resume())
        .await
        .expect("a replay slot again");
    assert_eq!(hub.stats().subscribes_refused.replay_limit, 1);
}

/// `JwtAuthorizer` over gRPC: the token travels in the `authorization` metadata, its claims
/// decide, its grant reaches the stream and its expiry ends it.
#[cfg(feature = "jwt")]
#[tokio::test]
async fn a_jwt_authorizer_works_over_grpc_as_over_http() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
    use tower_sse_pubsub::{Event as HubEvent, PublishRequest as HubPublish};

    const SECRET: &str = "a-test-secret-of-32-bytes-or-more!!";
    let token = |claims: serde_json::Value| {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&Header::default(), &claims, &key).expect("token signs")
    };
    fn with_token<M>(message: M, token: &str) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}").parse().expect("ASCII");
        request.metadata_mut().insert("authorization", value);
        request
    }
    let authorizer = JwtAuthorizer::builder(JwtKey::hs256(SECRET).expect("long enough"))
        .allow_anonymous_subscribe()
        .build();
    let server = Server::start(build(Hub::builder().authorizer(authorizer))).await;
    let mut client = server.client().await;

    // Publishing: no token, then a token for the wrong topics, then the right one.
    let refused = within("publish", client.publish(publish(&["books/1"], "x")))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let films = token(serde_json::json!({"mercure": {"publish": ["films/{id}"]}}));
    let refused = within(
        "publish",
        client.publish(with_token(publish(&["books/1"], "x"), &films)),
    )
    .await
    .expect_err("not covered");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // A subscriber whose token grants private events on books, and expires in 1 to 2 s.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 2;
    let reader = token(serde_json::json!({"mercure": {"subscribe": ["books/{id}"]}, "exp": exp}));
    let mut granted = within(
        "Subscribe",
        client.subscribe(with_token(subscribe(&["books/1"], None), &reader)),
    )
    .await
    .expect("subscribed")
    .into_inner();
    let mut anonymous = open(&mut client, subscribe(&["books/1"], None))
        .await
        .expect("anonymous subscribe");
    let private = HubPublish::new(
        [Topic::new("books/1").expect("valid topic")],
        HubEvent::text("private").expect("valid event"),
    )
    .private();
    server
        .hub
        .publisher()
        .send(&private)
        .await
        .expect("published");
    let books = token(serde_json::json!({"mercure": {"publish": ["books/{id}"]}}));
    within(
        "publish",
        client.publish(with_token(publish(&["books/1"], "public"), &books)),
    )
    .await
    .expect("published with a token");

    let first = within("an event", granted.message())
        .await
        .expect("open")
        .expect("event");
    assert_eq!(first.data, "private");
    let first = within("an event", anonymous.message())
        .await
        .expect("open")
        .expect("event");
    assert_eq!(first.data, "public", "no private event without a grant");
    // The granted stream ends when its token expires.
    assert_eq!(
        within("public", granted.message())
            .await
            .expect("open")
            .expect("event")
            .data,
        "public"
    );
    let end = within("the token's expiry", granted.message()).await;
    assert_eq!(end.map_err(|s| s.code()).err(), Some(Code::Unauthenticated));
    server.stop().await;
}
