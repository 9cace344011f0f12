//! Declarative Device Management end to end: declarations validated against
//! Apple's schema, sets and assignments, the DeclarativeManagement command
//! and push on every change, the device's endpoints (a removed declaration is
//! 404), the status channel stored and queried, and an OS requirement the
//! simulated device applies at its deadline.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn call(admin: &mdmd::sim::load::Admin, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    admin.call(m, path, body).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_reach_devices_and_status_comes_back() {
    let srv = Server::start_with(&["--ddm-enable", "true", "--ddm-coalesce-ms", "100"]);
    let admin = srv.admin();
    let mut d = srv.enrolled().await;

    // DDM turned on after enrollment (iOS 18): one command, then a sync with
    // mdmd's own status subscription only.
    wait_for_sync(&mut d).await;
    assert!(d.ddm.enabled);
    assert!(d.ddm.declarations.contains_key("mdmd.status-subscriptions"));
    assert!(d.ddm.subscribed.contains("device.operating-system.version"));
    let st = admin.get(&format!("/v1/devices/{}/status", d.udid)).await.unwrap();
    assert_eq!(st["items"]["device.operating-system.version"]["value"], "18.1", "{st}");
    assert_eq!(st["items"]["passcode.is-compliant"]["value"], true, "{st}");
    assert_eq!(st["declarations"]["mdmd.status-subscriptions"]["valid"], "valid", "{st}");
    assert_eq!(st["declarations"]["mdmd.activation.status-subscriptions"]["active"], true, "{st}");
    // SyncTokens carry the time of the device's last real change: its first
    // sync here (not 1970), unchanged while nothing changes.
    let parse = |s: &Option<String>| {
        time::OffsetDateTime::parse(s.as_deref().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    let ts1 = parse(&d.ddm.tokens_timestamp);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(ts1 > now - 120 && ts1 <= now, "{:?}", d.ddm.tokens_timestamp);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(d.ddm_sync().await.unwrap().is_empty());
    assert_eq!(parse(&d.ddm.tokens_timestamp), ts1, "nothing changed");

    // Bad declarations: 400 naming the key path; nothing stored.
    for (bad, path) in [
        (
            json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc", "Payload": {"MinimumLength": "six"}}),
            "Payload.MinimumLength",
        ),
        (
            json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc", "Payload": {"Bogus": true}}),
            "Payload.Bogus",
        ),
        (
            json!({"Type": "com.apple.activation.simple", "Identifier": "act", "Payload": {}}),
            "Payload.StandardConfigurations",
        ),
        (json!({"Type": "com.example.nope", "Identifier": "x", "Payload": {}}), "Type"),
        (
            json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "has space", "Payload": {}}),
            "Identifier",
        ),
    ] {
        let (s, v) = call(&admin, Method::PUT, "/v1/declarations", Some(bad)).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["problems"].as_array().unwrap().iter().any(|p| p["path"] == path), "{path}: {v}");
    }
    let (s, _) = call(&admin, Method::GET, "/v1/declarations/pc", None).await;
    assert_eq!(s, 404);

    // A passcode configuration, an activation naming it, in a set assigned to the device.
    let pc = json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc",
        "Payload": {"RequirePasscode": true, "MinimumLength": 6}});
    let (s, v) = call(&admin, Method::PUT, "/v1/declarations", Some(pc.clone())).await;
    assert_eq!(s, 200, "{v}");
    let token1 = v["ServerToken"].as_str().unwrap().to_owned();
    // The same content again: the same token, nothing changed.
    let (_, v) = call(&admin, Method::PUT, "/v1/declarations", Some(pc)).await;
    assert_eq!(v["ServerToken"], token1.as_str());
    assert_eq!(v["changed"], false);
    let (s, v) = call(
        &admin,
        Method::PUT,
        "/v1/declarations",
        Some(json!({"Type": "com.apple.activation.simple", "Identifier": "act", "Payload": {"StandardConfigurations": ["pc"]}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // A configuration nothing activates is reported.
    call(
        &admin,
        Method::PUT,
        "/v1/declarations",
        Some(json!({"Type": "com.apple.configuration.math.settings", "Identifier": "math", "Payload": {}})),
    )
    .await;
    for id in ["pc", "act", "math"] {
        let (s, v) = call(&admin, Method::PUT, &format!("/v1/sets/staff/declarations/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = call(&admin, Method::PUT, "/v1/sets/staff/declarations/nonexistent", None).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(&admin, Method::PUT, &format!("/v1/devices/{}/sets/staff", d.udid), None).await;
    assert_eq!(s, 200, "{v}");
    let set = admin.get("/v1/sets/staff").await.unwrap();
    assert_eq!(set["unreferenced_configurations"], json!(["math"]), "{set}");
    assert_eq!(set["enrollments"], json!([d.udid]), "{set}");

    // The assignment reaches the device: command (and push), sync, fetch of the new ones only.
    let before = d.ddm.fetched;
    wait_for_sync(&mut d).await;
    assert_eq!(d.ddm.fetched - before, 3, "pc, act, math fetched; mdmd's own not again");
    assert!(
        parse(&d.ddm.tokens_timestamp) > ts1,
        "the assignment is a change: {:?}",
        d.ddm.tokens_timestamp
    );
    assert!(d.ddm.declarations["pc"].active && d.ddm.declarations["act"].active);
    assert!(!d.ddm.declarations["math"].active, "nothing activates math");
    let eff = admin.get(&format!("/v1/devices/{}/declarations", d.udid)).await.unwrap();
    let pc_view = eff["declarations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["Identifier"] == "pc")
        .unwrap()
        .clone();
    assert_eq!(pc_view["ServerToken"], token1.as_str());
    assert_eq!(pc_view["device_status"]["current"], true, "{eff}");
    assert_eq!(pc_view["device_status"]["active"], true, "{eff}");

    // An edit: a new token, one command for the burst, and only pc fetched again.
    for len in [8, 10] {
        let (s, v) = call(
            &admin,
            Method::PUT,
            "/v1/declarations",
            Some(json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc",
                "Payload": {"RequirePasscode": true, "MinimumLength": len}})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_ne!(v["ServerToken"], token1.as_str());
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let before = d.ddm.fetched;
    let handled = d.session().await.unwrap();
    assert_eq!(
        handled.iter().filter(|h| h.request_type == "DeclarativeManagement").count(),
        1,
        "two edits in a burst: one command"
    );
    assert_eq!(d.ddm.fetched - before, 1);
    assert_eq!(d.ddm.declarations["pc"].payload["MinimumLength"], 10);

    // Removed from the set: the device drops it, and asking for it is 404.
    let (s, _) = call(&admin, Method::DELETE, "/v1/sets/staff/declarations/math", None).await;
    assert_eq!(s, 200);
    wait_for_sync(&mut d).await;
    assert!(!d.ddm.declarations.contains_key("math"));
    let (status, _) = d.ddm_checkin("declaration/configuration/math", None).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = d.ddm_checkin("declaration/activation/pc", None).await.unwrap();
    assert_eq!(status, 404, "wrong kind");
    let (status, _) = d.ddm_checkin("no-such-endpoint", None).await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = d.ddm_checkin("status", Some(b"not json".to_vec())).await.unwrap();
    assert_eq!(status, 400);

    // Deleting a declaration: gone from the list and from every set; mdmd's own stay.
    let (s, _) = call(&admin, Method::DELETE, "/v1/declarations/math", None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&admin, Method::GET, "/v1/declarations/math", None).await;
    assert_eq!(s, 404);
    let (s, _) = call(&admin, Method::DELETE, "/v1/declarations/mdmd.status-subscriptions", None).await;
    assert_eq!(s, 400);
    let list = admin.get("/v1/declarations").await.unwrap();
    let ids: Vec<&str> = list["declarations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Identifier"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"pc") && ids.contains(&"mdmd.status-subscriptions") && !ids.contains(&"math"),
        "{list}"
    );
    let sets = admin.get("/v1/sets").await.unwrap();
    assert_eq!(sets["sets"][0]["set"], "staff", "{sets}");
    // A sync on request: one command, and nothing new to fetch.
    let v = admin.post(&format!("/v1/devices/{}/ddm/sync", d.udid), json!({})).await.unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    let before = d.ddm.fetched;
    wait_for_sync(&mut d).await;
    assert_eq!(d.ddm.fetched, before);

    // Devices by status value.
    let v = admin
        .get("/v1/status?item=device.operating-system.version&op=lt&value=18.2")
        .await
        .unwrap();
    assert_eq!(v["enrollments"].as_array().unwrap().len(), 1, "{v}");
    let v = admin
        .get("/v1/status?item=device.operating-system.version&op=lt&value=18.1")
        .await
        .unwrap();
    assert!(v["enrollments"].as_array().unwrap().is_empty(), "{v}");
    let (s, _) = call(&admin, Method::GET, "/v1/status?item=x&op=like&value=1", None).await;
    assert_eq!(s, 400);

    // Unassigned: everything of the set leaves the device.
    let (s, _) = call(&admin, Method::DELETE, &format!("/v1/devices/{}/sets/staff", d.udid), None).await;
    assert_eq!(s, 200);
    wait_for_sync(&mut d).await;
    assert!(!d.ddm.declarations.contains_key("pc") && !d.ddm.declarations.contains_key("act"));
    assert!(d.ddm.declarations.contains_key("mdmd.status-subscriptions"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_os_requirement_is_applied_at_its_deadline() {
    let srv = Server::start_with(&["--ddm-enable", "true", "--ddm-coalesce-ms", "100"]);
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    wait_for_sync(&mut d).await;
    let (s, _) = call(&admin, Method::PUT, &format!("/v1/devices/{}/sets/fleet", d.udid), None).await;
    assert_eq!(s, 200);
    // A bad deadline is refused.
    let (s, v) = call(
        &admin,
        Method::PUT,
        "/v1/software-updates/fleet",
        Some(json!({"version": "18.2", "deadline": "next tuesday"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    // The deadline a minute ahead: the update downloads first.
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(3)).format(&fmt).unwrap();
    let (s, v) = call(
        &admin,
        Method::PUT,
        "/v1/software-updates/fleet",
        Some(json!({"version": "18.2", "build": "22C152", "deadline": soon})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    wait_for_sync(&mut d).await;
    assert_eq!(d.os_version, "18.1");
    let v = admin.get("/v1/software-updates/fleet").await.unwrap();
    assert_eq!(v["devices"][0]["state"], "downloading", "{v}");
    assert_eq!(v["devices"][0]["pending_version"]["os-version"], "18.2", "{v}");
    // After the deadline the device installs it and says so.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    d.ddm_sync().await.unwrap();
    assert_eq!(d.os_version, "18.2");
    let v = admin.get("/v1/software-updates/fleet").await.unwrap();
    assert_eq!(v["devices"][0]["state"], "installed", "{v}");
    assert_eq!(v["devices"][0]["os_version"], "18.2", "{v}");
    // The status channel feeds the device's facts.
    let dev = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert_eq!(dev["info"]["os_version"], "18.2", "{dev}");
    assert_eq!(dev["info"]["build_version"], "22C152", "{dev}");
    let v = admin
        .get("/v1/status?item=device.operating-system.version&op=ge&value=18.2")
        .await
        .unwrap();
    assert_eq!(v["enrollments"][0]["enrollment"], d.udid.as_str(), "{v}");
}

fn webclip(label: &str) -> Vec<u8> {
    let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
    template(
        "com.example.clip",
        &format!(
            "<dict><key>PayloadType</key><string>com.apple.webClip.managed</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>clip.{uuid}</string><key>PayloadUUID</key><string>{uuid}</string>\
<key>URL</key><string>https://intranet.example.com/?d=$SERIAL_NUMBER</string><key>Label</key><string>{label}</string></dict>"
        ),
    )
}

/// A legacy configuration that points at a profile template: the device
/// fetches its own copy (variables filled, encrypted to it) with its
/// identity; only devices whose declarations name it may; a template edit
/// re-tokens the configuration and reaches the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_configuration_serves_a_profile_template_per_device() {
    let srv = Server::start_with(&["--ddm-enable", "true", "--ddm-coalesce-ms", "100"]);
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    let other = srv.enrolled().await;
    wait_for_sync(&mut d).await;
    admin.post_bytes("/v1/profiles", webclip("Intranet")).await.unwrap();
    // A template that does not exist is refused, by key path.
    let (s, v) = call(
        &admin,
        Method::PUT,
        "/v1/declarations",
        Some(json!({"Type": "com.apple.configuration.legacy", "Identifier": "clip", "Payload": {"ProfileURL": "mdmd:profile/nope"}})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["problems"][0]["path"], "Payload.ProfileURL", "{v}");
    // Declared, activated and assigned through the CLI.
    let file = srv.dir.path().join("clip.json");
    std::fs::write(
        &file,
        json!({"Type": "com.apple.configuration.legacy", "Identifier": "clip", "Payload": {"ProfileURL": "mdmd:profile/com.example.clip"}})
            .to_string(),
    )
    .unwrap();
    let v = srv.cli_json(&["ddm", "put", file.to_str().unwrap()]);
    let token1 = v["ServerToken"].as_str().unwrap().to_owned();
    std::fs::write(
        &file,
        json!({"Type": "com.apple.activation.simple", "Identifier": "clip.act", "Payload": {"StandardConfigurations": ["clip"]}})
            .to_string(),
    )
    .unwrap();
    srv.cli_json(&["ddm", "put", file.to_str().unwrap()]);
    srv.cli_json(&["ddm", "set-add", "intranet", "clip", "clip.act"]);
    srv.cli_json(&["ddm", "assign", "intranet", &d.udid]);
    wait_for_sync(&mut d).await;
    let (_, profile) = d.ddm.legacy.get("clip").cloned().expect("the legacy configuration was applied");
    assert_eq!(profile, "com.example.clip");
    let p = &d.profiles["com.example.clip"];
    assert!(p.encrypted, "the copy is encrypted to the device");
    assert_eq!(
        p.payloads[0]["URL"].as_string().unwrap(),
        format!("https://intranet.example.com/?d={}", d.serial),
        "variables filled for this device"
    );
    let st = srv.cli_json(&["ddm", "status", &d.udid]);
    assert_eq!(st["declarations"]["clip"]["active"], true, "{st}");

    // Another device, not assigned, may not fetch it; nor may anyone without an identity.
    let url = format!("{}/mdm/ddm/profiles/com.example.clip", srv.base);
    let ident = other.identity.clone().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(srv.certs_dir().join("ca.pem")).unwrap()).unwrap();
    let with_identity = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pkcs8_pem(&ident.cert.to_pem().unwrap(), &ident.key.private_key_to_pem_pkcs8().unwrap()).unwrap())
        .add_root_certificate(ca)
        .build()
        .unwrap();
    assert_eq!(with_identity.get(&url).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(srv.client().get(&url).send().await.unwrap().status().as_u16(), 403);

    // The template changes: a new ServerToken, a sync, the new copy installed.
    admin.post_bytes("/v1/profiles", webclip("Intranet v2")).await.unwrap();
    let v = srv.cli_json(&["ddm", "show", "clip"]);
    assert_ne!(v["ServerToken"].as_str().unwrap(), token1);
    wait_for_sync(&mut d).await;
    assert_eq!(d.profiles["com.example.clip"].payloads[0]["Label"].as_string(), Some("Intranet v2"));

    // Unassigned: the profile goes with the configuration.
    srv.cli_json(&["ddm", "unassign", "intranet", &d.udid]);
    wait_for_sync(&mut d).await;
    assert!(!d.profiles.contains_key("com.example.clip"));
    let found = srv.cli_json(&["ddm", "find", "device.operating-system.version", "eq", "18.1"]);
    assert_eq!(found["enrollments"].as_array().unwrap().len(), 1, "{found}");
}

/// A SCEP credential asset: each device fetches its own SCEP settings (a
/// single-use challenge bound to it) with its identity, and gets a
/// certificate from mdmd's CA that a security.identity configuration uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scep_credential_asset_gives_each_device_its_identity() {
    let srv = Server::start_with(&["--ddm-enable", "true", "--ddm-coalesce-ms", "100"]);
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    let other = srv.enrolled().await;
    wait_for_sync(&mut d).await;
    for decl in [
        json!({"Type": "com.apple.asset.credential.scep", "Identifier": "wifi.cred",
            "Payload": {"Reference": {"DataURL": "mdmd:scep"}, "Authentication": {"Type": "MDM"}}}),
        json!({"Type": "com.apple.configuration.security.identity", "Identifier": "wifi.identity",
            "Payload": {"CredentialAssetReference": "wifi.cred"}}),
        json!({"Type": "com.apple.activation.simple", "Identifier": "wifi.act",
            "Payload": {"StandardConfigurations": ["wifi.identity"]}}),
    ] {
        let (s, v) = call(&admin, Method::PUT, "/v1/declarations", Some(decl)).await;
        assert_eq!(s, 200, "{v}");
    }
    for id in ["wifi.cred", "wifi.identity", "wifi.act"] {
        call(&admin, Method::PUT, &format!("/v1/sets/wifi/declarations/{id}"), None).await;
    }
    let set = admin.get("/v1/sets/wifi").await.unwrap();
    assert_eq!(set["unreferenced_configurations"], json!([]), "the asset is referenced: {set}");
    assert_eq!(set["missing_references"], json!([]), "{set}");
    call(&admin, Method::PUT, &format!("/v1/devices/{}/sets/wifi", d.udid), None).await;
    wait_for_sync(&mut d).await;
    let (_, ident) = d.ddm.identities.get("wifi.cred").cloned().expect("an identity from the SCEP asset");
    let ca = openssl::x509::X509::from_pem(&std::fs::read(srv.certs_dir().join("ca.pem")).unwrap()).unwrap();
    assert!(ident.cert.verify(&ca.public_key().unwrap()).unwrap(), "issued by mdmd's CA");
    let cn = ident
        .cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, format!("wifi.cred {}", d.udid));
    assert_ne!(
        ident.cert.to_der().unwrap(),
        d.identity.as_ref().unwrap().cert.to_der().unwrap(),
        "not the MDM identity"
    );
    let st = admin.get(&format!("/v1/devices/{}/status", d.udid)).await.unwrap();
    assert_eq!(st["declarations"]["wifi.identity"]["active"], true, "{st}");
    // The asset is the device's only: another device's identity gets 403.
    let url = format!("{}/mdm/ddm/assets/wifi.cred", srv.base);
    let oi = other.identity.clone().unwrap();
    let c = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pkcs8_pem(&oi.cert.to_pem().unwrap(), &oi.key.private_key_to_pem_pkcs8().unwrap()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.to_pem().unwrap()).unwrap())
        .build()
        .unwrap();
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 403);
}

/// A change reaches the device through the command *and a push* (APNs
/// recorder); DDM is turned on only for iOS 15 and later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_pushed_and_only_ios_15_and_later_get_ddm() {
    use common::push::{new_topic, Recorder, TestCa};
    let ca = TestCa::new("Test Apple Push CA");
    let rec = Recorder::start(&ca.cert).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("recorder-ca.pem");
    std::fs::write(&ca_file, &rec.server_cert_pem).unwrap();
    let srv = Server::start_with(&[
        "--apns-url",
        &rec.url,
        "--apns-ca",
        ca_file.to_str().unwrap(),
        "--ddm-enable",
        "true",
        "--ddm-coalesce-ms",
        "100",
        "--push-coalesce-ms",
        "50",
    ]);
    let admin = srv.admin();
    common::push::set_push_cert(&srv, &ca, &new_topic()).await;

    let mut d = srv.enrolled().await;
    let tok = hex::encode(&d.token);
    rec.wait_for(&tok, 1, std::time::Duration::from_secs(5)).await;
    wait_for_sync(&mut d).await;
    let pushed = rec.seen_for(&tok).len();

    // iOS 14: no DeclarativeManagement command.
    let mut old = srv.device().await;
    old.os_version = "14.8".into();
    old.enroll().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let handled = old.session().await.unwrap();
    assert!(!handled.iter().any(|h| h.request_type == "DeclarativeManagement"), "{handled:?}");
    assert!(!old.ddm.enabled);

    // A declaration edit: a push, then the command, then the new declaration.
    call(
        &admin,
        Method::PUT,
        "/v1/declarations",
        Some(json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc", "Payload": {"MinimumLength": 4}})),
    )
    .await;
    call(&admin, Method::PUT, "/v1/sets/s/declarations/pc", None).await;
    call(&admin, Method::PUT, &format!("/v1/devices/{}/sets/s", d.udid), None).await;
    rec.wait_for(&tok, pushed + 1, std::time::Duration::from_secs(5)).await;
    call(
        &admin,
        Method::PUT,
        "/v1/declarations",
        Some(json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc", "Payload": {"MinimumLength": 5}})),
    )
    .await;
    rec.wait_for(&tok, pushed + 2, std::time::Duration::from_secs(5)).await;
    // The device stayed away through both changes: one sync is pending, the
    // older one was replaced.
    let (_, cmds) = call(&admin, Method::GET, &format!("/v1/devices/{}/commands", d.udid), None).await;
    let ddm: Vec<&str> = cmds["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"] == "DeclarativeManagement")
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(ddm.iter().filter(|s| **s == "Pending").count(), 1, "{cmds}");
    assert!(ddm.contains(&"Superseded"), "{cmds}");
    wait_for_sync(&mut d).await;
    assert_eq!(d.ddm.declarations["pc"].payload["MinimumLength"], 5);
    let (_, cmds) = call(&admin, Method::GET, &format!("/v1/devices/{}/commands", d.udid), None).await;
    assert!(
        !cmds["commands"].as_array().unwrap().iter().any(|c| c["status"] == "Pending"),
        "{cmds}"
    );
}
