//! `--role clients`: opens event streams, reads them and checks every event, then reports.
//!
//! It prints `ready` once every stream has its opening comment (so its subscription is live),
//! reads until each stream has every event or `stop` arrives on stdin (or stdin closes), and
//! prints one line `report {json}`. With `--events 0` it only holds the streams open. With
//! `--burst B` it also prints `burst K` as soon as every stream has the first (K+1)·B events, so
//! the driver can publish the next burst.
//!
//! With several `--addr` servers, stream `first_stream + i` goes to server
//! `(first_stream + i) mod servers`. With `--publishers P`, event SEQ comes from publisher
//! SEQ mod P: loss and duplicates are counted over all events, order only within a publisher,
//! as concurrent publishers through one broker have no order between them.

use std::error::Error;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::child::say;
use crate::histogram::Histogram;
use crate::options::ClientOptions;

/// Streams opened at once while connecting.
const CONNECTING: usize = 64;
/// The receive buffer of a stalled stream: small, so the server's side fills quickly.
const STALLED_RECV_BUFFER: u32 = 4096;

/// What one client process saw, summed over its streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientReport {
    /// Reading streams.
    pub streams: u64,
    /// Distinct expected events received, summed over streams.
    pub received: u64,
    /// Events received again.
    pub duplicates: u64,
    /// Events received after one of the same publisher with a higher sequence number.
    pub reordered: u64,
    /// Events whose data was not `SEQ NANOS ...` with SEQ below the event count.
    pub malformed: u64,
    /// Streams that ended before they had every event.
    pub closed_early: u64,
    /// Stalled streams the server had ended by the time they were drained.
    pub stalled_cut: u64,
    /// Publish-to-receipt latency in nanoseconds, over every received event.
    pub latency: Histogram,
}

impl ClientReport {
    /// Adds another process's report to this one.
    pub fn merge(&mut self, other: &ClientReport) {
        self.streams += other.streams;
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.malformed += other.malformed;
        self.closed_early += other.closed_early;
        self.stalled_cut += other.stalled_cut;
        self.latency.merge(&other.latency);
    }
}

/// Opens the streams, reads them and prints the report.
pub async fn run(options: ClientOptions) -> Result<(), Box<dyn Error>> {
    let servers = Servers {
        addrs: &options.addrs,
        first_stream: options.first_stream,
    };
    let streams = open_all(servers, &options.path, options.streams, None).await?;
    let stalled = open_all(
        servers,
        &options.path,
        options.stalled,
        Some(STALLED_RECV_BUFFER),
    )
    .await?;
    say("ready")?;
    let mut stop = stop_on_stdin();
    let mut report = ClientReport {
        streams: streams.len() as u64,
        ..ClientReport::default()
    };
    if options.events == 0 {
        // Idle: hold the streams until told to stop. An error means the sender is gone: stop too.
        drop(stop.wait_for(|stop| *stop).await);
    } else {
        let bursts = Arc::new(Bursts::new(options.burst, options.events, streams.len()));
        let readers: Vec<_> = streams
            .into_iter()
            .map(|stream| {
                let check = Sequence::new(options.events, options.publishers);
                tokio::spawn(read_events(stream, check, bursts.clone(), stop.clone()))
            })
            .collect();
        for reader in readers {
            report.merge(&reader.await?);
        }
    }
    let drained = futures::future::join_all(stalled.into_iter().map(drains_to_end)).await;
    report.stalled_cut = drained.into_iter().map(u64::from).sum();
    say(&format!("report {}", serde_json::to_string(&report)?))?;
    Ok(())
}

/// A watch that turns true on `stop` or when stdin closes.
fn stop_on_stdin() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == "stop" => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        let _ = sender.send(true);
    });
    receiver
}

/// The servers a client process spreads its streams over.
#[derive(Debug, Clone, Copy)]
struct Servers<'a> {
    addrs: &'a [SocketAddr],
    /// This process's first stream in the run-wide turn.
    first_stream: usize,
}

impl Servers<'_> {
    /// The server of this process's stream `i`.
    fn of(&self, i: usize) -> std::io::Result<SocketAddr> {
        let turn = (self.first_stream + i) % self.addrs.len().max(1);
        self.addrs.get(turn).copied().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no server address")
        })
    }
}

/// Opens `count` streams, a few at a time.
async fn open_all(
    servers: Servers<'_>,
    path: &str,
    count: usize,
    recv_buffer: Option<u32>,
) -> std::io::Result<Vec<TcpStream>> {
    futures::stream::iter(0..count)
        .map(|i| {
            // `{i}` in the path spreads streams over topics, as a real app's would be.
            let path = path.replace("{i}", &(i % 1000).to_string());
            async move { open(servers.of(i)?, &path, recv_buffer).await }
        })
        .buffer_unordered(CONNECTING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Opens a streaming response and reads up to the opening comment, so the subscription is live.
async fn open(
    addr: SocketAddr,
    path: &str,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = socket.connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: load\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b": ok\n\n") {
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    Ok(stream)
}

/// Whether a stalled stream, read at last, turns out to have been ended by the server.
async fn drains_to_end(mut stream: TcpStream) -> bool {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut chunk)).await {
            Ok(Ok(0)) => return true,
            Ok(Ok(_)) => continue,
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

/// Reads until every event `check` expects has arrived, the stream ends, or `stop` turns true.
async fn read_events(
    mut stream: TcpStream,
    mut check: Sequence,
    bursts: Arc<Bursts>,
    mut stop: watch::Receiver<bool>,
) -> ClientReport {
    let events = check.events;
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    while check.received < events {
        let n = tokio::select! {
            read = stream.read(&mut chunk) => read.unwrap_or(0),
            _ = stop.wait_for(|stop| *stop) => break,
        };
        if n == 0 {
            closed = true;
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
        // Everything up to the last blank line is complete frames.
        let Some(end) = buffer.windows(2).rposition(|w| w == b"\n\n") else {
            continue;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let before = check.received;
        let mut rest = &buffer[..end];
        while let Some(at) = find(rest, b"data: ") {
            rest = &rest[at + 6..];
            check.saw(parse_data(rest), now);
        }
        bursts.progress(before, check.received);
        buffer.drain(..end + 2);
    }
    let mut report = check.into_report();
    report.streams = 1;
    report.closed_early = u64::from(closed || report.received < events);
    report
}

/// `SEQ SENT_NANOS` from the start of an event's data.
fn parse_data(data: &[u8]) -> Option<(u64, u64)> {
    let mut words = data.splitn(3, |&b| b == b' ');
    let mut number = || -> Option<u64> { std::str::from_utf8(words.next()?).ok()?.parse().ok() };
    Some((number()?, number()?))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Counts, per burst, the streams that have all of it, and says `burst K` when every one has.
struct Bursts {
    size: u64,
    events: u64,
    streams: usize,
    complete: Vec<AtomicUsize>,
}

impl Bursts {
    fn new(size: u64, events: u64, streams: usize) -> Self {
        let count = if size == 0 { 0 } else { events.div_ceil(size) };
        Self {
            size,
            events,
            streams,
            complete: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// One stream's distinct events went from `from` to `to`.
    fn progress(&self, from: u64, to: u64) {
        if self.size == 0 {
            return;
        }
        for burst in from / self.size..self.complete.len() as u64 {
            let mark = ((burst + 1) * self.size).min(self.events);
            if mark > to {
                break;
            }
            let complete = self.complete[burst as usize].fetch_add(1, Ordering::AcqRel) + 1;
            if complete == self.streams {
                // Stdout gone means the driver is gone; the report will fail to print too.
                let _ = say(&format!("burst {burst}"));
            }
        }
    }
}

/// One stream's check that events arrive exactly once, and in order per publisher.
struct Sequence {
    events: u64,
    seen: Vec<u64>,
    /// The highest sequence number seen from each publisher (SEQ mod publishers).
    highest: Vec<Option<u64>>,
    received: u64,
    report: ClientReport,
}

impl Sequence {
    fn new(events: u64, publishers: u64) -> Self {
        Self {
            events,
            seen: vec![0; events.div_ceil(64) as usize],
            highest: vec![None; publishers.max(1) as usize],
            received: 0,
            report: ClientReport::default(),
        }
    }

    /// Counts one event, received at `now` (nanoseconds since the epoch).
    fn saw(&mut self, data: Option<(u64, u64)>, now: u64) {
        let Some((seq, sent)) = data.filter(|(seq, _)| *seq < self.events) else {
            self.report.malformed += 1;
            return;
        };
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.report.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        let publishers = self.highest.len() as u64;
        let highest = &mut self.highest[(seq % publishers) as usize];
        if highest.is_some_and(|highest| seq < highest) {
            self.report.reordered += 1;
        }
        *highest = (*highest).max(Some(seq));
        self.received += 1;
        self.report.latency.record(now.saturating_sub(sent));
    }

    fn into_report(mut self) -> ClientReport {
        self.report.received = self.received;
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn see(check: &mut Sequence, seqs: &[u64]) {
        for &seq in seqs {
            check.saw(Some((seq, 0)), 0);
        }
    }

    #[test]
    fn interleaved_publishers_are_in_order_when_each_publisher_is() {
        let mut check = Sequence::new(6, 2);
        // Publisher 1 (odd numbers) got ahead of publisher 0 (even numbers): no reordering.
        see(&mut check, &[1, 3, 0, 5, 2, 4]);
        let report = check.into_report();
        assert_eq!((report.received, report.reordered), (6, 0));
    }

    #[test]
    fn one_publisher_going_backwards_is_reordered() {
        let mut check = Sequence::new(6, 2);
        see(&mut check, &[2, 0, 1]);
        assert_eq!(check.into_report().reordered, 1);
    }

    #[test]
    fn duplicates_are_counted_over_all_publishers() {
        let mut check = Sequence::new(4, 2);
        see(&mut check, &[0, 1, 1, 0]);
        let report = check.into_report();
        assert_eq!((report.received, report.duplicates), (2, 2));
    }
}
