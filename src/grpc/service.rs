//! [`PubSubService`]: `pubsub.v1.PubSub` over a hub, through the hub's own admission steps.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use tonic::{Request, Response, Status};

use super::proto::pub_sub_server::{PubSub, PubSubServer};
use super::proto::{self, PublishReply};
use super::stream::EventStream;
use super::{PUBLISH_PATH, SUBSCRIBE_PATH, status};
use crate::broker::PublishRequest;
use crate::endpoint::Endpoints;
use crate::endpoint::admit::{self, Ask, Decider, ResumePoint, add_topic};
use crate::endpoint::publish::event;
use crate::event::EventId;
use crate::hub::Hub;
use crate::stats::Refusal;

/// The hub's pub/sub as the gRPC service `pubsub.v1.PubSub`, with the hub's authorizer, limits
/// and counters (see the [module docs](super)).
///
/// Made with [`Hub::grpc_service`] or [`PubSubService::new`]; cheap to clone. Serve it with
/// [`into_server`](Self::into_server):
///
/// ```
/// use tower_sse_pubsub::Hub;
/// use tower_sse_pubsub::grpc::PubSubService;
///
/// let hub = Hub::builder().max_topics_per_request(8).build()?;
/// let router = tonic::transport::Server::builder()
///     .layer(hub.layer())
///     .add_service(PubSubService::new(&hub).into_server());
/// # drop(router);
/// # Ok::<(), tower_sse_pubsub::BuildError>(())
/// ```
#[derive(Clone)]
pub struct PubSubService {
    shared: Arc<Endpoints>,
}

impl PubSubService {
    /// The service for `hub`: its streams take the hub's subscriber slots and end when the hub
    /// shuts down.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    /// use tower_sse_pubsub::grpc::PubSubService;
    ///
    /// let hub = Hub::new();
    /// let service = PubSubService::new(&hub);
    /// # drop(service);
    /// ```
    pub fn new(hub: &Hub) -> Self {
        Self {
            shared: hub.endpoints().clone(),
        }
    }

    /// The tonic server for this service, for `Server::add_service` or tonic's `Routes`. It
    /// refuses a request message larger than the hub's
    /// [`max_body_bytes`](crate::HubBuilder::max_body_bytes) with `OUT_OF_RANGE` before reading
    /// it; tune it further (compression, the reply size limit) with the server's own methods.
    ///
    /// ```
    /// use tower_sse_pubsub::Hub;
    ///
    /// let hub = Hub::builder().max_body_bytes(16 * 1024).build()?;
    /// let server = hub
    ///     .grpc_service()
    ///     .into_server()
    ///     .max_encoding_message_size(1024 * 1024);
    /// # drop(server);
    /// # Ok::<(), tower_sse_pubsub::BuildError>(())
    /// ```
    pub fn into_server(self) -> PubSubServer<Self> {
        let limit = self.shared.config.max_body_bytes;
        PubSubServer::new(self).max_decoding_message_size(limit)
    }

    async fn publish_checked(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        let shared = &self.shared;
        admit::publishing_enabled(shared).map_err(|refused| status::publish_refused(&refused))?;
        let (parts, message) = request_parts(request, PUBLISH_PATH);
        let request =
            publish_request(message, shared.config.max_topics).map_err(Status::invalid_argument)?;
        let id = admit::publish(shared, &parts, &request)
            .await
            .map_err(|refused| status::publish_refused(&refused))?;
        Ok(Response::new(PublishReply { id: id.to_string() }))
    }

    fn subscribe_refused(&self, refusal: Refusal, status: Status) -> Status {
        self.shared.counters.refused(refusal);
        tracing::debug!(
            target: "tower_sse_pubsub",
            code = ?status.code(),
            reason = ?refusal,
            "subscribe refused"
        );
        status
    }
}

impl fmt::Debug for PubSubService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl PubSub for PubSubService {
    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<PublishReply>, Status> {
        let result = self.publish_checked(request).await;
        let counters = &self.shared.counters;
        match &result {
            Ok(_) => counters.published(),
            // The broker could not store the event (as a 503 over HTTP).
            Err(status) if status.code() == tonic::Code::Unavailable => {
                counters.publish_failed();
                let code = status.code();
                tracing::debug!(target: "tower_sse_pubsub", ?code, "publish failed");
            }
            Err(status) => {
                counters.publish_refused();
                let code = status.code();
                tracing::debug!(target: "tower_sse_pubsub", ?code, "publish refused");
            }
        }
        result
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (parts, message) = request_parts(request, SUBSCRIBE_PATH);
        let ask = subscribe_ask(message, self.shared.config.max_topics).map_err(|reason| {
            self.subscribe_refused(Refusal::BadRequest, Status::invalid_argument(reason))
        })?;
        match admit::subscribe(&self.shared, &parts, ask).await {
            Ok(admitted) => Ok(Response::new(EventStream::new(admitted))),
            Err(refused) => {
                Err(self.subscribe_refused(refused.refusal(), status::subscribe_refused(&refused)))
            }
        }
    }
}

/// The request parts the hub's authorizer and limits read, made from a gRPC call: `POST` to the
/// call's path over HTTP/2, its metadata as headers, its extensions (tonic's connection info,
/// and whatever interceptors and layers put there).
fn request_parts<T>(request: Request<T>, path: &'static str) -> (Parts, T) {
    let (metadata, extensions, message) = request.into_parts();
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = http::Method::POST;
    parts.uri = http::Uri::from_static(path);
    parts.version = http::Version::HTTP_2;
    parts.headers = metadata.into_headers();
    parts.extensions = extensions;
    (parts, message)
}

/// Reads a `Subscribe` request as the hub's subscribe endpoint reads its query: topics checked
/// and deduplicated within the hub's limit. An `after_id` that cannot be an id is refused
/// (a gRPC client, unlike a browser's EventSource, can act on the refusal); an empty one is
/// ignored, as an empty `Last-Event-ID` is.
fn subscribe_ask(message: proto::SubscribeRequest, max_topics: usize) -> Result<Ask, String> {
    let mut topics = Vec::new();
    for name in &message.topics {
        add_topic(&mut topics, name, max_topics)?;
    }
    if topics.is_empty() {
        return Err("no topic: name at least one topic in `topics`".to_owned());
    }
    let after = match message.after_id.as_deref() {
        None | Some("") => ResumePoint::None,
        Some(id) => {
            ResumePoint::Id(EventId::new(id).map_err(|e| format!("invalid after_id {id:?}: {e}"))?)
        }
    };
    Ok(Ask {
        topics,
        after,
        patterns: Vec::new(),
        decider: Decider::Authorizer,
        on_close: None,
        counted: true,
    })
}

/// Reads a `Publish` request as the hub's publish endpoint reads a form, with its checks and
/// messages.
fn publish_request(
    message: proto::PublishRequest,
    max_topics: usize,
) -> Result<PublishRequest, String> {
    let mut topics = Vec::new();
    for name in &message.topics {
        add_topic(&mut topics, name, max_topics)?;
    }
    if topics.is_empty() {
        return Err("no topic: give at least one topic in `topics`".to_owned());
    }
    let event = event(message.data, message.event_type, None)?;
    Ok(PublishRequest::new(topics, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_becomes_request_parts_with_its_metadata_and_extensions() {
        #[derive(Clone, Debug, PartialEq)]
        struct User(&'static str);
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer t".parse().expect("ASCII"));
        request.extensions_mut().insert(User("ada"));
        let (parts, ()) = request_parts(request, SUBSCRIBE_PATH);
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(parts.uri.path(), "/pubsub.v1.PubSub/Subscribe");
        assert_eq!(parts.headers["authorization"], "Bearer t");
        assert_eq!(parts.extensions.get::<User>(), Some(&User("ada")));
    }

    #[test]
    fn subscribe_requests_are_read_with_the_endpoint_s_rules() {
        let request = |topics: &[&str], after_id: Option<&str>| proto::SubscribeRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            after_id: after_id.map(str::to_owned),
        };
        let ask = subscribe_ask(request(&["a", "a", "b"], Some("")), 2).expect("valid");
        assert_eq!(ask.topics.len(), 2);
        assert_eq!(ask.after, ResumePoint::None);
        let error = subscribe_ask(request(&["a", "b", "c"], None), 2).expect_err("too many");
        assert_eq!(error, "too many topics: at most 2 per request");
        let error = subscribe_ask(request(&[], None), 2).expect_err("none");
        assert!(error.contains("at least one topic"), "{error}");
        let error = subscribe_ask(request(&["a"], Some("bad\nid")), 2).expect_err("bad id");
        assert!(error.starts_with("invalid after_id"), "{error}");
    }
}
