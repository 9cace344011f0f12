//! Access tokens for identity providers: `/v1/access-tokens` (manage),
//! `/v1/access/verify` (ask), `/.well-known/jwks.json` (public keys).

use std::sync::Arc;

use super::error::{ApiJson, ApiQuery};
use super::{schema, ApiError, ApiResult, Caller};
use crate::app::App;
use crate::clock::rfc3339;
use crate::service::access::accounts::Role;
use crate::service::access::tokens::{Access, Schedule, TokenView};
use crate::service::ServiceError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};

fn access(app: &App) -> Result<&Arc<Access>, ApiError> {
    app.commander
        .access()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "access tokens are not set up"))
}

/// The service's refusals: the last active token is a 409 here.
fn failed(e: ServiceError) -> ApiError {
    match e {
        ServiceError::Forbidden(m) => ApiError::new(StatusCode::CONFLICT, m),
        e => e.into(),
    }
}

fn view(t: &TokenView) -> schema::AccessTokenView {
    schema::AccessTokenView {
        id: t.id.clone(),
        value: Some(t.value.clone()),
        created_at: rfc3339(t.created_at),
        effective_at: rfc3339(t.effective_at),
        revoked_at: t.revoked_at.and_then(rfc3339),
        active: t.active,
        effective: t.effective,
        status: t.status.into(),
        carried: t.carried,
        warning: t.warning.clone(),
        value_hidden: None,
    }
}

fn parse_time(s: &Option<String>) -> Result<Option<i64>, ApiError> {
    match s {
        None => Ok(None),
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| Some(t.unix_timestamp()))
            .map_err(|_| ApiError::bad_request(format!("{s:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)"))),
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
pub async fn list(State(app): State<Arc<App>>, caller: Option<Extension<Caller>>) -> ApiResult {
    let a = access(&app)?;
    let admin = caller.is_some_and(|c| c.role == Role::Admin);
    let l = a.list().await.map_err(failed)?;
    let sched = Schedule::of(&l);
    Ok(Json(schema::AccessTokenList {
        tokens: l
            .iter()
            .map(|t| {
                let mut v = view(t);
                if !admin {
                    v.value = None;
                    v.value_hidden = Some(true);
                }
                v
            })
            .collect(),
        schedule: schema::TokenSchedule {
            required: sched.required.as_ref().map(|(id, since)| schema::TokenSince {
                id: id.clone(),
                since: rfc3339(*since),
            }),
            next: sched.next.as_ref().map(|(id, from)| schema::TokenFrom {
                id: id.clone(),
                from: rfc3339(*from),
            }),
            carried: sched.carried.clone(),
            summary: sched.summary(),
        },
    })
    .into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    value: Option<String>,
    effective_at: Option<String>,
    revoke: Option<String>,
}

pub async fn create(State(app): State<Arc<App>>, ApiJson(n): ApiJson<NewToken>) -> ApiResult {
    let a = access(&app)?;
    let eff = parse_time(&n.effective_at)?;
    let t = a.add(n.value, eff, n.revoke).await.map_err(failed)?;
    tracing::info!(token = %t.id, "access token added");
    resend(&app);
    Ok((StatusCode::CREATED, Json(view(&t))).into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct EditToken {
    value: Option<String>,
    effective_at: Option<String>,
}

pub async fn edit(State(app): State<Arc<App>>, Path(id): Path<String>, ApiJson(n): ApiJson<EditToken>) -> ApiResult {
    let a = access(&app)?;
    let eff = parse_time(&n.effective_at)?;
    let t = a.edit(&id, n.value, eff).await.map_err(failed)?;
    resend(&app);
    Ok(Json(view(&t)).into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    #[serde(default)]
    replace: bool,
}

pub async fn revoke(State(app): State<Arc<App>>, Path(id): Path<String>, ApiQuery(q): ApiQuery<RevokeQuery>) -> ApiResult {
    let a = access(&app)?;
    let new = a.revoke(&id, q.replace).await.map_err(failed)?;
    tracing::info!(token = %id, replaced = new.is_some(), "access token revoked");
    resend(&app);
    Ok(Json(schema::AccessTokenRevoked {
        revoked: id,
        replacement: new.as_ref().map(view),
    })
    .into_response())
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    token: String,
    device: Option<String>,
}

pub async fn verify(State(app): State<Arc<App>>, ApiJson(r): ApiJson<VerifyRequest>) -> ApiResult {
    let a = access(&app)?;
    let v = a.verify(&r.token, r.device.as_deref()).await.map_err(failed)?;
    Ok(Json(v).into_response())
}

pub async fn jwks(State(app): State<Arc<App>>) -> ApiResult {
    let keys: schema::Jwks = super::views::typed(access(&app)?.jwks(), "reading the JWKS")?;
    Ok(Json(keys).into_response())
}
