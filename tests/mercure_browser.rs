//! The Mercure hub in a real browser: the page of `examples/mercure` in headless Chromium opens
//! an `EventSource` to `/.well-known/mercure` and shows the updates it receives; a public update
//! reaches every page, a private one only the page whose browser holds a subscriber token in the
//! `mercureAuthorization` cookie (set by the app, as the protocol recommends, scoped to the hub's
//! path and `HttpOnly`).
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`);
//! without them it skips, except under CI (see `tests/browser.rs` and `test_support::browser`).

#![cfg(feature = "mercure")]

mod common;

use axum::Router;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, Html, IntoResponse};
use axum::routing::get;
use common::http::TestServer;
use common::mercure::{send, text_of, token};
use http::StatusCode;
use serde_json::json;
use test_support::browser::{Browser, browser_tools};
use tower_sse_pubsub::Hub;
use tower_sse_pubsub::jwt::{JwtAuthorizer, JwtKey};
use tower_sse_pubsub::mercure::MercureHub;

const PAGE: &str = include_str!("../examples/mercure/index.html");
const PUBLISHER_KEY: &str = "publisher-secret-of-at-least-32-bytes!";
const SUBSCRIBER_KEY: &str = "subscriber-secret-of-at-least-32-bytes";

/// The example's hub and page, plus `/login`, which gives the browser a subscriber token for
/// the private updates of book 1 in the cookie.
async fn serve() -> (Hub, TestServer) {
    let tokens = JwtAuthorizer::builder(JwtKey::hs256(PUBLISHER_KEY).expect("key"))
        .subscriber_key(JwtKey::hs256(SUBSCRIBER_KEY).expect("key"))
        .allow_anonymous_subscribe()
        .build();
    let hub = Hub::builder()
        .mercure(MercureHub::new(tokens))
        .build()
        .expect("valid hub");
    let subscriber = token(
        SUBSCRIBER_KEY,
        &json!({"mercure": {"subscribe": ["https://example.com/books/1"]}}),
    );
    let cookie = format!(
        "mercureAuthorization={subscriber}; Path=/.well-known/mercure; HttpOnly; SameSite=Strict"
    );
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/login",
            get(move || {
                let cookie = cookie.clone();
                async move { (AppendHeaders([(SET_COOKIE, cookie)]), "signed in").into_response() }
            }),
        )
        .layer(hub.layer());
    let server = TestServer::start(&hub, app).await;
    (hub, server)
}

async fn publish(server: &TestServer, form: &str) {
    let publisher = token(PUBLISHER_KEY, &json!({"mercure": {"publish": ["*"]}}));
    let auth = format!("Bearer {publisher}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let url = server.url("/.well-known/mercure");
    let (status, body) = text_of(send("POST", &url, &headers, form).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits until the page's EventSource is open.
async fn wait_until_connected(page: &Browser) {
    page.wait_for(
        "the status \"connected\"",
        "return document.getElementById('status').textContent;",
        json!([]),
        |status| (status == "connected").then_some(()),
    )
    .await;
}

/// Waits until the page's log shows `data`, and returns the log's lines.
async fn wait_for_update(page: &Browser, data: &str) -> Vec<String> {
    page.wait_for(
        &format!("an update with {data:?}"),
        "return document.getElementById('log').textContent;",
        json!([]),
        |log| {
            let log = log.as_str()?;
            log.lines()
                .any(|line| line.ends_with(&format!(": {data}")))
                .then(|| log.lines().map(str::to_owned).collect())
        },
    )
    .await
}

#[tokio::test]
async fn an_eventsource_on_the_page_receives_public_updates_and_private_ones_with_the_cookie() {
    let Some(tools) = browser_tools() else { return };
    let (hub, server) = serve().await;
    let driver = test_support::browser::ChromeDriver::start(&tools).await;
    let (reader, anonymous) = tokio::join!(driver.new_session(), driver.new_session());

    // One browser signs in (the app sets the cookie), the other does not.
    reader.navigate(&server.url("/login")).await;
    let page = server.url("/");
    tokio::join!(reader.navigate(&page), anonymous.navigate(&page));
    tokio::join!(
        wait_until_connected(&reader),
        wait_until_connected(&anonymous)
    );
    assert_eq!(hub.subscriber_count(), 2);

    publish(
        &server,
        "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=public&id=urn%3Auuid%3Apublic-1",
    )
    .await;
    for page in [&reader, &anonymous] {
        let log = wait_for_update(page, "public").await;
        assert_eq!(log, ["urn:uuid:public-1: public"], "with its id");
    }

    publish(
        &server,
        "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=private&private=on",
    )
    .await;
    publish(
        &server,
        "topic=https%3A%2F%2Fexample.com%2Fbooks%2F2&data=end",
    )
    .await;
    let shown = |log: Vec<String>| -> Vec<String> {
        log.iter()
            .filter_map(|line| line.split_once(": ").map(|(_, data)| data.to_owned()))
            .collect()
    };
    let reader_log = wait_for_update(&reader, "end").await;
    assert_eq!(shown(reader_log), ["public", "private", "end"]);
    let anonymous_log = wait_for_update(&anonymous, "end").await;
    assert_eq!(
        shown(anonymous_log),
        ["public", "end"],
        "no private update without the cookie"
    );

    reader.quit().await;
    anonymous.quit().await;
}
