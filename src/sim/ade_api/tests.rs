//! The real `AdeClient` against the real stand-in, over HTTP on 127.0.0.1.

use std::time::{Duration, Instant};

use super::*;
use crate::ade::{AdeClient, AdeError};

async fn pair() -> (AdeStandIn, AdeClient) {
    let apple = AdeStandIn::start("Example Org").await.unwrap();
    let client = AdeClient::new(&apple.url(), apple.token.clone(), reqwest::Client::new()).unwrap();
    (apple, client)
}

fn serials(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("C02SIM{i:06}")).collect()
}

#[tokio::test]
async fn session_and_account() {
    let (apple, client) = pair().await;
    let a = client.account().await.unwrap();
    assert_eq!(a["server_name"], "Example Org");
    assert_eq!(a["org_name"], "Example Org");
    assert!(a["server_uuid"].as_str().is_some_and(|u| u.len() == 36));
    client.account().await.unwrap();
    assert_eq!(client.sessions(), 1);
    let st = apple.stats();
    assert_eq!((st.sessions, st.requests, st.bad_signatures), (1, 3, 0));
    assert_eq!(st.calls["GET /session"], 1);
    assert_eq!(st.calls["GET /account"], 2);
}

#[tokio::test]
async fn fetch_in_pages_then_sync_sees_changes() {
    let (apple, client) = pair().await;
    for s in serials(25) {
        apple.add_device(&s, "iPhone 15");
    }
    apple.set_page_limit_cap(10);
    let (mut cursor, mut seen, mut pages) = (None::<String>, Vec::new(), 0);
    loop {
        let p = client.fetch_devices(cursor.as_deref(), 1000).await.unwrap();
        pages += 1;
        assert!(p.devices.len() <= 10);
        assert!(p.fetched_until.is_some());
        for d in &p.devices {
            assert_eq!(d.profile_status.as_deref(), Some("empty"));
            assert_eq!(d.device_family.as_deref(), Some("iPhone"));
            assert_eq!(d.op_type, None);
        }
        seen.extend(p.devices.into_iter().map(|d| d.serial_number));
        cursor = p.cursor;
        if !p.more_to_follow {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, serials(25), "every serial once, in a stable order");
    let cursor = cursor.unwrap();
    // The fetch is over: its cursor does not page again.
    match client.fetch_devices(Some(&cursor), 10).await {
        Err(AdeError::Apple { status: 400, code }) => assert_eq!(code, "EXHAUSTED_CURSOR"),
        other => panic!("{other:?}"),
    }

    // Nothing new yet.
    let p = client.sync_devices(&cursor, 100).await.unwrap();
    assert!(p.devices.is_empty() && !p.more_to_follow);

    apple.add_device("NEW0001", "iPad Pro");
    apple.modify_device("C02SIM000003", "Front desk");
    apple.remove_device("C02SIM000004");
    apple.modify_device("NOT-OURS", "ignored");
    let p = client.sync_devices(&cursor, 100).await.unwrap();
    let ops: Vec<(String, String)> = p
        .devices
        .iter()
        .map(|d| (d.serial_number.clone(), d.op_type.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        ops,
        [
            ("NEW0001".to_owned(), "added".to_owned()),
            ("C02SIM000003".to_owned(), "modified".to_owned()),
            ("C02SIM000004".to_owned(), "deleted".to_owned()),
        ]
    );
    assert!(p.devices.iter().all(|d| d.op_date.is_some()));
    assert_eq!(p.devices[0].device_family.as_deref(), Some("iPad"));
    assert_eq!(p.devices[1].description.as_deref(), Some("Front desk"));
    assert!(!p.more_to_follow);

    // A sync pages too, and its cursor resumes after what it returned.
    let after = p.cursor.unwrap();
    for i in 0..12 {
        apple.add_device(&format!("BULK{i:04}"), "MacBook Air");
    }
    let first = client.sync_devices(&after, 1000).await.unwrap();
    assert_eq!(first.devices.len(), 10);
    assert!(first.more_to_follow);
    let second = client.sync_devices(first.cursor.as_deref().unwrap(), 1000).await.unwrap();
    assert_eq!(second.devices.len(), 2);
    assert!(!second.more_to_follow);
    assert_eq!(second.devices[1].serial_number, "BULK0011");
    assert_eq!(second.devices[1].os.as_deref(), Some("OSX"));
    // The deleted device is gone from a new fetch.
    let all = client.fetch_devices(None, 1000).await.unwrap();
    assert!(all.devices.iter().all(|d| d.serial_number != "C02SIM000004"));
}

#[tokio::test]
async fn expired_and_invalid_cursors() {
    let (apple, client) = pair().await;
    apple.add_device("A1", "iPhone 15");
    let c = client.fetch_devices(None, 10).await.unwrap().cursor.unwrap();
    client.sync_devices(&c, 10).await.unwrap();
    apple.expire_cursors();
    assert!(matches!(client.sync_devices(&c, 10).await, Err(AdeError::ExpiredCursor)));
    assert!(matches!(client.fetch_devices(Some(&c), 10).await, Err(AdeError::ExpiredCursor)));
    assert!(matches!(client.sync_devices("nonsense", 10).await, Err(AdeError::InvalidCursor)));
    match client.sync_devices("", 10).await {
        Err(AdeError::Apple { status: 400, code }) => assert_eq!(code, "CURSOR_REQUIRED"),
        other => panic!("{other:?}"),
    }
    // A new fetch starts over.
    let fresh = client.fetch_devices(None, 10).await.unwrap().cursor.unwrap();
    client.sync_devices(&fresh, 10).await.unwrap();
}

#[tokio::test]
async fn an_expired_session_is_renewed_transparently() {
    let (apple, client) = pair().await;
    client.account().await.unwrap();
    apple.expire_sessions();
    client.account().await.unwrap();
    assert_eq!(client.sessions(), 2);
    let st = apple.stats();
    assert_eq!((st.sessions, st.bad_sessions), (2, 1));
}

#[tokio::test]
async fn a_session_apple_hands_back_is_used() {
    let (apple, client) = pair().await;
    apple.rotate_sessions(true);
    for _ in 0..4 {
        client.account().await.unwrap();
    }
    // Each answer replaced the session; the client followed without a new /session.
    assert_eq!(client.sessions(), 1);
    assert_eq!(apple.stats().bad_sessions, 0);
}

#[tokio::test]
async fn throttling_is_waited_out() {
    let (apple, client) = pair().await;
    client.account().await.unwrap();
    apple.throttle_next(1, 1);
    let t = Instant::now();
    client.account().await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "Retry-After honoured");
    apple.throttle_next(2, 0);
    client.account().await.unwrap();
    assert_eq!(apple.stats().throttled, 3);
    // The session call is throttled like any other.
    apple.expire_sessions();
    apple.throttle_next(1, 0);
    client.account().await.unwrap();
}

#[tokio::test]
async fn throttling_beyond_the_policy_is_an_error() {
    let (apple, client) = pair().await;
    let client = client.with_retry(3, Duration::from_secs(5));
    client.account().await.unwrap();
    apple.throttle_next(10, 0);
    assert!(matches!(client.account().await, Err(AdeError::Throttled { retry_after_secs: 0 })));
    assert_eq!(apple.stats().throttled, 3);
    // Longer than we would wait: returned at once, with Apple's delay.
    apple.throttle_next(1, 120);
    let t = Instant::now();
    assert!(matches!(client.account().await, Err(AdeError::Throttled { retry_after_secs: 120 })));
    assert!(t.elapsed() < Duration::from_secs(2));
    apple.throttle_next(0, 0);
    client.account().await.unwrap();
}

#[tokio::test]
async fn terms_not_signed() {
    let (apple, client) = pair().await;
    client.account().await.unwrap();
    apple.require_terms(true);
    assert!(matches!(client.account().await, Err(AdeError::TermsNotSigned)));
    assert!(matches!(client.fetch_devices(None, 10).await, Err(AdeError::TermsNotSigned)));
    apple.require_terms(false);
    client.account().await.unwrap();
}

#[tokio::test]
async fn a_revoked_token_is_rejected() {
    let (apple, client) = pair().await;
    client.account().await.unwrap();
    apple.revoke_token();
    match client.account().await {
        Err(AdeError::TokenRejected(m)) => assert!(m.contains("401"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_and_counted() {
    let apple = AdeStandIn::start("Example Org").await.unwrap();
    let mut token = apple.token.clone();
    token.consumer_secret = "CS_not_the_secret".into();
    let client = AdeClient::new(&apple.url(), token, reqwest::Client::new()).unwrap();
    assert!(matches!(client.account().await, Err(AdeError::TokenRejected(_))));
    let st = apple.stats();
    assert_eq!((st.bad_signatures, st.sessions), (1, 0));
    assert!(st.last_refusal.unwrap_or_default().contains("signature"));
}

#[tokio::test]
async fn an_expired_server_token_never_leaves() {
    let apple = AdeStandIn::start("Example Org").await.unwrap();
    let mut token = apple.token.clone();
    token.access_token_expiry = "2020-01-01T00:00:00Z".into();
    let client = AdeClient::new(&apple.url(), token, reqwest::Client::new()).unwrap();
    match client.account().await {
        Err(AdeError::TokenRejected(m)) => assert!(m.contains("2020-01-01"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(apple.stats().requests, 0);
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let apple = AdeStandIn::start("Example Org").await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/session", apple.url());
    let get = |auth: String| http.get(&url).header("User-Agent", "test").header("Authorization", auth).send();
    let now = crate::clock::now();
    let auth = oauth::authorization("GET", &url, &apple.token, now, "once-only").unwrap();
    let r = get(auth.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["auth_session_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(get(auth).await.unwrap().status(), 401);
    // Stale, signed for another URL, not OAuth, malformed.
    let stale = oauth::authorization("GET", &url, &apple.token, now - 600, &oauth::nonce()).unwrap();
    assert_eq!(get(stale).await.unwrap().status(), 401);
    let other = oauth::authorization("GET", "http://127.0.0.1:1/session", &apple.token, now, &oauth::nonce()).unwrap();
    assert_eq!(get(other).await.unwrap().status(), 401);
    assert_eq!(get("Bearer x".into()).await.unwrap().status(), 400);
    let plaintext = oauth::authorization("GET", &url, &apple.token, now, &oauth::nonce())
        .unwrap()
        .replace("HMAC-SHA1", "PLAINTEXT");
    assert_eq!(get(plaintext).await.unwrap().status(), 400);
    let st = apple.stats();
    assert_eq!((st.sessions, st.bad_signatures), (1, 5));
}

#[tokio::test]
async fn strict_about_requests() {
    let (apple, client) = pair().await;
    for s in serials(5) {
        apple.add_device(&s, "iPhone 15");
    }
    client.account().await.unwrap();
    // A session the stand-in issued, for raw requests.
    let http = reqwest::Client::new();
    let url = format!("{}/session", apple.url());
    let auth = oauth::authorization("GET", &url, &apple.token, crate::clock::now(), &oauth::nonce()).unwrap();
    let v: Value = http
        .get(&url)
        .header("User-Agent", "t")
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = v["auth_session_token"].as_str().unwrap().to_owned();
    let base = apple.url();
    let raw = |method: reqwest::Method, path: &str, headers: &[(&str, &str)], body: &str| {
        let mut r = http.request(method, format!("{base}{path}")).body(body.to_owned());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let full = [
        ("User-Agent", "t"),
        ("X-ADM-Auth-Session", session.as_str()),
        ("X-Server-Protocol-Version", "3"),
        ("Content-Type", "application/json"),
    ];
    let post = reqwest::Method::POST;
    assert_eq!(raw(post.clone(), "/server/devices", &full, "{}").await.0, 200);
    assert_eq!(
        raw(post.clone(), "/server/devices", &full[..1], "{}").await,
        (401, "UNAUTHORIZED".into())
    );
    assert_eq!(
        raw(post.clone(), "/server/devices", &[full[0], ("X-ADM-Auth-Session", "forged")], "{}").await,
        (401, "UNAUTHORIZED".into())
    );
    assert_eq!(
        raw(post.clone(), "/server/devices", &full[..2], "{}").await,
        (400, "PROTOCOL_VERSION_REQUIRED".into())
    );
    assert_eq!(
        raw(post.clone(), "/server/devices", &full[1..], "{}").await,
        (400, "USER_AGENT_MISSING".into())
    );
    for junk in ["", "{", "[1]", "\"x\"", "{\"limit\":\"ten\"}", "{\"cursor\":5}"] {
        assert_eq!(
            raw(post.clone(), "/server/devices", &full, junk).await,
            (400, "MALFORMED_REQUEST_BODY".into()),
            "{junk}"
        );
    }
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_BODY));
    assert_eq!(raw(post.clone(), "/devices", &full, &huge).await.0, 400);
    // Apple caps the limit silently.
    let (status, body) = raw(post.clone(), "/server/devices", &full, "{\"limit\":5000}").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(5));
    apple.set_page_limit_cap(2);
    let (_, body) = raw(post.clone(), "/server/devices", &full, "{\"limit\":5000}").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["more_to_follow"], true);
    assert_eq!(raw(post.clone(), "/nowhere", &full, "{}").await.0, 404);
    assert_eq!(raw(reqwest::Method::GET, "/server/devices", &full, "").await.0, 405);
    assert_eq!(
        raw(post.clone(), "/devices", &full, "{\"devices\":[]}").await,
        (400, "DEVICE_ID_REQUIRED".into())
    );
    assert_eq!(
        raw(reqwest::Method::PUT, "/profile/devices", &full, "{\"devices\":[\"A\"]}").await,
        (400, "PROFILE_UUID_REQUIRED".into())
    );
    assert_eq!(
        raw(reqwest::Method::GET, "/profile", &full, "").await,
        (400, "PROFILE_UUID_REQUIRED".into())
    );
    assert!(apple.stats().calls["other"] >= 1);
}

#[tokio::test]
async fn device_details() {
    let (apple, client) = pair().await;
    apple.add_device("D1", "iPad Air");
    let v = client.device_details(&["D1".into(), "NOPE".into()]).await.unwrap();
    assert_eq!(v["devices"]["D1"]["response_status"], "SUCCESS");
    assert_eq!(v["devices"]["D1"]["model"], "iPad Air");
    assert_eq!(v["devices"]["NOPE"]["response_status"], "NOT_ACCESSIBLE");
}

#[tokio::test]
async fn define_assign_and_remove_profiles() {
    let (apple, client) = pair().await;
    for s in ["A1", "B2", "C3"] {
        apple.add_device(s, "iPhone 15");
    }
    let cursor = client.fetch_devices(None, 100).await.unwrap().cursor.unwrap();
    let profile = json!({
        "profile_name": "Staff",
        "url": "https://mdm.example.org/mdm/ade/enroll",
        "is_supervised": true,
        "is_mandatory": true,
        "is_mdm_removable": false,
        "await_device_configured": true,
        "department": "IT",
        "support_phone_number": "+1 555 0199",
        "skip_setup_items": ["Siri", "Privacy"],
        "anchor_certs": ["MIIBAA=="],
        "devices": ["A1", "ZZ9"],
    });
    let r = client.define_profile(&profile).await.unwrap();
    let uuid = r.profile_uuid.clone().unwrap();
    assert_eq!(uuid.len(), 32);
    assert!(uuid.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    assert_eq!(r.devices["A1"], "SUCCESS");
    assert_eq!(r.devices["ZZ9"], "NOT_ACCESSIBLE");
    let a1 = apple.device("A1").unwrap();
    assert_eq!(a1.profile_status.as_deref(), Some("assigned"));
    assert_eq!(a1.profile_uuid.as_deref(), Some(uuid.as_str()));
    assert!(a1.profile_assign_time.is_some());

    let got = client.get_profile(&uuid).await.unwrap();
    assert_eq!(got["profile_name"], "Staff");
    assert!(got.get("devices").is_none());
    assert_eq!(apple.profile(&uuid), Some(got));

    let r = client.assign_profile(&uuid, &["B2".into(), "ZZ9".into()]).await.unwrap();
    assert_eq!(r.profile_uuid.as_deref(), Some(uuid.as_str()));
    assert_eq!(r.devices["B2"], "SUCCESS");
    assert_eq!(r.devices["ZZ9"], "NOT_ACCESSIBLE");

    // The device boots: Apple hands it the cloud configuration.
    let c = apple.cloud_configuration("B2").unwrap();
    assert_eq!(c["ConfigurationURL"], "https://mdm.example.org/mdm/ade/enroll");
    assert_eq!(c["IsSupervised"], true);
    assert_eq!(c["IsMandatory"], true);
    assert_eq!(c["IsMDMUnremovable"], true);
    assert_eq!(c["AwaitDeviceConfigured"], true);
    assert_eq!(c["SkipSetup"], json!(["Siri", "Privacy"]));
    assert_eq!(c["OrganizationName"], "Example Org");
    assert_eq!(c["Department"], "IT");
    assert_eq!(c["SupportPhoneNumber"], "+1 555 0199");
    assert_eq!(c["AnchorCertificates"], json!(["MIIBAA=="]));
    assert_eq!(c["ProfileUUID"], uuid.as_str());
    let b2 = apple.device("B2").unwrap();
    assert_eq!(b2.profile_status.as_deref(), Some("pushed"));
    assert!(b2.profile_push_time.is_some());
    assert_eq!(apple.cloud_configuration("C3"), None);
    assert_eq!(apple.cloud_configuration("ZZ9"), None);

    // Over HTTP too, for devices in another process.
    let http = reqwest::Client::new();
    let act = |serial: &str| {
        http.post(format!("{}/sim/activation", apple.url()))
            .json(&json!({ "serial_number": serial }))
            .send()
    };
    let r = act("B2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ProfileUUID"], uuid.as_str());
    assert_eq!(act("C3").await.unwrap().status(), 404);

    let r = client.remove_profile(&["A1".into(), "ZZ9".into()]).await.unwrap();
    assert_eq!(r.profile_uuid, None);
    assert_eq!(r.devices["A1"], "SUCCESS");
    assert_eq!(r.devices["ZZ9"], "NOT_ACCESSIBLE");
    let a1 = apple.device("A1").unwrap();
    assert_eq!(a1.profile_status.as_deref(), Some("removed"));
    assert_eq!(a1.profile_uuid, None);
    assert_eq!(apple.cloud_configuration("A1"), None);

    // Each change is a `modified` in the sync.
    let p = client.sync_devices(&cursor, 100).await.unwrap();
    let ops: Vec<(&str, &str, Option<&str>)> = p
        .devices
        .iter()
        .map(|d| {
            (
                d.serial_number.as_str(),
                d.op_type.as_deref().unwrap_or(""),
                d.profile_status.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("A1", "modified", Some("assigned")),
            ("B2", "modified", Some("assigned")),
            ("B2", "modified", Some("pushed")),
            ("B2", "modified", Some("pushed")),
            ("A1", "modified", Some("removed")),
        ]
    );

    // Refusals as Apple words them.
    let code = |r: Result<crate::ade::ProfileResult, AdeError>| match r {
        Err(AdeError::Apple { status, code }) => (status, code),
        other => panic!("{other:?}"),
    };
    let bad = |patch: Value| {
        let mut p = json!({ "profile_name": "X", "url": "https://mdm.example.org/e" });
        if let (Some(o), Some(add)) = (p.as_object_mut(), patch.as_object()) {
            for (k, v) in add {
                if v.is_null() {
                    o.remove(k);
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        p
    };
    for (patch, want) in [
        (json!({ "profile_name": null }), "CONFIG_NAME_REQUIRED"),
        (json!({ "profile_name": " " }), "CONFIG_NAME_INVALID"),
        (json!({ "profile_name": "n".repeat(126) }), "CONFIG_NAME_INVALID"),
        (json!({ "url": null }), "CONFIG_URL_REQUIRED"),
        (json!({ "url": "" }), "CONFIG_URL_INVALID"),
        (json!({ "url": "http://mdm.example.org/e" }), "CONFIG_URL_INVALID"),
        (json!({ "is_mdm_removable": false, "is_supervised": false }), "FLAGS_INVALID"),
        (json!({ "is_supervised": "yes" }), "MALFORMED_REQUEST_BODY"),
        (json!({ "department": "" }), "DEPARTMENT_INVALID"),
        (json!({ "support_phone_number": "1".repeat(51) }), "SUPPORT_PHONE_INVALID"),
        (json!({ "anchor_certs": ["not base64!"] }), "MALFORMED_REQUEST_BODY"),
        (json!({ "skip_setup_items": "Siri" }), "MALFORMED_REQUEST_BODY"),
    ] {
        assert_eq!(
            code(client.define_profile(&bad(patch.clone())).await),
            (400, want.to_owned()),
            "{patch}"
        );
    }
    // A loopback stand-in of mdmd is a fine URL.
    let plain = client
        .define_profile(&bad(
            json!({ "url": "http://127.0.0.1:9443/mdm/ade/enroll", "is_mdm_removable": false }),
        ))
        .await
        .unwrap();
    // Flags left out: as Apple hands them out (supervised since iOS 13).
    client
        .assign_profile(plain.profile_uuid.as_deref().unwrap_or_default(), &["C3".into()])
        .await
        .unwrap();
    let c = apple.cloud_configuration("C3").unwrap();
    assert_eq!(
        (&c["IsSupervised"], &c["IsMDMUnremovable"], &c["AllowPairing"], &c["SkipSetup"]),
        (&json!(true), &json!(true), &json!(true), &json!([]))
    );
    assert!(c.get("Department").is_none());
    assert_eq!(
        code(client.assign_profile("0000", &["A1".into()]).await),
        (404, "PROFILE_NOT_FOUND".to_owned())
    );
    match client.get_profile("0000").await {
        Err(AdeError::Apple { status: 404, code }) => assert_eq!(code, "PROFILE_NOT_FOUND"),
        other => panic!("{other:?}"),
    }
}

/// A server that answers every request with `answer` (raw HTTP/1.1).
async fn junk_server(answer: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_client_survives_garbage() {
    let token = AdeStandIn::start("x").await.unwrap().token.clone();
    for (answer, want) in [
        (&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nnope!"[..], "Decode"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", "Decode"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 36\r\n\r\n{\"auth_session_token\":\"has space\"}  ",
            "Decode",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n{", "Decode"),
        (b"HTTP/1.1 500 Oops\r\ncontent-length: 3\r\n\r\n\xff\xfe\x00", "Apple"),
        (b"HTTP/1.1 403 No\r\ncontent-length: 13\r\n\r\nACCESS_DENIED", "Forbidden"),
        (b"not http at all", "Transport"),
    ] {
        let addr = junk_server(answer).await;
        let client = AdeClient::new(&format!("http://{addr}"), token.clone(), reqwest::Client::new())
            .unwrap()
            .with_retry(1, Duration::from_millis(10));
        let e = client.account().await.unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "{want}: {e:?}");
        // Never a secret in the message.
        let shown = e.to_string();
        assert!(!shown.contains(&token.consumer_secret) && !shown.contains(&token.access_secret));
    }
}
