//! The web console (`/ui/`): server-rendered pages for people, on the same listener.
//!
//! The console is a client of the admin API, in process: every page reads and every form acts
//! through a request to the API router, made as the signed-in account after its role has allowed
//! that API request (`Role::allows`). So the console can do exactly what the account could do over
//! HTTP, shows the API's own errors, and has no second copy of any rule. The one exception is
//! `fleet`, a read-only in-memory summary of the enrollments (the dashboard's chart, the device
//! list's OS / last-check-in / name filters), shown only to accounts that may list devices.
//!
//! Security: sessions are store records (every instance sees them), referenced by a random
//! cookie that is `HttpOnly`, `Secure`, `SameSite=Strict` and expires; every state-changing form
//! carries the session's CSRF token (403 without it); the sign-in form carries its own (a cookie
//! it must match); failed sign-ins are rate-limited per client address and per name (the shared
//! `service::access::limits` limiter: a name under attack refuses only addresses that failed too, so the
//! owner still signs in); responses are sent with HSTS over TLS; responses
//! carry a Content-Security-Policy that allows only this origin's stylesheet and images
//! (no script at all), `X-Frame-Options: DENY` and `Cache-Control: no-store`. Every asset is in
//! the binary. Templates are `maud` (compile-time, escaping by default).

macro_rules! signed_in {
    ($c:expr, $h:expr, $here:expr) => {
        match access(&$c, &$h, $here).await {
            Access::In(s) => s,
            Access::Out(r) => return r,
        }
    };
}

macro_rules! posted {
    ($c:expr, $h:expr, $csrf:expr) => {
        match access_post(&$c, &$h, $csrf).await {
            Access::In(s) => s,
            Access::Out(r) => return r,
        }
    };
}

mod ade;
mod apps;
mod devices;
mod enrollment;
mod fleet;
mod pages;
mod policy;
mod profiles;
mod sso;
mod tokens;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tower::ServiceExt as _;

use crate::api::Caller;
use crate::app::App;
use crate::clock::now;
use crate::service::access::accounts::Role;

pub(crate) const COOKIE: &str = "mdmd_ui";
const LOGIN_COOKIE: &str = "mdmd_ui_login";
const SESSIONS: &str = "ui-sessions";
/// Sessions end this long after sign-in.
pub(crate) const SESSION_SECONDS: i64 = 8 * 3600;
/// HSTS for the console's pages when served over TLS: one year.
const HSTS: &str = "max-age=31536000";
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
const CSS: &str = include_str!("console.css");

/// A signed-in person.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Session {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: i64,
    /// When the account was created (0 for `admin`): a deleted, re-created or re-roled account
    /// ends its sessions.
    #[serde(default)]
    pub account_created_at: i64,
    /// Signed in at the identity provider (no mdmd account: the role came from its groups).
    #[serde(default)]
    pub idp: bool,
}

/// What the API answered.
pub struct ApiReply {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message (or the status).
    pub fn error(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the server answered {}", self.status))
    }
}

pub struct Console {
    pub app: Arc<App>,
    api: Router,
    pub fleet: Arc<fleet::FleetCache>,
}

type Shared = Arc<Console>;

/// `/ui/…`, for the listener's router.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    let api = crate::api::router()
        .layer(axum::extract::DefaultBodyLimit::max(app.max_api_body))
        .with_state(app.clone());
    let console = Arc::new(Console {
        app: app.clone(),
        api,
        fleet: Arc::new(fleet::FleetCache::default()),
    });
    let tls = !app.plain_http;
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::dashboard))
        .route("/ui/console.css", get(css))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/sso", get(sso::start))
        .route("/auth/oidc/callback", get(sso::callback))
        .route("/ui/logout", post(logout))
        .route("/ui/devices", get(devices::devices))
        .route("/ui/devices/{id}", get(devices::device))
        .route("/ui/devices/{id}/actions", post(devices::device_action))
        .route("/ui/profiles", get(profiles::profiles).post(profiles::upload_profile))
        .route("/ui/profiles/{id}", get(profiles::profile))
        .route("/ui/profiles/{id}/actions", post(profiles::profile_action))
        .route("/ui/groups", get(policy::groups))
        .route("/ui/groups/{name}", get(policy::group))
        .route("/ui/blueprints", get(policy::blueprints))
        .route("/ui/blueprints/{name}", get(policy::blueprint))
        .route("/ui/enrollment", get(enrollment::enrollment))
        .route("/ui/ade", get(ade::page))
        .route("/ui/access-tokens", get(tokens::page))
        .route("/ui/ade/waiting/{id}/release", post(ade::release))
        .route("/ui/apps", get(apps::page).post(apps::catalog_action))
        .route("/ui/apps/{id}", get(apps::app))
        .route("/ui/apps/{id}/install", post(apps::install))
        .route("/ui/apps/{id}/remove", post(apps::remove))
        .route("/ui/enrollment/invitations", post(enrollment::invite))
        .route("/ui/certificates", get(enrollment::certificates))
        .route("/ui/certificates/{serial}/revoke", post(enrollment::revoke))
        .layer(axum::extract::DefaultBodyLimit::max(app.max_api_body))
        .layer(axum::middleware::map_response(move |r: Response| secure_headers(r, tls)))
        .with_state(console)
}

async fn secure_headers(mut r: Response, tls: bool) -> Response {
    let h = r.headers_mut();
    if tls {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

pub(crate) fn set_cookie(name: &str, value: &str, max_age: i64, path: &str) -> String {
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict")
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Console {
    /// The session of a request, if it has a live one.
    pub async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, COOKIE)?;
        let key = crate::pki::sha256_hex(&token);
        let rec = self.app.mdm.store.record(SESSIONS, &key).await.ok()??;
        let s: Session = serde_json::from_value(rec.value).ok()?;
        if s.expires_at <= now() {
            return None;
        }
        if s.name != "admin" && !s.idp {
            let (role, created) = self.app.accounts.current(&s.name).await.ok()??;
            if role != s.role || created != s.account_created_at {
                return None;
            }
        }
        Some(s)
    }

    /// Send one request to the admin API as the session's account.
    pub async fn api(&self, s: &Session, method: Method, path_and_query: &str, body: Option<(&str, Vec<u8>)>) -> ApiReply {
        let path = path_and_query.split('?').next().unwrap_or("");
        if !crate::api::permissions::allowed(s.role, &method, path) {
            return ApiReply {
                status: StatusCode::FORBIDDEN,
                body: json!({"error": format!("account {} ({}) may not {method} {path}", s.name, s.role.as_str())}),
            };
        }
        let mut b = axum::http::Request::builder().method(method).uri(path_and_query);
        let payload = match body {
            Some((ct, bytes)) => {
                b = b.header(header::CONTENT_TYPE, ct);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let mut req = match b.body(payload) {
            Ok(r) => r,
            Err(e) => {
                return ApiReply {
                    status: StatusCode::BAD_REQUEST,
                    body: json!({"error": format!("bad request: {e}")}),
                }
            }
        };
        req.extensions_mut().insert(Caller {
            name: s.name.clone(),
            role: s.role,
        });
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        ApiReply { status, body }
    }

    pub async fn get(&self, s: &Session, path_and_query: &str) -> ApiReply {
        self.api(s, Method::GET, path_and_query, None).await
    }

    pub async fn post_json(&self, s: &Session, path: &str, v: &Value) -> ApiReply {
        self.api(s, Method::POST, path, Some(("application/json", v.to_string().into_bytes())))
            .await
    }
}

/// A page for a signed-in session, or the way to the sign-in form.
pub enum Access {
    In(Session),
    Out(Response),
}

pub async fn access(c: &Console, headers: &HeaderMap, here: &str) -> Access {
    match c.session(headers).await {
        Some(s) => Access::In(s),
        None => Access::Out(Redirect::to(&format!("/ui/login?next={}", urlencoding(here))).into_response()),
    }
}

/// The same, for a form post: its CSRF token must match the session's (403 otherwise).
pub async fn access_post(c: &Console, headers: &HeaderMap, csrf: Option<&str>) -> Access {
    let Some(s) = c.session(headers).await else {
        return Access::Out(pages::plain(
            StatusCode::FORBIDDEN,
            "Not signed in",
            "Sign in again: the session has ended.",
        ));
    };
    if !csrf.is_some_and(|t| same(t, &s.csrf)) {
        tracing::warn!(account = %s.name, "console form without a valid CSRF token refused");
        return Access::Out(pages::plain(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not carry its security token (CSRF). Reload the page and try again.",
        ));
    }
    Access::In(s)
}

pub fn urlencoding(s: &str) -> String {
    ::urlencoding::encode(s).into_owned()
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

async fn login_form(State(c): State<Shared>, Query(q): Query<LoginQuery>) -> Response {
    let token = random_token();
    let idp = c.app.directory.oidc.as_ref().map(|_| c.app.directory.idp_name.as_str());
    let mut r = pages::login_page(&token, q.next.as_deref().unwrap_or("/ui/"), q.error.as_deref(), idp).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(LOGIN_COOKIE, &token, 900, "/ui/login")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    secret: String,
    csrf: Option<String>,
    next: Option<String>,
}

/// Only paths of the console itself are followed after sign-in.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/ui/".to_owned(),
    }
}

async fn login(
    State(c): State<Shared>,
    peer: Option<axum::extract::Extension<crate::service::access::limits::TcpPeer>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !f.csrf.as_deref().is_some_and(|t| same(t, &expected)) {
        return pages::plain(
            StatusCode::FORBIDDEN,
            "Refused",
            "The sign-in form did not carry its security token. Open the sign-in page again.",
        );
    }
    let next = safe_next(f.next.as_deref());
    let ip = crate::service::access::limits::client_ip(&c.app.enroll_networks, peer.as_deref(), |name| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
    });
    let attempt = match c.app.limiter.begin(ip, &f.name) {
        Ok(a) => a,
        Err(wait) => {
            crate::metrics::get().credential_check("refused");
            tracing::warn!(name = %f.name, peer = %ip, "console sign-in rate-limited");
            let mut r = pages::plain(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                &format!("Too many failed sign-ins from here. Wait {} seconds and try again.", wait.0.max(1)),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.0.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    let mut account_created_at = 0;
    let role = if f.name == "admin" {
        same(&f.secret, &c.app.api_key).then_some(Role::Admin)
    } else {
        match c.app.accounts.verify(&f.name, &f.secret).await {
            Ok(Some(r)) => match c.app.accounts.current(&f.name).await {
                Ok(Some((_, created))) => {
                    account_created_at = created;
                    Some(r)
                }
                Ok(None) => None,
                Err(e) => {
                    attempt.succeeded();
                    tracing::error!(error = %e, "console sign-in: storage failure");
                    return pages::plain(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "Storage is unavailable; try again.");
                }
            },
            Ok(None) => None,
            Err(e) => {
                attempt.succeeded();
                tracing::error!(error = %e, "console sign-in: storage failure");
                return pages::plain(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "Storage is unavailable; try again.");
            }
        }
    };
    let Some(role) = role else {
        drop(attempt);
        tracing::info!(name = %f.name, peer = %ip, "console sign-in failed");
        return Redirect::to(&format!("/ui/login?error=1&next={}", urlencoding(&next))).into_response();
    };
    attempt.succeeded();
    match new_session(&c, &f.name, role, account_created_at, false).await {
        Ok(token) => {
            let mut r = Redirect::to(&next).into_response();
            for v in [
                set_cookie(COOKIE, &token, SESSION_SECONDS, "/ui"),
                set_cookie(LOGIN_COOKIE, "", 0, "/ui/login"),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(r) => r,
    }
}

/// Store a new session for `name` and return its cookie value (or the page saying why not).
pub(crate) async fn new_session(c: &Console, name: &str, role: Role, account_created_at: i64, idp: bool) -> Result<String, Response> {
    let token = random_token();
    let t = now();
    let s = Session {
        name: name.to_owned(),
        role,
        csrf: random_token(),
        expires_at: t + SESSION_SECONDS,
        account_created_at,
        idp,
    };
    let key = crate::pki::sha256_hex(&token);
    let stored = match serde_json::to_value(&s) {
        Ok(v) => c.app.mdm.store.put_record(SESSIONS, &key, v, t, Some(0)).await,
        Err(e) => Err(crate::store::StoreError::Corrupt(e.to_string())),
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "console sign-in: cannot store the session");
        return Err(pages::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Storage is unavailable; try again.",
        ));
    }
    prune_sessions(c, t).await;
    tracing::info!(account = %s.name, role = s.role.as_str(), idp, "console sign-in");
    Ok(token)
}

/// Drop sessions that have ended (at each sign-in; there are few).
async fn prune_sessions(c: &Console, t: i64) {
    let Ok(all) = c.app.mdm.store.records(SESSIONS).await else { return };
    for (k, rec) in all {
        let ended = rec.value.get("expires_at").and_then(Value::as_i64).is_none_or(|e| e <= t);
        if ended {
            let _ = c.app.mdm.store.delete_record(SESSIONS, &k, Some(rec.version)).await;
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

async fn logout(State(c): State<Shared>, headers: HeaderMap, axum::Form(f): axum::Form<CsrfOnly>) -> Response {
    let s = match access_post(&c, &headers, f.csrf.as_deref()).await {
        Access::In(s) => s,
        Access::Out(r) => return r,
    };
    if let Some(token) = cookie(&headers, COOKIE) {
        let key = crate::pki::sha256_hex(&token);
        let _ = c.app.mdm.store.delete_record(SESSIONS, &key, None).await;
    }
    tracing::info!(account = %s.name, "console sign-out");
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(COOKIE, "", 0, "/ui")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A path segment for API URLs built from user input.
pub fn seg(s: &str) -> String {
    ::urlencoding::encode(s).into_owned()
}

pub use pages::plain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_returns_to_console_pages() {
        assert_eq!(safe_next(Some("/ui/devices?q=x")), "/ui/devices?q=x");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/v1/accounts",
            "/ui\\..\\x",
            "",
            "ui/",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; mdmd_ui_login=L; mdmd_ui=S"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("S"));
        assert_eq!(cookie(&h, LOGIN_COOKIE).as_deref(), Some("L"));
        assert_eq!(cookie(&h, "mdmd"), None);
        let c = set_cookie(COOKIE, "v", 60, "/ui");
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=60", "Path=/ui"] {
            assert!(c.contains(flag), "{c}");
        }
        assert!(!same("", ""), "an empty token never matches");
        assert!(same("abc", "abc") && !same("abc", "abd"));
    }
}
