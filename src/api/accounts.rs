//! `/v1/accounts`: named API accounts with roles (admin only).

use std::sync::Arc;

use super::error::ApiJson;
use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::service::access::accounts::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct NewAccount {
    name: String,
    role: String,
}

pub async fn create(State(app): State<Arc<App>>, ApiJson(a): ApiJson<NewAccount>) -> ApiResult {
    let role = Role::parse(&a.role)
        .ok_or_else(|| ApiError::bad_request(format!("role {:?}: admin, operator, read-only, nac or issuer", a.role)))?;
    let secret = app.accounts.create(&a.name, role).await?;
    tracing::info!(account = %a.name, role = role.as_str(), "API account created");
    Ok((
        StatusCode::CREATED,
        Json(schema::AccountCreated {
            name: a.name,
            role: role.as_str().into(),
            secret,
            note: "shown only now: use it as a bearer token, or with HTTP basic as NAME:SECRET".into(),
        }),
    )
        .into_response())
}

pub async fn list(State(app): State<Arc<App>>) -> ApiResult {
    let v = app.accounts.list().await?;
    Ok(Json(schema::AccountList {
        accounts: v
            .iter()
            .map(|a| schema::AccountView {
                name: a.name.clone(),
                role: a.role.as_str().into(),
                created_at: crate::clock::rfc3339(a.created_at),
            })
            .collect(),
    })
    .into_response())
}

pub async fn delete(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    if !app.accounts.delete(&name).await? {
        return Err(ApiError::not_found(format!("no account {name}")));
    }
    tracing::info!(account = %name, "API account deleted");
    Ok(Json(schema::AccountDeleted { deleted: name }).into_response())
}
