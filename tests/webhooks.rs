//! Webhooks end to end: a receiver on 127.0.0.1 parses every event with the
//! shapes of NanoMDM's MicroMDM-compatible webhook (`service/microwebhook`:
//! Event, CheckinEvent, AcknowledgeEvent), checks the HMAC signature, fails
//! on purpose, goes away, and mdmd is killed with SIGKILL in between:
//! nothing acknowledged is lost.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{enqueue, Server};
use serde::Deserialize;
use serde_json::json;

const SECRET: &str = "hook-secret-5c1d";

/// NanoMDM's `microwebhook.Event`, field for field (unknown fields refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    topic: String,
    event_id: String,
    created_at: String,
    #[serde(default)]
    acknowledge_event: Option<AcknowledgeEvent>,
    #[serde(default)]
    checkin_event: Option<CheckinEvent>,
    #[serde(default)]
    mdmd_event: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcknowledgeEvent {
    #[serde(default)]
    udid: Option<String>,
    #[serde(default)]
    enrollment_id: Option<String>,
    status: String,
    #[serde(default)]
    command_uuid: Option<String>,
    #[serde(default)]
    url_params: Option<std::collections::HashMap<String, String>>,
    raw_payload: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckinEvent {
    #[serde(default)]
    udid: Option<String>,
    #[serde(default)]
    enrollment_id: Option<String>,
    url_params: Option<std::collections::HashMap<String, String>>,
    raw_payload: String,
}

#[derive(Default)]
struct Received {
    events: Vec<Event>,
    /// Requests to refuse (HTTP 500) before accepting.
    refuse: usize,
    attempts: usize,
}

/// A receiver: verifies the signature, records the event.
async fn receiver(addr: Option<std::net::SocketAddr>) -> (String, Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
    let state = Arc::new(Mutex::new(Received::default()));
    let st = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let st = st.clone();
            async move {
                let want = mdmd::ops::webhooks::signature(SECRET.as_bytes(), &body);
                let got = headers.get("x-hmac-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                assert_eq!(got, want, "HMAC signature");
                let ev: Event = serde_json::from_slice(&body).expect("NanoMDM webhook shape");
                assert_eq!(
                    headers.get("x-mdmd-event-id").and_then(|v| v.to_str().ok()),
                    Some(ev.event_id.as_str())
                );
                let mut s = st.lock().unwrap();
                s.attempts += 1;
                if s.refuse > 0 {
                    s.refuse -= 1;
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                s.events.push(ev);
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let a = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{a}/hook"), state, h)
}

async fn wait_for(state: &Arc<Mutex<Received>>, what: &str, mut done: impl FnMut(&Received) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if done(&state.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn raw(b64: &str) -> plist::Dictionary {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("raw_payload base64");
    plist::from_bytes(&bytes).expect("raw_payload is the device's plist")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkins_and_results_reach_the_receiver_in_the_micromdm_format() {
    let (url, state, _h) = receiver(None).await;
    let srv = Server::start_with(&["--webhook-url", &url, "--webhook-secret", SECRET]);
    let mut d = srv.enrolled().await;
    wait_for(&state, "Authenticate and TokenUpdate", |r| {
        ["mdm.Authenticate", "mdm.TokenUpdate"]
            .iter()
            .all(|t| r.events.iter().any(|e| e.topic == *t))
    })
    .await;
    {
        let r = state.lock().unwrap();
        let auth = r.events.iter().find(|e| e.topic == "mdm.Authenticate").expect("mdm.Authenticate");
        let c = auth.checkin_event.as_ref().unwrap();
        assert_eq!(c.udid.as_deref(), Some(d.udid.as_str()));
        assert_eq!(raw(&c.raw_payload)["MessageType"].as_string(), Some("Authenticate"));
        assert!(c.url_params.is_none() && c.enrollment_id.is_none());
        assert!(time::OffsetDateTime::parse(&auth.created_at, &time::format_description::well_known::Rfc3339).is_ok());
        let tu = r.events.iter().find(|e| e.topic == "mdm.TokenUpdate").expect("mdm.TokenUpdate");
        assert_eq!(
            raw(&tu.checkin_event.as_ref().unwrap().raw_payload)["MessageType"].as_string(),
            Some("TokenUpdate")
        );
    }
    // A command result, and a failed one; the receiver refuses twice first: retried.
    state.lock().unwrap().refuse = 2;
    let ok = enqueue(
        &srv.admin(),
        &[&d.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}),
    )
    .await;
    let bad = enqueue(
        &srv.admin(),
        &[&d.udid],
        json!({"RequestType": "RemoveProfile", "Identifier": "com.example.none"}),
    )
    .await;
    d.session().await.unwrap();
    wait_for(&state, "both results", |r| {
        r.events.iter().filter(|e| e.topic == "mdm.Connect").count() >= 2
    })
    .await;
    let r = state.lock().unwrap();
    assert!(r.attempts >= r.events.len() + 2, "the refused attempts were retried");
    let acks: Vec<&AcknowledgeEvent> = r.events.iter().filter_map(|e| e.acknowledge_event.as_ref()).collect();
    let a = acks
        .iter()
        .find(|a| a.command_uuid.as_deref() == Some(ok.as_str()))
        .expect("DeviceInformation result");
    assert_eq!(a.status, "Acknowledged");
    assert_eq!(a.udid.as_deref(), Some(d.udid.as_str()));
    let p = raw(&a.raw_payload);
    assert_eq!(p["CommandUUID"].as_string(), Some(ok.as_str()));
    assert!(p.contains_key("QueryResponses"));
    assert!(a.url_params.is_none() && a.enrollment_id.is_none());
    let b = acks
        .iter()
        .find(|a| a.command_uuid.as_deref() == Some(bad.as_str()))
        .expect("RemoveProfile result");
    assert_eq!(b.status, "Error");
    // Every event once (ids unique; the receiver saw retries only for refused ones).
    let mut ids: Vec<&str> = r.events.iter().map(|e| e.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), r.events.len());
    assert!(r.events.iter().all(|e| e.mdmd_event.is_none() || e.topic.starts_with("mdmd.")));
    // mdmd's own events: identities issued by SCEP (three-phase enrollment: two).
    let issued: Vec<&Event> = r.events.iter().filter(|e| e.topic == "mdmd.CertificateIssued").collect();
    assert_eq!(issued.len(), 2, "{:?}", r.events.iter().map(|e| &e.topic).collect::<Vec<_>>());
    let serial = issued[1].mdmd_event.as_ref().unwrap()["serial"].as_str().unwrap().to_owned();
    // Times are RFC 3339, as everywhere in the API.
    let not_after = issued[1].mdmd_event.as_ref().unwrap()["not_after"].as_str().unwrap().to_owned();
    assert!(time::OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339).is_ok(), "{not_after}");
    drop(r);
    // A profile installed, and a certificate revoked.
    let clip = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>com.example.clip</string><key>PayloadUUID</key><string>{}</string>
<key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.webClip.managed</string>
<key>PayloadVersion</key><integer>1</integer><key>PayloadIdentifier</key><string>com.example.clip.1</string>
<key>PayloadUUID</key><string>C1</string><key>URL</key><string>https://example.com/</string><key>Label</key><string>Clip</string></dict></array></dict></plist>"#,
        uuid::Uuid::new_v4().to_string().to_uppercase()
    );
    srv.admin().post_bytes("/v1/profiles", clip.into_bytes()).await.unwrap();
    srv.admin()
        .post("/v1/profiles/com.example.clip/install", json!({"targets": [d.udid]}))
        .await
        .unwrap();
    d.session().await.unwrap();
    srv.admin()
        .post(&format!("/v1/certificates/{serial}/revoke"), json!({}))
        .await
        .unwrap();
    wait_for(&state, "own events", |r| {
        r.events
            .iter()
            .any(|e| e.topic == "mdmd.ProfileInstalled" && e.mdmd_event.as_ref().unwrap()["profile"] == "com.example.clip")
            && r.events
                .iter()
                .any(|e| e.topic == "mdmd.CertificateRevoked" && e.mdmd_event.as_ref().unwrap()["serial"] == serial.as_str())
    })
    .await;
    // mdmd.Enrolled, once per enrollment, with who enrolled it: nobody for the shared
    // --enroll-user credentials, the person an invitation was issued to.
    let (ok, out, err) = srv.cli(&["invite", "--user", "erin", "--email", "erin@example.org"]);
    assert!(ok, "{err}");
    let der = mdmd::sim::download_profile(&srv.client(), out.lines().next().unwrap(), None)
        .await
        .unwrap();
    let erin = mdmd::sim::SimDevice::from_profile(srv.client(), &der, None).await.unwrap();
    erin.enroll().await.unwrap();
    let enrolled = |r: &Received, id: &str| {
        r.events
            .iter()
            .filter(|e| e.topic == "mdmd.Enrolled" && e.mdmd_event.as_ref().unwrap()["enrollment"] == id)
            .map(|e| e.mdmd_event.clone().unwrap())
            .collect::<Vec<_>>()
    };
    wait_for(&state, "mdmd.Enrolled for erin", |r| !enrolled(r, &erin.udid).is_empty()).await;
    let r = state.lock().unwrap();
    let first = enrolled(&r, &d.udid);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["user"], serde_json::Value::Null);
    assert_eq!(first[0]["serial"], d.serial.as_str());
    let e = enrolled(&r, &erin.udid);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["user"]["username"], "erin");
    assert_eq!(e[0]["user"]["email"], "erin@example.org");
    assert_eq!(e[0]["user"]["method"], "invitation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_and_a_killed_server_lose_nothing() {
    // The receiver's address is reserved, then nothing listens there: deliveries fail.
    let port: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let url = format!("http://{port}/hook");
    let mut srv = Server::start_with(&["--webhook-url", &url, "--webhook-secret", SECRET]);
    let mut d = srv.enrolled().await;
    let mut uuids = Vec::new();
    for q in ["OSVersion", "SerialNumber", "UDID", "DeviceName", "BuildVersion"] {
        uuids.push(
            enqueue(
                &srv.admin(),
                &[&d.udid],
                json!({"RequestType": "DeviceInformation", "Queries": [q]}),
            )
            .await,
        );
    }
    // Devices are not held up by the dead receiver.
    let handled = d.session().await.unwrap();
    assert_eq!(handled.len(), 5);
    let stats = srv.admin().get("/v1/stats").await.unwrap();
    assert!(stats["webhooks"]["outbox_depth"].as_u64().unwrap() >= 7, "{stats}");
    // SIGKILL, then the receiver comes up and the server restarts.
    srv.kill9();
    let (_, state, _h) = receiver(Some(port)).await;
    srv.restart();
    wait_for(&state, "every event after the restart", |r| {
        let done: Vec<&str> = r
            .events
            .iter()
            .filter_map(|e| e.acknowledge_event.as_ref()?.command_uuid.as_deref())
            .collect();
        uuids.iter().all(|u| done.contains(&u.as_str()))
            && r.events.iter().any(|e| e.topic == "mdm.Authenticate")
            && r.events.iter().any(|e| e.topic == "mdm.TokenUpdate")
    })
    .await;
    let stats = srv.admin().get("/v1/stats").await.unwrap();
    assert_eq!(stats["webhooks"]["outbox_depth"], 0, "{stats}");
}
