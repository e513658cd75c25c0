//! Serving the dashboard over HTTP/1 with limits a careless or hostile client cannot get
//! around: a deadline for a request's headers, a connection closed when nothing moves on it
//! for a while, and a cap on connections (beyond it, a `503` and the connection closed at
//! once, so that descriptors are never exhausted by clients that hold connections open).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::access::LocalAddr;

/// How long answers in progress may take to finish once the server is told to stop; a live
/// tail would never finish on its own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a connection beyond [`ServeLimits::max_connections`] is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\nretry-after: 5\r\nconnection: close\r\n\
content-length: 61\r\n\r\n503: too many connections to the dashboard; retry in a while\n";

/// Limits on the dashboard's connections.
///
/// ```
/// use std::time::Duration;
/// use aether_cli::ui::ServeLimits;
///
/// let limits = ServeLimits { max_connections: 64, ..ServeLimits::default() };
/// assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long a client has to send a request's headers, counted from the connection's start
    /// or from the end of the previous answer on a kept-alive connection: a half-sent request
    /// (or an idle kept-alive connection) is closed after it.
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte read or written before it is closed: a
    /// client that stops reading a long answer (a live tail) lets it go. Longer than the live
    /// tail's keep-alive interval, which writes every few seconds to a reader that reads.
    pub idle_timeout: Duration,
    /// Connections served at once; those beyond are answered `503` and closed.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// Serves `router` on `listener` with the default [`ServeLimits`] until `shutdown` is
/// cancelled.
///
/// # Errors
/// None today: failed accepts are logged and retried; the result is kept for errors to come.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve_with_limits(listener, router, ServeLimits::default(), shutdown).await
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled; then gives
/// answers in progress a moment to finish and closes every connection.
///
/// Each request carries the address its connection came in on, which the dashboard's `Host`
/// check and session cookie use.
///
/// # Errors
/// None today: failed accepts are logged and retried; the result is kept for errors to come.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    // Cancelled once the grace period is over: connections still open are dropped.
    let hard_stop = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(&e, &shutdown).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            turn_away(&stream);
            continue;
        };
        tracker.spawn(connection(
            stream,
            router.clone(),
            limits,
            permit,
            (shutdown.clone(), hard_stop.clone()),
        ));
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        hard_stop.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// A failed accept: the client gave up (go on at once), or the process is out of descriptors
/// or memory (wait a little: connections closing will free some).
async fn accept_failed(e: &io::Error, shutdown: &CancellationToken) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "dashboard: accepting a connection failed");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}

/// Tells a connection beyond the cap why it is closed. Best effort and without waiting: a
/// fresh socket's buffer takes the few bytes, and a client that cannot take them loses
/// nothing but the reason.
fn turn_away(stream: &TcpStream) {
    let _ = stream.try_write(TOO_MANY);
}

/// Serves one connection until it ends, is idle too long, or the server stops.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: ServeLimits,
    _permit: OwnedSemaphorePermit,
    (shutdown, hard_stop): (CancellationToken, CancellationToken),
) {
    let local = stream.local_addr().ok();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        if let Some(local) = local {
            request.extensions_mut().insert(LocalAddr(local));
        }
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "dashboard: connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!("dashboard: closing a connection idle too long");
                return;
            }
            () = hard_stop.cancelled() => return,
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it started.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Returns once nothing moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = self.last() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records when bytes move through it.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turn_away_answer_says_its_length_right() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_once_nothing_moved_for_the_timeout() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(60);
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.touch();
        let started = Instant::now();
        activity.idle_for(timeout).await;
        // 60 s after the touch, not after the start.
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
