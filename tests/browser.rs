//! End to end in a real browser: the chat page of `examples/chat` in headless Chromium.
//!
//! **What.** Each test serves the same app as `cargo run --example chat` (the page at `/`, the
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
//! **How it is built.** The WebDriver client below is deliberately small: only the commands these
//! tests use, over the same hyper client as the other tests. chromedriver is started with
//! `--port=0` and prints the port it chose, so there is no port to guess. Every wait polls the
//! page with a bound ([`WAIT_LIMIT`]) and fails with what the page showed; nothing sleeps to
//! synchronise. A guard shuts chromedriver down (which quits every browser it started), kills it
//! if it does not exit, and deletes the temporary browser profiles, also when an assertion fails.

mod common;

use std::env;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use bytes::Bytes;
use common::http::{TestServer, post_form};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use tower_sse_pubsub::{Hub, HubBuilder};

/// The chat page, exactly as the example serves it.
const PAGE: &str = include_str!("../examples/chat/index.html");

/// How long chromedriver may take to start and report that it is ready.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(20);
/// How long one WebDriver command may take (starting a browser is the slowest).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How long a condition on the page may take to become true.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Pause between two looks at the page (or at chromedriver's status) while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The W3C key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The Enter key, as WebDriver's "send keys" spells it.
const ENTER: &str = "\u{E007}";

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Two people chat: what one sends appears in the other's window, with name and time.
#[tokio::test]
async fn two_browsers_chat_through_the_hub() {
    let Some(tools) = browser_tools() else { return };
    let hub = chat_hub(Hub::builder());
    let server = TestServer::start(&hub, chat_app(&hub)).await;
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
    let hub = chat_hub(Hub::builder());
    let server = TestServer::start(&hub, chat_app(&hub)).await;
    let driver = ChromeDriver::start(&tools).await;
    let page = ChatPage(driver.new_session().await);
    page.open(&server.url("/")).await;
    page.wait_until_connected().await;

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
    let hub = chat_hub(Hub::builder());
    let server = TestServer::start(&hub, chat_app(&hub)).await;
    let driver = ChromeDriver::start(&tools).await;
    let page = ChatPage(driver.new_session().await);
    page.open(&server.url("/")).await;
    page.wait_until_connected().await;

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
    let first_hub = chat_hub(Hub::builder().shutdown_retry(retry));
    let mut first = TestServer::start(&first_hub, chat_app(&first_hub)).await;
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
    let second_hub = chat_hub(Hub::builder());
    let listener = tokio::net::TcpListener::bind(first.addr)
        .await
        .expect("listen again on the address the page knows");
    let second = tokio::spawn(axum::serve(listener, chat_app(&second_hub)).into_future());

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
fn chat_hub(builder: HubBuilder) -> Hub {
    builder
        .allow_anonymous_publish()
        .build()
        .expect("a valid hub configuration")
}

/// The example's app: the page, and the hub's endpoints in front of it.
fn chat_app(hub: &Hub) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .layer(hub.layer())
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

// ---------------------------------------------------------------------------------------------
// Finding the browser, and the skipping policy
// ---------------------------------------------------------------------------------------------

/// The programs the tests drive.
struct BrowserTools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// Finds `chromium` and `chromedriver` on `PATH`. When one is missing, the test fails if `CI` is
/// set (CI installs both, so a missing browser there is a broken setup, not a reason to skip);
/// otherwise it prints a skip notice and the caller returns.
fn browser_tools() -> Option<BrowserTools> {
    let chromium = find_on_path("chromium");
    let chromedriver = find_on_path("chromedriver");
    if let (Some(chromium), Some(chromedriver)) = (&chromium, &chromedriver) {
        return Some(BrowserTools {
            chromium: chromium.clone(),
            chromedriver: chromedriver.clone(),
        });
    }
    let missing: Vec<&str> = [("chromium", &chromium), ("chromedriver", &chromedriver)]
        .into_iter()
        .filter(|(_, found)| found.is_none())
        .map(|(name, _)| name)
        .collect();
    let in_ci = env::var_os("CI").is_some_and(|value| !value.is_empty());
    assert!(
        !in_ci,
        "browser test: {} not found on PATH, and CI is set, so the test may not skip; \
         install them with `apt-get install chromium chromium-driver`",
        missing.join(" and ")
    );
    println!(
        "skipping browser test: install chromium and chromium-driver \
         (apt-get install chromium chromium-driver)"
    );
    None
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------------------------
// chromedriver: the process, and a minimal W3C WebDriver client
// ---------------------------------------------------------------------------------------------

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A running chromedriver. Dropping it quits every browser it started, stops it, and deletes
/// the browser profiles.
struct ChromeDriver {
    child: Child,
    /// Known once chromedriver has reported it.
    port: Option<u16>,
    chromium: PathBuf,
    /// Holds one fresh profile directory per session.
    profiles: PathBuf,
    sessions: AtomicUsize,
    client: HttpClient,
}

impl ChromeDriver {
    /// Starts chromedriver on a port of its choosing and waits until it is ready for sessions.
    async fn start(tools: &BrowserTools) -> Self {
        let profiles = unique_temp_dir();
        std::fs::create_dir_all(&profiles)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", profiles.display()));
        let mut child = Command::new(&tools.chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {}: {error}", tools.chromedriver.display())
            });
        let stdout = child.stdout.take().expect("chromedriver's stdout is piped");
        // From here on the guard owns the process, so a failure below still ends it.
        let mut driver = Self {
            child,
            port: None,
            chromium: tools.chromium.clone(),
            profiles,
            sessions: AtomicUsize::new(0),
            client: common::http::client(),
        };

        // chromedriver prints "ChromeDriver was started successfully on port N." when it
        // listens. A thread reads that line, then keeps draining the pipe so chromedriver never
        // blocks on a full pipe (or dies writing to a closed one).
        let (port_tx, port_rx) = oneshot::channel::<u16>();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let port = line
                    .split_once("started successfully on port ")
                    .and_then(|(_, rest)| rest.trim_end_matches('.').trim().parse().ok());
                if let Some(port) = port
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = match timeout(DRIVER_START_LIMIT, port_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => panic!(
                "chromedriver ended before reporting its port (exit status: {:?})",
                driver.child.try_wait()
            ),
            Err(_) => panic!("chromedriver did not report its port within {DRIVER_START_LIMIT:?}"),
        };
        driver.port = Some(port);

        // It listens already; /status also says whether it can start sessions.
        let deadline = Instant::now() + DRIVER_START_LIMIT;
        loop {
            let status = driver.try_get("/status").await;
            if status.as_ref().is_ok_and(|value| value["ready"] == true) {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {port} not ready within {DRIVER_START_LIMIT:?}: {status:?}"
            );
            sleep(POLL_INTERVAL).await;
        }
    }

    fn url(&self, path: &str) -> String {
        let port = self.port.expect("chromedriver's port is known");
        format!("http://127.0.0.1:{port}{path}")
    }

    async fn try_get(&self, path: &str) -> Result<Value, String> {
        webdriver_request(&self.client, Method::GET, &self.url(path), None).await
    }

    /// Starts a headless Chromium with a fresh profile.
    async fn new_session(&self) -> Browser {
        let number = self.sessions.fetch_add(1, Ordering::Relaxed);
        let profile = self.profiles.join(format!("profile-{number}"));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                ],
                // Start on about:blank. By default the first tab loads the new-tab page, which
                // can stall for seconds without network access, and chromedriver waits for it
                // before the first navigation.
                "prefs": {
                    "session.restore_on_startup": 4,
                    "session.startup_urls": ["about:blank"],
                },
            },
        }}});
        let url = self.url("/session");
        let session = webdriver_request(&self.client, Method::POST, &url, Some(&capabilities))
            .await
            .unwrap_or_else(|error| panic!("cannot start a browser session: {error}"));
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("new session answer without sessionId: {session}"));
        Browser {
            client: self.client.clone(),
            session: self.url(&format!("/session/{id}")),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // chromedriver's /shutdown quits every browser it started, then exits; killing it
        // outright would leave the browsers running. Without a port it started no browser.
        if let Some(port) = self.port {
            match request_shutdown(port) {
                Ok(()) => {
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while matches!(self.child.try_wait(), Ok(None))
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(POLL_INTERVAL);
                    }
                }
                Err(error) => eprintln!("browser test: chromedriver /shutdown failed: {error}"),
            }
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// `GET /shutdown` with a blocking socket, as `Drop` cannot await.
fn request_shutdown(port: u16) -> std::io::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    // The answer comes once the browsers are gone; its content does not matter.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}

/// A directory name under the system's temporary directory that no other test run uses.
fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    env::temp_dir().join(format!(
        "tower-sse-pubsub-browser-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// One browser session (one window).
struct Browser {
    client: HttpClient,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
}

/// An element reference from "find element".
struct Element(String);

impl Browser {
    /// Sends a command for this session; panics with WebDriver's error otherwise.
    async fn command(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.session);
        webdriver_request(&self.client, method, &url, body)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Loads a page and waits for it to load.
    async fn navigate(&self, url: &str) {
        self.command(Method::POST, "/url", Some(&json!({ "url": url })))
            .await;
    }

    /// The first element matching a CSS selector.
    async fn find(&self, css: &str) -> Element {
        let body = json!({ "using": "css selector", "value": css });
        let found = self.command(Method::POST, "/element", Some(&body)).await;
        let id = found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("find {css:?} answered without an element: {found}"));
        Element(id.to_owned())
    }

    async fn clear(&self, element: &Element) {
        let path = format!("/element/{}/clear", element.0);
        self.command(Method::POST, &path, Some(&json!({}))).await;
    }

    /// Types text into an element (WebDriver key codes such as [`ENTER`] press keys).
    async fn send_keys(&self, element: &Element, text: &str) {
        let path = format!("/element/{}/value", element.0);
        self.command(Method::POST, &path, Some(&json!({ "text": text })))
            .await;
    }

    async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.0);
        self.command(Method::POST, &path, Some(&json!({}))).await;
    }

    /// Runs a script in the page (a function body; `arguments` holds `args`) and returns its
    /// result.
    async fn execute(&self, script: &str, args: Value) -> Value {
        let body = json!({ "script": script, "args": args });
        self.command(Method::POST, "/execute/sync", Some(&body))
            .await
    }

    /// Runs `script` until `accept` takes its result, at most [`WAIT_LIMIT`]; on timeout, fails
    /// with `what` and the page's text.
    async fn wait_for<T>(
        &self,
        what: &str,
        script: &str,
        args: Value,
        accept: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let value = self.execute(script, args.clone()).await;
            if let Some(accepted) = accept(&value) {
                return accepted;
            }
            if Instant::now() >= deadline {
                let page = self
                    .execute("return document.body.innerText;", json!([]))
                    .await;
                panic!(
                    "timed out after {WAIT_LIMIT:?} waiting for {what}; last result: {value}; \
                     the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Ends the session, closing the browser.
    async fn quit(self) {
        self.command(Method::DELETE, "", None).await;
    }
}

/// One WebDriver command: sends `body` as JSON and returns the answer's `value`, or an error
/// that names the command and carries WebDriver's error code and message.
async fn webdriver_request(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let command = format!("WebDriver {method} {url}");
    let mut request = Request::builder().method(method).uri(url);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json; charset=utf-8");
            Full::new(Bytes::from(body.to_string()))
        }
        None => Full::default(),
    };
    let request = request
        .body(body)
        .map_err(|error| format!("{command}: invalid request: {error}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|error| format!("{command}: {error}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("{command}: reading the answer: {error}"))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = timeout(COMMAND_LIMIT, exchange)
        .await
        .map_err(|_| format!("{command}: no answer within {COMMAND_LIMIT:?}"))??;
    let answer: Value = serde_json::from_slice(&bytes).map_err(|error| {
        format!(
            "{command}: answer {status} is not JSON ({error}): {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{command} failed with {status}, {}: {}",
            value["error"].as_str().unwrap_or("(no error code)"),
            value["message"].as_str().unwrap_or("(no message)")
        ))
    }
}
