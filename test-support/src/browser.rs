//! Headless Chromium, driven through its own `chromedriver` over the W3C WebDriver HTTP API.
//!
//! **Use.** A test calls [`browser_tools`] first and returns when it gives `None`, starts a
//! [`ChromeDriver`], opens one [`Browser`] (one window) per person it plays, and drives the page
//! the way a person would: [`Browser::navigate`], [`Browser::find`], [`Browser::send_keys`],
//! [`Browser::click`], and [`Browser::execute`] or [`Browser::wait_for`] to read what the page
//! shows.
//!
//! ```no_run
//! use serde_json::json;
//! use test_support::browser::{ChromeDriver, browser_tools};
//!
//! async fn a_test() {
//!     let Some(tools) = browser_tools() else { return };
//!     let driver = ChromeDriver::start(&tools).await;
//!     let browser = driver.new_session().await;
//!     browser.navigate("http://127.0.0.1:8080/").await;
//!     let title = browser.execute("return document.title;", json!([])).await;
//!     assert_eq!(title, "chat");
//!     browser.quit().await;
//! }
//! ```
//!
//! **What it needs.** `chromium` and `chromedriver` on `PATH` (Debian: `apt-get install chromium
//! chromium-driver`). When either is missing, [`browser_tools`] prints a skip notice and the test
//! passes, unless the environment variable `CI` is set to a non-empty value: CI installs both, so
//! there a missing browser fails the test instead of silently skipping it.
//!
//! **How it is built.** The client is deliberately small: only the commands the tests use, over
//! the same hyper client as the other tests ([`crate::http_client::client`]). chromedriver is
//! started with `--port=0` and prints the port it chose, so there is no port to guess. Every
//! wait polls with a bound ([`DRIVER_START_LIMIT`], [`COMMAND_LIMIT`], [`WAIT_LIMIT`]) and fails
//! with what it saw; nothing sleeps to synchronise. Dropping the [`ChromeDriver`] shuts it down
//! (which quits every browser it started), kills it if it does not exit, and deletes the
//! temporary browser profiles, also when an assertion has failed.

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};

use crate::WAIT_LIMIT;
use crate::http_client::{HttpClient, client};

/// How long chromedriver may take to start and report that it is ready.
pub const DRIVER_START_LIMIT: Duration = Duration::from_secs(20);
/// How long one WebDriver command may take (starting a browser is the slowest).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// Pause between two looks at the page (or at chromedriver's status) while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The W3C key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The Enter key, as WebDriver's "send keys" spells it: put it in the text given to
/// [`Browser::send_keys`] to press Enter.
pub const ENTER: &str = "\u{E007}";

// ---------------------------------------------------------------------------------------------
// Finding the browser, and the skipping policy
// ---------------------------------------------------------------------------------------------

/// The programs a browser test drives, as [`browser_tools`] found them.
pub struct BrowserTools {
    /// The Chromium binary each session runs.
    pub chromium: PathBuf,
    /// The chromedriver binary [`ChromeDriver::start`] runs.
    pub chromedriver: PathBuf,
}

/// Finds `chromium` and `chromedriver` on `PATH`. When one is missing, the test fails if `CI` is
/// set (CI installs both, so a missing browser there is a broken setup, not a reason to skip);
/// otherwise it prints a skip notice and the caller returns.
///
/// # Panics
///
/// When a program is missing and `CI` is set to a non-empty value.
pub fn browser_tools() -> Option<BrowserTools> {
    let found = crate::tools::require(
        &["chromium", "chromedriver"],
        "install them with `apt-get install chromium chromium-driver`",
    )?;
    let [chromium, chromedriver]: [PathBuf; 2] = found.try_into().ok()?;
    Some(BrowserTools {
        chromium,
        chromedriver,
    })
}

// ---------------------------------------------------------------------------------------------
// chromedriver: the process, and a minimal W3C WebDriver client
// ---------------------------------------------------------------------------------------------

/// A running chromedriver. Dropping it quits every browser it started, stops it, and deletes
/// the browser profiles.
pub struct ChromeDriver {
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
    ///
    /// # Panics
    ///
    /// When chromedriver cannot be started, or does not report its port and readiness within
    /// [`DRIVER_START_LIMIT`] each.
    pub async fn start(tools: &BrowserTools) -> Self {
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
            client: client(),
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

    /// Starts a headless Chromium with a fresh profile, on `about:blank`.
    ///
    /// # Panics
    ///
    /// When chromedriver cannot start the browser within [`COMMAND_LIMIT`].
    pub async fn new_session(&self) -> Browser {
        self.new_session_with_args(&[]).await
    }

    /// As [`ChromeDriver::new_session`], with more command-line switches for Chromium, such as
    /// `--ignore-certificate-errors-spki-list=<hash>` to trust a test server's self-signed
    /// certificate.
    ///
    /// # Panics
    ///
    /// When chromedriver cannot start the browser within [`COMMAND_LIMIT`].
    pub async fn new_session_with_args(&self, extra_args: &[String]) -> Browser {
        let number = self.sessions.fetch_add(1, Ordering::Relaxed);
        let profile = self.profiles.join(format!("profile-{number}"));
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend_from_slice(extra_args);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": args,
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
        "test-support-browser-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// One browser session (one window), from [`ChromeDriver::new_session`]. Every method panics
/// with WebDriver's error when a command fails, or when it takes longer than [`COMMAND_LIMIT`].
pub struct Browser {
    client: HttpClient,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
}

/// An element reference from [`Browser::find`].
pub struct Element(String);

impl Browser {
    /// Sends a command for this session (`path` is relative to the session, `""` is the session
    /// itself) and returns the answer's `value`; panics with WebDriver's error otherwise.
    pub async fn command(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.session);
        webdriver_request(&self.client, method, &url, body)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Loads a page and waits for it to load.
    pub async fn navigate(&self, url: &str) {
        self.command(Method::POST, "/url", Some(&json!({ "url": url })))
            .await;
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Element {
        let body = json!({ "using": "css selector", "value": css });
        let found = self.command(Method::POST, "/element", Some(&body)).await;
        let id = found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("find {css:?} answered without an element: {found}"));
        Element(id.to_owned())
    }

    /// Empties an input field.
    pub async fn clear(&self, element: &Element) {
        let path = format!("/element/{}/clear", element.0);
        self.command(Method::POST, &path, Some(&json!({}))).await;
    }

    /// Types text into an element (WebDriver key codes such as [`ENTER`] press keys).
    pub async fn send_keys(&self, element: &Element, text: &str) {
        let path = format!("/element/{}/value", element.0);
        self.command(Method::POST, &path, Some(&json!({ "text": text })))
            .await;
    }

    /// Clicks an element.
    pub async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.0);
        self.command(Method::POST, &path, Some(&json!({}))).await;
    }

    /// Runs a script in the page (a function body; `arguments` holds `args`) and returns its
    /// result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let body = json!({ "script": script, "args": args });
        self.command(Method::POST, "/execute/sync", Some(&body))
            .await
    }

    /// Runs `script` until `accept` takes its result, at most [`WAIT_LIMIT`]; on timeout, fails
    /// with `what` and the page's text.
    pub async fn wait_for<T>(
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
    pub async fn quit(self) {
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
