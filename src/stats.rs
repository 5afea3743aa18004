//! What a hub has done: counters kept with relaxed atomics, and [`HubStats`], a snapshot of them.
//!
//! Counters on the delivery path (frames and bytes written) are summed by each stream and added
//! to the hub's in batches (every 256 frames, on a keep-alive tick, and when the stream ends), so
//! a busy stream does not contend on a shared counter for every event; a snapshot may lag a
//! stream's latest writes by that much, and is exact once the streams have ended.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why an event stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The connection went away: the client left, or its connection was cut (a deadline).
    ClientGone,
    /// The subscriber fell behind the retained log.
    Lagged,
    /// The hub shut down.
    Shutdown,
    /// The subscription's deadline passed.
    Deadline,
    /// The broker ended the subscription.
    Broker,
}

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A malformed request (400).
    BadRequest,
    /// The authorizer said no.
    Denied,
    /// Every subscriber slot was taken.
    Full,
    /// The client had as many streams as it may.
    ClientLimit,
    /// Every replay slot was taken.
    ReplayLimit,
    /// The hub was shutting down.
    ShuttingDown,
    /// The broker could not subscribe.
    BrokerUnavailable,
}

/// The hub's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    streams_opened: AtomicU64,
    closed: [AtomicU64; 5],
    refused: [AtomicU64; 7],
    resumes: [AtomicU64; 3],
    events_published: AtomicU64,
    publishes_refused: AtomicU64,
    publish_failures: AtomicU64,
    frames_delivered: AtomicU64,
    frames_replayed: AtomicU64,
    bytes_written: AtomicU64,
    resyncs: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    pub(crate) fn stream_opened(&self) {
        add(&self.streams_opened, 1);
    }

    pub(crate) fn stream_closed(&self, reason: CloseReason) {
        add(&self.closed[reason as usize], 1);
    }

    pub(crate) fn refused(&self, refusal: Refusal) {
        add(&self.refused[refusal as usize], 1);
    }

    /// A stream opened with a resume point: `complete`, `expired` or `unknown`.
    pub(crate) fn resumed(&self, outcome: &crate::broker::Resume) {
        use crate::broker::Resume;
        let index = match outcome {
            Resume::Complete => 0,
            Resume::Expired => 1,
            Resume::Unknown => 2,
            _ => return,
        };
        add(&self.resumes[index], 1);
    }

    pub(crate) fn published(&self) {
        add(&self.events_published, 1);
    }

    pub(crate) fn publish_refused(&self) {
        add(&self.publishes_refused, 1);
    }

    pub(crate) fn publish_failed(&self) {
        add(&self.publish_failures, 1);
    }

    pub(crate) fn resync_sent(&self) {
        add(&self.resyncs, 1);
    }

    /// Adds what a stream wrote since it last reported.
    pub(crate) fn wrote(&self, written: &mut Written) {
        if written.frames > 0 {
            add(&self.frames_delivered, written.frames);
        }
        if written.replayed > 0 {
            add(&self.frames_replayed, written.replayed);
        }
        if written.bytes > 0 {
            add(&self.bytes_written, written.bytes);
        }
        *written = Written::default();
    }

    pub(crate) fn snapshot(&self, open_streams: usize) -> HubStats {
        let closed = |reason: CloseReason| read(&self.closed[reason as usize]);
        let refused = |refusal: Refusal| read(&self.refused[refusal as usize]);
        HubStats {
            open_streams: open_streams as u64,
            streams_opened: read(&self.streams_opened),
            streams_closed: StreamsClosed {
                client_gone: closed(CloseReason::ClientGone),
                lagged: closed(CloseReason::Lagged),
                shutdown: closed(CloseReason::Shutdown),
                deadline: closed(CloseReason::Deadline),
                broker: closed(CloseReason::Broker),
            },
            subscribes_refused: SubscribesRefused {
                bad_request: refused(Refusal::BadRequest),
                denied: refused(Refusal::Denied),
                full: refused(Refusal::Full),
                client_limit: refused(Refusal::ClientLimit),
                replay_limit: refused(Refusal::ReplayLimit),
                shutting_down: refused(Refusal::ShuttingDown),
                broker_unavailable: refused(Refusal::BrokerUnavailable),
            },
            resumes: Resumes {
                complete: read(&self.resumes[0]),
                expired: read(&self.resumes[1]),
                unknown: read(&self.resumes[2]),
            },
            events_published: read(&self.events_published),
            publishes_refused: read(&self.publishes_refused),
            publish_failures: read(&self.publish_failures),
            frames_delivered: read(&self.frames_delivered),
            frames_replayed: read(&self.frames_replayed),
            bytes_written: read(&self.bytes_written),
            resyncs: read(&self.resyncs),
            connections_cut: crate::ConnectionDeadlines::cuts(),
        }
    }
}

/// What one stream wrote since it last reported to the hub's counters.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) frames: u64,
    pub(crate) replayed: u64,
    pub(crate) bytes: u64,
}

impl Written {
    /// Frames a stream gathers before it reports.
    pub(crate) const BATCH: u64 = 256;
}

/// A snapshot of what a hub has done since it was built ([`Hub::stats`](crate::Hub::stats)).
///
/// Counts of frames and bytes may lag a busy stream's latest writes by up to 256 frames or half
/// a keep-alive interval; they are exact once its stream has ended.
///
/// ```
/// use tower_sse_pubsub::Hub;
///
/// let hub = Hub::new();
/// let stats = hub.stats();
/// assert_eq!((stats.open_streams, stats.events_published), (0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Event streams open now: SSE streams, and gRPC `Subscribe` streams (feature `grpc`).
    pub open_streams: u64,
    /// Event streams opened.
    pub streams_opened: u64,
    /// Event streams ended, by reason.
    pub streams_closed: StreamsClosed,
    /// Subscribes refused, by reason.
    pub subscribes_refused: SubscribesRefused,
    /// Streams opened with a resume point, by how it could be placed.
    pub resumes: Resumes,
    /// Events published through this hub (its endpoint, its gRPC service and its
    /// [`Publisher`](crate::Publisher)s).
    pub events_published: u64,
    /// Publish requests refused: 4xx from the endpoint, any error status but `UNAVAILABLE` from
    /// the gRPC service.
    pub publishes_refused: u64,
    /// Publishes the broker could not store (503 over HTTP, `UNAVAILABLE` over gRPC, an error for
    /// a `Publisher`).
    pub publish_failures: u64,
    /// Frames written to event streams, replayed ones included.
    pub frames_delivered: u64,
    /// Of those, frames written while a stream was replaying history after its resume point.
    pub frames_replayed: u64,
    /// Bytes written to event streams: frames, comments, keep-alives and notices; for a gRPC
    /// stream, each message encoded with its 5-byte gRPC prefix.
    pub bytes_written: u64,
    /// `resync` notices sent: at a stream's opening or in its middle.
    pub resyncs: u64,
    /// Connections [`ConnectionDeadlines`](crate::ConnectionDeadlines) cut, by deadline: for the
    /// whole process, since deadlines belong to connections, not to a hub. A stalled reader's
    /// stream counts as `client_gone` above and as `stalled` here.
    pub connections_cut: crate::DeadlineCuts,
}

/// Event streams ended, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamsClosed {
    /// The client left, or its connection was cut (for example by a
    /// [`ConnectionDeadlines`](crate::ConnectionDeadlines) deadline).
    pub client_gone: u64,
    /// The subscriber fell behind the retained log and was told to reconnect.
    pub lagged: u64,
    /// The hub shut down.
    pub shutdown: u64,
    /// The subscription's deadline passed (an [`Allowed::until`](crate::Allowed::until), such as a
    /// token's expiry).
    pub deadline: u64,
    /// The broker ended the subscription (it lost its store, or closed).
    pub broker: u64,
}

/// Subscribes refused, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribesRefused {
    /// Malformed requests (400).
    pub bad_request: u64,
    /// Refused by the authorizer (401/403).
    pub denied: u64,
    /// Every subscriber slot was taken.
    pub full: u64,
    /// The client had as many streams open as it may.
    pub client_limit: u64,
    /// Every replay slot was taken.
    pub replay_limit: u64,
    /// The hub was shutting down.
    pub shutting_down: u64,
    /// The broker could not subscribe.
    pub broker_unavailable: u64,
}

/// Streams opened with a resume point, by how it could be placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resumes {
    /// Every event after it was replayed.
    pub complete: u64,
    /// Some events after it had left the history (or did not fit the replay budget).
    pub expired: u64,
    /// The id was not one of this broker's.
    pub unknown: u64,
}

#[cfg(feature = "metrics")]
impl HubStats {
    /// Writes this snapshot to the [`metrics`](https://docs.rs/metrics) facade (feature
    /// `metrics`): counters set to their totals, the open streams as a gauge. The names, each
    /// counter ending in `_total`:
    ///
    /// | metric | labels | counts |
    /// |---|---|---|
    /// | `sse_open_streams` (gauge) | | event streams open now |
    /// | `sse_streams_opened_total` | | event streams opened |
    /// | `sse_streams_closed_total` | `reason`: `client_gone`, `lagged`, `shutdown`, `deadline`, `broker` | event streams ended |
    /// | `sse_subscribes_refused_total` | `reason`: `bad_request`, `denied`, `full`, `client_limit`, `replay_limit`, `shutting_down`, `broker_unavailable` | subscribes refused |
    /// | `sse_resumes_total` | `outcome`: `complete`, `expired`, `unknown` | streams opened with a resume point |
    /// | `sse_events_published_total` | | events published |
    /// | `sse_publishes_refused_total` | | publish requests refused (4xx) |
    /// | `sse_publish_failures_total` | | publishes the broker could not store |
    /// | `sse_frames_delivered_total` | | frames written to streams |
    /// | `sse_frames_replayed_total` | | of those, frames of a replay |
    /// | `sse_bytes_written_total` | | bytes written to streams |
    /// | `sse_resyncs_total` | | `resync` notices sent |
    /// | `sse_connections_cut_total` | `deadline`: `stalled`, `unanswered`, `idle` | connections [`ConnectionDeadlines`](crate::ConnectionDeadlines) cut, in the process |
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn export(&self) {
        use metrics::{counter, gauge};
        gauge!("sse_open_streams").set(self.open_streams as f64);
        counter!("sse_streams_opened_total").absolute(self.streams_opened);
        let closed = &self.streams_closed;
        for (reason, value) in [
            ("client_gone", closed.client_gone),
            ("lagged", closed.lagged),
            ("shutdown", closed.shutdown),
            ("deadline", closed.deadline),
            ("broker", closed.broker),
        ] {
            counter!("sse_streams_closed_total", "reason" => reason).absolute(value);
        }
        let refused = &self.subscribes_refused;
        for (reason, value) in [
            ("bad_request", refused.bad_request),
            ("denied", refused.denied),
            ("full", refused.full),
            ("client_limit", refused.client_limit),
            ("replay_limit", refused.replay_limit),
            ("shutting_down", refused.shutting_down),
            ("broker_unavailable", refused.broker_unavailable),
        ] {
            counter!("sse_subscribes_refused_total", "reason" => reason).absolute(value);
        }
        for (outcome, value) in [
            ("complete", self.resumes.complete),
            ("expired", self.resumes.expired),
            ("unknown", self.resumes.unknown),
        ] {
            counter!("sse_resumes_total", "outcome" => outcome).absolute(value);
        }
        counter!("sse_events_published_total").absolute(self.events_published);
        counter!("sse_publishes_refused_total").absolute(self.publishes_refused);
        counter!("sse_publish_failures_total").absolute(self.publish_failures);
        counter!("sse_frames_delivered_total").absolute(self.frames_delivered);
        counter!("sse_frames_replayed_total").absolute(self.frames_replayed);
        counter!("sse_bytes_written_total").absolute(self.bytes_written);
        counter!("sse_resyncs_total").absolute(self.resyncs);
        let cuts = &self.connections_cut;
        for (deadline, value) in [
            ("stalled", cuts.stalled),
            ("unanswered", cuts.unanswered),
            ("idle", cuts.idle),
        ] {
            counter!("sse_connections_cut_total", "deadline" => deadline).absolute(value);
        }
    }
}
