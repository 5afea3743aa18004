//! `NatsBroker` against real `nats-server`s (JetStream) that each test spawns on a free port:
//! the broker conformance suite, ids, chosen ids and idempotent publishes across instances,
//! and what happens when the server goes away.

#![cfg(feature = "nats")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::nats_server::NatsServer;
use futures::StreamExt;
use tower_sse_pubsub::BoxFuture;
use tower_sse_pubsub::broker::Broker;
use tower_sse_pubsub::conformance::{Factory, Limits};
use tower_sse_pubsub::{
    BrokerError, Delivery, Event, EventId, IdempotencyKey, NatsBroker, PublishRequest, Resume,
    Selector, Start, SubscribeRequest, Subscription, Topic,
};

/// Brokers on one spawned server, each on its own stream and subject prefix.
struct NatsFactory {
    server: NatsServer,
    brokers: AtomicUsize,
}

impl NatsFactory {
    fn start() -> Option<Self> {
        Some(Self {
            server: NatsServer::start()?,
            brokers: AtomicUsize::new(0),
        })
    }
}

impl Factory for NatsFactory {
    fn make(&self, limits: Limits) -> BoxFuture<'_, Arc<dyn Broker>> {
        let n = self.brokers.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let broker = NatsBroker::builder([self.server.url()])
                .stream_name(format!("TEST{n}"))
                .subject_prefix(format!("test{n}"))
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

tower_sse_pubsub::broker_conformance!(NatsFactory::start());

const WAIT: Duration = Duration::from_secs(10);

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("valid topic")
}

async fn broker_on(server: &NatsServer, stream: &str, memory: bool) -> NatsBroker {
    let mut builder = NatsBroker::builder([server.url()])
        .stream_name(stream)
        .subject_prefix(stream.to_lowercase())
        .health_check(Duration::from_millis(100))
        .timeout(Duration::from_secs(2));
    if memory {
        builder = builder.memory_storage();
    }
    builder.build().await.expect("broker connects")
}

async fn publish(broker: &dyn Broker, topic_name: &str, data: &str) -> EventId {
    broker
        .publish(&PublishRequest::new(
            [topic(topic_name)],
            Event::text(data).expect("event"),
        ))
        .await
        .expect("publish")
}

async fn next_data(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription goes on")
}

fn data_of(delivery: Delivery) -> String {
    match delivery {
        Delivery::Event(frame) => frame.fields().data,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_any_valid_name_round_trip_through_subjects() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "NAMES", false).await;
    for name in [
        "a.b",
        "with space",
        "*",
        ">",
        "a.*.>",
        "ünï✓",
        "/books/{id}",
    ] {
        let mut subscription = broker
            .subscribe(&SubscribeRequest::new([topic(name)]))
            .await
            .expect("subscribe");
        publish(&broker, name, name).await;
        assert_eq!(data_of(next_data(&mut subscription).await), name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_instance() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let one = broker_on(&server, "SHARED", false).await;
    let two = broker_on(&server, "SHARED", false).await;
    let first = publish(&one, "t", "first").await;
    publish(&one, "t", "second").await;
    let chosen = EventId::new("urn:uuid:chosen").expect("id");
    one.publish(
        &PublishRequest::new([topic("t")], Event::text("third").expect("event")).id(chosen.clone()),
    )
    .await
    .expect("publish with a chosen id");
    publish(&one, "t", "fourth").await;

    let mut resumed = two
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(first)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Complete);
    for expected in ["second", "third", "fourth"] {
        assert_eq!(data_of(next_data(&mut resumed).await), expected);
    }
    let mut after_chosen = two
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(chosen.clone())))
        .await
        .expect("subscribe");
    assert_eq!(after_chosen.resume(), &Resume::Complete);
    assert_eq!(data_of(next_data(&mut after_chosen).await), "fourth");

    // The chosen id is taken on every instance.
    let again = two
        .publish(
            &PublishRequest::new([topic("t")], Event::text("again").expect("event")).id(chosen),
        )
        .await;
    assert!(
        matches!(again, Err(BrokerError::DuplicateId(_))),
        "{again:?}"
    );
    let last = two
        .last_event_id()
        .await
        .expect("last id")
        .expect("some id");
    let mut after_last = one
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(last)))
        .await
        .expect("subscribe");
    assert_eq!(after_last.resume(), &Resume::Complete);
    publish(&two, "t", "live").await;
    assert_eq!(data_of(next_data(&mut after_last).await), "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_returns_the_first_id_on_another_instance() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let one = broker_on(&server, "RETRY", false).await;
    let two = broker_on(&server, "RETRY", false).await;
    let key = IdempotencyKey::new("order-42").expect("key");
    let request =
        PublishRequest::new([topic("t")], Event::text("once").expect("event")).idempotency_key(key);
    let first = one.publish(&request).await.expect("publish");
    publish(&one, "t", "between").await;
    let retried = two.publish(&request).await.expect("retry");
    assert_eq!(retried, first, "a duplicate acknowledges the first message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_with_a_chosen_id_returns_it_and_publishes_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "RETRYCHOSEN", false).await;
    let start = publish(&broker, "t", "start").await;
    let chosen = EventId::new("order-7").expect("id");
    let request = PublishRequest::new([topic("t")], Event::text("once").expect("event"))
        .id(chosen.clone())
        .idempotency_key(IdempotencyKey::new("k-7").expect("key"));
    assert_eq!(broker.publish(&request).await.expect("publish"), chosen);
    assert_eq!(broker.publish(&request).await.expect("retry"), chosen);
    publish(&broker, "t", "end").await;
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(start)))
        .await
        .expect("subscribe");
    assert_eq!(data_of(next_data(&mut resumed).await), "once");
    assert_eq!(data_of(next_data(&mut resumed).await), "end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_topic_replays_whole_and_in_order_among_many_others() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = NatsBroker::builder([server.url()])
        .stream_name("SPARSE")
        .subject_prefix("sparse")
        .replay_page(2)
        .build()
        .await
        .expect("broker connects");
    let start = publish(&broker, "t", "start").await;
    let mut expected = Vec::new();
    for i in 0..200 {
        if i % 25 == 0 {
            publish(&broker, "t", &format!("t{i}")).await;
            expected.push(format!("t{i}"));
        } else if i % 25 == 10 {
            let both = PublishRequest::new(
                [topic("u"), topic("t")],
                Event::text(format!("both{i}")).expect("event"),
            );
            broker.publish(&both).await.expect("publish");
            expected.push(format!("both{i}"));
        } else if i % 25 == 20 {
            let neither = PublishRequest::new(
                [topic("x"), topic("y")],
                Event::text(format!("neither{i}")).expect("event"),
            );
            broker.publish(&neither).await.expect("publish");
        } else {
            publish(&broker, "other", &format!("o{i}")).await;
        }
    }
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(start)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Complete);
    publish(&broker, "t", "live").await;
    expected.push("live".to_owned());
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(data_of(next_data(&mut resumed).await));
    }
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_get_live_and_replayed_events() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "PATTERNS", false).await;
    let before = publish(&broker, "/books/0", "zero").await;
    publish(&broker, "/books/1", "one").await;
    publish(&broker, "/authors/1", "not a book").await;
    let pattern = Selector::new("/books/{id}").expect("selector");
    let mut subscription = broker
        .subscribe(
            &SubscribeRequest::new([])
                .select([pattern])
                .start(Start::After(before)),
        )
        .await
        .expect("subscribe");
    assert_eq!(data_of(next_data(&mut subscription).await), "one");
    publish(&broker, "/authors/2", "still not").await;
    publish(&broker, "/books/2", "two").await;
    assert_eq!(data_of(next_data(&mut subscription).await), "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_with_file_storage_loses_nothing() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "DURABLE", false).await;
    let mut subscription = broker
        .subscribe(&SubscribeRequest::new([topic("t")]))
        .await
        .expect("subscribe");
    let first = publish(&broker, "t", "before").await;
    assert_eq!(data_of(next_data(&mut subscription).await), "before");
    server.restart();
    let after = publish_retrying(&broker, "after").await;
    assert_eq!(
        data_of(next_data(&mut subscription).await),
        "after",
        "no resync, no loss"
    );
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(first)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Complete);
    assert_eq!(data_of(next_data(&mut resumed).await), "after");
    assert_ne!(after.as_str(), "", "an id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_with_memory_storage_makes_subscribers_resync() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "VOLATILE", true).await;
    let mut subscription = broker
        .subscribe(&SubscribeRequest::new([topic("t")]))
        .await
        .expect("subscribe");
    let old = publish(&broker, "t", "old").await;
    publish(&broker, "t", "old two").await;
    assert_eq!(data_of(next_data(&mut subscription).await), "old");
    assert_eq!(data_of(next_data(&mut subscription).await), "old two");
    server.restart();
    let new = publish_retrying(&broker, "new").await;
    assert_ne!(new, old, "a new epoch's ids differ from the old one's");
    // The live subscriber is told, then gets what follows.
    let mut saw_resync = false;
    loop {
        match next_data(&mut subscription).await {
            Delivery::Resync(_) => saw_resync = true,
            delivery => {
                assert_eq!(data_of(delivery), "new");
                break;
            }
        }
    }
    assert!(saw_resync, "the reset is said in-band");
    // An id of the old stream hides nothing of the new one.
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(old)))
        .await
        .expect("subscribe");
    assert_eq!(resumed.resume(), &Resume::Unknown);
    assert_eq!(data_of(next_data(&mut resumed).await), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_memory_restart_every_instance_returns_the_new_streams_ids() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    // A slow health check: the publishing side must not wait for the feed to notice.
    let slow = |server: &NatsServer| {
        NatsBroker::builder([server.url()])
            .stream_name("EPOCHS")
            .subject_prefix("epochs")
            .memory_storage()
            .health_check(Duration::from_secs(60))
            .timeout(Duration::from_secs(2))
            .build()
    };
    let one = slow(&server).await.expect("broker connects");
    let two = slow(&server).await.expect("broker connects");
    publish(&one, "t", "old").await;
    publish(&two, "t", "old").await;
    server.restart();
    // The first instance recreates the stream; the second publishes into it unawares.
    publish_retrying(&one, "new one").await;
    let id = publish_retrying(&two, "new two").await;
    let mut all = one
        .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::Earliest))
        .await
        .expect("subscribe");
    loop {
        match next_data(&mut all).await {
            Delivery::Event(frame) if frame.fields().data == "new two" => {
                assert_eq!(frame.id(), &id, "the id returned is the id on the wire");
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_loses_no_event() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "DROPPED", false).await;
    let mut subscription = broker
        .subscribe(&SubscribeRequest::new([topic("t")]))
        .await
        .expect("subscribe");
    publish(&broker, "t", "0").await;
    assert_eq!(data_of(next_data(&mut subscription).await), "0");
    // Another instance publishes while this one's connection is down.
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    let other = broker_on(&server, "DROPPED", false).await;
    for i in 1..=5 {
        publish(&other, "t", &i.to_string()).await;
    }
    for i in 1..=5 {
        assert_eq!(data_of(next_data(&mut subscription).await), i.to_string());
    }
}

/// Publishes to `t`, retrying while the client reconnects.
async fn publish_retrying(broker: &NatsBroker, data: &str) -> EventId {
    publish_retrying_on(broker, "t", data).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_leader_loses_no_acknowledged_publish() {
    let Some(mut servers) = NatsServer::start_cluster(3) else {
        return;
    };
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    // The cluster elects its JetStream leaders after it starts: retried within a bound.
    let connect = |urls: Vec<String>| {
        common::nats_server::build_when_ready(move || {
            NatsBroker::builder(urls.clone())
                .stream_name("HA")
                .subject_prefix("ha")
                .replicas(3)
                .health_check(Duration::from_millis(200))
                .timeout(Duration::from_secs(2))
        })
    };
    let publisher = connect(urls.clone()).await;
    let readers = [connect(urls.clone()).await, connect(urls.clone()).await];
    let mut subscriptions = Vec::new();
    for reader in &readers {
        subscriptions.push(
            reader
                .subscribe(&SubscribeRequest::new([topic("t")]))
                .await
                .expect("subscribe"),
        );
    }

    const EVENTS: usize = 200;
    let publishing = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut slowest = Duration::ZERO;
        for i in 0..EVENTS {
            let started = tokio::time::Instant::now();
            let request =
                PublishRequest::new([topic("t")], Event::text(i.to_string()).expect("event"))
                    .idempotency_key(IdempotencyKey::new(format!("k{i}")).expect("key"));
            // A retry carries the same key: an event stored but not acknowledged is not
            // stored twice.
            common::nats_server::publish_until_acknowledged(
                &publisher,
                &request,
                Duration::from_millis(100),
                format!("publish {i}"),
            )
            .await;
            slowest = slowest.max(started.elapsed());
            acknowledged.push(i.to_string());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("the slowest publish (through the failover) took {slowest:?}");
        acknowledged
    });

    tokio::time::sleep(Duration::from_millis(700)).await;
    let leader = stream_leader(&urls, "HA").await;
    let index: usize = leader
        .strip_prefix('n')
        .and_then(|i| i.parse().ok())
        .expect("a leader named n<i>");
    eprintln!("killing the stream leader {leader}");
    servers[index].kill();

    let acknowledged = publishing.await.expect("publisher task");
    assert_eq!(acknowledged.len(), EVENTS);
    for subscription in &mut subscriptions {
        let mut seen = Vec::new();
        while seen.len() < EVENTS {
            let delivery = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .expect("a delivery in time")
                .expect("the subscription goes on");
            match delivery {
                Delivery::Event(frame) => seen.push(frame.fields().data),
                other => panic!("unexpected {other:?} after {} events", seen.len()),
            }
        }
        assert_eq!(
            seen, acknowledged,
            "every acknowledged event once, in order"
        );
    }
}

/// The name of the server leading `stream`'s replicas.
async fn stream_leader(urls: &[String], stream: &str) -> String {
    let addresses: Vec<async_nats::ServerAddr> =
        urls.iter().map(|u| u.parse().expect("url")).collect();
    let client = async_nats::connect(addresses).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(stream).await.expect("stream");
    let info = stream.info().await.expect("stream info");
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_of_the_greatest_length_is_published_replayed_and_live() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "LONG", false).await;
    let name = "x".repeat(tower_sse_pubsub::MAX_TOPIC_LEN);
    let mut live = broker
        .subscribe(&SubscribeRequest::new([topic(&name)]))
        .await
        .expect("subscribe");
    let first = publish(&broker, &name, "one").await;
    assert_eq!(data_of(next_data(&mut live).await), "one");
    publish(&broker, &name, "two").await;
    assert_eq!(data_of(next_data(&mut live).await), "two");
    let mut resumed = broker
        .subscribe(&SubscribeRequest::new([topic(&name)]).start(Start::After(first)))
        .await
        .expect("resume");
    assert_eq!(resumed.resume(), &Resume::Complete);
    assert_eq!(data_of(next_data(&mut resumed).await), "two");
}

/// Writes raw protocol to the server: a message another program published on the prefix.
async fn publish_raw(server: &NatsServer, subject: &str, header_block: &[u8], payload: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url().trim_start_matches("nats://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut info = [0u8; 4096];
    let _ = socket.read(&mut info).await.expect("INFO");
    let mut frame = format!(
        "CONNECT {{\"verbose\":false,\"headers\":true,\"protocol\":1}}\r\nHPUB {subject} {} {}\r\n",
        header_block.len(),
        header_block.len() + payload.len()
    )
    .into_bytes();
    frame.extend_from_slice(header_block);
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\nPING\r\n");
    socket.write_all(&frame).await.expect("write");
    let mut reply = [0u8; 64];
    let n = socket.read(&mut reply).await.expect("PONG");
    assert!(
        reply[..n].starts_with(b"PONG"),
        "{:?}",
        String::from_utf8_lossy(&reply[..n])
    );
}

async fn a_foreign_message_is_skipped(stream: &str, header_block: &[u8], live: bool) {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, stream, false).await;
    let first = publish(&broker, "t", "before").await;
    let mut subscription = if live {
        Some(
            broker
                .subscribe(&SubscribeRequest::new([topic("t")]))
                .await
                .expect("subscribe"),
        )
    } else {
        None
    };
    let subject = format!("{}.t.74", stream.to_lowercase());
    publish_raw(&server, &subject, header_block, b"junk").await;
    // The foreign message breaks the connection it arrives on (the client cannot parse it):
    // the live feed's own, not the one publishes use, so this one goes through at once. What
    // must not happen either is that the feed or a replay stops at that message for good.
    publish(&broker, "t", "after").await;
    let mut subscription = match subscription.take() {
        Some(live) => live,
        None => {
            let request = SubscribeRequest::new([topic("t")]).start(Start::After(first));
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match broker.subscribe(&request).await {
                    Ok(subscription) => break subscription,
                    Err(error) if tokio::time::Instant::now() < deadline => {
                        eprintln!("resume failed, retrying: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(error) => panic!("resume failed for good: {error}"),
                }
            }
        }
    };
    assert_eq!(data_of(next_data(&mut subscription).await), "after");
}

const NON_UTF8_HEADER: &[u8] = b"NATS/1.0\r\nSse-Topics: \xff\xfe\r\n\r\n";
const MALFORMED_HEADER: &[u8] = b"NATS/1.0\r\nno colon here\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_with_a_non_utf8_header_does_not_stall_the_live_feed() {
    a_foreign_message_is_skipped("NONUTFLIVE", NON_UTF8_HEADER, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_with_a_non_utf8_header_does_not_break_a_replay() {
    a_foreign_message_is_skipped("NONUTFREPLAY", NON_UTF8_HEADER, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_with_a_malformed_header_does_not_stall_the_live_feed() {
    a_foreign_message_is_skipped("MALFORMEDLIVE", MALFORMED_HEADER, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_with_a_malformed_header_does_not_break_a_replay() {
    a_foreign_message_is_skipped("MALFORMEDREPLAY", MALFORMED_HEADER, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_with_a_malformed_header_does_not_break_a_sparse_replay() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "SPARSE", false).await;
    let first = publish(&broker, "t", "before").await;
    for i in 0..20 {
        publish(&broker, "other", &i.to_string()).await;
    }
    publish_raw(&server, "sparse.t.74", MALFORMED_HEADER, b"junk").await;
    for i in 0..20 {
        publish_retrying_on(&broker, "other", &i.to_string()).await;
    }
    publish_retrying(&broker, "after").await;
    let request = SubscribeRequest::new([topic("t")]).start(Start::After(first));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut subscription = loop {
        match broker.subscribe(&request).await {
            Ok(subscription) => break subscription,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("resume failed, retrying: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("resume failed for good: {error}"),
        }
    };
    assert_eq!(data_of(next_data(&mut subscription).await), "after");
}

/// Publishes to `topic_name`, retrying while the client reconnects.
async fn publish_retrying_on(broker: &NatsBroker, topic_name: &str, data: &str) -> EventId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let request = PublishRequest::new([topic(topic_name)], Event::text(data).expect("event"));
        match broker.publish(&request).await {
            Ok(id) => return id,
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish failed, retrying: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("publish failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_history_age_with_the_default_duplicate_window_builds() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = NatsBroker::builder([server.url()])
        .stream_name("SHORTAGE")
        .subject_prefix("shortage")
        .history_max_age(Duration::from_secs(30))
        .build()
        .await
        .expect("a history of 30 seconds is a valid setting");
    publish(&broker, "t", "x").await;
}

/// The state a publish with a chosen id leaves between its event and the record of the event's
/// sequence (or for good, when the process stops or the record's publish fails there): the
/// claim, then the event. A client that got the event live resumes after its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_id_whose_record_is_missing_still_places_a_resume() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "CLAIMED", false).await;
    publish(&broker, "t", "old").await;
    let id_hex: String = "mine".bytes().map(|b| format!("{b:02x}")).collect();
    publish_raw(
        &server,
        &format!("claimed.id.{id_hex}"),
        b"NATS/1.0\r\n\r\n",
        b"",
    )
    .await;
    let headers = format!("NATS/1.0\r\nSse-Topics: 74\r\nSse-Id: {id_hex}\r\n\r\n");
    publish_raw(&server, "claimed.t.74", headers.as_bytes(), b"chosen").await;
    publish(&broker, "t", "after").await;
    let mut resumed = broker
        .subscribe(
            &SubscribeRequest::new([topic("t")])
                .start(Start::After(EventId::new("mine").expect("id"))),
        )
        .await
        .expect("resume");
    assert_eq!(resumed.resume(), &Resume::Complete);
    assert_eq!(data_of(next_data(&mut resumed).await), "after");
}

/// The topics travel hex-encoded in one header, which JetStream caps at 64 KiB: an event past it
/// (32 topics of the greatest length, the hub's default per request) is refused for good, with
/// the reason, not as a failure worth retrying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_the_header_limit_is_refused_for_good_and_one_within_it_goes_through() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on(&server, "MANYLONG", false).await;
    let long = |i: usize| {
        topic(&format!(
            "{i:04}{}",
            "y".repeat(tower_sse_pubsub::MAX_TOPIC_LEN - 4)
        ))
    };
    // 32 topics of the greatest length (the hub's default per request) take 64 KiB in hex.
    let too_many: Vec<Topic> = (0..32).map(long).collect();
    match broker
        .publish(&PublishRequest::new(
            too_many,
            Event::text("many").expect("event"),
        ))
        .await
    {
        Err(BrokerError::Unsupported(reason)) => assert!(reason.contains("64 KiB"), "{reason}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // 24 fit: published, live and replayed with every topic.
    let topics: Vec<Topic> = (0..24).map(long).collect();
    let mut live = broker
        .subscribe(&SubscribeRequest::new([topics[23].clone()]))
        .await
        .expect("subscribe");
    let first = broker
        .publish(&PublishRequest::new(
            topics.clone(),
            Event::text("many").expect("event"),
        ))
        .await
        .expect("publish");
    assert_eq!(data_of(next_data(&mut live).await), "many");
    let mut replay = broker
        .subscribe(&SubscribeRequest::new([topics[0].clone()]).start(Start::Earliest))
        .await
        .expect("replay");
    let frame = match next_data(&mut replay).await {
        Delivery::Event(frame) => frame,
        other => panic!("expected an event, got {other:?}"),
    };
    assert_eq!(frame.id(), &first);
    assert_eq!(frame.topics().len(), 24);
}

/// A stream whose messages may not pass `max` bytes, made before the broker (which keeps an
/// existing stream's settings): an event past it is refused by the server after its chosen id
/// was claimed.
async fn broker_on_small_messages(server: &NatsServer, stream: &str, max: i32) -> NatsBroker {
    let client = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![format!("{}.>", stream.to_lowercase())],
            max_message_size: max,
            ..Default::default()
        })
        .await
        .expect("stream");
    NatsBroker::builder([server.url()])
        .stream_name(stream)
        .subject_prefix(stream.to_lowercase())
        .timeout(Duration::from_millis(250))
        .build()
        .await
        .expect("broker connects")
}

fn chosen(id: &str, data: &str) -> PublishRequest {
    PublishRequest::new([topic("t")], Event::text(data).expect("event"))
        .id(EventId::new(id).expect("id"))
}

/// A publish that fails after its chosen id was claimed releases the id: the publisher's retry
/// (with or without its idempotency key) takes it, and it stays refused to anyone else after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chosen_id_whose_publish_failed_is_free_for_the_retry() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on_small_messages(&server, "SETTLE", 600).await;
    let big = "x".repeat(2_000);
    let key = || IdempotencyKey::new("retry-me").expect("key");
    for with_key in [true, false] {
        let id = if with_key { "keyed" } else { "bare" };
        let attempt = |data: &str| {
            let request = chosen(id, data);
            if with_key {
                request.idempotency_key(key())
            } else {
                request
            }
        };
        match broker.publish(&attempt(&big)).await {
            // The stream's own size limit: refused for good, and said so.
            Err(BrokerError::Unsupported(reason)) => assert!(reason.contains("max_msg_size")),
            other => panic!("expected the server to refuse the event, got {other:?}"),
        }
        let published = broker
            .publish(&attempt("fits"))
            .await
            .expect("the retry takes the released id");
        assert_eq!(published.as_str(), id);
        if with_key {
            // The retry retried (its acknowledgement lost, say): the same id, nothing stored.
            let again = broker.publish(&attempt("fits")).await.expect("idempotent");
            assert_eq!(again.as_str(), id);
        }
        match broker.publish(&chosen(id, "another")).await {
            Err(BrokerError::DuplicateId(taken)) => assert_eq!(taken.as_str(), id),
            other => panic!("expected DuplicateId, got {other:?}"),
        }
        let mut resumed = broker
            .subscribe(&SubscribeRequest::new([topic("t")]).start(Start::After(published)))
            .await
            .expect("resume");
        assert_eq!(resumed.resume(), &Resume::Complete, "the id is placed");
        publish(&broker, "t", "next").await;
        assert_eq!(data_of(next_data(&mut resumed).await), "next");
    }
}

/// A claim left without its event (its publisher stopped between the two) holds the id while
/// a publish could still be under way, and is taken over once it is stale (four times the
/// broker's timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_is_taken_over() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let broker = broker_on_small_messages(&server, "STALE", 1 << 20).await;
    let id_hex: String = "orphan".bytes().map(|b| format!("{b:02x}")).collect();
    publish_raw(
        &server,
        &format!("stale.id.{id_hex}"),
        b"NATS/1.0\r\n\r\n",
        b"",
    )
    .await;
    match broker.publish(&chosen("orphan", "early")).await {
        Err(BrokerError::DuplicateId(_)) => {}
        other => panic!("a fresh claim holds the id, got {other:?}"),
    }
    // Staleness is the passing of time itself: wait past it (4 x 250 ms).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let keyed =
        || chosen("orphan", "late").idempotency_key(IdempotencyKey::new("late-key").expect("key"));
    let id = broker
        .publish(&keyed())
        .await
        .expect("the stale claim is taken over");
    assert_eq!(id.as_str(), "orphan");
    let again = broker
        .publish(&keyed())
        .await
        .expect("the retry is idempotent");
    assert_eq!(again.as_str(), "orphan");
    match broker.publish(&chosen("orphan", "again")).await {
        Err(BrokerError::DuplicateId(_)) => {}
        other => panic!("the id is taken now, got {other:?}"),
    }
}

/// A server that lets in only a user with a given NKey (its configuration names the public key),
/// and a password user: the broker connects with the seed or the password, and without them gets an
/// error that says what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_an_nkey_or_a_password_and_says_why_it_cannot() {
    let user = nkeys::KeyPair::new_user();
    let config = format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }}, {{ user: \"app\", password: \"s3cret\" }} ] }}\n",
        user.public_key()
    );
    let Some(server) = NatsServer::start_with_config(&config) else {
        return;
    };
    let builder = || {
        NatsBroker::builder([server.url()])
            .stream_name("AUTH")
            .subject_prefix("auth")
            .timeout(Duration::from_secs(2))
    };
    let with_seed = builder()
        .nkey(user.seed().expect("seed"))
        .build()
        .await
        .expect("the NKey user is let in");
    publish(&with_seed, "t", "signed in").await;
    let with_password = builder()
        .user_and_password("app", "s3cret")
        .build()
        .await
        .expect("the password user is let in");
    publish(&with_password, "t", "also in").await;

    let refused = builder().build().await.expect_err("no credentials");
    assert!(
        refused.to_string().contains("cannot connect to NATS"),
        "{refused}"
    );
    let stranger = builder()
        .nkey(nkeys::KeyPair::new_user().seed().expect("seed"))
        .build()
        .await
        .expect_err("an unknown NKey");
    assert!(
        stranger.to_string().contains("cannot connect to NATS"),
        "{stranger}"
    );
    let missing = builder()
        .credentials_file("/nonexistent/user.creds")
        .build()
        .await
        .expect_err("a missing file");
    assert!(
        missing.to_string().contains("cannot read NATS credentials"),
        "{missing}"
    );
    let garbled = builder()
        .credentials("not a creds file")
        .build()
        .await
        .expect_err("garbled credentials");
    assert!(
        garbled.to_string().contains("invalid NATS credentials"),
        "{garbled}"
    );
}
