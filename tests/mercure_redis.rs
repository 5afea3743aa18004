//! The Mercure hub on `RedisBroker`, two app instances sharing one `redis-server` the test
//! spawns: updates published on one reach subscribers of the other (exact topics and URI
//! templates), a client resumes on the other instance after an id the first one gave, and the
//! subscriptions API of either lists the subscriptions of both.

#![cfg(all(feature = "mercure", feature = "redis"))]

mod common;

use std::time::Duration;

use axum::Router;
use common::http::{SseEvents, TestServer, next_event};
use common::mercure::{send, text_of, token, url_encode};
use common::redis_server::RedisServer;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;
use tower_sse_pubsub::{Hub, RedisBroker};

const KEY: &str = "a-shared-secret-of-at-least-32-bytes!";
const HUB: &str = "/.well-known/mercure";
const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";

/// One app instance: a hub on the shared Redis.
async fn instance(redis: &RedisServer) -> (Hub, TestServer) {
    let broker = RedisBroker::builder(redis.url())
        .key_prefix("mercure")
        .build()
        .await
        .expect("broker connects");
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(KEY).expect("key"))
        .allow_anonymous_subscribe()
        .build();
    let hub = Hub::builder()
        .broker(broker)
        .mercure(MercureHub::new(tokens).with_subscriptions())
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    (hub, server)
}

async fn publish(server: &TestServer, topic: &str, data: &str) -> String {
    let auth = format!(
        "Bearer {}",
        token(KEY, &json!({"mercure": {"publish": ["*"]}}))
    );
    let response = send(
        "POST",
        &server.url(HUB),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("topic={}&data={data}", url_encode(topic)),
    )
    .await;
    let (status, body) = text_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn subscribe(
    server: &TestServer,
    selector: &str,
    headers: &[(&str, &str)],
) -> (http::HeaderMap, SseEvents) {
    let url = server.url(&format!("{HUB}?topic={}", url_encode(selector)));
    let response = send("GET", &url, headers, "").await;
    let head = response.headers().clone();
    (head, test_support::http_client::events(response))
}

#[tokio::test]
async fn two_instances_share_updates_ids_and_subscriptions() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_a, server_a) = instance(&redis).await;
    let (_b, server_b) = instance(&redis).await;

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

    // A's subscriptions API lists B's subscriptions too.
    let auth = format!(
        "Bearer {}",
        token(KEY, &json!({"mercure": {"subscribe": [SUBSCRIPTIONS]}}))
    );
    let url = server_a.url(&format!("{HUB}/subscriptions"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let response = send("GET", &url, &[("authorization", &auth)], "").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let document: Value = serde_json::from_slice(&body).expect("JSON");
        let topics: Vec<String> = document["subscriptions"]
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|s| s["topic"].as_str().map(str::to_owned))
            .collect();
        // B's two subscriptions, listed by A (a resumed stream is a third, on B).
        let listed_b = topics
            .iter()
            .filter(|t| t.as_str() == "https://example.com/books/{id}")
            .count();
        if listed_b == 2 || tokio::time::Instant::now() > deadline {
            break topics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for selector in [
        "https://example.com/books/1",
        "https://example.com/books/{id}",
    ] {
        assert!(
            listed.iter().any(|t| t == selector),
            "{selector} in {listed:?}"
        );
    }
}
