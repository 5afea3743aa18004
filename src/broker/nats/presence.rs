//! [`NatsPresence`]: each process's presence entries in a JetStream key-value bucket, with a
//! heartbeat per process in a second bucket whose keys expire, so a process that dies without
//! a word drops out within the expiry.
//!
//! Buckets (`nats kv ls` shows them): `<stream>_presence` holds the entries, key
//! `<hex group>.<process>.<hex entry key>`; `<stream>_presence_live` holds one key per live
//! process, renewed every third of the expiry and dropped by the server (`max_age`) after it.
//!
//! A listing reads the group's entries first, then the live processes: an entry is written
//! after its process's heartbeat, so one that is read belongs to a process the listing then
//! sees as live, unless that process is gone. Entries of gone processes are left out, and
//! purged. A process whose heartbeat lapsed (stalled, or cut off from NATS longer than the
//! expiry) writes its entries anew at its next heartbeat.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use bytes::Bytes;
use futures::StreamExt;

use super::subject::{decode, encode};
use crate::broker::presence::spawn_heartbeat;
use crate::broker::{BoxFuture, BrokerError, Presence};

/// This process's entries, and where they live in NATS.
pub(super) struct NatsPresence {
    inner: Arc<Inner>,
}

struct Inner {
    jetstream: jetstream::Context,
    /// The bucket of the entries, and the bucket of the live processes.
    entries_bucket: String,
    live_bucket: String,
    storage: StorageType,
    replicas: usize,
    process: String,
    expiry: Duration,
    /// group → (key → value): what this process has joined, to write anew when it was dropped.
    entries: Mutex<HashMap<String, HashMap<String, String>>>,
    /// The revision of this process's heartbeat key (0: not written yet, or lapsed).
    revision: AtomicU64,
    /// Serializes heartbeats (a join's and the periodic one's).
    beating: tokio::sync::Mutex<()>,
    /// The subjects of entries whose leave could not reach NATS: purged at the next heartbeats.
    unleft: Mutex<HashSet<String>>,
    heartbeat: std::sync::OnceLock<()>,
}

/// The buckets of a stream's presence: `<stream>_presence` and `<stream>_presence_live`, the
/// stream name's characters a bucket name may not hold replaced by `_`.
fn bucket_names(stream: &str) -> (String, String) {
    let base: String = stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (format!("{base}_presence"), format!("{base}_presence_live"))
}

impl NatsPresence {
    pub(super) fn new(
        jetstream: jetstream::Context,
        stream: &str,
        memory_storage: bool,
        replicas: usize,
        expiry: Duration,
    ) -> Self {
        let (entries_bucket, live_bucket) = bucket_names(stream);
        Self {
            inner: Arc::new(Inner {
                jetstream,
                entries_bucket,
                live_bucket,
                storage: if memory_storage {
                    StorageType::Memory
                } else {
                    StorageType::File
                },
                replicas,
                process: process_id(),
                expiry,
                entries: Mutex::default(),
                revision: AtomicU64::new(0),
                beating: tokio::sync::Mutex::new(()),
                unleft: Mutex::default(),
                heartbeat: std::sync::OnceLock::new(),
            }),
        }
    }
}

/// A random name for this process (hex, a valid key token).
fn process_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let high = hasher.finish();
    hasher.write_u8(1);
    format!("{high:016x}{:016x}", hasher.finish())
}

/// A key's last value as a listing read it, and the stream sequence it was stored at.
struct Read {
    /// The key (the subject after the bucket's prefix).
    key: String,
    value: Bytes,
    sequence: u64,
}

/// Why a write to a bucket failed.
enum PutError {
    /// The key's last revision is not the one expected: a heartbeat key expired (or was lost).
    Lapsed,
    Broker(BrokerError),
}

impl From<PutError> for BrokerError {
    fn from(error: PutError) -> Self {
        match error {
            PutError::Lapsed => BrokerError::unavailable(
                "NATS did not record presence",
                "the key changed meanwhile",
            ),
            PutError::Broker(error) => error,
        }
    }
}

impl From<BrokerError> for PutError {
    fn from(error: BrokerError) -> Self {
        Self::Broker(error)
    }
}

/// How many messages one fetch of a listing asks for.
const FETCH: usize = 1_024;

/// How long a listing may take to read a bucket.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn unavailable(
    what: &'static str,
) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> BrokerError {
    move |e| BrokerError::unavailable(what, e)
}

impl Inner {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, String>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry_key(&self, group: &str, key: &str) -> String {
        format!("{}.{}.{}", encode(group), self.process, encode(key))
    }

    /// Makes sure the bucket `name` exists (a first start, or a server with memory storage
    /// restarted): a stream laid out as JetStream's key-value buckets are, so the `nats kv`
    /// tools read it. `max_age` expires its keys.
    async fn bucket(&self, name: &str, max_age: Duration) -> Result<(), BrokerError> {
        let config = stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            // JetStream refuses a duplicate window longer than the age limit.
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age.min(Duration::from_secs(120))
            },
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            storage: self.storage,
            num_replicas: self.replicas,
            ..stream::Config::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map(drop)
            .map_err(|e| BrokerError::unavailable("cannot create a NATS presence bucket", e))
    }

    /// Writes `value` at `key` of `bucket`, if its last revision is `revision` when given;
    /// the new revision. A bucket that does not exist is made first.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: Bytes,
        revision: Option<u64>,
    ) -> Result<u64, PutError> {
        let subject = format!("$KV.{bucket}.{key}");
        let mut message = PublishMessage::build().payload(value);
        if let Some(revision) = revision {
            message = message.expected_last_subject_sequence(revision);
        }
        let retry = message.clone();
        let sent = match self.send(subject.clone(), message).await {
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                let max_age = if bucket == self.live_bucket {
                    self.expiry
                } else {
                    Duration::ZERO
                };
                self.bucket(bucket, max_age).await?;
                self.send(subject, retry).await
            }
            sent => sent,
        };
        sent.map_err(|e| match e.kind() {
            PublishErrorKind::WrongLastSequence => PutError::Lapsed,
            _ => PutError::Broker(BrokerError::unavailable("NATS did not record presence", e)),
        })
    }

    async fn send(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<u64, async_nats::jetstream::context::PublishError> {
        let ack = self.jetstream.send_publish(subject, message).await?.await?;
        Ok(ack.sequence)
    }

    /// Renews this process's heartbeat; when it had lapsed (or was never written), writes it
    /// and then every entry this process holds anew.
    async fn beat(&self) -> Result<(), BrokerError> {
        let _beating = self.beating.lock().await;
        let unleft: Vec<String> = self.unleft().iter().cloned().collect();
        for subject in unleft {
            if self.purge_subject(&subject).await.is_ok() {
                self.unleft().remove(&subject);
            }
        }
        let revision = self.revision.load(Ordering::Acquire);
        if revision > 0 {
            match self
                .put(
                    &self.live_bucket,
                    &self.process,
                    Bytes::new(),
                    Some(revision),
                )
                .await
            {
                Ok(revision) => {
                    self.revision.store(revision, Ordering::Release);
                    return Ok(());
                }
                Err(PutError::Lapsed) => tracing::warn!(
                    target: "tower_sse_pubsub",
                    "presence heartbeat had lapsed: writing this process's entries anew"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        let revision = self
            .put(&self.live_bucket, &self.process, Bytes::new(), None)
            .await?;
        let entries: Vec<(String, String)> = self
            .entries()
            .iter()
            .flat_map(|(group, entries)| {
                entries
                    .iter()
                    .map(|(key, value)| (self.entry_key(group, key), value.clone()))
            })
            .collect();
        for (key, value) in entries {
            self.put(&self.entries_bucket, &key, Bytes::from(value), None)
                .await?;
        }
        self.revision.store(revision, Ordering::Release);
        Ok(())
    }

    /// The last value of every subject of the KV bucket `bucket` under `filter` (a subject
    /// within the bucket, wildcards allowed): (subject after the bucket's prefix, value).
    async fn read(&self, bucket: &str, filter: &str) -> Result<Vec<Read>, BrokerError> {
        tokio::time::timeout(READ_TIMEOUT, self.read_now(bucket, filter))
            .await
            .unwrap_or_else(|elapsed| {
                Err(BrokerError::unavailable(
                    "NATS did not list presence in time",
                    elapsed,
                ))
            })
    }

    async fn read_now(&self, bucket: &str, filter: &str) -> Result<Vec<Read>, BrokerError> {
        let read = unavailable("NATS did not list presence");
        let stream = match self.jetstream.get_stream(format!("KV_{bucket}")).await {
            Ok(stream) => stream,
            // Not made yet (nothing joined), or lost with a restarted server: nothing in it.
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(read(e.into())),
        };
        let prefix = format!("$KV.{bucket}.");
        // A plain consumer, read with no-wait fetches (an ordered one starts over when the
        // stream sequences of the last message per subject jump).
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: format!("{prefix}{filter}"),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..pull::Config::default()
            })
            .await
            .map_err(|e| read(e.into()))?;
        let expected = consumer.cached_info().num_pending;
        let mut listed = Vec::new();
        let mut received = 0;
        while received < expected {
            let batch = usize::try_from(expected - received).map_or(FETCH, |n| n.min(FETCH));
            let mut messages = consumer
                .fetch()
                .max_messages(batch)
                .messages()
                .await
                .map_err(|e| read(e.into()))?;
            let before = received;
            while let Some(message) = messages.next().await {
                let message = message.map_err(&read)?;
                received += 1;
                let deleted = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some();
                let sequence = message.info().map_err(&read)?.stream_sequence;
                if !deleted && let Some(key) = message.subject.as_str().strip_prefix(&prefix) {
                    listed.push(Read {
                        key: key.to_owned(),
                        value: message.payload.clone(),
                        sequence,
                    });
                }
            }
            if received == before {
                // Purged meanwhile: fewer than counted are left.
                break;
            }
        }
        let name = consumer.cached_info().name.clone();
        if let Err(error) = stream.delete_consumer(&name).await {
            tracing::debug!(target: "tower_sse_pubsub", %error, "presence consumer left to expire");
        }
        Ok(listed)
    }

    fn unleft(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unleft.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subject of this process's entry `key` in `group`.
    fn entry_subject(&self, group: &str, key: &str) -> String {
        format!("$KV.{}.{}", self.entries_bucket, self.entry_key(group, key))
    }

    /// Purges `subject` of the entries' bucket (a bucket that is gone holds nothing to purge).
    async fn purge_subject(&self, subject: &str) -> Result<(), BrokerError> {
        let stream = match self
            .jetstream
            .get_stream(format!("KV_{}", self.entries_bucket))
            .await
        {
            Ok(stream) => stream,
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Ok(());
            }
            Err(e) => return Err(BrokerError::unavailable("NATS did not remove presence", e)),
        };
        // Purged, not deleted: a deleted key leaves a marker behind for good.
        stream
            .purge()
            .filter(subject)
            .await
            .map(drop)
            .map_err(|e| BrokerError::unavailable("NATS did not remove presence", e))
    }

    /// Purges the entries of the processes in `gone` from `group`, each up to the newest of its
    /// entries a listing read (entries written since, by a process whose heartbeat came back,
    /// stay). Best effort: another listing purges what this one could not.
    async fn purge(&self, group: &str, gone: &HashMap<String, u64>) {
        let Ok(stream) = self
            .jetstream
            .get_stream(format!("KV_{}", self.entries_bucket))
            .await
        else {
            return;
        };
        for (process, newest) in gone {
            let subject = format!("$KV.{}.{}.{process}.>", self.entries_bucket, encode(group));
            if let Err(error) = stream.purge().filter(subject).sequence(newest + 1).await {
                tracing::debug!(target: "tower_sse_pubsub", %error, "cannot purge presence");
            }
        }
    }
}

impl crate::broker::presence::Heartbeat for Inner {
    fn beat(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(Inner::beat(self))
    }
}

impl Presence for NatsPresence {
    fn join<'a>(
        &'a self,
        group: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner
                .heartbeat
                .get_or_init(|| spawn_heartbeat(Arc::downgrade(inner), inner.expiry / 3));
            // The heartbeat goes first: a listing that sees the entry sees its process live.
            if inner.revision.load(Ordering::Acquire) == 0 {
                inner.beat().await?;
            }
            // Not while a heartbeat purges entries whose leave failed: it could purge this one.
            let _beating = inner.beating.lock().await;
            inner
                .entries()
                .entry(group.to_owned())
                .or_default()
                .insert(key.to_owned(), value.to_owned());
            inner.unleft().remove(&inner.entry_subject(group, key));
            let key = inner.entry_key(group, key);
            inner
                .put(
                    &inner.entries_bucket,
                    &key,
                    Bytes::from(value.to_owned()),
                    None,
                )
                .await
                .map(drop)
                .map_err(Into::into)
        })
    }

    fn leave<'a>(&'a self, group: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            // Not while a heartbeat writes the entries anew: it could write this one back.
            let _beating = inner.beating.lock().await;
            if let Some(entries) = inner.entries().get_mut(group) {
                entries.remove(key);
            }
            let subject = inner.entry_subject(group, key);
            let purged = inner.purge_subject(&subject).await;
            if purged.is_err() {
                // Purged at a later heartbeat, once NATS answers again.
                inner.unleft().insert(subject);
            }
            purged
        })
    }

    fn list<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            // Entries first, then the live processes (see the module's documentation).
            let entries = inner
                .read(&inner.entries_bucket, &format!("{}.>", encode(group)))
                .await?;
            let live: HashSet<String> = inner
                .read(&inner.live_bucket, ">")
                .await?
                .into_iter()
                .map(|read| read.key)
                .collect();
            let mut gone: HashMap<String, u64> = HashMap::new();
            let mut listed = Vec::new();
            for Read {
                key: subject,
                value,
                sequence,
            } in entries
            {
                let mut tokens = subject.splitn(3, '.');
                let (Some(_), Some(process), Some(key)) =
                    (tokens.next(), tokens.next(), tokens.next())
                else {
                    continue;
                };
                if !live.contains(process) {
                    let newest = gone.entry(process.to_owned()).or_default();
                    *newest = (*newest).max(sequence);
                    continue;
                }
                if let (Some(key), Ok(value)) = (decode(key), String::from_utf8(value.to_vec())) {
                    listed.push((key, value));
                }
            }
            if !gone.is_empty() {
                inner.purge(group, &gone).await;
            }
            Ok(listed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{bucket_names, process_id};

    #[test]
    fn bucket_names_hold_only_what_a_bucket_name_may() {
        assert_eq!(
            bucket_names("SSE"),
            ("SSE_presence".to_owned(), "SSE_presence_live".to_owned())
        );
        assert_eq!(bucket_names("a:b").0, "a_b_presence");
    }

    #[test]
    fn process_ids_are_hex_tokens_and_differ() {
        let (a, b) = (process_id(), process_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
