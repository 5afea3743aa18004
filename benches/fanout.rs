//! Fan-out cost per delivery, without the network: `MemoryBroker` against the hand-written
//! baseline of a `tokio::sync::broadcast` channel carrying pre-encoded `Bytes`.
//!
//! ```text
//! cargo bench --bench fanout
//! ```
//!
//! Each round publishes a burst of events to one topic with N subscribers, then drains every
//! subscriber, and reports wall time per delivery (publish plus receive) on one thread.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tower_sse_pubsub::{Broker, Event, MemoryBroker, Subscription, Topic};

const EVENTS: usize = 200;
const ROUNDS: usize = 5;

fn main() {
    println!(
        "{:>12} {:>16} {:>16}",
        "subscribers", "MemoryBroker", "broadcast"
    );
    for subscribers in [10, 100, 1_000, 10_000] {
        let ours = best_of(|| memory_broker(subscribers));
        let baseline = best_of(|| broadcast(subscribers));
        println!(
            "{subscribers:>12} {:>13.1} ns {:>13.1} ns",
            per_delivery(ours, subscribers),
            per_delivery(baseline, subscribers)
        );
    }
}

fn best_of(mut run: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| run()).min().unwrap_or_default()
}

fn per_delivery(elapsed: Duration, subscribers: usize) -> f64 {
    elapsed.as_nanos() as f64 / (EVENTS * subscribers) as f64
}

fn memory_broker(subscribers: usize) -> Duration {
    let broker = MemoryBroker::builder()
        .history_per_topic(16)
        .subscriber_queue(EVENTS)
        .build();
    let topic = [Topic::new("bench").expect("valid topic")];
    let event = Event::text("x".repeat(100)).expect("valid event");
    let mut subscriptions: Vec<Subscription> = (0..subscribers)
        .map(|_| {
            broker
                .subscribe(&topic, None)
                .now_or_never()
                .expect("memory broker is synchronous")
                .expect("subscribe")
        })
        .collect();
    let start = Instant::now();
    for _ in 0..EVENTS {
        broker
            .publish(&topic, &event)
            .now_or_never()
            .expect("memory broker is synchronous")
            .expect("publish");
    }
    for subscription in &mut subscriptions {
        for _ in 0..EVENTS {
            let frame = subscription
                .next()
                .now_or_never()
                .flatten()
                .and_then(|delivery| delivery.into_event())
                .expect("queued frame");
            black_box(frame.bytes());
        }
    }
    start.elapsed()
}

fn broadcast(subscribers: usize) -> Duration {
    let (sender, _) = tokio::sync::broadcast::channel::<Bytes>(EVENTS);
    let mut receivers: Vec<_> = (0..subscribers).map(|_| sender.subscribe()).collect();
    let frame = Bytes::from(format!("id: 1\ndata: {}\n\n", "x".repeat(100)));
    let start = Instant::now();
    for _ in 0..EVENTS {
        let _ = sender.send(frame.clone());
    }
    for receiver in &mut receivers {
        for _ in 0..EVENTS {
            black_box(receiver.try_recv().expect("queued frame"));
        }
    }
    start.elapsed()
}
