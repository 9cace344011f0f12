//! An APNs stand-in for simulated fleets: HTTP/2 over TLS that requires a
//! client certificate (the push certificate, chaining to the CA it is given)
//! and checks requests the way Apple documents: `POST /3/device/<hex token>`,
//! `apns-push-type: mdm`, `apns-topic` equal to the certificate's UID, a
//! priority and expiration that parse, the body exactly `{"mdm": "…"}`.
//! Accepted pushes wake the simulated device that registered the token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::sync::mpsc;

/// What the stand-in saw.
#[derive(Debug, Default)]
pub struct StandInStats {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub connections: AtomicU64,
}

struct Registration {
    topic: String,
    wake: mpsc::UnboundedSender<String>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    /// The stand-in's server certificate (self-signed): mdmd's `--apns-ca`.
    pub server_cert: X509,
    pub stats: Arc<StandInStats>,
    devices: Arc<Mutex<HashMap<String, Registration>>>,
}

/// A self-signed TLS server certificate for 127.0.0.1 and localhost.
pub fn loopback_server_cert() -> anyhow::Result<(X509, openssl::pkey::PKey<openssl::pkey::Private>)> {
    use openssl::x509::extension::SubjectAlternativeName;
    let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?.as_ref(),
    )?)?;
    let mut name = openssl::x509::X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "mdmd APNs stand-in")?;
    let name = name.build();
    let mut b = openssl::x509::X509Builder::new()?;
    b.set_version(2)?;
    let serial = crate::pki::ca::random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(&*openssl::asn1::Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*openssl::asn1::Asn1Time::days_from_now(30)?)?;
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .ip("::1")
        .dns("localhost")
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.append_extension(openssl::x509::extension::BasicConstraints::new().critical().ca().build()?)?;
    b.sign(&key, openssl::hash::MessageDigest::sha256())?;
    Ok((b.build(), key))
}

fn reply(status: u16, reason: Option<&str>) -> Response<Full<Bytes>> {
    let body = match reason {
        Some(r) => serde_json::json!({"reason": r, "timestamp": crate::clock::now() * 1000}).to_string(),
        None => String::new(),
    };
    Response::builder()
        .status(status)
        .header("apns-id", uuid::Uuid::new_v4().to_string().to_uppercase())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

impl StandIn {
    /// Listen on `listen` (loopback), trusting `client_cas` for client certificates.
    pub async fn start(listen: &str, client_cas: Vec<X509>) -> anyhow::Result<StandIn> {
        let (cert, key) = loopback_server_cert()?;
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        b.set_certificate(&cert)?;
        b.set_private_key(&key)?;
        for ca in client_cas {
            b.cert_store_mut().add_cert(ca)?;
        }
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        b.set_alpn_select_callback(|_, client| {
            openssl::ssl::select_next_proto(b"\x02h2", client).ok_or(openssl::ssl::AlpnError::ALERT_FATAL)
        });
        let acceptor = Arc::new(b.build());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(StandInStats::default());
        let devices: Arc<Mutex<HashMap<String, Registration>>> = Arc::new(Mutex::new(HashMap::new()));
        let (st, dv) = (stats.clone(), devices.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                st.connections.fetch_add(1, Relaxed);
                let (acceptor, st, dv) = (acceptor.clone(), st.clone(), dv.clone());
                tokio::spawn(async move {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
                        return;
                    };
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return;
                    }
                    let topic = tls
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| crate::push::cert::topic_of(&c).ok())
                        .unwrap_or_default();
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, dv, topic) = (st.clone(), dv.clone(), topic.clone());
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &topic, &st, &dv).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(StandIn {
            addr,
            server_cert: cert,
            stats,
            devices,
        })
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A device's token (hex) under a topic: accepted pushes arrive on the
    /// receiver as the PushMagic they carried.
    pub fn register(&self, token_hex: &str, topic: &str) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut d) = self.devices.lock() {
            d.insert(
                token_hex.to_ascii_lowercase(),
                Registration {
                    topic: topic.to_owned(),
                    wake: tx,
                },
            );
        }
        rx
    }

    /// The token is no longer valid (device erased or unenrolled): 410 from now on.
    pub fn unregister(&self, token_hex: &str) {
        if let Ok(mut d) = self.devices.lock() {
            d.remove(&token_hex.to_ascii_lowercase());
        }
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    cert_topic: &str,
    st: &StandInStats,
    devices: &Mutex<HashMap<String, Registration>>,
) -> Response<Full<Bytes>> {
    st.requests.fetch_add(1, Relaxed);
    let r = check(req, cert_topic, devices).await;
    match &r {
        Ok(()) => {
            st.accepted.fetch_add(1, Relaxed);
            reply(200, None)
        }
        Err((status, reason)) => {
            st.rejected.fetch_add(1, Relaxed);
            reply(*status, Some(reason))
        }
    }
}

async fn check(
    req: Request<hyper::body::Incoming>,
    cert_topic: &str,
    devices: &Mutex<HashMap<String, Registration>>,
) -> Result<(), (u16, &'static str)> {
    if req.method() != hyper::Method::POST {
        return Err((405, "MethodNotAllowed"));
    }
    let token = req
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .ok_or((404, "BadPath"))?
        .to_ascii_lowercase();
    if token.is_empty() {
        return Err((400, "MissingDeviceToken"));
    }
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err((400, "BadDeviceToken"));
    }
    let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match h("apns-push-type").as_deref() {
        Some("mdm") => {}
        _ => return Err((400, "InvalidPushType")),
    }
    let topic = h("apns-topic").ok_or((400, "MissingTopic"))?;
    if topic != cert_topic {
        return Err((400, "TopicDisallowed"));
    }
    if !matches!(h("apns-priority").as_deref(), None | Some("5") | Some("10")) {
        return Err((400, "BadPriority"));
    }
    if h("apns-expiration").is_some_and(|e| e.parse::<i64>().is_err()) {
        return Err((400, "BadExpirationDate"));
    }
    let body = req.into_body().collect().await.map_err(|_| (400, "PayloadEmpty"))?.to_bytes();
    if body.is_empty() {
        return Err((400, "PayloadEmpty"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| (400, "BadPayload"))?;
    let magic = match v.as_object() {
        Some(o) if o.len() == 1 => o.get("mdm").and_then(|m| m.as_str()).ok_or((400, "BadPayload"))?.to_owned(),
        _ => return Err((400, "BadPayload")),
    };
    let d = devices.lock().map_err(|_| (500, "InternalServerError"))?;
    let reg = d.get(&token).ok_or((410, "Unregistered"))?;
    if reg.topic != topic {
        return Err((400, "DeviceTokenNotForTopic"));
    }
    let _ = reg.wake.send(magic);
    Ok(())
}
