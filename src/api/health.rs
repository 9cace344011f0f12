//! Health for machines and people: `GET /healthz` (the process answers),
//! `GET /readyz` (the store takes a write and the certificates are loaded and
//! in date: a balancer may send traffic), and `GET /v1/health` (what an admin
//! should act on: certificates expiring within 30 days, a disk nearly full,
//! derived credentials about to expire). `/health` is the older combined view.

use std::sync::Arc;
use std::time::Duration;

use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::clock::now;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Warn this long before a certificate expires.
const CERT_WARNING: i64 = 30 * 86_400;
/// Warn when a disk has less than this share free …
const DISK_FREE_SHARE: f64 = 0.05;
/// … or less than this many bytes.
const DISK_FREE_BYTES: u64 = 1 << 30;

pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut problems = Vec::new();
    // A write only this instance makes (a lease row of its own): the store commits.
    let now_ms = now() * 1000;
    let lease = format!("readyz/{}", app.instance);
    let probe = app.mdm.store.acquire_lease(&lease, &app.instance, now_ms, 60_000);
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => problems.push("the store refused this instance's probe lease".to_owned()),
        Ok(Err(e)) => problems.push(format!("the store does not take writes: {e}")),
        Err(_) => problems.push("the store did not answer within 5 s".to_owned()),
    }
    let t = now();
    let served = served_tls(&app);
    for (what, c) in [("CA", &app.pki.ca.cert), ("TLS", &served), ("signing", &app.pki.signer.cert)] {
        if crate::pki::asn1_unix(c.not_after()) <= t {
            problems.push(format!("the {what} certificate has expired"));
        }
    }
    if problems.is_empty() {
        (
            StatusCode::OK,
            Json(schema::Ready {
                ready: true,
                problems: None,
            }),
        )
            .into_response()
    } else {
        let body = schema::Ready {
            ready: false,
            problems: Some(problems),
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// The TLS certificate new connections get (ours behind a proxy).
pub(crate) fn served_tls(app: &App) -> openssl::x509::X509 {
    app.tls
        .as_ref()
        .and_then(|t| t.certificate())
        .unwrap_or_else(|| app.pki.tls.cert.clone())
}

/// `GET /v1/acme`: the ACME certificate's state.
pub async fn acme_status(State(app): State<Arc<App>>) -> ApiResult {
    let a = app.acme.as_ref().ok_or_else(acme_off)?;
    let status: schema::AcmeStatus = super::views::typed(a.status().await, "reading the ACME state")?;
    Ok(Json(status).into_response())
}

fn acme_off() -> ApiError {
    ApiError::not_found("ACME is off (start mdmd with --acme-domain)")
}

/// `POST /v1/acme/renew`: order a new certificate now (answers when the
/// order is done: 200 with the new state, or 502 with the CA's reason).
pub async fn acme_renew(State(app): State<Arc<App>>) -> ApiResult {
    let a = app.acme.clone().ok_or_else(acme_off)?;
    a.request_renewal();
    // Ordering goes on if the admin's connection drops.
    let job = tokio::spawn({
        let a = a.clone();
        async move {
            a.run_once().await;
            a.install_local().await
        }
    });
    let installed = job.await;
    let status: schema::AcmeStatus = super::views::typed(a.status().await, "reading the ACME state")?;
    match (installed, status.last_error.as_deref()) {
        (Ok(Ok(_)), None) => {
            if let Some(t) = &app.tls {
                t.reload().map_err(|e| ApiError::internal("loading the new certificate", e))?;
            }
            Ok(Json(status).into_response())
        }
        (Ok(Err(e)), _) => Err(ApiError::internal("installing the ACME certificate", e)),
        (_, Some(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("the ACME order failed: {e}"))),
        (Err(e), None) => Err(ApiError::internal("ordering the ACME certificate", e)),
    }
}

/// Free space of the filesystem holding `path`: (free bytes, share free).
fn disk_free(path: &std::path::Path) -> Option<(u64, f64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    let free = s.f_bavail.saturating_mul(s.f_frsize);
    let total = s.f_blocks.saturating_mul(s.f_frsize);
    (total > 0).then(|| (free, free as f64 / total as f64))
}

/// Everything worth a warning, one line each.
pub async fn warnings(app: &App) -> Vec<String> {
    let t = now();
    let mut out = Vec::new();
    let served = served_tls(app);
    for (what, c) in [("CA", &app.pki.ca.cert), ("TLS", &served), ("signing", &app.pki.signer.cert)] {
        let left = crate::pki::asn1_unix(c.not_after()) - t;
        if left < CERT_WARNING {
            out.push(format!(
                "the {what} certificate expires in {} days ({})",
                left.div_euclid(86_400),
                super::views::time(crate::pki::asn1_unix(c.not_after()))
                    .as_str()
                    .unwrap_or_default()
            ));
        }
    }
    out.extend(app.directory.problems());
    out.extend(app.ade.problems().await);
    out.extend(app.apps.problems().await);
    if let Some(e) = app.acme.as_ref().and_then(|a| a.last_error()) {
        out.push(format!("ACME: the last certificate order failed: {e}"));
    }
    let push = app.pusher.health();
    if let Some(w) = push["warning"].as_str() {
        out.push(w.to_owned());
    }
    for w in push["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str()) {
        out.push(w.to_owned());
    }
    for p in &app.disk_paths {
        if let Some((free, share)) = disk_free(p) {
            if share < DISK_FREE_SHARE || free < DISK_FREE_BYTES {
                out.push(format!(
                    "the disk holding {} is nearly full: {} MiB free ({:.1} %)",
                    p.display(),
                    free >> 20,
                    share * 100.0
                ));
            }
        }
    }
    if let Some(w) = app.mdm.webhooks() {
        if let Ok(s) = tokio::time::timeout(Duration::from_secs(5), w.state()).await {
            let waiting = s["oldest_waiting_seconds"].as_i64().unwrap_or(0);
            if waiting > 600 {
                out.push(format!(
                    "webhook outbox backing up: {} events, the oldest waiting {} min",
                    s["outbox_depth"],
                    waiting / 60
                ));
            }
        }
    }
    if let Some(d) = app.commander.derived() {
        if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(5), d.expiring()).await {
            if !list.is_empty() {
                out.push(format!(
                    "{} derived credential(s) expire within 30 days or have expired (GET /v1/derived-credentials: \"expiring\": true)",
                    list.len()
                ));
            }
        }
        if let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(5), d.list()).await {
            let failing = list
                .iter()
                .filter(|c| c.revocation_check.as_ref().is_some_and(|r| r.status == "failed"))
                .count();
            if failing > 0 {
                out.push(format!(
                    "{failing} derived credential(s) could not be checked for revocation: their CRL or OCSP responder did not answer usably (GET /v1/derived-credentials: \"revocation_check\")"
                ));
            }
        }
    }
    if let Some(c) = app.commander.orgcas() {
        if let Ok(Ok(cas)) = tokio::time::timeout(Duration::from_secs(5), c.list()).await {
            for ca in cas {
                for cert in ca.chain.iter().filter(|x| x.not_after - t < CERT_WARNING) {
                    out.push(format!(
                        "organisation CA {}: {} expires in {} days",
                        ca.name,
                        cert.subject,
                        (cert.not_after - t).div_euclid(86_400)
                    ));
                }
            }
        }
    }
    out
}

/// `GET /v1/health`: the warnings, with the certificates' dates.
pub async fn v1_health(State(app): State<Arc<App>>) -> ApiResult {
    let w = warnings(&app).await;
    let cert = |c: &openssl::x509::X509| {
        let na = crate::pki::asn1_unix(c.not_after());
        schema::CertExpiry {
            not_after: crate::clock::rfc3339(na),
            days_left: Some((na - now()).div_euclid(86_400)),
        }
    };
    let push = super::push::health_view(&app)?;
    Ok(Json(schema::V1Health {
        status: if w.is_empty() { "ok" } else { "warning" }.into(),
        warnings: w,
        certificates: schema::HealthCertificates {
            ca: cert(&app.pki.ca.cert),
            tls: cert(&served_tls(&app)),
            signing: cert(&app.pki.signer.cert),
            push: schema::PushExpiry {
                configured: push.configured,
                not_after: push.not_after,
                days_left: push.days_left,
            },
        },
        store: app.mdm.store.describe(),
    })
    .into_response())
}

/// `GET /metrics`: Prometheus text format. The admin key or `--metrics-token`
/// as a bearer token, or nothing with `--metrics-public`.
pub async fn metrics(
    State(app): State<Arc<App>>,
    peer: Option<axum::extract::Extension<crate::service::access::limits::TcpPeer>>,
    headers: axum::http::HeaderMap,
) -> Response {
    use subtle::ConstantTimeEq as _;
    if !app.metrics_public {
        // Wrong keys here count like wrong admin keys anywhere (429 over the limit).
        let source = crate::service::access::limits::client_ip(&app.enroll_networks, peer.as_deref(), |name| {
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
        });
        let attempt = match app.limiter.begin(source, "admin") {
            Ok(a) => a,
            Err(wait) => return super::too_many(wait),
        };
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        let ok = |want: &str| !want.is_empty() && bool::from(bearer.as_bytes().ct_eq(want.as_bytes()));
        if !(ok(&app.api_key) || app.metrics_token.as_deref().is_some_and(ok)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"mdmd metrics\"")],
                "metrics need Authorization: Bearer <admin key or --metrics-token>\n",
            )
                .into_response();
        }
        attempt.succeeded();
    }
    let m = crate::metrics::get();
    if let Some(w) = app.mdm.webhooks() {
        let _ = tokio::time::timeout(Duration::from_secs(5), w.state()).await;
    }
    if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(5), app.mdm.store.counts()).await {
        m.enrollments.set(c.enrollments as i64);
        m.queue_depth.set(c.pending_commands as i64);
    }
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}
