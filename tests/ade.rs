//! Automated Device Enrollment end to end: the real server (over HTTPS)
//! talks to a stand-in of Apple's ADE API (`mdmd::sim::ade_api`, written
//! from Apple's documentation: OAuth 1.0a checked, cursors, pages, 401 / 429
//! / expired cursor), and simulated ADE iPhones boot, send their MachineInfo,
//! enroll and wait in Setup Assistant until DeviceConfigured.

mod common;

use std::time::Duration;

use common::ade::{connect, device_cert, public_key, start, sync};
use common::{Server, API_KEY};
use mdmd::ade::ServerToken;
use mdmd::sim::ade::{activation, first_boot, seal_token_file, until_configured};
use mdmd::sim::ade_api::AdeStandIn;
use serde_json::{json, Value};

async fn put_token(srv: &Server, key: &str, name: &str, file: Vec<u8>) -> (u16, Value) {
    let (s, text) = common::ade::put_token(srv, key, name, file).await;
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn put_profile(srv: &Server, name: &str, query: &str, body: Value) -> (u16, Value) {
    srv.admin()
        .call(reqwest::Method::PUT, &format!("/v1/ade/profiles/{name}{query}"), Some(body))
        .await
        .unwrap()
}

fn webclip(identifier: &str) -> Vec<u8> {
    let inner = format!(
        "<dict><key>PayloadType</key><string>com.apple.webClip.managed</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>{identifier}.clip</string><key>PayloadUUID</key><string>{}</string>\
<key>URL</key><string>https://intranet.example.com/</string><key>Label</key><string>Intranet</string></dict>",
        uuid::Uuid::new_v4().to_string().to_uppercase()
    );
    common::template(identifier, &inner)
}

fn serial(i: usize) -> String {
    format!("F{i:04}ADE{:04}", std::process::id() % 10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tokens_are_decrypted_sealed_and_refused_when_wrong() {
    let abm = AdeStandIn::start("mdmd test server").await.unwrap();
    let srv = start(&abm, &[]);
    let cert = public_key(&srv).await;
    // The CLI prints the same certificate.
    let (ok, out, err) = srv.cli(&["ade", "public-key"]);
    assert!(ok, "{err}");
    assert_eq!(out.as_bytes(), cert.to_pem().unwrap().as_slice());

    // Encrypted to another key: refused, nothing stored.
    let other = common::push::TestCa::new("someone else");
    let (s, v) = put_token(&srv, API_KEY, "main", seal_token_file(&abm.token, &other.cert).unwrap()).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not encrypted to this server's public key"),
        "{v}"
    );
    // Corrupt.
    let (s, v) = put_token(
        &srv,
        API_KEY,
        "main",
        b"Content-Type: application/pkcs7-mime\r\n\r\nnot base64 at all".to_vec(),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a server token file"), "{v}");
    // Expired.
    let expired = ServerToken {
        access_token_expiry: "2020-01-01T00:00:00Z".into(),
        ..abm.token.clone()
    };
    let (s, v) = put_token(&srv, API_KEY, "main", seal_token_file(&expired, &cert).unwrap()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    let (_, v) = srv.admin().call(reqwest::Method::GET, "/v1/ade/tokens", None).await.unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 0, "{v}");

    // Lesser roles: an operator may read tokens (no secrets) but not upload one.
    let operator = srv.account("ops", "operator");
    let (s, _) = put_token(&srv, &operator, "main", seal_token_file(&abm.token, &cert).unwrap()).await;
    assert_eq!(s, 403);

    // The real one, through the CLI.
    let file = srv.dir.path().join("token.p7m");
    std::fs::write(&file, seal_token_file(&abm.token, &cert).unwrap()).unwrap();
    let v = srv.cli_json(&["ade", "upload-token", "main", file.to_str().unwrap()]);
    assert_eq!(v["name"], "main", "{v}");
    assert_eq!(v["server_name"], "mdmd test server", "the account was read with the token: {v}");
    assert_eq!(v["expired"], false);
    // Stored sealed: no secret in the answer, the listing, or the database files.
    let listing = srv
        .client()
        .get(format!("{}/v1/ade/tokens", srv.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [&abm.token.consumer_secret, &abm.token.access_secret, &abm.token.access_token] {
        assert!(!listing.contains(secret.as_str()), "a token secret in the listing");
        assert!(!v.to_string().contains(secret.as_str()), "a token secret in the answer");
    }
    if !common::on_postgres() {
        for entry in std::fs::read_dir(srv.data_dir()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(
                !hay.contains(abm.token.access_secret.as_str()),
                "the access secret is stored in the clear"
            );
        }
    }
    // Expiring within 30 days: a warning in /v1/health.
    let soon = ServerToken {
        access_token_expiry: mdmd::clock::rfc3339(mdmd::clock::now() + 10 * 86_400).unwrap(),
        ..abm.token.clone()
    };
    let (s, v) = put_token(&srv, API_KEY, "soon", seal_token_file(&soon, &cert).unwrap()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["expires_soon"], true, "{v}");
    let h = srv.admin().get("/v1/health").await.unwrap();
    assert!(
        h["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("ADE server token soon expires in")),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pages_resumes_and_recovers_from_apple_errors() {
    let abm = AdeStandIn::start("sync server").await.unwrap();
    abm.set_page_limit_cap(10);
    for i in 0..25 {
        abm.add_device(&serial(i), if i % 2 == 0 { "iPhone 15" } else { "iPad Air" });
    }
    let srv = start(&abm, &[]);
    connect(&srv, &abm, "main").await;
    // Two default profiles: iPads by rule, everything else by the catch-all.
    let (s, v) = put_profile(
        &srv,
        "phones",
        "?default=true",
        json!({"profile_name": "Phones", "is_supervised": true, "await_device_configured": true, "skip_setup_items": ["Siri", "Restore"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let phones_uuid = v["uuids"]["main"].as_str().expect("defined at Apple").to_owned();
    assert!(
        v["profile"]["url"].as_str().unwrap().ends_with("/mdm/ade/enroll"),
        "url defaults to ours: {v}"
    );
    assert_eq!(abm.profile(&phones_uuid).unwrap()["profile_name"], "Phones");
    let (s, v) = put_profile(
        &srv,
        "ipads",
        &format!("?default=true&rule={}", urlencoding::encode("device.model.startsWith(\"iPad\")")),
        json!({"profile_name": "iPads"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ipads_uuid = v["uuids"]["main"].as_str().unwrap().to_owned();
    // Bad profiles change nothing.
    let (s, v) = put_profile(&srv, "bad", "", json!({"profile_name": "x", "skip_setup_items": ["NotAPane"]})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("NotAPane"), "{v}");
    let (s, v) = put_profile(&srv, "bad", "", json!({"is_supervised": true})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        srv.admin()
            .call(reqwest::Method::GET, "/v1/ade/profiles/bad", None)
            .await
            .unwrap()
            .0
            == 404
    );

    // First sync: a full fetch over three pages; every device gets its default.
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    let r = &v["tokens"][0];
    assert_eq!(
        (r["full"].as_bool(), r["pages"].as_u64(), r["devices"].as_u64()),
        (Some(true), Some(3), Some(25)),
        "{v}"
    );
    assert_eq!(r["assigned"], 25, "{v}");
    assert_eq!(abm.device(&serial(0)).unwrap().profile_uuid.as_deref(), Some(phones_uuid.as_str()));
    assert_eq!(abm.device(&serial(1)).unwrap().profile_uuid.as_deref(), Some(ipads_uuid.as_str()));
    let devs = srv.admin().get("/v1/ade/devices?limit=1000").await.unwrap();
    let devs = devs["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 25);
    assert!(
        devs.iter().all(|d| d["profile_status"] == "assigned" && d["enrolled"] == false),
        "{devs:?}"
    );

    // ABM changes: two added, one renamed, one released; the next sync sees only those.
    abm.add_device(&serial(100), "iPhone 16");
    abm.add_device(&serial(101), "iPad mini");
    abm.modify_device(&serial(2), "front desk");
    abm.remove_device(&serial(3));
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    let r = &v["tokens"][0];
    assert_eq!(r["full"], false, "{v}");
    assert_eq!((r["added"].as_u64(), r["deleted"].as_u64()), (Some(2), Some(1)), "{v}");
    assert_eq!(r["assigned"], 2, "only the added devices: {v}");
    assert_eq!(abm.device(&serial(101)).unwrap().profile_uuid.as_deref(), Some(ipads_uuid.as_str()));
    let d3 = srv
        .admin()
        .get(&format!("/v1/ade/devices?after={}&limit=1", serial(2)))
        .await
        .unwrap();
    assert_eq!(d3["devices"][0]["op"], "deleted", "{d3}");

    // The cursor expires at Apple: a full fetch again, said in the report.
    abm.expire_cursors();
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tokens"][0]["full"], true, "{v}");
    assert!(v["tokens"][0]["problems"].to_string().contains("cursor"), "{v}");

    // The session expires: the client signs in again by itself.
    let before = abm.stats().sessions;
    abm.expire_sessions();
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(abm.stats().sessions, before + 1);

    // Throttled twice: it waits as told and gets through.
    abm.throttle_next(2, 1);
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    assert!(abm.stats().throttled >= 2);

    // New terms to accept in ABM: the sync fails and says so, in health too.
    abm.require_terms(true);
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 502, "{v}");
    let h = srv.admin().get("/v1/health").await.unwrap();
    assert!(h["warnings"].to_string().to_lowercase().contains("terms"), "{h}");
    abm.require_terms(false);
    let (s, _) = sync(&srv).await;
    assert_eq!(s, 200);

    // A revoked token: refused, and said so.
    abm.revoke_token();
    abm.expire_sessions();
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(abm.stats().bad_signatures, 0, "our OAuth signatures always verified");
    let (_, m) = srv.admin().call(reqwest::Method::GET, "/metrics", None).await.unwrap();
    let m = m.as_str().unwrap_or_default().to_owned();
    assert!(
        m.contains("mdmd_ade_syncs_total{outcome=\"ok\"}") && m.contains("mdmd_ade_syncs_total{outcome=\"failed\"}"),
        "{m}"
    );
    assert!(m.contains("mdmd_ade_profiles_assigned_total 27"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ade_iphone_enrolls_supervised_and_waits_until_its_blueprint_is_installed() {
    let abm = AdeStandIn::start("setup server").await.unwrap();
    let srv = start(&abm, &[]);
    connect(&srv, &abm, "main").await;
    let (s, v) = put_profile(
        &srv,
        "corporate",
        "?default=true",
        json!({"profile_name": "Corporate", "is_supervised": true, "is_mandatory": true, "is_mdm_removable": false, "await_device_configured": true, "department": "IT"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // What every device must have before Setup Assistant goes on: a blueprint.
    let admin = srv.admin();
    admin.post_bytes("/v1/profiles", webclip("com.example.wifi")).await.unwrap();
    let (s, v) = admin
        .call(
            reqwest::Method::PUT,
            "/v1/blueprints/base",
            Some(json!({"groups": ["*"], "profiles": ["com.example.wifi"]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");

    let sn = serial(7);
    abm.add_device(&sn, "iPhone 15");
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");

    // First boot: Apple's activation names our URL; the device enrolls itself.
    let client = srv.client();
    let conf = activation(&client, &abm.url(), &sn).await.unwrap().expect("a profile is assigned");
    assert!(conf.supervised && conf.await_configured);
    assert_eq!(abm.device(&sn).unwrap().profile_status.as_deref(), Some("pushed"));
    let udid = mdmd::sim::random_udid();
    let mut phone = first_boot(client, &conf, &udid, &sn, None).await.unwrap();
    assert!(phone.awaiting_configuration);

    let dev = admin.get(&format!("/v1/devices/{udid}")).await.unwrap();
    assert_eq!(dev["ade"]["server"], "main", "{dev}");
    assert_eq!(dev["ade"]["supervised"], true, "{dev}");
    let waiting = admin.get("/v1/ade/waiting").await.unwrap();
    assert_eq!(waiting["devices"][0]["enrollment"], udid.as_str(), "{waiting}");
    assert_eq!(waiting["devices"][0]["state"], "waiting", "{waiting}");

    // It runs its commands; DeviceConfigured comes only after the blueprint's profile.
    let handled = until_configured(&mut phone, 60, Duration::from_millis(500)).await.unwrap();
    let install = handled.iter().position(|r| r == "InstallProfile").expect("the blueprint's profile");
    let configured = handled.iter().position(|r| r == "DeviceConfigured").expect("DeviceConfigured");
    assert!(install < configured, "{handled:?}");
    assert!(phone.profiles.contains_key("com.example.wifi"));
    assert!(
        common::wait_until(Duration::from_secs(10), || async {
            admin.get("/v1/ade/waiting").await.unwrap()["devices"][0]["state"] == "released"
        })
        .await
    );
    let w = admin.get("/v1/ade/waiting").await.unwrap();
    assert_eq!(w["devices"][0]["reason"], "configured", "{w}");
    // ABM's view: enrolled.
    let d = admin.get("/v1/ade/devices").await.unwrap();
    let mine = d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == sn.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["enrolled"], true, "{mine}");

    // Supervised: supervised-only commands are accepted for it.
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": [udid], "command": {"RequestType": "RestartDevice"}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_serials_and_forged_machine_info_are_refused() {
    let abm = AdeStandIn::start("guard server").await.unwrap();
    let srv = start(&abm, &["--enroll-per-source", "20"]);
    connect(&srv, &abm, "main").await;
    let client = srv.client();
    let url = format!("{}/mdm/ade/enroll", srv.base);
    let conf = mdmd::sim::ade::CloudConfiguration {
        url: url.clone(),
        ..Default::default()
    };
    // A serial ABM never assigned to us.
    let err = first_boot(client.clone(), &conf, &mdmd::sim::random_udid(), "NOTOURS0001", None)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    // Not CMS, empty, too large: 400s, nothing created.
    for body in [b"garbage".to_vec(), Vec::new(), vec![0x30; 70_000]] {
        let s = client.post(&url).body(body).send().await.unwrap().status().as_u16();
        assert!(s == 400 || s == 413, "{s}");
    }
    // A flood from one address is cut off.
    let mut limited = false;
    for _ in 0..200 {
        if client.post(&url).body(b"x".to_vec()).send().await.unwrap().status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "unauthenticated ADE requests are bounded per source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_releases_a_waiting_device_and_a_stuck_one_is_released_after_the_timeout() {
    let abm = AdeStandIn::start("release server").await.unwrap();
    let srv = start(&abm, &["--ade-await-timeout", "10"]);
    connect(&srv, &abm, "main").await;
    let (s, v) = put_profile(
        &srv,
        "wait",
        "?default=true",
        json!({"profile_name": "Wait", "await_device_configured": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let admin = srv.admin();
    admin.post_bytes("/v1/profiles", webclip("com.example.slow")).await.unwrap();
    let (s, v) = admin
        .call(
            reqwest::Method::PUT,
            "/v1/blueprints/slow",
            Some(json!({"groups": ["*"], "profiles": ["com.example.slow"]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (a, b) = (serial(21), serial(22));
    abm.add_device(&a, "iPhone 15");
    abm.add_device(&b, "iPhone 15");
    assert_eq!(sync(&srv).await.0, 200);

    // Both devices never install the profile (NotNow: locked, say).
    let mut phones = Vec::new();
    for sn in [&a, &b] {
        let conf = activation(&srv.client(), &abm.url(), sn).await.unwrap().unwrap();
        let udid = mdmd::sim::random_udid();
        let mut p = first_boot(srv.client(), &conf, &udid, sn, None).await.unwrap();
        p.not_now.insert("InstallProfile".into());
        phones.push((udid, p));
    }
    // An operator releases the first in the console.
    let (first, second) = (phones[0].0.clone(), phones[1].0.clone());
    let secret = srv.account("ops", "operator");
    let (http, session, token) = console_session(&srv, "ops", &secret).await;
    let page = http
        .get(format!("{}/ui/ade", srv.base))
        .header("cookie", format!("mdmd_ui={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&first) && page.contains("Release"), "the waiting device is listed");
    let r = http
        .post(format!("{}/ui/ade/waiting/{first}/release", srv.base))
        .header("cookie", format!("mdmd_ui={session}"))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"].to_str().unwrap().contains("done="), "{:?}", r.headers());
    let v = srv.cli_json(&["ade", "waiting"]);
    let mine = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["enrollment"] == first.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["state"], "releasing", "{mine}");
    assert_eq!(mine["reason"], "admin", "{mine}");
    // A second release of the same device is refused.
    let (ok, _, err) = srv.cli(&["ade", "release", &first]);
    assert!(!ok && err.contains("already"), "{err}");
    let handled = until_configured(&mut phones[0].1, 20, Duration::from_millis(300)).await.unwrap();
    assert!(handled.contains(&"DeviceConfigured".to_owned()));
    // The second is released after --ade-await-timeout, with a warning.
    let p = &mut phones[1].1;
    let handled = until_configured(p, 60, Duration::from_millis(500)).await.unwrap();
    assert!(handled.contains(&"DeviceConfigured".to_owned()));
    let w = admin.get("/v1/ade/waiting").await.unwrap();
    let mine = w["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["enrollment"] == second.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["reason"], "timeout", "{mine}");
    assert!(mine["warning"].as_str().unwrap().contains("--ade-await-timeout"), "{mine}");
}

/// Sign in to the console over HTTPS: (client, session cookie, CSRF token).
async fn console_session(srv: &Server, name: &str, secret: &str) -> (reqwest::Client, String, String) {
    common::console_login(srv, name, secret).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_ade_reenrollment_of_the_same_serial_is_vouched_and_nobody_launders_into_it() {
    let abm = AdeStandIn::start("attested server").await.unwrap();
    let ca = common::push::TestCa::new("Test Apple iPhone Device CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("device-ca.pem");
    std::fs::write(&ca_file, ca.cert.to_pem().unwrap()).unwrap();
    let srv = start(&abm, &["--device-attestation-ca", ca_file.to_str().unwrap()]);
    connect(&srv, &abm, "main").await;
    let (s, v) = put_profile(&srv, "plain", "?default=true", json!({"profile_name": "Plain"})).await;
    assert_eq!(s, 200, "{v}");
    let (victim_sn, other_sn) = (serial(31), serial(32));
    abm.add_device(&victim_sn, "iPhone 15");
    abm.add_device(&other_sn, "iPhone 15");
    assert_eq!(sync(&srv).await.0, 200);
    let conf = activation(&srv.client(), &abm.url(), &victim_sn).await.unwrap().unwrap();
    let udid = mdmd::sim::random_udid();
    let mut phone = first_boot(srv.client(), &conf, &udid, &victim_sn, Some(&device_cert(&ca, &udid)))
        .await
        .unwrap();
    phone.session().await.unwrap();

    // Unattested (a self-signed "device" certificate): refused outright here.
    let err = first_boot(srv.client(), &conf, &udid, &victim_sn, None)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    // Another device's attested certificate claiming the victim's UDID: refused.
    let attacker = mdmd::sim::random_udid();
    let err = first_boot(srv.client(), &conf, &udid, &victim_sn, Some(&device_cert(&ca, &attacker)))
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    // The victim's UDID with another serial of ours: refused (a UDID keeps its serial).
    let err = first_boot(srv.client(), &conf, &udid, &other_sn, Some(&device_cert(&ca, &udid)))
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    // Another UDID claiming the victim's serial (a clone): refused, even attested.
    let clone = mdmd::sim::random_udid();
    let err = first_boot(srv.client(), &conf, &clone, &victim_sn, Some(&device_cert(&ca, &clone)))
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("enrolled as another device"), "{err:#}");
    let still = srv.admin().get(&format!("/v1/devices/{udid}")).await.unwrap();
    assert_eq!(still["active"], true, "{still}");

    // The real phone, erased and set up again: attested, same serial → vouched, no approval needed.
    // (A second later: the same signed bytes again would be a replay, served but not vouched.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = first_boot(srv.client(), &conf, &udid, &victim_sn, Some(&device_cert(&ca, &udid)))
        .await
        .expect("an attested ADE re-enrollment of the same serial is vouched");
    drop(again);
    let dev = srv.admin().get(&format!("/v1/devices/{udid}")).await.unwrap();
    assert_eq!(dev["ade"]["attested"], true, "{dev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdmd_sim_plays_abm_and_an_ade_iphone_from_the_real_binary() {
    use std::io::BufRead as _;
    // `mdmd sim abm` needs the server's public key first; its URL is known only once it runs,
    // so the server starts pointing at a placeholder and a second one at the stand-in.
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("ade.pem");
    let token_file = tmp.path().join("abm-token.p7m");
    // One data dir for both runs: the key pair persists (sealed in the store).
    let placeholder = AdeStandIn::start("placeholder").await.unwrap();
    let mut srv = start(&placeholder, &[]);
    let (ok, _, err) = srv.cli(&["ade", "public-key", "--out", key_file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mut abm = std::process::Command::new(env!("CARGO_BIN_EXE_mdmd"))
        .args(["sim", "abm", "-n", "3", "--seconds", "120", "--public-key"])
        .arg(&key_file)
        .arg("--token-out")
        .arg(&token_file)
        .env("MDMD_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut lines = std::io::BufReader::new(abm.stdout.take().unwrap()).lines();
    for l in lines.by_ref() {
        let l = l.unwrap();
        out.push_str(&l);
        if l == "}" {
            break;
        }
    }
    let _kill = common::KillOnDrop(abm);
    let v: Value = serde_json::from_str(&out).unwrap();
    let url = v["ade_url"].as_str().unwrap().to_owned();
    let first = v["serials"][0].as_str().unwrap().to_owned();
    srv.kill9();
    let at = srv.extra.iter().position(|a| a == "--ade-url").unwrap() + 1;
    srv.extra[at] = url.clone();
    srv.restart();
    let v = srv.cli_json(&["ade", "upload-token", "abm", token_file.to_str().unwrap()]);
    assert_eq!(v["server_name"], "mdmd (simulated ABM)", "{v}");
    let profile = tmp.path().join("profile.json");
    std::fs::write(&profile, r#"{"profile_name": "Corporate", "await_device_configured": true}"#).unwrap();
    srv.cli_json(&["ade", "set-profile", "corporate", profile.to_str().unwrap(), "--default"]);
    let v = srv.cli_json(&["ade", "sync"]);
    assert_eq!(v["tokens"][0]["assigned"], 3, "{v}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let srv_args = (srv.base.clone(), srv.certs_dir().join("ca.pem"));
        move || {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_mdmd"))
                .args([
                    "sim",
                    "ade-iphone",
                    "--abm",
                    &url,
                    "--serial",
                    &first,
                    "--wait",
                    "60",
                    "--server",
                    &srv_args.0,
                    "--trust-ca",
                ])
                .arg(&srv_args.1)
                .env("MDMD_LOG", "error")
                .output()
                .unwrap();
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["setup_assistant"], "done", "{v}");
    assert_eq!(v["supervised"], true, "{v}");
    assert!(v["commands"].as_array().unwrap().iter().any(|c| c == "DeviceConfigured"), "{v}");
    let devices = srv.cli_json(&["ade", "devices"]);
    assert_eq!(
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["enrolled"] == true)
            .count(),
        1,
        "{devices}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ade_allow_unknown_serves_serials_no_sync_has_seen() {
    let abm = AdeStandIn::start("permissive server").await.unwrap();
    let srv = start(&abm, &["--ade-allow-unknown"]);
    let conf = mdmd::sim::ade::CloudConfiguration {
        url: format!("{}/mdm/ade/enroll", srv.base),
        ..Default::default()
    };
    let udid = mdmd::sim::random_udid();
    // Assigned in ABM minutes ago: no sync has seen it, and it still enrolls.
    first_boot(srv.client(), &conf, &udid, "JUSTASSIGNED1", None)
        .await
        .expect("an unknown serial is served with --ade-allow-unknown");
    let dev = srv.admin().get(&format!("/v1/devices/{udid}")).await.unwrap();
    assert_eq!(dev["ade"]["serial"], "JUSTASSIGNED1", "{dev}");
    assert_eq!(dev["ade"]["server"], "", "no ABM server known for it: {dev}");
    assert_eq!(dev["supervised"], true, "{dev}");
}
