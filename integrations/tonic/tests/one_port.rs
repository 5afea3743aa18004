//! gRPC, grpc-web and SSE on one port, over real TCP: every client sees the same topics and ids.

mod common;

use common::{TestServer, grpc_web_call, http_publish, next_sse, sse_subscribe, test_hub, within};
use futures::StreamExt;
use integration_tonic::GREETINGS_TOPIC;
use integration_tonic::proto::greeter::HelloRequest;
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::Streaming;
use tower_sse_pubsub::grpc::proto::{Event, PublishReply, PublishRequest, SubscribeRequest};
use tower_sse_pubsub::{Hub, MemoryBroker};

fn publish_request(topics: &[&str], data: &str) -> PublishRequest {
    PublishRequest {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        data: data.to_owned(),
        event_type: None,
    }
}

fn subscribe_request(topics: &[&str], after_id: Option<&str>) -> SubscribeRequest {
    SubscribeRequest {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        after_id: after_id.map(str::to_owned),
    }
}

async fn next_grpc(stream: &mut Streaming<Event>) -> Event {
    within("next gRPC event", stream.message())
        .await
        .expect("gRPC stream status")
        .expect("gRPC stream ended early")
}

#[tokio::test]
async fn grpc_publish_reaches_sse_subscribers() {
    let server = TestServer::start().await;
    let mut sse = sse_subscribe(server.addr, "topic=orders").await;
    let mut client = server.pubsub().await;

    let mut request = publish_request(&["orders"], "order 42\nshipped");
    request.event_type = Some("shipped".to_owned());
    let id = within("Publish", client.publish(request))
        .await
        .expect("Publish")
        .into_inner()
        .id;

    let event = next_sse(&mut sse).await;
    assert_eq!(event.id, id);
    assert_eq!(event.event, "shipped");
    assert_eq!(event.data, "order 42\nshipped");
    server.stop().await;
}

#[tokio::test]
async fn http_publish_reaches_grpc_subscribers() {
    let server = TestServer::start().await;
    let mut client = server.pubsub().await;
    // The response head arrives once the subscription is in place.
    let mut stream = within(
        "Subscribe",
        client.subscribe(subscribe_request(&["chat"], None)),
    )
    .await
    .expect("Subscribe")
    .into_inner();

    let (status, id) =
        http_publish(server.addr, "topic=chat&data=hi+from+a+browser&event=note").await;
    assert_eq!(status, http::StatusCode::OK, "{id}");

    let event = next_grpc(&mut stream).await;
    assert_eq!(event.id, id);
    assert_eq!(event.data, "hi from a browser");
    assert_eq!(event.event_type.as_deref(), Some("note"));
    assert!(!event.resync);
    server.stop().await;
}

#[tokio::test]
async fn grpc_subscribe_after_id_resumes_without_gap_then_goes_live() {
    let server = TestServer::start().await;
    let mut client = server.pubsub().await;
    let mut ids = Vec::new();
    for data in ["one", "two", "three"] {
        let reply = within("Publish", client.publish(publish_request(&["feed"], data)))
            .await
            .expect("Publish");
        ids.push(reply.into_inner().id);
    }

    let mut stream = within(
        "Subscribe",
        client.subscribe(subscribe_request(&["feed"], Some(&ids[0]))),
    )
    .await
    .expect("Subscribe")
    .into_inner();
    let second = next_grpc(&mut stream).await;
    let third = next_grpc(&mut stream).await;
    assert_eq!(
        (second.id.as_str(), second.data.as_str()),
        (ids[1].as_str(), "two")
    );
    assert_eq!(
        (third.id.as_str(), third.data.as_str()),
        (ids[2].as_str(), "three")
    );

    let live = within(
        "Publish",
        client.publish(publish_request(&["feed"], "four")),
    )
    .await
    .expect("Publish")
    .into_inner()
    .id;
    let fourth = next_grpc(&mut stream).await;
    assert_eq!(
        (fourth.id.as_str(), fourth.data.as_str()),
        (live.as_str(), "four")
    );
    server.stop().await;
}

#[tokio::test]
async fn grpc_subscribe_with_unknown_after_id_opens_with_resync_then_replays() {
    let server = TestServer::start().await;
    let mut client = server.pubsub().await;
    let id = within(
        "Publish",
        client.publish(publish_request(&["feed"], "kept")),
    )
    .await
    .expect("Publish")
    .into_inner()
    .id;

    let mut stream = within(
        "Subscribe",
        client.subscribe(subscribe_request(&["feed"], Some("from-another-server"))),
    )
    .await
    .expect("Subscribe")
    .into_inner();
    let notice = next_grpc(&mut stream).await;
    assert!(notice.resync, "{notice:?}");
    assert_eq!(notice.resync_reason, "unknown");
    assert_eq!(notice.id, "", "a notice must not move the resume point");
    let replayed = next_grpc(&mut stream).await;
    assert_eq!((replayed.id, replayed.resync), (id, false));
    server.stop().await;
}

#[tokio::test]
async fn the_apps_own_greeter_works_alongside_the_hub() {
    let server = TestServer::start().await;
    let mut sse = sse_subscribe(server.addr, &format!("topic={GREETINGS_TOPIC}")).await;
    let mut greeter = server.greeter().await;

    let reply = within(
        "Hello",
        greeter.hello(HelloRequest {
            name: "ada".to_owned(),
        }),
    )
    .await
    .expect("Hello")
    .into_inner();
    assert_eq!(reply.message, "hello, ada");
    // The app's own service publishes through the same hub.
    assert_eq!(next_sse(&mut sse).await.data, "hello, ada");
    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_get_invalid_argument_with_the_reason() {
    let server = TestServer::start().await;
    let mut client = server.pubsub().await;

    let cases = [
        (publish_request(&["bad\ntopic"], "x"), "control characters"),
        (
            publish_request(&[""], "x"),
            "topic must be 1..=1024 bytes, got 0",
        ),
        (publish_request(&[], "x"), "at least one topic"),
        (publish_request(&["ok"], ""), "must not be empty"),
        (
            PublishRequest {
                event_type: Some("resync".to_owned()),
                ..publish_request(&["ok"], "x")
            },
            "reserved",
        ),
    ];
    for (request, reason) in cases {
        let status = within("Publish", client.publish(request))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(reason), "{status:?}");
    }

    let status = within(
        "Subscribe",
        client.subscribe(subscribe_request(&["ok"], Some("bad\nid"))),
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("after_id"), "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_grpc_subscriber_that_falls_behind_gets_resource_exhausted() {
    let hub = Hub::builder()
        .broker(
            MemoryBroker::builder()
                .history_per_topic(4)
                .subscriber_queue(4)
                .build(),
        )
        .build()
        .expect("valid hub");
    let server = TestServer::start_with(hub).await;
    let mut client = server.pubsub().await;
    let mut stream = within(
        "Subscribe",
        client.subscribe(subscribe_request(&["busy"], None)),
    )
    .await
    .expect("Subscribe")
    .into_inner();

    // Without reading, the client's HTTP/2 windows fill up, the server stops draining the
    // subscription, and its position falls out of the topic's log of 4.
    let publisher = server.hub.publisher();
    let big = "x".repeat(64 * 1024);
    for _ in 0..200 {
        publisher
            .publish_text("busy", big.clone())
            .await
            .expect("publish");
    }

    let status = within("lag status", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("after_id"), "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_grpc_and_sse_streams_promptly() {
    let server = TestServer::start().await;
    let mut client = server.pubsub().await;
    let mut grpc_streams = Vec::new();
    for _ in 0..3 {
        let stream = within(
            "Subscribe",
            client.subscribe(subscribe_request(&["news"], None)),
        )
        .await
        .expect("Subscribe")
        .into_inner();
        grpc_streams.push(stream);
    }
    let mut sse_streams = Vec::new();
    for _ in 0..3 {
        sse_streams.push(sse_subscribe(server.addr, "topic=news").await);
    }
    // gRPC streams hold the hub's subscriber slots as SSE streams do.
    assert_eq!(server.hub.subscriber_count(), 6);

    let hub = server.hub.clone();
    // `stop` fails the test unless the server has returned within the step bound.
    within("shutdown", server.stop()).await;
    assert!(hub.is_shut_down());
    let stats = hub.stats();
    assert_eq!(
        (stats.open_streams, stats.streams_closed.shutdown),
        (0, 6),
        "{stats:?}"
    );

    for mut stream in grpc_streams {
        let status = within("gRPC stream end", stream.message())
            .await
            .expect_err("ends with a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    for mut stream in sse_streams {
        // The hub's closing frame carries only `retry:`, which dispatches no event.
        assert!(within("SSE stream end", stream.next()).await.is_none());
    }
}

#[tokio::test]
async fn grpc_web_and_sse_share_the_port_with_the_hub_outside_tonic_web() {
    let server = TestServer::start().await;
    let mut sse = sse_subscribe(server.addr, "topic=web").await;

    let reply = grpc_web_call(
        server.addr,
        "/pubsub.v1.PubSub/Publish",
        &publish_request(&["web"], "from grpc-web"),
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
    assert_eq!(reply.grpc_status.as_deref(), Some("0"), "{reply:?}");
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    let id = PublishReply::decode(reply.messages[0].clone())
        .expect("PublishReply")
        .id;

    let event = next_sse(&mut sse).await;
    assert_eq!((event.id, event.data.as_str()), (id, "from grpc-web"));

    // And plain gRPC over HTTP/2 on the same port.
    let mut client = server.pubsub().await;
    within(
        "Publish",
        client.publish(publish_request(&["web"], "from gRPC")),
    )
    .await
    .expect("Publish");
    assert_eq!(next_sse(&mut sse).await.data, "from gRPC");
    server.stop().await;
}

#[tokio::test]
async fn tonic_web_outside_the_hub_refuses_sse_over_http1() {
    // The wrong order: tonic-web added first is outermost, and answers 400 to every HTTP/1.1
    // request that is not grpc-web, before the hub can see it.
    let hub = test_hub();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let on_stop = hub.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(hub.layer())
            .add_service(hub.grpc_service().into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.await;
                on_stop.shutdown();
            }),
    );

    let request = http::Request::get(format!("http://{addr}/events?topic=web"))
        .header(http::header::ACCEPT, "text/event-stream")
        .body(http_body_util::Full::default())
        .expect("request");
    let response = within("GET /events", common::http1_client().request(request))
        .await
        .expect("GET /events");
    assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
    let (status, _) = http_publish(addr, "topic=web&data=x").await;
    assert_eq!(status, http::StatusCode::BAD_REQUEST);

    // grpc-web itself still works in this order; only the hub's HTTP/1.1 endpoints are lost.
    let reply = grpc_web_call(
        addr,
        "/pubsub.v1.PubSub/Publish",
        &publish_request(&["web"], "x"),
    )
    .await;
    assert_eq!(reply.grpc_status.as_deref(), Some("0"), "{reply:?}");

    let _ = stop.send(());
    within("shutdown", server)
        .await
        .expect("server task")
        .expect("server ran cleanly");
}
