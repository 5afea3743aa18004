//! The task that sends the pub/sub connection's SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE
//! and PING commands, one at a time and in order, so the dispatcher never waits on a round trip while messages queue up.
//! Order matters: an UNSUBSCRIBE followed by a SUBSCRIBE of the same channel must reach Redis in
//! that order.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

/// What the worker is asked to do.
pub(super) enum Job {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    /// PSUBSCRIBE one glob pattern (the wildcard feed).
    PSubscribe(String),
    PUnsubscribe(String),
    Ping,
}

/// One job, on the connection current when it was asked for.
pub(super) struct Request {
    pub(super) job: Job,
    pub(super) connection: ConnectionManager,
    /// Where the outcome goes; `None` when nobody waits for it.
    pub(super) done: Option<oneshot::Sender<bool>>,
}

/// Starts the worker; it ends when the returned sender is dropped.
pub(super) fn spawn(timeout: Duration) -> mpsc::UnboundedSender<Request> {
    let (requests, mut receiver) = mpsc::unbounded_channel::<Request>();
    tokio::spawn(async move {
        while let Some(Request {
            job,
            mut connection,
            done,
        }) = receiver.recv().await
        {
            let ok = match job {
                Job::Subscribe(names) => {
                    ok(tokio::time::timeout(timeout, connection.subscribe(&names)).await)
                }
                Job::Unsubscribe(names) => {
                    ok(tokio::time::timeout(timeout, connection.unsubscribe(&names)).await)
                }
                Job::PSubscribe(pattern) => {
                    ok(tokio::time::timeout(timeout, connection.psubscribe(&pattern)).await)
                }
                Job::PUnsubscribe(pattern) => {
                    ok(tokio::time::timeout(timeout, connection.punsubscribe(&pattern)).await)
                }
                Job::Ping => {
                    let ping = redis::cmd("PING");
                    let answer = ping.query_async::<String>(&mut connection);
                    ok(tokio::time::timeout(timeout, answer).await)
                }
            };
            if let Some(done) = done {
                let _ = done.send(ok);
            }
        }
    });
    requests
}

fn ok<T, E, F>(result: Result<Result<T, E>, F>) -> bool {
    matches!(result, Ok(Ok(_)))
}
