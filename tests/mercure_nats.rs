//! The Mercure hub on `NatsBroker`, two app instances sharing one `nats-server` the test
//! spawns: updates published on one (with the `urn:uuid:` ids Mercure chooses) reach
//! subscribers of the other (exact topics and URI templates), and a client resumes on the other
//! instance after an id the first one gave, and the subscriptions API of either lists the
//! subscriptions of both.

#![cfg(all(feature = "mercure", feature = "nats"))]

mod common;

use axum::Router;
use common::http::TestServer;
use common::mercure;
use common::nats_server::NatsServer;
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;
use tower_sse_pubsub::{Hub, NatsBroker};

const KEY: &str = "a-shared-secret-of-at-least-32-bytes!";

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
        .mercure(MercureHub::new(tokens).with_subscriptions())
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    (hub, server)
}

#[tokio::test]
async fn two_instances_share_updates_ids_and_subscriptions() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (_a, server_a) = instance(&nats).await;
    let (_b, server_b) = instance(&nats).await;

    let _streams = mercure::two_instances_share_updates_and_ids(&server_a, &server_b, KEY).await;
    // A's subscriptions API lists B's subscriptions too.
    mercure::subscriptions_listed_on(&server_a, KEY).await;
}
