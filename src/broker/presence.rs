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
