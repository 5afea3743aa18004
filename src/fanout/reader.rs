//! [`Reader`]: one subscriber's cursors over its topics' logs.
//!
//! A reader holds nothing but positions: a frame stays in its topic's ring, shared by every
//! reader, until the ring's bounds push it out. A reader whose position fell out of the ring
//! lagged, and its stream ends so the client resumes from history. A reader of several topics
//! merges them by sequence, taking only frames at or below the engine's watermark (every frame
//! up to it is in all of its topics' rings), so it yields every event once and in order.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures::Stream;

use super::Engine;
use super::ring::{LogKey, Ring, TopicLog};
use crate::broker::{Delivery, Grant, Resume, SubscriptionEnd};
use crate::event::Frame;
use crate::signal::{Listing, Waiter};

/// The most bytes of frames taken out of the rings in one go.
const BATCH_BYTES: usize = 64 * 1024;
/// The most frames taken out of the rings in one go.
const BATCH_FRAMES: usize = 128;
/// The most slots a reader's batch buffer keeps once it is empty: a burst's buffer (up to
/// [`BATCH_FRAMES`] slots, 2 KiB) is given back, so an idle subscriber holds at most 64 bytes.
const KEPT_SLOTS: usize = 4;

pub(super) struct Cursor {
    pub(super) log: Arc<TopicLog>,
    pub(super) position: u64,
    /// The generation of the newest mark this cursor has applied.
    pub(super) mark_seen: u64,
    /// The signal generation this reader's waiter is listed in, if any.
    pub(super) parked: Listing,
}

/// A reader's cursors: a single topic's inline (most subscriptions, and no allocation of their
/// own), several in one boxed slice.
enum Cursors {
    One(Cursor),
    Many(Box<[Cursor]>),
}

impl From<Vec<Cursor>> for Cursors {
    fn from(mut cursors: Vec<Cursor>) -> Self {
        if cursors.len() == 1
            && let Some(only) = cursors.pop()
        {
            return Self::One(only);
        }
        Self::Many(cursors.into_boxed_slice())
    }
}

impl std::ops::Deref for Cursors {
    type Target = [Cursor];

    fn deref(&self) -> &[Cursor] {
        match self {
            Self::One(cursor) => std::slice::from_ref(cursor),
            Self::Many(cursors) => cursors,
        }
    }
}

impl std::ops::DerefMut for Cursors {
    fn deref_mut(&mut self) -> &mut [Cursor] {
        match self {
            Self::One(cursor) => std::slice::from_mut(cursor),
            Self::Many(cursors) => cursors,
        }
    }
}

/// One subscriber's view of the engine: the live part of a
/// [`Subscription`](crate::Subscription), made by [`Fanout::subscribe`](super::Fanout::subscribe).
///
/// It yields [`Delivery`]s in sequence order, each event once, and ends when the subscriber
/// lagged (its position fell out of a ring) or the engine was dropped; [`Reader::end`] says which.
/// Dropping it unsubscribes.
pub struct Reader {
    engine: Arc<Engine>,
    cursors: Cursors,
    waiter: Waiter,
    grant: Grant,
    last_yielded: u64,
    notice_seen: u64,
    ready: VecDeque<Delivery>,
    end: Option<SubscriptionEnd>,
}

enum Fill {
    Some,
    Empty,
    End(SubscriptionEnd),
}

impl Reader {
    pub(super) fn new(engine: Arc<Engine>, cursors: Vec<Cursor>, grant: Grant, seen: u64) -> Self {
        let notice_seen = cursors.iter().map(|c| c.mark_seen).max().unwrap_or(0);
        Self {
            engine,
            cursors: cursors.into(),
            waiter: Waiter::default(),
            grant,
            last_yielded: seen,
            notice_seen,
            ready: VecDeque::new(),
            end: None,
        }
    }

    /// Which private events this reader may receive.
    pub(crate) fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The wake handle this reader lists in its topics' signals.
    pub(crate) fn waiter(&self) -> &Waiter {
        &self.waiter
    }

    /// Why the reader ended, once it has returned `None`.
    pub fn end(&self) -> Option<SubscriptionEnd> {
        self.end
    }

    /// Skips frames at or below `sequence` (already delivered some other way).
    pub(crate) fn skip_through(&mut self, sequence: u64) {
        self.last_yielded = self.last_yielded.max(sequence);
    }

    /// The sequence of the last event yielded.
    pub(crate) fn last_yielded(&self) -> u64 {
        self.last_yielded
    }

    fn fill(&mut self) -> Fill {
        if self.cursors.len() == 1 {
            self.fill_one()
        } else {
            self.fill_merged()
        }
    }

    fn fill_one(&mut self) -> Fill {
        let Self {
            cursors,
            grant,
            last_yielded,
            notice_seen,
            ready,
            ..
        } = self;
        // Disjoint fields: the ring is read through `log` while the position moves.
        let Cursor {
            log,
            position,
            mark_seen,
            ..
        } = &mut cursors[0];
        let ring = log.read();
        // A single cursor is never a replay (one always comes with its pattern's live cursor),
        // so a reset needs nothing more here.
        apply_mark(&ring, position, mark_seen, notice_seen, last_yielded, ready);
        if *position < ring.start {
            return Fill::End(SubscriptionEnd::Lagged);
        }
        let mut index = (*position - ring.start) as usize;
        let mut bytes = 0;
        while let Some(frame) = ring.frames.get(index) {
            if bytes >= BATCH_BYTES || ready.len() >= BATCH_FRAMES {
                break;
            }
            index += 1;
            if frame.sequence() <= *last_yielded || !grant.allows(frame) {
                continue;
            }
            *last_yielded = frame.sequence();
            bytes += frame.bytes().len();
            ready.push_back(Delivery::Event(frame.clone()));
        }
        *position = ring.start + index as u64;
        if ready.is_empty() {
            Fill::Empty
        } else {
            Fill::Some
        }
    }

    fn fill_merged(&mut self) -> Fill {
        let watermark = self.engine.watermark.load(Ordering::Acquire);
        let mut bytes = 0;
        while bytes < BATCH_BYTES && self.ready.len() < BATCH_FRAMES {
            let mut best: Option<(usize, Frame)> = None;
            let mut reset = false;
            for (i, cursor) in self.cursors.iter_mut().enumerate() {
                let Cursor {
                    log,
                    position,
                    mark_seen,
                    ..
                } = cursor;
                let ring = log.read();
                reset |= apply_mark(
                    &ring,
                    position,
                    mark_seen,
                    &mut self.notice_seen,
                    &mut self.last_yielded,
                    &mut self.ready,
                );
                if *position < ring.start {
                    return Fill::End(SubscriptionEnd::Lagged);
                }
                let next = ring.frames.get((*position - ring.start) as usize);
                if let Some(frame) = next
                    && frame.sequence() <= watermark
                    && best
                        .as_ref()
                        .is_none_or(|(_, b)| frame.sequence() < b.sequence())
                {
                    best = Some((i, frame.clone()));
                }
            }
            if reset {
                // The store was reset: a pattern's replay holds frames of the old store, whose
                // sequences the new one reuses. Drop what is left of it, then merge again.
                for cursor in self.cursors.iter_mut() {
                    if matches!(cursor.log.key, LogKey::Replay(_)) {
                        cursor.position = cursor.log.read().head();
                    }
                }
                continue;
            }
            let Some((i, frame)) = best else { break };
            self.cursors[i].position += 1;
            if frame.sequence() > self.last_yielded && self.grant.allows(&frame) {
                self.last_yielded = frame.sequence();
                bytes += frame.bytes().len();
                self.ready.push_back(Delivery::Event(frame));
            }
        }
        if self.ready.is_empty() {
            Fill::Empty
        } else {
            Fill::Some
        }
    }

    /// The next delivery of the batch; the last one gives back a burst's buffer.
    fn take_ready(&mut self) -> Option<Delivery> {
        let next = self.ready.pop_front();
        if self.ready.is_empty() && self.ready.capacity() > KEPT_SLOTS {
            self.ready = VecDeque::new();
        }
        next
    }

    fn park(&mut self, cx: &Context<'_>) {
        self.waiter.register(cx.waker());
        for cursor in self.cursors.iter_mut() {
            cursor.log.signal.register(&self.waiter, &mut cursor.parked);
        }
    }
}

/// Applies a topic's newest mark to a cursor's position: a store reset moves the cursor past the frames of
/// the old store and restarts the sequence filter; the notice goes out once per mark, however
/// many of the reader's topics carry it.
fn apply_mark(
    ring: &Ring,
    position: &mut u64,
    mark_seen: &mut u64,
    notice_seen: &mut u64,
    last_yielded: &mut u64,
    ready: &mut VecDeque<Delivery>,
) -> bool {
    let Some(mark) = &ring.mark else { return false };
    if mark.generation <= *mark_seen {
        return false;
    }
    // The newest reset, if this reader has not seen it: it may lie under a later notice.
    let reset = mark
        .reset
        .filter(|(generation, _)| *generation > *mark_seen);
    *mark_seen = mark.generation;
    if let Some((_, at)) = reset {
        *position = (*position).max(at);
        *last_yielded = 0;
    }
    if mark.generation > *notice_seen {
        *notice_seen = mark.generation;
        // A reset missed is the stronger notice: the store itself was lost.
        let reason = match reset {
            Some(_) => Resume::Unknown,
            None => mark.reason.clone(),
        };
        ready.push_back(Delivery::Resync(reason));
    }
    reset.is_some()
}

impl Stream for Reader {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = self.get_mut();
        if let Some(delivery) = this.take_ready() {
            return Poll::Ready(Some(delivery));
        }
        if this.end.is_some() {
            return Poll::Ready(None);
        }
        let mut parked = false;
        loop {
            let closed = this.engine.closed.load(Ordering::Acquire);
            match this.fill() {
                Fill::Some => return Poll::Ready(this.take_ready()),
                Fill::End(end) => {
                    this.end = Some(end);
                    return Poll::Ready(this.take_ready());
                }
                Fill::Empty if closed => {
                    this.end = Some(SubscriptionEnd::Closed);
                    return Poll::Ready(None);
                }
                Fill::Empty if parked => return Poll::Pending,
                // Park first, then look once more: a frame that arrived in between is seen
                // now, and any later one fires a signal this reader is already listed in.
                Fill::Empty => {
                    this.park(cx);
                    parked = true;
                }
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.engine.unsubscribe(&self.cursors);
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field(
                "topics",
                &self.cursors.iter().map(|c| &c.log.key).collect::<Vec<_>>(),
            )
            .field("last_yielded", &self.last_yielded)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::broker::PublishRequest;
    use crate::event::{Event, EventId, Topic};
    use crate::fanout::{Fanout, Position};

    #[tokio::test]
    async fn a_reader_gives_back_a_bursts_buffer_once_it_has_delivered_it() {
        let fanout = Fanout::builder().build();
        let topic = Topic::new("t").expect("topic");
        let (mut reader, _) = fanout.subscribe(
            std::slice::from_ref(&topic),
            Position::Live,
            Grant::PublicOnly,
        );
        let request = PublishRequest::new([topic], Event::text("x").expect("event"));
        for _ in 0..100 {
            fanout.publish(&request, |s| EventId::new(format!("e-{s}")).expect("id"));
        }
        let first = reader.next().await;
        assert!(matches!(first, Some(Delivery::Event(_))));
        assert!(
            reader.ready.capacity() >= 99,
            "the burst is read in one batch"
        );
        for _ in 1..100 {
            assert!(matches!(reader.next().await, Some(Delivery::Event(_))));
        }
        assert!(reader.ready.is_empty());
        assert!(
            reader.ready.capacity() <= KEPT_SLOTS,
            "{} slots kept after the burst",
            reader.ready.capacity()
        );
    }
}
