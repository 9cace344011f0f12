//! Account-driven enrollment over HTTP (the rules: `service::enroll::account`):
//! `GET /.well-known/com.apple.remotemanagement` (service discovery),
//! `POST /mdm/account/{mode}` (the device: 401 with Apple's Bearer challenge,
//! or, with its access token, the enrollment profile), and
//! `/mdm/account/{mode}/signin` (the web view: the identity provider, or a
//! directory sign-in form, ending in the 308 back to the device).
//!
//! Cost: a request without a token is answered with a fixed 401 (nothing is
//! read or stored); a token is looked up once (a wrong one counts as a failed
//! credential check for the address); a sign-in goes through the same
//! per-address limiter as every password check, and each token minted takes one
//! of the address's `--enroll-per-source`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::enroll::{directory_error, network_refused, source, too_many};
use super::mdm::{service_error, text};
use super::App;
use crate::service::directory::{DirectoryError, Purpose};
use crate::service::enroll::account::{self, Mode};
use crate::store::EnrollUser;

fn modes(app: &App) -> Vec<Mode> {
    app.directory.account_driven.iter().filter_map(|m| Mode::parse(m)).collect()
}

fn offered(app: &App, mode: &str) -> Option<Mode> {
    Mode::parse(mode).filter(|m| modes(app).contains(m))
}

fn not_offered() -> Response {
    text(StatusCode::NOT_FOUND, "Account-driven enrollment is not offered here.\n".into())
}

/// `GET /.well-known/com.apple.remotemanagement`: where each kind enrolls.
pub async fn discovery(State(app): State<Arc<App>>) -> Response {
    let m = modes(&app);
    if m.is_empty() {
        return not_offered();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
        account::discovery(&app.enroller.cfg.public_url, &m).to_string(),
    )
        .into_response()
}

/// The 401 that starts the web sign-in.
fn challenge(app: &App, mode: Mode) -> Response {
    let url = format!("{}/mdm/account/{}/signin", app.enroller.cfg.public_url, mode.as_str());
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, format!("Bearer method=\"apple-as-web\", url=\"{url}\"")),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        ],
        "Sign in with your work account to enroll.\n",
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// `POST /mdm/account/{mode}`: the device's signed attributes, with or without its access token.
pub async fn enroll(
    State(app): State<Arc<App>>,
    Path(mode): Path<String>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(mode) = offered(&app, &mode) else { return not_offered() };
    if let Some(r) = network_refused(&app, peer.as_deref(), &headers) {
        return r;
    }
    let Some(token) = bearer(&headers) else {
        return challenge(&app, mode);
    };
    let ip = source(&app, peer.as_deref(), &headers);
    let attempt = match app.limiter.begin(ip, "account-driven") {
        Ok(a) => a,
        Err(wait) => return too_many(wait, "failed enrollment attempts"),
    };
    // Ours are 40 hex digits: anything else is refused (counted) before any work.
    if token.len() != 40 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return challenge(&app, mode);
    }
    if body.is_empty() {
        return text(StatusCode::BAD_REQUEST, "expected the device attributes as CMS SignedData\n".into());
    }
    // Checked before the token is used (a garbled request does not burn it), and paid for.
    if let Err(wait) = app.enroll_budget.take(ip) {
        return too_many(wait, "enrollment profiles");
    }
    if let Err(e) = crate::service::enroll::ota::read_body(&body) {
        attempt.succeeded();
        return service_error(&app, e);
    }
    let user = match app.enroller.use_token(mode, token).await {
        Ok(Some(u)) => {
            attempt.succeeded();
            u
        }
        // Unknown, used, expired or for the other kind: sign in again (counted).
        Ok(None) => {
            tracing::warn!(client = %ip, "account-driven enrollment: access token refused");
            return challenge(&app, mode);
        }
        Err(e) => {
            attempt.succeeded();
            return service_error(&app, e);
        }
    };
    tracing::info!(user = %user.username, mode = mode.as_str(), "account-driven enrollment profile");
    super::enroll::aspen_config(&app, app.enroller.account_profile(mode, user).await)
}

/// The 308 that hands the device its access token.
pub async fn hand_back(app: &App, mode: Mode, mut user: EnrollUser) -> Response {
    if user.managed_apple_id.is_none() {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "{} has no email address in the directory, so no Managed Apple Account to enroll with.\n",
                user.username
            ),
        );
    }
    user.method = format!("account-driven-{}", user.method);
    user.enrollment_mode = Some(mode.enrollment_mode().to_owned());
    match app.enroller.account_token(mode, user).await {
        Ok(token) => (
            StatusCode::PERMANENT_REDIRECT,
            [
                (
                    header::LOCATION,
                    format!("apple-remotemanagement-user-login://authentication-results?access-token={token}"),
                ),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
        Err(e) => service_error(app, e),
    }
}

/// `GET /mdm/account/{mode}/signin`: the identity provider, or the directory's sign-in form.
pub async fn signin_page(
    State(app): State<Arc<App>>,
    Path(mode): Path<String>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(mode) = offered(&app, &mode) else { return not_offered() };
    if let Some(r) = network_refused(&app, peer.as_deref(), &headers) {
        return r;
    }
    let hint = q
        .get("user-identifier")
        .filter(|h| h.len() <= 256 && !h.chars().any(char::is_control));
    if app.directory.oidc.is_some() {
        return super::enroll::to_identity_provider(
            &app,
            Purpose::AccountDriven {
                mode: mode.as_str().into(),
            },
            hint.map(String::as_str),
        )
        .await;
    }
    form(&app, mode, hint.map(String::as_str).unwrap_or(""), None, StatusCode::OK)
}

fn form(app: &App, mode: Mode, user: &str, error: Option<&str>, status: StatusCode) -> Response {
    let org = &app.enroller.cfg.organization;
    let page = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1"; title { "Sign in — " (org) } }
            body {
                h1 { "Sign in to " (org) }
                p { "Use your work account to enroll this device." }
                @if let Some(e) = error { p role="alert" { (e) } }
                form method="post" action={ "/mdm/account/" (mode.as_str()) "/signin" } {
                    label for="user" { "User name" } br;
                    input id="user" name="user" value=(user) autocomplete="username" required; br;
                    label for="password" { "Password" } br;
                    input id="password" name="password" type="password" autocomplete="current-password" required; br;
                    button id="submit" type="submit" { "Sign in" }
                }
            }
        }
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        page.into_string(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct SigninForm {
    user: String,
    password: String,
}

/// `POST /mdm/account/{mode}/signin`: the directory checks the password; the device gets its token.
pub async fn signin(
    State(app): State<Arc<App>>,
    Path(mode): Path<String>,
    peer: Option<axum::extract::Extension<super::listener::PeerAddr>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<SigninForm>,
) -> Response {
    let Some(mode) = offered(&app, &mode) else { return not_offered() };
    if let Some(r) = network_refused(&app, peer.as_deref(), &headers) {
        return r;
    }
    // With an identity provider, people sign in there (its MFA and policies apply), not here.
    let Some(ldap) = app.directory.ldap.as_ref().filter(|_| app.directory.oidc.is_none()) else {
        return text(StatusCode::NOT_FOUND, "Sign in with the identity provider.\n".into());
    };
    let ip = source(&app, peer.as_deref(), &headers);
    let attempt = match app.limiter.begin(ip, &f.user) {
        Ok(a) => a,
        Err(wait) => return too_many(wait, "failed sign-ins"),
    };
    match ldap.authenticate(&f.user, &f.password).await {
        Ok(s) => {
            attempt.succeeded();
            if let Err(wait) = app.enroll_budget.take(ip) {
                return too_many(wait, "enrollment profiles");
            }
            let mut user = s.enroll_user("ldap");
            user.managed_apple_id = app.directory.managed_apple_id(&s);
            hand_back(&app, mode, user).await
        }
        Err(DirectoryError::BadCredentials) => {
            drop(attempt);
            tracing::info!(client = %ip, "account-driven sign-in failed");
            form(&app, mode, &f.user, Some("Wrong user name or password."), StatusCode::UNAUTHORIZED)
        }
        Err(e) => {
            attempt.succeeded();
            directory_error(&e)
        }
    }
}
