//! Apps (issue 28) under attack: lesser admin roles after the organisation's
//! content tokens and the in-house download links; outsiders guessing,
//! bending and flooding those links; hostile `.ipa` uploads (zip bombs, deep
//! plists, 300,000 entries, path characters, the wrong platform, oversize);
//! installs racing for the last licence or naming nonsense; devices lying
//! in their app lists and claiming another device's serial number; Apple's
//! service throttling or revoking the token in the middle of an install.
//! The real server binary runs over HTTPS on 127.0.0.1 against the Apps and
//! Books stand-in (`sim::vpp_api`), with simulated devices.
//!
//! Every test asserts the SAFE behaviour. The ones that fail show a
//! weakness (see the report that came with this file); the others guard
//! behaviour that is already right.

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::{enqueue, on_postgres, wait_until, Server, API_KEY};
use mdmd::protocol::command::Command;
use mdmd::sim::vpp_api::VppStandIn;
use mdmd::sim::SimDevice;
use reqwest::Method;
use serde_json::{json, Value};

const PAGES: &str = "361309726";
const PAGES_ID: &str = "com.apple.Pages";

// ---------------------------------------------------------------- helpers

async fn vpp(org: &str) -> VppStandIn {
    let v = VppStandIn::start(org).await.expect("stand-in");
    v.set_event_delay(1);
    v
}

fn args<'a>(vpp: &VppStandIn, extra: &[&'a str]) -> Vec<&'a str> {
    let url: &'static str = vpp.url().leak();
    let mut a = vec!["--apps-and-books-url", url, "--apps-sync-interval", "3600"];
    a.extend_from_slice(extra);
    a
}

fn start(vpp: &VppStandIn, extra: &[&str]) -> Server {
    Server::start_with(&args(vpp, extra))
}

fn start_logged(vpp: &VppStandIn, extra: &[&str]) -> Server {
    Server::start_logged(&args(vpp, extra))
}

/// JSON call as any key (admin key or account secret).
async fn call_as(srv: &Server, key: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    mdmd::sim::load::Admin::new(&srv.base, key, srv.client())
        .call(method, path, body)
        .await
        .unwrap()
}

async fn call(srv: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(srv, API_KEY, method, path, body).await
}

async fn post(srv: &Server, path: &str, body: Value) -> (u16, Value) {
    call(srv, Method::POST, path, Some(body)).await
}

/// Any request to the admin API with raw bytes: (status, body as text).
async fn raw(srv: &Server, key: &str, method: Method, path: &str, ctype: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut r = srv.client().request(method, format!("{}{path}", srv.base)).bearer_auth(key);
    if let Some(c) = ctype {
        r = r.header("content-type", c);
    }
    let resp = r.body(body).send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.text().await.unwrap_or_default())
}

async fn put_token(srv: &Server, key: &str, name: &str, text: impl Into<Vec<u8>>) -> (u16, String) {
    raw(
        srv,
        key,
        Method::PUT,
        &format!("/v1/apps-and-books/tokens/{name}"),
        Some("text/plain"),
        text.into(),
    )
    .await
}

async fn upload(srv: &Server, body: Vec<u8>) -> (u16, String) {
    raw(srv, API_KEY, Method::POST, "/v1/apps", Some("application/octet-stream"), body).await
}

async fn tokens(srv: &Server) -> Value {
    srv.admin().get("/v1/apps-and-books/tokens").await.unwrap()["tokens"].clone()
}

async fn catalog(srv: &Server) -> Value {
    srv.admin().get("/v1/apps").await.unwrap()["apps"].clone()
}

async fn alive(srv: &Server) {
    let r = srv
        .client()
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .expect("server alive");
    assert_eq!(r.status().as_u16(), 200);
}

/// An enrolled device whose store is the stand-in.
async fn device(srv: &Server, vpp: &VppStandIn) -> SimDevice {
    let mut d = srv.enrolled().await;
    d.app_store = Some(vpp.url());
    d
}

/// The state the server holds of one app on one device.
async fn state(srv: &Server, id: &str, app: &str) -> Option<Value> {
    let v = srv.admin().get(&format!("/v1/devices/{id}/apps")).await.unwrap();
    v["apps"].as_array().unwrap().iter().find(|a| a["app"] == app).cloned()
}

fn handled(h: &[mdmd::sim::Handled], rt: &str) -> usize {
    h.iter().filter(|x| x.request_type == rt).count()
}

/// A report of this device (its UDID, the command, the status, more keys).
fn report(d: &SimDevice, uuid: Option<&str>, status: &str, extra: Vec<(&str, plist::Value)>) -> plist::Dictionary {
    let mut r = plist::Dictionary::new();
    r.insert("UDID".into(), d.udid.clone().into());
    r.insert("Status".into(), status.into());
    if let Some(u) = uuid {
        r.insert("CommandUUID".into(), u.into());
    }
    for (k, v) in extra {
        r.insert(k.into(), v);
    }
    r
}

/// Connect as the device and take every queued command: InstallApplication
/// ones are answered NotNow (left pending, unanswered), the others acknowledged.
async fn take_installs(d: &SimDevice) -> Vec<Command> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut rep = report(d, None, "Idle", vec![]);
    for _ in 0..50 {
        let Some(cmd) = d.connect(&rep).await.unwrap() else { break };
        if !seen.insert(cmd.uuid.clone()) {
            break;
        }
        if cmd.request_type == "InstallApplication" {
            rep = report(d, Some(&cmd.uuid), "NotNow", vec![]);
            out.push(cmd);
        } else {
            rep = report(d, Some(&cmd.uuid), "Acknowledged", vec![]);
        }
    }
    out
}

/// The ManifestURL of an InstallApplication command.
fn link_of(cmd: &Command) -> String {
    cmd.command
        .get("ManifestURL")
        .and_then(plist::Value::as_string)
        .unwrap_or_else(|| panic!("no ManifestURL in {:?}", cmd.command))
        .to_owned()
}

/// A download link's parts.
struct Link {
    base: String,
    app: String,
    enrollment: String,
    sha: String,
    expires: String,
    mac: String,
}

impl Link {
    fn parse(url: &str) -> Link {
        let i = url.find("/mdm/apps/").expect("a download link");
        let base = url[..i].to_owned();
        let p: Vec<&str> = url[i + "/mdm/apps/".len()..].split('/').collect();
        assert_eq!(p.len(), 6, "{url}");
        Link {
            base,
            app: p[0].into(),
            enrollment: p[1].into(),
            sha: p[2].into(),
            expires: p[3].into(),
            mac: p[4].into(),
        }
    }

    fn url(&self, file: &str) -> String {
        self.with(&self.app, &self.enrollment, &self.sha, &self.expires, &self.mac, file)
    }

    fn with(&self, app: &str, enr: &str, sha: &str, exp: &str, mac: &str, file: &str) -> String {
        format!("{}/mdm/apps/{app}/{enr}/{sha}/{exp}/{mac}/{file}", self.base)
    }
}

async fn fetch(c: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let r = c.get(url).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

/// Served content: a manifest or an archive.
fn is_content(body: &[u8]) -> bool {
    body.windows(16).any(|w| w == b"software-package") || body.starts_with(b"PK\x03\x04")
}

// ---- archives

fn plist_xml(pairs: Vec<(&str, plist::Value)>) -> Vec<u8> {
    let d: plist::Dictionary = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    mdmd::protocol::to_xml(&d)
}

fn info(bundle: &str) -> Vec<(&'static str, plist::Value)> {
    vec![
        ("CFBundleIdentifier", bundle.into()),
        ("CFBundleShortVersionString", "1.0".into()),
        ("CFBundleVersion", "1".into()),
        ("CFBundleName", "Evil".into()),
        ("MinimumOSVersion", "16.0".into()),
        ("CFBundleSupportedPlatforms", plist::Value::Array(vec!["iPhoneOS".into()])),
    ]
}

/// A zip of (name, bytes, deflated?).
fn zip_of(files: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, deflate) in files {
        let m = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(m)
            .large_file(bytes.len() > 1 << 30);
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn ipa_with_info(info_plist: &[u8]) -> Vec<u8> {
    zip_of(&[
        ("Payload/Evil.app/Info.plist", info_plist, true),
        ("Payload/Evil.app/Evil", &b"\xcf\xfa\xed\xfe"[..], false),
    ])
}

// ---- the console

/// Sign in to the console: (client, session cookie).
async fn console(srv: &Server, name: &str, secret: &str) -> (reqwest::Client, String) {
    let (http, session, _) = common::console_login(srv, name, secret).await;
    (http, session)
}

async fn page(http: &reqwest::Client, srv: &Server, path: &str, session: &str) -> String {
    let r = http
        .get(format!("{}{path}", srv.base))
        .header("cookie", format!("mdmd_ui={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.text().await.unwrap()
}

/// Every file under a directory, as bytes.
fn all_bytes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The secret forms of a token file: the text, the inner token, what it decodes to.
fn secret_forms(file: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let json: Value = serde_json::from_slice(&b64.decode(file.trim()).unwrap()).unwrap();
    let inner = json["token"].as_str().unwrap().to_owned();
    let decoded = String::from_utf8(b64.decode(&inner).unwrap()).unwrap();
    vec![file.trim().to_owned(), inner, decoded]
}

// ================================================================ tokens

/// Operators and read-only accounts cannot put or delete content tokens
/// (through any spelling of the path); no role sees the sToken in any API
/// answer, health or console page; the log never carries it; at rest it is
/// sealed (no form of it anywhere in the data dir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_tokens_only_admins_change_and_nobody_ever_reads_them() {
    let vpp = vpp("Token Org").await;
    vpp.add_app(PAGES, 3);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let mut srv = start_logged(&vpp, &[]);
    let file = vpp.token_file();
    let secrets = secret_forms(&file);
    let ro = srv.account("viewer", "read-only");
    let op = srv.account("op", "operator");
    let boss = srv.account("boss", "admin");

    // Lesser roles: every spelling of the path, nothing stored.
    let paths = [
        "/v1/apps-and-books/tokens/main",
        "/v1/apps-and-books/tokens/main/",
        "/v1//apps-and-books/tokens/main",
        "/v1/apps-and-books//tokens/main",
        "/v1/apps-and-books/%74okens/main",
        "/v1/apps-and-books/tokens/%6Dain",
        "/v1/apps-and-books/tokens/x/%2E%2E/main",
        "/v1/Apps-And-Books/tokens/main",
    ];
    for (who, key) in [("read-only", &ro), ("operator", &op)] {
        for p in paths {
            for m in [Method::PUT, Method::POST, Method::PATCH] {
                let (s, body) = raw(&srv, key, m.clone(), p, Some("text/plain"), file.clone().into_bytes()).await;
                assert!(!(200..300).contains(&s), "{who} {m} {p}: {s} {body}");
            }
        }
    }
    assert_eq!(tokens(&srv).await, json!([]), "a lesser role stored a token");

    let (s, v) = put_token(&srv, API_KEY, "main", file.clone()).await;
    assert_eq!(s, 201, "{v}");
    for (who, key) in [("read-only", &ro), ("operator", &op)] {
        for p in paths {
            let (s, body) = raw(&srv, key, Method::DELETE, p, None, vec![]).await;
            assert!(!(200..300).contains(&s), "{who} DELETE {p}: {s} {body}");
        }
    }
    assert_eq!(
        tokens(&srv).await.as_array().map(Vec::len),
        Some(1),
        "a lesser role deleted the token"
    );

    // Use it: an app added, a sync, an install.
    let (s, v) = post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()})).await;
    assert_eq!(s, 201, "{v}");
    let d = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]})).await;
    assert_eq!(s, 200, "{v}");
    let (s, sync) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!(s, 200, "{sync}");

    // Every answer, every role.
    let reads = [
        "/v1/apps-and-books/tokens",
        "/v1/apps-and-books/tokens/main",
        "/v1/health",
        "/v1/apps",
        &format!("/v1/apps/{PAGES_ID}"),
        &format!("/v1/devices/{}/apps", d.udid),
        &format!("/v1/devices/{}", d.udid),
        "/v1/openapi.json",
        "/metrics",
    ];
    let mut seen = sync.to_string();
    for key in [API_KEY, ro.as_str(), op.as_str()] {
        for p in reads {
            let (_, text) = raw(&srv, key, Method::GET, p, None, vec![]).await;
            seen.push_str(&text);
        }
    }
    // The console, as an admin account and a read-only one.
    for (name, secret) in [("boss", &boss), ("viewer", &ro)] {
        let (http, sess) = console(&srv, name, secret).await;
        seen.push_str(&page(&http, &srv, "/ui/apps", &sess).await);
        seen.push_str(&page(&http, &srv, &format!("/ui/apps/{PAGES_ID}"), &sess).await);
    }
    for s in &secrets {
        assert!(
            !seen.contains(s.as_str()),
            "an API answer or console page shows the content token ({}…)",
            &s[..12]
        );
    }
    assert!(!seen.contains("sealed:v1"), "an answer shows the sealed token");

    // A refused replacement leaves the stored one working.
    let (s, _) = put_token(&srv, API_KEY, "main", "garbage").await;
    assert_eq!(s, 400);
    let (s, v) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!((s, v["errors"].clone()), (200, json!([])), "{v}");

    // The log (debug level).
    let log = srv.log_text();
    assert!(log.contains("content token stored"), "the log was captured");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the log carries the content token ({}…)", &s[..12]);
    }

    // At rest: sealed, no form of it in any file of the data dir.
    srv.kill9();
    for (p, bytes) in all_bytes(&srv.data_dir()) {
        for s in &secrets {
            assert!(!contains(&bytes, s.as_bytes()), "{} holds the content token in clear", p.display());
        }
    }
    if !on_postgres() {
        use mdmd::store::RecordStore as _;
        let store = mdmd::store::redb::RedbStore::open(&srv.data_dir().join("mdmd.redb")).unwrap();
        let recs = store.records("vpp_tokens").await.unwrap();
        assert_eq!(recs.len(), 1);
        let v = &recs[0].1.value;
        assert!(v["sealed"].as_str().is_some_and(|s| s.starts_with("sealed:")), "{v}");
        for s in &secrets {
            assert!(!v.to_string().contains(s.as_str()));
        }
    }
}

/// Refused content tokens (garbage, another organisation's, expired, empty,
/// oversized, not UTF-8, the wrong JSON) store nothing and leave a stored
/// token as it was; bad names are refused; a token wrapped in whitespace
/// (a copy from an e-mail) is taken and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_content_tokens_store_nothing_and_wrapped_ones_work() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let vpp = vpp("Home Org").await;
    vpp.add_app(PAGES, 1);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let other = VppStandIn::start("Other Org").await.unwrap();
    let srv = start(&vpp, &[]);

    let far = "2099-01-01T00:00:00+0000";
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"this is not a token".to_vec()),
        ("empty", Vec::new()),
        ("whitespace", b"  \r\n\t ".to_vec()),
        ("expired", vpp.expired_token_file().into_bytes()),
        ("another organisation's", other.token_file().into_bytes()),
        ("oversized", vec![b'A'; 64 * 1024]),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x41]),
        (
            "JSON not base64",
            format!(r#"{{"token":"x","expDate":"{far}","orgName":"Home Org"}}"#).into_bytes(),
        ),
        ("an array", b64("[]").into_bytes()),
        (
            "token not a string",
            b64(&format!(r#"{{"token":1,"expDate":"{far}","orgName":"Home Org"}}"#)).into_bytes(),
        ),
        (
            "no token",
            b64(&format!(r#"{{"expDate":"{far}","orgName":"Home Org"}}"#)).into_bytes(),
        ),
        (
            "bad date",
            b64(r#"{"token":"eA==","expDate":"tomorrow","orgName":"Home Org"}"#).into_bytes(),
        ),
        (
            "made up",
            b64(&format!(r#"{{"token":"bWFkZSB1cA==","expDate":"{far}","orgName":"Home Org"}}"#)).into_bytes(),
        ),
    ];
    for (what, body) in &bad {
        let (s, v) = put_token(&srv, API_KEY, "main", body.clone()).await;
        assert!((400..500).contains(&s), "{what}: {s} {v}");
        assert_eq!(tokens(&srv).await, json!([]), "{what}: stored on refusal");
    }
    let long_name = "n".repeat(65);
    for name in ["x%20y", long_name.as_str(), ".", "%2E%2E", "a%2Fb", "%F0%9F%99%82", "a%00b"] {
        let (s, v) = put_token(&srv, API_KEY, name, vpp.token_file()).await;
        assert!((400..500).contains(&s), "name {name:?}: {s} {v}");
        assert_eq!(tokens(&srv).await, json!([]), "name {name:?}");
    }

    // Wrapped: a BOM, CRLF every 40 characters, spaces and tabs around.
    let file = vpp.token_file();
    let mut wrapped = String::from("\u{feff}  \t");
    for (i, c) in file.chars().enumerate() {
        if i > 0 && i % 40 == 0 {
            wrapped.push_str("\r\n ");
        }
        wrapped.push(c);
    }
    wrapped.push_str("\n\n  ");
    let (s, v) = put_token(&srv, API_KEY, "main", wrapped).await;
    assert_eq!(s, 201, "a wrapped token file is the same token: {v}");
    let (s, v) = post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()})).await;
    assert_eq!(s, 201, "the stored token works with Apple: {v}");

    // Every refusal again, on the name in use: the stored token stays and works.
    let before = srv.admin().get("/v1/apps-and-books/tokens/main").await.unwrap();
    for (what, body) in &bad {
        let (s, v) = put_token(&srv, API_KEY, "main", body.clone()).await;
        assert!((400..500).contains(&s), "{what}: {s} {v}");
    }
    let after = srv.admin().get("/v1/apps-and-books/tokens/main").await.unwrap();
    assert_eq!(
        before["uploaded_at"], after["uploaded_at"],
        "a refused token replaced the stored one: {after}"
    );
    let (s, v) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!((s, v["errors"].clone()), (200, json!([])), "{v}");
}

// ================================================================ links

/// The in-house download link is a credential: no API answer and no console
/// page shows it to any role (before and after the device answered), and
/// the server log does not carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_obtains_an_in_house_download_link() {
    let vpp = vpp("Link Org").await;
    let srv = start_logged(&vpp, &[]);
    let ro = srv.account("viewer", "read-only");
    let op = srv.account("op", "operator");
    let (s, v) = upload(&srv, mdmd::protocol::ipa::build_ipa("com.example.secret", "1.0", "Secret")).await;
    assert_eq!(s, 201, "{v}");
    let d = device(&srv, &vpp).await;
    let (s, v) = call_as(
        &srv,
        &op,
        Method::POST,
        "/v1/apps/com.example.secret/install",
        Some(json!({"targets": [d.udid]})),
    )
    .await;
    assert_eq!((s, v["queued"].as_u64()), (200, Some(1)), "an operator installs: {v}");

    let cmds = take_installs(&d).await;
    assert_eq!(cmds.len(), 1);
    let link = link_of(&cmds[0]);
    let l = Link::parse(&link);
    let uuid = cmds[0].uuid.clone();

    let sweep = |phase: &'static str| {
        let (srv, ro, op, d, uuid, mac) = (&srv, ro.clone(), op.clone(), d.udid.clone(), uuid.clone(), l.mac.clone());
        async move {
            let reads = [
                format!("/v1/devices/{d}/commands"),
                format!("/v1/commands/{uuid}"),
                format!("/v1/devices/{d}"),
                format!("/v1/devices/{d}/apps"),
                "/v1/apps".to_owned(),
                "/v1/apps/com.example.secret".to_owned(),
                "/v1/devices".to_owned(),
            ];
            for key in [API_KEY, ro.as_str(), op.as_str()] {
                for p in &reads {
                    let (s, text) = raw(srv, key, Method::GET, p, None, vec![]).await;
                    assert!(s == 200 || s == 403, "{phase} {p}: {s}");
                    assert!(!text.contains(&mac), "{phase}: {p} shows the download link's MAC: {text}");
                    assert!(!text.contains("/mdm/apps/"), "{phase}: {p} shows a download link: {text}");
                }
            }
            let (http, sess) = console(srv, "viewer", &ro).await;
            for p in [
                format!("/ui/devices/{d}"),
                "/ui/apps/com.example.secret".to_owned(),
                "/ui/apps".to_owned(),
            ] {
                let html = page(&http, srv, &p, &sess).await;
                assert!(
                    !html.contains(&mac) && !html.contains("/mdm/apps/"),
                    "{phase}: console {p} shows the link"
                );
            }
        }
    };
    sweep("sent").await;

    // The device fetches, then answers.
    let c = srv.client();
    assert_eq!(fetch(&c, &l.url("manifest.plist")).await.0, 200);
    assert_eq!(fetch(&c, &l.url("app.ipa")).await.0, 200);
    let ack = report(
        &d,
        Some(&uuid),
        "Acknowledged",
        vec![("Identifier", "com.example.secret".into()), ("State", "Installing".into())],
    );
    d.connect(&ack).await.unwrap();
    sweep("answered").await;

    let log = srv.log_text();
    assert!(log.contains("app manifest served"), "the log was captured");
    assert!(!log.contains(&l.mac), "the server log carries a device's download link");
}

/// A catalog app's managed configuration may carry `$ACCESS_TOKEN` (sealed
/// and redacted in the queued command). The device's answer to
/// ManagedApplicationConfiguration echoes the filled configuration: a
/// read-only account must not read the token there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_never_reads_an_app_configuration_token() {
    let vpp = vpp("Config Org").await;
    let srv = start(&vpp, &[]);
    let ro = srv.account("viewer", "read-only");
    let (s, v) = upload(&srv, mdmd::protocol::ipa::build_ipa("com.example.sso", "1.0", "Sso")).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &srv,
        Method::PUT,
        "/v1/apps/com.example.sso",
        Some(json!({"configuration": {"SSO_TOKEN": "$ACCESS_TOKEN"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let token = srv.cli_json(&["access-tokens", "generate"])["value"].as_str().unwrap().to_owned();
    let mut d = device(&srv, &vpp).await;
    let (s, v) = post(&srv, "/v1/apps/com.example.sso/install", json!({"targets": [d.udid]})).await;
    assert_eq!((s, v["queued"].as_u64()), (200, Some(1)), "{v}");
    d.session().await.unwrap();
    d.session().await.unwrap();
    let got = d.apps.get("com.example.sso").and_then(|a| a.config.clone()).expect("configured");
    assert_eq!(got.get("SSO_TOKEN").and_then(plist::Value::as_string), Some(token.as_str()));

    // Someone checks the configuration on the device.
    let uuid = enqueue(
        &srv.admin(),
        &[&d.udid],
        json!({"RequestType": "ManagedApplicationConfiguration", "Identifiers": ["com.example.sso"]}),
    )
    .await;
    d.session().await.unwrap();
    let full = srv.admin().get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert!(full.to_string().contains("SSO_TOKEN"), "the device answered: {full}");
    for p in [
        format!("/v1/commands/{uuid}"),
        format!("/v1/devices/{}/commands", d.udid),
        format!("/v1/devices/{}", d.udid),
    ] {
        let (s, text) = raw(&srv, &ro, Method::GET, &p, None, vec![]).await;
        assert_eq!(s, 200, "{p}");
        assert!(!text.contains(&token), "a read-only account reads the access token in {p}: {text}");
    }
}

/// Only the link as issued serves anything: another device's, another app's,
/// a swapped file, a moved expiry, a bent MAC, path traversal, percent
/// junk, overlong parts, other methods, a flood of guesses — none. A device
/// that checked out, an app removed from the catalog, a replaced build: 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_links_serve_only_as_issued() {
    let vpp = vpp("Dl Org").await;
    let srv = start(&vpp, &[]);
    let ipa_a = mdmd::protocol::ipa::build_ipa("com.example.alpha", "1.0", "Alpha");
    let ipa_b = mdmd::protocol::ipa::build_ipa("com.example.bravo", "1.0", "Bravo");
    assert_eq!(upload(&srv, ipa_a.clone()).await.0, 201);
    assert_eq!(upload(&srv, ipa_b.clone()).await.0, 201);
    let mut d = device(&srv, &vpp).await;
    let o = device(&srv, &vpp).await;
    for (app, who) in [("com.example.alpha", vec![&d.udid, &o.udid]), ("com.example.bravo", vec![&d.udid])] {
        let (s, v) = post(&srv, &format!("/v1/apps/{app}/install"), json!({ "targets": who })).await;
        assert_eq!(s, 200, "{v}");
    }
    let dl = take_installs(&d).await;
    let ol = take_installs(&o).await;
    let find = |cmds: &[Command], app: &str| {
        cmds.iter()
            .map(link_of)
            .find(|u| u.contains(&format!("/mdm/apps/{app}/")))
            .unwrap_or_else(|| panic!("no link for {app}"))
    };
    let a_d = Link::parse(&find(&dl, "com.example.alpha"));
    let b_d = Link::parse(&find(&dl, "com.example.bravo"));
    let a_o = Link::parse(&find(&ol, "com.example.alpha"));
    let c = srv.client();

    // As issued.
    let (s, m) = fetch(&c, &a_d.url("manifest.plist")).await;
    assert_eq!(s, 200);
    assert!(is_content(&m));
    let (s, bytes) = fetch(&c, &a_d.url("app.ipa")).await;
    assert_eq!((s, bytes == ipa_a), (200, true), "the .ipa as uploaded");

    // Mixed and bent.
    let bent_mac = |m: &str| {
        let mut b = m.to_owned();
        let first = if m.starts_with('A') { "B" } else { "A" };
        b.replace_range(0..1, first);
        b
    };
    let later = (a_d.expires.parse::<i64>().unwrap() + 3600).to_string();
    let earlier = (a_d.expires.parse::<i64>().unwrap() - 1).to_string();
    let mixed = [
        (
            "another device's MAC",
            a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &a_o.expires, &a_o.mac, "manifest.plist"),
        ),
        (
            "another device in the path",
            a_d.with(&a_d.app, &o.udid, &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        ),
        (
            "another app in the path",
            a_d.with(&b_d.app, &a_d.enrollment, &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        ),
        (
            "another app's file",
            a_d.with(&a_d.app, &a_d.enrollment, &b_d.sha, &a_d.expires, &a_d.mac, "app.ipa"),
        ),
        (
            "another app's link, this app's file",
            a_d.with(&b_d.app, &b_d.enrollment, &a_d.sha, &b_d.expires, &b_d.mac, "app.ipa"),
        ),
        (
            "a later expiry",
            a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &later, &a_d.mac, "manifest.plist"),
        ),
        (
            "an earlier expiry",
            a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &earlier, &a_d.mac, "manifest.plist"),
        ),
        (
            "a bent MAC",
            a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &a_d.expires, &bent_mac(&a_d.mac), "app.ipa"),
        ),
        (
            "an upper-case MAC",
            a_d.with(
                &a_d.app,
                &a_d.enrollment,
                &a_d.sha,
                &a_d.expires,
                &a_d.mac.to_uppercase(),
                "app.ipa",
            ),
        ),
        (
            "a padded MAC",
            a_d.with(
                &a_d.app,
                &a_d.enrollment,
                &a_d.sha,
                &a_d.expires,
                &format!("{}=", a_d.mac),
                "app.ipa",
            ),
        ),
        (
            "a short MAC",
            a_d.with(
                &a_d.app,
                &a_d.enrollment,
                &a_d.sha,
                &a_d.expires,
                &a_d.mac[..a_d.mac.len() - 1],
                "app.ipa",
            ),
        ),
        (
            "an upper-case sha",
            a_d.with(
                &a_d.app,
                &a_d.enrollment,
                &a_d.sha.to_uppercase(),
                &a_d.expires,
                &a_d.mac,
                "app.ipa",
            ),
        ),
    ];
    for (what, url) in &mixed {
        let (s, body) = fetch(&c, url).await;
        assert_eq!(s, 403, "{what}: {url}");
        assert!(!is_content(&body), "{what} served content");
    }

    // Junk: traversal, percent-encoding, NUL, overlong, invalid UTF-8, other files.
    let long = "a".repeat(10_000);
    let very_long = "f".repeat(60_000);
    let junk = [
        format!("{}/mdm/apps/..%2F..%2F..%2Fetc%2Fpasswd/x/y/z/w/manifest.plist", a_d.base),
        a_d.with("..", &a_d.enrollment, &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        a_d.with(&a_d.app, "%2E%2E", &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        a_d.with(
            &a_d.app,
            &format!("{}%00", a_d.enrollment),
            &a_d.sha,
            &a_d.expires,
            &a_d.mac,
            "manifest.plist",
        ),
        a_d.with(
            &a_d.app,
            &format!("{}%2F..", a_d.enrollment),
            &a_d.sha,
            &a_d.expires,
            &a_d.mac,
            "app.ipa",
        ),
        a_d.with(&long, &a_d.enrollment, &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        a_d.with(&a_d.app, &long, &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        a_d.with(&a_d.app, &a_d.enrollment, &very_long, &a_d.expires, &a_d.mac, "app.ipa"),
        a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, "99999999999999999999999", &a_d.mac, "app.ipa"),
        a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, "-1", &a_d.mac, "app.ipa"),
        a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &a_d.expires, &long, "app.ipa"),
        a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &a_d.expires, "%FF%FE", "app.ipa"),
        a_d.with("%F0%9F%99%82", &a_d.enrollment, &a_d.sha, &a_d.expires, &a_d.mac, "manifest.plist"),
        a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &a_d.expires, &a_d.mac, "Info.plist"),
        a_d.with(&a_d.app, &a_d.enrollment, &a_d.sha, &a_d.expires, &a_d.mac, "..%2Fapp.ipa"),
        format!("{}/extra", a_d.url("app.ipa")),
        format!(
            "{}/mdm/apps/{}/{}/{}/{}/app.ipa",
            a_d.base, a_d.app, a_d.enrollment, a_d.sha, a_d.expires
        ),
        format!("{}/mdm/apps/{}", a_d.base, "x/".repeat(3000)),
    ];
    for url in &junk {
        let r = c.get(url).send().await.unwrap();
        let s = r.status().as_u16();
        let body = r.bytes().await.unwrap_or_default();
        assert!((400..500).contains(&s), "{s} for {}", &url[..url.len().min(200)]);
        assert!(!is_content(&body), "junk served content: {}", &url[..url.len().min(200)]);
    }

    // Other methods.
    let r = c.head(a_d.url("app.ipa")).send().await.unwrap();
    assert!(r.status().is_success(), "HEAD of the issued link");
    let r = c.head(mixed[0].1.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403, "HEAD of another device's link");
    for m in [Method::POST, Method::PUT, Method::DELETE] {
        let r = c.request(m.clone(), a_d.url("app.ipa")).body("x").send().await.unwrap();
        let s = r.status().as_u16();
        assert!((400..500).contains(&s), "{m} on a link: {s}");
        assert!(!is_content(&r.bytes().await.unwrap()), "{m} served content");
    }

    // A flood of guesses: bounded time, all refused, the server well.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let c = c.clone();
        let l = Link::parse(&a_d.url("manifest.plist"));
        tasks.push(tokio::spawn(async move {
            let mut odd = Vec::new();
            for i in 0..60 {
                let mac = format!("{:0>43}", format!("{w}x{i}"));
                let r = c
                    .get(l.with(&l.app, &l.enrollment, &l.sha, &l.expires, &mac, "app.ipa"))
                    .send()
                    .await
                    .unwrap();
                if r.status().as_u16() != 403 {
                    odd.push(r.status().as_u16());
                }
            }
            odd
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Vec::<u16>::new(), "a guess was not refused");
    }
    assert!(t0.elapsed() < Duration::from_secs(30), "1,920 guesses took {:?}", t0.elapsed());
    alive(&srv).await;
    assert_eq!(
        fetch(&c, &a_d.url("manifest.plist")).await.0,
        200,
        "the issued link still works after the flood"
    );

    // A device that checked out: its links are gone.
    o.checkout().await.unwrap();
    for f in ["manifest.plist", "app.ipa"] {
        let (s, body) = fetch(&c, &a_o.url(f)).await;
        assert_eq!(s, 410, "a checked-out device's {f}");
        assert!(!is_content(&body));
    }

    // An app removed from the device and then from the catalog: gone.
    let (s, v) = post(&srv, "/v1/apps/com.example.alpha/remove", json!({"targets": [d.udid]})).await;
    assert_eq!(s, 200, "{v}");
    d.session().await.unwrap();
    let (s, v) = call(&srv, Method::DELETE, "/v1/apps/com.example.alpha", None).await;
    assert_eq!(s, 204, "{v}");
    for f in ["manifest.plist", "app.ipa"] {
        let (s, body) = fetch(&c, &a_d.url(f)).await;
        assert_eq!(s, 410, "a deleted app's {f}");
        assert!(!is_content(&body));
    }

    // A replaced build: gone.
    assert_eq!(fetch(&c, &b_d.url("app.ipa")).await.0, 200);
    let (s, v) = upload(&srv, mdmd::protocol::ipa::build_ipa("com.example.bravo", "2.0", "Bravo")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(fetch(&c, &b_d.url("app.ipa")).await.0, 410, "the replaced build");
    alive(&srv).await;
}

// ================================================================ uploads

/// Hostile archives: each a clean 4xx that says why, nothing stored, the
/// server alive and quick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ipa_uploads_are_refused_cleanly() {
    let vpp = vpp("Upload Org").await;
    let srv = start(&vpp, &["--app-max-size", "64"]);
    let good = ipa_with_info(&plist_xml(info("com.example.fine")));

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // A zip bomb: the Info.plist inflates to 16 MiB (its header says so honestly).
    {
        let mut bomb = plist_xml(info("com.example.bomb"));
        bomb.truncate(bomb.len() - "</dict>\n</plist>".len());
        bomb.resize(16 << 20, b' ');
        cases.push(("a 16 MiB Info.plist", ipa_with_info(&bomb)));
    }
    // The same bomb whose headers claim 200 bytes.
    {
        let mut bomb = vec![b' '; 8 << 20];
        bomb[..5].copy_from_slice(b"<?xml");
        let mut z = ipa_with_info(&bomb);
        lie_about_sizes(&mut z, 200);
        cases.push(("an 8 MiB Info.plist that says 200 bytes", z));
    }
    // 10⁵ nested arrays.
    {
        let mut deep = b"<?xml version=\"1.0\"?><plist version=\"1.0\">".to_vec();
        for _ in 0..100_000 {
            deep.extend_from_slice(b"<array>");
        }
        cases.push(("a 10^5-deep Info.plist", ipa_with_info(&deep)));
        let mut deep_dict =
            b"<plist version=\"1.0\"><dict><key>CFBundleIdentifier</key><string>com.example.deep</string><key>x</key>".to_vec();
        for _ in 0..50_000 {
            deep_dict.extend_from_slice(b"<dict><key>k</key>");
        }
        cases.push(("a 5x10^4-deep dictionary", ipa_with_info(&deep_dict)));
    }
    // 300,000 entries.
    {
        let t = Instant::now();
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("Payload/Evil.app/Info.plist", opts).unwrap();
        w.write_all(&plist_xml(info("com.example.many"))).unwrap();
        for i in 0..300_000u32 {
            w.start_file(format!("Payload/Evil.app/{i:x}"), opts).unwrap();
        }
        let z = w.finish().unwrap().into_inner();
        eprintln!("300,000-entry zip: {} bytes in {:?}", z.len(), t.elapsed());
        cases.push(("300,000 entries", z));
    }
    // Broken archives.
    cases.push(("a truncated archive", good[..good.len() / 2].to_vec()));
    cases.push(("an archive without its end", good[..good.len() - 10].to_vec()));
    cases.push(("zeros", vec![0u8; 4096]));
    cases.push(("a lone end-of-central-directory claiming 65535 entries", {
        let mut e = b"PK\x05\x06\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\x7f\0\0\0\0\0\0".to_vec();
        e.truncate(22);
        e
    }));
    // Bundle identifiers with path characters, or 10k long.
    for id in [
        "../../../etc/passwd",
        "com.example/../../x",
        "com.example.a b",
        "com.example.%2e%2e",
        "com.example.app\u{0}x",
        "/abs.path",
    ] {
        cases.push(("a bundle id with path characters", ipa_with_info(&plist_xml(info(id)))));
    }
    cases.push((
        "a 10k bundle id",
        ipa_with_info(&plist_xml(info("a.".repeat(5_000).trim_end_matches('.')))),
    ));
    // The wrong platform, the wrong shape.
    {
        let mut mac = info("com.example.mac");
        mac.retain(|(k, _)| *k != "CFBundleSupportedPlatforms");
        mac.push(("CFBundleSupportedPlatforms", plist::Value::Array(vec!["MacOSX".into()])));
        cases.push(("a macOS app", ipa_with_info(&plist_xml(mac))));
        cases.push((
            "a macOS bundle layout",
            zip_of(&[(
                "Payload/Mac.app/Contents/Info.plist",
                &plist_xml(info("com.example.macl"))[..],
                true,
            )]),
        ));
        cases.push((
            "two apps",
            zip_of(&[
                ("Payload/A.app/Info.plist", &plist_xml(info("com.example.a"))[..], true),
                ("Payload/B.app/Info.plist", &plist_xml(info("com.example.b"))[..], true),
            ]),
        ));
        cases.push((
            "no Payload",
            zip_of(&[("Evil.app/Info.plist", &plist_xml(info("com.example.np"))[..], true)]),
        ));
        cases.push((
            "an Info.plist that is an array",
            ipa_with_info(b"<plist version=\"1.0\"><array/></plist>"),
        ));
        cases.push(("an Info.plist that is not a plist", ipa_with_info(b"\x00\x01 not at all")));
        let mut no_version = info("com.example.nov");
        no_version.retain(|(k, _)| !k.contains("Version"));
        cases.push(("no version", ipa_with_info(&plist_xml(no_version))));
    }
    // A binary plist whose references fan out to 2^40 values.
    cases.push(("a reference bomb Info.plist", ipa_with_info(&fan_out_bplist(40))));

    for (what, body) in &cases {
        let t = Instant::now();
        let (s, v) = upload(&srv, body.clone()).await;
        assert_eq!(s, 400, "{what}: {s} {v}");
        assert!(v.contains("error"), "{what}: says why: {v}");
        eprintln!("{what}: {s} {} in {:?}", &v[..v.len().min(160)], t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(20), "{what} took {:?}", t.elapsed());
        alive(&srv).await;
        assert_eq!(catalog(&srv).await, json!([]), "{what}: stored");
    }

    // The wrong content types.
    for ctype in [
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/zip"),
        Some("application/x-www-form-urlencoded"),
        None,
        Some("application/json"),
        Some("application/octet-stream\u{0}"),
    ] {
        let r = srv.client().post(format!("{}/v1/apps", srv.base)).bearer_auth(API_KEY);
        let r = match ctype {
            Some(c) => match reqwest::header::HeaderValue::from_bytes(c.as_bytes()) {
                Ok(h) => r.header("content-type", h),
                Err(_) => continue,
            },
            None => r,
        };
        let resp = r.body(good.clone()).send().await.unwrap();
        let s = resp.status().as_u16();
        assert!((400..500).contains(&s), "Content-Type {ctype:?}: {s}");
        assert_eq!(catalog(&srv).await, json!([]), "Content-Type {ctype:?}: stored");
    }
    // Unknown query parameters, an empty body.
    assert_eq!(
        raw(
            &srv,
            API_KEY,
            Method::POST,
            "/v1/apps?evil=1",
            Some("application/octet-stream"),
            good.clone()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        raw(
            &srv,
            API_KEY,
            Method::POST,
            "/v1/apps?prevent_backup=maybe",
            Some("application/octet-stream"),
            good.clone()
        )
        .await
        .0,
        400
    );
    assert_eq!(upload(&srv, Vec::new()).await.0, 400);
    assert_eq!(catalog(&srv).await, json!([]));

    // A read-only account uploads nothing.
    let ro = srv.account("viewer", "read-only");
    let (s, _) = raw(&srv, &ro, Method::POST, "/v1/apps", Some("application/octet-stream"), good.clone()).await;
    assert_eq!(s, 403);
    assert_eq!(catalog(&srv).await, json!([]));

    // And after all that, a fine app is taken.
    let (s, v) = upload(&srv, good).await;
    assert_eq!(s, 201, "{v}");
}

/// Past `--app-max-size` (1 MiB): refused, nothing stored, the server alive;
/// a small app still goes in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_size_limit_are_refused() {
    let vpp = vpp("Size Org").await;
    let srv = start(&vpp, &["--app-max-size", "1"]);
    // Incompressible filler, stored: a valid archive of 1.5 MiB, and one of 24 MiB.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut noise = vec![0u8; 24 << 20];
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let info = plist_xml(info("com.example.big"));
    for size in [3 << 19, 24 << 20] {
        let z = zip_of(&[
            ("Payload/Big.app/Info.plist", &info[..], true),
            ("Payload/Big.app/Big", &noise[..size], false),
        ]);
        let t = Instant::now();
        let r = srv
            .client()
            .post(format!("{}/v1/apps", srv.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/octet-stream")
            .body(z)
            .send()
            .await;
        match r {
            Ok(r) => {
                let s = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                assert!(s == 400 || s == 413, "{size} bytes: {s} {text}");
                assert!(text.contains("--app-max-size") || text.contains("large"), "{text}");
            }
            Err(e) => panic!("{size} bytes: the server dropped the upload instead of answering 4xx: {e}"),
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
        alive(&srv).await;
        assert_eq!(catalog(&srv).await, json!([]), "{size} bytes: stored");
    }
    let (s, v) = upload(&srv, mdmd::protocol::ipa::build_ipa("com.example.small", "1.0", "Small")).await;
    assert_eq!(s, 201, "{v}");
}

/// Rewrite every local and central header of a zip to claim `size` bytes
/// compressed-or-not uncompressed (the data stays as it is).
fn lie_about_sizes(z: &mut [u8], size: u32) {
    let mut i = 0;
    while i + 30 <= z.len() {
        if &z[i..i + 4] == b"PK\x03\x04" {
            z[i + 22..i + 26].copy_from_slice(&size.to_le_bytes());
            i += 30;
        } else if &z[i..i + 4] == b"PK\x01\x02" && i + 46 <= z.len() {
            z[i + 24..i + 28].copy_from_slice(&size.to_le_bytes());
            i += 46;
        } else {
            i += 1;
        }
    }
}

/// A binary plist: `depth` arrays, each holding the next one twice (2^depth
/// leaves once expanded), in a few hundred bytes.
fn fan_out_bplist(depth: usize) -> Vec<u8> {
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    // Object i (0..depth): an array [i+1, i+1]; object `depth`: the string "x".
    for i in 0..depth {
        offsets.push(out.len());
        out.extend_from_slice(&[0xA2, (i + 1) as u8, (i + 1) as u8]);
    }
    offsets.push(out.len());
    out.extend_from_slice(&[0x51, b'x']);
    let table = out.len();
    for o in &offsets {
        out.extend_from_slice(&(*o as u16).to_be_bytes());
    }
    let mut trailer = [0u8; 32];
    trailer[6] = 2; // offset size
    trailer[7] = 1; // ref size
    trailer[8..16].copy_from_slice(&(offsets.len() as u64).to_be_bytes());
    trailer[16..24].copy_from_slice(&0u64.to_be_bytes());
    trailer[24..32].copy_from_slice(&(table as u64).to_be_bytes());
    out.extend_from_slice(&trailer);
    out
}

// ================================================================ licences

/// Installs racing for the last licences never assign more than exist;
/// nonsense targets (unknown, checked out, user-enrolled, none, 100,001,
/// the wrong shape) use no licence; the same device twice uses one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licences_are_never_overcommitted() {
    let vpp = vpp("Licence Org").await;
    vpp.add_app(PAGES, 4);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    assert_eq!(put_token(&srv, API_KEY, "main", vpp.token_file()).await.0, 201);
    let (s, v) = post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()})).await;
    assert_eq!(s, 201, "{v}");
    let install = format!("/v1/apps/{PAGES_ID}/install");
    let d1 = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &install, json!({"targets": [d1.udid]})).await;
    assert_eq!((s, v["licences_associated"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(vpp.licences(PAGES), (1, 3));

    // Nonsense targets: a clear refusal per target or for the request, no licence used.
    let gone = device(&srv, &vpp).await;
    gone.checkout().await.unwrap();
    let mut ue = srv.device().await;
    ue.enrollment_id = Some(uuid::Uuid::new_v4().to_string().to_uppercase());
    let ue_ok = ue.enroll().await.is_ok();
    let mut singles = vec![
        ("unknown enrollment", "NO-SUCH-DEVICE".to_owned()),
        ("a checked-out device", gone.udid.clone()),
        ("a path", "../../etc/passwd".to_owned()),
        ("a huge id", "X".repeat(100_000)),
    ];
    if ue_ok {
        singles.push(("a User Enrollment", ue.enrollment_id.clone().unwrap()));
    } else {
        eprintln!("no User Enrollment could be made with this profile: that case is not exercised");
    }
    for (what, t) in &singles {
        let (s, v) = post(&srv, &install, json!({ "targets": [t] })).await;
        let refused_all = (400..500).contains(&s);
        let refused_one =
            s == 200 && v["queued"] == 0 && v["licences_associated"] == 0 && v["failed"].as_array().is_some_and(|f| f.len() == 1);
        assert!(refused_all || refused_one, "{what}: {s} {v}");
        assert_eq!(vpp.licences(PAGES), (1, 3), "{what} used a licence");
    }
    let many: Vec<String> = (0..100_001).map(|i| format!("D{i}")).collect();
    for (what, body) in [
        ("no targets", json!({"targets": []})),
        ("100,001 targets", json!({ "targets": many })),
        ("targets not a list", json!({"targets": d1.udid})),
        ("targets of numbers", json!({"targets": [1, 2]})),
        ("an extra key", json!({"targets": [d1.udid], "licences": 1000})),
        ("null", Value::Null),
    ] {
        let (s, v) = post(&srv, &install, body).await;
        assert!((400..500).contains(&s), "{what}: {s} {v}");
        assert_eq!(vpp.licences(PAGES), (1, 3), "{what} used a licence");
    }

    // The same device twice in one request: one licence.
    let d2 = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &install, json!({"targets": [d2.udid, d2.udid, d2.udid]})).await;
    assert_eq!(
        (s, v["licences_associated"].as_u64(), v["queued"].as_u64()),
        (200, Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(vpp.licences(PAGES), (2, 2));

    // Six devices, each in its own request at once, for the last two licences.
    let mut racers = Vec::new();
    for _ in 0..6 {
        racers.push(device(&srv, &vpp).await);
    }
    let mut tasks = Vec::new();
    for r in &racers {
        let admin = srv.admin();
        let (path, udid) = (install.clone(), r.udid.clone());
        tasks.push(tokio::spawn(async move {
            admin.call(Method::POST, &path, Some(json!({"targets": [udid]}))).await.unwrap()
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let (assigned, available) = vpp.licences(PAGES);
    assert!(assigned <= 4 && available >= 0, "Apple: {assigned} assigned, {available} available");
    let winners = racers.iter().filter(|r| vpp.assigned(PAGES, &r.serial)).count();
    assert_eq!(winners, 2, "exactly the two licences left were assigned: {answers:?}");
    let queued: u64 = answers.iter().map(|(_, v)| v["queued"].as_u64().unwrap_or(0)).sum();
    assert_eq!(queued, 2, "only devices with a licence got the install: {answers:?}");
    for (r, (s, v)) in racers.iter_mut().zip(&answers) {
        let won = vpp.assigned(PAGES, &r.serial);
        let st = state(&srv, &r.udid, PAGES_ID).await;
        if won {
            assert_eq!(st.as_ref().map(|x| x["state"].clone()), Some(json!("queued")), "{s} {v}");
            assert_eq!(st.as_ref().map(|x| x["licence"].clone()), Some(json!(true)));
        } else {
            assert!(
                (*s == 409) || (*s == 200 && v["failed"].as_array().is_some_and(|f| !f.is_empty())),
                "a loser is told: {s} {v}"
            );
            assert!(
                st.as_ref()
                    .is_none_or(|x| !matches!(x["state"].as_str(), Some("queued" | "installing" | "installed"))),
                "a device without a licence is recorded as getting the app: {st:?}"
            );
            let h = r.session().await.unwrap();
            assert_eq!(
                handled(&h, "InstallApplication"),
                0,
                "a device without a licence was sent the install"
            );
        }
    }
    let v = srv.admin().get(&format!("/v1/apps/{PAGES_ID}")).await.unwrap();
    let l = &v["licences"];
    assert!(
        l["assigned"].as_i64().unwrap() <= l["total"].as_i64().unwrap() && l["available"].as_i64().unwrap() >= 0,
        "the catalog's counts: {l}"
    );
    let (s, sync) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!(
        (s, sync["released"].as_u64()),
        (200, Some(0)),
        "the sync finds nothing to release: {sync}"
    );
    let v = srv.admin().get(&format!("/v1/apps/{PAGES_ID}")).await.unwrap();
    assert_eq!(v["licences"], json!({"total": 4, "assigned": 4, "available": 0}), "{v}");
}

/// A device that claims another device's serial number (nothing attests a
/// serial outside ADE) must not be able to take that device's licence away:
/// neither by checking out, nor through an admin removing the app from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_claiming_another_serial_cannot_release_its_licence() {
    let vpp = vpp("Serial Org").await;
    vpp.add_app(PAGES, 3);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    assert_eq!(put_token(&srv, API_KEY, "main", vpp.token_file()).await.0, 201);
    assert_eq!(
        post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()}))
            .await
            .0,
        201
    );
    let victim = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [victim.udid]})).await;
    assert_eq!((s, v["licences_associated"].as_u64()), (200, Some(1)), "{v}");
    assert!(vpp.assigned(PAGES, &victim.serial));

    // A rogue enrolls saying it is the victim's serial, asks for the app
    // (it may be sent it: its serial "holds" a licence, but it uses none), and checks out.
    let rogue = |tag: &'static str| {
        let (srv, serial) = (&srv, victim.serial.clone());
        async move {
            let mut r = srv.device().await;
            r.serial = serial.clone();
            r.enroll().await.unwrap();
            let v = srv.admin().get(&format!("/v1/devices/{}", r.udid)).await.unwrap();
            assert_eq!(
                v["info"]["serial_number"],
                serial.as_str(),
                "{tag}: the claimed serial is taken as is: {}",
                v["info"]
            );
            r
        }
    };
    let r1 = rogue("first").await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [r1.udid]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(vpp.licences(PAGES).0, 1, "{v}");
    r1.checkout().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        vpp.assigned(PAGES, &victim.serial),
        "the rogue's check-out released the victim's licence"
    );
    let (_, sync) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert!(
        vpp.assigned(PAGES, &victim.serial),
        "the sync released the victim's licence: {sync}"
    );

    // Another rogue: the admin takes the app off it (a clean-up, a blueprint
    // leaving). Only a licence that enrollment got may be released.
    let r2 = rogue("second").await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/remove"), json!({"targets": [r2.udid]})).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        vpp.assigned(PAGES, &victim.serial),
        "removing the app from a device that merely claimed the victim's serial released the VICTIM's licence: {v}"
    );
    let st = state(&srv, &victim.udid, PAGES_ID).await.expect("the victim's state");
    assert_eq!(st["licence"], true, "{st}");
}

/// A device whose install failed still holds its licence. Removing the app
/// from the catalog must not strand that licence (associated at Apple, with
/// no catalog app left to remove it through): it is refused, or the
/// licences are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_catalog_app_does_not_strand_its_licences() {
    let vpp = vpp("Strand Org").await;
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    assert_eq!(put_token(&srv, API_KEY, "main", vpp.token_file()).await.0, 201);
    assert_eq!(
        post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()}))
            .await
            .0,
        201
    );
    let d = device(&srv, &vpp).await;
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]})).await;
    assert_eq!((s, v["licences_associated"].as_u64()), (200, Some(1)), "{v}");
    // The device fails the install (no space, say).
    let cmds = take_installs(&d).await;
    assert_eq!(cmds.len(), 1);
    let mut chain = plist::Dictionary::new();
    chain.insert("ErrorCode".into(), 12_000.into());
    chain.insert("ErrorDomain".into(), "MCInstallationErrorDomain".into());
    chain.insert("LocalizedDescription".into(), "Not enough storage.".into());
    let failed = report(
        &d,
        Some(&cmds[0].uuid),
        "Error",
        vec![("ErrorChain", plist::Value::Array(vec![plist::Value::Dictionary(chain)]))],
    );
    d.connect(&failed).await.unwrap();
    let st = state(&srv, &d.udid, PAGES_ID).await.expect("state");
    assert_eq!(
        (st["state"].as_str(), st["licence"].as_bool()),
        (Some("failed"), Some(true)),
        "{st}"
    );
    assert!(vpp.assigned(PAGES, &d.serial));

    let (s, v) = call(&srv, Method::DELETE, &format!("/v1/apps/{PAGES_ID}"), None).await;
    if s == 409 {
        return;
    }
    assert_eq!(s, 204, "{v}");
    let (_, sync) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    let released = wait_until(Duration::from_secs(10), || async { !vpp.assigned(PAGES, &d.serial) }).await;
    assert!(
        released,
        "the app left the catalog while the device's licence stayed associated (no API can release it now): sync {sync}, Apple {:?}",
        vpp.licences(PAGES)
    );
}

// ================================================================ lying devices

/// A device that reports apps it was never sent (in ManagedApplicationList
/// and InstalledApplicationList), thousands of them, or answers another
/// device's command: no state is created for apps it was not sent, no other
/// device's state moves, and the server stays quick and well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_devices_create_no_app_state() {
    let vpp = vpp("Liar Org").await;
    let srv = start(&vpp, &[]);
    for (id, name) in [("com.example.sent", "Sent"), ("com.example.unsent", "Unsent")] {
        assert_eq!(upload(&srv, mdmd::protocol::ipa::build_ipa(id, "1.0", name)).await.0, 201);
    }
    let liar = device(&srv, &vpp).await;
    let honest = device(&srv, &vpp).await;
    let (s, v) = post(
        &srv,
        "/v1/apps/com.example.sent/install",
        json!({"targets": [liar.udid, honest.udid]}),
    )
    .await;
    assert_eq!((s, v["queued"].as_u64()), (200, Some(2)), "{v}");
    let honest_cmds = take_installs(&honest).await;
    assert_eq!(honest_cmds.len(), 1);
    let liar_cmds = take_installs(&liar).await;
    assert_eq!(liar_cmds.len(), 1);

    // The liar answers the honest device's command, as an error.
    let forged = report(&liar, Some(&honest_cmds[0].uuid), "Error", vec![]);
    let _ = liar.connect(&forged).await;
    let st = state(&srv, &honest.udid, "com.example.sent").await.expect("honest state");
    assert_eq!(
        st["state"], "queued",
        "another device's answer moved the honest device's state: {st}"
    );

    // Lists full of lies: the unsent app, the honest device's key shapes, 20,000 made-up apps.
    let n = 20_000;
    let mut managed = plist::Dictionary::new();
    let status = |s: &str| {
        let mut d = plist::Dictionary::new();
        d.insert("Status".into(), s.into());
        plist::Value::Dictionary(d)
    };
    managed.insert("com.example.unsent".into(), status("Managed"));
    managed.insert("com.example.sent".into(), status("Managed"));
    managed.insert(format!("com.example.sent/{}", honest.udid), status("Failed"));
    managed.insert("../../etc".into(), status("Managed"));
    managed.insert("x".repeat(10_000), status("Managed"));
    for i in 0..n {
        managed.insert(format!("com.lie.app{i}"), status("Managed"));
    }
    let mut installed = vec![];
    let item = |id: &str, v: &str| {
        let mut d = plist::Dictionary::new();
        d.insert("Identifier".into(), id.into());
        d.insert("ShortVersion".into(), v.into());
        plist::Value::Dictionary(d)
    };
    installed.push(item("com.example.unsent", "1.0"));
    installed.push(item("com.example.sent", "9.9"));
    for i in 0..n {
        installed.push(item(&format!("com.lie.app{i}"), "1.0"));
    }
    for (rt, key, value) in [
        (
            "ManagedApplicationList",
            "ManagedApplicationList",
            plist::Value::Dictionary(managed),
        ),
        (
            "InstalledApplicationList",
            "InstalledApplicationList",
            plist::Value::Array(installed),
        ),
    ] {
        let uuid = enqueue(&srv.admin(), &[&liar.udid], json!({ "RequestType": rt })).await;
        let cmd = loop {
            let c = liar
                .connect(&report(&liar, None, "Idle", vec![]))
                .await
                .unwrap()
                .expect("the list command");
            if c.uuid == uuid {
                break c;
            }
            liar.connect(&report(&liar, Some(&c.uuid), "Acknowledged", vec![])).await.unwrap();
        };
        let t = Instant::now();
        let r = liar
            .connect(&report(&liar, Some(&cmd.uuid), "Acknowledged", vec![(key, value)]))
            .await;
        assert!(r.is_ok(), "{rt}: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(30), "{rt} with {n} lies took {:?}", t.elapsed());
        alive(&srv).await;
    }

    let mine = srv.admin().get(&format!("/v1/devices/{}/apps", liar.udid)).await.unwrap();
    let apps: Vec<&str> = mine["apps"].as_array().unwrap().iter().filter_map(|a| a["app"].as_str()).collect();
    assert_eq!(apps, ["com.example.sent"], "state records for apps never sent: {mine}");
    let unsent = srv.admin().get("/v1/apps/com.example.unsent").await.unwrap();
    assert_eq!(unsent["device_states"], json!([]), "{unsent}");
    assert_eq!(unsent["devices"], json!({"installed": 0, "pending": 0, "failed": 0}), "{unsent}");
    let st = state(&srv, &honest.udid, "com.example.sent").await.expect("honest state");
    assert_eq!(st["state"], "queued", "the liar moved the honest device's state: {st}");
    let catalog_ids: Vec<String> = catalog(&srv)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(catalog_ids.len(), 2, "{catalog_ids:?}");
}

// ================================================================ Apple misbehaving

/// Apple throttling for longer than mdmd waits, a licence event that does
/// not finish in time, and a revoked token: each a clear error; no device is
/// recorded as getting an app without a licence or sent one; a timed-out
/// association is finished by the retry the error asks for or by the sync,
/// and a stale one is cleaned up by the sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apple_throttling_and_revocation_leave_no_half_state() {
    let vpp = vpp("Throttle Org").await;
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start_logged(&vpp, &["--apps-event-timeout", "2"]);
    assert_eq!(put_token(&srv, API_KEY, "main", vpp.token_file()).await.0, 201);
    assert_eq!(
        post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()}))
            .await
            .0,
        201
    );
    let install = format!("/v1/apps/{PAGES_ID}/install");
    let mut d1 = device(&srv, &vpp).await;
    let mut d2 = device(&srv, &vpp).await;

    // 1. Throttled for an hour: refused at once, nothing half done.
    vpp.throttle_next(1000, 3600);
    let t = Instant::now();
    let (s, v) = post(&srv, &install, json!({"targets": [d1.udid]})).await;
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "waited {:?} on a 3600 s Retry-After",
        t.elapsed()
    );
    assert!(s == 502 || s == 503 || s == 429, "{s} {v}");
    let e = v["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(e.contains("apple") || e.contains("throttl") || e.contains("retry"), "says why: {v}");
    vpp.throttle_next(0, 0);
    assert_eq!(vpp.licences(PAGES), (0, 2));
    assert_eq!(state(&srv, &d1.udid, PAGES_ID).await, None, "a state without a licence");
    assert_eq!(handled(&d1.session().await.unwrap(), "InstallApplication"), 0);

    // 2. Briefly throttled: retried, done.
    vpp.throttle_next(2, 1);
    let (s, v) = post(&srv, &install, json!({"targets": [d1.udid]})).await;
    assert_eq!((s, v["queued"].as_u64()), (200, Some(1)), "{v}");
    assert!(vpp.assigned(PAGES, &d1.serial));

    // 3. The last licence's event does not finish within --apps-event-timeout:
    //    a clear error, nothing sent to the device. (The stand-in finishes an
    //    event after this many status polls; mdmd polls ~5 times in 2 s.)
    vpp.set_event_delay(30);
    let (s, v) = post(&srv, &install, json!({"targets": [d2.udid]})).await;
    assert!(s == 503 || s == 502 || s == 504, "{s} {v}");
    assert_eq!(state(&srv, &d2.udid, PAGES_ID).await, None, "recorded without a confirmed licence");
    assert_eq!(
        handled(&d2.session().await.unwrap(), "InstallApplication"),
        0,
        "sent without a licence"
    );
    // Apple finishes the event later (as Apple does, without being asked).
    let log = srv.log_text();
    let event = log
        .lines()
        .filter(|l| l.contains("vpp: event") && l.contains("/assets/associate"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["fields"]["event"].as_str().or(v["event"].as_str()).map(str::to_owned))
        .next_back()
        .expect("the association's event id in the debug log");
    let apple = reqwest::Client::new();
    let done = wait_until(Duration::from_secs(10), || {
        let (apple, url, tok, event) = (apple.clone(), vpp.url(), vpp.token_file(), event.clone());
        async move {
            let v: Value = apple
                .get(format!("{url}/status?eventId={event}"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["eventStatus"] == "COMPLETE"
        }
    })
    .await;
    assert!(done && vpp.assigned(PAGES, &d2.serial), "Apple finished the association");
    vpp.set_event_delay(1);
    // The retry the error asked for: the device holds its licence, so the app goes out.
    let (s, v) = post(&srv, &install, json!({"targets": [d2.udid]})).await;
    assert_eq!(
        (s, v["queued"].as_u64()),
        (200, Some(1)),
        "retrying a timed-out install of the last licence (which the device now holds) is refused: {v}"
    );
    assert_eq!(vpp.licences(PAGES), (2, 0));
}

/// A licence record left `associating` by an install that never heard back
/// from Apple is cleaned up by the sync once it is stale: nothing stays
/// "associating" forever, and the sync ends with every record matching Apple.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_association_is_cleaned_up_by_the_sync() {
    if on_postgres() {
        return;
    }
    use mdmd::store::RecordStore as _;
    let vpp = vpp("Stale Org").await;
    vpp.add_app(PAGES, 1);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let mut srv = start(&vpp, &["--apps-event-timeout", "1"]);
    assert_eq!(put_token(&srv, API_KEY, "main", vpp.token_file()).await.0, 201);
    assert_eq!(
        post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()}))
            .await
            .0,
        201
    );
    let d = device(&srv, &vpp).await;
    vpp.set_event_delay(1_000_000);
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]})).await;
    assert!(s >= 500, "{s} {v}");
    vpp.set_event_delay(1);

    // Ten minutes pass (the record is made older on disk, the server stopped).
    srv.kill9();
    let path = srv.data_dir().join("mdmd.redb");
    {
        let store = mdmd::store::redb::RedbStore::open(&path).unwrap();
        let recs = store.records("app_licences").await.unwrap();
        assert_eq!(recs.len(), 1, "the interrupted association is recorded");
        let (k, r) = &recs[0];
        assert_eq!(r.value["state"], "associating", "{}", r.value);
        let mut v = r.value.clone();
        v["at"] = json!(v["at"].as_i64().unwrap() - 600);
        store.put_record("app_licences", k, v, mdmd::clock::now(), None).await.unwrap();
    }
    srv.restart();
    let (s, v) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!((s, v["errors"].clone()), (200, json!([])), "{v}");
    srv.kill9();
    let store = mdmd::store::redb::RedbStore::open(&path).unwrap();
    let left: Vec<Value> = store
        .records("app_licences")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.value)
        .collect();
    assert!(
        left.iter().all(|l| l["state"] == "associated") && left.len() == usize::from(vpp.assigned(PAGES, &d.serial)),
        "after the sync, the records match Apple: {left:?} (Apple: {})",
        vpp.assigned(PAGES, &d.serial)
    );
}

/// A revoked content token: installs fail with a clear error naming the
/// token, health says so, no half state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_fails_installs_cleanly() {
    let vpp = vpp("Revoked Org").await;
    vpp.add_app(PAGES, 2);
    vpp.set_app_meta(PAGES, "Pages", PAGES_ID, "13.1");
    let srv = start(&vpp, &[]);
    assert_eq!(put_token(&srv, API_KEY, "main", vpp.token_file()).await.0, 201);
    assert_eq!(
        post(&srv, "/v1/apps", json!({"itunes_store_id": PAGES.parse::<u64>().unwrap()}))
            .await
            .0,
        201
    );
    let mut d = device(&srv, &vpp).await;
    vpp.revoke_token();
    let (s, v) = post(&srv, &format!("/v1/apps/{PAGES_ID}/install"), json!({"targets": [d.udid]})).await;
    assert!((400..600).contains(&s) && s != 500, "{s} {v}");
    let e = v["error"].as_str().unwrap_or_default();
    assert!(e.contains("revoked") || e.contains("token"), "says why: {v}");
    assert_eq!(state(&srv, &d.udid, PAGES_ID).await, None);
    assert_eq!(handled(&d.session().await.unwrap(), "InstallApplication"), 0);
    assert_eq!(vpp.licences(PAGES), (0, 2));
    let (s, sync) = post(&srv, "/v1/apps-and-books/sync", json!({})).await;
    assert_eq!(s, 200);
    assert!(
        !sync["errors"].as_array().unwrap().is_empty(),
        "the sync reports the revoked token: {sync}"
    );
    let health = srv.admin().get("/v1/health").await.unwrap().to_string();
    assert!(
        health.contains("revoked") || health.contains("main"),
        "health names the token: {health}"
    );
    alive(&srv).await;
}
