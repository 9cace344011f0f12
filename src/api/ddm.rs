//! Declarative management over the API: declarations, sets, assignments,
//! the status channel, and OS version requirements (`service::ddm`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiQuery;
use super::views::typed;
use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::service::ddm::Ddm;

fn ddm(app: &App) -> Result<&Arc<Ddm>, ApiError> {
    app.mdm
        .ddm()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "declarative management is not running"))
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// `PUT /v1/declarations`: create or replace (by Identifier).
pub async fn put_declaration(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let d = ddm(&app)?;
    let v = json_body(&body)?;
    let (rec, changed) = d.put_declaration(&v).await?;
    Ok(Json(schema::DeclarationPut {
        r#type: rec.r#type,
        identifier: rec.identifier,
        server_token: rec.server_token,
        payload: serde_json::to_value(&rec.payload).unwrap_or_default(),
        kind: rec.kind.as_str().into(),
        changed,
    })
    .into_response())
}

pub async fn list_declarations(State(app): State<Arc<App>>) -> ApiResult {
    let d = ddm(&app)?;
    let declarations = d
        .declarations()
        .await?
        .into_iter()
        .map(|v| typed(v, "reading a declaration's view"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::DeclarationList { declarations }).into_response())
}

pub async fn get_declaration(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    let rec = d
        .declaration(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no declaration {id}")))?;
    Ok(Json(schema::DeclarationView {
        r#type: rec.r#type,
        identifier: rec.identifier,
        server_token: rec.server_token,
        payload: serde_json::to_value(&rec.payload).unwrap_or_default(),
        kind: rec.kind.as_str().into(),
        updated_at: crate::clock::rfc3339(rec.updated_at),
    })
    .into_response())
}

pub async fn delete_declaration(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    if id.starts_with("mdmd.") {
        return Err(ApiError::bad_request(format!(
            "{id} is mdmd's own (--ddm-status-subscriptions false turns it off)"
        )));
    }
    if !d.delete_declaration(&id).await? {
        return Err(ApiError::not_found(format!("no declaration {id}")));
    }
    Ok(Json(schema::Deleted { deleted: id }).into_response())
}

pub async fn list_sets(State(app): State<Arc<App>>) -> ApiResult {
    let d = ddm(&app)?;
    let sets: schema::SetList = typed(d.sets().await?, "reading the sets")?;
    Ok(Json(sets).into_response())
}

pub async fn get_set(State(app): State<Arc<App>>, Path(set): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    let view: schema::SetView = typed(d.set_view(&set).await?, "reading a set's view")?;
    Ok(Json(view).into_response())
}

pub async fn set_put(State(app): State<Arc<App>>, Path((set, id)): Path<(String, String)>) -> ApiResult {
    let d = ddm(&app)?;
    let changed = d.set_add(&set, &id).await?;
    Ok(Json(schema::SetChanged {
        set,
        declaration: id,
        changed,
    })
    .into_response())
}

pub async fn set_delete(State(app): State<Arc<App>>, Path((set, id)): Path<(String, String)>) -> ApiResult {
    let d = ddm(&app)?;
    if !d.set_remove(&set, &id).await? {
        return Err(ApiError::not_found(format!("{id} is not in set {set}")));
    }
    Ok(Json(schema::SetChanged {
        set,
        declaration: id,
        changed: true,
    })
    .into_response())
}

pub async fn assign(State(app): State<Arc<App>>, Path((id, set)): Path<(String, String)>) -> ApiResult {
    let d = ddm(&app)?;
    let changed = d.assign(&id, &set, true).await?;
    Ok(Json(schema::SetAssigned {
        enrollment: id,
        set,
        changed,
    })
    .into_response())
}

pub async fn unassign(State(app): State<Arc<App>>, Path((id, set)): Path<(String, String)>) -> ApiResult {
    let d = ddm(&app)?;
    if !d.assign(&id, &set, false).await? {
        return Err(ApiError::not_found(format!("set {set} is not assigned to {id}")));
    }
    Ok(Json(schema::SetAssigned {
        enrollment: id,
        set,
        changed: true,
    })
    .into_response())
}

/// `GET /v1/devices/{id}/declarations`: the effective declarations with their
/// tokens, the sets they come from, and the sync tokens.
pub async fn device_declarations(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    super::enrollment(&app, &id).await?;
    let (effective, sets, tokens, status) = (
        d.effective(&id).await?,
        d.enrollment_sets(&id).await?,
        d.sync_tokens(&id).await?,
        d.status(&id).await?,
    );
    let declarations = effective
        .values()
        .map(|x| {
            let st = status.as_ref().and_then(|s| s.declarations.get(&x.identifier));
            schema::EffectiveDeclaration {
                identifier: x.identifier.clone(),
                r#type: x.r#type.clone(),
                kind: x.kind.as_str().into(),
                server_token: x.server_token.clone(),
                device_status: st.map(|s| schema::DeclarationDeviceStatus {
                    active: s.active,
                    valid: s.valid.clone(),
                    server_token: s.server_token.clone(),
                    current: s.server_token.as_deref() == Some(x.server_token.as_str()),
                    reasons: s.reasons.clone(),
                    reported_at: crate::clock::rfc3339(s.at),
                }),
            }
        })
        .collect();
    let sync_tokens = typed(tokens["SyncTokens"].clone(), "reading a device's sync tokens")?;
    Ok(Json(schema::DeviceDeclarations {
        enrollment: id,
        sets,
        sync_tokens,
        declarations,
    })
    .into_response())
}

/// `GET /v1/devices/{id}/status`: the status channel's latest values.
pub async fn device_status(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    let Some(s) = d.status(&id).await? else {
        super::enrollment(&app, &id).await?;
        return Ok(Json(schema::DeviceStatus {
            enrollment: id,
            items: Default::default(),
            declarations: Default::default(),
            errors: Vec::new(),
            reports: 0,
            updated_at: None,
        })
        .into_response());
    };
    let items = s
        .items
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                schema::StatusItemValue {
                    value: v.value.clone(),
                    reported_at: crate::clock::rfc3339(v.at),
                },
            )
        })
        .collect();
    Ok(Json(schema::DeviceStatus {
        enrollment: id,
        items,
        declarations: s.declarations,
        errors: s.errors,
        reports: s.reports,
        updated_at: crate::clock::rfc3339(s.updated_at),
    })
    .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    item: String,
    #[serde(default = "eq")]
    op: String,
    value: String,
}

fn eq() -> String {
    "eq".into()
}

/// `GET /v1/status?item=device.operating-system.version&op=lt&value=17.2`.
pub async fn find_status(State(app): State<Arc<App>>, ApiQuery(q): ApiQuery<StatusQuery>) -> ApiResult {
    let d = ddm(&app)?;
    let v = d.find_by_status(&q.item, &q.op, &q.value).await?;
    let enrollments = v
        .into_iter()
        .map(|m| typed(m, "reading a status match"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::StatusMatches {
        item: q.item,
        op: q.op,
        value: q.value,
        enrollments,
    })
    .into_response())
}

/// `POST /v1/devices/{id}/ddm/sync`: send the sync command now.
pub async fn sync_now(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    super::enrollment(&app, &id).await?;
    let n = d.send_sync(vec![id.clone()]).await?;
    Ok(Json(schema::DdmSynced {
        enrollment: id,
        queued: n as u64,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct OsRequirement {
    version: String,
    build: Option<String>,
    /// Local time, `yyyy-mm-ddThh:mm:ss`.
    deadline: String,
    details_url: Option<String>,
}

/// `PUT /v1/software-updates/{set}`: require an OS version by a deadline.
pub async fn require_os(State(app): State<Arc<App>>, Path(set): Path<String>, body: Bytes) -> ApiResult {
    let d = ddm(&app)?;
    let v = json_body(&body)?;
    let r: OsRequirement =
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("{{version, deadline, build?, details_url?}}: {e}")))?;
    let v = d
        .require_os(&set, &r.version, r.build.as_deref(), &r.deadline, r.details_url.as_deref())
        .await?;
    let v: schema::OsRequired = typed(v, "reading the software update state")?;
    Ok(Json(v).into_response())
}

/// `GET /v1/software-updates/{set}`: per device, pending / downloading / installed / failed.
pub async fn software_updates(State(app): State<Arc<App>>, Path(set): Path<String>) -> ApiResult {
    let d = ddm(&app)?;
    let v: schema::SoftwareUpdates = typed(d.software_updates(&set).await?, "reading the software update state")?;
    Ok(Json(v).into_response())
}
