//! Admin API for profile templates and their lifecycle on devices, and for
//! queueing commands (`POST /v1/commands`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiQuery;
use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::service::commands::{Batch, CommandInput};
use crate::store::{DeviceProfile, ProfileTemplate};

fn batch(b: &Batch) -> ApiResult {
    Ok(Json(b).into_response())
}

fn yes() -> bool {
    true
}

/// `{"targets": [...], "command": {JSON command} | "<plist XML>"}`.
pub async fn post_command(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let req: schema::EnqueueBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"targets\": [...], \"command\": {{...}} or \"<plist>\"}}: {e}"
        ))
    })?;
    if req.targets.is_empty() {
        return Err(ApiError::bad_request("targets: at least one enrollment id is required"));
    }
    let input = match req.command {
        Value::String(xml) => CommandInput::Plist(
            crate::protocol::limits::parse_dictionary(xml.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("command: not a plist dictionary: {e}")))?,
        ),
        v => CommandInput::Json(v),
    };
    batch(&app.commander.enqueue(input, req.targets, req.push).await?)
}

fn template_view(t: &ProfileTemplate) -> schema::TemplateView {
    schema::TemplateView {
        identifier: t.identifier.clone(),
        uuid: t.uuid.clone(),
        display_name: t.display_name.clone(),
        payload_types: t.payload_types.clone(),
        variables: t.variables.clone(),
        sha256: t.sha256.clone(),
        warnings: t.warnings.clone(),
        source: t.source.clone(),
        created_at: crate::clock::rfc3339(t.created_at),
        updated_at: crate::clock::rfc3339(t.updated_at),
    }
}

pub fn device_profile_view(d: &DeviceProfile) -> schema::DeviceProfileView {
    schema::DeviceProfileView {
        enrollment: d.enrollment.clone(),
        identifier: d.identifier.clone(),
        state: d.state,
        command_uuid: d.command_uuid.clone(),
        sha256: d.sha256.clone(),
        updated_at: crate::clock::rfc3339(d.updated_at),
        error_chain: d.error_chain.clone(),
    }
}

pub async fn list(State(app): State<Arc<App>>) -> ApiResult {
    let list = app.mdm.store.templates().await?;
    Ok(Json(schema::ProfileList {
        profiles: list.iter().map(template_view).collect(),
    })
    .into_response())
}

pub async fn show(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let t = app
        .mdm
        .store
        .template(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no profile {id}")))?;
    let devices = app.mdm.store.profile_devices(&id).await?;
    let mut states = std::collections::BTreeMap::new();
    for d in &devices {
        let k = serde_json::to_value(d.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *states.entry(k).or_insert(0u64) += 1;
    }
    Ok(Json(schema::ProfileDetail {
        view: template_view(&t),
        template: String::from_utf8_lossy(&t.xml).into_owned(),
        states,
        devices: devices.iter().map(device_profile_view).collect(),
    })
    .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Queue the new version to every enrollment that has the profile.
    #[serde(default)]
    reinstall: bool,
}

/// Raw `.mobileconfig` body (plain or signed).
pub async fn upload(State(app): State<Arc<App>>, ApiQuery(q): ApiQuery<UploadQuery>, body: axum::body::Bytes) -> ApiResult {
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be a .mobileconfig"));
    }
    let (t, changed, reinstalled) = app.commander.upload(&body, "api", q.reinstall).await?;
    if changed {
        // Blueprints that name it converge on the new version.
        app.fleet.everyone(false, false);
    }
    let v = schema::ProfileUploaded {
        template: template_view(&t),
        changed,
        reinstall: reinstalled,
    };
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Also queue RemoveProfile to every enrollment that has it.
    #[serde(default)]
    remove: bool,
}

pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>, ApiQuery(q): ApiQuery<DeleteQuery>) -> ApiResult {
    let users: Vec<String> = app
        .fleet
        .blueprints()
        .await?
        .into_iter()
        .filter(|b| b.spec.profiles.contains(&id))
        .map(|b| b.name)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("blueprints {} use profile {id}: take it out of them first", users.join(", ")),
        ));
    }
    let removal = if q.remove {
        let targets: Vec<String> = app
            .mdm
            .store
            .profile_devices(&id)
            .await?
            .into_iter()
            .filter(|d| {
                use crate::store::ProfileState::*;
                matches!(d.state, Installed | Pending | Missing | Failed)
            })
            .map(|d| d.enrollment)
            .collect();
        if targets.is_empty() {
            None
        } else {
            Some(app.commander.remove_profile(&id, targets, true).await?)
        }
    } else {
        None
    };
    if !app.mdm.store.delete_template(&id).await? {
        return Err(ApiError::not_found(format!("no profile {id}")));
    }
    Ok(Json(schema::ProfileDeleted {
        identifier: id,
        deleted: true,
        removal,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProfileTargets {
    targets: Vec<String>,
    #[serde(default = "yes")]
    push: bool,
}

/// `{"targets": [...]}` with at least one target, or the 400 to answer.
fn targets(body: &[u8]) -> Result<(Vec<String>, bool), ApiError> {
    let t: ProfileTargets =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body must be {{\"targets\": [...]}}: {e}")))?;
    if t.targets.is_empty() {
        return Err(ApiError::bad_request("targets: at least one enrollment id is required"));
    }
    Ok((t.targets, t.push))
}

pub async fn install(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let (t, push) = targets(&body)?;
    batch(&app.commander.install_template(&id, t, push).await?)
}

pub async fn remove(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let (t, push) = targets(&body)?;
    batch(&app.commander.remove_profile(&id, t, push).await?)
}

pub async fn device_profiles(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    super::enrollment(&app, &id).await?;
    let waiting = super::credentials::waiting_entries(&app, &id).await?;
    let list = app.mdm.store.device_profiles(&id).await?;
    let mut profiles: Vec<_> = list
        .iter()
        .filter(|p| !waiting.iter().any(|w| w.identifier == p.identifier))
        .map(|p| schema::DeviceProfileEntry::Sent(device_profile_view(p)))
        .collect();
    profiles.extend(waiting.into_iter().map(schema::DeviceProfileEntry::Waiting));
    Ok(Json(schema::DeviceProfiles { enrollment: id, profiles }).into_response())
}

/// `{"USERNAME": "alice", "EMAIL": "alice@example.com"}`; an empty value removes.
pub async fn set_attributes(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let schema::Attributes(attrs) =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body must be a JSON object of strings: {e}")))?;
    if let Some(k) = attrs.keys().find(|k| k.is_empty() || k.len() > 64) {
        return Err(ApiError::bad_request(format!("attribute name {k:?}: 1 to 64 characters")));
    }
    let a = app
        .mdm
        .store
        .set_attributes(&id, attrs)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no enrollment {id}")))?;
    app.mdm.fact_changed(&id);
    Ok(Json(schema::AttributesSet {
        enrollment: id,
        attributes: a,
    })
    .into_response())
}

/// Add a new current key to the secrets keyring and reseal every stored token.
pub async fn rotate_secrets(State(app): State<Arc<App>>) -> ApiResult {
    let key = app
        .mdm
        .secrets
        .rotate()
        .map_err(|e| ApiError::internal("rotating the secrets key", e))?;
    let mut others = 0;
    if let Some(c) = app.commander.orgcas() {
        others += c.reseal().await?;
    }
    if let Some(d) = app.commander.derived() {
        others += d.reseal().await?;
    }
    let n = app.mdm.reseal_all().await? + others;
    tracing::info!(key = %key, resealed = n, "secrets key rotated");
    Ok(Json(schema::SecretsRotated {
        key_id: key,
        resealed: n as u64,
    })
    .into_response())
}
