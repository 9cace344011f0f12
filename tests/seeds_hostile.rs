//! Attacks on the recent seeds, each test one attack that must fail safely
//! (a clear 4xx or error, nothing changed, no secret leaked, the server
//! still up): shared access tokens and device JWTs, `InstallApplication`
//! answers that name another app, vendor AppConfig files, Cisco ISE
//! (paging, XML bodies, the action batch), derived-credential revocation
//! requests, and device searches and unenrollment by lesser roles.
//!
//! On redb, and on PostgreSQL with `MDMD_TEST_STORE=postgres` (tests/common).

mod common;

use base64::Engine as _;
use common::{enqueue, Server, API_KEY};
use reqwest::Method;
use serde_json::{json, Value};

const APP: &str = "com.pingidentity.pingid";
const VICTIM: &str = "com.example.victim";

/// A request as the account with this secret (or the admin key): (status, JSON or text).
async fn call(srv: &Server, secret: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    mdmd::sim::load::Admin::new(&srv.base, secret, srv.client())
        .call(method, path, body)
        .await
        .expect("request")
}

/// An XML request as a `nac` account (basic auth, as ISE sends): (status, body).
async fn ise(srv: &Server, user: &str, secret: &str, method: Method, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
    let mut r = srv
        .client()
        .request(method, format!("{}{path}", srv.base))
        .basic_auth(user, Some(secret));
    if let Some(b) = body {
        r = r.header("content-type", "application/xml").body(b);
    }
    let r = r.send().await.expect("ISE request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The server still answers, and a new device still enrolls.
async fn still_up(srv: &Server) {
    let (s, v) = call(srv, API_KEY, Method::GET, "/v1/info", None).await;
    assert_eq!(s, 200, "{v}");
    let d = srv.enrolled().await;
    assert!(!d.udid.is_empty());
}

/// The request types a device gets in one session.
async fn session_types(d: &mut mdmd::sim::SimDevice) -> Vec<String> {
    d.session().await.expect("session").into_iter().map(|h| h.request_type).collect()
}

/// Poll (bounded) until a session brings the device something.
async fn got_commands(d: &mut mdmd::sim::SimDevice) -> bool {
    for _ in 0..50 {
        if !session_types(d).await.is_empty() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

fn config_value(d: &mdmd::sim::SimDevice, app: &str, key: &str) -> Option<String> {
    d.apps.get(app)?.config.as_ref()?.get(key)?.as_string().map(str::to_owned)
}

fn settings(app: &str, conf: Value) -> Value {
    json!({"RequestType": "Settings", "Settings": [{"Item": "ApplicationConfiguration", "Identifier": app, "Configuration": conf}]})
}

async fn new_token(srv: &Server, body: Value) -> Value {
    let (s, v) = call(srv, API_KEY, Method::POST, "/v1/access-tokens", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

// ---------------------------------------------------------------------------
// Shared access tokens: values are for the admin only.

/// Operator, read-only, nac and issuer accounts ask for the tokens (API,
/// console, verify, errors): none of them ever sees a value, and the logs
/// never hold one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lesser_roles_never_read_token_values() {
    let srv = Server::start_logged(&["--enroll-flow", "single"]);
    let now_tok = new_token(&srv, json!({})).await;
    let later = new_token(&srv, json!({"effective_at": "2031-01-01T00:00:00Z"})).await;
    let typed = new_token(&srv, json!({"value": "typed-by-admin-0123456789abcdef"})).await;
    let values: Vec<String> = [&now_tok, &later, &typed]
        .iter()
        .map(|t| t["value"].as_str().expect("admin sees the value").to_owned())
        .collect();
    let leaks = |text: &str| values.iter().any(|v| text.contains(v.as_str()));

    let op = srv.account("ops", "operator");
    let ro = srv.account("viewer", "read-only");
    let nac = srv.account("ise", "nac");
    let iss = srv.account("provider", "issuer");

    // The operator reads the list and the schedule, without values.
    let (s, v) = call(&srv, &op, Method::GET, "/v1/access-tokens", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(!leaks(&v.to_string()), "operator sees a value: {v}");
    assert_eq!(v["schedule"]["next"]["id"], later["id"], "{v}");
    assert_eq!(v["schedule"]["carried"], later["id"], "the future token is carried at once: {v}");
    for t in v["tokens"].as_array().unwrap() {
        assert!(t["value"].is_null(), "{t}");
    }
    // The others may not even list them.
    for secret in [&ro, &nac, &iss] {
        let (s, v) = call(&srv, secret, Method::GET, "/v1/access-tokens", None).await;
        assert_eq!(s, 403, "{v}");
        assert!(!leaks(&v.to_string()), "{v}");
    }
    // Nor change them: adding an active value would tell whether it exists.
    for secret in [&op, &ro, &nac, &iss] {
        let (s, v) = call(&srv, secret, Method::POST, "/v1/access-tokens", Some(json!({"value": values[2]}))).await;
        assert_eq!(s, 403, "{v}");
        let path = format!("/v1/access-tokens/{}", typed["id"].as_str().unwrap());
        let (s, _) = call(&srv, secret, Method::PUT, &path, Some(json!({"value": "x-replaced-0123456789"}))).await;
        assert_eq!(s, 403);
        let (s, _) = call(&srv, secret, Method::DELETE, &path, None).await;
        assert_eq!(s, 403);
    }
    // The admin adding a value already active: refused without echoing it.
    let (s, v) = call(&srv, API_KEY, Method::POST, "/v1/access-tokens", Some(json!({"value": values[2]}))).await;
    assert_eq!(s, 400, "{v}");
    assert!(!leaks(&v.to_string()), "{v}");

    // Verify (nac and read-only may ask): the verdict names ids, never values.
    for secret in [&nac, &ro] {
        for token in [values[0].as_str(), values[1].as_str(), "unknown-token-0123456789"] {
            let (s, v) = call(&srv, secret, Method::POST, "/v1/access/verify", Some(json!({"token": token}))).await;
            assert_eq!(s, 200, "{v}");
            let other: Vec<&String> = values.iter().filter(|x| x.as_str() != token).collect();
            assert!(!other.iter().any(|x| v.to_string().contains(x.as_str())), "{v}");
        }
    }
    let (s, _) = call(&srv, &iss, Method::POST, "/v1/access/verify", Some(json!({"token": values[0]}))).await;
    assert_eq!(s, 403, "an issuer account has no business verifying tokens");

    // The console page, as operator and as read-only.
    for (name, secret) in [("ops", &op), ("viewer", &ro)] {
        let (http, session, _) = common::console_login(&srv, name, secret).await;
        let html = common::console_page(&http, &srv, &session, "/ui/access-tokens").await;
        assert!(!leaks(&html), "{name}: a token value in the console");
    }
    assert!(!leaks(&srv.log_text()), "a token value in the logs");
}

/// Verify tells revoked, unknown and not-yet-effective apart, with the id
/// of a known token only, and accepts neither; a revoked token cannot come
/// back by being added again while another is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_revoked_unknown_and_future_tokens() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    let a = new_token(&srv, json!({})).await;
    let b = new_token(&srv, json!({})).await;
    let future = new_token(&srv, json!({"effective_at": "2031-01-01T00:00:00Z"})).await;
    let (s, v) = call(
        &srv,
        API_KEY,
        Method::DELETE,
        &format!("/v1/access-tokens/{}", a["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let verify = |token: String| {
        let srv = &srv;
        async move {
            let (s, v) = call(srv, API_KEY, Method::POST, "/v1/access/verify", Some(json!({"token": token}))).await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let v = verify(a["value"].as_str().unwrap().to_owned()).await;
    assert_eq!((v["valid"].as_bool(), v["reason"].as_str()), (Some(false), Some("revoked")), "{v}");
    let v = verify(future["value"].as_str().unwrap().to_owned()).await;
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["reason"].as_str().unwrap_or_default().starts_with("not yet effective"), "{v}");
    // Near misses of a valid value are unknown, not a prefix match.
    let good = b["value"].as_str().unwrap().to_owned();
    for near in [
        good[..good.len() - 1].to_owned(),
        format!("{good} "),
        format!("{good}\n"),
        good.to_uppercase(),
        String::new(),
        "x".repeat(100_000),
    ] {
        let v = verify(near.clone()).await;
        assert_eq!(v["valid"], false, "{near:?}: {v}");
        assert!(v["token_id"].is_null(), "{v}");
    }
    assert_eq!(verify(good).await["valid"], true);
    // A verify for a device that does not exist is not valid.
    let (s, v) = call(
        &srv,
        API_KEY,
        Method::POST,
        "/v1/access/verify",
        Some(json!({"token": b["value"], "device": "NO-SUCH-DEVICE"})),
    )
    .await;
    assert_eq!((s, v["valid"].as_bool()), (200, Some(false)), "{v}");
}

fn b64u(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn claims_of(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

/// `$DEVICE_ACCESS_TOKEN` forgeries: `alg: none`, HS256 keyed with the
/// public key, a payload changed under the real signature, another key under
/// the real `kid`, and tokens signed with the real key but expired, not yet
/// valid, for another audience or issuer. Only the genuine token and a
/// correctly made one are valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_device_tokens_are_refused() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    new_token(&srv, json!({})).await;
    let mut d = srv.enrolled().await;
    let other = srv.enrolled().await;
    d.apps.insert(APP.into(), mdmd::sim::SimApp::managed(APP, "1.0"));
    enqueue(&srv.admin(), &[&d.udid], settings(APP, json!({"DT": "$DEVICE_ACCESS_TOKEN"}))).await;
    assert_eq!(session_types(&mut d).await, vec!["Settings"]);
    let jwt = config_value(&d, APP, "DT").expect("a device token");
    let claims = claims_of(&jwt);
    assert_eq!(claims["sub"], d.udid.as_str(), "{claims}");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();

    let verify = |token: String, device: Option<String>| {
        let srv = &srv;
        async move {
            let (s, v) = call(
                srv,
                API_KEY,
                Method::POST,
                "/v1/access/verify",
                Some(json!({"token": token, "device": device})),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    assert_eq!(verify(jwt.clone(), None).await["valid"], true);
    // The genuine token presented for another device.
    let v = verify(jwt.clone(), Some(other.udid.clone())).await;
    assert_eq!(v["valid"], false, "{v}");

    let mut forged_claims = claims.clone();
    forged_claims["sub"] = json!(other.udid);
    let payload = b64u(forged_claims.to_string().as_bytes());
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut forgeries = vec![
        // alg none, no signature.
        format!("{}.{payload}.", b64u(br#"{"alg":"none","typ":"JWT"}"#)),
        format!("{}.{payload}.", b64u(format!(r#"{{"alg":"none","kid":"{kid}"}}"#).as_bytes())),
        // The real header and signature over a changed payload.
        format!("{}.{payload}.{}", parts[0], parts[2]),
    ];
    // HS256 keyed with the public key (JWKS coordinates, the public PEM).
    let key = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(srv.certs_dir().join("access-jwt-key.pem")).unwrap()).unwrap();
    let public_pem = key.public_key_to_pem().unwrap();
    let (_, jwks) = call(&srv, API_KEY, Method::GET, "/.well-known/jwks.json", None).await;
    let x = jwks["keys"][0]["x"].as_str().unwrap_or_default().to_owned();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.clone());
    for secret in [public_pem.clone(), x.into_bytes(), key.public_key_to_der().unwrap()] {
        forgeries.push(jsonwebtoken::encode(&h, &forged_claims, &jsonwebtoken::EncodingKey::from_secret(&secret)).unwrap());
    }
    // Another P-256 key under the real kid.
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let mine = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut es = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    es.kid = Some(kid.clone());
    forgeries.push(
        jsonwebtoken::encode(
            &es,
            &forged_claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(&mine.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        )
        .unwrap(),
    );
    // The real key (read from the certs dir), with bad claims.
    let real = jsonwebtoken::EncodingKey::from_ec_pem(&key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let now = claims["iat"].as_i64().unwrap();
    let sign = |change: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        change(&mut c);
        jsonwebtoken::encode(&es, &c, &real).unwrap()
    };
    let control = sign(&|_| {});
    assert_eq!(
        verify(control, None).await["valid"],
        true,
        "a token made right with the real key verifies"
    );
    forgeries.push(sign(&|c| c["exp"] = json!(now - 3600)));
    forgeries.push(sign(&|c| c["nbf"] = json!(now + 3600)));
    forgeries.push(sign(&|c| c["aud"] = json!("someone-else")));
    forgeries.push(sign(&|c| c["iss"] = json!("https://evil.example")));
    forgeries.push(sign(&|c| {
        c.as_object_mut().unwrap().remove("exp");
    }));
    forgeries.push(sign(&|c| c["sub"] = json!("NO-SUCH-DEVICE")));
    for (i, f) in forgeries.iter().enumerate() {
        let v = verify(f.clone(), None).await;
        assert_eq!(v["valid"], false, "forgery {i} accepted: {f} → {v}");
        assert_ne!(v["managed"], true, "forgery {i}: {v}");
    }
}

// ---------------------------------------------------------------------------
// InstallApplication answers: a device names the app.

/// Answer the next command (an InstallApplication) by hand, acknowledging
/// it with this `Identifier`; returns its command UUID.
async fn answer_install(d: &mdmd::sim::SimDevice, uuid: Option<&str>, identifier: &str) -> String {
    let cmd = d.connect(&d.idle_report()).await.unwrap().expect("a command");
    assert_eq!(cmd.request_type, "InstallApplication");
    let mut r = plist::Dictionary::new();
    r.insert("UDID".into(), d.udid.clone().into());
    r.insert("Status".into(), "Acknowledged".into());
    r.insert("CommandUUID".into(), uuid.unwrap_or(&cmd.uuid).to_owned().into());
    r.insert("Identifier".into(), identifier.into());
    r.insert("State".into(), "Queued".into());
    d.connect(&r).await.unwrap();
    cmd.uuid
}

fn install_with_config(store_id: u64, who: &str) -> Value {
    json!({"RequestType": "InstallApplication", "iTunesStoreID": store_id,
           "Configuration": {"TOKEN": "$ACCESS_TOKEN", "who": who}})
}

/// A device whose InstallApplication (by store id, configuration without
/// `Identifier`) it answers naming *another* app, one whose configuration
/// mdmd remembers for other devices: the lie must not replace what those
/// devices get when tokens change, nor hand the other app's configuration
/// to the liar. (A device's word names the app for that device only:
/// `service::access::app_configs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_install_answer_cannot_rebind_another_apps_configuration() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    new_token(&srv, json!({})).await;
    let admin = srv.admin();
    let mut victim = srv.enrolled().await;
    victim.apps.insert(VICTIM.into(), mdmd::sim::SimApp::managed(VICTIM, "1.0"));
    enqueue(
        &admin,
        &[&victim.udid],
        settings(VICTIM, json!({"TOKEN": "$ACCESS_TOKEN", "who": "victim"})),
    )
    .await;
    assert_eq!(session_types(&mut victim).await, vec!["Settings"]);
    assert_eq!(config_value(&victim, VICTIM, "who").as_deref(), Some("victim"));

    let mut liar = srv.enrolled().await;
    liar.apps.insert(VICTIM.into(), mdmd::sim::SimApp::managed(VICTIM, "1.0"));
    enqueue(&admin, &[&liar.udid], install_with_config(1_111_111, "lie")).await;
    answer_install(&liar, None, VICTIM).await;

    // A token change re-sends every remembered configuration.
    let t2 = new_token(&srv, json!({})).await;
    let t2v = t2["value"].as_str().unwrap().to_owned();
    let got = got_commands(&mut victim).await;
    assert!(got, "the victim's configuration is re-sent");
    assert_eq!(config_value(&victim, VICTIM, "TOKEN").as_deref(), Some(t2v.as_str()));
    assert_eq!(
        config_value(&victim, VICTIM, "who").as_deref(),
        Some("victim"),
        "another device's answer replaced this app's configuration"
    );
    liar.apps.get_mut(VICTIM).unwrap().config = None;
    liar.session().await.unwrap();
    assert_ne!(
        config_value(&liar, VICTIM, "who").as_deref(),
        Some("victim"),
        "the liar got another app's configuration"
    );
}

/// A device acknowledging with *another device's* command UUID (and an
/// app name) binds nothing: the other device's pending configuration stays
/// its own and is remembered when that device answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_devices_command_uuid_binds_nothing() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    new_token(&srv, json!({})).await;
    let admin = srv.admin();
    let mut owner = srv.enrolled().await;
    let mut thief = srv.enrolled().await;
    owner.apps.insert(APP.into(), mdmd::sim::SimApp::managed(APP, "1.0"));
    thief.apps.insert(VICTIM.into(), mdmd::sim::SimApp::managed(VICTIM, "1.0"));
    enqueue(&admin, &[&owner.udid], install_with_config(2_222_222, "owner")).await;
    enqueue(
        &admin,
        &[&thief.udid],
        json!({"RequestType": "InstallApplication", "iTunesStoreID": 3_333_333}),
    )
    .await;
    // The owner fetches its command but has not answered yet; the thief answers with its UUID.
    let cmd = owner.connect(&owner.idle_report()).await.unwrap().expect("the owner's command");
    answer_install(&thief, Some(&cmd.uuid), VICTIM).await;
    // Its own answer after all.
    let mut r = plist::Dictionary::new();
    r.insert("UDID".into(), owner.udid.clone().into());
    r.insert("Status".into(), "Acknowledged".into());
    r.insert("CommandUUID".into(), cmd.uuid.clone().into());
    r.insert("Identifier".into(), APP.into());
    owner.connect(&r).await.unwrap();

    let t2 = new_token(&srv, json!({})).await;
    let t2v = t2["value"].as_str().unwrap().to_owned();
    let got = got_commands(&mut owner).await;
    assert!(got, "the owner's configuration was remembered under its app");
    assert_eq!(config_value(&owner, APP, "TOKEN").as_deref(), Some(t2v.as_str()));
    assert_eq!(config_value(&owner, APP, "who").as_deref(), Some("owner"));
    // The thief got no configuration for either app (its own install, never
    // answered, comes again).
    assert!(!session_types(&mut thief).await.iter().any(|t| t == "Settings"));
    assert!(config_value(&thief, VICTIM, "who").is_none());
}

// ---------------------------------------------------------------------------
// Vendor AppConfig files.

/// Hostile texts are errors, never a panic or a silent guess: control and
/// non-XML characters (JSON escapes included), repeated JSON keys at any
/// depth, stray BOMs, lone CRs, keys with odd characters, huge and deep input.
#[test]
fn hostile_appconfig_texts_are_clear_errors() {
    use mdmd::profiles::appconfig::{parse, MAX_TEXT};
    let bad = [
        "{\"a\": \"x\\u0001y\"}",
        "{\"a\\u0000\": \"x\"}",
        "{\"a\": \"\\uFFFE\"}",
        "{\"a\": [\"ok\", {\"b\": \"\\u001b[31m\"}]}",
        "{\"a\": 1, \"a\": 2}",
        "{\"a\": {\"b\": 1, \"b\": 2}}",
        "{\"a\": [{\"b\": 1, \"b\": 1}]}",
        "a=x\u{0}y",
        "a=\u{fffe}",
        "a=1\rb=2",
        "\u{feff}\u{feff}a=1",
        "\u{feff}",
        "a b=1",
        "k\u{202e}=1",
        "=1",
        "a=1\na=1",
    ];
    for text in bad {
        let r = std::panic::catch_unwind(|| parse(text));
        let r = r.unwrap_or_else(|_| panic!("{text:?}: panic"));
        assert!(r.is_err(), "{text:?} taken: {r:?}");
        assert!(!r.unwrap_err().to_string().is_empty());
    }
    // Taken: `=` in a value, a tab, a newline inside a JSON string.
    let ok = parse("a=b=c\nt=x\ty\n").unwrap();
    assert_eq!(ok.configuration["a"], "b=c");
    assert_eq!(
        parse("{\"a\": \"line 1\\nline 2\\ttab\"}").unwrap().configuration["a"],
        "line 1\nline 2\ttab"
    );
    // Huge and deep: errors, not a stack overflow.
    for text in [
        "{\"a\":".repeat(100_000),
        "[".repeat(100_000),
        format!("a={}", "x".repeat(MAX_TEXT)),
        "{".repeat(MAX_TEXT - 1),
    ] {
        assert!(parse(&text).is_err(), "{} bytes taken", text.len());
    }
}

/// `mdmd cmd install-app --config FILE` with a hostile file: a clear error
/// naming the file, and nothing reaches the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_config_files_queue_nothing() {
    let srv = Server::start();
    let mut d = srv.enrolled().await;
    let dir = tempfile::tempdir().unwrap();
    let deep = "{\"a\":".repeat(2000);
    let files: [(&str, &[u8]); 4] = [
        ("latin1", b"org=Caf\xe9\n"),
        ("control", b"{\"org\": \"a\\u0007b\"}"),
        ("twice", b"{\"org\": \"a\", \"org\": \"b\"}"),
        ("deep", deep.as_bytes()),
    ];
    for (name, bytes) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let (ok, out, err) = srv.cli(&[
            "cmd",
            "install-app",
            &d.udid,
            "--itunes-id",
            "1234",
            "--config",
            p.to_str().unwrap(),
        ]);
        assert!(!ok, "{name}: taken: {out}");
        assert!(err.contains(name), "{name}: the error names the file: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(session_types(&mut d).await.is_empty(), "nothing queued");
}

// ---------------------------------------------------------------------------
// Cisco ISE.

const V2: &str = "/ciscoise/mdm/api/v2";

fn action_body(ids: &[&str]) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ise_api>");
    for id in ids {
        s.push_str(&format!("<identifier><udid>{id}</udid></identifier>"));
    }
    s.push_str("</ise_api>");
    s.into_bytes()
}

/// Paging that is not a page number (negative, fractional, huge, overflow,
/// hex, spaces, injection) is a 400; a page past the end is an empty page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ise_paging_values_are_refused_or_empty() {
    let srv = Server::start();
    let nac = srv.account("ise", "nac");
    let d = srv.enrolled().await;
    for p in [
        "-1",
        "1.5",
        "0x10",
        "abc",
        "99999999999999999999999",
        "18446744073709551616",
        "1e9",
        "1%20OR%201=1",
        "%00",
    ] {
        let (s, body) = ise(&srv, "ise", &nac, Method::GET, &format!("{V2}/devices/?paging={p}"), None).await;
        assert_eq!(s, 400, "paging={p}: {body}");
        assert!(body.len() < 2000, "{body}");
    }
    // The largest accepted page: empty, and says there is no more.
    let (s, body) = ise(&srv, "ise", &nac, Method::GET, &format!("{V2}/devices/?paging=999999999999"), None).await;
    assert_eq!(s, 200, "{body}");
    assert!(!body.contains(&d.udid), "{body}");
    // Query criteria with injection attempts find nothing.
    for (c, v) in [
        ("udid", "' OR '1'='1"),
        ("udid", "%25"),
        ("serialnumber", "*"),
        ("macaddress", "..%2F..%2F"),
        ("imei", "0 OR 1=1"),
        ("udid", ""),
        ("username", ""),
        ("serialnumber", "%20"),
    ] {
        let (s, body) = ise(
            &srv,
            "ise",
            &nac,
            Method::GET,
            &format!("{V2}/devices/?querycriteria={c}&value={v}&paging=0"),
            None,
        )
        .await;
        assert!(s == 200 || s == 400, "{c}={v}: {s} {body}");
        assert!(!body.contains(&d.udid), "{c}={v} found a device: {body}");
    }
    still_up(&srv).await;
}

/// XML bodies an attacker would send: a DTD (billion laughs, an external
/// entity), 100,000-deep nesting, a 3 MiB text node, not UTF-8: each a 400,
/// and the server still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ise_hostile_xml_bodies_are_400() {
    let srv = Server::start();
    let nac = srv.account("ise", "nac");
    let d = srv.enrolled().await;
    let laughs = {
        let mut s = String::from("<?xml version=\"1.0\"?><!DOCTYPE ise_api [<!ENTITY l0 \"lol\">");
        for i in 1..10 {
            let prev = format!("&l{};", i - 1);
            s.push_str(&format!("<!ENTITY l{i} \"{}\">", prev.repeat(10)));
        }
        s.push_str(&format!(
            "]><ise_api><deviceList><device><udid>&l9;{}</udid></device></deviceList></ise_api>",
            d.udid
        ));
        s
    };
    let xxe = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><ise_api><deviceList><device><udid>&e;{}</udid></device></deviceList></ise_api>",
        d.udid
    );
    let deep = format!("<ise_api>{}{}</ise_api>", "<a>".repeat(100_000), "</a>".repeat(100_000));
    let huge = format!(
        "<ise_api><deviceList><device><udid>{}</udid></device></deviceList></ise_api>",
        "A".repeat(3 << 20)
    );
    let mut latin1 = b"<ise_api><deviceList><device><udid>caf\xe9</udid></device></deviceList></ise_api>".to_vec();
    latin1.extend_from_slice(d.udid.as_bytes());
    for (name, body) in [
        ("billion laughs", laughs.into_bytes()),
        ("external entity", xxe.into_bytes()),
        ("deep", deep.into_bytes()),
        ("latin1", latin1),
    ] {
        for path in [format!("{V2}/batchdevices/"), format!("{V2}/action/?actionType=pin_lock")] {
            let (s, resp) = ise(&srv, "ise", &nac, Method::POST, &path, Some(body.clone())).await;
            assert_eq!(s, 400, "{name} to {path}: {}", &resp[..resp.len().min(300)]);
            assert!(!resp.contains("root:"), "{resp}");
        }
    }
    // A huge text node: refused (400, or 413 over the body limit), never found.
    let (s, resp) = ise(
        &srv,
        "ise",
        &nac,
        Method::POST,
        &format!("{V2}/batchdevices/"),
        Some(huge.into_bytes()),
    )
    .await;
    assert!(s == 200 || s == 400 || s == 413, "{s}");
    assert!(!resp.contains(&d.udid));
    still_up(&srv).await;
}

/// One action request naming the same device thousands of times (or
/// thousands of devices): bounded. Past the limit nothing is queued; under
/// it a device named twice gets one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ise_action_batches_are_bounded_and_deduplicated() {
    let srv = Server::start();
    let nac = srv.account("ise", "nac");
    let mut d = srv.enrolled().await;
    let many: Vec<&str> = std::iter::repeat_n(d.udid.as_str(), 5000).collect();
    let started = std::time::Instant::now();
    let (s, body) = ise(
        &srv,
        "ise",
        &nac,
        Method::POST,
        &format!("{V2}/action/?actionType=pin_lock"),
        Some(action_body(&many)),
    )
    .await;
    assert_eq!(s, 400, "{}", &body[..body.len().min(300)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(session_types(&mut d).await.is_empty(), "nothing queued by a refused batch");

    let (s, body) = ise(
        &srv,
        "ise",
        &nac,
        Method::POST,
        &format!("{V2}/action/?actionType=pin_lock"),
        Some(action_body(&[&d.udid, &d.udid, &d.udid, "NO-SUCH-DEVICE"])),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("device not found"), "{body}");
    assert_eq!(session_types(&mut d).await, vec!["DeviceLock"], "one lock, not three");
}

/// A `nac` account does the three ISE actions and nothing else: no other
/// action name, no admin API that changes devices, no tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nac_accounts_can_do_only_the_three_actions() {
    let srv = Server::start();
    let nac = srv.account("ise", "nac");
    let mut d = srv.enrolled().await;
    for action in ["erase", "unenroll", "FULL_WIPE%00", "remove_profile", "corporate_wipe;pin_lock", ""] {
        let (s, body) = ise(
            &srv,
            "ise",
            &nac,
            Method::POST,
            &format!("{V2}/action/?actionType={action}"),
            Some(action_body(&[&d.udid])),
        )
        .await;
        assert_eq!(s, 400, "{action}: {body}");
    }
    for (m, path, body) in [
        (
            Method::POST,
            "/v1/commands".to_owned(),
            Some(json!({"targets": [d.udid], "command": {"RequestType": "EraseDevice"}})),
        ),
        (Method::POST, format!("/v1/devices/{}/unenroll", d.udid), None),
        (Method::DELETE, format!("/v1/devices/{}", d.udid), None),
        (Method::GET, "/v1/access-tokens".to_owned(), None),
        (
            Method::POST,
            "/v1/derived-credentials/revocations".to_owned(),
            Some(json!({"id": "x"})),
        ),
    ] {
        let (s, v) = call(&srv, &nac, m.clone(), &path, body).await;
        assert_eq!(s, 403, "nac {m} {path}: {v}");
    }
    // What it may: read devices.
    let (s, _) = call(&srv, &nac, Method::GET, &format!("/v1/devices/{}", d.udid), None).await;
    assert_eq!(s, 200);
    assert!(session_types(&mut d).await.is_empty(), "nothing queued");
}

// ---------------------------------------------------------------------------
// Derived-credential revocation requests.

/// Malformed revocations by an `issuer` account: a 400 or 404 each, the
/// reason bounded, nothing revoked; an issuer may not delete or read
/// anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_revocation_requests_are_refused() {
    let srv = Server::start();
    let iss = srv.account("provider", "issuer");
    for body in [
        json!({}),
        json!({"id": "a", "serial": "01"}),
        json!({"issuer": "CN=x"}),
        json!({"serial": ""}),
        json!({"serial": "zz"}),
        json!({"serial": "1".repeat(10_000)}),
        json!({"serial": "01", "reason": "x".repeat(100_000)}),
        json!({"serial": "01", "reason": "bad\u{0}reason"}),
        json!({"id": "x", "unknown": 1}),
        json!({"id": 5}),
        json!([1, 2]),
    ] {
        let (s, v) = call(&srv, &iss, Method::POST, "/v1/derived-credentials/revocations", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v.to_string().len() < 2000, "the error is bounded: {v}");
    }
    for body in [
        json!({"id": "../../etc/passwd"}),
        json!({"serial": "00:01"}),
        json!({"serial": "01", "issuer": "CN=' OR 1=1"}),
    ] {
        let (s, v) = call(&srv, &iss, Method::POST, "/v1/derived-credentials/revocations", Some(body.clone())).await;
        assert_eq!(s, 404, "{body}: {v}");
    }
    for (m, path) in [
        (Method::DELETE, "/v1/derived-credentials/x"),
        (Method::GET, "/v1/devices"),
        (Method::GET, "/v1/derived-credentials/revoked"),
    ] {
        let (s, v) = call(&srv, &iss, m.clone(), path, None).await;
        assert!(s == 403, "issuer {m} {path}: {s} {v}");
    }
    still_up(&srv).await;
}

// ---------------------------------------------------------------------------
// Device searches and unenrollment.

/// Searches with injection, wildcards and huge values find nothing and
/// fail cleanly; lesser roles cannot unenroll; unenrolling an unknown
/// device is a 404, and the device stays enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_searches_and_unenroll_resist_abuse() {
    let srv = Server::start();
    let mut d = srv.enrolled().await;
    let (s, v) = call(
        &srv,
        API_KEY,
        Method::PUT,
        &format!("/v1/devices/{}/attributes", d.udid),
        Some(json!({"USERNAME": "alice"})),
    )
    .await;
    assert!(s < 300, "{v}");
    let (s, v) = call(&srv, API_KEY, Method::GET, "/v1/devices?user=alice", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["devices"].as_array().map(Vec::len),
        Some(1),
        "control: the search finds alice's device: {v}"
    );
    for q in [
        "user=%27%20OR%20%271%27%3D%271",
        "user=%25",
        "user=_lice",
        "user=*",
        "user=ALICE%00",
        "user=alice&model=%25",
        "user=alice&os=%25",
        "user=alice&os=.",
        "user=alice&model=x%27%3B%20DROP%20TABLE%20enrollments%3B--",
    ] {
        let (s, v) = call(&srv, API_KEY, Method::GET, &format!("/v1/devices?{q}"), None).await;
        assert!(s == 200 || s == 400, "{q}: {s} {v}");
        assert!(!v.to_string().contains(&d.udid), "{q} found the device: {v}");
    }
    let big = "a".repeat(60_000);
    let (s, _) = call(&srv, API_KEY, Method::GET, &format!("/v1/devices?user={big}"), None).await;
    assert!(s == 200 || s == 400 || s == 414 || s == 431, "{s}");
    let (s, v) = call(&srv, API_KEY, Method::GET, "/v1/devices?model=iPhone", None).await;
    assert_eq!(s, 400, "model alone would list the fleet: {v}");

    let ro = srv.account("viewer", "read-only");
    let iss = srv.account("provider", "issuer");
    let nac = srv.account("ise", "nac");
    for secret in [&ro, &iss, &nac] {
        let (s, v) = call(&srv, secret, Method::POST, &format!("/v1/devices/{}/unenroll", d.udid), None).await;
        assert_eq!(s, 403, "{v}");
    }
    let (s, _) = call(&srv, &iss, Method::GET, "/v1/devices?user=alice", None).await;
    assert_eq!(s, 403, "an issuer cannot search devices");
    for id in ["NO-SUCH-DEVICE", "..%2F..%2Fetc", "%00"] {
        let (s, v) = call(&srv, API_KEY, Method::POST, &format!("/v1/devices/{id}/unenroll"), None).await;
        assert!(s == 404 || s == 400, "{id}: {s} {v}");
    }
    assert!(session_types(&mut d).await.is_empty(), "no RemoveProfile queued");
    let (_, v) = call(&srv, API_KEY, Method::GET, &format!("/v1/devices/{}", d.udid), None).await;
    assert_eq!(v["active"], true, "{v}");
}

/// A CRL that lists the credential but is not its issuer's — signed by an
/// impostor CA with the very same name, or issued by another CA — revokes
/// nothing: the check fails and says why; the credential stays active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_crls_revoke_nothing() {
    use common::derived::{credential, post_as, CrlServer, TestCa};
    const PW: &str = "pin-1234";
    let ca = TestCa::new("Agency PIV-D CA");
    let impostor = TestCa::new("Agency PIV-D CA");
    let stranger = TestCa::new("Some Other CA");
    let crls = CrlServer::start(ca.crl()).await;
    let url = format!("{}/crl", crls.base);
    let (p12, cert) = ca.issue("Alice Agent", 86_400, Some(&url), None, PW);
    let srv = Server::start_with(&[
        "--derived-check-interval",
        "1",
        "--derived-revocation-interval",
        "1",
        "--derived-revocation-timeout",
        "2",
        "--derived-revocation-allow",
        "127.0.0.0/8",
    ]);
    let issuer = srv.account("entrust", "issuer");
    let d = srv.enrolled().await;
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"device": d.udid, "usage": "authentication", "pkcs12": common::b64(&p12), "password": PW}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let status = |want: &'static str, why: &'static str| {
        let (srv, id) = (&srv, id.clone());
        async move {
            common::wait_until(std::time::Duration::from_secs(10), || {
                let id = id.clone();
                async move {
                    let c = credential(srv, &id).await;
                    c["revocation_check"]["status"] == want && c["revocation_check"]["error"].as_str().unwrap_or_default().contains(why)
                }
            })
            .await
        }
    };
    assert!(
        status("good", "").await,
        "control: the real CRL is believed: {}",
        credential(&srv, &id).await
    );
    impostor.revoke(&cert);
    crls.set(impostor.crl());
    assert!(status("failed", "signature").await, "{}", credential(&srv, &id).await);
    stranger.revoke(&cert);
    crls.set(stranger.crl());
    assert!(
        status("failed", "not by the certificate's issuer").await,
        "{}",
        credential(&srv, &id).await
    );
    let list = srv.admin().get("/v1/derived-credentials").await.unwrap();
    assert_eq!(list["ended"], json!([]), "{list}");
    assert!(!credential(&srv, &id).await.is_null(), "still active");
}

/// A value that was revoked and is later added again (an identity provider
/// that dictates its token), and a value copied onto another token by an
/// edit: verify must answer for the active token, and an edit must not make
/// two active tokens share a value (revoking one would leave it accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_token_values_verify_as_the_active_token() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    const V: &str = "dictated-by-the-idp-0123456789";
    let a = new_token(&srv, json!({"value": V})).await;
    let b = new_token(&srv, json!({})).await;
    let (s, v) = call(
        &srv,
        API_KEY,
        Method::DELETE,
        &format!("/v1/access-tokens/{}", a["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let c = new_token(&srv, json!({"value": V})).await;
    let (s, v) = call(&srv, API_KEY, Method::POST, "/v1/access/verify", Some(json!({"token": V}))).await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["valid"].as_bool(), v["token_id"].as_str()),
        (Some(true), c["id"].as_str()),
        "{v}"
    );

    // An edit copying C's value onto B is refused; B keeps its value.
    let (s, v) = call(
        &srv,
        API_KEY,
        Method::PUT,
        &format!("/v1/access-tokens/{}", b["id"].as_str().unwrap()),
        Some(json!({"value": V})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call(&srv, API_KEY, Method::POST, "/v1/access/verify", Some(json!({"token": b["value"]}))).await;
    assert_eq!(
        (s, v["valid"].as_bool(), v["token_id"].as_str()),
        (200, Some(true), b["id"].as_str()),
        "{v}"
    );
}
