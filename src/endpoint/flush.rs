//! The write delay ([`HubBuilder::write_delay`](crate::HubBuilder::write_delay)): a parked stream
//! whose topic gets a frame is not woken at once but queued, and the hub's one flush task wakes
//! every queued stream together, `delay` after the first of them was queued. Frames that arrive
//! meanwhile go out in the same write.
//!
//! A stream is woken once per flush however many frames reached it, so the delay saves wakes as
//! well as writes; a stream that was already awake (hyper polling it after a write) writes what it
//! finds at once, as without a delay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::mpsc;

/// The streams waiting for the next flush, and the hub's flush task's wake-up call.
pub(crate) struct Flush {
    delay: Duration,
    queue: Mutex<Vec<Arc<Deferred>>>,
    /// Holds one message while a flush is due; the flush task waits on the other end.
    due: mpsc::Sender<()>,
    /// The flush task's end, until the task is started.
    task_end: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Flush {
    pub(crate) fn new(delay: Duration) -> Arc<Self> {
        let (due, task_end) = mpsc::channel(1);
        Arc::new(Self {
            delay,
            queue: Mutex::default(),
            due,
            task_end: Mutex::new(Some(task_end)),
        })
    }

    /// Starts the flush task (once; later calls do nothing). It ends when the `Flush` is dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        let Some(mut due) = lock(&self.task_end).take() else {
            return;
        };
        let flush = Arc::downgrade(self);
        let delay = self.delay;
        tokio::spawn(async move {
            // `None`: the `Flush`, and with it the sender, is gone.
            while due.recv().await.is_some() {
                tokio::time::sleep(delay).await;
                let Some(flush) = flush.upgrade() else {
                    return;
                };
                flush.wake_queued();
            }
        });
    }

    /// A stream's deferred wake handle, to register where its topics would wake it.
    pub(crate) fn handle(self: &Arc<Self>) -> DeferredWaker {
        let deferred = Arc::new(Deferred {
            task: AtomicWaker::new(),
            queued: AtomicBool::new(false),
            flush: Arc::downgrade(self),
        });
        DeferredWaker {
            waker: Waker::from(deferred.clone()),
            deferred,
        }
    }

    fn enqueue(&self, deferred: Arc<Deferred>) {
        let first = {
            let mut queue = lock(&self.queue);
            queue.push(deferred);
            queue.len() == 1
        };
        if first {
            // Full: a flush is already due, and will take this one too.
            let _ = self.due.try_send(());
        }
    }

    fn wake_queued(&self) {
        let queued = std::mem::take(&mut *lock(&self.queue));
        for deferred in queued {
            // Cleared first: a frame arriving from here on queues the stream for the next flush.
            deferred.queued.store(false, Ordering::Release);
            deferred.task.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One stream's place in the flush queue.
struct Deferred {
    /// The stream's task, woken at the flush.
    task: AtomicWaker,
    /// In the queue now: later wakes before the flush add nothing.
    queued: AtomicBool,
    flush: Weak<Flush>,
}

impl Wake for Deferred {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.flush.upgrade() {
            Some(flush) => flush.enqueue(self.clone()),
            // No hub left to flush: wake the stream now, so it sees the end.
            None => self.task.wake(),
        }
    }
}

/// The waker a stream parks with under a write delay: waking it queues the stream for the next
/// flush.
pub(crate) struct DeferredWaker {
    deferred: Arc<Deferred>,
    waker: Waker,
}

impl DeferredWaker {
    /// The waker to hand out in place of the task's own, which `task` becomes the target of.
    pub(crate) fn standing_in_for(&self, task: &Waker) -> &Waker {
        self.deferred.task.register(task);
        &self.waker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_are_gathered_until_the_delay_after_the_first() {
        let flush = Flush::new(Duration::from_millis(10));
        flush.start();
        let count = Arc::new(Count::default());
        let task = Waker::from(count.clone());
        let handle = flush.handle();
        let deferred = handle.standing_in_for(&task).clone();
        deferred.wake_by_ref();
        tokio::time::sleep(Duration::from_millis(6)).await;
        deferred.wake_by_ref();
        deferred.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken before the delay");
        assert_eq!(lock(&flush.queue).len(), 1, "queued once");
        // The flush is due 10 ms after the first wake, not after the last.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // A woken task registers again when it parks again; then a later wake queues it anew,
        // and it is woken a delay after that.
        handle.standing_in_for(&task);
        deferred.wake_by_ref();
        tokio::time::sleep(Duration::from_millis(9)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wake_after_the_hub_is_gone_reaches_the_task_at_once() {
        let flush = Flush::new(Duration::from_secs(1));
        let count = Arc::new(Count::default());
        let handle = flush.handle();
        let deferred = handle.standing_in_for(&Waker::from(count.clone())).clone();
        drop(flush);
        deferred.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
