//! The admin API's one error type, [`ApiError`]: handlers return
//! `Result<Response, ApiError>` and use `?`.
//!
//! - What blames the client (or tells it a state it must know: not found,
//!   conflict, not set up) answers as before: its status and
//!   `{"error": "…"}` (with `problems` where there are some).
//! - The store failing answers 503 `storage unavailable` (try again), as before.
//! - Our own failures (sealing, a task that died, a corrupt stored value)
//!   answer 500 with a request id and nothing else: the full chain of causes
//!   is logged with that id (`tracing::error!`), never sent.
//!
//! The request id is in the body (`request_id`) and in `X-Request-Id`; the
//! device endpoints (`http`) use [`internal`] for the same log line and id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

pub use super::openapi::ErrorBody;
use crate::service::{BoxError, ServiceError};
use crate::store::StoreError;

pub use crate::logfmt::{chain, internal, request_id, REQUEST_ID};

/// An admin API failure, turned into its answer by `IntoResponse`.
#[derive(Debug)]
pub enum ApiError {
    /// The client is told as is: status and JSON body (`{"error": …}`).
    Client {
        status: StatusCode,
        body: ErrorBody,
        retry_after: Option<u64>,
    },
    /// The store failed: 503, try again.
    Store(StoreError),
    /// Ours: 500 with a request id; the cause goes to the log only.
    Internal { what: &'static str, source: BoxError },
}

impl ApiError {
    /// `status` with `{"error": msg}`.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            body: ErrorBody::new(msg),
            retry_after: None,
        }
    }

    /// `status` with an error body of its own (more than `error`).
    pub fn with_body(status: StatusCode, body: ErrorBody) -> Self {
        ApiError::Client {
            status,
            body,
            retry_after: None,
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }

    /// 503 with `Retry-After: 1`: busy, try again.
    pub fn busy(msg: impl Into<String>) -> Self {
        ApiError::Client {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: ErrorBody::new(msg),
            retry_after: Some(1),
        }
    }

    /// Our own failure while doing `what`.
    pub fn internal(what: &'static str, source: impl Into<BoxError>) -> Self {
        ApiError::Internal {
            what,
            source: source.into(),
        }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `Query<T>` whose refusal is the API's JSON error (400), not axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
    }
}

/// `Json<T>` whose refusal is the API's JSON error (400), not axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(|e| ApiError::bad_request(format!("body: {}", e.body_text())))
    }
}

/// Log a storage failure with a fresh request id; returns the id.
pub fn storage(e: &(dyn std::error::Error + 'static)) -> String {
    let id = request_id();
    tracing::error!(request_id = %id, error = %chain(e), "storage failure");
    id
}

fn with_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(REQUEST_ID, v);
    }
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client { status, body, retry_after } => match retry_after {
                Some(s) => (status, [(header::RETRY_AFTER, s.to_string())], Json(body)).into_response(),
                None => (status, Json(body)).into_response(),
            },
            ApiError::Store(e) => {
                let id = storage(&e);
                let body = ErrorBody {
                    request_id: Some(id.clone()),
                    ..ErrorBody::new("storage unavailable")
                };
                with_id((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response(), &id)
            }
            ApiError::Internal { what, source } => {
                let id = internal(what, source.as_ref());
                let body = ErrorBody {
                    request_id: Some(id.clone()),
                    ..ErrorBody::new(format!("internal error (request id {id})"))
                };
                with_id((StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response(), &id)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

/// `Rejected` is a 400, `Forbidden` a 403, `Busy` a 503 to retry; handlers
/// that answer otherwise map those first.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Rejected(m) => ApiError::bad_request(m),
            e @ ServiceError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            ServiceError::Busy(m) => ApiError::busy(m),
            ServiceError::Store(e) => ApiError::Store(e),
            ServiceError::Internal { what, source } => ApiError::Internal { what, source },
        }
    }
}

/// A failed enqueue or upload: 400 listing every problem.
impl From<crate::service::commands::CommandError> for ApiError {
    fn from(e: crate::service::commands::CommandError) -> Self {
        use crate::service::commands::CommandError;
        match e {
            CommandError::Invalid(problems) => ApiError::with_body(
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    problems: Some(problems.clone()),
                    ..ErrorBody::new(format!(
                        "invalid: {}",
                        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
                    ))
                },
            ),
            CommandError::NotFound(m) => ApiError::not_found(m),
            CommandError::Service(e) => e.into(),
        }
    }
}

impl From<crate::service::ddm::DdmError> for ApiError {
    fn from(e: crate::service::ddm::DdmError) -> Self {
        use crate::service::ddm::DdmError;
        match e {
            DdmError::Invalid(problems) => ApiError::with_body(
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    problems: Some(problems.clone()),
                    ..ErrorBody::new(format!(
                        "invalid declaration: {}",
                        problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
                    ))
                },
            ),
            DdmError::BadRequest(m) => ApiError::bad_request(m),
            DdmError::NotFound(m) => ApiError::not_found(m),
            DdmError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            DdmError::Store(e) => ApiError::Store(e),
            DdmError::Internal { what, source } => ApiError::Internal { what, source },
        }
    }
}

impl From<crate::service::credentials::orgca::CaError> for ApiError {
    fn from(e: crate::service::credentials::orgca::CaError) -> Self {
        use crate::service::credentials::orgca::CaError;
        match e {
            CaError::Invalid(m) => ApiError::bad_request(m),
            CaError::NotFound(m) => ApiError::not_found(m),
            CaError::Exists(m) => ApiError::new(StatusCode::CONFLICT, m),
            CaError::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, format!("the CA's check failed: {m}")),
            CaError::Timeout(m) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, m),
            CaError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            CaError::Store(e) => ApiError::Store(e),
            CaError::Internal { what, source } => ApiError::Internal { what, source },
        }
    }
}

impl From<crate::service::credentials::derived::DerivedError> for ApiError {
    fn from(e: crate::service::credentials::derived::DerivedError) -> Self {
        use crate::service::credentials::derived::DerivedError;
        match e {
            DerivedError::Invalid(m) => ApiError::bad_request(m),
            DerivedError::NotFound(m) => ApiError::not_found(m),
            DerivedError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            DerivedError::Store(e) => ApiError::Store(e),
            DerivedError::Internal { what, source } => ApiError::Internal { what, source },
        }
    }
}

impl From<crate::service::fleet::FleetError> for ApiError {
    fn from(e: crate::service::fleet::FleetError) -> Self {
        use crate::service::fleet::FleetError;
        match e {
            FleetError::BadRequest(m) => ApiError::bad_request(m),
            FleetError::NotFound(m) => ApiError::not_found(m),
            FleetError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, format!("{m} changed meanwhile; try again")),
            FleetError::Service(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_keeps_every_cause_once() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "outer: disk on fire");
        let s = ServiceError::internal("sealing a token", e);
        assert_eq!(chain(&s), "sealing a token: outer: disk on fire");
    }

    #[test]
    fn internal_is_500_without_detail() {
        let r = ApiError::from(ServiceError::internal("sealing", "the key is gone")).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = r.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(id.len(), 12);
    }

    #[test]
    fn client_errors_keep_their_status() {
        assert_eq!(
            ApiError::from(ServiceError::Rejected("no".into())).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::from(crate::service::commands::CommandError::NotFound("x".into())).status(),
            StatusCode::NOT_FOUND
        );
    }
}

/// ADE: a wrong request is 400, Apple's refusal or failure 502 with Apple's reason.
impl From<crate::service::apps::AppsFailure> for ApiError {
    fn from(e: crate::service::apps::AppsFailure) -> Self {
        use crate::service::apps::AppsFailure;
        match e {
            AppsFailure::Invalid(m) => ApiError::bad_request(m),
            AppsFailure::NotFound(m) => ApiError::not_found(m),
            AppsFailure::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            e @ AppsFailure::Apple(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
            AppsFailure::Service(e) => e.into(),
        }
    }
}

impl From<crate::service::ade::AdeFailure> for ApiError {
    fn from(e: crate::service::ade::AdeFailure) -> Self {
        use crate::service::ade::AdeFailure;
        match e {
            AdeFailure::Invalid(m) => ApiError::bad_request(m),
            AdeFailure::NotFound(m) => ApiError::not_found(m),
            e @ AdeFailure::Apple(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
            AdeFailure::Service(e) => e.into(),
        }
    }
}
