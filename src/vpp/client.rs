//! The Apps and Books client. One `VppClient` per content token.
//!
//! A call: the request with `Authorization: Bearer <sToken>` (marked
//! sensitive, never logged), JSON both ways → Apple's answer, read with a size
//! bound (16 MiB; 64 KiB of an error) and a 30 s timeout. An answer is an
//! error when its status is not 2xx or when it carries an `errorNumber` (Apple
//! has answered errors with 200). 429, 503, any 5xx with `Retry-After`, and
//! error 9646 or 9729 are retried up to `max_attempts`, waiting as
//! `Retry-After` says (or 1, 2, 4 … s without it, capped at `max_wait`); a
//! `Retry-After` longer than `max_wait` is not waited out here but returned at
//! once as `Throttled`, so the caller can come back when Apple asked. Nothing
//! else is retried (a transport error on a POST may have made an event).
//!
//! Lists follow `nextPageIndex` (or `currentPageIndex + 1 < totalPages`), at
//! most `MAX_PAGES` pages and `MAX_ITEMS` records; an index that does not move
//! forward is an error, not a loop. Associating more than Apple's
//! `maxSerialNumbers` (1000) serials is sent in several requests, one event
//! each.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{bounded, errors, Asset, Assignment, ClientConfig, ContentToken, EventStatus, Failure, VppError, MAX_SERIALS};

/// The largest answer we read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// The most of an error answer we read.
const MAX_ERROR_BODY: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages of one list (Apple's pages hold several hundred records).
pub const MAX_PAGES: u64 = 10_000;
/// Records of one list.
pub const MAX_ITEMS: usize = 2_000_000;
/// Failures of one event, spread out.
const MAX_FAILURES: usize = 100_000;
/// The longest event id we accept.
const MAX_EVENT_ID: usize = 256;
/// `wait_event` polls after 200 ms, then twice as long each time, at most 5 s apart.
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(5);

pub struct VppClient {
    /// Scheme, host, port and path (`…/mdm/v2`), without a trailing `/`.
    pub(super) base: String,
    token: ContentToken,
    http: reqwest::Client,
    user_agent: String,
    max_attempts: u32,
    max_wait: Duration,
}

impl std::fmt::Debug for VppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VppClient")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What a request came back with, sorted: success or an error answer.
struct Answer {
    status: StatusCode,
    /// The body as JSON (`Null` when it was not JSON).
    body: Value,
    /// The body was not JSON: what it said instead, bounded and printable.
    text: Option<String>,
}

impl VppClient {
    /// `base`: Apple's URL (`APPLE_URL`) or a stand-in; `http://` only to a
    /// loopback host (127.0.0.0/8, ::1, localhost), otherwise `https://`.
    pub fn new(base: &str, token: ContentToken, http: reqwest::Client) -> Result<VppClient, VppError> {
        let base = crate::outbound::service_url(base).map_err(VppError::BadUrl)?;
        Ok(VppClient {
            base,
            token,
            http,
            user_agent: format!("mdmd/{}", env!("CARGO_PKG_VERSION")),
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

    /// The token this client sends.
    pub fn token(&self) -> &ContentToken {
        &self.token
    }

    /// `GET /client/config`: the location the token belongs to (also the
    /// check that a freshly uploaded token works).
    pub async fn config(&self) -> Result<ClientConfig, VppError> {
        let mut raw = self.call(Method::GET, "/client/config", &[], None, None).await?;
        if !raw.is_object() {
            return Err(VppError::Decode("/client/config: the answer is not a JSON object".into()));
        }
        if let Some(t) = raw.get_mut("notificationAuthToken") {
            *t = json!("<redacted>");
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| bounded(s.trim(), 512).to_owned());
        let location = raw.get("location");
        let location_id = location.and_then(|l| l.get("locationId")).and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        Ok(ClientConfig {
            location_name: text(raw.get("locationName")).or_else(|| text(location.and_then(|l| l.get("locationName")))),
            location_id,
            country: text(raw.get("countryISO2ACode")),
            token_expiration: text(raw.get("tokenExpirationDate")),
            uid: text(raw.get("uId")),
            raw,
        })
    }

    /// `GET /assets`, every page: the apps and books and their licence counts.
    pub async fn assets(&self) -> Result<Vec<Asset>, VppError> {
        self.pages("/assets", &[], "assets").await
    }

    /// `POST /assets/associate`: give each serial number a licence of the
    /// asset. Asynchronous: the event ids (one per `MAX_SERIALS` serials;
    /// none for no serials) to follow with `event` or `wait_event`. Serial
    /// numbers are trimmed and deduplicated (Apple refuses duplicates).
    pub async fn associate(&self, adam_id: &str, pricing_param: &str, serials: &[String]) -> Result<Vec<String>, VppError> {
        self.manage("/assets/associate", adam_id, pricing_param, serials).await
    }

    /// `POST /assets/disassociate`: take the asset's licence back from each
    /// serial number (the app stops working after 30 days if left installed).
    pub async fn disassociate(&self, adam_id: &str, pricing_param: &str, serials: &[String]) -> Result<Vec<String>, VppError> {
        self.manage("/assets/disassociate", adam_id, pricing_param, serials).await
    }

    /// `GET /status?eventId=…`: where an associate or disassociate stands.
    pub async fn event(&self, event_id: &str) -> Result<EventStatus, VppError> {
        let v = self.call(Method::GET, "/status", &[("eventId", event_id)], None, None).await?;
        parse_status(&v)
    }

    /// Poll `event` until COMPLETE (Ok) or FAILED (`EventFailed`, with what
    /// failed: Apple marks an event FAILED when any part failed, the rest
    /// done), at most `within` (then `Timeout`).
    pub async fn wait_event(&self, event_id: &str, within: Duration) -> Result<EventStatus, VppError> {
        let deadline = Instant::now() + within;
        let mut pause = POLL_FIRST;
        loop {
            let st = self.event(event_id).await?;
            match st.status.as_str() {
                "COMPLETE" => return Ok(st),
                "FAILED" => return Err(VppError::EventFailed(st.failures)),
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(VppError::Timeout(format!(
                    "Apple's event {} is still {} after {:.1} s ({} of {} done)",
                    bounded(event_id, 64),
                    bounded(&st.status, 32),
                    within.as_secs_f64(),
                    st.completed,
                    st.requested
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// `GET /assignments`, every page, optionally only one asset's or one
    /// device's.
    pub async fn assignments(&self, adam_id: Option<&str>, serial: Option<&str>) -> Result<Vec<Assignment>, VppError> {
        let mut filters = Vec::new();
        if let Some(a) = adam_id {
            filters.push(("adamId", a));
        }
        if let Some(s) = serial {
            filters.push(("serialNumber", s));
        }
        self.pages("/assignments", &filters, "assignments").await
    }

    async fn manage(&self, path: &str, adam_id: &str, pricing_param: &str, serials: &[String]) -> Result<Vec<String>, VppError> {
        let mut seen = std::collections::HashSet::new();
        let serials: Vec<&str> = serials
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty() && seen.insert(*s))
            .collect();
        let mut events = Vec::new();
        for chunk in serials.chunks(MAX_SERIALS) {
            let body = json!({
                "assets": [{ "adamId": adam_id, "pricingParam": pricing_param }],
                "serialNumbers": chunk,
            });
            let v = self.call(Method::POST, path, &[], Some(&body), Some(adam_id)).await?;
            let id = v
                .get("eventId")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= MAX_EVENT_ID && s.chars().all(|c| c.is_ascii_graphic()))
                .ok_or_else(|| VppError::Decode(format!("{path}: no usable eventId in the answer")))?;
            tracing::debug!(path, adam_id = %bounded(adam_id, 64), serials = chunk.len(), event = %id, "vpp: event");
            events.push(id.to_owned());
        }
        Ok(events)
    }

    /// Every page of a list: `key`'s records from each.
    async fn pages<T: DeserializeOwned>(&self, path: &str, filters: &[(&str, &str)], key: &str) -> Result<Vec<T>, VppError> {
        let mut out: Vec<T> = Vec::new();
        let mut index: Option<u64> = None;
        let mut pages = 0u64;
        loop {
            let page_text = index.map(|i| i.to_string());
            let mut query = filters.to_vec();
            if let Some(p) = &page_text {
                query.push(("pageIndex", p));
            }
            let v = self.call(Method::GET, path, &query, None, None).await?;
            pages += 1;
            let items: Vec<T> = match v.get(key) {
                None | Some(Value::Null) => Vec::new(),
                Some(items @ Value::Array(_)) => serde_json::from_value(items.clone())
                    .map_err(|e| VppError::Decode(format!("{path}: {key}: {}", bounded(&e.to_string(), 200))))?,
                Some(_) => return Err(VppError::Decode(format!("{path}: {key} is not a list"))),
            };
            if out.len() + items.len() > MAX_ITEMS {
                return Err(VppError::Decode(format!("{path}: more than {MAX_ITEMS} records")));
            }
            out.extend(items);
            let number = |k: &str| v.get(k).and_then(Value::as_u64);
            let current = number("currentPageIndex").unwrap_or(index.unwrap_or(0));
            let next = number("nextPageIndex").or_else(|| match number("totalPages") {
                Some(total) if current + 1 < total => Some(current + 1),
                _ => None,
            });
            let Some(next) = next else { return Ok(out) };
            if next <= current || index.is_some_and(|i| next <= i) {
                return Err(VppError::Decode(format!(
                    "{path}: the next page index {next} does not follow page {current}"
                )));
            }
            if pages >= MAX_PAGES {
                return Err(VppError::Decode(format!("{path}: more than {MAX_PAGES} pages")));
            }
            index = Some(next);
        }
    }

    /// One API call, throttling retried, errors sorted; the JSON answer.
    /// `adam_id`: the asset an associate names (for `NoLicences`).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        adam_id: Option<&str>,
    ) -> Result<Value, VppError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| VppError::BadUrl(e.to_string()))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        self.send(method, url, path, body, true, adam_id).await
    }

    /// One request to `url` (`path` names it in logs and messages), with the
    /// token as `Authorization: Bearer` when `bearer`; throttling retried,
    /// errors sorted; the JSON answer.
    pub(super) async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        path: &str,
        body: Option<&Value>,
        bearer: bool,
        adam_id: Option<&str>,
    ) -> Result<Value, VppError> {
        let body = match body {
            Some(v) => Some(serde_json::to_vec(v).map_err(|e| VppError::Decode(format!("request body: {e}")))?),
            None => None,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut r = self
                .http
                .request(method.clone(), url.clone())
                .timeout(REQUEST_TIMEOUT)
                .header(reqwest::header::USER_AGENT, &self.user_agent)
                .header(reqwest::header::ACCEPT, "application/json");
            if bearer {
                r = r.bearer_auth(&self.token.stoken);
            }
            if let Some(b) = &body {
                r = r.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.clone());
            }
            let resp = r.send().await.map_err(VppError::Transport)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let limit = if status.is_success() { MAX_ANSWER } else { MAX_ERROR_BODY };
            let bytes = match read_bounded(resp, limit).await {
                Ok(b) => b,
                Err(e) if status.is_success() => return Err(e),
                // An error answer we could not read whole: its status still says enough.
                Err(_) => Vec::new(),
            };
            let a = answer(status, &bytes);
            let number = a.body.get("errorNumber").and_then(error_number);
            tracing::debug!(path, status = status.as_u16(), error = number, attempt, "vpp: answer");

            let throttled = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE
                || (status.is_server_error() && headers.contains_key(reqwest::header::RETRY_AFTER))
                || matches!(number, Some(errors::TOO_MANY_REQUESTS | errors::UNAVAILABLE));
            if throttled {
                let backoff = Duration::from_secs(1u64 << (attempt - 1).min(16)).min(self.max_wait);
                let wait = retry_after(&headers).unwrap_or(backoff);
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                if attempt >= self.max_attempts || wait > self.max_wait {
                    tracing::info!(
                        path,
                        status = status.as_u16(),
                        attempts = attempt,
                        retry_after_secs = secs,
                        "vpp: throttled"
                    );
                    return Err(VppError::Throttled { retry_after_secs: secs });
                }
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_success() && number.is_none() {
                if let Some(text) = a.text {
                    return Err(VppError::Decode(format!("{path}: the answer is not JSON ({text})")));
                }
                return Ok(a.body);
            }
            return Err(sort_error(&a, number, adam_id));
        }
    }
}

/// The body as JSON, or what it said instead.
fn answer(status: StatusCode, bytes: &[u8]) -> Answer {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(body) => Answer { status, body, text: None },
        Err(_) => Answer {
            status,
            body: Value::Null,
            text: Some(printable(&String::from_utf8_lossy(bytes), 200)),
        },
    }
}

/// `errorNumber` as a number or a numeric string.
fn error_number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What an error answer means for the caller.
fn sort_error(a: &Answer, number: Option<i64>, adam_id: Option<&str>) -> VppError {
    let message = a
        .body
        .get("errorMessage")
        .and_then(Value::as_str)
        .map(|m| printable(m, 300))
        .or_else(|| a.text.clone().filter(|t| !t.is_empty()))
        .unwrap_or_else(|| a.status.canonical_reason().unwrap_or("no message").to_owned());
    let status = a.status.as_u16();
    if number.is_some_and(|n| errors::TOKEN.contains(&n)) || status == 401 {
        let why = match number {
            Some(errors::TOKEN_EXPIRED) => "it has expired".to_owned(),
            Some(errors::TOKEN_REVOKED) => "it was revoked, or replaced by a newer download".to_owned(),
            Some(n) => format!("{message} [{n}]"),
            None => format!("HTTP {status}: {message}"),
        };
        return VppError::TokenRejected(why);
    }
    if number == Some(errors::NOT_ENOUGH_LICENSES) {
        if let Some(adam_id) = adam_id {
            return VppError::NoLicences {
                adam_id: adam_id.to_owned(),
            };
        }
    }
    VppError::Apple { status, number, message }
}

/// An event status answer; `failures` spread out per asset and serial.
fn parse_status(v: &Value) -> Result<EventStatus, VppError> {
    let status = v
        .get("eventStatus")
        .and_then(Value::as_str)
        .map(|s| bounded(s.trim(), 64).to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| VppError::Decode("/status: no eventStatus in the answer".into()))?;
    let text = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(|s| bounded(s.trim(), 256).to_owned());
    let count = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let mut failures = Vec::new();
    match v.get("failures") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for f in list {
                let error_number = f.get("errorNumber").and_then(error_number);
                let error_message = f.get("errorMessage").and_then(Value::as_str).map(|m| printable(m, 300));
                let info = f.get("errorInfo");
                let list_of = |k: &str| -> Vec<Option<String>> {
                    let from_info: Vec<Option<String>> = info
                        .and_then(|i| i.get(k))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(|s| Some(bounded(s, 256).to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    if from_info.is_empty() {
                        vec![None]
                    } else {
                        from_info
                    }
                };
                let mut assets: Vec<Option<String>> = info
                    .and_then(|i| i.get("assets"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|x| text(x, "adamId")).collect())
                    .unwrap_or_default();
                if assets.is_empty() {
                    // A flat failure (`adamId` beside the number), or none named.
                    assets.push(text(f, "adamId"));
                }
                let mut who = list_of("serialNumbers");
                if who == [None] {
                    who = vec![text(f, "serialNumber")];
                    if who == [None] {
                        who = list_of("clientUserIds");
                    }
                }
                for serial in &who {
                    for adam in &assets {
                        if failures.len() >= MAX_FAILURES {
                            return Err(VppError::Decode(format!("/status: more than {MAX_FAILURES} failures")));
                        }
                        failures.push(Failure {
                            adam_id: adam.clone(),
                            serial_number: serial.clone(),
                            error_number,
                            error_message: error_message.clone(),
                        });
                    }
                }
            }
        }
        Some(_) => return Err(VppError::Decode("/status: failures is not a list".into())),
    }
    Ok(EventStatus {
        status,
        event_type: text(v, "eventType"),
        completed: count("numCompleted"),
        requested: count("numRequested"),
        failures,
    })
}

/// Control characters replaced, at most `max` bytes.
fn printable(s: &str, max: usize) -> String {
    let clean: String = s.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    bounded(&clean, max).to_owned()
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

async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, VppError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(VppError::Decode(format!("the answer is larger than {max} bytes")));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(VppError::Transport)? {
        if out.len() + chunk.len() > max {
            return Err(VppError::Decode(format!("the answer is larger than {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn token() -> ContentToken {
        ContentToken {
            stoken: "eyJ0b2tlbiI6InNlY3JldCJ9".into(),
            org_name: "Example Org".into(),
            expires_at: 1_900_000_000,
        }
    }

    /// One HTTP client (building one loads the system's CAs).
    fn http() -> reqwest::Client {
        static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        // No idle connections: each test has its own runtime, and a pooled
        // connection must not outlive the one that made it.
        HTTP.get_or_init(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client")
        })
        .clone()
    }

    #[test]
    fn url_rule() {
        let ok = |u: &str| VppClient::new(u, token(), http()).map(|c| c.base);
        assert_eq!(ok(super::super::APPLE_URL).unwrap(), "https://vpp.itunes.apple.com/mdm/v2");
        assert_eq!(
            ok("https://vpp.itunes.apple.com/mdm/v2/").unwrap(),
            "https://vpp.itunes.apple.com/mdm/v2"
        );
        assert_eq!(ok("http://127.0.0.1:8080/mdm/v2").unwrap(), "http://127.0.0.1:8080/mdm/v2");
        assert_eq!(ok("http://localhost:1/").unwrap(), "http://localhost:1");
        assert_eq!(ok("http://[::1]:9/mdm/v2").unwrap(), "http://[::1]:9/mdm/v2");
        for bad in [
            "http://vpp.itunes.apple.com/mdm/v2",
            "http://10.0.0.1:8080",
            "http://localhost.example.com",
            "ftp://127.0.0.1",
            "https://user:pw@vpp.itunes.apple.com/mdm/v2",
            "https://vpp.itunes.apple.com/mdm/v2?x=1",
            "not a url",
            "",
        ] {
            assert!(matches!(ok(bad), Err(VppError::BadUrl(_))), "{bad}");
        }
        let dbg = format!("{:?}", VppClient::new(super::super::APPLE_URL, token(), http()).unwrap());
        assert!(!dbg.contains("eyJ0"), "{dbg}");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_failures_spread_out() {
        let v = json!({
            "eventStatus": "FAILED", "eventType": "ASSOCIATE", "numCompleted": 14, "numRequested": 16,
            "failures": [
                {"errorInfo": {"assets": [{"adamId": "1", "pricingParam": "STDQ"}], "serialNumbers": ["A", "B"]},
                 "errorNumber": 9709, "errorMessage": "There aren't enough assets available to complete this association."},
                {"errorInfo": {"clientUserIds": ["user102"]}, "errorNumber": 9609, "errorMessage": "Unable to find registered user."},
                {"adamId": "2", "serialNumber": "C", "errorNumber": "9610", "errorMessage": "License not found"}
            ]
        });
        let st = parse_status(&v).unwrap();
        assert_eq!((st.status.as_str(), st.completed, st.requested), ("FAILED", 14, 16));
        let got: Vec<(Option<&str>, Option<&str>, Option<i64>)> = st
            .failures
            .iter()
            .map(|f| (f.adam_id.as_deref(), f.serial_number.as_deref(), f.error_number))
            .collect();
        assert_eq!(
            got,
            [
                (Some("1"), Some("A"), Some(9709)),
                (Some("1"), Some("B"), Some(9709)),
                (None, Some("user102"), Some(9609)),
                (Some("2"), Some("C"), Some(9610)),
            ]
        );
        assert!(matches!(parse_status(&json!({"numCompleted": 1})), Err(VppError::Decode(_))));
        assert!(matches!(
            parse_status(&json!({"eventStatus": "FAILED", "failures": "x"})),
            Err(VppError::Decode(_))
        ));
    }

    /// A server that answers every request with `response` (raw HTTP), after
    /// reading the request whole. Returns its `…/mdm/v2` URL.
    async fn canned(response: Vec<u8>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = tcp.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                    let _ = tcp.write_all(&response).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        (format!("http://127.0.0.1:{port}/mdm/v2"), task)
    }

    fn reply(status: &str, headers: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn against(response: Vec<u8>) -> (VppClient, tokio::task::JoinHandle<()>) {
        let (url, task) = canned(response).await;
        let c = VppClient::new(&url, token(), http()).unwrap().with_retry(2, Duration::from_secs(1));
        (c, task)
    }

    /// Garbage from "Apple" is an error in words, never a panic or a loop.
    #[tokio::test]
    async fn survives_garbage() {
        let serials = vec!["C02SIM000001".to_owned()];
        let decode = |r: Result<(), VppError>| matches!(r, Err(VppError::Decode(_)));

        let (c, _t) = against(reply("200 OK", "", "<html>not json</html>")).await;
        assert!(decode(c.config().await.map(drop)));
        assert!(decode(c.assets().await.map(drop)));
        let (c, _t) = against(reply("200 OK", "", "[1,2,3]")).await;
        assert!(decode(c.config().await.map(drop)));
        let (c, _t) = against(reply("200 OK", "", r#"{"assets":"many"}"#)).await;
        assert!(decode(c.assets().await.map(drop)));
        let (c, _t) = against(reply("200 OK", "", r#"{"assets":[{"adamId":7}]}"#)).await;
        assert!(decode(c.assets().await.map(drop)));
        // A page index that points back is not followed.
        let (c, _t) = against(reply(
            "200 OK",
            "",
            r#"{"assignments":[{"adamId":"1","pricingParam":"STDQ","serialNumber":"A"}],"currentPageIndex":0,"nextPageIndex":0}"#,
        ))
        .await;
        assert!(decode(c.assignments(None, None).await.map(drop)));
        // Too big to read.
        let (c, _t) = against(b"HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n{".to_vec()).await;
        assert!(decode(c.assets().await.map(drop)));
        // No event id, or an event id that is not text.
        let (c, _t) = against(reply("200 OK", "", r#"{"eventId":12}"#)).await;
        assert!(decode(c.associate("1", "STDQ", &serials).await.map(drop)));
        let (c, _t) = against(reply("200 OK", "", r#"{"eventType":"ASSOCIATE"}"#)).await;
        assert!(decode(c.event("e").await.map(drop)));
        // An error page in HTML keeps its status.
        let (c, _t) = against(reply("502 Bad Gateway", "", "<html>\u{7}upstream</html>")).await;
        match c.config().await {
            Err(VppError::Apple {
                status: 502,
                number: None,
                message,
            }) => assert_eq!(message, "<html> upstream</html>"),
            other => panic!("{other:?}"),
        }
        // An error in a 200 (Apple has done this for a bad token).
        let (c, _t) = against(reply(
            "200 OK",
            "",
            r#"{"errorNumber":9622,"errorMessage":"Invalid authentication token"}"#,
        ))
        .await;
        assert!(matches!(c.config().await, Err(VppError::TokenRejected(m)) if m.contains("9622")));
        let (c, _t) = against(reply("401 Unauthorized", "", "nope")).await;
        assert!(matches!(c.assets().await, Err(VppError::TokenRejected(m)) if m.contains("401")));
        // No licences at once, for the asset asked.
        let (c, _t) = against(reply(
            "400 Bad Request",
            "",
            r#"{"errorNumber":9709,"errorMessage":"There aren't enough assets available"}"#,
        ))
        .await;
        assert!(
            matches!(c.associate("408709785", "STDQ", &serials).await, Err(VppError::NoLicences { adam_id }) if adam_id == "408709785")
        );
        // 503 without Retry-After: 1 s backoff, then the policy (2 attempts) is spent.
        let (c, _t) = against(reply("503 Service Unavailable", "", "")).await;
        let c = c.with_retry(1, Duration::from_secs(1));
        assert!(matches!(c.config().await, Err(VppError::Throttled { retry_after_secs: 1 })));
        // 500 with Retry-After beyond max_wait: returned at once.
        let (c, _t) = against(reply(
            "500 Internal Server Error",
            "Retry-After: 120\r\n",
            r#"{"errorNumber":9603}"#,
        ))
        .await;
        assert!(matches!(c.config().await, Err(VppError::Throttled { retry_after_secs: 120 })));
        // Nothing listening.
        let (url, t) = canned(Vec::new()).await;
        t.abort();
        let _ = t.await;
        let c = VppClient::new(&url, token(), http()).unwrap();
        assert!(matches!(c.config().await, Err(VppError::Transport(_))));
    }
}
