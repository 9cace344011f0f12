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

/// The HTTP basic credentials of a request, if it has well-formed ones.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (user, pass) = s.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// One of the fixed `--enroll-user` credentials.
fn static_ok(app: &App, user: &str, pass: &str) -> bool {
    // Compare every entry so timing does not tell which user exists.
    app.enroll_users.iter().fold(false, |found, (u, p)| {
        found | (bool::from(u.as_bytes().ct_eq(user.as_bytes())) & bool::from(p.as_bytes().ct_eq(pass.as_bytes())))
    })
}

/// The cookie that carries a web sign-in in progress (sealed; see `service::directory::Pending`).
/// `SameSite=Lax`: the identity provider's redirect back is a cross-site navigation.
pub const SIGNIN_COOKIE: &str = "mdmd_signin";

/// Send the browser to the identity provider, keeping the sealed state in a cookie.
pub async fn to_identity_provider(app: &App, purpose: crate::service::directory::Purpose, hint: Option<&str>) -> Response {
    match app.directory.begin(purpose, hint).await {
        Ok((url, sealed)) => {
            let cookie = format!(
                "{SIGNIN_COOKIE}={sealed}; Path=/auth/oidc; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
                crate::service::directory::PENDING_SECONDS
            );
            (
                StatusCode::FOUND,
                [
                    (header::LOCATION, url),
                    (header::SET_COOKIE, cookie),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
            )
                .into_response()
        }
        Err(e) => directory_error(&e),
    }
}

/// What a person is told when the directory says no, or cannot answer.
pub fn directory_error(e: &crate::service::directory::DirectoryError) -> Response {
    use crate::service::directory::DirectoryError as E;
    match e {
        E::BadCredentials => text(StatusCode::UNAUTHORIZED, "Wrong user name or password.\n".into()),
        E::NotInGroup { user, .. } => {
            tracing::warn!(%user, "enrollment refused: not in the required group");
            text(
                StatusCode::FORBIDDEN,
                format!("{user} may not enroll devices: ask your IT department to add you to the enrollment group.\n"),
            )
        }
        E::Unavailable(why) => {
            tracing::warn!(error = %why, "directory unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "30"), (header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "The organisation's directory cannot be reached right now, so your sign-in cannot be checked. Try again in a few minutes.\n",
            )
                .into_response()
        }
        E::Refused(why) => {
            tracing::warn!(error = %why, "identity provider's answer refused");
            text(StatusCode::FORBIDDEN, "The sign-in could not be verified. Start again.\n".into())
        }
        E::Config(why) => {
            tracing::error!(error = %why, "directory configuration");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is not configured correctly on the server.\n".into(),
            )
        }
    }
}

pub fn too_many(wait: crate::service::access::limits::RetryAfter, what: &str) -> Response {
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

pub fn source(app: &App, peer: Option<&super::listener::PeerAddr>, headers: &HeaderMap) -> std::net::IpAddr {
    let peer = peer.map(|p| crate::service::access::limits::TcpPeer(p.0));
    crate::service::access::limits::client_ip(&app.enroll_networks, peer.as_ref(), |name| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
    })
}

/// Conditional enrollment: refuse clients outside the allowed networks.
pub fn network_refused(app: &App, peer: Option<&super::listener::PeerAddr>, headers: &HeaderMap) -> Option<Response> {
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
    // Failures count per address, and per user name typed (a spray over many addresses).
    let typed = basic(&headers).map(|(u, _)| u);
    let attempt = match app.limiter.begin(ip, typed.as_deref().unwrap_or("enroll")) {
        Ok(a) => a,
        Err(wait) => {
            tracing::warn!(client = %ip, "enrollment refused: too many failed credential checks");
            return too_many(wait, "failed enrollment attempts");
        }
    };
    if let Some(token) = q.get("invite") {
        let user = match app.enroller.use_invitation(token).await {
            Ok(Ok(user)) => {
                attempt.succeeded();
                user
            }
            // A failed attempt (counted).
            Ok(Err(why)) => return text(StatusCode::FORBIDDEN, format!("{why}\n")),
            Err(e) => {
                attempt.succeeded();
                return service_error(&app, e);
            }
        };
        if let Err(wait) = app.enroll_budget.take(ip) {
            return too_many(wait, "enrollment profiles");
        }
        return profile(&app, "invitation", ttl, user).await;
    }
    if let Some((user, pass)) = basic(&headers) {
        let signed_in = if static_ok(&app, &user, &pass) {
            Some(None)
        } else if let Some(ldap) = app.directory.ldap.as_ref() {
            let r = ldap.authenticate(&user, &pass).await;
            // A sign-in tells whether the directory answers, before the next periodic check does.
            app.directory.note(
                "ldap",
                match &r {
                    Err(e @ crate::service::directory::DirectoryError::Unavailable(_)) => Some(format!("LDAP {}: {e}", ldap.config().url)),
                    _ => None,
                },
            );
            match r {
                Ok(s) => Some(Some(s.enroll_user("ldap"))),
                // Counted as a failed check (the attempt is dropped), then asked again.
                Err(crate::service::directory::DirectoryError::BadCredentials) => None,
                // Right password: no failure to count.
                Err(e) => {
                    attempt.succeeded();
                    return directory_error(&e);
                }
            }
        } else {
            None
        };
        if let Some(user) = signed_in {
            attempt.succeeded();
            if let Err(wait) = app.enroll_budget.take(ip) {
                tracing::warn!(client = %ip, "enrollment refused: too many profiles for this address");
                return too_many(wait, "enrollment profiles");
            }
            let purpose = if user.is_some() { "ldap" } else { "enroll-user" };
            if let Some(u) = &user {
                tracing::info!(user = %u.username, "enrollment sign-in (directory)");
            }
            return profile(&app, purpose, ttl, user).await;
        }
    } else if !headers.contains_key(header::AUTHORIZATION) {
        // A first request without credentials (the browser asks for them next) is no failure.
        attempt.succeeded();
        // With an identity provider, people sign in there (`?password` keeps the password prompt).
        if app.directory.oidc.is_some() && !q.contains_key("password") {
            return to_identity_provider(&app, crate::service::directory::Purpose::Enroll, None).await;
        }
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

/// The enrollment profile (or Apple's profile service, the first of three phases) for `user`.
pub async fn profile(app: &App, purpose: &str, ttl: i64, user: Option<crate::store::EnrollUser>) -> Response {
    let made = if app.enroller.cfg.three_phase {
        app.enroller.profile_service_profile(purpose, ttl, user).await
    } else {
        app.enroller.signed_profile(purpose, ttl, user).await
    };
    aspen_config(app, made)
}

pub fn aspen_config(app: &App, made: Result<Vec<u8>, crate::service::ServiceError>) -> Response {
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
