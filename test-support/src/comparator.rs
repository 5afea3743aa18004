//! The endpoint the hub is measured against: what an axum user writes by hand for server push,
//! axum's `Sse` over a `tokio::sync::broadcast` channel, each subscriber encoding every event
//! itself. The load tool (`examples/load`) and the idle-memory test serve this one, so both
//! measure against the same code.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use futures::StreamExt;
use tokio::sync::broadcast;

/// A `GET` route that streams every message sent on `sender`: an opening `: ok` comment, then
/// one `data:` event per message. A receiver that lags skips what it missed (a load client
/// counts those events as lost), and the stream ends when the channel closes.
///
/// ```
/// let (sender, _) = tokio::sync::broadcast::channel::<String>(16);
/// let app: axum::Router = axum::Router::new()
///     .route("/broadcast", test_support::comparator::hand_written(sender.clone()));
/// ```
pub fn hand_written(sender: broadcast::Sender<String>) -> axum::routing::MethodRouter {
    axum::routing::get(move || {
        let receiver = sender.subscribe();
        async move {
            let opening = futures::stream::once(async {
                Ok::<_, Infallible>(Event::default().comment("ok"))
            });
            let live = futures::stream::unfold(receiver, |mut receiver| async move {
                loop {
                    match receiver.recv().await {
                        Ok(data) => return Some((Ok(Event::default().data(data)), receiver)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            Sse::new(opening.chain(live))
        }
    })
}
