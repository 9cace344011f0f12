//! The first hour (issue 31): `mdmd serve --demo N` finishes what a newcomer
//! tries — N simulated iPhones enroll over HTTPS, are woken by the in-process
//! APNs stand-in and answer DeviceInformation and InstallProfile; the push
//! certificate shows. A restart brings the same devices back; a store with
//! real enrollments is refused. And `mdmd sim enroll --stay` keeps a device
//! answering against any server. Runs on both stores (`MDMD_TEST_STORE=postgres`).

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, KillOnDrop, Server, API_KEY, ENROLL_USER};
use serde_json::Value;

/// The active, enrolled devices `mdmd devices` lists.
fn listed(srv: &Server) -> Vec<String> {
    let v = srv.cli_json(&["devices"]);
    v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter(|d| d["active"] == true && d["checked_out"] == false && d["push_token_present"] == true)
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Wait (bounded) until `n` devices are listed.
async fn wait_for_devices(srv: &Server, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = listed(srv);
        if l.len() >= n {
            return l;
        }
        assert!(Instant::now() < deadline, "{} of {n} demo devices listed within 30 s", l.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Wait (bounded) until the command's delivery to `target` is Acknowledged with a result.
async fn acknowledged(srv: &Server, uuid: &str, target: &str) -> Value {
    let admin = srv.admin();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = admin.get(&format!("/v1/commands/{uuid}")).await.expect("command");
        let done = v["deliveries"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["enrollment"] == target))
            .is_some_and(|d| d["status"] == "Acknowledged" && !d["result"].is_null());
        if done {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "command {uuid} not acknowledged by {target} within 20 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const WEBCLIP: &str = r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>com.example.demo-clip</string><key>PayloadUUID</key><string>D3110000-0000-4000-8000-000000000001</string>
<key>PayloadDisplayName</key><string>Demo clip</string>
<key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.webClip.managed</string>
<key>PayloadVersion</key><integer>1</integer><key>PayloadIdentifier</key><string>com.example.demo-clip.c</string>
<key>PayloadUUID</key><string>D3110000-0000-4000-8000-000000000002</string><key>URL</key><string>https://demo.example</string>
<key>Label</key><string>Demo</string></dict></array></dict></plist>"#;

#[tokio::test]
async fn demo_devices_enroll_answer_and_install_a_profile() {
    let mut srv = Server::start_with(&["--demo", "3"]);
    let devices = wait_for_devices(&srv, 3).await;
    assert_eq!(devices.len(), 3, "{devices:?}");
    let udid = devices[0].clone();

    // The push certificate is set, through the normal path.
    let pc = srv.admin().get("/v1/push-cert").await.expect("push-cert");
    assert_eq!(pc["configured"], true, "{pc}");
    assert_eq!(pc["topic"], srv.topic().await, "{pc}");

    // DeviceInformation through the CLI, answered by the device (woken by push).
    let v = srv.cli_json(&["cmd", "device-info", &udid]);
    let uuid = v["command_uuid"].as_str().expect("command_uuid").to_owned();
    let c = acknowledged(&srv, &uuid, &udid).await;
    assert!(c.to_string().contains("iPhone"), "{c}");
    let (ok, out, err) = srv.cli(&["cmd", "show", &uuid]);
    assert!(ok && out.contains("Acknowledged"), "{out} {err}");

    // A profile installed and seen installed (ProfileList lists it).
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("clip.mobileconfig");
    std::fs::write(&f, WEBCLIP).expect("write");
    let v = srv.cli_json(&["profiles", "add", f.to_str().expect("path")]);
    assert_eq!(v["identifier"], "com.example.demo-clip", "{v}");
    let v = srv.cli_json(&["profiles", "install", "com.example.demo-clip", "-t", &udid]);
    let install = v["command_uuid"].as_str().expect("command_uuid").to_owned();
    acknowledged(&srv, &install, &udid).await;
    let v = srv.cli_json(&["cmd", "profile-list", &udid]);
    let list = v["command_uuid"].as_str().expect("command_uuid").to_owned();
    let c = acknowledged(&srv, &list, &udid).await;
    assert!(
        c.to_string().contains("com.example.demo-clip"),
        "ProfileList lists the installed profile: {c}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            common::device_profile(&srv, &udid, "com.example.demo-clip").await["state"] == "installed"
        })
        .await,
        "{}",
        common::device_profile(&srv, &udid, "com.example.demo-clip").await
    );

    // A restart: the same three devices come back and answer.
    srv.restart();
    let mut again = wait_for_devices(&srv, 3).await;
    again.sort();
    let mut before = devices.clone();
    before.sort();
    assert_eq!(again, before, "the same UDIDs enroll again");
    let v = srv.cli_json(&["cmd", "security-info", &udid]);
    acknowledged(&srv, v["command_uuid"].as_str().expect("uuid"), &udid).await;
}

#[tokio::test]
async fn demo_refuses_a_store_with_real_enrollments() {
    let mut srv = Server::start();
    let d = srv.enrolled().await;
    srv.kill9();
    // The same data (and database) with --demo: refused, saying why.
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        srv.data_dir().display().to_string(),
        "--certs-dir".into(),
        srv.certs_dir().display().to_string(),
        "--api-key".into(),
        API_KEY.into(),
        "--demo".into(),
        "2".into(),
    ];
    if let Some(url) = srv.database_url() {
        args.extend(["--database-url".into(), url.to_owned()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mdmd"))
        .args(&args)
        .env("MDMD_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run mdmd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--demo on a store with a real enrollment must not start");
    assert!(err.contains("not the demo's") && err.contains(&d.udid), "{err}");
}

#[tokio::test]
async fn sim_enroll_stay_keeps_answering() {
    let srv = Server::start();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mdmd"))
            .args(["sim", "enroll", "--stay", "--poll-secs", "1", "--user"])
            .arg(format!("{}:{}", ENROLL_USER.0, ENROLL_USER.1))
            .arg("--server")
            .arg(&srv.base)
            .arg("--trust-ca")
            .arg(srv.certs_dir().join("ca.pem"))
            .env("MDMD_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sim enroll"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).expect("the device enrolled");
    let udid = first.split_whitespace().next().expect("udid").to_owned();
    assert!(first.contains("enrolled"), "{first}");

    // No push certificate, no APNs: the device's own polling picks the command up.
    let v = srv.cli_json(&["cmd", "device-info", &udid]);
    let uuid = v["command_uuid"].as_str().expect("uuid").to_owned();
    acknowledged(&srv, &uuid, &udid).await;
    let line = rx.recv_timeout(Duration::from_secs(10)).expect("an answered line");
    assert!(line.contains("DeviceInformation") && line.contains(&uuid), "{line}");
    // And a second one, later: it stays online.
    let v = srv.cli_json(&["cmd", "security-info", &udid]);
    acknowledged(&srv, v["command_uuid"].as_str().expect("uuid"), &udid).await;
    drop(child);
}
