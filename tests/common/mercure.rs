//! What the Mercure tests share: signed tokens, requests with any headers, and the protocol's
//! percent-encoding of query values.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

use super::http::client;

/// `claims` signed with HS256 and `secret`.
pub fn token(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token signs")
}

/// Sends a request with `headers` and `body`; the response.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    client().request(request).await.expect("request answered")
}

/// The status and the body text of a response.
pub async fn text_of(response: http::Response<hyper::body::Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `value` percent-encoded for a query or a form: every byte but the unreserved ones.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Publishes `data` on `topic` through the Mercure hub at `server`, with a publisher token
/// signed with `key`; the id the hub answers.
pub async fn publish(
    server: &super::http::TestServer,
    key: &str,
    topic: &str,
    data: &str,
) -> String {
    let auth = format!(
        "Bearer {}",
        token(key, &serde_json::json!({"mercure": {"publish": ["*"]}}))
    );
    let response = send(
        "POST",
        &server.url(HUB),
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("topic={}&data={data}", url_encode(topic)),
    )
    .await;
    let (status, body) = text_of(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Subscribes to `selector` at the Mercure hub at `server`; the response head and its events.
pub async fn subscribe(
    server: &super::http::TestServer,
    selector: &str,
    headers: &[(&str, &str)],
) -> (http::HeaderMap, super::http::SseEvents) {
    let url = server.url(&format!("{HUB}?topic={}", url_encode(selector)));
    let response = send("GET", &url, headers, "").await;
    let head = response.headers().clone();
    (head, test_support::http_client::events(response))
}

/// Where the Mercure hub is.
pub const HUB: &str = "/.well-known/mercure";

/// Two app instances `a` and `b` on one shared broker (publisher tokens signed with `key`):
/// updates published on A reach B's subscribers of an exact topic and of a URI template with A's
/// ids, a client resumes on B after an id A gave, and `earliest` replays on A. The four streams
/// it opens (three on B, one on A) are handed back open.
pub async fn two_instances_share_updates_and_ids(
    a: &super::http::TestServer,
    b: &super::http::TestServer,
    key: &str,
) -> Vec<super::http::SseEvents> {
    use super::http::next_event;
    // On B: a subscriber of one book, and one of every book.
    let (_, mut one) = subscribe(b, "https://example.com/books/1", &[]).await;
    let (_, mut all) = subscribe(b, "https://example.com/books/{id}", &[]).await;

    // Published on A, received on B with A's ids.
    let first = publish(a, key, "https://example.com/books/1", "first").await;
    let second = publish(a, key, "https://example.com/books/2", "second").await;
    assert!(first.starts_with("urn:uuid:"), "{first}");
    let event = next_event(&mut one).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first.as_str(), "first")
    );
    for (id, data) in [(&first, "first"), (&second, "second")] {
        let event = next_event(&mut all).await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), data)
        );
    }

    // A client that saw `first` on A resumes on B after it.
    let (head, mut resumed) = subscribe(
        b,
        "https://example.com/books/{id}",
        &[("last-event-id", &first)],
    )
    .await;
    assert_eq!(head["last-event-id"], first.as_str());
    assert_eq!(next_event(&mut resumed).await.data, "second");
    let (head, mut earliest) = subscribe(
        a,
        "https://example.com/books/1",
        &[("last-event-id", "earliest")],
    )
    .await;
    assert_eq!(head["last-event-id"], "earliest");
    assert_eq!(next_event(&mut earliest).await.data, "first");
    vec![one, all, resumed, earliest]
}

/// Waits (at most ten seconds) until the subscriptions API of `a` (tokens signed with `key`)
/// lists the two subscriptions [`two_instances_share_updates_and_ids`] opened on the other
/// instance, and checks both selectors are there.
pub async fn subscriptions_listed_on(a: &super::http::TestServer, key: &str) {
    const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";
    let auth = format!(
        "Bearer {}",
        token(
            key,
            &serde_json::json!({"mercure": {"subscribe": [SUBSCRIPTIONS]}})
        )
    );
    let url = a.url(&format!("{HUB}/subscriptions"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let listed = loop {
        let (status, body) =
            text_of(send("GET", &url, &[("authorization", &auth)], "").await).await;
        assert_eq!(status, StatusCode::OK);
        let document: Value = serde_json::from_str(&body).expect("JSON");
        let topics: Vec<String> = document["subscriptions"]
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|s| s["topic"].as_str().map(str::to_owned))
            .collect();
        // The other instance's two subscriptions of every book (a resumed stream is a third,
        // on it).
        let listed_b = topics
            .iter()
            .filter(|t| t.as_str() == "https://example.com/books/{id}")
            .count();
        if listed_b == 2 || tokio::time::Instant::now() > deadline {
            break topics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for selector in [
        "https://example.com/books/1",
        "https://example.com/books/{id}",
    ] {
        assert!(
            listed.iter().any(|t| t == selector),
            "{selector} in {listed:?}"
        );
    }
}

/// The publisher key of the cross-instance tests' hubs.
pub const SHARED_KEY: &str = "a-shared-secret-of-at-least-32-bytes!";

/// One app instance on `broker` (shared with the others): a Mercure hub with the subscriptions
/// API, anonymous subscribers, and publisher tokens signed with [`SHARED_KEY`], served over TCP.
#[cfg(feature = "mercure")]
pub async fn instance(
    broker: impl tower_sse_pubsub::broker::Broker,
) -> (tower_sse_pubsub::Hub, super::http::TestServer) {
    use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
    use tower_sse_pubsub::mercure::MercureHub;
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(SHARED_KEY).expect("key"))
        .allow_anonymous_subscribe()
        .build();
    let hub = tower_sse_pubsub::Hub::builder()
        .broker(broker)
        .mercure(MercureHub::new(tokens).with_subscriptions())
        .build()
        .expect("valid hub");
    let server = super::http::TestServer::start(&hub, axum::Router::new().layer(hub.layer())).await;
    (hub, server)
}
