//! The subscriber side of a broker: [`Subscription`], a replay read in pages (when the broker
//! keeps history elsewhere) followed by the fan-out engine's live [`Reader`].

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use tokio::time::{Instant, Sleep};

use super::BrokerError;
use crate::event::Frame;
use crate::fanout::Reader;

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
    /// The subscriber did not keep up: its position fell out of the retained log. Reconnect and
    /// resume.
    Lagged,
    /// The broker closed the subscription (it was dropped or shut down).
    Closed,
    /// The deadline of the [`SubscribeRequest`](super::SubscribeRequest) passed.
    Deadline,
    /// The broker could not read the rest of the replay; reconnect and resume.
    Unavailable,
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

/// Pages of replayed frames in sequence order, read from a broker's own store.
pub type ReplayPages = BoxStream<'static, Result<Vec<Frame>, BrokerError>>;

/// A stream of [`Delivery`]s for one subscriber: the replay after the resume point, then live
/// events, in id order, each once; and, should the broker lose track while the subscription is
/// open, a [`Delivery::Resync`] in place of a silent gap.
///
/// Dropping it unsubscribes. When the stream ends, [`Subscription::end`] says why.
///
/// Rust code consumes one as a stream, from any broker:
///
/// ```
/// use futures::StreamExt;
/// use tower_sse_pubsub::broker::Broker;
/// use tower_sse_pubsub::{Delivery, Event, MemoryBroker, PublishRequest, SubscribeRequest, Topic};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = MemoryBroker::new();
/// let orders = Topic::new("orders")?;
/// let mut subscription = broker.subscribe(&SubscribeRequest::new([orders.clone()])).await?;
///
/// let request = PublishRequest::new([orders], Event::json(&serde_json::json!({"order": 42}))?);
/// broker.publish(&request).await?;
///
/// match subscription.next().await {
///     Some(Delivery::Event(frame)) => {
///         let order: serde_json::Value = frame.json()?;
///         assert_eq!(order["order"], 42);
///     }
///     // Events were missed (the broker lost track): reload state, then go on.
///     Some(Delivery::Resync(_)) => {}
///     Some(_) => {}
///     None => println!("ended: {:?}", subscription.end()),
/// }
/// # Ok(())
/// # }
/// ```
pub struct Subscription {
    /// The replay from the broker's store, while there is one: boxed, so a live subscription
    /// (most of them, most of the time) carries one word for it.
    replay: Option<Box<Replaying>>,
    reader: Reader,
    resume: Resume,
    end: Option<SubscriptionEnd>,
    deadline: Option<Pin<Box<Sleep>>>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

/// A replay in progress: pages still to come, the page being delivered, and what the replay may
/// still deliver (events, bytes).
#[derive(Default)]
struct Replaying {
    pages: Option<ReplayPages>,
    page: VecDeque<Frame>,
    budget: Option<(usize, usize)>,
}

impl Subscription {
    /// A subscription over a [`Reader`] of the fan-out engine, for
    /// [`Broker`](super::Broker) implementations; `resume` is how the resume point was placed.
    pub fn new(reader: Reader, resume: Resume) -> Self {
        Self {
            replay: None,
            reader,
            resume,
            end: None,
            deadline: None,
            on_drop: None,
        }
    }

    /// Limits what the replay pages deliver: past `budget`, the rest of the replay is dropped
    /// and a [`Delivery::Resync`] with [`Resume::Expired`] takes its place, then live events
    /// follow. (A broker whose replay comes from the engine applies the budget when it places
    /// the reader, with [`Fanout::subscribe_within`](crate::broker::Fanout::subscribe_within).)
    #[must_use]
    pub fn with_replay_budget(mut self, budget: Option<super::ReplayBudget>) -> Self {
        let budget = budget.map(|b| (b.events(), b.bytes()));
        if budget.is_some() || self.replay.is_some() {
            self.replay.get_or_insert_with(Box::default).budget = budget;
        }
        self
    }

    /// Replays `pages` (frames in sequence order) before the reader's frames. The reader must
    /// have been placed before the replay's end was fixed, so nothing falls between the two;
    /// live frames at or below the last replayed sequence are skipped.
    #[must_use]
    pub fn with_replay(mut self, pages: ReplayPages) -> Self {
        self.replay.get_or_insert_with(Box::default).pages = Some(pages);
        self
    }

    /// Ends the subscription at `deadline` with [`SubscriptionEnd::Deadline`].
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
        self
    }

    /// Runs `on_drop` when the subscription is dropped (to unregister from a broker). Each
    /// function given runs once, the last given first.
    #[must_use]
    pub fn on_drop(mut self, on_drop: impl FnOnce() + Send + 'static) -> Self {
        self.on_drop = Some(match self.on_drop.take() {
            None => Box::new(on_drop),
            Some(earlier) => Box::new(move || {
                on_drop();
                earlier();
            }),
        });
        self
    }

    /// Skips live frames at or below `sequence`: the client has seen them already, for example
    /// through another instance whose feed runs ahead of this one's.
    #[must_use]
    pub fn skip_through(mut self, sequence: u64) -> Self {
        self.reader.skip_through(sequence);
        self
    }

    /// Whether the resume point could be placed; check [`Resume::is_gap`] to tell the client.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// Why the stream ended, once it has returned `None`.
    pub fn end(&self) -> Option<SubscriptionEnd> {
        self.end
    }

    /// Whether replay pages from the broker's store are still to come or to be delivered.
    pub(crate) fn has_replay_pages(&self) -> bool {
        self.replay
            .as_ref()
            .is_some_and(|r| r.pages.is_some() || !r.page.is_empty())
    }

    /// The waiter this subscription's task is woken through: a stream that also waits on other
    /// signals (the hub's ticker) lists the same one, so a stream has one wake handle.
    pub(crate) fn waiter(&self) -> &crate::signal::Waiter {
        self.reader.waiter()
    }

    /// Delivers the replay; `Ready(None)` once it is over (and the subscription ended, if the
    /// store failed).
    fn poll_replay(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let Some(replay) = self.replay.as_deref_mut() else {
            return Poll::Ready(None);
        };
        loop {
            if let Some(frame) = replay.page.pop_front() {
                if frame.sequence() <= self.reader.last_yielded() {
                    continue;
                }
                // A replay from the store passes the same grant as live frames.
                if !self.reader.grant().allows(&frame) {
                    self.reader.skip_through(frame.sequence());
                    continue;
                }
                if let Some((events, bytes)) = &mut replay.budget {
                    let size = frame.bytes().len();
                    if *events == 0 || size > *bytes {
                        // Over budget: the rest of the replay is skipped, and said so.
                        self.replay = None;
                        return Poll::Ready(Some(Delivery::Resync(Resume::Expired)));
                    }
                    *events -= 1;
                    *bytes -= size;
                }
                self.reader.skip_through(frame.sequence());
                return Poll::Ready(Some(Delivery::Event(frame)));
            }
            let Some(pages) = replay.pages.as_mut() else {
                self.replay = None;
                return Poll::Ready(None);
            };
            match pages.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(page))) => replay.page.extend(page),
                Poll::Ready(Some(Err(_))) => {
                    self.replay = None;
                    self.end = Some(SubscriptionEnd::Unavailable);
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => {
                    self.replay = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = self.get_mut();
        if this.end.is_some() {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.end = Some(SubscriptionEnd::Deadline);
            return Poll::Ready(None);
        }
        if this.replay.is_some() {
            match this.poll_replay(cx) {
                Poll::Ready(None) if this.end.is_some() => return Poll::Ready(None),
                Poll::Ready(None) => {}
                other => return other,
            }
        }
        match Pin::new(&mut this.reader).poll_next(cx) {
            Poll::Ready(None) => {
                this.end = Some(this.reader.end().unwrap_or(SubscriptionEnd::Closed));
                Poll::Ready(None)
            }
            other => other,
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
            .field("replaying", &self.replay.is_some())
            .field("resume", &self.resume)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}
