//! `RedisBroker`'s presence (what every process can list of every other's entries) and its last
//! event id, against a `redis-server` the test spawns.

#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::redis_server::RedisServer;
use futures::StreamExt;
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::{Event, PublishRequest, RedisBroker, Start, SubscribeRequest, Topic};

async fn broker(server: &RedisServer, expiry: Duration) -> RedisBroker {
    RedisBroker::builder(server.url())
        .key_prefix("presence")
        .presence_expiry(expiry)
        .build()
        .await
        .expect("broker connects")
}

async fn listed(broker: &RedisBroker, group: &str) -> Vec<(String, String)> {
    let presence = broker.presence().expect("Redis keeps a presence");
    let mut entries = presence.list(group).await.expect("list");
    entries.sort();
    entries
}

/// Polls `broker`'s list of `group` until `done` accepts it, at most ten seconds.
async fn wait_for_list(
    broker: &RedisBroker,
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

#[tokio::test]
async fn every_process_lists_every_processs_entries_until_they_leave_or_die() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = broker(&server, Duration::from_millis(600)).await;
    let b = broker(&server, Duration::from_millis(600)).await;
    let (pa, pb) = (
        a.presence().expect("presence"),
        b.presence().expect("presence"),
    );
    pa.join("g", "a1", "one").await.expect("join");
    pa.join("g", "a2", "two").await.expect("join");
    pb.join("g", "b1", "three").await.expect("join");
    pb.join("other", "b2", "elsewhere").await.expect("join");
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let all = vec![pair("a1", "one"), pair("a2", "two"), pair("b1", "three")];
    assert_eq!(listed(&a, "g").await, all);
    assert_eq!(
        listed(&b, "g").await,
        all,
        "the same list from either process"
    );

    pa.leave("g", "a2").await.expect("leave");
    assert_eq!(
        listed(&b, "g").await,
        [pair("a1", "one"), pair("b1", "three")]
    );

    // The heartbeat keeps entries past the expiry while the process lives...
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(listed(&b, "g").await.len(), 2, "renewed by the heartbeat");
    // ...and a process that stops without a word drops out within it.
    drop(a);
    let left = wait_for_list(&b, "g", |entries| entries.len() == 1).await;
    assert_eq!(left, [pair("b1", "three")]);
}

#[tokio::test]
async fn entries_lost_by_redis_are_written_again_by_the_heartbeat() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = broker(&server, Duration::from_millis(300)).await;
    let presence = a.presence().expect("presence");
    presence.join("g", "k", "v").await.expect("join");
    server.command(&["FLUSHALL"]);
    let back = wait_for_list(&a, "g", |entries| !entries.is_empty()).await;
    assert_eq!(back, [("k".to_owned(), "v".to_owned())]);
}

#[tokio::test]
async fn the_last_event_id_places_a_subscription_after_the_newest_event() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = broker(&server, Duration::from_secs(30)).await;
    assert_eq!(
        a.last_event_id().await.expect("read"),
        None,
        "nothing published yet"
    );
    let topic = Topic::new("t").expect("valid");
    for data in ["one", "two"] {
        a.publish(&PublishRequest::new(
            [topic.clone()],
            Event::text(data).expect("valid"),
        ))
        .await
        .expect("publish");
    }
    let last = a.last_event_id().await.expect("read").expect("an id");
    let mut subscription = a
        .subscribe(&SubscribeRequest::new([topic.clone()]).start(Start::After(last)))
        .await
        .expect("subscribe");
    assert_eq!(
        subscription.resume(),
        &tower_sse_pubsub::Resume::Complete,
        "the id is placeable"
    );
    a.publish(&PublishRequest::new(
        [topic],
        Event::text("three").expect("valid"),
    ))
    .await
    .expect("publish");
    let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("in time")
        .and_then(|delivery| delivery.into_event())
        .expect("an event");
    let text = String::from_utf8_lossy(next.bytes()).into_owned();
    assert!(
        text.contains("data: three"),
        "nothing before it replayed: {text}"
    );
}
