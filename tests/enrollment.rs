//! Enrollment takeover and the re-enrollment policy: an identity from a
//! second enrollment profile cannot take over an active device; a checked-out
//! device, an admin-approved re-enrollment and our own renewal can.

mod common;

use common::{enqueue, Server};
use serde_json::json;

/// A device that enrolls through the profile service claiming `udid`
/// (unattested: no device attestation CA configured).
async fn claiming(srv: &Server, udid: &str) -> mdmd::sim::SimDevice {
    let der = srv.profile().await;
    mdmd::sim::SimDevice::from_profile_service(srv.client(), &der, common::pool_key(), None, Some(udid))
        .await
        .expect("three-phase enrollment")
}

#[tokio::test]
async fn another_identity_cannot_take_over_an_active_enrollment() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut victim = srv.enrolled().await;
    // An identity issued for one device cannot speak for another.
    let mut other = srv.device().await;
    other.udid = victim.udid.clone();
    let err = other.authenticate().await.unwrap_err().to_string();
    assert!(err.contains("403") && err.contains("issued for device"), "{err}");
    // Anyone with an enrollment profile can claim the victim's UDID in phase 1 and get an
    // identity for it: without attestation it cannot take over the active enrollment.
    let mut thief = claiming(&srv, &victim.udid).await;
    let err = thief.authenticate().await.unwrap_err().to_string();
    assert!(err.contains("403"), "{err}");
    let err = thief.token_update().await.unwrap_err().to_string();
    assert!(err.contains("403"), "{err}");
    // The victim keeps working and gets its commands; the attempt is visible.
    let uuid = enqueue(&admin, &[&victim.udid], json!({"RequestType": "SecurityInfo"})).await;
    let h = victim.session().await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].command_uuid, uuid);
    let d = admin.get(&format!("/v1/devices/{}", victim.udid)).await.unwrap();
    assert_eq!(d["refused_reenroll_count"], 1, "{d}");
    assert!(d["refused_reenroll_at"].is_string());
    assert!(thief.session().await.is_err(), "the thief's identity is not the enrollment's");

    // The open policy (labs) lets it through, as before.
    drop(srv);
    let srv = Server::start_with(&["--reenroll-policy", "open"]);
    let victim = srv.enrolled().await;
    let other = claiming(&srv, &victim.udid).await;
    other.enroll().await.unwrap();
}

#[tokio::test]
async fn approved_and_checked_out_re_enrollments_are_accepted() {
    let srv = Server::start();
    let admin = srv.admin();
    let old = srv.enrolled().await;
    let udid = old.udid.clone();
    let stale = enqueue(&admin, &[&udid], json!({"RequestType": "SecurityInfo"})).await;
    // The phone was wiped: an admin approves its re-enrollment (CLI).
    let v = srv.cli_json(&["devices", "approve-reenroll", &udid, "--expires-in", "600"]);
    assert!(v["approved_until"].is_string(), "{v}");
    let mut fresh = claiming(&srv, &udid).await;
    fresh.enroll().await.unwrap();
    // Apple's rule: a new enrollment starts with an empty queue.
    let c = admin.get(&format!("/v1/commands/{stale}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Cleared", "{c}");
    enqueue(&admin, &[&udid], json!({"RequestType": "ProfileList"})).await;
    assert_eq!(fresh.session().await.unwrap().len(), 1);
    // The old identity is out; the approval was single-use.
    let (s, _) = old
        .put_raw(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            mdmd::protocol::to_xml(&old.idle_report()),
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    let again = claiming(&srv, &udid).await;
    assert!(again.authenticate().await.unwrap_err().to_string().contains("403"));
    // Unknown device: 404.
    let (s, _) = admin
        .call(reqwest::Method::POST, "/v1/devices/NOPE/approve-reenroll", Some(json!({})))
        .await
        .unwrap();
    assert_eq!(s, 404);

    // A device that checked out re-enrolls freely.
    fresh.checkout().await.unwrap();
    let mut back = claiming(&srv, &udid).await;
    back.enroll().await.unwrap();
    enqueue(&admin, &[&udid], json!({"RequestType": "SecurityInfo"})).await;
    assert_eq!(back.session().await.unwrap().len(), 1);
}

/// Apple's device CA stands in here as a test CA; devices carry certificates
/// from it named by their UDID.
struct DeviceCa(common::push::TestCa);

impl DeviceCa {
    fn device_cert(&self, udid: &str) -> mdmd::sim::pki::SimIdentity {
        use openssl::asn1::Asn1Time;
        let key = common::pool_key();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", udid).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&mdmd::pki::ca::random_serial().unwrap()).unwrap();
        b.set_subject_name(&n.build()).unwrap();
        b.set_issuer_name(self.0.cert.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
        b.sign(&self.0.key, openssl::hash::MessageDigest::sha256()).unwrap();
        mdmd::sim::pki::SimIdentity { cert: b.build(), key }
    }
}

#[tokio::test]
async fn three_phase_enrollment_is_attested_and_guarded() {
    let ca = DeviceCa(common::push::TestCa::new("Test Apple iPhone Device CA"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("device-ca.pem");
    std::fs::write(&ca_file, ca.0.cert.to_pem().unwrap()).unwrap();
    let srv = Server::start_with(&["--device-attestation-ca", ca_file.to_str().unwrap()]);
    let admin = srv.admin();
    let udid = mdmd::sim::random_udid();
    let device_cert = ca.device_cert(&udid);

    // Attested: the phone's own certificate from the device CA, naming its UDID.
    let der = srv.profile().await;
    assert!(mdmd::sim::pki::is_profile_service(&der));
    let mut phone = mdmd::sim::SimDevice::from_profile_service(srv.client(), &der, common::pool_key(), Some(&device_cert), Some(&udid))
        .await
        .unwrap();
    phone.enroll().await.unwrap();
    let serial = common::serial_hex(&phone.identity.as_ref().unwrap().cert);
    let c = admin.get(&format!("/v1/certificates/{serial}")).await.unwrap();
    assert_eq!(c["udid"], udid.as_str());
    assert_eq!(c["vouched"], true, "{c}");

    // Phase 1 by hand: the device attributes, signed.
    let (url, challenge) = mdmd::sim::pki::read_profile_service(&srv.profile().await).unwrap();
    let post = |body: Vec<u8>| {
        let (client, url) = (srv.client(), url.clone());
        async move {
            let r = client.post(&url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    let attrs = |u: &str, ch: Option<&str>| {
        let mut d = plist::Dictionary::new();
        d.insert("UDID".into(), u.into());
        d.insert("PRODUCT".into(), "iPhone16,1".into());
        if let Some(c) = ch {
            d.insert("CHALLENGE".into(), c.into());
        }
        mdmd::protocol::to_xml(&d)
    };
    // Garbage, or nothing: 400, never 401.
    assert_eq!(post(b"\x30\x82 not cms".to_vec()).await.0, 400);
    assert_eq!(post(Vec::new()).await.0, 400);
    let other_udid = mdmd::sim::random_udid();
    let other_cert = ca.device_cert(&other_udid);
    // Signed, but not a plist.
    assert_eq!(
        post(mdmd::sim::pki::sign_attached(&other_cert, b"not a plist").unwrap()).await.0,
        400
    );
    // A forged signature: the signed bytes altered after signing.
    let mut forged = mdmd::sim::pki::sign_attached(&other_cert, &attrs(&other_udid, Some(&challenge))).unwrap();
    let at = forged.windows(8).position(|w| w == b"iPhone16").unwrap();
    forged[at] = b'X';
    assert_eq!(post(forged).await.0, 403);
    // Not a device certificate from the attestation CA.
    let self_signed = {
        let key = common::pool_key();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", &other_udid).unwrap();
        mdmd::sim::pki::SimIdentity {
            cert: mdmd::sim::pki::self_signed(&key, &n.build()).unwrap(),
            key,
        }
    };
    let (s, _) = post(mdmd::sim::pki::sign_attached(&self_signed, &attrs(&other_udid, Some(&challenge))).unwrap()).await;
    assert_eq!(s, 403);
    // A device certificate claiming another device's UDID (the victim's): refused.
    let (s, body) = post(mdmd::sim::pki::sign_attached(&other_cert, &attrs(&udid, Some(&challenge))).unwrap()).await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    // The real thing, once; the challenge cannot be replayed.
    let signed = mdmd::sim::pki::sign_attached(&other_cert, &attrs(&other_udid, Some(&challenge))).unwrap();
    let (s, phase2) = post(signed.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(post(signed).await.0, 403, "replayed challenge");
    // Phase 3 signed by an identity issued for another device (the phone's), naming this UDID: refused.
    let (s, _) = post(mdmd::sim::pki::sign_attached(phone.identity.as_ref().unwrap(), &attrs(&other_udid, None)).unwrap()).await;
    assert_eq!(s, 403);
    // Phase 3 naming another UDID than its identity was issued for: refused.
    let scep = mdmd::sim::pki::read_scep_profile(&phase2).unwrap();
    let first = mdmd::sim::pki::scep_enroll(
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
    let (s, _) = post(mdmd::sim::pki::sign_attached(&first, &attrs(&udid, None)).unwrap()).await;
    assert_eq!(s, 403);
    let (s, last) = post(mdmd::sim::pki::sign_attached(&first, &attrs(&other_udid, None)).unwrap()).await;
    assert_eq!(s, 200);
    // The MDM profile is encrypted to that identity.
    let top: plist::Dictionary = plist::from_bytes(&mdmd::profiles::signed_content(&last).unwrap()).unwrap();
    assert!(top.contains_key("EncryptedPayloadContent") && !top.contains_key("PayloadContent"));
    assert!(mdmd::sim::pki::read_profile_as(&last, Some(&first)).is_ok());
    assert!(mdmd::sim::pki::read_profile_as(&last, Some(phone.identity.as_ref().unwrap())).is_err());

    // The phone is wiped and enrolls again through an attested phase 1: accepted,
    // the old enrollment's queue cleared, the old identity out.
    let stale = enqueue(&admin, &[&udid], json!({"RequestType": "SecurityInfo"})).await;
    let mut again = mdmd::sim::SimDevice::from_profile_service(
        srv.client(),
        &srv.profile().await,
        common::pool_key(),
        Some(&device_cert),
        Some(&udid),
    )
    .await
    .unwrap();
    again.enroll().await.unwrap();
    let c = admin.get(&format!("/v1/commands/{stale}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Cleared");
    enqueue(&admin, &[&udid], json!({"RequestType": "ProfileList"})).await;
    assert_eq!(again.session().await.unwrap().len(), 1);
    assert!(phone.session().await.is_err());
    let d = admin.get(&format!("/v1/devices/{udid}")).await.unwrap();
    assert_eq!(d["refused_reenroll_count"], 0);
}
