//! `GET /mdm/enroll`: the signed enrollment profile, only with valid
//! enrollment credentials (HTTP basic) or a single-use invitation. This is a
//! person in a browser, not an enrolled device, so 401 here is the normal
//! way to ask for credentials.
//!
//! Cost: wrong enrollment credentials count as failed credential checks per
//! client address (429 with Retry-After over the limit), and every answer that
//! creates a single-use secret takes one from the client's `--enroll-per-source`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::mdm::{service_error, text};
use super::App;

fn basic_ok(app: &App, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(v.trim()) else {
        return false;
    };
    let Ok(s) = String::from_utf8(raw) else {
        return false;
    };
    let Some((user, pass)) = s.split_once(':') else {
        return false;
    };
    // Compare every entry so timing does not tell which user exists.
    app.enroll_users.iter().fold(false, |found, (u, p)| {
        found | (bool::from(u.as_bytes().ct_eq(user.as_bytes())) & bool::from(p.as_bytes().ct_eq(pass.as_bytes())))
    })
}

fn too_many(wait: crate::service::access::limits::RetryAfter, what: &str) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::RETRY_AFTER, wait.0.max(1).to_string()),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        ],
        format!("Too many {what} from this address; try again in {} seconds.\n", wait.0.max(1)),
    )
        .into_response()
}

fn source(app: &App, peer: Option<&super::listener::PeerAddr>, headers: &HeaderMap) -> std::net::IpAddr {
    let peer = peer.map(|p| crate::service::access::limits::TcpPeer(p.0));
    crate::service::access::limits::client_ip(&app.enroll_networks, peer.as_ref(), |name| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
    })
}

/// Conditional enrollment: refuse clients outside the allowed networks.
fn network_refused(app: &App, peer: Option<&super::listener::PeerAddr>, headers: &HeaderMap) -> Option<Response> {
    let peer = peer?.0.ip();
    match app
        .enroll_networks
        .check(peer, |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok()))
    {
        Ok(()) => None,
        Err(ip) => {
            tracing::warn!(client = %ip, "enrollment refused: not from an allowed network");
            Some(text(
                StatusCode::FORBIDDEN,
                format!("Enrollment is only possible from your organisation's network (this request came from {ip}). Connect to the corporate Wi-Fi or VPN and try again.\n"),
            ))
        }
    }
}

pub async fn get(
    State(app): State<Arc<App>>,
    Query(q): Query<HashMap<String, String>>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = network_refused(&app, peer.as_deref(), &headers) {
        return r;
    }
    let ttl = app.enroller.cfg.challenge_ttl;
    let ip = source(&app, peer.as_deref(), &headers);
    let attempt = match app.limiter.begin(ip, "enroll") {
        Ok(a) => a,
        Err(wait) => {
            tracing::warn!(client = %ip, "enrollment refused: too many failed credential checks");
            return too_many(wait, "failed enrollment attempts");
        }
    };
    if let Some(token) = q.get("invite") {
        match app.enroller.use_invitation(token).await {
            Ok(Ok(())) => attempt.succeeded(),
            // A failed attempt (counted).
            Ok(Err(why)) => return text(StatusCode::FORBIDDEN, format!("{why}\n")),
            Err(e) => {
                attempt.succeeded();
                return service_error(&app, e);
            }
        }
        if let Err(wait) = app.enroll_budget.take(ip) {
            return too_many(wait, "enrollment profiles");
        }
        return profile(&app, "invitation", ttl).await;
    }
    if basic_ok(&app, &headers) {
        attempt.succeeded();
        if let Err(wait) = app.enroll_budget.take(ip) {
            tracing::warn!(client = %ip, "enrollment refused: too many profiles for this address");
            return too_many(wait, "enrollment profiles");
        }
        return profile(&app, "enroll-user", ttl).await;
    }
    // A first request without credentials (the browser asks for them next) is no failure.
    if !headers.contains_key(header::AUTHORIZATION) {
        attempt.succeeded();
    }
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"mdmd enrollment\", charset=\"UTF-8\""),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "Enrollment needs your enrollment credentials or an invitation link.\n",
    )
        .into_response()
}

async fn profile(app: &App, purpose: &str, ttl: i64) -> Response {
    let made = if app.enroller.cfg.three_phase {
        app.enroller.profile_service_profile(purpose, ttl).await
    } else {
        app.enroller.signed_profile(purpose, ttl).await
    };
    aspen_config(app, made)
}

fn aspen_config(app: &App, made: Result<Vec<u8>, crate::service::ServiceError>) -> Response {
    match made {
        Ok(der) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/x-apple-aspen-config"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"enroll.mobileconfig\""),
            ],
            der,
        )
            .into_response(),
        Err(e) => service_error(app, e),
    }
}

/// `POST /mdm/profile-service`: the device's signed attributes (phase 1 or
/// phase 3 of over-the-air enrollment); answered with the next profile.
pub async fn profile_service(
    State(app): State<Arc<App>>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = network_refused(&app, peer.as_deref(), &headers) {
        return r;
    }
    if body.is_empty() {
        return text(StatusCode::BAD_REQUEST, "expected the device attributes as CMS SignedData\n".into());
    }
    let ip = source(&app, peer.as_deref(), &headers);
    if let Err(wait) = app.enroll_budget.take(ip) {
        tracing::warn!(client = %ip, "profile service refused: too many requests from this address");
        return too_many(wait, "profile-service requests");
    }
    let made = app.enroller.profile_service(&body).await;
    aspen_config(&app, made)
}
