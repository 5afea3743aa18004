//! The hub's pub/sub as a gRPC service (feature `grpc`): `pubsub.v1.PubSub`, with `Publish` and
//! a server-streaming `Subscribe` that resumes after an id, for tonic 0.14.
//!
//! Services publish and subscribe over gRPC while browsers use the hub's SSE endpoints; all see
//! the same topics and the same event ids, so an event published over gRPC reaches SSE
//! subscribers, an event `POST`ed reaches gRPC subscribers, and an id from either resumes the
//! other.
//!
//! The service goes through the same steps as the HTTP endpoints, not a copy of them:
//!
//! * **Authorizer.** The hub's [`Authorizer`](crate::Authorizer) decides, with
//!   [`Access::Publish`](crate::Access::Publish) or [`Access::Subscribe`](crate::Access::Subscribe)
//!   and the topics, on request parts made from the gRPC call: method `POST`, the path
//!   [`PUBLISH_PATH`] or [`SUBSCRIBE_PATH`], the call's metadata as headers (`authorization`,
//!   say) and its extensions (what a tonic interceptor or tower layer put there). A
//!   [`Denied`](crate::Denied) 401 becomes `UNAUTHENTICATED` (its challenge in the
//!   `www-authenticate` metadata), a 403 `PERMISSION_DENIED`. Without an authorizer, anyone may
//!   subscribe and nobody may publish unless the hub allows anonymous publishing
//!   ([`HubBuilder::allow_anonymous_publish`](crate::HubBuilder::allow_anonymous_publish)), as
//!   over HTTP.
//! * **Limits.** Topics per request and topic names, the most a publish may cost, the body limit
//!   (as tonic's decoding limit: a larger message gets `OUT_OF_RANGE` from tonic), the subscriber
//!   limit, the per-client limit (the client's address from tonic's `TcpConnectInfo`, or the
//!   hub's trusted proxy header), the concurrent replay limit, and refusal during shutdown.
//! * **Counters.** [`Hub::stats`](crate::Hub::stats) counts gRPC streams and publishes with the
//!   SSE ones: streams opened and closed (and why), refusals, resumes, events published,
//!   publish refusals and failures, frames delivered (and replayed), resyncs; `bytes_written`
//!   counts a gRPC event as its encoded message and 5-byte gRPC prefix. The same `tracing`
//!   events are emitted.
//!
//! Each refusal and each end of a stream has the status that `proto/pubsub/v1/pubsub.proto`
//! documents: a subscriber that fell behind gets `RESOURCE_EXHAUSTED`, a stream ended by the
//! hub's shutdown or by its broker `UNAVAILABLE`, and either resubscribes with the last id it
//! saw as `after_id`. A client that cancels its call frees its slot at once.
//!
//! # Serving gRPC and SSE on one port
//!
//! The hub's layer goes outermost (it answers its two paths and passes gRPC through), and tonic
//! must accept HTTP/1.1 for browsers' `EventSource`:
//!
//! ```
//! use tonic::transport::server::TcpIncoming;
//! use tower_sse_pubsub::Hub;
//! use tower_sse_pubsub::grpc::proto::pub_sub_client::PubSubClient;
//! use tower_sse_pubsub::grpc::proto::{PublishRequest, SubscribeRequest};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Anonymous publishing is off by default; a demo opts in, a real app sets an authorizer.
//! let hub = Hub::builder().allow_anonymous_publish().build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let stop = hub.clone();
//! let server = tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .accept_http1(true) // browsers' EventSource speaks HTTP/1.1
//!         .layer(hub.layer()) // GET /events and POST /publish; gRPC passes through
//!         .add_service(hub.grpc_service().into_server())
//!         .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
//!             // e.g. tokio::signal::ctrl_c().await
//!             stop.shutdown_requested().await;
//!         }),
//! );
//!
//! // A Rust client, from the generated code.
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
//!     .connect()
//!     .await?;
//! let mut client = PubSubClient::new(channel);
//! let mut events = client
//!     .subscribe(SubscribeRequest { topics: vec!["news".into()], after_id: None })
//!     .await?
//!     .into_inner();
//! let request = PublishRequest {
//!     topics: vec!["news".into()],
//!     data: "hello".into(),
//!     event_type: None,
//! };
//! let published = client.publish(request).await?.into_inner();
//! let event = events.message().await?.expect("an event");
//! assert_eq!((event.id, event.data.as_str()), (published.id, "hello"));
//!
//! hub.shutdown(); // ends the open stream, so the server's graceful shutdown completes
//! assert_eq!(events.message().await.map_err(|s| s.code()), Err(tonic::Code::Unavailable));
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! Add tonic-web's `GrpcWebLayer` *after* the hub's layer (inside it) for browser gRPC clients:
//! tonic-web answers every plain HTTP/1.1 request with 400, so outside the hub it would hide the
//! SSE endpoints. `integrations/tonic` in the repository serves all three on one port.
//!
//! # The generated code
//!
//! [`proto`] holds the messages, the server and the client, generated from
//! `proto/pubsub/v1/pubsub.proto` (shipped with the crate) and committed, so neither protoc nor a
//! build script is needed. The client is generated without tonic's transport: connect a
//! `tonic::transport::Channel` (tonic's `transport` feature) and pass it to
//! [`PubSubClient::new`](proto::pub_sub_client::PubSubClient::new).

mod service;
mod status;
mod stream;

pub use service::PubSubService;
pub use stream::EventStream;

/// The messages, server and client of `pubsub.v1`, generated by tonic-prost-build from
/// `proto/pubsub/v1/pubsub.proto`.
///
/// [`PubSubServer`](proto::pub_sub_server::PubSubServer) serves a [`PubSubService`] (see
/// [`PubSubService::into_server`]); [`PubSubClient`](proto::pub_sub_client::PubSubClient) calls
/// one.
pub mod proto {
    include!("generated/pubsub.v1.rs");
}

/// The path of the `Publish` call: what an [`Authorizer`](crate::Authorizer) sees as the URI
/// path of a gRPC publish.
///
/// ```
/// use http::request::Parts;
/// use tower_sse_pubsub::grpc::{PUBLISH_PATH, SUBSCRIBE_PATH};
/// use tower_sse_pubsub::{Access, Denied, Hub, Topic, authorize_fn};
///
/// // Over gRPC only services publish, with a key; over HTTP nobody does.
/// let hub = Hub::builder()
///     .authorizer(authorize_fn(|parts: &Parts, access: Access, _topics: &[Topic]| {
///         let grpc = parts.uri.path() == PUBLISH_PATH || parts.uri.path() == SUBSCRIBE_PATH;
///         let key = parts.headers.get("x-api-key").is_some_and(|key| key == "secret");
///         async move {
///             match access {
///                 Access::Publish if grpc && key => Ok(()),
///                 Access::Publish => Err(Denied::forbidden("only services with a key publish")),
///                 _ => Ok(()),
///             }
///         }
///     }))
///     .build()?;
/// # drop(hub);
/// # Ok::<(), tower_sse_pubsub::BuildError>(())
/// ```
pub const PUBLISH_PATH: &str = "/pubsub.v1.PubSub/Publish";

/// The path of the `Subscribe` call: what an [`Authorizer`](crate::Authorizer) sees as the URI
/// path of a gRPC subscribe (see [`PUBLISH_PATH`] for an example).
pub const SUBSCRIBE_PATH: &str = "/pubsub.v1.PubSub/Subscribe";
