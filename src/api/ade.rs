//! Automated Device Enrollment (`/v1/ade/*`): thin handlers over
//! `service::ade` — the public key for ABM, server tokens, ADE profiles,
//! the devices ABM assigned, sync, and devices waiting in Setup Assistant.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiQuery;
use super::views::typed;
use super::{schema, ApiError, ApiResult};
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
    let tokens = app
        .ade
        .tokens()
        .await?
        .into_iter()
        .map(|t| typed(t, "reading an ADE token's view"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::AdeTokenList { tokens }).into_response())
}

pub async fn put_token(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let v: schema::AdeTokenView = typed(app.ade.put_token(&name, &body).await?, "reading an ADE token's view")?;
    Ok(Json(v).into_response())
}

pub async fn get_token(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let t = app
        .ade
        .token_view(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no ADE server token {name}")))?;
    let t: schema::AdeTokenView = typed(t, "reading an ADE token's view")?;
    Ok(Json(t).into_response())
}

pub async fn delete_token(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.ade.delete_token(&name).await? {
        return Err(ApiError::not_found(format!("no ADE server token {name}")));
    }
    Ok(Json(schema::NameDeleted {
        name,
        deleted: true,
        note: None,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    ApiQuery(q): ApiQuery<ProfileQuery>,
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
    let v: schema::AdeProfileView = typed(
        app.ade.put_profile(&name, &body, q.default, servers, rule).await?,
        "reading an ADE profile's view",
    )?;
    Ok(Json(v).into_response())
}

pub async fn list_profiles(State(app): State<Arc<App>>) -> ApiResult {
    let profiles = app
        .ade
        .profiles()
        .await?
        .into_iter()
        .map(|p| typed(p, "reading an ADE profile's view"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::AdeProfileList { profiles }).into_response())
}

pub async fn get_profile(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let p = app
        .ade
        .profile(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no ADE profile {name}")))?;
    let p: schema::AdeProfileView = typed(p, "reading an ADE profile's view")?;
    Ok(Json(p).into_response())
}

pub async fn delete_profile(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.ade.delete_profile(&name).await? {
        return Err(ApiError::not_found(format!("no ADE profile {name}")));
    }
    Ok(Json(schema::NameDeleted {
        name,
        deleted: true,
        note: Some("devices keep the profile Apple has for them until another is assigned".into()),
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AssignBody {
    devices: Vec<String>,
}

pub async fn assign_profile(State(app): State<Arc<App>>, Path(name): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let b: AssignBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body must be {{\"devices\": [serial…]}}: {e}")))?;
    if b.devices.is_empty() || b.devices.len() > 100_000 {
        return Err(ApiError::bad_request("devices: 1 to 100,000 serial numbers"));
    }
    let v: schema::AdeAssigned = typed(app.ade.assign_now(&name, b.devices).await?, "reading an ADE assignment")?;
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DevicesQuery {
    after: Option<String>,
    limit: Option<usize>,
    server: Option<String>,
}

pub async fn devices(State(app): State<Arc<App>>, ApiQuery(q): ApiQuery<DevicesQuery>) -> ApiResult {
    let v: schema::AdeDevices = typed(
        app.ade.devices(q.after, q.limit.unwrap_or(500), q.server.as_deref()).await?,
        "reading the ADE devices",
    )?;
    Ok(Json(v).into_response())
}

pub async fn sync(State(app): State<Arc<App>>) -> ApiResult {
    let reports = app.ade.sync_all().await?;
    let failed = reports.iter().any(|r| r.error.is_some());
    let status = if failed { StatusCode::BAD_GATEWAY } else { StatusCode::OK };
    Ok((status, Json(schema::AdeSyncReports { tokens: reports })).into_response())
}

pub async fn waiting(State(app): State<Arc<App>>) -> ApiResult {
    let devices = app
        .ade
        .waiting()
        .await?
        .into_iter()
        .map(|w| typed(w, "reading a waiting device"))
        .collect::<Result<_, _>>()?;
    Ok(Json(schema::AdeWaitingList { devices }).into_response())
}

pub async fn release(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let v: schema::AdeReleased = typed(app.ade.release_now(&id).await?, "reading a waiting device")?;
    Ok(Json(v).into_response())
}
