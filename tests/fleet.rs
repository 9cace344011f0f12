//! Groups and blueprints end to end, on the real server with simulated
//! devices that answer truthfully: a device arrives configured with no admin
//! command; attribute changes move it between groups (installs and
//! removals); a template edit re-installs only what changed; an unchanged
//! fleet queues nothing; conflicts are reported; what an admin installed by
//! hand is left alone; the plan is what apply then queues. Runs on both
//! stores (`MDMD_TEST_STORE=postgres`); several instances on PostgreSQL.

mod common;

use std::time::Duration;

use common::{template, wait_until, Server};
use serde_json::{json, Value};

fn webclip(id: &str, url: &str) -> String {
    format!(
        "<dict><key>PayloadType</key><string>com.apple.webClip.managed</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>{id}</string><key>PayloadUUID</key><string>{}</string>\
<key>URL</key><string>{url}</string><key>Label</key><string>{id}</string></dict>",
        uuid::Uuid::new_v4().to_string().to_uppercase()
    )
}

async fn upload(srv: &Server, identifier: &str, inner: &str, url: &str) {
    let (code, v) = srv
        .admin()
        .call_bytes("/v1/profiles", template(identifier, &webclip(inner, url)))
        .await
        .unwrap();
    assert!(code == 201 || code == 200, "{code} {v}");
}

async fn put(srv: &Server, path: &str, body: Value) -> (u16, Value) {
    srv.admin().call(reqwest::Method::PUT, path, Some(body)).await.unwrap()
}

async fn status_of(srv: &Server, blueprint: &str, id: &str) -> String {
    let v = srv.admin().get(&format!("/v1/blueprints/{blueprint}/status")).await.unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["enrollment"] == id)
        .map(|d| d["state"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// Pending commands of a device, by request type.
async fn pending(srv: &Server, id: &str) -> Vec<String> {
    let v = srv.admin().get(&format!("/v1/devices/{id}/commands")).await.unwrap();
    v["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| matches!(c["status"].as_str(), Some("Pending" | "NotNow")))
        .map(|c| c["request_type"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until the reconciler has queued something for the device (or `within` passes).
async fn settle(srv: &Server, id: &str, want: usize) -> Vec<String> {
    wait_until(Duration::from_secs(20), || async { pending(srv, id).await.len() >= want }).await;
    // And nothing more arrives.
    tokio::time::sleep(Duration::from_millis(400)).await;
    pending(srv, id).await
}

#[tokio::test]
async fn a_device_arrives_configured_and_converges_when_policy_changes() {
    let srv = Server::start_with(&["--inventory-interval", "3600"]);
    let admin = srv.admin();
    upload(&srv, "com.example.base", "clip.base", "https://intranet.example.com/").await;
    upload(&srv, "com.example.sales", "clip.sales", "https://crm.example.com/").await;
    upload(&srv, "com.example.ops", "clip.ops", "https://ops.example.com/").await;

    // Groups: a rule over admin-set attributes; a bad rule is a 400 that stores nothing.
    let (c, v) = put(
        &srv,
        "/v1/groups/sales",
        json!({"rule": "device.attributes.DEPARTMENT == \"sales\""}),
    )
    .await;
    assert_eq!(c, 200, "{v}");
    put(&srv, "/v1/groups/ops", json!({"rule": "device.attributes.DEPARTMENT == \"ops\""})).await;
    let (c, v) = put(&srv, "/v1/groups/bad", json!({"rule": "device.model =="})).await;
    assert_eq!(c, 400, "{v}");
    let (c, v) = put(&srv, "/v1/groups/typo", json!({"rule": "devcie.model == \"x\""})).await;
    assert_eq!(c, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("devcie"), "{v}");
    let deep = format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000));
    let (c, _) = put(&srv, "/v1/groups/deep", json!({ "rule": deep })).await;
    assert_eq!(c, 400);
    assert_eq!(admin.get("/v1/groups").await.unwrap()["groups"].as_array().unwrap().len(), 2);

    // Blueprints: every device gets the base profile and one command; sales gets its own.
    let (c, v) = put(
        &srv,
        "/v1/blueprints/base",
        json!({"groups": ["*"], "profiles": ["com.example.base"], "enrollment_commands": [{"RequestType": "SecurityInfo"}]}),
    )
    .await;
    assert_eq!(c, 200, "{v}");
    let (c, v) = put(
        &srv,
        "/v1/blueprints/sales",
        json!({"groups": ["sales"], "profiles": ["com.example.sales"]}),
    )
    .await;
    assert_eq!(c, 200, "{v}");
    // Naming what does not exist is a 400.
    let (c, v) = put(&srv, "/v1/blueprints/x", json!({"groups": ["nope"], "profiles": []})).await;
    assert_eq!(c, 400, "{v}");
    let (c, v) = put(&srv, "/v1/blueprints/x", json!({"groups": ["*"], "profiles": ["com.example.nope"]})).await;
    assert_eq!(c, 400, "{v}");
    let (c, v) = put(
        &srv,
        "/v1/blueprints/x",
        json!({"groups": ["*"], "enrollment_commands": [{"RequestType": "EraseDevice"}]}),
    )
    .await;
    assert_eq!(c, 400, "{v}");

    // Enrollment: the blueprint's profile and command are queued before the inventory.
    let mut d = srv.enrolled().await;
    let id = d.udid.clone();
    let handled = d.session().await.unwrap();
    let types: Vec<&str> = handled.iter().map(|h| h.request_type.as_str()).collect();
    let first_inventory = types.iter().position(|t| *t == "DeviceInformation").expect("inventory queued");
    let install = types.iter().position(|t| *t == "InstallProfile").expect("base profile queued");
    assert!(install < first_inventory, "blueprint before inventory: {types:?}");
    assert_eq!(types.iter().filter(|t| **t == "InstallProfile").count(), 1, "{types:?}");
    assert!(d.profiles.contains_key("com.example.base"));
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "base", &id).await == "converged"
        })
        .await,
        "{}",
        admin.get("/v1/blueprints/base/status").await.unwrap()
    );
    let dev = admin.get(&format!("/v1/devices/{id}")).await.unwrap();
    assert_eq!(dev["fleet"]["blueprints"][0]["name"], "base", "{dev}");
    assert_eq!(dev["fleet"]["blueprints"][0]["state"], "converged", "{dev}");

    // An attribute moves the device into sales: its profile, nothing else.
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{id}/attributes"),
            Some(json!({"DEPARTMENT": "sales"})),
        )
        .await
        .unwrap();
    assert_eq!(settle(&srv, &id, 1).await, vec!["InstallProfile"]);
    d.session().await.unwrap();
    assert!(d.profiles.contains_key("com.example.sales"));
    let g = admin.get("/v1/groups/sales").await.unwrap();
    assert_eq!(g["current_members"], json!([id]), "{g}");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "sales", &id).await == "converged"
        })
        .await
    );
    let dev = admin.get(&format!("/v1/devices/{id}")).await.unwrap();
    assert_eq!(dev["fleet"]["groups"], json!(["sales"]), "{dev}");

    // Moving to ops: sales' profile goes (no blueprint wants it there).
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{id}/attributes"),
            Some(json!({"DEPARTMENT": "ops"})),
        )
        .await
        .unwrap();
    assert_eq!(settle(&srv, &id, 1).await, vec!["RemoveProfile"], "sales out");
    d.session().await.unwrap();
    assert!(!d.profiles.contains_key("com.example.sales"), "removed when no blueprint wants it");

    // Plan before apply: the plan names the device and what it would get, queues
    // nothing, and apply then queues exactly that.
    let spec = json!({"groups": ["ops"], "profiles": ["com.example.ops"]});
    let (c, plan) = srv
        .admin()
        .call(reqwest::Method::PUT, "/v1/blueprints/ops?dry_run=true", Some(spec.clone()))
        .await
        .unwrap();
    assert_eq!(c, 200, "{plan}");
    assert_eq!(plan["devices_affected"], 1, "{plan}");
    assert_eq!(plan["devices"][0]["enrollment"], id.as_str());
    assert_eq!(
        plan["devices"][0]["install"],
        json!([{"kind": "profile", "item": "com.example.ops", "blueprints": ["ops"]}])
    );
    assert_eq!(plan["devices"][0]["remove"], json!([]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pending(&srv, &id).await.is_empty(), "a plan queues nothing");
    assert!(admin.get("/v1/blueprints/ops").await.is_err(), "a dry run stores nothing");
    put(&srv, "/v1/blueprints/ops", spec).await;
    assert_eq!(settle(&srv, &id, 1).await, vec!["InstallProfile"], "what the plan said");
    let stored_plan = admin.get("/v1/blueprints/ops/plan").await.unwrap();
    assert_eq!(
        stored_plan["devices_affected"], 0,
        "once queued, nothing is left to plan: {stored_plan}"
    );
    d.session().await.unwrap();
    assert!(d.profiles.contains_key("com.example.ops"));
    assert!(d.profiles.contains_key("com.example.base"));

    // A profile an admin installed by hand is left alone when a blueprint wanting it goes.
    upload(&srv, "com.example.hand", "clip.hand", "https://hand.example.com/").await;
    admin
        .post("/v1/profiles/com.example.hand/install", json!({"targets": [id]}))
        .await
        .unwrap();
    d.session().await.unwrap();
    put(
        &srv,
        "/v1/blueprints/hand",
        json!({"groups": ["*"], "profiles": ["com.example.hand"]}),
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "hand", &id).await == "converged"
        })
        .await
    );
    assert!(pending(&srv, &id).await.is_empty(), "already there: nothing sent");
    let (c, _) = srv
        .admin()
        .call(reqwest::Method::DELETE, "/v1/blueprints/hand", None)
        .await
        .unwrap();
    assert_eq!(c, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pending(&srv, &id).await.is_empty(), "the admin's own install is not removed");

    // An unchanged fleet: a full reconcile queues nothing.
    let r = admin.post("/v1/reconcile", json!({})).await.unwrap();
    assert_eq!(r["commands"], 0, "{r}");

    // A template edit re-installs it only where a blueprint has it.
    upload(&srv, "com.example.sales", "clip.sales", "https://crm2.example.com/").await;
    upload(&srv, "com.example.base", "clip.base", "https://intranet2.example.com/").await;
    assert_eq!(
        settle(&srv, &id, 1).await,
        vec!["InstallProfile"],
        "base only (sales is not on this device)"
    );
    d.session().await.unwrap();

    // A conflict: two profiles carrying the same payload are neither sent; it is reported.
    upload(&srv, "com.example.clash", "clip.base", "https://clash.example.com/").await;
    put(
        &srv,
        "/v1/blueprints/clash",
        json!({"groups": ["ops"], "profiles": ["com.example.clash"]}),
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "clash", &id).await == "failed"
        })
        .await
    );
    let st = admin.get("/v1/blueprints/clash/status").await.unwrap();
    let failed = st["devices"][0]["failed"].to_string();
    assert!(failed.contains("conflict") && failed.contains("clip.base"), "{st}");
    assert!(pending(&srv, &id).await.is_empty(), "a conflict is not a coin toss");
    assert!(d.profiles.contains_key("com.example.base"), "the conflicting item stays as it is");

    // Check-out: the device leaves every group.
    d.checkout().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            admin.get("/v1/groups/ops").await.unwrap()["current_members"] == json!([])
        })
        .await
    );
}

#[tokio::test]
async fn apps_with_configuration_reach_every_member_and_devices_joining_later() {
    let srv = Server::start_with(&["--inventory-interval", "0"]);
    let admin = srv.admin();
    let mut a = srv.enrolled().await;
    a.session().await.unwrap();
    put(&srv, "/v1/groups/field", json!({"members": [a.serial.clone()]})).await;
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{}/attributes", a.udid),
            Some(json!({"USERNAME": "alice"})),
        )
        .await
        .unwrap();
    // The company app with its AppConfig (seed 001), filled per device.
    let (c, v) = put(
        &srv,
        "/v1/blueprints/company-app",
        json!({"groups": ["field"], "apps": [{"itunes_store_id": 1234, "identifier": "store.1234",
            "configuration": {"deviceId": "$UDID", "username": "$USERNAME"}, "management_flags": 1}]}),
    )
    .await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(settle(&srv, &a.udid, 1).await, vec!["InstallApplication"]);
    a.session().await.unwrap();
    let conf = a
        .apps
        .get("store.1234")
        .and_then(|a| a.config.clone())
        .expect("app with configuration");
    assert_eq!(conf.get("deviceId").and_then(plist::Value::as_string), Some(a.udid.as_str()));
    assert_eq!(conf.get("username").and_then(plist::Value::as_string), Some("alice"));
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "company-app", &a.udid).await == "converged"
        })
        .await
    );

    // A device that joins the group later gets it too (a static member by UDID this time).
    let mut b = srv.enrolled().await;
    b.session().await.unwrap();
    put(&srv, "/v1/groups/field", json!({"members": [a.serial.clone(), b.udid.clone()]})).await;
    // b has no USERNAME: its copy cannot be made; the status says why, and
    // the attribute arriving is what it waited for.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "company-app", &b.udid).await == "failed"
        })
        .await
    );
    let st = admin.get("/v1/blueprints/company-app/status").await.unwrap();
    assert!(st.to_string().contains("USERNAME"), "{st}");
    assert!(pending(&srv, &b.udid).await.is_empty());
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{}/attributes", b.udid),
            Some(json!({"USERNAME": "bob"})),
        )
        .await
        .unwrap();
    assert_eq!(settle(&srv, &b.udid, 1).await, vec!["InstallApplication"]);
    b.session().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            status_of(&srv, "company-app", &b.udid).await == "converged"
        })
        .await
    );

    // Leaving the group removes the app (its bundle id is known).
    put(&srv, "/v1/groups/field", json!({"members": [b.udid.clone()]})).await;
    assert_eq!(settle(&srv, &a.udid, 1).await, vec!["RemoveApplication"]);
    a.session().await.unwrap();
    assert!(!a.apps.contains_key("store.1234"));
}

/// Two instances on one database reacting to the same change: each device
/// gets the install once.
#[tokio::test]
async fn two_instances_never_queue_the_same_install_twice() {
    if !common::on_postgres() {
        eprintln!("several instances need PostgreSQL (MDMD_TEST_STORE=postgres)");
        return;
    }
    let one = Server::start_with(&["--inventory-interval", "0"]);
    let two = one.second_with(&["--inventory-interval", "0"]);
    let mut devices = Vec::new();
    for _ in 0..4 {
        let d = one.enrolled().await;
        devices.push(d);
    }
    upload(&one, "com.example.both", "clip.both", "https://both.example.com/").await;
    put(
        &one,
        "/v1/blueprints/both",
        json!({"groups": ["*"], "profiles": ["com.example.both"]}),
    )
    .await;
    // Both instances reconcile everything at once, on top of the background run.
    let (a1, a2) = (one.admin(), two.admin());
    let (r1, r2) = tokio::join!(a1.post("/v1/reconcile", json!({})), a2.post("/v1/reconcile", json!({})));
    r1.unwrap();
    r2.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for d in &devices {
        let v = one.admin().get(&format!("/v1/devices/{}/commands", d.udid)).await.unwrap();
        let installs = v["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["request_type"] == "InstallProfile")
            .count();
        assert_eq!(installs, 1, "{}: {v}", d.udid);
    }
}

/// Seed 000 through a blueprint: the identity provider's app with the shared
/// token in its configuration reaches the group; a rotation re-sends the
/// configuration alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_providers_app_follows_token_rotation() {
    let (hook, events) = common::webhook_receiver().await;
    let vpp = mdmd::sim::vpp_api::VppStandIn::start("Example Org").await.unwrap();
    vpp.add_app("1015034463", 10);
    vpp.set_app_meta("1015034463", "PingID", "com.pingidentity.pingid", "2.4");
    let vpp_url = vpp.url();
    let srv = Server::start_with(&[
        "--apps-and-books-url",
        &vpp_url,
        "--inventory-interval",
        "0",
        "--webhook-url",
        &hook,
        "--webhook-secret",
        "fleet-hook-secret-0123456789",
    ]);
    let admin = srv.admin();
    let t1 = srv.cli_json(&["access-tokens", "generate"]);
    let t1v = t1["value"].as_str().unwrap().to_owned();
    // PingID from the App Store, on a licence (a device has no Apple Account to buy it with).
    let (s, v) = admin
        .call(reqwest::Method::PUT, "/v1/apps-and-books/tokens/main", None)
        .await
        .unwrap();
    assert_eq!(s, 400, "an empty body is not a token: {v}");
    let r = srv
        .client()
        .put(format!("{}/v1/apps-and-books/tokens/main", srv.base))
        .bearer_auth(common::API_KEY)
        .body(vpp.token_file())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let (s, v) = admin
        .call(reqwest::Method::POST, "/v1/apps", Some(json!({"itunes_store_id": 1015034463u64})))
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    let mut d = srv.enrolled().await;
    d.app_store = Some(vpp.url());
    d.session().await.unwrap();
    let (c, v) = put(
        &srv,
        "/v1/blueprints/pingid",
        json!({"groups": ["*"], "apps": [{"app": "com.pingidentity.pingid",
            "configuration": {"PINGID_MDM_TOKEN": "$ACCESS_TOKEN"}}]}),
    )
    .await;
    assert_eq!(c, 200, "{v}");
    assert_eq!(settle(&srv, &d.udid, 1).await, vec!["InstallApplication"]);
    assert!(vpp.assigned("1015034463", &d.serial), "the licence came first");
    d.session().await.unwrap();
    d.settle_apps().await;
    let token = |d: &mdmd::sim::SimDevice| {
        d.apps
            .get("com.pingidentity.pingid")
            .and_then(|a| a.config.clone())
            .and_then(|c| c.get("PINGID_MDM_TOKEN").and_then(plist::Value::as_string).map(str::to_owned))
    };
    assert_eq!(token(&d).as_deref(), Some(t1v.as_str()));
    // The device converged: an event says so.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            events.lock().unwrap().iter().any(|e| {
                e["topic"] == "mdmd.BlueprintConverged"
                    && e["mdmd_event"]["blueprint"] == "pingid"
                    && e["mdmd_event"]["enrollment"] == d.udid.as_str()
            })
        })
        .await,
        "{:?}",
        events.lock().unwrap()
    );

    // Rotation: the configuration alone is re-sent (a Settings command), not the app.
    let t2 = srv.cli_json(&["access-tokens", "generate", "--revoke", t1["id"].as_str().unwrap()]);
    let t2v = t2["value"].as_str().unwrap().to_owned();
    assert_eq!(settle(&srv, &d.udid, 1).await, vec!["Settings"]);
    d.session().await.unwrap();
    assert_eq!(token(&d).as_deref(), Some(t2v.as_str()));
    // And the blueprint has nothing more to do.
    let r = admin.post(&format!("/v1/reconcile?device={}", d.udid), json!({})).await.unwrap();
    assert_eq!(r["commands"], 0, "{r}");
}

/// The 802.1X Wi-Fi profile through a blueprint: every device that enrolls
/// gets its own copy, encrypted to it, with a single-use SCEP challenge, and
/// its own Wi-Fi identity — with no admin command.
#[tokio::test]
async fn every_device_gets_its_own_eap_tls_identity() {
    let dir = common::repo_file("profiles").display().to_string();
    let srv = Server::start_with(&["--inventory-interval", "0", "--profiles-dir", &dir]);
    let admin = srv.admin();
    let (c, v) = put(
        &srv,
        "/v1/blueprints/wifi",
        json!({"groups": ["*"], "profiles": ["com.example.mdmd.wifi"]}),
    )
    .await;
    assert_eq!(c, 200, "{v}");
    let mut serials = Vec::new();
    for _ in 0..2 {
        let mut d = srv.enrolled().await;
        let handled = d.session().await.unwrap();
        assert_eq!(
            handled.iter().filter(|h| h.request_type == "InstallProfile").count(),
            1,
            "{handled:?}"
        );
        let p = d.profiles.get("com.example.mdmd.wifi").expect("installed at enrollment");
        assert!(p.encrypted);
        assert_eq!(p.identities.len(), 1);
        let serial = common::serial_hex(&p.identities[0].1.cert);
        let cert = admin.get(&format!("/v1/certificates/{serial}")).await.unwrap();
        assert_eq!(
            cert["purpose"], "profile:com.example.mdmd.wifi/com.example.mdmd.wifi.identity",
            "{cert}"
        );
        assert_eq!(cert["enrollment"], d.udid.as_str());
        assert!(
            wait_until(Duration::from_secs(20), || async {
                status_of(&srv, "wifi", &d.udid).await == "converged"
            })
            .await
        );
        serials.push(serial);
    }
    assert_ne!(serials[0], serials[1], "one identity per device");
}

/// `./blueprints` at start: each valid file becomes a blueprint named after
/// it; an invalid one is skipped and changes nothing.
#[tokio::test]
async fn blueprints_load_from_their_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("everyone.json"),
        r#"{"groups": ["*"], "enrollment_commands": [{"RequestType": "SecurityInfo"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.json"),
        r#"{"groups": ["*"], "profiles": ["com.example.absent"]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a blueprint").unwrap();
    let d = dir.path().display().to_string();
    let srv = Server::start_with(&["--inventory-interval", "0", "--blueprints-dir", &d]);
    let v = srv.admin().get("/v1/blueprints").await.unwrap();
    let names: Vec<&str> = v["blueprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["everyone"], "{v}");
    assert_eq!(v["blueprints"][0]["source"], "file:everyone.json");
    let mut dev = srv.enrolled().await;
    let handled = dev.session().await.unwrap();
    assert_eq!(
        handled.iter().filter(|h| h.request_type == "SecurityInfo").count(),
        1,
        "{handled:?}"
    );
    // The CLI sees the same.
    let (ok, out, err) = srv.cli(&["blueprints", "list", "-o", "table"]);
    assert!(ok && out.contains("everyone"), "{out}{err}");
    let (ok, out, err) = srv.cli(&["groups", "set", "vip", "--member", &dev.serial]);
    assert!(ok && out.contains("vip"), "{out}{err}");
    let (ok, _, err) = srv.cli(&["groups", "set", "bad", "--rule", "device.model =="]);
    assert!(!ok && err.contains("does not parse"), "{err}");
}
