//! ACME HTTP-01 answers: `GET /.well-known/acme-challenge/{token}` gives the
//! key authorization of a pending order (from the store, so any instance
//! answers). Served on the main listener and, with `--acme-http-listen`, on
//! a plain-HTTP port of its own (the CA connects to port 80), where every
//! other request is redirected to the HTTPS public URL.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::app::App;

pub async fn challenge(State(app): State<Arc<App>>, Path(token): Path<String>) -> Response {
    let Some(acme) = &app.acme else {
        return (StatusCode::NOT_FOUND, "no ACME order here\n").into_response();
    };
    match acme.key_authorization(&token).await {
        Some(ka) => ([(header::CONTENT_TYPE, "application/octet-stream")], ka).into_response(),
        None => (StatusCode::NOT_FOUND, "unknown challenge\n").into_response(),
    }
}

/// The plain-HTTP port: challenges, and a redirect to HTTPS for the rest.
pub fn challenge_router(app: Arc<App>, public_url: String) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(move |uri: Uri| {
            let to = format!(
                "{}{}",
                public_url.trim_end_matches('/'),
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            );
            async move { Redirect::permanent(&to).into_response() }
        })
        .layer(axum::middleware::from_fn(super::track))
        .with_state(app)
}
