//! The admin API (`/v1/*`): JSON over HTTP, `Authorization: Bearer <api key>`.
//! A missing or wrong key gets 401 (admins are not devices).

mod access;
mod accounts;
mod credentials;
mod health;
mod inventory;
mod ise;
mod pki;
mod profiles;
mod push;
mod views;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::service::{now, ServiceError};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/commands", axum::routing::post(profiles::post_command))
        .route("/v1/commands/{uuid}", get(get_command))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}", get(get_device))
        .route("/v1/devices/{id}/commands", get(device_commands).delete(clear_device_commands))
        .route("/v1/devices/{id}/inventory", axum::routing::post(inventory::refresh))
        .route("/v1/compliance", get(inventory::summary))
        .route("/v1/accounts", get(accounts::list).post(accounts::create))
        .route("/v1/accounts/{name}", axum::routing::delete(accounts::delete))
        .route("/v1/access-tokens", get(access::list).post(access::create))
        .route("/v1/access-tokens/{id}", axum::routing::put(access::edit).delete(access::revoke))
        .route("/v1/access/verify", axum::routing::post(access::verify))
        .route("/.well-known/jwks.json", get(access::jwks))
        .route("/v1/cas", get(credentials::list_cas).post(credentials::add_ca))
        .route("/v1/cas/renewals", axum::routing::post(credentials::renew))
        .route("/v1/cas/{name}", get(credentials::show_ca).delete(credentials::remove_ca))
        .route("/v1/cas/{name}/certificates", get(credentials::ca_certificates))
        .route(
            "/v1/derived-credentials",
            get(credentials::list_credentials).post(credentials::post_credential),
        )
        .route(
            "/v1/derived-credentials/{id}",
            axum::routing::delete(credentials::delete_credential),
        )
        .route("/v1/stats", get(stats))
        .route("/v1/info", get(info))
        .route("/v1/ca", get(pki::ca_show))
        .route("/v1/certificates", get(pki::list_certs))
        .route("/v1/certificates/{serial}", get(pki::get_cert))
        .route("/v1/certificates/{serial}/revoke", axum::routing::post(pki::revoke))
        .route("/v1/enrollments/profile", get(pki::enrollment_profile))
        .route("/v1/enrollments/invitations", axum::routing::post(pki::invite))
        .route("/v1/identities/renew", axum::routing::post(pki::renew_now))
        .route("/v1/profiles", get(profiles::list).post(profiles::upload))
        .route("/v1/profiles/{id}", get(profiles::show).delete(profiles::delete))
        .route("/v1/profiles/{id}/install", axum::routing::post(profiles::install))
        .route("/v1/profiles/{id}/remove", axum::routing::post(profiles::remove))
        .route("/v1/devices/{id}/profiles", get(profiles::device_profiles))
        .route("/v1/devices/{id}/attributes", axum::routing::put(profiles::set_attributes))
        .route("/v1/devices/{id}/approve-reenroll", axum::routing::post(approve_reenroll))
        .route("/v1/secrets/rotate", axum::routing::post(profiles::rotate_secrets))
        .route("/v1/push-cert", get(push::show).put(push::set))
        .route("/v1/push", axum::routing::post(push::push))
        .route("/health", get(push::health))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/readyz", get(health::readyz))
        .route("/v1/health", get(health::v1_health))
        .route("/ciscoise/mdminfo/", get(ise::mdminfo))
        .route("/ciscoise/mdminfo", get(ise::mdminfo))
        .route("/ciscoise/mdm/api/{ver}/devices/", get(ise::devices))
        .route("/ciscoise/mdm/api/{ver}/devices", get(ise::devices))
        .route("/ciscoise/mdm/api/{ver}/batchdevices/", axum::routing::post(ise::batch))
        .route("/ciscoise/mdm/api/{ver}/batchdevices", axum::routing::post(ise::batch))
        .route("/ciscoise/mdm/api/{ver}/action/", axum::routing::post(ise::action))
        .route("/ciscoise/mdm/api/{ver}/action", axum::routing::post(ise::action))
        .route("/ciscoise/mdm/api/{ver}/action/{action}", axum::routing::post(ise::action))
}

/// Who is calling, for handlers that care (set by `auth`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: crate::service::accounts::Role,
}

/// The credentials in a request: (name, secret). The admin key is `admin`.
fn credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(token) = v.strip_prefix("Bearer ") {
        let token = token.trim();
        // Account secrets are NAME.RANDOM; anything else can only be the admin key.
        let name = match token.split_once('.') {
            Some((n, _)) => n,
            None => "admin",
        };
        return Some((name.to_owned(), token.to_owned()));
    }
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (n, p) = s.split_once(':')?;
    Some((n.to_owned(), p.to_owned()))
}

/// The admin API and the NAC API: the admin key or an account (bearer or
/// basic), then the account's role against the request. 401 for missing or
/// wrong credentials, 403 for a role that may not do this.
pub async fn auth(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/v1/") && !path.starts_with("/ciscoise/") {
        return next.run(req).await;
    }
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"mdmd\", charset=\"UTF-8\"")],
            Json(json!({"error": "missing or wrong credentials (Authorization: Bearer <admin key or account secret>, or Basic NAME:SECRET)"})),
        )
            .into_response()
    };
    let Some((name, secret)) = credentials(req.headers()) else {
        return unauthorized();
    };
    // A derived-credential provider's app, with its per-device upload token:
    // only this one request, checked by the handler.
    if secret.starts_with(crate::service::derived::TOKEN_PREFIX)
        && path == "/v1/derived-credentials"
        && req.method() == axum::http::Method::POST
    {
        req.extensions_mut().insert(credentials::UploadToken(secret));
        return next.run(req).await;
    }
    let role = if name == "admin" || secret == app.api_key {
        if !secret.is_empty() && bool::from(secret.as_bytes().ct_eq(app.api_key.as_bytes())) {
            crate::service::accounts::Role::Admin
        } else {
            return unauthorized();
        }
    } else {
        match app.accounts.verify(&name, &secret).await {
            Ok(Some(r)) => r,
            Ok(None) => return unauthorized(),
            Err(e) => return store_error(e),
        }
    };
    if !role.allows(req.method(), &path) {
        return error(
            StatusCode::FORBIDDEN,
            format!("account {name} ({}) may not {} {path}", role.as_str(), req.method()),
        );
    }
    req.extensions_mut().insert(Caller { name, role });
    next.run(req).await
}

pub fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

pub(crate) fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin API storage failure");
    error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
}

async fn get_command(State(app): State<Arc<App>>, Path(uuid): Path<String>) -> Response {
    match app.mdm.store.command(&uuid).await {
        Ok(Some((rec, deliveries))) => Json(views::command(&rec, &deliveries)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no command {uuid}")),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
    udid: Option<String>,
    serial: Option<String>,
    imei: Option<String>,
    meid: Option<String>,
    mac: Option<String>,
    phone: Option<String>,
    user: Option<String>,
}

async fn list_devices(State(app): State<Arc<App>>, Query(p): Query<Page>) -> Response {
    use crate::store::LookupKey as K;
    let search = [
        (K::Udid, &p.udid),
        (K::Serial, &p.serial),
        (K::Imei, &p.imei),
        (K::Meid, &p.meid),
        (K::WifiMac, &p.mac),
        (K::Phone, &p.phone),
        (K::User, &p.user),
    ];
    if let Some((k, Some(v))) = search.iter().find(|(_, v)| v.is_some()) {
        return inventory::search(&app, *k, v).await;
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    match app.mdm.store.enrollments(p.after, limit).await {
        Ok(list) => {
            let next = if list.len() == limit {
                list.last().map(|e| e.id.clone())
            } else {
                None
            };
            let devices: Vec<_> = list.iter().map(|e| views::enrollment(e, None)).collect();
            Json(json!({"devices": devices, "next": next})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn get_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(e)) => {
            let pending = match app.mdm.store.device_commands(&id, usize::MAX).await {
                Ok(c) => c.iter().filter(|c| c.delivery.status.is_pending()).count(),
                Err(e) => return store_error(e),
            };
            let (inv, comp) = match (app.mdm.store.inventory(&e.device).await, app.mdm.store.compliance(&e.device).await) {
                (Ok(i), Ok(c)) => (i, c),
                (Err(e), _) | (_, Err(e)) => return store_error(e),
            };
            let creds = match credentials::device_view(&app, &e).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let mut v = views::enrollment(&e, Some(pending));
            if let Some(o) = v.as_object_mut() {
                o.insert("inventory".into(), inventory::inventory_view(&inv));
                o.insert("compliance".into(), inventory::compliance_view(comp.as_ref()));
                if let serde_json::Value::Object(c) = creds {
                    o.extend(c);
                }
            }
            // The latest push may not be flushed to the store yet.
            if let (Some(s), Some(o)) = (app.pusher.latest(&id), v.as_object_mut()) {
                if let Some(p) = o.get_mut("push").and_then(|p| p.as_object_mut()) {
                    p.insert("last_push_at".into(), views::time(s.at));
                    p.insert("last_push_outcome".into(), json!(s.outcome));
                    if s.token_disabled {
                        p.insert("disabled".into(), json!(s.outcome));
                    }
                }
            }
            Json(v).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => store_error(e),
    }
}

async fn device_commands(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    match app.mdm.store.device_commands(&id, 1000).await {
        Ok(list) => Json(json!({"enrollment": id, "commands": list.iter().map(views::device_command).collect::<Vec<_>>()})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn clear_device_commands(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    match app.mdm.store.clear_queue(&id, now()).await {
        Ok(n) => Json(json!({"enrollment": id, "cleared": n})).into_response(),
        Err(e) => store_error(ServiceError::from(e)),
    }
}

#[derive(Deserialize)]
struct Approve {
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Let the next Authenticate of this device with a new identity re-enroll it
/// (once, within `expires_in` seconds, default one hour).
async fn approve_reenroll(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let a: Approve = if body.is_empty() {
        Approve { expires_in: None }
    } else {
        match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body must be {{\"expires_in\": seconds}}: {e}")),
        }
    };
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    let ttl = a.expires_in.unwrap_or(3600).clamp(60, 7 * 86_400);
    let t = now();
    let rec = crate::store::OneTimeSecret {
        created_at: t,
        expires_at: t + ttl,
        purpose: "reenroll-approval".into(),
        used_at: None,
        enrollment: Some(id.clone()),
        vouched: false,
    };
    let hash = crate::service::enroll::sha256_hex(&id);
    match app
        .mdm
        .store
        .add_secret(crate::store::SecretKind::ReenrollApproval, &hash, rec)
        .await
    {
        Ok(()) => {
            tracing::info!(enrollment = %id, ttl, "re-enrollment approved");
            Json(json!({"enrollment": id, "approved_until": views::time(t + ttl)})).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn info(State(app): State<Arc<App>>) -> Response {
    let push = app.pusher.health();
    Json(json!({
        "topic": app.mdm.topic.get(),
        "version": env!("CARGO_PKG_VERSION"),
        "push_configured": push["configured"],
        "push_warning": push.get("warning").cloned().unwrap_or(serde_json::Value::Null),
    }))
    .into_response()
}

/// Process accounting, so load tests can measure the server's own CPU per request.
async fn stats(State(app): State<Arc<App>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let (user, sys) = cpu_time();
    Json(json!({
        "cpu_user_seconds": user,
        "cpu_system_seconds": sys,
        "checkins": app.stats.checkins.load(Relaxed),
        "connects": app.stats.connects.load(Relaxed),
        "rejected": app.stats.rejected.load(Relaxed),
        "connections": crate::app::CONNECTIONS.load(Relaxed),
        "tls_handshakes": crate::app::HANDSHAKES.load(Relaxed),
        "push": app.pusher.counters(),
        "webhooks": match app.mdm.webhooks() {
            Some(w) => w.state().await,
            None => serde_json::Value::Null,
        },
    }))
    .into_response()
}

/// User and system CPU seconds of this process, from /proc/self/stat
/// (clock ticks of 1/100 s, the Linux USER_HZ).
pub fn cpu_time() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (tick(11), tick(12))
}
