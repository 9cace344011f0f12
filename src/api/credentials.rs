//! Organisation CAs (`/v1/cas`) and derived credentials
//! (`/v1/derived-credentials`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;

use super::{schema, views, ApiError, ApiResult, Caller};
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

#[derive(Deserialize, utoipa::ToSchema)]
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
    Ok((StatusCode::CREATED, views::timed(&v)).into_response())
}

pub async fn list_cas(State(app): State<Arc<App>>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    Ok(views::timed(&schema::CaList { cas: cas.list().await? }))
}

pub async fn show_ca(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    Ok(views::timed(&cas.show(&name).await?))
}

pub async fn remove_ca(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    cas.remove(&name).await?;
    Ok(Json(schema::CaRemoved { removed: name }).into_response())
}

pub async fn ca_certificates(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let cas = service!(app, orgcas, "organisation CAs");
    cas.show(&name).await?;
    let v = cas.certificates(None).await?;
    let certificates = v.into_iter().filter(|c| c.ca == name).collect();
    Ok(views::timed(&schema::CaCertificates { ca: name, certificates }))
}

/// Run the renewal check now (it also runs hourly).
pub async fn renew(State(app): State<Arc<App>>) -> ApiResult {
    let n = app.commander.renew_org_certs().await?;
    Ok(Json(schema::RenewalsQueued { renewals_queued: n as u64 }).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
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
    let v = schema::DerivedPosted {
        credential: view,
        replaced: old.map(|o| o.id),
        profiles_sent: followed.installed,
    };
    Ok((StatusCode::CREATED, views::timed(&v)).into_response())
}

pub async fn list_credentials(State(app): State<Arc<App>>) -> ApiResult {
    let derived = service!(app, derived, "derived credentials");
    Ok(views::timed(&schema::DerivedList {
        derived_credentials: derived.list().await?,
        ended: derived.ended().await?,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
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
        let already = Some(r.ended.status.clone());
        return Ok(views::timed(&schema::DerivedRevoked {
            revoked: r.ended,
            already,
            profiles_removed: None,
            profiles_reinstalled: None,
        }));
    };
    let f = app.commander.derived_deleted(&was).await?;
    Ok(views::timed(&schema::DerivedRevoked {
        revoked: r.ended,
        already: None,
        profiles_removed: Some(f.removed),
        profiles_reinstalled: Some(f.installed),
    }))
}

pub async fn delete_credential(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let derived = service!(app, derived, "derived credentials");
    let view = derived.delete(&id).await?;
    let f = app.commander.derived_deleted(&view).await?;
    Ok(Json(schema::DerivedDeleted {
        deleted: id,
        profiles_removed: f.removed,
        profiles_reinstalled: f.installed,
    })
    .into_response())
}

/// What `GET /v1/devices/{id}` shows about credentials.
/// An enrollment's credentials (for `GET /v1/devices/{id}`).
pub struct DeviceCredentials {
    pub derived_credentials: Option<Vec<crate::service::credentials::derived::CredentialView>>,
    pub waiting_for_derived_credential: Option<Vec<schema::WaitingForCredential>>,
    pub org_certificates: Option<Vec<crate::service::credentials::orgca::OrgCert>>,
}

pub async fn device_view(app: &App, e: &crate::store::Enrollment) -> Result<DeviceCredentials, ApiError> {
    let mut out = DeviceCredentials {
        derived_credentials: None,
        waiting_for_derived_credential: None,
        org_certificates: None,
    };
    if let Some(d) = app.commander.derived() {
        out.derived_credentials = Some(d.list_for(e).await?);
        let waiting = d.waiting(&e.id).await?;
        out.waiting_for_derived_credential = Some(
            waiting
                .profiles
                .iter()
                .map(|(id, w)| schema::WaitingForCredential {
                    profile: id.clone(),
                    usages: w.usages.clone(),
                    since: crate::clock::rfc3339(w.since),
                })
                .collect(),
        );
    }
    if let Some(c) = app.commander.orgcas() {
        out.org_certificates = Some(c.certificates(Some(&e.id)).await?);
    }
    Ok(out)
}

pub async fn waiting_entries(app: &App, enrollment: &str) -> Result<Vec<schema::WaitingProfile>, ApiError> {
    let Some(d) = app.commander.derived() else { return Ok(Vec::new()) };
    let w = d.waiting(enrollment).await?;
    Ok(w.profiles
        .iter()
        .map(|(id, p)| schema::WaitingProfile {
            identifier: id.clone(),
            state: "waiting for derived credential".into(),
            usages: p.usages.clone(),
            updated_at: crate::clock::rfc3339(p.since),
        })
        .collect())
}
