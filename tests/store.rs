//! The store's behavioural contract, written once against the role traits
//! (`Arc<dyn Store>`) so every backend runs the same suite: redb today; a
//! PostgreSQL backend adds one `#[tokio::test]` that calls `conformance`.

use std::sync::Arc;

mod common;

use mdmd::protocol::EnrollmentKind;
use mdmd::store::redb::RedbStore;
use mdmd::store::*;

fn enrollment(id: &str, cert: Option<&str>) -> Enrollment {
    Enrollment {
        udid: Some(id.into()),
        cert_hash: cert.map(str::to_owned),
        ..Enrollment::blank(id, id, EnrollmentKind::Device, "com.apple.mgmt.External.t", 100)
    }
}

fn command(rt: &str, profile: Option<ProfileTag>) -> CommandRecord {
    let mut d = plist::Dictionary::new();
    d.insert("RequestType".into(), rt.into());
    let c = mdmd::protocol::Command::new(d).unwrap();
    CommandRecord::new(&c, 100, profile)
}

fn report(uuid: &str, status: DeliveryStatus) -> ReportRecord {
    ReportRecord {
        events: vec![],
        command_uuid: uuid.into(),
        status,
        error_chain: vec![],
        raw: b"<plist/>".to_vec(),
        now: 200,
    }
}

fn token(id: &str, tok: &str, now: i64) -> TokenUpdateRecord {
    TokenUpdateRecord {
        events: vec![],
        push: PushInfo::new(tok.into(), format!("magic-{id}"), "com.apple.mgmt.External.t".into(), now),
        unlock_token: Some("sealed".into()),
        awaiting_configuration: false,
        user_short_name: None,
        user_long_name: None,
        now,
    }
}

fn cert(serial: &str, hash: &str) -> IssuedCert {
    IssuedCert {
        serial: serial.into(),
        sha256: hash.into(),
        subject: "CN=x".into(),
        not_before: 0,
        not_after: 1000,
        issued_at: 1,
        enrollment: None,
        revoked_at: None,
        purpose: None,
        der: None,
        udid: None,
        vouched: false,
        renewed_from: None,
        user: None,
        ade: None,
    }
}

fn secret(expires_at: i64) -> OneTimeSecret {
    OneTimeSecret {
        created_at: 0,
        expires_at,
        purpose: "t".into(),
        used_at: None,
        enrollment: None,
        vouched: false,
        renews: None,
        user: None,
        ade: None,
    }
}

async fn checkin(s: &Arc<dyn Store>) {
    s.record_cert(cert("01", "h1")).await.unwrap();
    s.record_cert(cert("02", "h2")).await.unwrap();
    assert_eq!(
        s.authenticate(enrollment("D1", Some("h1")), false).await.unwrap(),
        AuthOutcome::Stored
    );
    assert_eq!(s.cert_by_hash("h1").await.unwrap().unwrap().enrollment.as_deref(), Some("D1"));
    // A certificate bound to D1 cannot be bound to D2.
    assert_eq!(
        s.authenticate(enrollment("D2", Some("h1")), false).await.unwrap(),
        AuthOutcome::CertBoundElsewhere
    );
    assert!(s.enrollment("D2").await.unwrap().is_none(), "a refused authenticate writes nothing");
    // TokenUpdate makes it active; a user channel is created under a known device only.
    assert_eq!(s.token_update("D1", "D1", token("D1", "aa", 110)).await.unwrap(), Some(false));
    assert_eq!(s.token_update("NOPE", "NOPE", token("NOPE", "bb", 110)).await.unwrap(), None);
    assert_eq!(s.token_update("D1:U1", "D1", token("D1:U1", "cc", 111)).await.unwrap(), Some(false));
    let u = s.enrollment("D1:U1").await.unwrap().unwrap();
    assert_eq!((u.kind, u.device.as_str(), u.active), (EnrollmentKind::User, "D1", true));
    let e = s.enrollment("D1").await.unwrap().unwrap();
    assert!(e.active && e.push.as_ref().unwrap().token == "aa" && e.unlock_token.as_deref() == Some("sealed"));
    // What a device request checks first, read together: each half on its own.
    let (c, e) = s.identity_and_enrollment("h1", "D1").await.unwrap();
    assert_eq!((c.unwrap().serial.as_str(), e.unwrap().id.as_str()), ("01", "D1"));
    let (c, e) = s.identity_and_enrollment("h2", "NOPE").await.unwrap();
    assert_eq!((c.unwrap().serial.as_str(), e.is_none()), ("02", true));
    let (c, e) = s.identity_and_enrollment("nope", "D1").await.unwrap();
    assert!(c.is_none() && e.is_some());
    // Facts merge; attributes set and removed.
    let info = DeviceInfo {
        wifi_mac: Some("m".into()),
        ..DeviceInfo::default()
    };
    assert!(s.update_info("D1", info).await.unwrap());
    assert!(!s.update_info("NOPE", DeviceInfo::default()).await.unwrap());
    assert_eq!(s.enrollment("D1").await.unwrap().unwrap().info.wifi_mac.as_deref(), Some("m"));
    let a = s
        .set_attributes(
            "D1",
            [("EMAIL".to_owned(), "a@x".to_owned()), ("USERNAME".into(), "a".into())].into(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.len(), 2);
    let a = s
        .set_attributes("D1", [("USERNAME".to_owned(), String::new())].into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), vec!["EMAIL"]);
    assert!(s.set_attributes("NOPE", Default::default()).await.unwrap().is_none());
    // Resealing only replaces what is still the old value.
    let n = s
        .reseal_tokens(vec![
            Reseal {
                id: "D1".into(),
                unlock_token: Some(("sealed".into(), "sealed2".into())),
                bootstrap_token: None,
            },
            Reseal {
                id: "D1:U1".into(),
                unlock_token: Some(("other".into(), "x".into())),
                bootstrap_token: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(s.enrollment("D1").await.unwrap().unwrap().unlock_token.as_deref(), Some("sealed2"));
    assert!(s.set_bootstrap_token("D1", Some("bt".into()), 120).await.unwrap());
    assert!(!s.set_bootstrap_token("NOPE", None, 120).await.unwrap());
    // Push outcomes land only on the token they were for.
    s.record_pushes(vec![
        PushRecord {
            id: "D1".into(),
            token: "aa".into(),
            at: 130,
            outcome: "Unregistered".into(),
            disable: true,
        },
        PushRecord {
            id: "D1:U1".into(),
            token: "stale".into(),
            at: 130,
            outcome: "accepted".into(),
            disable: false,
        },
    ])
    .await
    .unwrap();
    let p = s.enrollment("D1").await.unwrap().unwrap().push.unwrap();
    assert_eq!((p.last_push_at, p.disabled.as_deref()), (Some(130), Some("Unregistered")));
    assert!(s.enrollment("D1:U1").await.unwrap().unwrap().push.unwrap().last_push_at.is_none());
    s.note_refused_reenroll("D1", 140).await.unwrap();
    s.note_refused_reenroll("D1", 141).await.unwrap();
    let e = s.enrollment("D1").await.unwrap().unwrap();
    assert_eq!((e.refused_reenroll_count, e.refused_reenroll_at), (2, Some(141)));
    s.touch(vec![("D1".into(), 150), ("NOPE".into(), 150)]).await.unwrap();
    assert_eq!(s.enrollment("D1").await.unwrap().unwrap().last_seen_at, 150);
    // CheckOut takes its user channels with it.
    assert!(s.checkout("D1", 160).await.unwrap());
    assert!(!s.checkout("NOPE", 160).await.unwrap());
    for id in ["D1", "D1:U1"] {
        let e = s.enrollment(id).await.unwrap().unwrap();
        assert!(!e.active && e.checked_out_at == Some(160), "{id}");
    }
    // Listing is ordered and paged.
    let all = s.enrollments(None, 10).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["D1", "D1:U1"]);
    assert_eq!(s.enrollments(Some("D1".into()), 10).await.unwrap().len(), 1);
}

async fn queue(s: &Arc<dyn Store>) {
    for id in ["Q1", "Q2"] {
        s.authenticate(enrollment(id, None), false).await.unwrap();
    }
    let a = command("SecurityInfo", None);
    let out = s.enqueue(a.clone(), vec!["Q1".into(), "Q2".into(), "GONE".into()]).await.unwrap();
    assert_eq!((out.queued, out.unknown.clone()), (2, vec!["GONE".to_owned()]));
    // A command for nobody is not stored.
    let nobody = command("DeviceInformation", None);
    let out = s.enqueue(nobody.clone(), vec!["GONE".into()]).await.unwrap();
    assert_eq!((out.queued, out.unknown.clone()), (0, vec!["GONE".to_owned()]));
    assert!(s.command(&nobody.uuid).await.unwrap().is_none());
    let b = command("ProfileList", None);
    s.enqueue(b.clone(), vec!["Q1".into()]).await.unwrap();
    // FIFO; NotNow is skipped for the session, redelivered on Idle.
    assert_eq!(s.next_command("Q1", false).await.unwrap().unwrap().uuid, a.uuid);
    let (o, next) = s.report("Q1", report(&a.uuid, DeliveryStatus::NotNow)).await.unwrap();
    assert_eq!(o, ReportOutcome::NotNowRecorded);
    assert_eq!(next.unwrap().uuid, b.uuid);
    assert_eq!(s.next_command("Q1", false).await.unwrap().unwrap().uuid, a.uuid);
    assert_eq!(s.next_command("Q1", true).await.unwrap().unwrap().uuid, b.uuid);
    let (o, _) = s.report("Q1", report(&b.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(
        o,
        ReportOutcome::Finished {
            request_type: "ProfileList".into()
        }
    );
    // Again, a foreign command, an unknown one: nothing changes.
    for (id, u) in [("Q1", b.uuid.as_str()), ("Q2", b.uuid.as_str()), ("Q1", "nope")] {
        assert_eq!(
            s.report(id, report(u, DeliveryStatus::Error)).await.unwrap().0,
            ReportOutcome::NotPending
        );
    }
    let hist = s.device_commands("Q1", 10).await.unwrap();
    assert_eq!(hist.len(), 2);
    // "No limit" is a limit too.
    assert_eq!(s.device_commands("Q1", usize::MAX).await.unwrap().len(), 2);
    assert!(s.enrollments(None, usize::MAX).await.unwrap().len() >= 2);
    assert!(s.certs(None, usize::MAX).await.is_ok());
    assert_eq!(hist[1].delivery.status, DeliveryStatus::Acknowledged);
    assert_eq!(hist[0].delivery.not_now_count, 1);
    let (rec, deliveries) = s.command(&a.uuid).await.unwrap().unwrap();
    assert_eq!((rec.targets, deliveries.len()), (2, 2));
    assert_eq!(s.clear_queue("Q1", 300).await.unwrap(), 1);
    assert!(s.next_command("Q1", false).await.unwrap().is_none());
    assert_eq!(
        s.command(&a.uuid)
            .await
            .unwrap()
            .unwrap()
            .1
            .iter()
            .find(|d| d.enrollment == "Q1")
            .unwrap()
            .status,
        DeliveryStatus::Cleared
    );
    // Authenticate without keep_queue clears the queue; with it, keeps it.
    s.authenticate(enrollment("Q2", None), true).await.unwrap();
    assert!(s.next_command("Q2", false).await.unwrap().is_some());
    s.authenticate(enrollment("Q2", None), false).await.unwrap();
    assert!(s.next_command("Q2", false).await.unwrap().is_none());

    // Per-device commands and their secrets commit together; unknown targets get nothing.
    let c1 = command("DeviceLock", None);
    let c2 = command("DeviceLock", None);
    let mut sec = secret(10_000);
    sec.enrollment = Some("GONE".into());
    let out = s
        .enqueue_each(
            vec![(c1.clone(), "Q1".into()), (c2.clone(), "GONE".into())],
            vec![
                (SecretKind::Challenge, "sq1".into(), secret(10_000)),
                (SecretKind::Challenge, "sgone".into(), sec),
            ],
        )
        .await
        .unwrap();
    assert_eq!((out.queued, out.unknown), (1, vec!["GONE".to_owned()]));
    assert!(matches!(
        s.consume_secret(SecretKind::Challenge, "sq1", 1).await.unwrap(),
        Consumed::Ok(_)
    ));
    assert_eq!(
        s.consume_secret(SecretKind::Challenge, "sgone", 1).await.unwrap(),
        Consumed::Unknown
    );
    assert!(s.command(&c2.uuid).await.unwrap().is_none() || s.command(&c2.uuid).await.unwrap().unwrap().1.is_empty());
    s.report("Q1", report(&c1.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
}

async fn profiles(s: &Arc<dyn Store>) {
    s.authenticate(enrollment("P1", None), false).await.unwrap();
    let tag = |action| ProfileTag {
        identifier: "com.x".into(),
        action,
        sha256: Some("v1".into()),
    };
    let i1 = command("InstallProfile", Some(tag(ProfileAction::Install)));
    let i2 = command("InstallProfile", Some(tag(ProfileAction::Install)));
    s.enqueue_each(vec![(i1.clone(), "P1".into())], vec![]).await.unwrap();
    s.enqueue(i2.clone(), vec!["P1".into()]).await.unwrap();
    // The newer supersedes the pending older one.
    assert_eq!(s.command(&i1.uuid).await.unwrap().unwrap().1[0].status, DeliveryStatus::Superseded);
    assert_eq!(s.next_command("P1", false).await.unwrap().unwrap().uuid, i2.uuid);
    let dp = &s.device_profiles("P1").await.unwrap()[0];
    assert_eq!(
        (dp.state, dp.command_uuid.as_deref()),
        (ProfileState::Pending, Some(i2.uuid.as_str()))
    );
    // The device had the older one in hand: its answer is recorded (it got
    // 200), the profile's record still follows the newer command, and a NotNow
    // for a withdrawn command changes nothing.
    assert_eq!(
        s.report("P1", report(&i1.uuid, DeliveryStatus::NotNow)).await.unwrap().0,
        ReportOutcome::NotPending
    );
    let (o, next) = s.report("P1", report(&i1.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(
        o,
        ReportOutcome::Finished {
            request_type: "InstallProfile".into()
        }
    );
    assert_eq!(next.unwrap().uuid, i2.uuid);
    let d1 = &s.command(&i1.uuid).await.unwrap().unwrap().1[0];
    assert_eq!(
        (d1.status, d1.result.as_deref()),
        (DeliveryStatus::Acknowledged, Some(&b"<plist/>"[..]))
    );
    assert_eq!(s.device_profiles("P1").await.unwrap()[0].state, ProfileState::Pending);
    assert_eq!(
        s.report("P1", report(&i1.uuid, DeliveryStatus::Acknowledged)).await.unwrap().0,
        ReportOutcome::NotPending,
        "once"
    );
    // The result updates the profile's state in the same transaction.
    let mut r = report(&i2.uuid, DeliveryStatus::Error);
    r.error_chain = vec![mdmd::protocol::ErrorChainItem {
        code: 1000,
        domain: "MCProfileErrorDomain".into(),
        localized_description: "no".into(),
        us_english_description: None,
    }];
    s.report("P1", r).await.unwrap();
    let dp = &s.profile_devices("com.x").await.unwrap()[0];
    assert_eq!(
        (dp.state, dp.enrollment.as_str(), dp.error_chain.len()),
        (ProfileState::Failed, "P1", 1)
    );
    let i3 = command("InstallProfile", Some(tag(ProfileAction::Install)));
    s.enqueue(i3.clone(), vec!["P1".into()]).await.unwrap();
    s.report("P1", report(&i3.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(s.device_profiles("P1").await.unwrap()[0].state, ProfileState::Installed);
    // ProfileList reconciliation: missing, then back.
    assert_eq!(s.reconcile_profiles("P1", vec!["other".into()], 300).await.unwrap(), 1);
    assert_eq!(s.device_profiles("P1").await.unwrap()[0].state, ProfileState::Missing);
    assert_eq!(s.reconcile_profiles("P1", vec!["com.x".into()], 301).await.unwrap(), 1);
    assert_eq!(s.device_profiles("P1").await.unwrap()[0].state, ProfileState::Installed);
    let rm = command("RemoveProfile", Some(tag(ProfileAction::Remove)));
    s.enqueue(rm.clone(), vec!["P1".into()]).await.unwrap();
    assert_eq!(s.device_profiles("P1").await.unwrap()[0].state, ProfileState::RemovePending);
    s.report("P1", report(&rm.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(s.device_profiles("P1").await.unwrap()[0].state, ProfileState::Removed);
    // Templates.
    let t = ProfileTemplate {
        identifier: "com.x".into(),
        uuid: "U".into(),
        display_name: "X".into(),
        payload_types: vec![],
        variables: vec![],
        xml: b"<plist/>".to_vec(),
        sha256: "v1".into(),
        warnings: vec![],
        source: "api".into(),
        created_at: 1,
        updated_at: 1,
    };
    assert!(s.put_template(t.clone()).await.unwrap().is_none());
    let old = s
        .put_template(ProfileTemplate {
            sha256: "v2".into(),
            created_at: 5,
            updated_at: 5,
            ..t.clone()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.sha256, "v1");
    let now = s.template("com.x").await.unwrap().unwrap();
    assert_eq!((now.sha256.as_str(), now.created_at), ("v2", 1), "created_at is kept");
    assert_eq!(s.templates().await.unwrap().len(), 1);
    assert!(s.delete_template("com.x").await.unwrap());
    assert!(!s.delete_template("com.x").await.unwrap());
}

async fn pki(s: &Arc<dyn Store>) {
    for i in 0..5 {
        s.record_cert(cert(&format!("A{i}"), &format!("ha{i}"))).await.unwrap();
    }
    assert_eq!(s.cert_by_serial("A3").await.unwrap().unwrap().sha256, "ha3");
    assert!(s.cert_by_serial("ZZ").await.unwrap().is_none());
    let page = s.certs(None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = s.certs(Some(page[1].serial.clone()), 100).await.unwrap();
    assert!(rest.iter().all(|c| c.serial > page[1].serial));
    assert!(s.revoke_cert("A1", 9).await.unwrap());
    assert!(!s.revoke_cert("ZZ", 9).await.unwrap());
    assert_eq!(s.cert_by_hash("ha1").await.unwrap().unwrap().revoked_at, Some(9));
    // Purpose, device, vouching and what a certificate renews are kept as written;
    // a challenge keeps the identity it renews.
    let mut renewed = cert("R1", "hr1");
    renewed.purpose = Some("mdm".into());
    renewed.udid = Some("U1".into());
    renewed.vouched = true;
    renewed.renewed_from = Some("ha1".into());
    s.record_cert(renewed.clone()).await.unwrap();
    assert_eq!(s.cert_by_hash("hr1").await.unwrap(), Some(renewed));
    let mut ch = secret(100);
    ch.renews = Some("ha1".into());
    s.add_secret(SecretKind::Challenge, "renewing", ch.clone()).await.unwrap();
    assert_eq!(s.secret(SecretKind::Challenge, "renewing").await.unwrap(), Some(ch));
    // Single-use secrets: once, not after expiry, kinds apart.
    s.add_secret(SecretKind::Invitation, "i", secret(100)).await.unwrap();
    s.add_secret(SecretKind::Challenge, "old", secret(10)).await.unwrap();
    assert_eq!(s.consume_secret(SecretKind::Challenge, "i", 50).await.unwrap(), Consumed::Unknown);
    assert!(matches!(
        s.consume_secret(SecretKind::Invitation, "i", 50).await.unwrap(),
        Consumed::Ok(_)
    ));
    assert_eq!(
        s.consume_secret(SecretKind::Invitation, "i", 51).await.unwrap(),
        Consumed::AlreadyUsed
    );
    assert_eq!(s.consume_secret(SecretKind::Challenge, "old", 50).await.unwrap(), Consumed::Expired);
    // Read without using (SCEP proxy tokens, upload tokens): nothing changes until consumed.
    s.add_secret(SecretKind::ScepProxy, "p", secret(100)).await.unwrap();
    s.add_secret(SecretKind::DerivedUpload, "u", secret(100)).await.unwrap();
    assert!(s.secret(SecretKind::Challenge, "p").await.unwrap().is_none(), "kinds apart");
    let p = s.secret(SecretKind::ScepProxy, "p").await.unwrap().unwrap();
    assert_eq!((p.expires_at, p.used_at), (100, None));
    assert_eq!(s.secret(SecretKind::ScepProxy, "p").await.unwrap().unwrap().used_at, None);
    assert!(matches!(
        s.consume_secret(SecretKind::ScepProxy, "p", 60).await.unwrap(),
        Consumed::Ok(_)
    ));
    assert_eq!(s.secret(SecretKind::ScepProxy, "p").await.unwrap().unwrap().used_at, Some(60));
    assert!(s.secret(SecretKind::DerivedUpload, "u").await.unwrap().is_some());
    assert!(s.secret(SecretKind::DerivedUpload, "nope").await.unwrap().is_none());
    // A SCEP issuance: the challenge used and the certificate recorded in one commit, or neither.
    s.add_secret(SecretKind::Challenge, "c1", secret(100)).await.unwrap();
    assert!(matches!(
        s.record_cert_consuming(cert("C1", "hc1"), SecretKind::Challenge, "c1", 70)
            .await
            .unwrap(),
        Consumed::Ok(_)
    ));
    assert_eq!(s.cert_by_serial("C1").await.unwrap().unwrap().sha256, "hc1");
    assert_eq!(s.secret(SecretKind::Challenge, "c1").await.unwrap().unwrap().used_at, Some(70));
    assert_eq!(
        s.record_cert_consuming(cert("C2", "hc2"), SecretKind::Challenge, "c1", 71)
            .await
            .unwrap(),
        Consumed::AlreadyUsed
    );
    assert!(
        s.cert_by_serial("C2").await.unwrap().is_none(),
        "nothing written with a used challenge"
    );
    assert!(s.cert_by_hash("hc2").await.unwrap().is_none());
    assert_eq!(
        s.record_cert_consuming(cert("C3", "hc3"), SecretKind::Challenge, "none", 71)
            .await
            .unwrap(),
        Consumed::Unknown
    );
    assert!(s.cert_by_serial("C3").await.unwrap().is_none());
    // Pruning: only secrets that expired before the cut-off go, of every kind, in bounded batches.
    assert_eq!(s.prune_secrets(50, 1000).await.unwrap(), 1, "only `old` expired before 50");
    assert_eq!(s.consume_secret(SecretKind::Challenge, "old", 50).await.unwrap(), Consumed::Unknown);
    assert_eq!(
        s.consume_secret(SecretKind::Invitation, "i", 52).await.unwrap(),
        Consumed::AlreadyUsed,
        "a used secret that has not expired is kept"
    );
    assert!(s.secret(SecretKind::DerivedUpload, "u").await.unwrap().is_some());
    assert_eq!(s.prune_secrets(101, 3).await.unwrap(), 3, "bounded by the limit");
    assert_eq!(s.prune_secrets(101, 3).await.unwrap(), 2);
    assert_eq!(s.prune_secrets(101, 3).await.unwrap(), 0);
    for (k, h) in [
        (SecretKind::Challenge, "renewing"),
        (SecretKind::Invitation, "i"),
        (SecretKind::ScepProxy, "p"),
        (SecretKind::DerivedUpload, "u"),
        (SecretKind::Challenge, "c1"),
    ] {
        assert!(s.secret(k, h).await.unwrap().is_none(), "{h} pruned");
    }
}

async fn leases(s: &Arc<dyn Store>) {
    // Free: taken; held by another: refused; by the holder: extended; expired: taken over.
    assert!(s.acquire_lease("sweep", "a", 1_000, 500).await.unwrap());
    assert!(!s.acquire_lease("sweep", "b", 1_200, 500).await.unwrap());
    assert!(s.acquire_lease("sweep", "a", 1_400, 500).await.unwrap());
    assert!(!s.acquire_lease("sweep", "b", 1_800, 500).await.unwrap(), "extended to 1900");
    assert!(s.acquire_lease("sweep", "b", 1_900, 500).await.unwrap());
    assert!(s.acquire_lease("other", "a", 1_900, 500).await.unwrap(), "leases are independent");
    // Release only by the holder.
    s.release_lease("sweep", "a").await.unwrap();
    assert!(!s.acquire_lease("sweep", "a", 2_000, 500).await.unwrap());
    s.release_lease("sweep", "b").await.unwrap();
    assert!(s.acquire_lease("sweep", "a", 2_000, 500).await.unwrap());
}

async fn settings(s: &Arc<dyn Store>) {
    assert!(s.setting("push").await.unwrap().is_none());
    assert_eq!(s.put_setting("push", b"one".to_vec(), 10).await.unwrap(), 1);
    assert_eq!(s.put_setting("push", b"two".to_vec(), 11).await.unwrap(), 2);
    let v = s.setting("push").await.unwrap().unwrap();
    assert_eq!((v.value.as_slice(), v.updated_at, v.version), (&b"two"[..], 11, 2));
    // First writer wins: every instance agrees on one value.
    assert_eq!(s.setting_or_insert("topic", b"t1".to_vec(), 12).await.unwrap().value, b"t1");
    assert_eq!(s.setting_or_insert("topic", b"t2".to_vec(), 13).await.unwrap().value, b"t1");
}

/// Concurrent writers: every result lands, each device's queue stays FIFO.
async fn concurrency(s: &Arc<dyn Store>) {
    let ids: Vec<String> = (0..20).map(|i| format!("C{i:02}")).collect();
    for id in &ids {
        s.authenticate(enrollment(id, None), false).await.unwrap();
    }
    let cmds: Vec<CommandRecord> = (0..5).map(|_| command("DeviceInformation", None)).collect();
    for c in &cmds {
        s.enqueue(c.clone(), ids.clone()).await.unwrap();
    }
    let mut tasks = Vec::new();
    for id in ids.clone() {
        let s = s.clone();
        let want: Vec<String> = cmds.iter().map(|c| c.uuid.clone()).collect();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let mut next = s.next_command(&id, true).await.unwrap();
            while let Some(c) = next {
                got.push(c.uuid.clone());
                let (o, n) = s.report(&id, report(&c.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
                assert!(matches!(o, ReportOutcome::Finished { .. }));
                next = n;
            }
            assert_eq!(got, want, "{id}: FIFO, each once");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, ds) = s.command(&cmds[4].uuid).await.unwrap().unwrap();
    assert_eq!(ds.len(), 20);
    assert!(ds.iter().all(|d| d.status == DeliveryStatus::Acknowledged));
}

async fn inventory(s: &Arc<dyn Store>) {
    s.authenticate(enrollment("I1", None), false).await.unwrap();
    s.authenticate(enrollment("I2", None), false).await.unwrap();
    let info = |mac: &str| DeviceInfo {
        wifi_mac: Some(mac.into()),
        serial_number: Some("F2LXK0ABC".into()),
        imei: Some("35 145120 840121 3".into()),
        phone_number: Some("+1 (555) 010-0199".into()),
        ..DeviceInfo::default()
    };
    s.update_info("I1", info("AA:BB:CC:00:11:22")).await.unwrap();
    // Found by any spelling of its identifiers.
    for (k, v) in [
        (LookupKey::WifiMac, "aabb.cc00.1122"),
        (LookupKey::WifiMac, "AA-BB-CC-00-11-22"),
        (LookupKey::Serial, "f2lxk0abc"),
        (LookupKey::Imei, "351451208401213"),
        (LookupKey::Phone, "15550100199"),
        (LookupKey::Udid, "I1"),
    ] {
        assert_eq!(s.find(k, v).await.unwrap(), vec!["I1".to_owned()], "{k:?} {v}");
    }
    assert!(s.find(LookupKey::WifiMac, "").await.unwrap().is_empty());
    // The index follows changes: the old MAC finds nothing, the new one the device.
    s.update_info("I1", info("aa:bb:cc:00:11:33")).await.unwrap();
    assert!(s.find(LookupKey::WifiMac, "aa:bb:cc:00:11:22").await.unwrap().is_empty());
    assert_eq!(s.find(LookupKey::WifiMac, "aabbcc001133").await.unwrap(), vec!["I1".to_owned()]);
    // Two devices, one serial (a replaced board): both are found.
    s.update_info("I2", info("aa:bb:cc:00:11:44")).await.unwrap();
    assert_eq!(
        s.find(LookupKey::Serial, "F2LXK0ABC").await.unwrap(),
        vec!["I1".to_owned(), "I2".to_owned()]
    );
    // Users: admin attributes, and a user channel's short name, find the device.
    s.set_attributes("I2", [("EMAIL".to_owned(), "Ann@Example.com".to_owned())].into())
        .await
        .unwrap();
    assert_eq!(s.find(LookupKey::User, "ann@example.com").await.unwrap(), vec!["I2".to_owned()]);
    let mut t = token("I1:U1", "dd", 300);
    t.user_short_name = Some("bob".into());
    s.token_update("I1:U1", "I1", t).await.unwrap();
    assert_eq!(s.find(LookupKey::User, "Bob").await.unwrap(), vec!["I1".to_owned()]);

    // Inventory: one record per kind, replaced by the next report; unknown devices refused.
    let item = |kind: &str, at: i64, v: serde_json::Value| InventoryItem {
        kind: kind.into(),
        reported_at: at,
        data: v,
    };
    assert!(!s
        .put_inventory("NOPE", item("SecurityInfo", 1, serde_json::json!({})))
        .await
        .unwrap());
    assert!(s
        .put_inventory("I1", item("SecurityInfo", 1, serde_json::json!({"PasscodePresent": false})))
        .await
        .unwrap());
    assert!(s
        .put_inventory("I1", item("SecurityInfo", 2, serde_json::json!({"PasscodePresent": true})))
        .await
        .unwrap());
    assert!(s.put_inventory("I1", item("ProfileList", 2, serde_json::json!([]))).await.unwrap());
    let inv = s.inventory("I1").await.unwrap();
    assert_eq!(inv.len(), 2);
    let sec = inv.iter().find(|i| i.kind == "SecurityInfo").unwrap();
    assert_eq!((sec.reported_at, &sec.data["PasscodePresent"]), (2, &serde_json::json!(true)));
    assert!(s.inventory("I2").await.unwrap().is_empty());

    // Compliance: per device, listed by state, paged.
    let rec = |state, reasons: &[&str]| ComplianceRecord {
        state,
        reasons: reasons.iter().map(|r| r.to_string()).collect(),
        evaluated_at: 5,
        policy: "p1".into(),
        recheck_at: None,
    };
    assert!(!s.set_compliance("NOPE", rec(ComplianceState::Compliant, &[])).await.unwrap());
    assert!(s
        .set_compliance("I1", rec(ComplianceState::NonCompliant, &["no passcode"]))
        .await
        .unwrap());
    assert!(s
        .set_compliance("I2", rec(ComplianceState::NonCompliant, &["old OS"]))
        .await
        .unwrap());
    assert_eq!(s.compliance("I1").await.unwrap().unwrap().reasons, vec!["no passcode"]);
    let non = s.by_compliance(ComplianceState::NonCompliant, None, 1).await.unwrap();
    assert_eq!(non, vec!["I1".to_owned()]);
    let non = s.by_compliance(ComplianceState::NonCompliant, Some("I1".into()), 10).await.unwrap();
    assert_eq!(non, vec!["I2".to_owned()]);
    s.set_compliance("I1", rec(ComplianceState::Compliant, &[])).await.unwrap();
    assert_eq!(
        s.by_compliance(ComplianceState::NonCompliant, None, 10).await.unwrap(),
        vec!["I2".to_owned()]
    );
    assert_eq!(
        s.by_compliance(ComplianceState::Compliant, None, 10).await.unwrap(),
        vec!["I1".to_owned()]
    );

    // The sweep's schedule: per kind, earliest first, moved and cleared in place.
    s.schedule(
        "k1",
        vec![
            ("S3".into(), Some(30)),
            ("S1".into(), Some(10)),
            ("S2".into(), Some(20)),
            ("S1".into(), Some(15)),
        ],
    )
    .await
    .unwrap();
    s.schedule("k2", vec![("S1".into(), Some(1))]).await.unwrap();
    let due = |v: Vec<(String, i64)>| v.into_iter().map(|(i, d)| format!("{i}@{d}")).collect::<Vec<_>>();
    assert_eq!(
        due(s.due("k1", 25, 10).await.unwrap()),
        ["S1@15", "S2@20"],
        "the last of one id wins"
    );
    assert_eq!(due(s.due("k1", 100, 2).await.unwrap()), ["S1@15", "S2@20"]);
    assert_eq!(due(s.due("k1", 14, 10).await.unwrap()), Vec::<String>::new());
    s.schedule("k1", vec![("S2".into(), None), ("S3".into(), Some(5)), ("GONE".into(), None)])
        .await
        .unwrap();
    assert_eq!(due(s.due("k1", 100, 10).await.unwrap()), ["S3@5", "S1@15"]);
    assert_eq!(due(s.due("k2", 100, 10).await.unwrap()), ["S1@1"]);
    assert_eq!(due(s.due("k0", i64::MAX, 10).await.unwrap()), Vec::<String>::new());
}

async fn records(s: &Arc<dyn Store>) {
    use serde_json::json;
    assert!(s.record("accounts", "ise").await.unwrap().is_none());
    // Create only if absent; then compare-and-set on the version.
    assert_eq!(
        s.put_record("accounts", "ise", json!({"role": "nac"}), 1, Some(0)).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        s.put_record("accounts", "ise", json!({"role": "x"}), 2, Some(0)).await.unwrap(),
        None
    );
    assert_eq!(
        s.put_record("accounts", "ise", json!({"role": "admin"}), 3, Some(1)).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        s.put_record("accounts", "ise", json!({"role": "stale"}), 4, Some(1)).await.unwrap(),
        None
    );
    assert_eq!(
        s.put_record("accounts", "ops", json!({"role": "operator"}), 5, None).await.unwrap(),
        Some(1)
    );
    s.put_record("tokens", "all", json!([]), 5, None).await.unwrap();
    let r = s.record("accounts", "ise").await.unwrap().unwrap();
    assert_eq!((r.value["role"].as_str(), r.version, r.updated_at), (Some("admin"), 2, 3));
    let all = s.records("accounts").await.unwrap();
    assert_eq!(
        all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        vec!["ise", "ops"],
        "one collection, by key"
    );
    assert!(!s.delete_record("accounts", "ise", Some(1)).await.unwrap(), "stale version");
    assert!(s.delete_record("accounts", "ise", Some(2)).await.unwrap());
    assert!(!s.delete_record("accounts", "ise", None).await.unwrap());
    assert_eq!(s.records("accounts").await.unwrap().len(), 1);

    // Paging, batch reads and batch compare-and-set (the fleet's per-device records).
    let w = |k: &str, expect| RecordWrite {
        collection: "fleet".into(),
        key: k.into(),
        value: json!({"k": k}),
        expect,
    };
    assert_eq!(
        s.put_records(vec![w("b", Some(0)), w("a", Some(0)), w("c", None)], 7)
            .await
            .unwrap(),
        vec![Some(1), Some(1), Some(1)]
    );
    assert_eq!(
        s.put_records(vec![w("a", Some(1)), w("b", Some(0)), w("z", Some(3))], 8)
            .await
            .unwrap(),
        vec![Some(2), None, None],
        "each write is checked on its own; the failed ones write nothing"
    );
    assert!(s.record("fleet", "z").await.unwrap().is_none());
    let page = s.records_after("fleet", None, 2).await.unwrap();
    assert_eq!(page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(page[0].1.version, 2);
    let rest = s.records_after("fleet", Some("b".into()), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        vec!["c"],
        "strictly after, one collection"
    );
    let got = s.records_of("fleet", vec!["c".into(), "nope".into(), "a".into()]).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.as_ref().map(|r| r.version)).collect::<Vec<_>>(),
        vec![Some(1), None, Some(2)]
    );
}

/// Everything a backend must do, on a fresh store.
/// A command with a replacement key withdraws the enrollment's pending ones
/// with the same key (NotNow'ed included), not other keys, other commands,
/// other enrollments or answered ones; a late answer to a withdrawn one
/// changes nothing.
async fn supersede(s: &Arc<dyn Store>) {
    for id in ["S1", "S2"] {
        s.authenticate(enrollment(id, None), false).await.unwrap();
    }
    let keyed = |k: &str| command("DeclarativeManagement", None).superseding(k);
    let plain = command("DeviceInformation", None);
    s.enqueue(plain.clone(), vec!["S1".into()]).await.unwrap();
    let first = keyed("ddm");
    s.enqueue(first.clone(), vec!["S1".into(), "S2".into()]).await.unwrap();
    let other_key = keyed("other");
    s.enqueue_each(vec![(other_key.clone(), "S1".into())], vec![]).await.unwrap();
    // S1 answers the plain command, and NotNow to the first keyed one.
    s.report("S1", report(&plain.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    s.report("S1", report(&first.uuid, DeliveryStatus::NotNow)).await.unwrap();
    let second = keyed("ddm");
    let third = keyed("ddm");
    s.enqueue_each(vec![(second.clone(), "S1".into())], vec![]).await.unwrap();
    s.enqueue_each(vec![(third.clone(), "S1".into())], vec![]).await.unwrap();
    let status = |hist: &[mdmd::store::DeviceCommand], uuid: &str| hist.iter().find(|c| c.command_uuid == uuid).map(|c| c.delivery.status);
    let hist = s.device_commands("S1", 100).await.unwrap();
    assert_eq!(status(&hist, &plain.uuid), Some(DeliveryStatus::Acknowledged));
    assert_eq!(status(&hist, &first.uuid), Some(DeliveryStatus::Superseded));
    assert_eq!(status(&hist, &second.uuid), Some(DeliveryStatus::Superseded));
    assert_eq!(status(&hist, &third.uuid), Some(DeliveryStatus::Pending));
    assert_eq!(status(&hist, &other_key.uuid), Some(DeliveryStatus::Pending));
    let pending: Vec<&str> = hist
        .iter()
        .filter(|c| c.delivery.status.is_pending() && c.request_type == "DeclarativeManagement")
        .map(|c| c.command_uuid.as_str())
        .collect();
    assert_eq!(pending.len(), 2, "one per key: {pending:?}");
    // The queue serves what is left, in order.
    assert_eq!(s.next_command("S1", false).await.unwrap().unwrap().uuid, other_key.uuid);
    s.report("S1", report(&other_key.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(s.next_command("S1", false).await.unwrap().unwrap().uuid, third.uuid);
    // S2 still has the first.
    let hist2 = s.device_commands("S2", 100).await.unwrap();
    assert_eq!(status(&hist2, &first.uuid), Some(DeliveryStatus::Pending));
    // A late final answer to a withdrawn command (the device had it in hand) is
    // recorded, once; the queue is not touched: the newest is still pending.
    assert_eq!(
        s.report("S1", report(&first.uuid, DeliveryStatus::Acknowledged)).await.unwrap().0,
        ReportOutcome::Finished {
            request_type: "DeclarativeManagement".into()
        }
    );
    assert_eq!(
        s.report("S1", report(&first.uuid, DeliveryStatus::Acknowledged)).await.unwrap().0,
        ReportOutcome::NotPending
    );
    let hist = s.device_commands("S1", 100).await.unwrap();
    assert_eq!(status(&hist, &first.uuid), Some(DeliveryStatus::Acknowledged));
    assert_eq!(status(&hist, &third.uuid), Some(DeliveryStatus::Pending));
    assert_eq!(s.next_command("S1", false).await.unwrap().unwrap().uuid, third.uuid);
    // The key is kept with the command.
    assert_eq!(s.command(&third.uuid).await.unwrap().unwrap().0.supersede.as_deref(), Some("ddm"));
}

async fn conformance(s: Arc<dyn Store>) {
    checkin(&s).await;
    queue(&s).await;
    supersede(&s).await;
    profiles(&s).await;
    pki(&s).await;
    leases(&s).await;
    settings(&s).await;
    inventory(&s).await;
    records(&s).await;
    outbox(&s).await;
    concurrency(&s).await;
    fanout(&s).await;
}

fn event(id: &str, created_at: i64) -> OutboxEvent {
    OutboxEvent {
        event_id: id.into(),
        topic: "mdm.Connect".into(),
        sink: "http://127.0.0.1:9/hook".into(),
        body: format!("{{\"event_id\":\"{id}\"}}"),
        created_at,
        attempts: 0,
        next_at: 0,
        last_error: None,
    }
}

/// The webhook outbox: events stored with the state change (report,
/// TokenUpdate) or alone, due in order, retried later, removed when delivered.
async fn outbox(s: &Arc<dyn Store>) {
    assert_eq!(s.outbox_stats().await.unwrap(), OutboxStats::default());
    s.add_events(vec![event("e1", 10), event("e2", 11)]).await.unwrap();
    // With a report: stored in its transaction (also for a report already applied).
    s.authenticate(enrollment("OB1", None), false).await.unwrap();
    let c = command("DeviceLock", None);
    s.enqueue(c.clone(), vec!["OB1".into()]).await.unwrap();
    let mut r = report(&c.uuid, DeliveryStatus::Acknowledged);
    r.events = vec![event("e3", 12)];
    s.report("OB1", r.clone()).await.unwrap();
    r.events = vec![event("e4", 13)];
    assert_eq!(s.report("OB1", r).await.unwrap().0, ReportOutcome::NotPending);
    // With a TokenUpdate; not for an unknown enrollment.
    let mut t = token("OB1", "aa", 14);
    t.events = vec![event("e5", 14)];
    assert!(s.token_update("OB1", "OB1", t).await.unwrap().is_some());
    let mut t = token("NOPE-OB", "bb", 15);
    t.events = vec![event("lost", 15)];
    assert!(s.token_update("NOPE-OB", "NOPE-OB", t).await.unwrap().is_none());
    let due = s.due_events(1_000, 100).await.unwrap();
    let ids: Vec<&str> = due.iter().map(|e| e.event.event_id.as_str()).collect();
    assert_eq!(ids, vec!["e1", "e2", "e3", "e4", "e5"]);
    assert!(due.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        s.outbox_stats().await.unwrap(),
        OutboxStats {
            depth: 5,
            oldest_created_at: Some(10)
        }
    );
    // A failed attempt: not due until its time.
    let mut e = due[0].event.clone();
    e.attempts = 1;
    e.next_at = 5_000;
    e.last_error = Some("HTTP 500".into());
    s.retry_event(due[0].seq, e.clone()).await.unwrap();
    let ids: Vec<String> = s
        .due_events(1_000, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.event_id)
        .collect();
    assert_eq!(ids, vec!["e2", "e3", "e4", "e5"]);
    assert_eq!(s.due_events(1_000, 2).await.unwrap().len(), 2);
    let later = s.due_events(5_000, 100).await.unwrap();
    assert_eq!(later[0].event, e);
    for d in later {
        s.remove_event(d.seq).await.unwrap();
    }
    assert_eq!(s.outbox_stats().await.unwrap().depth, 0);
    assert!(s.due_events(i64::MAX, 10).await.unwrap().is_empty());
}

/// A populated store for copying: the conformance data plus a pending queue.
async fn populated(s: Arc<dyn Store>) -> CommandRecord {
    conformance(s.clone()).await;
    s.authenticate(enrollment("M1", None), false).await.unwrap();
    let a = command("DeviceLock", None);
    let b = command("ProfileList", None).superseding("copied-key");
    s.enqueue(a.clone(), vec!["M1".into()]).await.unwrap();
    s.enqueue(b.clone(), vec!["M1".into()]).await.unwrap();
    s.report("M1", report(&a.uuid, DeliveryStatus::NotNow)).await.unwrap();
    a
}

/// After a copy the target serves the same queue and keeps FIFO for new commands.
async fn serves_copied_queue(t: &Arc<dyn Store>, first: &CommandRecord) {
    assert_eq!(t.next_command("M1", false).await.unwrap().unwrap().uuid, first.uuid);
    let c = command("SecurityInfo", None);
    t.enqueue(c.clone(), vec!["M1".into()]).await.unwrap();
    let hist = t.device_commands("M1", 10).await.unwrap();
    assert_eq!(hist.last().unwrap().command_uuid, c.uuid, "new commands queue after copied ones");
    assert_eq!(hist[0].delivery.status, DeliveryStatus::NotNow);
    // Replacement keys are copied with their commands.
    let keyed = t.command(&hist[1].command_uuid).await.unwrap().unwrap().0;
    assert_eq!(keyed.supersede.as_deref(), Some("copied-key"));
}

#[tokio::test]
async fn redb_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
    conformance(s).await;
}

/// Commands to many enrollments (redb writes them as fan-outs when they reach the policy's size):
/// FIFO with per-device commands around them, NotNow, results, clearing, history and counts, and
/// settling (the last pending enrollments get ordinary queue entries) keep every answer the same.
async fn fanout(s: &Arc<dyn Store>) {
    let ids: Vec<String> = (0..8).map(|i| format!("F{i}")).collect();
    for id in &ids {
        s.authenticate(enrollment(id, None), false).await.unwrap();
    }
    let before = s.counts().await.unwrap().pending_commands;
    let solo = command("ProfileList", None);
    s.enqueue(solo.clone(), vec!["F0".into()]).await.unwrap();
    let all = command("SecurityInfo", None);
    let out = s
        .enqueue(all.clone(), ids.iter().cloned().chain(["GONE".into()]).collect())
        .await
        .unwrap();
    assert_eq!(out.queued, 8);
    let later = command("CertificateList", None);
    s.enqueue(later.clone(), vec!["F0".into(), "F1".into()]).await.unwrap();
    assert_eq!(s.counts().await.unwrap().pending_commands, before + 1 + 8 + 2);
    // F0: its own command first, then the fan-out, then the later one.
    assert_eq!(s.next_command("F0", false).await.unwrap().unwrap().uuid, solo.uuid);
    let (_, next) = s.report("F0", report(&solo.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(next.unwrap().uuid, all.uuid);
    // NotNow: skipped for the session, offered again on the next poll.
    let (o, next) = s.report("F0", report(&all.uuid, DeliveryStatus::NotNow)).await.unwrap();
    assert_eq!(o, ReportOutcome::NotNowRecorded);
    assert_eq!(next.unwrap().uuid, later.uuid);
    assert_eq!(s.next_command("F0", true).await.unwrap().unwrap().uuid, later.uuid);
    assert_eq!(s.next_command("F0", false).await.unwrap().unwrap().uuid, all.uuid);
    let hist = s.device_commands("F0", 10).await.unwrap();
    let order: Vec<&str> = hist.iter().map(|h| h.command_uuid.as_str()).collect();
    assert_eq!(order, vec![solo.uuid.as_str(), all.uuid.as_str(), later.uuid.as_str()]);
    assert_eq!(hist[1].delivery.status, DeliveryStatus::NotNow);
    assert_eq!(s.device_commands("F0", 2).await.unwrap()[0].command_uuid, all.uuid);
    // Results from most devices: the fan-out settles on the way without changing any answer.
    for id in &ids[2..7] {
        assert_eq!(s.next_command(id, false).await.unwrap().unwrap().uuid, all.uuid);
        let (o, next) = s.report(id, report(&all.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
        assert!(matches!(o, ReportOutcome::Finished { .. }));
        assert!(next.is_none(), "{id}");
        assert_eq!(
            s.report(id, report(&all.uuid, DeliveryStatus::Error)).await.unwrap().0,
            ReportOutcome::NotPending
        );
        let h = s.device_commands(id, 10).await.unwrap();
        assert_eq!((h.len(), h[0].delivery.status), (1, DeliveryStatus::Acknowledged));
    }
    assert_eq!(s.counts().await.unwrap().pending_commands, before + 3 + 2);
    // F0 still has the NotNow'ed one (skipped for the session), F1 and F7 the plain one.
    assert_eq!(s.next_command("F0", true).await.unwrap().unwrap().uuid, later.uuid);
    assert_eq!(s.next_command("F0", false).await.unwrap().unwrap().uuid, all.uuid);
    assert_eq!(s.next_command("F7", true).await.unwrap().unwrap().uuid, all.uuid);
    assert_eq!(
        s.device_commands("F7", 10).await.unwrap()[0].delivery.status,
        DeliveryStatus::Pending
    );
    let (_, next) = s.report("F0", report(&all.uuid, DeliveryStatus::Error)).await.unwrap();
    assert_eq!(next.unwrap().uuid, later.uuid);
    // Clearing a device clears its part of the fan-out and its own commands.
    assert_eq!(s.clear_queue("F1", 500).await.unwrap(), 2);
    assert!(s.next_command("F1", false).await.unwrap().is_none());
    assert_eq!(
        s.device_commands("F1", 10).await.unwrap()[0].delivery.status,
        DeliveryStatus::Cleared
    );
    let (rec, deliveries) = s.command(&all.uuid).await.unwrap().unwrap();
    assert_eq!((rec.targets, deliveries.len()), (8, 8));
    let status = |id: &str| deliveries.iter().find(|d| d.enrollment == id).unwrap().status;
    assert_eq!(
        [status("F0"), status("F1"), status("F2"), status("F7")],
        [
            DeliveryStatus::Error,
            DeliveryStatus::Cleared,
            DeliveryStatus::Acknowledged,
            DeliveryStatus::Pending
        ]
    );
    // F1 answers the cleared fan-out command after all: recorded, the fan-out's count untouched.
    let (o, _) = s.report("F1", report(&all.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert!(matches!(o, ReportOutcome::Finished { .. }));
    assert!(s.next_command("F1", false).await.unwrap().is_none());
    // Re-enrollment without keep_queue clears too; the last device finishes the fan-out.
    s.authenticate(enrollment("F7", None), false).await.unwrap();
    assert!(s.next_command("F7", false).await.unwrap().is_none());
    s.report("F0", report(&later.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(s.counts().await.unwrap().pending_commands, before);
    // A fan-out to every device again, then a token update sees it pending.
    let again = command("DeviceInformation", None);
    s.enqueue(again.clone(), ids.clone()).await.unwrap();
    assert_eq!(s.token_update("F3", "F3", token("F3", "t2", 700)).await.unwrap(), Some(true));
}

#[tokio::test]
async fn redb_fanouts_conform() {
    use mdmd::store::redb::FanoutPolicy;
    // Fan-outs from two targets settling at their last quarter; the same with at most one open
    // (a second one settles the first at once).
    for max_open in [64, 1] {
        let dir = tempfile::tempdir().unwrap();
        let p = FanoutPolicy {
            min_targets: 2,
            settle_at: 0,
            max_open,
        };
        let s: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("f.redb")).unwrap().with_fanout(p));
        fanout(&s).await;
    }
    // The whole suite with every command a fan-out (single targets too), settling only at zero,
    // and a copy of what it leaves to a store with the default policy.
    let dir = tempfile::tempdir().unwrap();
    let p = FanoutPolicy {
        min_targets: 1,
        settle_at: 0,
        max_open: 10_000,
    };
    let s: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("g.redb")).unwrap().with_fanout(p));
    conformance(s.clone()).await;
    let b: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("h.redb")).unwrap());
    let rep = mdmd::store::copy::copy_all(&*s, &*b).await.unwrap();
    assert!(rep.verified(), "{rep:?}");
}

/// A store written before the `enrolled` index existed gets it at open: its enrollments stay targets.
#[tokio::test]
async fn redb_builds_missing_enrollment_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        s.authenticate(enrollment("OLD1", None), false).await.unwrap();
    }
    // Make it look like an older store (the writer thread lets go of the file when it sees the drop).
    let db = (0..100)
        .find_map(|_| {
            ::redb::Database::open(&path).ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                None
            })
        })
        .expect("reopen");
    let txn = db.begin_write().unwrap();
    assert!(txn.delete_table(::redb::TableDefinition::<&str, ()>::new("enrolled")).unwrap());
    txn.open_table(::redb::TableDefinition::<&str, u64>::new("meta"))
        .unwrap()
        .remove("enrolled_version")
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let s = RedbStore::open(&path).unwrap();
    let out = s
        .enqueue(command("SecurityInfo", None), vec!["OLD1".into(), "NEW".into()])
        .await
        .unwrap();
    assert_eq!((out.queued, out.unknown), (1, vec!["NEW".to_owned()]));
}

#[tokio::test]
async fn redb_copy_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("a.redb")).unwrap());
    let first = populated(a.clone()).await;
    let b: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("b.redb")).unwrap());
    let rep = mdmd::store::copy::copy_all(&*a, &*b).await.unwrap();
    assert!(rep.verified(), "{rep:?}");
    assert!(rep.tables["deliveries"].0.rows > 100);
    serves_copied_queue(&b, &first).await;
}

/// The round-trip counter is one per process: the PostgreSQL tests here take turns.
static PG_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// On enrollment `RT` (identity `h1`) with `a` then `b` queued: `Idle` gets `a`, NotNow for `a`
/// gets `b`, `b` acknowledged gets nothing (the NotNow'ed one waits for the next `Idle`); each is
/// two round trips.
async fn two_round_trips_each(s: &mdmd::store::postgres::PgStore, a: &CommandRecord, b: &CommandRecord) {
    use mdmd::store::postgres::round_trips;
    let n = round_trips();
    let (c, e) = s.identity_and_enrollment("h1", "RT").await.unwrap();
    assert!(c.is_some() && e.is_some());
    assert_eq!(s.next_command("RT", false).await.unwrap().unwrap().uuid, a.uuid);
    assert_eq!(round_trips() - n, 2, "Idle with a command queued");
    let n = round_trips();
    s.identity_and_enrollment("h1", "RT").await.unwrap();
    let (o, next) = s.report("RT", report(&a.uuid, DeliveryStatus::NotNow)).await.unwrap();
    assert_eq!((o, next.unwrap().uuid), (ReportOutcome::NotNowRecorded, b.uuid.clone()));
    assert_eq!(round_trips() - n, 2, "NotNow and the next command");
    let n = round_trips();
    s.identity_and_enrollment("h1", "RT").await.unwrap();
    let (o, next) = s.report("RT", report(&b.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert_eq!(
        o,
        ReportOutcome::Finished {
            request_type: b.request_type.clone()
        }
    );
    assert!(next.is_none(), "the NotNow'ed command waits for the next Idle");
    assert_eq!(round_trips() - n, 2, "a result and the next command");
}

/// A connect request on PostgreSQL is at most two round trips: `Idle` (identity
/// and binding, then the queue) and a result (identity and binding, then the
/// result stored with the next command read in one statement). A result for a
/// command that tracks a profile takes the transaction (and is still right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connect_requests_take_two_round_trips() {
    let Some(db) = common::pg::TestDb::create().await else { return };
    let _turn = PG_TURN.lock().await;
    let s = mdmd::store::postgres::PgStore::connect(mdmd::store::postgres::PgConfig::new(&db.url))
        .await
        .unwrap();
    use mdmd::store::postgres::round_trips;
    s.record_cert(cert("01", "h1")).await.unwrap();
    s.authenticate(enrollment("RT", Some("h1")), false).await.unwrap();
    let (a, b) = (command("SecurityInfo", None), command("ProfileList", None));
    s.enqueue(a.clone(), vec!["RT".into()]).await.unwrap();
    s.enqueue(b.clone(), vec!["RT".into()]).await.unwrap();
    // Statements are prepared once per connection: warm every pooled one up first.
    for _ in 0..40 {
        s.identity_and_enrollment("h1", "RT").await.unwrap();
        s.next_command("RT", false).await.unwrap();
        s.report("RT", report("nope", DeliveryStatus::Acknowledged)).await.unwrap();
    }
    two_round_trips_each(&s, &a, &b).await;
    // Stored as the transaction would have: result, status, NotNow count.
    let hist = s.device_commands("RT", 10).await.unwrap();
    assert_eq!(hist[0].delivery.not_now_count, 1);
    assert_eq!(
        (hist[1].delivery.status, hist[1].delivery.result.as_deref()),
        (DeliveryStatus::Acknowledged, Some(&b"<plist/>"[..]))
    );
    let n = round_trips();
    s.identity_and_enrollment("h1", "RT").await.unwrap();
    let (o, next) = s.report("RT", report(&a.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert!(matches!(o, ReportOutcome::Finished { .. }) && next.is_none());
    assert_eq!(round_trips() - n, 2);
    // The result again (the device got no answer): nothing changes, still two.
    let n = round_trips();
    s.identity_and_enrollment("h1", "RT").await.unwrap();
    assert_eq!(
        s.report("RT", report(&a.uuid, DeliveryStatus::Error)).await.unwrap().0,
        ReportOutcome::NotPending
    );
    assert_eq!(round_trips() - n, 2);
    // Idle with nothing queued.
    let n = round_trips();
    s.identity_and_enrollment("h1", "RT").await.unwrap();
    assert!(s.next_command("RT", false).await.unwrap().is_none());
    assert_eq!(round_trips() - n, 2, "Idle with nothing queued");
    // A profile's result updates its record too: the transaction, as before.
    let tag = ProfileTag {
        identifier: "com.example.rt".into(),
        action: ProfileAction::Install,
        sha256: Some("00".into()),
    };
    let p = command("InstallProfile", Some(tag));
    s.enqueue(p.clone(), vec!["RT".into()]).await.unwrap();
    let (o, _) = s.report("RT", report(&p.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert!(matches!(o, ReportOutcome::Finished { .. }));
    let dp = s.device_profiles("RT").await.unwrap();
    assert_eq!(
        dp.iter().find(|d| d.identifier == "com.example.rt").unwrap().state,
        ProfileState::Installed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_conforms() {
    let Some(db) = common::pg::TestDb::create().await else { return };
    let _turn = PG_TURN.lock().await;
    let s = mdmd::store::postgres::PgStore::connect(mdmd::store::postgres::PgConfig::new(&db.url))
        .await
        .unwrap();
    // Migrations are idempotent.
    assert!(s.migrate().await.unwrap().is_empty());
    conformance(Arc::new(s)).await;
}

/// PostgreSQL's fan-outs (targets in chunk rows, a delivery row written by the first answer) give
/// every answer redb's do: FIFO around them, NotNow, results, clearing, history, counts, the
/// command's view; with at most one open (a second one settles the first inside its enqueue), and
/// settled by age. Then the whole suite with every command a fan-out, copied out to redb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fanouts_conform() {
    use mdmd::store::postgres::{PgConfig, PgStore};
    use mdmd::store::FanoutPolicy;
    let _turn = PG_TURN.lock().await;
    for max_open in [64, 1] {
        let Some(db) = common::pg::TestDb::create().await else { return };
        let p = FanoutPolicy {
            min_targets: 2,
            settle_at: 0,
            max_open,
        };
        let s: Arc<dyn Store> = Arc::new(PgStore::connect(PgConfig::new(&db.url)).await.unwrap().with_fanout(p));
        fanout(&s).await;
        // Settling what is open changes no answer.
        let ids: Vec<String> = (0..8).map(|i| format!("F{i}")).collect();
        let before: Vec<_> = {
            let mut v = Vec::new();
            for id in &ids {
                v.push((
                    s.next_command(id, false).await.unwrap().map(|q| q.uuid),
                    s.device_commands(id, 10).await.unwrap().len(),
                ));
            }
            v
        };
        let pending = s.counts().await.unwrap().pending_commands;
        assert!(s.settle_fanouts(i64::MAX).await.unwrap() >= 1);
        assert_eq!(s.settle_fanouts(i64::MAX).await.unwrap(), 0, "nothing left open");
        for (id, was) in ids.iter().zip(&before) {
            let now = (
                s.next_command(id, false).await.unwrap().map(|q| q.uuid),
                s.device_commands(id, 10).await.unwrap().len(),
            );
            assert_eq!(&now, was, "{id}");
        }
        assert_eq!(s.counts().await.unwrap().pending_commands, pending);
    }
    let Some(db) = common::pg::TestDb::create().await else { return };
    let p = FanoutPolicy {
        min_targets: 1,
        settle_at: 0,
        max_open: 10_000,
    };
    let s: Arc<dyn Store> = Arc::new(PgStore::connect(PgConfig::new(&db.url)).await.unwrap().with_fanout(p));
    conformance(s.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let b: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("h.redb")).unwrap());
    let rep = mdmd::store::copy::copy_all(&*s, &*b).await.unwrap();
    assert!(rep.verified(), "{rep:?}");
}

/// A fan-out target's first answer writes its delivery row inside the one result statement:
/// still two round trips, and a settle that wrote the row meanwhile loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fanout_results_take_two_round_trips() {
    use mdmd::store::postgres::{PgConfig, PgStore};
    use mdmd::store::FanoutPolicy;
    let Some(db) = common::pg::TestDb::create().await else { return };
    let _turn = PG_TURN.lock().await;
    let p = FanoutPolicy {
        min_targets: 2,
        settle_at: 0,
        max_open: 32,
    };
    let s = PgStore::connect(PgConfig::new(&db.url)).await.unwrap().with_fanout(p);
    s.record_cert(cert("01", "h1")).await.unwrap();
    s.authenticate(enrollment("RT", Some("h1")), false).await.unwrap();
    s.authenticate(enrollment("RU", None), false).await.unwrap();
    for _ in 0..40 {
        s.identity_and_enrollment("h1", "RT").await.unwrap();
        s.next_command("RT", false).await.unwrap();
        s.report("RT", report("nope", DeliveryStatus::Acknowledged)).await.unwrap();
    }
    let (a, b) = (command("SecurityInfo", None), command("ProfileList", None));
    s.enqueue(a.clone(), vec!["RT".into(), "RU".into()]).await.unwrap();
    s.enqueue(b.clone(), vec!["RT".into(), "RU".into()]).await.unwrap();
    two_round_trips_each(&s, &a, &b).await;
    // Settled while RU still holds both: its answers land on the rows the settle wrote.
    assert_eq!(s.settle_fanouts(i64::MAX).await.unwrap(), 2);
    let (o, next) = s.report("RU", report(&a.uuid, DeliveryStatus::Acknowledged)).await.unwrap();
    assert!(matches!(o, ReportOutcome::Finished { .. }));
    assert_eq!(next.unwrap().uuid, b.uuid);
    let (_, ds) = s.command(&a.uuid).await.unwrap().unwrap();
    let st: Vec<_> = ds.iter().map(|d| (d.enrollment.as_str(), d.status)).collect();
    assert_eq!(st, vec![("RT", DeliveryStatus::NotNow), ("RU", DeliveryStatus::Acknowledged)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_redb_to_postgres_and_back() {
    let Some(db) = common::pg::TestDb::create().await else { return };
    let _turn = PG_TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("a.redb")).unwrap());
    let first = populated(a.clone()).await;
    let pg: Arc<dyn Store> = Arc::new(
        mdmd::store::postgres::PgStore::connect(mdmd::store::postgres::PgConfig::new(&db.url))
            .await
            .unwrap(),
    );
    let rep = mdmd::store::copy::copy_all(&*a, &*pg).await.unwrap();
    assert!(rep.verified(), "{rep:?}");
    let back: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("back.redb")).unwrap());
    let rep2 = mdmd::store::copy::copy_all(&*pg, &*back).await.unwrap();
    assert!(rep2.verified(), "{rep2:?}");
    // The same content all the way: redb -> PostgreSQL -> redb.
    for (t, (src, _)) in &rep.tables {
        assert_eq!(rep2.tables[t].0, *src, "{t}");
    }
    serves_copied_queue(&pg, &first).await;
    serves_copied_queue(&back, &first).await;
}
