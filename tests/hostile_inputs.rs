//! Property tests over the HTTP surface with arbitrary input: whatever a client sends as a query,
//! a resume id or a publish body, the hub answers with a clear status (never a panic, never a
//! 5xx), and no resume id ends an EventSource.

use std::convert::Infallible;

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Service, ServiceExt, service_fn};
use tower_sse_pubsub::{Hub, ResponseBody};

type Body = Full<Bytes>;

fn service(
    hub: &Hub,
) -> impl Service<Request<Body>, Response = Response<ResponseBody<Body>>, Error = Infallible> + Clone
{
    tower::ServiceBuilder::new()
        .layer(hub.layer())
        .service(service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::default()))
        }))
}

fn hub() -> Hub {
    Hub::builder()
        .allow_anonymous_publish()
        .max_topics_per_request(8)
        .build()
        .expect("valid hub")
}

/// Runs one request to its response, on a small runtime (the endpoints use its timers).
fn respond(hub: &Hub, request: Request<Body>) -> Response<ResponseBody<Body>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    runtime
        .block_on(service(hub).oneshot(request))
        .expect("infallible")
}

fn status_of(hub: &Hub, request: Request<Body>) -> StatusCode {
    respond(hub, request).status()
}

/// Bytes that may appear in a query string: visible ASCII without '#', plus percent escapes of
/// any byte, so invalid UTF-8 and control characters arrive encoded.
fn query() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[!-\"$-~]{0,8}".prop_map(|s| s.to_owned()),
        any::<u8>().prop_map(|b| format!("%{b:02X}")),
        Just("topic=".to_owned()),
        Just("&".to_owned()),
        Just("lastEventID=".to_owned()),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

/// Cases per property: 512 in the normal suite; `HOSTILE_CASES=50000` for a long run.
fn cases() -> u32 {
    std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_query_gets_a_stream_or_a_clear_400(query in query()) {
        let hub = hub();
        let Ok(request) = Request::get(format!("/events?{query}")).body(Body::default()) else {
            return Ok(()); // not a URI at all: no server would pass it on
        };
        let status = status_of(&hub, request);
        prop_assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{query:?} -> {status}"
        );
    }

    #[test]
    fn any_resume_id_header_opens_the_stream(id in proptest::collection::vec(any::<u8>(), 1..400)) {
        let Ok(value) = HeaderValue::from_bytes(&id) else {
            return Ok(()); // not a header value: it cannot reach the server
        };
        let hub = hub();
        let mut request = Request::get("/events?topic=a").body(Body::default()).expect("valid");
        request.headers_mut().insert("last-event-id", value);
        prop_assert_eq!(status_of(&hub, request), StatusCode::OK);
    }

    #[test]
    fn any_form_body_gets_an_id_or_a_clear_4xx(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let hub = hub();
        let request = Request::post("/publish")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::new(Bytes::from(body.clone())))
            .expect("valid request");
        let status = status_of(&hub, request);
        prop_assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{:?} -> {status}", String::from_utf8_lossy(&body)
        );
    }

    #[test]
    fn any_json_body_gets_an_id_or_a_clear_4xx(body in "[\\[\\]{}\":,a-z0-9 \\\\]{0,80}") {
        let hub = hub();
        let request = Request::post("/publish")
            .header("content-type", "application/json")
            .body(Body::new(Bytes::from(body.clone())))
            .expect("valid request");
        let status = status_of(&hub, request);
        prop_assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{body:?} -> {status}"
        );
    }
}

#[test]
fn a_well_formed_publish_passes_the_same_checks() {
    let hub = hub();
    let request = Request::post("/publish")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::new(Bytes::from_static(b"topic=a&data=caf%C3%A9")))
        .expect("valid request");
    let response = respond(&hub, request);
    assert_eq!(response.status(), StatusCode::OK);
    let id = response
        .into_body()
        .collect()
        .now_or_never()
        .expect("a full body")
        .expect("infallible")
        .to_bytes();
    assert!(!id.is_empty());
}
