//! `RedisBroker` against real `redis-server`s that each test spawns on a free port: the broker
//! conformance suite, one pub/sub connection per process, resuming on another instance, and
//! what happens when Redis connections fail.

#![cfg(feature = "redis")]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::redis_server::RedisServer;
use futures::StreamExt;
use tower_sse_pubsub::BoxFuture;
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::conformance::{Factory, Limits};
use tower_sse_pubsub::{
    BrokerError, Delivery, Event, EventId, PublishRequest, RedisBroker, Resume, SubscribeRequest,
    Subscription, Topic,
};

/// Brokers on one spawned server, each under its own key prefix.
struct RedisFactory {
    server: RedisServer,
    brokers: AtomicUsize,
}

impl RedisFactory {
    fn start() -> Option<Self> {
        Some(Self {
            server: RedisServer::start()?,
            brokers: AtomicUsize::new(0),
        })
    }
}

impl Factory for RedisFactory {
    fn make(&self, limits: Limits) -> BoxFuture<'_, Arc<dyn Broker>> {
        let prefix = format!("test{}", self.brokers.fetch_add(1, Ordering::SeqCst));
        Box::pin(async move {
            let broker = RedisBroker::builder(self.server.url())
                .key_prefix(prefix)
                .history_per_topic(limits.history_per_topic)
                .subscriber_queue(limits.subscriber_queue)
                // Small pages, so the suite's longer replays are read in several.
                .replay_page(16)
                .build()
                .await
                .expect("broker connects to the test server");
            Arc::new(broker) as Arc<dyn Broker>
        })
    }
}

tower_sse_pubsub::broker_conformance!(RedisFactory::start());

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("valid topic")
}

/// Builds a broker, failing the test if it cannot connect.
async fn connect(builder: tower_sse_pubsub::RedisBrokerBuilder) -> RedisBroker {
    builder.build().await.expect("broker connects")
}

/// A fresh subscription to the topic `feed`.
async fn subscribe_feed(broker: &RedisBroker) -> Subscription {
    broker
        .subscribe(&SubscribeRequest::new([topic("feed")]))
        .await
        .expect("subscribe")
}

async fn broker_on(server: &RedisServer, prefix: &str) -> RedisBroker {
    RedisBroker::builder(server.url())
        .key_prefix(prefix)
        .build()
        .await
        .expect("broker connects")
}

async fn publish(broker: &RedisBroker, name: &str, data: &str) -> EventId {
    broker
        .publish(&PublishRequest::new(
            [topic(name)],
            Event::text(data).expect("valid event"),
        ))
        .await
        .expect("publish succeeds")
}

async fn next_data(subscription: &mut Subscription) -> String {
    let frame = tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a frame in time")
        .expect("the subscription is open")
        .into_event()
        .expect("an event, not a resync");
    let text = std::str::from_utf8(frame.bytes()).expect("UTF-8 frame");
    text.lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data line")
        .to_owned()
}

/// The number of clients of `kind` (`pubsub` or `normal`) connected to `server`.
fn clients(server: &RedisServer, kind: &str) -> usize {
    server
        .command(&["CLIENT", "LIST", "TYPE", kind])
        .lines()
        .filter(|line| line.contains("addr="))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_share_one_pubsub_connection() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = broker_on(&server, "app").await;
    let topics: Vec<Topic> = (0..10).map(|i| topic(&format!("room-{i}"))).collect();
    let mut subscriptions = Vec::new();
    for i in 0..1_000 {
        let subscription = broker
            .subscribe(&SubscribeRequest::new([topics[i % 10].clone()]))
            .await
            .expect("subscribe");
        subscriptions.push(subscription);
    }
    assert_eq!(
        clients(&server, "pubsub"),
        1,
        "one pub/sub connection for all"
    );
    let channels = server.command(&["PUBSUB", "NUMSUB", "app:c:room-0", "app:c:room-9"]);
    assert!(channels.contains("app:c:room-0"), "{channels}");

    for topic in &topics {
        broker
            .publish(&PublishRequest::new(
                [topic.clone()],
                Event::text(topic.as_str()).expect("event"),
            ))
            .await
            .expect("publish");
    }
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        assert_eq!(next_data(subscription).await, format!("room-{}", i % 10));
    }
    // Besides it: the publishing pool (one connection was enough for these sequential
    // publishes), and this check's own.
    let normal = clients(&server, "normal");
    assert!((1..=2).contains(&normal), "{normal} normal connections");

    drop(subscriptions);
    // The dispatcher answers after handling every earlier unsubscribe.
    assert!(broker.subscribed_topics().await.is_empty());
    let remaining = server.command(&["PUBSUB", "CHANNELS", "app:c:*"]);
    assert!(
        remaining.starts_with("*0"),
        "every channel unsubscribed: {remaining}"
    );
    assert_eq!(
        clients(&server, "pubsub"),
        1,
        "the one connection stays, subscribed only to the channel of multi-topic events"
    );
    let numsub = server.command(&["PUBSUB", "NUMSUB", "app:m"]);
    assert!(numsub.contains(":1"), "{numsub}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_instance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let first = broker_on(&server, "shared").await;
    let second = broker_on(&server, "shared").await;

    let mut on_second = second
        .subscribe(&SubscribeRequest::new([topic("news")]))
        .await
        .expect("subscribe");
    let seen = publish(&first, "news", "one").await;
    assert_eq!(
        next_data(&mut on_second).await,
        "one",
        "live across instances"
    );
    drop(on_second);

    publish(&first, "news", "two").await;
    publish(&second, "news", "three").await;
    let mut resumed = second
        .subscribe(&SubscribeRequest::new([topic("news")]).after(Some(&seen).cloned()))
        .await
        .expect("resume");
    assert_eq!(resumed.resume(), &Resume::Complete);
    publish(&first, "news", "four").await;
    let data = [
        next_data(&mut resumed).await,
        next_data(&mut resumed).await,
        next_data(&mut resumed).await,
    ];
    assert_eq!(data, ["two", "three", "four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_restored_without_loss_or_duplicates() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = broker_on(&server, "fault").await;
    let mut subscription = subscribe_feed(&broker).await;
    publish(&broker, "feed", "before").await;
    assert_eq!(next_data(&mut subscription).await, "before");

    let killed = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.starts_with(":1"),
        "one pub/sub connection killed: {killed}"
    );
    // Published while the pub/sub connection is down: these come back from history.
    for i in 0..20 {
        publish(&broker, "feed", &format!("gap {i}")).await;
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(next_data(&mut subscription).await);
    }
    let expected: Vec<String> = (0..20).map(|i| format!("gap {i}")).collect();
    assert_eq!(received, expected, "every event once, in order");
    publish(&broker, "feed", "after").await;
    assert_eq!(next_data(&mut subscription).await, "after", "live again");
    assert_eq!(
        clients(&server, "pubsub"),
        1,
        "reconnected with one connection"
    );
}

async fn next_delivery(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open")
}

/// Reads events until `end`, failing on a resync (`why` says why none may come), and checks
/// they are `expected`: each once, in id order.
async fn receive_each_once_in_order(
    subscription: &mut Subscription,
    end: &EventId,
    expected: &HashSet<EventId>,
    why: &str,
) {
    let mut received = Vec::new();
    loop {
        match next_delivery(subscription).await {
            Delivery::Event(frame) => {
                let last = frame.id() == end;
                received.push(frame);
                if last {
                    break;
                }
            }
            other => panic!("{why}: {other:?}"),
        }
    }
    let ids: HashSet<EventId> = received.iter().map(|f| f.id().clone()).collect();
    assert_eq!(ids.len(), received.len(), "nothing twice");
    assert_eq!(&ids, expected, "nothing lost");
    assert!(
        received
            .windows(2)
            .all(|w| w[0].sequence() < w[1].sequence()),
        "in id order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_keeps_streams_open_and_says_what_was_lost() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("restart")
            .connect_timeout(Duration::from_secs(1)),
    )
    .await;
    let mut subscription = subscribe_feed(&broker).await;
    let before = publish(&broker, "feed", "before").await;
    assert_eq!(next_data(&mut subscription).await, "before");

    server.kill();
    let failed = broker
        .publish(&PublishRequest::new(
            [topic("feed")],
            Event::text("during").expect("event"),
        ))
        .await
        .expect_err("nothing can be stored while Redis is down");
    assert!(
        matches!(failed, BrokerError::Unavailable { .. }),
        "{failed:?}"
    );
    assert!(failed.to_string().contains("retry later"), "{failed}");

    // Back, but empty: it kept nothing on disk.
    server.restart();
    // The stream stays open; it is told that history before the restart is gone.
    assert!(matches!(
        next_delivery(&mut subscription).await,
        Delivery::Resync(Resume::Unknown)
    ));
    publish(&broker, "feed", "after").await;
    assert_eq!(
        next_data(&mut subscription).await,
        "after",
        "delivery resumes"
    );

    // A client resuming from before the restart learns its id is unknown.
    let resumed = broker
        .subscribe(&SubscribeRequest::new([topic("feed")]).after(Some(&before).cloned()))
        .await
        .expect("subscribe after restart");
    assert_eq!(resumed.resume(), &Resume::Unknown);
}

#[tokio::test]
async fn unreachable_redis_at_start_is_a_clear_error() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.kill();
    let error = RedisBroker::builder(server.url())
        .connect_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect_err("nothing listens there");
    let message = error.to_string();
    assert!(
        message.contains(&format!(
            "cannot connect to Redis at redis://127.0.0.1:{}",
            server.port()
        )),
        "{message}"
    );
    // A password in the URL never shows, neither in the error nor in the builder's Debug.
    let url = format!("redis://app:hunter2@127.0.0.1:{}/", server.port());
    let builder = RedisBroker::builder(url).connect_timeout(Duration::from_secs(1));
    assert!(!format!("{builder:?}").contains("hunter2"));
    let error = builder.build().await.expect_err("nothing listens there");
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazily_connected_broker_works_once_redis_comes_up() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.kill();
    let broker = RedisBroker::builder(server.url())
        .key_prefix("lazy")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazily()
        .build()
        .await
        .expect("a lazy broker builds without Redis");
    let error = broker
        .publish(&PublishRequest::new(
            [topic("feed")],
            Event::text("early").expect("event"),
        ))
        .await
        .expect_err("Redis is not there yet");
    assert!(
        matches!(error, BrokerError::Unavailable { .. }),
        "{error:?}"
    );

    server.restart();
    let mut subscription = subscribe_feed(&broker).await;
    publish(&broker, "feed", "now").await;
    assert_eq!(next_data(&mut subscription).await, "now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_pubsub_connection_is_noticed_and_its_gap_filled() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = common::proxy::Proxy::start(([127, 0, 0, 1], server.port()).into()).await;
    // Publishing goes straight to Redis; the pub/sub connection goes through the proxy.
    let health_interval = Duration::from_millis(200);
    let broker = RedisBroker::builder(format!("redis://{}/", proxy.addr()))
        .publish_url(server.url())
        .key_prefix("silent")
        .health_check(health_interval, Duration::from_millis(200))
        .build()
        .await
        .expect("broker connects through the proxy");
    let mut subscription = subscribe_feed(&broker).await;
    publish(&broker, "feed", "before").await;
    assert_eq!(next_data(&mut subscription).await, "before");

    proxy.freeze_open_connections();
    let frozen_at = tokio::time::Instant::now();
    for i in 0..10 {
        publish(&broker, "feed", &format!("unseen {i}")).await;
    }
    let mut received = Vec::new();
    for _ in 0..10 {
        received.push(next_data(&mut subscription).await);
    }
    let recovered_in = frozen_at.elapsed();
    let expected: Vec<String> = (0..10).map(|i| format!("unseen {i}")).collect();
    assert_eq!(received, expected, "filled in from history, in order, once");
    eprintln!("silently dead connection replaced and gap filled in {recovered_in:?}");
    publish(&broker, "feed", "live").await;
    assert_eq!(next_data(&mut subscription).await, "live");
}

async fn hub_on(server: &RedisServer, prefix: &str) -> tower_sse_pubsub::Hub {
    tower_sse_pubsub::Hub::builder()
        .broker(broker_on(server, prefix).await)
        .allow_anonymous_publish()
        .build()
        .expect("valid hub")
}

fn app(hub: &tower_sse_pubsub::Hub) -> axum::Router {
    axum::Router::new().layer(hub.layer())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_instances_share_topics_and_resume_points_over_http() {
    use common::http::{TestServer, next_event, post_form, subscribe};
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (hub_a, hub_b) = (hub_on(&server, "web").await, hub_on(&server, "web").await);
    let instance_a = TestServer::start(&hub_a, app(&hub_a)).await;
    let instance_b = TestServer::start(&hub_b, app(&hub_b)).await;

    let events_on_b = instance_b.url("/events?topic=chat");
    let mut on_b = subscribe(&events_on_b, None).await;
    let (status, id) = post_form(&instance_a.url("/publish"), "topic=chat&data=one").await;
    assert_eq!(status, http::StatusCode::OK);
    let event = next_event(&mut on_b).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "one")
    );
    drop(on_b);

    post_form(&instance_a.url("/publish"), "topic=chat&data=two").await;
    post_form(&instance_b.url("/publish"), "topic=chat&data=three").await;
    // The browser reconnects to the other instance with the id it saw on the first.
    let mut resumed = subscribe(&instance_a.url("/events?topic=chat"), Some(&id)).await;
    post_form(&instance_b.url("/publish"), "topic=chat&data=four").await;
    let data = [
        next_event(&mut resumed).await.data,
        next_event(&mut resumed).await.data,
        next_event(&mut resumed).await.data,
    ];
    assert_eq!(data, ["two", "three", "four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_reaches_browsers_as_a_resync_event_in_the_open_stream() {
    use common::http::{TestServer, next_event, post_form, subscribe};
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let hub = hub_on(&server, "web").await;
    let instance = TestServer::start(&hub, app(&hub)).await;
    let mut events = subscribe(&instance.url("/events?topic=chat"), None).await;
    post_form(&instance.url("/publish"), "topic=chat&data=before").await;
    let before = next_event(&mut events).await;
    assert_eq!(before.data, "before");

    server.kill();
    let (status, reason) = post_form(&instance.url("/publish"), "topic=chat&data=lost").await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE, "{reason}");
    assert!(reason.contains("Redis"), "{reason}");
    server.restart();
    let notice = next_event(&mut events).await;
    assert_eq!(notice.event, "resync");
    assert!(
        notice.data.contains(r#""reason":"unknown""#),
        "{}",
        notice.data
    );
    // It names the last event the stream delivered, so the page knows where it lost track.
    assert!(
        notice
            .data
            .contains(&format!(r#""lastEventId":"{}""#, before.id)),
        "{}",
        notice.data
    );
    // The parser reports the last id it saw: the notice carried none, so it did not move.
    assert_eq!(
        notice.id, before.id,
        "a notice never moves the client's resume point"
    );
    let (status, _) = post_form(&instance.url("/publish"), "topic=chat&data=after").await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(next_event(&mut events).await.data, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_noticed_and_delivery_resumes_without_loss() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("paused")
            .connect_timeout(Duration::from_millis(500))
            .health_check(Duration::from_millis(100), Duration::from_millis(100)),
    )
    .await;
    let mut subscription = subscribe_feed(&broker).await;
    publish(&broker, "feed", "before").await;
    assert_eq!(next_data(&mut subscription).await, "before");

    server.pause();
    // The outage itself: long enough for several health checks to fail.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let failed = broker
        .publish(&PublishRequest::new(
            [topic("feed")],
            Event::text("during").expect("event"),
        ))
        .await;
    assert!(
        failed.is_err(),
        "a publish Redis cannot confirm is an error"
    );
    server.resume();

    publish(&broker, "feed", "after").await;
    // "during" may or may not have been stored before its timeout fired; either way nothing
    // is delivered twice or out of order, and "after" arrives.
    let mut data = next_data(&mut subscription).await;
    if data == "during" {
        data = next_data(&mut subscription).await;
    }
    assert_eq!(data, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_older_than_the_age_limit_is_neither_kept_nor_replayed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let age = Duration::from_millis(300);
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("aged")
            .history_max_age(age),
    )
    .await;
    let start = publish(&broker, "busy", "start").await;
    publish(&broker, "busy", "old").await;
    let quiet_start = publish(&broker, "quiet", "start").await;
    publish(&broker, "quiet", "old").await;
    // Let the events age past the limit: the passing of time is the condition under test.
    tokio::time::sleep(age + Duration::from_millis(100)).await;

    // A publish trims what aged out of its topic.
    publish(&broker, "busy", "new").await;
    let length = server.command(&["XLEN", "aged:h:busy"]);
    assert!(
        length.starts_with(":1"),
        "only the new event is kept: {length}"
    );
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("busy")]).after(Some(&start).cloned()))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Expired);
    assert_eq!(next_data(&mut resumed).await, "new");

    // A quiet topic still holds its old events, but they are too old to replay.
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("quiet")]).after(Some(&quiet_start).cloned()))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Expired);
    publish(&broker, "quiet", "fresh").await;
    assert_eq!(next_data(&mut resumed).await, "fresh", "nothing replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_of_many_topics_loses_nothing_when_its_connection_dies_under_load() {
    use std::collections::HashSet;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 300;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("many")
            .subscriber_queue(100_000),
    )
    .await;
    let topics: Vec<Topic> = (0..30).map(|i| topic(&format!("t{i}"))).collect();
    let mut subscription = broker
        .subscribe(&SubscribeRequest::new(topics.iter().cloned()))
        .await
        .expect("subscribe");

    // Kill the pub/sub connection once the publishers are well under way.
    let published = Arc::new(AtomicUsize::new(0));
    let under_way = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (broker, topics) = (broker.clone(), topics.clone());
        let (published, under_way) = (published.clone(), under_way.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let target = std::slice::from_ref(&topics[(i * 7 + p) % topics.len()]);
                let event = Event::text(format!("p{p} {i}")).expect("event");
                ids.push(
                    broker
                        .publish(&PublishRequest::new(target.iter().cloned(), event.clone()))
                        .await
                        .expect("publish"),
                );
                if published.fetch_add(1, Ordering::SeqCst) == PUBLISHERS * EACH / 4 {
                    under_way.notify_one();
                }
            }
            ids
        }));
    }
    under_way.notified().await;
    let killed = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.starts_with(":1"), "{killed}");
    let mut expected = HashSet::new();
    for task in tasks {
        expected.extend(task.await.expect("publisher"));
    }
    let end = publish(&broker, "t0", "end").await;
    expected.insert(end.clone());

    receive_each_once_in_order(
        &mut subscription,
        &end,
        &expected,
        "no resync is needed when history holds everything",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_from_an_older_snapshot_never_reissues_ids() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("snapshot")
            .connect_timeout(Duration::from_secs(1)),
    )
    .await;
    let mut subscription = subscribe_feed(&broker).await;
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(publish(&broker, "feed", &format!("old {i}")).await);
    }
    assert!(server.command(&["SAVE"]).contains("OK"));
    for i in 3..6 {
        before.push(publish(&broker, "feed", &format!("old {i}")).await);
    }
    for _ in 0..6 {
        next_data(&mut subscription).await;
    }
    // A crash, and Redis comes back from the snapshot: three events behind.
    server.restart();
    // A publish on a connection that died with the old server fails ("retry later"), as a
    // client would retry it; the retry runs on a new connection.
    let request = PublishRequest::new([topic("feed")], Event::text("new").expect("valid event"));
    let after = match broker.publish(&request).await {
        Ok(id) => id,
        Err(_) => broker.publish(&request).await.expect("the retry succeeds"),
    };
    assert!(
        !before.contains(&after),
        "{after} was issued before the restart too"
    );

    assert!(matches!(
        next_delivery(&mut subscription).await,
        Delivery::Resync(Resume::Unknown)
    ));
    assert_eq!(next_data(&mut subscription).await, "new");
    let last_seen = before.last().expect("published");
    let resumed = broker
        .subscribe(&SubscribeRequest::new([topic("feed")]).after(Some(last_seen).cloned()))
        .await
        .expect("subscribe");
    assert_eq!(
        resumed.resume(),
        &Resume::Unknown,
        "never told its resume was complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_replaces_a_silently_dead_connection_for_its_next_subscriber() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = common::proxy::Proxy::start(([127, 0, 0, 1], server.port()).into()).await;
    let broker = RedisBroker::builder(format!("redis://{}/", proxy.addr()))
        .publish_url(server.url())
        .key_prefix("idle")
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("broker connects through the proxy");
    drop(
        broker
            .subscribe(&SubscribeRequest::new([topic("warm")]))
            .await
            .expect("subscribe"),
    );
    assert!(broker.subscribed_topics().await.is_empty());

    proxy.freeze_open_connections();
    // The first subscriber may find the connection dead (it then fails with 503 and the
    // connection is replaced); the next one gets through.
    if broker
        .subscribe(&SubscribeRequest::new([topic("feed")]))
        .await
        .is_err()
    {
        eprintln!("first subscribe after the freeze failed, as it may");
    }
    let mut subscription = broker
        .subscribe(&SubscribeRequest::new([topic("feed")]))
        .await
        .expect("a replaced connection serves the next subscriber");
    publish(&broker, "feed", "hello").await;
    assert_eq!(next_data(&mut subscription).await, "hello");
}

/// How often the server has run `command` (lowercase), scripts included.
fn calls_of(server: &RedisServer, command: &str) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_does_not_ask_the_server_for_info_each_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = broker_on(&server, "info").await;
    publish(&broker, "feed", "warm up").await;
    let before = calls_of(&server, "info");
    for i in 0..50 {
        publish(&broker, "feed", &i.to_string()).await;
    }
    let calls = calls_of(&server, "info") - before;
    // Only a new pooled connection asks (once); 50 sequential publishes share one.
    assert!(calls <= 1, "INFO ran {calls} times for 50 publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_message_queue_is_filled_from_history_without_loss() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A queue of 2 messages overflows under any burst.
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("burst")
            .push_queue(2),
    )
    .await;
    let mut subscription = subscribe_feed(&broker).await;
    let mut published = Vec::new();
    // Bursts from concurrent publishers until the dispatcher has fallen behind at least once.
    for _round in 0..20 {
        let bursts: Vec<_> = (0..4)
            .map(|p| {
                let broker = broker.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..50 {
                        ids.push(publish(&broker, "feed", &format!("{p}-{i}")).await);
                    }
                    ids
                })
            })
            .collect();
        for burst in bursts {
            published.extend(burst.await.expect("publisher"));
        }
        if broker.gap_fills() > 0 {
            break;
        }
    }
    assert!(broker.gap_fills() > 0, "the queue never overflowed");
    let end = publish(&broker, "feed", "end").await;
    published.push(end);
    let mut received = Vec::new();
    while received.len() < published.len() {
        let frame = next_delivery(&mut subscription)
            .await
            .into_event()
            .expect("an event, not a resync: nothing was lost");
        received.push(frame.id().clone());
    }
    let mut expected = published.clone();
    expected.sort_by_key(|id| {
        id.as_str()
            .rsplit_once('-')
            .and_then(|(_, s)| s.parse::<u64>().ok())
            .unwrap_or(0)
    });
    assert_eq!(received, expected, "every event once, in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_with_fifty_thousand_channels_fills_the_gap() {
    const TOPICS: usize = 50_000;
    const PER_SUBSCRIBER: usize = 1_000;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = broker_on(&server, "many").await;
    let names: Vec<Topic> = (0..TOPICS).map(|i| topic(&format!("t{i}"))).collect();
    let mut subscriptions = Vec::new();
    for chunk in names.chunks(PER_SUBSCRIBER) {
        let request = SubscribeRequest::new(chunk.iter().cloned());
        subscriptions.push(broker.subscribe(&request).await.expect("subscribe"));
    }
    assert_eq!(broker.subscribed_topics().await.len(), TOPICS);
    let fills = broker.gap_fills();

    server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    // Published while the connection is down or being rebuilt: one event per subscriber,
    // spread over its topics.
    let mut ids = Vec::new();
    for (i, _) in subscriptions.iter().enumerate() {
        let name = format!("t{}", i * PER_SUBSCRIBER + i % PER_SUBSCRIBER);
        ids.push(publish(&broker, &name, &format!("gap {i}")).await);
    }
    for (i, subscription) in subscriptions.iter_mut().enumerate() {
        let frame = next_delivery(subscription)
            .await
            .into_event()
            .expect("an event, not a resync");
        assert_eq!(frame.id(), &ids[i], "subscriber {i}");
    }
    assert!(broker.gap_fills() > fills, "a recovery ran");
    let channels = server.command(&["PUBSUB", "NUMSUB", "many:c:t49999"]);
    assert!(channels.contains(":1"), "resubscribed: {channels}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_several_topics_crosses_redis_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = broker_on(&server, "once").await;
    let mut on_c = broker
        .subscribe(&SubscribeRequest::new([topic("c")]))
        .await
        .expect("subscribe");
    let before = calls_of(&server, "publish");
    let request = PublishRequest::new(
        [topic("a"), topic("b"), topic("c")],
        Event::text("three topics").expect("valid event"),
    );
    broker.publish(&request).await.expect("publish");
    assert_eq!(
        calls_of(&server, "publish") - before,
        1,
        "one message for three topics"
    );
    let frame = next_delivery(&mut on_c)
        .await
        .into_event()
        .expect("an event");
    let names: Vec<&str> = frame.topics().iter().map(Topic::as_str).collect();
    assert_eq!(names, ["a", "b", "c"]);
}

/// The integer reply of a command (`:N`).
fn integer(server: &RedisServer, args: &[&str]) -> i64 {
    let reply = server.command(args);
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("an integer reply to {args:?}, got {reply:?}"))
}

/// What Redis spends on one topic: its history and its size counter.
fn topic_memory(server: &RedisServer, prefix: &str, topic: &str) -> i64 {
    let history = format!("{prefix}:h:{topic}");
    let size = format!("{prefix}:s:{topic}");
    integer(server, &["MEMORY", "USAGE", &history, "SAMPLES", "0"])
        + integer(server, &["MEMORY", "USAGE", &size, "SAMPLES", "0"])
}

/// The bound the README states for one topic's Redis memory.
fn stated_topic_bound(history_bytes: usize, history_events: usize) -> i64 {
    (history_bytes + history_bytes / 2 + 128 * history_events + 5 * 1024) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_in_bytes_and_redis_memory_stays_within_the_stated_bound() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let per_topic_bytes = 256 * 1024;
    let events = 500;
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("bytes")
            .history_per_topic(events)
            .history_bytes_per_topic(per_topic_bytes),
    )
    .await;
    // From events so small that the count limit binds, to events so large that few fit. Each
    // topic gets more than a full history: 2.4 MB for the 8 KiB events.
    for size in [1, 100, 1000, 2000, 4000, 4100, 8 * 1024, 60 * 1024] {
        let name = format!("s{size}");
        let data = "x".repeat(size);
        let first = publish(&broker, &name, &data).await;
        let count = (3 * per_topic_bytes / size).clamp(events + 100, 800);
        for _ in 1..count {
            publish(&broker, &name, &data).await;
        }
        let kept = integer(&server, &["XLEN", &format!("bytes:h:{name}")]);
        let counted: usize = server
            .command(&["GET", &format!("bytes:s:{name}")])
            .lines()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a size");
        assert!(counted <= per_topic_bytes, "{size} B events: {counted}");
        assert!(kept as usize <= events, "{size} B events: {kept}");
        let memory = topic_memory(&server, "bytes", &name);
        eprintln!(
            "{size} B events: {kept} kept, {counted} B counted, {memory} B of Redis memory \
             ({:.2}x counted)",
            memory as f64 / counted as f64
        );
        assert!(
            memory <= stated_topic_bound(per_topic_bytes, events),
            "{size} B events: {memory} B over the bound"
        );
        // The trimmed events are recorded: a client resuming from the first hears it missed some.
        let resumed = broker
            .subscribe(&SubscribeRequest::new([topic(&name)]).after(Some(first)))
            .await
            .expect("subscribe");
        assert_eq!(resumed.resume(), &Resume::Expired, "{size} B events");
    }
    // The fixed part, what a flood of unique topics pays per topic: Redis preallocates 4 KiB
    // for a stream's first node.
    publish(&broker, "lonely", "x").await;
    let lonely = topic_memory(&server, "bytes", "lonely");
    eprintln!("one event of 1 B: {lonely} B of Redis memory");
    assert!(lonely <= 6 * 1024, "{lonely}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_topic_expires_and_a_resume_across_the_expiry_hears_it_missed_events() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let expiry = Duration::from_millis(300);
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("idle")
            .history_idle_expiry(expiry),
    )
    .await;
    let before = publish(&broker, "other", "x").await;
    let gone = publish(&broker, "a", "will expire").await;
    let ttl = integer(&server, &["PTTL", "idle:h:a"]);
    assert!(ttl > 0 && ttl <= 300, "the history expires: {ttl}");
    let ttl = integer(&server, &["PTTL", "idle:s:a"]);
    assert!(ttl > 0 && ttl <= 300, "and so does its size: {ttl}");
    // Wait for Redis to expire the key (the passage of time is what is under test).
    let started = std::time::Instant::now();
    while integer(&server, &["EXISTS", "idle:h:a"]) == 1 {
        assert!(started.elapsed() < WAIT, "the history did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(integer(&server, &["EXISTS", "idle:s:a"]), 0);

    // The key is gone, and with it the record of what it held: the expiry floor still says
    // that a client which last saw an event before it missed some.
    let resumed = broker
        .subscribe(&SubscribeRequest::new([topic("a")]).after(Some(before.clone())))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Expired);

    // A new publish makes the history afresh, and it too remembers the floor...
    publish(&broker, "a", "new").await;
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("a")]).after(Some(before)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Expired);
    assert_eq!(next_data(&mut resumed).await, "new");
    // ...while a client that saw the expired event has missed nothing.
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("a")]).after(Some(gone)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Complete);
    assert_eq!(next_data(&mut resumed).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_many_topics_reads_them_evenly_a_page_at_a_time() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("even")
            .replay_page(64),
    )
    .await;
    // 32 topics published to in turn, 20 rounds: the merged replay interleaves them all.
    let names: Vec<String> = (0..32).map(|i| format!("t{i}")).collect();
    let first = publish(&broker, "t0", "first").await;
    for round in 0..20 {
        for name in &names {
            publish(&broker, name, &format!("{round}")).await;
        }
    }
    let before = calls_of(&server, "evalsha");
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new(names.iter().map(|n| topic(n))).after(Some(first)))
        .await
        .expect("subscribe");
    for _ in 0..(32 * 20) {
        next_data(&mut resumed).await;
    }
    let reads = calls_of(&server, "evalsha") - before;
    // 640 events at 64 per read (two per topic): about ten reads. Reading one topic's page at
    // a time while the others wait would take hundreds, and hold every topic's page at once.
    assert!(reads <= 15, "{reads} reads for 640 events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_events_too_old_to_replay_does_not_hide_the_young_ones_after_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let age = Duration::from_millis(300);
    // Two topics share a page of 4: two entries each per read.
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("aged-page")
            .history_max_age(age)
            .replay_page(4),
    )
    .await;
    let first = publish(&broker, "a", "first").await;
    for i in 0..20 {
        publish(&broker, "a", &format!("old{i}")).await;
    }
    // The passing of time is the condition under test: the first events age past the limit
    // while the later ones are still young, and no publish trims them in between.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..5 {
        publish(&broker, "a", &format!("young{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("a"), topic("b")]).after(Some(first)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Expired);
    publish(&broker, "b", "live").await;
    for expected in ["young0", "young1", "young2", "young3", "young4", "live"] {
        assert_eq!(next_data(&mut resumed).await, expected);
    }
}

fn selector(text: &str) -> tower_sse_pubsub::Selector {
    tower_sse_pubsub::Selector::new(text).expect("valid selector")
}

/// A subscription to every topic `pattern` matches, from `start`.
async fn subscribe_pattern(
    broker: &RedisBroker,
    pattern: &str,
    start: tower_sse_pubsub::Start,
) -> Subscription {
    broker
        .subscribe(
            &SubscribeRequest::new([])
                .select([selector(pattern)])
                .start(start),
        )
        .await
        .expect("subscribe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_a_chosen_id_on_another_instance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let first = broker_on(&server, "chosen").await;
    let second = broker_on(&server, "chosen").await;
    publish(&first, "books/1", "before").await;
    let chosen = EventId::new("urn:uuid:5bd5b2a3-5f2c-4a36-9c7e-0e0f6b0f1a2d").expect("valid id");
    let request = PublishRequest::new([topic("books/1")], Event::text("chosen").expect("event"))
        .id(chosen.clone());
    assert_eq!(first.publish(&request).await.expect("publish"), chosen);
    publish(&first, "books/1", "after").await;
    publish(&second, "books/1", "after, on the second").await;

    // The second instance never saw the event live: it places the id through Redis.
    let mut resumed = second
        .subscribe(&SubscribeRequest::new([topic("books/1")]).after(Some(chosen.clone())))
        .await
        .expect("resume");
    assert_eq!(resumed.resume(), &Resume::Complete);
    assert_eq!(next_data(&mut resumed).await, "after");
    assert_eq!(next_data(&mut resumed).await, "after, on the second");

    // Remembered in Redis, so the other instance refuses it too.
    let again = PublishRequest::new([topic("books/2")], Event::text("again").expect("event"))
        .id(chosen.clone());
    assert!(matches!(
        second.publish(&again).await,
        Err(BrokerError::DuplicateId(id)) if id == chosen
    ));
    // And it expires with the histories.
    let key = format!("chosen:i:{chosen}");
    let ttl = integer(&server, &["PTTL", &key]);
    assert!(
        ttl > 0 && ttl <= 24 * 60 * 60 * 1000,
        "the remembered id expires: {ttl}"
    );

    // With an idempotency key as well, the key comes first: a retry returns the chosen id
    // instead of being refused as a duplicate.
    let keyed = PublishRequest::new([topic("books/3")], Event::text("keyed").expect("event"))
        .id(EventId::new("books/3#rev-1").expect("valid id"))
        .idempotency_key(tower_sse_pubsub::IdempotencyKey::new("books-3-rev-1").expect("key"));
    let id = first.publish(&keyed).await.expect("publish");
    assert_eq!(id.as_str(), "books/3#rev-1");
    assert_eq!(second.publish(&keyed).await.expect("the retry"), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscriber_on_one_instance_receives_events_published_on_another() {
    use tower_sse_pubsub::Start;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let publisher = broker_on(&server, "wild").await;
    let reader = broker_on(&server, "wild").await;
    let mut books = subscribe_pattern(&reader, "https://example.com/books/{id}", Start::Live).await;
    let mut everything = subscribe_pattern(&reader, "*", Start::Live).await;
    assert_eq!(
        integer(&server, &["PUBSUB", "NUMPAT"]),
        1,
        "one wildcard feed for both"
    );
    publish(&publisher, "https://example.com/films/1", "film").await;
    publish(&publisher, "https://example.com/books/1", "book").await;
    assert_eq!(next_data(&mut books).await, "book");
    assert_eq!(next_data(&mut everything).await, "film");
    assert_eq!(next_data(&mut everything).await, "book");

    drop(books);
    drop(everything);
    // Answered after the dispatcher has sent every earlier command, the PUNSUBSCRIBE included.
    reader.subscribed_topics().await;
    assert_eq!(
        integer(&server, &["PUBSUB", "NUMPAT"]),
        0,
        "the wildcard feed goes with its last subscriber"
    );
    // And comes back with the next.
    let mut again = subscribe_pattern(&reader, "*", Start::Live).await;
    publish(&publisher, "anything", "again").await;
    assert_eq!(next_data(&mut again).await, "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wildcard_feed_survives_a_killed_connection_without_loss() {
    use tower_sse_pubsub::Start;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = broker_on(&server, "wildfault").await;
    let mut books = subscribe_pattern(&broker, "books/{id}", Start::Live).await;
    let mut feed = subscribe_feed(&broker).await;
    publish(&broker, "books/0", "before").await;
    assert_eq!(next_data(&mut books).await, "before");
    let fills = broker.gap_fills();

    let killed = server.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.starts_with(":1"), "{killed}");
    // Published while the connection is down or being rebuilt: these come back from the
    // histories, the global one for the pattern reader.
    let mut expected = Vec::new();
    for i in 0..20 {
        let data = format!("gap {i}");
        publish(&broker, &format!("books/{i}"), &data).await;
        expected.push(data);
        publish(&broker, "feed", &format!("feed {i}")).await;
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(next_data(&mut books).await);
    }
    assert_eq!(received, expected, "every event once, in order");
    for i in 0..20 {
        assert_eq!(next_data(&mut feed).await, format!("feed {i}"));
    }
    publish(&broker, "books/live", "live").await;
    assert_eq!(next_data(&mut books).await, "live", "live again");
    assert_eq!(integer(&server, &["PUBSUB", "NUMPAT"]), 1, "resubscribed");
    assert!(broker.gap_fills() > fills, "a recovery ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_readers_gap_is_filled_from_the_global_history_or_said_to_be_lost() {
    use tower_sse_pubsub::Start;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let proxy = common::proxy::Proxy::start(([127, 0, 0, 1], server.port()).into()).await;
    let broker = RedisBroker::builder(format!("redis://{}/", proxy.addr()))
        .publish_url(server.url())
        .key_prefix("outran")
        .pattern_history(3)
        .health_check(Duration::from_millis(200), Duration::from_millis(200))
        .build()
        .await
        .expect("broker connects through the proxy");
    let mut books = subscribe_pattern(&broker, "books/{id}", Start::Live).await;
    let mut feed = subscribe_feed(&broker).await;
    publish(&broker, "books/0", "before").await;
    assert_eq!(next_data(&mut books).await, "before");

    // Nothing reaches this process until the health check replaces the connection. A gap the
    // global history still holds is filled from it: no resync.
    proxy.freeze_open_connections();
    publish(&broker, "books/1", "held 1").await;
    publish(&broker, "books/2", "held 2").await;
    assert_eq!(next_data(&mut books).await, "held 1");
    assert_eq!(next_data(&mut books).await, "held 2");

    // A longer gap than it holds.
    proxy.freeze_open_connections();
    for i in 0..10 {
        publish(&broker, &format!("books/{i}"), &format!("b{i}")).await;
    }
    publish(&broker, "feed", "f").await;
    // The global history kept the last three events (b8, b9, f): the pattern reader hears it
    // missed some, then gets what is left.
    assert!(matches!(
        next_delivery(&mut books).await,
        Delivery::Resync(Resume::Expired)
    ));
    assert_eq!(next_data(&mut books).await, "b8");
    assert_eq!(next_data(&mut books).await, "b9");
    // The topic's own history held its gap: no resync for it.
    assert_eq!(next_data(&mut feed).await, "f");
    publish(&broker, "books/live", "live").await;
    assert_eq!(next_data(&mut books).await, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_global_history_patterns_are_live_only_and_resumes_say_what_they_missed() {
    use tower_sse_pubsub::Start;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("nopattern")
            .pattern_history(0),
    )
    .await;
    let mut live = subscribe_pattern(&broker, "books/{id}", Start::Live).await;
    let first = publish(&broker, "books/1", "one").await;
    assert_eq!(next_data(&mut live).await, "one");
    let last = publish(&broker, "books/2", "two").await;
    assert_eq!(
        integer(&server, &["EXISTS", "nopattern:g"]),
        0,
        "no global history"
    );

    let mut resumed = subscribe_pattern(&broker, "books/{id}", Start::After(first)).await;
    assert_eq!(resumed.resume(), &Resume::Expired, "it missed \"two\"");
    let mut current = subscribe_pattern(&broker, "books/{id}", Start::After(last)).await;
    assert_eq!(current.resume(), &Resume::Complete, "it missed nothing");
    publish(&broker, "books/3", "three").await;
    assert_eq!(next_data(&mut resumed).await, "three", "nothing replayed");
    assert_eq!(next_data(&mut current).await, "three");
}

/// Pattern subscribers come and go (so the wildcard feed is PSUBSCRIBEd and PUNSUBSCRIBEd over
/// and over) while a topic reader's channel is subscribed and publishers run: the topic reader
/// gets every event once and in order, whether it came by SUBSCRIBE, PSUBSCRIBE or both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wildcard_feed_coming_and_going_never_duplicates_or_reorders_a_topic_readers_events() {
    use std::collections::HashSet;
    use tower_sse_pubsub::Start;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 200;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("churn")
            .subscriber_queue(100_000),
    )
    .await;
    let topics: Vec<Topic> = (0..5).map(|i| topic(&format!("t{i}"))).collect();
    let mut reader = broker
        .subscribe(&SubscribeRequest::new(topics.iter().cloned()))
        .await
        .expect("subscribe");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (broker, done) = (broker.clone(), done.clone());
        tokio::spawn(async move {
            let mut toggles = 0;
            while !done.load(Ordering::SeqCst) {
                drop(subscribe_pattern(&broker, "t{n}", Start::Live).await);
                toggles += 1;
            }
            toggles
        })
    };
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (broker, topics) = (broker.clone(), topics.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EACH);
            for i in 0..EACH {
                let target = topics[(i + p) % topics.len()].clone();
                let event = Event::text(format!("p{p} {i}")).expect("event");
                ids.push(
                    broker
                        .publish(&PublishRequest::new([target], event))
                        .await
                        .expect("publish"),
                );
            }
            ids
        }));
    }
    let mut expected = HashSet::new();
    for task in tasks {
        expected.extend(task.await.expect("publisher"));
    }
    done.store(true, Ordering::SeqCst);
    let toggles = churn.await.expect("churn task");
    assert!(toggles > 1, "the wildcard feed came and went ({toggles})");
    let end = publish(&broker, "t0", "end").await;
    expected.insert(end.clone());
    receive_each_once_in_order(
        &mut reader,
        &end,
        &expected,
        "nothing was lost, so no resync",
    )
    .await;
}

/// A topic reader and a pattern reader of the same topics in one process, under concurrent
/// publishers: each event reaches this process twice (by SUBSCRIBE and by PSUBSCRIBE) and each
/// reader gets it once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_and_pattern_readers_side_by_side_get_each_event_once_in_order() {
    use tower_sse_pubsub::Start;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 200;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let broker = connect(
        RedisBroker::builder(server.url())
            .key_prefix("sidebyside")
            .subscriber_queue(100_000),
    )
    .await;
    let topics: Vec<Topic> = (0..5).map(|i| topic(&format!("t{i}"))).collect();
    let mut exact = broker
        .subscribe(&SubscribeRequest::new(topics.iter().cloned()))
        .await
        .expect("subscribe");
    let mut pattern = subscribe_pattern(&broker, "t{n}", Start::Live).await;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (broker, topics) = (broker.clone(), topics.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                let target = topics[(i + p) % topics.len()].clone();
                let event = Event::text(format!("p{p} {i}")).expect("event");
                broker
                    .publish(&PublishRequest::new([target], event))
                    .await
                    .expect("publish");
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    let end = publish(&broker, "t0", "end").await;
    for reader in [&mut exact, &mut pattern] {
        let mut sequences = Vec::new();
        loop {
            let frame = next_delivery(reader)
                .await
                .into_event()
                .expect("an event, not a resync");
            sequences.push(frame.sequence());
            if frame.id() == &end {
                break;
            }
        }
        assert_eq!(sequences.len(), PUBLISHERS * EACH + 1, "each event once");
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "in order");
    }
}

/// The Redis time of one publish script (`INFO commandstats`), with and without the global
/// history and a chosen id: 20 topics at their trimming bounds, 200-byte events, medians of 5
/// rounds, and the commands the script calls per publish (their calls and their own Redis time,
/// without the cost of calling them from Lua; from the last round). A measurement, not a check;
/// run it in release on a quiet machine:
/// `cargo test --release --features redis --test redis_broker -- --ignored --nocapture publish_script_cost`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement; run on demand"]
async fn publish_script_cost_with_and_without_the_global_history() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Every command's calls and Redis time so far.
    let stats = || -> std::collections::BTreeMap<String, (f64, f64)> {
        server
            .command(&["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |name: &str| {
                    rest.split(',')
                        .find_map(|f| f.strip_prefix(name))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                };
                Some((name.to_owned(), (field("calls=")?, field("usec=")?)))
            })
            .collect()
    };
    let evalsha = |stats: &std::collections::BTreeMap<String, (f64, f64)>| {
        stats.get("evalsha").copied().unwrap_or((0.0, 0.0))
    };
    let configurations = [
        ("without the global history", 0, false),
        ("with the global history", 10_000, false),
        ("without, chosen ids", 0, true),
        ("with, chosen ids", 10_000, true),
    ];
    let mut rounds = vec![Vec::new(); configurations.len()];
    let mut inner = vec![String::new(); configurations.len()];
    // Interleaved, so a machine that slows down meanwhile slows every configuration alike.
    for round in 0..5 {
        for (c, &(_, pattern_history, chosen)) in configurations.iter().enumerate() {
            server.command(&["FLUSHALL"]);
            let broker = connect(
                RedisBroker::builder(server.url())
                    .key_prefix(format!("cost{round}"))
                    .pattern_history(pattern_history),
            )
            .await;
            let publish = |i: usize, prefix: &str| {
                let mut request = PublishRequest::new(
                    [topic(&format!("t{}", i % 20))],
                    Event::text("x".repeat(200)).expect("event"),
                );
                if chosen {
                    request = request.id(EventId::new(format!("{prefix}{i}")).expect("id"));
                }
                request
            };
            // Past every bound first, so each publish trims as in steady state.
            for i in 0..22_000 {
                broker.publish(&publish(i, "warm")).await.expect("publish");
            }
            let before = stats();
            for i in 0..10_000 {
                broker
                    .publish(&publish(i, "measured"))
                    .await
                    .expect("publish");
            }
            let after = stats();
            let ((calls, usec), (calls_after, usec_after)) = (evalsha(&before), evalsha(&after));
            let publishes = calls_after - calls;
            rounds[c].push((usec_after - usec) / publishes);
            inner[c] = after
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "evalsha" | "info" | "ping"))
                .filter_map(|(name, &(calls, usec))| {
                    let (calls_before, usec_before) =
                        before.get(name).copied().unwrap_or((0.0, 0.0));
                    let per_publish = (calls - calls_before) / publishes;
                    (per_publish >= 0.005).then(|| {
                        format!(
                            "{name} {per_publish:.2}x {:.1} µs",
                            (usec - usec_before) / publishes
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(", ");
        }
    }
    let mut medians = Vec::new();
    for (((name, _, _), mut times), inner) in configurations.iter().zip(rounds).zip(inner) {
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: {:.1} µs of Redis time per publish (median; {times:.1?})",
            times[2]
        );
        eprintln!("  calls per publish: {inner}");
        medians.push(times[2]);
    }
    assert!(medians.iter().all(|m| *m > 0.0));
}
