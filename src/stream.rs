//! One subscriber's event stream as response bytes: an opening frame, the replay and live frames
//! of its [`Subscription`], keep-alive comments while idle, and a closing frame when the hub shuts
//! down or the subscriber falls behind.
//!
//! Keep-alives and control frames never carry an `id:`, so they never move a client's
//! `Last-Event-ID`.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::broker::{Delivery, Resume, Subscription, SubscriptionEnd};
use crate::event::{Event, EventId};
use crate::hub::HubShared;

/// Sent as soon as the stream opens, so clients and proxies see it open at once.
const OPENING: &[u8] = b": ok\n\n";
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
const LAGGED: &[u8] = b": subscriber fell behind and was disconnected; reconnect to resume\n\n";
const CLOSED: &[u8] = b": the broker closed this stream; reconnect to resume\n\n";

/// The event type of the notice sent when a resume point cannot be honoured in full.
pub const RESYNC_EVENT: &str = "resync";

/// A claim on one of the hub's subscriber slots, released on drop.
pub(crate) struct SubscriberSlot(Arc<HubShared>);

impl SubscriberSlot {
    /// Takes a slot, or `None` when the hub's limit is reached.
    pub(crate) fn acquire(shared: &Arc<HubShared>) -> Option<Self> {
        let max = shared.config.max_subscribers;
        shared
            .subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(shared.clone()))
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

struct KeepAlive {
    sleep: Pin<Box<Sleep>>,
    interval: Duration,
    /// When the stream last sent anything; the timer is only re-armed from it when it fires, so
    /// a busy stream pays a clock read per frame and no timer update.
    last_write: Instant,
}

/// The byte stream of one open SSE response.
pub(crate) struct SseStream {
    pending: Option<Bytes>,
    subscription: Subscription,
    keep_alive: Option<KeepAlive>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    finished: bool,
    slot: SubscriberSlot,
}

impl SseStream {
    /// A stream for `subscription`; `notice` (a resync event) goes out right after the opening
    /// comment, before any replayed frame.
    pub(crate) fn new(
        slot: SubscriberSlot,
        subscription: Subscription,
        notice: Option<Bytes>,
    ) -> Self {
        let shared = &slot.0;
        let mut shutdown = shared.shutdown.subscribe();
        let shutdown = Box::pin(async move {
            // An error means the hub is gone, which also ends the stream.
            let _ = shutdown.wait_for(|down| *down).await;
        });
        let now = Instant::now();
        let keep_alive = shared.config.keep_alive.map(|interval| KeepAlive {
            sleep: Box::pin(tokio::time::sleep_until(deadline(now, interval))),
            interval,
            last_write: now,
        });
        let pending = match notice {
            None => Bytes::from_static(OPENING),
            Some(notice) => {
                let mut first = Vec::with_capacity(OPENING.len() + notice.len());
                first.extend_from_slice(OPENING);
                first.extend_from_slice(&notice);
                Bytes::from(first)
            }
        };
        Self {
            pending: Some(pending),
            subscription,
            keep_alive,
            shutdown,
            finished: false,
            slot,
        }
    }

    fn closing_frame(&self) -> Bytes {
        retry_frame(
            self.slot.0.config.shutdown_retry,
            "server shutting down; reconnect to resume",
        )
    }
}

impl Stream for SseStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if let Some(bytes) = this.pending.take() {
            return Poll::Ready(Some(bytes));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.finished = true;
            return Poll::Ready(Some(this.closing_frame()));
        }
        match Pin::new(&mut this.subscription).poll_next(cx) {
            Poll::Ready(Some(delivery)) => {
                if let Some(keep_alive) = &mut this.keep_alive {
                    keep_alive.last_write = Instant::now();
                }
                let bytes = match delivery {
                    Delivery::Event(frame) => frame.bytes().clone(),
                    Delivery::Resync(reason) => resync_notice(&reason, None),
                };
                return Poll::Ready(Some(bytes));
            }
            Poll::Ready(None) => {
                this.finished = true;
                let last = match this.subscription.end() {
                    Some(SubscriptionEnd::Lagged) => LAGGED,
                    _ => CLOSED,
                };
                return Poll::Ready(Some(Bytes::from_static(last)));
            }
            Poll::Pending => {}
        }
        if let Some(keep_alive) = &mut this.keep_alive {
            while keep_alive.sleep.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let due = deadline(keep_alive.last_write, keep_alive.interval);
                if now >= due {
                    keep_alive.last_write = now;
                    keep_alive
                        .sleep
                        .as_mut()
                        .reset(deadline(now, keep_alive.interval));
                    return Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE)));
                }
                // Something was sent since the timer was armed: wait out the rest of the silence.
                keep_alive.sleep.as_mut().reset(due);
            }
        }
        Poll::Pending
    }
}

/// `after` past `from`, or a far-future instant where that overflows (as tokio's `sleep` does).
fn deadline(from: Instant, after: Duration) -> Instant {
    from.checked_add(after)
        .unwrap_or_else(|| from + Duration::from_secs(60 * 60 * 24 * 365 * 30))
}

/// The named event that tells a client it may have missed events: at the start of a stream
/// whose resume point could not be honoured in full (with that point), or within a stream whose
/// broker lost track.
pub(crate) fn resync_notice(reason: &Resume, last_event_id: Option<&EventId>) -> Bytes {
    let body = serde_json::json!({
        "reason": reason.as_str(),
        "lastEventId": last_event_id.map(EventId::as_str),
    });
    // Both steps only fail on empty data or a bad event type, which these are not.
    match Event::json(&body).and_then(|event| event.with_event_type(RESYNC_EVENT)) {
        Ok(event) => event.encode_fields(),
        Err(_) => Bytes::new(),
    }
}

/// A frame that sets the client's reconnection delay to a jittered `base` and says why in a
/// comment; no `id:`, and no data, so no event is dispatched.
pub(crate) fn retry_frame(base: Duration, reason: &str) -> Bytes {
    let reason = reason.replace(['\r', '\n'], " ");
    Bytes::from(format!(
        "retry: {}\n: {reason}\n\n",
        jitter(base).as_millis()
    ))
}

/// A random duration between half and one and a half times `base`.
fn jitter(base: Duration) -> Duration {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u8(0);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.5 + unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let base = Duration::from_secs(2);
        for _ in 0..1000 {
            let j = jitter(base);
            assert!(
                j >= Duration::from_secs(1) && j <= Duration::from_secs(3),
                "{j:?}"
            );
        }
    }
}
