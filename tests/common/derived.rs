//! Derived-credential helpers (seed 003): payload XML, posting as an
//! account, what the simulated device holds, and a PIV-D test CA on disk
//! that OpenSSL's own `ca` (revoke, CRL) and `ocsp` (responder) commands
//! work with; a CRL server on 127.0.0.1.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::{X509Builder, X509Extension, X509NameBuilder, X509};
use serde_json::Value;

use super::{free_port, openssl, KillOnDrop, Server};

/// One payload of a template.
pub fn payload(ty: &str, uuid: &str, body: &str) -> String {
    format!(
        "<dict><key>PayloadType</key><string>{ty}</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>p.{uuid}</string><key>PayloadUUID</key><string>{uuid}</string>{body}</dict>"
    )
}

/// A PKCS#12 payload standing for the device's derived credential of `usage`.
pub fn derived_p12(uuid: &str, usage: &str) -> String {
    payload(
        "com.apple.security.pkcs12",
        uuid,
        &format!("<key>PayloadContent</key><string>$DERIVED_CREDENTIAL:{usage}</string>"),
    )
}

/// A Wi-Fi EAP-TLS payload whose identity is the payload `identity_uuid`.
pub fn wifi_eap_tls(uuid: &str, identity_uuid: &str) -> String {
    payload(
        "com.apple.wifi.managed",
        uuid,
        &format!(
            "<key>SSID_STR</key><string>Corp</string><key>EncryptionType</key><string>WPA2</string>\
<key>EAPClientConfiguration</key><dict><key>AcceptEAPTypes</key><array><integer>13</integer></array></dict>\
<key>PayloadCertificateUUID</key><string>{identity_uuid}</string>"
        ),
    )
}

/// POST a credential with this bearer (an account's secret or an upload token).
pub async fn post_as(srv: &Server, bearer: &str, body: Value) -> (u16, Value) {
    call_as(srv, bearer, "/v1/derived-credentials", body).await
}

/// POST JSON to `path` with this bearer: (status, JSON answer).
pub async fn call_as(srv: &Server, bearer: &str, path: &str, body: Value) -> (u16, Value) {
    let r = srv
        .client()
        .post(format!("{}{path}", srv.base))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// The identity a profile's payload gave the simulated device.
pub fn identity_of(d: &mdmd::sim::SimDevice, profile: &str, payload_uuid: &str) -> mdmd::sim::pki::SimIdentity {
    d.profiles
        .get(profile)
        .unwrap_or_else(|| panic!("no profile {profile} on the device"))
        .identities
        .iter()
        .find(|(u, _)| u == payload_uuid)
        .map(|(_, i)| i.clone())
        .unwrap_or_else(|| panic!("no identity from {payload_uuid} in {profile}"))
}

/// The certificate inside a PKCS#12.
pub fn cert_of(p12: &[u8], password: &str) -> X509 {
    mdmd::sim::pki::open_pkcs12(p12, password).expect("open PKCS#12").cert
}

/// A credential of the active list (`GET /v1/derived-credentials`) by id.
pub async fn credential(srv: &Server, id: &str) -> Value {
    let v = srv.admin().get("/v1/derived-credentials").await.unwrap();
    v["derived_credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// An ended credential (`GET /v1/derived-credentials`: `ended`) by id.
pub async fn ended(srv: &Server, id: &str) -> Value {
    let v = srv.admin().get("/v1/derived-credentials").await.unwrap();
    v["ended"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// `YYMMDDHHMMSSZ`, as OpenSSL's index.txt writes times.
fn index_time(t: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        d.year() % 100,
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// A PIV-D issuing CA in a directory `openssl ca` and `openssl ocsp` use:
/// ca.pem, ca.key, index.txt (every certificate it issues), ca.cnf.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: mdmd::sim::pki::SimIdentity,
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let ca = mdmd::sim::pki::test_ca(cn).unwrap();
        let p = |f: &str| dir.path().join(f);
        std::fs::write(p("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(p("ca.key"), ca.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(p("index.txt"), "").unwrap();
        std::fs::write(p("index.txt.attr"), "unique_subject = no\n").unwrap();
        std::fs::write(p("crlnumber"), "01\n").unwrap();
        std::fs::write(
            p("ca.cnf"),
            "[ca]\ndefault_ca = CA_default\n[CA_default]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
certificate = ca.pem\nprivate_key = ca.key\ndefault_md = sha256\ndefault_crl_days = 1\n",
        )
        .unwrap();
        TestCa { dir, ca }
    }

    /// A credential for `cn` valid for `secs` from now, naming these CRL and
    /// OCSP URLs, as a PKCS#12 (with the CA in its chain) and its certificate.
    #[allow(deprecated)]
    pub fn issue(&self, cn: &str, secs: i64, crl: Option<&str>, ocsp: Option<&str>, password: &str) -> (Vec<u8>, X509) {
        let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        let n = n.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = mdmd::pki::ca::random_serial().unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(self.ca.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        let now = mdmd::clock::now();
        b.set_not_before(&openssl::asn1::Asn1Time::from_unix(now - 60).unwrap()).unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::from_unix(now + secs).unwrap()).unwrap();
        b.append_extension(
            openssl::x509::extension::KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .unwrap(),
        )
        .unwrap();
        if let Some(u) = crl {
            b.append_extension(X509Extension::new_nid(None, None, Nid::CRL_DISTRIBUTION_POINTS, &format!("URI:{u}")).unwrap())
                .unwrap();
        }
        if let Some(u) = ocsp {
            b.append_extension(X509Extension::new_nid(None, None, Nid::INFO_ACCESS, &format!("OCSP;URI:{u}")).unwrap())
                .unwrap();
        }
        b.sign(&self.ca.key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let mut chain = openssl::stack::Stack::new().unwrap();
        chain.push(self.ca.cert.clone()).unwrap();
        let p12 = openssl::pkcs12::Pkcs12::builder()
            .name(cn)
            .pkey(&key)
            .cert(&cert)
            .ca(chain)
            .build2(password)
            .unwrap()
            .to_der()
            .unwrap();
        let line = format!("V\t{}\t\t{}\tunknown\t/CN={cn}\n", index_time(now + secs), super::serial_hex(&cert));
        let index = self.dir.path().join("index.txt");
        let mut text = std::fs::read_to_string(&index).unwrap();
        text.push_str(&line);
        std::fs::write(&index, text).unwrap();
        (p12, cert)
    }

    /// Revoke a certificate with `openssl ca -revoke` (keyCompromise).
    pub fn revoke(&self, cert: &X509) {
        std::fs::write(self.dir.path().join("revoke.pem"), cert.to_pem().unwrap()).unwrap();
        openssl(
            &["ca", "-config", "ca.cnf", "-revoke", "revoke.pem", "-crl_reason", "keyCompromise"],
            self.dir.path(),
        );
    }

    /// A fresh CRL from `openssl ca -gencrl` (DER).
    pub fn crl(&self) -> Vec<u8> {
        openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"], self.dir.path());
        let pem = std::fs::read(self.dir.path().join("crl.pem")).unwrap();
        openssl::x509::X509Crl::from_pem(&pem).unwrap().to_der().unwrap()
    }

    /// `openssl ocsp` answering from index.txt (as it is now), signed by
    /// the CA itself, on `port` (127.0.0.1 is where it is asked). Ready when
    /// it says ACCEPT (a probe connection that sends nothing would wedge it:
    /// it serves one connection at a time).
    pub async fn ocsp_responder(&self, port: u16) -> KillOnDrop {
        let mut child = Command::new("openssl")
            .args(["ocsp", "-index", "index.txt", "-port", &port.to_string()])
            .args([
                "-rsigner",
                "ca.pem",
                "-rkey",
                "ca.key",
                "-CA",
                "ca.pem",
                "-nmin",
                "5",
                "-ignore_err",
            ])
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl ocsp");
        let out = child.stdout.take().expect("stdout");
        let child = KillOnDrop(child);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut r = std::io::BufReader::new(out);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading, so that it never writes into a closed pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let line = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("openssl ocsp did not start")
            .unwrap_or_default();
        assert!(line.starts_with("ACCEPT"), "openssl ocsp: {line:?}");
        child
    }
}

/// A CRL server on 127.0.0.1: `/crl` serves `body` (counting requests),
/// `/big` more than 1 MiB, `/hang` never answers.
pub struct CrlServer {
    pub base: String,
    pub body: Arc<Mutex<Vec<u8>>>,
    pub hits: Arc<AtomicUsize>,
}

impl CrlServer {
    pub async fn start(body: Vec<u8>) -> CrlServer {
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let app = axum::Router::new()
            .route(
                "/crl",
                axum::routing::get(move || {
                    let (b, h) = (b.clone(), h.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = b.lock().unwrap().clone();
                        ([(axum::http::header::CONTENT_TYPE, "application/pkix-crl")], body)
                    }
                }),
            )
            .route("/big", axum::routing::get(|| async { vec![0x30u8; (1 << 20) + 1024] }))
            .route(
                "/hang",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    Vec::<u8>::new()
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        CrlServer {
            base: format!("http://{addr}"),
            body,
            hits,
        }
    }

    pub fn set(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = body;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub const CHALLENGE: &str = "org-ca-Challenge-7f3a9c";

/// Debian's scepserver with its own CA, on a free loopback port.
pub struct ScepServer {
    _child: KillOnDrop,
    pub url: String,
    pub ca: X509,
    _dir: tempfile::TempDir,
}

pub async fn scepserver() -> ScepServer {
    let dir = tempfile::tempdir().unwrap();
    let depot = dir.path().join("depot");
    let ok = Command::new("scepserver")
        .args(["ca", "-init", "-depot"])
        .arg(&depot)
        .args(["-organization", "Org CA Test", "-keySize", "2048"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("scepserver (apt-get install scep)");
    assert!(ok.success(), "scepserver ca -init failed");
    let port = free_port();
    let child = Command::new("scepserver")
        .arg("-depot")
        .arg(&depot)
        .args(["-port", &port.to_string(), "-challenge", CHALLENGE, "-allowrenew", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start scepserver");
    let url = format!("http://127.0.0.1:{port}/scep");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{url}?operation=GetCACaps")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "scepserver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca = X509::from_pem(&std::fs::read(depot.join("ca.pem")).unwrap()).unwrap();
    ScepServer {
        _child: KillOnDrop(child),
        url,
        ca,
        _dir: dir,
    }
}

/// An NDES `mscep_admin` stand-in: basic auth, a UTF-16 page with the
/// challenge (or "password cache is full" once `full` is set), counting requests.
pub async fn ndes_admin(
    challenge: &'static str,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let full = std::sync::Arc::new(AtomicBool::new(false));
    let (h, f) = (hits.clone(), full.clone());
    let app = axum::Router::new().route(
        "/certsrv/mscep_admin/",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let (h, f) = (h.clone(), f.clone());
            async move {
                let want = format!("Basic {}", super::b64(b"CORP\\ndes-svc:svc-pw"));
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
                    return (axum::http::StatusCode::UNAUTHORIZED, Vec::new());
                }
                h.fetch_add(1, Ordering::SeqCst);
                let page = if f.load(Ordering::SeqCst) {
                    "<HTML><Body>The password cache is full. Use unassigned passwords or wait until the passwords expire.</Body></HTML>".to_owned()
                } else {
                    format!("<HTML><Body><P> The thumbprint (hash value) for the CA certificate is: <B> 1234 </B> <P> The enrollment challenge password is: <B> {challenge} </B><P> This password can be used only once</Body></HTML>")
                };
                let mut body = vec![0xFF, 0xFE];
                body.extend(page.encode_utf16().flat_map(|u| u.to_le_bytes()));
                (axum::http::StatusCode::OK, body)
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://CORP%5Cndes-svc:svc-pw@{addr}/certsrv/mscep_admin/"), hits, full)
}
