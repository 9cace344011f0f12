//! A stand-in of Apple's Apps and Books for Organizations API v2
//! (`vpp.itunes.apple.com/mdm/v2`) for tests and `mdmd sim`: plain HTTP/1.1
//! on 127.0.0.1, written from Apple's documentation ("Managing assets",
//! "Using paginated endpoints", "Handling error responses", "Service
//! Config") and as strict as Apple where Apple documents a check. Errors are
//! Apple's `{"errorNumber", "errorMessage"}` with Apple's status.
//!
//! - Every call needs `Authorization: Bearer <sToken>`: none or another form
//!   is 401 9722; an unknown token 401 9622; this stand-in's expired token
//!   (or its own once past `expDate` by `crate::clock`) 401 9621; after
//!   `revoke_token` 401 9625. All counted in `refused`.
//! - `GET /client/config`: `locationName` (the organisation), `countryISO2ACode`,
//!   `defaultPlatform`, `tokenExpirationDate`, `uId`, `websiteURL`.
//! - `GET /assets` and `GET /assignments` page by `pageIndex` (0-based; a
//!   page beyond the last is 400 9650), a few records a page so that paging
//!   is exercised, `nextPageIndex` while more remain, `totalPages`, `size`,
//!   `versionId`; filters `adamId`, `pricingParam`, `productType`,
//!   `deviceAssignable`, `revocable`, the count bounds (assets),
//!   `serialNumber`, `sinceVersionId` (assignments). A parameter twice, or a
//!   number or Boolean that is not one, is 400 9602.
//! - `POST /assets/associate` and `/assets/disassociate` take
//!   `application/json` (else 415 9727) `{assets: [{adamId, pricingParam}],
//!   serialNumbers, clientUserIds}` checked synchronously as Apple lists:
//!   not JSON 9602, no assets 9718, more than 25 9700, twice 9703, neither
//!   serials nor users 9719, more than 1000 serials 9702, a serial twice
//!   9705, a known asset not device-assignable 9707 (associate) or not
//!   revocable 9706 (disassociate). The answer is `{eventId}`; the work is
//!   done later, per asset and serial: associating needs a free licence (an
//!   unknown asset has none: 9709, and so does a full pool), a serial that
//!   already holds one keeps it; disassociating a serial that holds none is
//!   9610 (licence not found); users are not modelled, every clientUserId
//!   fails 9609. The rest completes.
//! - `GET /status?eventId=…` (unknown: 400 9708): PENDING, with nothing done,
//!   for `set_event_delay` polls (default 1); the next poll does the work and
//!   answers COMPLETE, or FAILED with `failures` (Apple's `ErrorResponse`,
//!   `errorInfo` naming the asset and the serials) and `numCompleted` counting
//!   what went through. With a delay of 0 the work is done at once.
//! - Knobs: throttling (429 9646 with `Retry-After`), a revoked token, the
//!   page size, the event delay.
//! - `GET /service/config`, Apple's content metadata lookup (`GET /lookup`,
//!   no token) and the device's licence check (`GET /sim/licence`, no
//!   token): `meta`.
//!
//! `assigned` (in process) and `GET /sim/licence` (over HTTP) are what a
//! simulated device asks before it installs an app.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use serde_json::{json, Map, Value};

use crate::vpp::{apple_time, errors, MAX_ASSETS, MAX_SERIALS};

mod meta;

/// The largest request body read.
const MAX_BODY: usize = 1024 * 1024;
/// Records a page (Apple's pages hold several hundred).
const DEFAULT_PAGE_SIZE: usize = 3;
/// Events kept; the oldest finished ones are forgotten beyond this.
const MAX_EVENTS: usize = 100_000;
const JSON: &str = "application/json;charset=UTF-8";
const PREFIX: &str = "/mdm/v2";

/// What the stand-in saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VppStats {
    /// Every request, including refused ones.
    pub requests: u64,
    /// Requests refused for their token (missing, malformed, unknown, expired, revoked).
    pub refused: u64,
    /// Associate requests accepted (events made).
    pub associations: u64,
    /// Disassociate requests accepted (events made).
    pub disassociations: u64,
    /// 429 answers sent.
    pub throttled: u64,
    /// Requests per route, `"GET /assets"` (unknown paths as `"other"`).
    pub calls: BTreeMap<String, u64>,
    /// The latest refusal, in words (for a failing test's message).
    pub last_refusal: Option<String>,
}

struct AssetRec {
    pricing: String,
    product_type: &'static str,
    total: i64,
    device_assignable: bool,
    revocable: bool,
    /// Serial numbers holding a licence.
    holders: BTreeSet<String>,
}

impl AssetRec {
    fn available(&self) -> i64 {
        self.total - self.holders.len() as i64
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Associate,
    Disassociate,
}

struct Event {
    kind: Kind,
    /// (adamId, pricingParam).
    assets: Vec<(String, String)>,
    serials: Vec<String>,
    users: Vec<String>,
    polls_left: u32,
    /// Once done: what went through, and Apple's failures.
    outcome: Option<(i64, Vec<Value>)>,
    seq: u64,
}

struct State {
    /// `http://127.0.0.1:PORT/mdm/v2`.
    base: String,
    org_name: String,
    uid: String,
    /// The token file text this "Apple" issued, its expiry, and an expired one.
    stoken: String,
    expires_at: i64,
    expired_stoken: String,
    revoked: bool,
    assets: BTreeMap<String, AssetRec>,
    /// What the content metadata lookup says of an app, by adamId.
    meta: BTreeMap<String, meta::AppMetaRec>,
    version: String,
    events: HashMap<String, Event>,
    event_seq: u64,
    event_delay: u32,
    page_size: usize,
    throttle: u32,
    throttle_secs: u64,
    stats: VppStats,
}

/// A running stand-in; stops listening when dropped.
pub struct VppStandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VppStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_alnum(n: usize) -> String {
    use rand::distributions::Alphanumeric;
    rand::thread_rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

/// A token file as Apple Business Manager writes one: base64 of JSON.
fn token_file(org_name: &str, expires_at: i64) -> anyhow::Result<String> {
    use base64::Engine as _;
    let exp = apple_time(expires_at).ok_or_else(|| anyhow::anyhow!("the clock is out of range"))?;
    let inner = base64::engine::general_purpose::STANDARD.encode(random_alnum(96));
    let json = json!({ "token": inner, "expDate": exp, "orgName": org_name });
    Ok(base64::engine::general_purpose::STANDARD.encode(json.to_string()))
}

impl VppStandIn {
    /// Start on 127.0.0.1:0 for the organisation `org_name`, with a token a
    /// year ahead and no assets.
    pub async fn start(org_name: &str) -> anyhow::Result<VppStandIn> {
        let now = crate::clock::now();
        let expires_at = now + 365 * 86_400;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            base: format!("http://127.0.0.1:{}{PREFIX}", addr.port()),
            org_name: org_name.to_owned(),
            uid: format!("{}", rand::thread_rng().gen_range(1_000_000_000_000_000u64..10_000_000_000_000_000)),
            stoken: token_file(org_name, expires_at)?,
            expires_at,
            expired_stoken: token_file(org_name, now - 86_400)?,
            revoked: false,
            assets: BTreeMap::new(),
            meta: BTreeMap::new(),
            version: uuid::Uuid::new_v4().to_string(),
            events: HashMap::new(),
            event_seq: 0,
            event_delay: 1,
            page_size: DEFAULT_PAGE_SIZE,
            throttle: 0,
            throttle_secs: 0,
            stats: VppStats::default(),
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &st).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(VppStandIn { addr, state, task })
    }

    /// `http://127.0.0.1:PORT/mdm/v2`.
    pub fn url(&self) -> String {
        self.lock().base.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The content token file this "Apple" issued (what an admin uploads).
    pub fn token_file(&self) -> String {
        self.lock().stoken.clone()
    }

    /// A token file of the same organisation that expired yesterday.
    pub fn expired_token_file(&self) -> String {
        self.lock().expired_stoken.clone()
    }

    /// The organisation buys `licences` licences of an app: STDQ,
    /// device-assignable, revocable (more of one it already has adds up).
    pub fn add_app(&self, adam_id: &str, licences: i64) {
        self.add(adam_id, "App", licences, true);
    }

    /// The organisation buys `licences` of a book: not device-assignable.
    pub fn add_book(&self, adam_id: &str, licences: i64) {
        self.add(adam_id, "Book", licences, false);
    }

    fn add(&self, adam_id: &str, product_type: &'static str, licences: i64, device_assignable: bool) {
        let mut s = self.lock();
        let a = s.assets.entry(adam_id.to_owned()).or_insert_with(|| AssetRec {
            pricing: "STDQ".into(),
            product_type,
            total: 0,
            device_assignable,
            revocable: true,
            holders: BTreeSet::new(),
        });
        a.total += licences.max(0);
        s.changed();
    }

    /// (assigned, available) licences of an asset; (0, 0) when unknown.
    pub fn licences(&self, adam_id: &str) -> (i64, i64) {
        self.lock()
            .assets
            .get(adam_id)
            .map(|a| (a.holders.len() as i64, a.available()))
            .unwrap_or((0, 0))
    }

    /// Whether the device holds a licence of the asset (what a simulated
    /// device checks before installing the app).
    pub fn assigned(&self, adam_id: &str, serial: &str) -> bool {
        self.lock().assets.get(adam_id).is_some_and(|a| a.holders.contains(serial))
    }

    /// The next `n` calls answer 429 9646 with `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        let mut s = self.lock();
        s.throttle = n;
        s.throttle_secs = retry_after_secs;
    }

    /// The token is revoked (a newer one was downloaded): every call 401 9625.
    pub fn revoke_token(&self) {
        self.lock().revoked = true;
    }

    /// New events stay PENDING for this many status polls (default 1; 0:
    /// done at once).
    pub fn set_event_delay(&self, polls: u32) {
        self.lock().event_delay = polls;
    }

    /// Records a page of `GET /assets` and `GET /assignments` (default 3).
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.clamp(1, 1000);
    }

    pub fn stats(&self) -> VppStats {
        self.lock().stats.clone()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An answer.
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(v: Value) -> Reply {
        Reply {
            status: 200,
            body: v,
            headers: Vec::new(),
        }
    }

    /// An error as Apple sends it.
    fn error(status: u16, number: i64, message: &str) -> Reply {
        Reply {
            status,
            body: json!({ "errorNumber": number, "errorMessage": message }),
            headers: Vec::new(),
        }
    }

    fn invalid(why: &str) -> Reply {
        Reply::error(400, errors::INVALID_ARGUMENT, &format!("Invalid argument. {why}"))
    }
}

async fn handle(req: Request<hyper::body::Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes());
    let reply = {
        let mut s = lock(state);
        match body {
            Ok(body) => s.route(&parts, &body),
            Err(_) => {
                s.stats.requests += 1;
                Reply::invalid("The request body is too large.")
            }
        }
    };
    let mut b = Response::builder().status(reply.status).header(hyper::header::CONTENT_TYPE, JSON);
    for (k, v) in &reply.headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(reply.body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The query's parameters; a parameter twice is refused.
fn query(parts: &hyper::http::request::Parts) -> Result<HashMap<String, String>, Reply> {
    let mut out = HashMap::new();
    let Some(q) = parts.uri.query() else { return Ok(out) };
    let u = reqwest::Url::parse(&format!("http://x/?{q}")).map_err(|_| Reply::invalid("The query is malformed."))?;
    for (k, v) in u.query_pairs() {
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(Reply::invalid(&format!("{k} is given twice.")));
        }
    }
    Ok(out)
}

fn bool_param(q: &HashMap<String, String>, k: &str) -> Result<Option<bool>, Reply> {
    match q.get(k).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(Reply::invalid(&format!("{k} must be true or false."))),
    }
}

fn int_param(q: &HashMap<String, String>, k: &str) -> Result<Option<i64>, Reply> {
    q.get(k)
        .map(|v| v.parse::<i64>().map_err(|_| Reply::invalid(&format!("{k} must be an integer."))))
        .transpose()
}

/// The records of page `pageIndex` of `all`, in Apple's paginated answer.
fn paged(q: &HashMap<String, String>, key: &str, all: Vec<Value>, size: usize, mut extra: Map<String, Value>) -> Reply {
    let index = match q.get("pageIndex") {
        None => 0usize,
        Some(v) => match v.parse::<usize>() {
            Ok(i) => i,
            Err(_) => return Reply::invalid("pageIndex must be a non-negative integer."),
        },
    };
    let total_pages = all.len().div_ceil(size).max(1);
    if index >= total_pages {
        return Reply::error(
            400,
            errors::PAGE_INDEX,
            "The provided page index must be greater than 0, and less than the total number of pages.",
        );
    }
    let page: Vec<Value> = all.into_iter().skip(index * size).take(size).collect();
    extra.insert("size".into(), json!(page.len()));
    extra.insert(key.into(), Value::Array(page));
    extra.insert("currentPageIndex".into(), json!(index));
    extra.insert("totalPages".into(), json!(total_pages));
    if index + 1 < total_pages {
        extra.insert("nextPageIndex".into(), json!(index + 1));
    }
    Reply::json(Value::Object(extra))
}

/// A list of non-empty, unique strings (or none), at most `max`.
fn strings(m: &Map<String, Value>, key: &str, max: usize, too_many: (i64, &str), duplicate: (i64, &str)) -> Result<Vec<String>, Reply> {
    let list = match m.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Reply::invalid(&format!("{key} must be a list."))),
    };
    let mut out = Vec::with_capacity(list.len());
    let mut seen = HashSet::new();
    for v in list {
        let s = v
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| Reply::invalid(&format!("{key} must hold non-empty strings.")))?;
        if !seen.insert(s) {
            return Err(Reply::error(400, duplicate.0, duplicate.1));
        }
        out.push(s.to_owned());
    }
    if out.len() > max {
        return Err(Reply::error(400, too_many.0, too_many.1));
    }
    Ok(out)
}

impl State {
    /// The data changed: a new `versionId`.
    fn changed(&mut self) {
        self.version = uuid::Uuid::new_v4().to_string();
    }

    fn common(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("tokenExpirationDate".into(), json!(apple_time(self.expires_at)));
        m.insert("uId".into(), json!(self.uid));
        m
    }

    fn refuse(&mut self, status: u16, number: i64, message: &str, why: String) -> Reply {
        self.stats.refused += 1;
        self.stats.last_refusal = Some(why);
        Reply::error(status, number, message)
    }

    fn route(&mut self, parts: &hyper::http::request::Parts, body: &[u8]) -> Reply {
        let method = parts.method.as_str();
        let sub = parts.uri.path().strip_prefix(PREFIX).unwrap_or("");
        if let Some(r) = self.tokenless(method, sub, parts) {
            return r;
        }
        let known_path = matches!(
            sub,
            "/client/config" | "/service/config" | "/assets" | "/assignments" | "/status" | "/assets/associate" | "/assets/disassociate"
        );
        let known = matches!(
            (method, sub),
            ("GET", "/client/config")
                | ("GET", "/service/config")
                | ("GET", "/assets")
                | ("GET", "/assignments")
                | ("GET", "/status")
                | ("POST", "/assets/associate")
                | ("POST", "/assets/disassociate")
        );
        self.stats.requests += 1;
        let key = if known { format!("{method} {sub}") } else { "other".to_owned() };
        *self.stats.calls.entry(key).or_default() += 1;

        if self.throttle > 0 {
            self.throttle -= 1;
            self.stats.throttled += 1;
            let mut r = Reply::error(
                429,
                errors::TOO_MANY_REQUESTS,
                "There are too many recent requests. Try again momentarily.",
            );
            r.headers.push(("Retry-After", self.throttle_secs.to_string()));
            return r;
        }
        if let Err(r) = self.authorize(parts) {
            return r;
        }
        if !known {
            return if known_path {
                Reply::error(
                    405,
                    errors::METHOD,
                    "This request contains an unsupported HTTP method for the requested endpoint.",
                )
            } else {
                Reply {
                    status: 404,
                    body: json!({ "errorMessage": "Not found." }),
                    headers: Vec::new(),
                }
            };
        }
        let q = match query(parts) {
            Ok(q) => q,
            Err(r) => return r,
        };
        match (method, sub) {
            ("GET", "/client/config") => self.client_config(),
            ("GET", "/service/config") => self.service_config(),
            ("GET", "/assets") => self.get_assets(&q),
            ("GET", "/assignments") => self.get_assignments(&q),
            ("GET", "/status") => self.status(&q),
            ("POST", "/assets/associate") => self.manage(parts, body, Kind::Associate),
            ("POST", "/assets/disassociate") => self.manage(parts, body, Kind::Disassociate),
            _ => Reply::invalid("Unknown request."),
        }
    }

    fn authorize(&mut self, parts: &hyper::http::request::Parts) -> Result<(), Reply> {
        let header = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or_default();
        let token = match header.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => t.trim(),
            _ => {
                return Err(self.refuse(
                    401,
                    errors::BAD_AUTHORIZATION,
                    "This request contains an invalid authorization header. Change the request to send an authorization header that matches the format 'Bearer {sToken}'.",
                    "no Authorization: Bearer header".into(),
                ))
            }
        };
        if token == self.expired_stoken || (token == self.stoken && self.expires_at <= crate::clock::now()) {
            return Err(self.refuse(
                401,
                errors::TOKEN_EXPIRED,
                "The token has expired. You need to generate a new token online using your organization's account at either school.apple.com or business.apple.com.",
                "an expired token".into(),
            ));
        }
        if token != self.stoken {
            return Err(self.refuse(
                401,
                errors::INVALID_TOKEN,
                "Invalid authentication token",
                "an unknown token".into(),
            ));
        }
        if self.revoked {
            return Err(self.refuse(
                401,
                errors::TOKEN_REVOKED,
                "The server has revoked the sToken.",
                "the token is revoked".into(),
            ));
        }
        Ok(())
    }

    fn client_config(&self) -> Reply {
        let mut m = self.common();
        m.insert("countryISO2ACode".into(), json!("US"));
        m.insert("defaultPlatform".into(), json!("volumestore"));
        m.insert("locationName".into(), json!(self.org_name));
        m.insert("websiteURL".into(), json!("https://business.apple.com"));
        Reply::json(Value::Object(m))
    }

    fn get_assets(&self, q: &HashMap<String, String>) -> Reply {
        let filters = (|| -> Result<_, Reply> {
            Ok((
                bool_param(q, "deviceAssignable")?,
                bool_param(q, "revocable")?,
                int_param(q, "minAssignedCount")?,
                int_param(q, "maxAssignedCount")?,
                int_param(q, "minAvailableCount")?,
                int_param(q, "maxAvailableCount")?,
            ))
        })();
        let (assignable, revocable, min_assigned, max_assigned, min_available, max_available) = match filters {
            Ok(f) => f,
            Err(r) => return r,
        };
        let text = |k: &str| q.get(k).map(String::as_str);
        let all: Vec<Value> = self
            .assets
            .iter()
            .filter(|(id, a)| {
                let assigned = a.holders.len() as i64;
                text("adamId").is_none_or(|x| x == id.as_str())
                    && text("pricingParam").is_none_or(|x| x == a.pricing)
                    && text("productType").is_none_or(|x| x == a.product_type)
                    && assignable.is_none_or(|x| x == a.device_assignable)
                    && revocable.is_none_or(|x| x == a.revocable)
                    && min_assigned.is_none_or(|x| assigned >= x)
                    && max_assigned.is_none_or(|x| assigned <= x)
                    && min_available.is_none_or(|x| a.available() >= x)
                    && max_available.is_none_or(|x| a.available() <= x)
            })
            .map(|(id, a)| {
                json!({
                    "adamId": id,
                    "pricingParam": a.pricing,
                    "productType": a.product_type,
                    "deviceAssignable": a.device_assignable,
                    "revocable": a.revocable,
                    "assignedCount": a.holders.len(),
                    "availableCount": a.available(),
                    "retiredCount": 0,
                    "totalCount": a.total,
                    "supportedPlatforms": ["iOS", "macOS"],
                })
            })
            .collect();
        let mut extra = self.common();
        extra.insert("versionId".into(), json!(self.version));
        paged(q, "assets", all, self.page_size, extra)
    }

    fn get_assignments(&self, q: &HashMap<String, String>) -> Reply {
        let text = |k: &str| q.get(k).map(String::as_str);
        let mut all: Vec<Value> = Vec::new();
        match text("sinceVersionId") {
            None => {}
            // Nothing changed since the current version.
            Some(v) if v == self.version => {
                let mut extra = self.common();
                extra.insert("versionId".into(), json!(self.version));
                return paged(q, "assignments", all, self.page_size, extra);
            }
            // Older versions are not kept here.
            Some(_) => {
                return Reply::error(
                    400,
                    errors::INVALID_VERSION,
                    "This request contains an invalid version ID. Change the request to send the version ID from the read APIs.",
                )
            }
        }
        // Users are not modelled: a user filter matches nothing.
        if text("clientUserId").is_none() {
            for (id, a) in &self.assets {
                if text("adamId").is_some_and(|x| x != id) || text("pricingParam").is_some_and(|x| x != a.pricing) {
                    continue;
                }
                for serial in &a.holders {
                    if text("serialNumber").is_some_and(|x| x != serial) {
                        continue;
                    }
                    all.push(json!({ "adamId": id, "pricingParam": a.pricing, "serialNumber": serial }));
                }
            }
        }
        let mut extra = self.common();
        extra.insert("versionId".into(), json!(self.version));
        paged(q, "assignments", all, self.page_size, extra)
    }

    fn manage(&mut self, parts: &hyper::http::request::Parts, body: &[u8], kind: Kind) -> Reply {
        let json_body = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/json"));
        if !json_body {
            return Reply::error(
                415,
                errors::CONTENT_TYPE,
                "This request contains an unsupported Content-Type for the requested endpoint.",
            );
        }
        let m = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => return Reply::invalid("The request body is not a JSON object."),
        };
        let list = match m.get("assets") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Reply::invalid("assets must be a list."),
        };
        if list.is_empty() {
            return Reply::error(
                400,
                errors::ASSET_REQUIRED,
                "This request doesn't contain an asset, which is a required argument. Change the request to provide an asset.",
            );
        }
        if list.len() > MAX_ASSETS {
            return Reply::error(
                400,
                errors::MAX_ASSETS,
                "This request exceeds the maximum assets limit. Change the request to stay within the specified limit.",
            );
        }
        let mut assets: Vec<(String, String)> = Vec::new();
        for a in &list {
            let Some(adam) = a.get("adamId").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()) else {
                return Reply::invalid("Every asset needs an adamId.");
            };
            let pricing = match a.get("pricingParam") {
                None | Some(Value::Null) => "STDQ",
                Some(Value::String(p)) if p == "STDQ" || p == "PLUS" => p.as_str(),
                Some(_) => return Reply::invalid("pricingParam must be STDQ or PLUS."),
            };
            let pair = (adam.to_owned(), pricing.to_owned());
            if assets.contains(&pair) {
                return Reply::error(
                    400,
                    errors::DUPLICATE_ASSETS,
                    "This request contains duplicate assets. Change the request to send unique assets.",
                );
            }
            assets.push(pair);
        }
        let serials = match strings(
            &m,
            "serialNumbers",
            MAX_SERIALS,
            (
                errors::MAX_SERIALS,
                "This request exceeds the maximum serialNumbers limit. Change the request to stay within the specified limit.",
            ),
            (
                errors::DUPLICATE_SERIALS,
                "This request contains duplicate serialNumbers. Change the request to send unique serial numbers.",
            ),
        ) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let users = match strings(
            &m,
            "clientUserIds",
            1000,
            (
                errors::MAX_USERS,
                "This request exceeds the maximum clientUserIds limit. Change the request to stay within the specified limit.",
            ),
            (
                errors::DUPLICATE_USERS,
                "This request contains duplicate clientUserIds. Change the request to send unique client IDs.",
            ),
        ) {
            Ok(s) => s,
            Err(r) => return r,
        };
        if serials.is_empty() && users.is_empty() {
            return Reply::error(
                400,
                errors::ASSIGNEES_REQUIRED,
                "Either clientUserIds or serialNumbers are required arguments. Change the request to provide assignable users and devices.",
            );
        }
        for (adam, pricing) in &assets {
            let Some(a) = self.assets.get(adam).filter(|a| a.pricing == *pricing) else {
                continue;
            };
            if kind == Kind::Associate && !serials.is_empty() && !a.device_assignable {
                return Reply::error(
                    400,
                    errors::NOT_DEVICE_ASSIGNABLE,
                    "The asset in the request isn't device-assignable. Change the request to send device-assignable assets.",
                );
            }
            if kind == Kind::Disassociate && !a.revocable {
                return Reply::error(
                    400,
                    errors::NOT_REVOCABLE,
                    "The asset in the request isn't revocable. Change the request to send revocable assets.",
                );
            }
        }

        let id = uuid::Uuid::new_v4().to_string();
        self.event_seq += 1;
        if self.events.len() >= MAX_EVENTS {
            // Forget the oldest finished half.
            let mut done: Vec<u64> = self.events.values().filter(|e| e.outcome.is_some()).map(|e| e.seq).collect();
            done.sort_unstable();
            if let Some(&cut) = done.get(done.len() / 2) {
                self.events.retain(|_, e| e.outcome.is_none() || e.seq > cut);
            }
        }
        self.events.insert(
            id.clone(),
            Event {
                kind,
                assets,
                serials,
                users,
                polls_left: self.event_delay,
                outcome: None,
                seq: self.event_seq,
            },
        );
        match kind {
            Kind::Associate => self.stats.associations += 1,
            Kind::Disassociate => self.stats.disassociations += 1,
        }
        if self.event_delay == 0 {
            self.process(&id);
        }
        let mut out = self.common();
        out.insert("eventId".into(), json!(id));
        Reply::json(Value::Object(out))
    }

    /// Do an event's work, once.
    fn process(&mut self, id: &str) {
        let Some(mut ev) = self.events.remove(id) else { return };
        if ev.outcome.is_none() {
            let mut completed = 0i64;
            let mut failures = Vec::new();
            let mut any_change = false;
            for (adam, pricing) in &ev.assets {
                let mut failed: BTreeMap<i64, Vec<String>> = BTreeMap::new();
                let asset = self.assets.get_mut(adam).filter(|a| a.pricing == *pricing);
                match (ev.kind, asset) {
                    (Kind::Associate, None) => {
                        failed.insert(errors::NOT_ENOUGH_LICENSES, ev.serials.clone());
                    }
                    (Kind::Associate, Some(a)) => {
                        for s in &ev.serials {
                            if a.holders.contains(s) {
                                completed += 1;
                            } else if a.available() > 0 {
                                a.holders.insert(s.clone());
                                any_change = true;
                                completed += 1;
                            } else {
                                failed.entry(errors::NOT_ENOUGH_LICENSES).or_default().push(s.clone());
                            }
                        }
                    }
                    (Kind::Disassociate, None) => {
                        failed.insert(errors::LICENSE_NOT_FOUND, ev.serials.clone());
                    }
                    (Kind::Disassociate, Some(a)) => {
                        for s in &ev.serials {
                            if a.holders.remove(s) {
                                any_change = true;
                                completed += 1;
                            } else {
                                failed.entry(errors::LICENSE_NOT_FOUND).or_default().push(s.clone());
                            }
                        }
                    }
                }
                for (number, serials) in failed {
                    if serials.is_empty() {
                        continue;
                    }
                    let message = if number == errors::NOT_ENOUGH_LICENSES {
                        "There aren't enough assets available to complete this association."
                    } else {
                        "License not found"
                    };
                    failures.push(json!({
                        "errorInfo": { "assets": [{ "adamId": adam, "pricingParam": pricing }], "serialNumbers": serials },
                        "errorNumber": number,
                        "errorMessage": message,
                    }));
                }
                if !ev.users.is_empty() {
                    failures.push(json!({
                        "errorInfo": { "assets": [{ "adamId": adam, "pricingParam": pricing }], "clientUserIds": ev.users },
                        "errorNumber": errors::USER_NOT_FOUND,
                        "errorMessage": "Unable to find the registered user.",
                    }));
                }
            }
            if any_change {
                self.changed();
            }
            ev.outcome = Some((completed, failures));
        }
        self.events.insert(id.to_owned(), ev);
    }

    fn status(&mut self, q: &HashMap<String, String>) -> Reply {
        let Some(id) = q.get("eventId").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) else {
            return Reply::invalid("eventId is required.");
        };
        let Some(ev) = self.events.get_mut(&id) else {
            return Reply::error(400, errors::EVENT_NOT_FOUND, "Unable to find eventId.");
        };
        if ev.outcome.is_none() {
            if ev.polls_left > 0 {
                ev.polls_left -= 1;
            } else {
                self.process(&id);
            }
        }
        let Some(ev) = self.events.get(&id) else {
            return Reply::error(400, errors::EVENT_NOT_FOUND, "Unable to find eventId.");
        };
        let requested = (ev.assets.len() * (ev.serials.len() + ev.users.len())) as i64;
        let mut out = self.common();
        out.insert(
            "eventType".into(),
            json!(match ev.kind {
                Kind::Associate => "ASSOCIATE",
                Kind::Disassociate => "DISASSOCIATE",
            }),
        );
        out.insert("numRequested".into(), json!(requested));
        match &ev.outcome {
            None => {
                out.insert("eventStatus".into(), json!("PENDING"));
                out.insert("numCompleted".into(), json!(0));
            }
            Some((completed, failures)) => {
                let status = if failures.is_empty() { "COMPLETE" } else { "FAILED" };
                out.insert("eventStatus".into(), json!(status));
                out.insert("numCompleted".into(), json!(completed));
                if !failures.is_empty() {
                    out.insert("failures".into(), Value::Array(failures.clone()));
                }
            }
        }
        Reply::json(Value::Object(out))
    }
}

#[cfg(test)]
mod tests;
