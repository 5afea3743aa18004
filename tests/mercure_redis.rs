//! The Mercure hub on `RedisBroker`, two app instances sharing one `redis-server` the test
//! spawns: updates published on one reach subscribers of the other (exact topics and URI
//! templates), a client resumes on the other instance after an id the first one gave, and the
//! subscriptions API of either lists the subscriptions of both.

#![cfg(all(feature = "mercure", feature = "redis"))]

mod common;

use std::time::Duration;

use axum::Router;
use common::http::TestServer;
use common::mercure::{HUB, send, token};
use common::redis_server::RedisServer;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;
use tower_sse_pubsub::{Hub, RedisBroker};

const KEY: &str = "a-shared-secret-of-at-least-32-bytes!";
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

#[tokio::test]
async fn two_instances_share_updates_ids_and_subscriptions() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_a, server_a) = instance(&redis).await;
    let (_b, server_b) = instance(&redis).await;

    let _streams =
        common::mercure::two_instances_share_updates_and_ids(&server_a, &server_b, KEY).await;

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
