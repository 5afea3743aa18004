//! A real `nats-server` with JetStream per test, on a free loopback port with its own store
//! directory, that a test can kill and restart. Nothing is mocked: faults are the server's own.

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const START_LIMIT: Duration = Duration::from_secs(10);

/// A `nats-server -js` child process, killed (and its store removed) when dropped.
pub struct NatsServer {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free port, or returns `None` (after printing why) when
    /// `nats-server` is not installed and `CI` is not set. In CI a missing server fails.
    pub fn start() -> Option<Self> {
        let program = test_support::tools::require_also_in(
            &["nats-server"],
            &["/usr/sbin"],
            "install NATS (Debian: apt-get install nats-server)",
        )?
        .pop()?;
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-pubsub-nats-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory for nats-server");
        let mut server = Self {
            program,
            child: None,
            port,
            dir,
        };
        server.spawn();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would; its store stays on disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store: file streams survive, memory
    /// streams are gone.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.program)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        // Waiting for another process to come up: there is no event to await, so poll for the
        // server's INFO line within a bound.
        let started = Instant::now();
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buffer = [0u8; 4096];
                if let Ok(n) = stream.read(&mut buffer)
                    && String::from_utf8_lossy(&buffer[..n]).contains("\"jetstream\":true")
                {
                    return;
                }
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "nats-server did not start with JetStream on port {} within {START_LIMIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
