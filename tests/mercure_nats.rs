//! The Mercure hub on `NatsBroker`, two app instances sharing one `nats-server` the test
//! spawns: updates published on one (with the `urn:uuid:` ids Mercure chooses) reach
//! subscribers of the other (exact topics and URI templates), and a client resumes on the other
//! instance after an id the first one gave. (`NatsBroker` has no presence, so each instance's
//! subscriptions API lists its own subscriptions only.)

#![cfg(all(feature = "mercure", feature = "nats"))]

mod common;

use axum::Router;
use bytes::Bytes;
use common::http::{SseEvents, TestServer, client, next_event};
use common::nats_server::NatsServer;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;
use tower_sse_pubsub::{Hub, NatsBroker};

const KEY: &str = "a-shared-secret-of-at-least-32-bytes!";
const HUB: &str = "/.well-known/mercure";

fn token(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(KEY.as_bytes()),
    )
    .expect("token signs")
}

/// One app instance: a hub on the shared NATS stream.
async fn instance(nats: &NatsServer) -> (Hub, TestServer) {
    let broker = NatsBroker::builder([nats.url()])
        .stream_name("MERCURE")
        .subject_prefix("mercure")
        .build()
        .await
        .expect("broker connects");
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(KEY).expect("key"))
        .allow_anonymous_subscribe()
        .build();
    let hub = Hub::builder()
        .broker(broker)
        .mercure(MercureHub::new(tokens))
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    (hub, server)
}

fn encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    client().request(request).await.expect("request answered")
}

async fn publish(server: &TestServer, topic: &str, data: &str) -> String {
    let auth = format!("Bearer {}", token(&json!({"mercure": {"publish": ["*"]}})));
    let response = send(
        "POST",
        &server.url(HUB),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("topic={}&data={data}", encoded(topic)),
    )
    .await;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn subscribe(
    server: &TestServer,
    selector: &str,
    headers: &[(&str, &str)],
) -> (http::HeaderMap, SseEvents) {
    let url = server.url(&format!("{HUB}?topic={}", encoded(selector)));
    let response = send("GET", &url, headers, "").await;
    let head = response.headers().clone();
    (head, test_support::http_client::events(response))
}

#[tokio::test]
async fn two_instances_share_updates_and_ids() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (_a, server_a) = instance(&nats).await;
    let (_b, server_b) = instance(&nats).await;

    // On B: a subscriber of one book, and one of every book.
    let (_, mut one) = subscribe(&server_b, "https://example.com/books/1", &[]).await;
    let (_, mut all) = subscribe(&server_b, "https://example.com/books/{id}", &[]).await;

    // Published on A, received on B with A's ids.
    let first = publish(&server_a, "https://example.com/books/1", "first").await;
    let second = publish(&server_a, "https://example.com/books/2", "second").await;
    assert!(first.starts_with("urn:uuid:"), "{first}");
    let event = next_event(&mut one).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first.as_str(), "first")
    );
    for (id, data) in [(&first, "first"), (&second, "second")] {
        let event = next_event(&mut all).await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), data)
        );
    }

    // A client that saw `first` on A resumes on B after it.
    let (head, mut resumed) = subscribe(
        &server_b,
        "https://example.com/books/{id}",
        &[("last-event-id", &first)],
    )
    .await;
    assert_eq!(head["last-event-id"], first.as_str());
    assert_eq!(next_event(&mut resumed).await.data, "second");
    let (head, mut earliest) = subscribe(
        &server_a,
        "https://example.com/books/1",
        &[("last-event-id", "earliest")],
    )
    .await;
    assert_eq!(head["last-event-id"], "earliest");
    assert_eq!(next_event(&mut earliest).await.data, "first");
}
