//! Apps (`/v1/apps*`, `/v1/apps-and-books/*`): thin handlers over
//! `service::apps` — content tokens, the catalog (an App Store app by id,
//! or an `.ipa` as the body), install and remove, each device's apps.

use std::sync::Arc;

use super::views::typed;
use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::service::apps::catalog::{AppSettings, StoreAppRequest};
use crate::service::apps::install::InstallOptions;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

pub async fn list_tokens(State(app): State<Arc<App>>) -> ApiResult {
    let tokens = app
        .apps
        .tokens()
        .await?
        .into_iter()
        .map(|t| typed(t, "reading a content token's view"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::AppTokenList { tokens }).into_response())
}

pub async fn put_token(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let existed = app.apps.token_view(&name).await?.is_some();
    let view: schema::AppTokenView = typed(app.apps.put_token(&name, &body).await?, "reading a content token's view")?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(view)).into_response())
}

pub async fn get_token(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let t = app
        .apps
        .token_view(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no Apps and Books content token {name}")))?;
    let t: schema::AppTokenView = typed(t, "reading a content token's view")?;
    Ok(Json(t).into_response())
}

pub async fn delete_token(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.apps.delete_token(&name).await? {
        return Err(ApiError::not_found(format!("no Apps and Books content token {name}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn sync(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(app.apps.sync().await).into_response())
}

pub async fn list(State(app): State<Arc<App>>) -> ApiResult {
    let apps = app
        .apps
        .list_view()
        .await?
        .into_iter()
        .map(|a| typed(a, "reading an app's view"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::AppList { apps }).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    remove_on_unenroll: Option<bool>,
    prevent_backup: Option<bool>,
}

/// `POST /v1/apps`: JSON `{itunes_store_id, …}`, or an `.ipa` as
/// `application/octet-stream` (streamed to a private file, bounded by
/// `--app-max-size`; the API's JSON body limit does not apply to it).
pub async fn add(
    State(app): State<Arc<App>>,
    q: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?;
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ctype.as_str() {
        "application/json" => {
            let body = axum::body::to_bytes(req.into_body(), app.max_api_body)
                .await
                .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the JSON body is too large"))?;
            let r: StoreAppRequest = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!(
                    "body: {e} (JSON {{\"itunes_store_id\": N, \"token\"?, \"bundle_id\"?, \"configuration\"?, \"remove_on_unenroll\"?, \"prevent_backup\"?}}, or an .ipa as application/octet-stream)"
                ))
            })?;
            if q.remove_on_unenroll.is_some() || q.prevent_backup.is_some() {
                return Err(ApiError::bad_request("with a JSON body, give the flags in the body"));
            }
            let v: schema::AppView = typed(app.apps.add_store_app(r).await?, "reading an app's view")?;
            Ok((StatusCode::CREATED, Json(v)).into_response())
        }
        "application/octet-stream" => {
            let stream = req.into_body().into_data_stream();
            let (file, sha, size) = crate::service::apps::files::spool(stream, app.apps.cfg.max_ipa).await?;
            let (v, created) = app
                .apps
                .add_ipa(file.path(), &sha, size, q.remove_on_unenroll, q.prevent_backup)
                .await?;
            drop(file);
            let v: schema::AppView = typed(v, "reading an app's view")?;
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(v)).into_response())
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {:?}: send application/json ({{\"itunes_store_id\": N}}) for an App Store app, or the .ipa as application/octet-stream",
                crate::outbound::bounded(other, 80)
            ),
        )),
    }
}

pub async fn get(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let a = app.apps.app(&id).await?;
    let v: schema::AppView = typed(app.apps.app_view(&a, true).await?, "reading an app's view")?;
    Ok(Json(v).into_response())
}

pub async fn set(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let s: AppSettings = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body: {e} (JSON {{\"configuration\"?, \"remove_on_unenroll\"?, \"prevent_backup\"?}})"
        ))
    })?;
    let v: schema::AppView = typed(app.apps.set_app(&id, s).await?, "reading an app's view")?;
    Ok(Json(v).into_response())
}

pub async fn delete(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    app.apps.delete_app(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppTargets {
    targets: Vec<String>,
}

fn targets(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let t: AppTargets =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e} (JSON {{\"targets\": [enrollment id …]}})")))?;
    if t.targets.is_empty() {
        return Err(ApiError::bad_request("targets: name at least one enrollment"));
    }
    Ok(t.targets)
}

pub async fn install(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let t = targets(&body)?;
    let r = app.apps.install(&id, t, InstallOptions::default()).await?;
    Ok(Json(r).into_response())
}

pub async fn remove(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let t = targets(&body)?;
    let r = app.apps.remove(&id, t).await?;
    Ok(Json(r).into_response())
}

pub async fn device_apps(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    if app.mdm.store.enrollment(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("no enrollment {id}")));
    }
    let apps = app
        .apps
        .device_view(&id)
        .await?
        .into_iter()
        .map(|a| typed(a, "reading a device's app state"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::DeviceApps { apps }).into_response())
}
