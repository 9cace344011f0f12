//! Access tokens for identity providers: `/v1/access-tokens` (manage),
//! `/v1/access/verify` (ask), `/.well-known/jwks.json` (public keys).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::{error, store_error, views, Caller};
use crate::app::App;
use crate::service::access::accounts::Role;
use crate::service::access::tokens::{Access, TokenView};
use crate::service::ServiceError;

fn access(app: &App) -> Result<&Arc<Access>, Response> {
    app.commander
        .access()
        .ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "access tokens are not set up"))
}

fn failed(e: ServiceError) -> Response {
    match e {
        ServiceError::Store(e) => store_error(e),
        ServiceError::Forbidden(m) => error(StatusCode::CONFLICT, m),
        e => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn view(t: &TokenView) -> serde_json::Value {
    json!({
        "id": t.id,
        "value": t.value,
        "created_at": views::time(t.created_at),
        "effective_at": views::time(t.effective_at),
        "revoked_at": t.revoked_at.map(views::time),
        "active": t.active,
        "effective": t.effective,
    })
}

fn parse_time(s: &Option<String>) -> Result<Option<i64>, Response> {
    match s {
        None => Ok(None),
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| Some(t.unix_timestamp()))
            .map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{s:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)"),
                )
            }),
    }
}

/// Token changes reach apps: every remembered configuration is re-sent.
fn resend(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = app.commander.resend_app_configs(false).await {
            tracing::warn!(error = %e, "re-sending app configurations after a token change failed");
        }
    });
}

/// The tokens; their values only to the admin (an operator may read the
/// list, to see which token is in effect, but never a value).
pub async fn list(State(app): State<Arc<App>>, caller: Option<Extension<Caller>>) -> Response {
    let a = match access(&app) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let admin = caller.is_some_and(|c| c.role == Role::Admin);
    match a.list().await {
        Ok(l) => Json(json!({"tokens": l.iter().map(|t| {
            let mut v = view(t);
            if !admin {
                v["value"] = serde_json::Value::Null;
                v["value_hidden"] = json!(true);
            }
            v
        }).collect::<Vec<_>>()}))
        .into_response(),
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
pub struct NewToken {
    value: Option<String>,
    effective_at: Option<String>,
    revoke: Option<String>,
}

pub async fn create(State(app): State<Arc<App>>, Json(n): Json<NewToken>) -> Response {
    let a = match access(&app) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let eff = match parse_time(&n.effective_at) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match a.add(n.value, eff, n.revoke).await {
        Ok(t) => {
            tracing::info!(token = %t.id, "access token added");
            resend(&app);
            (StatusCode::CREATED, Json(view(&t))).into_response()
        }
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
pub struct EditToken {
    value: Option<String>,
    effective_at: Option<String>,
}

pub async fn edit(State(app): State<Arc<App>>, Path(id): Path<String>, Json(n): Json<EditToken>) -> Response {
    let a = match access(&app) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let eff = match parse_time(&n.effective_at) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match a.edit(&id, n.value, eff).await {
        Ok(t) => {
            resend(&app);
            Json(view(&t)).into_response()
        }
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
pub struct RevokeQuery {
    #[serde(default)]
    replace: bool,
}

pub async fn revoke(State(app): State<Arc<App>>, Path(id): Path<String>, Query(q): Query<RevokeQuery>) -> Response {
    let a = match access(&app) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match a.revoke(&id, q.replace).await {
        Ok(new) => {
            tracing::info!(token = %id, replaced = new.is_some(), "access token revoked");
            resend(&app);
            Json(json!({"revoked": id, "replacement": new.as_ref().map(view)})).into_response()
        }
        Err(e) => failed(e),
    }
}

#[derive(serde::Deserialize)]
pub struct VerifyRequest {
    token: String,
    device: Option<String>,
}

pub async fn verify(State(app): State<Arc<App>>, Json(r): Json<VerifyRequest>) -> Response {
    let a = match access(&app) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match a.verify(&r.token, r.device.as_deref()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => failed(e),
    }
}

pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    match access(&app) {
        Ok(a) => Json(a.jwks()).into_response(),
        Err(r) => r,
    }
}
