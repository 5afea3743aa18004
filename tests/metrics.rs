//! The hub's stats reach Prometheus through the `metrics` facade (feature `metrics`).

#![cfg(feature = "metrics")]

use metrics_exporter_prometheus::PrometheusBuilder;
use tower_sse_pubsub::Hub;

#[tokio::test]
async fn stats_reach_a_prometheus_recorder_through_the_metrics_facade() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let hub = Hub::new();
    let publisher = hub.publisher();
    publisher.publish_text("a", "1").await.expect("publish");
    publisher.publish_text("b", "2").await.expect("publish");
    metrics::with_local_recorder(&recorder, || hub.export_metrics());

    let text = handle.render();
    for line in [
        "sse_events_published_total 2",
        "sse_open_streams 0",
        "sse_streams_opened_total 0",
        r#"sse_streams_closed_total{reason="client_gone"} 0"#,
        r#"sse_subscribes_refused_total{reason="full"} 0"#,
        r#"sse_resumes_total{outcome="unknown"} 0"#,
        "sse_bytes_written_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }

    // Totals are set, not added: exporting again does not double them.
    metrics::with_local_recorder(&recorder, || hub.export_metrics());
    assert!(
        handle
            .render()
            .lines()
            .any(|l| l == "sse_events_published_total 2")
    );
}

#[tokio::test]
async fn open_streams_per_topic_are_exported_and_zeroed_when_the_last_stream_closes() {
    use http::Request;
    use http_body_util::Empty;
    use tower::{Layer, ServiceExt, service_fn};

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let hub = Hub::builder()
        .count_streams_per_topic()
        .build()
        .expect("valid hub");
    let app = hub
        .layer()
        .layer(service_fn(|_request: Request<Empty<bytes::Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<bytes::Bytes>::new()))
        }));
    let open = |uri: &'static str| {
        let app = app.clone();
        async move {
            let request = Request::get(uri).body(Empty::new()).expect("request");
            let response = app.oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), http::StatusCode::OK);
            response
        }
    };
    let one = open("/events?topic=room-1").await;
    let two = open("/events?topic=room-1&topic=room-2").await;
    let lines = || {
        metrics::with_local_recorder(&recorder, || hub.export_metrics());
        let mut lines: Vec<String> = handle
            .render()
            .lines()
            .filter(|l| l.starts_with("sse_topic_open_streams{"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(
        lines(),
        [
            r#"sse_topic_open_streams{topic="room-1"} 2"#,
            r#"sse_topic_open_streams{topic="room-2"} 1"#,
        ]
    );
    drop(two);
    assert_eq!(
        lines(),
        [
            r#"sse_topic_open_streams{topic="room-1"} 1"#,
            r#"sse_topic_open_streams{topic="room-2"} 0"#,
        ]
    );
    drop(one);
    assert_eq!(
        lines(),
        [
            r#"sse_topic_open_streams{topic="room-1"} 0"#,
            r#"sse_topic_open_streams{topic="room-2"} 0"#,
        ]
    );

    // Without counting per topic, no per-topic gauge.
    let recorder = PrometheusBuilder::new().build_recorder();
    let plain = Hub::new();
    metrics::with_local_recorder(&recorder, || plain.export_metrics());
    assert!(
        !recorder
            .handle()
            .render()
            .contains("sse_topic_open_streams")
    );
}
