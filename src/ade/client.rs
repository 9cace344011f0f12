//! The Device Assignment client. One `AdeClient` per server token.
//!
//! A call: the session token (fetched lazily from `GET /session` with an
//! OAuth 1.0a header, kept in the client) → the request with
//! `X-ADM-Auth-Session`, `X-Server-Protocol-Version`, a JSON body → Apple's
//! answer, read with a size bound and a per-request timeout. A fresh session
//! token in the answer's `X-ADM-Auth-Session` header replaces ours. A 401
//! means the session expired: one new session and one retry per call. 429
//! and 503 are retried up to `max_attempts`, waiting as `Retry-After` says
//! (or 1, 2, 4 … s without it, capped at `max_wait`); a `Retry-After` longer
//! than `max_wait` is not waited out here but returned at once as
//! `Throttled`, so the caller can come back when Apple asked. Secrets and the
//! session token never reach the log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{bounded, oauth, AdeError, DevicePage, ProfileResult, ServerToken};

/// The protocol version we speak (`X-Server-Protocol-Version`).
pub const PROTOCOL_VERSION: &str = "3";
/// The largest answer we read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// The most of an error answer we keep.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest session token we accept from Apple.
const MAX_SESSION_TOKEN: usize = 4096;
/// Apple's largest page.
pub const MAX_LIMIT: u32 = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const SESSION_HEADER: &str = "X-ADM-Auth-Session";
const CONTENT_TYPE: &str = "application/json;charset=UTF8";

pub struct AdeClient {
    /// Scheme, host, port and any path prefix, without a trailing `/`.
    base: String,
    token: ServerToken,
    http: reqwest::Client,
    user_agent: String,
    session: Mutex<Option<String>>,
    sessions: AtomicU64,
    max_attempts: u32,
    max_wait: Duration,
}

impl std::fmt::Debug for AdeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdeClient")
            .field("base", &self.base)
            .field("token", &self.token)
            .field("sessions", &self.sessions())
            .finish_non_exhaustive()
    }
}

/// What a request came back with (a 2xx or an error status we sort).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl AdeClient {
    /// `base`: Apple's URL or a stand-in; `http://` only to a loopback host
    /// (127.0.0.0/8, ::1, localhost), otherwise `https://`.
    pub fn new(base: &str, token: ServerToken, http: reqwest::Client) -> Result<AdeClient, AdeError> {
        let base = crate::outbound::service_url(base).map_err(AdeError::BadUrl)?;
        Ok(AdeClient {
            base,
            token,
            http,
            user_agent: format!("mdmd/{}", env!("CARGO_PKG_VERSION")),
            session: Mutex::new(None),
            sessions: AtomicU64::new(0),
            max_attempts: 5,
            max_wait: Duration::from_secs(60),
        })
    }

    /// The throttling policy: at most `max_attempts` tries of one request
    /// (at least 1), waiting at most `max_wait` each time (default 5 and 60 s).
    pub fn with_retry(mut self, max_attempts: u32, max_wait: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.max_wait = max_wait;
        self
    }

    /// Sessions obtained so far (for tests and metrics).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Relaxed)
    }

    /// `GET /account`: the server and organisation the token belongs to.
    pub async fn account(&self) -> Result<Value, AdeError> {
        self.call_json(Method::GET, "/account", None).await
    }

    /// `POST /server/devices`: one page of every device assigned to this
    /// server; pass the returned cursor back while `more_to_follow`, then
    /// keep the last cursor for `sync_devices`.
    pub async fn fetch_devices(&self, cursor: Option<&str>, limit: u32) -> Result<DevicePage, AdeError> {
        let mut body = json!({ "limit": limit.clamp(1, MAX_LIMIT) });
        if let Some(c) = cursor {
            body["cursor"] = json!(c);
        }
        self.call_json(Method::POST, "/server/devices", Some(&body)).await
    }

    /// `POST /devices/sync`: what changed since `cursor` (added, modified,
    /// deleted; the same device may come more than once: the latest
    /// `op_date` wins).
    pub async fn sync_devices(&self, cursor: &str, limit: u32) -> Result<DevicePage, AdeError> {
        let body = json!({ "cursor": cursor, "limit": limit.clamp(1, MAX_LIMIT) });
        self.call_json(Method::POST, "/devices/sync", Some(&body)).await
    }

    /// `POST /devices`: details of these devices, by serial number, each with
    /// a `response_status` (`SUCCESS`, `NOT_ACCESSIBLE` …).
    pub async fn device_details(&self, serials: &[String]) -> Result<Value, AdeError> {
        let body = json!({ "devices": serials });
        self.call_json(Method::POST, "/devices", Some(&body)).await
    }

    /// `POST /profile`: define a profile (and assign it to its `devices`).
    pub async fn define_profile(&self, profile: &Value) -> Result<ProfileResult, AdeError> {
        self.call_json(Method::POST, "/profile", Some(profile)).await
    }

    /// `GET /profile?profile_uuid=…`.
    pub async fn get_profile(&self, uuid: &str) -> Result<Value, AdeError> {
        let path = format!("/profile?profile_uuid={}", oauth::pct(uuid));
        self.call_json(Method::GET, &path, None).await
    }

    /// Assign a defined profile to devices. Apple documents `POST
    /// /profile/devices` today (it was `PUT`, which it still takes).
    pub async fn assign_profile(&self, uuid: &str, serials: &[String]) -> Result<ProfileResult, AdeError> {
        let body = json!({ "profile_uuid": uuid, "devices": serials });
        self.call_json(Method::POST, "/profile/devices", Some(&body)).await
    }

    /// `DELETE /profile/devices`: these devices get no profile at their next activation.
    pub async fn remove_profile(&self, serials: &[String]) -> Result<ProfileResult, AdeError> {
        let body = json!({ "devices": serials });
        self.call_json(Method::DELETE, "/profile/devices", Some(&body)).await
    }

    async fn call_json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&Value>) -> Result<T, AdeError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| AdeError::Decode(format!("{path}: {}", bounded(&e.to_string(), 200))))
    }

    /// One API call: session, request, one renewal on 401, errors sorted.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Vec<u8>, AdeError> {
        let url = format!("{}{path}", self.base);
        let body = match body {
            Some(v) => Some(serde_json::to_vec(v).map_err(|e| AdeError::Decode(format!("request body: {e}")))?),
            None => None,
        };
        let mut renewed = false;
        loop {
            let session = self.session().await?;
            let Ok(session_value) = HeaderValue::from_str(&session) else {
                // Cannot happen: checked when it was stored.
                self.forget_session(&session).await;
                return Err(AdeError::Decode("Apple's session token is not a header value".into()));
            };
            let a = self
                .send(|| {
                    let mut r = self
                        .http
                        .request(method.clone(), &url)
                        .timeout(REQUEST_TIMEOUT)
                        .header(SESSION_HEADER, session_value.clone())
                        .header("X-Server-Protocol-Version", PROTOCOL_VERSION)
                        .header(reqwest::header::USER_AGENT, &self.user_agent)
                        .header(reqwest::header::ACCEPT, "application/json");
                    if let Some(b) = &body {
                        r = r.header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE).body(b.clone());
                    }
                    r
                })
                .await?;
            self.adopt_session(&a.headers).await;
            tracing::debug!(path = %path_only(path), status = a.status.as_u16(), "ade: answer");
            if a.status.is_success() {
                return Ok(a.body);
            }
            let code = error_code(&a.body);
            match a.status.as_u16() {
                401 if !renewed => {
                    renewed = true;
                    self.forget_session(&session).await;
                    tracing::debug!(path = %path_only(path), "ade: session refused; getting a new one");
                }
                400 if code.contains("EXPIRED_CURSOR") => return Err(AdeError::ExpiredCursor),
                400 if code.contains("INVALID_CURSOR") => return Err(AdeError::InvalidCursor),
                403 if code.contains("T_C_NOT_SIGNED") => return Err(AdeError::TermsNotSigned),
                403 => return Err(AdeError::Forbidden(code)),
                status => return Err(AdeError::Apple { status, code }),
            }
        }
    }

    /// The current session token, fetching one when there is none.
    async fn session(&self) -> Result<String, AdeError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let s = self.new_session().await?;
        *guard = Some(s.clone());
        Ok(s)
    }

    async fn forget_session(&self, used: &str) {
        let mut guard = self.session.lock().await;
        if guard.as_deref() == Some(used) {
            *guard = None;
        }
    }

    /// A fresh session token in an answer's header replaces ours.
    async fn adopt_session(&self, headers: &HeaderMap) {
        let Some(fresh) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let fresh = fresh.trim();
        if valid_session(fresh) {
            let mut guard = self.session.lock().await;
            if guard.as_deref() != Some(fresh) {
                *guard = Some(fresh.to_owned());
            }
        }
    }

    /// `GET /session` with the OAuth header.
    async fn new_session(&self) -> Result<String, AdeError> {
        let expires = self.token.expires_at()?;
        if expires <= crate::clock::now() {
            return Err(AdeError::TokenRejected(format!("it expired at {}", self.token.access_token_expiry)));
        }
        let url = format!("{}/session", self.base);
        let a = self
            .send(|| {
                // A new timestamp and nonce for every attempt.
                let auth = oauth::authorization("GET", &url, &self.token, crate::clock::now(), &oauth::nonce());
                let mut r = self
                    .http
                    .get(&url)
                    .timeout(REQUEST_TIMEOUT)
                    .header(reqwest::header::USER_AGENT, &self.user_agent)
                    .header("X-Server-Protocol-Version", PROTOCOL_VERSION)
                    .header(reqwest::header::ACCEPT, "application/json");
                if let Ok(h) = auth {
                    r = r.header(reqwest::header::AUTHORIZATION, h);
                }
                r
            })
            .await?;
        let code = error_code(&a.body);
        match a.status.as_u16() {
            200..=299 => {}
            401 => {
                return Err(AdeError::TokenRejected(format!(
                    "GET /session answered 401 {code}: the token is expired, revoked or was replaced by a newer download"
                )))
            }
            403 if code.contains("T_C_NOT_SIGNED") => return Err(AdeError::TermsNotSigned),
            403 => return Err(AdeError::Forbidden(code)),
            status => return Err(AdeError::Apple { status, code }),
        }
        #[derive(serde::Deserialize)]
        struct SessionAnswer {
            auth_session_token: String,
        }
        // The serde message could quote the token: not in the error.
        let s: SessionAnswer =
            serde_json::from_slice(&a.body).map_err(|_| AdeError::Decode("GET /session: no auth_session_token in the answer".into()))?;
        let s = s.auth_session_token.trim().to_owned();
        if !valid_session(&s) {
            return Err(AdeError::Decode(
                "GET /session: the session token is empty, too long or not printable".into(),
            ));
        }
        self.sessions.fetch_add(1, Relaxed);
        tracing::debug!(sessions = self.sessions(), "ade: new session");
        Ok(s)
    }

    /// Send (a fresh request from `build` each time), retrying 429 and 503
    /// as the policy allows; the answer of any other status.
    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Answer, AdeError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let resp = build().send().await.map_err(AdeError::Transport)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if status.is_success() {
                let body = read_bounded(resp, MAX_ANSWER).await?;
                return Ok(Answer { status, headers, body });
            }
            if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
                // An error answer: what fits of it (its code is all we keep).
                let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
                return Ok(Answer { status, headers, body });
            }
            drop(resp);
            let backoff = Duration::from_secs(1u64 << (attempt - 1).min(16)).min(self.max_wait);
            let wait = retry_after(&headers).unwrap_or(backoff);
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if attempt >= self.max_attempts || wait > self.max_wait {
                tracing::info!(
                    status = status.as_u16(),
                    attempts = attempt,
                    retry_after_secs = secs,
                    "ade: throttled"
                );
                return Err(AdeError::Throttled { retry_after_secs: secs });
            }
            tracing::debug!(
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "ade: throttled, waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// Apple's error code: the body trimmed (quotes too, as some answer
/// `"INVALID_CURSOR"`), printable only, at most 200 characters.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim().trim_matches('"').trim();
    let clean: String = t.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    bounded(&clean, 200).to_owned()
}

/// Session tokens go into a header: non-empty, bounded, visible ASCII.
fn valid_session(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SESSION_TOKEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The path without its query (for the log).
fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let when = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (when.unix_timestamp() - crate::clock::now()).clamp(0, 86_400);
    Some(Duration::from_secs(secs as u64))
}

async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, AdeError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(AdeError::Decode(format!("the answer is larger than {max} bytes")));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(AdeError::Transport)? {
        if out.len() + chunk.len() > max {
            return Err(AdeError::Decode(format!("the answer is larger than {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ServerToken {
        ServerToken {
            consumer_key: "CK_k".into(),
            consumer_secret: "CS_s".into(),
            access_token: "AT_t".into(),
            access_secret: "AS_s".into(),
            access_token_expiry: "2030-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn url_rule() {
        let ok = |u: &str| AdeClient::new(u, token(), reqwest::Client::new()).map(|c| c.base);
        assert_eq!(ok(super::super::APPLE_URL).unwrap(), "https://mdmenrollment.apple.com");
        assert_eq!(ok("https://mdmenrollment.apple.com/").unwrap(), "https://mdmenrollment.apple.com");
        assert_eq!(ok("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(ok("http://localhost:1/prefix/").unwrap(), "http://localhost:1/prefix");
        assert_eq!(ok("http://[::1]:9").unwrap(), "http://[::1]:9");
        for bad in [
            "http://mdmenrollment.apple.com",
            "http://10.0.0.1:8080",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "https://user:pw@mdmenrollment.apple.com",
            "https://mdmenrollment.apple.com/?x=1",
            "not a url",
            "",
        ] {
            assert!(matches!(ok(bad), Err(AdeError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn error_codes_and_retry_after() {
        assert_eq!(error_code(b"  EXPIRED_CURSOR\n"), "EXPIRED_CURSOR");
        assert_eq!(error_code(b"\"INVALID_CURSOR\""), "INVALID_CURSOR");
        assert_eq!(error_code(&[b'A'; 5000]).len(), 200);
        assert_eq!(error_code(b"a\x00b"), "a b");
        assert_eq!(error_code(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        assert!(valid_session("1413984168093O1F2"));
        assert!(!valid_session("") && !valid_session("a b") && !valid_session(&"a".repeat(5000)));
    }
}
