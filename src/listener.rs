//! The accept loop for plain HTTP and HTTPS alike, with the bounds that keep one client from
//! holding the server's connections: a connection limit, a header-read timeout, an idle keep-alive
//! timeout and a request-body inactivity timeout (`[server]` in the configuration).
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection is idle (it starts
//! when hyper begins to wait for a head), and the HTTP/1-or-2 detection before it has no timeout
//! at all, so both timeouts are enforced here, per connection, whatever the protocol:
//! * while no request is in flight, a connection is closed once it has waited `keep_alive` for
//!   one, or `header_read` if the client has sent bytes of a request whose head never completed;
//! * a request in flight (including the streaming of its response) is never cut by them;
//! * a request body that delivers nothing for `body_idle` fails (the handler sees a body error:
//!   an upload keeps what it stored and can resume).
//!
//! Beyond `max_connections`, new connections wait in the kernel's accept queue until one closes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake that takes longer than this is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long open connections may finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection bounds (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub body_idle: Duration,
    pub max_connections: usize,
}

impl Bounds {
    /// `[server]`'s seconds as durations (at least one second each, at least one connection).
    pub fn from_config(c: &crate::config::ServerConfig) -> Bounds {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Bounds {
            header_read: secs(c.header_read_timeout_secs),
            keep_alive: secs(c.keep_alive_timeout_secs),
            body_idle: secs(c.body_idle_timeout_secs),
            max_connections: c.max_connections.max(1),
        }
    }
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` completes, then
/// lets open connections finish for a while.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // The slot is taken before accepting: over the limit, clients wait in the backlog and no
        // descriptor is spent on them.
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // TCP_NODELAY: without it, Nagle's algorithm holds the last small segment of a response
        // until the client's delayed ACK (~40 ms), capping small downloads at ~25 per second
        // per connection.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        let (router, tls, watcher) = (router.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(tcp, addr, router, bounds, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, addr, router, bounds, watcher).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, "TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    Ok(())
}

/// Serves one connection until it ends, or until the watchdog finds it waiting too long.
async fn connection<IO>(
    io: IO,
    addr: SocketAddr,
    router: Router,
    bounds: Bounds,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let io = Watched {
        inner: io,
        state: Arc::clone(&state),
    };
    let service_state = Arc::clone(&state);
    let service = tower::service_fn(move |req: axum::http::Request<Incoming>| {
        // Held until the response body is done: a long download is a request in flight.
        let guard = InFlight::begin(Arc::clone(&service_state));
        let mut req = req.map(|b| Body::new(IdleBody::new(b, bounds.body_idle)));
        // The auth middleware (rate limiting) and the audit seam read the client address here.
        req.extensions_mut().insert(ConnectInfo(addr));
        let response = tower::ServiceExt::oneshot(router.clone(), req);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|b| {
                Body::new(Guarded {
                    inner: b,
                    _guard: guard,
                })
            }))
        }
    });
    let builder = Builder::new(TokioExecutor::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    let conn = watcher.watch(conn.into_owned());
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            tracing::debug!(client = %addr, "connection ended: {e}");
        },
        why = watchdog(&state, bounds) => {
            tracing::debug!(client = %addr, "connection closed: {why}");
        }
    }
}

/// Returns once the connection has waited too long for a request (see the module comment).
async fn watchdog(state: &ConnState, bounds: Bounds) -> &'static str {
    // How often the state is looked at: a head that begins between two looks is cut at most a
    // quarter of the header-read timeout late.
    let tick = (bounds.header_read.min(bounds.keep_alive) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if state.in_flight.load(Ordering::Acquire) == 0 {
            let now = state.elapsed();
            let since = |ms: &AtomicU64| Duration::from_millis(ms.load(Ordering::Acquire));
            if state.read_while_idle.load(Ordering::Acquire) {
                if now.saturating_sub(since(&state.head_started_ms)) >= bounds.header_read {
                    return "request head not complete within the header-read timeout";
                }
            } else if now.saturating_sub(since(&state.idle_since_ms)) >= bounds.keep_alive {
                return "idle past the keep-alive timeout";
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// What the watchdog knows of one connection.
struct ConnState {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to when the last request ended (or the connection began).
    idle_since_ms: AtomicU64,
    /// Bytes arrived since then: a request head has begun...
    read_while_idle: AtomicBool,
    /// ...at this many milliseconds from `start`.
    head_started_ms: AtomicU64,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            read_while_idle: AtomicBool::new(false),
            head_started_ms: AtomicU64::new(0),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn begin(state: Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        if s.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.idle_since_ms.store(s.elapsed_ms(), Ordering::Release);
            s.read_while_idle.store(false, Ordering::Release);
        }
    }
}

/// The connection's stream, noting when bytes arrive while no request is in flight.
struct Watched<IO> {
    inner: IO,
    state: Arc<ConnState>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let s = &self.state;
            // Only this stream writes these two; the time goes first so the watchdog never sees
            // the flag with a stale start.
            if s.in_flight.load(Ordering::Acquire) == 0
                && !s.read_while_idle.load(Ordering::Acquire)
            {
                s.head_started_ms.store(s.elapsed_ms(), Ordering::Release);
                s.read_while_idle.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
struct Guarded {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body failed because the client sent nothing for the body-inactivity timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no body data for {0} s")]
pub struct BodyIdle(u64);

/// A request body that fails once the client stalls: the timer runs only while the handler waits
/// for data, so a handler busy elsewhere (hashing, a quota check) is never charged for it.
struct IdleBody {
    inner: Incoming,
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, limit: Duration) -> IdleBody {
        IdleBody {
            inner,
            limit,
            timer: None,
        }
    }
}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        Poll::Ready(Some(Err(Box::new(BodyIdle(limit.as_secs())))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
