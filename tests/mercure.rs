//! The Mercure hub endpoint over TCP, written from the protocol (draft-dunglas-mercure-07, and
//! draft-08's new names): publication, subscription with selectors, authorization, private
//! updates, reconciliation, and active subscriptions.

#![cfg(feature = "mercure")]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use common::http::{SseEvents, TestServer, next_event};
use common::mercure::{send, text_of, token, url_encode};
use futures::StreamExt;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower_sse_pubsub::Hub;
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;

const PUBLISHER_KEY: &str = "publisher-secret-of-at-least-32-bytes!";
const SUBSCRIBER_KEY: &str = "subscriber-secret-of-at-least-32-bytes";
const HUB: &str = "/.well-known/mercure";

fn publisher(selectors: &[&str]) -> String {
    token(PUBLISHER_KEY, &json!({"mercure": {"publish": selectors}}))
}

fn subscriber(claims: Value) -> String {
    token(SUBSCRIBER_KEY, &json!({ "mercure": claims }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A hub with separate publisher and subscriber keys, anonymous subscribers allowed, and
/// active subscriptions on.
async fn serve() -> (Hub, TestServer) {
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(PUBLISHER_KEY).expect("key"))
        .subscriber_key(JwtKey::hs256(SUBSCRIBER_KEY).expect("key"))
        .allow_anonymous_subscribe()
        .allow_query_token()
        .build();
    let hub = Hub::builder()
        .mercure(MercureHub::new(tokens).with_subscriptions())
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    (hub, server)
}

/// Publishes a form with the publisher's token for every topic; the status and the body.
async fn publish(server: &TestServer, form: &str) -> (StatusCode, String) {
    let auth = format!("Bearer {}", publisher(&["*"]));
    text_of(
        send(
            "POST",
            &server.url(HUB),
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form,
        )
        .await,
    )
    .await
}

fn query(selectors: &[&str]) -> String {
    let mut query = String::new();
    for selector in selectors {
        let encoded: String = url_encode(selector);
        query.push_str(if query.is_empty() { "?" } else { "&" });
        query.push_str("topic=");
        query.push_str(&encoded);
    }
    query
}

/// Subscribes with `selectors` and extra headers; the response head and its events.
async fn subscribe_with(
    server: &TestServer,
    selectors: &[&str],
    extra_query: &str,
    headers: &[(&str, &str)],
) -> (http::HeaderMap, SseEvents) {
    let url = server.url(&format!("{HUB}{}{extra_query}", query(selectors)));
    let response = send("GET", &url, headers, "").await;
    let head = response.headers().clone();
    (head, test_support::http_client::events(response))
}

async fn subscribe(server: &TestServer, selectors: &[&str]) -> SseEvents {
    subscribe_with(server, selectors, "", &[]).await.1
}

/// Events until one with `data`, their data in order.
async fn data_until(events: &mut SseEvents, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(events).await;
        let done = event.data == last;
        seen.push(event.data);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn a_publication_answers_its_id_and_reaches_subscribers_with_every_field() {
    let (_hub, server) = serve().await;
    let mut events = subscribe(&server, &["https://example.com/books/1"]).await;

    let (status, id) = publish(
        &server,
        "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=%7B%22title%22%3A%22Dune%22%7D&id=urn%3Auuid%3Ae1ee88e2-532a-4d6f-ba70-f0f8bd584022&type=book&retry=2500",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        id, "urn:uuid:e1ee88e2-532a-4d6f-ba70-f0f8bd584022",
        "the given id is kept"
    );
    let event = next_event(&mut events).await;
    assert_eq!(event.id, id);
    assert_eq!(event.event, "book");
    assert_eq!(event.data, "{\"title\":\"Dune\"}");
    assert_eq!(event.retry, Some(Duration::from_millis(2500)));

    // Without an id the hub makes one, a valid IRI: a urn:uuid.
    let response = send(
        "POST",
        &server.url(HUB),
        &[
            ("authorization", &format!("Bearer {}", publisher(&["*"]))),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=second",
    )
    .await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let (status, made) = text_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(made.starts_with("urn:uuid:") && made.len() == 45, "{made}");
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (made.as_str(), "second")
    );
}

#[tokio::test]
async fn the_stream_opens_with_a_comment_so_the_client_sees_it_open_at_once() {
    let (_hub, server) = serve().await;
    let url = server.url(&format!("{HUB}?topic=a"));
    let response = send("GET", &url, &[], "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("a first chunk before any update")
        .expect("open")
        .expect("data");
    let bytes = first.into_data().expect("a data frame");
    assert!(bytes.starts_with(b":"), "a comment line first: {bytes:?}");
}

#[tokio::test]
async fn alternate_topics_reach_subscribers_of_any_of_them() {
    let (_hub, server) = serve().await;
    let mut canonical = subscribe(&server, &["https://example.com/books/1"]).await;
    let mut alternate = subscribe(&server, &["https://example.com/alt/1"]).await;
    let mut both = subscribe(
        &server,
        &["https://example.com/books/1", "https://example.com/alt/1"],
    )
    .await;
    let (status, _) = publish(
        &server,
        "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&topic=https%3A%2F%2Fexample.com%2Falt%2F1&data=x",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    publish(&server, "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&topic=https%3A%2F%2Fexample.com%2Falt%2F1&data=end").await;
    assert_eq!(data_until(&mut canonical, "end").await, ["x", "end"]);
    assert_eq!(data_until(&mut alternate, "end").await, ["x", "end"]);
    assert_eq!(
        data_until(&mut both, "end").await,
        ["x", "end"],
        "once each"
    );
}

#[tokio::test]
async fn uri_templates_and_the_wildcard_select_topics() {
    let (_hub, server) = serve().await;
    let mut books = subscribe(&server, &["https://example.com/books/{id}"]).await;
    let mut query_template = subscribe(&server, &["https://example.com/search{?q}"]).await;
    let mut everything = subscribe(&server, &["*"]).await;
    for topic in [
        "https://example.com/authors/1",
        "https://example.com/books/1",
        "https://example.com/books/1/chapters/2",
        "https://example.com/search?q=dune",
    ] {
        let (status, _) = publish(
            &server,
            &format!("topic={}&data={}", url_encode(topic), url_encode(topic)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    publish(&server, "topic=https%3A%2F%2Fexample.com%2Fbooks%2Fend&topic=https%3A%2F%2Fexample.com%2Fsearch%3Fq%3Dend&data=end").await;
    assert_eq!(
        data_until(&mut books, "end").await,
        ["https://example.com/books/1", "end"],
        "{{id}} matches one segment only"
    );
    assert_eq!(
        data_until(&mut query_template, "end").await,
        ["https://example.com/search?q=dune", "end"]
    );
    assert_eq!(data_until(&mut everything, "end").await.len(), 5);
}

#[tokio::test]
async fn publishing_needs_a_token_covering_every_topic_and_refusals_dispatch_nothing() {
    let (hub, server) = serve().await;
    let mut events = subscribe(&server, &["*"]).await;
    let url = server.url(HUB);
    let form = [("content-type", "application/x-www-form-urlencoded")];

    let (status, _) =
        text_of(send("POST", &url, &form, "topic=books%2F1&data=no-token").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let books = format!("Bearer {}", publisher(&["books/{id}"]));
    let (status, _) = text_of(
        send(
            "POST",
            &url,
            &[form[0], ("authorization", &books)],
            "topic=books%2F1&topic=news&data=one-topic-not-covered",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let theirs = format!(
        "Bearer {}",
        token(SUBSCRIBER_KEY, &json!({"mercure": {"publish": ["*"]}}))
    );
    let (status, _) = text_of(
        send(
            "POST",
            &url,
            &[form[0], ("authorization", &theirs)],
            "topic=a&data=wrong-key",
        )
        .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the subscriber key does not sign publishers"
    );
    let (status, _) = text_of(
        send(
            "POST",
            &url,
            &[("authorization", &books)],
            "topic=books%2F1&data=not-a-form",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, _) = text_of(
        send(
            "POST",
            &url,
            &[form[0], ("authorization", &books)],
            "topic=books%2F1&data=ok",
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        next_event(&mut events).await.data,
        "ok",
        "nothing refused was dispatched"
    );
    assert_eq!(hub.stats().events_published, 1);
}

#[tokio::test]
async fn ids_are_kept_unique_and_never_start_with_a_hash() {
    let (_hub, server) = serve().await;
    let (status, reason) = publish(&server, "topic=a&data=x&id=%23rev-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("must not start with `#`"), "{reason}");
    let (status, _) = publish(&server, "topic=a&data=x&id=books%2F1%2Frev-1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, reason) = publish(&server, "topic=b&data=y&id=books%2F1%2Frev-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{reason}");
}

/// An empty `id` field is an id left out, as `type` and `retry` are (the reference hub reads it
/// so too): the hub makes one instead of refusing the update.
#[tokio::test]
async fn an_empty_id_field_gets_a_generated_id() {
    let (_hub, server) = serve().await;
    let (status, id) = publish(&server, "topic=a&data=x&id=&type=&retry=").await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert!(id.starts_with("urn:uuid:"), "{id}");
}

/// `earliest` is the protocol's reserved resume point: an update with that id could never be
/// resumed after (the client's `Last-Event-ID: earliest` asks for everything again), so the hub
/// refuses it as it refuses ids starting with `#`.
#[tokio::test]
async fn the_reserved_earliest_is_not_an_id_a_publisher_may_choose() {
    let (_hub, server) = serve().await;
    let (status, reason) = publish(&server, "topic=a&data=x&id=earliest").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
    assert!(reason.contains("earliest"), "{reason}");
}

/// A client resumes by sending the id back in a `Last-Event-ID` header, so a chosen id must
/// survive as a header value: a control character makes the browser's reconnection an invalid
/// request (refused before the hub sees it, which ends an EventSource for good), and leading or
/// trailing whitespace is stripped from header values, so the id would come back as another.
#[tokio::test]
async fn chosen_ids_that_cannot_come_back_in_a_header_are_refused() {
    let (_hub, server) = serve().await;
    for id in ["a%01b", "a%1Fb", "a%7Fb", "+x", "x+", "%09x", "x%09"] {
        let (status, reason) = publish(&server, &format!("topic=a&data=x&id={id}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}: {reason}");
    }
    let (status, reason) = publish(&server, "topic=a&data=x&id=a+b%09c").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "inner spaces and tabs are fine: {reason}"
    );
}

/// The hub's own notice type is reserved on every endpoint: `/publish` and gRPC refuse it, and so
/// must the Mercure endpoint, or a publisher could forge the notice to the same subscribers
/// (Mercure's and `/events`').
#[tokio::test]
async fn the_hubs_resync_notice_type_is_reserved() {
    let (_hub, server) = serve().await;
    let (status, reason) = publish(&server, "topic=a&data=x&type=resync").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
    assert!(reason.contains("reserved"), "{reason}");
}

#[tokio::test]
async fn private_updates_reach_only_subscribers_whose_claim_matches_a_topic() {
    let (_hub, server) = serve().await;
    let books = "https://example.com/books/{id}";
    let mut anonymous = subscribe(&server, &[books]).await;
    // The protocol's example: the claim matches the alternate topic, not the canonical one.
    let alice = subscriber(json!({"subscribe": ["https://example.com/users/alice/{?topic}"]}));
    let (_, mut by_header) = subscribe_with(
        &server,
        &[books],
        "",
        &[("authorization", &format!("Bearer {alice}"))],
    )
    .await;
    let (_, mut by_cookie) = subscribe_with(
        &server,
        &[books],
        "",
        &[("cookie", &format!("mercureAuthorization={alice}"))],
    )
    .await;
    let (_, mut by_query) =
        subscribe_with(&server, &[books], &format!("&authorization={alice}"), &[]).await;
    let bob = subscriber(json!({"subscribe": ["https://example.com/users/bob/{?topic}"]}));
    let (_, mut other_user) = subscribe_with(
        &server,
        &[books],
        "",
        &[("authorization", &format!("Bearer {bob}"))],
    )
    .await;

    let private = format!(
        "topic={}&topic={}&data=secret&private=on",
        url_encode("https://example.com/books/1"),
        url_encode("https://example.com/users/alice/?topic=https%3A%2F%2Fexample.com%2Fbooks%2F1"),
    );
    assert_eq!(publish(&server, &private).await.0, StatusCode::OK);
    publish(
        &server,
        &format!(
            "topic={}&data=end",
            url_encode("https://example.com/books/2")
        ),
    )
    .await;
    assert_eq!(data_until(&mut anonymous, "end").await, ["end"]);
    assert_eq!(data_until(&mut other_user, "end").await, ["end"]);
    for events in [&mut by_header, &mut by_cookie, &mut by_query] {
        assert_eq!(data_until(events, "end").await, ["secret", "end"]);
    }
}

#[tokio::test]
async fn the_header_token_wins_over_query_and_cookie() {
    let (_hub, server) = serve().await;
    let valid = subscriber(json!({"subscribe": ["*"]}));
    let forged = token(
        "not-the-subscriber-key-at-all-0123456789",
        &json!({"mercure": {"subscribe": ["*"]}}),
    );
    // A bad header token is refused even with a good cookie and query token.
    let url = server.url(&format!("{HUB}?topic=a&authorization={valid}"));
    let response = send(
        "GET",
        &url,
        &[
            ("authorization", &format!("Bearer {forged}")),
            ("cookie", &format!("mercureAuthorization={valid}")),
        ],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The query token wins over the cookie.
    let url = server.url(&format!("{HUB}?topic=a&authorization={forged}"));
    let response = send(
        "GET",
        &url,
        &[("cookie", &format!("mercureAuthorization={valid}"))],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // And a good header wins over a bad cookie.
    let url = server.url(&format!("{HUB}?topic=a"));
    let response = send(
        "GET",
        &url,
        &[
            ("authorization", &format!("Bearer {valid}")),
            ("cookie", &format!("mercureAuthorization={forged}")),
        ],
        "",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_stream_closes_when_its_token_expires() {
    let (_hub, server) = serve().await;
    // A token whose `exp` is a moment away.
    let expiring = token(
        SUBSCRIBER_KEY,
        &json!({"mercure": {"subscribe": ["*"]}, "exp": now() + 2}),
    );
    let (_, mut events) = subscribe_with(
        &server,
        &["a"],
        "",
        &[("authorization", &format!("Bearer {expiring}"))],
    )
    .await;
    publish(&server, "topic=a&data=before").await;
    assert_eq!(next_event(&mut events).await.data, "before");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while events.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended at the token's expiry");
}

#[tokio::test]
async fn reconciliation_replays_what_followed_and_says_where_it_started() {
    let (_hub, server) = serve().await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (status, id) = publish(&server, &format!("topic=a&data={n}")).await;
        assert_eq!(status, StatusCode::OK);
        ids.push(id);
    }

    // Last-Event-ID: what followed it, and the header names it back.
    let (head, mut events) =
        subscribe_with(&server, &["a"], "", &[("last-event-id", &ids[0])]).await;
    assert_eq!(head["last-event-id"], ids[0].as_str());
    assert_eq!(
        head["mercure-last-event-id"],
        ids[0].as_str(),
        "draft-08's name too"
    );
    assert_eq!(data_until(&mut events, "3").await, ["2", "3"]);

    // lastEventID in the query, for a first connection; the header wins over it.
    let (head, mut events) = subscribe_with(
        &server,
        &["a"],
        &format!("&lastEventID={}", url_encode(&ids[1])),
        &[],
    )
    .await;
    assert_eq!(head["last-event-id"], ids[1].as_str());
    assert_eq!(data_until(&mut events, "3").await, ["3"]);
    let (_, mut events) = subscribe_with(
        &server,
        &["a"],
        &format!("&lastEventID={}", url_encode(&ids[1])),
        &[("last-event-id", &ids[0])],
    )
    .await;
    assert_eq!(data_until(&mut events, "3").await, ["2", "3"]);
    // draft-08's `last_event_id` and `match`.
    let url = server.url(&format!(
        "{HUB}?match=a&last_event_id={}",
        url_encode(&ids[1])
    ));
    let mut events = test_support::http_client::events(send("GET", &url, &[], "").await);
    assert_eq!(data_until(&mut events, "3").await, ["3"]);

    // earliest: everything retained, and `earliest` in the header.
    let (head, mut events) = subscribe_with(&server, &["a"], "&lastEventID=earliest", &[]).await;
    assert_eq!(head["last-event-id"], "earliest");
    assert_eq!(data_until(&mut events, "3").await, ["1", "2", "3"]);

    // An id the hub never gave: everything retained, and `earliest`.
    let (head, mut events) = subscribe_with(
        &server,
        &["a"],
        "",
        &[("last-event-id", "urn:uuid:unknown")],
    )
    .await;
    assert_eq!(head["last-event-id"], "earliest");
    let notice = next_event(&mut events).await;
    assert_eq!(
        notice.event, "resync",
        "the crate's own notice says the id was unknown"
    );
    assert!(notice.data.contains("unknown"), "{}", notice.data);
    assert_eq!(data_until(&mut events, "3").await, ["1", "2", "3"]);

    // No resume point: no header.
    let (head, _events) = subscribe_with(&server, &["a"], "", &[]).await;
    assert!(head.get("last-event-id").is_none());
}

/// A browser's EventSource sends back the id it last saw as UTF-8 bytes in `Last-Event-ID`, so a
/// chosen id with non-ASCII characters (an IRI, as the protocol recommends) must resume where
/// it was, and be named back in the response header.
#[tokio::test]
async fn a_non_ascii_chosen_id_resumes_from_the_header() {
    let (_hub, server) = serve().await;
    let id = "https://example.com/livres/\u{e9}t\u{e9}#1";
    let (status, answered) =
        publish(&server, &format!("topic=a&data=1&id={}", url_encode(id))).await;
    assert_eq!((status, answered.as_str()), (StatusCode::OK, id));
    let (status, _) = publish(&server, "topic=a&data=2").await;
    assert_eq!(status, StatusCode::OK);

    let (head, mut events) = subscribe_with(&server, &["a"], "", &[("last-event-id", id)]).await;
    assert_eq!(head["last-event-id"].as_bytes(), id.as_bytes());
    assert!(head.get("sse-resume").is_none(), "nothing was missed");
    assert_eq!(data_until(&mut events, "2").await, ["2"]);

    // The same on the hub's own /events endpoint.
    let url = server.url("/events?topic=a");
    let response = send("GET", &url, &[("last-event-id", id)], "").await;
    assert!(response.headers().get("sse-resume").is_none());
    let mut events = test_support::http_client::events(response);
    assert_eq!(data_until(&mut events, "2").await, ["2"]);
}

#[tokio::test]
async fn unknown_match_parameters_and_missing_selectors_are_refused() {
    let (_hub, server) = serve().await;
    for path in [
        format!("{HUB}?match_urlpattern=%2Fbooks%2F%3Aid"),
        format!("{HUB}?matchx=a"),
        HUB.to_owned(),
    ] {
        let (status, _) = text_of(send("GET", &server.url(&path), &[], "").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
}

/// The next subscription update about a subscription to `selector`.
async fn next_subscription(events: &mut SseEvents, selector: &str) -> Value {
    loop {
        let update: Value = serde_json::from_str(&next_event(events).await.data).expect("JSON");
        if update["topic"] == selector {
            return update;
        }
    }
}

#[tokio::test]
async fn subscriptions_are_announced_privately_and_listed_by_the_api() {
    let (_hub, server) = serve().await;
    let watcher = subscriber(
        json!({"subscribe": ["/.well-known/mercure/subscriptions{/topic}{/subscriber}"]}),
    );
    let auth = format!("Bearer {watcher}");
    let (_, mut watch) = subscribe_with(
        &server,
        &["/.well-known/mercure/subscriptions{/topic}{/subscriber}"],
        "",
        &[("authorization", &auth)],
    )
    .await;
    let mut anonymous_watch = subscribe(
        &server,
        &["/.well-known/mercure/subscriptions{/topic}{/subscriber}"],
    )
    .await;

    // A subscriber with a payload opens a stream on one selector.
    let ada =
        subscriber(json!({"subscribe": ["https://example.com/{x}"], "payload": {"user": "ada"}}));
    let (_, ada_stream) = subscribe_with(
        &server,
        &["https://example.com/{selector}"],
        "",
        &[("authorization", &format!("Bearer {ada}"))],
    )
    .await;
    // The watchers' own subscriptions are announced first; ada's follows.
    let opened = next_subscription(&mut watch, "https://example.com/{selector}").await;
    assert_eq!(opened["@context"], "https://mercure.rocks/");
    assert_eq!(opened["type"], "Subscription");
    assert_eq!(opened["topic"], "https://example.com/{selector}");
    assert_eq!(opened["active"], true);
    assert_eq!(opened["payload"], json!({"user": "ada"}));
    let subscriber_id = opened["subscriber"].as_str().expect("an id").to_owned();
    assert!(subscriber_id.starts_with("urn:uuid:"));
    let expected_id = format!(
        "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bselector%7D/{}",
        url_encode(&subscriber_id)
    );
    assert_eq!(opened["id"], expected_id.as_str());

    // The API: the collection, by topic, one subscription, and 404.
    let api = |path: String| {
        let url = server.url(&path);
        let auth = auth.clone();
        async move { send("GET", &url, &[("authorization", &auth)], "").await }
    };
    let response = api(format!("{HUB}/subscriptions")).await;
    assert_eq!(response.headers()["content-type"], "application/ld+json");
    let (status, body) = text_of(response).await;
    assert_eq!(status, StatusCode::OK);
    let all: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(all["type"], "Subscriptions");
    assert_eq!(all["id"], "/.well-known/mercure/subscriptions");
    assert!(all["lastEventID"].is_string());
    let listed = all["subscriptions"].as_array().expect("an array");
    assert!(
        listed
            .iter()
            .any(|s| s["subscriber"] == subscriber_id.as_str()),
        "{body}"
    );
    let by_topic = format!(
        "{HUB}/subscriptions/{}",
        url_encode("https://example.com/{selector}")
    );
    let (_, body) = text_of(api(by_topic.clone()).await).await;
    let by_topic_doc: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        by_topic_doc["subscriptions"].as_array().map(Vec::len),
        Some(1)
    );
    let (status, body) =
        text_of(api(format!("{by_topic}/{}", url_encode(&subscriber_id))).await).await;
    assert_eq!(status, StatusCode::OK);
    let one: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(one["id"], expected_id.as_str());
    assert!(one["lastEventID"].is_string());
    let (status, _) = text_of(api(format!("{by_topic}/urn%3Auuid%3Anobody")).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The API is access-controlled like the updates.
    let url = server.url(&format!("{HUB}/subscriptions"));
    assert_eq!(
        send("GET", &url, &[], "").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let stranger = format!(
        "Bearer {}",
        subscriber(json!({"subscribe": ["https://example.com/{x}"]}))
    );
    assert_eq!(
        send("GET", &url, &[("authorization", &stranger)], "")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Closing the stream announces the subscription inactive.
    drop(ada_stream);
    let closed = next_subscription(&mut watch, "https://example.com/{selector}").await;
    assert_eq!(
        (closed["active"].clone(), closed["subscriber"].clone()),
        (json!(false), json!(subscriber_id))
    );

    // An anonymous subscriber of the same selector saw none of it (the updates are private),
    // only the public one published now.
    publish(
        &server,
        "topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx%2Fy&data=public",
    )
    .await;
    assert_eq!(next_event(&mut anonymous_watch).await.data, "public");
}

#[tokio::test]
async fn a_publish_with_the_cookie_must_come_from_the_hubs_own_origin() {
    let (hub, server) = serve().await;
    let mut events = subscribe(&server, &["a"]).await;
    let url = server.url(HUB);
    let cookie = format!("mercureAuthorization={}", publisher(&["*"]));
    let form = ("content-type", "application/x-www-form-urlencoded");
    let own = format!("http://{}", server.addr);
    for (headers, expected) in [
        (
            vec![form, ("cookie", cookie.as_str())],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                form,
                ("cookie", cookie.as_str()),
                ("origin", "https://evil.example"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                form,
                ("cookie", cookie.as_str()),
                ("referer", "https://evil.example/x"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![form, ("cookie", cookie.as_str()), ("origin", own.as_str())],
            StatusCode::OK,
        ),
    ] {
        let (status, reason) = text_of(send("POST", &url, &headers, "topic=a&data=x").await).await;
        assert_eq!(status, expected, "{headers:?}: {reason}");
    }
    assert_eq!(next_event(&mut events).await.data, "x");
    assert_eq!(
        hub.stats().events_published,
        1,
        "only the same-origin publish"
    );
}

#[tokio::test]
async fn the_hubs_own_endpoints_check_the_same_tokens() {
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(PUBLISHER_KEY).expect("key"))
        .subscriber_key(JwtKey::hs256(SUBSCRIBER_KEY).expect("key"))
        .build();
    let hub = Hub::builder()
        .mercure(MercureHub::new(tokens))
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    // No anonymous subscribers on the Mercure endpoint, and none through /events either.
    for path in [format!("{HUB}?topic=a"), "/events?topic=a".to_owned()] {
        let status = send("GET", &server.url(&path), &[], "").await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let reader = format!("Bearer {}", subscriber(json!({"subscribe": ["a"]})));
    let status = send(
        "GET",
        &server.url("/events?topic=a"),
        &[("authorization", &reader)],
        "",
    )
    .await
    .status();
    assert_eq!(status, StatusCode::OK, "a subscriber token opens /events");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let status = send("POST", &server.url("/publish"), &[form], "topic=a&data=x")
        .await
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let writer = format!("Bearer {}", publisher(&["a"]));
    let status = send(
        "POST",
        &server.url("/publish"),
        &[form, ("authorization", &writer)],
        "topic=a&data=x",
    )
    .await
    .status();
    assert_eq!(
        status,
        StatusCode::OK,
        "a publisher token publishes through /publish"
    );
}

#[tokio::test]
async fn the_longest_selector_encoded_whole_still_gets_its_subscription_update() {
    let (_hub, server) = serve().await;
    let template = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";
    let watcher = subscriber(json!({"subscribe": [template]}));
    let (_, mut watch) = subscribe_with(
        &server,
        &[template],
        "",
        &[("authorization", &format!("Bearer {watcher}"))],
    )
    .await;
    // 256 bytes, every one percent-encoded in the update's topic.
    let longest = ":".repeat(tower_sse_pubsub::MAX_SELECTOR_LEN);
    let _stream = subscribe(&server, &[&longest]).await;
    let opened = next_subscription(&mut watch, &longest).await;
    assert_eq!(opened["active"], true);
}

#[tokio::test]
async fn the_subscriptions_api_stays_at_its_well_known_place_when_the_hub_moves() {
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(PUBLISHER_KEY).expect("key"))
        .subscriber_key(JwtKey::hs256(SUBSCRIBER_KEY).expect("key"))
        .allow_anonymous_subscribe()
        .build();
    let hub = Hub::builder()
        .mercure(MercureHub::new(tokens).path("/hub").with_subscriptions())
        .build()
        .expect("valid hub");
    let server = TestServer::start(&hub, Router::new().layer(hub.layer())).await;
    let _stream =
        test_support::http_client::events(send("GET", &server.url("/hub?topic=a"), &[], "").await);
    let watcher = subscriber(
        json!({"subscribe": ["/.well-known/mercure/subscriptions{/topic}{/subscriber}"]}),
    );
    let auth = format!("Bearer {watcher}");
    let url = server.url("/.well-known/mercure/subscriptions/a");
    let (status, body) = text_of(send("GET", &url, &[("authorization", &auth)], "").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        listed["subscriptions"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    let moved = server.url("/hub/subscriptions");
    let status = send("GET", &moved, &[("authorization", &auth)], "")
        .await
        .status();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "not under the hub's own path"
    );
}
