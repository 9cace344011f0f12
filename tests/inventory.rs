//! Inventory and compliance end to end: the first inventory after
//! enrollment, finding devices by what they reported, a policy file
//! evaluated per device and reloaded without a restart.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

const POLICY: &str = r#"
passcode_required = true
hardware_encryption = true
min_os_version = "17.0"
forbidden_apps = ["com.example.forbidden"]
max_hours_since_checkin = 72
"#;

async fn device(srv: &Server, id: &str) -> Value {
    srv.admin().get(&format!("/v1/devices/{id}")).await.expect("device")
}

/// On redb, and on PostgreSQL with `MDMD_TEST_STORE=postgres` (tests/common).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_compliance() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let (hook, events) = common::webhook_receiver().await;
    let args = vec![
        "--enroll-flow",
        "single",
        "--inventory-interval",
        "3600",
        "--compliance-policy",
        policy.to_str().unwrap(),
        "--webhook-url",
        &hook,
        "--webhook-secret",
        "inventory-hook-secret-0123456789",
    ];
    let mut srv = Server::start_with(&args);

    // Enrolling queues the first inventory; the device answers it at its first poll.
    let mut good = srv.enrolled().await;
    let kinds: Vec<String> = good.session().await.unwrap().into_iter().map(|h| h.request_type).collect();
    assert_eq!(
        kinds,
        [
            "DeviceInformation",
            "SecurityInfo",
            "CertificateList",
            "ProfileList",
            "InstalledApplicationList"
        ]
    );
    let v = device(&srv, &good.udid).await;
    for k in &kinds {
        assert!(v["inventory"][k]["reported_at"].is_string(), "{k}: {}", v["inventory"]);
    }
    assert_eq!(
        v["inventory"]["DeviceInformation"]["data"]["QueryResponses"]["SerialNumber"],
        good.serial.as_str()
    );
    assert_eq!(v["inventory"]["SecurityInfo"]["data"]["SecurityInfo"]["PasscodePresent"], true);
    // The guide's network queries and the modem firmware are asked and kept.
    let qr = &v["inventory"]["DeviceInformation"]["data"]["QueryResponses"];
    for k in [
        "ICCID",
        "CurrentCarrierNetwork",
        "SubscriberCarrierNetwork",
        "CarrierSettingsVersion",
        "ModemFirmwareVersion",
        "DataRoamingEnabled",
    ] {
        assert!(!qr[k].is_null(), "{k} in {qr}");
    }
    assert_eq!(v["compliance"]["status"], "compliant", "{}", v["compliance"]);

    // A device without a passcode: non-compliant, with the reasons.
    let mut bad = srv.device().await;
    bad.passcode = false;
    bad.enroll().await.unwrap();
    assert_eq!(bad.session().await.unwrap().len(), 5);
    let v = device(&srv, &bad.udid).await;
    assert_eq!(v["compliance"]["status"], "non_compliant");
    let reasons = v["compliance"]["reasons"].to_string();
    assert!(reasons.contains("no passcode") && reasons.contains("encryption"), "{reasons}");

    // Found by what they reported, in any spelling.
    let mac = good.wifi_mac.to_uppercase().replace(':', "-");
    for q in [
        format!("serial={}", good.serial.to_lowercase()),
        format!("mac={mac}"),
        format!("udid={}", good.udid),
    ] {
        let r = srv.admin().get(&format!("/v1/devices?{q}")).await.unwrap();
        let found: Vec<&str> = r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["udid"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(found, vec![good.udid.as_str()], "{q}: {r}");
        assert_eq!(r["devices"][0]["compliance"]["status"], "compliant");
    }
    let r = srv.admin().get("/v1/devices?imei=000000000000000").await.unwrap();
    assert_eq!(r["devices"].as_array().unwrap().len(), 0);

    // SphereShield's registration match: user + device type + OS version.
    let (ok, _, err) = srv.cli(&["devices", "set", &good.udid, "USERNAME=alice"]);
    assert!(ok, "{err}");
    let (ok, _, err) = srv.cli(&["devices", "set", &bad.udid, "USERNAME=alice"]);
    assert!(ok, "{err}");
    let major = good.os_version.split('.').next().unwrap().to_owned();
    let found = |q: String| {
        let srv = &srv;
        async move {
            let r = srv.admin().get(&format!("/v1/devices?{q}")).await.unwrap();
            let mut ids: Vec<String> = r["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["udid"].as_str().unwrap_or_default().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![good.udid.clone(), bad.udid.clone()];
    both.sort();
    assert_eq!(found("user=alice".into()).await, both);
    assert_eq!(
        found(format!("user=alice&model={}&os={major}", good.product_name.to_lowercase()))
            .await
            .len(),
        2
    );
    assert_eq!(found(format!("user=alice&os={}", good.os_version)).await.len(), 2);
    assert!(found("user=alice&model=iPad8,1".into()).await.is_empty());
    assert!(found("user=alice&os=1".into()).await.is_empty(), "a prefix of whole parts only");
    let (s, _) = srv
        .admin()
        .call(reqwest::Method::GET, "/v1/devices?model=iPhone", None)
        .await
        .unwrap();
    assert_eq!(s, 400, "model alone would scan the fleet");

    // Compliance changes are events for conditional access (SphereShield).
    let change = |udid: String, to: &'static str| {
        let events = events.clone();
        move || {
            events.lock().unwrap().iter().any(|e| {
                e["topic"] == "mdmd.ComplianceChanged"
                    && e["mdmd_event"]["enrollment"] == udid.as_str()
                    && e["mdmd_event"]["new_status"] == to
            })
        }
    };
    let bad_noted = change(bad.udid.clone(), "non_compliant");
    assert!(
        common::wait_until(Duration::from_secs(20), || async { bad_noted() }).await,
        "{:?}",
        events.lock().unwrap()
    );
    {
        let ev = events.lock().unwrap();
        let e = ev
            .iter()
            .find(|e| e["topic"] == "mdmd.ComplianceChanged" && e["mdmd_event"]["enrollment"] == bad.udid.as_str())
            .unwrap();
        assert_eq!(e["mdmd_event"]["serial_number"], bad.serial.as_str(), "{e}");
        assert!(e["mdmd_event"]["reasons"].to_string().contains("passcode"), "{e}");
    }

    // The summary.
    let c = srv.admin().get("/v1/compliance").await.unwrap();
    assert_eq!(
        (c["counts"]["compliant"].as_u64(), c["counts"]["non_compliant"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    assert_eq!(c["devices"][0]["enrollment"], bad.udid.as_str());
    let (ok, out, err) = srv.cli(&["compliance"]);
    assert!(ok && out.contains(&bad.udid), "{out}{err}");

    // A new policy is picked up without a restart and every device re-evaluated.
    std::fs::write(&policy, "min_os_version = \"17.0\"\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if device(&srv, &bad.udid).await["compliance"]["status"] == "compliant" {
            break;
        }
        assert!(Instant::now() < deadline, "policy change not applied");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let back = change(bad.udid.clone(), "compliant");
    assert!(
        common::wait_until(Duration::from_secs(20), || async { back() }).await,
        "back to compliant is an event too"
    );
    assert!(events.lock().unwrap().iter().any(|e| e["topic"] == "mdmd.ComplianceChanged"
        && e["mdmd_event"]["enrollment"] == bad.udid.as_str()
        && e["mdmd_event"]["old_status"] == "non_compliant"
        && e["mdmd_event"]["user"] == "alice"));
    // A broken policy file keeps the one in force.
    std::fs::write(&policy, "min_os_version = [\n").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(device(&srv, &bad.udid).await["compliance"]["status"], "compliant");

    // An admin refresh queues the five commands again, answered at the next poll.
    let (ok, out, err) = srv.cli(&["devices", "refresh", &good.udid]);
    assert!(ok, "{out}{err}");
    assert_eq!(good.session().await.unwrap().len(), 5);
    // A newer OS than the policy's minimum, then an older one.
    good.os_version = "16.7".into();
    srv.cli(&["devices", "refresh", &good.udid]);
    good.session().await.unwrap();
    let v = device(&srv, &good.udid).await;
    assert_eq!(v["compliance"]["status"], "non_compliant");
    assert!(
        v["compliance"]["reasons"][0].as_str().unwrap().contains("16.7"),
        "{}",
        v["compliance"]
    );
    // The device list says it too.
    let list = srv.cli_json(&["devices", "-o", "json"]);
    let row = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == good.udid.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["compliance"]["status"], "non_compliant", "{row}");

    // A new policy given at start applies at once, without waiting for an edit.
    srv.kill9();
    std::fs::write(&policy, POLICY.replace("min_os_version = \"17.0\"", "min_os_version = \"16.0\"")).unwrap();
    srv.restart();
    assert!(
        common::wait_until(Duration::from_secs(20), || async {
            device(&srv, &good.udid).await["compliance"]["status"] == "compliant"
        })
        .await,
        "the policy given at start was applied: {}",
        device(&srv, &good.udid).await["compliance"]
    );
}

/// A required profile counts from the moment the device acknowledges its
/// install (and stops counting at its removal), not from the next
/// ProfileList hours later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_profile_counts_once_installed() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "required_profiles = [\"com.example.mdmd.webclip\"]\n").unwrap();
    let srv = Server::start_with(&[
        "--enroll-flow",
        "single",
        "--inventory-interval",
        "3600",
        "--compliance-policy",
        policy.to_str().unwrap(),
    ]);
    let mut d = srv.enrolled().await;
    d.session().await.unwrap();
    let c = &device(&srv, &d.udid).await["compliance"];
    assert_eq!(c["status"], "non_compliant", "{c}");
    assert!(c["reasons"].to_string().contains("com.example.mdmd.webclip"), "{c}");

    srv.cli_json(&["profiles", "install", "com.example.mdmd.webclip", "--target", &d.udid]);
    let types: Vec<String> = d.session().await.unwrap().into_iter().map(|h| h.request_type).collect();
    assert_eq!(types, ["InstallProfile"]);
    let c = &device(&srv, &d.udid).await["compliance"];
    assert_eq!(c["status"], "compliant", "at once, without a new ProfileList: {c}");

    srv.cli_json(&["profiles", "remove", "com.example.mdmd.webclip", "--target", &d.udid]);
    let types: Vec<String> = d.session().await.unwrap().into_iter().map(|h| h.request_type).collect();
    assert_eq!(types, ["RemoveProfile"]);
    let c = &device(&srv, &d.udid).await["compliance"];
    assert_eq!(c["status"], "non_compliant", "{c}");
}

/// The periodic sweep reads what is due: a device seen since its last DeviceInformation is asked
/// again once that is older than the interval; a device that stays away is not asked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_refreshes_devices_seen_since_their_inventory() {
    let srv = Server::start_with(&["--enroll-flow", "single", "--inventory-interval", "2", "--inventory-sweep", "10"]);
    let mut seen = srv.enrolled().await;
    assert_eq!(seen.session().await.unwrap().len(), 5);
    let mut away = srv.enrolled().await;
    assert_eq!(away.session().await.unwrap().len(), 5);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(seen.session().await.unwrap().is_empty(), "seen since its inventory, nothing queued");
    let asked = |srv: &Server, udid: String| {
        let admin = srv.admin();
        async move {
            let v: Value = admin.get(&format!("/v1/devices/{udid}/commands")).await.unwrap();
            v["commands"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["request_type"] == "DeviceInformation")
                .count()
        }
    };
    // Within two sweep periods the one seen is asked again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while asked(&srv, seen.udid.clone()).await < 2 {
        assert!(std::time::Instant::now() < deadline, "not asked again");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let types: Vec<String> = seen.session().await.unwrap().into_iter().map(|h| h.request_type).collect();
    assert_eq!(types.first().map(String::as_str), Some("DeviceInformation"), "{types:?}");
    // The one that stayed away was not asked, however many sweeps ran.
    assert_eq!(asked(&srv, away.udid.clone()).await, 1);
}
