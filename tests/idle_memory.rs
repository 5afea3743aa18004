//! What an idle stream holds on the server's heap: the hub's, mounted both ways an axum app can
//! mount it, against the hand-written axum `Sse` + `broadcast` endpoint the load tool compares
//! with (`test_support::comparator`). Counted by a global allocator, so the figures are exact
//! and repeat run after run (the load tool's `idle` scenario weighs the same streams by RSS,
//! which moves by ±200 B a run).
//!
//! One test in this binary: the count is process-wide.

use std::alloc::System;
use std::future::Future;
use std::time::Duration;

use axum::response::IntoResponse;
use cap::Cap;
use test_support::attack::{self, Answer, Subscribe, Target};
use test_support::comparator::hand_written;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tower_sse_pubsub::Hub;

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Streams per topic, as in the load tool's `idle` scenario.
const PER_TOPIC: usize = 5;
/// Streams opened before counting (they make the servers' lazily built state), then counted.
/// Few enough that client and server ends fit under a 1,024 open-file limit.
const WARM: usize = 50;
const COUNTED: usize = 300;

/// Opens streams `first..first + count` on `target` (each on its topic, five to a topic, when
/// `topics`) and returns them once each has read its opening.
async fn open(target: &Target, topics: bool, first: usize, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for i in first..first + count {
        let request = Subscribe {
            topics: topics
                .then(|| format!("idle-{}", i / PER_TOPIC))
                .into_iter()
                .collect(),
            ..Subscribe::default()
        };
        let held = attack::subscribe(target, &request, Duration::from_secs(10))
            .await
            .expect("connect");
        assert_eq!(held.answer, Answer::Stream, "stream {i}");
        streams.extend(held.stream);
    }
    streams
}

/// Waits until `count` says the server holds `expected` streams.
async fn until_held(count: &impl Fn() -> usize, expected: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while count() != expected {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server holds {} streams, not {expected}", count()));
}

/// The heap one idle stream holds on a server started by `serve` (which gives its address and
/// a count of the streams it holds), from the growth over [`COUNTED`] streams.
async fn heap_per_stream<F, C>(path: &str, topics: bool, serve: F) -> f64
where
    F: FnOnce(TcpListener) -> C,
    C: Fn() -> usize,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = Target {
        events_path: path.to_owned(),
        ..Target::new(listener.local_addr().expect("address"))
    };
    let held = serve(listener);
    let warm = open(&target, topics, 0, WARM).await;
    until_held(&held, WARM).await;
    let before = HEAP.allocated();
    let counted = open(&target, topics, WARM, COUNTED).await;
    until_held(&held, WARM + COUNTED).await;
    let after = HEAP.allocated();
    drop((warm, counted));
    until_held(&held, 0).await;
    (after as f64 - before as f64) / COUNTED as f64
}

fn spawn(server: impl Future<Output = std::io::Result<()>> + Send + 'static) {
    tokio::spawn(async move { server.await.expect("serve") });
}

/// An app's other routes, which the hub passes requests through to.
fn routes() -> axum::Router {
    axum::Router::new().route("/hold", axum::routing::get(|| async { "held" }))
}

fn hub() -> Hub {
    Hub::builder().build().expect("a valid hub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_hub_stream_holds_at_most_a_kibibyte_more_heap_than_a_hand_written_one() {
    let comparator = heap_per_stream("/broadcast", false, |listener| {
        let (sender, _) = broadcast::channel(1024);
        let app = routes().route("/broadcast", hand_written(sender.clone()));
        spawn(axum::serve(listener, app).into_future());
        move || sender.receiver_count()
    })
    .await;

    // As most axum apps mount a layer: axum then rebuilds every route per connection.
    let router_layer = heap_per_stream("/events", true, |listener| {
        let hub = hub();
        spawn(axum::serve(listener, routes().layer(hub.layer())).into_future());
        move || hub.subscriber_count()
    })
    .await;

    // Around the finished router: a stream never reaches it.
    let around = heap_per_stream("/events", true, |listener| {
        let hub = hub();
        let app = tower::ServiceBuilder::new()
            .map_response(IntoResponse::into_response)
            .layer(hub.layer())
            .service(routes());
        let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
        spawn(axum::serve(listener, app).into_future());
        move || hub.subscriber_count()
    })
    .await;

    println!(
        "heap per idle stream: hand-written {comparator:.0} B, hub by Router::layer \
         {router_layer:.0} B ({:+.0}), hub around the router {around:.0} B ({:+.0})",
        router_layer - comparator,
        around - comparator,
    );
    assert!(
        router_layer - comparator <= 1024.0,
        "a hub stream mounted by Router::layer holds {router_layer:.0} B, the hand-written \
         {comparator:.0} B"
    );
    assert!(
        around < comparator,
        "a hub stream mounted around the router holds {around:.0} B, the hand-written \
         {comparator:.0} B"
    );
}
