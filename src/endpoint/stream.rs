//! One subscriber's event stream as response bytes: an opening frame, the replay and live frames
//! of its [`Subscription`], keep-alive comments while idle, and a closing frame when the hub shuts
//! down or the subscriber falls behind.
//!
//! Keep-alives and control frames never carry an `id:`, so they never move a client's
//! `Last-Event-ID`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;

use super::Endpoints;
use super::flush::DeferredWaker;
use crate::broker::{Delivery, Resume, Subscription, SubscriptionEnd};
use crate::event::{Event, EventId, Frame, Topic};
use crate::signal::Listing;
use crate::stats::{CloseReason, Written};

/// Sent as soon as the stream opens, so clients and proxies see it open at once.
const OPENING: &[u8] = b": ok\n\n";
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const LAGGED: &[u8] = b": subscriber fell behind and was disconnected; reconnect to resume\n\n";
const CLOSED: &[u8] = b": the broker closed this stream; reconnect to resume\n\n";
const DEADLINE: &[u8] =
    b": this subscription's deadline passed; reconnect with fresh credentials\n\n";
/// The most bytes one write gathers; a single larger frame still goes out whole.
const CHUNK_BYTES: usize = 64 * 1024;

/// The event type of the notice sent when a resume point cannot be honoured in full.
pub const RESYNC_EVENT: &str = "resync";

/// A claim on one of the hub's subscriber slots (and on one of its client's, under a per-client
/// limit), released on drop.
pub(crate) struct SubscriberSlot {
    endpoints: Arc<Endpoints>,
    client: Option<IpAddr>,
}

/// Why no slot was given.
pub(crate) enum NoSlot {
    /// The hub's limit is reached.
    Full,
    /// The client's own limit is reached.
    ClientLimit(usize),
}

impl SubscriberSlot {
    /// Takes a slot for a stream of `client` (if known).
    pub(crate) fn acquire(
        endpoints: &Arc<Endpoints>,
        client: Option<IpAddr>,
    ) -> Result<Self, NoSlot> {
        let per_client = endpoints.config.max_streams_per_client.zip(client);
        if let Some((max, client)) = per_client
            && !endpoints.clients.claim(client, max)
        {
            return Err(NoSlot::ClientLimit(max));
        }
        let max = endpoints.config.max_subscribers;
        let taken = endpoints
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            if let Some((_, client)) = per_client {
                endpoints.clients.release(client);
            }
            return Err(NoSlot::Full);
        }
        Ok(Self {
            endpoints: endpoints.clone(),
            client: per_client.map(|(_, client)| client),
        })
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        let before = self.endpoints.subscribers.fetch_sub(1, Ordering::AcqRel);
        self.endpoints.slot_released(before);
        if let Some(client) = self.client {
            self.endpoints.clients.release(client);
        }
    }
}

/// A claim on one of the hub's replay slots, held by a stream from the moment it opens with a
/// resume point until it has caught up with live events; released on drop.
pub(crate) struct ReplayPermit {
    endpoints: Arc<Endpoints>,
}

impl ReplayPermit {
    /// Takes a replay slot, or `None` when all are taken.
    pub(crate) fn acquire(endpoints: &Arc<Endpoints>) -> Option<Self> {
        let max = endpoints.config.max_replays;
        endpoints
            .replays
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self {
                endpoints: endpoints.clone(),
            })
    }
}

impl Drop for ReplayPermit {
    fn drop(&mut self) {
        self.endpoints.replays.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one open stream owes the hub, whichever transport carries it: its subscriber slot, its
/// count per topic, what it wrote, and why it ended. Settled when dropped: the stream is counted
/// as closed (as `client_gone` if nothing ended it first), then its slot is released.
pub(crate) struct StreamAccount {
    /// Whether the stream counts in the hub's stats (a `HEAD` probe's does not).
    counted: bool,
    /// What it wrote since it last reported to the hub's counters.
    pub(crate) written: Written,
    /// Why it ended, once it has.
    pub(crate) closed: Option<CloseReason>,
    /// The id of the last event sent (or the client's resume point), for a resync notice: a
    /// copy of its text, so keeping it costs no write to the shared frame's reference counts.
    pub(crate) last_id: String,
    /// Its topics, when the hub counts streams per topic.
    topics: Option<Box<[Topic]>>,
    slot: SubscriberSlot,
    /// The stream's `sse_stream` span, when enabled: its events are recorded inside it. Boxed,
    /// so an idle stream without tracing pays one word for it, not a whole span.
    span: Option<Box<tracing::Span>>,
}

impl StreamAccount {
    /// The account of a stream in `slot`; `topics` are counted as open now (when the hub counts
    /// per topic) and closed on drop, so the two always pair.
    pub(crate) fn new(
        slot: SubscriberSlot,
        topics: Option<Box<[Topic]>>,
        counted: bool,
        resumed_from: Option<&EventId>,
        span: tracing::Span,
    ) -> Self {
        if let Some(topics) = &topics {
            slot.endpoints.count_topics(topics, true);
        }
        Self {
            counted,
            written: Written::default(),
            closed: None,
            last_id: resumed_from
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            topics,
            slot,
            span: (!span.is_disabled()).then(|| Box::new(span)),
        }
    }

    pub(crate) fn endpoints(&self) -> &Endpoints {
        &self.slot.endpoints
    }

    /// Whether the stream counts in the hub's stats.
    pub(crate) fn counted(&self) -> bool {
        self.counted
    }

    /// Keeps `frame`'s id as the last one sent.
    pub(crate) fn remember(&mut self, frame: &Frame) {
        self.last_id.clear();
        self.last_id.push_str(frame.id().as_str());
    }

    /// Adds what the stream wrote since it last reported to the hub's counters (if it counts).
    pub(crate) fn report(&mut self) {
        if self.counted {
            self.slot.endpoints.counters.wrote(&mut self.written);
        }
    }

    /// Runs `record` inside the stream's span (or none, when tracing it is off).
    fn in_span(&self, record: impl FnOnce()) {
        match &self.span {
            Some(span) => span.in_scope(record),
            None => record(),
        }
    }

    /// Counts a resync notice sent in the middle of the stream.
    pub(crate) fn resync_sent(&self, reason: &Resume) {
        if self.counted {
            self.endpoints().counters.resync_sent();
            self.in_span(|| {
                tracing::debug!(
                    target: "tower_sse_pubsub",
                    reason = reason.as_str(),
                    last_event_id = self.last_id.as_str(),
                    "resync sent"
                );
            });
        }
    }
}

impl Drop for StreamAccount {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        if let Some(topics) = &self.topics {
            self.slot.endpoints.count_topics(topics, false);
        }
        let counters = &self.slot.endpoints.counters;
        let (frames, bytes) = (self.written.frames, self.written.bytes);
        counters.wrote(&mut self.written);
        // Dropped before it ended: the connection went away.
        let reason = self.closed.unwrap_or(CloseReason::ClientGone);
        counters.stream_closed(reason);
        self.in_span(|| {
            tracing::debug!(
                target: "tower_sse_pubsub",
                reason = ?reason,
                last_event_id = self.last_id.as_str(),
                unreported_frames = frames,
                unreported_bytes = bytes,
                "stream closed"
            );
        });
    }
}

/// What a stream sends first.
enum Opening {
    /// The opening comment alone.
    Plain,
    /// The opening comment, then a resync notice for this reason.
    Notice(Resume),
}

/// The byte stream of one open SSE response.
///
/// Each wake drains every ready frame (up to [`CHUNK_BYTES`]) into one chunk, so a burst costs
/// one write. Keep-alive and shutdown come from the hub's ticker, not a timer per stream: the
/// ticker fires every half keep-alive interval, and a stream that wrote nothing over a whole tick
/// sends a keep-alive comment, so no silence lasts longer than the interval.
pub(crate) struct SseStream {
    /// What the first poll sends, until it has: the opening comment and, when the resume point
    /// could not be honoured in full, the resync notice. Made then, so an open stream holds no
    /// bytes for it.
    opening: Option<Opening>,
    subscription: Subscription,
    /// The ticker generation last looked at, and the one this stream is listed in.
    tick_seen: u64,
    tick_parked: Listing,
    wrote_since_tick: bool,
    /// With a write delay: what the stream parks with instead of its task's waker (boxed, so a
    /// hub without one pays a word for it).
    deferred: Option<Box<DeferredWaker>>,
    finished: bool,
    /// Held while the stream is replaying; dropped once it has caught up.
    replay: Option<ReplayPermit>,
    /// Its slot, counts and last id; settled when the stream is dropped.
    account: StreamAccount,
}

impl SseStream {
    /// A stream for `subscription`, placed as `resume` says: when that is a gap, a resync
    /// notice (with the account's resume point) goes out right after the opening comment, before
    /// any replayed frame.
    pub(crate) fn new(
        account: StreamAccount,
        subscription: Subscription,
        resume: Resume,
        replay: Option<ReplayPermit>,
    ) -> Self {
        let opening = if resume.is_gap() {
            Opening::Notice(resume)
        } else {
            Opening::Plain
        };
        let tick_seen = account.endpoints().ticker.generation();
        Self {
            opening: Some(opening),
            subscription,
            tick_seen,
            tick_parked: Listing::default(),
            wrote_since_tick: true,
            deferred: account
                .endpoints()
                .flush
                .as_ref()
                .map(|flush| Box::new(flush.handle())),
            finished: false,
            replay,
            account,
        }
    }

    fn endpoints(&self) -> &Endpoints {
        self.account.endpoints()
    }

    fn opening_frame(&self, opening: Opening) -> Bytes {
        match opening {
            Opening::Plain => Bytes::from_static(OPENING),
            Opening::Notice(reason) => {
                let resumed_from = EventId::new(&self.account.last_id).ok();
                let notice = resync_notice(&reason, resumed_from.as_ref());
                let mut first = BytesMut::with_capacity(OPENING.len() + notice.len());
                first.extend_from_slice(OPENING);
                first.extend_from_slice(&notice);
                first.freeze()
            }
        }
    }

    fn closing_frame(&self) -> Bytes {
        retry_frame(
            self.endpoints().config.shutdown_retry,
            "server shutting down; reconnect to resume",
        )
    }

    /// Everything ready, as one chunk; `None` when nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        // A single ready frame goes out as it is (the shared bytes, no copy); only a second one
        // starts a chunk that gathers them.
        let mut first: Option<Bytes> = None;
        let mut rest: Option<BytesMut> = None;
        let mut size = 0;
        // The last event of this chunk; its id is kept once the chunk is done.
        let mut last: Option<Frame> = None;
        loop {
            let bytes = match Pin::new(&mut self.subscription).poll_next(cx) {
                Poll::Ready(Some(Delivery::Event(frame))) => {
                    let bytes = frame.bytes().clone();
                    last = Some(frame);
                    self.account.written.frames += 1;
                    if self.replay.is_some() {
                        self.account.written.replayed += 1;
                    }
                    bytes
                }
                Poll::Ready(Some(Delivery::Resync(reason))) => {
                    if let Some(frame) = last.take() {
                        self.account.remember(&frame);
                    }
                    self.account.resync_sent(&reason);
                    let last_id = EventId::new(&self.account.last_id).ok();
                    resync_notice(&reason, last_id.as_ref())
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    self.replay = None;
                    let (reason, frame) = match self.subscription.end() {
                        Some(SubscriptionEnd::Lagged) => (CloseReason::Lagged, LAGGED),
                        Some(SubscriptionEnd::Deadline) => (CloseReason::Deadline, DEADLINE),
                        _ => (CloseReason::Broker, CLOSED),
                    };
                    self.account.closed = Some(reason);
                    Bytes::from_static(frame)
                }
                Poll::Pending => {
                    // Nothing ready and no replay page to come: the stream has caught up.
                    if self.replay.is_some() && !self.subscription.has_replay_pages() {
                        self.replay = None;
                    }
                    break;
                }
            };
            size += bytes.len();
            match (&first, &mut rest) {
                (None, _) => first = Some(bytes),
                (Some(head), None) => {
                    let mut chunk = BytesMut::with_capacity(size * 2);
                    chunk.extend_from_slice(head);
                    chunk.extend_from_slice(&bytes);
                    rest = Some(chunk);
                }
                (Some(_), Some(chunk)) => chunk.extend_from_slice(&bytes),
            }
            if self.finished || size >= CHUNK_BYTES {
                break;
            }
        }
        if let Some(frame) = last {
            self.account.remember(&frame);
        }
        rest.map(BytesMut::freeze).or(first)
    }
}

impl Stream for SseStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        let polled = this.poll_chunk(cx);
        if this.account.counted() {
            if let Poll::Ready(Some(chunk)) = &polled {
                this.account.written.bytes += chunk.len() as u64;
            }
            if this.account.written.frames >= Written::BATCH {
                this.account.report();
            }
        }
        polled
    }
}

impl SseStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(opening) = self.opening.take() {
            return Poll::Ready(Some(self.opening_frame(opening)));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        if self.endpoints().is_shut_down() {
            return Poll::Ready(Some(self.close_for_shutdown()));
        }
        if let Some(chunk) = self.drain(cx) {
            self.wrote_since_tick = true;
            return Poll::Ready(Some(chunk));
        }
        let tick = self.endpoints().ticker.generation();
        if tick != self.tick_seen {
            self.tick_seen = tick;
            // A quiet moment: report what was written, so the hub's stats stay close.
            self.account.report();
            let silent = !std::mem::replace(&mut self.wrote_since_tick, false);
            if silent && self.endpoints().config.keep_alive.is_some() {
                self.wrote_since_tick = true;
                return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE)));
            }
        }
        // Under a write delay the topics' wakes go through the hub's flush.
        let waker = match &self.deferred {
            Some(deferred) => deferred.standing_in_for(cx.waker()),
            None => cx.waker(),
        };
        self.subscription.waiter().register(waker);
        // Disjoint fields: no clone of the hub's shared state (a contended count) per park.
        let endpoints = self.account.endpoints();
        endpoints
            .ticker
            .register(self.subscription.waiter(), &mut self.tick_parked);
        // A shutdown between the check above and the registration fired before we were listed.
        if endpoints.is_shut_down() {
            return Poll::Ready(Some(self.close_for_shutdown()));
        }
        Poll::Pending
    }

    /// Ends the stream because the hub shuts down: the closing frame to send.
    fn close_for_shutdown(&mut self) -> Bytes {
        self.finished = true;
        self.account.closed = Some(CloseReason::Shutdown);
        self.closing_frame()
    }
}

/// The named event that tells a client it may have missed events: at the start of a stream
/// whose resume point could not be honoured in full (with that point), or within a stream whose
/// broker lost track.
pub(crate) fn resync_notice(reason: &Resume, last_event_id: Option<&EventId>) -> Bytes {
    let body = serde_json::json!({
        "reason": reason.as_str(),
        "lastEventId": last_event_id.map(EventId::as_str),
    });
    // Both steps only fail on empty data or a bad event type, which these are not.
    match Event::json(&body).and_then(|event| event.with_event_type(RESYNC_EVENT)) {
        Ok(event) => event.encode_fields(),
        Err(_) => Bytes::new(),
    }
}

/// A frame that sets the client's reconnection delay to a jittered `base` and says why in a
/// comment; no `id:`, and no data, so no event is dispatched.
pub(crate) fn retry_frame(base: Duration, reason: &str) -> Bytes {
    let reason = reason.replace(['\r', '\n'], " ");
    Bytes::from(format!(
        "retry: {}\n: {reason}\n\n",
        jitter(base).as_millis()
    ))
}

/// A random duration between half and one and a half times `base`.
fn jitter(base: Duration) -> Duration {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.5 + unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let base = Duration::from_secs(2);
        for _ in 0..1000 {
            let j = jitter(base);
            assert!(
                j >= Duration::from_secs(1) && j <= Duration::from_secs(3),
                "{j:?}"
            );
        }
    }
}
