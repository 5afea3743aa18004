//! What hostile and broken clients do to an SSE pub/sub server, over real TCP, and what it costs
//! the server: the pieces of the adversarial suite (`tests/adversarial.rs`) and of the `attack`
//! example, which runs the same attacks at full scale against any server (this crate's or an
//! older build of it) to compare the figures.
//!
//! Everything speaks plain HTTP/1.1 on raw sockets, so a client can do what a real client
//! cannot be trusted not to: stop reading, stop writing half way, shrink its receive buffer.
//! Every wait is bounded.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http_client::{HttpClient, client};

/// The server under attack: its address and endpoint paths.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The subscribe path (`/events`).
    pub events_path: String,
    /// The publish path (`/publish`).
    pub publish_path: String,
}

impl Target {
    /// A server with the default paths.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            events_path: "/events".to_owned(),
            publish_path: "/publish".to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Percent-encodes a form or query value.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query or form naming `topics`.
pub fn topics_query(topics: &[String]) -> String {
    topics
        .iter()
        .map(|t| format!("topic={}", encode(t)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Publishes `data` to `topics` with a form POST; returns the status and how long it took.
pub async fn publish(
    client: &HttpClient,
    target: &Target,
    topics: &[String],
    data: &str,
) -> Result<(StatusCode, Duration), String> {
    let body = format!("{}&data={}", topics_query(topics), encode(data));
    let request = Request::post(target.url(&target.publish_path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // The id (or the reason) is short; read it so the connection can be reused.
    let _ = response.into_body().collect().await;
    Ok((status, started.elapsed()))
}

/// Fills the history: `events` rounds of one publish of `size` bytes to each of `topics`.
pub async fn fill(
    target: &Target,
    topics: &[String],
    events: usize,
    size: usize,
) -> Result<(), String> {
    let client = client();
    let data = "h".repeat(size);
    for _ in 0..events {
        for topic in topics {
            let (status, _) = publish(&client, target, std::slice::from_ref(topic), &data).await?;
            if status != StatusCode::OK {
                return Err(format!("filling the history: publish answered {status}"));
            }
        }
    }
    Ok(())
}

/// Publish latencies measured while an attack runs.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// Publishes attempted.
    pub sent: usize,
    /// Publishes answered 200.
    pub ok: usize,
    /// Latencies of the successful ones, sorted.
    pub samples: Vec<Duration>,
    /// How long the probe ran.
    pub elapsed: Duration,
}

impl Latencies {
    /// The `q` quantile (0.0 to 1.0) of the successful publishes' latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let index = ((self.samples.len() - 1) as f64 * q).round() as usize;
        self.samples.get(index).copied()
    }

    /// Successful publishes per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Publishes `count` small events to `topic`, one every `1 / rate` seconds (or as fast as they
/// are answered, if slower), and measures each.
pub async fn probe(target: &Target, topic: &str, rate: f64, count: usize) -> Latencies {
    let client = client();
    let topics = [topic.to_owned()];
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let started = Instant::now();
    let mut next = tokio::time::Instant::now();
    let mut result = Latencies::default();
    for i in 0..count {
        tokio::time::sleep_until(next).await;
        next += period;
        result.sent += 1;
        if let Ok((StatusCode::OK, took)) = publish(&client, target, &topics, &i.to_string()).await
        {
            result.ok += 1;
            result.samples.push(took);
        }
    }
    result.elapsed = started.elapsed();
    result.samples.sort();
    result
}

/// How a server answered a subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 and an event stream that stays open.
    Stream,
    /// Refused: a 4xx/5xx status, or a 200 stream that only says `retry:` and ends.
    Refused(u16),
    /// No answer in time.
    Unanswered,
    /// The connection failed (refused, reset) before an answer.
    Failed,
}

/// One client connection held open by an attack.
#[derive(Debug)]
pub struct Held {
    /// How the server answered.
    pub answer: Answer,
    /// The connection, still open unless the server closed it (none if it failed).
    pub stream: Option<TcpStream>,
}

/// What a subscribe request looks like.
#[derive(Debug, Clone, Default)]
pub struct Subscribe {
    /// The topics.
    pub topics: Vec<String>,
    /// A `Last-Event-ID` header.
    pub last_event_id: Option<String>,
    /// Sends `Accept: text/event-stream`, as an EventSource does.
    pub event_source: bool,
    /// Shrinks the client's receive buffer (bytes), so a client that does not read stalls soon.
    pub receive_buffer: Option<u32>,
}

/// Connects to `addr`, with a small receive buffer if asked.
async fn connect(addr: SocketAddr, receive_buffer: Option<u32>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect(addr).await
}

/// Opens one subscription and reads until its answer is known: the stream's opening comment, a
/// refusal, or `within` passing. The rest of the stream stays unread.
pub async fn subscribe(target: &Target, request: &Subscribe, within: Duration) -> io::Result<Held> {
    let mut stream = connect(target.addr, request.receive_buffer).await?;
    let mut head = format!(
        "GET {}?{} HTTP/1.1\r\nhost: attack\r\n",
        target.events_path,
        topics_query(&request.topics)
    );
    if let Some(id) = &request.last_event_id {
        head.push_str(&format!("last-event-id: {id}\r\n"));
    }
    if request.event_source {
        head.push_str("accept: text/event-stream\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let answer = match tokio::time::timeout(within, read_answer(&mut stream)).await {
        Ok(answer) => answer?,
        Err(_) => Answer::Unanswered,
    };
    Ok(Held {
        answer,
        stream: Some(stream),
    })
}

/// Reads a subscribe's response head and enough of its body to tell a stream from a refusal.
async fn read_answer(stream: &mut TcpStream) -> io::Result<Answer> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        // Byte by byte would be exact; small reads are enough, since a stream's opening comes
        // in its own first chunk.
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(status_of(&seen).map_or(Answer::Unanswered, Answer::Refused));
        }
        seen.extend_from_slice(&buffer[..read]);
        let Some(status) = status_of(&seen) else {
            continue;
        };
        if status != 200 {
            return Ok(Answer::Refused(status));
        }
        let Some(body_at) = find(&seen, b"\r\n\r\n") else {
            continue;
        };
        let body = &seen[body_at + 4..];
        if find(body, b"retry:").is_some() {
            return Ok(Answer::Refused(200));
        }
        if find(body, b":").is_some() || find(body, b"data:").is_some() {
            return Ok(Answer::Stream);
        }
        if seen.len() > 64 * 1024 {
            return Ok(Answer::Stream);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status code of a response head, once its status line is complete.
fn status_of(head: &[u8]) -> Option<u16> {
    let line_end = find(head, b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// Opens `count` subscriptions, `parallel` at a time, and holds them.
pub async fn subscribe_many(
    target: &Target,
    request: &Subscribe,
    count: usize,
    parallel: usize,
    within: Duration,
) -> Vec<Held> {
    let mut held = Vec::with_capacity(count);
    let mut pending = FuturesUnordered::new();
    let mut started = 0;
    loop {
        while started < count && pending.len() < parallel.max(1) {
            pending.push(subscribe(target, request, within));
            started += 1;
        }
        match pending.next().await {
            Some(Ok(one)) => held.push(one),
            Some(Err(_)) => held.push(Held {
                answer: Answer::Failed,
                stream: None,
            }),
            None => return held,
        }
    }
}

/// How a batch of subscribes was answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Open event streams.
    pub streams: usize,
    /// Refusals (a status, or a retry stream).
    pub refused: usize,
    /// No answer in time.
    pub unanswered: usize,
    /// Connections that failed.
    pub failed: usize,
}

/// Counts the answers.
pub fn tally(held: &[Held]) -> Tally {
    let mut tally = Tally::default();
    for one in held {
        match one.answer {
            Answer::Stream => tally.streams += 1,
            Answer::Refused(_) => tally.refused += 1,
            Answer::Unanswered => tally.unanswered += 1,
            Answer::Failed => tally.failed += 1,
        }
    }
    tally
}

/// The connections of `held` that were answered with an open stream.
pub fn open_streams(held: Vec<Held>) -> Vec<TcpStream> {
    held.into_iter()
        .filter(|one| one.answer == Answer::Stream)
        .filter_map(|one| one.stream)
        .collect()
}

/// Connections that sent half a request head and then nothing.
pub async fn unfinished_heads(target: &Target, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let Ok(mut stream) = connect(target.addr, None).await else {
            break;
        };
        if stream
            .write_all(b"GET / HTTP/1.1\r\nhost: attack\r\nx-unfinished: ")
            .await
            .is_ok()
        {
            streams.push(stream);
        }
    }
    streams
}

/// Publish requests that announce a body of `declared` bytes and send only its first bytes.
pub async fn unfinished_bodies(target: &Target, count: usize, declared: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let Ok(mut stream) = connect(target.addr, None).await else {
            break;
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: attack\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: {declared}\r\n\r\ntopic=slow&data=",
            target.publish_path
        );
        if stream.write_all(head.as_bytes()).await.is_ok() {
            streams.push(stream);
        }
    }
    streams
}

/// Waits up to `limit` for the server to close each connection (reading and discarding
/// whatever it sends); returns how many it closed. Reading un-stalls a stalled reader: to see
/// whether the server cuts stalled readers, use [`closed_after`].
pub async fn closed_within(streams: &mut [TcpStream], limit: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + limit;
    let mut waits: FuturesUnordered<_> = streams
        .iter_mut()
        .map(|stream| async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                    Err(_) => return false,
                    Ok(Ok(0) | Err(_)) => return true,
                    Ok(Ok(_)) => {}
                }
            }
        })
        .collect();
    let mut closed = 0;
    while let Some(was_closed) = waits.next().await {
        closed += usize::from(was_closed);
    }
    closed
}

/// Leaves the connections unread (stalled) for `stalled`, then counts those the server has
/// closed meanwhile (reading what they had buffered, for up to `check`).
pub async fn closed_after(streams: &mut [TcpStream], stalled: Duration, check: Duration) -> usize {
    tokio::time::sleep(stalled).await;
    closed_within(streams, check).await
}

/// Whether a plain GET of `path` is answered (any status) within `within`.
pub async fn answers(target: &Target, path: &str, within: Duration) -> bool {
    let request = Request::get(target.url(path))
        .body(Full::default())
        .expect("a valid request");
    matches!(
        tokio::time::timeout(within, client().request(request)).await,
        Ok(Ok(_))
    )
}

/// The resident memory of process `pid`, in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Redis's `used_memory` in bytes, from `INFO memory`.
pub async fn redis_used_memory(addr: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n")
        .await
        .ok()?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 8192];
    // A bulk string: `$<len>\r\n<text>\r\n`; read until the text is complete.
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(value) = text
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
        {
            return value.trim().parse().ok();
        }
    }
    None
}
