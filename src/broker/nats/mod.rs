//! [`NatsBroker`]: many app instances, one topic space, through a NATS JetStream stream
//! (feature `nats`).
//!
//! Built from the crate's public broker API alone, as an outside crate would build one: the
//! [`Broker`] trait, the fan-out engine ([`Fanout`]) and [`Subscription`].
//!
//! * **Storage.** One stream holds every event, each published once as one message (its topics
//!   in a header, so an event on several topics is stored once). Single-topic events go to
//!   `<prefix>.t.<hex topic>`, so JetStream's per-subject limit is each topic's history; events
//!   on several topics share `<prefix>.m`.
//! * **Ids.** `<epoch>-<stream sequence>`, the epoch being the stream's creation time (hex
//!   nanoseconds): a recreated stream, whose sequences start again, has a new epoch, so an id
//!   of the old one is reported unknown and never hides new events.
//! * **Live delivery.** One ordered consumer per process on the whole stream (never one per
//!   subscriber), read by one task that appends each event to the engine once (see `feed`).
//! * **Idempotency.** A request's idempotency key is the message's `Nats-Msg-Id`: within the
//!   stream's duplicate window JetStream stores a retry no second time and acknowledges it with
//!   the first message's sequence, so the retry returns the first id.
//! * **Chosen ids.** A chosen id is first claimed on `<prefix>.id.<hex id>` (a second claim is
//!   refused: [`BrokerError::DuplicateId`]), then the event is published, then the event's
//!   sequence is recorded on the same subject, where a resume after the id on any instance
//!   finds it. A claim whose publish failed is released (see `chosen`).

mod builder;
mod chosen;
mod feed;
mod presence;
mod replay;
mod subject;
mod trim;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, publish::PublishAck};
use futures::{FutureExt, StreamExt};
use tokio::sync::oneshot;

pub use self::builder::{NatsBrokerBuilder, NatsConnectError};
use self::subject::Subjects;
use self::wire::Epoch;
use crate::broker::{Broker, Fanout, Position};
use crate::{
    BoxFuture, BrokerError, EventId, PublishRequest, Resume, Start, SubscribeRequest, Subscription,
};

/// The most bytes the hex-encoded topics of one event may take: JetStream caps a message's
/// headers at 64 KiB, and the rest is room for the other headers.
const MAX_TOPICS_HEADER: usize = 60 * 1024;

/// A broker that shares topics, ids and history between processes through a NATS JetStream
/// stream.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_sse_pubsub::{Hub, NatsBroker};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = NatsBroker::builder(["nats://127.0.0.1:4222"])
///     .stream_name("MYAPP_SSE")
///     .subject_prefix("myapp.sse")
///     .history_per_topic(500)
///     .history_max_age(Duration::from_secs(24 * 60 * 60))
///     .build()
///     .await?;
/// let hub = Hub::builder().broker(broker).build()?;
/// # drop(hub);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub struct NatsBroker {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    jetstream: jetstream::Context,
    config: jetstream::stream::Config,
    subjects: Subjects,
    /// The epoch of the stream as last seen (by the feed, or a publish that recreated it).
    epoch: Arc<Mutex<Epoch>>,
    history_per_topic: usize,
    replay_page: usize,
    /// How old a chosen id's claim without its event must be for another publish to take it.
    claim_stale_after: std::time::Duration,
    /// How many times the client has (re)connected.
    connections: Arc<AtomicU64>,
    /// The connection count at which the epoch was last read from the server.
    verified: AtomicU64,
    /// The highest sequence a publish of this instance was acknowledged with, and the epoch it
    /// was acknowledged in (a sequence of another epoch says nothing of this one's).
    highest_acknowledged: Mutex<(Epoch, u64)>,
    /// How many times advisories about the stream were seen, and how many of those a read of
    /// the stream has followed.
    advised: AtomicU64,
    verified_advice: AtomicU64,
    /// Held while a publish reads the stream to learn its epoch: the others wait for it.
    verifying: tokio::sync::Mutex<()>,
    /// The stream's advisories, on the publishing connection (`None` when the account may not
    /// subscribe to them).
    advisories: Mutex<Option<async_nats::Subscriber>>,
    gap_fills: Arc<std::sync::atomic::AtomicU64>,
    fanout: Fanout,
    presence: presence::NatsPresence,
    /// Dropped with the broker, which stops the feed task.
    _stop: oneshot::Sender<()>,
}

impl NatsBroker {
    /// A builder for a broker on the NATS servers at `urls` (e.g. `nats://127.0.0.1:4222`; the
    /// client tries them in turn and follows the cluster's own list).
    pub fn builder<I, S>(urls: I) -> NatsBrokerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NatsBrokerBuilder::new(urls.into_iter().map(Into::into).collect())
    }

    /// How many times this process filled a jump in its live feed from the stream.
    pub fn gap_fills(&self) -> u64 {
        self.shared
            .gap_fills
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fan-out engine this process delivers NATS messages through.
    pub fn fanout(&self) -> &Fanout {
        &self.shared.fanout
    }

    async fn publish_now(&self, request: &PublishRequest) -> Result<EventId, BrokerError> {
        let topics = request.topics();
        if topics.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        // The topics travel hex-encoded in one header, and JetStream refuses headers over 64 KiB:
        // refuse up front, for good, rather than as a failure worth retrying.
        let header: usize = topics.iter().map(|t| 2 * t.as_str().len() + 1).sum();
        if header > MAX_TOPICS_HEADER {
            return Err(BrokerError::Unsupported(
                "an event whose topics take more than 60 KiB hex-encoded (JetStream caps a \
                 message's headers at 64 KiB): publish it to fewer or shorter topics",
            ));
        }
        let shared = &*self.shared;
        let (headers, payload) = wire::encode_request(request);
        // The client refuses a message past the server's `max_payload` (1 MiB by default):
        // refuse it up front, for good, before a chosen id is claimed for it.
        let max_payload = shared.jetstream.client().server_info().max_payload;
        if max_payload > 0 && payload.len() + header > max_payload {
            return Err(too_large());
        }
        let key = request.key().map(|key| key.as_str());
        let claim = match request.chosen_id() {
            Some(id) => {
                if shared.epoch().sequence_of(id).is_some() {
                    // Shaped like one of this stream's own ids: it would name two events.
                    return Err(BrokerError::DuplicateId(id.clone()));
                }
                Some((id, shared.claim(id, key).await?))
            }
            None => None,
        };
        let mut message = PublishMessage::build().headers(headers).payload(payload);
        if let Some(key) = key {
            message = message.message_id(key);
        }
        let before = shared.highest_acknowledged();
        let sent = shared.send(shared.subjects.event(topics), message).await;
        let (sequence, duplicate) = match (sent, claim) {
            (Ok(ack), _) => (ack.sequence, ack.duplicate),
            (Err(error), None) => return Err(publish_failed(error)),
            (Err(error), Some((id, claim))) => match shared.settle(id, claim).await {
                // Stored after all (the acknowledgement was lost).
                Ok(Some(event)) => (event, false),
                Ok(None) => return Err(publish_failed(error)),
                Err(settling) => {
                    tracing::warn!(
                        %settling,
                        id = id.as_str(),
                        "cannot release a chosen id after a failed publish: another publish \
                         takes it over once its claim is stale"
                    );
                    return Err(publish_failed(error));
                }
            },
        };
        if duplicate {
            // The key was used before: the answer is the first publish's id, whatever this
            // request chose.
            let first = shared.id_at(sequence, claim.map(|(id, _)| id)).await?;
            if let Some((id, claim)) = claim
                && *id != first
            {
                // This request's own claim names no event: free it.
                if let Err(error) = shared.release(claim).await {
                    tracing::warn!(%error, id = id.as_str(), "a chosen id stays claimed until stale");
                }
            }
            if claim.is_none_or(|(id, _)| *id != first) {
                return Ok(first);
            }
        }
        if let Some((id, claim)) = claim {
            // The event is stored: without its record a resume after the id still finds it
            // (it follows its claim), so a failed record is no failed publish.
            if let Err(error) = shared.record(id, sequence, claim).await {
                tracing::warn!(%error, id = id.as_str(), "chosen id recorded by its claim only");
            }
            return Ok(id.clone());
        }
        shared.own_id(sequence, before).await
    }

    async fn subscribe_now(&self, request: &SubscribeRequest) -> Result<Subscription, BrokerError> {
        let topics = request.topics();
        let patterns = request.patterns();
        if topics.is_empty() && patterns.is_empty() {
            return Err(BrokerError::NoTopics);
        }
        let shared = &self.shared;
        // Placed before the replay's end is read: every event the replay does not hold
        // arrives here.
        let (reader, _) = shared.fanout.subscribe_matching(
            topics,
            patterns,
            Position::Live,
            request.granted().clone(),
            None,
        );
        let subscription = match request.start_at() {
            start @ (Start::After(_) | Start::Earliest) => {
                let filter = replay::Filter {
                    topics: topics.to_vec(),
                    patterns: patterns.to_vec(),
                };
                let first =
                    replay::first_page(shared, filter, start, request.granted(), request.budget())
                        .await?;
                Subscription::new(reader, first.resume.clone())
                    .skip_through(first.seen_through)
                    .with_replay(first.into_pages())
            }
            _ => {
                // The feed may not have appended every event published before this subscribe
                // yet: those are not live events for this subscriber.
                let published = shared.last_sequence().await?;
                Subscription::new(reader, Resume::Fresh).skip_through(published)
            }
        };
        Ok(subscription
            .with_replay_budget(request.budget())
            .with_deadline(request.deadline_at()))
    }

    async fn last_event_id_now(&self) -> Result<Option<EventId>, BrokerError> {
        let stream = self.shared.stream().await?;
        let info = stream.cached_info();
        Ok(match info.state.last_sequence {
            0 => None,
            last => Epoch::of(info).id(last),
        })
    }
}

impl Shared {
    /// The stream with its current state (one request), created again if it is gone (a server
    /// with memory storage restarted).
    async fn stream(&self) -> Result<Stream, BrokerError> {
        let stream = self
            .jetstream
            .get_or_create_stream(self.config.clone())
            .await
            .map_err(|e| BrokerError::unavailable("cannot reach the NATS stream", e))?;
        self.note_epoch(Epoch::of(stream.cached_info()));
        Ok(stream)
    }

    /// The stream's epoch as last seen.
    fn epoch(&self) -> Epoch {
        self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The broker's own id for the event this instance just stored at `sequence`; `before` is
    /// the highest sequence acknowledged to this instance when the publish was sent.
    async fn own_id(&self, sequence: u64, before: (Epoch, u64)) -> Result<EventId, BrokerError> {
        // The epoch may be stale: the stream was created anew (its advisory arrived on this
        // connection before the acknowledgement did), or the acknowledgement came over a
        // connection made since the epoch was read (the server may have restarted), or at a
        // sequence not above one acknowledged in this epoch before this publish was sent (the
        // stream went back: recreated under this instance).
        self.note_advisories();
        let (before_epoch, before) = before;
        let went_back = sequence <= before && before_epoch == self.epoch();
        self.acknowledged(sequence);
        // Every publish acknowledged after an advice waits for a read of the stream begun
        // after it, not only the publish that drained it.
        let stale = |shared: &Self| {
            shared.verified_advice.load(Ordering::Acquire) < shared.advised.load(Ordering::Acquire)
                || shared.verified.load(Ordering::Acquire)
                    < shared.connections.load(Ordering::Acquire)
        };
        if went_back || stale(self) {
            let _verifying = self.verifying.lock().await;
            if went_back || stale(self) {
                let advised = self.advised.load(Ordering::Acquire);
                let connections = self.connections.load(Ordering::Acquire);
                self.stream().await?;
                self.verified_advice.fetch_max(advised, Ordering::AcqRel);
                self.verified.fetch_max(connections, Ordering::AcqRel);
                // In a new epoch, sequences start again.
                self.acknowledged(sequence);
            }
        }
        self.epoch()
            .id(sequence)
            .ok_or_else(|| BrokerError::unavailable("NATS returned an unusable sequence", "bad id"))
    }

    /// The highest sequence acknowledged to this instance, with its epoch.
    fn highest_acknowledged(&self) -> (Epoch, u64) {
        self.highest_acknowledged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notes an acknowledgement at `sequence` of the epoch now known.
    fn acknowledged(&self, sequence: u64) {
        let epoch = self.epoch();
        let mut highest = self
            .highest_acknowledged
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if highest.0 == epoch {
            highest.1 = highest.1.max(sequence);
        } else {
            *highest = (epoch, sequence);
        }
    }

    /// Counts the advisories about the stream (created, deleted, updated) that arrived: read
    /// without waiting, as the messages of the publishing connection are in order. Counted
    /// under the lock, so a publish that finds none left to read sees the count of the one
    /// that read them.
    fn note_advisories(&self) {
        let mut advisories = self.advisories.lock().unwrap_or_else(|p| p.into_inner());
        let Some(subscriber) = advisories.as_mut() else {
            return;
        };
        while let Some(Some(_)) = subscriber.next().now_or_never() {
            self.advised.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The id of the event stored at `sequence` (its chosen id, or the broker's own); `chosen`
    /// is the id the request chose, named by the event when its record says so (the event
    /// itself may have been trimmed).
    async fn id_at(&self, sequence: u64, chosen: Option<&EventId>) -> Result<EventId, BrokerError> {
        let stream = self.stream().await?;
        let epoch = Epoch::of(stream.cached_info());
        match stream.get_raw_message(sequence).await {
            Ok(message) => {
                if let Some(frame) =
                    wire::decode_frame(&epoch, sequence, Some(&message.headers), &message.payload)
                {
                    return Ok(frame.id().clone());
                }
            }
            // Trimmed since: the record of the id this request chose may name the event.
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                if let Some(chosen) = chosen
                    && self.chosen_id_sequence(&stream, chosen).await? == Some(sequence)
                {
                    return Ok(chosen.clone());
                }
            }
            Err(e) => {
                return Err(BrokerError::unavailable(
                    "cannot read the first publish of an idempotency key from NATS",
                    e,
                ));
            }
        }
        epoch
            .id(sequence)
            .ok_or_else(|| BrokerError::unavailable("NATS returned an unusable sequence", "bad id"))
    }

    fn note_epoch(&self, epoch: Epoch) {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = epoch;
    }

    /// Publishes and waits for the acknowledgement; a stream that is gone is created again
    /// (with a new epoch) and the publish retried once.
    async fn send(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<PublishAck, async_nats::Error> {
        let retry = message.clone();
        match self.send_once(subject.clone(), message).await {
            Err(e) if is_stream_gone(&e) => {
                self.stream().await?;
                self.send_once(subject, retry).await.map_err(Into::into)
            }
            other => other.map_err(Into::into),
        }
    }

    async fn send_once(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<PublishAck, async_nats::jetstream::context::PublishError> {
        self.jetstream.send_publish(subject, message).await?.await
    }

    /// The sequence of the stream's newest message.
    async fn last_sequence(&self) -> Result<u64, BrokerError> {
        // Fetched with the stream: its state as of now.
        let stream = self.stream().await?;
        Ok(stream.cached_info().state.last_sequence)
    }
}

/// Whether a read of a stored message failed because the message itself cannot be parsed (say,
/// a header that is not UTF-8, published on the prefix by another program), not because the
/// server could not be asked: such a message is not an event of this broker and is skipped.
fn is_unparsable(error: &async_nats::jetstream::stream::RawMessageError) -> bool {
    use std::error::Error as _;
    error.kind() == LastRawMessageErrorKind::Other
        && error
            .source()
            .is_some_and(|source| !source.is::<async_nats::jetstream::context::RequestError>())
}

/// The error of an event too large for the server.
fn too_large() -> BrokerError {
    BrokerError::Unsupported(
        "an event larger than the NATS server's max_payload (1 MiB by default): publish less \
         data, or raise max_payload in the server's configuration",
    )
}

/// What a failed publish of an event tells its caller.
fn publish_failed(error: async_nats::Error) -> BrokerError {
    use std::error::Error as _;
    let Some(publish) = error.downcast_ref::<async_nats::jetstream::context::PublishError>() else {
        return BrokerError::unavailable("NATS did not acknowledge the publish", error);
    };
    if publish.kind() == PublishErrorKind::MaxPayloadExceeded {
        return too_large();
    }
    // The stream's own message size limit (`max_msg_size`, set on the stream by its operator).
    if publish
        .source()
        .and_then(|e| e.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|e| {
            e.error_code() == async_nats::jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        })
    {
        return BrokerError::Unsupported(
            "an event larger than the NATS stream's max_msg_size: publish less data, or raise \
             the stream's limit",
        );
    }
    BrokerError::unavailable("NATS did not acknowledge the publish", error)
}

/// Whether a publish failed because no stream holds the subject (it was deleted, or the server
/// lost it on restart).
fn is_stream_gone(error: &async_nats::jetstream::context::PublishError) -> bool {
    matches!(error.kind(), PublishErrorKind::StreamNotFound)
}

impl Broker for NatsBroker {
    fn publish<'a>(
        &'a self,
        request: &'a PublishRequest,
    ) -> BoxFuture<'a, Result<EventId, BrokerError>> {
        Box::pin(self.publish_now(request))
    }

    fn subscribe<'a>(
        &'a self,
        request: &'a SubscribeRequest,
    ) -> BoxFuture<'a, Result<Subscription, BrokerError>> {
        Box::pin(self.subscribe_now(request))
    }

    fn last_event_id(&self) -> BoxFuture<'_, Result<Option<EventId>, BrokerError>> {
        Box::pin(self.last_event_id_now())
    }

    fn presence(&self) -> Option<&dyn crate::broker::Presence> {
        Some(&self.shared.presence)
    }
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("stream", &self.shared.config.name)
            .field("subjects", &self.shared.subjects)
            .finish_non_exhaustive()
    }
}
