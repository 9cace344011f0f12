//! Push test kit: a test CA standing in for Apple's push CA, MDM push
//! certificates (UID topic) from it, and an independent APNs recorder: a
//! minimal HTTP/2 TLS server that requires a client certificate, records
//! every request and answers from a script per device token.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

pub struct TestCa {
    pub cert: X509,
    pub key: PKey<Private>,
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = openssl::bn::BigNum::new().unwrap();
    bn.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        let n = n.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(3650).unwrap()).unwrap();
        b.append_extension(openssl::x509::extension::BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        TestCa { cert: b.build(), key }
    }

    /// An MDM push certificate for `topic`, valid `days`, with a fresh key.
    pub fn push_cert(&self, topic: &str, days: u32) -> (X509, PKey<Private>) {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        (self.push_cert_for(&key, topic, days), key)
    }

    /// What Apple's portal does with an uploaded request: a push certificate
    /// for the CSR's key (the CSR's signature checked first).
    pub fn sign_push_csr(&self, csr_der: &[u8], topic: &str, days: u32) -> X509 {
        let csr = openssl::x509::X509Req::from_der(csr_der).unwrap();
        let key = csr.public_key().unwrap();
        assert!(csr.verify(&key).unwrap(), "the CSR is signed by its key");
        self.push_cert_for(&key, topic, days)
    }

    fn push_cert_for<T: openssl::pkey::HasPublic>(&self, key: &openssl::pkey::PKeyRef<T>, topic: &str, days: u32) -> X509 {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("UID", topic).unwrap();
        n.append_entry_by_text("CN", &format!("APSP:{}", uuid::Uuid::new_v4())).unwrap();
        n.append_entry_by_text("C", "US").unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&n.build()).unwrap();
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(days).unwrap()).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        b.build()
    }
}

/// PEM of a certificate followed by its key.
pub fn pem_bundle(cert: &X509, key: &PKey<Private>) -> Vec<u8> {
    let mut v = cert.to_pem().unwrap();
    v.extend(key.private_key_to_pem_pkcs8().unwrap());
    v
}

pub fn new_topic() -> String {
    format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4())
}

/// What the recorder answers for a token, in order; the last one repeats.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16, Option<&'static str>),
    /// Close the connection without answering.
    Drop,
    /// Answer 200 after a delay.
    Slow(Duration),
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Subject (one line) and serial (hex) of the client certificate.
    pub client_subject: String,
    pub client_serial: String,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    script: HashMap<String, Vec<Answer>>,
}

pub struct Recorder {
    pub url: String,
    pub server_cert_pem: Vec<u8>,
    state: Arc<Mutex<State>>,
}

impl Recorder {
    /// Listen on 127.0.0.1, trusting `client_ca` for client certificates.
    pub async fn start(client_ca: &X509) -> Recorder {
        let ca = TestCa::new("recorder TLS");
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "127.0.0.1").unwrap();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&n.build()).unwrap();
        b.set_issuer_name(ca.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        let san = openssl::x509::extension::SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&ca.cert), None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&ca.key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        a.set_certificate(&cert).unwrap();
        a.set_private_key(&key).unwrap();
        a.cert_store_mut().add_cert(client_ca.clone()).unwrap();
        a.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        a.set_alpn_select_callback(|_, c| openssl::ssl::select_next_proto(b"\x02h2", c).ok_or(openssl::ssl::AlpnError::ALERT_FATAL));
        let acceptor = Arc::new(a.build());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return;
                    }
                    let peer = tls.ssl().peer_certificate().expect("client certificate required");
                    let subject: Vec<String> = peer
                        .subject_name()
                        .entries()
                        .map(|e| {
                            format!(
                                "{}={}",
                                e.object().nid().short_name().unwrap_or("?"),
                                e.data().to_string().unwrap_or_default()
                            )
                        })
                        .collect();
                    let subject = subject.join(",");
                    let serial = super::serial_hex(&peer);
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (st, subject, serial, tx) = (st.clone(), subject.clone(), serial.clone(), tx.clone());
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                                .collect();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                            let token = path.rsplit('/').next().unwrap_or("").to_owned();
                            let answer = {
                                let mut s = st.lock().unwrap();
                                s.seen.push(Seen {
                                    method,
                                    path,
                                    headers,
                                    body,
                                    client_subject: subject,
                                    client_serial: serial,
                                });
                                match s.script.get_mut(&token) {
                                    Some(v) if v.len() > 1 => v.remove(0),
                                    Some(v) => v[0].clone(),
                                    None => Answer::Status(200, None),
                                }
                            };
                            let (status, reason) = match answer {
                                Answer::Status(s, r) => (s, r),
                                Answer::Slow(d) => {
                                    tokio::time::sleep(d).await;
                                    (200, None)
                                }
                                Answer::Drop => {
                                    let _ = tx.send(()).await;
                                    tokio::time::sleep(Duration::from_secs(5)).await;
                                    (500, None)
                                }
                            };
                            let body = reason
                                .map(|r| format!(r#"{{"reason":"{r}","timestamp":{}}}"#, 1_700_000_000_000u64))
                                .unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("apns-id", "00000000-0000-0000-0000-000000000001")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
                    // A scripted Drop closes the whole connection without an answer.
                    tokio::select! {
                        _ = conn => {}
                        _ = rx.recv() => {}
                    }
                });
            }
        });
        Recorder {
            url,
            server_cert_pem: ca.cert.to_pem().unwrap(),
            state,
        }
    }

    pub fn script(&self, token_hex: &str, answers: Vec<Answer>) {
        self.state.lock().unwrap().script.insert(token_hex.to_owned(), answers);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn seen_for(&self, token_hex: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.ends_with(token_hex)).collect()
    }

    /// Wait (bounded) until `n` requests for the token were seen.
    pub async fn wait_for(&self, token_hex: &str, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.seen_for(token_hex);
            if s.len() >= n || tokio::time::Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Set a push certificate for `topic` from `ca` on `srv` (PUT /v1/push-cert, PEM); 200 expected.
pub async fn set_push_cert(srv: &super::Server, ca: &TestCa, topic: &str) -> X509 {
    let (c, k) = ca.push_cert(topic, 365);
    let resp = srv
        .client()
        .put(format!("{}/v1/push-cert", srv.base))
        .bearer_auth(super::API_KEY)
        .header("content-type", "application/x-pem-file")
        .body(pem_bundle(&c, &k))
        .send()
        .await
        .expect("PUT /v1/push-cert");
    assert_eq!(resp.status().as_u16(), 200);
    c
}
