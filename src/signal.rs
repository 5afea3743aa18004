//! [`Signal`]: wakes every task that asked to be woken at its next firing.
//!
//! A topic fires one when it gets a frame, the hub's ticker fires one per tick. A parked task
//! puts its [`Waiter`] in the list at most once per firing (the generation it registered in
//! tells it whether it already has), and the list is taken whole when the signal fires, so a
//! task that went away costs one entry until the next firing and never more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::task::AtomicWaker;

/// A task's wake handle, shared by every signal it waits on.
pub(crate) type Waiter = Arc<AtomicWaker>;

/// A list of parked tasks, woken together.
#[derive(Default)]
pub(crate) struct Signal {
    generation: AtomicU64,
    waiters: Mutex<Vec<Waiter>>,
}

impl Signal {
    /// How often the signal has fired.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `waiter` in the list for the next firing, unless `registered` says it already is.
    pub(crate) fn register(&self, waiter: &Waiter, registered: &mut Option<u64>) {
        // Already listed for the next firing: nothing to do, and no lock. A firing that races
        // this read takes the list with the waiter in it, so it is woken either way.
        if *registered == Some(self.generation.load(Ordering::Acquire)) {
            return;
        }
        let mut waiters = self.lock();
        // Read under the lock: `fire` bumps the generation under it too.
        let generation = self.generation.load(Ordering::Acquire);
        if *registered != Some(generation) {
            waiters.push(waiter.clone());
            *registered = Some(generation);
        }
    }

    /// Wakes every registered waiter; they register again when they park again. The wakes
    /// happen after the lock is released, newest first: the task that parked last (the one that
    /// was served last) is served first, which measured lower tail latency under load than a
    /// fixed first-come order.
    pub(crate) fn fire(&self) {
        let waiters = {
            let mut waiters = self.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *waiters)
        };
        for waiter in waiters.into_iter().rev() {
            waiter.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Waiter>> {
        // A panic while holding this lock cannot leave the list inconsistent.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_listed_once_per_generation() {
        let signal = Signal::default();
        let waiter = Waiter::default();
        let mut registered = None;
        signal.register(&waiter, &mut registered);
        signal.register(&waiter, &mut registered);
        assert_eq!(signal.lock().len(), 1);
        signal.fire();
        assert_eq!(signal.lock().len(), 0);
        signal.register(&waiter, &mut registered);
        assert_eq!(signal.lock().len(), 1);
        assert_eq!(signal.generation(), 1);
    }
}
