//! A tonic server with browsers on SSE and services on gRPC, on one port.
//!
//! One [`tonic::transport::Server`] serves three kinds of client on the same listener:
//!
//! * **services** call gRPC (HTTP/2): the app's own [`Greeter`], and [`PubSubService`], the
//!   hub's pub/sub as a gRPC API (`pubsub.v1.PubSub`: `Publish`, and a server-streaming
//!   `Subscribe` with gap-free resume through `after_id`);
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
//! * `proto/pubsub.proto` and `proto/greeter.proto`, compiled by `build.rs` with the protoc that
//!   the `protoc-bin-vendored` crate ships (no system protoc needed);
//! * [`PubSubService`] and [`Greeter`], the two gRPC services;
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
//!       .accept_http1(true)
//!       .layer(hub.layer())          // outermost: GET /events, POST /publish
//!       .layer(GrpcWebLayer::new())  // then grpc-web is translated to gRPC
//!       .add_service(..)             // gRPC routes
//!   ```
//!
//!   `tests/one_port.rs` checks both orders.
//! * **Graceful shutdown waits for open streams.** tonic's graceful shutdown lets in-flight
//!   requests finish, and a subscribe stream never finishes by itself. [`Hub::shutdown`] ends the
//!   SSE streams, and each gRPC subscribe stream ends too, on [`Hub::shutdown_requested`].
//!   [`serve`] shuts the hub down when its shutdown future completes.
//! * **tonic-web no longer does CORS.** A browser on another origin needs a CORS layer outside
//!   both (tower-http's `CorsLayer`); same-origin pages need nothing.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tonic_web::GrpcWebLayer;
use tower_sse_pubsub::{
    BrokerError, Delivery, Event, EventId, Frame, Hub, PublishError, Publisher, RESYNC_EVENT,
    Resume, Subscription, SubscriptionEnd, Topic,
};

/// Code generated from `proto/*.proto`.
pub mod proto {
    /// The hub's pub/sub as a gRPC API (`pubsub.v1`).
    #[allow(missing_docs)]
    pub mod pubsub {
        tonic::include_proto!("pubsub.v1");
    }

    /// The app's own service (`greeter.v1`).
    #[allow(missing_docs)]
    pub mod greeter {
        tonic::include_proto!("greeter.v1");
    }
}

use proto::greeter::greeter_server::GreeterServer;
use proto::greeter::{HelloReply, HelloRequest};
use proto::pubsub::pub_sub_server::PubSubServer;
use proto::pubsub::{PublishReply, PublishRequest, SubscribeRequest};

/// The topic [`Greeter::hello`](proto::greeter::greeter_server::Greeter::hello) announces
/// greetings on.
pub const GREETINGS_TOPIC: &str = "greetings";

/// The most topics one `Publish` or `Subscribe` call may name, as the hub's HTTP endpoints allow
/// by default.
pub const MAX_TOPICS_PER_REQUEST: usize = 32;

/// Serves gRPC ([`PubSubService`], [`Greeter`]), grpc-web and the hub's SSE endpoints on
/// `listener` until `signal` completes; then shuts the hub down, which ends its SSE streams and
/// the gRPC subscribe streams, and returns once every connection has closed.
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
    let pubsub = PubSubService::new(hub.clone());
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
        .add_service(PubSubServer::new(pubsub))
        .add_service(GreeterServer::new(greeter))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), on_signal)
        .await
}

/// The hub's pub/sub as the gRPC service `pubsub.v1.PubSub`.
///
/// It publishes and subscribes through the hub's broker directly, so it shares topics and ids
/// with the SSE endpoints. It does not consult the hub's HTTP authorizer, and its streams do not
/// count toward the hub's subscriber limit: authenticate gRPC callers with a tonic interceptor.
#[derive(Debug, Clone)]
pub struct PubSubService {
    publisher: Publisher,
    hub: Hub,
}

impl PubSubService {
    /// The service for `hub`: its streams end when the hub shuts down.
    pub fn new(hub: Hub) -> Self {
        Self {
            publisher: hub.publisher(),
            hub,
        }
    }
}

/// The stream `Subscribe` answers with.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<proto::pubsub::Event, Status>> + Send>>;

#[tonic::async_trait]
impl proto::pubsub::pub_sub_server::PubSub for PubSubService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        let request = request.into_inner();
        let topics = topics(&request.topics)?;
        let event = event(request.data, request.event_type)?;
        let id = self
            .publisher
            .publish_to(&topics, event)
            .await
            .map_err(publish_status)?;
        Ok(Response::new(PublishReply { id: id.to_string() }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let topics = topics(&request.topics)?;
        // An empty resume point is ignored, as the SSE endpoint ignores an empty Last-Event-ID.
        let after = match request.after_id.as_deref() {
            None | Some("") => None,
            Some(id) => Some(EventId::new(id).map_err(|e| {
                Status::invalid_argument(format!("cannot subscribe: after_id: {e}"))
            })?),
        };
        if self.hub.is_shut_down() {
            return Err(shutting_down());
        }
        // Through the hub, with the SSE endpoint's replay budget: an unknown or old after_id
        // replays at most that.
        let subscription = self
            .hub
            .subscribe_with(tower_sse_pubsub::SubscribeRequest::new(topics).after(after))
            .await
            .map_err(|e| broker_status("cannot subscribe", e))?;
        Ok(Response::new(event_stream(
            subscription,
            self.hub.shutdown_requested(),
        )))
    }
}

/// Turns a subscription into the gRPC stream: a resync notice first if the resume point could
/// not be placed, then every delivery, until the subscription ends or the server shuts down.
fn event_stream(
    subscription: Subscription,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> EventStream {
    let opening = subscription
        .resume()
        .is_gap()
        .then(|| Ok(resync_message(subscription.resume())));
    let feed = Feed {
        subscription,
        shutdown: Box::pin(shutdown),
    };
    let deliveries = futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let item = tokio::select! {
            // Shutdown first: graceful shutdown waits for every open stream, so none may outlast
            // it by delivering a backlog.
            biased;
            () = &mut feed.shutdown => Err(shutting_down()),
            item = next_message(&mut feed.subscription) => item,
        };
        // An error status is the stream's last item.
        let rest = item.is_ok().then_some(feed);
        Some((item, rest))
    });
    Box::pin(futures::stream::iter(opening).chain(deliveries))
}

/// What a `Subscribe` stream reads from.
struct Feed {
    subscription: Subscription,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// The next message for the client, or the status the stream ends with.
async fn next_message(subscription: &mut Subscription) -> Result<proto::pubsub::Event, Status> {
    loop {
        match subscription.next().await {
            Some(Delivery::Event(frame)) => return Ok(event_message(&frame)),
            Some(Delivery::Resync(reason)) => return Ok(resync_message(&reason)),
            // A kind of delivery this service does not know yet: nothing to forward.
            Some(_) => {}
            None => {
                return Err(match subscription.end() {
                    Some(SubscriptionEnd::Lagged) => Status::resource_exhausted(
                        "subscriber fell behind; resubscribe with after_id",
                    ),
                    _ => Status::unavailable(
                        "the broker closed the subscription; resubscribe with after_id",
                    ),
                });
            }
        }
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; resubscribe with after_id")
}

fn event_message(frame: &Frame) -> proto::pubsub::Event {
    let fields = frame.fields();
    proto::pubsub::Event {
        id: frame.id().to_string(),
        event_type: fields.event_type,
        data: fields.data,
        resync: false,
        resync_reason: String::new(),
    }
}

fn resync_message(reason: &Resume) -> proto::pubsub::Event {
    proto::pubsub::Event {
        id: String::new(),
        event_type: None,
        data: String::new(),
        resync: true,
        resync_reason: reason.as_str().to_owned(),
    }
}

/// Validates the topics of a request, with the library's messages.
fn topics(names: &[String]) -> Result<Vec<Topic>, Status> {
    if names.is_empty() {
        return Err(Status::invalid_argument(BrokerError::NoTopics.to_string()));
    }
    if names.len() > MAX_TOPICS_PER_REQUEST {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_TOPICS_PER_REQUEST} topics per request, got {}",
            names.len()
        )));
    }
    names
        .iter()
        .map(|name| Topic::new(name).map_err(|e| publish_status(PublishError::InvalidTopic(e))))
        .collect()
}

/// Builds the event to publish, with the library's messages.
fn event(data: String, event_type: Option<String>) -> Result<Event, Status> {
    let invalid = |e| publish_status(PublishError::InvalidEvent(e));
    let event = Event::text(data).map_err(invalid)?;
    match event_type {
        None => Ok(event),
        Some(t) if t == RESYNC_EVENT => Err(Status::invalid_argument(format!(
            "cannot publish: event type {RESYNC_EVENT:?} is reserved for resync notices"
        ))),
        Some(t) => event.with_event_type(t).map_err(invalid),
    }
}

fn publish_status(error: PublishError) -> Status {
    match error {
        PublishError::Broker(e) => broker_status("cannot publish", e),
        other => Status::invalid_argument(other.to_string()),
    }
}

fn broker_status(context: &str, error: BrokerError) -> Status {
    match error {
        BrokerError::NoTopics => Status::invalid_argument(format!("{context}: {error}")),
        _ => Status::unavailable(format!("{context}: {error}")),
    }
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
            .map_err(publish_status)?;
        Ok(Response::new(HelloReply { message }))
    }
}
