//! Cisco ISE's MDM API through an XML client (tests/ise_xml), against the
//! real server binary and simulated devices: every query criterion finds
//! its device and nothing else; the paging cursor walks a fleet larger than
//! one page (`query_max_size`) returning every device exactly once and ends
//! with `paging_info` 0; a corporate wipe takes back the managed apps
//! (catalog and others, licence returned), the configuration and
//! provisioning profiles mdmd installed, and nothing else, and a device
//! with nothing from mdmd answers `action_status` false.
//!
//! On redb, and on PostgreSQL with `MDMD_TEST_STORE=postgres` (tests/common).

mod common;
mod ise_xml;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{enqueue, wait_until, Server, API_KEY};
use ise_xml::{field, parse, Ise};
use mdmd::sim::vpp_api::VppStandIn;
use mdmd::sim::SimApp;
use serde_json::json;

const PAGES: &str = "361309726";
const PAGES_ID: &str = "com.apple.Pages";

fn ise(srv: &Server, password: String) -> Ise {
    Ise {
        base: srv.base.clone(),
        client: srv.client(),
        user: "ise".into(),
        password,
    }
}

/// The udids of a device list.
fn udids(xml: &str) -> Vec<String> {
    parse(xml)
        .1
        .iter()
        .map(|d| d.attrs.get("udid").cloned().unwrap_or_default())
        .collect()
}

fn action_body(tag: &str, value: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ise_api><identifier><{tag}>{value}</{tag}></identifier></ise_api>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_criterion_finds_its_device_and_only_it() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "passcode_required = true\n").unwrap();
    let srv = Server::start_with(&["--compliance-policy", policy.to_str().unwrap()]);
    let admin = srv.admin();
    let mut a = srv.enrolled().await;
    let mut b = srv.device().await;
    b.passcode = false;
    b.enroll().await.unwrap();
    // Only a tells its hardware facts (the simulator's IMEI, MEID and phone
    // number are the same on every device); both tell their security.
    enqueue(
        &admin,
        &[&a.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["WiFiMAC", "IMEI", "MEID", "PhoneNumber", "ModelName", "OSVersion"]}),
    )
    .await;
    enqueue(&admin, &[&a.udid, &b.udid], json!({"RequestType": "SecurityInfo"})).await;
    a.session().await.unwrap();
    b.session().await.unwrap();
    let set_user = |udid: String, user: &'static str| {
        let admin = srv.admin();
        async move {
            let (s, v) = admin
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/devices/{udid}/attributes"),
                    Some(json!({"USERNAME": user})),
                )
                .await
                .unwrap();
            assert_eq!(s, 200, "{v}");
        }
    };
    set_user(a.udid.clone(), "alice").await;
    set_user(b.udid.clone(), "bob").await;
    let ise = ise(&srv, srv.account("ise", "nac"));
    let v2 = ise.api_path(2).await;
    let v3 = ise.api_path(3).await;
    let query = |v: &str, crit: &str, value: &str| format!("{v}/devices/?paging=0&querycriteria={crit}&value={value}&filter=all");

    let mac = a.wifi_mac.replace(':', "").to_uppercase();
    let (_, body) = ise.get(&query(&v3, "macaddress", &mac)).await;
    let guid = parse(&body).1[0].attrs["guid"].clone();
    let found_a: Vec<(&str, String)> = vec![
        ("macaddress", mac.clone()),
        ("udid", a.udid.clone()),
        ("imei", "356612060234891".into()),
        ("meid", "35661206023489".into()),
        ("serialnumber", a.serial.clone()),
        ("username", "alice".into()),
        ("phonenumber", "%2B15550100".into()),
        ("guid", guid.clone()),
        ("compliance", "true".into()),
    ];
    for (crit, value) in &found_a {
        for v in [&v2, &v3] {
            let (s, body) = ise.get(&query(v, crit, value)).await;
            assert_eq!(s, 200, "{crit}: {body}");
            assert_eq!(udids(&body), vec![a.udid.clone()], "{crit}={value} on {v}: {body}");
            assert_eq!(field(&body, "paging_info").as_deref(), Some("0"), "{body}");
        }
    }
    let d = &parse(&ise.get(&query(&v3, "udid", &a.udid)).await.1).1[0];
    assert_eq!(d.mac, mac);
    for (k, v) in [
        ("imei", "35 661206 023489 1"),
        ("meid", "35661206023489"),
        ("phone_number", "+1 555 0100"),
        ("serial_number", a.serial.as_str()),
        ("model", "iPhone"),
        ("register_status", "true"),
        ("compliance.status", "true"),
        ("disk_encryption_on", "true"),
        ("pin_lock_on", "true"),
        ("jail_broken", "false"),
    ] {
        assert_eq!(d.attrs.get(k).map(String::as_str), Some(v), "{k}: {:?}", d.attrs);
    }
    // b: by its own identifiers, as the non-compliant one; then with a, by their user.
    for (crit, value) in [
        ("udid", b.udid.clone()),
        ("serialnumber", b.serial.clone()),
        ("username", "bob".into()),
        ("compliance", "false".into()),
    ] {
        let (_, body) = ise.get(&query(&v2, crit, &value)).await;
        assert_eq!(udids(&body), vec![b.udid.clone()], "{crit}: {body}");
    }
    set_user(b.udid.clone(), "alice").await;
    let (_, body) = ise.get(&query(&v2, "username", "ALICE")).await;
    assert_eq!(
        udids(&body).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([a.udid.clone(), b.udid.clone()]),
        "{body}"
    );
    let (_, body) = ise.get(&query(&v2, "udid", &b.udid)).await;
    let attrs = &parse(&body).1[0].attrs;
    assert_eq!(
        (
            attrs["pin_lock_on"].as_str(),
            attrs["disk_encryption_on"].as_str(),
            attrs["compliance.status"].as_str()
        ),
        ("false", "false", "false"),
        "{body}"
    );
    // Values nobody has: an empty list for every criterion.
    for (crit, value) in [
        ("macaddress", "0A0B0C0D0E0F"),
        ("udid", "00000000-0000000000000000"),
        ("imei", "490154203237518"),
        ("meid", "A0000000000000"),
        ("serialnumber", "NOSUCHSERIAL"),
        ("username", "mallory"),
        ("phonenumber", "4930123456"),
        ("guid", "00000000-0000-0000-0000-000000000000"),
    ] {
        let (s, body) = ise.get(&query(&v3, crit, value)).await;
        assert_eq!((s, parse(&body).1.len()), (200, 0), "{crit}: {body}");
    }
    let (s, body) = ise.get(&query(&v2, "hostname", "x")).await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("phonenumber"), "the error lists the criteria: {body}");
    // ISE's names for the compliance block in a filter.
    for f in ["compliance", "compliance_status", "compliant_status"] {
        let (_, body) = ise
            .get(&format!(
                "{v2}/devices/?paging=0&querycriteria=udid&value={}&filter=register_status+{f}",
                b.udid
            ))
            .await;
        let attrs = &parse(&body).1[0].attrs;
        assert_eq!(attrs.get("compliance.status").map(String::as_str), Some("false"), "{f}: {body}");
        assert!(attrs.contains_key("register_status") && !attrs.contains_key("imei"), "{f}: {body}");
    }
    // The batch takes the same criteria.
    let batch = format!(
        "<ise_api><deviceList><device><phonenumber>+1 555 0100</phonenumber></device><device><serialnumber>{}</serialnumber></device></deviceList></ise_api>",
        b.serial
    );
    let (s, body) = ise.post(&format!("{v3}/batchdevices/?paging=0&filter=all"), batch).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(udids(&body), vec![a.udid.clone(), b.udid.clone()], "{body}");
}

/// Seeded devices (`mdmd sim seed`): more than one page of `query_max_size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_device_exactly_once() {
    const SEEDED: usize = 5600;
    let mut srv = Server::start();
    let real = srv.enrolled().await;
    let password = srv.account("ise", "nac");
    srv.kill9();
    let store = srv
        .database_url()
        .map(str::to_owned)
        .unwrap_or_else(|| srv.data_dir().display().to_string());
    let (ok, out, err) = common::mdmd(&["sim", "seed", "--store", &store, "-n", &SEEDED.to_string()]);
    assert!(ok, "{out}{err}");
    srv.restart();
    let ise = ise(&srv, password);
    let v2 = ise.api_path(2).await;
    let (_, info) = ise.get("/ciscoise/mdminfo/?ise_api_version=3").await;
    let page_size: usize = field(&info, "query_max_size").unwrap().parse().unwrap();
    assert!(page_size < SEEDED, "the fleet must not fit one page");

    // Walk a listing as ISE does: paging=0, then whatever paging_info said, until it says 0.
    let walk = |listing: &'static str| {
        let ise = &ise;
        let v2 = v2.clone();
        async move {
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            let mut paging = "0".to_owned();
            loop {
                let (s, body) = ise.get(&format!("{v2}/devices/?paging={paging}{listing}&filter=udid")).await;
                assert_eq!(s, 200, "{body}");
                let page = udids(&body);
                sizes.push(page.len());
                seen.extend(page);
                paging = field(&body, "paging_info").expect("paging_info");
                if paging == "0" {
                    return (seen, sizes);
                }
                assert!(paging.parse::<u64>().is_ok(), "paging_info is an integer: {paging}");
                assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
            }
        }
    };
    let seeded = |i: usize| format!("00008101-{i:016X}");
    let (all, sizes) = walk("").await;
    assert_eq!(sizes, vec![page_size, SEEDED + 1 - page_size], "full pages, then the rest");
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no device twice");
    let expected: BTreeSet<String> = (0..SEEDED).map(seeded).chain([real.udid.clone()]).collect();
    assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), expected, "every device");
    // Seeded device i is compliant unless i % 10 == 0 (the real one was never evaluated).
    let (compliant, sizes) = walk("&querycriteria=compliance&value=true").await;
    let want: BTreeSet<String> = (0..SEEDED).filter(|i| i % 10 != 0).map(seeded).collect();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    assert_eq!(
        (compliant.len(), compliant.into_iter().collect::<BTreeSet<_>>()),
        (want.len(), want)
    );
    let (non, sizes) = walk("&querycriteria=compliance&value=false").await;
    assert_eq!(sizes, vec![SEEDED / 10]);
    let want: BTreeSet<String> = (0..SEEDED).filter(|i| i % 10 == 0).map(seeded).collect();
    assert!(non.into_iter().collect::<BTreeSet<_>>() == want, "the non-compliant ones");
    // Past the end: nothing, and the end. Not a page number: refused.
    let (s, body) = ise.get(&format!("{v2}/devices/?paging=2&filter=all")).await;
    assert_eq!(
        (s, parse(&body).1.len(), field(&body, "paging_info").as_deref()),
        (200, 0, Some("0")),
        "{body}"
    );
    for bad in ["abc", "-1", "1e3", "99999999999999999999"] {
        let (s, body) = ise.get(&format!("{v2}/devices/?paging={bad}&filter=all")).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    // One device among thousands, by each of its identifiers.
    let i = 4321;
    let mac = mdmd::sim::nac::seeded_mac(i).to_uppercase();
    for (crit, value) in [
        ("macaddress", mac),
        ("udid", seeded(i)),
        ("serialnumber", format!("F{i:010}")),
        ("imei", format!("35{i:013}")),
        ("phonenumber", format!("1555{:07}", i)),
    ] {
        let (_, body) = ise
            .get(&format!("{v2}/devices/?paging=0&querycriteria={crit}&value={value}&filter=all"))
            .await;
        assert_eq!(udids(&body), vec![seeded(i)], "{crit}: {body}");
    }
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

/// A provisioning profile as Apple issues them: a CMS-signed plist.
fn provisioning_profile(uuid: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pp.plist"),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>Name</key><string>Field In-House</string>\
<key>UUID</key><string>{uuid}</string><key>ExpirationDate</key><date>2030-01-01T00:00:00Z</date></dict></plist>"
        ),
    )
    .unwrap();
    common::sign_with_throwaway(dir.path(), "Apple Distribution", "pp.plist", "pp.mobileprovision");
    std::fs::read(dir.path().join("pp.mobileprovision")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corporate_wipe_takes_back_what_mdmd_installed_and_nothing_else() {
    let vpp = VppStandIn::start("Example Org").await.expect("stand-in");
    vpp.set_event_delay(1);
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let url: &'static str = vpp.url().leak();
    let srv = Server::start_logged(&["--apps-and-books-url", url, "--apps-sync-interval", "3600"]);
    let admin = srv.admin();
    let r = srv
        .client()
        .put(format!("{}/v1/apps-and-books/tokens/main", srv.base))
        .bearer_auth(API_KEY)
        .header("content-type", "text/plain")
        .body(vpp.token_file())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (s, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/apps",
            Some(json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    admin.post_bytes("/v1/profiles", webclip("com.example.intranet")).await.unwrap();

    let mut d = srv.enrolled().await;
    d.app_store = Some(vpp.url());
    // A catalog App Store app (its licence associated with the device's serial).
    let v = admin
        .post(&format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    d.session().await.unwrap();
    d.settle_apps().await;
    assert!(d.apps.get(PAGES_ID).is_some_and(|a| a.installed()), "{:?}", d.apps);
    assert!(vpp.assigned(PAGES, &d.serial));
    // A managed app outside the catalog (say, installed before the catalog had it).
    d.apps
        .insert("com.example.legacy".into(), SimApp::managed("com.example.legacy", "2.0"));
    // A configuration profile and a provisioning profile from mdmd.
    let v = admin
        .post("/v1/profiles/com.example.intranet/install", json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    let pp_uuid = "5A5A5A5A-1111-4222-8333-444455556666";
    let pp = common::b64(&provisioning_profile(pp_uuid));
    enqueue(
        &admin,
        &[&d.udid],
        json!({"RequestType": "InstallProvisioningProfile", "ProvisioningProfile": pp}),
    )
    .await;
    // What the device has that mdmd did not put there: an app's provisioning profile.
    d.provisioning
        .insert("0A0A0A0A-2222-4333-8444-555566667777".into(), ("From the App Store".into(), None));
    enqueue(&admin, &[&d.udid], json!({"RequestType": "ManagedApplicationList"})).await;
    enqueue(
        &admin,
        &[&d.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["WiFiMAC"]}),
    )
    .await;
    d.session().await.unwrap();
    assert!(d.profiles.contains_key("com.example.intranet") && d.provisioning.contains_key(pp_uuid));

    let ise = ise(&srv, srv.account("ise", "nac"));
    let v2 = ise.api_path(2).await;
    let mac = d.wifi_mac.replace(':', "").to_uppercase();
    let (s, resp) = ise
        .post(&format!("{v2}/action/?actionType=corporate_wipe"), action_body("macaddress", &mac))
        .await;
    assert_eq!(s, 200, "{resp}");
    let (name, devs) = parse(&resp);
    assert_eq!(name, "action");
    assert_eq!(devs[0].mac, mac);
    assert_eq!(
        (
            devs[0].attrs["result.action_status"].as_str(),
            devs[0].attrs["result.failure_reason"].as_str()
        ),
        ("true", ""),
        "{resp}"
    );
    let h = d.session().await.unwrap();
    let mut done: Vec<&str> = h.iter().map(|x| x.request_type.as_str()).collect();
    done.sort_unstable();
    assert_eq!(
        done,
        vec![
            "RemoveApplication",
            "RemoveApplication",
            "RemoveProfile",
            "RemoveProvisioningProfile"
        ],
        "{h:?}"
    );
    assert!(h.iter().all(|x| x.status == mdmd::protocol::Status::Acknowledged), "{h:?}");
    // The device: no managed app, profile or provisioning profile from mdmd; still enrolled; the rest untouched.
    assert!(d.apps.is_empty(), "{:?}", d.apps);
    assert!(d.profiles.is_empty(), "{:?}", d.profiles.keys());
    assert_eq!(
        d.provisioning.keys().collect::<Vec<_>>(),
        vec!["0A0A0A0A-2222-4333-8444-555566667777"]
    );
    assert!(d.profile.is_some() && !d.unenrolled);
    let v = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert!(v["checked_out_at"].is_null() && v["active"] == true, "{v}");
    assert!(
        wait_until(Duration::from_secs(20), || async { !vpp.assigned(PAGES, &d.serial) }).await,
        "the catalog app's licence went back"
    );
    // What was queued: logged, and in the device's command list.
    let log = srv.log_text();
    let line = log.lines().find(|l| l.contains("NAC action queued")).unwrap_or_default();
    for part in [
        "RemoveApplication com.apple.Pages, com.example.legacy",
        "RemoveProfile com.example.intranet",
        &format!("RemoveProvisioningProfile {pp_uuid}"),
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let cmds = admin.get(&format!("/v1/devices/{}/commands", d.udid)).await.unwrap();
    let removals = cmds["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"].as_str().is_some_and(|t| t.starts_with("Remove")))
        .count();
    assert_eq!(removals, 4, "{cmds}");

    // Again: nothing of mdmd's is left, and the answer says so.
    let (_, resp) = ise
        .post(&format!("{v2}/action/?actionType=corporate_wipe"), action_body("udid", &d.udid))
        .await;
    let a = &parse(&resp).1[0].attrs;
    assert_eq!(a["result.action_status"], "false", "{resp}");
    assert!(a["result.failure_reason"].contains("nothing to remove"), "{resp}");
    // A device mdmd installed nothing on.
    let mut e = srv.enrolled().await;
    let (_, resp) = ise
        .post(&format!("{v2}/action/?actionType=corporate_wipe"), action_body("udid", &e.udid))
        .await;
    let a = &parse(&resp).1[0].attrs;
    assert_eq!(
        (a["result.action_status"].as_str(), a["result.failure_reason"].as_str()),
        ("false", mdmd::service::commands::nac::NOTHING_INSTALLED),
        "{resp}"
    );
    assert!(e.session().await.unwrap().is_empty(), "nothing queued");
    assert!(d.session().await.unwrap().is_empty(), "nothing queued");
}
