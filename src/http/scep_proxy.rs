//! `/scep-proxy/{ca}/{token}`: mdmd's SCEP proxy to an organisation CA
//! (`service::credentials::orgca`). The token is checked before anything is forwarded:
//! unknown, expired, used or for another CA is 403. A CA that fails is 502,
//! one that does not answer in time 504.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::mdm::text;
use super::App;
use crate::service::credentials::orgca::CaError;

async fn forward(app: &App, ca: &str, token: &str, query: Option<String>, post: Option<(String, Vec<u8>)>) -> Response {
    let Some(cas) = app.commander.orgcas() else {
        return text(StatusCode::NOT_FOUND, "no organisation CAs on this server\n".into());
    };
    match cas.proxy(ca, token, query.as_deref().unwrap_or(""), post).await {
        Ok(p) => {
            let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [(header::CONTENT_TYPE, p.content_type)], p.body).into_response()
        }
        Err(CaError::Internal { what, source }) => super::mdm::internal_error(what, source.as_ref()),
        Err(e) => {
            let status = match &e {
                CaError::Forbidden(_) => StatusCode::FORBIDDEN,
                CaError::Invalid(_) => StatusCode::BAD_REQUEST,
                CaError::NotFound(_) => StatusCode::NOT_FOUND,
                CaError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                CaError::Upstream(_) | CaError::Exists(_) => StatusCode::BAD_GATEWAY,
                CaError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                CaError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            // The token is not logged (only whether it was refused).
            tracing::warn!(ca, status = status.as_u16(), error = %e, "SCEP proxy request refused or failed");
            text(status, format!("{e}\n"))
        }
    }
}

pub async fn get(State(app): State<Arc<App>>, Path((ca, token)): Path<(String, String)>, RawQuery(q): RawQuery) -> Response {
    forward(&app, &ca, &token, q, None).await
}

pub async fn post(
    State(app): State<Arc<App>>,
    Path((ca, token)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-pki-message")
        .to_owned();
    forward(&app, &ca, &token, q, Some((ct, body.to_vec()))).await
}
