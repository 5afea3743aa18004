//! A real HTTP client and a spec-compliant SSE parser, for tests that talk to a server on a
//! loopback port.

use std::pin::Pin;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::WAIT_LIMIT;

/// The client type [`client`] returns: plain HTTP/1 over TCP, request bodies in one piece.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The events of one open event stream, as an EventSource would see them.
pub type SseEvents = Pin<Box<dyn Stream<Item = eventsource_stream::Event> + Send>>;

/// A new HTTP/1 client on the current tokio runtime.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Turns the response to a subscription into its events, after checking that it is one: status
/// 200 and `content-type: text/event-stream`. The stream panics on a malformed event.
pub fn events(response: Response<Incoming>) -> SseEvents {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = response
        .into_body()
        .into_data_stream()
        .eventsource()
        .map(|event| event.expect("well-formed event stream"));
    Box::pin(events)
}

/// The next event, failing the test instead of hanging: it panics when none arrives within
/// [`WAIT_LIMIT`] or the stream has ended.
pub async fn next_event(events: &mut SseEvents) -> eventsource_stream::Event {
    tokio::time::timeout(WAIT_LIMIT, events.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
}
