//! Admin API for APNs: the push certificate and pushing on demand; the
//! public health endpoint.

use std::sync::Arc;

use super::error::ApiQuery;
use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::push::cert::PushCert;
use crate::push::PushError;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SetQuery {
    /// Accept a certificate whose topic strands enrolled devices.
    #[serde(default)]
    force: bool,
}

/// `PUT /v1/push-cert`: PEM certificate + key (`application/x-pem-file`), or
/// PKCS#12 (`application/x-pkcs12`) with the password in `X-Password`.
pub async fn set(State(app): State<Arc<App>>, ApiQuery(q): ApiQuery<SetQuery>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let password = headers.get("x-password").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed = match ct.as_str() {
        "application/x-pkcs12" => PushCert::from_pkcs12(&body, password.as_deref().unwrap_or("")),
        "application/x-pem-file" => PushCert::from_pem(&body, password.as_deref()),
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {other:?}: send application/x-pem-file (certificate and key) or application/x-pkcs12 (with X-Password)"
                ),
            ))
        }
    };
    let pc = parsed.map_err(|e| ApiError::bad_request(e.to_string()))?;
    match app.pusher.set_certificate(pc, q.force).await {
        Ok((topic, stranded)) => Ok(Json(schema::PushCertSet {
            topic,
            stranded_devices: stranded,
            push: health_view(&app)?,
        })
        .into_response()),
        Err(e @ PushError::TopicChange { .. }) => {
            let stranded = match &e {
                PushError::TopicChange { stranded, .. } => *stranded,
                _ => 0,
            };
            Err(ApiError::with_body(
                StatusCode::CONFLICT,
                super::error::ErrorBody {
                    stranded_devices: Some(stranded),
                    ..super::error::ErrorBody::new(e.to_string())
                },
            ))
        }
        Err(PushError::Store(e)) => Err(e.into()),
        // Saving or sharing a certificate that parsed: ours.
        Err(e) => Err(ApiError::internal("setting the push certificate", e)),
    }
}

pub async fn show(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(health_view(&app)?).into_response())
}

/// The push certificate's health, typed.
pub fn health_view(app: &App) -> Result<schema::PushHealth, ApiError> {
    super::views::typed(app.pusher.health(), "reading the push certificate's health")
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PushTargets {
    targets: Vec<String>,
}

/// `POST /v1/push`: push these enrollments now; the answer says what APNs said.
pub async fn push(State(app): State<Arc<App>>, body: axum::body::Bytes) -> ApiResult {
    let t: PushTargets =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body must be {{\"targets\": [...]}}: {e}")))?;
    if t.targets.is_empty() || t.targets.len() > 10_000 {
        return Err(ApiError::bad_request("targets: 1 to 10,000 enrollment ids"));
    }
    let results = app.pusher.push_now(t.targets).await;
    let results = results
        .into_iter()
        .map(|(id, s)| {
            let v = schema::PushOutcome {
                at: crate::clock::rfc3339(s.at),
                outcome: s.outcome,
                accepted: s.accepted,
                token_disabled: s.token_disabled,
            };
            (id, v)
        })
        .collect();
    Ok(Json(schema::PushResults { results }).into_response())
}

/// `GET /health` (no key): for load balancers and monitoring. 200 with
/// `status: ok` or `warning` (push certificate missing, expiring within 30
/// days, or refused by APNs); no secrets.
pub async fn health(State(app): State<Arc<App>>) -> ApiResult {
    let push = health_view(&app)?;
    let mut warnings = super::health::warnings(&app).await;
    // A balancer takes an instance out when its database is unreachable.
    let store = match tokio::time::timeout(std::time::Duration::from_secs(5), app.mdm.store.setting("topic")).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the database did not answer within 5 s".to_owned()),
    };
    let (code, status) = match (&store, warnings.is_empty()) {
        (Some(_), _) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (None, true) => (axum::http::StatusCode::OK, "ok"),
        (None, false) => (axum::http::StatusCode::OK, "warning"),
    };
    if let Some(e) = &store {
        warnings.insert(0, format!("storage unavailable: {e}"));
    }
    let body = Json(schema::Health {
        status: status.into(),
        warnings,
        store: app.mdm.store.describe(),
        push: schema::HealthPush {
            configured: push.configured,
            topic: Some(push.topic),
            not_after: push.not_after,
            days_left: push.days_left,
            expiring_soon: push.expiring_soon,
            certificate_error: push.certificate_error,
        },
    });
    Ok((code, body).into_response())
}
