//! The broker conformance suite, run against `MemoryBroker`, plus what only the in-memory
//! broker can show (its subscriber bookkeeping).

mod common;

use std::sync::Arc;

use std::time::Duration;
use tower_sse_pubsub::conformance::Limits;

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

tower_sse_pubsub::broker_conformance!(Some(memory));

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

/// The data of the next `count` events of `subscription`, failing instead of hanging.
async fn next_data(subscription: &mut tower_sse_pubsub::Subscription, count: usize) -> Vec<String> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription is open");
        if let Some(frame) = delivery.into_event() {
            seen.push(frame.fields().data);
        }
    }
    seen
}

fn selector(text: &str) -> tower_sse_pubsub::Selector {
    tower_sse_pubsub::Selector::new(text).expect("valid selector")
}

#[tokio::test]
async fn a_pattern_subscriber_gets_every_matching_event_once_and_in_order() {
    let broker = MemoryBroker::new();
    let request = SubscribeRequest::new([topic("news")]).select([selector("books/{id}")]);
    let mut subscription = broker.subscribe(&request).await.expect("subscribe");
    for (topics, data) in [
        (vec![topic("books/1")], "book 1"),
        (vec![topic("news")], "news"),
        (vec![topic("films/1")], "a film"),
        (vec![topic("books/1/reviews")], "a review"),
        // On a topic the subscriber names and one its pattern matches: once.
        (vec![topic("books/2"), topic("news")], "book 2 in the news"),
        (vec![topic("books/3")], "book 3"),
    ] {
        broker
            .publish(&publish_request(&topics, data))
            .await
            .expect("publish");
    }
    assert_eq!(
        next_data(&mut subscription, 4).await,
        ["book 1", "news", "book 2 in the news", "book 3"]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(20), subscription.next())
            .await
            .is_err(),
        "nothing else"
    );
}

#[tokio::test]
async fn the_star_pattern_gets_every_topic() {
    let broker = MemoryBroker::new();
    let mut everything = broker
        .subscribe(&SubscribeRequest::new([]).select([selector("*")]))
        .await
        .expect("subscribe");
    for name in ["a", "b/c", "https://example.com/x"] {
        broker
            .publish(&publish_request(&[topic(name)], name))
            .await
            .expect("publish");
    }
    assert_eq!(
        next_data(&mut everything, 3).await,
        ["a", "b/c", "https://example.com/x"]
    );
    assert!(matches!(
        broker.subscribe(&SubscribeRequest::new([])).await,
        Err(tower_sse_pubsub::BrokerError::NoTopics)
    ));
}

#[tokio::test]
async fn a_pattern_replays_what_is_retained_then_goes_live_without_gap() {
    let broker = MemoryBroker::new();
    let mut ids = Vec::new();
    for (name, data) in [
        ("books/1", "b1"),
        ("films/1", "f1"),
        ("books/2", "b2"),
        ("books/3", "b3"),
    ] {
        ids.push(
            broker
                .publish(&publish_request(&[topic(name)], data))
                .await
                .expect("publish"),
        );
    }
    // From the earliest retained event.
    let earliest = SubscribeRequest::new([])
        .select([selector("books/{id}")])
        .start(tower_sse_pubsub::Start::Earliest);
    let mut from_start = broker.subscribe(&earliest).await.expect("subscribe");
    assert_eq!(from_start.resume(), &Resume::Complete);
    // After an id: only what followed it.
    let after = SubscribeRequest::new([])
        .select([selector("books/{id}")])
        .after(Some(ids[0].clone()));
    let mut resumed = broker.subscribe(&after).await.expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Complete);
    broker
        .publish(&publish_request(&[topic("books/4")], "b4"))
        .await
        .expect("publish");
    assert_eq!(
        next_data(&mut from_start, 4).await,
        ["b1", "b2", "b3", "b4"]
    );
    assert_eq!(next_data(&mut resumed, 3).await, ["b2", "b3", "b4"]);
}

#[tokio::test]
async fn a_pattern_past_the_history_is_told_it_missed_events() {
    let broker = MemoryBroker::builder().history_per_topic(2).build();
    let mut ids = Vec::new();
    for data in ["1", "2", "3", "4"] {
        ids.push(
            broker
                .publish(&publish_request(&[topic("books/1")], data))
                .await
                .expect("publish"),
        );
    }
    let request = SubscribeRequest::new([])
        .select([selector("books/{id}")])
        .after(Some(ids[0].clone()));
    let mut subscription = broker.subscribe(&request).await.expect("subscribe");
    assert_eq!(subscription.resume(), &Resume::Expired);
    assert_eq!(next_data(&mut subscription, 2).await, ["3", "4"]);
}

#[tokio::test]
async fn readers_of_one_pattern_share_it_and_new_patterns_see_topics_seen_before() {
    let broker = MemoryBroker::new();
    // The topic is seen, and which patterns it matches cached (none), before the pattern that
    // matches it exists.
    let _films = broker
        .subscribe(&SubscribeRequest::new([]).select([selector("films/{id}")]))
        .await
        .expect("subscribe");
    broker
        .publish(&publish_request(&[topic("books/1")], "before"))
        .await
        .expect("publish");
    let request = SubscribeRequest::new([]).select([selector("books/{id}")]);
    let mut first = broker.subscribe(&request).await.expect("subscribe");
    let mut second = broker.subscribe(&request).await.expect("subscribe");
    assert_eq!(broker.pattern_count(), 2, "one log per pattern");
    assert_eq!(broker.topic_subscriptions(), 3);
    broker
        .publish(&publish_request(&[topic("books/1")], "after"))
        .await
        .expect("publish");
    assert_eq!(next_data(&mut first, 1).await, ["after"]);
    assert_eq!(next_data(&mut second, 1).await, ["after"]);
    drop(first);
    assert_eq!(broker.pattern_count(), 2);
    drop(second);
    assert_eq!(
        broker.pattern_count(),
        1,
        "the last reader takes the pattern away"
    );
    assert_eq!(broker.topic_subscriptions(), 1);
}

#[tokio::test]
async fn private_events_reach_pattern_readers_only_with_a_grant() {
    let broker = MemoryBroker::new();
    let request = SubscribeRequest::new([]).select([selector("users/{id}")]);
    let mut public = broker.subscribe(&request).await.expect("subscribe");
    let granted = request
        .clone()
        .grant(tower_sse_pubsub::Grant::Selectors(Arc::from([selector(
            "users/ada",
        )])));
    let mut ada = broker.subscribe(&granted).await.expect("subscribe");
    for (name, data, private) in [
        ("users/ada", "for ada", true),
        ("users/bob", "for bob", true),
        ("users/bob", "public", false),
    ] {
        let mut request = publish_request(&[topic(name)], data);
        if private {
            request = request.private();
        }
        broker.publish(&request).await.expect("publish");
    }
    assert_eq!(next_data(&mut public, 1).await, ["public"]);
    assert_eq!(next_data(&mut ada, 2).await, ["for ada", "public"]);
}

#[tokio::test]
async fn a_pattern_only_subscription_ends_when_its_broker_is_dropped() {
    let broker = MemoryBroker::new();
    let request = SubscribeRequest::new([]).select([selector("books/{id}")]);
    let mut subscription = broker.subscribe(&request).await.expect("subscribe");
    let waiting = tokio::spawn(async move {
        let next = subscription.next().await;
        (next.is_none(), subscription.end())
    });
    // On this single-threaded runtime the task runs until it parks on its pattern's log.
    tokio::task::yield_now().await;
    drop(broker);
    let (ended, end) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken when the broker is dropped")
        .expect("the task does not panic");
    assert!(ended);
    assert_eq!(end, Some(tower_sse_pubsub::SubscriptionEnd::Closed));
}

/// A delivery as a test reads it: the event's data, or `resync <reason>`.
fn label(delivery: tower_sse_pubsub::Delivery) -> String {
    match delivery {
        tower_sse_pubsub::Delivery::Resync(resume) => format!("resync {}", resume.as_str()),
        other => other
            .into_event()
            .map(|f| f.fields().data)
            .unwrap_or_default(),
    }
}

/// A store reset (a `Resume::Unknown` resync) while a pattern reader still has its replay to
/// read: the replay held frames of the old store, whose sequences the new store reuses.
#[tokio::test]
async fn a_pattern_reader_drops_its_replay_when_the_store_is_reset() {
    use tower_sse_pubsub::broker::{Fanout, Position};
    let fanout = Fanout::builder().build();
    let books = [topic("books/1")];
    let id =
        |prefix: &'static str| move |s: u64| EventId::new(format!("{prefix}-{s}")).expect("id");
    for data in ["old 1", "old 2", "old 3"] {
        fanout.publish(&publish_request(&books, data), id("old"));
    }
    let (mut reader, resume) = fanout.subscribe_matching(
        &[],
        &[selector("books/{id}")],
        Position::Earliest,
        tower_sse_pubsub::Grant::PublicOnly,
        None,
    );
    assert_eq!(resume, Resume::Complete);
    fanout.resync(None, Resume::Unknown);
    for data in ["new 1", "new 2", "new 3"] {
        fanout.publish(&publish_request(&books, data), id("new"));
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .expect("a delivery in time")
            .expect("the reader is open");
        seen.push(label(delivery));
    }
    assert_eq!(seen, ["resync unknown", "new 1", "new 2", "new 3"]);
}

/// A store reset followed by another notice (events of the new store missed, `Expired`) before
/// a reader polls: the later notice must not hide the reset, or the reader would keep the old
/// store's sequences and skip the new store's events as already seen.
#[tokio::test]
async fn a_reset_under_a_later_notice_still_resets_a_reader() {
    use tower_sse_pubsub::broker::{Fanout, Position};
    let fanout = Fanout::builder().build();
    let t = [topic("t")];
    let id =
        |prefix: &'static str| move |s: u64| EventId::new(format!("{prefix}-{s}")).expect("id");
    let (mut reader, _) = fanout.subscribe_matching(
        &t,
        &[],
        Position::Live,
        tower_sse_pubsub::Grant::PublicOnly,
        None,
    );
    for data in ["old 1", "old 2", "old 3", "old 4"] {
        fanout.publish(&publish_request(&t, data), id("old"));
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .expect("a delivery in time")
            .expect("the reader is open");
        seen.extend(delivery.into_event().map(|f| f.fields().data));
    }
    assert_eq!(seen, ["old 1", "old 2", "old 3", "old 4"]);
    // The store is reset, its first new events go, and the hole is reported.
    fanout.resync(None, Resume::Unknown);
    for data in ["new 1", "new 2"] {
        fanout.publish(&publish_request(&t, data), id("new"));
    }
    fanout.resync(Some(&t), Resume::Expired);
    fanout.publish(&publish_request(&t, "new 3"), id("new"));
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("new 3") {
        let delivery = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .expect("a delivery in time")
            .expect("the reader is open");
        seen.push(label(delivery));
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("resync unknown"),
        "{seen:?}"
    );
    assert!(seen.ends_with(&["new 3".to_owned()]), "{seen:?}");
}

#[tokio::test]
async fn chosen_ids_are_remembered_up_to_the_bound_then_resume_as_unknown() {
    let broker = MemoryBroker::builder().chosen_ids(2).build();
    let topic = Topic::new("t").expect("valid");
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = EventId::new(format!("urn:test:{n}")).expect("valid");
        let request =
            PublishRequest::new([topic.clone()], Event::text(format!("{n}")).expect("valid"))
                .id(id.clone());
        broker.publish(&request).await.expect("publish");
        ids.push(id);
    }
    let resume = |id: &EventId| {
        let request = SubscribeRequest::new([topic.clone()]).after(Some(id.clone()));
        let broker = broker.clone();
        async move {
            broker
                .subscribe(&request)
                .await
                .expect("subscribe")
                .resume()
                .clone()
        }
    };
    assert_eq!(
        resume(&ids[0]).await,
        Resume::Unknown,
        "the oldest is forgotten"
    );
    assert_eq!(resume(&ids[1]).await, Resume::Complete);
    // A forgotten id may be chosen again; a remembered one may not.
    let again = PublishRequest::new([topic.clone()], Event::text("again").expect("valid"));
    assert!(
        broker
            .publish(&again.clone().id(ids[0].clone()))
            .await
            .is_ok()
    );
    assert!(broker.publish(&again.id(ids[2].clone())).await.is_err());
}

/// A pattern subscriber resuming while publishers race it gets every later event once and in
/// order: its replay (read after the engine's lock is released) and its live feed meet without
/// a gap or an overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_resume_is_gap_free_while_publishers_race_it() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::StreamExt;
    use tower_sse_pubsub::Selector;

    const PUBLISHERS: usize = 4;
    const EACH: usize = 300;
    let broker = Arc::new(MemoryBroker::builder().history_per_topic(10_000).build());
    let publish = |broker: Arc<MemoryBroker>, topic: String, data: String| async move {
        let request = PublishRequest::new(
            [Topic::new(topic).expect("valid")],
            Event::text(data).expect("valid"),
        );
        broker.publish(&request).await.expect("publish")
    };
    let mut before = Vec::new();
    for i in 0..10 {
        before.push(publish(broker.clone(), format!("race/{}", i % 4), format!("b{i}")).await);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (broker, done) = (broker.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                ids.push(publish(broker.clone(), format!("race/{p}"), format!("p{p} {i}")).await);
                done.fetch_add(1, Ordering::SeqCst);
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    while done.load(Ordering::SeqCst) < PUBLISHERS * EACH / 4 {
        tokio::task::yield_now().await;
    }
    let pattern = Selector::new("race/{n}").expect("valid");
    let request = SubscribeRequest::new([])
        .select([pattern.clone()])
        .after(Some(before[4].clone()));
    let mut racing = broker.subscribe(&request).await.expect("subscribe");
    let mut published: HashSet<EventId> = before[5..].iter().cloned().collect();
    for task in tasks {
        published.extend(task.await.expect("publisher"));
    }
    let end = publish(broker.clone(), "race/0".to_owned(), "end".to_owned()).await;
    published.insert(end.clone());

    let mut received = Vec::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), racing.next())
            .await
            .expect("in time")
            .and_then(|d| d.into_event())
            .expect("an event");
        received.push(frame.sequence());
        if frame.id() == &end {
            assert_eq!(received.len(), published.len(), "every event once");
            break;
        }
    }
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeat"
    );
    assert_eq!(racing.resume(), &Resume::Complete);
}

/// A broker that lost part of the feed its pattern readers draw from tells them, and only them.
#[tokio::test]
async fn resyncing_patterns_reaches_pattern_readers_and_no_topic_reader() {
    use tower_sse_pubsub::broker::{Fanout, Position};
    let fanout = Fanout::builder().build();
    let grant = || tower_sse_pubsub::Grant::PublicOnly;
    let (mut pattern, _) = fanout.subscribe_matching(
        &[],
        &[selector("books/{id}")],
        Position::Live,
        grant(),
        None,
    );
    let (mut exact, _) = fanout.subscribe(&[topic("books/1")], Position::Live, grant());
    fanout.resync_patterns(Resume::Expired);
    let id = |s: u64| EventId::new(format!("e-{s}")).expect("id");
    fanout.publish(&publish_request(&[topic("books/1")], "after"), id);
    assert!(matches!(
        next_delivery(&mut pattern).await,
        tower_sse_pubsub::Delivery::Resync(Resume::Expired)
    ));
    for reader in [&mut pattern, &mut exact] {
        let frame = next_delivery(reader)
            .await
            .into_event()
            .expect("an event, not a resync");
        assert_eq!(frame.fields().data, "after");
    }
}

async fn next_delivery(
    reader: &mut tower_sse_pubsub::broker::Reader,
) -> tower_sse_pubsub::Delivery {
    tokio::time::timeout(Duration::from_secs(5), reader.next())
        .await
        .expect("a delivery in time")
        .expect("the reader is open")
}
