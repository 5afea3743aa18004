//! The broker conformance suite, run against `MemoryBroker`, plus what only the in-memory
//! broker can show (its subscriber bookkeeping).

mod common;

use std::sync::Arc;

use common::conformance::Limits;
use std::time::Duration;

use futures::StreamExt;
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::{
    Event, EventId, MemoryBroker, PublishRequest, Resume, SubscribeRequest, Topic,
};

fn memory(limits: Limits) -> Arc<dyn Broker> {
    Arc::new(
        MemoryBroker::builder()
            .history_per_topic(limits.history_per_topic)
            .subscriber_queue(limits.subscriber_queue)
            .build(),
    )
}

broker_conformance!(Some(memory));

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_from_every_topic() {
    let broker = MemoryBroker::new();
    let topics = [
        tower_sse_pubsub::Topic::new("a").expect("valid"),
        tower_sse_pubsub::Topic::new("b").expect("valid"),
    ];
    let subscription = broker
        .subscribe(&subscribe_request(&topics, None))
        .await
        .expect("subscribe");
    assert_eq!(broker.topic_subscriptions(), 2);
    drop(subscription);
    assert_eq!(broker.topic_subscriptions(), 0);
    assert_eq!(
        broker.topic_count(),
        0,
        "a topic with no history or subscriber is forgotten"
    );
}

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("valid topic")
}

fn publish_request(topics: &[Topic], data: &str) -> PublishRequest {
    PublishRequest::new(
        topics.iter().cloned(),
        Event::text(data).expect("valid event"),
    )
}

fn subscribe_request(topics: &[Topic], after: Option<&EventId>) -> SubscribeRequest {
    SubscribeRequest::new(topics.iter().cloned()).after(after.cloned())
}

#[tokio::test(start_paused = true)]
async fn age_limit_reaches_topics_nobody_touches_again() {
    let broker = MemoryBroker::builder()
        .history_max_age(Duration::from_secs(1))
        .build();
    for i in 0..100 {
        broker
            .publish(&publish_request(&[topic(&format!("order-{i}"))], "placed"))
            .await
            .expect("publish");
    }
    assert_eq!((broker.retained_count(), broker.topic_count()), (100, 100));
    tokio::time::advance(Duration::from_secs(2)).await;
    broker
        .publish(&publish_request(&[topic("other")], "x"))
        .await
        .expect("publish");
    assert_eq!((broker.retained_count(), broker.topic_count()), (1, 1));
}

#[tokio::test]
async fn byte_limit_evicts_the_oldest_events_across_topics() {
    // What one event and one topic cost, as the broker charges them.
    let (event_cost, topic_cost) = {
        let probe = MemoryBroker::new();
        let mut costs = Vec::new();
        for _ in 0..2 {
            probe
                .publish(&publish_request(&[topic("even")], "0123456789"))
                .await
                .expect("publish");
            costs.push(probe.memory_bytes());
        }
        let event = costs[1] - costs[0];
        (event, costs[0] - event)
    };
    let broker = MemoryBroker::builder()
        // Two topics and five events; later ids have more digits, so leave room for that,
        // though not for a sixth event.
        .history_max_bytes(2 * topic_cost + 5 * event_cost + 10)
        .build();
    let mut ids = Vec::new();
    for i in 0..20 {
        let name = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            broker
                .publish(&publish_request(&[topic(name)], "0123456789"))
                .await
                .expect("publish"),
        );
    }
    assert_eq!(broker.retained_count(), 5);
    assert!(broker.memory_bytes() <= 2 * topic_cost + 5 * event_cost + 10);
    // The newest five survive, whatever their topic.
    let subscription = broker
        .subscribe(&subscribe_request(
            &[topic("even"), topic("odd")],
            Some(&ids[14]),
        ))
        .await
        .expect("subscribe");
    assert_eq!(subscription.resume(), &Resume::Complete);
    let mut subscription = subscription;
    let mut replayed = Vec::new();
    for _ in 0..5 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("a replayed event")
            .and_then(|d| d.into_event())
            .expect("an event");
        replayed.push(delivery.id().clone());
    }
    assert_eq!(replayed, ids[15..]);
    let subscription = broker
        .subscribe(&subscribe_request(&[topic("even")], Some(&ids[0])))
        .await
        .expect("subscribe");
    assert_eq!(subscription.resume(), &Resume::Expired);
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_topic_still_reports_what_it_lost() {
    let broker = MemoryBroker::builder()
        .history_max_age(Duration::from_secs(10))
        .build();
    let a = [topic("a")];
    let seen = broker
        .publish(&publish_request(&a, "seen"))
        .await
        .expect("publish");
    broker
        .publish(&publish_request(&a, "missed"))
        .await
        .expect("publish");
    tokio::time::advance(Duration::from_secs(11)).await;
    // Another client comes and goes: its subscribe expires both events and the topic is
    // forgotten when it leaves.
    drop(
        broker
            .subscribe(&subscribe_request(&a, None))
            .await
            .expect("subscribe"),
    );
    assert_eq!(broker.topic_count(), 0);
    let resumed = broker
        .subscribe(&subscribe_request(&a, Some(&seen)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Expired);
}

/// This process's resident set size in KiB, from /proc (Linux); `None` elsewhere.
fn rss_kib() -> Option<usize> {
    test_support::attack::rss_kib(std::process::id()).and_then(|kib| usize::try_from(kib).ok())
}

#[test]
fn a_flood_of_unique_topics_stays_within_the_memory_cap() {
    use futures::FutureExt;
    const CAP: usize = 16 * 1024 * 1024;
    const TOPICS: usize = 300_000;
    let broker = MemoryBroker::builder().history_max_bytes(CAP).build();
    let before = rss_kib();
    for i in 0..TOPICS {
        let request = publish_request(&[topic(&format!("flood-{i}"))], "payload of a few bytes");
        broker
            .publish(&request)
            .now_or_never()
            .expect("the memory broker answers at once")
            .expect("publish");
    }
    assert!(broker.memory_bytes() <= CAP, "{}", broker.memory_bytes());
    assert!(
        broker.topic_count() < TOPICS / 4,
        "old topics were forgotten"
    );
    if let (Some(before), Some(after)) = (before, rss_kib()) {
        let grown = after.saturating_sub(before) * 1024;
        println!(
            "{TOPICS} unique topics: {} kept, RSS grew {} KiB for a cap of {} KiB",
            broker.topic_count(),
            grown / 1024,
            CAP / 1024
        );
        assert!(
            grown <= 2 * CAP,
            "RSS grew {grown} bytes for a cap of {CAP}"
        );
    }
}
