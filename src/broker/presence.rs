//! [`Presence`]: what each process says about itself that every process sharing the broker can
//! list.

use super::{BoxFuture, BrokerError};

/// Entries each process keeps about itself (say, the subscriptions its streams hold) that every
/// process sharing the broker can list. An entry lives while the process that added it does: it
/// goes when [`leave`](Presence::leave) is called, or within the broker's expiry after the process
/// stopped without saying so.
///
/// A broker offers it through [`Broker::presence`](super::Broker::presence); an in-process
/// broker needs none (what the process knows is all there is). Mercure's subscriptions API uses
/// it so that every instance lists the subscriptions of all.
pub trait Presence: Send + Sync + 'static {
    /// Adds (or replaces) this process's entry `key` in `group`, holding `value`.
    fn join<'a>(
        &'a self,
        group: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Removes this process's entry `key` from `group`.
    fn leave<'a>(&'a self, group: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Every live entry of `group`, of every process: (key, value) pairs in no set order.
    fn list<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, BrokerError>>;
}

/// What a presence's heartbeat renews: the state a process keeps of its own entries.
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) trait Heartbeat: Send + Sync + 'static {
    /// Renews this process's entries (writing them anew if the broker lost them).
    fn beat(&self) -> BoxFuture<'_, Result<(), BrokerError>>;
}

/// Calls `presence`'s [`Heartbeat::beat`] every `period` (at least 10 ms) while it lives; a
/// failed beat is logged and the next one tries again.
#[cfg(any(feature = "redis", feature = "nats"))]
pub(crate) fn spawn_heartbeat<T: Heartbeat>(
    presence: std::sync::Weak<T>,
    period: std::time::Duration,
) {
    tokio::spawn(async move {
        let period = period.max(std::time::Duration::from_millis(10));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(presence) = presence.upgrade() else {
                return;
            };
            if let Err(error) = presence.beat().await {
                tracing::warn!(target: "tower_sse_pubsub", %error, "presence heartbeat failed");
            }
        }
    });
}
