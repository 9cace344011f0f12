//! Apps (issue 28), against the real server binary and a stand-in of Apple's
//! Apps and Books API: a content token uploaded and checked; an App Store app
//! installed only after its licence is associated with the device's serial,
//! the licence released on removal and on check-out; an install beyond the
//! licences held refused before anything is sent; an in-house .ipa served
//! through the link sent to the device and refused through a guessed, another
//! device's or an expired one; a non-.ipa refused; a new build offered to the
//! devices that have the app; a configuration re-sent alone when the access
//! token rotates; a blueprint's catalog app installed with its licence. The
//! simulated device installs a store app only when its serial holds a licence.

mod common;

use std::time::Duration;

use common::{enqueue, wait_until, Server, API_KEY};
use mdmd::sim::vpp_api::VppStandIn;
use mdmd::sim::SimDevice;
use serde_json::{json, Value};

const PAGES: &str = "361309726";
const PAGES_ID: &str = "com.apple.Pages";

async fn vpp() -> VppStandIn {
    let v = VppStandIn::start("Example Org").await.expect("stand-in");
    v.set_event_delay(1);
    v
}

fn start(vpp: &VppStandIn, extra: &[&str]) -> Server {
    let url: &'static str = vpp.url().leak();
    let mut args = vec!["--apps-and-books-url", url, "--apps-sync-interval", "3600"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

async fn put_token(srv: &Server, key: &str, name: &str, text: &str) -> (u16, Value) {
    let r = srv
        .client()
        .put(format!("{}/v1/apps-and-books/tokens/{name}", srv.base))
        .bearer_auth(key)
        .header("content-type", "text/plain")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn upload_ipa(srv: &Server, body: Vec<u8>) -> (u16, Value) {
    let r = srv
        .client()
        .post(format!("{}/v1/apps", srv.base))
        .bearer_auth(API_KEY)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn call(srv: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    srv.admin().call(method, path, body).await.unwrap()
}

async fn post(srv: &Server, path: &str, body: Value) -> (u16, Value) {
    call(srv, reqwest::Method::POST, path, Some(body)).await
}

/// An enrolled device whose store is the stand-in.
async fn device(srv: &Server, vpp: &VppStandIn) -> SimDevice {
    let mut d = srv.enrolled().await;
    d.app_store = Some(vpp.url());
    let v = srv.admin().get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert_eq!(
        v["info"]["serial_number"],
        d.serial.as_str(),
        "the serial is known from Authenticate: {v}"
    );
    d
}

/// The state the server holds of one app on one device.
async fn state(srv: &Server, udid: &str, app: &str) -> Option<Value> {
    let v = srv.admin().get(&format!("/v1/devices/{udid}/apps")).await.unwrap();
    v["apps"].as_array().unwrap().iter().find(|a| a["app"] == app).cloned()
}

/// Ask the device for its managed apps and let it answer.
async fn report_apps(srv: &Server, d: &mut SimDevice) {
    enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "ManagedApplicationList"})).await;
    enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "InstalledApplicationList"})).await;
    d.session().await.unwrap();
}

fn handled(h: &[mdmd::sim::Handled], rt: &str) -> usize {
    h.iter().filter(|x| x.request_type == rt).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_apps_need_a_licence_first_and_give_it_back() {
    let vpp = vpp().await;
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);

    // Tokens: garbage and an expired one refused and not kept; the real one checked with Apple.
    let (s, v) = put_token(&srv, API_KEY, "main", "this is not a token").await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = put_token(&srv, API_KEY, "main", &vpp.expired_token_file()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    let operator = srv.account("op", "operator");
    let (s, _) = put_token(&srv, &operator, "main", &vpp.token_file()).await;
    assert_eq!(s, 403, "only admins hold the organisation's licences");
    assert_eq!(srv.admin().get("/v1/apps-and-books/tokens").await.unwrap()["tokens"], json!([]));
    let (s, v) = put_token(&srv, API_KEY, "main", &vpp.token_file()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["location"], "Example Org", "{v}");
    assert!(!v.to_string().contains(&vpp.token_file()), "the token is never shown");

    // The catalog: Apple's metadata and licence counts.
    let (s, v) = post(&srv, "/v1/apps", json!({"itunes_store_id": 999})).await;
    assert_eq!(s, 400, "no licences of an app the organisation does not own: {v}");
    let (s, v) = post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["id"].as_str(), v["name"].as_str(), v["version"].as_str()),
        (Some(PAGES_ID), Some("Pages"), Some("13.1"))
    );
    assert_eq!(v["licences"]["available"], 2, "{v}");

    let mut d1 = device(&srv, &vpp).await;
    let mut d2 = device(&srv, &vpp).await;
    let mut d3 = device(&srv, &vpp).await;

    // Without a licence, a store app does not install on a device with no Apple Account.
    enqueue(
        &srv.admin(),
        &[&d3.udid],
        json!({"RequestType": "InstallApplication", "iTunesStoreID": PAGES.parse::<u64>().unwrap(), "Options": {"PurchaseMethod": 1}}),
    )
    .await;
    d3.session().await.unwrap();
    d3.session().await.unwrap();
    assert!(
        d3.apps.get(PAGES_ID).is_none_or(|a| a.status == "Failed"),
        "installed without a licence"
    );

    // Install: the licence is associated before the command exists.
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d1.udid]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["queued"].as_u64(), v["licences_associated"].as_u64()), (Some(1), Some(1)), "{v}");
    assert!(vpp.assigned(PAGES, &d1.serial));
    let h = d1.session().await.unwrap();
    assert_eq!(handled(&h, "InstallApplication"), 1, "{h:?}");
    report_apps(&srv, &mut d1).await;
    let app = d1.apps.get(PAGES_ID).expect("installed");
    assert_eq!((app.status.as_str(), app.version.as_str()), ("Managed", "13.1"));
    let st = state(&srv, &d1.udid, PAGES_ID).await.expect("state");
    assert_eq!(
        (st["state"].as_str(), st["version"].as_str(), st["licence"].as_bool()),
        (Some("installed"), Some("13.1"), Some(true)),
        "{st}"
    );

    // Two more devices, one licence left: refused before anything is sent.
    let (s, v) = post(
        &srv,
        &format!("/v1/apps/{PAGES_ID}/install"),
        json!({"targets": [d2.udid, d3.udid]}),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("only 1 licence") && e.contains("2 device"), "{e}");
    assert!(!vpp.assigned(PAGES, &d2.serial) && !vpp.assigned(PAGES, &d3.serial));
    assert!(d2.session().await.unwrap().is_empty(), "nothing was queued");

    // Remove: RemoveApplication and the licence back.
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/remove"), json!({"targets": [d1.udid]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["licences_released"], 1, "{v}");
    assert!(!vpp.assigned(PAGES, &d1.serial));
    let h = d1.session().await.unwrap();
    assert_eq!(handled(&h, "RemoveApplication"), 1, "{h:?}");
    assert!(!d1.apps.contains_key(PAGES_ID));
    assert!(state(&srv, &d1.udid, PAGES_ID).await.is_none());

    // Check-out gives the licence back too.
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d2.udid]})).await;
    assert_eq!((s, v["licences_associated"].as_u64()), (200, Some(1)), "{v}");
    assert!(vpp.assigned(PAGES, &d2.serial));
    d2.checkout().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async { !vpp.assigned(PAGES, &d2.serial) }).await,
        "the licence of a device that checked out is released"
    );
    let v = srv.admin().get(&format!("/v1/apps/{PAGES_ID}")).await.unwrap();
    assert_eq!(v["licences"]["total"], 2, "{v}");

    // The catalog refuses to forget an app a device still has.
    let (s, _) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d3.udid]})).await;
    assert_eq!(s, 200);
    let (s, v) = call(&srv, reqwest::Method::DELETE, &format!("/v1/apps/{PAGES_ID}"), None).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = call(&srv, reqwest::Method::DELETE, "/v1/apps-and-books/tokens/main", None).await;
    assert_eq!(s, 409, "a token catalog apps use stays: {v}");
}

/// The link a device fetched its manifest from (the API never shows it: it
/// is a credential, sealed in the queue and redacted in views).
async fn fetched_manifest(srv: &Server, d: &SimDevice) -> String {
    let v = srv.admin().get(&format!("/v1/devices/{}/commands", d.udid)).await.unwrap();
    for c in v["commands"].as_array().unwrap() {
        if c["request_type"] == "InstallApplication" {
            let full = srv
                .admin()
                .get(&format!("/v1/commands/{}", c["command_uuid"].as_str().unwrap()))
                .await
                .unwrap();
            assert!(!full.to_string().contains("/mdm/apps/"), "the link is redacted: {full}");
        }
    }
    d.fetches
        .iter()
        .rev()
        .find(|(u, _)| u.ends_with("manifest.plist"))
        .map(|(u, _)| u.clone())
        .unwrap_or_else(|| panic!("no manifest fetched: {:?}", d.fetches))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_house_apps_are_served_only_through_the_link_a_device_was_sent() {
    let vpp = vpp().await;
    let srv = start(&vpp, &[]);

    // Not an app archive: a clear 400, nothing stored.
    let (s, v) = upload_ipa(&srv, b"PK\x03\x04 certainly not a zip".to_vec()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains(".ipa"), "{v}");
    let (s, v) = upload_ipa(&srv, mdmd::protocol::ipa::build_ipa("", "1.0", "x")).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(srv.admin().get("/v1/apps").await.unwrap()["apps"], json!([]));

    let (s, v) = upload_ipa(&srv, mdmd::protocol::ipa::build_ipa("com.example.field", "1.0", "Field")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["kind"].as_str(), v["version"].as_str(), v["name"].as_str()),
        (Some("in_house"), Some("1.0"), Some("Field"))
    );

    // The derived-credential provider's app: its upload URL and this device's token in its configuration.
    let (s, v) = call(
        &srv,
        reqwest::Method::PUT,
        "/v1/apps/com.example.field",
        Some(json!({"configuration": {"upload": "$DERIVED_CREDENTIAL_URL", "token": "$DERIVED_CREDENTIAL_TOKEN"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &srv,
        reqwest::Method::PUT,
        "/v1/apps/com.example.field",
        Some(json!({"configuration": ["not", "a", "dictionary"]})),
    )
    .await;
    assert_eq!(s, 400, "a configuration is a dictionary: {v}");
    let mut d = device(&srv, &vpp).await;
    let other = device(&srv, &vpp).await;
    let (s, v) = post(&srv, "/v1/apps/com.example.field/install", json!({"targets": [d.udid]})).await;
    assert_eq!((s, v["queued"].as_u64()), (200, Some(1)), "{v}");

    // The device fetches the manifest, then the .ipa it names, and installs it.
    d.session().await.unwrap();
    report_apps(&srv, &mut d).await;
    let url = fetched_manifest(&srv, &d).await;
    assert!(url.contains(&format!("/mdm/apps/com.example.field/{}/", d.udid)), "{url}");
    assert!(
        d.fetches.iter().any(|(u, s)| u.ends_with("manifest.plist") && *s == 200),
        "{:?}",
        d.fetches
    );
    assert!(
        d.fetches.iter().any(|(u, s)| u.ends_with("app.ipa") && *s == 200),
        "{:?}",
        d.fetches
    );
    let app = d.apps.get("com.example.field").expect("installed");
    assert_eq!(app.version, "1.0");
    let st = state(&srv, &d.udid, "com.example.field").await.unwrap();
    assert_eq!(st["state"], "installed", "{st}");
    let conf = app.config.clone().expect("configured");
    let upload = conf.get("upload").and_then(|v| v.as_string()).unwrap_or_default();
    assert!(
        upload.starts_with("https://") && upload.ends_with("/v1/derived-credentials"),
        "{upload}"
    );
    assert!(
        conf.get("token").and_then(|v| v.as_string()).is_some_and(|t| t.len() > 20),
        "{conf:?}"
    );

    // Guessed links: a changed MAC, another device in the path, a later expiry.
    let client = srv.client();
    let get = |u: String| {
        let c = client.clone();
        async move { c.get(u).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(url.clone()).await, 200);
    let parts: Vec<&str> = url.rsplitn(7, '/').collect();
    // parts: [file, mac, expires, sha, enrollment, app, base]
    let (mac, expires) = (parts[1], parts[2]);
    let mut bad_mac = mac.to_owned();
    bad_mac.replace_range(0..1, if mac.starts_with('A') { "B" } else { "A" });
    assert_eq!(get(url.replace(mac, &bad_mac)).await, 403);
    assert_eq!(get(url.replace(&d.udid, &other.udid)).await, 403, "another device's link");
    let later = (expires.parse::<i64>().unwrap() + 86_400).to_string();
    assert_eq!(get(url.replace(expires, &later)).await, 403);
    assert_eq!(get(url.replace("manifest.plist", "app.ipa")).await, 200);
    assert_eq!(
        get(format!("{}/mdm/apps/com.example.field/x/y/z/w/manifest.plist", srv.base)).await,
        403
    );

    // A new build: the device that has the app is offered it; the old link is gone.
    let (s, v) = upload_ipa(&srv, mdmd::protocol::ipa::build_ipa("com.example.field", "1.1", "Field")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["offered_to"], 1, "{v}");
    assert_eq!(get(url.clone()).await, 410, "the replaced build is no longer served");
    let h = d.session().await.unwrap();
    assert_eq!(handled(&h, "InstallApplication"), 1, "{h:?}");
    report_apps(&srv, &mut d).await;
    assert_eq!(d.apps.get("com.example.field").unwrap().version, "1.1");
    let st = state(&srv, &d.udid, "com.example.field").await.unwrap();
    assert_eq!(
        (st["state"].as_str(), st["version"].as_str()),
        (Some("installed"), Some("1.1")),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_links_expire() {
    let vpp = vpp().await;
    let srv = start(&vpp, &["--app-download-lifetime", "5"]);
    let (s, v) = upload_ipa(&srv, mdmd::protocol::ipa::build_ipa("com.example.short", "2.0", "Short")).await;
    assert_eq!(s, 201, "{v}");
    let mut d = device(&srv, &vpp).await;
    let (s, _) = post(&srv, "/v1/apps/com.example.short/install", json!({"targets": [d.udid]})).await;
    assert_eq!(s, 200);
    d.session().await.unwrap();
    d.session().await.unwrap();
    let url = fetched_manifest(&srv, &d).await;
    assert!(d.fetches.iter().any(|(u, s)| *u == url && *s == 200), "fresh: {:?}", d.fetches);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = srv.client().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 410);
    assert!(r.text().await.unwrap().contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotation_resends_only_the_configuration_and_blueprints_install_with_licences() {
    let vpp = vpp().await;
    vpp.add_app(PAGES, 5);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    let (s, v) = put_token(&srv, API_KEY, "main", &vpp.token_file()).await;
    assert_eq!(s, 201, "{v}");
    let t1 = srv.cli_json(&["access-tokens", "generate"]);
    let (s, v) = post(
        &srv,
        "/v1/apps",
        json!({"itunes_store_id": PAGES.parse::<u64>().unwrap(), "configuration": {"PINGID_MDM_TOKEN": "$ACCESS_TOKEN", "user": "$UDID"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // A blueprint for everyone: the device gets the licence and the app.
    let (s, v) = call(
        &srv,
        reqwest::Method::PUT,
        "/v1/blueprints/pages",
        Some(json!({"groups": ["*"], "apps": [{"app": PAGES_ID}]})),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
    let (s, v) = call(
        &srv,
        reqwest::Method::PUT,
        "/v1/blueprints/bad",
        Some(json!({"groups": ["*"], "apps": [{"app": "com.example.nothing"}]})),
    )
    .await;
    assert_eq!(s, 400, "an app not in the catalog: {v}");
    let mut d = device(&srv, &vpp).await;
    let got = wait_until(Duration::from_secs(20), || async { vpp.assigned(PAGES, &d.serial) }).await;
    assert!(got, "the blueprint's app got its licence");
    let mut installs = 0;
    for _ in 0..5 {
        installs += handled(&d.session().await.unwrap(), "InstallApplication");
        if installs > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(installs, 1);
    report_apps(&srv, &mut d).await;
    let cfg = d.apps.get(PAGES_ID).and_then(|a| a.config.clone()).expect("configured");
    assert_eq!(cfg.get("PINGID_MDM_TOKEN").and_then(|v| v.as_string()), t1["value"].as_str());
    assert_eq!(cfg.get("user").and_then(|v| v.as_string()), Some(d.udid.as_str()));

    // Rotation: Settings → ApplicationConfiguration with the new token, no reinstall.
    let t1id = t1["id"].as_str().unwrap().to_owned();
    let t2 = srv.cli_json(&["access-tokens", "generate", "--revoke", &t1id]);
    let t2v = t2["value"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    let mut ok = false;
    for _ in 0..40 {
        seen.extend(d.session().await.unwrap());
        let now = d
            .apps
            .get(PAGES_ID)
            .and_then(|a| a.config.as_ref())
            .and_then(|c| c.get("PINGID_MDM_TOKEN"))
            .and_then(|v| v.as_string())
            .map(str::to_owned);
        if now.as_deref() == Some(t2v.as_str()) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok, "the configuration was re-sent with the new token: {seen:?}");
    assert_eq!(handled(&seen, "InstallApplication"), 0, "never reinstalled: {seen:?}");
    assert!(handled(&seen, "Settings") >= 1, "{seen:?}");

    // Out of the blueprint: removed, licence released.
    let (s, _) = call(&srv, reqwest::Method::DELETE, "/v1/blueprints/pages", None).await;
    assert!(s == 200 || s == 204);
    let gone = wait_until(Duration::from_secs(20), || async { !vpp.assigned(PAGES, &d.serial) }).await;
    assert!(gone, "the licence was released when the blueprint stopped wanting the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_console_drive_the_catalog() {
    let vpp = vpp().await;
    vpp.add_app(PAGES, 3);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("sToken_for_Example.vpptoken");
    std::fs::write(&token, vpp.token_file()).unwrap();
    let ipa = dir.path().join("Field.ipa");
    std::fs::write(&ipa, mdmd::protocol::ipa::build_ipa("com.example.cli", "3.0", "Field CLI")).unwrap();
    let not_ipa = dir.path().join("notes.txt");
    std::fs::write(&not_ipa, "hello").unwrap();

    let v = srv.cli_json(&["apps", "tokens", "add", "main", token.to_str().unwrap()]);
    assert_eq!(v["org_name"], "Example Org", "{v}");
    let v = srv.cli_json(&["apps", "add", "--itunes-id", PAGES]);
    assert_eq!(v["bundle_id"], PAGES_ID, "{v}");
    let v = srv.cli_json(&["apps", "add", ipa.to_str().unwrap()]);
    assert_eq!((v["kind"].as_str(), v["version"].as_str()), (Some("in_house"), Some("3.0")), "{v}");
    let (ok, _, err) = srv.cli(&["apps", "add", not_ipa.to_str().unwrap()]);
    assert!(!ok && err.contains("400"), "{err}");
    let list = srv.cli_json(&["apps", "list"]);
    assert_eq!(list["apps"].as_array().unwrap().len(), 2, "{list}");

    let d = device(&srv, &vpp).await;
    let v = srv.cli_json(&["apps", "install", PAGES_ID, &d.udid]);
    assert_eq!((v["queued"].as_u64(), v["licences_associated"].as_u64()), (Some(1), Some(1)), "{v}");
    assert!(vpp.assigned(PAGES, &d.serial));
    let (ok, _, err) = srv.cli(&["apps", "install", PAGES_ID, "NO-SUCH-DEVICE"]);
    assert!(!ok, "a target that failed makes the command fail: {err}");
    let v = srv.cli_json(&["apps", "device", &d.udid]);
    assert_eq!(v["apps"][0]["state"], "queued", "{v}");
    let v = srv.cli_json(&["apps", "show", PAGES_ID]);
    assert_eq!(v["device_states"][0]["enrollment"], d.udid.as_str(), "{v}");

    // An operator in the console: the catalog, then an install from the app's page.
    let secret = srv.account("ops", "operator");
    let (http, session, csrf) = common::console_login(&srv, "ops", &secret).await;
    let page = |p: String| {
        let http = http.clone();
        let session = session.clone();
        async move {
            http.get(p)
                .header("cookie", format!("mdmd_ui={session}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let html = page(format!("{}/ui/apps", srv.base)).await;
    assert!(
        html.contains("Pages") && html.contains("Field CLI") && html.contains("Example Org"),
        "{html}"
    );
    assert!(!html.contains(&vpp.token_file()), "the token never shows");
    let other = device(&srv, &vpp).await;
    let r = http
        .post(format!("{}/ui/apps/com.example.cli/install", srv.base))
        .header("cookie", format!("mdmd_ui={session}"))
        .form(&[("csrf", csrf.as_str()), ("targets", other.udid.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let html = page(format!("{}/ui/apps/com.example.cli", srv.base)).await;
    assert!(html.contains(&other.udid) && html.contains("queued"), "{html}");
    // A read-only account sees the catalog but cannot install.
    let ro = srv.account("auditor", "read-only");
    let (s, _) = {
        let r = srv
            .client()
            .post(format!("{}/v1/apps/{PAGES_ID}/install", srv.base))
            .bearer_auth(&ro)
            .json(&json!({"targets": [other.udid]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(s, 403);

    let v = srv.cli_json(&["apps", "remove", PAGES_ID, &d.udid]);
    assert_eq!(v["licences_released"], 1, "{v}");
    assert!(!vpp.assigned(PAGES, &d.serial));
    let (ok, _, err) = srv.cli(&["apps", "rm", "com.example.cli"]);
    assert!(!ok && err.contains("409"), "a device still has it: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_updates_are_offered_and_an_erased_device_gives_its_licence_back() {
    let vpp = vpp().await;
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    assert_eq!(put_token(&srv, API_KEY, "main", &vpp.token_file()).await.0, 201);
    let (s, v) = post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()})).await;
    assert_eq!(s, 201, "{v}");
    let mut d = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]})).await;
    assert_eq!(s, 200, "{v}");
    d.session().await.unwrap();
    report_apps(&srv, &mut d).await;
    assert_eq!(d.apps.get(PAGES_ID).map(|a| a.version.as_str()), Some("13.1"));

    // Apple publishes 13.2: the sync sees it and offers it to the device that has the app (no new licence).
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.2");
    let (s, v) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!((s, v["errors"].as_array().map(Vec::len)), (200, Some(0)), "{v}");
    let v = srv.admin().get(&format!("/v1/apps/{PAGES_ID}")).await.unwrap();
    assert_eq!(v["version"], "13.2", "{v}");
    let h = d.session().await.unwrap();
    assert_eq!(handled(&h, "InstallApplication"), 1, "the update was offered: {h:?}");
    report_apps(&srv, &mut d).await;
    assert_eq!(d.apps.get(PAGES_ID).map(|a| a.version.as_str()), Some("13.2"));
    let st = state(&srv, &d.udid, PAGES_ID).await.unwrap();
    assert_eq!(
        (st["state"].as_str(), st["version"].as_str()),
        (Some("installed"), Some("13.2")),
        "{st}"
    );
    assert_eq!(vpp.licences(PAGES).0, 1, "still one licence in use");

    // The device is erased: once it acknowledges, its licence goes back.
    enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "EraseDevice"})).await;
    d.session().await.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async { !vpp.assigned(PAGES, &d.serial) }).await,
        "an erased device's licence is released"
    );
}

/// Apple's guide: "An IT administrator can end the MDM relationship". The
/// enrollment profile is removed, the device checks out, its licences go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenrolling_a_device_ends_management_and_gives_its_licences_back() {
    let vpp = vpp().await;
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    assert_eq!(put_token(&srv, API_KEY, "main", &vpp.token_file()).await.0, 201);
    assert_eq!(
        post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()}))
            .await
            .0,
        201
    );
    let mut d = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]})).await;
    assert_eq!(s, 200, "{v}");
    d.session().await.unwrap();
    d.settle_apps().await;
    assert!(d.apps.get(PAGES_ID).is_some_and(|a| a.installed()));

    let (ok, _, err) = srv.cli(&["devices", "unenroll", "NO-SUCH-DEVICE"]);
    assert!(!ok && err.contains("404"), "{err}");
    let v = srv.cli_json(&["devices", "unenroll", &d.udid]);
    assert_eq!(v["queued"], 1, "{v}");
    let h = d.session().await.unwrap();
    assert_eq!(handled(&h, "RemoveProfile"), 1, "{h:?}");
    assert!(d.unenrolled && d.profile.is_some());
    assert!(
        d.apps.is_empty(),
        "the managed app went with the enrollment profile (remove on unenroll)"
    );
    let v = srv.admin().get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    assert!(v["checked_out_at"].is_string(), "the device checked out: {v}");
    assert!(
        wait_until(Duration::from_secs(20), || async { !vpp.assigned(PAGES, &d.serial) }).await,
        "its licence went back"
    );
    let (s, v) = post(&srv, &format!("/v1/devices/{}/unenroll", d.udid), json!({})).await;
    assert_eq!(s, 409, "already gone: {v}");
}
