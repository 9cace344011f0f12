//! The identity rule, attacked over real HTTPS: vouching never grows through
//! renewal, profile and DDM-asset identities never become MDM identities, a
//! device renewing its own identity keeps working, a replaced identity cannot
//! renew, a replayed Authenticate or TokenUpdate wipes nothing, and SCEP
//! refuses oversized or CA-named subjects, oversized keys and hostile
//! transaction ids, storing nothing.

mod common;

use common::{enqueue, serial_hex, wait_for_sync, Server};
use mdmd::sim::pki::SimIdentity;
use mdmd::sim::SimDevice;
use reqwest::Method;
use serde_json::{json, Value};

fn ca(srv: &Server) -> openssl::x509::X509 {
    openssl::x509::X509::from_pem(&std::fs::read(srv.certs_dir().join("ca.pem")).unwrap()).unwrap()
}

fn serial(id: &SimIdentity) -> String {
    serial_hex(&id.cert)
}

fn sha256(id: &SimIdentity) -> String {
    mdmd::pki::cert_sha256(&id.cert.to_der().unwrap())
}

/// A SCEP RenewalReq signed by `signer` for a fresh key: the new identity, or the refusal.
async fn renew(srv: &Server, signer: &SimIdentity, cn: &str) -> Result<SimIdentity, String> {
    renew_with(srv, signer, common::pool_key(), &[("CN".into(), cn.into())]).await
}

async fn renew_with(
    srv: &Server,
    signer: &SimIdentity,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    subject: &[(String, String)],
) -> Result<SimIdentity, String> {
    let ca = ca(srv);
    match mdmd::sim::pki::scep_enroll(
        &srv.client(),
        &format!("{}/scep", srv.base),
        Some(&ca),
        key,
        subject,
        None,
        Some(signer),
    )
    .await
    {
        Ok(r) => r,
        // Refused before a CertRep (HTTP 4xx): refused all the same.
        Err(e) => Err(format!("{e:#}")),
    }
}

async fn cert_view(srv: &Server, id: &SimIdentity) -> Value {
    srv.admin().get(&format!("/v1/certificates/{}", serial(id))).await.unwrap()
}

async fn cert_count(srv: &Server) -> usize {
    srv.admin().get("/v1/certificates").await.unwrap()["certificates"]
        .as_array()
        .unwrap()
        .len()
}

/// Someone speaking as device `udid` with `identity`.
fn speaking_as(srv: &Server, topic: &str, udid: &str, identity: SimIdentity) -> SimDevice {
    let mut d = SimDevice::new(&srv.base, topic, srv.client());
    d.udid = udid.to_owned();
    d.identity = Some(identity);
    d
}

/// Authenticate, TokenUpdate and a poll with this identity are all refused with 403.
async fn refused_everywhere(thief: &SimDevice) {
    let err = thief.authenticate().await.unwrap_err().to_string();
    assert!(err.contains("403"), "Authenticate: {err}");
    let err = thief.token_update().await.unwrap_err().to_string();
    assert!(err.contains("403"), "TokenUpdate: {err}");
    let (s, _) = thief
        .put_raw(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            mdmd::protocol::to_xml(&thief.idle_report()),
        )
        .await
        .unwrap();
    assert_eq!(s, 403, "poll");
}

/// The victim still gets its commands: the next poll is 200 and brings the queued one.
async fn victim_keeps_working(srv: &Server, victim: &mut SimDevice) {
    let uuid = enqueue(&srv.admin(), &[&victim.udid], json!({"RequestType": "SecurityInfo"})).await;
    let handled = victim.session().await.expect("the victim's poll");
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0].command_uuid, uuid);
    let d = srv.admin().get(&format!("/v1/devices/{}", victim.udid)).await.unwrap();
    assert_eq!(d["identity_certificate_sha256"], sha256(victim.identity.as_ref().unwrap()).as_str());
    assert_eq!(d["active"], true);
    assert_eq!(d["push_token_present"], true);
    assert_eq!(d["unlock_token_escrowed"], true);
}

/// (a) Phase 1 with a self-signed signer and the victim's UDID gives unvouched
/// identities for that UDID; a RenewalReq signed by them must not launder one
/// into an identity that takes the victim over.
#[tokio::test]
async fn a_renewal_does_not_launder_an_unvouched_identity_into_a_takeover() {
    let srv = Server::start();
    let mut victim = srv.enrolled().await;
    // The whole three phases, claiming the victim's UDID: an MDM identity for it, unvouched.
    let der = srv.profile().await;
    let thief = SimDevice::from_profile_service(srv.client(), &der, common::pool_key(), None, Some(&victim.udid))
        .await
        .expect("three-phase enrollment");
    let stolen = thief.identity.clone().unwrap();
    let v = cert_view(&srv, &stolen).await;
    assert_eq!(
        (v["udid"].as_str(), &v["vouched"], &v["purpose"]),
        (Some(victim.udid.as_str()), &json!(false), &json!("mdm")),
        "{v}"
    );
    let before = cert_count(&srv).await;
    let laundered = renew(&srv, &stolen, "mdmd device laundered").await;
    assert!(
        laundered.is_err(),
        "a RenewalReq from an identity that is not the enrollment's current one was served"
    );
    assert_eq!(cert_count(&srv).await, before, "a refused renewal stores nothing");
    refused_everywhere(&speaking_as(&srv, &victim.topic, &victim.udid, stolen)).await;

    // Phase 1 by hand: the identity phase 3 is signed with (self-signed phase-1 signer).
    let (url, challenge) = mdmd::sim::pki::read_profile_service(&srv.profile().await).unwrap();
    let mut attrs = plist::Dictionary::new();
    attrs.insert("UDID".into(), victim.udid.clone().into());
    attrs.insert("CHALLENGE".into(), challenge.into());
    let key = common::pool_key();
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", &victim.udid).unwrap();
    let signer = SimIdentity {
        cert: mdmd::sim::pki::self_signed(&key, &n.build()).unwrap(),
        key,
    };
    let body = mdmd::sim::pki::sign_attached(&signer, &mdmd::protocol::to_xml(&attrs)).unwrap();
    let r = srv.client().post(&url).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let scep = mdmd::sim::pki::read_scep_profile(&r.bytes().await.unwrap()).unwrap();
    let phase1 = mdmd::sim::pki::scep_enroll(
        &srv.client(),
        &scep.scep_url,
        scep.ca.as_ref(),
        common::pool_key(),
        &scep.subject,
        Some(&scep.challenge),
        None,
    )
    .await
    .unwrap()
    .unwrap();
    let v = cert_view(&srv, &phase1).await;
    assert_eq!((&v["purpose"], &v["vouched"]), (&json!("profile-service"), &json!(false)), "{v}");
    refused_everywhere(&speaking_as(&srv, &victim.topic, &victim.udid, phase1.clone())).await;
    // Renewed twice, it stays what it was: never an MDM identity, never vouched.
    let mut id = phase1;
    for round in 0..2 {
        match renew(&srv, &id, &format!("mdmd device round {round}")).await {
            Ok(next) => {
                let v = cert_view(&srv, &next).await;
                assert_eq!((&v["purpose"], &v["vouched"]), (&json!("profile-service"), &json!(false)), "{v}");
                refused_everywhere(&speaking_as(&srv, &victim.topic, &victim.udid, next.clone())).await;
                id = next;
            }
            Err(_) => break,
        }
    }
    victim_keeps_working(&srv, &mut victim).await;
    let d = srv.admin().get(&format!("/v1/devices/{}", victim.udid)).await.unwrap();
    assert!(d["refused_reenroll_count"].as_u64().unwrap() >= 1, "{d}");
}

/// (b) A Wi-Fi profile's identity (`$SCEP_CHALLENGE`) renewed, and renewed
/// again, is still that profile's identity: never an MDM identity.
#[tokio::test]
async fn a_profile_identity_never_becomes_an_mdm_identity() {
    let srv = Server::start_with(&["--profiles-dir", common::repo_file("profiles").to_str().unwrap()]);
    let admin = srv.admin();
    let mut dev = srv.enrolled().await;
    let v = admin
        .post("/v1/profiles/com.example.mdmd.wifi/install", json!({"targets": [dev.udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    let handled = dev.session().await.unwrap();
    assert_eq!(handled[0].status, mdmd::protocol::Status::Acknowledged, "{handled:?}");
    let wifi = dev.profiles["com.example.mdmd.wifi"].identities[0].1.clone();
    let purpose = "profile:com.example.mdmd.wifi/com.example.mdmd.wifi.identity";
    assert_eq!(cert_view(&srv, &wifi).await["purpose"], purpose);
    let once = renew(&srv, &wifi, "wifi once").await.expect("a Wi-Fi identity renews as itself");
    let twice = renew(&srv, &once, "wifi twice").await.expect("and again");
    for id in [&once, &twice] {
        let v = cert_view(&srv, id).await;
        assert_eq!(
            (&v["purpose"], &v["vouched"], &v["udid"]),
            (&json!(purpose), &json!(false), &Value::Null),
            "{v}"
        );
    }
    assert_eq!(cert_view(&srv, &twice).await["renewed_from"], sha256(&once).as_str());
    for id in [wifi, once, twice] {
        refused_everywhere(&speaking_as(&srv, &dev.topic, &dev.udid, id)).await;
    }
    victim_keeps_working(&srv, &mut dev).await;
}

/// (c) A DDM SCEP credential asset's certificate carries its purpose and
/// cannot become an MDM identity, renewed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ddm_asset_identity_has_a_purpose_and_is_never_an_mdm_identity() {
    let srv = Server::start_with(&["--ddm-enable", "true", "--ddm-coalesce-ms", "100"]);
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    wait_for_sync(&mut d).await;
    for decl in [
        json!({"Type": "com.apple.asset.credential.scep", "Identifier": "wifi.cred",
            "Payload": {"Reference": {"DataURL": "mdmd:scep"}, "Authentication": {"Type": "MDM"}}}),
        json!({"Type": "com.apple.configuration.security.identity", "Identifier": "wifi.identity",
            "Payload": {"CredentialAssetReference": "wifi.cred"}}),
        json!({"Type": "com.apple.activation.simple", "Identifier": "wifi.act",
            "Payload": {"StandardConfigurations": ["wifi.identity"]}}),
    ] {
        let (s, v) = admin.call(Method::PUT, "/v1/declarations", Some(decl)).await.unwrap();
        assert_eq!(s, 200, "{v}");
    }
    for id in ["wifi.cred", "wifi.identity", "wifi.act"] {
        admin
            .call(Method::PUT, &format!("/v1/sets/wifi/declarations/{id}"), None)
            .await
            .unwrap();
    }
    admin
        .call(Method::PUT, &format!("/v1/devices/{}/sets/wifi", d.udid), None)
        .await
        .unwrap();
    wait_for_sync(&mut d).await;
    let (_, asset) = d.ddm.identities.get("wifi.cred").cloned().expect("an identity from the SCEP asset");
    let v = cert_view(&srv, &asset).await;
    assert_eq!(
        (&v["purpose"], &v["udid"], &v["vouched"]),
        (&json!("ddm-asset:wifi.cred"), &Value::Null, &json!(false)),
        "{v}"
    );
    let renewed = renew(&srv, &asset, "wifi.cred renewed")
        .await
        .expect("an asset identity renews as itself");
    let again = renew(&srv, &renewed, "wifi.cred again").await.expect("and again");
    for id in [&renewed, &again] {
        assert_eq!(cert_view(&srv, id).await["purpose"], "ddm-asset:wifi.cred");
    }
    for id in [asset, renewed, again] {
        refused_everywhere(&speaking_as(&srv, &d.topic, &d.udid, id)).await;
    }
    victim_keeps_working(&srv, &mut d).await;
}

/// (d) A device renewing its own current identity with a RenewalReq keeps
/// working (an unvouched one too), queue kept; (e) the identity it replaced
/// can no longer renew, nor speak for it.
#[tokio::test]
async fn a_device_renews_its_own_identity_and_the_replaced_one_cannot_renew() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    let old = d.identity.clone().unwrap();
    assert_eq!(cert_view(&srv, &old).await["vouched"], false, "an unattested enrollment");
    let queued = enqueue(&admin, &[&d.udid], json!({"RequestType": "ProfileList"})).await;
    let new = renew(&srv, &old, "mdmd device renewed").await.expect("the current identity renews");
    let v = cert_view(&srv, &new).await;
    assert_eq!(
        (&v["purpose"], &v["udid"], &v["vouched"], &v["renewed_from"]),
        (&json!("mdm"), &json!(d.udid), &json!(false), &json!(sha256(&old))),
        "{v}"
    );
    d.identity = Some(new.clone());
    d.authenticate().await.expect("Authenticate with the renewed identity");
    let dev = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert_eq!(dev["identity_certificate_sha256"], sha256(&new).as_str());
    assert_eq!(
        (&dev["active"], &dev["push_token_present"], &dev["unlock_token_escrowed"]),
        (&json!(true), &json!(true), &json!(true)),
        "{dev}"
    );
    let handled = d.session().await.unwrap();
    assert_eq!(handled.len(), 1, "the queue survives the renewal: {handled:?}");
    assert_eq!(handled[0].command_uuid, queued);
    // The replaced identity: no renewal, no say.
    let before = cert_count(&srv).await;
    let r = renew(&srv, &old, "mdmd device from the old one").await;
    assert!(r.is_err(), "a renewal signed by a replaced identity was served");
    assert_eq!(cert_count(&srv).await, before);
    refused_everywhere(&speaking_as(&srv, &d.topic, &d.udid, old)).await;
    // The renewed identity renews in turn.
    let third = renew(&srv, &new, "mdmd device third")
        .await
        .expect("the new current identity renews");
    d.identity = Some(third);
    d.authenticate().await.unwrap();
    victim_keeps_working(&srv, &mut d).await;
}

/// An attested (vouched) device renews its identity with a RenewalReq: the
/// renewed identity stays vouched, and the replaced one cannot come back
/// (a replayed Authenticate of it is refused; the device keeps working).
#[tokio::test]
async fn a_vouched_identity_replaced_by_its_renewal_cannot_come_back() {
    let device_ca = common::push::TestCa::new("Test Apple iPhone Device CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("device-ca.pem");
    std::fs::write(&ca_file, device_ca.cert.to_pem().unwrap()).unwrap();
    let srv = Server::start_with(&["--device-attestation-ca", ca_file.to_str().unwrap()]);
    let udid = mdmd::sim::random_udid();
    let device_cert = {
        use openssl::asn1::Asn1Time;
        let key = common::pool_key();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", &udid).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&mdmd::pki::ca::random_serial().unwrap()).unwrap();
        b.set_subject_name(&n.build()).unwrap();
        b.set_issuer_name(device_ca.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
        b.sign(&device_ca.key, openssl::hash::MessageDigest::sha256()).unwrap();
        SimIdentity { cert: b.build(), key }
    };
    let mut d = SimDevice::from_profile_service(
        srv.client(),
        &srv.profile().await,
        common::pool_key(),
        Some(&device_cert),
        Some(&udid),
    )
    .await
    .unwrap();
    d.enroll().await.unwrap();
    let old = d.identity.clone().unwrap();
    assert_eq!(cert_view(&srv, &old).await["vouched"], true);
    let auth = mdmd::protocol::to_xml(&d.authenticate_message());
    let old_sig = old.sign(&auth).unwrap();
    let new = renew(&srv, &old, "mdmd device renewed").await.expect("the current identity renews");
    assert_eq!(cert_view(&srv, &new).await["vouched"], true, "vouching is inherited");
    d.identity = Some(new);
    d.authenticate().await.unwrap();
    // The old identity's captured Authenticate, replayed: refused, nothing changes.
    let (s, _) = d
        .put_signed(
            &d.checkin_url.clone(),
            "application/x-apple-aspen-mdm-checkin",
            auth,
            Some(&old_sig),
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    victim_keeps_working(&srv, &mut d).await;
}

/// A captured, validly signed Authenticate or older TokenUpdate replayed
/// against an active enrollment wipes nothing: push channel, escrowed
/// UnlockToken and queue survive. A genuine re-enrollment still starts empty.
#[tokio::test]
async fn a_replayed_authenticate_or_token_update_wipes_nothing() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    let id = d.identity.clone().unwrap();
    let checkin_url = d.checkin_url.clone();
    let ct = "application/x-apple-aspen-mdm-checkin";
    // Captured on the wire: the Authenticate, and a TokenUpdate without UnlockToken (a later token refresh).
    let auth = mdmd::protocol::to_xml(&d.authenticate_message());
    let auth_sig = id.sign(&auth).unwrap();
    let mut older = d.token_update_message();
    older.remove("UnlockToken");
    let older = mdmd::protocol::to_xml(&older);
    let older_sig = id.sign(&older).unwrap();
    d.checkin(&plist::from_bytes(&older).unwrap()).await.unwrap();
    let before = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    let pending = enqueue(&admin, &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    for (body, sig) in [(&auth, &auth_sig), (&older, &older_sig), (&auth, &auth_sig)] {
        let (s, b) = d.put_signed(&checkin_url, ct, body.clone(), Some(sig)).await.unwrap();
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    let after = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    for k in [
        "active",
        "push_token_present",
        "unlock_token_escrowed",
        "identity_certificate_sha256",
        "enrolled_at",
        "awaiting_configuration",
    ] {
        assert_eq!(after[k], before[k], "{k} changed: {before} → {after}");
    }
    // The queue is intact, and the escrowed UnlockToken is still the device's.
    let clear = enqueue(&admin, &[&d.udid], json!({"RequestType": "ClearPasscode"})).await;
    let handled = d.session().await.unwrap();
    let got: Vec<(&str, mdmd::protocol::Status)> = handled.iter().map(|h| (h.command_uuid.as_str(), h.status)).collect();
    assert_eq!(
        got,
        vec![
            (pending.as_str(), mdmd::protocol::Status::Acknowledged),
            (clear.as_str(), mdmd::protocol::Status::Acknowledged)
        ],
        "{handled:?}"
    );

    // A genuine re-enrollment with a new identity (approved) still starts with an empty queue.
    let stale = enqueue(&admin, &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    srv.cli_json(&["devices", "approve-reenroll", &d.udid, "--expires-in", "600"]);
    let fresh = SimDevice::from_profile_service(srv.client(), &srv.profile().await, common::pool_key(), None, Some(&d.udid))
        .await
        .unwrap();
    fresh.enroll().await.unwrap();
    let c = admin.get(&format!("/v1/commands/{stale}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Cleared", "{c}");
}

/// SCEP refuses what no device needs: a 60 KB or 65-character common name, a
/// subject naming our CA, an 8192-bit key, a hostile transactionID; nothing is
/// stored, and the refusals do not echo the request into the log.
#[tokio::test]
async fn scep_subjects_keys_and_transaction_ids_are_bounded() {
    let srv = Server::start_logged(&[]);
    let d = srv.enrolled().await;
    let id = d.identity.clone().unwrap();
    let before = cert_count(&srv).await;
    let big = tokio::task::spawn_blocking(|| openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(8192).unwrap()).unwrap());
    let ca_cn = ca(&srv)
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(ca_cn, "mdmd MDM CA");
    for cn in ["x".repeat(60 * 1024), "y".repeat(65), ca_cn.clone(), ca_cn.to_uppercase()] {
        let r = renew(&srv, &id, &cn).await;
        assert!(
            r.is_err(),
            "a subject CN of {} characters ({}) was issued",
            cn.len(),
            &cn[..cn.len().min(20)]
        );
    }
    let big = big.await.unwrap();
    let r = renew_with(&srv, &id, big, &[("CN".into(), "mdmd device big".into())]).await;
    assert!(r.is_err(), "an 8192-bit key was certified");
    assert_eq!(cert_count(&srv).await, before, "refusals store nothing");
    // 64 characters and a 4096-bit key are fine.
    let k4096 = tokio::task::spawn_blocking(|| openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(4096).unwrap()).unwrap())
        .await
        .unwrap();
    let ok = renew_with(&srv, &id, k4096, &[("CN".into(), "z".repeat(64))]).await;
    assert!(ok.is_ok(), "{ok:?}", ok = ok.err());

    // A transactionID with a newline, and one of 100 KB: 400, never logged.
    let ca = mdmd::sim::pki::get_scep_certs(&srv.client(), &format!("{}/scep", srv.base)).await.unwrap().recipient;
    let csr = mdmd::sim::pki::csr(&id.key, &[("CN".into(), "mdmd device tx".into())], None).unwrap();
    for txid in ["forged\nlevel=ERROR msg=\"admin logged in\"".to_owned(), "T".repeat(100 * 1024)] {
        let (msg, _, _) =
            mdmd::pki::scep::client_request_with_id(&ca, &id.cert, &id.key, &csr, true, openssl::symm::Cipher::aes_128_cbc(), &txid)
                .unwrap();
        let r = srv
            .client()
            .post(format!("{}/scep?operation=PKIOperation", srv.base))
            .header("Content-Type", "application/x-pki-message")
            .body(msg)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "transactionID of {} bytes", txid.len());
    }
    let log = srv.log_text();
    assert!(
        !log.contains("admin logged in") && !log.contains(&"T".repeat(200)),
        "the transactionID reached the log"
    );
    // Still serving: the device polls.
    let mut d = d;
    victim_keeps_working(&srv, &mut d).await;
}
