//! Organisation CAs (`/v1/cas`) and derived credentials
//! (`/v1/derived-credentials`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, Caller};
use crate::app::App;
use crate::service::credentials::derived::Owner;
use crate::service::credentials::ended::Named;
use crate::service::credentials::orgca::Challenge;

/// A provider app's upload token, when that is how the caller signed in.
#[derive(Debug, Clone)]
pub struct UploadToken(pub String);

macro_rules! service {
    ($app:expr, $get:ident, $what:literal) => {
        match $app.commander.$get() {
            Some(s) => s.clone(),
            None => return Err(ApiError::not_found(concat!($what, " are not set up on this server"))),
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCa {
    name: String,
    scep_url: String,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    challenge_url: Option<String>,
}

pub async fn add_ca(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    let n: NewCa = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"name\", \"scep_url\", \"challenge\" | \"challenge_url\"}}: {e}"
        ))
    })?;
    let challenge = match (n.challenge, n.challenge_url) {
        (Some(c), None) => Challenge::Static(c),
        (None, Some(u)) => Challenge::Url(u),
        _ => return Err(ApiError::bad_request("give exactly one of challenge and challenge_url")),
    };
    let v = cas.add(&n.name, &n.scep_url, challenge).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list_cas(State(app): State<Arc<App>>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    Ok(Json(super::views::rfc3339_times(json!({"cas": cas.list().await?}))).into_response())
}

pub async fn show_ca(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    Ok(Json(super::views::rfc3339_times(json!(cas.show(&name).await?))).into_response())
}

pub async fn remove_ca(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    cas.remove(&name).await?;
    Ok(Json(json!({"removed": name})).into_response())
}

pub async fn ca_certificates(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    cas.show(&name).await?;
    let v = cas.certificates(None).await?;
    let v = json!({"ca": name, "certificates": v.into_iter().filter(|c| c.ca == name).collect::<Vec<_>>()});
    Ok(Json(super::views::rfc3339_times(v)).into_response())
}

/// Run the renewal check now (it also runs hourly).
pub async fn renew(State(app): State<Arc<App>>) -> ApiResult {
    let n = app.commander.renew_org_certs().await?;
    Ok(Json(json!({"renewals_queued": n})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    user: Option<String>,
    usage: String,
    pkcs12: String,
    password: String,
}

pub async fn post_credential(
    State(app): State<Arc<App>>,
    caller: Option<Extension<Caller>>,
    token: Option<Extension<UploadToken>>,
    body: axum::body::Bytes,
) -> ApiResult {
    let derived = service!(app, derived, "derived credentials");
    let n: NewCredential = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"device\" | \"user\", \"usage\", \"pkcs12\" (base64), \"password\"}}: {e}"
        ))
    })?;
    let (owner, source) = match token {
        Some(Extension(UploadToken(t))) => {
            let device = derived.check_token(&t).await?;
            if n.user.is_some() || n.device.as_deref().is_some_and(|d| d != device) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "this token can only post its own device's credentials",
                ));
            }
            (Owner::Device(device), "app".to_owned())
        }
        None => {
            let who = caller.map(|Extension(c)| c.name).unwrap_or_else(|| "admin".into());
            match (n.device, n.user) {
                (Some(d), None) => (Owner::Device(d), format!("account:{who}")),
                (None, Some(u)) => (Owner::User(u), format!("account:{who}")),
                _ => return Err(ApiError::bad_request("give exactly one of device and user")),
            }
        }
    };
    use base64::Engine as _;
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(n.pkcs12.trim()) else {
        return Err(ApiError::bad_request("pkcs12: not base64"));
    };
    let (view, old) = derived.post(owner, &n.usage, &der, &n.password, &source).await?;
    let followed = app.commander.derived_posted(&view, old.is_some()).await?;
    let mut v = super::views::rfc3339_times(serde_json::to_value(&view).unwrap_or_default());
    if let Some(o) = v.as_object_mut() {
        o.insert("replaced".into(), json!(old.map(|o| o.id)));
        o.insert("profiles_sent".into(), json!(followed.installed));
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list_credentials(State(app): State<Arc<App>>) -> ApiResult {
    let derived = service!(app, derived, "derived credentials");
    let v = json!({"derived_credentials": derived.list().await?, "ended": derived.ended().await?});
    Ok(Json(super::views::rfc3339_times(v)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRevocation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/derived-credentials/revocations`: the provider (an `issuer`
/// account) or an admin says a credential is revoked. It ends with an audit
/// record and its profiles leave the devices; already ended: 200, `"already"`.
pub async fn revoke_credential(State(app): State<Arc<App>>, caller: Option<Extension<Caller>>, body: axum::body::Bytes) -> ApiResult {
    let derived = service!(app, derived, "derived credentials");
    let n: NewRevocation = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"id\"}} or {{\"serial\" (hex), \"issuer\"?}}, with \"reason\"?: {e}"
        ))
    })?;
    let named = match (n.id, n.serial, n.issuer) {
        (Some(id), None, None) => Named::Id(id),
        (None, Some(serial), issuer) => Named::Serial { serial, issuer },
        _ => return Err(ApiError::bad_request("give the id, or the serial (and optionally the issuer)")),
    };
    let who = caller.map(|Extension(c)| c.name).unwrap_or_else(|| "admin".into());
    let r = derived.revoke(named, n.reason, format!("account:{who}")).await?;
    let Some(was) = r.was_active else {
        return Ok(Json(super::views::rfc3339_times(json!({"revoked": r.ended, "already": r.ended.status}))).into_response());
    };
    let f = app.commander.derived_deleted(&was).await?;
    let v = json!({"revoked": r.ended, "profiles_removed": f.removed, "profiles_reinstalled": f.installed});
    Ok(Json(super::views::rfc3339_times(v)).into_response())
}

pub async fn delete_credential(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let derived = service!(app, derived, "derived credentials");
    let view = derived.delete(&id).await?;
    let f = app.commander.derived_deleted(&view).await?;
    Ok(Json(json!({"deleted": id, "profiles_removed": f.removed, "profiles_reinstalled": f.installed})).into_response())
}

/// What `GET /v1/devices/{id}` shows about credentials.
pub async fn device_view(app: &App, e: &crate::store::Enrollment) -> Result<serde_json::Value, ApiError> {
    let mut out = serde_json::Map::new();
    if let Some(d) = app.commander.derived() {
        let creds = d.list_for(e).await?;
        let waiting = d.waiting(&e.id).await?;
        out.insert("derived_credentials".into(), super::views::rfc3339_times(json!(creds)));
        out.insert(
            "waiting_for_derived_credential".into(),
            json!(waiting
                .profiles
                .iter()
                .map(|(id, w)| json!({"profile": id, "usages": w.usages, "since": super::views::time(w.since)}))
                .collect::<Vec<_>>()),
        );
    }
    if let Some(c) = app.commander.orgcas() {
        out.insert("org_certificates".into(), json!(c.certificates(Some(&e.id)).await?));
    }
    Ok(serde_json::Value::Object(out))
}

/// Waiting profiles as entries of `GET /v1/devices/{id}/profiles`.
pub async fn waiting_entries(app: &App, enrollment: &str) -> Result<Vec<serde_json::Value>, ApiError> {
    let Some(d) = app.commander.derived() else { return Ok(Vec::new()) };
    let w = d.waiting(enrollment).await?;
    Ok(w.profiles
        .iter()
        .map(|(id, p)| {
            json!({"identifier": id, "state": "waiting for derived credential", "usages": p.usages, "updated_at": super::views::time(p.since)})
        })
        .collect())
}
