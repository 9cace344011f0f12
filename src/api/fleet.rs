//! Groups and blueprints (`/v1/groups`, `/v1/blueprints`): thin handlers over
//! `service::fleet`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiQuery;
use super::views::typed;
use super::{schema, ApiError, ApiResult};
use crate::app::App;

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body must be JSON: {e}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    Ok(Json(schema::GroupList { groups }).into_response())
}

pub async fn get_group(State(app): State<Arc<App>>, Path(name): Path<String>, ApiQuery(q): ApiQuery<LimitQuery>) -> ApiResult {
    let v: schema::GroupView = typed(app.fleet.group_view(&name, q.get()).await?, "reading a group's view")?;
    Ok(Json(v).into_response())
}

pub async fn put_group(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let g = app.fleet.put_group(&name, &body_json(&body)?).await?;
    Ok(Json(schema::GroupPut {
        group: g,
        note: "members are evaluated in the background; GET it to see them".into(),
    })
    .into_response())
}

pub async fn delete_group(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    app.fleet.delete_group(&name).await?;
    Ok(Json(schema::NameDeleted {
        name,
        deleted: true,
        note: None,
    })
    .into_response())
}

pub async fn list_blueprints(State(app): State<Arc<App>>) -> ApiResult {
    let b = app.fleet.blueprints().await?;
    Ok(Json(schema::BlueprintList {
        blueprints: b.into_iter().map(Into::into).collect(),
    })
    .into_response())
}

pub async fn get_blueprint(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(schema::BlueprintOne {
        blueprint: app.fleet.blueprint(&name).await?.into(),
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
}

pub async fn put_blueprint(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<PutQuery>,
    body: axum::body::Bytes,
) -> ApiResult {
    let v = body_json(&body)?;
    if q.dry_run {
        let spec = app.fleet.check_blueprint(&name, &v).await?;
        let plan = app.fleet.plan(&name, Some(spec), q.limit.unwrap_or(1000).clamp(1, 100_000)).await?;
        let plan: schema::BlueprintPlan = typed(plan, "reading a blueprint's plan")?;
        return Ok(Json(schema::BlueprintPut::Plan(plan)).into_response());
    }
    let (b, changed) = app.fleet.put_blueprint(&name, &v, "api").await?;
    Ok(Json(schema::BlueprintPut::Saved(schema::BlueprintSaved {
        blueprint: b.into(),
        changed,
    }))
    .into_response())
}

pub async fn delete_blueprint(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    app.fleet.delete_blueprint(&name).await?;
    Ok(Json(schema::NameDeleted {
        name,
        deleted: true,
        note: None,
    })
    .into_response())
}

pub async fn plan(State(app): State<Arc<App>>, Path(name): Path<String>, ApiQuery(q): ApiQuery<LimitQuery>) -> ApiResult {
    let b = app.fleet.blueprint(&name).await?;
    let plan: schema::BlueprintPlan = typed(app.fleet.plan(&name, Some(b.spec), q.get()).await?, "reading a blueprint's plan")?;
    Ok(Json(plan).into_response())
}

pub async fn status(State(app): State<Arc<App>>, Path(name): Path<String>, ApiQuery(q): ApiQuery<LimitQuery>) -> ApiResult {
    let status: schema::BlueprintStatus = typed(app.fleet.status(&name, q.get()).await?, "reading a blueprint's status")?;
    Ok(Json(status).into_response())
}

/// Reconcile now: one device (`?device=ID`) or every device (in full, or
/// `?sweep=true`: as the periodic sweep does, by digest).
pub async fn reconcile(State(app): State<Arc<App>>, ApiQuery(q): ApiQuery<ReconcileQuery>) -> ApiResult {
    match q.device {
        Some(id) => {
            super::enrollment(&app, &id).await?;
            let s = app.fleet.reconcile(vec![id.clone()]).await?;
            Ok(Json(schema::Reconciled {
                enrollment: Some(id),
                devices: None,
                changed: None,
                commands: s.commands as u64,
                busy: None,
            })
            .into_response())
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
            Ok(Json(schema::Reconciled {
                enrollment: None,
                devices: Some(s.devices as u64),
                changed: Some(s.changed as u64),
                commands: s.commands as u64,
                busy: Some(s.busy as u64),
            })
            .into_response())
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReconcileQuery {
    device: Option<String>,
    #[serde(default)]
    sweep: bool,
}
