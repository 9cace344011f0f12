//! Several mdmd instances on one PostgreSQL database, and the database
//! failing under them. Each test makes its own database (see
//! `common::pg`); without a PostgreSQL server they say SKIPPED and pass.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::pg::{FaultProxy, Mode, TestDb};
use common::push::{new_topic, TestCa};
use common::{enqueue, serial_hex, wait_until, Server, API_KEY};
use serde_json::json;

fn pg_args(url: &str) -> Vec<String> {
    vec![
        "--database-url".into(),
        url.into(),
        "--enroll-flow".into(),
        "single".into(),
        "--shared-refresh-ms".into(),
        "200".into(),
        "--database-timeout".into(),
        "2".into(),
    ]
}

fn start(args: &[String]) -> Server {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&a)
}

async fn command_statuses(srv: &Server, uuid: &str) -> Vec<String> {
    let v = srv.admin().get(&format!("/v1/commands/{uuid}")).await.expect("command");
    v["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_serve_one_fleet() {
    let Some(db) = TestDb::create().await else { return };
    let a = start(&pg_args(&db.url));
    let b = a.second();
    // One topic for both, though each generated its own at first start.
    assert_eq!(a.topic().await, b.topic().await);

    // Enrolled through A, polled on B: B knows it, and an enqueue on A is answered on B.
    let mut d = a.enrolled().await;
    d.retarget(&b.base);
    let uuid = enqueue(
        &a.admin(),
        &[&d.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion"]}),
    )
    .await;
    let handled = d.session().await.unwrap();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].command_uuid, uuid);
    assert_eq!(command_statuses(&a, &uuid).await, vec!["Acknowledged"]);
    assert_eq!(command_statuses(&b, &uuid).await, vec!["Acknowledged"]);
    // Not delivered again, on either instance.
    assert!(d.session().await.unwrap().is_empty());
    d.retarget(&a.base);
    assert!(d.session().await.unwrap().is_empty());

    // A queue cleared on B is empty on A at once.
    for _ in 0..2 {
        enqueue(&b.admin(), &[&d.udid], json!({"RequestType": "ProfileList"})).await;
    }
    let (ok, _, err) = b.cli(&["devices", "clear", &d.udid]);
    assert!(ok, "{err}");
    assert!(d.session().await.unwrap().is_empty());

    // Certificates issued by both instances: distinct serials, one registry.
    let d2 = b.enrolled().await;
    let certs = a.admin().get("/v1/certificates?limit=100").await.unwrap();
    let serials: Vec<&str> = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap())
        .collect();
    assert!(serials.len() >= 2, "{certs}");
    assert_eq!(serials.iter().collect::<HashSet<_>>().len(), serials.len());

    // Revoked on A: refused on B with the next request (403, never 401).
    let serial = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["enrollment"] == d2.udid.as_str())
        .and_then(|c| c["serial"].as_str())
        .unwrap_or_else(|| panic!("no certificate bound to {}: {certs}", d2.udid))
        .to_owned();
    let (ok, _, err) = a.cli(&["ca", "revoke", &serial]);
    assert!(ok, "{err}");
    let (status, _) = d2
        .put_raw(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            mdmd::protocol::to_xml(&d2.idle_report()),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    // A push certificate set on A is in use on B within a few seconds.
    let ca = TestCa::new("Apple Push CA (test)");
    let topic = a.topic().await;
    let c = common::push::set_push_cert(&a, &ca, &topic).await;
    let serial = serial_hex(&c);
    let seen = wait_until(Duration::from_secs(5), || async {
        let v = b.admin().get("/v1/push-cert").await.unwrap();
        v["configured"] == true && v["serial"] == serial.as_str()
    })
    .await;
    assert!(seen, "B did not take up the push certificate set on A");
    let _ = new_topic;
}

/// A device's loop against whichever instance answers: every report that got
/// an HTTP 200 is "acknowledged" and must be stored; a command whose result
/// was acknowledged must never be delivered again.
async fn drain(mut d: mdmd::sim::SimDevice, fallback: String) -> (String, Vec<String>, bool) {
    let mut switched = false;
    let mut acked: Vec<String> = Vec::new();
    let mut report = d.idle_report();
    let mut last: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{}: did not finish", d.udid);
        match d.connect(&report).await {
            Ok(next) => {
                if let Some(u) = last.take() {
                    acked.push(u);
                }
                match next {
                    Some(cmd) => {
                        assert!(
                            !acked.contains(&cmd.uuid),
                            "{}: {} delivered again after its result was acknowledged",
                            d.udid,
                            cmd.uuid
                        );
                        let (_, r) = d.answer(&cmd);
                        last = Some(cmd.uuid.clone());
                        report = r;
                    }
                    None => return (d.udid.clone(), acked, switched),
                }
            }
            Err(_) => {
                // That instance is gone: the balancer sends us to the other.
                d.retarget(&fallback);
                switched = true;
                last = None;
                report = d.idle_report();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_one_of_two_instances_under_load() {
    let Some(db) = TestDb::create().await else { return };
    let mut a = start(&pg_args(&db.url));
    let b = a.second();
    let mut devices = Vec::new();
    for i in 0..8 {
        let mut d = if i % 2 == 0 { a.enrolled().await } else { b.enrolled().await };
        // Half poll A (which dies), half B.
        d.retarget(if i < 4 { &a.base } else { &b.base });
        devices.push(d);
    }
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let idr: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut uuids = Vec::new();
    const ROUNDS: usize = 25;
    for _ in 0..ROUNDS {
        uuids.push(
            enqueue(
                &b.admin(),
                &idr,
                json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion"]}),
            )
            .await,
        );
    }
    let tasks: Vec<_> = devices.into_iter().map(|d| tokio::spawn(drain(d, b.base.clone()))).collect();
    // Kill A once results are flowing.
    let busy = wait_until(Duration::from_secs(20), || async {
        command_statuses(&b, &uuids[1]).await.iter().any(|s| s == "Acknowledged")
    })
    .await;
    assert!(busy);
    a.kill9();
    let mut acked_total = 0;
    let mut fell_over = 0;
    for t in tasks {
        let (udid, acked, switched) = t.await.expect("device task");
        fell_over += switched as usize;
        acked_total += acked.len();
        // Every acknowledged result is stored.
        let hist = b.admin().get(&format!("/v1/devices/{udid}/commands")).await.unwrap();
        for u in &acked {
            let st = hist["commands"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["command_uuid"] == u.as_str())
                .map(|c| c["status"].as_str().unwrap_or_default().to_owned());
            assert_eq!(st.as_deref(), Some("Acknowledged"), "{udid}: {u} acknowledged but not stored");
        }
    }
    // And every command finished everywhere, each in order.
    for u in &uuids {
        assert_eq!(command_statuses(&b, u).await, vec!["Acknowledged"; 8], "{u}");
    }
    // Each device on A may have lost the answer to one report in flight when A died.
    assert!(acked_total >= ROUNDS * 8 - 4, "{acked_total}");
    assert!(fell_over > 0, "A died after its devices were done: the test proved nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_and_partition_give_503_then_recover() {
    let Some(db) = TestDb::create().await else { return };
    let proxy = FaultProxy::start(common::pg::hostport(&db.url)).await;
    let url = common::pg::with_hostport(&db.url, &proxy.addr.to_string());
    let srv = start(&pg_args(&url));
    let mut d = srv.enrolled().await;
    let before = enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    assert_eq!(d.session().await.unwrap().len(), 1);

    let idle = |d: &mdmd::sim::SimDevice| mdmd::protocol::to_xml(&d.idle_report());
    for mode in [Mode::Down, Mode::Frozen] {
        proxy.set(mode);
        // The device gets 503 (retry later), never 401 (which would unenroll it), and soon.
        for _ in 0..3 {
            let t = Instant::now();
            let (status, body) = d.put_raw("/mdm/connect", "application/x-apple-aspen-mdm", idle(&d)).await.unwrap();
            assert_eq!(status, 503, "{mode:?}: {}", String::from_utf8_lossy(&body));
            assert!(
                t.elapsed() < Duration::from_secs(12),
                "{mode:?}: bounded by the timeout, took {:?}",
                t.elapsed()
            );
        }
        let resp = srv
            .client()
            .get(format!("{}/v1/devices", srv.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "{mode:?}");
        // The balancer's health check takes this instance out meanwhile.
        let h = srv.client().get(format!("{}/health", srv.base)).send().await.unwrap();
        assert_eq!(h.status(), 503, "{mode:?}");
        proxy.set(Mode::Pass);
        // Reconnects by itself; nothing acknowledged was lost.
        let back = wait_until(Duration::from_secs(20), || async {
            d.put_raw("/mdm/connect", "application/x-apple-aspen-mdm", idle(&d))
                .await
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        })
        .await;
        assert!(back, "{mode:?}: mdmd did not recover");
        let h = srv.client().get(format!("{}/health", srv.base)).send().await.unwrap();
        assert_eq!(h.status(), 200, "{mode:?}");
        assert_eq!(command_statuses(&srv, &before).await, vec!["Acknowledged"]);
        let u = enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "ProfileList"})).await;
        let h = d.session().await.unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(command_statuses(&srv, &u).await, vec!["Acknowledged"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_copy_moves_an_installation_to_postgres() {
    if common::on_postgres() {
        return; // this one is about a redb installation
    }
    let Some(db) = TestDb::create().await else { return };
    // An installation on redb with an enrolled device and a command waiting.
    let mut srv = Server::start_with(&["--enroll-flow", "single"]);
    let mut d = srv.enrolled().await;
    let done = enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    assert_eq!(d.session().await.unwrap().len(), 1);
    let waiting = enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "ProfileList"})).await;
    srv.kill9();

    let run = common::mdmd;
    let data = srv.data_dir();
    let (ok, out, err) = run(&["db", "copy", "--from", data.to_str().unwrap(), "--to", &db.url]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("counts and checksums match"), "{out}");
    for t in ["enrollments", "commands", "deliveries", "certs", "settings"] {
        let line = out.lines().find(|l| l.starts_with(t)).unwrap_or_else(|| panic!("{t} in {out}"));
        assert!(line.ends_with("ok"), "{line}");
    }
    // Not twice into the same database.
    let (ok, _, err) = run(&["db", "copy", "--from", data.to_str().unwrap(), "--to", &db.url]);
    assert!(!ok && err.contains("empty store"), "{err}");
    let (ok, out, _) = run(&["db", "migrate", "--database-url", &db.url]);
    assert!(ok && out.contains("schema up to date") && out.contains("applied"), "{out}");

    // The same certs on a new instance on PostgreSQL: the device carries on.
    let args = pg_args(&db.url);
    let pg = srv.second_with(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(pg.topic().await, d.topic, "the topic came along");
    d.retarget(&pg.base);
    let h = d.session().await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].command_uuid, waiting);
    assert_eq!(command_statuses(&pg, &done).await, vec!["Acknowledged"]);
    assert_eq!(command_statuses(&pg, &waiting).await, vec!["Acknowledged"]);
}
