//! The server children of one run: one server, or `--servers N` hub servers that share one Redis
//! key prefix. The first one publishes; the events reach the others' streams through Redis.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::child::ChildProcess;
use crate::options::{HubSettings, Implementation};
use crate::usage::{self, Usage};

/// How long a server may take to bind, and to answer a question.
const ANSWER: Duration = Duration::from_secs(60);

/// Server children of one implementation, started together and measured together.
pub struct Fleet {
    servers: Vec<ChildProcess>,
    addrs: Vec<SocketAddr>,
}

/// What one server of a fleet used over a run's window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerShare {
    /// CPU seconds in the window.
    pub cpu_s: f64,
    /// Of those, user CPU seconds (the rest is the kernel's, mostly sending).
    pub user_cpu_s: f64,
    /// Write system calls in the window.
    pub writes: u64,
    /// RSS at the end, MiB.
    pub rss_mib: f64,
    /// Streams it had open when publishing started.
    pub streams_at_start: usize,
    /// Streams it had open when publishing ended; readers that have every event may be gone.
    pub streams_at_end: usize,
}

impl Fleet {
    /// Starts `count` servers and reads the address each one bound.
    pub fn spawn(
        implementation: Implementation,
        count: usize,
        capacity: usize,
        hub: &HubSettings,
    ) -> Result<Self, Box<dyn Error>> {
        let mut args = vec![
            "--role".to_owned(),
            "server".to_owned(),
            "--impl".to_owned(),
            implementation.to_string(),
            "--capacity".to_owned(),
            capacity.to_string(),
        ];
        args.extend(hub.to_args());
        let mut servers = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let name = match count {
                1 => format!("{implementation} server"),
                _ => format!("{implementation} server {index}"),
            };
            let mut server = ChildProcess::spawn(&name, &args)?;
            addrs.push(server.expect("listening", ANSWER)?.parse()?);
            servers.push(server);
        }
        Ok(Self { servers, addrs })
    }

    /// Every server's address, in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The server that publishes: the first.
    pub fn publisher(&mut self) -> Result<&mut ChildProcess, Box<dyn Error>> {
        Ok(self.servers.first_mut().ok_or("a fleet has no server")?)
    }

    /// Each server's CPU time and RSS so far, in order.
    pub fn usage(&self) -> std::io::Result<Vec<Usage>> {
        self.servers.iter().map(|s| usage::of(s.pid())).collect()
    }

    /// The streams each server has open, in order, skipping the first `skip`.
    pub fn streams(&mut self, skip: usize) -> Result<Vec<usize>, Box<dyn Error>> {
        let mut counts = Vec::new();
        for server in self.servers.iter_mut().skip(skip) {
            server.send("subscribers")?;
            counts.push(server.expect("subscribers", ANSWER)?.parse()?);
        }
        Ok(counts)
    }
}

/// Each server's share of a run, from its usage and its open streams before and after.
pub fn shares(
    before: &[Usage],
    after: &[Usage],
    streams_at_start: &[usize],
    streams_at_end: &[usize],
) -> Vec<ServerShare> {
    after
        .iter()
        .enumerate()
        .map(|(i, after)| {
            let (cpu, user, writes) =
                before
                    .get(i)
                    .map_or((after.cpu, after.user, after.writes), |before| {
                        (
                            after.cpu.saturating_sub(before.cpu),
                            after.user.saturating_sub(before.user),
                            after.writes.saturating_sub(before.writes),
                        )
                    });
            ServerShare {
                cpu_s: cpu.as_secs_f64(),
                user_cpu_s: user.as_secs_f64(),
                writes,
                rss_mib: after.rss_kib as f64 / 1024.0,
                streams_at_start: streams_at_start.get(i).copied().unwrap_or(0),
                streams_at_end: streams_at_end.get(i).copied().unwrap_or(0),
            }
        })
        .collect()
}
