//! A stand-in of Apple's Device Assignment service (ADE, `mdmenrollment.apple.com`)
//! for tests and `mdmd sim`: plain HTTP/1.1 on 127.0.0.1, written from
//! Apple's documentation and as strict as Apple where Apple documents a check.
//!
//! - `GET /session` takes only a valid OAuth 1.0a header for its token
//!   (`ade::oauth::verify`: realm `ADM`, HMAC-SHA1, version 1.0, the consumer
//!   key and access token, a timestamp within 5 minutes, the signature) and a
//!   nonce not seen before; a missing, duplicated or unsupported parameter is
//!   400, wrong credentials 401 `UNAUTHORIZED` (both counted in
//!   `bad_signatures`). It answers `{"auth_session_token": …}`, a fresh random
//!   token each time.
//! - Every other call needs a current `X-ADM-Auth-Session` (else 401
//!   `UNAUTHORIZED`), `X-Server-Protocol-Version` (else 400
//!   `PROTOCOL_VERSION_REQUIRED`), a `User-Agent` (else 400
//!   `USER_AGENT_MISSING`, on every call) and a JSON body that parses (else
//!   400 `MALFORMED_REQUEST_BODY`).
//! - The device list: a log of operations (added, modified, deleted), each
//!   with its sequence number. A cursor is an opaque random string mapped
//!   here to a position (a place in the paged fetch, and the log length when
//!   the fetch began); `POST /devices/sync` returns the log after it, paged.
//!   Cursors expire after 7 days (by `crate::clock`) or at `expire_cursors`.
//!   `limit` defaults to 100 and is capped at min(1000, the page cap).
//! - Profiles: `POST /profile` checks what Apple documents (`CONFIG_NAME_*`,
//!   `CONFIG_URL_*`, `FLAGS_INVALID`, lengths); `POST` or `PUT
//!   /profile/devices` assigns (Apple documents `POST` today, `PUT` was the
//!   method before and still works), `DELETE /profile/devices` removes.
//!   Assigning, removing and the device taking its profile each record a
//!   `modified` operation.
//! - Knobs for tests: throttling (429 with `Retry-After`), terms not signed
//!   (403 `T_C_NOT_SIGNED`), a revoked token, expired sessions and cursors,
//!   session tokens rotated through the answer's `X-ADM-Auth-Session`.
//!
//! What a device receives at activation is the stand-in's own, in place of
//! Apple's activation servers (iprofiles): `cloud_configuration`, also served
//! as `POST /sim/activation` with `{"serial_number": …}` → 200 and the cloud
//! configuration, or 404 when no profile is assigned (for `mdmd sim` devices
//! in another process). That path needs no session and is never throttled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rand::Rng as _;
use serde_json::{json, Map, Value};

use crate::ade::{oauth, Device, ServerToken};

/// The largest request body read.
const MAX_BODY: usize = 1024 * 1024;
/// Apple's largest page, and its default.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
/// Sync cursors live 7 days.
const CURSOR_LIFETIME: i64 = 7 * 86_400;
/// OAuth timestamps within 5 minutes of now.
const MAX_SKEW: i64 = 300;
const JSON: &str = "application/json;charset=UTF8";

/// What the stand-in saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdeStats {
    /// Session tokens issued by `GET /session`.
    pub sessions: u64,
    /// Every request, including refused ones.
    pub requests: u64,
    /// `GET /session` refused for its OAuth header (signature, key, token, timestamp, nonce, format).
    pub bad_signatures: u64,
    /// 429 answers sent.
    pub throttled: u64,
    /// 401 answers to API calls for a missing or stale session token.
    pub bad_sessions: u64,
    /// Requests per route, `"POST /server/devices"` (unknown paths as `"other"`).
    pub calls: BTreeMap<String, u64>,
    /// The latest refusal, in words (for a failing test's message).
    pub last_refusal: Option<String>,
}

/// Where a cursor points.
struct Cursor {
    /// The last serial number a fetch returned (`None`: from the start).
    fetch_after: Option<String>,
    /// The fetch has returned every device: another fetch page is EXHAUSTED_CURSOR.
    fetch_done: bool,
    /// Operations from this index on are news to the holder.
    seq: usize,
    issued_at: i64,
    expired: bool,
}

struct State {
    token: ServerToken,
    account: Value,
    org_name: String,
    revoked: bool,
    terms_required: bool,
    rotate_sessions: bool,
    sessions: HashSet<String>,
    /// Every session token ever handed out (`issued_sessions`).
    issued: Vec<String>,
    /// Nonces seen, with their timestamps (pruned once past the skew).
    nonces: HashMap<String, i64>,
    devices: BTreeMap<String, Device>,
    /// The operations log: a device as it was, with `op_type` and `op_date`.
    ops: Vec<Device>,
    cursors: HashMap<String, Cursor>,
    profiles: HashMap<String, Value>,
    page_cap: usize,
    throttle: u32,
    throttle_secs: u64,
    stats: AdeStats,
}

/// A running stand-in; stops listening when dropped.
pub struct AdeStandIn {
    pub addr: SocketAddr,
    /// The server token this "Apple" issued (what an admin would upload).
    pub token: ServerToken,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdeStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_alnum(n: usize) -> String {
    use rand::distributions::Alphanumeric;
    rand::thread_rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

fn random_hex(bytes: usize) -> String {
    let mut r = rand::thread_rng();
    (0..bytes).map(|_| format!("{:02x}", r.gen::<u8>())).collect()
}

fn now_rfc3339() -> String {
    crate::clock::rfc3339(crate::clock::now()).unwrap_or_default()
}

impl AdeStandIn {
    /// Start on 127.0.0.1:0 with a fresh random token (expiry one year
    /// ahead) and `server_name` as the server's and the organisation's name.
    pub async fn start(server_name: &str) -> anyhow::Result<AdeStandIn> {
        let token = ServerToken {
            consumer_key: format!("CK_{}", random_hex(64)),
            consumer_secret: format!("CS_{}", random_hex(64)),
            access_token: format!("AT_O{}", random_hex(64)),
            access_secret: format!("AS_{}", random_hex(64)),
            access_token_expiry: crate::clock::rfc3339(crate::clock::now() + 365 * 86_400)
                .ok_or_else(|| anyhow::anyhow!("the clock is out of range"))?,
        };
        let slug: String = server_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let slug = if slug.is_empty() { "example".to_owned() } else { slug };
        let account = json!({
            "server_name": server_name,
            "server_uuid": uuid::Uuid::new_v4().to_string().to_uppercase(),
            "admin_id": format!("admin@{slug}.example"),
            "facilitator_id": format!("admin@{slug}.example"),
            "org_name": server_name,
            "org_email": format!("it@{slug}.example"),
            "org_phone": "+1 555 0100",
            "org_address": "1 Infinite Loop, Cupertino CA 95014",
            "org_id": random_hex(8).to_uppercase(),
            "org_id_hash": random_hex(32),
            "org_type": "org",
            "org_version": "v2",
            "urls": [],
        });
        let state = Arc::new(Mutex::new(State {
            token: token.clone(),
            account,
            org_name: server_name.to_owned(),
            revoked: false,
            terms_required: false,
            rotate_sessions: false,
            sessions: HashSet::new(),
            issued: Vec::new(),
            nonces: HashMap::new(),
            devices: BTreeMap::new(),
            ops: Vec::new(),
            cursors: HashMap::new(),
            profiles: HashMap::new(),
            page_cap: MAX_LIMIT,
            throttle: 0,
            throttle_secs: 0,
            stats: AdeStats::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &st, addr).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(AdeStandIn { addr, token, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Apple Business Manager assigns a device to this server: `added` in
    /// the next sync, in a fetch with profile_status `empty`.
    pub fn add_device(&self, serial: &str, model: &str) {
        let mut s = self.lock();
        let (family, os) = family_of(model);
        let d = Device {
            serial_number: serial.to_owned(),
            model: Some(model.to_owned()),
            description: Some(format!("{} SPACE GRAY", model.to_uppercase())),
            color: Some("SPACE GRAY".into()),
            profile_status: Some("empty".into()),
            device_assigned_date: Some(now_rfc3339()),
            device_assigned_by: s.account["admin_id"].as_str().map(str::to_owned),
            os: Some(os.into()),
            device_family: Some(family.into()),
            ..Default::default()
        };
        s.devices.insert(serial.to_owned(), d);
        s.record(serial, "added");
    }

    /// The device's description changes in Apple Business Manager: `modified`.
    pub fn modify_device(&self, serial: &str, description: &str) {
        let mut s = self.lock();
        if let Some(d) = s.devices.get_mut(serial) {
            d.description = Some(description.to_owned());
            s.record(serial, "modified");
        }
    }

    /// The device is unassigned from this server (or released): `deleted`.
    pub fn remove_device(&self, serial: &str) {
        let mut s = self.lock();
        if let Some(d) = s.devices.remove(serial) {
            s.ops.push(Device {
                op_type: Some("deleted".into()),
                op_date: Some(now_rfc3339()),
                ..d
            });
        }
    }

    /// Pages hold at most `n` devices (Apple's cap is 1000; tests use small pages).
    pub fn set_page_limit_cap(&self, n: usize) {
        self.lock().page_cap = n.clamp(1, MAX_LIMIT);
    }

    /// Every cursor issued so far answers EXPIRED_CURSOR.
    pub fn expire_cursors(&self) {
        for c in self.lock().cursors.values_mut() {
            c.expired = true;
        }
    }

    /// Every session token handed out so far, valid or not (a test looks
    /// for them where they must not be).
    pub fn issued_sessions(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// Every session token becomes invalid (401).
    pub fn expire_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// The next `n` calls answer 429 with `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        let mut s = self.lock();
        s.throttle = n;
        s.throttle_secs = retry_after_secs;
    }

    /// While set, every call answers 403 T_C_NOT_SIGNED.
    pub fn require_terms(&self, yes: bool) {
        self.lock().terms_required = yes;
    }

    /// The token is revoked (a newer one was downloaded): `/session` answers 401.
    pub fn revoke_token(&self) {
        let mut s = self.lock();
        s.revoked = true;
        s.sessions.clear();
    }

    /// While set, every successful API answer carries a new session token in
    /// `X-ADM-Auth-Session`, and the one the request used stops working.
    pub fn rotate_sessions(&self, yes: bool) {
        self.lock().rotate_sessions = yes;
    }

    /// The device as Apple holds it.
    pub fn device(&self, serial: &str) -> Option<Device> {
        self.lock().devices.get(serial).cloned()
    }

    /// A defined profile, as `GET /profile` answers it.
    pub fn profile(&self, uuid: &str) -> Option<Value> {
        self.lock().profiles.get(uuid).cloned()
    }

    pub fn stats(&self) -> AdeStats {
        self.lock().stats.clone()
    }

    /// What a device with this serial gets on first boot from Apple's
    /// activation: the cloud configuration, or None when no profile is
    /// assigned. Marks the profile `pushed` (with `profile_push_time`), as
    /// Apple does.
    pub fn cloud_configuration(&self, serial: &str) -> Option<Value> {
        self.lock().cloud_configuration(serial)
    }
}

/// `(device_family, os)` as Apple names them, from a model name.
fn family_of(model: &str) -> (&'static str, &'static str) {
    let m = model.to_ascii_lowercase();
    if m.starts_with("ipad") {
        ("iPad", "iOS")
    } else if m.starts_with("iphone") {
        ("iPhone", "iOS")
    } else if m.contains("tv") {
        ("AppleTV", "tvOS")
    } else if m.contains("vision") {
        ("Vision", "visionOS")
    } else if m.contains("mac") {
        ("Mac", "OSX")
    } else {
        ("iPhone", "iOS")
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(v: Value) -> Reply {
        Reply {
            status: 200,
            content_type: JSON,
            body: v.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// An error as Apple sends it: the code as the body.
    fn error(status: u16, code: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain;charset=UTF8",
            body: code.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }
}

async fn handle(req: Request<hyper::body::Incoming>, state: &Mutex<State>, addr: SocketAddr) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes());
    let reply = {
        let mut s = lock(state);
        match body {
            Ok(body) => s.route(&parts, &body, addr),
            Err(_) => {
                s.stats.requests += 1;
                Reply::error(400, "MALFORMED_REQUEST_BODY")
            }
        }
    };
    let mut b = Response::builder()
        .status(reply.status)
        .header(hyper::header::CONTENT_TYPE, reply.content_type);
    for (k, v) in &reply.headers {
        b = b.header(*k, v);
    }
    b.body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The JSON body: an object, or MALFORMED_REQUEST_BODY.
fn object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Reply::error(400, "MALFORMED_REQUEST_BODY")),
    }
}

/// `devices`: a list of serial numbers; absent or empty is DEVICE_ID_REQUIRED.
fn serials(m: &Map<String, Value>) -> Result<Vec<String>, Reply> {
    match m.get("devices") {
        None | Some(Value::Null) => Err(Reply::error(400, "DEVICE_ID_REQUIRED")),
        Some(Value::Array(a)) if a.is_empty() => Err(Reply::error(400, "DEVICE_ID_REQUIRED")),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Reply::error(400, "MALFORMED_REQUEST_BODY")),
        Some(_) => Err(Reply::error(400, "MALFORMED_REQUEST_BODY")),
    }
}

/// The URL a profile may send devices to: https, or http to a loopback host.
fn enrollment_url_ok(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else { return false };
    let Some(host) = u.host_str() else { return false };
    match u.scheme() {
        "https" => true,
        "http" => {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Check a profile as Apple documents; the profile as stored (without `devices`).
fn check_profile(m: &Map<String, Value>) -> Result<Map<String, Value>, Reply> {
    let bad = |code: &str| Err(Reply::error(400, code));
    let chars = |v: &str| v.chars().count();
    match m.get("profile_name") {
        None | Some(Value::Null) => return bad("CONFIG_NAME_REQUIRED"),
        Some(Value::String(n)) if !n.trim().is_empty() && chars(n) <= 125 => {}
        Some(_) => return bad("CONFIG_NAME_INVALID"),
    }
    match m.get("url") {
        None | Some(Value::Null) => return bad("CONFIG_URL_REQUIRED"),
        Some(Value::String(u)) if u.len() <= 2000 && enrollment_url_ok(u) => {}
        Some(_) => return bad("CONFIG_URL_INVALID"),
    }
    for (key, max, code) in [
        ("department", 125, "DEPARTMENT_INVALID"),
        ("org_magic", 256, "MAGIC_INVALID"),
        ("support_email_address", 250, "SUPPORT_EMAIL_INVALID"),
        ("support_phone_number", 50, "SUPPORT_PHONE_INVALID"),
        ("language", 35, "LOCALE_INVALID"),
        ("region", 35, "LOCALE_INVALID"),
    ] {
        match m.get(key) {
            None => {}
            Some(Value::String(v)) if !v.trim().is_empty() && chars(v) <= max => {}
            Some(_) => return bad(code),
        }
    }
    for key in [
        "allow_pairing",
        "is_supervised",
        "is_multi_user",
        "is_mandatory",
        "await_device_configured",
        "is_mdm_removable",
        "auto_advance_setup",
    ] {
        if m.get(key).is_some_and(|v| !v.is_boolean()) {
            return bad("MALFORMED_REQUEST_BODY");
        }
    }
    let flag = |k: &str| m.get(k).and_then(Value::as_bool);
    // Apple: is_mdm_removable may be false only when supervised. Since iOS 13
    // every ADE device is supervised and is_supervised may be left out.
    if flag("is_mdm_removable") == Some(false) && flag("is_supervised") == Some(false) {
        return bad("FLAGS_INVALID");
    }
    let strings = |k: &str| match m.get(k) {
        None => true,
        Some(Value::Array(a)) => a.iter().all(Value::is_string),
        Some(_) => false,
    };
    if !strings("skip_setup_items") || !strings("devices") {
        return bad("MALFORMED_REQUEST_BODY");
    }
    for key in ["anchor_certs", "supervising_host_certs"] {
        use base64::Engine as _;
        let ok = match m.get(key) {
            None => true,
            Some(Value::Array(a)) => a.iter().all(|c| {
                c.as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok())
                    .is_some_and(|der| der.first() == Some(&0x30))
            }),
            Some(_) => false,
        };
        if !ok {
            return bad("MALFORMED_REQUEST_BODY");
        }
    }
    let mut stored = m.clone();
    stored.remove("devices");
    Ok(stored)
}

impl State {
    /// Append the device's current state to the log as `op_type`.
    fn record(&mut self, serial: &str, op_type: &str) {
        if let Some(d) = self.devices.get(serial) {
            self.ops.push(Device {
                op_type: Some(op_type.into()),
                op_date: Some(now_rfc3339()),
                ..d.clone()
            });
        }
    }

    fn new_cursor(&mut self, fetch_after: Option<String>, fetch_done: bool, seq: usize) -> String {
        let now = crate::clock::now();
        if self.cursors.len() > 10_000 {
            // Long gone cursors are forgotten (then INVALID_CURSOR).
            self.cursors.retain(|_, c| now - c.issued_at < 4 * CURSOR_LIFETIME);
        }
        let id = random_alnum(40);
        self.cursors.insert(
            id.clone(),
            Cursor {
                fetch_after,
                fetch_done,
                seq,
                issued_at: now,
                expired: false,
            },
        );
        id
    }

    /// The cursor named in the body: INVALID_CURSOR, EXPIRED_CURSOR, or where it points.
    fn cursor(&self, c: &str) -> Result<&Cursor, Reply> {
        let cur = self.cursors.get(c).ok_or_else(|| Reply::error(400, "INVALID_CURSOR"))?;
        if cur.expired || crate::clock::now() - cur.issued_at > CURSOR_LIFETIME {
            return Err(Reply::error(400, "EXPIRED_CURSOR"));
        }
        Ok(cur)
    }

    /// `limit`: absent → 100; Apple caps it at 1000 silently; then our page cap.
    fn limit(&self, m: &Map<String, Value>) -> Result<usize, Reply> {
        let l = match m.get("limit") {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(v) => match v.as_i64() {
                Some(n) if n >= 1 => usize::try_from(n).unwrap_or(MAX_LIMIT),
                Some(_) => DEFAULT_LIMIT,
                None => return Err(Reply::error(400, "MALFORMED_REQUEST_BODY")),
            },
        };
        Ok(l.min(MAX_LIMIT).min(self.page_cap))
    }

    fn refuse(&mut self, reply: Reply, why: String) -> Reply {
        self.stats.last_refusal = Some(why);
        reply
    }

    fn route(&mut self, parts: &hyper::http::request::Parts, body: &[u8], addr: SocketAddr) -> Reply {
        let method = parts.method.as_str();
        let path = parts.uri.path();
        let known = matches!(
            (method, path),
            ("GET", "/session")
                | ("GET", "/account")
                | ("POST", "/server/devices")
                | ("POST", "/devices/sync")
                | ("POST", "/devices")
                | ("POST", "/profile")
                | ("GET", "/profile")
                | ("POST", "/profile/devices")
                | ("PUT", "/profile/devices")
                | ("DELETE", "/profile/devices")
                | ("POST", "/sim/activation")
        );
        self.stats.requests += 1;
        let key = if known { format!("{method} {path}") } else { "other".to_owned() };
        *self.stats.calls.entry(key).or_default() += 1;

        if path == "/sim/activation" {
            return self.activation(method, body);
        }
        if self.throttle > 0 {
            self.throttle -= 1;
            self.stats.throttled += 1;
            let mut r = Reply::error(429, "TOO_MANY_REQUESTS");
            r.headers.push(("Retry-After", self.throttle_secs.to_string()));
            return r;
        }
        let header = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
        if header("user-agent").is_none_or(str::is_empty) {
            return self.refuse(Reply::error(400, "USER_AGENT_MISSING"), "no User-Agent".into());
        }
        if self.terms_required {
            return self.refuse(Reply::error(403, "T_C_NOT_SIGNED"), "terms and conditions not accepted".into());
        }
        if !known {
            let exists = matches!(
                path,
                "/session" | "/account" | "/server/devices" | "/devices/sync" | "/devices" | "/profile" | "/profile/devices"
            );
            return if exists {
                Reply::error(405, "METHOD_NOT_ALLOWED")
            } else {
                Reply::error(404, "NOT_FOUND")
            };
        }
        if path == "/session" {
            return self.session(parts, addr);
        }

        let session = header("x-adm-auth-session").unwrap_or_default().to_owned();
        if !self.sessions.contains(&session) {
            self.stats.bad_sessions += 1;
            return self.refuse(Reply::error(401, "UNAUTHORIZED"), format!("{method} {path}: no current session"));
        }
        match header("x-server-protocol-version") {
            None | Some("") => return Reply::error(400, "PROTOCOL_VERSION_REQUIRED"),
            Some(v) if v.parse::<u32>().is_err() => return Reply::error(400, "PROTOCOL_VERSION_INVALID"),
            Some(_) => {}
        }
        let reply = match (method, path) {
            ("GET", "/account") => Reply::json(self.account.clone()),
            ("GET", "/profile") => self.get_profile(parts.uri.query().unwrap_or_default()),
            _ => match object(body) {
                Err(r) => r,
                Ok(m) => match (method, path) {
                    ("POST", "/server/devices") => self.fetch(&m),
                    ("POST", "/devices/sync") => self.sync(&m),
                    ("POST", "/devices") => self.details(&m),
                    ("POST", "/profile") => self.define(&m),
                    ("POST" | "PUT", "/profile/devices") => self.assign(&m),
                    ("DELETE", "/profile/devices") => self.unassign(&m),
                    _ => Reply::error(404, "NOT_FOUND"),
                },
            },
        };
        let mut reply = reply;
        if self.rotate_sessions && reply.status == 200 {
            let fresh = random_alnum(48);
            self.sessions.remove(&session);
            self.sessions.insert(fresh.clone());
            self.issued.push(fresh.clone());
            reply.headers.push(("X-ADM-Auth-Session", fresh));
        }
        reply
    }

    fn session(&mut self, parts: &hyper::http::request::Parts, addr: SocketAddr) -> Reply {
        let host = parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| addr.to_string());
        let url = format!("http://{host}/session");
        if self.revoked {
            return self.refuse(Reply::error(401, "UNAUTHORIZED"), "the token is revoked".into());
        }
        let Some(auth) = parts.headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            self.stats.bad_signatures += 1;
            return self.refuse(Reply::error(401, "UNAUTHORIZED"), "GET /session without Authorization".into());
        };
        let now = crate::clock::now();
        let verified = match oauth::verify("GET", &url, auth, &self.token, now, MAX_SKEW) {
            Ok(v) => v,
            Err(refusal) => {
                self.stats.bad_signatures += 1;
                let (status, code) = match &refusal {
                    oauth::Refusal::Malformed(_) => (400, "BAD_REQUEST"),
                    oauth::Refusal::Unauthorized(_) => (401, "UNAUTHORIZED"),
                };
                return self.refuse(Reply::error(status, code), format!("GET /session: {refusal}"));
            }
        };
        self.nonces.retain(|_, ts| (now - *ts).abs() <= MAX_SKEW);
        if self.nonces.contains_key(&verified.nonce) {
            self.stats.bad_signatures += 1;
            return self.refuse(Reply::error(401, "UNAUTHORIZED"), "GET /session: the nonce was used before".into());
        }
        self.nonces.insert(verified.nonce, verified.timestamp);
        let token = random_alnum(48);
        self.sessions.insert(token.clone());
        self.issued.push(token.clone());
        self.stats.sessions += 1;
        Reply::json(json!({ "auth_session_token": token }))
    }

    fn fetch(&mut self, m: &Map<String, Value>) -> Reply {
        let limit = match self.limit(m) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let (after, seq) = match m.get("cursor") {
            None | Some(Value::Null) => (None, self.ops.len()),
            Some(Value::String(c)) => match self.cursor(c) {
                Err(r) => return r,
                Ok(cur) if cur.fetch_done => return Reply::error(400, "EXHAUSTED_CURSOR"),
                Ok(cur) => (cur.fetch_after.clone(), cur.seq),
            },
            Some(_) => return Reply::error(400, "MALFORMED_REQUEST_BODY"),
        };
        let lower = match &after {
            Some(s) => Bound::Excluded(s.clone()),
            None => Bound::Unbounded,
        };
        let mut rest = self.devices.range((lower, Bound::Unbounded)).map(|(_, d)| d.clone());
        let page: Vec<Device> = rest.by_ref().take(limit).collect();
        let more = rest.next().is_some();
        let last = page.last().map(|d| d.serial_number.clone()).or(after);
        let cursor = self.new_cursor(last, !more, seq);
        Reply::json(json!({
            "devices": page,
            "cursor": cursor,
            "more_to_follow": more,
            "fetched_until": now_rfc3339(),
        }))
    }

    fn sync(&mut self, m: &Map<String, Value>) -> Reply {
        let limit = match self.limit(m) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let seq = match m.get("cursor") {
            None | Some(Value::Null) => return Reply::error(400, "CURSOR_REQUIRED"),
            Some(Value::String(c)) if c.is_empty() => return Reply::error(400, "CURSOR_REQUIRED"),
            Some(Value::String(c)) => match self.cursor(c) {
                Err(r) => return r,
                Ok(cur) => cur.seq,
            },
            Some(_) => return Reply::error(400, "MALFORMED_REQUEST_BODY"),
        };
        let start = seq.min(self.ops.len());
        let end = (start + limit).min(self.ops.len());
        let page = self.ops[start..end].to_vec();
        let more = end < self.ops.len();
        let cursor = self.new_cursor(None, true, end);
        Reply::json(json!({
            "devices": page,
            "cursor": cursor,
            "more_to_follow": more,
            "fetched_until": now_rfc3339(),
        }))
    }

    fn details(&mut self, m: &Map<String, Value>) -> Reply {
        let serials = match serials(m) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let mut out = Map::new();
        for s in serials {
            let v = match self.devices.get(&s) {
                Some(d) => {
                    let mut v = serde_json::to_value(d).unwrap_or_else(|_| json!({}));
                    v["response_status"] = json!("SUCCESS");
                    v
                }
                None => json!({ "serial_number": s, "response_status": "NOT_ACCESSIBLE" }),
            };
            out.insert(s, v);
        }
        Reply::json(json!({ "devices": out }))
    }

    fn get_profile(&mut self, query: &str) -> Reply {
        let uuid = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "profile_uuid")
            .and_then(|(_, v)| urlencoding::decode(v).ok())
            .map(|v| v.into_owned())
            .filter(|v| !v.is_empty());
        let Some(uuid) = uuid else {
            return Reply::error(400, "PROFILE_UUID_REQUIRED");
        };
        match self.profiles.get(&uuid) {
            Some(p) => Reply::json(p.clone()),
            None => Reply::error(404, "PROFILE_NOT_FOUND"),
        }
    }

    /// Assign `uuid` to these serials: SUCCESS or NOT_ACCESSIBLE each.
    fn assign_to(&mut self, uuid: &str, serials: &[String]) -> Map<String, Value> {
        let mut out = Map::new();
        for s in serials {
            let status = match self.devices.get_mut(s) {
                Some(d) => {
                    d.profile_status = Some("assigned".into());
                    d.profile_uuid = Some(uuid.to_owned());
                    d.profile_assign_time = Some(now_rfc3339());
                    d.profile_push_time = None;
                    self.record(s, "modified");
                    "SUCCESS"
                }
                None => "NOT_ACCESSIBLE",
            };
            out.insert(s.clone(), json!(status));
        }
        out
    }

    fn define(&mut self, m: &Map<String, Value>) -> Reply {
        let stored = match check_profile(m) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let uuid = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        self.profiles.insert(uuid.clone(), Value::Object(stored));
        let serials: Vec<String> = m
            .get("devices")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let devices = self.assign_to(&uuid, &serials);
        Reply::json(json!({ "profile_uuid": uuid, "devices": devices }))
    }

    fn assign(&mut self, m: &Map<String, Value>) -> Reply {
        let uuid = match m.get("profile_uuid") {
            None | Some(Value::Null) => return Reply::error(400, "PROFILE_UUID_REQUIRED"),
            Some(Value::String(u)) if u.is_empty() => return Reply::error(400, "PROFILE_UUID_REQUIRED"),
            Some(Value::String(u)) => u.clone(),
            Some(_) => return Reply::error(400, "MALFORMED_REQUEST_BODY"),
        };
        let serials = match serials(m) {
            Ok(s) => s,
            Err(r) => return r,
        };
        if !self.profiles.contains_key(&uuid) {
            return Reply::error(404, "PROFILE_NOT_FOUND");
        }
        let devices = self.assign_to(&uuid, &serials);
        Reply::json(json!({ "profile_uuid": uuid, "devices": devices }))
    }

    fn unassign(&mut self, m: &Map<String, Value>) -> Reply {
        let serials = match serials(m) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let mut out = Map::new();
        for s in serials {
            let status = match self.devices.get_mut(&s) {
                Some(d) => {
                    d.profile_status = Some("removed".into());
                    d.profile_uuid = None;
                    d.profile_assign_time = None;
                    d.profile_push_time = None;
                    self.record(&s, "modified");
                    "SUCCESS"
                }
                None => "NOT_ACCESSIBLE",
            };
            out.insert(s, json!(status));
        }
        Reply::json(json!({ "devices": out }))
    }

    fn activation(&mut self, method: &str, body: &[u8]) -> Reply {
        if method != "POST" {
            return Reply::error(405, "METHOD_NOT_ALLOWED");
        }
        let serial = match object(body) {
            Ok(m) => match m.get("serial_number").and_then(Value::as_str) {
                Some(s) => s.to_owned(),
                None => return Reply::error(400, "MALFORMED_REQUEST_BODY"),
            },
            Err(r) => return r,
        };
        match self.cloud_configuration(&serial) {
            Some(c) => Reply::json(c),
            None => Reply::error(404, "NOT_FOUND"),
        }
    }

    fn cloud_configuration(&mut self, serial: &str) -> Option<Value> {
        let d = self.devices.get(serial)?;
        if !matches!(d.profile_status.as_deref(), Some("assigned" | "pushed")) {
            return None;
        }
        let uuid = d.profile_uuid.clone()?;
        let p = self.profiles.get(&uuid)?.clone();
        let flag = |k: &str, default: bool| p.get(k).and_then(Value::as_bool).unwrap_or(default);
        let mut c = json!({
            "ConfigurationURL": p.get("url").cloned().unwrap_or(Value::Null),
            // iOS 13 and later supervise every ADE device: supervised unless the profile says otherwise.
            "IsSupervised": flag("is_supervised", true),
            "IsMandatory": flag("is_mandatory", false),
            "IsMDMUnremovable": !flag("is_mdm_removable", true),
            "AwaitDeviceConfigured": flag("await_device_configured", false),
            "AllowPairing": flag("allow_pairing", true),
            "IsMultiUser": flag("is_multi_user", false),
            "AutoAdvanceSetup": flag("auto_advance_setup", false),
            "SkipSetup": p.get("skip_setup_items").cloned().unwrap_or_else(|| json!([])),
            "OrganizationName": self.org_name,
            "AnchorCertificates": p.get("anchor_certs").cloned().unwrap_or_else(|| json!([])),
            "ProfileUUID": uuid,
        });
        for (from, to) in [
            ("department", "Department"),
            ("support_phone_number", "SupportPhoneNumber"),
            ("support_email_address", "SupportEmailAddress"),
            ("org_magic", "OrganizationMagic"),
            ("language", "Language"),
            ("region", "Region"),
            ("supervising_host_certs", "SupervisorHostCertificates"),
        ] {
            if let Some(v) = p.get(from) {
                c[to] = v.clone();
            }
        }
        if let Some(d) = self.devices.get_mut(serial) {
            d.profile_status = Some("pushed".into());
            d.profile_push_time = Some(now_rfc3339());
        }
        self.record(serial, "modified");
        Some(c)
    }
}

#[cfg(test)]
mod tests;
