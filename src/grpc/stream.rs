//! [`EventStream`]: one gRPC subscriber's stream of events, held in one of the hub's subscriber
//! slots and counted in its stats like an SSE stream.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use prost::Message;
use tonic::Status;

use super::proto;
use crate::broker::{Delivery, Resume, Subscription, SubscriptionEnd};
use crate::endpoint::admit::Admitted;
use crate::endpoint::stream::{ReplayPermit, StreamAccount};
use crate::event::Frame;
use crate::signal::Listing;
use crate::stats::{CloseReason, Written};

/// The bytes of the gRPC prefix of each message: a compression flag and a 4-byte length.
const MESSAGE_PREFIX: u64 = 5;

/// The stream a `Subscribe` call answers with: a resync notice first if the resume point could
/// not be placed, then the events of the subscription, until the subscriber falls behind
/// (`RESOURCE_EXHAUSTED`), the broker closes the subscription or the hub shuts down
/// (`UNAVAILABLE`). Dropping it (tonic does when the client cancels) frees its subscriber slot.
///
/// tonic serves it; Rust code in the same process can read one too:
///
/// ```
/// use futures::StreamExt;
/// use tower_sse_pubsub::Hub;
/// use tower_sse_pubsub::grpc::proto::SubscribeRequest;
/// use tower_sse_pubsub::grpc::proto::pub_sub_server::PubSub;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::new();
/// let service = hub.grpc_service();
/// let request = SubscribeRequest { topics: vec!["news".into()], after_id: None };
/// let mut events = service.subscribe(tonic::Request::new(request)).await?.into_inner();
/// assert_eq!(hub.stats().open_streams, 1);
///
/// hub.publisher().publish_text("news", "hello").await?;
/// let event = events.next().await.expect("an event")?;
/// assert_eq!(event.data, "hello");
///
/// drop(events);
/// assert_eq!(hub.stats().streams_closed.client_gone, 1);
/// # Ok(())
/// # }
/// ```
pub struct EventStream {
    /// The resync notice to send before anything else.
    opening: Option<proto::Event>,
    subscription: Subscription,
    /// Held while the stream is replaying; dropped once it has caught up.
    replay: Option<ReplayPermit>,
    /// Woken by the hub's ticker, which fires at shutdown.
    tick_parked: Listing,
    finished: bool,
    /// Its slot and counts; settled when the stream is dropped.
    account: StreamAccount,
}

impl EventStream {
    pub(super) fn new(admitted: Admitted) -> Self {
        let opening = admitted
            .resume
            .is_gap()
            .then(|| resync_message(&admitted.resume));
        Self {
            opening,
            subscription: admitted.subscription,
            replay: admitted.replay,
            tick_parked: Listing::default(),
            finished: false,
            account: admitted.account,
        }
    }

    /// Ends the stream for `reason`, with `status` as its last item.
    fn close(
        &mut self,
        reason: CloseReason,
        status: Status,
    ) -> Poll<Option<Result<proto::Event, Status>>> {
        self.finished = true;
        self.replay = None;
        self.account.closed = Some(reason);
        Poll::Ready(Some(Err(status)))
    }

    /// Counts `message` as written, and hands it out.
    fn send(&mut self, message: proto::Event) -> Poll<Option<Result<proto::Event, Status>>> {
        self.account.written.bytes += message.encoded_len() as u64 + MESSAGE_PREFIX;
        if self.account.written.frames >= Written::BATCH {
            self.account.report();
        }
        Poll::Ready(Some(Ok(message)))
    }

    fn shutting_down(&mut self) -> Poll<Option<Result<proto::Event, Status>>> {
        self.close(
            CloseReason::Shutdown,
            Status::unavailable("the server is shutting down; resubscribe with after_id"),
        )
    }
}

impl Stream for EventStream {
    type Item = Result<proto::Event, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(notice) = this.opening.take() {
            return this.send(notice);
        }
        // Shutdown first: graceful shutdown waits for every open stream, so none may outlast it
        // by delivering a backlog.
        if this.account.endpoints().is_shut_down() {
            return this.shutting_down();
        }
        match Pin::new(&mut this.subscription).poll_next(cx) {
            Poll::Ready(Some(Delivery::Event(frame))) => {
                this.account.remember(&frame);
                this.account.written.frames += 1;
                if this.replay.is_some() {
                    this.account.written.replayed += 1;
                }
                return this.send(event_message(&frame));
            }
            Poll::Ready(Some(Delivery::Resync(reason))) => {
                this.account.resync_sent(&reason);
                return this.send(resync_message(&reason));
            }
            Poll::Ready(None) => {
                let (reason, status) = match this.subscription.end() {
                    Some(SubscriptionEnd::Lagged) => (
                        CloseReason::Lagged,
                        Status::resource_exhausted(
                            "subscriber fell behind and was disconnected; resubscribe with \
                             after_id",
                        ),
                    ),
                    Some(SubscriptionEnd::Deadline) => (
                        CloseReason::Deadline,
                        Status::unauthenticated(
                            "this subscription's deadline passed; resubscribe with fresh \
                             credentials and after_id",
                        ),
                    ),
                    _ => (
                        CloseReason::Broker,
                        Status::unavailable(
                            "the broker closed the subscription; resubscribe with after_id",
                        ),
                    ),
                };
                return this.close(reason, status);
            }
            Poll::Pending => {}
        }
        // Nothing ready and no replay page to come: the stream has caught up.
        if this.replay.is_some() && !this.subscription.has_replay_pages() {
            this.replay = None;
        }
        // A quiet moment: report what was written, so the hub's stats are exact while it idles.
        this.account.report();
        this.subscription.waiter().register(cx.waker());
        let endpoints = this.account.endpoints();
        endpoints
            .ticker
            .register(this.subscription.waiter(), &mut this.tick_parked);
        // A shutdown between the check above and the registration fired before we were listed.
        if endpoints.is_shut_down() {
            return this.shutting_down();
        }
        Poll::Pending
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("last_event_id", &self.account.last_id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

fn event_message(frame: &Frame) -> proto::Event {
    let fields = frame.fields();
    proto::Event {
        id: frame.id().to_string(),
        event_type: fields.event_type,
        data: fields.data,
        resync: false,
        resync_reason: String::new(),
    }
}

fn resync_message(reason: &Resume) -> proto::Event {
    proto::Event {
        id: String::new(),
        event_type: None,
        data: String::new(),
        resync: true,
        resync_reason: reason.as_str().to_owned(),
    }
}
