//! Access tokens for identity providers, end to end: tokens reach a managed
//! app's configuration, rotation re-sends it, the last token cannot just be
//! revoked, and per-device tokens verify with the published keys alone.

mod common;

use base64::Engine as _;
use common::{enqueue, Server};
use serde_json::{json, Value};

const APP: &str = "com.pingidentity.pingid";

fn app_config(d: &mdmd::sim::SimDevice, key: &str) -> Option<String> {
    d.apps.get(APP)?.config.as_ref()?.get(key)?.as_string().map(str::to_owned)
}

/// Poll until the re-sent configuration arrives; the token the app has then.
async fn resent_token(d: &mut mdmd::sim::SimDevice) -> Option<String> {
    for _ in 0..50 {
        if !d.session().await.unwrap().is_empty() {
            return app_config(d, "PINGID_MDM_TOKEN");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// Verify an ES256 JWT with nothing but the JWKS (as a relying party would).
fn verify_with_jwks(jwt: &str, jwks: &Value) -> Value {
    use openssl::bn::{BigNum, BigNumContext};
    use openssl::ec::{EcGroup, EcKey};
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    assert_eq!(header["alg"], "ES256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the JWT's kid is in the JWKS");
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let x = BigNum::from_slice(&b64(key["x"].as_str().unwrap())).unwrap();
    let y = BigNum::from_slice(&b64(key["y"].as_str().unwrap())).unwrap();
    let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y).unwrap();
    let _ = BigNumContext::new();
    let sig = b64(parts[2]);
    let (r, s) = sig.split_at(32);
    let sig = openssl::ecdsa::EcdsaSig::from_private_components(BigNum::from_slice(r).unwrap(), BigNum::from_slice(s).unwrap()).unwrap();
    let digest = openssl::sha::sha256(format!("{}.{}", parts[0], parts[1]).as_bytes());
    assert!(sig.verify(&digest, &ec).unwrap(), "signature verifies with the published key");
    serde_json::from_slice(&b64(parts[1])).unwrap()
}

fn settings_command() -> Value {
    json!({"RequestType": "Settings", "Settings": [{
        "Item": "ApplicationConfiguration",
        "Identifier": APP,
        "Configuration": {"PINGID_MDM_TOKEN": "$ACCESS_TOKEN", "DEVICE_TOKEN": "$DEVICE_ACCESS_TOKEN", "org": "Example"},
    }]})
}

/// On redb, and on PostgreSQL with `MDMD_TEST_STORE=postgres` (tests/common).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_reach_apps_and_rotate() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    let mut d = srv.enrolled().await;
    d.apps.insert(APP.into(), mdmd::sim::SimApp::managed(APP, "1.0"));
    let admin = srv.admin();

    // No token yet: the configuration cannot be filled for the device, and says why.
    let (status, v) = admin
        .call(
            reqwest::Method::POST,
            "/v1/commands",
            Some(json!({"targets": [d.udid], "command": settings_command()})),
        )
        .await
        .unwrap();
    assert!(v.to_string().contains("ACCESS_TOKEN"), "{status} {v}");
    assert!(d.session().await.unwrap().is_empty());

    // The first token; the app gets it (and a per-device token).
    let t1 = srv.cli_json(&["access-tokens", "generate"]);
    let t1v = t1["value"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&t1v).is_ok(), "UUIDs by default: {t1}");
    assert_eq!(t1["effective"], true);
    enqueue(&admin, &[&d.udid], settings_command()).await;
    assert_eq!(d.session().await.unwrap().len(), 1);
    assert_eq!(app_config(&d, "PINGID_MDM_TOKEN").as_deref(), Some(t1v.as_str()));
    assert_eq!(app_config(&d, "org").as_deref(), Some("Example"));
    let jwt = app_config(&d, "DEVICE_TOKEN").unwrap();

    // The identity provider asks.
    let v = srv.cli_json(&["access-tokens", "verify", &t1v, "--device", &d.udid]);
    assert_eq!(
        (v["valid"].as_bool(), v["kind"].as_str(), v["managed"].as_bool()),
        (Some(true), Some("shared"), Some(true)),
        "{v}"
    );
    let v = srv.cli_json(&["access-tokens", "verify", "not-a-token-at-all-1234"]);
    assert_eq!((v["valid"].as_bool(), v["reason"].as_str()), (Some(false), Some("unknown token")));
    let v = srv.cli_json(&["access-tokens", "verify", &jwt]);
    assert_eq!(
        (v["valid"].as_bool(), v["kind"].as_str(), v["device"].as_str()),
        (Some(true), Some("device"), Some(d.udid.as_str())),
        "{v}"
    );
    let v = srv.cli_json(&["access-tokens", "verify", &jwt, "--device", "SOMEONE-ELSE"]);
    assert_eq!(v["valid"], false);
    // Anyone can check a device token with the public keys alone.
    let jwks: Value = srv
        .client()
        .get(format!("{}/.well-known/jwks.json", srv.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify_with_jwks(&jwt, &jwks);
    assert_eq!(claims["sub"], d.udid.as_str());
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap() + 86_400);
    assert!(claims["compliance"].is_string());

    // Rotation: a new token, the old one revoked in the same step; the app is re-sent the new one.
    let t1id = t1["id"].as_str().unwrap().to_owned();
    let t2 = srv.cli_json(&["access-tokens", "generate", "--revoke", &t1id]);
    let t2v = t2["value"].as_str().unwrap().to_owned();
    let got = resent_token(&mut d).await;
    assert_eq!(
        got.as_deref(),
        Some(t2v.as_str()),
        "the configuration was re-sent with the new token"
    );
    assert_eq!(srv.cli_json(&["access-tokens", "verify", &t1v])["reason"], "revoked");

    // The last token cannot just be revoked; with --replace it is, and the app follows.
    let t2id = t2["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = srv.cli(&["access-tokens", "revoke", &t2id]);
    assert!(!ok && err.contains("last active token"), "{err}");
    assert_eq!(srv.cli_json(&["access-tokens", "verify", &t2v])["valid"], true);
    let r = srv.cli_json(&["access-tokens", "revoke", &t2id, "--replace"]);
    let t3v = r["replacement"]["value"].as_str().unwrap().to_owned();
    let got = resent_token(&mut d).await;
    assert_eq!(got.as_deref(), Some(t3v.as_str()));

    // A token with a future effective date is active, not yet accepted, and on the devices at once.
    let t4 = srv.cli_json(&[
        "access-tokens",
        "add",
        "pingid-shared-secret-2027",
        "--effective-at",
        "2027-01-01T00:00:00Z",
    ]);
    assert_eq!((t4["active"].as_bool(), t4["effective"].as_bool()), (Some(true), Some(false)));
    let got = resent_token(&mut d).await;
    assert_eq!(
        got.as_deref(),
        Some("pingid-shared-secret-2027"),
        "distributed before it takes effect"
    );
    let v = srv.cli_json(&["access-tokens", "verify", "pingid-shared-secret-2027"]);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["reason"], "not yet effective (from 2027-01-01T00:00:00Z)", "{v}");
    assert_eq!(v["effective_at"], 1_798_761_600, "{v}");
    assert_eq!(
        srv.cli_json(&["access-tokens", "verify", &t3v])["valid"],
        true,
        "the old one is still required"
    );
    let list = srv.cli_json(&["access-tokens", "list"]);
    assert_eq!(list["tokens"].as_array().unwrap().len(), 4);
    let t3id = r["replacement"]["id"].as_str().unwrap();
    let t4id = t4["id"].as_str().unwrap();
    assert_eq!(list["schedule"]["required"]["id"], t3id, "{list}");
    assert_eq!(list["schedule"]["next"]["id"], t4id, "{list}");
    assert_eq!(list["schedule"]["next"]["from"], "2027-01-01T00:00:00Z", "{list}");
    assert_eq!(list["schedule"]["carried"], t4id, "{list}");
    let status = |id: &str| list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()["status"].clone();
    assert_eq!(
        (status(t3id), status(t4id), status(&t1id)),
        (json!("required"), json!("scheduled"), json!("revoked"))
    );
    // Any value the identity provider dictates is taken; a short one with a warning.
    let short = srv.cli_json(&["access-tokens", "add", "short"]);
    assert!(short["warning"].as_str().unwrap().contains("16"), "{short}");
    srv.cli_json(&["access-tokens", "revoke", short["id"].as_str().unwrap()]);
    let (ok, _, err) = srv.cli(&["access-tokens", "add", " padded "]);
    assert!(!ok && err.contains("surrounding spaces"), "{err}");
    // Editing moves the date; it is accepted from then on.
    srv.cli_json(&["access-tokens", "edit", t4id, "--effective-at", "2020-01-01T00:00:00Z"]);
    assert_eq!(
        srv.cli_json(&["access-tokens", "verify", "pingid-shared-secret-2027"])["valid"],
        true
    );
}

/// A configuration sent with the app's install by store id only (as
/// `mdmd cmd install-app --itunes-id` does) is remembered under the bundle id
/// the device names, and follows every token change; the vendor's
/// `key=value` AppConfig file is taken as the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_application_configurations_follow_tokens() {
    let srv = Server::start_with(&["--enroll-flow", "single"]);
    let store = mdmd::sim::vpp_api::VppStandIn::start("Example").await.unwrap();
    store.set_app_meta("1114013151", "PingID", APP, "2.4");
    let mut d = srv.enrolled().await;
    d.app_store = Some(store.url());
    d.apps.insert(APP.into(), mdmd::sim::SimApp::managed(APP, "2.3"));
    let t1 = srv.cli_json(&["access-tokens", "generate"]);
    let t1v = t1["value"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("AppConfig");
    std::fs::write(
        &file,
        "# from the vendor\r\nPINGID_MDM_TOKEN=$ACCESS_TOKEN\r\norg = \"Example Corp\"\r\ndeviceId={DeviceUid}\r\n",
    )
    .unwrap();
    let (ok, out, err) = srv.cli(&[
        "cmd",
        "install-app",
        &d.udid,
        "--itunes-id",
        "1114013151",
        "--config",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("deviceId") && err.contains("placeholder"),
        "another MDM's placeholder is warned about: {err}"
    );
    assert!(out.contains("queued"), "{out}");
    let h = d.session().await.unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(app_config(&d, "PINGID_MDM_TOKEN").as_deref(), Some(t1v.as_str()));
    assert_eq!(app_config(&d, "org").as_deref(), Some("Example Corp"));

    // A new token with a future date: the configuration is re-sent under the app's bundle id at once.
    let t2 = srv.cli_json(&["access-tokens", "generate", "--effective-at", "2030-01-01T00:00:00Z"]);
    let t2v = t2["value"].as_str().unwrap().to_owned();
    assert_eq!(resent_token(&mut d).await.as_deref(), Some(t2v.as_str()));
    assert_eq!(app_config(&d, "org").as_deref(), Some("Example Corp"));
    let (ok, _, err) = srv.cli(&["access-tokens", "list"]);
    assert!(
        ok && err.contains("from 2030-01-01T00:00:00Z") && err.contains(t2["id"].as_str().unwrap()),
        "{err}"
    );

    // The console says the same, without values.
    let secret = srv.account("ops", "operator");
    let (http, session, _) = common::console_login(&srv, "ops", &secret).await;
    let html = common::console_page(&http, &srv, &session, "/ui/access-tokens").await;
    assert!(html.contains("required from 2030-01-01T00:00:00Z"), "{html}");
    assert!(html.contains(t1["id"].as_str().unwrap()), "{html}");
    assert!(!html.contains(&t1v) && !html.contains(&t2v), "no token value in the console");

    // The admin later sends this app's configuration by name: it replaces the
    // one the device named, and a token change re-sends that one only.
    let settings = json!({"RequestType": "Settings", "Settings": [{"Item": "ApplicationConfiguration",
        "Identifier": APP, "Configuration": {"PINGID_MDM_TOKEN": "$ACCESS_TOKEN", "org": "Renamed Corp"}}]});
    common::enqueue(&srv.admin(), &[&d.udid], settings).await;
    assert_eq!(d.session().await.unwrap().len(), 1);
    assert_eq!(app_config(&d, "org").as_deref(), Some("Renamed Corp"));
    // (Devices carry the newest by effective date: still the 2030 token.)
    srv.cli_json(&["access-tokens", "generate"]);
    let mut sent = Vec::new();
    for _ in 0..50 {
        sent = d.session().await.unwrap();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sent.len(), 1, "one configuration re-sent, not the superseded one too: {sent:?}");
    assert_eq!(app_config(&d, "PINGID_MDM_TOKEN").as_deref(), Some(t2v.as_str()));
    assert_eq!(app_config(&d, "org").as_deref(), Some("Renamed Corp"));
    assert!(d.session().await.unwrap().is_empty(), "nothing else follows");
}
