//! `/v1/accounts`: named API accounts with roles (admin only).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{views, ApiError, ApiResult};
use crate::app::App;
use crate::service::access::accounts::Role;

#[derive(serde::Deserialize)]
pub struct NewAccount {
    name: String,
    role: String,
}

pub async fn create(State(app): State<Arc<App>>, Json(a): Json<NewAccount>) -> ApiResult {
    let role = Role::parse(&a.role)
        .ok_or_else(|| ApiError::bad_request(format!("role {:?}: admin, operator, read-only, nac or issuer", a.role)))?;
    let secret = app.accounts.create(&a.name, role).await?;
    tracing::info!(account = %a.name, role = role.as_str(), "API account created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": a.name,
            "role": role.as_str(),
            "secret": secret,
            "note": "shown only now: use it as a bearer token, or with HTTP basic as NAME:SECRET",
        })),
    )
        .into_response())
}

pub async fn list(State(app): State<Arc<App>>) -> ApiResult {
    let v = app.accounts.list().await?;
    Ok(Json(json!({"accounts": v.iter().map(|a| json!({
        "name": a.name,
        "role": a.role.as_str(),
        "created_at": views::time(a.created_at),
    })).collect::<Vec<_>>()}))
    .into_response())
}

pub async fn delete(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.accounts.delete(&name).await? {
        return Err(ApiError::not_found(format!("no account {name}")));
    }
    tracing::info!(account = %name, "API account deleted");
    Ok(Json(json!({"deleted": name})).into_response())
}
