//! The app on a loopback port, served by `integration_axum::serve` as `main` serves it, and the
//! client side from `test-support`: a real HTTP client with a spec-compliant SSE parser.

#![allow(dead_code)] // Each test file uses a different part.

use std::collections::HashSet;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use integration_axum::{AppConfig, AppState};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)] // Each test file uses a different part.
pub use test_support::{
    WAIT_LIMIT,
    http_client::{SseEvents, client, events, next_event},
};

/// The origin the test app lets call it with credentials.
pub const ALLOWED_ORIGIN: &str = "http://allowed.example";
/// The test app's admin.
pub const ADMIN: &str = "root";

/// The test app's configuration: [`ALLOWED_ORIGIN`] and the admin [`ADMIN`].
pub fn test_config() -> AppConfig {
    AppConfig {
        allowed_origins: vec![http::HeaderValue::from_static(ALLOWED_ORIGIN)],
        admins: HashSet::from([ADMIN.to_owned()]),
    }
}

/// The app, served on a free loopback port until [`TestServer::stop`].
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(integration_axum::serve(
            listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }

    /// The app with [`test_config`].
    pub async fn start_default() -> Self {
        Self::start(AppState::new(test_config()).expect("valid app state")).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts graceful shutdown, as Ctrl-C does for `main`.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends a request with `headers` and `body`, bounded by [`WAIT_LIMIT`].
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Incoming> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    tokio::time::timeout(WAIT_LIMIT, client().request(request))
        .await
        .expect("a response in time")
        .expect("the request succeeds")
}

/// A whole reply: status, headers, body bytes.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON expected, got {:?}: {e}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("visible ASCII"))
    }
}

/// Sends a request and reads the whole reply.
pub async fn call(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let response = send(method, url, headers, body).await;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT_LIMIT, body.collect())
        .await
        .expect("the whole body in time")
        .expect("reply body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Subscribes to `topic` as the user with the session cookie `user`.
pub async fn subscribe_as(server: &TestServer, user: &str, topic: &str) -> SseEvents {
    let cookie = format!("session={user}");
    let url = server.url(&format!("/events?topic={topic}"));
    events(send(Method::GET, &url, &[("cookie", &cookie)], "").await)
}

/// `Authorization: Bearer <user>` as a header pair.
pub fn bearer(user: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {user}"))
}

/// POSTs a new order as `user` and returns the reply.
pub async fn place_order(server: &TestServer, user: &str, item: &str, quantity: u32) -> Reply {
    let (name, value) = bearer(user);
    let body = serde_json::json!({ "item": item, "quantity": quantity }).to_string();
    call(
        Method::POST,
        &server.url("/api/orders"),
        &[(name, &value), ("content-type", "application/json")],
        &body,
    )
    .await
}
