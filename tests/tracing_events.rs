//! The hub's `tracing` output: each stream's events are recorded inside its own `sse_stream`
//! span, which carries the stream's topics.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tower::{Layer, ServiceExt, service_fn};
use tower_sse_pubsub::Hub;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// What a test subscriber saw: spans with their fields, and events with the span they were in.
#[derive(Default)]
struct Seen {
    spans: Vec<(String, String)>,
    events: Vec<(String, Option<u64>)>,
    entered: Vec<u64>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Seen>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Capture {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().expect("not poisoned")
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "tower_sse_pubsub"
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        let mut seen = self.seen();
        seen.spans
            .push((span.metadata().name().to_owned(), fields.0));
        Id::from_u64(seen.spans.len() as u64)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let mut seen = self.seen();
        let parent = seen.entered.last().copied();
        seen.events.push((fields.0, parent));
    }

    fn enter(&self, span: &Id) {
        self.seen().entered.push(span.into_u64());
    }

    fn exit(&self, _: &Id) {
        self.seen().entered.pop();
    }
}

#[tokio::test]
async fn each_streams_events_are_inside_its_span_with_its_topics() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let hub = Hub::new();
    let app = hub
        .layer()
        .layer(service_fn(|_: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }));
    let open = |uri: &'static str| {
        let app = app.clone();
        async move {
            let request = Request::get(uri).body(Empty::new()).expect("request");
            let response = app.oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            response
        }
    };
    let first = open("/events?topic=a&topic=b").await;
    let second = open("/events?topic=c").await;
    drop(first);
    drop(second);

    let seen = capture.seen();
    let streams: Vec<&(String, String)> = seen
        .spans
        .iter()
        .filter(|(name, _)| name == "sse_stream")
        .collect();
    assert_eq!(streams.len(), 2, "{:?}", seen.spans);
    assert!(
        streams[0].1.contains(r#"topics=["a", "b"]"#),
        "{}",
        streams[0].1
    );
    assert!(streams[1].1.contains(r#"topics=["c"]"#), "{}", streams[1].1);
    let in_span = |message: &str, span: u64| {
        seen.events
            .iter()
            .any(|(fields, parent)| fields.contains(message) && *parent == Some(span))
    };
    for span in [1, 2] {
        assert!(in_span("stream opened", span), "{:?}", seen.events);
        assert!(in_span("reason=ClientGone", span), "{:?}", seen.events);
    }
}
