//! The broker conformance suite, run against `MemoryBroker`, plus what only the in-memory
//! broker can show (its subscriber bookkeeping).

mod common;

use std::sync::Arc;

use common::conformance::Limits;
use tower_sse_pubsub::{Broker, MemoryBroker};

fn memory(limits: Limits) -> Arc<dyn Broker> {
    Arc::new(
        MemoryBroker::builder()
            .history_per_topic(limits.history_per_topic)
            .subscriber_queue(limits.subscriber_queue)
            .build(),
    )
}

broker_conformance!(memory);

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_from_every_topic() {
    let broker = MemoryBroker::new();
    let topics = [
        tower_sse_pubsub::Topic::new("a").expect("valid"),
        tower_sse_pubsub::Topic::new("b").expect("valid"),
    ];
    let subscription = broker.subscribe(&topics, None).await.expect("subscribe");
    assert_eq!(broker.subscriber_count(), 2);
    drop(subscription);
    assert_eq!(broker.subscriber_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn history_older_than_max_age_is_dropped() {
    use std::time::Duration;
    use tower_sse_pubsub::{Event, Resume, Topic};
    let broker = MemoryBroker::builder()
        .history_max_age(Duration::from_secs(60))
        .build();
    let topic = [Topic::new("a").expect("valid")];
    let first = broker
        .publish(&topic, &Event::text("old").expect("valid"))
        .await
        .expect("publish");
    broker
        .publish(&topic, &Event::text("older").expect("valid"))
        .await
        .expect("publish");
    assert_eq!(broker.retained_count(), 2);
    tokio::time::advance(Duration::from_secs(61)).await;
    let subscription = broker
        .subscribe(&topic, Some(&first))
        .await
        .expect("subscribe");
    assert_eq!(subscription.resume(), &Resume::Expired);
    assert_eq!(subscription.replay_remaining(), 0);
    assert_eq!(broker.retained_count(), 0);
}
