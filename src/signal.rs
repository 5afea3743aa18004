//! [`Signal`]: wakes every task that asked to be woken at its next firing.
//!
//! A topic fires one when it gets a frame, the hub's ticker fires one per tick. A parked task
//! puts its [`Waiter`] in the list at most once per firing (the generation it registered in
//! tells it whether it already has), and the list is taken whole when the signal fires.
//!
//! A task that goes away leaves its entry behind until the next firing, and a quiet topic may
//! never fire again; so when the list has doubled since it was last cleaned, entries of waiters
//! that were dropped are removed. Dead entries never outnumber live ones by more than that, and
//! the cleaning costs O(1) per registration, amortised.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use futures::task::AtomicWaker;

/// What a signal's list holds for one waiter.
#[derive(Debug, Default)]
struct Slot {
    waker: AtomicWaker,
    /// Cleared when the [`Waiter`] is dropped.
    gone: AtomicBool,
}

/// A task's wake handle, listed in every signal it waits on. Dropping it marks its entries in
/// those lists as dead.
#[derive(Debug, Default)]
pub(crate) struct Waiter(Arc<Slot>);

impl Waiter {
    /// The waker to wake at the next firing of any signal this waiter is listed in.
    pub(crate) fn register(&self, waker: &Waker) {
        self.0.waker.register(waker);
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Release);
    }
}

/// Which firing of one signal a waiter is listed for, if any: what
/// [`Signal::register`] reads to skip listing a waiter twice. One word (every idle stream holds
/// one per topic and one for the hub's ticker).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listing(Option<NonZeroU64>);

impl Listing {
    /// Listed for the firing after `generation` firings.
    fn at(generation: u64) -> Self {
        // Stored one up, so generation 0 has a value too; a signal never fires 2^64 times.
        Self(NonZeroU64::new(generation.wrapping_add(1)))
    }
}

/// The parked waiters, and the length at which dead entries are next cleaned out.
#[derive(Default)]
struct Waiters {
    list: Vec<Arc<Slot>>,
    clean_at: usize,
}

/// The fewest entries a list holds before it is cleaned.
const MIN_CLEAN_AT: usize = 64;

/// A list of parked tasks, woken together.
#[derive(Default)]
pub(crate) struct Signal {
    generation: AtomicU64,
    waiters: Mutex<Waiters>,
}

impl Signal {
    /// How often the signal has fired.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts `waiter` in the list for the next firing, unless `listed` says it already is.
    pub(crate) fn register(&self, waiter: &Waiter, listed: &mut Listing) {
        // Already listed for the next firing: nothing to do, and no lock. A firing that races
        // this read takes the list with the waiter in it, so it is woken either way.
        if *listed == Listing::at(self.generation.load(Ordering::Acquire)) {
            return;
        }
        let mut waiters = self.lock();
        // Read under the lock: `fire` bumps the generation under it too.
        let now = Listing::at(self.generation.load(Ordering::Acquire));
        if *listed != now {
            if waiters.list.len() >= waiters.clean_at {
                waiters
                    .list
                    .retain(|slot| !slot.gone.load(Ordering::Acquire));
                waiters.clean_at = (waiters.list.len() * 2).max(MIN_CLEAN_AT);
            }
            waiters.list.push(waiter.0.clone());
            *listed = now;
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
            std::mem::take(&mut waiters.list)
        };
        for slot in waiters.into_iter().rev() {
            slot.waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
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
        let mut listed = Listing::default();
        signal.register(&waiter, &mut listed);
        signal.register(&waiter, &mut listed);
        assert_eq!(signal.lock().list.len(), 1);
        signal.fire();
        assert_eq!(signal.lock().list.len(), 0);
        signal.register(&waiter, &mut listed);
        assert_eq!(signal.lock().list.len(), 1);
        assert_eq!(signal.generation(), 1);
    }

    #[test]
    fn waiters_that_went_away_do_not_pile_up_on_a_signal_that_never_fires() {
        let signal = Signal::default();
        let live: Vec<Waiter> = (0..100).map(|_| Waiter::default()).collect();
        for waiter in &live {
            signal.register(waiter, &mut Listing::default());
        }
        // A million subscribers come and go on a quiet topic.
        for _ in 0..1_000_000 {
            let waiter = Waiter::default();
            signal.register(&waiter, &mut Listing::default());
        }
        let listed = signal.lock().list.len();
        assert!(
            listed <= 2 * 100 + MIN_CLEAN_AT,
            "{listed} entries for 100 live waiters"
        );
        // The live ones are still there, and woken.
        let alive = signal
            .lock()
            .list
            .iter()
            .filter(|slot| !slot.gone.load(Ordering::Acquire))
            .count();
        assert_eq!(alive, 100);
    }
}
