//! [`SsePubSubLayer`]: wraps a service so that the hub's endpoints answer in front of it.

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use crate::endpoint::Endpoints;
use crate::service::SsePubSub;

/// A tower [`Layer`] that puts the hub's subscribe and publish endpoints in front of a service;
/// get one from [`Hub::layer`](crate::Hub::layer).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_sse_pubsub::Hub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new();
/// let app = ServiceBuilder::new()
///     .layer(hub.layer())
///     .service(service_fn(|_req: Request<String>| async {
///         Ok::<_, Infallible>(Response::new(String::from("from the app")))
///     }));
///
/// // Other paths reach the app untouched.
/// let response = app.clone().oneshot(Request::get("/").body(String::new())?).await?;
/// assert_eq!(response.status(), 200);
///
/// // The events path answers with a stream.
/// let response = app.oneshot(Request::get("/events?topic=chat").body(String::new())?).await?;
/// assert_eq!(response.headers()["content-type"], "text/event-stream");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SsePubSubLayer {
    shared: Arc<Endpoints>,
}

impl SsePubSubLayer {
    pub(crate) fn new(shared: Arc<Endpoints>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for SsePubSubLayer {
    type Service = SsePubSub<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SsePubSub::new(inner, self.shared.clone())
    }
}

impl fmt::Debug for SsePubSubLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsePubSubLayer")
            .field("events_path", &self.shared.config.events_path)
            .field("publish_path", &self.shared.config.publish_path)
            .finish_non_exhaustive()
    }
}
