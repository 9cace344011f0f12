//! Web sign-in at the organisation's identity provider (OpenID Connect), for
//! the console and for people enrolling: `GET /ui/sso` starts a console
//! sign-in; `GET /auth/oidc/callback` (the one redirect URI registered at the
//! identity provider) finishes every sign-in and does what it was for — a
//! console session with the role the person's groups give, the enrollment
//! profile for them, or an account-driven enrollment's access token.
//!
//! The state of a sign-in (state, nonce, PKCE verifier, purpose) travels in
//! a cookie sealed with the keyring (`service::directory::Pending`), so
//! starting one stores nothing. The callback is counted by the credential
//! limiter per address: a refused answer is a failed check.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, DOCTYPE};

use super::{cookie, new_session, pages, safe_next, set_cookie, Shared, COOKIE, SESSION_SECONDS};
use crate::http::enroll::{directory_error, to_identity_provider, SIGNIN_COOKIE};
use crate::service::directory::Purpose;

/// `GET /ui/sso?next=/ui/…`: off to the identity provider.
pub async fn start(State(c): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    if c.app.directory.oidc.is_none() {
        return pages::plain(
            StatusCode::NOT_FOUND,
            "Not configured",
            "No identity provider is configured (--oidc-issuer).",
        );
    }
    let next = safe_next(q.get("next").map(String::as_str));
    to_identity_provider(&c.app, Purpose::Console { next }, None).await
}

fn clear_signin(mut r: Response) -> Response {
    let v = format!("{SIGNIN_COOKIE}=; Path=/auth/oidc; Max-Age=0; HttpOnly; Secure; SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `GET /auth/oidc/callback?code=…&state=…` (or `error=…`).
pub async fn callback(
    State(c): State<Shared>,
    peer: Option<axum::extract::Extension<crate::service::access::limits::TcpPeer>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    clear_signin(finish(&c, peer.as_deref(), &headers, &q).await)
}

async fn finish(
    c: &Shared,
    peer: Option<&crate::service::access::limits::TcpPeer>,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    let app = &c.app;
    let Some(pending) = cookie(headers, SIGNIN_COOKIE).and_then(|s| app.directory.open(&s)) else {
        return pages::plain(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in was not started here, or took longer than ten minutes. Start again.",
        );
    };
    if let Some(err) = q.get("error") {
        let err: String = err.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        tracing::info!(error = %err, "identity provider refused the sign-in");
        return pages::plain(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            &format!("The identity provider refused the sign-in ({err})."),
        );
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return pages::plain(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The identity provider's answer has no code and state.",
        );
    };
    let ip = crate::service::access::limits::client_ip(&app.enroll_networks, peer, |name| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
    });
    let attempt = match app.limiter.begin(ip, "oidc") {
        Ok(a) => a,
        Err(wait) => return crate::http::enroll::too_many(wait, "failed sign-ins"),
    };
    let signed = match app.directory.finish(&pending, code, state).await {
        Ok(s) => {
            attempt.succeeded();
            s
        }
        Err(e @ crate::service::directory::DirectoryError::Refused(_)) => {
            drop(attempt);
            return directory_error(&e);
        }
        Err(e) => {
            attempt.succeeded();
            return directory_error(&e);
        }
    };
    match pending.purpose {
        Purpose::Console { next } => {
            let Some(role) = app.directory.roles.role(&signed.groups) else {
                tracing::info!(user = %signed.username, "console sign-in refused: no console group");
                return pages::plain(
                    StatusCode::FORBIDDEN,
                    "No access",
                    &format!("{} is not in a group that may use the console.", signed.username),
                );
            };
            match new_session(c, &signed.username, role, 0, true).await {
                // A page, not a redirect: the session cookie is SameSite=Strict, and a redirect
                // chain that began at the identity provider would not send it.
                Ok(token) => {
                    let next = safe_next(Some(&next));
                    let page = html! {
                        (DOCTYPE)
                        html lang="en" {
                            head { meta charset="utf-8"; meta http-equiv="refresh" content={ "0; url=" (next) }; title { "Signed in" } }
                            body { p { "Signed in. " a href=(next) { "Continue to the console" } } }
                        }
                    };
                    let mut r = (StatusCode::OK, page).into_response();
                    if let Ok(v) = HeaderValue::from_str(&set_cookie(COOKIE, &token, SESSION_SECONDS, "/ui")) {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                    r
                }
                Err(r) => r,
            }
        }
        Purpose::Enroll => {
            if let Err(e) = app.directory.may_enroll(&signed) {
                return directory_error(&e);
            }
            if let Err(wait) = app.enroll_budget.take(ip) {
                return crate::http::enroll::too_many(wait, "enrollment profiles");
            }
            tracing::info!(user = %signed.username, "enrollment sign-in (identity provider)");
            crate::http::enroll::profile(app, "oidc", app.enroller.cfg.challenge_ttl, Some(signed.enroll_user("oidc"))).await
        }
        Purpose::AccountDriven { mode } => {
            let Some(mode) = crate::service::enroll::account::Mode::parse(&mode) else {
                return pages::plain(StatusCode::BAD_REQUEST, "Bad request", "Unknown enrollment kind.");
            };
            if let Err(e) = app.directory.may_enroll(&signed) {
                return directory_error(&e);
            }
            if let Err(wait) = app.enroll_budget.take(ip) {
                return crate::http::enroll::too_many(wait, "enrollment profiles");
            }
            let mut user = signed.enroll_user("oidc");
            user.managed_apple_id = app.directory.managed_apple_id(&signed);
            crate::http::account::hand_back(app, mode, user).await
        }
    }
}
