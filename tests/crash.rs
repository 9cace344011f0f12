//! Durability: SIGKILL the server at the worst moments and check that nothing
//! acknowledged with a 2xx was lost and nothing finished is delivered again.

mod common;

use std::collections::HashSet;

use common::{enqueue, Server};
use mdmd::protocol::Status;
use serde_json::json;

#[tokio::test]
async fn kill9_between_enqueue_and_delivery_and_between_result_and_next_poll() {
    let mut srv = Server::start();
    let admin = srv.admin();
    let mut a = srv.device().await;
    a.enroll().await.unwrap();

    // Enqueue (each answered 200), then SIGKILL before any delivery.
    let mut uuids = Vec::new();
    for i in 0..12 {
        let cmd = if i % 2 == 0 {
            json!({"RequestType": "SecurityInfo"})
        } else {
            json!({"RequestType": "ProfileList"})
        };
        uuids.push(enqueue(&admin, &[&a.udid], cmd).await);
    }
    srv.restart();

    // Now walk the queue, killing the server after every result it answered 200.
    let mut done = Vec::new();
    let mut delivered = Vec::new();
    let mut next = a.connect(&a.idle_report()).await.unwrap();
    while let Some(cmd) = next {
        assert!(!done.contains(&cmd.uuid), "finished command {} delivered again", cmd.uuid);
        delivered.push(cmd.uuid.clone());
        let (status, report) = a.answer(&cmd);
        assert_eq!(status, Status::Acknowledged);
        // The server answers the result with 200 (and the next command): it is on disk now.
        let _ = a.connect(&report).await.unwrap();
        done.push(cmd.uuid.clone());
        srv.restart();
        // A new session after the crash starts with Idle.
        next = a.connect(&a.idle_report()).await.unwrap();
    }
    assert_eq!(delivered, uuids, "every command delivered once, in order");
    for u in &uuids {
        let c = admin.get(&format!("/v1/commands/{u}")).await.unwrap();
        assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{u}");
        assert!(c["deliveries"][0]["result"].is_object());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_concurrent_load_keeps_every_acknowledged_result() {
    let mut srv = Server::start();
    let admin = srv.admin();
    let mut devices = Vec::new();
    for _ in 0..40 {
        let d = srv.device().await;
        d.enroll().await.unwrap();
        devices.push(d);
    }
    let ids: Vec<&str> = devices.iter().map(|d| d.udid.as_str()).collect();
    let uuid = enqueue(&admin, &ids, json!({"RequestType": "SecurityInfo"})).await;
    // Every device fetches its command; then all report concurrently while we SIGKILL.
    let mut reports = Vec::new();
    for d in devices.iter_mut() {
        let cmd = d.connect(&d.idle_report()).await.unwrap().unwrap();
        reports.push(d.answer(&cmd).1);
    }
    let acked_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (d, r) in devices.into_iter().zip(reports) {
        let counter = acked_so_far.clone();
        tasks.push(tokio::spawn(async move {
            let ok = matches!(d.connect(&r).await, Ok(None));
            if ok {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (d.udid.clone(), ok)
        }));
    }
    // Kill as soon as some results were answered 200 while others are in flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while acked_so_far.load(std::sync::atomic::Ordering::SeqCst) < 8 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    srv.kill9();
    let mut acked = HashSet::new();
    for t in tasks {
        let (udid, ok) = t.await.unwrap();
        if ok {
            acked.insert(udid);
        }
    }
    srv.restart();
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    for d in c["deliveries"].as_array().unwrap() {
        let id = d["enrollment"].as_str().unwrap();
        if acked.contains(id) {
            assert_eq!(d["status"], "Acknowledged", "{id} got 200 but its result was lost");
        } else {
            assert!(d["status"] == "Acknowledged" || d["status"] == "Pending", "{d}");
        }
    }
    eprintln!("{} of 40 results were acknowledged before the kill", acked.len());
    assert!(acked.len() >= 8, "the kill came too early to test anything");
}
