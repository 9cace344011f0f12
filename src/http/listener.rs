//! The one listener: TLS 1.2+ (OpenSSL) by default, or plain HTTP behind a
//! TLS-terminating proxy. TLS asks for (but does not require) a client
//! certificate; the handlers check it against our CA, so SCEP and profile
//! download work without one.
//!
//! Every connection is bounded (`conn`): a cap on open connections (excess ones
//! closed at once), a TLS-handshake timeout, hyper's header-read timeout, and a
//! watchdog that closes connections with no request yet after the header timeout
//! or no traffic and no request in flight for the idle timeout.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::SslAcceptor;
use openssl::x509::X509;
use tokio::net::TcpListener;

use crate::pki::Pki;

pub use super::conn::ConnLimits;
use super::conn::{Activity, ConnCap, Tracked};
use crate::app::{CONNECTIONS, HANDSHAKES, RESUMED};

/// The TLS client certificate of the connection, if any (request extension).
#[derive(Clone, Default)]
pub struct PeerCert(pub Option<Arc<X509>>);

/// The TCP peer's address (before any proxy header is considered).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

pub fn acceptor(pki: &Pki) -> anyhow::Result<Arc<SslAcceptor>> {
    Ok(acceptor_for(&pki.tls)?)
}

pub use crate::pki::tls::acceptor_for;

/// Load the certificate files again and serve them to new connections
/// (see `LiveTls::reload`).
pub fn reload(tls: &crate::app::LiveTls) -> anyhow::Result<bool> {
    Ok(tls.reload()?)
}

/// The floor for connect requests (`mdmd sim bare-server`): this listener's
/// code with the same TLS, answering every request with an empty 200.
pub async fn serve_bare(listener: TcpListener, tls: Arc<crate::app::LiveTls>) {
    let router = Router::new().fallback(|| async { axum::http::StatusCode::OK });
    serve(listener, router, Some(tls), ConnLimits::default(), std::future::pending::<()>()).await;
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<crate::app::LiveTls>>,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let cap = ConnCap::new(limits.max_connections);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(permit) = cap.admit() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let router = router.clone();
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            match tls {
                Some(acceptor) => {
                    let ssl = match openssl::ssl::Ssl::new(acceptor.context()) {
                        Ok(s) => s,
                        Err(e) => return tracing::warn!(error = %e, "TLS setup failed"),
                    };
                    let mut stream = match tokio_openssl::SslStream::new(ssl, tcp) {
                        Ok(s) => s,
                        Err(e) => return tracing::warn!(error = %e, "TLS setup failed"),
                    };
                    match tokio::time::timeout(limits.handshake_timeout, std::pin::Pin::new(&mut stream).accept()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out (--tls-handshake-timeout)"),
                    }
                    HANDSHAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let resumed = stream.ssl().session_reused();
                    if resumed {
                        RESUMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    crate::metrics::get().tls_handshake(resumed);
                    let cert = PeerCert(stream.ssl().peer_certificate().map(Arc::new));
                    let io = Tracked {
                        inner: FreshErrors(stream),
                        activity: activity.clone(),
                    };
                    serve_conn(TokioIo::new(io), router, cert, PeerAddr(peer), activity, limits).await
                }
                None => {
                    let io = Tracked {
                        inner: tcp,
                        activity: activity.clone(),
                    };
                    serve_conn(TokioIo::new(io), router, PeerCert(None), PeerAddr(peer), activity, limits).await
                }
            }
        });
    }
}

async fn serve_conn<I>(io: I, router: Router, cert: PeerCert, addr: PeerAddr, activity: Arc<Activity>, limits: ConnLimits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let act = activity.clone();
    let svc = tower::ServiceBuilder::new()
        .map_future(move |fut| {
            let guard = act.request();
            async move {
                let r = fut.await;
                drop(guard);
                r
            }
        })
        .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(cert.clone());
            req.extensions_mut().insert(addr);
            req.extensions_mut().insert(crate::service::access::limits::TcpPeer(addr.0));
            req
        })
        .service(router);
    let svc = TowerToHyperService::new(svc);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(1));
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %addr.0, error = ?e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                match closing {
                    // Graceful shutdown did not finish in time: drop the connection.
                    Some(at) if at.elapsed() >= limits.header_read_timeout.min(std::time::Duration::from_secs(5)) => return,
                    Some(_) => {}
                    None => {
                        if let Some(why) = activity.verdict(&limits) {
                            tracing::debug!(peer = %addr.0, why, "closing connection");
                            if activity.started() == 0 {
                                return;
                            }
                            conn.as_mut().graceful_shutdown();
                            closing = Some(tokio::time::Instant::now());
                        }
                    }
                }
            }
        }
    }
}

/// A TLS stream that empties the thread's OpenSSL error queue before each
/// read and write. OpenSSL reports an SSL_read that merely wants more bytes
/// as a fatal error if the queue holds anything, and a failed verification
/// elsewhere on this worker thread (a bad signature, a certificate from
/// another CA) leaves entries there: without this, one device's bad request
/// could drop another device's connection.
struct FreshErrors<S>(S);

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FreshErrors<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let _ = openssl::error::ErrorStack::get();
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FreshErrors<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let _ = openssl::error::ErrorStack::get();
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let _ = openssl::error::ErrorStack::get();
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let _ = openssl::error::ErrorStack::get();
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let _ = openssl::error::ErrorStack::get();
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
