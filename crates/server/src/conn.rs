//! Connection limits below HTTP: a cap on open connections, a header-read timeout and an idle
//! timeout, enforced on the accepted sockets themselves so that clients which never finish a
//! request (no credentials needed for that) cannot use up descriptors or slots.
//!
//! [`GuardedListener`] wraps the TCP listener. Each accepted socket becomes a [`GuardedStream`]
//! registered with a [`Conn`] handle, which the router sees as connect info: the gate marks a
//! connection busy while one of its requests is handled and records whether it authenticated.
//! A watchdog per connection closes it when it is not handling a request and
//! - has not sent a complete first request head within the header-read timeout of connecting,
//! - has sent part of a later request head for longer than the header-read timeout, or
//! - has been idle since its last response for longer than the idle timeout.
//!
//! At the cap, a new connection evicts the connection that is least likely to be a legitimate
//! client: one not handling a request, preferring those that never completed a request head,
//! then those whose last request failed authentication, then the longest idle. When every
//! connection is busy the new one is closed at once. Closing means the socket's next read or
//! write fails, which makes hyper drop the connection.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::metrics::Metrics;

/// The limits, from [`crate::ServerOptions`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
    Evicted,
    Refused,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
        }
    }
}

/// What the server knows about one open connection.
#[derive(Debug)]
pub(crate) struct ConnState {
    id: u64,
    /// Requests of this connection being handled now.
    in_flight: AtomicUsize,
    /// Requests whose head was received.
    requests: AtomicU64,
    /// Whether the last request passed the gate's checks (token included).
    authenticated: AtomicBool,
    /// When the connection last became idle (opened, or its last request finished).
    idle_since: Mutex<Instant>,
    /// Whether bytes arrived since it became idle (a request head is on its way).
    reading: AtomicBool,
    /// Cancelled to close the connection (and when it is gone, to stop the watchdog).
    close: CancellationToken,
    /// Set once the server decided to close it.
    closing: AtomicBool,
}

/// A connection's handle, given to the router as connect info.
#[derive(Debug, Clone)]
pub(crate) struct Conn(Arc<ConnState>);

impl Conn {
    /// A request of this connection starts being handled; the guard ends it.
    pub(crate) fn begin(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        self.0.reading.store(false, Ordering::Relaxed);
        InFlight(self.0.clone())
    }

    /// Records whether the current request passed the gate.
    pub(crate) fn set_authenticated(&self, ok: bool) {
        self.0.authenticated.store(ok, Ordering::Relaxed);
    }
}

/// Marks a request in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        if let Ok(mut since) = state.idle_since.lock() {
            *since = Instant::now();
        }
        state.reading.store(false, Ordering::Relaxed);
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Open connections.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn live(&self) -> usize {
        self.conns.lock().map_or(0, |c| {
            c.values()
                .filter(|s| !s.closing.load(Ordering::Relaxed))
                .count()
        })
    }

    /// Picks and marks the connection to close to make room, if any is not busy.
    fn evict_one(&self) -> Option<Arc<ConnState>> {
        let conns = self.conns.lock().ok()?;
        let victim = conns
            .values()
            .filter(|s| {
                !s.closing.load(Ordering::Relaxed) && s.in_flight.load(Ordering::SeqCst) == 0
            })
            .min_by_key(|s| {
                let served = s.requests.load(Ordering::Relaxed) > 0;
                let trusted = served && s.authenticated.load(Ordering::Relaxed);
                let since = s.idle_since.lock().map_or_else(|_| Instant::now(), |t| *t);
                (served, trusted, since)
            })?
            .clone();
        victim.closing.store(true, Ordering::Relaxed);
        Some(victim)
    }
}

/// A TCP listener enforcing [`ConnLimits`].
pub(crate) struct GuardedListener {
    inner: TcpListener,
    limits: ConnLimits,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl GuardedListener {
    pub(crate) fn new(inner: TcpListener, limits: ConnLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            limits,
            registry: Arc::default(),
            metrics,
        }
    }
}

impl std::fmt::Debug for GuardedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedListener")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Address of an accepted connection plus its handle.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) conn: Conn,
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = Accepted;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let stream = match self.inner.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors and the like: back off a little instead of spinning.
                    if !matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) {
                        tracing::debug!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
            };
            if self.registry.live() >= self.limits.max_connections {
                match self.registry.evict_one() {
                    Some(victim) => {
                        self.metrics.record_closed(CloseReason::Evicted);
                        victim.close.cancel();
                    }
                    None => {
                        self.metrics.record_closed(CloseReason::Refused);
                        drop(stream);
                        continue;
                    }
                }
            }
            let _ = stream.set_nodelay(true);
            let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
            let state = Arc::new(ConnState {
                id,
                in_flight: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
                authenticated: AtomicBool::new(false),
                idle_since: Mutex::new(Instant::now()),
                reading: AtomicBool::new(false),
                close: CancellationToken::new(),
                closing: AtomicBool::new(false),
            });
            if let Ok(mut conns) = self.registry.conns.lock() {
                conns.insert(id, state.clone());
            }
            tokio::spawn(watchdog(state.clone(), self.limits, self.metrics.clone()));
            let closed = Box::pin(state.close.clone().cancelled_owned());
            let io = GuardedStream {
                inner: stream,
                state: state.clone(),
                registry: self.registry.clone(),
                closed,
            };
            return (io, Accepted { conn: Conn(state) });
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Err(io::Error::other(
            "a guarded listener has no address of its own",
        ))
    }
}

impl Connected<IncomingStream<'_, GuardedListener>> for Accepted {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Closes the connection when it overstays a timeout while not handling a request.
async fn watchdog(state: Arc<ConnState>, limits: ConnLimits, metrics: Arc<Metrics>) {
    // Bytes seen since idle start the header clock at the first one.
    let mut head_started: Option<Instant> = None;
    let mut last_idle_since = None;
    loop {
        let now = Instant::now();
        let busy = state.in_flight.load(Ordering::SeqCst) > 0;
        let idle_since = state.idle_since.lock().map_or(now, |t| *t);
        if last_idle_since != Some(idle_since) {
            head_started = None;
            last_idle_since = Some(idle_since);
        }
        let wait = if busy {
            head_started = None;
            limits.header_read_timeout.min(limits.idle_timeout)
        } else {
            let reading = state.reading.load(Ordering::Relaxed);
            if reading && head_started.is_none() {
                head_started = Some(now);
            }
            // The first head must be complete within the header-read timeout of connecting;
            // a later one within that time of its first byte.
            let first = state.requests.load(Ordering::Relaxed) == 0;
            let (deadline, reason) = match head_started {
                _ if first => (
                    idle_since + limits.header_read_timeout,
                    CloseReason::HeaderTimeout,
                ),
                Some(start) => (
                    start + limits.header_read_timeout,
                    CloseReason::HeaderTimeout,
                ),
                None => (idle_since + limits.idle_timeout, CloseReason::IdleTimeout),
            };
            if now >= deadline {
                if !state.closing.swap(true, Ordering::Relaxed) {
                    metrics.record_closed(reason);
                }
                state.close.cancel();
                return;
            }
            // Wake at the deadline, or earlier to notice a head starting.
            (deadline - now).min(limits.header_read_timeout / 4 + Duration::from_millis(1))
        };
        tokio::select! {
            () = state.close.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// An accepted socket that fails (so that hyper drops it) once its connection is closed.
pub(crate) struct GuardedStream {
    inner: TcpStream,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl GuardedStream {
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server's limits",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        self.state.close.cancel();
        if let Ok(mut conns) = self.registry.conns.lock() {
            conns.remove(&self.state.id);
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(err) = self.check(cx) {
            return Poll::Ready(Err(err));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.reading.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(err) = self.check(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(err) = self.check(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
