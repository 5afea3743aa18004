//! `RedisBroker`'s presence (what every process can list of every other's entries) and its last
//! event id, against a `redis-server` the test spawns.

#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::presence::{self, pair, wait_for_list};
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

#[tokio::test]
async fn every_process_lists_every_processs_entries_until_they_leave_or_die() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let expiry = Duration::from_millis(600);
    let a = broker(&server, expiry).await;
    let b = broker(&server, expiry).await;
    presence::every_process_lists_every_processs_entries(a, &b, expiry).await;
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
    let back = wait_for_list(presence, "g", |entries| !entries.is_empty()).await;
    assert_eq!(back, [pair("k", "v")]);
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
