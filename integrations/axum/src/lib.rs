//! An axum 0.8 app with tower-sse-pubsub layered on: a small orders API whose browsers watch
//! new and shipped orders arrive live over Server-Sent Events.
//!
//! # The app
//!
//! | route | who | what |
//! |---|---|---|
//! | `GET /api/health` | anyone | `ok` |
//! | `GET /api/me` | logged in | the caller, as the login middleware sees them |
//! | `GET /api/orders` | logged in | every order, as JSON |
//! | `POST /api/orders` | logged in | stores `{"item": .., "quantity": ..}`, publishes it on `orders` (event type `created`) through the [`Publisher`](tower_sse_pubsub::Publisher) in the app state |
//! | `POST /api/orders/{id}/ship` | admin | marks it shipped, publishes it on `orders` (event type `shipped`) through the `Publisher` in a request extension |
//! | `GET /events?topic=orders` | logged in | the hub's event stream; `admin/*` topics need an admin, other topics do not exist |
//! | `POST /publish` | admin | the hub's publish endpoint |
//!
//! A caller logs in with a `session=<name>` cookie or an `Authorization: Bearer <name>` header
//! (see [`auth`]; the names in [`AppConfig::admins`] are admins). Refusals are 401 with a
//! `WWW-Authenticate` challenge for anonymous callers and 403 for users without the right, from
//! the app's routes and the hub's endpoints alike, since both read the same [`User`].
//!
//! ```no_run
//! use integration_axum::{AppConfig, AppState, serve};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = AppConfig {
//!     allowed_origins: vec!["http://localhost:5173".parse()?],
//!     ..AppConfig::default()
//! };
//! let state = AppState::new(config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, state, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layer order
//!
//! axum's [`Router::layer`] wraps what the router holds *so far*, so each `.layer(..)` call
//! goes outside the ones before it: the last one added sees a request first. [`app`] stacks,
//! from the inside out:
//!
//! 1. **the routes**, with their state;
//! 2. **`Extension(publisher)`**: only the handlers read it, so it sits right around them;
//! 3. **the hub** ([`Hub::layer`](tower_sse_pubsub::Hub::layer)): answers `GET /events` and
//!    `POST /publish` itself and passes everything else to the routes. It must come after the
//!    routes, since a layer wraps only the routes added before it. (It still sees paths no route
//!    matches: `Router::layer` also wraps the fallback, unlike `Router::route_layer`, which would
//!    never see `/events`.)
//! 4. **the login middleware** ([`auth::authenticate`]): outside the hub, so the hub's authorizer
//!    finds the [`User`] it put into the request extensions. Inside it, the authorizer would see
//!    every caller as anonymous and refuse them all with 401.
//! 5. **`CompressionLayer`**: outside the hub and the routes, so it compresses the JSON API
//!    responses and sees the event streams, which it leaves alone: its default predicate skips
//!    `text/event-stream`. Keep that default (a custom predicate must keep
//!    `NotForContentType::SSE`), since a compressor holds events back until its buffer fills
//!    and subscribers would get them late, in bursts.
//! 6. **`TraceLayer`**: outside everything the app does, so every request is logged with the
//!    status it finally got, refusals included. For an event stream, the response is logged
//!    when the stream opens; the stream's end shows up only as the end of its body.
//! 7. **`CorsLayer`**, outermost: it answers preflight `OPTIONS` requests itself, before they
//!    reach the hub (which would answer `OPTIONS /publish` with 405) or the login middleware (a
//!    preflight carries no cookies), and it adds the `Access-Control-Allow-*` headers to every
//!    response, the hub's event streams and its 401s and 403s included, so a page on an allowed
//!    origin can open `new EventSource(url, { withCredentials: true })` and read why a call
//!    failed. With credentials, CORS needs a list of exact origins, never `*`:
//!    [`AppConfig::allowed_origins`].
//!
//! # Pitfalls
//!
//! * `Router::layer` only wraps what the router holds when it is called: a route added after
//!   `.layer(login)` runs without the login middleware (its handlers never see a [`User`]), and
//!   one added after the `CorsLayer` gets no CORS headers. Add every route first, then the layers.
//! * An authorizer that reads request extensions depends on the middleware that sets them
//!   running first: put that middleware outside the hub (added after it).
//! * `CompressionLayer` must not compress `text/event-stream`; its default predicate does not.
//! * A preflight has no credentials: keep the `CorsLayer` outside any middleware that refuses
//!   anonymous requests.
//! * Graceful shutdown waits for every open response, and an event stream never ends on its
//!   own: call [`Hub::shutdown`](tower_sse_pubsub::Hub::shutdown) from the shutdown future, as
//!   [`serve`] does, and bound the wait for clients that stopped reading.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod auth;
pub mod orders;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, Method};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tower_sse_pubsub::RESUME_HEADER;

pub use auth::{Admin, User};
pub use state::{AppConfig, AppState, NewOrder, Order, OrderStore};

/// How long [`serve`] lets open connections finish after the shutdown signal before it returns.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The whole app: the orders API, the hub's endpoints, and the middleware, in the order the
/// [crate docs](crate#layer-order) explain.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(orders::health))
        .route("/api/me", get(orders::me))
        .route("/api/orders", get(orders::list).post(orders::create))
        .route("/api/orders/{id}/ship", post(orders::ship))
        .with_state(state.clone())
        .layer(Extension(state.publisher().clone()))
        .layer(state.hub().layer())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .layer(cors(state.config()))
}

/// CORS for the configured origins, with credentials, for the API and the hub's endpoints.
fn cors(config: &AppConfig) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(config.allowed_origins.iter().cloned()))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            CONTENT_TYPE,
            AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
        ])
        // fetch()-based SSE clients can read whether their resume point was honoured.
        .expose_headers([HeaderName::from_static(RESUME_HEADER)])
        .max_age(Duration::from_secs(600))
}

/// Serves [`app`] on `listener` until `shutdown` completes, then shuts down gracefully: the hub
/// ends every open event stream (so they do not hold the shutdown up) and refuses new ones,
/// and in-flight requests finish. Returns after at most [`SHUTDOWN_DEADLINE`] more, even if a
/// client that stopped reading keeps its stream from ending.
///
/// # Errors
///
/// As `axum::serve`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = state.hub().clone();
    let (shutting_down, shutdown_started) = oneshot::channel::<()>();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: ending the open event streams");
        hub.shutdown();
        let _ = shutting_down.send(());
    });
    let deadline = async {
        // Pending forever when the server ends before any shutdown started.
        match shutdown_started.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_DEADLINE).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        served = server => served,
        () = deadline => {
            tracing::warn!("connections still open {SHUTDOWN_DEADLINE:?} after shutdown; closing them");
            Ok(())
        }
    }
}
