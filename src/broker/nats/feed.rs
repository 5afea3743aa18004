//! The one live subscription per process: the stream republishes every message it stores to
//! `<prefix>-live.>` (with its sequence in a header), and one task reads those, turns each
//! event message into a [`Frame`](crate::Frame) once and appends it to the fan-out engine, with
//! the stream sequence as the frame's sequence. Read as they are stored, events reach live
//! subscribers however short a topic's history: the per-topic limit cannot drop one first.
//!
//! The task watches the stream sequence. A jump (messages it never saw) is filled from the
//! stream by sequence, and what the stream no longer holds is reported to every reader as a
//! resync. After a (re)start the messages stored meanwhile are read through an ordered
//! consumer from the last sequence read, up to the stream's end, and then from the republished
//! ones again. A stream made without republishing (by hand, or by an earlier version) is read
//! through the ordered consumer all along. Every `health_check` the stream's identity is read:
//! a recreated stream (a new epoch, say a server with memory storage restarted) resets the
//! engine, and the feed starts again from the new stream's first message; a feed that saw
//! nothing for a whole interval while the stream grew starts again too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use tokio::sync::oneshot;

use super::subject::Subjects;
use super::wire::{self, Epoch};
use crate::Resume;
use crate::broker::Fanout;

/// The most missing messages a jump is filled with one by one; a longer one is reported as a
/// resync at once.
const MAX_GAP_FILL: u64 = 1_024;

/// What the feed task needs, moved into it.
pub(super) struct Feed {
    pub(super) jetstream: jetstream::Context,
    pub(super) config: stream::Config,
    pub(super) subjects: Subjects,
    pub(super) fanout: Fanout,
    /// The epoch of the stream this feed reads.
    pub(super) current: Epoch,
    /// The stream's epoch as the publishing side knows it, told of a new one.
    pub(super) epoch: Arc<Mutex<Epoch>>,
    /// The last stream sequence read (or skipped over as known to be older).
    pub(super) last: u64,
    pub(super) health_check: Duration,
    pub(super) gap_fills: Arc<std::sync::atomic::AtomicU64>,
    /// Fires (or is dropped) when the broker is.
    pub(super) stop: oneshot::Receiver<()>,
    /// The subscription to the republished messages, kept from run to run while the stream
    /// stays the same (the first one made before `last` was read).
    pub(super) live: Option<async_nats::Subscriber>,
    /// The count of the feed connection's connections through which `live` has held every
    /// message after `last` (1: the first connection; a higher count is a reconnection, across
    /// which messages may have been missed).
    pub(super) live_through: u64,
    /// Counts the feed connection's (re)connections.
    pub(super) connected: tokio::sync::watch::Receiver<u64>,
}

/// What makes a run of the feed start again at once: the feed's connection made anew, or an
/// advisory that the stream was created, deleted or changed.
struct Signals {
    connected: tokio::sync::watch::Receiver<u64>,
    /// The connection count that is no news.
    known: u64,
    advisories: Option<async_nats::Subscriber>,
}

impl Signals {
    /// Completes when one of the signals fires.
    async fn fired(&mut self) {
        let Self {
            connected,
            known,
            advisories,
        } = self;
        let advisory = async {
            let next = match advisories.as_mut() {
                Some(advisories) => advisories.next().await,
                None => None,
            };
            if next.is_none() {
                std::future::pending::<()>().await;
            }
        };
        let connected = async {
            loop {
                if connected.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if *connected.borrow_and_update() > *known {
                    return;
                }
            }
        };
        tokio::select! {
            () = advisory => {}
            () = connected => {}
        }
    }
}

/// Why one run of the consumer ended.
enum Restart {
    Stopped,
    /// Something failed or stalled: the next run catches up through a new subscription.
    Again,
    /// A signal (the stream changed, or the connection was made anew): the subscription is
    /// kept for the next run.
    Now,
}

impl Feed {
    pub(super) async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.run_once().await {
                Ok(Restart::Stopped) => return,
                // A short pause all the same: a stream deleted and made again at once can fail
                // on the server (its file store still being removed), and the subscription kept
                // holds what arrives meanwhile.
                Ok(Restart::Now | Restart::Again) => backoff = Duration::from_millis(50),
                Err(error) => {
                    tracing::warn!(%error, "NATS live feed interrupted; restarting it");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
            tokio::select! {
                _ = &mut self.stop => return,
                () = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Reads the stream from the last sequence read on, until the stream changes identity, the
    /// feed fails, or the broker is dropped: first through an ordered consumer up to the
    /// stream's end, then (when the stream republishes its messages) from the republished
    /// messages, which arrive as each is stored, before any limit can drop it.
    async fn run_once(&mut self) -> Result<Restart, async_nats::Error> {
        let mut live = self.live.take();
        let run = self.run_with(&mut live).await;
        // After a signal the subscription still holds every message after `last`; after a
        // stall, an ended subscription or an error, the next run catches up through a new one.
        if matches!(run, Ok(Restart::Now | Restart::Stopped)) {
            self.live = live;
        }
        run
    }

    /// A run with the subscription `live` (kept for the next run when it stays valid).
    async fn run_with(
        &mut self,
        live: &mut Option<async_nats::Subscriber>,
    ) -> Result<Restart, async_nats::Error> {
        // Signals first, then the stream: a change after this point restarts the run.
        let connections = *self.connected.borrow_and_update();
        let mut signals = Signals {
            connected: self.connected.clone(),
            known: connections.max(self.live_through),
            advisories: self
                .jetstream
                .client()
                .subscribe(super::subject::advisories(&self.config.name))
                .await
                .ok(),
        };
        let stream = self
            .jetstream
            .get_or_create_stream(self.config.clone())
            .await?;
        let epoch = Epoch::of(stream.cached_info());
        let recreated = self.note_epoch(&epoch);
        let republished = stream
            .cached_info()
            .config
            .republish
            .as_ref()
            .is_some_and(|r| *r == self.subjects.republish());
        if recreated || !republished {
            // What it holds may be the old stream's.
            *live = None;
        }
        // Subscribed before the stream's end is read: whatever is stored after it arrives here.
        // One kept from an earlier run holds every message after `last`, unless the connection
        // was made anew since.
        let continuous = live.is_some() && connections <= self.live_through;
        if republished && live.is_none() {
            *live = Some(
                self.jetstream
                    .client()
                    .subscribe(self.subjects.republished())
                    .await?,
            );
        }
        let info = stream.get_info().await?;
        if Epoch::of(&info) != epoch {
            return Ok(Restart::Again);
        }
        let end = info.state.last_sequence;
        self.skip_unparsable(&stream).await;
        // Nothing to catch up on when the subscription held everything after `last`: reading
        // those messages from the stream instead could find some already dropped by a short
        // history.
        if (live.is_none() || (self.last < end && !continuous))
            && let Some(restart) = self
                .catch_up(&stream, &epoch, live.is_some().then_some(end), &mut signals)
                .await?
        {
            return Ok(restart);
        }
        // Caught up: the subscription holds everything after `last` from here on.
        self.live_through = self.live_through.max(connections);
        let Some(live) = live.as_mut() else {
            return Ok(Restart::Again);
        };
        let mut check = tokio::time::interval(self.health_check);
        check.tick().await;
        let mut behind: Option<u64> = None;
        loop {
            tokio::select! {
                _ = &mut self.stop => return Ok(Restart::Stopped),
                () = signals.fired() => return Ok(Restart::Now),
                _ = check.tick() => {
                    if let Some(restart) = self.check(&stream, &epoch, &mut behind).await? {
                        return Ok(restart);
                    }
                }
                message = live.next() => {
                    let Some(message) = message else { return Ok(Restart::Again) };
                    self.deliver_republished(&stream, &epoch, &message).await?;
                }
            }
        }
    }

    /// Appends a republished message. Its headers say where the stream stored it; one whose
    /// stream is another, or that jumps past the stream's last message, was not republished by
    /// the stream (another program published it on the subject) and is dropped. A jump is read
    /// from the stream itself, the message included.
    async fn deliver_republished(
        &mut self,
        stream: &jetstream::stream::Stream,
        epoch: &Epoch,
        message: &async_nats::Message,
    ) -> Result<(), async_nats::Error> {
        let header = |name| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
        };
        let sequence: Option<u64> =
            header(async_nats::header::NATS_SEQUENCE).and_then(|v| v.parse().ok());
        let (Some(sequence), Some(subject), Some(name)) = (
            sequence,
            header(async_nats::header::NATS_SUBJECT),
            header(async_nats::header::NATS_STREAM),
        ) else {
            tracing::warn!("dropping a message on the republish subject without its headers");
            return Ok(());
        };
        if name != self.config.name {
            tracing::warn!(
                stream = name,
                "dropping a message republished by another stream"
            );
            return Ok(());
        }
        if sequence <= self.last.saturating_add(1) {
            return self
                .deliver(stream, epoch, sequence, subject, message)
                .await;
        }
        let last = stream.get_info().await?.state.last_sequence;
        if sequence > last {
            tracing::warn!(
                sequence,
                last,
                "dropping a message on the republish subject past the stream's end"
            );
            return Ok(());
        }
        self.fill_gap(stream, epoch, sequence + 1).await?;
        Ok(())
    }

    /// Reads the stream through an ordered consumer placed after the last sequence read: until
    /// `end` is read when given (`None` then), else for as long as it runs (a restart then).
    async fn catch_up(
        &mut self,
        stream: &jetstream::stream::Stream,
        epoch: &Epoch,
        end: Option<u64>,
        signals: &mut Signals,
    ) -> Result<Option<Restart>, async_nats::Error> {
        let deliver_policy = match self.last {
            0 => DeliverPolicy::All,
            last => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: self.subjects.all(),
                deliver_policy,
                ..OrderedConfig::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut check = tokio::time::interval(self.health_check);
        check.tick().await;
        // The last sequence read at the previous check, when the stream held newer ones then.
        let mut behind: Option<u64> = None;
        loop {
            tokio::select! {
                _ = &mut self.stop => return Ok(Some(Restart::Stopped)),
                () = signals.fired() => return Ok(Some(Restart::Now)),
                _ = check.tick() => {
                    if let Some(end) = end
                        && behind == Some(self.last)
                    {
                        // Nothing came for a whole interval short of the end: what is left
                        // was deleted (or the consumer stalled); read it by sequence.
                        self.fill_gap(stream, epoch, end + 1).await?;
                        return Ok(None);
                    }
                    if let Some(restart) = self.check(stream, epoch, &mut behind).await? {
                        return Ok(Some(restart));
                    }
                }
                message = messages.next() => {
                    let Some(message) = message else { return Ok(Some(Restart::Again)) };
                    let message = message?;
                    let info = message.info()?;
                    let (sequence, pending) = (info.stream_sequence, info.pending);
                    let subject = message.message.subject.to_string();
                    self.deliver(stream, epoch, sequence, &subject, &message.message).await?;
                    if end.is_some_and(|end| self.last >= end || pending == 0) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The periodic check: a stream of another identity, or one whose newer messages did not
    /// arrive for a whole interval (the feed stalled, say its consumer was lost with a
    /// restarted server), restarts the feed.
    async fn check(
        &mut self,
        stream: &jetstream::stream::Stream,
        epoch: &Epoch,
        behind: &mut Option<u64>,
    ) -> Result<Option<Restart>, async_nats::Error> {
        let info = stream.get_info().await?;
        if Epoch::of(&info) != *epoch || *behind == Some(self.last) {
            return Ok(Some(Restart::Again));
        }
        *behind = (info.state.last_sequence > self.last).then_some(self.last);
        Ok(None)
    }

    /// Steps over the messages next in line that this client cannot parse (say, a header that
    /// is not UTF-8, published on the prefix by another program): delivered to the consumer,
    /// such a message breaks the client's connection, and the consumer placed again before it
    /// would break it again and again.
    async fn skip_unparsable(&mut self, stream: &jetstream::stream::Stream) {
        loop {
            let next = match self.last {
                0 => stream.cached_info().state.first_sequence.max(1),
                last => last + 1,
            };
            match stream.get_raw_message(next).await {
                Err(error) if super::is_unparsable(&error) => {
                    tracing::warn!(
                        sequence = next,
                        "skipping an unparsable NATS stream message"
                    );
                    self.last = next;
                }
                _ => return,
            }
        }
    }

    /// Records the stream's epoch; a new one resets the engine (its sequences start again).
    /// Whether the epoch was a new one.
    fn note_epoch(&mut self, epoch: &Epoch) -> bool {
        let new = self.current != *epoch;
        if new {
            tracing::warn!("the NATS stream was recreated: subscribers are told to resync");
            self.current = epoch.clone();
            *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = epoch.clone();
            self.last = 0;
            self.fanout.resync(None, Resume::Unknown);
        }
        new
    }

    /// Appends the message at `sequence`, stored on `subject`, after filling any jump before it
    /// from the stream.
    async fn deliver(
        &mut self,
        stream: &jetstream::stream::Stream,
        epoch: &Epoch,
        sequence: u64,
        subject: &str,
        message: &async_nats::Message,
    ) -> Result<(), async_nats::Error> {
        if sequence <= self.last {
            return Ok(());
        }
        if self.last > 0 && sequence > self.last + 1 {
            self.fill_gap(stream, epoch, sequence).await?;
        }
        self.last = sequence;
        if self.subjects.is_event(subject)
            && let Some(frame) =
                wire::decode_frame(epoch, sequence, message.headers.as_ref(), &message.payload)
        {
            self.fanout.append(frame);
        }
        Ok(())
    }

    /// Reads the messages between the last one read and `before` from the stream.
    async fn fill_gap(
        &mut self,
        stream: &jetstream::stream::Stream,
        epoch: &Epoch,
        before: u64,
    ) -> Result<(), async_nats::Error> {
        self.gap_fills
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let missing = before - self.last - 1;
        let mut lost = missing > MAX_GAP_FILL;
        if !lost {
            for sequence in self.last + 1..before {
                match stream.get_raw_message(sequence).await {
                    Ok(message) => {
                        if self.subjects.is_event(&message.subject)
                            && let Some(frame) = wire::decode_frame(
                                epoch,
                                sequence,
                                Some(&message.headers),
                                &message.payload,
                            )
                        {
                            self.fanout.append(frame);
                        }
                    }
                    Err(error)
                        if error.kind()
                            == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                    {
                        lost = true;
                    }
                    Err(error) if super::is_unparsable(&error) => {
                        tracing::warn!(sequence, "skipping an unparsable NATS stream message");
                    }
                    Err(error) => return Err(error.into()),
                }
                self.last = sequence;
            }
        }
        self.last = before - 1;
        if lost {
            self.fanout.resync(None, Resume::Expired);
        }
        Ok(())
    }
}
