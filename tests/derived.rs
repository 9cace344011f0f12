//! The organisation's own CAs and derived credentials, end to end against
//! the real server: Debian's `scepserver` (micromdm/scep) as the
//! organisation CA behind mdmd's SCEP proxy, simulated devices that run SCEP
//! through it and import PKCS#12 derived credentials, and a simulated
//! provider app that uploads with its per-device token.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::derived::{ndes_admin, post_as, scepserver, CHALLENGE};
use common::{b64, device_profile, enqueue, free_port, serial_hex, template, Server};
use openssl::x509::X509;
use serde_json::{json, Value};

fn payload(ty: &str, uuid: &str, body: &str) -> String {
    format!(
        "<dict><key>PayloadType</key><string>{ty}</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>p.{uuid}</string><key>PayloadUUID</key><string>{uuid}</string>{body}</dict>"
    )
}

fn wifi_eap_tls(uuid: &str, identity_uuid: &str) -> String {
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

/// A Wi-Fi EAP-TLS profile whose identity comes from the organisation CA `ca`.
fn org_wifi_profile(identifier: &str, ca: &str) -> Vec<u8> {
    let scep = payload(
        "com.apple.security.scep",
        "SCEP-1",
        &format!(
            "<key>PayloadContent</key><dict><key>URL</key><string>$SCEP_PROXY_URL:{ca}</string>\
<key>Challenge</key><string>$SCEP_CHALLENGE:{ca}</string><key>Keysize</key><integer>2048</integer>\
<key>Subject</key><array><array><array><string>CN</string><string>$UDID</string></array></array></array></dict>"
        ),
    );
    template(identifier, &format!("{scep}{}", wifi_eap_tls("WIFI-1", "SCEP-1")))
}

/// Mail (S/MIME signing) and Wi-Fi, both with the derived authentication credential.
fn derived_profile(identifier: &str) -> Vec<u8> {
    let p12 = payload(
        "com.apple.security.pkcs12",
        "DC-AUTH",
        "<key>PayloadContent</key><string>$DERIVED_CREDENTIAL:authentication</string>",
    );
    let mail = payload(
        "com.apple.mail.managed",
        "MAIL-1",
        "<key>EmailAccountType</key><string>EmailTypeIMAP</string>\
<key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string><key>IncomingMailServerHostName</key><string>imap.corp.example</string>\
<key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string><key>OutgoingMailServerHostName</key><string>smtp.corp.example</string>\
<key>SMIMESigningEnabled</key><true/><key>SMIMESigningCertificateUUID</key><string>DC-AUTH</string>",
    );
    template(identifier, &format!("{p12}{mail}{}", wifi_eap_tls("WIFI-2", "DC-AUTH")))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under a directory contains no `needle` (secrets at rest).
fn dir_lacks(dir: &std::path::Path, needle: &[u8]) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            dir_lacks(&p, needle);
        } else if let Ok(b) = std::fs::read(&p) {
            assert!(!contains(&b, needle), "{} holds a secret in plain", p.display());
        }
    }
}

/// The certificate of the identity a profile's payload gave the simulated device.
fn identity_of(d: &mdmd::sim::SimDevice, profile: &str, payload_uuid: &str) -> X509 {
    d.profiles[profile]
        .identities
        .iter()
        .find(|(u, _)| u == payload_uuid)
        .map(|(_, i)| i.cert.clone())
        .unwrap_or_else(|| panic!("no identity from {payload_uuid} in {profile}"))
}

/// A TCP listener that accepts and never answers (a CA that hangs).
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (format!("http://{addr}/scep"), h)
}

#[tokio::test]
async fn organisation_ca_through_the_scep_proxy() {
    let scep = scepserver().await;
    let srv = Server::start_with(&["--org-cert-renew-days", "400", "--ca-timeout", "2"]);
    let admin = srv.admin();

    // Adding a CA checks it; a bad one saves nothing.
    let closed = format!("http://127.0.0.1:{}/scep", free_port());
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/cas",
            Some(json!({"name": "corp", "scep_url": closed, "challenge": CHALLENGE})),
        )
        .await
        .unwrap();
    assert_eq!(s, 502, "{v}");
    let (hole, _h) = black_hole().await;
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/cas",
            Some(json!({"name": "corp", "scep_url": hole, "challenge": CHALLENGE})),
        )
        .await
        .unwrap();
    assert_eq!(s, 504, "{v}");
    let not_scep = format!("{}/nothing-here", scep.url.trim_end_matches("/scep"));
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/cas",
            Some(json!({"name": "corp", "scep_url": not_scep, "challenge": CHALLENGE})),
        )
        .await
        .unwrap();
    assert!(s == 502, "{s} {v}");
    for bad in [
        json!({"name": "a/b", "scep_url": scep.url, "challenge": CHALLENGE}),
        json!({"name": "corp", "scep_url": "ftp://x/", "challenge": CHALLENGE}),
        json!({"name": "corp", "scep_url": scep.url}),
        json!({"name": "corp", "scep_url": scep.url, "challenge": CHALLENGE, "challenge_url": "http://127.0.0.1:1/"}),
        json!({"name": "corp", "scep_url": scep.url, "challenge": CHALLENGE, "extra": 1}),
    ] {
        let (s, v) = admin.call(reqwest::Method::POST, "/v1/cas", Some(bad.clone())).await.unwrap();
        assert_eq!(s, 400, "{bad}: {v}");
    }
    assert_eq!(admin.get("/v1/cas").await.unwrap()["cas"], json!([]));

    // Through the CLI: the chain is shown, the challenge never again.
    let v = srv.cli_json(&["cas", "add", "corp", "--scep-url", &scep.url, "--challenge", CHALLENGE]);
    assert_eq!(v["name"], "corp");
    assert!(v["chain"][0]["subject"].as_str().unwrap().contains("Org CA Test"), "{v}");
    let (ok, out, _) = srv.cli(&["cas", "list"]);
    assert!(ok && out.contains("corp") && !out.contains(CHALLENGE), "{out}");
    let (ok, out, _) = srv.cli(&["cas", "show", "corp"]);
    assert!(ok && !out.contains(CHALLENGE), "{out}");
    let (s, _) = admin
        .call(
            reqwest::Method::POST,
            "/v1/cas",
            Some(json!({"name": "corp", "scep_url": scep.url, "challenge": CHALLENGE})),
        )
        .await
        .unwrap();
    assert_eq!(s, 409);

    // Templates: placement rules, and the CA must exist.
    let (s, v) = admin
        .call_bytes("/v1/profiles", org_wifi_profile("com.example.wifi.nope", "nope"))
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("nope"), "{v}");
    let misplaced = template(
        "com.example.misplaced",
        &payload(
            "com.apple.webClip.managed",
            "CLIP",
            "<key>URL</key><string>https://x.example/</string><key>Label</key><string>$SCEP_CHALLENGE:corp</string>",
        ),
    );
    let (s, v) = admin.call_bytes("/v1/profiles", misplaced).await.unwrap();
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin
        .call_bytes("/v1/profiles", org_wifi_profile("com.example.wifi.corp", "corp"))
        .await
        .unwrap();
    assert!(s == 200 || s == 201, "{s} {v}");

    // Install: the challenge is only inside the profile encrypted to the device.
    let mut d = srv.enrolled().await;
    let b = admin
        .post("/v1/profiles/com.example.wifi.corp/install", json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(b["queued"], 1, "{b}");
    let uuid = b["command_uuid"].as_str().unwrap().to_owned();
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert!(!c.to_string().contains(CHALLENGE));
    let payload = base64::engine::general_purpose::STANDARD
        .decode(c["command"]["Payload"].as_str().unwrap())
        .unwrap();
    assert!(
        !contains(&payload, CHALLENGE.as_bytes()),
        "the challenge is readable in the command"
    );
    if !common::on_postgres() {
        dir_lacks(&srv.data_dir(), CHALLENGE.as_bytes());
    }

    // The device runs SCEP through the proxy and gets a certificate from the organisation CA.
    let handled = d.session().await.unwrap();
    assert!(
        handled
            .iter()
            .any(|h| h.request_type == "InstallProfile" && h.status == mdmd::protocol::Status::Acknowledged),
        "{:?}",
        handled.iter().map(|h| (&h.request_type, h.status.as_str())).collect::<Vec<_>>()
    );
    let cert = identity_of(&d, "com.example.wifi.corp", "SCEP-1");
    assert!(
        cert.verify(&scep.ca.public_key().unwrap()).unwrap(),
        "not issued by the organisation CA"
    );
    assert_eq!(
        cert.subject_name().entries().next().unwrap().data().to_string().unwrap().as_str(),
        d.udid.as_str()
    );
    // mdmd asked for the CertificateList after the install, and learned the certificate.
    assert!(
        handled.iter().any(|h| h.request_type == "CertificateList"),
        "no CertificateList asked"
    );
    let certs = admin.get("/v1/cas/corp/certificates").await.unwrap();
    let list = certs["certificates"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{certs}");
    assert_eq!(list[0]["enrollment"], d.udid.as_str());
    assert_eq!(list[0]["profile"], "com.example.wifi.corp");
    let serial = serial_hex(&cert);
    assert_eq!(list[0]["serial"], serial.as_str());
    let dev = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert_eq!(dev["org_certificates"][0]["serial"], serial.as_str());

    // A used token, an unknown one and another CA's name are refused before anything is forwarded.
    let used_url = d.profiles["com.example.wifi.corp"].payloads[0]["PayloadContent"]
        .as_dictionary()
        .unwrap()["URL"]
        .as_string()
        .unwrap()
        .to_owned();
    assert!(used_url.contains("/scep-proxy/corp/"), "{used_url}");
    let used_url = used_url.replace("https://localhost:", "https://127.0.0.1:");
    let client = srv.client();
    let r = client.get(format!("{used_url}?operation=GetCACaps")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .get(format!("{}/scep-proxy/corp/{}?operation=GetCACaps", srv.base, "ab".repeat(24)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Renewal: the certificate is within the (400-day) window, so the
    // profile is re-installed with a fresh token and the device gets a new one.
    let v = admin.post("/v1/cas/renewals", json!({})).await.unwrap();
    assert_eq!(v["renewals_queued"], 1, "{v}");
    let handled = d.session().await.unwrap();
    assert!(handled.iter().any(|h| h.request_type == "InstallProfile"));
    let renewed = identity_of(&d, "com.example.wifi.corp", "SCEP-1");
    assert_ne!(renewed.serial_number().to_bn().unwrap(), cert.serial_number().to_bn().unwrap());
    let certs = admin.get("/v1/cas/corp/certificates").await.unwrap();
    assert_eq!(certs["certificates"].as_array().unwrap().len(), 2, "{certs}");
    // The old certificate is marked renewed and not renewed twice; the new one gets its own turn.
    let v = admin.post("/v1/cas/renewals", json!({})).await.unwrap();
    assert_eq!(v["renewals_queued"], 1, "the new certificate is inside the 400-day window too: {v}");
    d.session().await.unwrap();
    assert_eq!(
        admin.get("/v1/cas/corp/certificates").await.unwrap()["certificates"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A CA that hangs gives the device a 504 within the bounded time; one that is gone a 502.
    let second = scepserver().await;
    let v = srv.cli_json(&["cas", "add", "flaky", "--scep-url", &second.url, "--challenge", CHALLENGE]);
    assert_eq!(v["name"], "flaky");
    let (s, v) = admin
        .call_bytes("/v1/profiles", org_wifi_profile("com.example.wifi.flaky", "flaky"))
        .await
        .unwrap();
    assert!(s == 200 || s == 201, "{v}");
    let b = admin
        .post("/v1/profiles/com.example.wifi.flaky/install", json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(b["queued"], 1);
    let cmd = d.connect(&d.idle_report()).await.unwrap().expect("a command");
    let trust = d.profile.as_ref().and_then(|p| p.ca.clone());
    let (top, encrypted) =
        mdmd::sim::pki::open_profile(cmd.command["Payload"].as_data().unwrap(), trust.as_ref(), d.identity.as_ref()).unwrap();
    assert!(encrypted);
    let url = top["PayloadContent"].as_array().unwrap()[0].as_dictionary().unwrap()["PayloadContent"]
        .as_dictionary()
        .unwrap()["URL"]
        .as_string()
        .unwrap()
        .replace("https://localhost:", "https://127.0.0.1:");
    // The CA is gone: 502.
    drop(second);
    let r = client.get(format!("{url}?operation=GetCACaps")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    // A CA removed from mdmd: its tokens are refused.
    let (ok, _, err) = srv.cli(&["cas", "rm", "flaky"]);
    assert!(ok, "{err}");
    let r = client.get(format!("{url}?operation=GetCACaps")).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_organisation_ca_is_a_504_for_the_device() {
    // The CA answers the check, then hangs: a proxy in front of it switches to a black hole.
    let scep = scepserver().await;
    let proxy = common::pg::FaultProxy::start(scep.url.trim_start_matches("http://").trim_end_matches("/scep").to_owned()).await;
    let srv = Server::start_with(&["--ca-timeout", "2"]);
    let admin = srv.admin();
    let url = format!("http://{}/scep", proxy.addr);
    let v = srv.cli_json(&["cas", "add", "corp", "--scep-url", &url, "--challenge", CHALLENGE]);
    assert_eq!(v["name"], "corp");
    let (s, v) = admin
        .call_bytes("/v1/profiles", org_wifi_profile("com.example.wifi.corp", "corp"))
        .await
        .unwrap();
    assert!(s == 200 || s == 201, "{v}");
    let mut d = srv.enrolled().await;
    admin
        .post("/v1/profiles/com.example.wifi.corp/install", json!({"targets": [d.udid]}))
        .await
        .unwrap();
    proxy.set(common::pg::Mode::Frozen);
    let started = Instant::now();
    let handled = d.session().await.unwrap();
    // The device's SCEP failed (504 from the proxy), so the install failed; within the bound.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(
        handled
            .iter()
            .any(|h| h.request_type == "InstallProfile" && h.status == mdmd::protocol::Status::Error),
        "{:?}",
        handled.iter().map(|h| (&h.request_type, h.status.as_str())).collect::<Vec<_>>()
    );
    let p = device_profile(&srv, &d.udid, "com.example.wifi.corp").await;
    assert_eq!(p["state"], "failed", "{p}");
    assert!(p.to_string().contains("504"), "{p}");
}

#[tokio::test]
async fn derived_credentials_release_renew_and_revoke_profiles() {
    let srv = Server::start();
    let admin = srv.admin();
    let issuer = srv.account("entrust", "issuer");
    let reader = srv.account("auditor", "read-only");
    let operator = srv.account("helpdesk", "operator");
    let piv_ca = mdmd::sim::pki::test_ca("Agency PIV-D CA").unwrap();

    let (s, v) = admin.call_bytes("/v1/profiles", derived_profile("com.example.pivd")).await.unwrap();
    assert!(s == 200 || s == 201, "{s} {v}");
    // A derived credential in the wrong place, or with an unknown usage, is refused.
    for (bad, why) in [
        (
            payload(
                "com.apple.security.pkcs12",
                "X",
                "<key>PayloadContent</key><string>$DERIVED_CREDENTIAL:flying</string>",
            ),
            "flying",
        ),
        (
            payload(
                "com.apple.webClip.managed",
                "X",
                "<key>URL</key><string>https://x/</string><key>Label</key><string>$DERIVED_CREDENTIAL:signing</string>",
            ),
            "only be the whole PayloadContent",
        ),
    ] {
        let (s, v) = admin.call_bytes("/v1/profiles", template("com.example.bad", &bad)).await.unwrap();
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(why), "{v}");
    }

    // A device without the credential: the profile waits.
    let mut d1 = srv.enrolled().await;
    let b = admin
        .post("/v1/profiles/com.example.pivd/install", json!({"targets": [d1.udid]}))
        .await
        .unwrap();
    assert_eq!(b["queued"], 0, "{b}");
    assert_eq!(b["waiting"], json!([d1.udid]));
    assert_eq!(
        device_profile(&srv, &d1.udid, "com.example.pivd").await["state"],
        "waiting for derived credential"
    );
    let dev = admin.get(&format!("/v1/devices/{}", d1.udid)).await.unwrap();
    assert_eq!(dev["waiting_for_derived_credential"][0]["profile"], "com.example.pivd");
    assert!(d1.session().await.unwrap().is_empty(), "nothing is sent while waiting");
    let (ok, out, _) = srv.cli(&["devices", "profiles", &d1.udid]);
    assert!(ok && out.contains("waiting for derived credential"), "{out}");

    // Bad credentials: 400 naming the problem, nothing stored.
    let good_pw = "pin-1234";
    let good = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (Authentication)", 365, good_pw).unwrap();
    let expired = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice old", -1, good_pw).unwrap();
    let keyless = {
        // A key with a certificate that is not its own.
        let other = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut chain = openssl::stack::Stack::new().unwrap();
        chain.push(piv_ca.cert.clone()).unwrap();
        openssl::pkcs12::Pkcs12::builder()
            .pkey(&other)
            .ca(chain)
            .build2(good_pw)
            .unwrap()
            .to_der()
            .unwrap()
    };
    for (body, why) in [
        (
            json!({"device": d1.udid, "usage": "authentication", "pkcs12": "%%%", "password": good_pw}),
            "base64",
        ),
        (
            json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(b"nope"), "password": good_pw}),
            "not a PKCS#12",
        ),
        (
            json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(&good), "password": "wrong"}),
            "password",
        ),
        (
            json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(&expired), "password": good_pw}),
            "expired",
        ),
        (
            json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(&keyless), "password": good_pw}),
            "does not match",
        ),
        (
            json!({"device": d1.udid, "usage": "flying", "pkcs12": b64(&good), "password": good_pw}),
            "usage",
        ),
        (
            json!({"usage": "authentication", "pkcs12": b64(&good), "password": good_pw}),
            "device and user",
        ),
    ] {
        let (s, v) = post_as(&srv, &issuer, body.clone()).await;
        assert_eq!(s, 400, "{why}: {v}");
        assert!(v["error"].as_str().unwrap_or_default().contains(why), "{why}: {v}");
    }
    let (s, _) = post_as(
        &srv,
        &issuer,
        json!({"device": "NO-SUCH-DEVICE", "usage": "authentication", "pkcs12": b64(&good), "password": good_pw}),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        admin.get("/v1/derived-credentials").await.unwrap()["derived_credentials"],
        json!([])
    );
    // Roles: read-only and operator may not post; the issuer may not do anything else.
    for who in [&reader, &operator] {
        let (s, _) = post_as(
            &srv,
            who,
            json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(&good), "password": good_pw}),
        )
        .await;
        assert_eq!(s, 403);
    }
    let r = srv
        .client()
        .get(format!("{}/v1/devices", srv.base))
        .bearer_auth(&issuer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The issuer posts: the waiting profile goes out at once, encrypted, with the credential.
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(&good), "password": good_pw}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("dc_"));
    assert!(v["subject"].as_str().unwrap().contains("Alice Agent"), "{v}");
    assert!(v["issuer"].as_str().unwrap().contains("Agency PIV-D CA"), "{v}");
    assert!(v.get("pkcs12").is_none() && v.get("password").is_none());
    assert_eq!(v["profiles_sent"][&d1.udid], json!(["com.example.pivd"]), "{v}");
    let first_id = v["id"].as_str().unwrap().to_owned();
    let list = admin.get("/v1/derived-credentials").await.unwrap().to_string();
    assert!(!list.contains(good_pw) && !list.contains(&b64(&good)[..40]));
    dir_lacks_unless_pg(&srv, good_pw.as_bytes());
    let handled = d1.session().await.unwrap();
    assert_eq!(handled.len(), 1, "one InstallProfile");
    assert_eq!(handled[0].status, mdmd::protocol::Status::Acknowledged);
    let got = identity_of(&d1, "com.example.pivd", "DC-AUTH");
    assert!(got.verify(&piv_ca.cert.public_key().unwrap()).unwrap());
    assert_eq!(device_profile(&srv, &d1.udid, "com.example.pivd").await["state"], "installed");
    let dev = admin.get(&format!("/v1/devices/{}", d1.udid)).await.unwrap();
    assert_eq!(dev["derived_credentials"][0]["usage"], "authentication");
    assert_eq!(dev["derived_credentials"][0]["expiring"], false);
    assert_eq!(dev["waiting_for_derived_credential"], json!([]));

    // Renewal: a newer credential (near expiry, so flagged) replaces it and the profile is re-installed.
    let newer = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (renewed)", 10, "pin-5678").unwrap();
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d1.udid, "usage": "authentication", "pkcs12": b64(&newer), "password": "pin-5678"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["replaced"], first_id.as_str());
    assert_eq!(v["expiring"], true);
    assert_eq!(v["profiles_sent"][&d1.udid], json!(["com.example.pivd"]));
    d1.session().await.unwrap();
    let renewed = identity_of(&d1, "com.example.pivd", "DC-AUTH");
    assert!(renewed
        .subject_name()
        .entries()
        .any(|e| e.data().to_string().unwrap().contains("renewed")));
    let dev = admin.get(&format!("/v1/devices/{}", d1.udid)).await.unwrap();
    assert_eq!(dev["derived_credentials"][0]["expiring"], true);
    let health = srv.client().get(format!("{}/health", srv.base)).send().await.unwrap();
    let health: Value = health.json().await.unwrap();
    assert!(
        health["warnings"]
            .to_string()
            .contains("1 derived credential(s) expire within 30 days"),
        "{health}"
    );

    // Revocation: the profile is removed from the device and waits again.
    let id = v["id"].as_str().unwrap().to_owned();
    let v = srv.cli_json(&["derived-credentials", "rm", &id]);
    assert_eq!(v["profiles_removed"][&d1.udid], json!(["com.example.pivd"]), "{v}");
    let handled = d1.session().await.unwrap();
    assert_eq!(handled[0].request_type, "RemoveProfile");
    assert!(!d1.profiles.contains_key("com.example.pivd"));
    assert_eq!(
        device_profile(&srv, &d1.udid, "com.example.pivd").await["state"],
        "waiting for derived credential"
    );

    // A user's credential applies to every device of that user.
    let mut d2 = srv.enrolled().await;
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{}/attributes", d2.udid),
            Some(json!({"USERNAME": "alice"})),
        )
        .await
        .unwrap();
    let b = admin
        .post("/v1/profiles/com.example.pivd/install", json!({"targets": [d2.udid]}))
        .await
        .unwrap();
    assert_eq!(b["waiting"], json!([d2.udid]));
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"user": "alice", "usage": "authentication", "pkcs12": b64(&good), "password": good_pw}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["profiles_sent"][&d2.udid], json!(["com.example.pivd"]), "{v}");
    d2.session().await.unwrap();
    assert!(d2.profiles.contains_key("com.example.pivd"));
}

fn dir_lacks_unless_pg(srv: &Server, needle: &[u8]) {
    if !common::on_postgres() {
        dir_lacks(&srv.data_dir(), needle);
    }
}

#[tokio::test]
async fn the_provider_app_uploads_with_its_device_token() {
    let srv = Server::start();
    let admin = srv.admin();
    let piv_ca = mdmd::sim::pki::test_ca("Agency PIV-D CA").unwrap();
    let (s, v) = admin.call_bytes("/v1/profiles", derived_profile("com.example.pivd")).await.unwrap();
    assert!(s == 200 || s == 201, "{v}");
    let mut d = srv.enrolled().await;
    let other = srv.enrolled().await;
    // The provider's app, distributed with InstallApplication and its configuration.
    enqueue(
        &admin,
        &[&d.udid],
        json!({"RequestType": "InstallApplication", "iTunesStoreID": 1_234_567, "Identifier": "com.entrust.pivd",
               "Configuration": {"UploadURL": "$DERIVED_CREDENTIAL_URL", "UploadToken": "$DERIVED_CREDENTIAL_TOKEN"}}),
    )
    .await;
    let b = admin
        .post("/v1/profiles/com.example.pivd/install", json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(b["waiting"], json!([d.udid]));
    d.session().await.unwrap();
    let config = d.apps["com.entrust.pivd"].config.clone().expect("app configuration");
    let port = srv.base.rsplit(':').next().unwrap().to_owned();
    assert!(
        config["UploadURL"]
            .as_string()
            .unwrap()
            .ends_with(&format!(":{port}/v1/derived-credentials")),
        "{config:?}"
    );
    let token = config["UploadToken"].as_string().unwrap().to_owned();
    assert!(token.starts_with("dct_"));

    let pw = "app-pin";
    let p12 = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Bob (Authentication)", 365, pw).unwrap();
    // The token can only post its own device's credentials, and only there.
    let (s, _) = post_as(
        &srv,
        &token,
        json!({"device": other.udid, "usage": "authentication", "pkcs12": b64(&p12), "password": pw}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post_as(
        &srv,
        &token,
        json!({"user": "bob", "usage": "authentication", "pkcs12": b64(&p12), "password": pw}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post_as(
        &srv,
        &format!("dct_{}", "0".repeat(48)),
        json!({"usage": "authentication", "pkcs12": b64(&p12), "password": pw}),
    )
    .await;
    assert_eq!(s, 403);
    let r = srv
        .client()
        .get(format!("{}/v1/devices", srv.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the upload token is good for nothing else");
    let r = srv
        .client()
        .get(format!("{}/v1/derived-credentials", srv.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The app uploads as it would on the phone; the profile is released.
    let (s, v) = d.provider_app_upload("com.entrust.pivd", "authentication", &p12, pw).await.unwrap();
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["source"], "app");
    assert_eq!(v["owner"], json!({"kind": "device", "name": d.udid}));
    assert_eq!(v["profiles_sent"][&d.udid], json!(["com.example.pivd"]));
    let handled = d.session().await.unwrap();
    assert!(handled
        .iter()
        .any(|h| h.request_type == "InstallProfile" && h.status == mdmd::protocol::Status::Acknowledged));
    let got = identity_of(&d, "com.example.pivd", "DC-AUTH");
    assert!(got.verify(&piv_ca.cert.public_key().unwrap()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndes_style_one_time_challenges_are_fetched_per_install() {
    use std::sync::atomic::Ordering;
    let scep = scepserver().await;
    let (challenge_url, hits, full) = ndes_admin(CHALLENGE).await;
    let srv = Server::start();
    let admin = srv.admin();
    let v = srv.cli_json(&["cas", "add", "ndes", "--scep-url", &scep.url, "--challenge-url", &challenge_url]);
    assert_eq!(v["challenge"], "url");
    // Shown without its credentials; adding fetched no challenge.
    assert!(!v.to_string().contains("svc-pw"), "{v}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let (s, v) = admin
        .call_bytes("/v1/profiles", org_wifi_profile("com.example.wifi.ndes", "ndes"))
        .await
        .unwrap();
    assert!(s == 200 || s == 201, "{v}");
    let mut a = srv.enrolled().await;
    let mut b = srv.enrolled().await;
    let batch = admin
        .post("/v1/profiles/com.example.wifi.ndes/install", json!({"targets": [a.udid, b.udid]}))
        .await
        .unwrap();
    assert_eq!(batch["queued"], 2, "{batch}");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one challenge per install");
    for d in [&mut a, &mut b] {
        d.session().await.unwrap();
        let cert = identity_of(d, "com.example.wifi.ndes", "SCEP-1");
        assert!(cert.verify(&scep.ca.public_key().unwrap()).unwrap());
    }
    // NDES out of challenges: that install fails with the reason, nothing queued.
    full.store(true, Ordering::SeqCst);
    let c = srv.enrolled().await;
    let batch = admin
        .post("/v1/profiles/com.example.wifi.ndes/install", json!({"targets": [c.udid]}))
        .await
        .unwrap();
    assert_eq!(batch["queued"], 0, "{batch}");
    assert!(
        batch["failed"][0]["error"].as_str().unwrap().contains("password cache is full"),
        "{batch}"
    );
}

/// Seed 003 through a blueprint: the PIV-D app and a profile that waits for
/// the device's derived credential; the credential arriving releases it, and
/// the blueprint's state follows — no device-by-device command.
#[tokio::test]
async fn a_blueprint_brings_the_pivd_app_and_its_waiting_profile() {
    let srv = Server::start_with(&["--inventory-interval", "0"]);
    let admin = srv.admin();
    let issuer = srv.account("entrust", "issuer");
    let piv_ca = mdmd::sim::pki::test_ca("Agency PIV-D CA").unwrap();
    let (s, v) = admin.call_bytes("/v1/profiles", derived_profile("com.example.pivd")).await.unwrap();
    assert!(s == 200 || s == 201, "{s} {v}");
    let (s, v) = admin
        .call(
            reqwest::Method::PUT,
            "/v1/blueprints/pivd",
            Some(json!({"groups": ["*"], "profiles": ["com.example.pivd"],
                "apps": [{"manifest_url": "https://apps.example.com/pivd/manifest.plist",
                          "configuration": {"uploadURL": "$DERIVED_CREDENTIAL_URL"}}]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let mut d = srv.enrolled().await;
    let handled = d.session().await.unwrap();
    let types: Vec<&str> = handled.iter().map(|h| h.request_type.as_str()).collect();
    assert_eq!(
        types,
        vec!["InstallApplication"],
        "the app now, the profile when the credential exists"
    );
    assert!(d.apps.keys().any(|k| k.starts_with("manifest.")), "{:?}", d.apps);
    assert_eq!(
        device_profile(&srv, &d.udid, "com.example.pivd").await["state"],
        "waiting for derived credential"
    );
    let st = admin.get("/v1/blueprints/pivd/status").await.unwrap();
    assert_eq!(st["devices"][0]["state"], "pending", "{st}");

    // The provider posts the credential: the profile goes out, and the device converges.
    let pw = "pin-1234";
    let good = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (Authentication)", 365, pw).unwrap();
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d.udid, "usage": "authentication", "pkcs12": b64(&good), "password": pw}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let handled = d.session().await.unwrap();
    assert!(handled.iter().any(|h| h.request_type == "InstallProfile"), "{handled:?}");
    assert!(d.profiles.contains_key("com.example.pivd"));
    assert!(
        common::wait_until(std::time::Duration::from_secs(20), || async {
            admin.get("/v1/blueprints/pivd/status").await.unwrap()["devices"][0]["state"] == "converged"
        })
        .await,
        "{}",
        admin.get("/v1/blueprints/pivd/status").await.unwrap()
    );
    // Nothing more to do for this device.
    let r = admin.post(&format!("/v1/reconcile?device={}", d.udid), json!({})).await.unwrap();
    assert_eq!(r["commands"], 0, "{r}");
}
