//! Operations against the real server: health and readiness, warnings,
//! and Prometheus metrics parsed with a real text-format parser.

mod common;

use common::{enqueue, Server, API_KEY};
use serde_json::{json, Value};

async fn get(srv: &Server, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut r = srv.client().get(format!("{}{path}", srv.base));
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn health_readiness_and_warnings() {
    let srv = Server::start();
    let (s, body) = get(&srv, "/healthz", None).await;
    assert_eq!((s, body.as_str()), (200, "ok\n"));
    let (s, body) = get(&srv, "/readyz", None).await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    // The detailed view needs credentials.
    let (s, _) = get(&srv, "/v1/health", None).await;
    assert_eq!(s, 401);
    let v = srv.admin().get("/v1/health").await.unwrap();
    assert!(v["certificates"]["ca"]["days_left"].as_i64().unwrap() > 30, "{v}");
    assert!(v["certificates"]["tls"]["not_after"].is_string(), "{v}");
    // No push certificate yet: that is a warning an admin should see.
    assert_eq!(v["status"], "warning", "{v}");
    assert!(v["warnings"].to_string().to_lowercase().contains("push"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_store_is_gone() {
    // Only on PostgreSQL can the store go away under a running server.
    let Some(db) = common::pg::TestDb::create().await else {
        eprintln!("no PostgreSQL: skipped");
        return;
    };
    let proxy = common::pg::FaultProxy::start(common::pg::hostport(&db.url)).await;
    let url = common::pg::with_hostport(&db.url, &proxy.addr.to_string());
    let srv = Server::start_with(&["--database-url", &url, "--database-timeout", "2"]);
    let (s, _) = get(&srv, "/readyz", None).await;
    assert_eq!(s, 200);
    proxy.set(common::pg::Mode::Down);
    let (s, body) = get(&srv, "/readyz", None).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("store"), "{body}");
    // Alive all the same.
    assert_eq!(get(&srv, "/healthz", None).await.0, 200);
    proxy.set(common::pg::Mode::Pass);
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn metrics_in_the_prometheus_text_format() {
    let srv = Server::start_with(&["--metrics-token", "prom-scrape-token"]);
    // Credentials: none is 401; the admin key and the metrics token work; an API account's secret does not.
    assert_eq!(get(&srv, "/metrics", None).await.0, 401);
    assert_eq!(get(&srv, "/metrics", Some("wrong")).await.0, 401);
    assert_eq!(get(&srv, "/metrics", Some(API_KEY)).await.0, 200);
    // Some traffic: an enrollment (SCEP, Authenticate, TokenUpdate), a command and its result.
    let mut d = srv.enrolled().await;
    enqueue(
        &srv.admin(),
        &[&d.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName"]}),
    )
    .await;
    enqueue(&srv.admin(), &[&d.udid], json!({"RequestType": "SecurityInfo"})).await;
    d.not_now.insert("SecurityInfo".into());
    d.session().await.unwrap();
    let (s, text) = get(&srv, "/metrics", Some("prom-scrape-token")).await;
    assert_eq!(s, 200);
    let m = parse(&text);
    assert!(
        value(&m, "mdmd_checkins_total", &[("type", "Authenticate")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&m, "mdmd_checkins_total", &[("type", "TokenUpdate")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "mdmd_command_results_total", &[("status", "Acknowledged")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&m, "mdmd_command_results_total", &[("status", "NotNow")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    // Three-phase enrollment: the phase-1 identity and the MDM identity.
    assert_eq!(value(&m, "mdmd_scep_total", &[("outcome", "issued")]), Some(2.0), "{text}");
    assert_eq!(value(&m, "mdmd_commands_queued_total", &[]), Some(2.0), "{text}");
    assert_eq!(value(&m, "mdmd_enrollments", &[]), Some(1.0), "{text}");
    assert_eq!(
        value(&m, "mdmd_queue_depth", &[]),
        Some(1.0),
        "SecurityInfo is still pending: {text}"
    );
    assert!(
        value(&m, "mdmd_http_requests_total", &[("route", "/mdm/connect"), ("status", "200")]).unwrap_or(0.0) >= 1.0
            || value(&m, "mdmd_http_requests_total", &[("route", "/mdm"), ("status", "200")]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(&m, "mdmd_http_requests_total", &[("route", "/v1/commands"), ("method", "POST")]).unwrap_or(0.0) >= 2.0,
        "{text}"
    );
    assert!(text.contains("mdmd_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("mdmd_store_commit_duration_seconds_bucket"), "{text}");
    assert!(text.contains("mdmd_store_commit_batch_size_count"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
}

#[tokio::test]
async fn metrics_can_be_public() {
    let srv = Server::start_with(&["--metrics-public"]);
    let (s, text) = get(&srv, "/metrics", None).await;
    assert_eq!(s, 200);
    parse(&text);
}
