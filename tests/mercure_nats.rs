//! The Mercure hub on `NatsBroker`, two app instances sharing one `nats-server` the test
//! spawns: updates published on one (with the `urn:uuid:` ids Mercure chooses) reach
//! subscribers of the other (exact topics and URI templates), and a client resumes on the other
//! instance after an id the first one gave, and the subscriptions API of either lists the
//! subscriptions of both.

#![cfg(all(feature = "mercure", feature = "nats"))]

mod common;

use common::mercure;
use common::nats_server::NatsServer;
use tower_sse_pubsub::NatsBroker;

const KEY: &str = common::mercure::SHARED_KEY;

/// The broker of one app instance, on the shared NATS stream.
async fn broker(nats: &NatsServer) -> NatsBroker {
    NatsBroker::builder([nats.url()])
        .stream_name("MERCURE")
        .subject_prefix("mercure")
        .build()
        .await
        .expect("broker connects")
}

#[tokio::test]
async fn two_instances_share_updates_ids_and_subscriptions() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let (_a, server_a) = common::mercure::instance(broker(&nats).await).await;
    let (_b, server_b) = common::mercure::instance(broker(&nats).await).await;

    let _streams = mercure::two_instances_share_updates_and_ids(&server_a, &server_b, KEY).await;
    // A's subscriptions API lists B's subscriptions too.
    mercure::subscriptions_listed_on(&server_a, KEY).await;
}
