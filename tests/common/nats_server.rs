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
    /// Arguments beyond the port, address and store (cluster settings).
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free port, or returns `None` (after printing why) when
    /// `nats-server` is not installed and `CI` is not set. In CI a missing server fails.
    pub fn start() -> Option<Self> {
        let mut server = Self::prepare(super::free_port(), Vec::new())?;
        server.spawn();
        Some(server)
    }

    /// Starts a server as [`NatsServer::start`] does, with the configuration file `config`
    /// (say, its users), or `None` as that says.
    pub fn start_with_config(config: &str) -> Option<Self> {
        let mut server = Self::prepare(super::free_port(), Vec::new())?;
        let file = server.dir.join("server.conf");
        std::fs::write(&file, config).expect("write the server's configuration");
        server.extra = vec!["-c".to_owned(), file.display().to_string()];
        server.spawn();
        Some(server)
    }

    /// Starts `size` servers on free ports as one JetStream cluster (server names `n0`, `n1`,
    /// ..), or `None` as [`NatsServer::start`] says.
    pub fn start_cluster(size: usize) -> Option<Vec<Self>> {
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| (super::free_port(), super::free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::with_capacity(size);
        for (i, (port, route)) in ports.iter().enumerate() {
            let extra = vec![
                "--server_name".to_owned(),
                format!("n{i}"),
                "--cluster_name".to_owned(),
                "test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{route}"),
                "--routes".to_owned(),
                routes.clone(),
            ];
            servers.push(Self::prepare(*port, extra)?);
        }
        for server in &mut servers {
            server.spawn();
        }
        Some(servers)
    }

    fn prepare(port: u16, extra: Vec<String>) -> Option<Self> {
        let program = test_support::tools::require_also_in(
            &["nats-server"],
            &["/usr/sbin"],
            "install NATS (Debian: apt-get install nats-server)",
        )?
        .pop()?;
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-pubsub-nats-{port}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory for nats-server");
        Some(Self {
            program,
            child: None,
            port,
            dir,
            extra,
        })
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
            .args(&self.extra)
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

/// Builds the broker `make` configures, retrying for up to 30 seconds while a cluster that has
/// just started elects its JetStream leaders (and refuses the stream meanwhile).
#[cfg(feature = "nats")]
pub async fn build_when_ready(
    make: impl Fn() -> tower_sse_pubsub::NatsBrokerBuilder,
) -> tower_sse_pubsub::NatsBroker {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match make().build().await {
            Ok(broker) => return broker,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("cluster not ready: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the cluster never served the stream: {e}"),
        }
    }
}

/// Publishes `request` until it is acknowledged, retrying every `pause` for up to 30 seconds
/// while a cluster fails over. The request carries an idempotency key, so a retry after a lost
/// acknowledgement does not store the event twice. `what` names it in the messages.
#[cfg(feature = "nats")]
pub async fn publish_until_acknowledged(
    broker: &impl tower_sse_pubsub::broker::Broker,
    request: &tower_sse_pubsub::PublishRequest,
    pause: Duration,
    what: impl std::fmt::Display,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match broker.publish(request).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("{what} failed, retrying: {e}");
                tokio::time::sleep(pause).await;
            }
            Err(e) => panic!("{what} never succeeded: {e}"),
        }
    }
}
