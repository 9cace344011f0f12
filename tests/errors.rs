//! Errors from outside: a failure of ours is a 500 with a request id (in the
//! body and `X-Request-Id`), its cause in the log under that id and nowhere
//! in the answer; what the client got wrong keeps its 4xx and message.

mod common;

use common::{Server, API_KEY};
use serde_json::{json, Value};

async fn call(srv: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Option<String>, Value) {
    let mut req = srv.client().request(method, format!("{}{path}", srv.base)).bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = resp.text().await.expect("body");
    (status, id, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_secret_that_no_longer_opens_is_a_500_with_a_request_id() {
    let mut srv = Server::start_logged(&[]);
    let (s, _, v) = call(&srv, reqwest::Method::POST, "/v1/access-tokens", Some(json!({}))).await;
    assert_eq!(s, 201, "{v}");
    let (s, _, v) = call(&srv, reqwest::Method::GET, "/v1/access-tokens", None).await;
    assert_eq!(s, 200, "{v}");

    // The secrets keyring is lost: a new one is made at start, and the
    // stored token (sealed under the old key) no longer opens.
    srv.kill9();
    std::fs::remove_file(srv.certs_dir().join("secrets.keys")).expect("remove the keyring");
    srv.restart();

    let (s, id, v) = call(&srv, reqwest::Method::GET, "/v1/access-tokens", None).await;
    assert_eq!(s, 500, "ours, not the client's: {v}");
    let id = id.expect("X-Request-Id");
    assert_eq!(id.len(), 12, "{id}");
    assert_eq!(v["request_id"], id.as_str(), "{v}");
    assert_eq!(v["error"], format!("internal error (request id {id})"), "{v}");
    let body = v.to_string().to_lowercase();
    for leak in ["token", "seal", "open", "key", "decrypt", "aes"] {
        assert!(!body.contains(leak), "no internal detail ({leak}) in {v}");
    }

    // The cause is in the log, under the same id.
    let mut logged = String::new();
    for _ in 0..50 {
        logged = srv.log_text();
        if logged.contains(&id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = logged
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("request id {id} not in the log"));
    assert!(line.contains("opening a stored access token"), "{line}");

    // What the client gets wrong still gets its 4xx and says why.
    let (s, id, v) = call(
        &srv,
        reqwest::Method::POST,
        "/v1/access-tokens",
        Some(json!({"effective_at": "tomorrow"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(id.is_none(), "a client error has no request id");
    assert!(v["error"].as_str().unwrap_or_default().contains("RFC 3339"), "{v}");
    let (s, _, v) = call(&srv, reqwest::Method::GET, "/v1/devices/NO-SUCH-DEVICE", None).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v, json!({"error": "no enrollment NO-SUCH-DEVICE"}));
    let (s, _, v) = call(&srv, reqwest::Method::POST, "/v1/commands", Some(json!({"targets": []}))).await;
    assert_eq!(s, 400, "{v}");
}
