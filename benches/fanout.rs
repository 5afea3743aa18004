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

/// What one publish costs with 10,000 subscribers in the process: all on exact topics, against
/// 9,000 on exact topics and 1,000 on 100 distinct URI-template patterns (10 readers each). The
/// 1,000 topics are `site/{0..10}/room/{0..100}`; pattern `j` is `site/{j % 10}/room/{j / 10}{n}`,
/// so each event's topic matches one or two patterns, found through the topic cache.
fn patterns(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish-10k-subscribers");
    let topics: Vec<Topic> = (0..10)
        .flat_map(|site| (0..100).map(move |room| format!("site/{site}/room/{room}")))
        .map(|name| Topic::new(name).expect("valid topic"))
        .collect();
    let requests: Vec<PublishRequest> = topics
        .iter()
        .map(|topic| {
            PublishRequest::new(
                [topic.clone()],
                Event::text("x".repeat(100)).expect("valid"),
            )
        })
        .collect();
    group.throughput(Throughput::Elements(1));
    for (name, pattern_readers) in [("exact-only", 0), ("1000-on-100-patterns", 1_000)] {
        group.bench_function(name, |b| {
            let broker = MemoryBroker::builder().history_per_topic(16).build();
            let mut subscriptions: Vec<Subscription> = Vec::with_capacity(10_000);
            for i in 0..(10_000 - pattern_readers) {
                let request = SubscribeRequest::new([topics[i % topics.len()].clone()]);
                subscriptions.push(subscribe(&broker, &request));
            }
            for i in 0..pattern_readers {
                let j = i % 100;
                let pattern = format!("site/{}/room/{}{{n}}", j % 10, j / 10);
                let selector = tower_sse_pubsub::Selector::new(&pattern).expect("valid selector");
                let request = SubscribeRequest::new([]).select([selector]);
                subscriptions.push(subscribe(&broker, &request));
            }
            let mut next = 0;
            b.iter(|| {
                let request = &requests[next % requests.len()];
                next += 1;
                black_box(broker.publish(request).now_or_never())
            });
            drop(subscriptions);
        });
    }
    // What the cache saves: testing every one of the 100 patterns against an event's topic, as
    // an engine without it would on every publish (before even visiting 1,000 subscribers).
    let selectors: Vec<tower_sse_pubsub::Selector> = (0..100)
        .map(|j| format!("site/{}/room/{}{{n}}", j % 10, j / 10))
        .map(|pattern| tower_sse_pubsub::Selector::new(&pattern).expect("valid selector"))
        .collect();
    group.bench_function("match-100-patterns-once", |b| {
        let mut next = 0;
        b.iter(|| {
            let topic = topics[next % topics.len()].as_str();
            next += 1;
            black_box(selectors.iter().filter(|s| s.matches(topic)).count())
        });
    });
    group.finish();
}

fn subscribe(broker: &MemoryBroker, request: &SubscribeRequest) -> Subscription {
    broker
        .subscribe(request)
        .now_or_never()
        .expect("the memory broker answers at once")
        .expect("subscribe")
}

criterion_group!(benches, encode, fanout, patterns);
criterion_main!(benches);
