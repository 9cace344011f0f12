//! APNs end to end against the real server binary: the push certificate
//! (PEM, RC2 PKCS#12, topic checks, renewal without restart, expiry, the
//! vendor-signed request), exact requests and every APNs answer against an
//! independent recording HTTP/2 server, and simulated devices woken through
//! the APNs stand-in.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::push::{new_topic, pem_bundle, Answer, Recorder, TestCa};
use common::{enqueue, Server, API_KEY};
use serde_json::{json, Value};

async fn put_cert(srv: &Server, body: Vec<u8>, ct: &str, password: Option<&str>, force: bool) -> (u16, Value) {
    let mut r = srv
        .client()
        .put(format!("{}/v1/push-cert{}", srv.base, if force { "?force=true" } else { "" }))
        .bearer_auth(API_KEY)
        .header("content-type", ct)
        .body(body);
    if let Some(p) = password {
        r = r.header("x-password", p);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn set_cert(srv: &Server, ca: &TestCa, topic: &str) -> openssl::x509::X509 {
    let (c, k) = ca.push_cert(topic, 365);
    let (s, v) = put_cert(srv, pem_bundle(&c, &k), "application/x-pem-file", None, false).await;
    assert_eq!(s, 200, "{v}");
    c
}

/// `GET /health`, which needs no key.
async fn health(srv: &Server) -> Value {
    srv.client()
        .get(format!("{}/health", srv.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Peer fixtures kept in the repository (`fixtures/`, with their LICENSE).
fn shared(rel: &str) -> std::path::PathBuf {
    common::repo_file("fixtures").join(rel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_certificate_is_read_checked_kept_and_requested() {
    let mut srv = Server::start();
    let admin = srv.admin();
    let info = admin.get("/v1/info").await.unwrap();
    assert_eq!(info["push_configured"], false);
    assert!(info["push_warning"].as_str().unwrap().contains("re-enroll"), "{info}");
    let h = health(&srv).await;
    assert_eq!(h["status"], "warning", "{h}");

    // Not push certificates, or not readable: 400, nothing changes.
    let (s, v) = put_cert(
        &srv,
        std::fs::read(shared("push-certs/mock_push_cert.pem")).unwrap(),
        "application/x-pem-file",
        None,
        false,
    )
    .await;
    assert_eq!(s, 400, "certificate without key: {v}");
    let p12 = std::fs::read(shared("push-certs/pushcert.p12")).unwrap();
    let (s, v) = put_cert(&srv, p12.clone(), "application/x-pkcs12", Some("wrong"), false).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("password"), "{v}");
    // The real RC2-encrypted PKCS#12 opens (legacy provider) and is refused for what it is.
    let (s, v) = put_cert(&srv, p12, "application/x-pkcs12", Some("secret"), false).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("no UID"), "{v}");
    let mut pem = std::fs::read(shared("push-certs/pushcert.pem")).unwrap();
    pem.extend(std::fs::read(shared("push-certs/ProviderPrivateKey.key")).unwrap());
    let (s, v) = put_cert(&srv, pem, "application/x-pem-file", Some("secret"), false).await;
    assert_eq!(s, 400);
    // (These peer fixtures are a mismatched pair: the encrypted key opened and was checked.)
    assert!(
        v["error"].as_str().unwrap().contains("does not belong"),
        "encrypted PEM key opened: {v}"
    );
    assert_eq!(admin.get("/v1/push-cert").await.unwrap()["configured"], false);

    // A push certificate: its UID becomes the topic at once.
    let ca = TestCa::new("Test Apple Push CA");
    let t1 = new_topic();
    set_cert(&srv, &ca, &t1).await;
    assert_eq!(admin.get("/v1/info").await.unwrap()["topic"], t1.as_str());
    use std::os::unix::fs::PermissionsExt as _;
    let key_mode = std::fs::metadata(srv.certs_dir().join("push-key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    // Renewal (same topic) as an RC2 PKCS#12 through the CLI.
    let dir = tempfile::tempdir().unwrap();
    let (c2, k2) = ca.push_cert(&t1, 365);
    std::fs::write(dir.path().join("c2.pem"), c2.to_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("k2.pem"), k2.private_key_to_pem_pkcs8().unwrap()).unwrap();
    common::openssl(
        &[
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            "c2.pem",
            "-inkey",
            "k2.pem",
            "-out",
            "renewed.p12",
            "-passout",
            "pass:pw",
        ],
        dir.path(),
    );
    let p = dir.path().join("renewed.p12");
    let v = srv.cli_json(&["push-cert", "set", p.to_str().unwrap(), "--password", "pw"]);
    assert_eq!(v["stranded_devices"], 0);
    let shown = srv.cli_json(&["push-cert", "show"]);
    assert_eq!(shown["serial"], common::serial_hex(&c2));

    // Devices enrolled under t1: a certificate with another topic strands them.
    let d = srv.enrolled().await;
    assert_eq!(d.topic, t1);
    let t2 = new_topic();
    let (c3, k3) = ca.push_cert(&t2, 10);
    let (s, v) = put_cert(&srv, pem_bundle(&c3, &k3), "application/x-pem-file", None, false).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["stranded_devices"], 1);
    assert_eq!(
        admin.get("/v1/info").await.unwrap()["topic"],
        t1.as_str(),
        "refused means unchanged"
    );
    std::fs::write(dir.path().join("c3.pem"), c3.to_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("k3.pem"), k3.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let (ok, _, err) = srv.cli(&[
        "push-cert",
        "set",
        dir.path().join("c3.pem").to_str().unwrap(),
        "--key",
        dir.path().join("k3.pem").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("re-enroll"), "{err}");
    let v = srv.cli_json(&[
        "push-cert",
        "set",
        dir.path().join("c3.pem").to_str().unwrap(),
        "--key",
        dir.path().join("k3.pem").to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(v["stranded_devices"], 1);
    // Expiring within 30 days: warned on health.
    let h = health(&srv).await;
    assert_eq!(h["status"], "warning");
    assert_eq!(h["push"]["expiring_soon"], true);
    assert!(h["warnings"][0].as_str().unwrap().contains("expires in"), "{h}");
    // Kept across a restart.
    srv.restart();
    assert_eq!(srv.admin().get("/v1/info").await.unwrap()["topic"], t2.as_str());

    // The request for Apple's portal, signed with the vendor certificate.
    let vendor = TestCa::new("MDM Vendor: Example");
    std::fs::write(dir.path().join("vendor.pem"), vendor.cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("vendor.key"), vendor.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let out = dir.path().join("req");
    let (ok, stdout, err) = srv.cli(&[
        "push-cert",
        "request",
        "--vendor-cert",
        dir.path().join("vendor.pem").to_str().unwrap(),
        "--vendor-key",
        dir.path().join("vendor.key").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("Renew") && stdout.contains(&t2),
        "renewal keeps the topic and says so: {stdout}"
    );
    let mode = std::fs::metadata(out.join("push-request.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let b64 = std::fs::read_to_string(out.join("push-request.b64")).unwrap();
    let plist_bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap();
    let req: plist::Dictionary = plist::from_bytes(&plist_bytes).unwrap();
    let csr_der = base64::engine::general_purpose::STANDARD
        .decode(req["PushCertRequestCSR"].as_string().unwrap())
        .unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(req["PushCertSignature"].as_string().unwrap())
        .unwrap();
    assert!(req["PushCertCertificateChain"].as_string().unwrap().contains("BEGIN CERTIFICATE"));
    std::fs::write(out.join("csr.der"), &csr_der).unwrap();
    std::fs::write(out.join("sig.bin"), &sig).unwrap();
    std::fs::write(out.join("vendor.pub"), vendor.key.public_key_to_pem().unwrap()).unwrap();
    let verified = common::openssl(
        &["dgst", "-sha256", "-verify", "vendor.pub", "-signature", "sig.bin", "csr.der"],
        &out,
    );
    assert!(String::from_utf8_lossy(&verified).contains("Verified OK"));
    // The CSR is for the push key that was written.
    let csr = openssl::x509::X509Req::from_der(&csr_der).unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(out.join("push-request.key")).unwrap()).unwrap();
    assert!(csr.public_key().unwrap().public_eq(&key));
}

async fn server_with_recorder(ca: &TestCa, rec: &Recorder, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("recorder-ca.pem");
    std::fs::write(&ca_file, &rec.server_cert_pem).unwrap();
    let ca_s = ca_file.display().to_string();
    let mut args = vec![
        "--apns-url",
        rec.url.as_str(),
        "--apns-ca",
        ca_s.as_str(),
        "--push-backoff-ms",
        "50",
        "--push-max-attempts",
        "4",
    ];
    args.extend_from_slice(extra);
    let _ = ca;
    (Server::start_with(&args), dir)
}

async fn device_push(srv: &Server, udid: &str) -> Value {
    // Outcomes reach the store in batches: wait for the record (bounded).
    for _ in 0..50 {
        let v = srv.admin().get(&format!("/v1/devices/{udid}")).await.unwrap();
        if v["push"]["last_push_outcome"].is_string() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no push outcome recorded for {udid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_exact_coalesced_and_every_apns_answer_is_handled() {
    let ca = TestCa::new("Test Apple Push CA");
    let rec = Recorder::start(&ca.cert).await;
    let (srv, _dir) = server_with_recorder(&ca, &rec, &["--push-coalesce-ms", "400"]).await;
    let admin = srv.admin();
    let topic = new_topic();
    let cert = set_cert(&srv, &ca, &topic).await;
    let mut devs = Vec::new();
    for _ in 0..7 {
        let d = srv.enrolled().await;
        devs.push(d);
    }
    let tok = |i: usize| hex::encode(&devs[i].token);
    let (a, b, c, d, e, f, g) = (0, 1, 2, 3, 4, 5, 6);
    rec.script(&tok(b), vec![Answer::Status(410, Some("Unregistered"))]);
    rec.script(&tok(c), vec![Answer::Status(400, Some("BadDeviceToken"))]);
    rec.script(&tok(d), vec![Answer::Status(400, Some("DeviceTokenNotForTopic"))]);
    rec.script(
        &tok(e),
        vec![
            Answer::Status(429, Some("TooManyRequests")),
            Answer::Status(429, Some("TooManyRequests")),
            Answer::Status(200, None),
        ],
    );
    rec.script(&tok(f), vec![Answer::Status(500, Some("InternalServerError"))]);
    rec.script(&tok(g), vec![Answer::Drop, Answer::Status(200, None)]);
    let id = |i: usize| devs[i].udid.clone();

    // Five commands in quick succession: one push, exactly as Apple specifies.
    for _ in 0..5 {
        enqueue(&admin, &[&id(a)], json!({"RequestType": "SecurityInfo"})).await;
    }
    let seen = rec.wait_for(&tok(a), 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen_after = rec.seen_for(&tok(a));
    assert_eq!(seen_after.len(), 1, "coalesced: {seen_after:?}");
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, format!("/3/device/{}", tok(a)));
    assert_eq!(s.headers["apns-topic"], topic);
    assert_eq!(s.headers["apns-push-type"], "mdm");
    assert_eq!(s.headers["apns-priority"], "10");
    let exp: i64 = s.headers["apns-expiration"].parse().unwrap();
    assert!(exp > mdmd::clock::now() + 3600, "{exp}");
    assert_eq!(s.body, format!(r#"{{"mdm":"{}"}}"#, devs[a].push_magic).into_bytes());
    assert!(s.client_subject.contains(&format!("UID={topic}")), "{}", s.client_subject);
    let v = device_push(&srv, &id(a)).await;
    assert_eq!(v["push"]["last_push_outcome"], "accepted");
    // "push": false queues without waking.
    admin
        .post(
            "/v1/commands",
            json!({"targets": [id(a)], "command": {"RequestType": "SecurityInfo"}, "push": false}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rec.seen_for(&tok(a)).len(), 1);

    for i in [b, c, d, e, f] {
        enqueue(&admin, &[&id(i)], json!({"RequestType": "SecurityInfo"})).await;
    }
    // 410: recorded, pushes to the token stop until a newer TokenUpdate.
    let v = device_push(&srv, &id(b)).await;
    assert_eq!(v["push"]["last_push_outcome"], "Unregistered", "{v}");
    assert_eq!(v["push"]["disabled"], "Unregistered");
    enqueue(&admin, &[&id(b)], json!({"RequestType": "SecurityInfo"})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rec.seen_for(&tok(b)).len(), 1, "no push to an unregistered token");
    devs[b].token_update().await.unwrap();
    // TokenUpdate with commands pending wakes the device again.
    rec.wait_for(&tok(b), 2, Duration::from_secs(5)).await;
    assert_eq!(rec.seen_for(&tok(b)).len(), 2);
    // 400 BadDeviceToken / DeviceTokenNotForTopic: recorded, not retried.
    for (i, reason) in [(c, "BadDeviceToken"), (d, "DeviceTokenNotForTopic")] {
        let v = device_push(&srv, &id(i)).await;
        assert_eq!(v["push"]["last_push_outcome"], reason);
        assert_eq!(rec.seen_for(&tok(i)).len(), 1, "{reason} must not be retried");
    }
    // 429, 429, 200: retried with backoff until accepted.
    let seen = rec.wait_for(&tok(e), 3, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 3);
    // 500 every time: a bounded number of attempts (4), then given up.
    let seen = rec.wait_for(&tok(f), 4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rec.seen_for(&tok(f)).len(), 4, "{seen:?}");
    let v = device_push(&srv, &id(f)).await;
    assert_eq!(v["push"]["last_push_outcome"], "InternalServerError");
    // A dropped connection (alone: it fails every stream in flight on it): retried on a new one.
    enqueue(&admin, &[&id(g)], json!({"RequestType": "SecurityInfo"})).await;
    let seen = rec.wait_for(&tok(g), 2, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 2);
    let v = device_push(&srv, &id(g)).await;
    assert_eq!(v["push"]["last_push_outcome"], "accepted");
    let v = device_push(&srv, &id(e)).await;
    assert_eq!(v["push"]["last_push_outcome"], "accepted");
    // No push failure drops a queued command.
    for i in [b, c, d, f] {
        let v = admin.get(&format!("/v1/devices/{}", id(i))).await.unwrap();
        assert!(v["pending_commands"].as_u64().unwrap() >= 1, "{v}");
    }

    // A renewed certificate takes effect at once; a push in flight on the old one completes.
    rec.script(&tok(a), vec![Answer::Slow(Duration::from_millis(1500)), Answer::Status(200, None)]);
    let (srv_base, client) = (srv.base.clone(), srv.client());
    let target = id(a);
    let slow = tokio::spawn(async move {
        client
            .post(format!("{srv_base}/v1/push"))
            .bearer_auth(API_KEY)
            .json(&json!({"targets": [target]}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let renewed = set_cert(&srv, &ca, &topic).await;
    let r = slow.await.unwrap();
    assert_eq!(r["results"][id(a)]["accepted"], true, "{r}");
    let v = srv.cli_json(&["push", &id(a)]);
    assert_eq!(v["results"][id(a)]["accepted"], true, "{v}");
    let last = rec.seen_for(&tok(a)).pop().unwrap();
    assert_eq!(last.client_serial, common::serial_hex(&renewed));
    assert_ne!(last.client_serial, common::serial_hex(&cert));

    // 403: the certificate is refused; surfaced on health; no pushes until a new one.
    rec.script(&tok(a), vec![Answer::Status(403, Some("BadCertificate"))]);
    let v = admin.post("/v1/push", json!({"targets": [id(a)]})).await.unwrap();
    assert_eq!(v["results"][id(a)]["outcome"], "BadCertificate");
    let h = health(&srv).await;
    assert_eq!(h["push"]["certificate_error"], "BadCertificate", "{h}");
    let before = rec.seen_for(&tok(e)).len();
    let v = admin.post("/v1/push", json!({"targets": [id(e)]})).await.unwrap();
    assert_eq!(v["results"][id(e)]["accepted"], false);
    assert_eq!(rec.seen_for(&tok(e)).len(), before, "not sent while the certificate is refused");
    set_cert(&srv, &ca, &topic).await;
    let v = admin.post("/v1/push", json!({"targets": [id(e)]})).await.unwrap();
    assert_eq!(v["results"][id(e)]["accepted"], true, "{v}");
    let stats = admin.get("/v1/stats").await.unwrap();
    assert!(stats["push"]["retried"].as_u64().unwrap() >= 6, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_are_woken_through_the_apns_stand_in() {
    let ca = TestCa::new("Test Apple Push CA");
    let standin = mdmd::sim::apns::StandIn::start("127.0.0.1:0", vec![ca.cert.clone()]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("standin.pem");
    std::fs::write(&ca_file, standin.server_cert.to_pem().unwrap()).unwrap();
    let url = standin.url();
    let ca_s = ca_file.display().to_string();
    let srv = Server::start_with(&[
        "--apns-url",
        &url,
        "--apns-ca",
        &ca_s,
        "--push-coalesce-ms",
        "50",
        "--repush-after",
        "1",
        "--repush-interval",
        "1",
    ]);
    let admin = srv.admin();
    let topic = new_topic();
    set_cert(&srv, &ca, &topic).await;
    let stats = std::sync::Arc::new(mdmd::sim::fleet::FleetStats::default());
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let d = srv.enrolled().await;
        ids.push(d.udid.clone());
        tokens.push(hex::encode(&d.token));
        mdmd::sim::fleet::serve(&standin, d, stats.clone());
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let uuid = enqueue(&admin, &refs, json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion"]})).await;
    // Nobody polls: the push wakes each device, which connects and answers.
    let done = |v: &Value| v["deliveries"].as_array().unwrap().iter().all(|d| d["status"] == "Acknowledged");
    let mut v = Value::Null;
    for _ in 0..100 {
        v = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
        if done(&v) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done(&v), "{v}");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(standin.stats.rejected.load(Relaxed), 0, "the stand-in refused a request");
    assert!(standin.stats.accepted.load(Relaxed) >= 3);

    // Queued without a push: the periodic re-push wakes the device that has work waiting.
    let r = admin
        .post(
            "/v1/commands",
            json!({"targets": [ids[0]], "command": {"RequestType": "SecurityInfo"}, "push": false}),
        )
        .await
        .unwrap();
    let quiet = r["command_uuid"].as_str().unwrap().to_owned();
    let mut status = Value::Null;
    for _ in 0..150 {
        status = admin.get(&format!("/v1/commands/{quiet}")).await.unwrap()["deliveries"][0]["status"].clone();
        if status == "Acknowledged" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "Acknowledged");

    // An erased device's token is gone at APNs: 410, and pushes to it stop.
    standin.unregister(&tokens[2]);
    let v = admin.post("/v1/push", json!({"targets": [ids[2]]})).await.unwrap();
    assert_eq!(v["results"][&ids[2]]["outcome"], "Unregistered", "{v}");
    let v = admin.post("/v1/push", json!({"targets": [ids[2]]})).await.unwrap();
    assert!(v["results"][&ids[2]]["outcome"].as_str().unwrap().starts_with("not pushed"), "{v}");
}

/// A server that pushes through the APNs stand-in a `mdmd sim` subcommand
/// will run on a free loopback port (mdmd reads --apns-ca when it connects:
/// the subcommand writes it after mdmd starts), with a push certificate set;
/// and the stand-in flags for that subcommand.
async fn server_for_sim_standin(extra: &[&str]) -> (Server, tempfile::TempDir, Vec<String>) {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let standin_ca = dir.path().join("standin.pem");
    let ca = TestCa::new("Test Apple Push CA");
    let push_ca = dir.path().join("push-ca.pem");
    std::fs::write(&push_ca, ca.cert.to_pem().unwrap()).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let mut args = vec![
        "--apns-url",
        &url,
        "--apns-ca",
        standin_ca.to_str().unwrap(),
        "--push-coalesce-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    let srv = Server::start_with(&args);
    set_cert(&srv, &ca, &new_topic()).await;
    let flags = vec![
        "--apns-listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--push-ca".to_owned(),
        push_ca.to_str().unwrap().to_owned(),
        "--write-apns-ca".to_owned(),
        standin_ca.to_str().unwrap().to_owned(),
        "--user".to_owned(),
        format!("{}:{}", common::ENROLL_USER.0, common::ENROLL_USER.1),
    ];
    (srv, dir, flags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_fleet_subcommand_is_woken_by_the_server_and_measures() {
    let (srv, _dir, standin) = server_for_sim_standin(&[]).await;
    let mut args = vec!["sim", "fleet", "-n", "3"];
    args.extend(standin.iter().map(String::as_str));
    args.extend_from_slice(&["--measure-rounds", "2", "--seconds", "60"]);
    let v = srv.cli_json(&args);
    assert_eq!(v["one_target"]["results"], 2, "{v}");
    assert_eq!(v["all_targets"]["results"], 6, "{v}");
    assert_eq!(v["fleet"]["standin_rejected"], 0, "{v}");
    assert_eq!(v["fleet"]["errors"], 0, "{v}");
}

/// `mdmd sim soak` (what `make soak` runs for an hour), for a minute: the
/// fleet checks in, is pushed, answers the stream of commands and profile
/// installs, and renews its identities (issued for a day, renewed a day
/// before expiry, a sweep every 20 s); every sample reads the server's
/// process and store, and the latency of requests that really happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_soak_subcommand_samples_a_fleet_at_a_steady_load() {
    let renewals = ["--identity-days", "1", "--renew-before-days", "1", "--renew-interval", "20"];
    let (srv, dir, standin) = server_for_sim_standin(&renewals).await;
    let out = dir.path().join("samples.jsonl");
    let pid = srv.pid().unwrap().to_string();
    let data = srv.data_dir();
    let mut args = vec![
        "sim",
        "soak",
        "-n",
        "5",
        "--minutes",
        "1",
        "--sample-secs",
        "10",
        "--poll-secs",
        "5",
        "--command-secs",
        "5",
        "--profile-secs",
        "20",
        "--batch",
        "3",
        "--server-pid",
        &pid,
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(standin.iter().map(String::as_str));
    let v = srv.cli_json(&args);
    assert_eq!(v["devices"], 5, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["samples"].as_u64().unwrap() >= 5, "{v}");
    assert!(v["commands_answered"].as_u64().unwrap() >= 10, "{v}");
    assert!(v["pushes"].as_u64().unwrap() > 0, "{v}");
    // Every device renewed at least once, by the server's own sweep.
    assert!(v["identity_renewals"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(v["acme_certificates"], 0, "ACME is off: {v}");
    let samples: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len() as u64, v["samples"].as_u64().unwrap());
    for s in &samples {
        assert!(s["rss_kib"].as_u64().unwrap() > 1000, "{s}");
        assert!(s["open_files"].as_u64().unwrap() > 3, "{s}");
        assert!(s["store_bytes"].as_u64().is_some(), "{s}");
        // Five devices polling every 5 s: about ten requests in each 10 s.
        assert!(s["requests"].as_u64().unwrap() >= 5, "{s}");
        assert!(s["p99_ms"].as_f64().unwrap() >= s["p50_ms"].as_f64().unwrap(), "{s}");
        assert!(s["server_requests"].as_u64().unwrap() >= 5, "{s}");
        assert!(s["server_p99_ms_le"].as_f64().is_some(), "{s}");
    }
}
