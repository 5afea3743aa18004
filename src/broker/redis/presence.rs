//! [`RedisPresence`]: each process's presence entries in one Redis hash per group and process,
//! kept alive by a heartbeat, so a process that dies without a word drops out within the expiry.
//!
//! Keys: `P:p:<group>:<process>` (hash: entry key → value), expiring `expiry` after the last
//! heartbeat. The heartbeat (every third of the expiry) renews each hash this process holds, and
//! writes it anew if Redis lost it (a restart, a flush).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::super::presence::{Presence, spawn_heartbeat};
use super::super::{BoxFuture, BrokerError};

/// This process's entries, and where they live in Redis.
pub(crate) struct RedisPresence {
    inner: Arc<Inner>,
}

struct Inner {
    pool: deadpool_redis::Pool,
    prefix: String,
    process: String,
    expiry: Duration,
    /// group → (key → value): what this process has joined, to write anew if Redis lost it.
    entries: Mutex<HashMap<String, HashMap<String, String>>>,
    heartbeat: std::sync::OnceLock<()>,
}

impl RedisPresence {
    pub(crate) fn new(pool: deadpool_redis::Pool, prefix: &str, expiry: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                prefix: prefix.to_owned(),
                process: format!("{}{}", super::nonce(), super::nonce()),
                expiry,
                entries: Mutex::default(),
                heartbeat: std::sync::OnceLock::new(),
            }),
        }
    }
}

impl Inner {
    fn key(&self, group: &str) -> String {
        format!("{}:p:{group}:{}", self.prefix, self.process)
    }

    /// The SCAN pattern of every process's hash of `group`, glob characters escaped.
    fn pattern(&self, group: &str) -> String {
        let mut pattern = String::new();
        for c in format!("{}:p:{group}:", self.prefix).chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    fn expiry_ms(&self) -> u64 {
        u64::try_from(self.expiry.as_millis()).unwrap_or(u64::MAX)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, String>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connection(&self) -> Result<deadpool_redis::Connection, BrokerError> {
        self.pool
            .get()
            .await
            .map_err(|e| BrokerError::unavailable("no Redis connection for presence", e))
    }

    /// Renews every hash this process holds, writing anew those Redis lost.
    async fn beat(&self) -> Result<(), BrokerError> {
        let groups: Vec<(String, Vec<(String, String)>)> = self
            .entries()
            .iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(group, entries)| {
                let entries = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (group.clone(), entries)
            })
            .collect();
        let mut connection = self.connection().await?;
        for (group, entries) in groups {
            let key = self.key(&group);
            let renewed: i64 = redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(self.expiry_ms())
                .query_async(&mut connection)
                .await
                .map_err(|e| BrokerError::unavailable("Redis did not renew presence", e))?;
            if renewed == 0 {
                redis::pipe()
                    .atomic()
                    .hset_multiple(&key, &entries)
                    .ignore()
                    .pexpire(&key, self.expiry_ms() as i64)
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(|e| BrokerError::unavailable("Redis did not restore presence", e))?;
            }
        }
        Ok(())
    }
}

impl super::super::presence::Heartbeat for Inner {
    fn beat(&self) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(Inner::beat(self))
    }
}

impl Presence for RedisPresence {
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
            inner
                .entries()
                .entry(group.to_owned())
                .or_default()
                .insert(key.to_owned(), value.to_owned());
            let hash = inner.key(group);
            let mut connection = inner.connection().await?;
            redis::pipe()
                .atomic()
                .hset(&hash, key, value)
                .ignore()
                .pexpire(&hash, inner.expiry_ms() as i64)
                .ignore()
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| BrokerError::unavailable("Redis did not record presence", e))
        })
    }

    fn leave<'a>(&'a self, group: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(entries) = inner.entries().get_mut(group) {
                entries.remove(key);
            }
            let mut connection = inner.connection().await?;
            redis::cmd("HDEL")
                .arg(inner.key(group))
                .arg(key)
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| BrokerError::unavailable("Redis did not remove presence", e))
        })
    }

    fn list<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let unavailable = |e| BrokerError::unavailable("Redis did not list presence", e);
            let mut connection = inner.connection().await?;
            let pattern = inner.pattern(group);
            let mut cursor: u64 = 0;
            let mut hashes = Vec::new();
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(256)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                hashes.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let mut listed = Vec::new();
            for hash in hashes {
                let entries: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(&hash)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                listed.extend(entries);
            }
            Ok(listed)
        })
    }
}
