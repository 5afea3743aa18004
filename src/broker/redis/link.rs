//! How the dispatcher makes (and remakes) its pub/sub connection, and the bounded queue that
//! carries the connection's pushes to it.
//!
//! The queue never grows past its capacity: when the dispatcher falls behind, further messages
//! are dropped and the overflow is flagged, and the dispatcher then fills the gap from history as
//! after a reconnect. So a burst costs a history read, never unbounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError};
use redis::{Client, PushInfo, RedisResult};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Pushes the dispatcher may have waiting by default before it counts as behind.
pub(super) const DEFAULT_PUSH_QUEUE: usize = 64 * 1024;

/// The dispatcher's end of the push queue.
pub(super) struct Pushes {
    pub(super) receiver: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl Pushes {
    /// Whether pushes were dropped since the last call (the flag is cleared).
    pub(super) fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }
}

/// The connection's end: never blocks, never grows.
struct BoundedPushes {
    sender: mpsc::Sender<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl AsyncPushSender for BoundedPushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        match self.sender.try_send(info) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(SendError),
        }
    }
}

/// The client and the timeout the pub/sub connection is made with.
pub(super) struct Link {
    pub(super) client: Client,
    pub(super) timeout: Duration,
    pub(super) push_queue: usize,
}

impl Link {
    fn config(&self) -> (ConnectionManagerConfig, Pushes) {
        let (sender, receiver) = mpsc::channel(self.push_queue.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let config = ConnectionManagerConfig::new()
            .set_push_sender(BoundedPushes {
                sender,
                overflowed: overflowed.clone(),
            })
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt per command: the dispatcher does its own backoff, and keeps answering
            // subscribers between attempts instead of stalling them in retries.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        (
            config,
            Pushes {
                receiver,
                overflowed,
            },
        )
    }

    /// Connects now, failing if Redis cannot be reached.
    pub(super) async fn connect(&self) -> RedisResult<(ConnectionManager, Pushes)> {
        let (config, pushes) = self.config();
        let connection = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        Ok((connection, pushes))
    }

    /// Connects on first use.
    pub(super) fn connect_lazily(&self) -> RedisResult<(ConnectionManager, Pushes)> {
        let (config, pushes) = self.config();
        let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok((connection, pushes))
    }
}
