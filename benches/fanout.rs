//! Criterion micro-benchmarks of the two costs every event pays in-process: encoding it once, and
//! fanning it out to the subscribers of its topic. Fan-out is measured against a
//! `tokio::sync::broadcast` channel carrying pre-encoded `Bytes`, the core of the hand-written
//! alternative.
//!
//! ```text
//! cargo bench --bench fanout
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{FutureExt, StreamExt};
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::{
    Event, EventId, Frame, MemoryBroker, PublishRequest, SubscribeRequest, Subscription, Topic,
};

const EVENTS: usize = 64;

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let topics = [Topic::new("bench").expect("valid topic")];
    for size in [64, 1024, 16 * 1024] {
        // Data with a line break every 80 bytes, so the line splitter has work to do.
        let data: String = (0..size)
            .map(|i| if i % 80 == 79 { '\n' } else { 'x' })
            .collect();
        let request = PublishRequest::new(
            topics.clone(),
            Event::text(data)
                .and_then(|e| e.with_event_type("update"))
                .expect("valid event"),
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &request, |b, request| {
            b.iter(|| {
                let id = EventId::new("5f3a9c01-42").expect("valid id");
                black_box(Frame::for_request(id, 42, request))
            });
        });
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for subscribers in [10, 1_000] {
        group.throughput(Throughput::Elements((EVENTS * subscribers) as u64));
        group.bench_function(BenchmarkId::new("memory-broker", subscribers), |b| {
            let broker = MemoryBroker::builder()
                .history_per_topic(EVENTS)
                .subscriber_queue(EVENTS)
                .build();
            let topic = [Topic::new("bench").expect("valid topic")];
            let request = PublishRequest::new(
                topic.clone(),
                Event::text("x".repeat(100)).expect("valid event"),
            );
            let mut subscriptions: Vec<Subscription> = (0..subscribers)
                .map(|_| {
                    broker
                        .subscribe(&SubscribeRequest::new(topic.clone()))
                        .now_or_never()
                        .expect("the memory broker answers at once")
                        .expect("subscribe")
                })
                .collect();
            b.iter(|| {
                for _ in 0..EVENTS {
                    let _ = broker.publish(&request).now_or_never();
                }
                for subscription in &mut subscriptions {
                    for _ in 0..EVENTS {
                        let delivery = subscription.next().now_or_never().flatten();
                        black_box(delivery.and_then(|d| d.into_event()).expect("a frame"));
                    }
                }
            });
        });
        group.bench_function(BenchmarkId::new("tokio-broadcast", subscribers), |b| {
            let (sender, _) = tokio::sync::broadcast::channel::<Bytes>(EVENTS);
            let mut receivers: Vec<_> = (0..subscribers).map(|_| sender.subscribe()).collect();
            let frame = Bytes::from(format!("id: 1\ndata: {}\n\n", "x".repeat(100)));
            b.iter(|| {
                for _ in 0..EVENTS {
                    let _ = sender.send(frame.clone());
                }
                for receiver in &mut receivers {
                    for _ in 0..EVENTS {
                        black_box(receiver.try_recv().expect("a frame"));
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, fanout);
criterion_main!(benches);
