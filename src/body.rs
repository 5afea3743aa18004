//! [`ResponseBody`]: the body of every response that passes through the layer, whether it came
//! from the inner service, is an event stream, or is one of our short replies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::endpoint::reply::Reply;
use crate::endpoint::stream::SseStream;

pin_project! {
    /// The response body of [`SsePubSub`](crate::SsePubSub): the inner service's body, untouched,
    /// or a body of ours (an event stream, or a short plain-text reply).
    ///
    /// Its data is [`Bytes`] and its error is the inner body's, so it fits axum, tonic and hyper
    /// wherever the inner body did.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Events { stream: Box<SseStream> },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn reply(reply: Reply) -> Self {
        let kind = match reply {
            Reply::Events(stream) => Kind::Events { stream },
            Reply::Full(data) => Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        };
        Self { kind }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Events { stream } => Pin::new(&mut **stream)
                .poll_next(cx)
                .map(|bytes| bytes.map(|b| Ok(Frame::data(b)))),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Events { .. } => false,
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Events { .. } => SizeHint::default(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Events { .. } => "events",
            Kind::Full { .. } => "reply",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

/// An inner body that never exists: [`EventsBody`] only ever holds a body of ours.
enum NoInner {}

impl Body for NoInner {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match *self {}
    }
}

pin_project! {
    /// The body of a response the app answers with itself, from
    /// [`Hub::stream_topics`](crate::Hub::stream_topics): an event stream, or a short plain-text
    /// refusal. axum handlers can return `Response<EventsBody>` as it is; hyper and tower
    /// services can too, since it is an [`http_body::Body`] of [`Bytes`] that never fails.
    pub struct EventsBody {
        #[pin]
        body: ResponseBody<NoInner>,
    }
}

impl EventsBody {
    pub(crate) fn new(reply: Reply) -> Self {
        Self {
            body: ResponseBody::reply(reply),
        }
    }
}

impl Body for EventsBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Debug for EventsBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EventsBody").field(&self.body).finish()
    }
}
