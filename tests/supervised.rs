//! Apple's supervised-only commands, Settings items, payloads and keys (from
//! the schemas' `supportedOS.iOS.supervised`): refused up front, naming the
//! key, for a device that said it is not supervised; accepted and answered for
//! a supervised one; let through while the device has not said; a blueprint's
//! refused item fails on that device alone. Against the real server binary.

mod common;

use std::time::Duration;

use common::{b64, template, wait_until, Server};
use mdmd::protocol::schema::Schema;
use mdmd::protocol::Status;
use mdmd::sim::SimDevice;
use serde_json::{json, Value};

const RESTRICTIONS: &str = "com.apple.applicationaccess";

/// A restrictions payload with these keys (plist XML inside the dict).
fn restrictions(inner_id: &str, keys: &str) -> String {
    format!(
        "<dict><key>PayloadType</key><string>{RESTRICTIONS}</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>{inner_id}</string><key>PayloadUUID</key><string>{}</string>{keys}</dict>",
        uuid::Uuid::new_v4().to_string().to_uppercase()
    )
}

/// Every supervised-only restriction that has a default, set to it, as plist
/// keys (what admins' restriction profiles often list), read from Apple's schema.
fn every_restriction_at_its_default() -> (usize, String) {
    let mut n = 0;
    let mut out = String::new();
    for k in &Schema::get().payload(RESTRICTIONS).expect("restrictions payload").keys {
        let v = match &k.default {
            Some(Value::Bool(true)) => "<true/>".to_owned(),
            Some(Value::Bool(false)) => "<false/>".to_owned(),
            Some(Value::Number(i)) if i.is_i64() => format!("<integer>{i}</integer>"),
            _ => continue,
        };
        assert!(k.supervised, "{}", k.name);
        n += 1;
        out.push_str(&format!("<key>{}</key>{v}", k.name));
    }
    (n, out)
}

async fn upload(srv: &Server, body: Vec<u8>) {
    let (code, v) = srv.admin().call_bytes("/v1/profiles", body).await.unwrap();
    assert!(code == 201 || code == 200, "{code} {v}");
}

/// Every command queued for the device, finished or not.
async fn command_count(srv: &Server, id: &str) -> usize {
    let v = srv.admin().get(&format!("/v1/devices/{id}/commands")).await.unwrap();
    v["commands"].as_array().expect("commands").len()
}

/// A device that has answered its first inventory (IsSupervised as set).
async fn inventoried(srv: &Server, supervised: bool) -> SimDevice {
    let mut d = srv.enrolled().await;
    d.supervised = supervised;
    srv.admin()
        .post(&format!("/v1/devices/{}/inventory", d.udid), json!({}))
        .await
        .unwrap();
    let handled = d.session().await.unwrap();
    assert!(handled.iter().any(|h| h.request_type == "DeviceInformation"), "{handled:?}");
    let v = srv.admin().get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert_eq!(v["info"]["is_supervised"], supervised, "{v}");
    d
}

/// POST /v1/commands: (status, answer).
async fn command(srv: &Server, targets: &[&str], command: Value) -> (u16, Value) {
    srv.admin()
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": targets, "command": command})),
        )
        .await
        .unwrap()
}

async fn install(srv: &Server, identifier: &str, targets: &[&str]) -> (u16, Value) {
    srv.admin()
        .call(
            reqwest::Method::POST,
            &format!("/v1/profiles/{identifier}/install"),
            Some(json!({ "targets": targets })),
        )
        .await
        .unwrap()
}

fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn supervised_only_requests_are_refused_for_unsupervised_devices_and_accepted_for_supervised_ones() {
    let srv = Server::start();
    let restricting = template(
        "com.example.no-app-store",
        &restrictions(
            "com.example.no-app-store.r",
            "<key>allowAppInstallation</key><false/><key>allowCamera</key><false/>",
        ),
    );
    upload(&srv, restricting.clone()).await;
    let (n, defaults) = every_restriction_at_its_default();
    assert!(n > 90, "{n}");
    let at_defaults = format!("{defaults}<key>allowCamera</key><false/><key>forceEncryptedBackup</key><true/>");
    upload(
        &srv,
        template("com.example.defaults", &restrictions("com.example.defaults.r", &at_defaults)),
    )
    .await;

    let mut plain = inventoried(&srv, false).await;
    let mut kiosk = inventoried(&srv, true).await;
    let (p, k) = (plain.udid.clone(), kiosk.udid.clone());
    let restart = json!({"RequestType": "RestartDevice"});
    let rename = json!({"RequestType": "Settings", "Settings": [
        {"Item": "DataRoaming", "Enabled": false},
        {"Item": "DeviceName", "DeviceName": "Kiosk 7"}
    ]});
    let raw_install = json!({"RequestType": "InstallProfile", "Payload": b64(&restricting)});

    // The unsupervised device: each is a 400 naming the key and the device; nothing queued.
    let before = command_count(&srv, &p).await;
    for (body, key) in [
        (restart.clone(), "RestartDevice"),
        (rename.clone(), "Settings[1] (DeviceName)"),
        (raw_install.clone(), "com.apple.applicationaccess: allowAppInstallation"),
    ] {
        let (s, v) = command(&srv, &[&p], body).await;
        assert_eq!(s, 400, "{key}: {v}");
        let e = error_of(&v);
        assert!(e.contains(&format!("{key} is supervised-only")) && e.contains(&p), "{e}");
    }
    let (s, v) = install(&srv, "com.example.no-app-store", &[&p]).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        error_of(&v).contains("com.apple.applicationaccess: allowAppInstallation is supervised-only"),
        "{v}"
    );
    // With a supervised device beside it: still refused, naming only the one that is not.
    let (s, v) = command(&srv, &[&k, &p], restart.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains(&p) && !error_of(&v).contains(&k), "{v}");
    assert_eq!(command_count(&srv, &p).await, before, "nothing queued");
    assert_eq!(plain.session().await.unwrap(), vec![]);

    // What does not need supervision still goes: a restrictions profile with
    // every supervised-only key at Apple's default, a Settings item any device takes.
    let (s, v) = install(&srv, "com.example.defaults", &[&p]).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = command(
        &srv,
        &[&p],
        json!({"RequestType": "Settings", "Settings": [{"Item": "DataRoaming", "Enabled": false}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let handled = plain.session().await.unwrap();
    let got: Vec<(&str, Status)> = handled.iter().map(|h| (h.request_type.as_str(), h.status)).collect();
    assert_eq!(
        got,
        vec![("InstallProfile", Status::Acknowledged), ("Settings", Status::Acknowledged)]
    );
    assert!(plain.profiles.contains_key("com.example.defaults"));

    // The supervised device: the same are accepted and answered.
    for body in [restart, rename, raw_install] {
        let (s, v) = command(&srv, &[&k], body).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["queued"], 1, "{v}");
    }
    let (s, v) = install(&srv, "com.example.no-app-store", &[&k]).await;
    assert_eq!(s, 200, "{v}");
    let handled = kiosk.session().await.unwrap();
    let types: Vec<&str> = handled.iter().map(|h| h.request_type.as_str()).collect();
    // The template's install supersedes the raw one of the same profile.
    assert_eq!(types, vec!["RestartDevice", "Settings", "InstallProfile"], "{handled:?}");
    assert!(handled.iter().all(|h| h.status == Status::Acknowledged), "{handled:?}");
    assert!(kiosk.profiles.contains_key("com.example.no-app-store"));
}

#[tokio::test]
async fn a_device_that_has_not_said_is_let_through_and_refuses_by_itself() {
    let srv = Server::start();
    // Enrolled, no DeviceInformation answered yet: supervision unknown.
    let mut d = srv.enrolled().await;
    let v = srv.admin().get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert!(v["info"]["is_supervised"].is_null(), "{v}");
    let (s, v) = command(&srv, &[&d.udid], json!({"RequestType": "RestartDevice"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["queued"], 1, "{v}");
    let (s, v) = command(
        &srv,
        &[&d.udid],
        json!({"RequestType": "Settings", "Settings": [{"Item": "DeviceName", "DeviceName": "x"}]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The (unsupervised) device answers as iOS does: an Error.
    let handled = d.session().await.unwrap();
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert_eq!(handled[0].request_type, "RestartDevice");
    assert_eq!(handled[0].status, Status::Error);
    let c = srv.admin().get(&format!("/v1/commands/{}", handled[1].command_uuid)).await.unwrap();
    assert_eq!(c["deliveries"][0]["result"]["Settings"][0]["Status"], "Error", "{c}");
}

#[tokio::test]
async fn a_blueprint_item_refused_for_one_device_fails_there_alone() {
    let srv = Server::start();
    upload(
        &srv,
        template(
            "com.example.kiosk-restrictions",
            &restrictions("com.example.kiosk-restrictions.r", "<key>allowAppInstallation</key><false/>"),
        ),
    )
    .await;
    let mut plain = inventoried(&srv, false).await;
    let mut kiosk = inventoried(&srv, true).await;
    let (p, k) = (plain.udid.clone(), kiosk.udid.clone());
    let (c, v) = srv
        .admin()
        .call(
            reqwest::Method::PUT,
            "/v1/blueprints/kiosks",
            Some(json!({"groups": ["*"], "profiles": ["com.example.kiosk-restrictions"]})),
        )
        .await
        .unwrap();
    assert_eq!(c, 200, "{v}");
    let device_state = |id: String| {
        let srv = &srv;
        async move {
            let v = srv.admin().get("/v1/blueprints/kiosks/status").await.unwrap();
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["enrollment"] == id.as_str())
                .cloned()
                .unwrap_or(Value::Null)
        }
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            device_state(p.clone()).await["state"] == "failed"
        })
        .await,
        "{}",
        srv.admin().get("/v1/blueprints/kiosks/status").await.unwrap()
    );
    let failed = device_state(p.clone()).await;
    assert!(failed.to_string().contains("allowAppInstallation is supervised-only"), "{failed}");
    assert_eq!(plain.session().await.unwrap(), vec![]);
    // The supervised device got the profile all the same.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !kiosk.profiles.contains_key("com.example.kiosk-restrictions") {
        assert!(std::time::Instant::now() < deadline, "the supervised device got no profile");
        kiosk.session().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            device_state(k.clone()).await["state"] == "converged"
        })
        .await,
        "{}",
        srv.admin().get("/v1/blueprints/kiosks/status").await.unwrap()
    );
    // A later run over the fleet (a sweep) records the same, and queues nothing for it.
    srv.admin().post("/v1/reconcile", json!({})).await.unwrap();
    assert_eq!(device_state(p.clone()).await["state"], "failed");
    assert_eq!(plain.session().await.unwrap(), vec![]);
}
