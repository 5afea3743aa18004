//! The Mercure hub on `RedisBroker`, two app instances sharing one `redis-server` the test
//! spawns: updates published on one reach subscribers of the other (exact topics and URI
//! templates), a client resumes on the other instance after an id the first one gave, and the
//! subscriptions API of either lists the subscriptions of both.

#![cfg(all(feature = "mercure", feature = "redis"))]

mod common;

use common::redis_server::RedisServer;
use tower_sse_pubsub::RedisBroker;

const KEY: &str = common::mercure::SHARED_KEY;

/// The broker of one app instance, on the shared Redis.
async fn broker(redis: &RedisServer) -> RedisBroker {
    RedisBroker::builder(redis.url())
        .key_prefix("mercure")
        .build()
        .await
        .expect("broker connects")
}

#[tokio::test]
async fn two_instances_share_updates_ids_and_subscriptions() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_a, server_a) = common::mercure::instance(broker(&redis).await).await;
    let (_b, server_b) = common::mercure::instance(broker(&redis).await).await;

    let _streams =
        common::mercure::two_instances_share_updates_and_ids(&server_a, &server_b, KEY).await;

    // A's subscriptions API lists B's subscriptions too.
    common::mercure::subscriptions_listed_on(&server_a, KEY).await;
}
