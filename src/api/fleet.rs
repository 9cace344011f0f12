//! Groups and blueprints (`/v1/groups`, `/v1/blueprints`): thin handlers over
//! `service::fleet`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult};
use crate::app::App;

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body must be JSON: {e}")))
}

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    limit: Option<usize>,
}

impl LimitQuery {
    fn get(&self) -> usize {
        self.limit.unwrap_or(1000).clamp(1, 100_000)
    }
}

pub async fn list_groups(State(app): State<Arc<App>>) -> ApiResult {
    let groups = app.fleet.groups().await?;
    Ok(Json(json!({"groups": groups})).into_response())
}

pub async fn get_group(State(app): State<Arc<App>>, Path(name): Path<String>, Query(q): Query<LimitQuery>) -> ApiResult {
    Ok(Json(app.fleet.group_view(&name, q.get()).await?).into_response())
}

pub async fn put_group(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let g = app.fleet.put_group(&name, &body_json(&body)?).await?;
    Ok(Json(json!({"group": g, "note": "members are evaluated in the background; GET it to see them"})).into_response())
}

pub async fn delete_group(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    app.fleet.delete_group(&name).await?;
    Ok(Json(json!({"name": name, "deleted": true})).into_response())
}

pub async fn list_blueprints(State(app): State<Arc<App>>) -> ApiResult {
    let b = app.fleet.blueprints().await?;
    Ok(Json(json!({"blueprints": b})).into_response())
}

pub async fn get_blueprint(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(json!({"blueprint": app.fleet.blueprint(&name).await?})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PutQuery {
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
}

pub async fn put_blueprint(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<PutQuery>,
    body: axum::body::Bytes,
) -> ApiResult {
    let v = body_json(&body)?;
    if q.dry_run {
        let spec = app.fleet.check_blueprint(&name, &v).await?;
        let plan = app.fleet.plan(&name, Some(spec), q.limit.unwrap_or(1000).clamp(1, 100_000)).await?;
        return Ok(Json(plan).into_response());
    }
    let (b, changed) = app.fleet.put_blueprint(&name, &v, "api").await?;
    Ok(Json(json!({"blueprint": b, "changed": changed})).into_response())
}

pub async fn delete_blueprint(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    app.fleet.delete_blueprint(&name).await?;
    Ok(Json(json!({"name": name, "deleted": true})).into_response())
}

pub async fn plan(State(app): State<Arc<App>>, Path(name): Path<String>, Query(q): Query<LimitQuery>) -> ApiResult {
    let b = app.fleet.blueprint(&name).await?;
    Ok(Json(app.fleet.plan(&name, Some(b.spec), q.get()).await?).into_response())
}

pub async fn status(State(app): State<Arc<App>>, Path(name): Path<String>, Query(q): Query<LimitQuery>) -> ApiResult {
    Ok(Json(app.fleet.status(&name, q.get()).await?).into_response())
}

/// Reconcile now: one device (`?device=ID`) or every device (in full, or
/// `?sweep=true`: as the periodic sweep does, by digest).
pub async fn reconcile(State(app): State<Arc<App>>, Query(q): Query<ReconcileQuery>) -> ApiResult {
    match q.device {
        Some(id) => {
            super::enrollment(&app, &id).await?;
            let s = app.fleet.reconcile(vec![id.clone()]).await?;
            Ok(Json(json!({"enrollment": id, "commands": s.commands})).into_response())
        }
        None => {
            let t = std::time::Instant::now();
            // The sweep compares digests; the default looks at everything again.
            let s = if q.sweep {
                app.fleet.sweep().await?
            } else {
                app.fleet.reconcile_all(true, true).await?
            };
            tracing::info!(
                devices = s.devices,
                commands = s.commands,
                sweep = q.sweep,
                seconds = t.elapsed().as_secs_f64(),
                "reconcile asked for"
            );
            Ok(Json(json!({"devices": s.devices, "changed": s.changed, "commands": s.commands, "busy": s.busy})).into_response())
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReconcileQuery {
    device: Option<String>,
    #[serde(default)]
    sweep: bool,
}
