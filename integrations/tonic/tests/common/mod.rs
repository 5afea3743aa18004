//! A server on a real TCP port, and the clients that talk to it: generated gRPC clients, an
//! SSE reader built on hyper-util, and a hand-built grpc-web call.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use integration_tonic::proto::greeter::greeter_client::GreeterClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tower_sse_pubsub::Hub;
use tower_sse_pubsub::grpc::proto::pub_sub_client::PubSubClient;

/// How long any single step may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(10);

/// Bounds `future` by [`STEP`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A hub that lets tests publish over HTTP.
pub fn test_hub() -> Hub {
    Hub::builder()
        .allow_anonymous_publish()
        .build()
        .expect("valid hub")
}

/// [`integration_tonic::serve`] on 127.0.0.1, on a port of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_hub()).await
    }

    pub async fn start_with(hub: Hub) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(integration_tonic::serve(listener, hub.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hub,
            stop,
            task,
        }
    }

    /// The library's generated client has no `connect` (it is built without tonic's
    /// transport), so the channel is made here.
    pub async fn pubsub(&self) -> PubSubClient<Channel> {
        let endpoint =
            Endpoint::from_shared(format!("http://{}", self.addr)).expect("valid endpoint");
        let channel = within("gRPC connect", endpoint.connect())
            .await
            .expect("gRPC connect");
        PubSubClient::new(channel)
    }

    pub async fn greeter(&self) -> GreeterClient<Channel> {
        within(
            "gRPC connect",
            GreeterClient::connect(format!("http://{}", self.addr)),
        )
        .await
        .expect("gRPC connect")
    }

    /// Fires the server's shutdown signal and waits for `serve` to return.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        within("server shutdown", self.task)
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

/// An HTTP/1.1 client, as a browser's EventSource or fetch would use.
pub fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub use test_support::http_client::SseEvents;

/// `GET /events?{query}` over HTTP/1.1; returns once the response head arrived, which the hub
/// sends only after the subscription is in place.
pub async fn sse_subscribe(addr: SocketAddr, query: &str) -> SseEvents {
    let request = http::Request::get(format!("http://{addr}/events?{query}"))
        .header(http::header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .expect("request");
    let response = within("SSE response head", http1_client().request(request))
        .await
        .expect("SSE request");
    test_support::http_client::events(response)
}

/// The next SSE event, bounded.
pub async fn next_sse(events: &mut SseEvents) -> eventsource_stream::Event {
    test_support::http_client::next_event(events).await
}

/// `POST /publish` as a form over HTTP/1.1; returns the status and body.
pub async fn http_publish(addr: SocketAddr, form: &str) -> (http::StatusCode, String) {
    let request = http::Request::post(format!("http://{addr}/publish"))
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(Full::new(Bytes::from(form.to_owned())))
        .expect("request");
    let response = within("POST /publish", http1_client().request(request))
        .await
        .expect("POST /publish");
    let status = response.status();
    let body = within("publish body", response.into_body().collect())
        .await
        .expect("publish body")
        .to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    )
}

/// The answer to a grpc-web call: the HTTP status, the messages, and `grpc-status`.
#[derive(Debug)]
pub struct GrpcWebReply {
    pub status: http::StatusCode,
    pub messages: Vec<Bytes>,
    pub grpc_status: Option<String>,
}

/// A unary grpc-web call over HTTP/1.1, framed by hand as a browser library would: a 5-byte
/// header (flag, big-endian length) before the prost-encoded message.
pub async fn grpc_web_call(
    addr: SocketAddr,
    path: &str,
    message: &impl prost::Message,
) -> GrpcWebReply {
    let encoded = message.encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + encoded.len());
    body.put_u8(0);
    body.put_u32(u32::try_from(encoded.len()).expect("small message"));
    body.put_slice(&encoded);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(body.freeze()))
        .expect("request");
    let response = within("grpc-web call", http1_client().request(request))
        .await
        .expect("grpc-web call");
    let status = response.status();
    // A trailers-only reply carries grpc-status in the headers.
    let mut grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let mut body = within("grpc-web body", response.into_body().collect())
        .await
        .expect("grpc-web body")
        .to_bytes();
    let mut messages = Vec::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = usize::try_from(body.get_u32()).expect("usize");
        let frame = body.split_to(len);
        if flag & 0x80 == 0 {
            messages.push(frame);
        } else {
            // The trailers frame: HTTP/1-style header lines.
            let trailers = String::from_utf8(frame.to_vec()).expect("UTF-8 trailers");
            for line in trailers.split("\r\n") {
                if let Some((name, value)) = line.split_once(':')
                    && name.trim().eq_ignore_ascii_case("grpc-status")
                {
                    grpc_status = Some(value.trim().to_owned());
                }
            }
        }
    }
    GrpcWebReply {
        status,
        messages,
        grpc_status,
    }
}
