//! A tonic server with browsers on SSE and services on gRPC, on one port.
//!
//! One [`tonic::transport::Server`] serves three kinds of client on the same listener:
//!
//! * **services** call gRPC (HTTP/2): the app's own [`Greeter`], and the hub's pub/sub as a gRPC
//!   API ([`tower_sse_pubsub::grpc`], `pubsub.v1.PubSub`: `Publish`, and a server-streaming
//!   `Subscribe` with gap-free resume through `after_id`), which the library serves with the
//!   hub's authorizer, limits and counters (its feature `grpc`);
//! * **browsers** open `new EventSource('/events?topic=chat')` and `POST /publish` (HTTP/1.1),
//!   answered by the hub's tower layer before tonic's router sees the request;
//! * **browser gRPC clients** (grpc-web over HTTP/1.1) go through tonic-web's
//!   [`GrpcWebLayer`].
//!
//! Every client sees the same topics and the same event ids: an event published over gRPC reaches
//! SSE subscribers, an event `POST`ed reaches gRPC subscribers, and an id from either can resume
//! the other.
//!
//! # Layout
//!
//! * `proto/greeter.proto`, the app's own service, compiled by `build.rs` with the protoc that
//!   the `protoc-bin-vendored` crate ships (no system protoc needed). The hub's `pubsub.v1` code
//!   comes generated with the library; `tests/generated_code.rs` checks that the library's
//!   committed code still matches its proto;
//! * [`Greeter`], the app's gRPC service;
//! * [`serve`], which puts it all on one listener; `src/main.rs` runs it.
//!
//! # Pitfalls
//!
//! * **tonic speaks HTTP/2 only, unless told otherwise.** Browsers' `EventSource` uses HTTP/1.1
//!   on plain `http://` (and HTTP/2 only through TLS with ALPN), so without
//!   [`Server::accept_http1(true)`](Server::accept_http1) the server never sees their requests.
//! * **The hub's layer goes outside tonic-web.** tonic's [`Server::layer`] stacks like
//!   `tower::ServiceBuilder`: the first layer added is the outermost. tonic-web's service answers
//!   `400 Bad Request` to *every* HTTP/1.1 request that is not grpc-web, so with tonic-web
//!   outside, `GET /events` and `POST /publish` over HTTP/1.1 never reach the hub. With the hub
//!   outside, the hub answers its two paths and passes everything else (gRPC, grpc-web, the
//!   app's services) through untouched:
//!
//!   ```text
//!   Server::builder()
//!       .accept_http1(true)          // EventSource and grpc-web use HTTP/1.1
//!       .layer(hub.layer())          // outermost: GET /events, POST /publish
//!       .layer(GrpcWebLayer::new())  // then grpc-web is translated to gRPC
//!       .add_service(..)             // gRPC routes
//!   ```
//!
//!   `tests/one_port.rs` checks both orders.
//! * **Graceful shutdown waits for open streams.** tonic's graceful shutdown lets in-flight
//!   requests finish, and a subscribe stream never finishes by itself. [`Hub::shutdown`] ends the
//!   SSE streams and the gRPC subscribe streams alike; [`serve`] shuts the hub down when its
//!   shutdown future completes.
//! * **tonic-web no longer does CORS.** A browser on another origin needs a CORS layer outside
//!   both (tower-http's `CorsLayer`); same-origin pages need nothing.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_web::GrpcWebLayer;
use tower_sse_pubsub::{Hub, PublishError, Publisher};

/// Code generated from `proto/greeter.proto`.
pub mod proto {
    /// The app's own service (`greeter.v1`).
    #[allow(missing_docs)]
    pub mod greeter {
        tonic::include_proto!("greeter.v1");
    }
}

use proto::greeter::greeter_server::GreeterServer;
use proto::greeter::{HelloReply, HelloRequest};

/// The topic [`Greeter::hello`](proto::greeter::greeter_server::Greeter::hello) announces
/// greetings on.
pub const GREETINGS_TOPIC: &str = "greetings";

/// Serves gRPC (the hub's `pubsub.v1.PubSub` and [`Greeter`]), grpc-web and the hub's SSE
/// endpoints on `listener` until `signal` completes; then shuts the hub down, which ends its SSE
/// streams and the gRPC subscribe streams, and returns once every connection has closed.
///
/// ```no_run
/// use tower_sse_pubsub::Hub;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
/// integration_tonic::serve(listener, hub, async {
///     tokio::signal::ctrl_c().await.ok();
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The server's error when accepting or serving fails.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    signal: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let greeter = Greeter::new(hub.publisher());
    let hub_to_stop = hub.clone();
    let on_signal = async move {
        signal.await;
        hub_to_stop.shutdown();
    };
    Server::builder()
        // Browsers' EventSource and grpc-web speak HTTP/1.1; tonic alone speaks only HTTP/2.
        .accept_http1(true)
        // Outermost, so tonic-web never sees (and refuses) plain HTTP/1.1 requests.
        .layer(hub.layer())
        .layer(GrpcWebLayer::new())
        .add_service(hub.grpc_service().into_server())
        .add_service(GreeterServer::new(greeter))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), on_signal)
        .await
}

/// The app's own gRPC service, `greeter.v1.Greeter`, served next to the hub: it greets, and
/// announces each greeting on [`GREETINGS_TOPIC`] for browsers and services to see.
#[derive(Debug, Clone)]
pub struct Greeter {
    publisher: Publisher,
}

impl Greeter {
    /// A greeter that announces through `publisher`.
    pub fn new(publisher: Publisher) -> Self {
        Self { publisher }
    }
}

#[tonic::async_trait]
impl proto::greeter::greeter_server::Greeter for Greeter {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name must not be empty"));
        }
        let message = format!("hello, {name}");
        self.publisher
            .publish_text(GREETINGS_TOPIC, message.clone())
            .await
            .map_err(|error| match error {
                PublishError::Broker(e) => Status::unavailable(format!("cannot announce: {e}")),
                other => Status::internal(format!("cannot announce: {other}")),
            })?;
        Ok(Response::new(HelloReply { message }))
    }
}
