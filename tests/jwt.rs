//! `JwtAuthorizer` on the hub's own endpoints, over TCP: where tokens are read from, what their
//! claims allow, which keys verify them, and a stream closing when its token expires.

#![cfg(feature = "jwt")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use bytes::Bytes;
use common::http::{SseEvents, TestServer, client, next_event};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtAuthorizerBuilder, JwtKey};
use tower_sse_pubsub::{Event, Hub, PublishRequest, Topic};

const SECRET: &str = "a-test-secret-of-32-bytes-or-more!!";
const RS256_PUBLIC: &[u8] = include_bytes!("fixtures/jwt/rs256-public.pem");
const RS256_PRIVATE: &[u8] = include_bytes!("fixtures/jwt/rs256-private.pem");
const ES256_PUBLIC: &[u8] = include_bytes!("fixtures/jwt/es256-public.pem");
const ES256_PRIVATE: &[u8] = include_bytes!("fixtures/jwt/es256-private.pem");

fn hs256(claims: &Value) -> String {
    sign(
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

fn sign(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    encode(&Header::new(algorithm), claims, key).expect("token signs")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

async fn serve(authorizer: JwtAuthorizerBuilder) -> (Hub, TestServer) {
    let hub = Hub::builder()
        .authorizer(authorizer.build())
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    (hub, server)
}

fn shared_secret() -> JwtAuthorizerBuilder {
    JwtAuthorizer::builder(JwtKey::hs256(SECRET).expect("a long enough secret"))
}

/// Sends a request with the given headers; the status, the `WWW-Authenticate` header and the
/// response (whose body is an event stream when the status is 200).
async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response<hyper::body::Incoming> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == "POST" {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    client().request(request).await.expect("request answered")
}

async fn refusal(response: http::Response<hyper::body::Incoming>) -> (StatusCode, String, String) {
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII").to_owned())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn publishing_needs_a_token_whose_publish_claim_covers_every_topic() {
    let (hub, server) = serve(shared_secret()).await;
    let url = server.url("/publish");
    let books = hs256(&json!({"mercure": {"publish": ["books/{id}"]}}));

    let (status, challenge, body) =
        refusal(send("POST", &url, &[], "topic=books/1&data=x").await).await;
    assert_eq!(
        (status, challenge.as_str()),
        (StatusCode::UNAUTHORIZED, "Bearer")
    );
    assert!(body.contains("a token is required to publish"), "{body}");

    let response = send(
        "POST",
        &url,
        &[("authorization", &bearer(&books))],
        "topic=books/1&data=x",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    // One topic the claim does not cover refuses the whole event.
    let (status, _, body) = refusal(
        send(
            "POST",
            &url,
            &[("authorization", &bearer(&books))],
            "topic=books/2&topic=news&data=x",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("\"news\""), "{body}");

    // A subscriber's token does not publish.
    let reader = hs256(&json!({"mercure": {"subscribe": ["*"]}}));
    let (status, _, body) = refusal(
        send(
            "POST",
            &url,
            &[("authorization", &bearer(&reader))],
            "topic=books/3&data=x",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("`mercure.publish` claim allows no topic"),
        "{body}"
    );
    let empty = hs256(&json!({"mercure": {"publish": []}}));
    let response = send(
        "POST",
        &url,
        &[("authorization", &bearer(&empty))],
        "topic=b&data=x",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Only the first publish got through.
    assert_eq!(hub.stats().events_published, 1);
}

#[tokio::test]
async fn invalid_expired_and_premature_tokens_get_401_invalid_token() {
    let (hub, server) = serve(shared_secret()).await;
    let url = server.url("/publish");
    let claims = json!({"mercure": {"publish": ["*"]}});
    let forged = sign(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
    );
    let expired = hs256(&json!({"mercure": {"publish": ["*"]}, "exp": now() - 10}));
    let premature = hs256(&json!({"mercure": {"publish": ["*"]}, "nbf": now() + 3600}));
    for (token, reason) in [
        (forged.as_str(), "signature does not verify"),
        (expired.as_str(), "has expired"),
        (premature.as_str(), "not valid yet"),
        ("not-a-token", "not a valid JWS"),
    ] {
        let (status, challenge, body) = refusal(
            send(
                "POST",
                &url,
                &[("authorization", &bearer(token))],
                "topic=a&data=x",
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}");
        assert_eq!(challenge, "Bearer error=\"invalid_token\"");
        assert!(body.contains(reason), "{body:?} should say {reason:?}");
    }
    // A header that is not a bearer token is refused, not skipped for the cookie.
    let good = hs256(&claims);
    let cookie = format!("mercureAuthorization={good}");
    let (status, _, body) = refusal(
        send(
            "POST",
            &url,
            &[("authorization", "Basic YTpi"), ("cookie", &cookie)],
            "topic=a&data=x",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Bearer <token>"), "{body}");
    assert_eq!(hub.stats().events_published, 0);
}

#[tokio::test]
async fn the_header_wins_over_the_query_which_wins_over_the_cookie() {
    let only_a = hs256(&json!({"mercure": {"subscribe": ["a"]}}));
    let only_b = hs256(&json!({"mercure": {"subscribe": ["b"]}}));
    let cookie = format!("mercureAuthorization={only_b}");
    let (_hub, server) = serve(shared_secret().allow_query_token()).await;

    // Header (a) over cookie (b): subscribing to b is refused.
    let url = server.url("/events?topic=b");
    let response = send(
        "GET",
        &url,
        &[("authorization", &bearer(&only_a)), ("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The cookie alone (b) is used.
    let response = send("GET", &url, &[("cookie", &cookie)], "").await;
    assert_eq!(response.status(), StatusCode::OK);
    // The query (a) over the cookie (b).
    let url_a = server.url(&format!("/events?topic=b&authorization={only_a}"));
    let response = send("GET", &url_a, &[("cookie", &cookie)], "").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Without allow_query_token the query is not read: the cookie decides.
    let (_hub, strict) = serve(shared_secret()).await;
    let url = strict.url(&format!("/events?topic=b&authorization={only_a}"));
    let response = send("GET", &url, &[("cookie", &cookie)], "").await;
    assert_eq!(response.status(), StatusCode::OK);
    // A renamed cookie.
    let (_hub, renamed) = serve(shared_secret().cookie_name("hubAuth")).await;
    let url = renamed.url("/events?topic=b");
    let response = send("GET", &url, &[("cookie", &cookie)], "").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let renamed_cookie = format!("hubAuth={only_b}");
    let response = send("GET", &url, &[("cookie", &renamed_cookie)], "").await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn publish(hub: &Hub, topic: &str, data: &str, private: bool) {
    let mut request = PublishRequest::new(
        [Topic::new(topic).expect("valid topic")],
        Event::text(data).expect("valid event"),
    );
    if private {
        request = request.private();
    }
    hub.publisher().send(&request).await.expect("published");
}

async fn data_until(events: &mut SseEvents, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        if event.event == "message" {
            seen.push(event.data.clone());
        }
        if event.data == last {
            return seen;
        }
    }
}

#[tokio::test]
async fn subscribers_get_the_private_events_their_selectors_match_and_anonymous_ones_none() {
    let (hub, server) = serve(shared_secret().allow_anonymous_subscribe()).await;
    let ada = hs256(&json!({"mercure": {"subscribe": ["users/ada", "books/{id}"]}}));
    let url = server.url("/events?topic=users/ada&topic=books/1");

    let response = send(
        "GET",
        &url,
        &[("cookie", &format!("mercureAuthorization={ada}"))],
        "",
    )
    .await;
    let mut with_token = test_support::http_client::events(response);
    let mut anonymous = test_support::http_client::events(send("GET", &url, &[], "").await);
    // A token that does not cover a topic asked for is refused, even with anonymous access.
    let other = hs256(&json!({"mercure": {"subscribe": ["users/bob"]}}));
    let response = send("GET", &url, &[("authorization", &bearer(&other))], "").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    publish(&hub, "users/ada", "private to ada", true).await;
    publish(&hub, "books/1", "private book", true).await;
    publish(&hub, "books/1", "public book", false).await;
    assert_eq!(
        data_until(&mut with_token, "public book").await,
        ["private to ada", "private book", "public book"]
    );
    assert_eq!(
        data_until(&mut anonymous, "public book").await,
        ["public book"]
    );

    // Without anonymous access, a subscriber needs a token.
    let (_hub, closed) = serve(shared_secret()).await;
    let (status, challenge, _) =
        refusal(send("GET", &closed.url("/events?topic=a"), &[], "").await).await;
    assert_eq!(
        (status, challenge.as_str()),
        (StatusCode::UNAUTHORIZED, "Bearer")
    );
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_their_public_keys() {
    let claims = json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}});
    let rs = sign(
        &claims,
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RS256_PRIVATE).expect("RSA key"),
    );
    let es = sign(
        &claims,
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(ES256_PRIVATE).expect("EC key"),
    );
    let builder = JwtAuthorizer::builder(JwtKey::rs256_pem(RS256_PUBLIC).expect("RSA public key"))
        .subscriber_key(JwtKey::es256_pem(ES256_PUBLIC).expect("EC public key"));
    let (_hub, server) = serve(builder).await;

    let publish = server.url("/publish");
    let events = server.url("/events?topic=a");
    let status = |r: http::Response<hyper::body::Incoming>| r.status();
    assert_eq!(
        status(
            send(
                "POST",
                &publish,
                &[("authorization", &bearer(&rs))],
                "topic=a&data=x"
            )
            .await
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(send("GET", &events, &[("authorization", &bearer(&es))], "").await),
        StatusCode::OK
    );
    // Each key verifies only its own kind of access and algorithm.
    assert_eq!(
        status(
            send(
                "POST",
                &publish,
                &[("authorization", &bearer(&es))],
                "topic=a&data=x"
            )
            .await
        ),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(send("GET", &events, &[("authorization", &bearer(&rs))], "").await),
        StatusCode::UNAUTHORIZED
    );
    // The classic confusion: an HS256 token keyed with the RSA public key's PEM is refused.
    let confused = sign(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(RS256_PUBLIC),
    );
    let (code, _, body) = refusal(
        send(
            "POST",
            &publish,
            &[("authorization", &bearer(&confused))],
            "topic=a&data=x",
        )
        .await,
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body.contains("another algorithm"), "{body}");

    assert!(JwtKey::rs256_pem(b"not a key").is_err());
    let error = JwtKey::es256_pem(RS256_PUBLIC).expect_err("an RSA key is no P-256 key");
    assert!(error.to_string().contains("P-256"), "{error}");
}

#[tokio::test]
async fn a_stream_closes_when_its_token_expires() {
    let (_hub, server) = serve(shared_secret()).await;
    // `exp` has whole seconds: this token expires in one to two seconds.
    let token = hs256(&json!({"mercure": {"subscribe": ["*"]}, "exp": now() + 2}));
    let response = send(
        "GET",
        &server.url("/events?topic=a"),
        &[("authorization", &bearer(&token))],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let body = response.into_body().collect();
    let body = tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("the stream ends by itself")
        .expect("body reads")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("deadline passed; reconnect with fresh credentials"),
        "{text}"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
