//! [`StallTimeout`]: ends connections whose peer stopped reading.
//!
//! An event stream cannot end itself when its client stops reading: once the socket's buffers
//! are full, hyper stops polling the response body, so the body never runs again to notice. Only
//! the connection can tell. `StallTimeout` wraps a connection's IO and fails a write that has
//! been waiting for buffer space longer than the timeout; hyper then closes the connection and
//! drops the stream, which releases its subscriber slot. Nothing else changes: reads, idle
//! connections and writes that make progress are untouched, and a timer exists only while a
//! write is blocked.
//!
//! With axum, wrap the listener ([`StallTimeoutListener`], feature `axum`); with hyper or tonic,
//! wrap each accepted stream in [`StallTimeout::new`].
//!
//! ```
//! use std::time::Duration;
//! use tower_sse_pubsub::StallTimeout;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
//! let (stream, _peer) = listener.accept().await?;
//! // Serve `io` with hyper: a client that stops reading for 30 s is disconnected.
//! let io = StallTimeout::new(stream, Duration::from_secs(30));
//! # drop(io);
//! # let _ = client.await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pin_project! {
    /// A connection whose writes fail once one has been blocked for longer than the timeout.
    #[derive(Debug)]
    pub struct StallTimeout<IO> {
        #[pin]
        io: IO,
        timeout: Duration,
        blocked: Option<Pin<Box<Sleep>>>,
    }
}

impl<IO> StallTimeout<IO> {
    /// Wraps `io`: a write that waits longer than `timeout` for the peer to read fails with
    /// [`io::ErrorKind::TimedOut`].
    pub fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            blocked: None,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The wrapped connection, consuming the wrapper.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

/// Passes `result` through, or, while the write is blocked, fails it once the timer fires.
fn guard<T>(
    result: Poll<io::Result<T>>,
    timeout: Duration,
    blocked: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    if result.is_ready() {
        *blocked = None;
        return result;
    }
    let timer = blocked.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
    ready!(timer.as_mut().poll(cx));
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the peer has not read for {timeout:?}; closing the connection"),
    )))
}

impl<IO: AsyncWrite> AsyncWrite for StallTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write(cx, buf);
        guard(result, *this.timeout, this.blocked, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let result = this.io.poll_write_vectored(cx, bufs);
        guard(result, *this.timeout, this.blocked, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let result = this.io.poll_flush(cx);
        guard(result, *this.timeout, this.blocked, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

impl<IO: AsyncRead> AsyncRead for StallTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

#[cfg(feature = "axum")]
pub use self::listener::StallTimeoutListener;

#[cfg(feature = "axum")]
mod listener {
    use std::time::Duration;

    use super::StallTimeout;

    /// An axum listener whose connections end when their peer stops reading for longer than
    /// the timeout (feature `axum`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_sse_pubsub::{Hub, StallTimeoutListener};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let hub = Hub::new();
    /// let app = axum::Router::new().layer(hub.layer());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// let listener = StallTimeoutListener::new(listener, Duration::from_secs(30));
    /// axum::serve(listener, app).await
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct StallTimeoutListener<L> {
        inner: L,
        timeout: Duration,
    }

    impl<L> StallTimeoutListener<L> {
        /// Wraps `listener`: a write to a connection that waits longer than `timeout` for the
        /// peer to read ends that connection.
        pub fn new(listener: L, timeout: Duration) -> Self {
            Self {
                inner: listener,
                timeout,
            }
        }
    }

    impl<L: axum::serve::Listener> axum::serve::Listener for StallTimeoutListener<L> {
        type Io = StallTimeout<L::Io>;
        type Addr = L::Addr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            let (io, addr) = self.inner.accept().await;
            (StallTimeout::new(io, self.timeout), addr)
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }
}
