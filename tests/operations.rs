//! Operations against the real server: health and readiness, warnings,
//! and Prometheus metrics parsed with a real text-format parser.

mod common;

use common::{enqueue, Server, API_KEY};
use serde_json::{json, Value};

async fn get(srv: &Server, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut r = srv.client().get(format!("{}{path}", srv.base));
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn health_readiness_and_warnings() {
    let srv = Server::start();
    let (s, body) = get(&srv, "/healthz", None).await;
    assert_eq!((s, body.as_str()), (200, "ok\n"));
    let (s, body) = get(&srv, "/readyz", None).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    // The detailed view needs credentials.
    let (s, _) = get(&srv, "/v1/health", None).await;
    assert_eq!(s, 401);
    let v = srv.admin().get("/v1/health").await.unwrap();
    assert!(v["certificates"]["ca"]["days_left"].as_i64().unwrap() > 30, "{v}");
    assert!(v["certificates"]["tls"]["not_after"].is_string(), "{v}");
    // No push certificate yet: that is a warning an admin should see.
    assert_eq!(v["status"], "warning", "{v}");
    assert!(v["warnings"].to_string().to_lowercase().contains("push"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_store_is_gone() {
    // Only on PostgreSQL can the store go away under a running server.
    let Some(db) = common::pg::TestDb::create().await else {
        eprintln!("no PostgreSQL: skipped");
        return;
    };
    let proxy = common::pg::FaultProxy::start(common::pg::hostport(&db.url)).await;
    let url = common::pg::with_hostport(&db.url, &proxy.addr.to_string());
    let srv = Server::start_with(&["--database-url", &url, "--database-timeout", "2"]);
    let (s, _) = get(&srv, "/readyz", None).await;
    assert_eq!(s, 200);
    proxy.set(common::pg::Mode::Down);
    let (s, body) = get(&srv, "/readyz", None).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    // Alive all the same.
    assert_eq!(get(&srv, "/healthz", None).await.0, 200);
    proxy.set(common::pg::Mode::Pass);
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn metrics_in_the_prometheus_text_format() {
    let srv = Server::start_with(&["--metrics-token", "prom-scrape-token"]);
    // Credentials: none is 401; the admin key and the metrics token work; an API account's secret does not.
    assert_eq!(get(&srv, "/metrics", None).await.0, 401);
    assert_eq!(get(&srv, "/metrics", Some("wrong")).await.0, 401);
    assert_eq!(get(&srv, "/metrics", Some(API_KEY)).await.0, 200);
    // Some traffic: an enrollment (SCEP, Authenticate, TokenUpdate), a command and its result.
    let mut d = srv.enrolled().await;
    enqueue(
        &srv.admin(),
        &[&d.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}),
    )
    .await;
    enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    d.not_now.insert("SecurityInfo".into());
    d.session().await.unwrap();
    let (s, text) = get(&srv, "/metrics", Some("prom-scrape-token")).await;
    assert_eq!(s, 200);
    let m = parse(&text);
    assert!(
        value(&m, "mdmd_checkins_total", &[("type", "Authenticate")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&m, "mdmd_checkins_total", &[("type", "TokenUpdate")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "mdmd_command_results_total", &[("status", "Acknowledged")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&m, "mdmd_command_results_total", &[("status", "NotNow")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    // Three-phase enrollment: the phase-1 identity and the MDM identity.
    assert_eq!(value(&m, "mdmd_scep_total", &[("outcome", "issued")]), Some(2.0), "{text}");
    assert_eq!(value(&m, "mdmd_commands_queued_total", &[]), Some(2.0), "{text}");
    assert_eq!(value(&m, "mdmd_enrollments", &[]), Some(1.0), "{text}");
    assert_eq!(
        value(&m, "mdmd_queue_depth", &[]),
        Some(1.0),
        "SecurityInfo is still pending: {text}"
    );
    assert!(
        value(&m, "mdmd_http_requests_total", &[("route", "/mdm/connect"), ("status", "200")]).unwrap_or(0.0) >= 1.0
            || value(&m, "mdmd_http_requests_total", &[("route", "/mdm"), ("status", "200")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&m, "mdmd_http_requests_total", &[("route", "/v1/commands"), ("method", "POST")]).unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert!(text.contains("mdmd_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("mdmd_store_commit_duration_seconds_bucket"), "{text}");
    assert!(text.contains("mdmd_store_commit_batch_size_count"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
}

#[tokio::test]
async fn metrics_can_be_public() {
    let srv = Server::start_with(&["--metrics-public"]);
    let (s, text) = get(&srv, "/metrics", None).await;
    assert_eq!(s, 200);
    parse(&text);
}

/// Debug logs as JSON lines: every request has its access line (route,
/// status, duration, enrollment), and no secret appears anywhere: not the
/// admin key, an account secret, a SCEP or enrollment challenge, a derived
/// credential's password, an upload token, an escrowed UnlockToken.
#[tokio::test]
async fn json_logs_carry_requests_and_no_secrets() {
    let srv = Server::start_logged(&[]);
    let admin = srv.admin();
    let account = srv.cli_json(&["accounts", "add", "prov", "--role", "issuer"])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut d = srv.enrolled().await;
    let challenge = d.profile.as_ref().unwrap().challenge.clone();
    // A derived credential with its password, by the issuer account.
    let ca = mdmd::sim::pki::test_ca("Log test CA").unwrap();
    let pw = "log-test-Secret-pw-829";
    let p12 = mdmd::sim::pki::issue_pkcs12(&ca, "Log Person", 365, pw).unwrap();
    let r = srv
        .client()
        .post(format!("{}/v1/derived-credentials", srv.base))
        .bearer_auth(&account)
        .json(&json!({"device": d.udid, "usage": "signing",
                      "pkcs12": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &p12), "password": pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // An app configuration with an upload token.
    enqueue(
        &admin,
        &[&d.udid],
        json!({"RequestType": "InstallApplication", "iTunesStoreID": 1, "Identifier": "com.example.pivd",
               "Configuration": {"Token": "$DERIVED_CREDENTIAL_TOKEN"}}),
    )
    .await;
    d.session().await.unwrap();
    let token = d.apps["com.example.pivd"].config.clone().unwrap()["Token"]
        .as_string()
        .unwrap()
        .to_owned();
    let unlock = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &d.unlock_token);
    // Wrong credentials are logged as refused, without the secret tried.
    let _ = get(&srv, "/v1/devices", Some("not-the-key-Wrong-7731")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = srv.log_text();
    assert!(log.lines().count() > 10, "{log}");
    for (what, secret) in [
        ("admin key", API_KEY),
        ("account secret", account.as_str()),
        ("enrollment challenge", challenge.as_str()),
        ("PKCS#12 password", pw),
        ("upload token", token.as_str()),
        ("UnlockToken", unlock.as_str()),
        ("a wrong key tried", "not-the-key-Wrong-7731"),
    ] {
        assert!(!secret.is_empty());
        assert!(!log.contains(secret), "the log holds the {what}");
    }
    // Every line is JSON; access lines carry route, status, duration and the enrollment.
    let mut access = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["target"] == "mdmd::access" {
            access += 1;
            assert!(v["route"].is_string() && v["status"].is_u64() && v["ms"].is_number(), "{line}");
        }
    }
    assert!(access >= 8, "{access} access lines");
    assert!(
        log.lines()
            .any(|l| l.contains("\"mdmd::access\"") && l.contains(&format!("\"enrollment\":\"{}\"", d.udid))),
        "no access line names the enrollment"
    );
}

/// People get tables, scripts JSON: `-o table`, and JSON when piped.
#[tokio::test]
async fn the_cli_prints_tables_for_people_and_json_for_scripts() {
    let srv = Server::start();
    let mut d = srv.enrolled().await;
    let uuid = enqueue(
        &srv.admin(),
        &[&d.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}),
    )
    .await;
    d.session().await.unwrap();
    let (ok, out, err) = srv.cli(&["devices", "-o", "table"]);
    assert!(ok, "{err}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("ID") && first.contains("SERIAL") && first.contains("LAST SEEN"),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with(&d.udid)).expect("the device's row");
    assert!(row.contains("active") && row.contains("just now"), "{out}");
    // Columns line up: every row's second column starts where the header's does.
    let col = first.find("SERIAL").unwrap();
    assert_eq!(&row[col..col + d.serial.len()], d.serial, "{out}");
    let (ok, out, _) = srv.cli(&["devices", "show", &d.udid, "-o", "table"]);
    assert!(
        ok && out.contains("Last seen") && out.contains("just now") && out.contains(&d.serial),
        "{out}"
    );
    let (ok, out, _) = srv.cli(&["cmd", "show", &uuid, "-o", "table"]);
    assert!(ok && out.starts_with("DeviceInformation") && out.contains("Acknowledged"), "{out}");
    let (ok, out, _) = srv.cli(&["ca", "certs", "-o", "table"]);
    assert!(ok && out.starts_with("SERIAL") && out.contains("mdm"), "{out}");
    // Piped (as here) without -o: the API's JSON, as scripts expect.
    let v = srv.cli_json(&["devices"]);
    assert!(v["devices"].as_array().unwrap().iter().any(|x| x["id"] == d.udid.as_str()));
    let v = srv.cli_json(&["devices", "show", &d.udid, "-o", "json"]);
    assert_eq!(v["id"], d.udid.as_str());
    // Targets from a file (one per line, comments and blank lines skipped).
    let list = srv.dir.path().join("targets.txt");
    std::fs::write(&list, format!("# the fleet\n{}\n\n", d.udid)).unwrap();
    let v = srv.cli_json(&[
        "cmd",
        "send",
        "-t",
        &format!("@{}", list.display()),
        r#"{"RequestType":"ProfileList"}"#,
    ]);
    assert_eq!(v["queued"], 1, "{v}");
}

/// The OpenAPI description: served, valid (checked by the Python
/// `openapi-spec-validator`), and true to the router both ways.
#[tokio::test]
async fn openapi_describes_every_route_and_every_described_route_answers() {
    let srv = Server::start();
    let spec = srv.admin().get("/v1/openapi.json").await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    // Every /v1 route the server has is described.
    for op in mdmd::api::operations().into_iter().filter(|o| o.path.starts_with("/v1/")) {
        assert!(
            paths.get(op.path).and_then(|p| p.get(op.method)).is_some(),
            "{} {} not described",
            op.method,
            op.path
        );
    }
    // Every described operation answers (a route, not the router's 404/405).
    let client = srv.client();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let url = format!("{}{}", srv.base, path.replace('{', "").replace('}', "")); // {id} -> id
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = client.request(m, &url).bearer_auth(API_KEY);
            if op.get("requestBody").is_some() {
                req = req.header("content-type", "application/json").body("{}");
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap();
            assert!(
                !(status == 405 || (status == 404 && body.is_empty())),
                "{method} {path}: no such route ({status})"
            );
        }
    }
    // A real validator.
    let file = srv.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") && std::env::var("MDMD_TEST_REQUIRE_OPENAPI").is_err() => {
            eprintln!("openapi-spec-validator not installed (pip install openapi-spec-validator): validation skipped");
        }
        Ok(o) => panic!(
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if std::env::var("MDMD_TEST_REQUIRE_OPENAPI").is_err() => eprintln!("no python3 ({e}): validation skipped"),
        Err(e) => panic!("python3: {e}"),
    }
}

/// A TLS server certificate for 127.0.0.1 from `ca`, as PEM (cert, key).
fn tls_pair(ca: &mdmd::sim::pki::SimIdentity, cn: &str) -> (Vec<u8>, Vec<u8>) {
    use openssl::x509::extension::SubjectAlternativeName;
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut n = openssl::x509::X509Name::builder().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    let n = n.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(rand::random::<u32>() | 1)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(90).unwrap()).unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .dns("localhost")
        .build(&b.x509v3_context(Some(&ca.cert), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca.key, openssl::hash::MessageDigest::sha256()).unwrap();
    (b.build().to_pem().unwrap(), key.private_key_to_pem_pkcs8().unwrap())
}

/// The subject CN a TLS handshake with `addr` shows, over a connection kept open.
fn handshake(addr: &str) -> (String, openssl::ssl::SslStream<std::net::TcpStream>) {
    let mut c = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    c.set_verify(openssl::ssl::SslVerifyMode::NONE);
    c.set_alpn_protos(b"\x08http/1.1").unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let s = c.build().connect("localhost", tcp).unwrap();
    let cert = s.ssl().peer_certificate().unwrap();
    let cn = cert.subject_name().entries().next().unwrap().data().to_string().unwrap().to_owned();
    (cn, s)
}

fn http_get(s: &mut openssl::ssl::SslStream<std::net::TcpStream>, path: &str) -> String {
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// New certificate files are served to new connections without a restart;
/// open connections keep going; a broken file changes nothing.
#[tokio::test]
async fn tls_certificates_reload_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mdmd::sim::pki::test_ca("Reload test CA").unwrap();
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    let (c, k) = tls_pair(&ca, "first");
    std::fs::write(&cert, c).unwrap();
    std::fs::write(&key, k).unwrap();
    let srv = Server::start_with(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let addr = srv.addr.clone();
    let (cn, mut open) = tokio::task::spawn_blocking({
        let a = addr.clone();
        move || handshake(&a)
    })
    .await
    .unwrap();
    assert_eq!(cn, "first");
    // Replace the files (key first, as a renewal tool might).
    let (c, k) = tls_pair(&ca, "second");
    std::fs::write(&key, k).unwrap();
    std::fs::write(&cert, c).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let a = addr.clone();
        let (cn, _) = tokio::task::spawn_blocking(move || handshake(&a)).await.unwrap();
        if cn == "second" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new certificate was not picked up");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The connection opened before still works.
    let reply = tokio::task::spawn_blocking(move || http_get(&mut open, "/healthz")).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // A key that does not match: the current certificate stays.
    let (c, _) = tls_pair(&ca, "third");
    std::fs::write(&cert, c).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let a = addr.clone();
    let (cn, _) = tokio::task::spawn_blocking(move || handshake(&a)).await.unwrap();
    assert_eq!(cn, "second");
}

/// Errors say what to do next.
#[tokio::test]
async fn cli_errors_say_what_to_do_next() {
    let srv = Server::start();
    let ca = srv.certs_dir().join("ca.pem");
    let run = |args: &[&str]| {
        let (ok, _, err) = common::mdmd(&[args, &["--trust-ca", ca.to_str().unwrap()]].concat());
        assert!(!ok);
        err
    };
    let closed = format!("https://127.0.0.1:{}", common::free_port());
    let err = run(&["devices", "--server", &closed, "--api-key", API_KEY]);
    assert!(err.contains("hint: is mdmd serving there?"), "{err}");
    let err = run(&["devices", "--server", &srv.base, "--api-key", "wrong-key"]);
    assert!(err.contains("hint: check the API key"), "{err}");

    // A CA that is not the server's: the TLS failure, not "is mdmd serving there?".
    let other_ca = common::repo_file("fixtures/push-certs/mock_push_cert.pem");
    let (ok, _, err) = common::mdmd(&[
        "devices",
        "--server",
        &srv.base,
        "--api-key",
        API_KEY,
        "--trust-ca",
        other_ca.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("hint: the server's TLS certificate is not trusted") && err.contains("--trust-ca"),
        "{err}"
    );
    // http:// against the HTTPS listener.
    let plain = format!("http://{}", srv.addr);
    let err = run(&["devices", "--server", &plain, "--api-key", API_KEY]);
    assert!(err.contains("hint: mdmd serves HTTPS"), "{err}");

    // Enrollment credentials the server does not know: about enrollment, not the API key.
    let (ok, _, err) = srv.cli(&["sim", "enroll", "--user", "nobody:wrong"]);
    assert!(!ok);
    assert!(
        err.contains("hint: the server refused these enrollment credentials") && err.contains("--enroll-user"),
        "{err}"
    );
    // A used invitation says so.
    let (ok, out, err) = srv.cli(&["invite"]);
    assert!(ok, "{err}");
    let url = out.lines().next().unwrap().to_owned();
    let (ok, _, err) = srv.cli(&["sim", "enroll", "--invite", &url]);
    assert!(ok, "{err}");
    let (ok, _, err) = srv.cli(&["sim", "enroll", "--invite", &url]);
    assert!(!ok);
    assert!(
        err.contains("already been used") && err.contains("hint: an invitation enrolls one device"),
        "{err}"
    );

    // A push certificate without its key: name --key, not an OpenSSL decoder error.
    let (ok, _, err) = srv.cli(&[
        "push-cert",
        "set",
        common::repo_file("fixtures/push-certs/mock_push_cert.pem").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("no private key") && err.contains("--key"), "{err}");

    // A push that reached nobody fails and says how to get a certificate; its time is RFC 3339.
    let d = srv.enrolled().await;
    let (ok, out, err) = srv.cli(&["push", &d.udid]);
    assert!(!ok, "{out}");
    assert!(err.contains("nothing was pushed") && err.contains("push-cert request"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["results"][&d.udid]["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
}

/// Every list the CLI prints has a table for people (`-o table`), never JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_has_a_table() {
    let srv = Server::start();
    let d = srv.enrolled().await;
    srv.cli_json(&["accounts", "add", "ops", "--role", "operator"]);
    srv.cli_json(&["access-tokens", "generate"]);
    srv.cli_json(&["cmd", "device-info", &d.udid]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["devices"], "COMPLIANCE"),
        (vec!["devices", "commands", &d.udid], "STATUS"),
        (vec!["profiles", "list"], "IDENTIFIER"),
        (vec!["compliance", "--status", "compliant"], "non-compliant"),
        (vec!["push-cert", "show"], "Topic"),
        (vec!["access-tokens", "list"], "EFFECTIVE"),
        (vec!["accounts", "list"], "ROLE"),
        (vec!["cas", "list"], "No organisation CAs"),
        (vec!["derived-credentials", "list"], "No derived credentials"),
        (vec!["ddm", "list"], "IDENTIFIER"),
        (vec!["ddm", "sets"], "No sets"),
    ];
    for (args, want) in cases {
        let (ok, out, err) = srv.cli(&[&args[..], &["-o", "table"]].concat());
        assert!(ok, "{args:?}: {err}");
        assert!(out.contains(want), "{args:?}: {out}");
        assert!(!out.trim_start().starts_with('{'), "{args:?} printed JSON: {out}");
    }
    // The device list shows each device's compliance.
    let (_, out, _) = srv.cli(&["devices", "-o", "table"]);
    let row = out.lines().find(|l| l.starts_with(&d.udid)).unwrap_or_default();
    assert!(row.contains("compliant") || row.contains("unknown"), "{out}");
}

/// `mdmd serve --help` groups its flags under headings, and every flag has one.
#[test]
fn serve_help_groups_its_flags() {
    let (ok, out, err) = common::mdmd(&["serve", "--help"]);
    assert!(ok, "{err}");
    for h in [
        "Listener and TLS:",
        "Storage:",
        "Enrollment:",
        "Push (APNs):",
        "Certificates (CA, SCEP, profile signing):",
        "Directory and identity provider:",
        "Limits:",
    ] {
        assert!(out.contains(h), "no heading {h}: {out}");
    }
    // clap puts flags without a heading under "Options:": only --help is left there.
    let mut heading = "";
    let mut unheaded = Vec::new();
    for l in out.lines() {
        if !l.starts_with(' ') && l.ends_with(':') {
            heading = l;
        } else if heading == "Options:" && l.trim_start().starts_with('-') && !l.contains("--help") {
            unheaded.push(l.trim());
        }
    }
    assert!(unheaded.is_empty(), "flags without a heading: {unheaded:?}");
}

/// `GET /` leads to the console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_leads_to_the_console() {
    let srv = Server::start();
    let r = srv.client().get(format!("{}/", srv.base)).send().await.unwrap();
    let landed = if r.status().is_redirection() {
        r.headers()["location"].to_str().unwrap().to_owned()
    } else {
        assert!(r.status().is_success(), "{}", r.status());
        r.url().path().to_owned()
    };
    assert!(landed.starts_with("/ui/"), "{landed}");
}

/// Output for scripts: a reader that goes away early (`| head -1`) ends the
/// CLI quietly, never with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let srv = Server::start();
    for _ in 0..3 {
        srv.enrolled().await;
    }
    let bin = env!("CARGO_BIN_EXE_mdmd");
    let ca = srv.certs_dir().join("ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let errs = dir.path().join("stderr");
    for args in ["devices -o table", "devices -o json", "invite", "profiles vars"] {
        // `true` reads nothing and exits at once: every write mdmd makes meets a closed pipe.
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{bin} {args} --server {} --api-key {API_KEY} --trust-ca {} 2>{} | true; exit ${{PIPESTATUS[0]}}",
                srv.base,
                ca.display(),
                errs.display()
            ))
            .env("MDMD_LOG", "error")
            .output()
            .unwrap();
        let err = std::fs::read_to_string(&errs).unwrap_or_default() + &String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "mdmd {args}: {err}");
        assert_eq!(out.status.code(), Some(0), "mdmd {args}: {err}");
    }
}

/// The default TLS certificate is ECDSA P-256 (signed by the RSA CA), and
/// sessions resume (TLS 1.3 tickets, TLS 1.2 session ids), checked with the
/// `openssl s_client` CLI; /v1/stats counts handshakes and resumptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_ecdsa_and_sessions_resume() {
    let srv = Server::start();
    let cert = openssl::x509::X509::from_pem(&std::fs::read(srv.certs_dir().join("tls.pem")).unwrap()).unwrap();
    assert_eq!(cert.public_key().unwrap().id(), openssl::pkey::Id::EC);
    let ca = openssl::x509::X509::from_pem(&std::fs::read(srv.certs_dir().join("ca.pem")).unwrap()).unwrap();
    assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
    let before = srv.admin().get("/v1/stats").await.unwrap();
    let dir = srv.dir.path().to_owned();
    let addr = srv.addr.clone();
    let s_client = move |version: &str, sess: &str, save: bool| -> String {
        use std::io::Write as _;
        let mut c = std::process::Command::new("openssl")
            .args([
                "s_client",
                version,
                "-ign_eof",
                "-connect",
                &addr,
                "-servername",
                "localhost",
                "-CAfile",
            ])
            .arg(dir.join("certs").join("ca.pem"))
            .arg(if save { "-sess_out" } else { "-sess_in" })
            .arg(dir.join(sess))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl");
        c.stdin.take().unwrap().write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned()
    };
    for (v, f) in [("-tls1_3", "s13.pem"), ("-tls1_2", "s12.pem")] {
        let first = s_client(v, f, true);
        assert!(first.contains("New,") && first.contains("200 OK"), "{first}");
        let again = s_client(v, f, false);
        assert!(again.contains("Reused,"), "{v}: {again}");
    }
    let after = srv.admin().get("/v1/stats").await.unwrap();
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(d("tls_handshakes") >= 4, "{after}");
    assert_eq!(d("tls_resumed"), 2, "{after}");
}

/// The measuring tools, driven as an admin would from the real binary: a
/// load run as clients that open a connection per request with DES
/// envelopes and SHA-1 signatures, and connect requests beside the bare
/// TLS endpoint (`sim bare-server` + `sim idle-bench`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tools_run_as_other_clients_and_beside_the_floor() {
    let srv = Server::start();
    let user = format!("{}:{}", common::ENROLL_USER.0, common::ENROLL_USER.1);
    let v = srv.cli_json(&[
        "sim",
        "load",
        "--user",
        &user,
        "-n",
        "3",
        "-r",
        "1",
        "-c",
        "2",
        "--connections",
        "per-request",
        "--envelope",
        "des",
        "--sha1-signatures",
    ]);
    assert_eq!(v["round_trips"], 3, "{v}");
    assert_eq!(v["envelope"], "des");
    assert_eq!(v["sha1_signatures"], true);
    // Every request opened its own connection: one handshake each, enrolling and polling.
    assert!(
        v["tls_handshakes_rounds"].as_u64().unwrap() >= v["requests"].as_u64().unwrap(),
        "{v}"
    );
    // Another command per round, and the steady rounds (after the first two) on their own;
    // on PostgreSQL the database's round trips per request are counted (`db_round_trips`).
    let v = srv.cli_json(&["sim", "load", "--user", &user, "-n", "2", "-r", "4", "-c", "2", "--request-type", "ProvisioningProfileList"]);
    assert_eq!((v["round_trips"].as_u64(), v["request_type"].as_str()), (Some(8), Some("ProvisioningProfileList")), "{v}");
    assert_eq!(v["steady"]["rounds"], 2, "{v}");
    assert!(v["steady"]["requests"].as_u64().unwrap() >= 8, "{v}");
    let rt = &v["steady"]["db_round_trips_per_request"];
    if common::on_postgres() {
        assert!(rt.as_f64().is_some_and(|r| r >= 2.0), "{v}");
    } else {
        assert!(rt.is_null(), "{v}");
    }

    // The floor: a bare endpoint with mdmd's certificate answers any request with an empty 200.
    let mut bare = std::process::Command::new(env!("CARGO_BIN_EXE_mdmd"))
        .args(["sim", "bare-server", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(srv.certs_dir().join("tls.pem"))
        .arg("--tls-key")
        .arg(srv.certs_dir().join("tls.key"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bare server");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(bare.stdout.take().unwrap()), &mut line).unwrap();
    let bare_url = line
        .trim()
        .strip_prefix("bare server listening on ")
        .expect("its address")
        .to_owned();
    let pid = bare.id().to_string();
    let connect = format!("{}/mdm/connect", srv.base);
    for (url, pid) in [
        (connect.as_str(), None),
        (format!("{bare_url}/mdm/connect").as_str(), Some(pid.as_str())),
    ] {
        let mut args = vec![
            "sim",
            "idle-bench",
            "--user",
            &user,
            "--url",
            url,
            "--devices",
            "2",
            "-n",
            "40",
            "-c",
            "4",
        ];
        if let Some(p) = pid {
            args.extend(["--pid", p]);
        }
        let v = srv.cli_json(&args);
        assert_eq!(v["answered_200"], 40, "{url}: {v}");
    }
    bare.kill().ok();
    bare.wait().ok();
    // mdmd answered those polls itself (signature and binding checked).
    let stats = srv.admin().get("/v1/stats").await.unwrap();
    assert!(stats["connects"].as_u64().unwrap() >= 40, "{stats}");
}
