//! The APNs HTTP/2 client: hyper's HTTP/2 client connection over OpenSSL
//! (tokio-openssl), with the push certificate as TLS client certificate.
//!
//! Why not the `a2` crate the design named: its latest release (0.10.0,
//! 2024) can only reach Apple's two hosts and trusts only public roots, so
//! no test could ever point it at a local server. This module is the small
//! part of APNs MDM needs: one long-lived connection, many requests in flight
//! on it (HTTP/2 streams), reconnect when it dies; a new certificate takes
//! effect for new requests at once while requests in flight on the old
//! connection finish there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{SslConnector, SslMethod, SslVersion};

use super::cert::PushCert;
use super::PushError;

pub const PRODUCTION: &str = "https://api.push.apple.com";
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// Base URL (scheme, host, port): Apple's production or sandbox host, or a test server.
    pub base_url: String,
    /// An extra CA (PEM) to trust for the APNs server's certificate; read at each connect.
    pub extra_ca: Option<PathBuf>,
    /// `apns-expiration`: seconds from now that APNs may keep the push (0: try once).
    pub expiration_secs: i64,
    /// Give up on one request after this long.
    pub timeout: Duration,
}

/// What APNs said, sorted by what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// 200: accepted.
    Accepted { apns_id: Option<String> },
    /// 410: the token is no longer valid for the topic (stop until a newer TokenUpdate).
    Unregistered { reason: String },
    /// 400 BadDeviceToken / DeviceTokenNotForTopic: recorded, not retried.
    BadToken { reason: String },
    /// 403: the certificate is invalid, expired, revoked or for the other environment.
    Certificate { reason: String },
    /// 429, 5xx, network trouble, timeouts: retry later with backoff.
    Retry { reason: String },
    /// Anything else (a malformed request): a bug, not retried.
    Failed { status: u16, reason: String },
}

impl PushResult {
    pub fn label(&self) -> String {
        match self {
            PushResult::Accepted { .. } => "accepted".into(),
            PushResult::Unregistered { reason }
            | PushResult::BadToken { reason }
            | PushResult::Certificate { reason }
            | PushResult::Retry { reason } => reason.clone(),
            PushResult::Failed { status, reason } => format!("{status} {reason}"),
        }
    }
}

struct Conn {
    generation: u64,
    sender: SendRequest<Full<Bytes>>,
}

pub struct ApnsClient {
    cfg: ApnsConfig,
    scheme_host: String,
    host: String,
    port: u16,
    identity: std::sync::RwLock<Option<(u64, Arc<PushCert>)>>,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

fn split_url(url: &str) -> Result<(String, String, u16), PushError> {
    let u = url.trim_end_matches('/');
    let rest = u
        .strip_prefix("https://")
        .ok_or_else(|| PushError::Config(format!("APNs URL {url:?} must be https://host[:port]")))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse().map_err(|_| PushError::Config(format!("bad port in {url:?}")))?,
        ),
        _ => (hostport.to_owned(), 443),
    };
    Ok((format!("https://{hostport}"), host, port))
}

impl ApnsClient {
    pub fn new(cfg: ApnsConfig) -> Result<ApnsClient, PushError> {
        let (scheme_host, host, port) = split_url(&cfg.base_url)?;
        Ok(ApnsClient {
            cfg,
            scheme_host,
            host,
            port,
            identity: std::sync::RwLock::new(None),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Use this certificate from now on (new requests; a new connection).
    pub fn set_identity(&self, pc: PushCert) {
        if let Ok(mut g) = self.identity.write() {
            let generation = g.as_ref().map_or(1, |(n, _)| n + 1);
            *g = Some((generation, Arc::new(pc)));
        }
    }

    pub fn identity(&self) -> Option<Arc<PushCert>> {
        self.identity.read().ok().and_then(|g| g.as_ref().map(|(_, c)| c.clone()))
    }

    fn current(&self) -> Option<(u64, Arc<PushCert>)> {
        self.identity.read().ok().and_then(|g| g.clone())
    }

    fn connector(&self, pc: &PushCert) -> Result<SslConnector, PushError> {
        let e = |e: openssl::error::ErrorStack| PushError::Config(format!("TLS setup: {e}"));
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(e)?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2)).map_err(e)?;
        b.set_certificate(&pc.cert).map_err(e)?;
        for c in &pc.chain {
            b.add_extra_chain_cert(c.clone()).map_err(e)?;
        }
        b.set_private_key(&pc.key).map_err(e)?;
        b.check_private_key().map_err(e)?;
        b.set_alpn_protos(b"\x02h2").map_err(e)?;
        if let Some(path) = &self.cfg.extra_ca {
            let pem = std::fs::read(path).map_err(|err| PushError::Config(format!("{}: {err}", path.display())))?;
            for c in openssl::x509::X509::stack_from_pem(&pem).map_err(e)? {
                b.cert_store_mut().add_cert(c).map_err(e)?;
            }
        }
        Ok(b.build())
    }

    /// The live connection for the current certificate, or a new one.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, PushResult> {
        let (generation, pc) = self.current().ok_or_else(|| PushResult::Certificate {
            reason: "NoPushCertificate".into(),
        })?;
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if c.generation == generation && !c.sender.is_closed() {
                return Ok(c.sender.clone());
            }
        }
        *guard = None;
        let retry = |reason: String| PushResult::Retry { reason };
        let connector = self.connector(&pc).map_err(|e| PushResult::Failed {
            status: 0,
            reason: e.to_string(),
        })?;
        let tcp = tokio::time::timeout(self.cfg.timeout, tokio::net::TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| retry("ConnectTimeout".into()))?
            .map_err(|e| retry(format!("Connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let ssl = connector
            .configure()
            .and_then(|c| c.into_ssl(&self.host))
            .map_err(|e| retry(format!("TLS: {e}")))?;
        let mut tls = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| retry(format!("TLS: {e}")))?;
        tokio::time::timeout(self.cfg.timeout, std::pin::Pin::new(&mut tls).connect())
            .await
            .map_err(|_| retry("TlsTimeout".into()))?
            .map_err(|e| retry(format!("TLS handshake: {e}")))?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| retry(format!("HTTP/2: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "APNs connection ended");
            }
        });
        tracing::debug!(host = %self.host, "APNs connection open");
        *guard = Some(Conn {
            generation,
            sender: sender.clone(),
        });
        Ok(sender)
    }

    /// One push: `POST /3/device/<token>` with `{"mdm": "<PushMagic>"}`.
    pub async fn push(&self, token_hex: &str, push_magic: &str, topic: &str) -> PushResult {
        match tokio::time::timeout(self.cfg.timeout, self.push_once(token_hex, push_magic, topic)).await {
            Ok(r) => r,
            Err(_) => PushResult::Retry { reason: "Timeout".into() },
        }
    }

    async fn push_once(&self, token_hex: &str, push_magic: &str, topic: &str) -> PushResult {
        let mut sender = match self.sender().await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let body = serde_json::json!({"mdm": push_magic}).to_string();
        let expiration = if self.cfg.expiration_secs <= 0 {
            0
        } else {
            crate::clock::now() + self.cfg.expiration_secs
        };
        let req = match hyper::Request::post(format!("{}/3/device/{token_hex}", self.scheme_host))
            .header("apns-topic", topic)
            .header("apns-push-type", "mdm")
            .header("apns-priority", "10")
            .header("apns-expiration", expiration.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
        {
            Ok(r) => r,
            Err(e) => {
                return PushResult::Failed {
                    status: 0,
                    reason: e.to_string(),
                }
            }
        };
        if let Err(e) = sender.ready().await {
            self.drop_conn().await;
            return PushResult::Retry {
                reason: format!("Connection: {e}"),
            };
        }
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.drop_conn().await;
                return PushResult::Retry {
                    reason: format!("Connection: {e}"),
                };
            }
        };
        let status = resp.status().as_u16();
        let apns_id = resp.headers().get("apns-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let reason = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
            .unwrap_or_default();
        classify(status, reason, apns_id)
    }

    async fn drop_conn(&self) {
        *self.conn.lock().await = None;
    }
}

fn classify(status: u16, reason: String, apns_id: Option<String>) -> PushResult {
    match status {
        200 => PushResult::Accepted { apns_id },
        410 => PushResult::Unregistered {
            reason: if reason.is_empty() { "Unregistered".into() } else { reason },
        },
        400 if matches!(reason.as_str(), "BadDeviceToken" | "DeviceTokenNotForTopic") => PushResult::BadToken { reason },
        400 if reason == "IdleTimeout" => PushResult::Retry { reason },
        403 => PushResult::Certificate {
            reason: if reason.is_empty() { "Forbidden".into() } else { reason },
        },
        429 | 500 | 502 | 503 | 504 => PushResult::Retry {
            reason: if reason.is_empty() { format!("HTTP {status}") } else { reason },
        },
        s => PushResult::Failed { status: s, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_outcomes() {
        assert_eq!(
            split_url("https://api.push.apple.com").unwrap(),
            ("https://api.push.apple.com".into(), "api.push.apple.com".into(), 443)
        );
        assert_eq!(split_url("https://127.0.0.1:2197/").unwrap().2, 2197);
        assert!(split_url("http://x").is_err());
        assert!(matches!(classify(410, "".into(), None), PushResult::Unregistered { .. }));
        assert!(matches!(classify(400, "BadDeviceToken".into(), None), PushResult::BadToken { .. }));
        assert!(matches!(classify(400, "BadTopic".into(), None), PushResult::Failed { .. }));
        assert!(matches!(
            classify(403, "BadCertificate".into(), None),
            PushResult::Certificate { .. }
        ));
        assert!(matches!(classify(429, "TooManyRequests".into(), None), PushResult::Retry { .. }));
        assert!(matches!(classify(503, "".into(), None), PushResult::Retry { .. }));
    }
}
