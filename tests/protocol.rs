//! The check-in and command protocol, end to end against the real server.

mod common;

use common::{enqueue, Server};
use mdmd::protocol::schema::{validate_plist, Schema};
use mdmd::protocol::Status;
use serde_json::json;

#[tokio::test]
async fn enroll_and_fifo_command_loop() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    let mut b = srv.device().await;
    a.enroll().await.unwrap();
    b.enroll().await.unwrap();
    // Nothing queued yet: the empty body.
    assert!(a.session().await.unwrap().is_empty());

    let v = admin
        .post("/v1/commands", json!({"targets": [a.udid, b.udid, "NOT-ENROLLED"], "command": {"RequestType": "DeviceInformation", "Queries": ["OSVersion", "SerialNumber", "UDID"]}}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 2);
    assert_eq!(v["unknown_targets"], json!(["NOT-ENROLLED"]));
    let info = v["command_uuid"].as_str().unwrap().to_owned();
    let list = enqueue(&admin, &[&a.udid], json!({"RequestType": "ProfileList"})).await;
    let sec = enqueue(&admin, &[&a.udid], json!({"RequestType": "SecurityInfo"})).await;

    let handled = a.session().await.unwrap();
    let order: Vec<&str> = handled.iter().map(|h| h.command_uuid.as_str()).collect();
    assert_eq!(order, vec![info.as_str(), list.as_str(), sec.as_str()], "FIFO per enrollment");
    assert!(handled.iter().all(|h| h.status == Status::Acknowledged));
    assert_eq!(b.session().await.unwrap().len(), 1);
    assert!(a.session().await.unwrap().is_empty(), "finished commands are not delivered again");

    let c = admin.get(&format!("/v1/commands/{info}")).await.unwrap();
    assert_eq!(c["request_type"], "DeviceInformation");
    let deliveries = c["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in deliveries {
        assert_eq!(d["status"], "Acknowledged");
        let qr = &d["result"]["QueryResponses"];
        assert_eq!(qr["OSVersion"], "18.1");
        assert_eq!(qr["UDID"], d["enrollment"]);
    }
    let dev = admin.get(&format!("/v1/devices/{}", a.udid)).await.unwrap();
    assert_eq!(dev["active"], true);
    assert_eq!(dev["push_token_present"], true);
    assert_eq!(dev["pending_commands"], 0);
    assert_eq!(dev["info"]["serial_number"], a.serial);
    let cmds = admin.get(&format!("/v1/devices/{}/commands", a.udid)).await.unwrap();
    assert_eq!(cmds["commands"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn not_now_is_skipped_for_the_session_and_redelivered_on_idle() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    a.enroll().await.unwrap();
    let apps = enqueue(&admin, &[&a.udid], json!({"RequestType": "InstalledApplicationList"})).await;
    let sec = enqueue(&admin, &[&a.udid], json!({"RequestType": "SecurityInfo"})).await;
    a.not_now.insert("InstalledApplicationList".into());

    let handled = a.session().await.unwrap();
    assert_eq!(
        handled.len(),
        2,
        "NotNow'ed command is not re-sent in the same session: {handled:?}"
    );
    assert_eq!(
        (handled[0].command_uuid.as_str(), handled[0].status),
        (apps.as_str(), Status::NotNow)
    );
    assert_eq!(
        (handled[1].command_uuid.as_str(), handled[1].status),
        (sec.as_str(), Status::Acknowledged)
    );
    let c = admin.get(&format!("/v1/commands/{apps}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "NotNow");
    assert_eq!(c["deliveries"][0]["not_now_count"], 1);

    // Still locked: delivered again on the next Idle, NotNow again.
    let handled = a.session().await.unwrap();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].status, Status::NotNow);

    a.not_now.clear();
    let handled = a.session().await.unwrap();
    assert_eq!(handled.len(), 1);
    assert_eq!(
        (handled[0].command_uuid.as_str(), handled[0].status),
        (apps.as_str(), Status::Acknowledged)
    );
    let c = admin.get(&format!("/v1/commands/{apps}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Acknowledged");
    assert_eq!(c["deliveries"][0]["not_now_count"], 2);
    assert!(c["deliveries"][0]["result"]["InstalledApplicationList"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
}

#[tokio::test]
async fn broken_session_resends_the_same_command() {
    let srv = Server::start();
    let admin = srv.admin();
    let a = srv.device().await;
    a.enroll().await.unwrap();
    let uuid = enqueue(&admin, &[&a.udid], json!({"RequestType": "ProfileList"})).await;
    let first = a.connect(&a.idle_report()).await.unwrap().unwrap();
    // The device never answers (connection lost); next session starts with Idle.
    let again = a.connect(&a.idle_report()).await.unwrap().unwrap();
    assert_eq!(first.uuid, uuid);
    assert_eq!(again.uuid, uuid, "sending does not dequeue");
}

#[tokio::test]
async fn duplicate_foreign_and_unknown_results_change_nothing() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    let mut b = srv.device().await;
    a.enroll().await.unwrap();
    b.enroll().await.unwrap();
    let x = enqueue(&admin, &[&a.udid], json!({"RequestType": "SecurityInfo"})).await;
    let y = enqueue(&admin, &[&b.udid], json!({"RequestType": "ProfileList"})).await;

    let cmd = a.connect(&a.idle_report()).await.unwrap().unwrap();
    let (_, report) = a.answer(&cmd);
    assert!(a.connect(&report).await.unwrap().is_none());
    let before = admin.get(&format!("/v1/commands/{x}")).await.unwrap();
    // The same result again (e.g. resent after a crash): ignored, device gets the empty body.
    assert!(a.connect(&report).await.unwrap().is_none());
    // An Error for the finished command does not overwrite its result.
    let mut err = report.clone();
    err.insert("Status".into(), "Error".into());
    assert!(a.connect(&err).await.unwrap().is_none());
    assert_eq!(admin.get(&format!("/v1/commands/{x}")).await.unwrap(), before);

    // A reports a result for B's command: nothing changes for B, A gets its own next (none).
    let mut foreign = a.idle_report();
    foreign.insert("Status".into(), "Acknowledged".into());
    foreign.insert("CommandUUID".into(), y.clone().into());
    assert!(a.connect(&foreign).await.unwrap().is_none());
    let yv = admin.get(&format!("/v1/commands/{y}")).await.unwrap();
    assert_eq!(yv["deliveries"][0]["status"], "Pending");
    // Unknown UUID: ignored.
    foreign.insert("CommandUUID".into(), "00000000-0000-0000-0000-000000000000".into());
    assert!(a.connect(&foreign).await.unwrap().is_none());
    // B still gets and finishes its command.
    let h = b.session().await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].command_uuid, y);
}

#[tokio::test]
async fn bad_device_input_gets_4xx_and_changes_nothing() {
    let srv = Server::start_with(&["--max-body", "65536"]);
    let admin = srv.admin();
    let a = srv.device().await;
    a.enroll().await.unwrap();
    enqueue(&admin, &[&a.udid], json!({"RequestType": "ProfileList"})).await;
    let snapshot = || async {
        (
            admin.get("/v1/devices").await.unwrap(),
            admin.get(&format!("/v1/devices/{}/commands", a.udid)).await.unwrap(),
        )
    };
    let before = snapshot().await;
    let topic = srv.topic().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"\x00\x01\x02garbage\xff\xfe".to_vec(), 400),
        ("binary plist header with junk", b"bplist00\xff\xff\xff\xff\x00\x00".to_vec(), 400),
        ("truncated xml", b"<?xml version=\"1.0\"?><plist><dict><key>MessageType</key>".to_vec(), 400),
        ("not a dict", b"<plist><array/></plist>".to_vec(), 400),
        ("no MessageType, no Status", format!("<plist><dict><key>UDID</key><string>{}</string></dict></plist>", a.udid).into_bytes(), 400),
        ("unknown MessageType", format!("<plist><dict><key>MessageType</key><string>Hello</string><key>UDID</key><string>{}</string></dict></plist>", a.udid).into_bytes(), 400),
        ("unknown Status", format!("<plist><dict><key>Status</key><string>Maybe</string><key>UDID</key><string>{}</string></dict></plist>", a.udid).into_bytes(), 400),
        ("missing UDID", format!("<plist><dict><key>MessageType</key><string>Authenticate</string><key>Topic</key><string>{topic}</string></dict></plist>").into_bytes(), 400),
        ("wrong topic", format!("<plist><dict><key>MessageType</key><string>Authenticate</string><key>Topic</key><string>com.apple.mgmt.External.other</string><key>UDID</key><string>NEW-DEVICE</string></dict></plist>").into_bytes(), 400),
        ("TokenUpdate before Authenticate", format!("<plist><dict><key>MessageType</key><string>TokenUpdate</string><key>Topic</key><string>{topic}</string><key>UDID</key><string>NEW-DEVICE</string><key>Token</key><data>AAAA</data><key>PushMagic</key><string>x</string></dict></plist>").into_bytes(), 400),
        ("unknown device polls", b"<plist><dict><key>Status</key><string>Idle</string><key>UDID</key><string>NEVER-ENROLLED</string></dict></plist>".to_vec(), 400),
        ("oversized body", vec![b'a'; 70_000], 413),
    ];
    for (name, body, want) in cases {
        for path in ["/mdm/checkin", "/mdm/connect", "/mdm"] {
            let (status, text) = a
                .put_raw(path, "application/x-apple-aspen-mdm-checkin", body.clone())
                .await
                .unwrap();
            assert_eq!(status, want, "{name} on {path}: {}", String::from_utf8_lossy(&text));
            assert_ne!(status, 401);
        }
    }
    assert_eq!(snapshot().await, before, "bad input changed state");
}

#[tokio::test]
async fn checkin_messages() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    a.enroll().await.unwrap();
    let topic = a.topic.clone();
    let msg = |pairs: Vec<(&str, plist::Value)>| {
        let mut d = plist::Dictionary::new();
        d.insert("UDID".into(), a.udid.clone().into());
        d.insert("Topic".into(), topic.clone().into());
        for (k, v) in pairs {
            d.insert(k.into(), v);
        }
        d
    };
    // Bootstrap token escrow.
    let get = msg(vec![("MessageType", "GetBootstrapToken".into())]);
    let empty = plist::Value::from_reader(std::io::Cursor::new(a.checkin(&get).await.unwrap())).unwrap();
    assert_eq!(
        empty.as_dictionary().unwrap().get("BootstrapToken"),
        Some(&plist::Value::Data(vec![]))
    );
    a.checkin(&msg(vec![
        ("MessageType", "SetBootstrapToken".into()),
        ("BootstrapToken", plist::Value::Data(b"secret-bt".to_vec())),
    ]))
    .await
    .unwrap();
    let got = plist::Value::from_reader(std::io::Cursor::new(a.checkin(&get).await.unwrap())).unwrap();
    assert_eq!(
        got.as_dictionary().unwrap().get("BootstrapToken"),
        Some(&plist::Value::Data(b"secret-bt".to_vec()))
    );
    let dev = admin.get(&format!("/v1/devices/{}", a.udid)).await.unwrap();
    assert_eq!(dev["bootstrap_token_escrowed"], true);
    assert!(!dev.to_string().contains("c2VjcmV0LWJ0"), "the token itself is never shown");

    // UserAuthenticate: declined with 410 on the first message.
    let (s, _) = a
        .put_raw(
            "/mdm/checkin",
            "x",
            mdmd::protocol::to_xml(&msg(vec![("MessageType", "UserAuthenticate".into()), ("UserID", "U1".into())])),
        )
        .await
        .unwrap();
    assert_eq!(s, 410);
    // DeclarativeManagement: a valid empty answer (JSON).
    let body = a
        .checkin(&msg(vec![
            ("MessageType", "DeclarativeManagement".into()),
            ("Endpoint", "tokens".into()),
        ]))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["SyncTokens"]["DeclarationsToken"].is_string());
    // ReturnToService: not enabled.
    let body = a.checkin(&msg(vec![("MessageType", "ReturnToService".into())])).await.unwrap();
    let v = plist::Value::from_reader(std::io::Cursor::new(body)).unwrap();
    assert_eq!(
        v.as_dictionary()
            .unwrap()
            .get("ReturnToService")
            .and_then(|r| r.as_dictionary())
            .and_then(|r| r.get("Enabled")),
        Some(&false.into())
    );
    // GetToken: not offered.
    let (s, _) = a
        .put_raw(
            "/mdm/checkin",
            "x",
            mdmd::protocol::to_xml(&msg(vec![
                ("MessageType", "GetToken".into()),
                ("TokenServiceType", "com.apple.maid".into()),
            ])),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);

    // A user channel: its own enrollment id, push info and queue.
    let mut tu = a.token_update_message();
    tu.insert("UserID".into(), "USER-1".into());
    tu.insert("UserShortName".into(), "jo".into());
    tu.insert("PushMagic".into(), "USER-MAGIC".into());
    a.checkin(&tu).await.unwrap();
    let user_id = format!("{}:USER-1", a.udid);
    let u = admin.get(&format!("/v1/devices/{user_id}")).await.unwrap();
    assert_eq!(u["kind"], "user");
    assert_eq!(u["device"], a.udid);
    enqueue(&admin, &[&user_id], json!({"RequestType": "ProfileList"})).await;
    assert!(
        a.session().await.unwrap().is_empty(),
        "the device channel does not see the user channel's queue"
    );

    // Re-enrollment (Authenticate with a new identity; approved, the device being active) clears
    // pending commands of the device and its user channels. (The same identity again changes
    // nothing: tests/identity.rs.)
    enqueue(&admin, &[&a.udid], json!({"RequestType": "SecurityInfo"})).await;
    srv.cli_json(&["devices", "approve-reenroll", &a.udid, "--expires-in", "600"]);
    let again = mdmd::sim::SimDevice::from_profile_service(srv.client(), &srv.profile().await, common::pool_key(), None, Some(&a.udid))
        .await
        .unwrap();
    a.identity = again.identity.clone();
    a.authenticate().await.unwrap();
    let dev = admin.get(&format!("/v1/devices/{}", a.udid)).await.unwrap();
    assert_eq!(dev["active"], false, "not pushable until TokenUpdate");
    assert_eq!(dev["pending_commands"], 0);
    assert_eq!(admin.get(&format!("/v1/devices/{user_id}")).await.unwrap()["pending_commands"], 0);
    a.token_update().await.unwrap();
    assert!(a.session().await.unwrap().is_empty());

    // CheckOut: kept for history, inactive, refused afterwards.
    a.checkout().await.unwrap();
    let dev = admin.get(&format!("/v1/devices/{}", a.udid)).await.unwrap();
    assert_eq!(dev["checked_out"], true);
    assert_eq!(dev["active"], false);
    assert_eq!(admin.get(&format!("/v1/devices/{user_id}")).await.unwrap()["active"], false);
    let (s, _) = a
        .put_raw("/mdm/connect", "x", mdmd::protocol::to_xml(&a.idle_report()))
        .await
        .unwrap();
    assert_eq!(s, 400);
}

#[tokio::test]
async fn admin_api_needs_the_key_and_validates_commands() {
    let srv = Server::start();
    let a = srv.device().await;
    a.enroll().await.unwrap();
    let client = srv.client();
    for (key, want) in [(None, 401), (Some("wrong"), 401), (Some(common::API_KEY), 200)] {
        let mut r = client.get(format!("{}/v1/devices", srv.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        assert_eq!(r.send().await.unwrap().status().as_u16(), want);
    }
    let admin = srv.admin();
    let bad = [
        (json!({"RequestType": "DeviceInformation"}), "Queries"),
        (json!({"RequestType": "DeviceInformation", "Queries": [1]}), "Queries[0]"),
        (json!({"RequestType": "InstallProfile", "Payload": "not base64!"}), "Payload"),
        (
            json!({"RequestType": "Settings", "Settings": [{"Item": "NoSuchItem"}]}),
            "Settings[0].Item",
        ),
        (json!({"RequestType": "NoSuchCommand"}), "RequestType"),
        (json!({"Queries": []}), "RequestType"),
        (json!({"RequestType": "DeviceLock", "PIN": 123456}), "PIN"),
    ];
    for (cmd, key) in bad {
        let (s, v) = admin
            .call(
                reqwest::Method::POST,
                "/v1/commands",
                Some(json!({"targets": [a.udid], "command": cmd})),
            )
            .await
            .unwrap();
        assert_eq!(s, 400, "{cmd}: {v}");
        assert!(v["error"].as_str().unwrap().contains(key), "{cmd}: {v}");
    }
    assert_eq!(admin.get(&format!("/v1/devices/{}", a.udid)).await.unwrap()["pending_commands"], 0);
    let (s, _) = admin.call(reqwest::Method::GET, "/v1/commands/nope", None).await.unwrap();
    assert_eq!(s, 404);
    let (s, _) = admin
        .call(reqwest::Method::POST, "/v1/commands", Some(json!({"targets": []})))
        .await
        .unwrap();
    assert_eq!(s, 400);

    // Clearing a queue.
    enqueue(&admin, &[&a.udid], json!({"RequestType": "ProfileList"})).await;
    enqueue(&admin, &[&a.udid], json!({"RequestType": "SecurityInfo"})).await;
    let (s, v) = admin
        .call(reqwest::Method::DELETE, &format!("/v1/devices/{}/commands", a.udid), None)
        .await
        .unwrap();
    assert_eq!((s, v["cleared"].as_u64()), (200, Some(2)));
    assert!(a.connect(&a.idle_report()).await.unwrap().is_none());
    let cmds = admin.get(&format!("/v1/devices/{}/commands", a.udid)).await.unwrap();
    assert!(cmds["commands"].as_array().unwrap().iter().all(|c| c["status"] == "Cleared"));
}

#[tokio::test]
async fn device_listing_is_paged() {
    let srv = Server::start();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let d = srv.device().await;
        d.enroll().await.unwrap();
        ids.push(d.udid.clone());
    }
    ids.sort();
    let admin = srv.admin();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/devices?limit=2&after={a}"),
            None => "/v1/devices?limit=2".into(),
        };
        let v = admin.get(&path).await.unwrap();
        seen.extend(
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn simulated_answers_are_valid_against_apple_schemas() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    a.enroll().await.unwrap();
    let commands = [
        json!({"RequestType": "DeviceInformation", "Queries": ["UDID", "DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model", "ProductName", "SerialNumber", "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel", "IMEI", "ICCID", "WiFiMAC", "BluetoothMAC", "IsSupervised", "IsActivationLockEnabled", "PhoneNumber", "IsRoaming", "TimeZone"]}),
        json!({"RequestType": "SecurityInfo"}),
        json!({"RequestType": "ProfileList"}),
        json!({"RequestType": "CertificateList"}),
        json!({"RequestType": "InstalledApplicationList"}),
        json!({"RequestType": "ManagedApplicationList"}),
        json!({"RequestType": "ProvisioningProfileList"}),
        json!({"RequestType": "Restrictions"}),
        json!({"RequestType": "DeviceLock", "Message": "Call IT", "PhoneNumber": "+1 555 0100"}),
        json!({"RequestType": "InstallApplication", "iTunesStoreID": 951937596}),
    ];
    for c in &commands {
        enqueue(&admin, &[&a.udid], c.clone()).await;
    }
    // Drive the loop by hand so every report can be checked before it is sent.
    let mut report = a.idle_report();
    let mut n = 0;
    while let Some(cmd) = a.connect(&report).await.unwrap() {
        let (status, r) = a.answer(&cmd);
        assert_eq!(status, Status::Acknowledged, "{}", cmd.request_type);
        let spec = &Schema::get().command(&cmd.request_type).unwrap().resp;
        let mut keys = r.clone();
        for k in ["UDID", "Status", "CommandUUID"] {
            keys.remove(k);
        }
        validate_plist(spec, &keys, "", false).unwrap_or_else(|e| panic!("{}: {e}", cmd.request_type));
        if !spec.is_empty() {
            assert!(!keys.is_empty(), "{}: no response keys", cmd.request_type);
        }
        report = r;
        n += 1;
    }
    assert_eq!(n, commands.len());
    let list = admin.get(&format!("/v1/devices/{}/commands", a.udid)).await.unwrap();
    assert!(list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "Acknowledged" && c["result"].is_object()));
}
