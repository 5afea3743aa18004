//! In a real browser: a page on one origin opens a credentialed `EventSource` to the app on
//! another, through the app's `CorsLayer`, login middleware and the hub's authorizer.
//!
//! **What.** Two servers on loopback: a page server on port A and the orders app on port B, so
//! `http://127.0.0.1:A` and `http://127.0.0.1:B` are different origins (the port is part of the
//! origin) but the same site, so the browser's third-party cookie rules stay out of the way. The
//! app allows the page's origin with credentials. Headless Chromium, driven over W3C WebDriver by
//! its own `chromedriver`, loads the page, which sets the session cookie (cookies are shared by
//! every port of a host) and opens one `EventSource` with `withCredentials: true` and one
//! without.
//!
//! **How to run.** `cargo test -p integration-axum --test browser` (add `-- --nocapture` to see
//! the skip notice, if any).
//!
//! **What it needs.** `chromium` and `chromedriver` on `PATH`. When either is missing, the test
//! prints a skip notice and passes, unless the environment variable `CI` is set to a non-empty
//! value: there a missing browser fails the test instead of silently skipping it. The
//! chromedriver launcher, that skipping policy and the WebDriver client are the workspace's
//! `test-support` crate ([`test_support::browser`]), shared with the root crate's
//! `tests/browser.rs`; every wait is bounded ([`WAIT_LIMIT`]) and nothing sleeps to synchronise.

mod common;

use std::collections::HashSet;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use common::{TestServer, place_order};
use http::{HeaderValue, StatusCode};
use integration_axum::{AppConfig, AppState};
use serde_json::json;
use test_support::WAIT_LIMIT;
use test_support::browser::{ChromeDriver, browser_tools};
use tokio::time::timeout;

/// The page on the other origin. `?api=` names the app's origin; `watch(name, withCredentials)`
/// opens an event stream on `orders` and records what happens to it in `window[name]`.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>orders, from another origin</title>
<script>
const api = new URLSearchParams(location.search).get('api');
function watch(name, withCredentials) {
  const state = { opened: false, failed: false, readyState: 0, items: [] };
  window[name] = state;
  const source = new EventSource(api + '/events?topic=orders', { withCredentials });
  source.onopen = () => { state.opened = true; state.readyState = source.readyState; };
  source.onerror = () => { state.failed = true; state.readyState = source.readyState; };
  source.addEventListener('created', (e) => state.items.push(JSON.parse(e.data).item));
}
</script>
"#;

// ---------------------------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------------------------

/// `new EventSource(url, { withCredentials: true })` from an allowed origin sends the session
/// cookie, passes CORS and the hub's authorizer, and receives events; without credentials the
/// same stream is refused (401) and the browser gives up on it.
#[tokio::test]
async fn a_page_on_another_origin_subscribes_with_credentials() {
    let Some(tools) = browser_tools() else { return };

    // The page's origin must be known before the app is configured to allow it.
    let page_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let page_origin = format!("http://{}", page_listener.local_addr().expect("local addr"));
    let page_server = tokio::spawn(
        axum::serve(
            page_listener,
            Router::new().route("/", get(|| async { Html(PAGE) })),
        )
        .into_future(),
    );
    let config = AppConfig {
        allowed_origins: vec![HeaderValue::from_str(&page_origin).expect("a valid origin")],
        admins: HashSet::new(),
    };
    let mut api = TestServer::start(AppState::new(config).expect("valid app state")).await;
    let api_origin = format!("http://{}", api.addr);
    assert_ne!(page_origin, api_origin);

    let driver = ChromeDriver::start(&tools).await;
    let browser = driver.new_session().await;
    browser
        .navigate(&format!("{page_origin}/?api={api_origin}"))
        .await;
    browser
        .execute(
            "document.cookie = 'session=ada; path=/';
             watch('credentialed', true);
             watch('anonymous', false);",
            json!([]),
        )
        .await;

    browser
        .wait_for(
            "the credentialed stream to open",
            "return window.credentialed;",
            json!([]),
            |state| (state["opened"] == true && state["readyState"] == 1).then_some(()),
        )
        .await;
    // EventSource does not reconnect after a non-200 status: it closes (readyState 2).
    browser
        .wait_for(
            "the stream without credentials to be refused",
            "return window.anonymous;",
            json!([]),
            |state| (state["failed"] == true && state["readyState"] == 2).then_some(()),
        )
        .await;
    assert_eq!(
        api.state.hub().subscriber_count(),
        1,
        "only the credentialed stream is open"
    );

    let placed = place_order(&api, "ada", "tea", 1).await;
    assert_eq!(placed.status, StatusCode::CREATED);
    browser
        .wait_for(
            "the order to arrive in the page",
            "return window.credentialed.items;",
            json!([]),
            |items| (*items == json!(["tea"])).then_some(()),
        )
        .await;
    let anonymous = browser.execute("return window.anonymous;", json!([])).await;
    assert_eq!(anonymous["opened"], false, "{anonymous}");
    assert_eq!(anonymous["items"], json!([]), "{anonymous}");

    browser.quit().await;
    drop(driver);
    api.stop();
    timeout(WAIT_LIMIT, &mut api.task)
        .await
        .expect("the app shuts down in time")
        .expect("the app task does not panic")
        .expect("the app shuts down cleanly");
    page_server.abort();
}
