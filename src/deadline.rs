//! [`ConnectionDeadlines`]: time limits for a server's connections, enforced on their IO.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Time limits for a server's connections, enforced on their IO.
///
/// A hub cannot protect a server from clients that never finish a request or never read: by
/// the time a request reaches a tower service its headers have arrived, and once a client stops
/// reading, hyper stops polling the response body, so the body never runs again to notice. Only
/// the connection can tell. [`DeadlineIo`] wraps a connection's IO and fails it (hyper then
/// closes the connection and drops whatever it was serving, which releases a stream's slot)
/// when:
///
/// * **a write stalls**: it has waited longer than [`stalled_write`] for the peer to read
///   (default 30 s);
/// * **a request goes unanswered**: the client's bytes have gone unanswered for longer than
///   [`unanswered`] since its first byte (or since the connection opened), which catches
///   unfinished or trickled headers and bodies (default 30 s). The time starts again after each
///   write, so it limits the time to the first byte of each response, not a response's length;
/// * **the connection is idle**: no byte has moved either way for [`idle`] (default 60 s),
///   as with an unused keep-alive connection. Event streams stay busy through their keep-alive
///   comments, so keep this longer than the hub's
///   [`keep_alive`](crate::HubBuilder::keep_alive) (15 s by default).
///
/// Connections that make progress are untouched, and one timer per connection is armed only
/// while it waits.
///
/// The deadlines see bytes on the connection, which is what HTTP/1 needs. On HTTP/2 many
/// streams share a connection, so:
/// * a client that withholds flow-control window from some streams while others move is not
///   seen as stalled: limit `max_concurrent_streams` on the server;
/// * any frame counts as activity and as an answer, so keep the hub's keep-alive below
///   [`unanswered`] as well as below [`idle`] (the defaults do);
/// * a gRPC stream that sends nothing for [`idle`] is cut: turn on HTTP/2 keep-alive pings
///   (tonic's `Server::http2_keepalive_interval`), which keep the connection busy, or raise
///   [`idle`].
///
/// With axum, wrap the listener ([`ConnectionDeadlines::listener`], feature `axum`); with hyper
/// or tonic, wrap each accepted stream ([`ConnectionDeadlines::wrap`]).
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::ConnectionDeadlines;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let deadlines = ConnectionDeadlines::new().unanswered(Duration::from_secs(10));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
/// let (stream, _peer) = listener.accept().await?;
/// // Serve `io` with hyper: it ends when a deadline passes.
/// let io = deadlines.wrap(stream);
/// # drop(io);
/// # let _ = client.await;
/// # Ok(())
/// # }
/// ```
///
/// [`stalled_write`]: ConnectionDeadlines::stalled_write
/// [`unanswered`]: ConnectionDeadlines::unanswered
/// [`idle`]: ConnectionDeadlines::idle
///
/// Each limit can be turned off with `None`:
///
/// ```
/// use std::time::Duration;
/// use tower_sse_pubsub::ConnectionDeadlines;
///
/// let deadlines = ConnectionDeadlines::new()
///     .stalled_write(Duration::from_secs(20))
///     .unanswered(Duration::from_secs(10))
///     .idle(None);
/// assert_eq!(deadlines.idle_limit(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionDeadlines {
    stalled_write: Option<Duration>,
    unanswered: Option<Duration>,
    idle: Option<Duration>,
}

impl Default for ConnectionDeadlines {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionDeadlines {
    /// The defaults: a write may stall for 30 s, a request go unanswered for 30 s, and a
    /// connection stay idle for 60 s.
    pub fn new() -> Self {
        Self {
            stalled_write: Some(Duration::from_secs(30)),
            unanswered: Some(Duration::from_secs(30)),
            idle: Some(Duration::from_secs(60)),
        }
    }

    /// How long a write may wait for the peer to read before the connection ends.
    #[must_use]
    pub fn stalled_write(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.stalled_write = limit.into();
        self
    }

    /// How long the client's bytes may go unanswered (no byte written back) before the
    /// connection ends, counted from the first byte after the last write, or from the
    /// connection's opening. A handler that takes longer than this to start its response has
    /// its connection cut: raise it for such routes.
    #[must_use]
    pub fn unanswered(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.unanswered = limit.into();
        self
    }

    /// How long no byte may move either way before the connection ends. Keep it longer than
    /// the hub's keep-alive interval, or idle event streams are cut.
    #[must_use]
    pub fn idle(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.idle = limit.into();
        self
    }

    /// The stalled-write limit, if any.
    pub fn stalled_write_limit(&self) -> Option<Duration> {
        self.stalled_write
    }

    /// The unanswered-request limit, if any.
    pub fn unanswered_limit(&self) -> Option<Duration> {
        self.unanswered
    }

    /// The idle limit, if any.
    pub fn idle_limit(&self) -> Option<Duration> {
        self.idle
    }

    /// How many connections deadlines have cut in this process so far, by deadline.
    ///
    /// ```
    /// use tower_sse_pubsub::ConnectionDeadlines;
    ///
    /// let cuts = ConnectionDeadlines::cuts();
    /// println!("{} stalled readers cut", cuts.stalled);
    /// ```
    pub fn cuts() -> DeadlineCuts {
        let read = |cut: Cut| CUTS[cut as usize].load(Ordering::Relaxed);
        DeadlineCuts {
            stalled: read(Cut::Stalled),
            unanswered: read(Cut::Unanswered),
            idle: read(Cut::Idle),
        }
    }

    /// Wraps one accepted connection.
    pub fn wrap<IO>(&self, io: IO) -> DeadlineIo<IO> {
        let now = Instant::now();
        DeadlineIo {
            io,
            deadlines: *self,
            last_activity: now,
            unanswered_since: Some(now),
            read_timer: None,
            write_timer: None,
            cut: false,
        }
    }
}

pin_project! {
    /// A connection that fails once one of its [`ConnectionDeadlines`] passes; made by
    /// [`ConnectionDeadlines::wrap`].
    #[derive(Debug)]
    pub struct DeadlineIo<IO> {
        #[pin]
        io: IO,
        deadlines: ConnectionDeadlines,
        // When a byte last moved either way.
        last_activity: Instant,
        // Since when the peer's bytes have gone unanswered.
        unanswered_since: Option<Instant>,
        // Armed while a read waits, at the nearest read-side deadline.
        read_timer: Option<Pin<Box<Sleep>>>,
        // Armed while a write is blocked.
        write_timer: Option<Pin<Box<Sleep>>>,
        // Whether a deadline has cut the connection (it is counted once).
        cut: bool,
    }
}

impl<IO> DeadlineIo<IO> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The wrapped connection, consuming the wrapper.
    pub fn into_inner(self) -> IO {
        self.io
    }
}

/// Which deadline cut a connection.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Stalled,
    Unanswered,
    Idle,
}

/// Connections cut in this process, by deadline.
static CUTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// How many connections [`ConnectionDeadlines`] have cut in this process, by deadline
/// ([`ConnectionDeadlines::cuts`]). Streams on them count as `client_gone` in a hub's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadlineCuts {
    /// A write waited longer than the stalled-write limit: a client that stopped reading.
    pub stalled: u64,
    /// A request went unanswered longer than its limit: unfinished or trickled requests.
    pub unanswered: u64,
    /// Nothing moved for longer than the idle limit.
    pub idle: u64,
}

/// The error that ends a connection at a deadline; counted once per connection.
fn timed_out(cut: Cut, already: &mut bool, reason: String) -> io::Error {
    if !std::mem::replace(already, true) {
        CUTS[cut as usize].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "tower_sse_pubsub", deadline = ?cut, %reason, "connection cut");
    }
    io::Error::new(io::ErrorKind::TimedOut, reason)
}

/// Passes a write's `result` through, or, while the write is blocked, fails it once the
/// stalled-write timer fires.
fn guard_write<T>(
    result: Poll<io::Result<T>>,
    limit: Option<Duration>,
    timer: &mut Option<Pin<Box<Sleep>>>,
    cut: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<T>> {
    let Some(limit) = limit else {
        return result;
    };
    if result.is_ready() {
        *timer = None;
        return result;
    }
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    ready!(sleep.as_mut().poll(cx));
    Poll::Ready(Err(timed_out(
        Cut::Stalled,
        cut,
        format!("the peer has not read for {limit:?}; closing the connection"),
    )))
}

impl<IO> DeadlineIo<IO> {
    /// Records a write of `written` bytes: the peer has its answer.
    fn wrote(self: Pin<&mut Self>, written: usize) {
        if written > 0 {
            let this = self.project();
            *this.last_activity = Instant::now();
            *this.unanswered_since = None;
        }
    }
}

impl<IO> DeadlineIo<IO> {
    /// Runs a write-side operation under the stalled-write limit.
    fn guarded<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        let result = op(this.io, cx);
        guard_write(
            result,
            this.deadlines.stalled_write,
            this.write_timer,
            this.cut,
            cx,
        )
    }

    /// A write under the stalled-write limit; bytes written count as an answer.
    fn guarded_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let result = self.as_mut().guarded(cx, op);
        if let Poll::Ready(Ok(written)) = result {
            self.wrote(written);
        }
        result
    }
}

impl<IO: AsyncWrite> AsyncWrite for DeadlineIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guarded_write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guarded_write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |io, cx| io.poll_shutdown(cx))
    }
}

impl<IO: AsyncRead> AsyncRead for DeadlineIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    *this.last_activity = now;
                    this.unanswered_since.get_or_insert(now);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => {}
        }
        // Waiting for the peer: the nearest of the idle and unanswered deadlines.
        let deadlines = *this.deadlines;
        let idle = deadlines
            .idle
            .map(|limit| (*this.last_activity + limit, limit));
        let unanswered = deadlines
            .unanswered
            .zip(*this.unanswered_since)
            .map(|(limit, since)| (since + limit, limit));
        let nearest = match (idle, unanswered) {
            (Some(i), Some(u)) if u.0 <= i.0 => Some((u, true)),
            (Some(i), _) => Some((i, false)),
            (None, Some(u)) => Some((u, true)),
            (None, None) => None,
        };
        let Some(((at, limit), is_unanswered)) = nearest else {
            *this.read_timer = None;
            return Poll::Pending;
        };
        let timer = match this.read_timer {
            Some(timer) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                timer
            }
            None => this
                .read_timer
                .insert(Box::pin(tokio::time::sleep_until(at))),
        };
        ready!(timer.as_mut().poll(cx));
        let (kind, reason) = if is_unanswered {
            let reason = format!(
                "no response began within {limit:?} of the request (headers or body too slow, \
                 or the handler); closing the connection"
            );
            (Cut::Unanswered, reason)
        } else {
            let reason =
                format!("nothing was sent or received for {limit:?}; closing the idle connection");
            (Cut::Idle, reason)
        };
        Poll::Ready(Err(timed_out(kind, this.cut, reason)))
    }
}

#[cfg(feature = "axum")]
pub use self::listener::{DeadlineListener, DeadlineTapIo};

#[cfg(feature = "axum")]
mod listener {
    use axum::serve::{Listener, ListenerExt, TapIo};

    use super::{ConnectionDeadlines, DeadlineIo};

    /// What [`ConnectionDeadlines::listener`] returns: the listener inside axum's `TapIo` with a
    /// tap that does nothing, because axum provides `ConnectInfo<SocketAddr>` for a `TapIo` of
    /// any listener (and only for that and a bare `TcpListener`).
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub type DeadlineTapIo<L> =
        TapIo<DeadlineListener<L>, fn(&mut DeadlineIo<<L as Listener>::Io>)>;

    impl ConnectionDeadlines {
        /// Wraps an axum listener: every connection it accepts gets these deadlines (feature
        /// `axum`). `into_make_service_with_connect_info::<SocketAddr>()` works with it as with
        /// the bare listener.
        ///
        /// ```no_run
        /// use std::net::SocketAddr;
        /// use tower_sse_pubsub::{ConnectionDeadlines, Hub};
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> std::io::Result<()> {
        /// let hub = Hub::new();
        /// let app = axum::Router::new().layer(hub.layer());
        /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        /// let listener = ConnectionDeadlines::new().listener(listener);
        /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
        /// # }
        /// ```
        #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
        pub fn listener<L: Listener>(&self, listener: L) -> DeadlineTapIo<L> {
            fn untouched<IO>(_: &mut IO) {}
            DeadlineListener {
                inner: listener,
                deadlines: *self,
            }
            .tap_io(untouched::<DeadlineIo<L::Io>> as fn(&mut DeadlineIo<L::Io>))
        }
    }

    /// An axum listener whose connections end when one of their [`ConnectionDeadlines`]
    /// passes; see [`ConnectionDeadlines::listener`] (feature `axum`).
    #[derive(Debug)]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub struct DeadlineListener<L> {
        inner: L,
        deadlines: ConnectionDeadlines,
    }

    impl<L: Listener> Listener for DeadlineListener<L> {
        type Io = DeadlineIo<L::Io>;
        type Addr = L::Addr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            let (io, addr) = self.inner.accept().await;
            (self.deadlines.wrap(io), addr)
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.inner.local_addr()
        }
    }
}
