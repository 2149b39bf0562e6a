//! One connection's life: a deadline for its first bytes (and the TLS
//! handshake before them), the HTTP/1-or-h2 choice, and closing it when it
//! has carried no request for too long. Every connection holds one of the
//! server's slots, so none may hold it for free.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::AppState;

/// What a client sends first to speak HTTP/2 with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the protocol is known: the whole HTTP/2 preface, or the first
/// bytes that differ from it (HTTP/1). `None` when the peer closed first.
pub(crate) async fn read_prefix<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let mut chunk = [0u8; 24];
    while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
        let want = H2_PREFACE.len() - buf.len();
        let n = s.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(buf))
}

/// A stream whose first bytes were already read: they are replayed before
/// the rest, so hyper's own protocol detection sees the connection whole.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Requests of one connection: how many are open (until their response body
/// ends) and when the last one began or ended. Pings and other frames do not
/// count, so a peer that only pings is idle.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    open: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            open: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestGuard(self.clone())
    }

    /// How long the connection has carried no request; `None` while one is open.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.base.elapsed().saturating_sub(last))
    }
}

/// Holds a request open until its response body is done or dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as open while it streams
/// (a SubscribeToShard lasts minutes and is not idleness).
pub(crate) struct GuardedBody {
    inner: BoxBody<Bytes, Infallible>,
    _guard: RequestGuard,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The source address of a request's connection (a request extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// Connections (or requests) per source address, so one peer cannot take every slot.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceLimiter {
    pub(crate) fn new(max: usize) -> Arc<SourceLimiter> {
        Arc::new(SourceLimiter {
            max: max.max(1),
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceGuard> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            limiter: self.clone(),
            ip,
        })
    }
}

#[derive(Debug)]
pub(crate) struct SourceGuard {
    limiter: Arc<SourceLimiter>,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The per-connection settings.
#[derive(Clone)]
pub(crate) struct ConnSettings {
    pub builder: auto::Builder<TokioExecutor>,
    pub idle_timeout: Duration,
}

/// Waits for `fut` unless shutdown begins or the deadline passes first.
pub(crate) async fn before_deadline<F: std::future::Future>(
    deadline: tokio::time::Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        r = tokio::time::timeout_at(deadline, fut) => r.ok(),
        _ = shutdown.changed() => None,
    }
}

/// Serves one connection whose handshake (if any) is done: its first bytes
/// must arrive before `deadline`, and it is closed once idle for
/// `settings.idle_timeout` or when shutdown begins (in-flight requests finish).
pub(crate) async fn serve<I>(
    mut io: I,
    peer: SocketAddr,
    state: Arc<AppState>,
    settings: ConnSettings,
    deadline: tokio::time::Instant,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let prefix = match before_deadline(deadline, &mut shutdown, read_prefix(&mut io)).await {
        Some(Ok(Some(p))) => p,
        Some(Ok(None)) => return,
        Some(Err(e)) => {
            debug!(%peer, error = %e, "connection failed before its first request");
            return;
        }
        None => {
            debug!(%peer, "closing a connection that sent no request in time");
            return;
        }
    };
    let activity = Activity::new();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let guard = activity.begin();
            // Requests are admitted per source address too.
            req.extensions_mut().insert(Peer(peer.ip()));
            let state = state.clone();
            async move {
                let resp = crate::router::handle(state, req).await?;
                Ok::<_, Infallible>(resp.map(|inner| {
                    GuardedBody {
                        inner,
                        _guard: guard,
                    }
                    .boxed()
                }))
            }
        })
    };
    let conn = settings
        .builder
        .serve_connection(TokioIo::new(Prefixed::new(prefix, io)), service);
    let mut conn = std::pin::pin!(conn);
    let idle = settings.idle_timeout;
    let mut closing = false;
    loop {
        let wait = match activity.idle_for() {
            Some(d) => idle.saturating_sub(d),
            None => idle,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(wait.max(Duration::from_millis(10))), if !closing => {
                if activity.idle_for().is_some_and(|d| d >= idle) {
                    debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_prefix_stops_where_it_leaves_the_preface() {
        let mut s: &[u8] = b"POST / HTTP/1.1\r\n";
        assert_eq!(
            read_prefix(&mut s).await.unwrap().unwrap(),
            b"POST / HTTP/1.1\r\n"
        );
        let mut s: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest";
        assert_eq!(read_prefix(&mut s).await.unwrap().unwrap(), H2_PREFACE);
        let mut s: &[u8] = b"PRI * HTTP/2.0\r\n";
        assert!(read_prefix(&mut s).await.unwrap().is_none());
    }

    #[test]
    fn sources_are_capped_and_released() {
        let l = SourceLimiter::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.try_acquire(ip).unwrap();
        let _b = l.try_acquire(ip).unwrap();
        assert!(l.try_acquire(ip).is_none());
        assert!(l.try_acquire("10.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(l.try_acquire(ip).is_some());
    }
}
