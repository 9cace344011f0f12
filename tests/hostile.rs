//! Hostile bodies: 10⁵-deep property lists (XML and binary), DER, JSON and
//! XML sent as an attacker would, to every endpoint that parses outside bytes.
//! Each must get a 4xx, and the same server must then still enroll and serve
//! a real simulated device (before `protocol::limits`, one such request
//! overflowed a worker's stack and aborted the process).

mod common;

use std::time::Duration;

use common::{b64, Server, API_KEY};
use mdmd::protocol::limits::MAX_DEPTH;
use mdmd::protocol::Status;
use reqwest::Method;
use serde_json::{json, Value};

const DEEP: usize = 100_000;

/// An XML plist nested `depth` containers deep (the innermost a dictionary).
fn xml_plist(depth: usize) -> Vec<u8> {
    let mut s = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">"#);
    s.push_str(&"<array>".repeat(depth - 1));
    s.push_str("<dict><key>UDID</key><string>x</string></dict>");
    s.push_str(&"</array>".repeat(depth - 1));
    s.push_str("</plist>");
    s.into_bytes()
}

/// A binary plist nested `depth` one-element arrays deep (each object refers
/// to the one before it; object 0 is a string).
fn binary_plist(depth: usize) -> Vec<u8> {
    let mut out = b"bplist00".to_vec();
    let mut offsets = vec![out.len() as u32];
    out.extend_from_slice(b"\x51x");
    for i in 1..=depth {
        offsets.push(out.len() as u32);
        out.push(0xa1);
        out.extend_from_slice(&((i - 1) as u32).to_be_bytes());
    }
    let table = out.len() as u64;
    for o in &offsets {
        out.extend_from_slice(&o.to_be_bytes());
    }
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&[4, 4]);
    out.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
    out.extend_from_slice(&(depth as u64).to_be_bytes());
    out.extend_from_slice(&table.to_be_bytes());
    out
}

fn json_deep(depth: usize) -> Vec<u8> {
    let mut s = "[".repeat(depth);
    s.push_str(&"]".repeat(depth));
    s.into_bytes()
}

/// BER: `depth` nested indefinite-length SEQUENCEs.
fn der_sequences(depth: usize) -> Vec<u8> {
    let mut v = [0x30, 0x80].repeat(depth);
    v.extend(std::iter::repeat_n(0u8, 2 * depth));
    v
}

/// BER: a PKCS#7 `data` ContentInfo whose content is `depth` nested
/// constructed OCTET STRINGs (the classic recursion inside ASN.1 decoders).
fn der_octets(depth: usize) -> Vec<u8> {
    let mut v = vec![
        0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0xa0, 0x80,
    ];
    v.extend([0x24, 0x80].repeat(depth));
    v.extend(std::iter::repeat_n(0u8, 2 * depth + 4));
    v
}

fn ise_xml(depth: usize) -> Vec<u8> {
    let mut s = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><ise_api><deviceList><device>"#);
    s.push_str(&"<x>".repeat(depth));
    s.push_str(&"</x>".repeat(depth));
    s.push_str("</device></deviceList></ise_api>");
    s.into_bytes()
}

/// One raw request (admin key when `admin`); the server dying shows as an error here.
async fn send(srv: &Server, method: Method, path: &str, content_type: &str, body: Vec<u8>, admin: bool) -> (u16, String) {
    let mut r = srv
        .client()
        .request(method.clone(), format!("{}{path}", srv.base))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if admin {
        r = r.bearer_auth(API_KEY);
    }
    let resp = tokio::time::timeout(Duration::from_secs(120), r.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 120 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: the server did not answer (crashed?): {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn assert_4xx(what: &str, (status, body): (u16, String)) {
    assert!(
        (400..500).contains(&status),
        "{what}: HTTP {status}: {}",
        &body[..body.len().min(300)]
    );
}

/// The same server still enrolls a new device and delivers it a command whose
/// result it keeps.
async fn still_serves(srv: &Server) {
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    let uuid = common::enqueue(&admin, &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    let cmd = d.connect(&d.idle_report()).await.unwrap().expect("the queued command");
    assert_eq!(cmd.uuid, uuid);
    let (status, report) = d.answer(&cmd);
    assert_eq!(status, Status::Acknowledged);
    assert!(d.connect(&report).await.unwrap().is_none());
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{c}");
}

#[tokio::test]
async fn deep_device_bodies_get_4xx_and_the_server_keeps_serving() {
    let srv = Server::start_with(&["--ddm-enable", "true"]);
    // An enrolled device, to send hostile bodies with a valid identity too.
    let d = srv.enrolled().await;
    let (xml, bin) = (xml_plist(DEEP), binary_plist(DEEP));
    for path in ["/mdm/connect", "/mdm/checkin", "/mdm"] {
        for (kind, body) in [("XML", &xml), ("binary", &bin)] {
            // Unsigned, as anyone on the network…
            let r = send(&srv, Method::PUT, path, "application/x-apple-aspen-mdm", body.clone(), false).await;
            assert_eq!(r.0, 400, "{path} {kind}: {}", r.1);
            // …and signed by an enrolled device.
            let (s, b) = d.put_raw(path, "application/x-apple-aspen-mdm", body.clone()).await.unwrap();
            assert_eq!(s, 400, "{path} {kind} signed: {}", String::from_utf8_lossy(&b));
        }
    }
    // A DeclarativeManagement check-in whose Data is 10⁵-deep JSON.
    let (s, b) = d.ddm_checkin("status", Some(json_deep(DEEP))).await.unwrap();
    assert!((400..500).contains(&s), "DDM status: HTTP {s}: {}", String::from_utf8_lossy(&b));
    // Mdm-Signature: 10⁴-deep BER (a header cannot carry more).
    let idle = mdmd::protocol::to_xml(&d.idle_report());
    let (s, _) = d
        .put_signed(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            idle.clone(),
            Some(&b64(&der_sequences(10_000))),
        )
        .await
        .unwrap();
    assert!((400..500).contains(&s), "deep Mdm-Signature: HTTP {s}");
    let (s, _) = d
        .put_signed(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            idle,
            Some(&b64(&der_octets(10_000))),
        )
        .await
        .unwrap();
    assert!((400..500).contains(&s), "deep Mdm-Signature: HTTP {s}");

    // The profile service: deep DER, and a real CMS signature over a deep plist.
    let signer = mdmd::sim::pki::test_ca("attacker").unwrap();
    for (what, body) in [
        ("BER sequences", der_sequences(DEEP)),
        ("BER octet strings", der_octets(DEEP)),
        ("signed XML plist", mdmd::sim::pki::sign_attached(&signer, &xml).unwrap()),
        ("signed binary plist", mdmd::sim::pki::sign_attached(&signer, &bin).unwrap()),
    ] {
        let r = send(
            &srv,
            Method::POST,
            "/mdm/profile-service",
            "application/pkcs7-signature",
            body,
            false,
        )
        .await;
        assert_4xx(&format!("profile service, {what}"), r);
    }
    // SCEP PKIOperation.
    for (what, body) in [("BER sequences", der_sequences(DEEP)), ("BER octet strings", der_octets(DEEP))] {
        let r = send(
            &srv,
            Method::POST,
            "/scep?operation=PKIOperation",
            "application/x-pki-message",
            body,
            false,
        )
        .await;
        assert_4xx(&format!("SCEP, {what}"), r);
    }

    // The device that was enrolled before still works, and a new one enrolls.
    assert!(d.connect(&d.idle_report()).await.is_ok());
    still_serves(&srv).await;
}

#[tokio::test]
async fn deep_admin_bodies_get_4xx_and_the_server_keeps_serving() {
    let srv = Server::start();
    let (xml, bin) = (xml_plist(DEEP), binary_plist(DEEP));
    let signer = mdmd::sim::pki::test_ca("uploader").unwrap();
    let aspen = "application/x-apple-aspen-config";
    // Template uploads: plain XML, binary, CMS-signed XML and binary, deep DER.
    for (what, body) in [
        ("XML", xml.clone()),
        ("binary", bin.clone()),
        ("signed XML", mdmd::sim::pki::sign_attached(&signer, &xml).unwrap()),
        ("signed binary", mdmd::sim::pki::sign_attached(&signer, &bin).unwrap()),
        ("BER sequences", der_sequences(DEEP)),
        ("BER octet strings", der_octets(DEEP)),
    ] {
        let r = send(&srv, Method::POST, "/v1/profiles", aspen, body, true).await;
        assert_4xx(&format!("template upload, {what}"), r);
    }
    // A plist command inside JSON.
    let cmd = json!({"targets": ["x"], "command": String::from_utf8(xml.clone()).unwrap()});
    let r = send(
        &srv,
        Method::POST,
        "/v1/commands",
        "application/json",
        cmd.to_string().into_bytes(),
        true,
    )
    .await;
    assert_4xx("plist command", r);
    // Deep JSON to every JSON body, at the top and inside an expected field.
    let deep = String::from_utf8(json_deep(DEEP)).unwrap();
    for (method, path, inside) in [
        (
            Method::POST,
            "/v1/commands",
            format!(r#"{{"targets": ["x"], "command": {{"RequestType": "Settings", "Settings": {deep}}}}}"#),
        ),
        (
            Method::PUT,
            "/v1/declarations",
            format!(r#"{{"Type": "com.apple.configuration.passcode.settings", "Identifier": "d", "Payload": {deep}}}"#),
        ),
        (Method::POST, "/v1/accounts", format!(r#"{{"name": "n", "role": {deep}}}"#)),
        (Method::PUT, "/v1/devices/x/attributes", format!(r#"{{"a": {deep}}}"#)),
        (Method::POST, "/v1/cas", format!(r#"{{"name": {deep}}}"#)),
        (Method::POST, "/v1/access-tokens", format!(r#"{{"value": {deep}}}"#)),
        (Method::POST, "/v1/push", format!(r#"{{"targets": {deep}}}"#)),
        (Method::POST, "/v1/profiles/x/install", format!(r#"{{"targets": {deep}}}"#)),
        (Method::POST, "/v1/enrollments/invitations", format!(r#"{{"expires_in": {deep}}}"#)),
        (Method::PUT, "/v1/software-updates/s", format!(r#"{{"version": {deep}}}"#)),
        (Method::POST, "/v1/derived-credentials", format!(r#"{{"usage": {deep}}}"#)),
    ] {
        let r = send(&srv, method.clone(), path, "application/json", deep.clone().into_bytes(), true).await;
        assert_4xx(&format!("{method} {path} top"), r);
        let r = send(&srv, method.clone(), path, "application/json", inside.into_bytes(), true).await;
        assert_4xx(&format!("{method} {path} inside"), r);
    }
    // PKCS#12 and PEM uploads of deep DER.
    for body in [der_sequences(DEEP), der_octets(DEEP)] {
        let r = send(&srv, Method::PUT, "/v1/push-cert", "application/x-pkcs12", body.clone(), true).await;
        assert_4xx("push certificate PKCS#12", r);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", b64(&body));
        let r = send(&srv, Method::PUT, "/v1/push-cert", "application/x-pem-file", pem.into_bytes(), true).await;
        assert_4xx("push certificate PEM", r);
        let cred = json!({"usage": "authentication", "pkcs12": b64(&body), "password": "x", "device": "x"});
        let r = send(
            &srv,
            Method::POST,
            "/v1/derived-credentials",
            "application/json",
            cred.to_string().into_bytes(),
            true,
        )
        .await;
        assert_4xx("derived credential", r);
    }
    // Cisco ISE's batch query.
    for v in ["v2", "v3"] {
        let r = send(
            &srv,
            Method::POST,
            &format!("/ciscoise/mdm/api/{v}/batchdevices/"),
            "application/xml",
            ise_xml(DEEP),
            true,
        )
        .await;
        assert_4xx(&format!("ISE {v} batchdevices"), r);
        let r = send(
            &srv,
            Method::POST,
            &format!("/ciscoise/mdm/api/{v}/action/?actionType=pin_lock"),
            "application/xml",
            ise_xml(DEEP),
            true,
        )
        .await;
        assert_4xx(&format!("ISE {v} action"), r);
    }
    still_serves(&srv).await;
}

/// Nesting exactly at the bound is a valid plist: a device's answer that deep
/// is kept and shown to the admin (every walk over it stays on the stack).
#[tokio::test]
async fn a_device_answer_at_the_nesting_bound_is_kept_and_one_deeper_is_refused() {
    let srv = Server::start();
    let admin = srv.admin();
    let mut d = srv.enrolled().await;
    let uuid = common::enqueue(&admin, &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    let cmd = d.connect(&d.idle_report()).await.unwrap().expect("command");
    let (_, answer) = d.answer(&cmd);
    // The report is the root dictionary (depth 1); an extra key nests the rest.
    let nest = |depth: usize| {
        let mut v = plist::Value::String("bottom".into());
        for _ in 0..depth {
            v = plist::Value::Array(vec![v]);
        }
        v
    };
    let report = |extra: usize| {
        let mut r = answer.clone();
        r.insert("Hostile".into(), nest(extra));
        r
    };
    // One container over the bound: refused, and the command stays pending.
    let (s, _) = d
        .put_raw(
            "/mdm/connect",
            "application/x-apple-aspen-mdm",
            mdmd::protocol::to_xml(&report(MAX_DEPTH)),
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert_ne!(c["deliveries"][0]["status"], "Acknowledged", "{c}");
    // Exactly at the bound: accepted, stored, shown.
    assert!(d.connect(&report(MAX_DEPTH - 1)).await.unwrap().is_none());
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    assert_eq!(c["deliveries"][0]["status"], "Acknowledged", "{c}");
    let mut v = &c["deliveries"][0]["result"]["Hostile"];
    for _ in 0..MAX_DEPTH - 1 {
        v = &v[0];
    }
    assert_eq!(v, "bottom");
    still_serves(&srv).await;
}

/// A JSON command is held to the plist bound: exactly at it, it is queued,
/// shown and delivered; one level deeper, or at serde_json's own bound, 400.
#[tokio::test]
async fn json_commands_are_held_to_the_plist_nesting_bound() {
    let srv = Server::start();
    let admin = srv.admin();
    let d = srv.enrolled().await;
    // Stored as {CommandUUID (1), Command (2): {Configuration (3): {k: {k: …}}}}.
    let command = |configuration_depth: usize| {
        let mut value = String::from("\"bottom\"");
        for _ in 0..configuration_depth {
            value = format!("{{\"k\": {value}}}");
        }
        format!(
            r#"{{"targets": ["{}"], "command": {{"RequestType": "InstallApplication", "iTunesStoreID": 1, "Configuration": {value}}}}}"#,
            d.udid
        )
    };
    let (s, b) = send(
        &srv,
        Method::POST,
        "/v1/commands",
        "application/json",
        command(MAX_DEPTH - 2).into_bytes(),
        true,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    let uuid = v["command_uuid"].as_str().unwrap().to_owned();
    let c = admin.get(&format!("/v1/commands/{uuid}")).await.unwrap();
    let mut conf = &c["command"]["Configuration"];
    for _ in 0..MAX_DEPTH - 3 {
        conf = &conf["k"];
    }
    assert_eq!(conf["k"], "bottom", "{c}");
    let cmd = d.connect(&d.idle_report()).await.unwrap().expect("command");
    assert_eq!(cmd.uuid, uuid);

    for (what, body) in [
        ("one level deeper", command(MAX_DEPTH - 1)),
        ("within serde_json's bound", command(120)),
        ("past serde_json's bound", command(130)),
    ] {
        let (s, b) = send(&srv, Method::POST, "/v1/commands", "application/json", body.into_bytes(), true).await;
        assert_eq!(s, 400, "{what}: {b}");
    }
    // The same for a plist command given as XML.
    let nested = |n: usize| {
        let mut v = plist::Value::String("bottom".into());
        for _ in 0..n {
            let mut d = plist::Dictionary::new();
            d.insert("k".into(), v);
            v = plist::Value::Dictionary(d);
        }
        v
    };
    let mut c = plist::Dictionary::new();
    c.insert("RequestType".into(), "InstallApplication".into());
    c.insert("iTunesStoreID".into(), 1.into());
    c.insert("Configuration".into(), nested(MAX_DEPTH - 1));
    let xml = String::from_utf8(mdmd::protocol::to_xml(&c)).unwrap();
    let (s, b) = send(
        &srv,
        Method::POST,
        "/v1/commands",
        "application/json",
        json!({"targets": [d.udid], "command": xml}).to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    still_serves(&srv).await;
}
