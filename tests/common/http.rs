//! A real server on loopback, and the client side from `test-support`: a real HTTP client with
//! a spec-compliant SSE parser.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_sse_pubsub::Hub;

#[allow(unused_imports)] // Each test file uses a different part.
pub use test_support::http_client::{SseEvents, client, next_event};

/// An axum server on a free loopback port, shut down gracefully through the hub.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(hub: &Hub, app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let hub = hub.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                    hub.shutdown();
                })
                .await
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens an event stream and checks the response head.
pub async fn subscribe(url: &str, last_event_id: Option<&str>) -> SseEvents {
    let mut request = Request::get(url);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = client()
        .request(request.body(Full::default()).expect("valid request"))
        .await
        .expect("subscribe request");
    test_support::http_client::events(response)
}

/// POSTs a form and returns the status and the body text.
pub async fn post_form(url: &str, form: &str) -> (StatusCode, String) {
    let request = Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form.to_owned())))
        .expect("valid request");
    status_and_text(client().request(request).await.expect("publish request")).await
}

/// GETs a URL and returns the status and the body text.
pub async fn get_text(url: &str) -> (StatusCode, String) {
    let request = Request::get(url)
        .body(Full::default())
        .expect("valid request");
    status_and_text(client().request(request).await.expect("get request")).await
}

async fn status_and_text(response: http::Response<hyper::body::Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("reply body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
