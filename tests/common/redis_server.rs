//! A real `redis-server` per test, on a free loopback port, that a test can kill, restart and
//! pause. Nothing is mocked: faults are the server's own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering PING.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A `redis-server` child process, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server on a free port, or returns `None` (after printing why) when
    /// `redis-server` is not installed and `CI` is not set. In CI a missing server fails.
    pub fn start() -> Option<Self> {
        if !super::tool_available(
            "redis-server",
            "install Redis (Debian: apt-get install redis-server)",
        ) {
            return None;
        }
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-pubsub-redis-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory for redis-server");
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.spawn();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process still dies of SIGKILL; thaw it anyway so nothing lingers.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its connections stay open and answer nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the server again on the same port, empty (it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command and returns the raw reply, for checks such as CLIENT LIST.
    pub fn command(&self, args: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("send command");
        read_reply(&mut stream)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        // Waiting for another process to come up: there is no event to await, so poll PING
        // within a bound.
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                if stream.write_all(b"PING\r\n").is_ok() && read_reply(&mut stream).contains("PONG")
                {
                    return;
                }
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "redis-server did not answer PING on port {} within {START_LIMIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads what one reply holds, loosely: enough for the checks tests make.
fn read_reply(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                reply.extend_from_slice(&buffer[..n]);
                if is_complete(&reply) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Whether `reply` holds one complete simple, error, integer or bulk reply.
fn is_complete(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match reply.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&reply[1..line_end])
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            len < 0 || reply.len() >= line_end + 2 + len as usize + 2
        }
        _ => true,
    }
}
