//! The Mercure hub on `RedisBroker`, two app instances sharing one `redis-server` the test
//! spawns: updates published on one reach subscribers of the other (exact topics and URI
//! templates), a client resumes on the other instance after an id the first one gave, and the
//! subscriptions API of either lists the subscriptions of both.

#![cfg(all(feature = "mercure", feature = "redis"))]

mod common;

use axum::Router;
use common::http::TestServer;
use common::redis_server::RedisServer;
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;
use tower_sse_pubsub::{Hub, RedisBroker};

const KEY: &str = "a-shared-secret-of-at-least-32-bytes!";

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
    common::mercure::subscriptions_listed_on(&server_a, KEY).await;
}
