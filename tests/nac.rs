//! Network access control: API accounts and roles, and Cisco ISE's MDM API
//! driven by an XML client written from Cisco's published shapes (an
//! `<ise_api>` envelope; `deviceList` of `device` with `macaddress` and
//! `attributes`; HTTP basic with an account that has the API role).

mod common;
mod ise_xml;

use common::{Server, API_KEY};
use ise_xml::{parse, Ise};
use serde_json::Value;

/// On redb, and on PostgreSQL with `MDMD_TEST_STORE=postgres` (tests/common).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cisco_ise_api_and_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "passcode_required = true\n").unwrap();
    let args = vec![
        "--enroll-flow",
        "single",
        "--inventory-interval",
        "3600",
        "--compliance-policy",
        policy.to_str().unwrap(),
    ];
    let srv = Server::start_with(&args);
    let mut good = srv.enrolled().await;
    good.session().await.unwrap();
    let mut bad = srv.device().await;
    bad.passcode = false;
    bad.enroll().await.unwrap();
    bad.session().await.unwrap();

    let nac_secret = srv.account("ise", "nac");
    let ro_secret = srv.account("auditor", "read-only");
    let op_secret = srv.account("ops", "operator");
    let ise = Ise {
        base: srv.base.clone(),
        client: srv.client(),
        user: "ise".into(),
        password: nac_secret.clone(),
    };

    // ISE's connection test: mdminfo, at both versions.
    let v2 = ise.api_path(2).await;
    let v3 = ise.api_path(3).await;
    assert_eq!((v2.as_str(), v3.as_str()), ("/ciscoise/mdm/api/v2", "/ciscoise/mdm/api/v3"));

    // One device by MAC (12 hex digits without separators, as ISE sends it).
    let mac = good.wifi_mac.replace(':', "").to_uppercase();
    let (s, body) = ise
        .get(&format!("{v2}/devices/?paging=0&querycriteria=macaddress&value={mac}&filter=all"))
        .await;
    assert_eq!(s, 200, "{body}");
    let (name, devs) = parse(&body);
    assert_eq!((name.as_str(), devs.len()), ("attributes", 1), "{body}");
    let d = &devs[0];
    assert_eq!(d.mac, mac);
    for (k, v) in [
        ("register_status", "true"),
        ("compliance.status", "true"),
        ("disk_encryption_on", "true"),
        ("pin_lock_on", "true"),
        ("jail_broken", "false"),
        ("manufacturer", "Apple Inc."),
        ("udid", good.udid.as_str()),
        ("serial_number", good.serial.as_str()),
        ("os_version", good.os_version.as_str()),
    ] {
        assert_eq!(d.attrs.get(k).map(String::as_str), Some(v), "{k} in {body}");
    }
    assert!(!d.attrs.contains_key("guid"), "guid is v3 only");
    // v3 adds the GUID and the last check-in; the GUID finds the device too.
    let (_, body) = ise
        .get(&format!("{v3}/devices/?paging=0&querycriteria=macaddress&value={mac}&filter=all"))
        .await;
    let (_, devs) = parse(&body);
    let guid = devs[0].attrs["guid"].clone();
    assert_eq!(guid.len(), 36);
    assert!(devs[0].attrs["lastCheckinTimeStamp"].parse::<i64>().unwrap() > 1_700_000_000_000);
    let (_, body) = ise
        .get(&format!("{v3}/devices/?paging=0&querycriteria=guid&value={guid}&filter=all"))
        .await;
    assert_eq!(parse(&body).1[0].attrs["udid"], good.udid);
    // A filter returns only what it names.
    let (_, body) = ise
        .get(&format!(
            "{v2}/devices/?paging=0&querycriteria=udid&value={}&filter=pin_lock_on+model",
            good.udid
        ))
        .await;
    let a = &parse(&body).1[0].attrs;
    assert!(
        a.contains_key("pin_lock_on") && a.contains_key("model") && !a.contains_key("imei"),
        "{body}"
    );
    // Unknown device: an empty list, not an error.
    let (s, body) = ise
        .get(&format!(
            "{v2}/devices/?paging=0&querycriteria=macaddress&value=000000000000&filter=all"
        ))
        .await;
    assert_eq!(s, 200);
    assert!(parse(&body).1.is_empty(), "{body}");
    // Non-compliant devices, with the reason.
    let (_, body) = ise
        .get(&format!("{v2}/devices/?paging=0&querycriteria=compliance&value=false&filter=all"))
        .await;
    let (_, devs) = parse(&body);
    assert_eq!(devs.len(), 1, "{body}");
    assert_eq!(devs[0].attrs["udid"], bad.udid);
    assert_eq!(devs[0].attrs["compliance.status"], "false");
    assert!(devs[0].attrs["compliance.failure_reason"].contains("passcode"), "{body}");
    assert_eq!(devs[0].attrs["pin_lock_on"], "false");

    // Batch: two known devices and an unknown one.
    let bad_mac = bad.wifi_mac.replace(':', "");
    let batch = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ise_api><deviceList><device><macaddress>{mac}</macaddress></device><device><macaddress>{bad_mac}</macaddress></device><device><macaddress>AABBCCDDEEFF</macaddress></device></deviceList></ise_api>"
    );
    let (s, body) = ise.post(&format!("{v2}/batchdevices/?paging=0&filter=all"), batch).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(parse(&body).1.len(), 2, "{body}");
    let (s, _) = ise.post(&format!("{v2}/batchdevices/"), "<not xml".into()).await;
    assert_eq!(s, 400);

    // Actions queue the matching MDM command.
    let body =
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ise_api><identifier><macaddress>{mac}</macaddress></identifier></ise_api>");
    let (s, resp) = ise.post(&format!("{v2}/action/?actionType=pin_lock"), body.clone()).await;
    assert_eq!(s, 200, "{resp}");
    let (name, devs) = parse(&resp);
    assert_eq!(
        (name.as_str(), devs[0].attrs["result.action_status"].as_str()),
        ("action", "true"),
        "{resp}"
    );
    let handled = good.session().await.unwrap();
    assert_eq!(
        handled.iter().map(|h| h.request_type.as_str()).collect::<Vec<_>>(),
        vec!["DeviceLock"]
    );
    // mdmd installed nothing on this device: a corporate wipe has nothing to take back, and says so.
    let (_, resp) = ise.post(&format!("{v3}/action/?actionType=corporate_wipe"), body.clone()).await;
    let a = &parse(&resp).1[0].attrs;
    assert_eq!(a["result.action_status"], "false", "{resp}");
    assert!(a["result.failure_reason"].starts_with("nothing to remove"), "{resp}");
    assert!(good.session().await.unwrap().is_empty(), "nothing was queued");
    let unknown = "<ise_api><identifier><macaddress>000000000001</macaddress></identifier></ise_api>".to_owned();
    let (_, resp) = ise.post(&format!("{v2}/action/?actionType=full_wipe"), unknown).await;
    let a = &parse(&resp).1[0].attrs;
    assert_eq!(
        (a["result.action_status"].as_str(), a["result.failure_reason"].as_str()),
        ("false", "device not found")
    );
    let (s, _) = ise.post(&format!("{v2}/action/?actionType=reboot"), body.clone()).await;
    assert_eq!(s, 400);

    // What ISE's administrators see: 401 wrong credentials, 403 wrong role, 404 wrong path.
    let wrong = Ise {
        password: "ise.wrong".into(),
        ..ise
    };
    assert_eq!(wrong.get("/ciscoise/mdminfo/?ise_api_version=2").await.0, 401);
    let anon = srv.client().get(format!("{}/ciscoise/mdminfo/", srv.base)).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    assert!(anon.headers().get("www-authenticate").is_some());
    let auditor = Ise {
        user: "auditor".into(),
        password: ro_secret.clone(),
        ..wrong
    };
    assert_eq!(auditor.get("/ciscoise/mdminfo/?ise_api_version=2").await.0, 403);
    let ise = Ise {
        user: "ise".into(),
        password: nac_secret.clone(),
        ..auditor
    };
    assert_eq!(ise.get("/ciscoise/mdm/api/v9/devices/?paging=0").await.0, 404);
    assert_eq!(ise.get("/ciscoise/somewhere-else/").await.0, 404);

    // Accounts on the admin API: bearer tokens, roles, deletion.
    let call = |token: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = srv.client().request(method, format!("{}{path}", srv.base)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let cmd = serde_json::json!({"targets": [good.udid], "command": {"RequestType": "ProfileList"}});
    assert_eq!(
        call(&op_secret, reqwest::Method::POST, "/v1/commands", Some(cmd.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&ro_secret, reqwest::Method::POST, "/v1/commands", Some(cmd.clone()))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        call(&ro_secret, reqwest::Method::GET, "/v1/devices", None).await.unwrap().status(),
        200
    );
    assert_eq!(
        call(&nac_secret, reqwest::Method::GET, "/v1/compliance", None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&nac_secret, reqwest::Method::GET, "/v1/certificates", None)
            .await
            .unwrap()
            .status(),
        403
    );
    let new = serde_json::json!({"name": "x", "role": "admin"});
    assert_eq!(
        call(&op_secret, reqwest::Method::POST, "/v1/accounts", Some(new))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        call("ops.nottheone", reqwest::Method::GET, "/v1/devices", None)
            .await
            .unwrap()
            .status(),
        401
    );
    // The admin key also works as basic auth for the name "admin".
    let r = srv
        .client()
        .get(format!("{}/v1/accounts", srv.base))
        .basic_auth("admin", Some(API_KEY))
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["accounts"].as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&nac_secret), "secrets are never shown again");
    // Names are unique; a deleted account stops working.
    let (ok, _, err) = srv.cli(&["accounts", "add", "ise", "--role", "nac"]);
    assert!(!ok && err.contains("exists"), "{err}");
    srv.cli_json(&["accounts", "rm", "ops"]);
    assert_eq!(
        call(&op_secret, reqwest::Method::GET, "/v1/devices", None).await.unwrap().status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_enrollment_by_network() {
    let get = |srv: &Server, xff: Option<&'static str>| {
        let mut r = srv
            .client()
            .get(format!("{}/mdm/enroll", srv.base))
            .basic_auth(common::ENROLL_USER.0, Some(common::ENROLL_USER.1));
        if let Some(x) = xff {
            r = r.header("x-forwarded-for", x);
        }
        r.send()
    };
    // The balancer on 127.0.0.1 is trusted to say who the client is.
    let srv = Server::start_with(&[
        "--enroll-flow",
        "single",
        "--enroll-network",
        "10.0.0.0/8,192.168.50.0/24",
        "--trusted-proxy",
        "127.0.0.1/32",
    ]);
    let r = get(&srv, None).await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("127.0.0.1"));
    let r = get(&srv, Some("10.9.8.7")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-apple-aspen-config");
    assert_eq!(get(&srv, Some("192.0.2.1")).await.unwrap().status(), 403);
    // A client cannot claim the network through the header it controls.
    assert_eq!(get(&srv, Some("10.0.0.1, 192.0.2.1")).await.unwrap().status(), 403);
    // Credentials are still needed on an allowed network.
    let r = srv
        .client()
        .get(format!("{}/mdm/enroll", srv.base))
        .header("x-forwarded-for", "10.9.8.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Without a trusted proxy the header means nothing.
    let direct = Server::start_with(&["--enroll-flow", "single", "--enroll-network", "10.0.0.0/8"]);
    assert_eq!(get(&direct, Some("10.9.8.7")).await.unwrap().status(), 403);
    let open = Server::start_with(&["--enroll-flow", "single", "--enroll-network", "127.0.0.0/8"]);
    assert_eq!(get(&open, None).await.unwrap().status(), 200);
}
