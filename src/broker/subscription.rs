//! The subscriber side of a broker: a replay followed by a bounded live queue.
//!
//! A broker fills a subscriber's queue with [`Mailbox::deliver`], which never blocks and never
//! grows the queue past its capacity: when the queue is full the subscriber is told it fell
//! behind (in the one slot kept free for that) and is dropped from the fan-out. Its
//! [`Subscription`] then ends with [`SubscriptionEnd::Lagged`], and the client resumes from
//! history when it reconnects.

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

/// What a broker puts in a subscriber's queue.
#[derive(Debug)]
pub(crate) enum Delivery {
    Frame(Frame),
    Lagged,
}

/// The broker's end of one subscriber's bounded queue.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox(mpsc::Sender<Delivery>);

impl Mailbox {
    /// A queue that holds `capacity` frames (at least one), plus a slot for the lag notice.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Delivery>) {
        let (tx, rx) = mpsc::channel(capacity.max(1) + 1);
        (Self(tx), rx)
    }

    /// Queues `frame` without waiting. Returns `false` when the subscriber is gone or has just
    /// been told it lagged; the caller then drops this mailbox from its fan-out.
    ///
    /// Callers serialize deliveries to one mailbox (the broker's lock), so the free capacity
    /// seen here can only grow before the send.
    pub(crate) fn deliver(&self, frame: &Frame) -> bool {
        if self.0.capacity() <= 1 {
            let _ = self.0.try_send(Delivery::Lagged);
            return false;
        }
        self.0.try_send(Delivery::Frame(frame.clone())).is_ok()
    }
}

/// A stream of [`Frame`]s for one subscriber: the replay after the resume point, then live
/// events, in id order, each once.
///
/// Dropping it unsubscribes. When the stream ends, [`Subscription::end`] says why.
pub struct Subscription {
    replay: std::vec::IntoIter<Frame>,
    live: mpsc::Receiver<Delivery>,
    /// Live frames at or below this sequence were already replayed and are skipped.
    replayed_through: u64,
    resume: Resume,
    end: Option<SubscriptionEnd>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Subscription {
    /// Assembles a subscription from its replay and its live queue. `on_drop` runs when the
    /// subscription is dropped, to unsubscribe.
    pub(crate) fn new(
        replay: Vec<Frame>,
        live: mpsc::Receiver<Delivery>,
        resume: Resume,
        on_drop: Box<dyn FnOnce() + Send>,
    ) -> Self {
        let replayed_through = replay.last().map_or(0, Frame::sequence);
        Self {
            replay: replay.into_iter(),
            live,
            replayed_through,
            resume,
            end: None,
            on_drop: Some(on_drop),
        }
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
    type Item = Frame;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = self.get_mut();
        if let Some(frame) = this.replay.next() {
            return Poll::Ready(Some(frame));
        }
        if this.end.is_some() {
            return Poll::Ready(None);
        }
        loop {
            match this.live.poll_recv(cx) {
                Poll::Ready(Some(Delivery::Frame(frame))) => {
                    if frame.sequence() > this.replayed_through {
                        return Poll::Ready(Some(frame));
                    }
                }
                Poll::Ready(Some(Delivery::Lagged)) => {
                    this.end = Some(SubscriptionEnd::Lagged);
                    this.live.close();
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
