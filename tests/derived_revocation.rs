//! Seed 003 ("if the Entrust credentials are either changed, expired,
//! revoked, or deleted, the new credentials must be activated again"): a
//! derived credential that expires, that the provider revokes, or that its
//! CRL or OCSP responder says is revoked ends — its profiles leave the
//! devices and wait again, an audit record stays. The CRL comes from
//! `openssl ca -gencrl` on a small server here, the OCSP answers from the
//! real `openssl ocsp` responder; a source that fails removes nothing.

mod common;

use std::time::{Duration, Instant};

use common::derived::{call_as, credential, derived_p12, ended, identity_of, post_as, wifi_eap_tls, CrlServer, TestCa};
use common::{b64, device_profile, free_port, template, wait_until, Server};
use serde_json::{json, Value};

const PROFILE: &str = "com.agency.pivd.wifi";
const PW: &str = "pin-1234";

/// Checks every second, revocation asked every second, loopback sources allowed.
const FAST: &[&str] = &[
    "--derived-check-interval",
    "1",
    "--derived-revocation-interval",
    "1",
    "--derived-revocation-timeout",
    "2",
    "--derived-crl-max-mb",
    "1",
    "--derived-revocation-allow",
    "127.0.0.0/8",
];

/// Upload the Wi-Fi profile, enroll a device, post its credential, deliver
/// the profile: the device and the credential's id.
async fn device_with_credential(srv: &Server, issuer: &str, p12: &[u8]) -> (mdmd::sim::SimDevice, String) {
    let d = srv.enrolled().await;
    deliver(srv, issuer, d, p12).await
}

async fn deliver(srv: &Server, issuer: &str, mut d: mdmd::sim::SimDevice, p12: &[u8]) -> (mdmd::sim::SimDevice, String) {
    let admin = srv.admin();
    let t = template(
        PROFILE,
        &format!("{}{}", derived_p12("DC-AUTH", "authentication"), wifi_eap_tls("WIFI-1", "DC-AUTH")),
    );
    let (s, v) = admin.call_bytes("/v1/profiles", t).await.unwrap();
    assert!(s == 200 || s == 201, "{s} {v}");
    let (s, v) = post_as(
        srv,
        issuer,
        json!({"device": d.udid, "usage": "authentication", "pkcs12": b64(p12), "password": PW}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let b = admin
        .post(&format!("/v1/profiles/{PROFILE}/install"), json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(b["queued"], 1, "{b}");
    d.session().await.unwrap();
    assert!(d.profiles.contains_key(PROFILE));
    (d, v["id"].as_str().unwrap().to_owned())
}

/// The credential ended: the device is told to remove the profile, which waits again.
async fn profile_taken_away(srv: &Server, d: &mut mdmd::sim::SimDevice) {
    let handled = d.session().await.unwrap();
    assert!(
        handled.iter().any(|h| h.request_type == "RemoveProfile"),
        "{:?}",
        handled.iter().map(|h| &h.request_type).collect::<Vec<_>>()
    );
    assert!(!d.profiles.contains_key(PROFILE));
    assert_eq!(
        device_profile(srv, &d.udid, PROFILE).await["state"],
        "waiting for derived credential"
    );
}

async fn wait_ended(srv: &Server, id: &str, within: Duration) -> Value {
    let ok = wait_until(within, || async { !ended(srv, id).await.is_null() }).await;
    assert!(ok, "{id} did not end: {}", credential(srv, id).await);
    ended(srv, id).await
}

#[tokio::test]
async fn an_expired_derived_credential_takes_its_profiles_away() {
    let srv = Server::start_with(&["--derived-check-interval", "1"]);
    let issuer = srv.account("entrust", "issuer");
    let ca = TestCa::new("Agency PIV-D CA");
    let d = srv.enrolled().await;
    // Valid for a few seconds more.
    let started = Instant::now();
    let (p12, cert) = ca.issue("Alice Agent", 10, None, None, PW);
    let (mut d, id) = deliver(&srv, &issuer, d, &p12).await;
    assert_eq!(identity_of(&d, PROFILE, "DC-AUTH").cert.to_der().unwrap(), cert.to_der().unwrap());

    let e = wait_ended(&srv, &id, Duration::from_secs(16)).await;
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(e["status"], "expired", "{e}");
    assert_eq!(e["by"], "expiry");
    assert!(credential(&srv, &id).await.is_null(), "no longer active");
    profile_taken_away(&srv, &mut d).await;
    let dev = srv.admin().get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert_eq!(dev["derived_credentials"], json!([]));
    assert_eq!(dev["waiting_for_derived_credential"][0]["profile"], PROFILE, "{dev}");
    // Installing it again waits; nothing expired is sent.
    let b = srv
        .admin()
        .post(&format!("/v1/profiles/{PROFILE}/install"), json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(b["waiting"], json!([d.udid]), "{b}");
}

#[tokio::test]
async fn the_provider_revokes_a_credential_and_it_stays_revoked() {
    let srv = Server::start();
    let admin = srv.admin();
    let issuer = srv.account("entrust", "issuer");
    let operator = srv.account("helpdesk", "operator");
    let ca = TestCa::new("Agency PIV-D CA");
    let (p12, cert) = ca.issue("Alice Agent", 86_400, None, None, PW);
    let (mut d, id) = device_with_credential(&srv, &issuer, &p12).await;
    let path = "/v1/derived-credentials/revocations";

    // Who may, and what a revocation must name.
    let (s, _) = call_as(&srv, &operator, path, json!({"id": id})).await;
    assert_eq!(s, 403, "operators do not revoke");
    for (body, want) in [
        (json!({}), 400),
        (json!({"id": id, "serial": "01"}), 400),
        (json!({"issuer": "CN=x"}), 400),
        (json!({"id": id, "extra": 1}), 400),
        (json!({"serial": "not hex"}), 400),
        (json!({"id": id, "reason": "x".repeat(201)}), 400),
        (json!({"id": id, "reason": "line\nbreak"}), 400),
        (json!({"id": "dc_nope"}), 404),
        (json!({"serial": "0123456789ABCDEF"}), 404),
    ] {
        let (s, v) = call_as(&srv, &issuer, path, body.clone()).await;
        assert_eq!(s, want, "{body}: {v}");
    }
    assert!(!credential(&srv, &id).await.is_null(), "nothing changed");

    // The provider revokes by serial (as Entrust knows it, with colons and a leading zero).
    let serial = common::serial_hex(&cert);
    let colons = format!(
        "00:{}",
        serial
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":")
    );
    let (s, v) = call_as(&srv, &issuer, path, json!({"serial": colons.to_lowercase(), "reason": "card lost"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revoked"]["id"], id.as_str());
    assert_eq!(v["revoked"]["status"], "revoked");
    assert_eq!(v["revoked"]["by"], "account:entrust");
    assert_eq!(v["revoked"]["reason"], "card lost");
    assert_eq!(v["profiles_removed"][&d.udid], json!([PROFILE]), "{v}");
    profile_taken_away(&srv, &mut d).await;
    // The audit record, for admins (and the provider).
    let e = ended(&srv, &id).await;
    assert_eq!(e["serial"], serial.as_str(), "{e}");
    assert!(e["ended_at"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339: {e}");
    let list = admin.get("/v1/derived-credentials").await.unwrap();
    assert!(!list.to_string().contains(PW));

    // Again: nothing more happens, and it says so.
    let (s, v) = call_as(&srv, &issuer, path, json!({"id": id})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["already"], "revoked");
    // The revoked certificate cannot come back.
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d.udid, "usage": "authentication", "pkcs12": b64(&p12), "password": PW}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("revoked"), "{v}");
    assert!(d.session().await.unwrap().is_empty());

    // A new credential releases the profile again; an admin revokes it with the CLI.
    let (p12b, _) = ca.issue("Alice Agent (new card)", 86_400, None, None, PW);
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d.udid, "usage": "authentication", "pkcs12": b64(&p12b), "password": PW}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["profiles_sent"][&d.udid], json!([PROFILE]));
    d.session().await.unwrap();
    assert!(d.profiles.contains_key(PROFILE));
    let id2 = v["id"].as_str().unwrap().to_owned();
    let v = srv.cli_json(&["derived-credentials", "revoke", &id2, "--reason", "superseded"]);
    assert_eq!(v["revoked"]["by"], "account:admin", "{v}");
    assert_eq!(v["profiles_removed"][&d.udid], json!([PROFILE]));
    let (ok, out, _) = srv.cli(&["derived-credentials", "list"]);
    assert!(ok && out.contains(&id) && out.contains(&id2) && out.contains("superseded"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_lists_the_credential_revokes_it() {
    let ca = TestCa::new("Agency PIV-D CA");
    let crls = CrlServer::start(ca.crl()).await;
    let srv = Server::start_with(FAST);
    let issuer = srv.account("entrust", "issuer");
    let url = format!("{}/crl", crls.base);
    let (p12, cert) = ca.issue("Alice Agent", 86_400, Some(&url), None, PW);
    let (mut d, id) = device_with_credential(&srv, &issuer, &p12).await;
    // A second credential on another device names the same CRL.
    let (p12b, _) = ca.issue("Bob Agent", 86_400, Some(&url), None, PW);
    let mut d2 = srv.enrolled().await;
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d2.udid, "usage": "authentication", "pkcs12": b64(&p12b), "password": PW}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id_b = v["id"].as_str().unwrap().to_owned();
    srv.admin()
        .post(&format!("/v1/profiles/{PROFILE}/install"), json!({"targets": [d2.udid]}))
        .await
        .unwrap();
    d2.session().await.unwrap();

    // Checked and good, through the CRL its certificate names.
    let c = credential(&srv, &id).await;
    assert_eq!(c["revocation_sources"]["crl"], json!([url]), "{c}");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            credential(&srv, &id).await["revocation_check"]["status"] == "good"
        })
        .await,
        "{}",
        credential(&srv, &id).await
    );
    assert_eq!(credential(&srv, &id).await["revocation_check"]["via"], format!("crl {url}"));
    // No storm: one fetch of the shared CRL per pass (a pass a second), not one per credential.
    let (h0, t0) = (crls.hits(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (runs, hits) = (t0.elapsed().as_secs() + 1, crls.hits() - h0);
    assert!(hits >= 1 && hits <= runs as usize + 1, "{hits} fetches in {runs} passes");

    // The CA revokes Alice's certificate and publishes a new CRL.
    ca.revoke(&cert);
    crls.set(ca.crl());
    let e = wait_ended(&srv, &id, Duration::from_secs(10)).await;
    assert_eq!(e["status"], "revoked", "{e}");
    assert_eq!(e["by"], format!("crl {url}"));
    assert_eq!(e["reason"], "keyCompromise");
    assert!(e["revoked_at"].as_str().is_some(), "{e}");
    profile_taken_away(&srv, &mut d).await;
    // Bob's credential is untouched.
    assert_eq!(credential(&srv, &id_b).await["revocation_check"]["status"], "good");
    assert!(d2.session().await.unwrap().is_empty());
    assert!(d2.profiles.contains_key(PROFILE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocsp_responder_that_says_revoked_revokes_it() {
    let ca = TestCa::new("Agency PIV-D CA");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let (p12, cert) = ca.issue("Alice Agent", 86_400, None, Some(&url), PW);
    let responder = ca.ocsp_responder(port).await;
    let srv = Server::start_with(FAST);
    let issuer = srv.account("entrust", "issuer");
    let (mut d, id) = device_with_credential(&srv, &issuer, &p12).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            credential(&srv, &id).await["revocation_check"]["status"] == "good"
        })
        .await,
        "{}",
        credential(&srv, &id).await
    );
    assert_eq!(credential(&srv, &id).await["revocation_check"]["via"], format!("ocsp {url}"));

    // Revoked in the CA's database; the responder answers from it once restarted.
    ca.revoke(&cert);
    drop(responder);
    let _responder = ca.ocsp_responder(port).await;
    let e = wait_ended(&srv, &id, Duration::from_secs(10)).await;
    assert_eq!(e["status"], "revoked", "{e}");
    assert_eq!(e["by"], format!("ocsp {url}"));
    assert_eq!(e["reason"], "keyCompromise");
    profile_taken_away(&srv, &mut d).await;
}

/// A source that cannot be reached, hangs, sends too much, or is on a
/// refused address: the check fails, says why, and removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_sources_that_fail_remove_nothing() {
    let ca = TestCa::new("Agency PIV-D CA");
    let crls = CrlServer::start(ca.crl()).await;
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let srv = Server::start_with(FAST);
    let issuer = srv.account("entrust", "issuer");
    let cases = [
        (format!("{}/hang", crls.base), None, "no answer within 2 s"),
        (format!("{}/big", crls.base), None, "larger than 1048576 bytes"),
        (format!("{}/missing", crls.base), None, "HTTP 404"),
        (closed.clone(), Some(closed.clone()), "OCSP"),
    ];
    let (p12, _) = ca.issue("Alice Agent", 86_400, Some(&cases[0].0), None, PW);
    let (mut d, first) = device_with_credential(&srv, &issuer, &p12).await;
    let mut ids = vec![(first, cases[0].2)];
    for (crl, ocsp, why) in &cases[1..] {
        let (p12, _) = ca.issue("Other Agent", 86_400, Some(crl), ocsp.as_deref(), PW);
        let other = srv.enrolled().await;
        let (s, v) = post_as(
            &srv,
            &issuer,
            json!({"device": other.udid, "usage": "authentication", "pkcs12": b64(&p12), "password": PW}),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        ids.push((v["id"].as_str().unwrap().to_owned(), *why));
    }
    for (id, why) in &ids {
        assert!(
            wait_until(Duration::from_secs(15), || async {
                let c = credential(&srv, id).await;
                c["revocation_check"]["status"] == "failed" && c["revocation_check"]["error"].as_str().unwrap_or("").contains(why)
            })
            .await,
            "{why}: {}",
            credential(&srv, id).await
        );
    }
    // Failures count up and nothing ended; the profile stays on the device.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            credential(&srv, &ids[1].0).await["revocation_check"]["failures"]
                .as_u64()
                .unwrap_or(0)
                >= 2
        })
        .await
    );
    let list = srv.admin().get("/v1/derived-credentials").await.unwrap();
    assert_eq!(list["ended"], json!([]), "{list}");
    assert!(d.session().await.unwrap().is_empty());
    assert!(d.profiles.contains_key(PROFILE));
    // The health check says so.
    let h = srv.admin().get("/v1/health").await.unwrap();
    assert!(
        h["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("could not be checked for revocation")),
        "{h}"
    );
}

/// Without `--derived-revocation-allow`, a source on loopback (or any
/// link-local address, such as cloud metadata) is not fetched at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_on_refused_addresses_are_not_fetched() {
    let ca = TestCa::new("Agency PIV-D CA");
    let crls = CrlServer::start(ca.crl()).await;
    let srv = Server::start_with(&["--derived-check-interval", "1", "--derived-revocation-interval", "1"]);
    let issuer = srv.account("entrust", "issuer");
    let by_name = format!("{}/crl", crls.base.replace("127.0.0.1", "localhost"));
    let (p12, _) = ca.issue(
        "Alice Agent",
        86_400,
        Some(&by_name),
        Some("http://169.254.169.254/latest/meta-data/"),
        PW,
    );
    let (mut d, id) = device_with_credential(&srv, &issuer, &p12).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            credential(&srv, &id).await["revocation_check"]["status"] == "failed"
        })
        .await
    );
    let c = credential(&srv, &id).await;
    let err = c["revocation_check"]["error"].as_str().unwrap();
    assert!(err.contains("169.254.169.254 is link-local"), "{c}");
    assert!(err.contains("is loopback"), "{c}");
    assert_eq!(crls.hits(), 0, "nothing was fetched");
    assert!(d.session().await.unwrap().is_empty());
    assert!(d.profiles.contains_key(PROFILE));
}
