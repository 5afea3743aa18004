//! `NatsBroker`'s presence (what every process can list of every other's entries), against a
//! `nats-server` the test spawns.

#![cfg(feature = "nats")]

mod common;

use std::time::Duration;

use common::nats_server::NatsServer;
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

async fn listed(broker: &NatsBroker, group: &str) -> Vec<(String, String)> {
    let presence = broker.presence().expect("NATS keeps a presence");
    let mut entries = presence.list(group).await.expect("list");
    entries.sort();
    entries
}

/// Polls `broker`'s list of `group` until `done` accepts it, at most ten seconds.
async fn wait_for_list(
    broker: &NatsBroker,
    group: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entries = listed(broker, group).await;
        if done(&entries) || tokio::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pair(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

#[tokio::test]
async fn every_process_lists_every_processs_entries_until_they_leave_or_die() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = broker(&server, Duration::from_millis(900)).await;
    let b = broker(&server, Duration::from_millis(900)).await;
    assert_eq!(listed(&b, "g").await, [], "nothing joined yet");
    let (pa, pb) = (
        a.presence().expect("presence"),
        b.presence().expect("presence"),
    );
    pa.join("g", "a1", "one").await.expect("join");
    pa.join("g", "a2", "two").await.expect("join");
    pb.join("g", "b1", "three").await.expect("join");
    pb.join("other", "b2", "elsewhere").await.expect("join");
    // Keys and values of any text, not only what a NATS subject token may hold.
    pb.join("g", "/books/{id} ✓.*>", "{\"a\": 1}")
        .await
        .expect("join");
    let all = vec![
        pair("/books/{id} ✓.*>", "{\"a\": 1}"),
        pair("a1", "one"),
        pair("a2", "two"),
        pair("b1", "three"),
    ];
    assert_eq!(listed(&a, "g").await, all);
    assert_eq!(
        listed(&b, "g").await,
        all,
        "the same list from either process"
    );
    assert_eq!(listed(&a, "other").await, [pair("b2", "elsewhere")]);

    pa.leave("g", "a2").await.expect("leave");
    pa.join("g", "a1", "one, changed").await.expect("replace");
    assert_eq!(
        listed(&b, "g").await,
        [
            pair("/books/{id} ✓.*>", "{\"a\": 1}"),
            pair("a1", "one, changed"),
            pair("b1", "three")
        ]
    );

    // The heartbeat keeps entries past the expiry while the process lives...
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(listed(&b, "g").await.len(), 3, "renewed by the heartbeat");
    // ...and a process that stops without a word drops out within it.
    drop(a);
    let left = wait_for_list(&b, "g", |entries| entries.len() == 2).await;
    assert_eq!(
        left,
        [pair("/books/{id} ✓.*>", "{\"a\": 1}"), pair("b1", "three")]
    );
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
    let listed: Vec<String> = listed(&a, "g").await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(listed, keys);
}
