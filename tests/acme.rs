//! ACME against a real ACME server: Debian's `pebble` (Let's Encrypt's test
//! CA), started here on loopback. mdmd answers its HTTP-01 challenges,
//! serves the certificate it issues without a restart, keeps it across
//! restarts, renews on request, and the enrollment profile then installs no
//! root of ours: a device that trusts only Pebble's root enrolls.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use openssl::x509::X509;

struct Pebble {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
    directory: String,
    /// Pebble's own HTTPS certificate (for its directory).
    tls_ca: std::path::PathBuf,
    /// The root Pebble issues under.
    root: Vec<u8>,
}

/// Pebble on free loopback ports, validating HTTP-01 on `http_port`.
async fn pebble(http_port: u16) -> Pebble {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pebble",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        dir.path(),
    );
    let (acme_port, mgmt_port) = (free_port(), free_port());
    let cfg = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": dir.path().join("cert.pem"),
        "privateKey": dir.path().join("key.pem"),
        "httpPort": http_port,
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.path().join("pebble.json"), cfg.to_string()).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.path().join("pebble.json"))
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (apt-get install pebble)");
    let tls_ca = dir.path().join("cert.pem");
    let client = mdmd::sim::http_client_trusting(Some(&std::fs::read(&tls_ca).unwrap())).unwrap();
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(&directory).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "pebble did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root = client
        .get(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert!(X509::from_pem(&root).is_ok(), "Pebble's root");
    Pebble {
        _child: KillOnDrop(child),
        _dir: dir,
        directory,
        tls_ca,
        root,
    }
}

/// The certificate the server presents to a new connection.
fn served_cert(addr: &str) -> X509 {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let s = b
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("localhost", tcp)
        .unwrap();
    s.ssl().peer_certificate().unwrap()
}

fn issuer_cn(c: &X509) -> String {
    c.issuer_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

/// Wait until the server presents a certificate from Pebble.
async fn wait_for_pebble_cert(addr: &str) -> X509 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let a = addr.to_owned();
        let c = tokio::task::spawn_blocking(move || served_cert(&a)).await.unwrap();
        if issuer_cn(&c).starts_with("Pebble Intermediate") {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from Pebble; served issuer {:?}",
            issuer_cn(&c)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificate_from_pebble_enrolls_devices_without_our_root() {
    let http_port = free_port();
    let peb = pebble(http_port).await;
    let listen = format!("127.0.0.1:{http_port}");
    let mut srv = Server::start_with(&[
        "--acme-domain",
        "localhost",
        "--acme-directory",
        &peb.directory,
        "--acme-root",
        peb.tls_ca.to_str().unwrap(),
        "--acme-http-listen",
        &listen,
        "--acme-email",
        "it@example.org",
        "--enroll-flow",
        "single",
    ]);
    let cert = wait_for_pebble_cert(&srv.addr).await;
    let first_serial = serial_hex(&cert);

    // A client that trusts Pebble's root and nothing of ours: the chain verifies.
    let public = mdmd::sim::http_client_trusting(Some(&peb.root)).unwrap();
    let admin = mdmd::sim::load::Admin::new(&srv.base.replace("127.0.0.1", "localhost"), API_KEY, public.clone());
    let st = admin.get("/v1/acme").await.unwrap();
    assert_eq!(
        st["certificate"]["serial"].as_str().unwrap().to_lowercase(),
        first_serial.to_lowercase(),
        "{st}"
    );
    assert_eq!(st["domains"], serde_json::json!(["localhost"]));
    assert!(st["last_error"].is_null(), "{st}");
    let health = admin.get("/v1/health").await.unwrap();
    assert!(
        !health["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("ACME")),
        "{health}"
    );
    // The account key and the certificate key are not lying around in the clear.
    let key_mode = std::fs::metadata(srv.certs_dir().join("acme.key")).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o077, 0);

    // The challenge port answers challenges only, and sends people to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain.get(format!("http://{listen}/mdm/enroll")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("https://localhost:"));
    let r = plain
        .get(format!("http://{listen}/.well-known/acme-challenge/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The enrollment profile installs no root of ours; a device trusting only
    // the public root enrolls and answers a command.
    let url = format!("{}/mdm/enroll", srv.base.replace("127.0.0.1", "localhost"));
    let der = mdmd::sim::download_profile(&public, &url, Some(ENROLL_USER)).await.unwrap();
    let (top, _) = mdmd::sim::pki::open_profile(&der, None, None).unwrap();
    let types: Vec<String> = top["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_dictionary().unwrap()["PayloadType"].as_string().unwrap().to_owned())
        .collect();
    assert!(!types.iter().any(|t| t == "com.apple.security.root"), "{types:?}");
    assert!(types.iter().any(|t| t == "com.apple.mdm"), "{types:?}");
    let mut d = mdmd::sim::SimDevice::from_profile(public.clone(), &der, Some(pool_key()))
        .await
        .unwrap();
    d.enroll().await.unwrap();
    let uuid = enqueue(
        &admin,
        &[&d.udid],
        serde_json::json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}),
    )
    .await;
    d.session().await.unwrap();
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{c}");

    // Renewal on request: a new certificate, served without a restart.
    let renewed = admin.post("/v1/acme/renew", serde_json::json!({})).await.unwrap();
    let new_serial = renewed["certificate"]["serial"].as_str().unwrap().to_owned();
    assert_ne!(new_serial.to_lowercase(), first_serial.to_lowercase());
    let a = srv.addr.clone();
    let served = tokio::task::spawn_blocking(move || served_cert(&a)).await.unwrap();
    assert_eq!(serial_hex(&served).to_lowercase(), new_serial.to_lowercase());
    // The enrolled device keeps working over the new certificate.
    let uuid = enqueue(&admin, &[&d.udid], serde_json::json!({"RequestType": "ProfileList"})).await;
    d.session().await.unwrap();
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{c}");

    // A restart serves the stored certificate at once, without a new order.
    srv.restart();
    let a = srv.addr.clone();
    let served = tokio::task::spawn_blocking(move || served_cert(&a)).await.unwrap();
    assert_eq!(serial_hex(&served).to_lowercase(), new_serial.to_lowercase());
    let admin = mdmd::sim::load::Admin::new(&srv.base.replace("127.0.0.1", "localhost"), API_KEY, public.clone());
    let st = admin.get("/v1/acme").await.unwrap();
    assert!(st["last_attempt"].is_null(), "no new order after a restart: {st}");
    drop(peb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_ca_unreachable_serves_our_certificate_and_warns() {
    let dead = free_port();
    let srv = Server::start_with(&[
        "--acme-domain",
        "localhost",
        "--acme-directory",
        &format!("https://127.0.0.1:{dead}/dir"),
        "--acme-http-listen",
        "off",
        "--enroll-flow",
        "single",
    ]);
    // Our own certificate meanwhile: the usual client (trusting our CA) works.
    let admin = srv.admin();
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = admin.get("/v1/acme").await.unwrap();
        if !st["last_error"].is_null() {
            break st;
        }
        assert!(Instant::now() < deadline, "no ACME attempt recorded: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(st["certificate"].is_null(), "{st}");
    assert!(st["next_attempt"].as_i64().unwrap() > 0, "a retry is scheduled: {st}");
    let health = admin.get("/v1/health").await.unwrap();
    assert!(
        health["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("ACME")),
        "{health}"
    );
    // The enrollment profile still carries our root (our certificate is served).
    let der = srv.profile().await;
    let (top, _) = mdmd::sim::pki::open_profile(&der, None, None).unwrap();
    assert!(top["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_dictionary().unwrap()["PayloadType"].as_string() == Some("com.apple.security.root")));
    // Renewal on request reports the CA's failure plainly.
    let r = srv
        .client()
        .post(format!("{}/v1/acme/renew", srv.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
}
