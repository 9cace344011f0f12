//! Configuration profiles end to end against the real server: templates
//! (validated, loaded from `profiles/`), per-device variables, signing and
//! encryption checked with the `openssl` CLI, SCEP identities for Wi-Fi,
//! lifecycle (pending, installed, missing, superseded, removed), re-upload.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::{device_profile, enqueue, openssl, repo_file, template, Server};
use serde_json::{json, Value};

fn profiles_dir_args() -> Vec<String> {
    vec!["--profiles-dir".into(), repo_file("profiles").display().to_string()]
}

async fn start_with_profiles() -> Server {
    let args = profiles_dir_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&refs)
}

fn b64d(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64")
}

/// The InstallProfile payload (signed .mobileconfig) of a queued command.
async fn payload_of(srv: &Server, uuid: &str) -> Vec<u8> {
    let c = srv.admin().get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert_eq!(c["request_type"], "InstallProfile");
    b64d(&c["command"]["Payload"])
}

fn webclip(uuid: &str, url: &str) -> String {
    format!(
        "<dict><key>PayloadType</key><string>com.apple.webClip.managed</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>clip.{uuid}</string><key>PayloadUUID</key><string>{uuid}</string>\
<key>URL</key><string>{url}</string><key>Label</key><string>Clip</string></dict>"
    )
}

#[tokio::test]
async fn templates_are_validated_stored_and_loaded_from_the_folder() {
    let srv = start_with_profiles().await;
    let admin = srv.admin();
    let list = admin.get("/v1/profiles").await.unwrap();
    let ids: Vec<&str> = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    for id in [
        "com.example.mdmd.passcode",
        "com.example.mdmd.restrictions",
        "com.example.mdmd.wifi",
        "com.example.mdmd.vpn",
        "com.example.mdmd.webclip",
    ] {
        assert!(ids.contains(&id), "{id} not loaded from profiles/: {ids:?}");
    }
    let wifi = admin.get("/v1/profiles/com.example.mdmd.wifi").await.unwrap();
    assert_eq!(wifi["variables"], json!(["SCEP_CHALLENGE", "SCEP_URL", "UDID"]));
    assert_eq!(wifi["payload_types"], json!(["com.apple.security.scep", "com.apple.wifi.managed"]));

    // A bad template: 400 listing every problem with its key path; nothing stored.
    let bad = template(
        "com.example.bad",
        &[
            "<dict><key>PayloadType</key><string>com.apple.mobiledevice.passwordpolicy</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>p</string><key>PayloadUUID</key><string>U1</string>\
<key>minLength</key><string>six</string><key>maxFailedAttempts</key><integer>99</integer></dict>",
            "<dict><key>PayloadType</key><string>com.apple.wifi.managed</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>w</string><key>PayloadUUID</key><string>U1</string>\
<key>SSID_STR</key><string>x</string><key>PayloadCertificateUUID</key><string>NOPE</string></dict>",
            "<dict><key>PayloadVersion</key><integer>1</integer></dict>",
        ]
        .concat(),
    );
    let (status, v) = admin.call_bytes("/v1/profiles", bad).await.unwrap();
    assert_eq!(status, 400, "{v}");
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}", p["path"].as_str().unwrap(), p["message"].as_str().unwrap()))
        .collect();
    let has = |s: &str| problems.iter().any(|p| p.starts_with(s));
    assert!(has("PayloadContent[0].minLength: expected integer"), "{problems:#?}");
    assert!(has("PayloadContent[0].maxFailedAttempts: value 99 is outside"), "{problems:#?}");
    assert!(has("PayloadContent[1].PayloadUUID: U1 is also"), "{problems:#?}");
    assert!(has("PayloadContent[1].PayloadCertificateUUID: NOPE is not"), "{problems:#?}");
    assert!(has("PayloadContent[2].PayloadType: is required"), "{problems:#?}");
    assert_eq!(
        admin
            .call(reqwest::Method::GET, "/v1/profiles/com.example.bad", None)
            .await
            .unwrap()
            .0,
        404
    );
    let (status, _) = admin.call_bytes("/v1/profiles", b"\x00\x01 not a profile".to_vec()).await.unwrap();
    assert_eq!(status, 400);

    // An unknown payload type is accepted with a warning.
    let future = template(
        "com.example.future",
        "<dict><key>PayloadType</key><string>com.apple.future.thing</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>f</string><key>PayloadUUID</key><string>F1</string></dict>",
    );
    let (status, v) = admin.call_bytes("/v1/profiles", future).await.unwrap();
    assert_eq!(status, 201, "{v}");
    assert!(v["warnings"][0].as_str().unwrap().contains("unknown payload type"), "{v}");

    // A signed upload (signed by someone else's key, as Apple Configurator does): accepted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.mobileconfig"),
        template("com.example.signed", &webclip("S1", "https://x.example")),
    )
    .unwrap();
    common::sign_with_throwaway(dir.path(), "admin", "t.mobileconfig", "t.signed");
    // Through the CLI, like an admin.
    let p = dir.path().join("t.signed");
    let v = srv.cli_json(&["profiles", "add", p.to_str().unwrap()]);
    assert_eq!(v["identifier"], "com.example.signed");
    assert_eq!(v["changed"], true);
    let v = srv.cli_json(&["profiles", "add", p.to_str().unwrap()]);
    assert_eq!(v["changed"], false, "same content again changes nothing");
    let v = srv.cli_json(&["profiles", "list"]);
    assert!(v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["identifier"] == "com.example.signed"));
    let v = srv.cli_json(&["profiles", "show", "com.example.signed"]);
    assert!(v["template"].as_str().unwrap().contains("https://x.example"));
    let v = srv.cli_json(&["profiles", "rm", "com.example.signed"]);
    assert_eq!(v["deleted"], true);
    let (ok, _, err) = srv.cli(&["profiles", "show", "com.example.signed"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, out, _) = srv.cli(&["profiles", "vars"]);
    assert!(ok && out.contains("$SCEP_CHALLENGE") && out.contains("$WIFI_MAC"), "{out}");
}

#[tokio::test]
async fn a_profile_is_filled_encrypted_signed_and_installed_with_its_own_identity() {
    let srv = start_with_profiles().await;
    let admin = srv.admin();
    let mut dev = srv.enrolled().await;
    let udid = dev.udid.clone();

    let v = admin
        .post(
            "/v1/profiles/com.example.mdmd.wifi/install",
            json!({"targets": [udid, "NO-SUCH-DEVICE"]}),
        )
        .await
        .unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    assert_eq!(v["unknown_targets"], json!(["NO-SUCH-DEVICE"]));
    let uuid = v["commands"][&udid].as_str().unwrap().to_owned();
    assert_eq!(device_profile(&srv, &udid, "com.example.mdmd.wifi").await["state"], "pending");

    // What the device receives, checked with the openssl CLI: signed by our
    // profile signer (chains to our CA), payloads encrypted to this device.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.der"), payload_of(&srv, &uuid).await).unwrap();
    let ca = srv.certs_dir().join("ca.pem");
    let content = openssl(
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "p.der",
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            "any",
            "-binary",
        ],
        dir.path(),
    );
    let top: plist::Dictionary = plist::from_bytes(&content).unwrap();
    assert!(top.get("PayloadContent").is_none(), "payloads must not travel in clear");
    assert_eq!(top.get("IsEncrypted"), Some(&plist::Value::Boolean(true)));
    assert_eq!(top["PayloadIdentifier"].as_string(), Some("com.example.mdmd.wifi"));
    std::fs::write(dir.path().join("enc.der"), top["EncryptedPayloadContent"].as_data().unwrap()).unwrap();
    let id = dev.identity.as_ref().unwrap();
    std::fs::write(dir.path().join("dev.key"), id.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(dir.path().join("dev.pem"), id.cert.to_pem().unwrap()).unwrap();
    let plain = openssl(
        &[
            "cms", "-decrypt", "-inform", "DER", "-in", "enc.der", "-inkey", "dev.key", "-recip", "dev.pem", "-binary",
        ],
        dir.path(),
    );
    let payloads: Vec<plist::Value> = plist::from_bytes(&plain).unwrap();
    // Exactly the template's payloads, variables filled for this device.
    let tmpl: plist::Dictionary = plist::from_file(repo_file("profiles/wifi-eap-tls.mobileconfig")).unwrap();
    let want = tmpl["PayloadContent"].as_array().unwrap();
    assert_eq!(payloads.len(), want.len());
    let scep = payloads[0].as_dictionary().unwrap()["PayloadContent"].as_dictionary().unwrap();
    let port = srv.base.rsplit(':').next().unwrap();
    assert_eq!(scep["URL"].as_string().unwrap(), format!("https://localhost:{port}/scep"));
    let challenge = scep["Challenge"].as_string().unwrap();
    assert!(challenge.len() >= 32 && !challenge.contains('$'), "{challenge}");
    let subject = format!("{:?}", scep["Subject"]);
    assert!(subject.contains(&format!("wifi {udid}")), "{subject}");
    // Exactly the template's payloads with this device's values in place of the variables.
    let url = format!("https://localhost:{port}/scep");
    let filled = String::from_utf8(std::fs::read(repo_file("profiles/wifi-eap-tls.mobileconfig")).unwrap())
        .unwrap()
        .replace("$SCEP_URL", &url)
        .replace("$SCEP_CHALLENGE", challenge)
        .replace("$UDID", &udid);
    let expected: plist::Dictionary = plist::from_bytes(filled.as_bytes()).unwrap();
    assert_eq!(&payloads, expected["PayloadContent"].as_array().unwrap());
    let wifi = payloads[1].as_dictionary().unwrap();
    assert_eq!(
        wifi["EAPClientConfiguration"].as_dictionary().unwrap()["UserName"].as_string(),
        Some(udid.as_str())
    );
    assert_eq!(
        wifi["PayloadCertificateUUID"],
        want[1].as_dictionary().unwrap()["PayloadCertificateUUID"]
    );
    // Another device's key cannot open it.
    let other = srv.device().await;
    let oid = other.identity.as_ref().unwrap();
    std::fs::write(dir.path().join("o.key"), oid.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(dir.path().join("o.pem"), oid.cert.to_pem().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args([
            "cms", "-decrypt", "-inform", "DER", "-in", "enc.der", "-inkey", "o.key", "-recip", "o.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "another device decrypted the profile");

    // The device installs it: verifies, decrypts, runs SCEP with the challenge.
    let handled = dev.session().await.unwrap();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].status, mdmd::protocol::Status::Acknowledged, "{handled:?}");
    let p = dev.profiles.get("com.example.mdmd.wifi").expect("installed");
    assert!(p.encrypted);
    assert_eq!(p.identities.len(), 1);
    let wifi_cert = p.identities[0].1.clone();
    assert_eq!(device_profile(&srv, &udid, "com.example.mdmd.wifi").await["state"], "installed");

    // The Wi-Fi identity is recorded with its purpose and device, and revocable.
    let serial = common::serial_hex(&wifi_cert.cert);
    let c = admin.get(&format!("/v1/certificates/{serial}")).await.unwrap();
    assert_eq!(c["purpose"], "profile:com.example.mdmd.wifi/com.example.mdmd.wifi.identity", "{c}");
    assert_eq!(c["enrollment"], udid.as_str());
    // It is not an MDM identity: signing as the device with it is refused.
    let mut thief = mdmd::sim::SimDevice::new(&srv.base, &dev.topic, srv.client());
    thief.udid = udid.clone();
    thief.identity = Some(wifi_cert);
    let (status, _) = thief
        .put_raw(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            mdmd::protocol::to_xml(&thief.idle_report()),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let r = admin.post(&format!("/v1/certificates/{serial}/revoke"), json!({})).await.unwrap();
    assert_eq!(r["revoked"], true);
    // The challenge was single-use.
    let again = mdmd::sim::pki::scep_enroll(
        &srv.client(),
        &format!("{}/scep", srv.base),
        None,
        common::pool_key(),
        &[("CN".into(), "again".into())],
        Some(challenge),
        None,
    )
    .await
    .unwrap();
    assert!(again.is_err(), "a profile's SCEP challenge was accepted twice");
}

#[tokio::test]
async fn variables_without_a_value_stop_that_install_and_attributes_fill_them() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut dev = srv.enrolled().await;
    let udid = dev.udid.clone();
    let t = template(
        "com.example.mail-clip",
        &webclip("M1", "https://mail.example.com/?u=$EMAIL&amp;d=${DEVICE_NAME}&amp;s=$SERIAL_NUMBER"),
    );
    let (s, v) = admin.call_bytes("/v1/profiles", t).await.unwrap();
    assert_eq!(s, 201, "{v}");
    let v = admin
        .post("/v1/profiles/com.example.mail-clip/install", json!({"targets": [udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 0, "{v}");
    let err = v["failed"][0]["error"].as_str().unwrap();
    assert!(err.contains("$EMAIL") && err.contains("no value"), "{err}");
    assert!(dev.session().await.unwrap().is_empty(), "nothing was queued");

    let v = srv.cli_json(&["devices", "set", &udid, "EMAIL=ann@example.com", "USERNAME=ann"]);
    assert_eq!(v["attributes"]["EMAIL"], "ann@example.com");
    let v = admin
        .post("/v1/profiles/com.example.mail-clip/install", json!({"targets": [udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    dev.session().await.unwrap();
    let p = dev.profiles.get("com.example.mail-clip").expect("installed");
    let url = p.payloads[0]["URL"].as_string().unwrap();
    assert_eq!(
        url,
        format!("https://mail.example.com/?u=ann@example.com&d={}&s={}", dev.name, dev.serial)
    );

    // Variables in managed app configuration too.
    let v = srv.cli_json(&[
        "cmd",
        "install-app",
        &udid,
        "--itunes-id",
        "361309726",
        "--management-flags",
        "1",
        "--config",
        {
            let f = srv.dir.path().join("cfg.json");
            std::fs::write(&f, r#"{"user": "$USERNAME", "device": "$UDID"}"#).unwrap();
            Box::leak(f.display().to_string().into_boxed_str())
        },
    ]);
    assert_eq!(v["queued"], 1, "{v}");
    dev.session().await.unwrap();
    let cfg = dev.apps["store.361309726"].config.clone().unwrap();
    assert_eq!(cfg["user"].as_string(), Some("ann"));
    assert_eq!(cfg["device"].as_string(), Some(udid.as_str()));
}

#[tokio::test]
async fn lifecycle_supersede_reconcile_reinstall_remove() {
    let srv = start_with_profiles().await;
    let admin = srv.admin();
    let mut dev = srv.enrolled().await;
    let udid = dev.udid.clone();
    let id = "com.example.mdmd.passcode";

    // Two installs before the device connects: the newer supersedes the older.
    let a = admin
        .post(&format!("/v1/profiles/{id}/install"), json!({"targets": [udid]}))
        .await
        .unwrap();
    let b = srv.cli_json(&["profiles", "install", id, "-t", &udid]);
    let (ua, ub) = (a["command_uuid"].as_str().unwrap(), b["command_uuid"].as_str().unwrap());
    let ca = admin.get(&format!("/v1/commands/{ua}")).await.unwrap();
    assert_eq!(ca["deliveries"][0]["status"], "Superseded", "{ca}");
    let handled = dev.session().await.unwrap();
    assert_eq!(handled.len(), 1, "only the newer install is delivered");
    assert_eq!(handled[0].command_uuid, ub);
    let dp = device_profile(&srv, &udid, id).await;
    assert_eq!(dp["state"], "installed");
    assert_eq!(dp["command_uuid"], ub);

    // The user removes it on the device; ProfileList shows it missing.
    assert!(dev.user_removes_profile(id));
    let v = srv.cli_json(&["cmd", "profile-list", &udid]);
    assert_eq!(v["queued"], 1);
    dev.session().await.unwrap();
    assert_eq!(device_profile(&srv, &udid, id).await["state"], "missing");
    let shown = admin.get(&format!("/v1/profiles/{id}")).await.unwrap();
    assert_eq!(shown["states"]["missing"], 1, "{shown}");

    // A changed template re-uploaded with reinstall goes to devices that have it
    // (installed or pending); a missing one is left for the admin to decide.
    admin
        .post(&format!("/v1/profiles/{id}/install"), json!({"targets": [udid]}))
        .await
        .unwrap();
    dev.session().await.unwrap();
    assert_eq!(device_profile(&srv, &udid, id).await["state"], "installed");
    let text = std::fs::read_to_string(repo_file("profiles/passcode.mobileconfig")).unwrap();
    let changed = text.replace("<integer>6</integer>", "<integer>8</integer>");
    assert_ne!(text, changed);
    let (s, v) = admin.call_bytes("/v1/profiles?reinstall=true", changed.into_bytes()).await.unwrap();
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["changed"], true);
    assert_eq!(v["reinstall"]["queued"], 1, "{v}");
    dev.session().await.unwrap();
    let installed = &dev.profiles[id];
    assert_eq!(installed.payloads[0]["minLength"].as_unsigned_integer(), Some(8));
    let dp = device_profile(&srv, &udid, id).await;
    assert_eq!(dp["sha256"], v["sha256"]);

    // Removal, then the state is removed.
    let v = admin
        .post(&format!("/v1/profiles/{id}/remove"), json!({"targets": [udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1);
    dev.session().await.unwrap();
    assert!(!dev.profiles.contains_key(id));
    assert_eq!(device_profile(&srv, &udid, id).await["state"], "removed");
    // Removing what is not there: the device's error is kept.
    let v = admin
        .post(&format!("/v1/profiles/{id}/remove"), json!({"targets": [udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1);
    dev.session().await.unwrap();
    let dp = device_profile(&srv, &udid, id).await;
    assert_eq!(dp["state"], "remove_failed");
    assert_eq!(dp["error_chain"][0]["ErrorDomain"], "MCProfileErrorDomain");
}

#[tokio::test]
async fn raw_install_profile_commands_are_validated_and_encrypted_too() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut dev = srv.enrolled().await;
    let udid = dev.udid.clone();
    let clip = template("com.example.raw", &webclip("R1", "https://raw.example/$UDID"));
    let uuid = enqueue(
        &admin,
        &[&udid],
        json!({"RequestType": "InstallProfile", "Payload": base64::engine::general_purpose::STANDARD.encode(&clip)}),
    )
    .await;
    let der = payload_of(&srv, &uuid).await;
    let content = mdmd::profiles::signed_content(&der).unwrap();
    let top: plist::Dictionary = plist::from_bytes(&content).unwrap();
    assert!(top.contains_key("EncryptedPayloadContent"));
    dev.session().await.unwrap();
    assert_eq!(
        dev.profiles["com.example.raw"].payloads[0]["URL"].as_string(),
        Some(format!("https://raw.example/{udid}").as_str())
    );
    // An invalid profile in a raw command: 400 with the problem, nothing queued.
    let bad = template(
        "com.example.rawbad",
        "<dict><key>PayloadType</key><string>com.apple.webClip.managed</string></dict>",
    );
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": [udid], "command": {"RequestType": "InstallProfile", "Payload": base64::engine::general_purpose::STANDARD.encode(&bad)}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "PayloadContent[0].URL"),
        "{v}"
    );
    // With encryption off the profile is signed only.
    drop(srv);
    let srv = Server::start_with(&["--encrypt-profiles", "false"]);
    let mut dev = srv.enrolled().await;
    let uuid = enqueue(
        &srv.admin(),
        &[&dev.udid],
        json!({"RequestType": "InstallProfile", "Payload": base64::engine::general_purpose::STANDARD.encode(&clip)}),
    )
    .await;
    let top: plist::Dictionary = plist::from_bytes(&mdmd::profiles::signed_content(&payload_of(&srv, &uuid).await).unwrap()).unwrap();
    assert!(top.contains_key("PayloadContent") && !top.contains_key("EncryptedPayloadContent"));
    dev.session().await.unwrap();
    assert!(!dev.profiles["com.example.raw"].encrypted);
}

#[tokio::test]
async fn pending_profiles_follow_an_identity_renewal_and_undecryptable_ones_fail() {
    // Identities due for renewal at once.
    let mut args = profiles_dir_args();
    args.extend(["--identity-days", "30", "--renew-before-days", "60"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = Server::start_with(&refs);
    let admin = srv.admin();
    let mut dev = srv.enrolled().await;
    let udid = dev.udid.clone();
    // The renewal is queued first; then a template install and a raw profile,
    // both encrypted to the identity the device has now, which the renewal
    // replaces (a new key).
    let v = admin.post("/v1/identities/renew", json!({})).await.unwrap();
    assert_eq!(v["renewal_requested"], json!([udid]));
    let v = admin
        .post("/v1/profiles/com.example.mdmd.webclip/install", json!({"targets": [udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1);
    let stale = v["command_uuid"].as_str().unwrap().to_owned();
    let raw = template("com.example.raw-stale", &webclip("RS1", "https://raw.example"));
    enqueue(
        &admin,
        &[&udid],
        json!({"RequestType": "InstallProfile", "Payload": base64::engine::general_purpose::STANDARD.encode(&raw)}),
    )
    .await;
    let handled = dev.session().await.unwrap();
    assert_eq!(dev.renewals, 1);
    let summary: Vec<(&str, mdmd::protocol::Status)> = handled.iter().map(|h| (h.request_type.as_str(), h.status)).collect();
    use mdmd::protocol::Status::*;
    // Renewal; the raw profile cannot be decrypted; the template install was
    // rebuilt for the new identity at the renewal's Authenticate and installs.
    assert_eq!(
        summary,
        vec![
            ("InstallProfile", Acknowledged),
            ("InstallProfile", Error),
            ("InstallProfile", Acknowledged)
        ],
        "{handled:?}"
    );
    let c = admin.get(&format!("/v1/commands/{stale}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Superseded");
    assert_eq!(device_profile(&srv, &udid, "com.example.mdmd.webclip").await["state"], "installed");
    assert!(dev.profiles.contains_key("com.example.mdmd.webclip"));
    let dp = device_profile(&srv, &udid, "com.example.raw-stale").await;
    assert_eq!(dp["state"], "failed", "{dp}");
    assert_eq!(dp["error_chain"][0]["ErrorDomain"], "MCProfileErrorDomain");
    assert!(
        dp["error_chain"][0]["LocalizedDescription"].as_str().unwrap().contains("decrypt"),
        "{dp}"
    );
}
