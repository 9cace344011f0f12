//! Declarative management over the API: declarations, sets, assignments,
//! the status channel, and OS version requirements (`service::ddm`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error, store_error, views};
use crate::app::App;
use crate::service::ddm::{Ddm, DdmError};

fn ddm(app: &App) -> Result<&Arc<Ddm>, Response> {
    app.mdm
        .ddm()
        .ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "declarative management is not running"))
}

fn fail(e: DdmError) -> Response {
    match e {
        DdmError::Invalid(problems) => (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": format!("invalid declaration: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")),
                "problems": problems,
            })),
        )
            .into_response(),
        DdmError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        DdmError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        DdmError::Conflict(m) => error(StatusCode::CONFLICT, m),
        DdmError::Store(e) => store_error(e),
    }
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))
}

macro_rules! try_or {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

/// `PUT /v1/declarations`: create or replace (by Identifier).
pub async fn put_declaration(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let d = try_or!(ddm(&app));
    let v = try_or!(json_body(&body));
    match d.put_declaration(&v).await {
        Ok((rec, changed)) => Json(json!({
            "Type": rec.r#type,
            "Identifier": rec.identifier,
            "ServerToken": rec.server_token,
            "Payload": rec.payload,
            "kind": rec.kind,
            "changed": changed,
        }))
        .into_response(),
        Err(e) => fail(e),
    }
}

pub async fn list_declarations(State(app): State<Arc<App>>) -> Response {
    let d = try_or!(ddm(&app));
    match d.declarations().await {
        Ok(v) => Json(json!({"declarations": v})).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn get_declaration(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    match d.declaration(&id).await {
        Ok(Some(rec)) => Json(json!({
            "Type": rec.r#type,
            "Identifier": rec.identifier,
            "ServerToken": rec.server_token,
            "Payload": rec.payload,
            "kind": rec.kind,
            "updated_at": views::time(rec.updated_at),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no declaration {id}")),
        Err(e) => fail(e),
    }
}

pub async fn delete_declaration(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    if id.starts_with("mdmd.") {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id} is mdmd's own (--ddm-status-subscriptions false turns it off)"),
        );
    }
    match d.delete_declaration(&id).await {
        Ok(true) => Json(json!({"deleted": id})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no declaration {id}")),
        Err(e) => fail(e),
    }
}

pub async fn list_sets(State(app): State<Arc<App>>) -> Response {
    let d = try_or!(ddm(&app));
    match d.sets().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn get_set(State(app): State<Arc<App>>, Path(set): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    match d.set_view(&set).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn set_put(State(app): State<Arc<App>>, Path((set, id)): Path<(String, String)>) -> Response {
    let d = try_or!(ddm(&app));
    match d.set_add(&set, &id).await {
        Ok(changed) => Json(json!({"set": set, "declaration": id, "changed": changed})).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn set_delete(State(app): State<Arc<App>>, Path((set, id)): Path<(String, String)>) -> Response {
    let d = try_or!(ddm(&app));
    match d.set_remove(&set, &id).await {
        Ok(true) => Json(json!({"set": set, "declaration": id, "changed": true})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("{id} is not in set {set}")),
        Err(e) => fail(e),
    }
}

pub async fn assign(State(app): State<Arc<App>>, Path((id, set)): Path<(String, String)>) -> Response {
    let d = try_or!(ddm(&app));
    match d.assign(&id, &set, true).await {
        Ok(changed) => Json(json!({"enrollment": id, "set": set, "changed": changed})).into_response(),
        Err(e) => fail(e),
    }
}

pub async fn unassign(State(app): State<Arc<App>>, Path((id, set)): Path<(String, String)>) -> Response {
    let d = try_or!(ddm(&app));
    match d.assign(&id, &set, false).await {
        Ok(true) => Json(json!({"enrollment": id, "set": set, "changed": true})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("set {set} is not assigned to {id}")),
        Err(e) => fail(e),
    }
}

/// `GET /v1/devices/{id}/declarations`: the effective declarations with their
/// tokens, the sets they come from, and the sync tokens.
pub async fn device_declarations(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    let (effective, sets, tokens, status) = match (
        d.effective(&id).await,
        d.enrollment_sets(&id).await,
        d.sync_tokens(&id).await,
        d.status(&id).await,
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(s)) => (a, b, c, s),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return fail(e),
    };
    let list: Vec<Value> = effective
        .values()
        .map(|x| {
            let st = status.as_ref().and_then(|s| s.declarations.get(&x.identifier));
            json!({
                "Identifier": x.identifier,
                "Type": x.r#type,
                "kind": x.kind,
                "ServerToken": x.server_token,
                "device_status": st.map(|s| json!({
                    "active": s.active, "valid": s.valid, "server_token": s.server_token,
                    "current": s.server_token.as_deref() == Some(x.server_token.as_str()),
                    "reasons": s.reasons, "reported_at": views::time(s.at),
                })),
            })
        })
        .collect();
    Json(json!({"enrollment": id, "sets": sets, "sync_tokens": tokens["SyncTokens"], "declarations": list})).into_response()
}

/// `GET /v1/devices/{id}/status`: the status channel's latest values.
pub async fn device_status(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    match d.status(&id).await {
        Ok(Some(s)) => {
            let items: serde_json::Map<String, Value> = s
                .items
                .iter()
                .map(|(k, v)| (k.clone(), json!({"value": v.value, "reported_at": views::time(v.at)})))
                .collect();
            Json(json!({
                "enrollment": id,
                "items": items,
                "declarations": s.declarations,
                "errors": s.errors,
                "reports": s.reports,
                "updated_at": views::time(s.updated_at),
            }))
            .into_response()
        }
        Ok(None) => match app.mdm.store.enrollment(&id).await {
            Ok(Some(_)) => Json(json!({"enrollment": id, "items": {}, "declarations": {}, "errors": [], "reports": 0})).into_response(),
            Ok(None) => error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
            Err(e) => store_error(e),
        },
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
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
pub async fn find_status(State(app): State<Arc<App>>, Query(q): Query<StatusQuery>) -> Response {
    let d = try_or!(ddm(&app));
    match d.find_by_status(&q.item, &q.op, &q.value).await {
        Ok(v) => Json(json!({"item": q.item, "op": q.op, "value": q.value, "enrollments": v})).into_response(),
        Err(e) => fail(e),
    }
}

/// `POST /v1/devices/{id}/ddm/sync`: send the sync command now.
pub async fn sync_now(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    match d.send_sync(vec![id.clone()]).await {
        Ok(n) => Json(json!({"enrollment": id, "queued": n})).into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
pub struct OsRequirement {
    version: String,
    build: Option<String>,
    /// Local time, `yyyy-mm-ddThh:mm:ss`.
    deadline: String,
    details_url: Option<String>,
}

/// `PUT /v1/software-updates/{set}`: require an OS version by a deadline.
pub async fn require_os(State(app): State<Arc<App>>, Path(set): Path<String>, body: Bytes) -> Response {
    let d = try_or!(ddm(&app));
    let v = try_or!(json_body(&body));
    let r: OsRequirement = match serde_json::from_value(v) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{{version, deadline, build?, details_url?}}: {e}")),
    };
    match d
        .require_os(&set, &r.version, r.build.as_deref(), &r.deadline, r.details_url.as_deref())
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

/// `GET /v1/software-updates/{set}`: per device, pending / downloading / installed / failed.
pub async fn software_updates(State(app): State<Arc<App>>, Path(set): Path<String>) -> Response {
    let d = try_or!(ddm(&app));
    match d.software_updates(&set).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}
