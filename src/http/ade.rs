//! `POST /mdm/ade/enroll`: an ADE device in Setup Assistant sends its
//! MachineInfo (CMS SignedData) and gets its enrollment profile
//! (`service::ade`). macOS sends the same as a GET with the
//! `x-apple-aspen-deviceinfo` header (base64); both are taken. The same
//! bounds as the profile service: network policy, per-source budget, body size.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine as _;

use super::enroll::{aspen_config, network_refused, source, too_many};
use super::mdm::text;
use super::App;

/// Largest MachineInfo accepted (a real one is about 4 KB with its certificate chain).
const MAX_MACHINE_INFO: usize = 64 * 1024;

pub async fn post(
    State(app): State<Arc<App>>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    enroll(&app, peer.as_deref(), &headers, &body).await
}

pub async fn get(
    State(app): State<Arc<App>>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
) -> Response {
    let Some(info) = headers.get("x-apple-aspen-deviceinfo").and_then(|v| v.to_str().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected the device's MachineInfo (POST it, or the x-apple-aspen-deviceinfo header)\n".into(),
        );
    };
    if info.len() > MAX_MACHINE_INFO * 4 / 3 + 4 {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the MachineInfo is too large\n".into());
    }
    let Ok(body) = base64::engine::general_purpose::STANDARD.decode(info.trim()) else {
        return text(StatusCode::BAD_REQUEST, "x-apple-aspen-deviceinfo is not base64\n".into());
    };
    enroll(&app, peer.as_deref(), &headers, &body).await
}

async fn enroll(app: &App, peer: Option<&super::listener::PeerAddr>, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(r) = network_refused(app, peer, headers) {
        return r;
    }
    if body.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "expected the device's MachineInfo as CMS SignedData\n".into(),
        );
    }
    if body.len() > MAX_MACHINE_INFO {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the MachineInfo is too large\n".into());
    }
    let ip = source(app, peer, headers);
    if let Err(wait) = app.enroll_budget.take(ip) {
        tracing::warn!(client = %ip, "ADE enrollment refused: too many requests from this address");
        return too_many(wait, "ADE enrollment requests");
    }
    let made = app.ade.machine_info(body).await;
    aspen_config(app, made)
}
