//! `/v1/accounts`: named API accounts with roles (admin only).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{error, store_error, views};
use crate::app::App;
use crate::service::access::accounts::Role;
use crate::service::ServiceError;

#[derive(serde::Deserialize)]
pub struct NewAccount {
    name: String,
    role: String,
}

pub async fn create(State(app): State<Arc<App>>, Json(a): Json<NewAccount>) -> Response {
    let Some(role) = Role::parse(&a.role) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("role {:?}: admin, operator, read-only, nac or issuer", a.role),
        );
    };
    match app.accounts.create(&a.name, role).await {
        Ok(secret) => {
            tracing::info!(account = %a.name, role = role.as_str(), "API account created");
            (
                StatusCode::CREATED,
                Json(json!({
                    "name": a.name,
                    "role": role.as_str(),
                    "secret": secret,
                    "note": "shown only now: use it as a bearer token, or with HTTP basic as NAME:SECRET",
                })),
            )
                .into_response()
        }
        Err(ServiceError::Store(e)) => store_error(e),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub async fn list(State(app): State<Arc<App>>) -> Response {
    match app.accounts.list().await {
        Ok(v) => Json(json!({"accounts": v.iter().map(|a| json!({
            "name": a.name,
            "role": a.role.as_str(),
            "created_at": views::time(a.created_at),
        })).collect::<Vec<_>>()}))
        .into_response(),
        Err(e) => store_error(e),
    }
}

pub async fn delete(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.accounts.delete(&name).await {
        Ok(true) => {
            tracing::info!(account = %name, "API account deleted");
            Json(json!({"deleted": name})).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no account {name}")),
        Err(e) => store_error(e),
    }
}
