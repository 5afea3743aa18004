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
use tower_sse_pubsub::{
    Broker, Event, MemoryBroker, PublishRequest, SubscribeRequest, Subscription, Topic,
};

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
    isolation(100_000);
}

/// How long a publish to a quiet topic takes while another thread publishes to a topic with
/// `subscribers` parked subscribers (each publish there wakes them all).
fn isolation(subscribers: usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Waker};

    let broker = MemoryBroker::new();
    let busy = [Topic::new("busy").expect("valid topic")];
    let mut subscriptions: Vec<Subscription> = (0..subscribers)
        .map(|_| {
            broker
                .subscribe(&SubscribeRequest::new(busy.clone()))
                .now_or_never()
                .expect("memory broker is synchronous")
                .expect("subscribe")
        })
        .collect();
    let mut cx = Context::from_waker(Waker::noop());
    let running = Arc::new(AtomicBool::new(true));
    let publisher = {
        let broker = broker.clone();
        let running = running.clone();
        std::thread::spawn(move || {
            let request = PublishRequest::new(busy, Event::text("x").expect("valid event"));
            let mut slowest = Duration::ZERO;
            let mut rounds = 0u32;
            while running.load(Ordering::Relaxed) {
                let start = Instant::now();
                let _ = broker.publish(&request).now_or_never();
                slowest = slowest.max(start.elapsed());
                rounds += 1;
            }
            (slowest, rounds)
        })
    };
    let quiet = PublishRequest::new(
        [Topic::new("quiet").expect("valid topic")],
        Event::text("y").expect("valid event"),
    );
    let mut worst = Duration::ZERO;
    for _ in 0..200 {
        // Park every subscriber again, so each busy publish has all of them to wake.
        for subscription in &mut subscriptions {
            while let std::task::Poll::Ready(Some(_)) = subscription.poll_next_unpin(&mut cx) {}
        }
        let start = Instant::now();
        let _ = broker.publish(&quiet).now_or_never();
        worst = worst.max(start.elapsed());
    }
    running.store(false, Ordering::Relaxed);
    let (slowest_busy, rounds) = publisher.join().unwrap_or_default();
    println!(
        "isolation: {subscribers} subscribers on one topic; a publish there took up to \
         {slowest_busy:.2?} ({rounds} rounds); a publish to another topic meanwhile took up to {worst:.2?}"
    );
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
    let request = PublishRequest::new(topic.clone(), event);
    let mut subscriptions: Vec<Subscription> = (0..subscribers)
        .map(|_| {
            broker
                .subscribe(&SubscribeRequest::new(topic.clone()))
                .now_or_never()
                .expect("memory broker is synchronous")
                .expect("subscribe")
        })
        .collect();
    let start = Instant::now();
    for _ in 0..EVENTS {
        broker
            .publish(&request)
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
