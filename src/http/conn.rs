//! Bounded cost of a connection: the listener's limits (`--tls-handshake-timeout`,
//! `--header-read-timeout`, `--idle-timeout`, `--max-connections`) and the pieces that
//! enforce them: a connection cap that refuses excess connections at once and says so in one
//! log line per episode, and per-connection activity (bytes moved, requests in flight) that a
//! watchdog in `listener::serve_conn` reads to close connections that never send a request or
//! sit idle.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
        }
    }
}

/// Connections open at once, at most `max`.
pub struct ConnCap {
    sem: Arc<tokio::sync::Semaphore>,
    max: usize,
    saturated: AtomicBool,
    refused: AtomicU64,
}

impl ConnCap {
    pub fn new(max: usize) -> ConnCap {
        let max = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        ConnCap {
            sem: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            saturated: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    /// A permit for one more connection, or None (the caller closes it at once). Logs once
    /// when the cap is reached, and once when connections are accepted again.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.sem.clone().try_acquire_owned() {
            Ok(p) => {
                if self.saturated.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        refused = self.refused.swap(0, Ordering::Relaxed),
                        "connections are accepted again (below --max-connections)"
                    );
                }
                Some(p)
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if !self.saturated.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        max_connections = self.max,
                        "connection cap reached: new connections are closed until some end (--max-connections)"
                    );
                }
                None
            }
        }
    }
}

/// What a connection has done, for its watchdog.
pub struct Activity {
    born: Instant,
    /// Milliseconds since `born` of the last byte read or written.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request began; the guard ends it.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests begun on this connection.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Why the connection should be closed now, if it should.
    pub fn verdict(&self, limits: &ConnLimits) -> Option<&'static str> {
        let now = self.born.elapsed();
        if self.started.load(Ordering::Relaxed) == 0 && now >= limits.header_read_timeout {
            return Some("no complete request within --header-read-timeout");
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        if now.saturating_sub(last) >= limits.idle_timeout {
            // A request in flight with no bytes either way for as long is stalled (a body
            // announced and never sent): it holds a connection slot, so it goes too.
            return Some(if self.in_flight.load(Ordering::Relaxed) == 0 {
                "idle for --idle-timeout"
            } else {
                "a request without traffic for --idle-timeout"
            });
        }
        None
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that records its reads and writes in `Activity`.
pub struct Tracked<S> {
    pub inner: S,
    pub activity: Arc<Activity>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let l = ConnLimits {
            handshake_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_millis(0),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 1,
        };
        let a = Activity::new();
        assert!(a.verdict(&l).is_some(), "no request yet");
        let g = a.request();
        assert!(a.verdict(&l).is_none());
        drop(g);
        assert!(a.verdict(&l).is_none(), "not idle long enough");
        let idle = ConnLimits {
            idle_timeout: Duration::from_millis(0),
            ..l
        };
        assert!(a.verdict(&idle).is_some());
        let _g = a.request();
        assert_eq!(
            a.verdict(&idle),
            Some("a request without traffic for --idle-timeout"),
            "a stalled request goes too"
        );
        let cap = ConnCap::new(1);
        let p = cap.admit();
        assert!(p.is_some());
        assert!(cap.admit().is_none());
        drop(p);
        assert!(cap.admit().is_some());
    }
}
