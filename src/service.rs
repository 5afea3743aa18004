//! [`SsePubSub`]: routes the hub's two endpoints and passes every other request through.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;
use tower::Service;

use crate::body::ResponseBody;
use crate::endpoint::reply::refuse;
use crate::endpoint::{Endpoints, Route, publish, subscribe};
use crate::future::ResponseFuture;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The middleware service made by [`SsePubSubLayer`](crate::SsePubSubLayer).
///
/// `GET` on the events path subscribes (and `HEAD` answers as `GET` would, without subscribing),
/// `POST` on the publish path publishes, other methods on those paths get 405 with `Allow`, and every other request reaches the inner service exactly as
/// it came (method, headers, body, extensions). The inner service's error type is kept: our own
/// failures are HTTP responses, never errors.
///
/// Readiness is the inner service's, as with every tower-http middleware: the service cannot
/// know which path the next request has. So a load-shedding or concurrency-limiting layer
/// *inside* this one also holds back the hub's endpoints; put such layers outside it to spare
/// them.
#[derive(Clone)]
pub struct SsePubSub<S> {
    inner: S,
    shared: Arc<Endpoints>,
}

impl<S> SsePubSub<S> {
    pub(crate) fn new(inner: S, shared: Arc<Endpoints>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming the middleware.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SsePubSub<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.shared.route(request.method(), request.uri().path()) {
            Route::PassThrough => ResponseFuture::inner(self.inner.call(request)),
            Route::Subscribe => {
                let (parts, _body) = request.into_parts();
                let shared = self.shared.clone();
                ResponseFuture::endpoint(Box::pin(subscribe::subscribe(shared, parts)))
            }
            Route::Probe => {
                let (parts, _body) = request.into_parts();
                let shared = self.shared.clone();
                ResponseFuture::endpoint(Box::pin(subscribe::probe(shared, parts)))
            }
            Route::Publish => {
                let (parts, body) = request.into_parts();
                let shared = self.shared.clone();
                ResponseFuture::endpoint(Box::pin(publish::publish(shared, parts, body)))
            }
            #[cfg(feature = "mercure")]
            Route::Mercure(route) => self.mercure(route, request),
            Route::WrongMethod(allow) => ResponseFuture::endpoint(Box::pin(std::future::ready(
                wrong_method(request.method(), allow),
            ))),
        }
    }
}

impl<S> SsePubSub<S> {
    /// Serves a request for the Mercure endpoint.
    #[cfg(feature = "mercure")]
    fn mercure<ReqBody, F>(
        &self,
        route: crate::mercure::MercureRoute,
        request: Request<ReqBody>,
    ) -> ResponseFuture<F>
    where
        ReqBody: Body + Send + 'static,
        ReqBody::Data: Send,
        ReqBody::Error: Into<BoxError>,
    {
        use crate::mercure::{self, MercureRoute};
        let shared = self.shared.clone();
        let Some(hub) = shared.config.mercure.clone() else {
            return ResponseFuture::endpoint(Box::pin(std::future::ready(wrong_method(
                request.method(),
                "GET",
            ))));
        };
        match route {
            MercureRoute::Subscribe => {
                let (parts, _body) = request.into_parts();
                ResponseFuture::endpoint(Box::pin(async move {
                    mercure::subscribe(shared, &hub, parts).await
                }))
            }
            MercureRoute::Publish => {
                let (parts, body) = request.into_parts();
                ResponseFuture::endpoint(Box::pin(async move {
                    mercure::publish(shared, &hub, parts, body).await
                }))
            }
            MercureRoute::Subscriptions => {
                let (parts, _body) = request.into_parts();
                ResponseFuture::endpoint(Box::pin(async move {
                    mercure::subscriptions(&shared, &hub, &parts).await
                }))
            }
            MercureRoute::WrongMethod(allow) => ResponseFuture::endpoint(Box::pin(
                std::future::ready(wrong_method(request.method(), allow)),
            )),
        }
    }
}

/// 405 with `Allow`.
fn wrong_method(
    method: &http::Method,
    allow: &'static str,
) -> Response<crate::endpoint::reply::Reply> {
    let mut response = refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed here; use {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

impl<S: fmt::Debug> fmt::Debug for SsePubSub<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsePubSub")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
