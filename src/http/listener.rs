//! The one listener: TLS 1.2+ (OpenSSL) by default, or plain HTTP behind a
//! TLS-terminating proxy. TLS asks for (but does not require) a client
//! certificate; the handlers check it against our CA, so SCEP and profile
//! download work without one.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use tokio::net::TcpListener;

use crate::pki::Pki;

use crate::app::{CONNECTIONS, HANDSHAKES};

/// The TLS client certificate of the connection, if any (request extension).
#[derive(Clone, Default)]
pub struct PeerCert(pub Option<Arc<X509>>);

/// The TCP peer's address (before any proxy header is considered).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

pub fn acceptor(pki: &Pki) -> anyhow::Result<Arc<SslAcceptor>> {
    acceptor_for(&pki.tls)
}

/// A TLS server configuration for a certificate, its chain and key.
pub fn acceptor_for(pair: &crate::pki::ca::KeyPair) -> anyhow::Result<Arc<SslAcceptor>> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_private_key(&pair.key)?;
    b.set_certificate(&pair.cert)?;
    for c in &pair.chain {
        b.add_extra_chain_cert(c.clone())?;
    }
    b.check_private_key()?;
    // Request a client certificate, accept the handshake either way: the MDM
    // handlers decide (and never with a 401).
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    b.set_session_id_context(b"mdmd")?;
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", client).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(Arc::new(b.build()))
}

/// Load the certificate files again and serve them to new connections.
/// A file that does not load (or a key that does not match) leaves the
/// current configuration in place.
pub fn reload(tls: &crate::app::LiveTls) -> anyhow::Result<bool> {
    let pair = crate::pki::ca::load_pair(&tls.cert_path, &tls.key_path)?;
    let new_der = pair.cert.to_der()?;
    if tls.certificate().and_then(|c| c.to_der().ok()).as_deref() == Some(new_der.as_slice()) {
        return Ok(false);
    }
    if crate::pki::asn1_unix(pair.cert.not_after()) <= crate::service::now() {
        anyhow::bail!("{} has expired", tls.cert_path.display());
    }
    tls.replace(acceptor_for(&pair)?);
    Ok(true)
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<crate::app::LiveTls>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
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
        let _ = tcp.set_nodelay(true);
        CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let router = router.clone();
        let tls = tls.as_ref().map(|t| t.current());
        tokio::spawn(async move {
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
                    if let Err(e) = std::pin::Pin::new(&mut stream).accept().await {
                        return tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    HANDSHAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let cert = PeerCert(stream.ssl().peer_certificate().map(Arc::new));
                    serve_conn(TokioIo::new(stream), router, cert, PeerAddr(peer)).await
                }
                None => serve_conn(TokioIo::new(tcp), router, PeerCert(None), PeerAddr(peer)).await,
            }
        });
    }
}

async fn serve_conn<I>(io: I, router: Router, cert: PeerCert, addr: PeerAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(cert.clone());
            req.extensions_mut().insert(addr);
            req
        })
        .service(router);
    let svc = TowerToHyperService::new(svc);
    if let Err(e) = Builder::new(TokioExecutor::new()).serve_connection(io, svc).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
