//! Thin HTTP handlers: body limits, status codes, content types. The rules
//! live in `service`; the admin API's handlers live in `api`.

pub mod enroll;
pub mod listener;
pub mod mdm;
pub mod netpolicy;
pub mod scep;
pub mod scep_proxy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, put};
use axum::Router;

use crate::service::Mdm;

#[derive(Default)]
pub struct Stats {
    pub checkins: AtomicU64,
    pub connects: AtomicU64,
    pub rejected: AtomicU64,
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct App {
    pub mdm: Arc<Mdm>,
    pub pki: Arc<crate::pki::Pki>,
    pub enroller: Arc<crate::service::enroll::Enroller>,
    /// Admin commands and profiles (validation, per-device copies).
    pub commander: Arc<crate::service::commands::Commander>,
    /// APNs wake-ups and the push certificate.
    pub pusher: Arc<crate::push::Pusher>,
    /// Behind a TLS-terminating proxy: trust its `Client-Cert` header.
    pub plain_http: bool,
    /// Basic-auth users allowed to download the enrollment profile.
    pub enroll_users: Vec<(String, String)>,
    /// Networks enrollment is allowed from (conditional enrollment).
    pub enroll_networks: netpolicy::NetPolicy,
    pub api_key: String,
    /// Named API accounts with roles.
    pub accounts: Arc<crate::service::accounts::Accounts>,
    pub stats: Stats,
    pub max_body: usize,
    pub max_api_body: usize,
}

pub fn router(app: Arc<App>) -> Router {
    let device = Router::new()
        .route("/mdm/checkin", put(mdm::put))
        .route("/mdm/connect", put(mdm::put))
        .route("/mdm", put(mdm::put))
        .route("/scep", get(scep::get).post(scep::post))
        .route("/scep-proxy/{ca}/{token}", get(scep_proxy::get).post(scep_proxy::post))
        .route("/mdm/enroll", get(enroll::get))
        .route("/mdm/profile-service", axum::routing::post(enroll::profile_service))
        .layer(DefaultBodyLimit::max(app.max_body));
    let api = crate::api::router()
        .layer(DefaultBodyLimit::max(app.max_api_body))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), crate::api::auth));
    device.merge(api).with_state(app)
}
