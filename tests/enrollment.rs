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
    let mut victim = srv.device().await;
    victim.enroll().await.unwrap();
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
    let victim = srv.device().await;
    victim.enroll().await.unwrap();
    let other = claiming(&srv, &victim.udid).await;
    other.enroll().await.unwrap();
}

#[tokio::test]
async fn approved_and_checked_out_re_enrollments_are_accepted() {
    let srv = Server::start();
    let admin = srv.admin();
    let old = srv.device().await;
    old.enroll().await.unwrap();
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
