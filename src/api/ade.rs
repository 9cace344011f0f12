//! Automated Device Enrollment (`/v1/ade/*`): thin handlers over
//! `service::ade` — the public key for ABM, server tokens, ADE profiles,
//! the devices ABM assigned, sync, and devices waiting in Setup Assistant.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult};
use crate::app::App;

pub async fn public_key(State(app): State<Arc<App>>) -> ApiResult {
    let pem = app.ade.key()?.cert_pem()?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"mdmd-ade.pem\""),
        ],
        pem,
    )
        .into_response())
}

pub async fn list_tokens(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(json!({"tokens": app.ade.tokens().await?})).into_response())
}

pub async fn put_token(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    Ok(Json(app.ade.put_token(&name, &body).await?).into_response())
}

pub async fn get_token(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let t = app
        .ade
        .token_view(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no ADE server token {name}")))?;
    Ok(Json(t).into_response())
}

pub async fn delete_token(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.ade.delete_token(&name).await? {
        return Err(ApiError::not_found(format!("no ADE server token {name}")));
    }
    Ok(Json(json!({"name": name, "deleted": true})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ProfileQuery {
    #[serde(default)]
    default: bool,
    /// As the default, only for these servers (comma-separated token names).
    server: Option<String>,
    /// As the default, only for devices this CEL rule matches.
    rule: Option<String>,
}

pub async fn put_profile(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<ProfileQuery>,
    body: axum::body::Bytes,
) -> ApiResult {
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body must be Apple's profile JSON: {e}")))?;
    let servers = q
        .server
        .as_deref()
        .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let rule = q.rule.filter(|r| !r.trim().is_empty());
    Ok(Json(app.ade.put_profile(&name, &body, q.default, servers, rule).await?).into_response())
}

pub async fn list_profiles(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(json!({"profiles": app.ade.profiles().await?})).into_response())
}

pub async fn get_profile(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let p = app
        .ade
        .profile(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no ADE profile {name}")))?;
    Ok(Json(p).into_response())
}

pub async fn delete_profile(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.ade.delete_profile(&name).await? {
        return Err(ApiError::not_found(format!("no ADE profile {name}")));
    }
    Ok(
        Json(json!({"name": name, "deleted": true, "note": "devices keep the profile Apple has for them until another is assigned"}))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
pub struct AssignBody {
    devices: Vec<String>,
}

pub async fn assign_profile(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let b: AssignBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body must be {{\"devices\": [serial…]}}: {e}")))?;
    if b.devices.is_empty() || b.devices.len() > 100_000 {
        return Err(ApiError::bad_request("devices: 1 to 100,000 serial numbers"));
    }
    Ok(Json(app.ade.assign_now(&name, b.devices).await?).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DevicesQuery {
    after: Option<String>,
    limit: Option<usize>,
    server: Option<String>,
}

pub async fn devices(State(app): State<Arc<App>>, Query(q): Query<DevicesQuery>) -> ApiResult {
    let v = app.ade.devices(q.after, q.limit.unwrap_or(500), q.server.as_deref()).await?;
    Ok(Json(v).into_response())
}

pub async fn sync(State(app): State<Arc<App>>) -> ApiResult {
    let reports = app.ade.sync_all().await?;
    let failed = reports.iter().any(|r| r.error.is_some());
    let status = if failed { StatusCode::BAD_GATEWAY } else { StatusCode::OK };
    Ok((status, Json(json!({"tokens": reports}))).into_response())
}

pub async fn waiting(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(json!({"devices": app.ade.waiting().await?})).into_response())
}

pub async fn release(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(app.ade.release_now(&id).await?).into_response())
}
