//! End to end in a real browser: the chat page of `examples/chat` in headless Chromium.
//!
//! **What.** Each test serves the same app as `cargo run --features axum --example chat` (the page at `/`, the
//! hub's `GET /events` and `POST /publish`) on a loopback port, starts its own `chromedriver`, and
//! drives headless Chromium windows through the W3C WebDriver HTTP API the way a person uses the
//! page: open it, wait for the connection, type a name and a message, press Send, and read what
//! the windows show.
//!
//! **How to run.**
//!
//! ```text
//! cargo test --test browser
//! cargo test --test browser -- --nocapture    # also shows the skip notice, if any
//! ```
//!
//! **What it needs.** `chromium` and `chromedriver` on `PATH` (Debian: `apt-get install chromium
//! chromium-driver`). When either is missing, each test prints a skip notice and passes, unless
//! the environment variable `CI` is set to a non-empty value: CI installs both (see `.ci/run`), so
//! there a missing browser fails the test instead of silently skipping it.
//!
//! **How it is built.** The chromedriver launcher, the skipping policy and the small WebDriver
//! client live in the workspace's `test-support` crate ([`test_support::browser`]), shared with
//! the integrations' browser tests; this file holds the app and the page as a user sees it. Every
//! wait polls the page with a bound ([`WAIT_LIMIT`]) and fails with what the page showed; nothing
//! sleeps to synchronise. Dropping the [`ChromeDriver`] shuts it down (which quits every browser
//! it started) and deletes the temporary browser profiles, also when an assertion fails.

mod common;

use std::time::Duration;

use common::chat;
use common::http::{TestServer, post_form};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use test_support::WAIT_LIMIT;
use test_support::browser::{Browser, BrowserTools, ChromeDriver, ENTER, browser_tools};
use tokio::time::timeout;
use tower_sse_pubsub::Hub;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Two people chat: what one sends appears in the other's window, with name and time.
#[tokio::test]
async fn two_browsers_chat_through_the_hub() {
    let Some(tools) = browser_tools() else { return };
    let hub = chat::hub(Hub::builder());
    let server = TestServer::start(&hub, chat::app(&hub)).await;
    let driver = ChromeDriver::start(&tools).await;
    let (ada, grace) = tokio::join!(driver.new_session(), driver.new_session());
    let (ada, grace) = (ChatPage(ada), ChatPage(grace));

    let page_url = server.url("/");
    tokio::join!(ada.open(&page_url), grace.open(&page_url));
    tokio::join!(ada.wait_until_connected(), grace.wait_until_connected());
    assert_eq!(hub.subscriber_count(), 2, "both pages hold an event stream");

    // Ada sends with the button.
    ada.set_name("Ada").await;
    ada.type_message("hello").await;
    ada.press_send().await;

    let seen_by_grace = grace.wait_for_message("hello").await;
    assert_eq!(seen_by_grace.from, "Ada");
    assert!(
        !seen_by_grace.plain,
        "a page message is not shown as plain text"
    );
    assert!(
        seen_by_grace.time.chars().any(|c| c.is_ascii_digit()),
        "the message shows a time, got {:?}",
        seen_by_grace.time
    );
    assert!(
        seen_by_grace.recent,
        "the time is the moment it was sent, got {:?}",
        seen_by_grace.date_time
    );
    let seen_by_ada = ada.wait_for_message("hello").await;
    assert_eq!(
        seen_by_ada.from, "Ada",
        "the sender sees her own message too"
    );
    ada.wait_until_sent().await;

    // Grace answers with the Enter key.
    grace.set_name("Grace").await;
    grace.type_message(&format!("hi Ada{ENTER}")).await;
    let reply = ada.wait_for_message("hi Ada").await;
    assert_eq!(reply.from, "Grace");
    grace.wait_until_sent().await;

    for page in [&ada, &grace] {
        let texts: Vec<String> = page.messages().await.into_iter().map(|m| m.text).collect();
        assert_eq!(texts, ["hello", "hi Ada"], "each message once, in order");
    }

    ada.quit().await;
    grace.quit().await;
}

/// Whatever arrives is shown as text: markup in a name or a message is never interpreted.
#[tokio::test]
async fn messages_render_as_text_not_html() {
    let Some(tools) = browser_tools() else { return };
    let OneChat {
        page,
        server: _server,
        driver: _driver,
    } = OneChat::open(&tools).await;

    let name = "<i>Mallory</i>";
    let text = r#"<img src=x onerror="window.pwned=1"><b>bold</b>"#;
    page.set_name(name).await;
    page.type_message(text).await;
    page.press_send().await;

    let shown = page.wait_for_message(text).await;
    assert_eq!(shown.from, name, "the name is shown literally");
    let markup = page.markup_in_messages().await;
    assert_eq!(
        markup.tags,
        ["li", "span", "time"],
        "the message list holds only the page's own elements, none made from the message"
    );
    assert_eq!(markup.pwned, "undefined", "no script from a message ran");

    page.quit().await;
}

/// A terminal joins in: a plain form POST (what `curl -d` sends) shows up as a plain-text message.
#[tokio::test]
async fn plain_text_published_with_curl_shows_up() {
    let Some(tools) = browser_tools() else { return };
    let OneChat {
        page,
        server,
        driver: _driver,
    } = OneChat::open(&tools).await;

    // Exactly what `curl -d topic=chat -d data='hello from curl'` sends (curl does not encode).
    let (status, id) = post_form(&server.url("/publish"), "topic=chat&data=hello from curl").await;
    assert_eq!(status, StatusCode::OK, "publish answered {id:?}");
    assert!(!id.trim().is_empty(), "publish answers the event id");

    let shown = page.wait_for_message("hello from curl").await;
    assert_eq!(shown.from, "(plain text)");
    assert!(
        shown.plain,
        "data that is not the page's JSON is marked as plain text"
    );
    assert!(
        shown.recent,
        "plain text is stamped with the time it arrived"
    );

    // A CRLF in the data travels as two `data:` lines and arrives as one LF.
    let (status, _) = post_form(
        &server.url("/publish"),
        "topic=chat&data=first line%0D%0Asecond line",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let shown = page.wait_for_message("first line\nsecond line").await;
    assert!(shown.plain);

    page.quit().await;
}

/// The server restarts: the page reconnects on its own, says that messages may have been missed
/// (the new broker does not know its last event id), and keeps receiving.
#[tokio::test]
async fn resync_notice_after_server_restart() {
    let Some(tools) = browser_tools() else { return };
    // A short shutdown retry, so the page reconnects within a fraction of a second.
    let retry = Duration::from_millis(200);
    let first_hub = chat::hub(Hub::builder().shutdown_retry(retry));
    let mut first = TestServer::start(&first_hub, chat::app(&first_hub)).await;
    let driver = ChromeDriver::start(&tools).await;
    let page = ChatPage(driver.new_session().await);
    page.open(&first.url("/")).await;
    page.wait_until_connected().await;

    // The page must have an event id to resume from.
    let (status, _) = post_form(&first.url("/publish"), "topic=chat&data=before the restart").await;
    assert_eq!(status, StatusCode::OK);
    page.wait_for_message("before the restart").await;

    // Stop the server (the hub ends the page's stream) and start a new one on the same address,
    // with a new hub and so a new in-memory broker.
    first.stop();
    timeout(WAIT_LIMIT, &mut first.task)
        .await
        .expect("the first server shuts down in time")
        .expect("the first server task does not panic")
        .expect("the first server shuts down cleanly");
    let second_hub = chat::hub(Hub::builder());
    let listener = tokio::net::TcpListener::bind(first.addr)
        .await
        .expect("listen again on the address the page knows");
    let second = tokio::spawn(axum::serve(listener, chat::app(&second_hub)).into_future());

    let notices = page.wait_for_notices().await;
    assert_eq!(
        notices,
        ["Reconnected, but some messages may have been missed."],
        "one notice for the one reconnect that could not resume"
    );
    page.wait_until_connected().await;

    let (status, _) = post_form(&first.url("/publish"), "topic=chat&data=after the restart").await;
    assert_eq!(status, StatusCode::OK);
    page.wait_for_message("after the restart").await;
    let texts: Vec<String> = page.messages().await.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["before the restart", "after the restart"]);

    page.quit().await;
    second_hub.shutdown();
    second.abort();
}

// ---------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------

/// The example's hub: anyone may publish over HTTP.
/// The chat app on a fresh hub, and one page connected to it in a fresh browser.
struct OneChat {
    page: ChatPage,
    server: TestServer,
    driver: ChromeDriver,
}

impl OneChat {
    async fn open(tools: &BrowserTools) -> Self {
        let hub = chat::hub(Hub::builder());
        let server = TestServer::start(&hub, chat::app(&hub)).await;
        let driver = ChromeDriver::start(tools).await;
        let page = ChatPage(driver.new_session().await);
        page.open(&server.url("/")).await;
        page.wait_until_connected().await;
        Self {
            page,
            server,
            driver,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The chat page, as a user sees it
// ---------------------------------------------------------------------------------------------

/// A message as the page shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShownMessage {
    /// The sender, or `(plain text)`.
    from: String,
    text: String,
    /// The time as displayed.
    time: String,
    /// The `datetime` attribute of the time element.
    date_time: String,
    /// Marked as plain text (not the page's JSON).
    plain: bool,
    /// `date_time` lies within a minute of the browser's clock.
    recent: bool,
}

/// What the message list is made of.
#[derive(Debug, Deserialize)]
struct Markup {
    /// Element names found inside the list, sorted, each once.
    tags: Vec<String>,
    /// `typeof window.pwned`.
    pwned: String,
}

/// Reads the message list (notices excluded) as [`ShownMessage`]s.
const READ_MESSAGES: &str = "
function readMessages() {
  return Array.from(document.querySelectorAll('#messages li:not(.notice)'), (item) => {
    const text = (selector) => item.querySelector(selector)?.textContent ?? '';
    const time = item.querySelector('time');
    const sent = Date.parse(time?.dateTime ?? '');
    return {
      from: text('.from'),
      text: text('.text'),
      time: text('time'),
      dateTime: time?.dateTime ?? '',
      plain: item.querySelector('.from')?.classList.contains('plain') ?? false,
      recent: Math.abs(sent - Date.now()) < 60000,
    };
  });
}";

/// The chat page in one browser window.
struct ChatPage(Browser);

impl ChatPage {
    async fn open(&self, url: &str) {
        self.0.navigate(url).await;
    }

    /// Waits until the status badge says the event stream is open.
    async fn wait_until_connected(&self) {
        self.0
            .wait_for(
                "the status \"open\"",
                "const status = document.getElementById('status');
                 return [status.textContent, status.className];",
                json!([]),
                |status| (*status == json!(["open", "open"])).then_some(()),
            )
            .await;
    }

    /// Replaces the name in the name field.
    async fn set_name(&self, name: &str) {
        let field = self.0.find("#name").await;
        self.0.clear(&field).await;
        self.0.send_keys(&field, name).await;
    }

    /// Types into the message field.
    async fn type_message(&self, text: &str) {
        let field = self.0.find("#text").await;
        self.0.send_keys(&field, text).await;
    }

    /// Clicks the Send button.
    async fn press_send(&self) {
        let button = self.0.find("#send").await;
        self.0.click(&button).await;
    }

    /// Waits until the page has taken a message as sent: the field is empty, no error shown.
    async fn wait_until_sent(&self) {
        self.0
            .wait_for(
                "the message field to be emptied after sending",
                "return [document.getElementById('text').value,
                         document.getElementById('error').textContent,
                         document.getElementById('send').disabled];",
                json!([]),
                |state| (*state == json!(["", "", false])).then_some(()),
            )
            .await;
    }

    /// Waits until a message with exactly this text is shown, and returns it.
    async fn wait_for_message(&self, text: &str) -> ShownMessage {
        let script = format!(
            "{READ_MESSAGES}
             return readMessages().find((message) => message.text === arguments[0]) ?? null;"
        );
        self.0
            .wait_for(
                &format!("a message {text:?}"),
                &script,
                json!([text]),
                |found| serde_json::from_value(found.clone()).ok(),
            )
            .await
    }

    /// Waits until the page shows at least one notice, and returns the notices.
    async fn wait_for_notices(&self) -> Vec<String> {
        self.0
            .wait_for(
                "a notice in the message list",
                "return Array.from(document.querySelectorAll('#messages li.notice'),
                                   (item) => item.textContent);",
                json!([]),
                |notices| {
                    serde_json::from_value::<Vec<String>>(notices.clone())
                        .ok()
                        .filter(|notices| !notices.is_empty())
                },
            )
            .await
    }

    /// Which kinds of elements the message list holds, and whether a script set `window.pwned`.
    async fn markup_in_messages(&self) -> Markup {
        let found = self
            .0
            .execute(
                "const tags = new Set(Array.from(document.querySelectorAll('#messages *'),
                                                 (node) => node.localName));
                 return { tags: Array.from(tags).sort(), pwned: typeof window.pwned };",
                json!([]),
            )
            .await;
        serde_json::from_value(found.clone())
            .unwrap_or_else(|error| panic!("unexpected markup report {found}: {error}"))
    }

    /// Every message shown, oldest first.
    async fn messages(&self) -> Vec<ShownMessage> {
        let shown = self
            .0
            .execute(
                &format!("{READ_MESSAGES}\nreturn readMessages();"),
                json!([]),
            )
            .await;
        serde_json::from_value(shown.clone())
            .unwrap_or_else(|error| panic!("unexpected message list {shown}: {error}"))
    }

    /// Closes the window.
    async fn quit(self) {
        self.0.quit().await;
    }
}
