//! Thin HTTP handlers for devices: body limits, status codes, content types.
//! The rules live in `service`; shared state in `app`.

pub mod account;
pub mod acme;
pub mod ade;
pub mod apps;
pub mod conn;
pub mod enroll;
pub mod listener;
pub mod mdm;
pub mod scep;
pub mod scep_proxy;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, put};
use axum::Router;

pub(crate) use crate::app::{App, Stats};

/// The device-facing routes (check-in, connect, SCEP, the SCEP proxy,
/// enrollment). `server::router` puts them beside the admin API.
pub fn router(max_body: usize) -> Router<Arc<App>> {
    Router::new()
        .route("/mdm/checkin", put(mdm::put))
        .route("/mdm/connect", put(mdm::put))
        .route("/mdm", put(mdm::put))
        .route("/scep", get(scep::get).post(scep::post))
        .route("/scep-proxy/{ca}/{token}", get(scep_proxy::get).post(scep_proxy::post))
        .route("/mdm/enroll", get(enroll::get))
        .route("/mdm/profile-service", axum::routing::post(enroll::profile_service))
        .route(crate::service::ade::ENROLL_PATH, get(ade::get).post(ade::post))
        .route("/.well-known/com.apple.remotemanagement", get(account::discovery))
        .route("/mdm/account/{mode}", axum::routing::post(account::enroll))
        .route("/mdm/account/{mode}/signin", get(account::signin_page).post(account::signin))
        .route("/.well-known/acme-challenge/{token}", get(acme::challenge))
        .route("/mdm/ddm/profiles/{template}", get(mdm::ddm_profile))
        .route(
            "/mdm/apps/{app}/{enrollment}/{sha}/{expires}/{mac}/manifest.plist",
            get(apps::manifest),
        )
        .route("/mdm/apps/{app}/{enrollment}/{sha}/{expires}/{mac}/app.ipa", get(apps::ipa))
        .route("/mdm/ddm/assets/{identifier}", get(mdm::ddm_asset))
        .layer(DefaultBodyLimit::max(max_body))
}

/// Requests by route, method and status, with their latency (`/metrics`).
pub async fn track(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    crate::metrics::get().request(&route, method.as_str(), status, took);
    // The access line: never the query string or a header (tokens live there).
    let enrollment = resp.extensions().get::<EnrollmentTag>().map(|e| e.0.as_str()).unwrap_or("");
    tracing::info!(
        target: "mdmd::access",
        %route,
        method = %method,
        status,
        ms = (took.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        enrollment,
        "request"
    );
    resp
}

/// The enrollment a device request was about (response extension, for the access line).
#[derive(Clone, Debug)]
pub struct EnrollmentTag(pub String);
