//! The broker conformance suite (feature `conformance`): what every
//! [`Broker`] must do, as checks a broker written anywhere can run. The
//! crate's own brokers (memory, Redis, NATS) pass them unchanged.
//!
//! Each check is a plain async function taking a [`Factory`] that builds a fresh broker with the
//! given [`Limits`]; [`broker_conformance!`](crate::broker_conformance) turns them all into
//! `#[tokio::test]`s for one broker (the test crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features). The checks panic, as tests do, when a broker falls short.
//!
//! ```no_run
//! // tests/my_broker.rs of a crate with its own broker:
//! use std::sync::Arc;
//! use tower_sse_pubsub::broker::Broker;
//! use tower_sse_pubsub::conformance::Limits;
//!
//! fn my_broker(limits: Limits) -> Arc<dyn Broker> {
//!     // Build yours with these limits; the in-memory broker stands in here.
//!     Arc::new(
//!         tower_sse_pubsub::MemoryBroker::builder()
//!             .history_per_topic(limits.history_per_topic)
//!             .subscriber_queue(limits.subscriber_queue)
//!             .build(),
//!     )
//! }
//!
//! // `Some(factory)`, or `None` to skip (say, when a server the broker needs is missing).
//! tower_sse_pubsub::broker_conformance!(Some(my_broker));
//! # fn main() {}
//! ```
//!
//! One check can also be run on its own:
//!
//! ```
//! use std::sync::Arc;
//! use tower_sse_pubsub::broker::Broker;
//! use tower_sse_pubsub::conformance::{self, Limits};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let memory = |_: Limits| Arc::new(tower_sse_pubsub::MemoryBroker::new()) as Arc<dyn Broker>;
//! conformance::live_events_arrive_in_publish_order_with_their_ids(&memory).await;
//! # }
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::BoxFuture;
use crate::broker::Broker;
use crate::{
    BrokerError, Delivery, Event, EventId, Frame, Grant, IdempotencyKey, PublishRequest,
    ReplayBudget, Resume, Selector, Start, SubscribeRequest, Subscription, SubscriptionEnd, Topic,
};
use futures::StreamExt;

/// What a test needs a broker to be configured with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events retained per topic.
    pub history_per_topic: usize,
    /// Frames a subscriber may have queued before it is ended as lagging.
    pub subscriber_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            history_per_topic: 10_000,
            subscriber_queue: 10_000,
        }
    }
}

/// Builds a fresh, empty broker; brokers made by one factory must not share ids or topics.
pub trait Factory {
    /// A new broker with `limits`.
    fn make(&self, limits: Limits) -> BoxFuture<'_, Arc<dyn Broker>>;
}

impl<F: Fn(Limits) -> Arc<dyn Broker>> Factory for F {
    fn make(&self, limits: Limits) -> BoxFuture<'_, Arc<dyn Broker>> {
        Box::pin(std::future::ready(self(limits)))
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("valid topic")
}

fn selector(text: &str) -> Selector {
    Selector::new(text).expect("valid selector")
}

fn text(data: &str) -> Event {
    Event::text(data).expect("valid event")
}

async fn publish(broker: &dyn Broker, topics: &[&str], data: &str) -> EventId {
    let topics: Vec<Topic> = topics.iter().map(|t| topic(t)).collect();
    broker
        .publish(&PublishRequest::new(topics, text(data)))
        .await
        .expect("publish succeeds")
}

async fn subscribe(broker: &dyn Broker, topics: &[&str], after: Option<&EventId>) -> Subscription {
    let topics: Vec<Topic> = topics.iter().map(|t| topic(t)).collect();
    broker
        .subscribe(&SubscribeRequest::new(topics).after(after.cloned()))
        .await
        .expect("subscribe succeeds")
}

async fn subscribe_with(broker: &dyn Broker, request: SubscribeRequest) -> Subscription {
    broker
        .subscribe(&request)
        .await
        .expect("subscribe succeeds")
}

/// The next frame, failing the test instead of hanging when none comes.
async fn next(subscription: &mut Subscription) -> Frame {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a frame arrives in time")
        .expect("the subscription is still open")
        .into_event()
        .expect("an event, not a resync")
}

/// The data of an event as subscribers read it back from the frame.
fn data_of(frame: &Frame) -> String {
    let text = std::str::from_utf8(frame.bytes()).expect("frames are UTF-8");
    text.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads frames until one carries `data`, and returns their data, that one included.
async fn read_until(subscription: &mut Subscription, data: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        let frame = next(subscription).await;
        let done = data_of(&frame) == data;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Live events arrive in publish order with their ids.
pub async fn live_events_arrive_in_publish_order_with_their_ids(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let mut subscription = subscribe(&*broker, &["a"], None).await;
    assert_eq!(subscription.resume(), &Resume::Fresh);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(publish(&*broker, &["a"], &format!("event {i}")).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let frame = next(&mut subscription).await;
        assert_eq!(frame.id(), id);
        assert_eq!(data_of(&frame), format!("event {i}"));
    }
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
}

/// Frames carry the id line first.
pub async fn frames_carry_the_id_line_first(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let mut subscription = subscribe(&*broker, &["a"], None).await;
    let event = Event::text("x")
        .and_then(|e| e.with_event_type("kind"))
        .expect("valid event");
    let id = broker
        .publish(&PublishRequest::new([topic("a")], event))
        .await
        .expect("publish succeeds");
    let frame = next(&mut subscription).await;
    let expected = format!("id: {id}\nevent: kind\ndata: x\n\n");
    assert_eq!(&frame.bytes()[..], expected.as_bytes());
}

/// Fresh subscription gets no earlier events.
pub async fn fresh_subscription_gets_no_earlier_events(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    publish(&*broker, &["a"], "before").await;
    let mut subscription = subscribe(&*broker, &["a"], None).await;
    publish(&*broker, &["a"], "after").await;
    assert_eq!(data_of(&next(&mut subscription).await), "after");
}

/// Other topics are not delivered.
pub async fn other_topics_are_not_delivered(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let mut subscription = subscribe(&*broker, &["a"], None).await;
    publish(&*broker, &["b"], "for b").await;
    publish(&*broker, &["a"], "for a").await;
    assert_eq!(data_of(&next(&mut subscription).await), "for a");
}

/// Resume replays every later event then goes live.
pub async fn resume_replays_every_later_event_then_goes_live(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(publish(&*broker, &["a"], &format!("old {i}")).await);
    }
    let mut subscription = subscribe(&*broker, &["a"], Some(&ids[3])).await;
    assert_eq!(subscription.resume(), &Resume::Complete);
    publish(&*broker, &["a"], "live").await;
    let frames = read_until(&mut subscription, "live").await;
    let data: Vec<String> = frames.iter().map(data_of).collect();
    let mut expected: Vec<String> = (4..10).map(|i| format!("old {i}")).collect();
    expected.push("live".to_owned());
    assert_eq!(data, expected);
}

/// Resume after the newest event replays nothing.
pub async fn resume_after_the_newest_event_replays_nothing(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let last = publish(&*broker, &["a"], "one").await;
    let mut subscription = subscribe(&*broker, &["a"], Some(&last)).await;
    assert_eq!(subscription.resume(), &Resume::Complete);
    publish(&*broker, &["a"], "two").await;
    assert_eq!(data_of(&next(&mut subscription).await), "two");
}

/// Event on several topics reaches a subscriber of several once.
pub async fn event_on_several_topics_reaches_a_subscriber_of_several_once(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let mut both = subscribe(&*broker, &["a", "b"], None).await;
    let mut only_b = subscribe(&*broker, &["b"], None).await;
    publish(&*broker, &["a", "b"], "shared").await;
    publish(&*broker, &["a"], "a only").await;
    publish(&*broker, &["b"], "b only").await;
    let frames = read_until(&mut both, "b only").await;
    let data: Vec<String> = frames.iter().map(data_of).collect();
    assert_eq!(data, ["shared", "a only", "b only"]);
    let frames = read_until(&mut only_b, "b only").await;
    let data: Vec<String> = frames.iter().map(data_of).collect();
    assert_eq!(data, ["shared", "b only"]);
}

/// Multi topic replay is merged in order without duplicates.
pub async fn multi_topic_replay_is_merged_in_order_without_duplicates(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["c"], "start").await;
    publish(&*broker, &["a"], "1").await;
    publish(&*broker, &["b"], "2").await;
    publish(&*broker, &["a", "b"], "3").await;
    publish(&*broker, &["b", "a"], "4").await;
    publish(&*broker, &["c"], "not subscribed").await;
    publish(&*broker, &["a"], "5").await;
    let mut subscription = subscribe(&*broker, &["a", "b"], Some(&start)).await;
    assert_eq!(subscription.resume(), &Resume::Complete);
    publish(&*broker, &["b"], "live").await;
    let frames = read_until(&mut subscription, "live").await;
    let data: Vec<String> = frames.iter().map(data_of).collect();
    assert_eq!(data, ["1", "2", "3", "4", "5", "live"]);
}

/// Resume point older than history is reported as expired.
pub async fn resume_point_older_than_history_is_reported_as_expired(make: &impl Factory) {
    let broker = make
        .make(Limits {
            history_per_topic: 3,
            ..Limits::default()
        })
        .await;
    let first = publish(&*broker, &["a"], "0").await;
    for i in 1..6 {
        publish(&*broker, &["a"], &i.to_string()).await;
    }
    let mut subscription = subscribe(&*broker, &["a"], Some(&first)).await;
    assert_eq!(subscription.resume(), &Resume::Expired);
    assert!(subscription.resume().is_gap());
    publish(&*broker, &["a"], "live").await;
    let frames = read_until(&mut subscription, "live").await;
    let data: Vec<String> = frames.iter().map(data_of).collect();
    assert_eq!(
        data,
        ["3", "4", "5", "live"],
        "all that is retained, then live"
    );
}

/// Unknown resume point is reported and everything retained replayed.
pub async fn unknown_resume_point_is_reported_and_everything_retained_replayed(
    make: &impl Factory,
) {
    let broker = make.make(Limits::default()).await;
    let other = make.make(Limits::default()).await;
    let foreign = publish(&*other, &["a"], "elsewhere").await;
    publish(&*broker, &["a"], "one").await;
    publish(&*broker, &["a"], "two").await;
    for unknown in [
        foreign,
        EventId::new("not-an-id-of-ours").expect("valid id"),
        EventId::new("x").expect("valid id"),
    ] {
        let mut subscription = subscribe(&*broker, &["a"], Some(&unknown)).await;
        assert_eq!(subscription.resume(), &Resume::Unknown, "for {unknown}");
        let data: Vec<String> = read_until(&mut subscription, "two")
            .await
            .iter()
            .map(data_of)
            .collect();
        assert_eq!(data, ["one", "two"]);
    }
}

/// Resume is gap free while publishers race the subscribe.
pub async fn resume_is_gap_free_while_publishers_race_the_subscribe(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    // Each round checks the guarantee; rounds repeat until one has shown a real race (racing
    // events on both sides of the switch from replay to live), so the check cannot pass vacuously.
    for round in 0..50 {
        let (in_replay, live) = race_round(&broker, &format!("race-{round}")).await;
        if in_replay > 0 && live > 0 {
            return;
        }
    }
    panic!("in 50 rounds the subscribe never landed while publishers were mid-flight");
}

/// One race: returns how many racing events were surely replayed and how many surely live.
async fn race_round(broker: &Arc<dyn Broker>, topic_name: &str) -> (usize, usize) {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 250;
    let mut before = Vec::new();
    for i in 0..10 {
        before.push(publish(&**broker, &[topic_name], &format!("before {i}")).await);
    }
    let resume_from = before[4].clone();

    let barrier = Arc::new(tokio::sync::Barrier::new(PUBLISHERS + 1));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let broker = broker.clone();
        let barrier = barrier.clone();
        let done = done.clone();
        let topic_name = topic_name.to_owned();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut ids = Vec::with_capacity(EACH);
            for i in 0..EACH {
                ids.push(publish(&*broker, &[&topic_name], &format!("p{p} {i}")).await);
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    barrier.wait().await;
    // Subscribe once the publishers are under way: some of their events must come in the
    // replay, the rest live. Bounded: the publishers finish regardless.
    while done.load(std::sync::atomic::Ordering::SeqCst) < PUBLISHERS * EACH / 8 {
        tokio::task::yield_now().await;
    }
    let started = done.load(std::sync::atomic::Ordering::SeqCst);
    let mut racing = subscribe(&**broker, &[topic_name], Some(&resume_from)).await;
    // Publishes confirmed before the subscribe began are surely in its replay; those confirmed
    // after it returned are surely live.
    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
    let mut published: HashSet<EventId> = before[5..].iter().cloned().collect();
    for task in tasks {
        published.extend(task.await.expect("publisher task"));
    }
    published.insert(publish(&**broker, &[topic_name], "end").await);

    let received: Vec<EventId> = read_until(&mut racing, "end")
        .await
        .iter()
        .map(|f| f.id().clone())
        .collect();
    let unique: HashSet<EventId> = received.iter().cloned().collect();
    assert_eq!(unique.len(), received.len(), "no event is delivered twice");
    assert_eq!(
        unique, published,
        "every event after the resume point arrives"
    );

    // The order matches the broker's own order, as a pure replay shows it.
    let mut reference = subscribe(&**broker, &[topic_name], Some(&resume_from)).await;
    let replayed: Vec<EventId> = read_until(&mut reference, "end")
        .await
        .iter()
        .map(|f| f.id().clone())
        .collect();
    assert_eq!(received, replayed, "live delivery follows id order");
    let racing_total = PUBLISHERS * EACH;
    (started, racing_total - finished)
}

/// Slow subscriber is ended as lagged without affecting others.
pub async fn slow_subscriber_is_ended_as_lagged_without_affecting_others(make: &impl Factory) {
    let broker = make
        .make(Limits {
            subscriber_queue: 4,
            history_per_topic: 4,
        })
        .await;
    let mut stalled = subscribe(&*broker, &["a"], None).await;
    let mut reader = subscribe(&*broker, &["a"], None).await;
    let mut received = 0;
    for i in 0..50 {
        publish(&*broker, &["a"], &format!("{i}")).await;
        // The reader keeps up, as a fast client would.
        assert_eq!(data_of(&next(&mut reader).await), format!("{i}"));
        received += 1;
    }
    assert_eq!(received, 50);
    let mut queued = 0;
    while let Some(_frame) = tokio::time::timeout(WAIT, stalled.next())
        .await
        .expect("the stalled stream ends instead of hanging")
    {
        queued += 1;
    }
    assert!(
        queued <= 4,
        "at most the lag window was kept for it, got {queued}"
    );
    assert_eq!(stalled.end(), Some(SubscriptionEnd::Lagged));
}

/// Lagged subscriber resumes from history without loss.
pub async fn lagged_subscriber_resumes_from_history_without_loss(make: &impl Factory) {
    let broker = make
        .make(Limits {
            subscriber_queue: 2,
            history_per_topic: 4,
        })
        .await;
    let mut stalled = subscribe(&*broker, &["a"], None).await;
    publish(&*broker, &["a"], "0").await;
    let last_seen = next(&mut stalled).await.id().clone();
    for i in 1..10 {
        publish(&*broker, &["a"], &format!("{i}")).await;
    }
    while let Some(delivery) = tokio::time::timeout(WAIT, stalled.next())
        .await
        .expect("the stalled stream ends")
    {
        assert!(delivery.into_event().is_some(), "an event, not a resync");
    }
    assert_eq!(stalled.end(), Some(SubscriptionEnd::Lagged));
    let mut resumed = subscribe(&*broker, &["a"], Some(&last_seen)).await;
    let frames = read_until(&mut resumed, "9").await;
    let first = data_of(&frames[0]).parse::<usize>().expect("numbered");
    assert_eq!(
        frames.len(),
        10 - first,
        "a contiguous run up to the newest"
    );
    match resumed.resume() {
        // The live log was shorter than the history: all of it is replayed.
        Resume::Complete => assert_eq!(first, 1, "everything after the last seen event"),
        // The history itself was outrun: the client is told, and gets what is retained.
        Resume::Expired => assert_eq!(first, 6, "the four retained events"),
        other => panic!("unexpected resume {other:?}"),
    }
}

/// Publish and subscribe need a topic.
pub async fn publish_and_subscribe_need_a_topic(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let result = broker.publish(&PublishRequest::new([], text("x"))).await;
    assert!(matches!(result, Err(BrokerError::NoTopics)), "{result:?}");
    let result = broker.subscribe(&SubscribeRequest::new([])).await;
    assert!(matches!(result, Err(BrokerError::NoTopics)), "{result:?}");
}

/// Event published to no subscriber is still retained.
pub async fn event_published_to_no_subscriber_is_still_retained(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["quiet"], "start").await;
    publish(&*broker, &["quiet"], "nobody listening").await;
    let mut subscription = subscribe(&*broker, &["quiet"], Some(&start)).await;
    assert_eq!(data_of(&next(&mut subscription).await), "nobody listening");
}

/// Missed events are reported even when a topic kept no history.
pub async fn missed_events_are_reported_even_when_a_topic_kept_no_history(make: &impl Factory) {
    let broker = make
        .make(Limits {
            history_per_topic: 0,
            ..Limits::default()
        })
        .await;
    let mut subscription = subscribe(&*broker, &["a"], None).await;
    publish(&*broker, &["a"], "seen").await;
    let seen = next(&mut subscription).await.id().clone();
    drop(subscription);
    publish(&*broker, &["a"], "missed while away").await;
    let mut resumed = subscribe(&*broker, &["a"], Some(&seen)).await;
    assert_eq!(
        resumed.resume(),
        &Resume::Expired,
        "a missed event is never silent"
    );
    publish(&*broker, &["a"], "live").await;
    assert_eq!(
        data_of(&next(&mut resumed).await),
        "live",
        "nothing replayed"
    );
}

/// Earliest replays everything retained then goes live.
pub async fn earliest_replays_everything_retained_then_goes_live(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    for i in 0..7 {
        publish(&*broker, &["a"], &format!("{i}")).await;
    }
    let request = SubscribeRequest::new([topic("a")]).start(Start::Earliest);
    let mut subscription = subscribe_with(&*broker, request).await;
    assert_eq!(subscription.resume(), &Resume::Complete);
    publish(&*broker, &["a"], "live").await;
    let data: Vec<String> = read_until(&mut subscription, "live")
        .await
        .iter()
        .map(data_of)
        .collect();
    assert_eq!(data, ["0", "1", "2", "3", "4", "5", "6", "live"]);
}

/// Frames list every topic of their event.
pub async fn frames_list_every_topic_of_their_event(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["x"], "start").await;
    let mut live = subscribe(&*broker, &["b"], None).await;
    publish(&*broker, &["a", "b", "c"], "three topics").await;
    let frame = next(&mut live).await;
    let names: Vec<&str> = frame.topics().iter().map(Topic::as_str).collect();
    assert_eq!(names, ["a", "b", "c"], "live");
    let mut replayed = subscribe(&*broker, &["c"], Some(&start)).await;
    let frame = next(&mut replayed).await;
    let names: Vec<&str> = frame.topics().iter().map(Topic::as_str).collect();
    assert_eq!(names, ["a", "b", "c"], "replayed");
}

/// Replay longer than a page arrives whole and in order.
pub async fn replay_longer_than_a_page_arrives_whole_and_in_order(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["a"], "start").await;
    let mut expected = Vec::new();
    for i in 0..40 {
        let target: &[&str] = match i % 3 {
            0 => &["a"],
            1 => &["b"],
            _ => &["a", "b"],
        };
        publish(&*broker, target, &format!("{i}")).await;
        expected.push(format!("{i}"));
    }
    let mut subscription = subscribe(&*broker, &["a", "b"], Some(&start)).await;
    publish(&*broker, &["b"], "live").await;
    expected.push("live".to_owned());
    let data: Vec<String> = read_until(&mut subscription, "live")
        .await
        .iter()
        .map(data_of)
        .collect();
    assert_eq!(data, expected);
}

/// Private events reach only granted subscribers.
pub async fn private_events_reach_only_granted_subscribers(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let mut public = subscribe(&*broker, &["a"], None).await;
    let granted = SubscribeRequest::new([topic("a")]).grant(Grant::Topics(vec![topic("a")]));
    let mut granted = subscribe_with(&*broker, granted).await;
    let private = PublishRequest::new([topic("a")], text("secret")).private();
    broker.publish(&private).await.expect("publish succeeds");
    publish(&*broker, &["a"], "public").await;
    let frame = next(&mut granted).await;
    assert_eq!(data_of(&frame), "secret");
    assert!(frame.is_private());
    assert_eq!(data_of(&next(&mut granted).await), "public");
    assert_eq!(
        data_of(&next(&mut public).await),
        "public",
        "the private event is not delivered without a grant"
    );
}

/// The grant applies to a replay as to live events: a resuming subscriber without one never
/// sees a private event the history holds.
pub async fn a_replay_withholds_private_events_from_subscribers_without_a_grant(
    make: &impl Factory,
) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["a"], "start").await;
    let private = PublishRequest::new([topic("a")], text("secret")).private();
    broker.publish(&private).await.expect("publish succeeds");
    publish(&*broker, &["a"], "end").await;
    let mut public = subscribe(&*broker, &["a"], Some(&start)).await;
    assert_eq!(
        data_of(&next(&mut public).await),
        "end",
        "no private event replayed"
    );
    let granted = SubscribeRequest::new([topic("a")])
        .start(Start::After(start))
        .grant(Grant::Topics(vec![topic("a")]));
    let mut granted = subscribe_with(&*broker, granted).await;
    assert_eq!(data_of(&next(&mut granted).await), "secret");
    assert_eq!(data_of(&next(&mut granted).await), "end");
}

/// A retried publish with the same key returns the first id.
pub async fn a_retried_publish_with_the_same_key_returns_the_first_id(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["a"], "start").await;
    let key = IdempotencyKey::new("order-42").expect("valid key");
    let request = PublishRequest::new([topic("a")], text("once")).idempotency_key(key);
    let first = broker.publish(&request).await.expect("publish succeeds");
    let retry = broker.publish(&request).await.expect("publish succeeds");
    assert_eq!(first, retry);
    publish(&*broker, &["a"], "end").await;
    let mut subscription = subscribe(&*broker, &["a"], Some(&start)).await;
    let data: Vec<String> = read_until(&mut subscription, "end")
        .await
        .iter()
        .map(data_of)
        .collect();
    assert_eq!(data, ["once", "end"], "published once");
}

/// A chosen id is kept and resumed after.
pub async fn a_chosen_id_is_kept_and_resumed_after(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["a", "b"], "start").await;
    let chosen = EventId::new("urn:uuid:5bd5b2a3-5f2c-4a36-9c7e-0e0f6b0f1a2d").expect("valid id");
    let mut live = subscribe(&*broker, &["a"], None).await;
    let request = PublishRequest::new([topic("a"), topic("b")], text("chosen")).id(chosen.clone());
    let id = broker.publish(&request).await.expect("publish succeeds");
    assert_eq!(id, chosen, "the chosen id is the event's id");
    let frame = next(&mut live).await;
    assert_eq!(frame.id(), &chosen);
    assert!(
        frame.bytes().starts_with(b"id: urn:uuid:5bd5b2a3"),
        "the chosen id is on the wire"
    );
    publish(&*broker, &["b"], "after").await;

    // Resuming after the chosen id replays what followed, on every topic of the event.
    let mut resumed = subscribe(&*broker, &["a", "b"], Some(&chosen)).await;
    assert_eq!(resumed.resume(), &Resume::Complete);
    assert_eq!(data_of(&next(&mut resumed).await), "after");
    // And ids chosen and made keep one order.
    let mut all = subscribe(&*broker, &["a", "b"], Some(&start)).await;
    let data: Vec<String> = read_until(&mut all, "after")
        .await
        .iter()
        .map(data_of)
        .collect();
    assert_eq!(data, ["chosen", "after"]);
}

/// A chosen id already given is refused and nothing published.
pub async fn a_chosen_id_already_given_is_refused_and_nothing_published(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["a"], "start").await;
    let chosen = EventId::new("books/1#rev-2").expect("valid id");
    let request = PublishRequest::new([topic("a")], text("first")).id(chosen.clone());
    broker.publish(&request).await.expect("publish succeeds");
    let again = PublishRequest::new([topic("b")], text("second")).id(chosen.clone());
    match broker.publish(&again).await {
        Err(BrokerError::DuplicateId(id)) => assert_eq!(id, chosen),
        other => panic!("expected DuplicateId, got {other:?}"),
    }
    // A made id cannot be chosen either: it would be two events' id.
    let mimic = PublishRequest::new([topic("a")], text("mimic")).id(start.clone());
    assert!(matches!(
        broker.publish(&mimic).await,
        Err(BrokerError::DuplicateId(_))
    ));
    publish(&*broker, &["a", "b"], "end").await;
    let mut subscription = subscribe(&*broker, &["a", "b"], Some(&start)).await;
    let data: Vec<String> = read_until(&mut subscription, "end")
        .await
        .iter()
        .map(data_of)
        .collect();
    assert_eq!(data, ["first", "end"], "the refused publishes left nothing");
}

/// A replay past its budget is cut and the cut is said.
pub async fn a_replay_past_its_budget_is_cut_and_the_cut_is_said(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let first = publish(&*broker, &["a"], "start").await;
    for i in 0..20 {
        publish(&*broker, &["a"], &format!("{i}")).await;
    }
    // Several topics too, with an event on both: the budget counts it once.
    let multi_first = publish(&*broker, &["b"], "b-start").await;
    for i in 0..10 {
        let topics: &[&str] = if i == 9 { &["b", "c"] } else { &["b"] };
        publish(&*broker, topics, &format!("b{i}")).await;
        publish(&*broker, &["c"], &format!("c{i}")).await;
    }
    let request = SubscribeRequest::new([topic("a")])
        .start(Start::After(first))
        .replay_budget(ReplayBudget::new(5, 1 << 20));
    let mut subscription = subscribe_with(&*broker, request).await;
    // Said up front, before anything is replayed, as the stream's opening notice.
    assert_eq!(subscription.resume(), &Resume::Expired);
    publish(&*broker, &["a"], "live").await;
    // The newest events that fit, then live ones: the oldest are the ones left out.
    assert_eq!(
        data_until(&mut subscription, "live").await,
        ["15", "16", "17", "18", "19", "live"]
    );

    let request = SubscribeRequest::new([topic("b"), topic("c")])
        .start(Start::After(multi_first))
        .replay_budget(ReplayBudget::new(5, 1 << 20));
    let mut subscription = subscribe_with(&*broker, request).await;
    assert_eq!(subscription.resume(), &Resume::Expired);
    publish(&*broker, &["c"], "live").await;
    assert_eq!(
        data_until(&mut subscription, "live").await,
        ["c7", "b8", "c8", "b9", "c9", "live"]
    );

    // Long enough that finding the start takes a broker several reads.
    let long_first = publish(&*broker, &["d"], "d-start").await;
    for i in 0..150 {
        publish(
            &*broker,
            &[if i % 2 == 0 { "d" } else { "e" }],
            &format!("{i}"),
        )
        .await;
    }
    let request = SubscribeRequest::new([topic("d"), topic("e")])
        .start(Start::After(long_first))
        .replay_budget(ReplayBudget::new(100, 1 << 20));
    let mut subscription = subscribe_with(&*broker, request).await;
    assert_eq!(subscription.resume(), &Resume::Expired);
    publish(&*broker, &["d"], "live").await;
    let expected: Vec<String> = (50..150)
        .map(|i| i.to_string())
        .chain(["live".to_owned()])
        .collect();
    assert_eq!(data_until(&mut subscription, "live").await, expected);
}

/// The data of every delivery up to and including the event whose data is `last`; a resync on
/// the way fails the test.
async fn data_until(subscription: &mut Subscription, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let delivery = tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription is open");
        match delivery {
            Delivery::Event(frame) => {
                let data = data_of(&frame);
                seen.push(data.clone());
                if data == last {
                    return seen;
                }
            }
            other => panic!("unexpected {other:?} after {seen:?}"),
        }
    }
}

/// A subscription ends at its deadline.
pub async fn a_subscription_ends_at_its_deadline(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(50);
    let request = SubscribeRequest::new([topic("a")]).deadline(deadline);
    let mut subscription = subscribe_with(&*broker, request).await;
    let end = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("the subscription ends instead of hanging");
    assert!(end.is_none());
    assert_eq!(subscription.end(), Some(SubscriptionEnd::Deadline));
}

/// An event on several topics takes one place in the queue.
pub async fn an_event_on_several_topics_takes_one_place_in_the_queue(make: &impl Factory) {
    let broker = make
        .make(Limits {
            subscriber_queue: 4,
            ..Limits::default()
        })
        .await;
    let topics = ["a", "b", "c", "d"];
    let mut subscription = subscribe(&*broker, &topics, None).await;
    for i in 0..3 {
        publish(&*broker, &topics, &format!("{i}")).await;
    }
    publish(&*broker, &["a"], "end").await;
    let data: Vec<String> = read_until(&mut subscription, "end")
        .await
        .iter()
        .map(data_of)
        .collect();
    assert_eq!(
        data,
        ["0", "1", "2", "end"],
        "four events fit a queue of four"
    );
}

/// The data of every event up to and including the one whose data is `last`.
async fn data_through(subscription: &mut Subscription, last: &str) -> Vec<String> {
    read_until(subscription, last)
        .await
        .iter()
        .map(data_of)
        .collect()
}

/// Nothing more arrives for a moment (for what must not be delivered: a bounded wait is the
/// only way to observe an absence).
async fn nothing_more(subscription: &mut Subscription) {
    let next = tokio::time::timeout(Duration::from_millis(100), subscription.next()).await;
    assert!(next.is_err(), "unexpected {next:?}");
}

/// Star and template patterns receive matching events live and no others.
pub async fn star_and_template_patterns_receive_matching_events_live_and_no_others(
    make: &impl Factory,
) {
    let broker = make.make(Limits::default()).await;
    let everything = SubscribeRequest::new([]).select([selector("*")]);
    let mut everything = subscribe_with(&*broker, everything).await;
    assert_eq!(everything.resume(), &Resume::Fresh);
    let books = SubscribeRequest::new([]).select([selector("https://example.com/books/{id}")]);
    let mut books = subscribe_with(&*broker, books).await;
    for (topics, data) in [
        (&["https://example.com/books/1"][..], "book 1"),
        (&["https://example.com/films/1"], "film"),
        (&["https://example.com/books/1/reviews"], "review"),
        (&["chat"], "chat"),
        (&["https://example.com/books/2", "chat"], "book 2 in chat"),
        (&["https://example.com/books/3"], "book 3"),
    ] {
        publish(&*broker, topics, data).await;
    }
    assert_eq!(
        data_through(&mut everything, "book 3").await,
        [
            "book 1",
            "film",
            "review",
            "chat",
            "book 2 in chat",
            "book 3"
        ]
    );
    assert_eq!(
        data_through(&mut books, "book 3").await,
        ["book 1", "book 2 in chat", "book 3"]
    );
    nothing_more(&mut books).await;
}

/// A subscriber of a pattern and a topic gets each event once.
pub async fn a_subscriber_of_a_pattern_and_a_topic_gets_each_event_once(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let request = SubscribeRequest::new([topic("news")]).select([selector("books/{id}")]);
    let mut subscription = subscribe_with(&*broker, request).await;
    publish(&*broker, &["books/1", "news"], "named and matched").await;
    publish(&*broker, &["news"], "named").await;
    publish(&*broker, &["books/2"], "matched").await;
    publish(&*broker, &["books/3", "books/4"], "matched twice").await;
    publish(&*broker, &["films/1"], "neither").await;
    publish(&*broker, &["films/2", "news"], "named beside another").await;
    publish(&*broker, &["books/5"], "end").await;
    assert_eq!(
        data_through(&mut subscription, "end").await,
        [
            "named and matched",
            "named",
            "matched",
            "matched twice",
            "named beside another",
            "end"
        ]
    );
    nothing_more(&mut subscription).await;
}

/// A pattern replays after an id or from the earliest in order then goes live.
pub async fn a_pattern_replays_after_an_id_or_from_the_earliest_in_order_then_goes_live(
    make: &impl Factory,
) {
    let broker = make.make(Limits::default()).await;
    let first = publish(&*broker, &["books/1"], "b1").await;
    publish(&*broker, &["films/1"], "f1").await;
    publish(&*broker, &["books/2", "films/2"], "b2").await;
    // Long runs of events the pattern does not match, between those it does: a replay read in
    // pages (of 16 entries in the Redis suite) finds the few it wants among them.
    let mut wanted = vec!["b1".to_owned(), "b2".to_owned()];
    for i in 0..120 {
        if i % 40 == 39 {
            let data = format!("b-{i}");
            publish(&*broker, &[&format!("books/{i}")], &data).await;
            wanted.push(data);
        } else {
            publish(&*broker, &[&format!("noise/{i}")], "noise").await;
        }
    }
    let books = SubscribeRequest::new([]).select([selector("books/{id}")]);
    let mut earliest = subscribe_with(&*broker, books.clone().start(Start::Earliest)).await;
    assert_eq!(earliest.resume(), &Resume::Complete);
    let mut resumed = subscribe_with(&*broker, books.start(Start::After(first.clone()))).await;
    assert_eq!(resumed.resume(), &Resume::Complete);
    // With an exact topic too: one merged replay.
    let mixed = SubscribeRequest::new([topic("films/1")])
        .select([selector("books/{id}")])
        .start(Start::After(first));
    let mut mixed = subscribe_with(&*broker, mixed).await;
    assert_eq!(mixed.resume(), &Resume::Complete);
    publish(&*broker, &["books/live"], "live").await;
    wanted.push("live".to_owned());
    assert_eq!(data_through(&mut earliest, "live").await, wanted);
    assert_eq!(data_through(&mut resumed, "live").await, wanted[1..]);
    let mut expected = vec!["f1".to_owned()];
    expected.extend_from_slice(&wanted[1..]);
    assert_eq!(data_through(&mut mixed, "live").await, expected);
}

/// A pattern replay withholds private events from subscribers without a grant.
pub async fn a_pattern_replay_withholds_private_events_from_subscribers_without_a_grant(
    make: &impl Factory,
) {
    let broker = make.make(Limits::default()).await;
    let start = publish(&*broker, &["users/x"], "start").await;
    for (name, data, private) in [
        ("users/ada", "for ada", true),
        ("users/bob", "for bob", true),
        ("users/bob", "public", false),
    ] {
        let mut request = PublishRequest::new([topic(name)], text(data));
        if private {
            request = request.private();
        }
        broker.publish(&request).await.expect("publish succeeds");
    }
    let users = SubscribeRequest::new([])
        .select([selector("users/{id}")])
        .start(Start::After(start));
    let mut public = subscribe_with(&*broker, users.clone()).await;
    assert_eq!(data_through(&mut public, "public").await, ["public"]);
    let ada = users.grant(Grant::Selectors(Arc::from([selector("users/ada")])));
    let mut ada = subscribe_with(&*broker, ada).await;
    assert_eq!(
        data_through(&mut ada, "public").await,
        ["for ada", "public"]
    );
}

/// A pattern replay past its budget keeps the newest and says so.
pub async fn a_pattern_replay_past_its_budget_keeps_the_newest_and_says_so(make: &impl Factory) {
    let broker = make.make(Limits::default()).await;
    let first = publish(&*broker, &["books/start"], "start").await;
    for i in 0..20 {
        publish(&*broker, &[&format!("books/{i}")], &format!("{i}")).await;
        publish(&*broker, &[&format!("noise/{i}")], "noise").await;
    }
    let request = SubscribeRequest::new([])
        .select([selector("books/{id}")])
        .start(Start::After(first))
        .replay_budget(ReplayBudget::new(5, 1 << 20));
    let mut subscription = subscribe_with(&*broker, request).await;
    assert_eq!(subscription.resume(), &Resume::Expired);
    publish(&*broker, &["books/live"], "live").await;
    assert_eq!(
        data_until(&mut subscription, "live").await,
        ["15", "16", "17", "18", "19", "live"]
    );
}

/// Generates one `#[tokio::test]` per [conformance](crate::conformance) check for the brokers
/// that `$factory` (an expression giving an `Option` of a
/// [`Factory`](crate::conformance::Factory), evaluated in each test; `None` skips) makes. See the
/// [module](crate::conformance) for an example.
#[macro_export]
macro_rules! broker_conformance {
    ($factory:expr) => {
        $crate::broker_conformance!(@tests $factory;
            live_events_arrive_in_publish_order_with_their_ids,
            frames_carry_the_id_line_first,
            fresh_subscription_gets_no_earlier_events,
            other_topics_are_not_delivered,
            resume_replays_every_later_event_then_goes_live,
            resume_after_the_newest_event_replays_nothing,
            event_on_several_topics_reaches_a_subscriber_of_several_once,
            multi_topic_replay_is_merged_in_order_without_duplicates,
            resume_point_older_than_history_is_reported_as_expired,
            unknown_resume_point_is_reported_and_everything_retained_replayed,
            resume_is_gap_free_while_publishers_race_the_subscribe,
            slow_subscriber_is_ended_as_lagged_without_affecting_others,
            lagged_subscriber_resumes_from_history_without_loss,
            publish_and_subscribe_need_a_topic,
            event_published_to_no_subscriber_is_still_retained,
            missed_events_are_reported_even_when_a_topic_kept_no_history,
            an_event_on_several_topics_takes_one_place_in_the_queue,
            earliest_replays_everything_retained_then_goes_live,
            frames_list_every_topic_of_their_event,
            replay_longer_than_a_page_arrives_whole_and_in_order,
            private_events_reach_only_granted_subscribers,
            a_replay_withholds_private_events_from_subscribers_without_a_grant,
            a_retried_publish_with_the_same_key_returns_the_first_id,
            a_subscription_ends_at_its_deadline,
            a_replay_past_its_budget_is_cut_and_the_cut_is_said,
            a_chosen_id_is_kept_and_resumed_after,
            a_chosen_id_already_given_is_refused_and_nothing_published,
            star_and_template_patterns_receive_matching_events_live_and_no_others,
            a_subscriber_of_a_pattern_and_a_topic_gets_each_event_once,
            a_pattern_replays_after_an_id_or_from_the_earliest_in_order_then_goes_live,
            a_pattern_replay_withholds_private_events_from_subscribers_without_a_grant,
            a_pattern_replay_past_its_budget_keeps_the_newest_and_says_so,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                // The factory may be unavailable (a tool missing outside CI): then skip.
                let Some(factory) = $factory else { return };
                $crate::conformance::$name(&factory).await;
            }
        )*
    };
}
