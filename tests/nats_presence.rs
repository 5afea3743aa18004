//! `NatsBroker`'s presence (what every process can list of every other's entries), against a
//! `nats-server` the test spawns.

#![cfg(feature = "nats")]

mod common;

use std::time::Duration;

use common::nats_server::NatsServer;
use common::presence::{self, listed, pair};
use tower_sse_pubsub::NatsBroker;
use tower_sse_pubsub::broker::Broker;

async fn broker(server: &NatsServer, expiry: Duration) -> NatsBroker {
    NatsBroker::builder([server.url()])
        .stream_name("PRESENCE")
        .subject_prefix("presence")
        .presence_expiry(expiry)
        .build()
        .await
        .expect("broker connects")
}

#[tokio::test]
async fn every_process_lists_every_processs_entries_until_they_leave_or_die() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let expiry = Duration::from_millis(900);
    let a = broker(&server, expiry).await;
    let b = broker(&server, expiry).await;
    presence::every_process_lists_every_processs_entries(a, &b, expiry).await;
}

#[tokio::test]
async fn entries_lost_by_a_restarted_server_are_written_again_by_the_heartbeat() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let a = NatsBroker::builder([server.url()])
        .stream_name("LOST")
        .subject_prefix("lost")
        .memory_storage()
        .presence_expiry(Duration::from_millis(600))
        .build()
        .await
        .expect("broker connects");
    let presence = a.presence().expect("presence");
    presence.join("g", "k", "v").await.expect("join");
    // Memory storage: the restarted server has lost both buckets.
    server.restart();
    // Listings fail while the client reconnects; then the heartbeat writes the entry again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match presence.list("g").await {
            Ok(entries) if !entries.is_empty() => {
                assert_eq!(entries, [pair("k", "v")]);
                break;
            }
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "the entry is back within ten seconds"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Joins made at once by a process that has not written its heartbeat yet are all listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_the_first_heartbeat_are_all_listed() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = broker(&server, Duration::from_secs(30)).await;
    let presence = a.presence().expect("presence");
    let keys: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    let joins = keys.iter().map(|key| presence.join("g", key, "v"));
    for joined in futures::future::join_all(joins).await {
        joined.expect("join");
    }
    let listed: Vec<String> = listed(presence, "g")
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, keys);
}
