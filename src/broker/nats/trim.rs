//! Whether a replay may have lost events to the stream's per-topic limit: JetStream drops a
//! subject's oldest message when the subject is full, so events after a resume point can be
//! gone while the stream as a whole still reaches back past it.
//!
//! A subject is judged trimmed after a sequence when it is full and its oldest message is newer
//! than the one right after it. That is checked for the subscriber's topics and the multi-topic
//! subject, and for patterns, for every full topic subject a pattern matches (listed from the
//! server). Conservative: a full subject whose dropped messages were all older passes as
//! trimmed too.

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures::StreamExt;

use super::replay::Filter;
use super::subject::{Subjects, decode};
use crate::broker::{BrokerError, Resume};

/// How many subjects' oldest messages are asked for at once.
const CONCURRENT_CHECKS: usize = 16;

/// `Expired` when a subject of `filter` may have dropped events after `after`, else `Complete`.
pub(super) async fn since(
    stream: &Stream,
    subjects: &Subjects,
    filter: &Filter,
    after: u64,
) -> Result<Resume, BrokerError> {
    // The stream's own per-subject limit: another instance may have created it with a history
    // other than this one's setting (an existing stream is not changed).
    let limit = match stream.cached_info().config.max_messages_per_subject {
        limit if limit > 0 => usize::try_from(limit).unwrap_or(usize::MAX),
        // No per-subject limit: only the age and byte limits trim, stream-wide.
        _ => return Ok(Resume::Complete),
    };
    // The subjects to check, with their message counts when known already.
    let mut checks: Vec<(String, Option<usize>)> = filter
        .topics
        .iter()
        .map(|t| (subjects.topic(t), None))
        .collect();
    checks.push((subjects.multi(), None));
    if !filter.patterns.is_empty() {
        for (subject, count) in counts(stream, &subjects.all_topics()).await? {
            let matched = subjects
                .topic_of(&subject)
                .is_some_and(|topic| filter.patterns.iter().any(|p| p.matches(&topic)));
            if count >= limit && matched && !checks.iter().any(|(s, _)| *s == subject) {
                checks.push((subject, Some(count)));
            }
        }
    }
    let mut results = futures::stream::iter(checks)
        .map(|(subject, known)| async move { trimmed(stream, &subject, known, limit, after).await })
        .buffer_unordered(CONCURRENT_CHECKS);
    while let Some(result) = results.next().await {
        if result? {
            return Ok(Resume::Expired);
        }
    }
    Ok(Resume::Complete)
}

/// Whether `subject` (holding `known` messages, when known) is full at `limit` and its oldest
/// message is newer than `after + 1`.
async fn trimmed(
    stream: &Stream,
    subject: &str,
    known: Option<usize>,
    limit: usize,
    after: u64,
) -> Result<bool, BrokerError> {
    // The oldest message still on the subject: if the subject is full and that is newer than
    // the resume point, older ones after the resume point may have been dropped.
    let oldest = match stream.get_first_raw_message_by_subject(subject, 1).await {
        Ok(message) => message.sequence,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(false),
        Err(e) => {
            return Err(BrokerError::unavailable(
                "cannot read a topic's history from NATS",
                e,
            ));
        }
    };
    if oldest <= after + 1 {
        return Ok(false);
    }
    let count = match known {
        Some(known) => known,
        None => count(stream, subject).await?,
    };
    Ok(count >= limit)
}

/// How many messages `subject` holds.
pub(super) async fn count(stream: &Stream, subject: &str) -> Result<usize, BrokerError> {
    Ok(counts(stream, subject)
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .sum())
}

/// How many messages each subject matching `filter` holds.
async fn counts(stream: &Stream, filter: &str) -> Result<Vec<(String, usize)>, BrokerError> {
    const CANNOT: &str = "cannot read a topic's size from NATS";
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| BrokerError::unavailable(CANNOT, e))?;
    let mut counts = Vec::new();
    while let Some(entry) = subjects.next().await {
        counts.push(entry.map_err(|e| BrokerError::unavailable(CANNOT, e))?);
    }
    Ok(counts)
}

impl Subjects {
    /// The wildcard of every single-topic subject.
    pub(super) fn all_topics(&self) -> String {
        format!("{}.t.>", self.prefix())
    }

    /// The topic a single-topic subject holds, if `subject` is one.
    pub(super) fn topic_of(&self, subject: &str) -> Option<String> {
        let token = subject.strip_prefix(self.prefix())?.strip_prefix(".t.")?;
        decode(token)
    }
}
