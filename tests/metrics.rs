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
