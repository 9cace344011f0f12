//! PKI and enrollment end to end: the signed profile, SCEP with our own
//! client and Debian's `scepclient`, device identity on every request,
//! revocation, renewal.

mod common;

use std::process::Command;

use common::{enqueue, Server};
use mdmd::sim::pki::SimIdentity;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use serde_json::json;

fn ca_pem(srv: &Server) -> std::path::PathBuf {
    srv.certs_dir().join("ca.pem")
}

#[tokio::test]
async fn enrollment_profile_is_signed_complete_and_guarded() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    let client = srv.client();
    let url = format!("{}/mdm/enroll", srv.base);
    // Not open to the world.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = client.get(&url).basic_auth("tester", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let der = srv.profile().await;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("enroll.mobileconfig");
    std::fs::write(&f, &der).unwrap();
    // Verifiable with the openssl CLI against the CA.
    let out = Command::new("openssl")
        .args(["smime", "-verify", "-inform", "der", "-in"])
        .arg(&f)
        .arg("-CAfile")
        .arg(ca_pem(&srv))
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl smime -verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profile = plist::Value::from_reader(std::io::Cursor::new(&out.stdout)).unwrap();
    let top = profile.as_dictionary().unwrap();
    let payloads = top.get("PayloadContent").unwrap().as_array().unwrap();
    let get = |t: &str| {
        payloads
            .iter()
            .map(|p| p.as_dictionary().unwrap())
            .find(|p| p.get("PayloadType").unwrap().as_string() == Some(t))
            .unwrap()
            .clone()
    };
    let root = get("com.apple.security.root");
    assert_eq!(
        root.get("PayloadContent").unwrap().as_data().unwrap(),
        X509::from_pem(&std::fs::read(ca_pem(&srv)).unwrap()).unwrap().to_der().unwrap()
    );
    let scep = get("com.apple.security.scep");
    let sc = scep.get("PayloadContent").unwrap().as_dictionary().unwrap();
    assert_eq!(sc.get("Keysize").unwrap().as_signed_integer(), Some(2048));
    assert_eq!(sc.get("Key Type").unwrap().as_string(), Some("RSA"));
    assert!(sc.get("URL").unwrap().as_string().unwrap().ends_with("/scep"));
    assert!(sc.get("Challenge").unwrap().as_string().unwrap().len() >= 20);
    let mdm = get("com.apple.mdm");
    assert_eq!(mdm.get("IdentityCertificateUUID"), scep.get("PayloadUUID"));
    assert_eq!(mdm.get("SignMessage"), Some(&true.into()));
    assert_eq!(mdm.get("CheckOutWhenRemoved"), Some(&true.into()));
    assert_eq!(mdm.get("AccessRights").unwrap().as_signed_integer(), Some(8191));
    assert_eq!(mdm.get("Topic").unwrap().as_string(), Some(srv.topic().await.as_str()));
    assert!(mdm.get("ServerCapabilities").unwrap().as_array().is_some());
    // Two downloads, two different single-use challenges.
    let p2 = mdmd::sim::pki::read_profile(&srv.profile().await).unwrap();
    let p1 = mdmd::sim::pki::read_profile(&der).unwrap();
    assert_ne!(p1.challenge, p2.challenge);
    assert_ne!(p1.subject, p2.subject, "a unique subject per profile");

    // Invitations: single use, with a QR code.
    let inv = srv
        .admin()
        .post("/v1/enrollments/invitations", json!({"expires_in": 3600}))
        .await
        .unwrap();
    let inv_url = inv["url"].as_str().unwrap().replace("https://localhost:", "https://127.0.0.1:");
    assert!(inv["qr_svg"].as_str().unwrap().contains("<svg"));
    assert!(inv["qr_png_base64"].as_str().unwrap().starts_with("iVBORw0KGgo"), "PNG signature");
    assert!(mdmd::sim::download_profile(&client, &inv_url, None).await.is_ok());
    let again = client.get(&inv_url).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 403, "an invitation works once");
    let bogus = client.get(format!("{}/mdm/enroll?invite=nope", srv.base)).send().await.unwrap();
    assert_eq!(bogus.status().as_u16(), 403);
}

#[tokio::test]
async fn scep_challenges_are_single_use_and_refusals_are_certreps() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    let client = srv.client();
    let p = mdmd::sim::pki::read_profile(&srv.profile().await).unwrap();
    let key = common::pool_key();
    let subject = vec![("CN".to_owned(), "dev".to_owned())];
    let first = mdmd::sim::pki::scep_enroll(&client, &p.scep_url, p.ca.as_ref(), key.clone(), &subject, Some(&p.challenge), None)
        .await
        .unwrap();
    assert!(first.is_ok());
    let reused = mdmd::sim::pki::scep_enroll(&client, &p.scep_url, p.ca.as_ref(), key.clone(), &subject, Some(&p.challenge), None)
        .await
        .unwrap();
    assert_eq!(
        reused.err().as_deref(),
        Some("pkiStatus 2, failInfo 2"),
        "reused challenge: FAILURE badRequest"
    );
    let wrong = mdmd::sim::pki::scep_enroll(&client, &p.scep_url, p.ca.as_ref(), key.clone(), &subject, Some("guess"), None)
        .await
        .unwrap();
    assert_eq!(wrong.err().as_deref(), Some("pkiStatus 2, failInfo 2"));
    let none = mdmd::sim::pki::scep_enroll(&client, &p.scep_url, p.ca.as_ref(), key, &subject, None, None)
        .await
        .unwrap();
    assert!(none.is_err());
    // Unreadable messages: HTTP 400, not 500.
    let r = client
        .post(format!("{}?operation=PKIOperation", p.scep_url))
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client
        .get(format!("{}?operation=PKIOperation&message=%%%", p.scep_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let caps = client
        .get(format!("{}?operation=GetCACaps", p.scep_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for c in ["POSTPKIOperation", "SHA-256", "AES", "SCEPStandard", "Renewal"] {
        assert!(caps.lines().any(|l| l == c), "{c} in {caps:?}");
    }
    // Issued certificates are recorded.
    let certs = srv.admin().get("/v1/certificates").await.unwrap();
    assert_eq!(certs["certificates"].as_array().unwrap().len(), 1);
}

fn scepclient() -> &'static str {
    let found = Command::new("sh")
        .arg("-c")
        .arg("command -v scepclient")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "Debian's `scep` package (scepclient) is required: apt-get install scep (.ci/run does)"
    );
    "scepclient"
}

#[tokio::test]
async fn debian_scepclient_obtains_and_renews_a_certificate() {
    let srv = Server::start_with(&["--scep-challenge", "static-secret-for-scepclient"]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/scep", srv.base);
    // Our CA is ECDSA, so GetCACert answers an RSA RA beside it; scepclient
    // would encrypt to every certificate given, so it is told the RA's
    // fingerprint, as with NDES (which also answers RA certificates).
    let ra = X509::from_pem(&std::fs::read(srv.certs_dir().join("ra.pem")).unwrap()).unwrap();
    let ra_fingerprint = mdmd::pki::cert_sha256(&ra.to_der().unwrap());
    // scepclient keeps its CSR (csr.pem) and transient certificate beside the key.
    let run_in = |dir: &std::path::Path, challenge: &str| {
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        Command::new(scepclient())
            .args([
                "-server-url",
                &url,
                "-challenge",
                challenge,
                "-cn",
                "scepclient-device",
                "-organization",
                "mdmd-test",
                "-ca-fingerprint",
                &ra_fingerprint,
            ])
            .arg("-private-key")
            .arg(&key)
            .arg("-certificate")
            .arg(&cert)
            .env("SSL_CERT_FILE", ca_pem(&srv))
            .output()
            .expect("scepclient")
    };
    let run = |challenge: &str| run_in(dir.path(), challenge);
    let cert = dir.path().join("cert.pem");
    let out = run("static-secret-for-scepclient");
    assert!(
        out.status.success(),
        "scepclient: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca_pem(&srv))
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let first = std::fs::read(&cert).unwrap();
    // Renewal: with the key and certificate in place, scepclient sends a RenewalReq signed by the old certificate.
    let out = run("");
    assert!(
        out.status.success(),
        "renewal: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let second = std::fs::read(&cert).unwrap();
    assert_ne!(first, second, "a new certificate was issued");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca_pem(&srv))
        .arg(&cert)
        .output()
        .unwrap();
    assert!(verify.status.success());
    let certs = srv.admin().get("/v1/certificates").await.unwrap();
    assert_eq!(certs["certificates"].as_array().unwrap().len(), 2);
    // A wrong challenge is refused (scepclient fails on the FAILURE CertRep).
    let fresh = tempfile::tempdir().unwrap();
    let out = run_in(fresh.path(), "wrong");
    assert!(
        !out.status.success(),
        "wrong challenge accepted: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An identity our CA never issued (self-signed), or one issued but expired.
fn forged_identity(ca: Option<(&X509, &PKey<openssl::pkey::Private>)>, expired: bool) -> SimIdentity {
    let key = common::pool_key();
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", "forged").unwrap();
    let n = n.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&*mdmd::pki::ca::random_serial().unwrap()).unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = mdmd::clock::now();
    let (nb, na) = if expired {
        (now - 10 * 86400, now - 86400)
    } else {
        (now - 3600, now + 86400)
    };
    b.set_not_before(&*Asn1Time::from_unix(nb).unwrap()).unwrap();
    b.set_not_after(&*Asn1Time::from_unix(na).unwrap()).unwrap();
    match ca {
        Some((c, k)) => {
            b.set_issuer_name(c.subject_name()).unwrap();
            b.sign(k, MessageDigest::sha256()).unwrap();
        }
        None => {
            b.set_issuer_name(&n).unwrap();
            b.sign(&key, MessageDigest::sha256()).unwrap();
        }
    }
    SimIdentity { key, cert: b.build() }
}

#[tokio::test]
async fn every_request_is_tied_to_the_device_identity() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    let mut b = srv.device().await;
    a.enroll().await.unwrap();
    b.enroll().await.unwrap();
    let cmd_b = enqueue(&admin, &[&b.udid], json!({"RequestType": "ProfileList"})).await;
    let idle_a = mdmd::protocol::to_xml(&a.idle_report());
    let mut idle_b_dict = a.idle_report();
    idle_b_dict.insert("UDID".into(), b.udid.clone().into());
    let idle_b = mdmd::protocol::to_xml(&idle_b_dict);
    let ia = a.identity.clone().unwrap();

    // No identity at all.
    let (s, _) = a.put_signed("/mdm/connect", "x", idle_a.clone(), None).await.unwrap();
    assert_eq!(s, 403);
    // A tampered body: the signature no longer matches.
    let sig = ia.sign(&idle_a).unwrap();
    let mut tampered = idle_a.clone();
    let at = tampered.len() - 20;
    tampered[at] ^= 1;
    let (s, _) = a.put_signed("/mdm/connect", "x", tampered, Some(&sig)).await.unwrap();
    assert_eq!(s, 400);
    // A signature that is not base64 / not CMS.
    let (s, _) = a.put_signed("/mdm/connect", "x", idle_a.clone(), Some("@@@")).await.unwrap();
    assert_eq!(s, 400);
    // A certificate from another CA.
    let other = forged_identity(None, false);
    let (s, _) = a
        .put_signed("/mdm/connect", "x", idle_a.clone(), Some(&other.sign(&idle_a).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403);
    // A's certificate with B's UDID: refused, and B's command is untouched.
    let (s, body) = a
        .put_signed("/mdm/connect", "x", idle_b.clone(), Some(&ia.sign(&idle_b).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    let mut ack = idle_b_dict.clone();
    ack.insert("Status".into(), "Acknowledged".into());
    ack.insert("CommandUUID".into(), cmd_b.clone().into());
    let ack = mdmd::protocol::to_xml(&ack);
    let (s, _) = a
        .put_signed("/mdm/connect", "x", ack.clone(), Some(&ia.sign(&ack).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403);
    let mut co = b.authenticate_message();
    co.insert("MessageType".into(), "CheckOut".into());
    let co = mdmd::protocol::to_xml(&co);
    let (s, _) = a
        .put_signed("/mdm/checkin", "x", co.clone(), Some(&ia.sign(&co).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403, "A cannot check B out");
    // A's certificate cannot re-Authenticate as B (it is bound to A).
    let auth_b = mdmd::protocol::to_xml(&b.authenticate_message());
    let (s, _) = a
        .put_signed("/mdm/checkin", "x", auth_b.clone(), Some(&ia.sign(&auth_b).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403);
    assert_eq!(
        admin.get(&format!("/v1/commands/{cmd_b}")).await.unwrap()["deliveries"][0]["status"],
        "Pending"
    );
    assert_eq!(admin.get(&format!("/v1/devices/{}", b.udid)).await.unwrap()["checked_out"], false);
    assert_eq!(b.session().await.unwrap().len(), 1);

    // An expired identity issued by our own CA.
    let ca = X509::from_pem(&std::fs::read(ca_pem(&srv)).unwrap()).unwrap();
    let ca_key = PKey::private_key_from_pem(&std::fs::read(srv.certs_dir().join("ca.key")).unwrap()).unwrap();
    let expired = forged_identity(Some((&ca, &ca_key)), true);
    let (s, _) = a
        .put_signed("/mdm/connect", "x", idle_a.clone(), Some(&expired.sign(&idle_a).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403);

    // Revocation: A is refused from then on.
    assert!(a.session().await.unwrap().is_empty());
    let serial = common::serial_hex(&ia.cert);
    let c = admin.get(&format!("/v1/certificates/{serial}")).await.unwrap();
    assert_eq!(c["enrollment"], a.udid, "the certificate is recorded with its enrollment");
    admin.post(&format!("/v1/certificates/{serial}/revoke"), json!({})).await.unwrap();
    let (s, _) = a.put_raw("/mdm/connect", "x", idle_a.clone()).await.unwrap();
    assert_eq!(s, 403);
    // Never 401 to a device in any of the above.
}

#[tokio::test]
async fn tls_client_certificate_identifies_the_device_without_a_signature() {
    let srv = Server::start();
    let a = srv.device().await;
    a.enroll().await.unwrap();
    let ident = a.identity.clone().unwrap();
    let tls_identity =
        reqwest::Identity::from_pkcs8_pem(&ident.cert.to_pem().unwrap(), &ident.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let ca = std::fs::read(ca_pem(&srv)).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(tls_identity)
        .build()
        .unwrap();
    let body = mdmd::protocol::to_xml(&a.idle_report());
    let r = client
        .put(format!("{}/mdm/connect", srv.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The same client certificate with another UDID is refused.
    let mut other = a.idle_report();
    other.insert("UDID".into(), "00008101-0000000000000000".into());
    let r = client
        .put(format!("{}/mdm/connect", srv.base))
        .body(mdmd::protocol::to_xml(&other))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 403));
}

#[tokio::test]
async fn plain_http_behind_a_proxy_takes_the_client_cert_header() {
    let srv = Server::start_with(&["--plain-http"]);
    assert!(srv.base.starts_with("http://"));
    let a = srv.device().await;
    a.enroll().await.unwrap(); // signed messages work over plain HTTP too
    let ident = a.identity.clone().unwrap();
    use base64::Engine as _;
    let header = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(ident.cert.to_der().unwrap())
    );
    let body = mdmd::protocol::to_xml(&a.idle_report());
    let r = srv
        .client()
        .put(format!("{}/mdm/connect", srv.base))
        .header("Client-Cert", &header)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = srv
        .client()
        .put(format!("{}/mdm/connect", srv.base))
        .header("Client-Cert", ":bm90IGEgY2VydA==:")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn identity_renewal_keeps_the_enrollment_and_its_queue() {
    // Identities valid 30 days, renewed 60 days ahead: due at once.
    let srv = Server::start_with(&["--identity-days", "30", "--renew-before-days", "60"]);
    let admin = srv.admin();
    let mut a = srv.device().await;
    a.enroll().await.unwrap();
    let old = a.identity.clone().unwrap();
    let old_hash = mdmd::pki::cert_sha256(&old.cert.to_der().unwrap());
    let v = admin.post("/v1/identities/renew", json!({})).await.unwrap();
    assert_eq!(v["renewal_requested"], json!([a.udid]));
    // The renewal profile carries a fresh SCEP challenge: encrypted to the device.
    let cmds = admin.get(&format!("/v1/devices/{}/commands", a.udid)).await.unwrap();
    let renewal = cmds["commands"][0]["command_uuid"].as_str().unwrap().to_owned();
    let c = admin.get(&format!("/v1/commands/{renewal}")).await.unwrap();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(c["command"]["Payload"].as_str().unwrap())
        .unwrap();
    let top: plist::Dictionary = plist::from_bytes(&mdmd::profiles::signed_content(&der).unwrap()).unwrap();
    assert!(top.contains_key("EncryptedPayloadContent") && !top.contains_key("PayloadContent"));
    let queued_after = enqueue(&admin, &[&a.udid], json!({"RequestType": "SecurityInfo"})).await;
    // Asked once: a second sweep does not queue another renewal.
    assert_eq!(
        admin.post("/v1/identities/renew", json!({})).await.unwrap()["renewal_requested"],
        json!([])
    );

    let handled = a.session().await.unwrap();
    assert_eq!(a.renewals, 1);
    let types: Vec<&str> = handled.iter().map(|h| h.request_type.as_str()).collect();
    assert_eq!(
        types,
        vec!["InstallProfile", "SecurityInfo"],
        "the queue survives the renewal's Authenticate"
    );
    let c = admin.get(&format!("/v1/commands/{queued_after}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Acknowledged");
    let dev = admin.get(&format!("/v1/devices/{}", a.udid)).await.unwrap();
    assert_eq!(dev["active"], true);
    assert_ne!(dev["identity_certificate_sha256"].as_str().unwrap(), old_hash);
    // The old identity no longer speaks for the device.
    let idle = mdmd::protocol::to_xml(&a.idle_report());
    let (s, _) = a
        .put_signed("/mdm/connect", "x", idle.clone(), Some(&old.sign(&idle).unwrap()))
        .await
        .unwrap();
    assert_eq!(s, 403);
    assert!(a.session().await.unwrap().is_empty());
}

#[tokio::test]
async fn ca_show_and_enroll_profile_commands() {
    let srv = Server::start();
    let bin = env!("CARGO_BIN_EXE_mdmd");
    let base = ["--server", &srv.base, "--api-key", common::API_KEY];
    let out = Command::new(bin)
        .args(["ca", "show"])
        .args(base)
        .arg("--trust-ca")
        .arg(ca_pem(&srv))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["ca", "tls", "signer"] {
        assert!(v[k]["not_after"].as_str().is_some_and(|s| !s.is_empty()), "{k}: {v}");
    }
    let out = Command::new(bin)
        .args(["enroll-profile"])
        .args(base)
        .arg("--trust-ca")
        .arg(ca_pem(&srv))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(mdmd::sim::pki::read_profile(&out.stdout).is_ok());
    let out = Command::new(bin)
        .args(["devices"])
        .args(base)
        .arg("--trust-ca")
        .arg(ca_pem(&srv))
        .output()
        .unwrap();
    assert!(out.status.success());
    // Keys on disk are 0600.
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![
        srv.certs_dir().join("ca.key"),
        srv.certs_dir().join("tls.key"),
        srv.certs_dir().join("signer.key"),
        srv.certs_dir().join("access-jwt-key.pem"),
    ];
    if !common::on_postgres() {
        files.push(srv.data_dir().join("mdmd.redb"));
    }
    for f in files {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}

#[tokio::test]
async fn an_admin_supplied_ca_and_tls_certificate_are_used() {
    // An existing CA and a TLS certificate made with the openssl CLI.
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let sh = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("myca.key"),
        "-out",
        &p("myca.pem"),
        "-days",
        "30",
        "-subj",
        "/O=Example Corp/CN=Example Corp MDM CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("tls.key"),
        "-out",
        &p("tls.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        &p("tls.csr"),
        "-CA",
        &p("myca.pem"),
        "-CAkey",
        &p("myca.key"),
        "-CAcreateserial",
        "-out",
        &p("tls.pem"),
        "-days",
        "30",
        "-extfile",
        &p("ext.cnf"),
    ]);
    let srv = Server::start_with(&[
        "--enroll-flow",
        "single",
        "--ca-cert",
        &p("myca.pem"),
        "--ca-key",
        &p("myca.key"),
        "--tls-cert",
        &p("tls.pem"),
        "--tls-key",
        &p("tls.key"),
    ]);
    // The server's CA file is not ours any more: trust the supplied one.
    let client = mdmd::sim::http_client_trusting(Some(&std::fs::read(p("myca.pem")).unwrap())).unwrap();
    let der = mdmd::sim::download_profile(&client, &format!("{}/mdm/enroll", srv.base), Some(common::ENROLL_USER))
        .await
        .unwrap();
    let profile = mdmd::sim::pki::read_profile(&der).unwrap();
    assert_eq!(
        profile.ca.as_ref().unwrap().to_pem().unwrap(),
        X509::from_pem(&std::fs::read(p("myca.pem")).unwrap()).unwrap().to_pem().unwrap()
    );
    let mut dev = mdmd::sim::SimDevice::from_profile(client.clone(), &der, Some(common::pool_key()))
        .await
        .unwrap();
    dev.enroll().await.unwrap();
    assert!(dev.session().await.unwrap().is_empty());
    let issued = dir.path().join("device.pem");
    std::fs::write(&issued, dev.identity.as_ref().unwrap().cert.to_pem().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", &p("myca.pem")])
        .arg(&issued)
        .output()
        .unwrap();
    assert!(out.status.success(), "device identity chains to the supplied CA");
}

/// A failed signature check can leave entries on OpenSSL's per-thread
/// error queue; the listener must not mistake them for a TLS failure of
/// whatever connection that worker thread reads next. SCEP requests whose
/// CSR signature is broken, and bad Mdm-Signatures, interleaved with good
/// requests on kept-alive connections: every good one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_signature_checks_never_break_other_connections() {
    let srv = Server::start();
    let a = srv.enrolled().await;
    let b = srv.enrolled().await;
    let ia = a.identity.clone().unwrap();
    let other = forged_identity(None, false);
    let idle_a = mdmd::protocol::to_xml(&a.idle_report());
    let mut tampered = idle_a.clone();
    let at = tampered.len() - 20;
    tampered[at] ^= 1;
    let sig = ia.sign(&idle_a).unwrap();
    let forged = other.sign(&idle_a).unwrap();
    // A SCEP request whose CSR self-signature is broken (last byte flipped).
    let ca = mdmd::sim::pki::get_scep_certs(&srv.client(), &format!("{}/scep", srv.base)).await.unwrap().recipient;
    let key = common::pool_key();
    let subject = vec![("CN".to_owned(), "broken csr".to_owned())];
    let mut csr = mdmd::sim::pki::csr(&key, &subject, Some("whatever")).unwrap();
    let last = csr.len() - 1;
    csr[last] ^= 0x55;
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", "broken csr").unwrap();
    let signer = mdmd::sim::pki::self_signed(&key, &n.build()).unwrap();
    let (msg, _, _) = mdmd::pki::scep::client_request(&ca, &signer, &key, &csr, false, openssl::symm::Cipher::aes_128_cbc()).unwrap();
    let client = srv.client();
    for i in 0..30 {
        let r = client
            .post(format!("{}/scep?operation=PKIOperation", srv.base))
            .header("content-type", "application/x-pki-message")
            .body(msg.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e:#}"));
        assert!(r.status().is_success(), "round {i}: a CertRep (FAILURE) is still an answer");
        let (s, _) = a.put_signed("/mdm/connect", "x", tampered.clone(), Some(&sig)).await.unwrap();
        assert_eq!(s, 400, "round {i}");
        let (s, _) = a.put_signed("/mdm/connect", "x", idle_a.clone(), Some(&forged)).await.unwrap();
        assert_eq!(s, 403, "round {i}");
        // Both devices' connections still work.
        b.connect(&b.idle_report()).await.unwrap_or_else(|e| panic!("round {i}: {e:#}"));
        a.connect(&a.idle_report()).await.unwrap_or_else(|e| panic!("round {i}: {e:#}"));
        client
            .get(format!("{}/healthz", srv.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {i}: {e:#}"));
    }
}

/// Clients that differ from ours: a DES (and a 3DES) SCEP envelope, and
/// SHA-1 Mdm-Signatures, enroll and work end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn des_envelopes_and_sha1_signatures_are_accepted() {
    use mdmd::sim::pki::{ClientStyle, Envelope, STYLE};
    let srv = Server::start();
    for envelope in [Envelope::Des, Envelope::Des3] {
        let style = ClientStyle {
            envelope,
            sha1_signatures: true,
        };
        let srv = &srv;
        STYLE
            .scope(style, async move {
                let mut d = srv.device().await;
                d.enroll().await.unwrap();
                let uuid = enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
                d.session().await.unwrap();
                let c = srv.admin().get(&format!("/v1/commands/{uuid}")).await.unwrap();
                assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{envelope:?}: {c}");
                // The signature really is SHA-1 (digestAlgorithm 1.3.14.3.2.26).
                let body = mdmd::protocol::to_xml(&d.idle_report());
                let sig = d.identity.as_ref().unwrap().sign_sha1(&body).unwrap();
                let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, sig).unwrap();
                let sha1_oid = [0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
                assert!(der.windows(sha1_oid.len()).any(|w| w == sha1_oid));
            })
            .await;
    }
}

/// An installation whose CA is RSA (made before CAs were ECDSA, or supplied
/// so) opts in with `mdmd ca ec-issuing`: new identities come from an ECDSA
/// issuing CA under the same root, the profile signer becomes ECDSA, and
/// devices enrolled before keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rsa_installation_opts_into_an_ecdsa_issuing_ca() {
    let mut srv = Server::start();
    srv.kill9();
    let certs = srv.certs_dir();
    for f in ["ca", "ra", "tls", "signer"] {
        for ext in ["pem", "key"] {
            let _ = std::fs::remove_file(certs.join(format!("{f}.{ext}")));
        }
    }
    let p = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let sh = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // The RSA CA and RSA profile signer an older mdmd made.
    sh(&[
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &p("ca.key"), "-out", &p("ca.pem"), "-days", "3650",
        "-subj", "/O=Old Org/CN=Old Org MDM CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature,keyEncipherment",
    ]);
    sh(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &p("signer.key"), "-out", &p("signer.csr"), "-subj", "/O=Old Org/CN=Old Org profile signing"]);
    std::fs::write(p("signer.cnf"), "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n").unwrap();
    sh(&[
        "x509", "-req", "-in", &p("signer.csr"), "-CA", &p("ca.pem"), "-CAkey", &p("ca.key"), "-CAcreateserial", "-days", "700",
        "-extfile", &p("signer.cnf"), "-out", &p("signer.pem"),
    ]);
    srv.restart();
    let key_of = |f: &str| {
        openssl::pkey::PKey::private_key_from_pem(&std::fs::read(certs.join(f)).unwrap())
            .unwrap()
            .id()
    };
    assert_eq!(key_of("signer.key"), openssl::pkey::Id::RSA, "an older installation's signer is kept");
    assert!(!certs.join("ra.pem").exists(), "an RSA CA is its own SCEP recipient");
    let old = srv.enrolled().await;
    let old_id = old.identity.clone().unwrap();
    let sig_alg = |c: &X509| c.signature_algorithm().object().nid();
    assert_eq!(sig_alg(&old_id.cert), openssl::nid::Nid::SHA256WITHRSAENCRYPTION);

    // Opt in, with the server stopped.
    srv.kill9();
    let dir = certs.to_string_lossy().into_owned();
    let (ok, out, err) = common::mdmd(&["ca", "ec-issuing", "--certs-dir", &dir]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("issuing.pem"), "{out}");
    let (again, _, err) = common::mdmd(&["ca", "ec-issuing", "--certs-dir", &dir]);
    assert!(!again && err.contains("exists already"), "{err}");
    srv.restart();
    assert_eq!(key_of("signer.key"), openssl::pkey::Id::EC, "the profile signer is re-issued as ECDSA");
    assert_eq!(key_of("issuing.key"), openssl::pkey::Id::EC);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(certs.join("issuing.key")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // A new device: its identity is ECDSA-signed by the issuing CA and chains to the same root.
    let mut new = srv.enrolled().await;
    let id = new.identity.clone().unwrap();
    assert_eq!(sig_alg(&id.cert), openssl::nid::Nid::ECDSA_WITH_SHA256);
    let issuing = X509::from_pem(&std::fs::read(certs.join("issuing.pem")).unwrap()).unwrap();
    assert_eq!(id.cert.issuer_name().to_der().unwrap(), issuing.subject_name().to_der().unwrap());
    std::fs::write(p("new.pem"), id.cert.to_pem().unwrap()).unwrap();
    sh(&["verify", "-CAfile", &p("ca.pem"), "-untrusted", &p("issuing.pem"), &p("new.pem")]);
    // Both devices are accepted as themselves and answer a command.
    enqueue(&srv.admin(), &[&old.id(), &new.id()], json!({"RequestType": "ProfileList"})).await;
    let mut old = old;
    for d in [&mut old, &mut new] {
        let handled = d.session().await.unwrap();
        assert_eq!(handled.len(), 1, "one command answered");
    }
    // An identity signed by a different EC key with the issuing CA's name is refused.
    let forger = mdmd::pki::ca::new_p256().unwrap();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&*mdmd::pki::ca::random_serial().unwrap()).unwrap();
    b.set_subject_name(id.cert.subject_name()).unwrap();
    b.set_issuer_name(issuing.subject_name()).unwrap();
    b.set_pubkey(&id.key).unwrap();
    b.set_not_before(&*openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&*openssl::asn1::Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.sign(&forger, openssl::hash::MessageDigest::sha256()).unwrap();
    new.identity = Some(SimIdentity { key: id.key.clone(), cert: b.build() });
    let r = new.connect(&new.idle_report()).await;
    assert!(r.is_err(), "a forged issuing-CA identity was accepted");
}
