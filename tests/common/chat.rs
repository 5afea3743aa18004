//! The chat demo's app (`examples/chat.rs`) as the tests serve it: its page at `/` and the hub,
//! anonymous publishing allowed.

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tower_sse_pubsub::{Hub, HubBuilder};

/// The chat page, exactly as the example serves it.
pub const PAGE: &str = include_str!("../../examples/chat/index.html");

/// The example's hub: anyone may publish.
pub fn hub(builder: HubBuilder) -> Hub {
    builder
        .allow_anonymous_publish()
        .build()
        .expect("a valid hub configuration")
}

/// The example's app: the page, then the hub's layer.
pub fn app(hub: &Hub) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .layer(hub.layer())
}

/// The example's TLS mode: HTTP/2 and HTTP/1.1 over TLS, the same file the example includes.
#[path = "../../examples/chat/tls.rs"]
pub mod tls;
