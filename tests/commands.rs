//! The deployment-guide command set from the CLI (typed subcommands), raw
//! JSON and plist commands, escrowed tokens sealed at rest, ClearPasscode
//! from escrow, key rotation — against the real server binary.

mod common;

use common::{enqueue, Server};
use mdmd::protocol::schema::{validate_plist, Schema};
use mdmd::protocol::Status;
use serde_json::json;

/// Run the device's connect loop by hand, checking every answer against
/// Apple's response schema before it is sent. Returns the request types.
async fn answer_all(a: &mut mdmd::sim::SimDevice) -> Vec<(String, Status)> {
    let mut out = Vec::new();
    let mut report = a.idle_report();
    while let Some(cmd) = a.connect(&report).await.unwrap() {
        let (status, r) = if cmd.request_type == "InstallProfile" {
            a.install_profile(&cmd).await.unwrap()
        } else {
            a.answer(&cmd)
        };
        if status == Status::Acknowledged {
            let spec = &Schema::get().command(&cmd.request_type).unwrap().resp;
            let mut keys = r.clone();
            for k in ["UDID", "Status", "CommandUUID"] {
                keys.remove(k);
            }
            if cmd.request_type == "Settings" {
                // Apple's YAML types `Settings` as one dictionary; devices answer an
                // array of them (one per item). Check each item against it.
                let item = &spec[0].sub;
                for (i, x) in keys["Settings"].as_array().unwrap().iter().enumerate() {
                    validate_plist(item, x.as_dictionary().unwrap(), &format!("Settings[{i}]"), false).unwrap();
                }
                keys.remove("Settings");
            }
            validate_plist(spec, &keys, "", false).unwrap_or_else(|e| panic!("{}: {e}", cmd.request_type));
        }
        out.push((cmd.request_type.clone(), status));
        report = r;
        if a.erased {
            a.connect(&report).await.unwrap();
            break;
        }
    }
    out
}

fn write(dir: &std::path::Path, name: &str, body: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn the_full_command_set_from_the_cli_gets_schema_valid_answers() {
    let srv = Server::start();
    let mut a = srv.enrolled().await;
    let u = a.udid.clone();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clip = write(
        d,
        "clip.mobileconfig",
        br#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>com.example.cli-clip</string><key>PayloadUUID</key><string>C0FFEE00-0000-4000-8000-000000000001</string>
<key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.webClip.managed</string>
<key>PayloadVersion</key><integer>1</integer><key>PayloadIdentifier</key><string>com.example.cli-clip.c</string>
<key>PayloadUUID</key><string>C0FFEE00-0000-4000-8000-000000000002</string><key>URL</key><string>https://x.example</string>
<key>Label</key><string>X</string></dict></array></dict></plist>"#,
    );
    // A provisioning profile: a CMS-signed plist, as Apple issues them.
    write(
        d,
        "pp.plist",
        br#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>Name</key><string>Example In-House</string>
<key>UUID</key><string>5A5A5A5A-1111-4222-8333-444455556666</string><key>ExpirationDate</key><date>2030-01-01T00:00:00Z</date></dict></plist>"#,
    );
    common::sign_with_throwaway(d, "Apple Distribution", "pp.plist", "pp.mobileprovision");
    let pp = d.join("pp.mobileprovision").display().to_string();
    let cfg = write(
        d,
        "cfg.json",
        br#"{"server": "https://idp.example.com", "device": "$UDID", "n": 3}"#,
    );
    let raw = write(
        d,
        "raw.plist",
        br#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>RequestType</key><string>DeviceInformation</string>
<key>Queries</key><array><string>WiFiMAC</string><string>PhoneNumber</string></array></dict></plist>"#,
    );

    let app_cfg = format!("com.example.app={cfg}");
    let steps: Vec<Vec<&str>> = vec![
        vec!["cmd", "lock", &u, "--message", "Found? Call +1 555 0100", "--phone", "+1 555 0100"],
        vec!["cmd", "device-info", &u],
        vec!["cmd", "security-info", &u],
        vec!["cmd", "certificate-list", &u],
        vec!["cmd", "install-profile", &u, "--file", &clip],
        vec!["cmd", "profile-list", &u],
        vec!["cmd", "remove-profile", &u, "--identifier", "com.example.cli-clip"],
        vec!["cmd", "install-provisioning-profile", &u, "--file", &pp],
        vec!["cmd", "provisioning-profile-list", &u],
        vec![
            "cmd",
            "remove-provisioning-profile",
            &u,
            "--uuid",
            "5A5A5A5A-1111-4222-8333-444455556666",
        ],
        vec![
            "cmd",
            "install-app",
            &u,
            "--identifier",
            "com.example.app",
            "--management-flags",
            "1",
            "--config",
            &cfg,
        ],
        vec!["cmd", "managed-apps", &u],
        vec![
            "cmd",
            "settings",
            &u,
            "--data-roaming",
            "off",
            "--voice-roaming",
            "on",
            "--app-config",
            &app_cfg,
        ],
        vec!["cmd", "app-config", &u, "--identifier", "com.example.app"],
        vec!["cmd", "installed-apps", &u],
        vec!["cmd", "restrictions", &u],
        vec!["cmd", "remove-app", &u, "--identifier", "com.example.app"],
        vec!["cmd", "send-plist", "-t", &u, &raw],
        vec!["cmd", "clear-passcode", &u],
        vec!["cmd", "erase", &u, "--preserve-data-plan"],
    ];
    let mut uuids = Vec::new();
    let mut handled = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let v = srv.cli_json(s);
        assert_eq!(v["queued"], 1, "{s:?}: {v}");
        uuids.push(v["command_uuid"].as_str().unwrap().to_owned());
        if i == 5 {
            // Let the profile install before its removal is queued (a queued
            // RemoveProfile would supersede the pending InstallProfile).
            handled.extend(answer_all(&mut a).await);
        }
    }
    handled.extend(answer_all(&mut a).await);
    let types: Vec<&str> = handled.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "DeviceLock",
            "DeviceInformation",
            "SecurityInfo",
            "CertificateList",
            "InstallProfile",
            "ProfileList",
            "RemoveProfile",
            "InstallProvisioningProfile",
            "ProvisioningProfileList",
            "RemoveProvisioningProfile",
            "InstallApplication",
            "ManagedApplicationList",
            "Settings",
            "ManagedApplicationConfiguration",
            "InstalledApplicationList",
            "Restrictions",
            "RemoveApplication",
            "DeviceInformation",
            "ClearPasscode",
            "EraseDevice",
        ]
    );
    for (t, s) in &handled {
        assert_eq!(*s, Status::Acknowledged, "{t}");
    }
    let admin = srv.admin();
    for uuid in &uuids {
        let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
        assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{c}");
    }
    // The managed configuration as the device reported it: variables filled.
    let c = admin.get(&format!("/v1/commands/{}", uuids[13])).await.unwrap();
    let conf = &c["deliveries"][0]["result"]["ApplicationConfigurations"][0]["Configuration"];
    assert_eq!(conf["device"], u.as_str(), "{c}");
    assert_eq!(conf["n"], 3);
    // Every query key was asked; facts the device reported are kept for variables.
    let c = admin.get(&format!("/v1/commands/{}", uuids[1])).await.unwrap();
    assert!(c["command"]["Queries"].as_array().unwrap().len() > 30);
    let dev = admin.get(&format!("/v1/devices/{u}")).await.unwrap();
    assert_eq!(dev["info"]["wifi_mac"], a.wifi_mac.as_str(), "{dev}");
    assert_eq!(dev["info"]["phone_number"], "+1 555 0100");
}

#[tokio::test]
async fn raw_commands_are_validated_the_same_way() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.enrolled().await;
    // EnableLostMode below is supervised-only: the device takes it.
    a.supervised = true;
    // Any RequestType in Apple's schema, as JSON or plist.
    enqueue(&admin, &[&a.udid], json!({"RequestType": "ScheduleOSUpdateScan", "Force": true})).await;
    let plist = r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>RequestType</key><string>EnableLostMode</string>
<key>Message</key><string>Lost</string></dict></plist>"#;
    let v = admin
        .post("/v1/commands", json!({"targets": [a.udid], "command": plist}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1);
    // Every problem in a plist command, with paths; nothing queued.
    let bad = r#"<plist version="1.0"><dict><key>RequestType</key><string>DeviceLock</string>
<key>Message</key><integer>5</integer><key>Bogus</key><true/></dict></plist>"#;
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": [a.udid], "command": bad})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"Message") && paths.contains(&"Bogus"), "{v}");
    let (s, _) = admin
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": [a.udid], "command": "<plist><oops"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": [a.udid], "command": {"RequestType": "DeviceLock", "Message": "$SCEP_CHALLENGE"}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    let handled = answer_all(&mut a).await;
    assert_eq!(handled.len(), 2);
}

#[tokio::test]
async fn tokens_are_sealed_at_rest_and_clear_passcode_uses_escrow() {
    let mut srv = Server::start();
    let mut a = srv.enrolled().await;
    let u = a.udid.clone();
    // SetBootstrapToken escrows another secret.
    let bootstrap = b"bootstrap-token-0123456789abcdef".to_vec();
    let mut m = plist::Dictionary::new();
    m.insert("UDID".into(), u.clone().into());
    m.insert("MessageType".into(), "SetBootstrapToken".into());
    m.insert("BootstrapToken".into(), plist::Value::Data(bootstrap.clone()));
    a.checkin(&m).await.unwrap();

    // The embedded store's file (on PostgreSQL, MDMD_TEST_STORE=postgres, there is none to read).
    let db = std::fs::read(srv.data_dir().join("mdmd.redb")).unwrap_or_default();
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    use base64::Engine as _;
    for secret in [&a.unlock_token, &bootstrap] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(!find(&db, secret), "a token is in the database in clear");
        assert!(!find(&db, b64.as_bytes()), "a token is in the database as base64");
        assert!(!find(&db, hex::encode(secret).as_bytes()), "a token is in the database as hex");
    }
    let keys = srv.certs_dir().join("secrets.keys");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    let dev = srv.admin().get(&format!("/v1/devices/{u}")).await.unwrap();
    assert_eq!(dev["unlock_token_escrowed"], true);
    assert!(!dev.to_string().contains("sealed:"), "{dev}");

    // ClearPasscode with the escrowed token (the device checks it).
    let v = srv.cli_json(&["cmd", "clear-passcode", &u]);
    assert_eq!(v["queued"], 1);
    let h = answer_all(&mut a).await;
    assert_eq!(h, vec![("ClearPasscode".to_owned(), Status::Acknowledged)]);

    // Rotate: a new key, everything resealed, still opens; and after a restart.
    let v = srv.cli_json(&["secrets", "rotate"]);
    assert_eq!(v["resealed"], 1, "{v}");
    let lines = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(lines.lines().filter(|l| !l.starts_with('#')).count(), 2);
    srv.restart();
    srv.cli_json(&["cmd", "clear-passcode", &u]);
    let h = answer_all(&mut a).await;
    assert_eq!(h, vec![("ClearPasscode".to_owned(), Status::Acknowledged)]);
    let mut g = plist::Dictionary::new();
    g.insert("UDID".into(), u.clone().into());
    g.insert("MessageType".into(), "GetBootstrapToken".into());
    let body = a.checkin(&g).await.unwrap();
    let d: plist::Dictionary = plist::from_bytes(&body).unwrap();
    assert_eq!(d["BootstrapToken"].as_data(), Some(bootstrap.as_slice()));

    // A device without an escrowed token: a clear error, nothing queued.
    let b = srv.device().await;
    b.authenticate().await.unwrap();
    // The CLI prints the answer and fails: the command reached no device.
    let (ok, out, err) = srv.cli(&["cmd", "clear-passcode", &b.udid]);
    assert!(!ok, "{out}");
    assert!(err.contains("reached no device") && err.contains("no UnlockToken"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["queued"], 0);
    assert!(v["failed"][0]["error"].as_str().unwrap().contains("no UnlockToken"), "{v}");

    // Typos get "did you mean", and nothing is queued.
    let (ok, _, err) = srv.cli(&["cmd", "send", "--target", &b.udid, r#"{"RequestType": "DeviceInfomation"}"#]);
    assert!(!ok);
    assert!(err.contains("did you mean") && err.contains("DeviceInformation"), "{err}");
    let (ok, _, err) = srv.cli(&["cmd", "device-info", &b.udid, "--query", "SerialNumbr", "--query", "OSVersion"]);
    assert!(!ok);
    assert!(err.contains("did you mean") && err.contains("SerialNumber"), "{err}");

    // A command to a device that is not enrolled: nothing is created, the CLI fails.
    let (ok, out, err) = srv.cli(&["cmd", "device-info", "NO-SUCH-UDID"]);
    assert!(!ok, "{out}");
    assert!(err.contains("reached no device") && err.contains("NO-SUCH-UDID"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["queued"].as_u64(), v["command_uuid"].is_null()), (Some(0), true), "{v}");
}
