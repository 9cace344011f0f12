//! Least privilege for secrets, tried as each role would: real secrets are put
//! into the server through real flows (an escrowed UnlockToken used by
//! ClearPasscode, a shared access token and a per-device JWT in an app
//! configuration, a derived-credential upload token, a profile with
//! `$SCEP_CHALLENGE`, a derived credential's PKCS#12 and password, an
//! enrollment challenge and an invitation); then every GET route of the
//! route table and every console page is read as admin, operator,
//! read-only, nac and issuer, and every answer is searched for every secret
//! (raw, base64 in every alignment, hex). So are the database (the redb file's
//! bytes, or every PostgreSQL row as text) and the server's log. The device
//! still gets every real secret.
//!
//! `MDMD_TEST_STORE=postgres` runs it on PostgreSQL.

mod common;

use base64::Engine as _;
use common::{Server, API_KEY};
use serde_json::{json, Value};

const APP: &str = "com.example.secretapp";
const WIFI: &str = "com.example.mdmd.wifi";

/// Base64 (standard and URL-safe) of `secret` in each of the three
/// alignments it can take inside a longer base64 text: only the characters
/// that do not depend on the neighbours.
fn base64_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for engine in [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE] {
        for shift in 0..3usize {
            let mut buf = vec![0u8; shift];
            buf.extend_from_slice(secret);
            let enc = engine.encode(&buf).into_bytes();
            let skip = (shift * 8).div_ceil(6);
            let keep = (buf.len() * 8) / 6;
            if keep > skip {
                out.push(enc[skip..keep].to_vec());
            }
        }
    }
    out
}

/// The encodings a secret may hide in: itself and its base64, each also
/// as hex (PostgreSQL's bytea) and as base64 again (a record's base64 field
/// holding XML that holds the secret's base64).
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut first = vec![secret.to_vec()];
    first.extend(base64_forms(secret));
    let mut out = Vec::new();
    for f in &first {
        out.push(f.clone());
        out.push(hex::encode(f).into_bytes());
        out.push(hex::encode_upper(f).into_bytes());
        out.extend(base64_forms(f));
    }
    out.retain(|f| f.len() >= KEY);
    out
}

/// Length of the prefix the search indexes.
const KEY: usize = 12;

/// Every secret the test put into the server, with all its forms.
struct Secrets {
    names: Vec<String>,
    all: Vec<(String, Vec<u8>)>,
    /// First KEY bytes of a form -> (secret index, form).
    index: std::collections::HashMap<Vec<u8>, Vec<(usize, Vec<u8>)>>,
}

impl Secrets {
    fn new(all: Vec<(String, Vec<u8>)>) -> Secrets {
        let mut index: std::collections::HashMap<Vec<u8>, Vec<(usize, Vec<u8>)>> = Default::default();
        for (i, (_, s)) in all.iter().enumerate() {
            // XML plists wrap data at 51 bytes a line: whole lines are searched too.
            let mut parts = vec![s.as_slice()];
            let lines = s.len() / 51;
            for k in [0, 1, lines / 2] {
                let (a, b) = (k * 51, k * 51 + 48);
                if s.len() > 51 && b <= s.len() && (k > 0 || s.len() < 100) {
                    parts.push(&s[a..b]);
                }
            }
            for f in parts.into_iter().flat_map(forms) {
                index.entry(f[..KEY].to_vec()).or_default().push((i, f));
            }
        }
        Secrets {
            names: all.iter().map(|(n, _)| n.clone()).collect(),
            all,
            index,
        }
    }

    /// The secrets found in `hay`.
    fn found_in(&self, hay: &[u8]) -> Vec<String> {
        let mut hit = std::collections::BTreeSet::new();
        if hay.len() >= KEY {
            for at in 0..=hay.len() - KEY {
                if let Some(cands) = self.index.get(&hay[at..at + KEY]) {
                    for (i, f) in cands {
                        if hay[at..].starts_with(f) {
                            hit.insert(*i);
                        }
                    }
                }
            }
        }
        hit.into_iter().map(|i| self.names[i].clone()).collect()
    }
}

async fn get_as(srv: &Server, http: &reqwest::Client, secret: &str, path: &str) -> (u16, Vec<u8>) {
    let r = http
        .get(format!("{}{path}", srv.base))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

/// A console session for an account (None when the console refuses the role).
async fn console_session(srv: &Server, name: &str, secret: &str) -> Option<(reqwest::Client, String)> {
    let pem = std::fs::read(srv.certs_dir().join("ca.pem")).unwrap();
    let http = mdmd::sim::http_client_builder(Some(&pem))
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(format!("{}/ui/login", srv.base)).send().await.unwrap();
    let login_cookie = cookie(&form, "mdmd_ui_login")?;
    let html = form.text().await.unwrap();
    let token = between(&html, "name=\"csrf\" value=\"", "\"")?;
    let r = http
        .post(format!("{}/ui/login", srv.base))
        .header("cookie", format!("mdmd_ui_login={login_cookie}"))
        .form(&[("csrf", token.as_str()), ("name", name), ("secret", secret), ("next", "/ui/")])
        .send()
        .await
        .unwrap();
    let sess = cookie(&r, "mdmd_ui")?;
    Some((http, sess))
}

fn cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
    })
}

fn between(s: &str, a: &str, b: &str) -> Option<String> {
    let start = s.find(a)? + a.len();
    Some(s[start..][..s[start..].find(b)?].to_owned())
}

/// Every GET route of the route table with its path parameters filled from
/// real ids (a route with several candidates is read once per candidate).
fn get_paths(params: &[(&str, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for op in mdmd::api::operations().into_iter().filter(|o| o.method == "get") {
        let mut paths = vec![op.path.to_owned()];
        for (name, values) in params {
            let key = format!("{{{name}}}");
            if !op.path.contains(&key) {
                continue;
            }
            paths = paths
                .iter()
                .flat_map(|p| values.iter().map(|v| p.replace(&key, v)).collect::<Vec<_>>())
                .collect();
        }
        for p in paths {
            assert!(!p.contains('{'), "no value for a parameter of {p}");
            out.push(p);
        }
    }
    // The same reads with their search and filter queries.
    out.sort();
    out.dedup();
    out
}

/// Every file under `dir`, concatenated (the redb database and anything beside it).
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
    out
}

/// Every row of every table of the server's PostgreSQL database, as text.
async fn postgres_rows(url: &str) -> Vec<(String, Vec<u8>)> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    let h = tokio::spawn(conn);
    let tables = c
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .expect("tables");
    let mut out = Vec::new();
    for t in &tables {
        let (schema, name): (String, String) = (t.get(0), t.get(1));
        let rows = c
            .query(&format!("SELECT t::text FROM \"{schema}\".\"{name}\" t"), &[])
            .await
            .expect("rows");
        let mut text = Vec::new();
        for r in rows {
            let s: String = r.get(0);
            text.extend_from_slice(s.as_bytes());
            text.push(b'\n');
        }
        // bytea columns come out as \x<hex>: hex is among the searched forms.
        out.push((format!("{schema}.{name}"), text));
    }
    drop(c);
    let _ = h.await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_their_device_and_no_lesser_role_no_table_no_log() {
    // Profiles signed but not encrypted, so a profile's challenge would sit
    // in clear in its stored command if the command were not sealed; a
    // webhook receiver that never answers keeps every event in the outbox.
    let srv = Server::start_logged(&["--encrypt-profiles", "false", "--webhook-url", "https://127.0.0.1:9/hook"]);
    let admin = srv.admin();
    let http = srv.client();
    let b64 = base64::engine::general_purpose::STANDARD;

    // One account per role.
    let mut roles: Vec<(String, String, String)> = vec![("admin".into(), "admin".into(), API_KEY.into())];
    for role in ["operator", "read-only", "nac", "issuer"] {
        let name = format!("t-{}", role.replace('-', ""));
        let v = srv.cli_json(&["accounts", "add", &name, "--role", role]);
        roles.push((role.into(), name, v["secret"].as_str().unwrap().to_owned()));
    }
    let secret_of = |role: &str| roles.iter().find(|r| r.0 == role).unwrap().2.clone();

    // An enrolled device: its enrollment challenge and its escrowed UnlockToken.
    let mut d = srv.enrolled().await;
    d.apps.insert(APP.into(), mdmd::sim::SimApp::managed(APP, "1.0"));
    let enroll_challenge = d.profile.as_ref().unwrap().challenge.clone();

    // A shared access token.
    let shared = srv.cli_json(&["access-tokens", "generate"])["value"].as_str().unwrap().to_owned();

    // An invitation (by the admin).
    let inv = admin.post("/v1/enrollments/invitations", json!({})).await.unwrap();
    let invitation = inv["url"].as_str().unwrap().split("invite=").nth(1).unwrap().to_owned();

    // A derived credential, posted by the issuer.
    let ca = mdmd::sim::pki::test_ca("Secrets test CA").unwrap();
    let p12_password = "p12-Secret-pw-55121-xyz";
    let p12 = mdmd::sim::pki::issue_pkcs12(&ca, "Secret Person", 365, p12_password).unwrap();
    let r = http
        .post(format!("{}/v1/derived-credentials", srv.base))
        .bearer_auth(secret_of("issuer"))
        .json(&json!({"device": d.udid, "usage": "signing", "pkcs12": b64.encode(&p12), "password": p12_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // Commands that carry secrets, filled in by the server.
    let clear = common::enqueue(&admin, &[&d.udid], json!({"RequestType": "ClearPasscode"})).await;
    let settings = common::enqueue(
        &admin,
        &[&d.udid],
        json!({"RequestType": "Settings", "Settings": [{
            "Item": "ApplicationConfiguration", "Identifier": APP,
            "Configuration": {"SHARED": "$ACCESS_TOKEN", "DEVICE": "$DEVICE_ACCESS_TOKEN",
                              "UPLOAD": "$DERIVED_CREDENTIAL_TOKEN", "org.example.bearer": "Bearer $ACCESS_TOKEN", "plain": "$UDID"},
        }]}),
    )
    .await;
    let v = admin
        .post(&format!("/v1/profiles/{WIFI}/install"), json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(v["queued"], 1, "{v}");
    let install = v["command_uuid"].as_str().unwrap().to_owned();
    // An admin's own secret typed into a command (a schema key).
    let pin = "481516";
    let lock = common::enqueue(
        &admin,
        &[&d.udid],
        json!({"RequestType": "DeviceLock", "PIN": pin, "Message": "lost"}),
    )
    .await;

    // The device gets every real secret.
    let handled = d.session().await.unwrap();
    let status_of = |uuid: &str| {
        handled
            .iter()
            .find(|h| h.command_uuid == uuid)
            .map(|h| h.status.as_str().to_owned())
            .unwrap_or_else(|| panic!("the device never got {uuid}: {handled:?}"))
    };
    assert_eq!(status_of(&clear), "Acknowledged", "the device checks its own UnlockToken");
    assert_eq!(status_of(&settings), "Acknowledged");
    assert_eq!(status_of(&install), "Acknowledged");
    assert_eq!(status_of(&lock), "Acknowledged");
    let conf = d.apps[APP].config.clone().expect("configuration");
    let s = |k: &str| conf[k].as_string().unwrap().to_owned();
    assert_eq!(s("SHARED"), shared);
    assert_eq!(s("org.example.bearer"), format!("Bearer {shared}"));
    assert_eq!(s("plain"), d.udid);
    let jwt = s("DEVICE");
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let upload = s("UPLOAD");
    assert!(upload.len() > 20, "{upload}");
    let wifi = &d.profiles[WIFI];
    assert!(!wifi.encrypted);
    let profile_challenge = wifi.payloads[0]["PayloadContent"].as_dictionary().unwrap()["Challenge"]
        .as_string()
        .unwrap()
        .to_owned();
    assert!(profile_challenge.len() >= 20 && !profile_challenge.contains('$'));
    assert!(!wifi.identities.is_empty(), "the device ran SCEP with the profile's challenge");

    let secrets = Secrets::new(vec![
        ("UnlockToken".into(), d.unlock_token.clone()),
        ("shared access token".into(), shared.clone().into_bytes()),
        ("per-device JWT".into(), jwt.clone().into_bytes()),
        ("JWT signature".into(), jwt.rsplit('.').next().unwrap().as_bytes().to_vec()),
        ("derived-credential upload token".into(), upload.clone().into_bytes()),
        ("profile SCEP challenge".into(), profile_challenge.clone().into_bytes()),
        ("PKCS#12 password".into(), p12_password.as_bytes().to_vec()),
        ("PKCS#12".into(), p12.clone()),
        ("enrollment challenge".into(), enroll_challenge.clone().into_bytes()),
        ("invitation".into(), invitation.clone().into_bytes()),
        // A short secret typed by the admin, searched with its key around it.
        ("DeviceLock PIN".into(), format!("<string>{pin}</string>").into_bytes()),
        ("DeviceLock PIN".into(), format!("\"PIN\":\"{pin}\"").into_bytes()),
    ]);
    for (what, s) in &secrets.all {
        assert!(s.len() >= 14, "{what} is long enough to search for");
    }

    // Real ids for every path parameter.
    let cert_serial = admin.get("/v1/certificates?limit=1000").await.unwrap()["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["serial"].as_str().map(str::to_owned))
        .collect::<Vec<_>>();
    let params: Vec<(&str, Vec<String>)> = vec![
        ("uuid", vec![clear.clone(), settings.clone(), install.clone(), lock.clone()]),
        ("id", vec![d.udid.clone(), WIFI.to_owned()]),
        ("name", vec!["corp".into()]),
        ("serial", cert_serial),
        ("set", vec!["default".into()]),
        ("ver", vec!["3".into()]),
    ];
    let mut paths = get_paths(&params);
    paths.extend([
        format!("/v1/devices?udid={}", d.udid),
        "/v1/compliance?status=compliant".into(),
        format!("/ciscoise/mdm/api/3/devices?paramname=udid&paramvalue={}", d.udid),
    ]);

    let mut leaks = Vec::new();
    let mut enrollment_material = Vec::new();
    for (role, name, secret) in &roles {
        let mut allowed = 0;
        for p in &paths {
            let (status, body) = get_as(&srv, &http, secret, p).await;
            if status == 200 {
                allowed += 1;
            }
            let mut found = secrets.found_in(&body);
            if *role == "admin" && p == "/v1/access-tokens" {
                // The admin manages the tokens: the one place their values show.
                found.retain(|f| !f.starts_with("shared access token"));
            }
            if !found.is_empty() {
                leaks.push(format!("{role} GET {p} ({status}): {}", found.join(", ")));
            }
            if p == "/v1/enrollments/profile" && status == 200 && *role != "admin" && *role != "operator" {
                enrollment_material.push(format!("{role} downloaded the enrollment profile"));
            }
        }
        assert!(allowed > 0 || *role == "issuer", "{role} could read nothing");
        // The console, as the same account.
        let login = if *role == "admin" { "admin" } else { name.as_str() };
        if let Some((ui, sess)) = console_session(&srv, login, secret).await {
            for page in [
                "/ui/".to_owned(),
                "/ui/devices".into(),
                format!("/ui/devices/{}", d.udid),
                "/ui/profiles".into(),
                format!("/ui/profiles/{WIFI}"),
                "/ui/enrollment".into(),
                "/ui/certificates".into(),
            ] {
                let r = ui
                    .get(format!("{}{page}", srv.base))
                    .header("cookie", format!("mdmd_ui={sess}"))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap();
                let found = secrets.found_in(&body);
                if !found.is_empty() {
                    leaks.push(format!("{role} console {page} ({status}): {}", found.join(", ")));
                }
            }
        }
    }
    // At rest: the database and everything else the server wrote.
    let mut stored = files_under(&srv.data_dir());
    if let Some(url) = srv.database_url() {
        stored.extend(postgres_rows(url).await);
    }
    // The search does see the database: the device's UDID (no secret) is found in it.
    let control = Secrets::new(vec![("UDID".into(), d.udid.clone().into_bytes())]);
    assert!(
        stored.iter().any(|(_, b)| !control.found_in(b).is_empty()),
        "the stored data was not searched"
    );
    if srv.database_url().is_some() {
        assert!(
            stored
                .iter()
                .any(|(w, b)| w.ends_with(".commands") && !control.found_in(b).is_empty()
                    || w.ends_with(".enrollments") && !control.found_in(b).is_empty()),
            "PostgreSQL rows were not searched"
        );
    }
    for (where_, bytes) in &stored {
        let found = secrets.found_in(bytes);
        if !found.is_empty() {
            leaks.push(format!("at rest in {where_}: {}", found.join(", ")));
        }
    }
    let log = srv.log_text();
    let found = secrets.found_in(log.as_bytes());
    if !found.is_empty() {
        leaks.push(format!("the log: {}", found.join(", ")));
    }

    assert!(
        leaks.is_empty() && enrollment_material.is_empty(),
        "secrets leaked:\n{}\nenrollment material to a lesser role:\n{}",
        leaks.join("\n"),
        enrollment_material.join("\n")
    );

    // What a lesser role reads of a command: the secrets are marked, not shown.
    let (status, body) = get_as(&srv, &http, &secret_of("read-only"), &format!("/v1/commands/{clear}")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["command"]["UnlockToken"], "[redacted]", "{v}");
    assert_eq!(v["command"]["RequestType"], "ClearPasscode", "{v}");
    let (_, body) = get_as(&srv, &http, &secret_of("operator"), &format!("/v1/commands/{settings}")).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let conf = &v["command"]["Settings"][0]["Configuration"];
    assert_eq!(conf["SHARED"], "[redacted]", "{v}");
    assert_eq!(conf["plain"], d.udid.as_str(), "what is not secret still shows: {v}");
    // The operator sees which tokens exist, never a value.
    let (status, body) = get_as(&srv, &http, &secret_of("operator"), "/v1/access-tokens").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["tokens"].as_array().is_some_and(|t| !t.is_empty()), "{v}");

    // Sealed at rest, and still served after a restart (the keyring is on disk).
    let mut srv = srv;
    srv.restart();
    let clear2 = common::enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "ClearPasscode"})).await;
    let handled = d.session().await.unwrap();
    assert!(
        handled
            .iter()
            .any(|h| h.command_uuid == clear2 && h.status.as_str() == "Acknowledged"),
        "{handled:?}"
    );
}
