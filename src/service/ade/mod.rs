//! Automated Device Enrollment (ADE): devices an organisation bought through
//! Apple Business Manager (ABM) enroll themselves during Setup Assistant,
//! supervised, and wait there until mdmd says they are configured.
//!
//! - `keys`: the key pair ABM encrypts server tokens to, and opening a token file.
//! - This file: server tokens (sealed records, one per ABM server), ADE
//!   profiles (defined at Apple, their UUID kept per server, a default one
//!   assigned automatically), the devices ABM says are ours, and health.
//! - `sync`: fetching and syncing devices with cursors (leased: one instance
//!   at a time), and assigning default profiles.
//! - `enroll`: the device's MachineInfo POST → its enrollment profile.
//! - `setup`: devices waiting in Setup Assistant, released with
//!   `DeviceConfigured` once their blueprint items are acknowledged (or by an
//!   admin, or after `--ade-await-timeout`).
//!
//! Records live in the shared `RecordStore` collections below, so several
//! instances see one state; every change is compare-and-set.

pub mod enroll;
pub mod keys;
pub mod setup;
mod profiles;
mod sync;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::ade::{AdeClient, AdeError, ServerToken};
use crate::clock::{now, rfc3339};
use crate::pki::secrets::SecretBox;
use crate::service::commands::Commander;
use crate::service::enroll::Enroller;
use crate::service::fleet::Fleet;
use crate::service::ServiceError;
use crate::store::{LookupKey, Store, StoreError};

pub use keys::{AdeKey, TokenFileError};
pub use setup::Waiting;
pub use sync::SyncReport;

/// Server tokens by name (`TokenRecord`).
pub const TOKENS: &str = "ade_tokens";
/// ADE profiles by name (`ProfileRecord`).
pub const PROFILES: &str = "ade_profiles";
/// Devices ABM assigned to us, by serial (`DeviceRecord`).
pub const DEVICES: &str = "ade_devices";
/// Enrollments waiting in Setup Assistant, by enrollment id (`Waiting`).
pub const WAITING: &str = "ade_waiting";

/// Where devices POST their MachineInfo (an ADE profile's default `url`).
pub const ENROLL_PATH: &str = "/mdm/ade/enroll";

/// Warn this long before a server token expires.
pub const EXPIRY_WARNING: i64 = 30 * 86_400;

/// The AAD a server token is sealed under.
fn token_aad(name: &str) -> String {
    format!("ade-token:{name}")
}

#[derive(Debug, Clone)]
pub struct AdeConfig {
    /// Apple's ADE API, or a stand-in (`--ade-url`).
    pub url: String,
    /// Where devices POST their MachineInfo (an ADE profile's default `url`).
    pub enroll_url: String,
    pub sync_interval: Duration,
    /// Serve an enrollment profile to serials no sync has seen (`--ade-allow-unknown`).
    pub allow_unknown: bool,
    /// Release a device waiting in Setup Assistant after this long (seconds), with a warning.
    pub await_timeout: i64,
    /// Devices per page asked of Apple (at most 1000).
    pub page_size: u32,
}

/// An ADE operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum AdeFailure {
    /// The request is wrong (400), nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Apple's service refused or failed (502), with Apple's reason.
    #[error("Apple's ADE service: {0}")]
    Apple(#[from] AdeError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for AdeFailure {
    fn from(e: StoreError) -> Self {
        AdeFailure::Service(e.into())
    }
}

impl From<TokenFileError> for AdeFailure {
    fn from(e: TokenFileError) -> Self {
        AdeFailure::Invalid(e.to_string())
    }
}

/// One ABM server's token and its sync state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The `ServerToken` JSON, sealed.
    pub sealed: String,
    pub expires_at: i64,
    pub uploaded_at: i64,
    /// The first characters of the consumer key (to tell tokens apart).
    pub consumer_key_hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
    /// Where the next sync resumes (none: the next run is a full fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<i64>,
}

/// An ADE profile: Apple's JSON, and its UUID at each ABM server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub profile: Json,
    /// Token name → the profile's UUID at that ABM server.
    #[serde(default)]
    pub uuids: BTreeMap<String, String>,
    /// Assigned automatically to new devices.
    #[serde(default)]
    pub default: bool,
    /// As the default, only for devices of these servers (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// As the default, only for devices this CEL rule matches (`device.serial`, `.model`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub updated_at: i64,
}

impl ProfileRecord {
    pub fn supervised(&self) -> bool {
        self.profile.get("is_supervised").and_then(Json::as_bool).unwrap_or(true)
    }
    pub fn await_configured(&self) -> bool {
        self.profile.get("await_device_configured").and_then(Json::as_bool).unwrap_or(false)
    }
}

/// A device ABM assigned to one of our servers, as the last sync saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceRecord {
    pub serial: String,
    /// The token (ABM server) it belongs to.
    pub server: String,
    /// `added`, `modified`, `deleted` (a sync's op), or `fetched` (a full fetch).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_assign_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_date: Option<String>,
    /// Our profile's name, when we assigned it (or recognise its UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What Apple answered when we last assigned a profile, if not SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_error: Option<String>,
    pub updated_at: i64,
}

pub struct Ade {
    pub(crate) store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    /// The key pair, or why the stored one does not open (ADE is then out of
    /// service, said in health; everything else serves on).
    key: Result<AdeKey, String>,
    pub cfg: AdeConfig,
    pub(crate) commander: Arc<Commander>,
    pub(crate) enroller: Arc<Enroller>,
    pub(crate) fleet: Arc<Fleet>,
    instance: String,
    http: reqwest::Client,
    /// Token name → (its record's `sealed`, a client holding its session).
    clients: Mutex<HashMap<String, (String, Arc<AdeClient>)>>,
    /// One sync at a time in this process (the lease covers the others).
    sync_lock: tokio::sync::Mutex<()>,
    /// Were there server tokens when this instance started? Only then does
    /// the periodic sync run at once; a token uploaded later is synced by the
    /// next period or `POST /v1/ade/sync`, never by a start-up run that the
    /// store happened to delay past the upload.
    tokens_at_start: bool,
}

impl Ade {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        cfg: AdeConfig,
        commander: Arc<Commander>,
        enroller: Arc<Enroller>,
        fleet: Arc<Fleet>,
        instance: &str,
        host: &str,
    ) -> Result<Arc<Ade>, ServiceError> {
        let key = AdeKey::load_or_create(store.as_ref(), &secrets, host).await.map_err(|e| {
            let why = crate::logfmt::chain(&e);
            tracing::error!(error = %why, "ADE: the key pair server tokens are encrypted to is not usable; ADE is out of service");
            why
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ServiceError::internal("building the ADE HTTP client", e))?;
        let tokens_at_start = !store.records(TOKENS).await?.is_empty();
        Ok(Arc::new(Ade {
            store,
            secrets,
            key,
            cfg,
            commander,
            enroller,
            fleet,
            instance: instance.to_owned(),
            http,
            clients: Mutex::new(HashMap::new()),
            sync_lock: tokio::sync::Mutex::new(()),
            tokens_at_start,
        }))
    }

    /// Sync periodically and watch devices waiting in Setup Assistant.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.sync_loop().await });
        let me = self.clone();
        tokio::spawn(async move { me.setup_loop().await });
    }

    /// The key pair server tokens are encrypted to.
    pub fn key(&self) -> Result<&AdeKey, ServiceError> {
        self.key
            .as_ref()
            .map_err(|why| ServiceError::internal("the ADE key pair", std::io::Error::other(why.clone())))
    }

    // ---- server tokens ----

    /// Store a server-token file ABM handed back (replacing a token of the same name).
    pub async fn put_token(&self, name: &str, file: &[u8]) -> Result<Json, AdeFailure> {
        if !crate::service::fleet::valid_name(name) {
            return Err(AdeFailure::Invalid(format!(
                "{name:?} is not a token name (letters, digits, '.', '-', '_'; at most 64)"
            )));
        }
        let token = self.key()?.open_token_file(file)?;
        let expires_at = token.expires_at().map_err(|e| AdeFailure::Invalid(e.to_string()))?;
        let plain = serde_json::to_vec(&token).map_err(StoreError::from)?;
        let sealed = self
            .secrets
            .seal(&plain, &token_aad(name))
            .map_err(|e| ServiceError::internal("sealing the server token", e))?;
        let old = self.token_record(name).await?;
        let same_server = old.as_ref().is_some_and(|(o, _)| o.consumer_key_hint == hint(&token.consumer_key));
        let rec = TokenRecord {
            sealed,
            expires_at,
            uploaded_at: now(),
            consumer_key_hint: hint(&token.consumer_key),
            // A renewed token of the same server keeps where its sync was.
            cursor: old.as_ref().filter(|_| same_server).and_then(|(o, _)| o.cursor.clone()),
            fetched_at: old.as_ref().filter(|_| same_server).and_then(|(o, _)| o.fetched_at),
            synced_at: old.as_ref().filter(|_| same_server).and_then(|(o, _)| o.synced_at),
            server_name: old.as_ref().filter(|_| same_server).and_then(|(o, _)| o.server_name.clone()),
            org_name: old.as_ref().filter(|_| same_server).and_then(|(o, _)| o.org_name.clone()),
            last_error: None,
            last_error_at: None,
        };
        let expect = old.as_ref().map_or(0, |(_, v)| *v);
        let v = serde_json::to_value(&rec).map_err(StoreError::from)?;
        if self.store.put_record(TOKENS, name, v, now(), Some(expect)).await?.is_none() {
            return Err(AdeFailure::Service(ServiceError::Busy(
                "the token changed at the same time: try again".into(),
            )));
        }
        tracing::info!(token = %name, expires = ?rfc3339(expires_at), "ADE server token stored");
        // Ask Apple who we are (best effort: a sync follows and reports problems).
        let account = match self.client(name).await {
            Ok(c) => match c.account().await {
                Ok(a) => {
                    self.note_account(name, &a).await;
                    Some(a)
                }
                Err(e) => {
                    tracing::warn!(token = %name, error = %e, "ADE account not read");
                    self.note_error(name, &e.to_string()).await;
                    None
                }
            },
            Err(e) => {
                tracing::warn!(token = %name, error = %e, "ADE client not built");
                None
            }
        };
        let mut view = self.token_view(name).await?.unwrap_or(Json::Null);
        if account.is_none() {
            view["warning"] = json!("Apple's ADE service did not answer /account with this token yet; see last_error after the next sync");
        }
        Ok(view)
    }

    async fn note_account(&self, name: &str, a: &Json) {
        let server = a.get("server_name").and_then(Json::as_str).map(str::to_owned);
        let org = a.get("org_name").and_then(Json::as_str).map(str::to_owned);
        let _ = self
            .update_token(name, |r| {
                r.server_name = server.clone();
                r.org_name = org.clone();
            })
            .await;
    }

    /// Record a sync or account failure on the token (shown in health).
    pub(crate) async fn note_error(&self, name: &str, error: &str) {
        let e: String = error.chars().take(500).collect();
        let _ = self
            .update_token(name, |r| {
                r.last_error = Some(e.clone());
                r.last_error_at = Some(now());
            })
            .await;
    }

    /// Change a token record with compare-and-set (a few tries).
    pub(crate) async fn update_token(&self, name: &str, f: impl Fn(&mut TokenRecord)) -> Result<bool, StoreError> {
        for _ in 0..5 {
            let Some((mut rec, v)) = self.token_record(name).await? else {
                return Ok(false);
            };
            f(&mut rec);
            let value = serde_json::to_value(&rec)?;
            if self.store.put_record(TOKENS, name, value, now(), Some(v)).await?.is_some() {
                return Ok(true);
            }
        }
        Err(StoreError::Db(format!("ADE token {name} kept changing")))
    }

    pub(crate) async fn token_record(&self, name: &str) -> Result<Option<(TokenRecord, u64)>, StoreError> {
        match self.store.record(TOKENS, name).await? {
            Some(r) => Ok(Some((serde_json::from_value(r.value)?, r.version))),
            None => Ok(None),
        }
    }

    /// The token (never shown), opened.
    fn open_token(&self, name: &str, rec: &TokenRecord) -> Result<ServerToken, ServiceError> {
        let plain = self
            .secrets
            .open(&rec.sealed, &token_aad(name))
            .map_err(|e| ServiceError::internal("opening the stored server token", e))?;
        serde_json::from_slice(&plain).map_err(|e| ServiceError::internal("the stored server token is corrupt", e))
    }

    /// A client for a token, kept while the token is the same (it holds the session).
    pub(crate) async fn client(&self, name: &str) -> Result<Arc<AdeClient>, AdeFailure> {
        let (rec, _) = self
            .token_record(name)
            .await?
            .ok_or_else(|| AdeFailure::NotFound(format!("no ADE server token {name}")))?;
        if let Ok(map) = self.clients.lock() {
            if let Some((sealed, c)) = map.get(name) {
                if *sealed == rec.sealed {
                    return Ok(c.clone());
                }
            }
        }
        let token = self.open_token(name, &rec)?;
        let c = Arc::new(AdeClient::new(&self.cfg.url, token, self.http.clone())?);
        if let Ok(mut map) = self.clients.lock() {
            map.insert(name.to_owned(), (rec.sealed.clone(), c.clone()));
        }
        Ok(c)
    }

    fn token_json(name: &str, r: &TokenRecord) -> Json {
        let t = now();
        json!({
            "name": name,
            "consumer_key": format!("{}…", r.consumer_key_hint),
            "expires_at": rfc3339(r.expires_at),
            "expired": r.expires_at <= t,
            "expires_soon": r.expires_at > t && r.expires_at - t < EXPIRY_WARNING,
            "uploaded_at": rfc3339(r.uploaded_at),
            "server_name": r.server_name,
            "org_name": r.org_name,
            "fetched_at": r.fetched_at.and_then(rfc3339),
            "synced_at": r.synced_at.and_then(rfc3339),
            "last_error": r.last_error,
            "last_error_at": r.last_error_at.and_then(rfc3339),
        })
    }

    pub async fn token_view(&self, name: &str) -> Result<Option<Json>, StoreError> {
        Ok(self.token_record(name).await?.map(|(r, _)| Self::token_json(name, &r)))
    }

    pub async fn tokens(&self) -> Result<Vec<Json>, StoreError> {
        let mut out = Vec::new();
        for (name, r) in self.store.records(TOKENS).await? {
            let rec: TokenRecord = serde_json::from_value(r.value)?;
            out.push(Self::token_json(&name, &rec));
        }
        Ok(out)
    }

    pub async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        if let Ok(mut m) = self.clients.lock() {
            m.remove(name);
        }
        self.store.delete_record(TOKENS, name, None).await
    }

    /// Warnings for `/v1/health` and the console: tokens expired or expiring
    /// within 30 days, and tokens whose last use failed.
    pub async fn problems(&self) -> Vec<String> {
        let Ok(all) = self.store.records(TOKENS).await else {
            return vec!["ADE: the server tokens could not be read".into()];
        };
        let t = now();
        let mut out = Vec::new();
        if let Err(why) = &self.key {
            out.push(format!(
                "ADE: the stored key pair does not open ({why}); server tokens cannot be read (same certs/secrets.keys on every instance?)"
            ));
        }
        for (name, r) in all {
            let Ok(rec) = serde_json::from_value::<TokenRecord>(r.value) else {
                continue;
            };
            out.extend(crate::outbound::expiry_problem(
                &format!("ADE server token {name}"),
                "download a new one from Apple Business Manager and upload it (mdmd ade upload-token)",
                rec.expires_at,
                t,
                EXPIRY_WARNING,
            ));
            if let Some(e) = &rec.last_error {
                out.push(format!("ADE server token {name}: {e}"));
            }
        }
        out
    }

    // ---- devices ----

    pub(crate) async fn device_record(&self, serial: &str) -> Result<Option<DeviceRecord>, StoreError> {
        match self.store.record(DEVICES, serial).await? {
            Some(r) => Ok(Some(serde_json::from_value(r.value)?)),
            None => Ok(None),
        }
    }

    async fn devices_with_profile(&self, server: &str, profile: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.records_after(DEVICES, after.clone(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (serial, r) in page {
                let d: DeviceRecord = serde_json::from_value(r.value)?;
                if d.server == server && d.profile.as_deref() == Some(profile) && d.op != "deleted" {
                    out.push(serial);
                }
            }
        }
        Ok(out)
    }

    /// Devices ABM assigned to us, by serial, with whether each has enrolled.
    pub async fn devices(&self, after: Option<String>, limit: usize, server: Option<&str>) -> Result<Json, StoreError> {
        let page = self.store.records_after(DEVICES, after, limit.clamp(1, 1000)).await?;
        let next = if page.len() >= limit.clamp(1, 1000) {
            page.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let mut out = Vec::new();
        for (serial, r) in page {
            let d: DeviceRecord = serde_json::from_value(r.value)?;
            if server.is_some_and(|s| s != d.server) {
                continue;
            }
            let enrollments = self.store.find(LookupKey::Serial, &serial).await?;
            let mut enrolled = None;
            for id in enrollments {
                if let Some(e) = self.store.enrollment(&id).await? {
                    enrolled = Some(json!({
                        "id": e.id,
                        "active": e.active && e.checked_out_at.is_none(),
                        "ade": e.ade.is_some(),
                        "supervised": e.supervised(),
                        "awaiting_configuration": e.awaiting_configuration,
                        "enrolled_at": rfc3339(e.enrolled_at),
                    }));
                    break;
                }
            }
            let mut v = serde_json::to_value(&d).unwrap_or(Json::Null);
            v["updated_at"] = json!(rfc3339(d.updated_at));
            v["enrolled"] = json!(enrolled.is_some());
            v["enrollment"] = enrolled.unwrap_or(Json::Null);
            out.push(v);
        }
        Ok(json!({"devices": out, "next": next}))
    }

    /// Assign one of our profiles to devices of one server now.
    pub async fn assign_now(&self, profile: &str, serials: Vec<String>) -> Result<Json, AdeFailure> {
        let (p, _) = self
            .profile_record(profile)
            .await?
            .ok_or_else(|| AdeFailure::NotFound(format!("no ADE profile {profile}")))?;
        let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in serials {
            let d = self
                .device_record(&s)
                .await?
                .filter(|d| d.op != "deleted")
                .ok_or_else(|| AdeFailure::Invalid(format!("{s} is not a device ABM assigned to this server")))?;
            by_server.entry(d.server).or_default().push(s);
        }
        let mut assigned = 0;
        for (server, serials) in by_server {
            let uuid = match p.uuids.get(&server) {
                Some(u) => u.clone(),
                None => self.define_at(profile, &server).await?,
            };
            assigned += self.assign(&server, profile, &uuid, serials).await?;
        }
        Ok(json!({"profile": profile, "assigned": assigned}))
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    match url.find("://") {
        Some(i) => match url[i + 3..].find('/') {
            Some(j) => &url[..i + 3 + j],
            None => url,
        },
        None => url,
    }
}

fn hint(consumer_key: &str) -> String {
    consumer_key.chars().take(10).collect()
}
