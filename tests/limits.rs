//! Bounded cost of unauthenticated requests, tried as an attacker would over real HTTPS:
//! floods of wrong credentials get 429 (and cost no password hash or memory) while the real
//! owner still gets in from another address; a short admin key is refused at start; slow,
//! idle and excess connections are closed; expired challenges are pruned; log fields are
//! escaped and bounded; the console sends HSTS. Attackers connect from 127.0.0.3, owners from
//! 127.0.0.2 or 127.0.0.1 (all loopback; the server listens on 127.0.0.1 and sees the source).

mod common;

use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Server, API_KEY, ENROLL_USER};
use serde_json::{json, Value};

const ATTACKER: &str = "127.0.0.3";
const OWNER: &str = "127.0.0.2";

/// An HTTPS client trusting the server's CA, connecting from `local`; redirects not followed.
fn client_from(srv: &Server, local: &str) -> reqwest::Client {
    let pem = std::fs::read(srv.certs_dir().join("ca.pem")).unwrap();
    mdmd::sim::http_client_builder(Some(&pem))
        .unwrap()
        .local_address(local.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The server process's resident memory in KiB (found by its data directory on the command line).
fn server_rss_kib(srv: &Server) -> u64 {
    let dir = srv.data_dir().to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(" serve ") && cmd.contains(&dir) {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("server process not found");
}

/// A Prometheus sample's value (0 if absent).
async fn metric(srv: &Server, name: &str) -> f64 {
    let text = client_from(srv, OWNER)
        .get(format!("{}/metrics", srv.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// GET `path` with a bearer token; (status, Retry-After).
async fn get_as(c: &reqwest::Client, srv: &Server, path: &str, bearer: &str) -> (u16, Option<u64>) {
    let r = c.get(format!("{}{path}", srv.base)).bearer_auth(bearer).send().await.unwrap();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (r.status().as_u16(), retry)
}

/// Finding 4: `Bearer <known account>.<junk>` cost 34 ms and 19 MiB of Argon2id each, without
/// limit (159 requests: 226 MB → 2.1 GB). Now: 401 up to the per-source limit, then 429 with
/// Retry-After, memory flat, no password hash at all; the owner gets in from another address.
#[tokio::test]
async fn a_flood_of_wrong_account_secrets_is_refused_and_costs_nothing() {
    let srv = Server::start();
    let acct = srv
        .admin()
        .post("/v1/accounts", json!({"name": "ise", "role": "nac"}))
        .await
        .unwrap();
    let secret = acct["secret"].as_str().unwrap().to_owned();
    // Warm up (first requests allocate pools and caches), then measure.
    let attacker = client_from(&srv, ATTACKER);
    let _ = get_as(&client_from(&srv, OWNER), &srv, "/v1/devices", &secret).await;
    let rss_before = server_rss_kib(&srv);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (c, base) = (attacker.clone(), srv.base.clone());
        tasks.spawn(async move {
            let r = c
                .get(format!("{base}/v1/devices"))
                .bearer_auth(format!("ise.junk{i:04}xxxxxxxxxxxxxxxxxxxxxxxx"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        });
    }
    let (mut unauthorized, mut limited) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (401, _) => unauthorized += 1,
            (429, true) => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        unauthorized <= 10,
        "{unauthorized} wrong secrets were checked (limit 10 per source)"
    );
    assert_eq!(unauthorized + limited, 300);
    let rss_after = server_rss_kib(&srv);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still refused from the attacker's address, with the time to wait.
    let (s, retry) = get_as(&attacker, &srv, "/v1/devices", "ise.another-guess").await;
    assert_eq!(s, 429);
    assert!(retry.is_some_and(|r| (1..=301).contains(&r)), "{retry:?}");
    // The owner, from an address without failures, is never refused (again and again).
    for _ in 0..3 {
        assert_eq!(get_as(&client_from(&srv, OWNER), &srv, "/v1/devices", &secret).await.0, 200);
    }
    // No request cost a password hash.
    assert_eq!(metric(&srv, "mdmd_password_hashes_total").await, 0.0);
}

/// No hash, and the same answer, for a name that does not exist; known-wrong secrets are
/// remembered. (Counted through the metrics: the timing oracle is gone because no check hashes.)
#[tokio::test]
async fn unknown_names_cost_no_hash() {
    let srv = Server::start();
    srv.admin()
        .post("/v1/accounts", json!({"name": "ro", "role": "read-only"}))
        .await
        .unwrap();
    let c = client_from(&srv, ATTACKER);
    for i in 0..5 {
        assert_eq!(get_as(&c, &srv, "/v1/devices", &format!("nobody{i}.secretsecret")).await.0, 401);
    }
    assert_eq!(get_as(&c, &srv, "/v1/devices", "ro.wrongwrongwrong").await.0, 401);
    assert!(metric(&srv, "mdmd_credential_checks_total{outcome=\"unknown-account\"}").await >= 5.0);
    assert_eq!(metric(&srv, "mdmd_password_hashes_total").await, 0.0);
}

/// Wrong admin keys were never rate-limited. Now they are, per address; the right key from
/// another address still works, and so does the admin key at once afterwards from there.
#[tokio::test]
async fn wrong_admin_keys_get_429() {
    let srv = Server::start();
    let c = client_from(&srv, ATTACKER);
    let mut codes = Vec::new();
    for i in 0..15 {
        codes.push(get_as(&c, &srv, "/v1/info", &format!("wrong-admin-key-{i:02}-xxxxxxxxxx")).await);
    }
    assert!(codes[..10].iter().all(|(s, _)| *s == 401), "{codes:?}");
    assert!(codes[10..].iter().all(|(s, r)| *s == 429 && r.is_some()), "{codes:?}");
    // Even the right key waits at the attacker's address, and /metrics is limited the same way…
    assert_eq!(get_as(&c, &srv, "/v1/info", API_KEY).await.0, 429);
    assert_eq!(get_as(&c, &srv, "/metrics", "wrong-metrics-key-xxxxxxxxxxxx").await.0, 429);
    // …but the owner's address is not locked out by the attacker's failures.
    assert_eq!(get_as(&client_from(&srv, OWNER), &srv, "/v1/info", API_KEY).await.0, 200);
    assert_eq!(get_as(&client_from(&srv, "127.0.0.1"), &srv, "/v1/info", API_KEY).await.0, 200);
}

/// Behind a trusted proxy that appends `X-Forwarded-For`, a client's own `Forwarded` header is
/// passed through unchanged: believing it let a client pick a new address per request (escaping
/// the limit) or charge its failures to the owner's. Only the configured header is read.
#[tokio::test]
async fn only_the_proxys_own_forwarded_header_names_the_client() {
    let srv = Server::start_with(&["--trusted-proxy", "127.0.0.1"]);
    let proxy = client_from(&srv, "127.0.0.1");
    let via_proxy = |client_ip: &str, forged: &str, key: &str| {
        proxy
            .get(format!("{}/v1/info", srv.base))
            .bearer_auth(key)
            .header("x-forwarded-for", client_ip)
            .header("forwarded", format!("for={forged}"))
            .send()
    };
    let mut codes = Vec::new();
    for i in 0..12 {
        // The attacker names a fresh address, then the owner's, in its own `Forwarded`.
        let forged = if i % 2 == 0 {
            format!("198.51.100.{i}")
        } else {
            "192.0.2.10".to_owned()
        };
        let r = via_proxy("203.0.113.7", &forged, &format!("wrong-admin-key-{i:02}-xxxxxxxxxx"))
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert!(codes[..10].iter().all(|s| *s == 401), "{codes:?}");
    assert!(
        codes[10..].iter().all(|s| *s == 429),
        "the attacker's real address is limited: {codes:?}"
    );
    // The owner (192.0.2.10 by the proxy's header) was not charged for the forged failures.
    let r = via_proxy("192.0.2.10", "203.0.113.7", API_KEY).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// The admin key must have at least 24 characters: a short one stops the server with a clear message.
#[test]
fn a_short_admin_key_is_refused_at_start() {
    refused_at_start(&["--api-key", "short-key-123"], "short-key-123", "admin key");
    // A static SCEP challenge enrolls a device: held to the same length.
    refused_at_start(
        &["--api-key", "a-long-enough-admin-key-0123456789", "--scep-challenge", "weak-chal"],
        "weak-chal",
        "SCEP challenge",
    );
}

fn refused_at_start(args: &[&str], secret: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mdmd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .env("MDMD_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop by itself (a server that starts would run until killed).
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("mdmd started with a short {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 24"), "{err}");
    assert!(!err.contains(secret), "the secret itself is not printed: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}

/// One console sign-in attempt from `c`: the status.
async fn console_sign_in(c: &reqwest::Client, srv: &Server, name: &str, secret: &str) -> reqwest::Response {
    let form = c.get(format!("{}/ui/login", srv.base)).send().await.unwrap();
    let lc = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("mdmd_ui_login="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let html = form.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    c.post(format!("{}/ui/login", srv.base))
        .header("cookie", format!("mdmd_ui_login={lc}"))
        .form(&[("csrf", token.as_str()), ("name", name), ("secret", secret)])
        .send()
        .await
        .unwrap()
}

/// Finding 5: five wrong sign-ins as `admin` locked the right key out for five minutes, from
/// everywhere. Now the attacker's address is limited and the owner signs in from another.
/// The console also sends HSTS.
#[tokio::test]
async fn console_failures_do_not_lock_the_owner_out() {
    let srv = Server::start();
    let attacker = client_from(&srv, ATTACKER);
    let form = attacker.get(format!("{}/ui/login", srv.base)).send().await.unwrap();
    let hsts = form
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(hsts.as_deref().is_some_and(|h| h.contains("max-age=")), "no HSTS: {hsts:?}");
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(console_sign_in(&attacker, &srv, "admin", "wrong-guess").await.status().as_u16());
    }
    assert_eq!(&codes[..10], &[303; 10], "{codes:?}");
    assert_eq!(&codes[10..], &[429, 429], "{codes:?}");
    let r = console_sign_in(&attacker, &srv, "admin", "wrong-guess").await;
    assert!(r.headers().contains_key("retry-after"));
    // The owner, from another address, signs in at once.
    let r = console_sign_in(&client_from(&srv, OWNER), &srv, "admin", API_KEY).await;
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(!to.contains("error"), "{to}");
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("mdmd_ui=")));
}

/// A TLS connection to `addr` (no certificate check: this is the attacker's own socket).
fn tls_to(addr: &str) -> Result<openssl::ssl::SslStream<std::net::TcpStream>, String> {
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    b.build()
        .configure()
        .map_err(|e| e.to_string())?
        .verify_hostname(false)
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())
}

/// Read until the server closes the connection: true if it did before the 20 s read timeout.
fn closed_by_server(s: &mut openssl::ssl::SslStream<std::net::TcpStream>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

/// Finding 4: idle and slow-header connections stayed forever. Now a connection that has not
/// sent a whole request head within --header-read-timeout is closed (short and long partial
/// heads), and so is one idle for --idle-timeout after its request.
#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let srv = Server::start_with(&["--header-read-timeout", "2", "--idle-timeout", "3"]);
    let addr = srv.addr.clone();
    let t = std::thread::spawn({
        move || {
            let tls = || tls_to(&addr).unwrap();
            let mut results = Vec::new();
            // Half a request line (before the HTTP version is even known).
            let mut a = tls();
            a.write_all(b"GET /healthz HT").unwrap();
            // A request line and part of a header.
            let mut b = tls();
            b.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaa").unwrap();
            // Nothing at all after the handshake.
            let mut c = tls();
            // A whole request, then idle (keep-alive).
            let mut d = tls();
            d.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
            // Whole headers announcing a body that never comes (a request in flight, stalled).
            let mut e = tls();
            e.write_all(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n")
                .unwrap();
            for s in [&mut a, &mut b, &mut c, &mut d, &mut e] {
                results.push(closed_by_server(s));
            }
            results
        }
    });
    let results = tokio::task::spawn_blocking(move || t.join().unwrap()).await.unwrap();
    assert_eq!(
        results,
        vec![true, true, true, true, true],
        "half line, partial header, silent, idle, stalled body"
    );
    // The server still serves.
    assert_eq!(srv.admin().get("/v1/info").await.unwrap()["version"].is_string(), true);
}

/// Finding 4: no connection cap; at the file-descriptor limit real devices timed out. Now with
/// --max-connections, excess connections are closed at once with one log line, and an enrolled
/// device is served again once the others close.
#[tokio::test]
async fn excess_connections_are_refused_and_devices_served_after() {
    let srv = Server::start_logged(&["--max-connections", "4", "--idle-timeout", "4", "--header-read-timeout", "30"]);
    let mut d = srv.enrolled().await;
    // The device's pooled connections go idle and are closed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let hogs = {
        let addr = srv.addr.clone();
        tokio::task::spawn_blocking(move || {
            let hogs: Vec<_> = (0..4).map(|_| tls_to(&addr).unwrap()).collect();
            // Five more: each is closed before its handshake completes.
            let refused = (0..5).filter(|_| tls_to(&addr).is_err()).count();
            (hogs, refused)
        })
        .await
        .unwrap()
    };
    let (hogs, refused) = hogs;
    assert_eq!(refused, 5, "connections over the cap are closed at once");
    drop(hogs);
    // Served once the others have closed (the closes reach the server promptly).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.session().await.is_ok(), "the device is served again");
    let log = srv.log_text();
    let lines = log.lines().filter(|l| l.contains("connection cap reached")).count();
    assert_eq!(lines, 1, "one log line for the episode, not one per connection");
}

/// Finding 4: every `GET /mdm/enroll` stored a secret that was never pruned. Now expired
/// challenges are deleted by the sweep (here: expiry 1 s, no grace, every second) — seen from
/// outside: the phase-1 answer changes from "expired" to "unknown challenge".
#[tokio::test]
async fn expired_challenges_are_pruned() {
    let srv = Server::start_with(&["--challenge-ttl", "1", "--secret-grace", "0", "--secret-prune-interval", "1"]);
    let profile = srv.profile().await;
    // Whole seconds: expired once the clock is past created + 1.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let err = mdmd::sim::SimDevice::from_profile_service(srv.client(), &profile, common::pool_key(), None, None)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        seen.push(err.clone());
        if err.contains("unknown challenge") {
            break;
        }
        assert!(err.contains("expired"), "{err:?} {seen:?}");
        assert!(Instant::now() < deadline, "never pruned: {seen:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Secrets created without admin credentials are bounded per address: --enroll-per-source.
#[tokio::test]
async fn enrollment_profiles_per_address_are_bounded() {
    let srv = Server::start_with(&["--enroll-per-source", "3"]);
    let c = client_from(&srv, ATTACKER);
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = c
            .get(format!("{}/mdm/enroll", srv.base))
            .basic_auth(ENROLL_USER.0, Some(ENROLL_USER.1))
            .send()
            .await
            .unwrap();
        codes.push((r.status().as_u16(), r.headers().contains_key("retry-after")));
    }
    assert_eq!(codes, vec![(200, false), (200, false), (200, false), (429, true), (429, true)]);
    // Another address still enrolls.
    let r = client_from(&srv, OWNER)
        .get(format!("{}/mdm/enroll", srv.base))
        .basic_auth(ENROLL_USER.0, Some(ENROLL_USER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Wrong enrollment passwords are failed credential checks: 429 after the limit.
    let mut wrong = Vec::new();
    for _ in 0..12 {
        let r = client_from(&srv, "127.0.0.4")
            .get(format!("{}/mdm/enroll", srv.base))
            .basic_auth(ENROLL_USER.0, Some("guess"))
            .send()
            .await
            .unwrap();
        wrong.push(r.status().as_u16());
    }
    assert_eq!(&wrong[..10], &[401; 10]);
    assert_eq!(&wrong[10..], &[429, 429]);
}

/// Finding 5: a console sign-in name was logged raw (a newline forged a log line, ESC reached
/// the terminal, 100 KB were logged whole). Now every log field is escaped and bounded.
#[tokio::test]
async fn log_fields_are_escaped_and_bounded() {
    let srv = Server::start_logged(&[]);
    let c = client_from(&srv, ATTACKER);
    let evil = "mallory\n2026-01-01T00:00:00Z INFO FORGED admin signed in\u{1b}[2J";
    assert_eq!(console_sign_in(&c, &srv, evil, "x").await.status(), 303);
    let long = "L".repeat(100_000);
    assert_eq!(console_sign_in(&c, &srv, &long, "x").await.status(), 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = srv.log_text();
    assert!(!log.contains('\u{1b}'), "a raw ESC in the log");
    let mut found = (false, false);
    for line in log.lines() {
        assert!(!line.contains("INFO FORGED") || line.starts_with('{'), "forged line: {line}");
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "console sign-in failed" {
            let name = v["name"].as_str().unwrap();
            assert!(!name.contains('\n') && !name.contains('\u{1b}'), "{name:?}");
            if name.starts_with("mallory") {
                assert!(name.contains("\\n") && name.contains("\\u{1b}"), "{name:?}");
                found.0 = true;
            }
            if name.starts_with("LLLL") {
                assert!(name.chars().count() <= 300 && name.ends_with('…'), "{} chars", name.len());
                found.1 = true;
            }
        }
        for (_, f) in v.as_object().unwrap() {
            if let Some(s) = f.as_str() {
                assert!(s.chars().count() <= 300, "a field of {} characters", s.len());
                assert!(!s.chars().any(|c| c.is_control()), "a control character in {s:?}");
            }
        }
    }
    assert_eq!(found, (true, true), "{log}");
}
