//! Discovery: the `Link: <hub>; rel="mercure"` header a publisher adds to its resources, so
//! clients find the hub (Mercure, "Discovery").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::fmt;

use http::header::LINK;
use http::{HeaderValue, Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Adds `Link: <hub>; rel="mercure"` to every response of the service it wraps, beside any
/// `Link` headers the response already has, as the protocol recommends for resources whose
/// updates the hub pushes.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{Layer, ServiceExt, service_fn};
/// use tower_sse_pubsub::mercure::DiscoveryLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = DiscoveryLayer::new("https://example.com/.well-known/mercure")?;
/// let app = layer.layer(service_fn(|_: Request<String>| async {
///     Ok::<_, Infallible>(Response::new("{\"@id\": \"/books/1\"}".to_owned()))
/// }));
/// let response = app.oneshot(Request::new(String::new())).await?;
/// assert_eq!(
///     response.headers()["link"],
///     "<https://example.com/.well-known/mercure>; rel=\"mercure\""
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DiscoveryLayer {
    link: HeaderValue,
}

impl DiscoveryLayer {
    /// A layer announcing the hub at `hub_url`: absolute (`https://example.com/.well-known/mercure`)
    /// or a path on the same origin (`/.well-known/mercure`).
    ///
    /// # Errors
    ///
    /// [`InvalidHubUrl`] when `hub_url` is not a URI (spaces, control characters, or a `>`,
    /// which must be percent-encoded).
    pub fn new(hub_url: &str) -> Result<Self, InvalidHubUrl> {
        let invalid = |reason: String| InvalidHubUrl {
            url: hub_url.escape_debug().to_string(),
            reason,
        };
        let uri: Uri = hub_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        // A URI holds only visible ASCII, which a header value accepts.
        let link = HeaderValue::from_str(&format!("<{uri}>; rel=\"mercure\""))
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self { link })
    }
}

/// A hub URL that cannot be announced in a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHubUrl {
    url: String,
    reason: String,
}

impl fmt::Display for InvalidHubUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the hub URL \"{}\" is not a valid URI ({}); percent-encode spaces and `<>`",
            self.url, self.reason
        )
    }
}

impl std::error::Error for InvalidHubUrl {}

impl<S> Layer<S> for DiscoveryLayer {
    type Service = Discovery<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Discovery {
            inner,
            link: self.link.clone(),
        }
    }
}

/// The service [`DiscoveryLayer`] makes.
#[derive(Debug, Clone)]
pub struct Discovery<S> {
    inner: S,
    link: HeaderValue,
}

impl<S, B, R> Service<Request<B>> for Discovery<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = DiscoveryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        DiscoveryFuture {
            inner: self.inner.call(request),
            link: Some(self.link.clone()),
        }
    }
}

pin_project! {
    /// The response future of [`Discovery`].
    pub struct DiscoveryFuture<F> {
        #[pin]
        inner: F,
        link: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for DiscoveryFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            other => return other,
        };
        if let Some(link) = this.link.take() {
            response.headers_mut().append(LINK, link);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    async fn links(layer: &DiscoveryLayer, existing: Option<&'static str>) -> Vec<String> {
        let app = layer.layer(tower::service_fn(move |_: Request<()>| async move {
            let mut response = Response::new(());
            if let Some(link) = existing {
                response
                    .headers_mut()
                    .insert(LINK, HeaderValue::from_static(link));
            }
            Ok::<_, Infallible>(response)
        }));
        let response = app.oneshot(Request::new(())).await.expect("infallible");
        response
            .headers()
            .get_all(LINK)
            .iter()
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn the_hub_link_joins_the_responses_own_links() {
        let layer = DiscoveryLayer::new("/.well-known/mercure").expect("valid URL");
        assert_eq!(
            links(&layer, None).await,
            ["</.well-known/mercure>; rel=\"mercure\""]
        );
        assert_eq!(
            links(&layer, Some("</books/1.jsonld>; rel=\"self\"")).await,
            [
                "</books/1.jsonld>; rel=\"self\"",
                "</.well-known/mercure>; rel=\"mercure\""
            ]
        );
    }

    #[test]
    fn urls_a_header_cannot_carry_are_refused_with_a_reason() {
        for url in [
            "https://example.com/a b",
            "https://example.com/>",
            "/x\n",
            "",
        ] {
            let error = DiscoveryLayer::new(url).expect_err("refused");
            assert!(error.to_string().contains("not a valid URI"), "{error}");
        }
    }
}
