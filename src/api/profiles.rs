//! Admin API for profile templates and their lifecycle on devices, and for
//! queueing commands (`POST /v1/commands`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, store_error, views};
use crate::app::App;
use crate::service::commands::{Batch, CommandError, CommandInput};
use crate::store::{DeviceProfile, ProfileTemplate};

/// The answer for a failed enqueue or upload: 400 listing every problem.
pub fn command_error(e: CommandError) -> Response {
    match e {
        CommandError::Invalid(problems) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("invalid: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")),
                "problems": problems,
            })),
        )
            .into_response(),
        CommandError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        CommandError::Service(e) => store_error(e),
    }
}

fn batch(b: &Batch) -> Response {
    Json(serde_json::to_value(b).unwrap_or(Value::Null)).into_response()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct EnqueueBody {
    targets: Vec<String>,
    command: Value,
    /// Wake the targets (APNs) once queued; `false` leaves them to check in.
    #[serde(default = "yes")]
    push: bool,
}

/// `{"targets": [...], "command": {JSON command} | "<plist XML>"}`.
pub async fn post_command(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let req: EnqueueBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"targets\": [...], \"command\": {{...}} or \"<plist>\"}}: {e}"),
            )
        }
    };
    if req.targets.is_empty() {
        return error(StatusCode::BAD_REQUEST, "targets: at least one enrollment id is required");
    }
    let input = match req.command {
        Value::String(xml) => match crate::protocol::limits::parse_dictionary(xml.as_bytes()) {
            Ok(d) => CommandInput::Plist(d),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("command: not a plist dictionary: {e}")),
        },
        v => CommandInput::Json(v),
    };
    match app.commander.enqueue(input, req.targets, req.push).await {
        Ok(b) => batch(&b),
        Err(e) => command_error(e),
    }
}

fn template_view(t: &ProfileTemplate) -> Value {
    json!({
        "identifier": t.identifier,
        "uuid": t.uuid,
        "display_name": t.display_name,
        "payload_types": t.payload_types,
        "variables": t.variables,
        "sha256": t.sha256,
        "warnings": t.warnings,
        "source": t.source,
        "created_at": views::time(t.created_at),
        "updated_at": views::time(t.updated_at),
    })
}

pub fn device_profile_view(d: &DeviceProfile) -> Value {
    json!({
        "enrollment": d.enrollment,
        "identifier": d.identifier,
        "state": d.state,
        "command_uuid": d.command_uuid,
        "sha256": d.sha256,
        "updated_at": views::time(d.updated_at),
        "error_chain": d.error_chain,
    })
}

pub async fn list(State(app): State<Arc<App>>) -> Response {
    match app.mdm.store.templates().await {
        Ok(list) => Json(json!({"profiles": list.iter().map(template_view).collect::<Vec<_>>()})).into_response(),
        Err(e) => store_error(e),
    }
}

pub async fn show(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let t = match app.mdm.store.template(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no profile {id}")),
        Err(e) => return store_error(e),
    };
    let devices = match app.mdm.store.profile_devices(&id).await {
        Ok(d) => d,
        Err(e) => return store_error(e),
    };
    let mut counts = serde_json::Map::new();
    for d in &devices {
        let k = serde_json::to_value(d.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let n = counts.get(&k).and_then(Value::as_u64).unwrap_or(0) + 1;
        counts.insert(k, json!(n));
    }
    let mut v = template_view(&t);
    if let Some(o) = v.as_object_mut() {
        o.insert("template".into(), json!(String::from_utf8_lossy(&t.xml)));
        o.insert("states".into(), Value::Object(counts));
        o.insert("devices".into(), json!(devices.iter().map(device_profile_view).collect::<Vec<_>>()));
    }
    Json(v).into_response()
}

#[derive(Deserialize)]
pub struct UploadQuery {
    /// Queue the new version to every enrollment that has the profile.
    #[serde(default)]
    reinstall: bool,
}

/// Raw `.mobileconfig` body (plain or signed).
pub async fn upload(State(app): State<Arc<App>>, Query(q): Query<UploadQuery>, body: axum::body::Bytes) -> Response {
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body must be a .mobileconfig");
    }
    match app.commander.upload(&body, "api", q.reinstall).await {
        Ok((t, changed, reinstalled)) => {
            let mut v = template_view(&t);
            if let Some(o) = v.as_object_mut() {
                o.insert("changed".into(), json!(changed));
                o.insert(
                    "reinstall".into(),
                    reinstalled
                        .map(|b| serde_json::to_value(b).unwrap_or(Value::Null))
                        .unwrap_or(Value::Null),
                );
            }
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => command_error(e),
    }
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    /// Also queue RemoveProfile to every enrollment that has it.
    #[serde(default)]
    remove: bool,
}

pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>, Query(q): Query<DeleteQuery>) -> Response {
    let removal = if q.remove {
        let targets: Vec<String> = match app.mdm.store.profile_devices(&id).await {
            Ok(d) => d
                .into_iter()
                .filter(|d| {
                    use crate::store::ProfileState::*;
                    matches!(d.state, Installed | Pending | Missing | Failed)
                })
                .map(|d| d.enrollment)
                .collect(),
            Err(e) => return store_error(e),
        };
        if targets.is_empty() {
            None
        } else {
            match app.commander.remove_profile(&id, targets, true).await {
                Ok(b) => Some(b),
                Err(e) => return command_error(e),
            }
        }
    } else {
        None
    };
    match app.mdm.store.delete_template(&id).await {
        Ok(true) => Json(json!({"identifier": id, "deleted": true, "removal": removal})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no profile {id}")),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
pub struct Targets {
    targets: Vec<String>,
    #[serde(default = "yes")]
    push: bool,
}

/// `{"targets": [...]}` with at least one target, or the 400 to answer.
fn targets(body: &[u8]) -> Result<(Vec<String>, bool), Response> {
    let t: Targets =
        serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("body must be {{\"targets\": [...]}}: {e}")))?;
    if t.targets.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "targets: at least one enrollment id is required"));
    }
    Ok((t.targets, t.push))
}

pub async fn install(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    match targets(&body) {
        Ok((t, push)) => app
            .commander
            .install_template(&id, t, push)
            .await
            .map_or_else(command_error, |b| batch(&b)),
        Err(r) => r,
    }
}

pub async fn remove(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    match targets(&body) {
        Ok((t, push)) => app
            .commander
            .remove_profile(&id, t, push)
            .await
            .map_or_else(command_error, |b| batch(&b)),
        Err(r) => r,
    }
}

pub async fn device_profiles(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    let waiting = match super::credentials::waiting_entries(&app, &id).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    match app.mdm.store.device_profiles(&id).await {
        Ok(list) => {
            let mut profiles: Vec<_> = list
                .iter()
                .filter(|p| !waiting.iter().any(|w| w["identifier"] == p.identifier.as_str()))
                .map(device_profile_view)
                .collect();
            profiles.extend(waiting);
            Json(json!({"enrollment": id, "profiles": profiles})).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `{"USERNAME": "alice", "EMAIL": "alice@example.com"}`; an empty value removes.
pub async fn set_attributes(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let attrs: std::collections::BTreeMap<String, String> = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body must be a JSON object of strings: {e}")),
    };
    if let Some(k) = attrs.keys().find(|k| k.is_empty() || k.len() > 64) {
        return error(StatusCode::BAD_REQUEST, format!("attribute name {k:?}: 1 to 64 characters"));
    }
    match app.mdm.store.set_attributes(&id, attrs).await {
        Ok(Some(a)) => Json(json!({"enrollment": id, "attributes": a})).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => store_error(e),
    }
}

/// Add a new current key to the secrets keyring and reseal every stored token.
pub async fn rotate_secrets(State(app): State<Arc<App>>) -> Response {
    let key = match app.mdm.secrets.rotate() {
        Ok(k) => k,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("rotating the key: {e}")),
    };
    let mut others = 0;
    if let Some(c) = app.commander.orgcas() {
        match c.reseal().await {
            Ok(k) => others += k,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("resealing CA challenges: {e}")),
        }
    }
    if let Some(d) = app.commander.derived() {
        match d.reseal().await {
            Ok(k) => others += k,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("resealing derived credentials: {e}")),
        }
    }
    match app.mdm.reseal_all().await.map(|n| n + others) {
        Ok(n) => {
            tracing::info!(key = %key, resealed = n, "secrets key rotated");
            Json(json!({"key_id": key, "resealed": n})).into_response()
        }
        Err(e) => store_error(e),
    }
}
