//! What a busy topic costs the others: how long a publish to a quiet topic takes while another
//! thread keeps publishing to a topic with 100,000 parked subscribers (each such publish wakes
//! them all). The engine wakes subscribers after releasing its locks, so the quiet publish should
//! not wait for the busy one's fan-out; the target is under 1 ms.
//!
//! ```text
//! cargo bench --bench isolation
//! ```

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::{
    Event, MemoryBroker, PublishRequest, SubscribeRequest, Subscription, Topic,
};

fn main() {
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
