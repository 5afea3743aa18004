//! The subscriber side of a broker: a replay followed by a bounded live queue.
//!
//! A broker makes a queue with [`Mailbox::new`], keeps the [`Mailbox`] in its fan-out and puts
//! the [`Inbox`] in the [`Subscription`] it returns. [`Mailbox::deliver`] never blocks and never
//! grows the queue past its capacity: when the queue is full the subscriber is told it fell
//! behind (in the one slot kept free for that) and the broker drops it from the fan-out. The
//! subscription then ends with [`SubscriptionEnd::Lagged`], and the client resumes from history
//! when it reconnects.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::event::Frame;

/// Whether a subscription's resume point could be placed in the broker's history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// No resume point was given: only live events follow.
    Fresh,
    /// Every event after the resume point is replayed; nothing was missed.
    Complete,
    /// Events after the resume point have already left the retained history: some were missed.
    /// Every retained event after it is replayed.
    Expired,
    /// The broker did not issue this id (it is malformed, from another broker, or from before a
    /// store reset). Every retained event is replayed.
    Unknown,
}

impl Resume {
    /// `true` when the subscriber may have missed events ([`Resume::Expired`] or
    /// [`Resume::Unknown`]).
    pub fn is_gap(&self) -> bool {
        matches!(self, Self::Expired | Self::Unknown)
    }

    /// A short lowercase name: `fresh`, `complete`, `expired` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Complete => "complete",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }
}

/// Why a [`Subscription`] stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionEnd {
    /// The subscriber did not keep up and its bounded queue overflowed; reconnect and resume.
    Lagged,
    /// The broker closed the subscription (it was dropped or shut down).
    Closed,
}

/// What a subscription yields: an event, or the news that some were missed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Delivery {
    /// A published event, in id order.
    Event(Frame),
    /// Events may have been missed while the subscription stayed open: its broker lost
    /// history it had not yet delivered ([`Resume::Expired`]) or its store was reset
    /// ([`Resume::Unknown`]). Clients should reload their state; events follow as usual.
    Resync(Resume),
}

impl Delivery {
    /// The event, if this is one.
    pub fn into_event(self) -> Option<Frame> {
        match self {
            Self::Event(frame) => Some(frame),
            Self::Resync(_) => None,
        }
    }
}

/// What a broker puts in a subscriber's queue.
#[derive(Debug)]
enum Queued {
    Frame(Frame),
    Resync(Resume),
    Lagged,
}

/// The largest queue capacity; larger requests are lowered to it.
const MAX_CAPACITY: usize = 1 << 20;

/// The broker's end of one subscriber's bounded live queue.
#[derive(Debug, Clone)]
pub struct Mailbox(mpsc::Sender<Queued>);

/// The subscriber's end of its live queue; goes into [`Subscription::from_parts`].
#[derive(Debug)]
pub struct Inbox(mpsc::Receiver<Queued>);

impl Mailbox {
    /// A queue that holds `capacity` frames (1 to 2^20; values outside are clamped), plus a slot
    /// for the lag notice.
    pub fn new(capacity: usize) -> (Self, Inbox) {
        let (tx, rx) = mpsc::channel(capacity.clamp(1, MAX_CAPACITY) + 1);
        (Self(tx), Inbox(rx))
    }

    /// Queues `frame` without waiting. Returns `false` when the subscriber is gone or has just
    /// been told it lagged; the broker then drops this mailbox from its fan-out.
    ///
    /// Deliveries to one mailbox must not race each other (a broker delivers under its lock):
    /// then the free capacity seen here can only grow before the send.
    pub fn deliver(&self, frame: &Frame) -> bool {
        self.send(Queued::Frame(frame.clone()))
    }

    /// Tells the subscriber it may have missed events (see [`Delivery::Resync`]); `reason` is
    /// [`Resume::Expired`] or [`Resume::Unknown`]. After [`Resume::Unknown`] (a store reset,
    /// whose sequences start again) the subscription accepts sequences from the start.
    /// Returns `false` as [`Mailbox::deliver`] does.
    pub fn resync(&self, reason: Resume) -> bool {
        self.send(Queued::Resync(reason))
    }

    fn send(&self, item: Queued) -> bool {
        if self.0.capacity() <= 1 {
            let _ = self.0.try_send(Queued::Lagged);
            return false;
        }
        self.0.try_send(item).is_ok()
    }
}

/// A stream of [`Delivery`]s for one subscriber: the replay after the resume point, then live
/// events, in id order, each once; and, should the broker lose track while the subscription is
/// open, a [`Delivery::Resync`] in place of a silent gap.
///
/// Dropping it unsubscribes. When the stream ends, [`Subscription::end`] says why.
pub struct Subscription {
    replay: std::vec::IntoIter<Frame>,
    live: Inbox,
    /// The sequence of the last frame yielded. Live frames at or below it were already seen (in
    /// the replay, or through another of the subscription's topics) and are skipped.
    last_yielded: u64,
    resume: Resume,
    end: Option<SubscriptionEnd>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Subscription {
    /// Assembles a subscription, for [`Broker`](super::Broker) implementations.
    ///
    /// `replay` holds the retained frames after the resume point in sequence order; `live` is the
    /// inbox of the mailbox registered in the fan-out *before* the replay was read, so nothing
    /// falls between the two. A live frame at or below the sequence of the last frame yielded is
    /// skipped, so an overlap with the replay, or a frame that arrives once per topic, is
    /// delivered once. Live frames must therefore arrive in sequence order. `on_drop` runs when the subscription is dropped, to unsubscribe.
    pub fn from_parts(
        replay: Vec<Frame>,
        live: Inbox,
        resume: Resume,
        on_drop: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            replay: replay.into_iter(),
            live,
            last_yielded: 0,
            resume,
            end: None,
            on_drop: Some(Box::new(on_drop)),
        }
    }

    /// Skips live frames at or below `sequence`: the client has seen them already, for example
    /// through another instance whose feed runs ahead of this one's.
    #[must_use]
    pub fn skip_through(mut self, sequence: u64) -> Self {
        self.last_yielded = self.last_yielded.max(sequence);
        self
    }

    /// Whether the resume point could be placed; check [`Resume::is_gap`] to tell the client.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// How many replayed frames are still to come.
    pub fn replay_remaining(&self) -> usize {
        self.replay.len()
    }

    /// Why the stream ended, once it has returned `None`.
    pub fn end(&self) -> Option<SubscriptionEnd> {
        self.end
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = self.get_mut();
        if let Some(frame) = this.replay.next() {
            this.last_yielded = this.last_yielded.max(frame.sequence());
            return Poll::Ready(Some(Delivery::Event(frame)));
        }
        if this.end.is_some() {
            return Poll::Ready(None);
        }
        loop {
            match this.live.0.poll_recv(cx) {
                Poll::Ready(Some(Queued::Frame(frame))) => {
                    if frame.sequence() > this.last_yielded {
                        this.last_yielded = frame.sequence();
                        return Poll::Ready(Some(Delivery::Event(frame)));
                    }
                }
                Poll::Ready(Some(Queued::Resync(reason))) => {
                    if reason == Resume::Unknown {
                        this.last_yielded = 0;
                    }
                    return Poll::Ready(Some(Delivery::Resync(reason)));
                }
                Poll::Ready(Some(Queued::Lagged)) => {
                    this.end = Some(SubscriptionEnd::Lagged);
                    this.live.0.close();
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => {
                    this.end = Some(SubscriptionEnd::Closed);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop.take() {
            on_drop();
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("replay_remaining", &self.replay.len())
            .field("resume", &self.resume)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::event::{Event, EventId};

    fn frame(sequence: u64) -> Frame {
        let id = EventId::from_trusted(format!("test-{sequence}"));
        Frame::new(id, sequence, &[], &Event::text("x").expect("valid event"))
    }

    #[tokio::test]
    async fn live_frames_the_client_already_saw_are_skipped() {
        let (mailbox, inbox) = Mailbox::new(8);
        let mut subscription =
            Subscription::from_parts(Vec::new(), inbox, Resume::Complete, || {}).skip_through(5);
        for sequence in [4, 5, 6, 6, 7] {
            assert!(mailbox.deliver(&frame(sequence)));
        }
        drop(mailbox);
        let mut seen = Vec::new();
        while let Some(delivery) = subscription.next().await {
            seen.extend(delivery.into_event().map(|f| f.sequence()));
        }
        assert_eq!(seen, [6, 7]);
        assert_eq!(subscription.end(), Some(SubscriptionEnd::Closed));
    }

    #[tokio::test]
    async fn a_store_reset_restarts_the_sequence_filter() {
        let (mailbox, inbox) = Mailbox::new(8);
        let mut subscription =
            Subscription::from_parts(vec![frame(9)], inbox, Resume::Complete, || {});
        assert!(mailbox.deliver(&frame(9)));
        assert!(mailbox.resync(Resume::Unknown));
        assert!(mailbox.deliver(&frame(1)));
        drop(mailbox);
        let mut seen = Vec::new();
        while let Some(delivery) = subscription.next().await {
            seen.push(match delivery {
                Delivery::Event(f) => f.sequence().to_string(),
                Delivery::Resync(reason) => reason.as_str().to_owned(),
            });
        }
        assert_eq!(seen, ["9", "unknown", "1"]);
    }
}
