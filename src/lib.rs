//! Real-time server push for any tower app: Server-Sent Events with pub/sub, as middleware.
//!
//! A browser opens `new EventSource('/events?topic=chat')`; somebody `POST`s to `/publish`, or
//! app code calls a [`Publisher`]; every subscriber of the topic receives the event at once.
//! [`Hub::layer`] mounts both endpoints in front of an existing axum router, tonic server or
//! hyper service, and passes every other request through untouched.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_sse_pubsub::Hub;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Anonymous publishing is off by default; a demo opts in, a real app sets an authorizer.
//! let hub = Hub::builder().allow_anonymous_publish().build()?;
//!
//! let app = Router::new()
//!     .route("/", get(|| async { "the app's own route" }))
//!     .layer(hub.layer()); // adds GET /events and POST /publish
//!
//! // App code publishes too: handlers, jobs, gRPC methods.
//! let publisher = hub.publisher();
//! publisher.publish_json("chat", &serde_json::json!({"from": "ada", "text": "hi"})).await?;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown_hub = hub.clone();
//! let server = axum::serve(listener, app).with_graceful_shutdown(async move {
//!     // e.g. tokio::signal::ctrl_c().await
//!     shutdown_hub.shutdown(); // ends open streams so graceful shutdown can finish
//! });
//! server.await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What the layer guarantees
//!
//! * **Encode once.** An [`Event`] is validated when built and encoded to its SSE frame once, at
//!   publish; every subscriber gets a reference-counted clone of the same bytes. No data can
//!   inject a field or an extra event: CRLF, CR and LF each start a new `data:` line.
//! * **Ordered ids, resume without gaps.** The broker gives every event an [`EventId`]. A client
//!   that reconnects with `Last-Event-ID` (or `?lastEventID=` on its first connect) gets every
//!   retained event after it, then live events, nothing twice. If the id is older than the
//!   retained history or unknown, the stream opens with a `resync` event and an `sse-resume`
//!   response header instead of a silent gap.
//! * **Bounded memory.** Nothing is queued per subscriber: each topic keeps one bounded log of
//!   encoded events and a subscriber is a position in it. One that falls out of the log gets a
//!   final comment and its stream ends, so it reconnects and resumes, and never slows the others;
//!   one that stops reading is ended by its connection ([`ConnectionDeadlines`]). Limits cover body
//!   size, topics per request, topic length and open streams.
//! * **Clean shutdown.** [`Hub::shutdown`] ends every stream with a jittered `retry:`.
//! * **Secure by default.** Nobody publishes over HTTP unless the builder says who may
//!   ([`HubBuilder::authorizer`] or [`HubBuilder::allow_anonymous_publish`]).
//!
//! # Proxies and compression
//!
//! Responses carry `Cache-Control: no-cache` and `X-Accel-Buffering: no`, and the first bytes go
//! out at once. tower-http's `CompressionLayer` skips `text/event-stream` by default; keep it that
//! way, since a compressor buffers events.
//!
//! # Brokers and features
//!
//! [`MemoryBroker`] is the default: one process, nothing to set up. With the `redis` feature,
//! `RedisBroker` shares topics, ids and history between instances through Redis 7, with one
//! pub/sub connection per process and recovery from dropped connections and restarts. Both pass
//! the same conformance suite. The [`Broker`](broker::Broker) trait is open for others: a broker
//! stores and orders events, and feeds the crate's fan-out engine ([`broker::Fanout`]), which
//! delivers them in-process.
//!
//! # Modules
//!
//! Every item has one path. What an app uses is at the crate root; what only a broker author
//! needs (the [`Broker`](broker::Broker) trait, the fan-out engine) is in [`broker`]. Each
//! optional part has its own module, named after its feature:
//!
//! * `conformance`: the broker conformance suite, for brokers written outside this crate;
//! * `grpc`: the hub as the gRPC service `pubsub.v1.PubSub` (tonic), with the hub's
//!   authorizer, limits and counters;
//! * `jwt`: `JwtAuthorizer`, Mercure's JSON Web Tokens for the hub's endpoints;
//! * `mercure`: a Mercure hub endpoint (`/.well-known/mercure`) in the hub's layer, and discovery.
//!
//! Feature `redis` adds `RedisBroker` at the root; `axum` adds `ConnectionDeadlines::listener`;
//! `metrics` exports [`HubStats`] through the `metrics` facade.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod body;
pub mod broker;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
mod deadline;
mod endpoint;
mod event;
mod fanout;
mod future;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
mod hub;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
mod layer;
#[cfg(feature = "mercure")]
#[cfg_attr(docsrs, doc(cfg(feature = "mercure")))]
pub mod mercure;
mod publisher;
mod selector;
mod service;
mod signal;
mod stats;

pub use auth::{Access, Allowed, AuthorizeFn, Authorizer, Denied, authorize_fn};
pub use body::{EventsBody, ResponseBody};
pub use broker::error::BrokerError;
pub use broker::memory::{MemoryBroker, MemoryBrokerBuilder};
#[cfg(feature = "nats")]
pub use broker::nats::{NatsBroker, NatsBrokerBuilder, NatsConnectError};
#[cfg(feature = "redis")]
pub use broker::redis::{RedisBroker, RedisBrokerBuilder, RedisConnectError};
pub use broker::request::{
    Grant, IdempotencyKey, IdempotencyKeyError, MAX_IDEMPOTENCY_KEY_LEN, PublishRequest,
    ReplayBudget, Start, SubscribeRequest,
};
pub use broker::subscription::{Delivery, Resume, Subscription, SubscriptionEnd};
pub use deadline::{ConnectionDeadlines, DeadlineCuts, DeadlineIo};
#[cfg(feature = "axum")]
pub use deadline::{DeadlineListener, DeadlineTapIo};
pub use endpoint::stream::RESYNC_EVENT;
pub use endpoint::subscribe::RESUME_HEADER;
pub use event::{
    Event, EventError, EventId, EventIdError, Frame, FrameFields, JsonError, MAX_EVENT_ID_LEN,
    MAX_EVENT_TYPE_LEN, MAX_TOPIC_LEN, Topic, TopicError,
};
pub use future::{BoxFuture, ResponseFuture};
pub use hub::{
    BuildError, DEFAULT_EVENTS_PATH, DEFAULT_PUBLISH_PATH, Hub, HubBuilder, ShutdownTimedOut,
    StreamsEnded,
};
pub use layer::SsePubSubLayer;
pub use publisher::{PublishError, Publisher};
pub use selector::{MAX_SELECTOR_LEN, Selector, SelectorError};
pub use service::SsePubSub;
pub use stats::{HubStats, Resumes, StreamsClosed, SubscribesRefused};

/// Compiles and runs the README's Rust examples as doctests (they use every feature).
#[cfg(all(
    doctest,
    feature = "redis",
    feature = "nats",
    feature = "jwt",
    feature = "grpc",
    feature = "mercure"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
