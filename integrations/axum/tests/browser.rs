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
//! value: there a missing browser fails the test instead of silently skipping it. The WebDriver
//! client is the part of the root crate's `tests/browser.rs` this test needs; every wait is
//! bounded ([`WAIT_LIMIT`]) and nothing sleeps to synchronise.

mod common;

use std::collections::HashSet;
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
use common::{TestServer, place_order};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use integration_axum::{AppConfig, AppState};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};

/// How long chromedriver may take to start and report that it is ready.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(20);
/// How long one WebDriver command may take (starting a browser is the slowest).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// How long a condition on the page may take to become true.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// Pause between two looks at the page (or at chromedriver's status) while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

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
            client: common::client(),
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
        "integration-axum-browser-{}-{}-{nanos}",
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
