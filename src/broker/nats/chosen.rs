//! Chosen ids on NATS: who took an id, so a second event cannot take it and a resume after it
//! finds its event on any instance.
//!
//! On `<prefix>.id.<hex id>`, a publish first writes a **claim** (an empty message, accepted
//! only while the subject is empty: JetStream's expected last subject sequence 0), then
//! publishes the event, then writes a **record**: `<event sequence> <claim sequence>`.
//!
//! A claim is never left to block its id for good:
//! * when the event's publish fails and the stream shows the event was not stored, the claim is
//!   deleted at once, so the publisher's retry can take the id again;
//! * a claim with neither a record nor its event after it, older than [`STALE_AFTER`], is taken
//!   over by the next publish of that id (the publisher stopped between the two, or could not
//!   reach NATS to delete it). A claim is stale after four times the broker's timeout (the
//!   longest a publish waits for its acknowledgement), by the clock of the host that reads it.
//!
//! With an idempotency key the claim carries a message id, so a retry of a publish that went
//! through passes its own claim as a duplicate, and the event's publish returns the first
//! event's sequence. Such a duplicate claim is checked to still stand: a claim deleted meanwhile
//! is made again, one taken over by another publish refuses the id.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;

use super::Shared;
use super::wire::{self, Epoch};
use crate::{BrokerError, EventId};

/// How many messages after a chosen id's claim are searched for its event when the stream holds
/// no record of the event's sequence.
const MAX_CLAIM_SCAN: u64 = 1_024;

/// How many times a claim is attempted (each attempt follows a claim that went away or went
/// stale meanwhile).
const CLAIM_ATTEMPTS: usize = 4;

/// How many of a keyed publish's own released claims a retry follows to its newest (one per
/// publish of it that failed within the duplicate window), besides its attempts.
const MAX_CLAIM_LINKS: usize = 1_024;

/// What stands on a chosen id's subject.
enum Holder {
    /// Nothing: the id is free.
    Nobody,
    /// The claim at this sequence, its event not recorded.
    Claim(StreamMessage),
    /// The record of the event at `event`, written after the claim at `claim` (0 when the
    /// record does not say).
    Record { event: u64, claim: u64 },
}

impl Shared {
    /// Claims the chosen id `id` for a publish with the idempotency key `key`; the claim's
    /// sequence, or [`BrokerError::DuplicateId`] when another event holds the id.
    pub(super) async fn claim(&self, id: &EventId, key: Option<&str>) -> Result<u64, BrokerError> {
        let subject = self.subjects.chosen_id(id);
        // The subject's last sequence the claim expects (0: empty), and the message id that
        // makes a retry of this very claim a duplicate.
        let mut expected = 0;
        // With the id in it: a key reused with another chosen id claims that id anew.
        let base = key.map(|key| {
            format!(
                "{key}\u{1f}claim\u{1f}{}",
                super::subject::encode(id.as_str())
            )
        });
        let mut message_id = base.clone();
        let (mut attempts, mut links) = (0, 0);
        while attempts < CLAIM_ATTEMPTS {
            attempts += 1;
            let mut claim = PublishMessage::build()
                .payload(Bytes::new())
                .expected_last_subject_sequence(expected);
            if let Some(message_id) = &message_id {
                claim = claim.message_id(message_id.clone());
            }
            match self.send_once(subject.clone(), claim).await {
                Ok(ack) if !ack.duplicate => return Ok(ack.sequence),
                // A retry of a publish whose claim was made before: does it still stand?
                Ok(ack) => match self.holder(&self.stream().await?, &subject).await? {
                    Holder::Claim(claim) if claim.sequence == ack.sequence => {
                        return Ok(ack.sequence);
                    }
                    Holder::Record { claim, .. } if claim == ack.sequence => {
                        return Ok(ack.sequence);
                    }
                    // It was released (its publish failed), and maybe claimed again since:
                    // follow on to the claim made after it under the message id derived from
                    // it. Made by this publisher, that one is a duplicate too and is checked in
                    // turn; made by no one, it is made now, or refused if another publish
                    // holds the id.
                    _ => {
                        // A step along this publisher's own released claims (one per failed
                        // publish) is no new attempt.
                        links += 1;
                        if links <= MAX_CLAIM_LINKS {
                            attempts -= 1;
                        }
                        expected = 0;
                        message_id = base
                            .as_ref()
                            .map(|base| format!("{base}\u{1f}{}", ack.sequence));
                    }
                },
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    let stream = self.stream().await?;
                    match self.holder(&stream, &subject).await? {
                        Holder::Nobody => expected = 0,
                        Holder::Claim(claim) if self.is_stale(&stream, id, &claim).await? => {
                            tracing::warn!(
                                id = id.as_str(),
                                "taking over a stale claim of a chosen id"
                            );
                            expected = claim.sequence;
                        }
                        _ => return Err(BrokerError::DuplicateId(id.clone())),
                    }
                    // The refused claim was not stored, nor its message id remembered: the next
                    // attempt keeps it, so a retry of this publish finds its claim by it.
                }
                Err(e) => {
                    return Err(BrokerError::unavailable(
                        "NATS did not confirm the claim of a chosen id",
                        e,
                    ));
                }
            }
        }
        Err(BrokerError::DuplicateId(id.clone()))
    }

    /// Records that the event at `event` took the chosen id `id` claimed at `claim`.
    pub(super) async fn record(
        &self,
        id: &EventId,
        event: u64,
        claim: u64,
    ) -> Result<(), BrokerError> {
        let record = PublishMessage::build().payload(Bytes::from(format!("{event} {claim}")));
        self.send(self.subjects.chosen_id(id), record)
            .await
            .map(drop)
            .map_err(|e| BrokerError::unavailable("NATS did not record the event's chosen id", e))
    }

    /// After the publish of the event that claimed `id` at `claim` failed: the event's sequence
    /// if the stream stored it after all, else `None`, the claim deleted so a retry can take the
    /// id. An error when the stream cannot be asked (the claim then stands until it is stale).
    pub(super) async fn settle(
        &self,
        id: &EventId,
        claim: u64,
    ) -> Result<Option<u64>, BrokerError> {
        let stream = self.stream().await?;
        if let Some(event) = self.find_claimed(&stream, id, claim).await? {
            return Ok(Some(event));
        }
        Self::delete_claim(&stream, claim).await?;
        Ok(None)
    }

    /// Deletes the claim at `claim`, whose publish stored no event under its id.
    pub(super) async fn release(&self, claim: u64) -> Result<(), BrokerError> {
        Self::delete_claim(&self.stream().await?, claim).await
    }

    async fn delete_claim(stream: &Stream, claim: u64) -> Result<(), BrokerError> {
        stream
            .delete_message(claim)
            .await
            .map(drop)
            .map_err(|e| BrokerError::unavailable("NATS did not release a chosen id's claim", e))
    }

    /// The sequence of the event that took the chosen id `id`, if the stream recorded one.
    pub(super) async fn chosen_id_sequence(
        &self,
        stream: &Stream,
        id: &EventId,
    ) -> Result<Option<u64>, BrokerError> {
        match self.holder(stream, &self.subjects.chosen_id(id)).await? {
            Holder::Nobody => Ok(None),
            Holder::Record { event, .. } => Ok(Some(event)),
            // Only the claim: the event may be stored and its record not yet (or never, when
            // the publisher stopped there). The event follows its claim.
            Holder::Claim(claim) => self.find_claimed(stream, id, claim.sequence).await,
        }
    }

    /// What stands on the chosen-id subject `subject`.
    async fn holder(&self, stream: &Stream, subject: &str) -> Result<Holder, BrokerError> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(match parse_record(&message.payload) {
                Some((event, claim)) => Holder::Record { event, claim },
                None => Holder::Claim(message),
            }),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Holder::Nobody),
            Err(e) => Err(BrokerError::unavailable(
                "cannot look up a chosen id in NATS",
                e,
            )),
        }
    }

    /// Whether the claim `claim` of `id` is stale: older than the stale age by this host's
    /// clock, with no event of that id after it.
    async fn is_stale(
        &self,
        stream: &Stream,
        id: &EventId,
        claim: &StreamMessage,
    ) -> Result<bool, BrokerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let made = u128::try_from(claim.time.unix_timestamp_nanos()).unwrap_or(0);
        if now.saturating_sub(made) < self.claim_stale_after.as_nanos() {
            return Ok(false);
        }
        Ok(self
            .find_claimed(stream, id, claim.sequence)
            .await?
            .is_none())
    }

    /// The sequence of the event with the chosen id `id` among the messages after its claim
    /// (at `claim`), looked for in the next [`MAX_CLAIM_SCAN`] of them.
    async fn find_claimed(
        &self,
        stream: &Stream,
        id: &EventId,
        claim: u64,
    ) -> Result<Option<u64>, BrokerError> {
        let info = stream.cached_info();
        let epoch = Epoch::of(info);
        let last = info
            .state
            .last_sequence
            .min(claim.saturating_add(MAX_CLAIM_SCAN));
        for sequence in claim + 1..=last {
            let message = match stream.get_raw_message(sequence).await {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) if super::is_unparsable(&e) => continue,
                Err(e) => {
                    return Err(BrokerError::unavailable(
                        "cannot look up a chosen id in NATS",
                        e,
                    ));
                }
            };
            if self.subjects.is_event(&message.subject)
                && let Some(frame) =
                    wire::decode_frame(&epoch, sequence, Some(&message.headers), &message.payload)
                && frame.id() == id
            {
                return Ok(Some(sequence));
            }
        }
        Ok(None)
    }
}

/// The event and claim sequences of a record (`<event> <claim>`; a bare `<event>` names no
/// claim), or `None` when `payload` is a claim.
fn parse_record(payload: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(' ');
    let event = parts.next()?.parse().ok()?;
    let claim = match parts.next() {
        Some(claim) => claim.parse().ok()?,
        None => 0,
    };
    Some((event, claim))
}

#[cfg(test)]
mod tests {
    use super::parse_record;

    #[test]
    fn records_are_told_from_claims() {
        assert_eq!(parse_record(b"42 7"), Some((42, 7)));
        assert_eq!(parse_record(b"42"), Some((42, 0)));
        assert_eq!(parse_record(b""), None);
        assert_eq!(parse_record(b"x 7"), None);
        assert_eq!(parse_record(b"42 y"), None);
    }
}
