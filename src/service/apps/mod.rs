//! Apps: the organisation's catalog of App Store apps (installed without an
//! Apple Account, on a licence from Apple's Apps and Books) and in-house
//! apps (an `.ipa` mdmd keeps and serves), and every app's life on every
//! device.
//!
//! - `tokens`: Apps and Books content tokens (sealed records, one per
//!   location), their clients, licence counts, expiry warnings.
//! - `catalog`: the apps (`AppRecord`, keyed by bundle identifier): an App
//!   Store app by its Adam id (name, bundle id and version from Apple's
//!   content metadata lookup), an in-house `.ipa` (its Info.plist read,
//!   stored in chunks), their default managed configuration and flags.
//! - `files`: the stored `.ipa` chunks, and the unguessable, expiring,
//!   per-device download URLs (HMAC under a sealed key shared by every
//!   instance) through which a device fetches the manifest and the app.
//! - `install`: installing (a licence associated with the device's serial
//!   number first, refused before anything is sent when the licences would
//!   not suffice) and removing (licence released), each device's app state
//!   learned from command results and app lists, devices that leave
//!   (check-out, erase).
//! - `results`: each device's app state from what it answers.
//! - `sync`: the leased licence reconciliation and refresh.
//!
//! Records live in `RecordStore` collections (below), so several instances
//! share one state; changes are compare-and-set. Licences are recorded
//! before Apple is asked (state `associating`), so a crash leaves a record
//! the reconciliation finishes or undoes.

pub mod catalog;
pub mod files;
pub mod install;
mod results;
mod sync;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::service::commands::Commander;
use crate::service::ServiceError;
use crate::store::{Store, StoreError};
use crate::vpp::{VppClient, VppError};

pub use catalog::{AppKind, AppRecord};
pub use install::{DeviceApp, InstallReport, RemoveReport};

/// Content tokens by name (`tokens::TokenRecord`).
pub const TOKENS: &str = "vpp_tokens";
/// The catalog, by bundle identifier (`AppRecord`).
pub const APPS: &str = "apps";
/// Each device's state of each app: `{app}/{enrollment}` (`DeviceApp`).
pub const DEVICE_APPS: &str = "app_devices";
/// Licences mdmd associated: `{token}/{adam id}/{serial}` (`install::Licence`).
pub const LICENCES: &str = "app_licences";
/// Stored `.ipa` chunks: `{sha256}/{index:06}`.
pub const BLOBS: &str = "app_blobs";

/// Warn this long before a content token expires.
pub const EXPIRY_WARNING: i64 = 30 * 86_400;

#[derive(Debug, Clone)]
pub struct AppsConfig {
    /// Apple's Apps and Books service, or a stand-in (`--apps-and-books-url`).
    pub url: String,
    /// This server's public URL (download URLs are built on it).
    pub public_url: String,
    /// How long a download URL sent to a device works (seconds).
    pub download_lifetime: i64,
    /// The largest `.ipa` taken (bytes).
    pub max_ipa: u64,
    /// Licence counts refreshed and licences reconciled this often.
    pub sync_interval: Duration,
    /// How long to wait for Apple's associate/disassociate events.
    pub event_timeout: Duration,
}

/// An apps operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum AppsFailure {
    /// The request is wrong (400), nothing changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done in the present state (409), nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// Apple's service refused or failed (502), with Apple's reason.
    #[error("Apple's Apps and Books service: {0}")]
    Apple(#[from] VppError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for AppsFailure {
    fn from(e: StoreError) -> Self {
        AppsFailure::Service(e.into())
    }
}

pub struct Apps {
    pub(crate) store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    pub cfg: AppsConfig,
    pub(crate) commander: Arc<Commander>,
    instance: String,
    http: reqwest::Client,
    /// Token name → (its record's `sealed`, its client).
    clients: Mutex<HashMap<String, (String, Arc<VppClient>)>>,
    /// The key download URLs are signed with (shared by every instance), or
    /// why the stored one does not open (in-house links are then out of
    /// service, said in health; everything else serves on).
    url_key: Result<Vec<u8>, String>,
    /// One licence reconciliation at a time in this process.
    sync_lock: tokio::sync::Mutex<()>,
    /// Told when the catalog changes (the fleet reconciles blueprints naming apps).
    changed: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Apps {
    pub async fn new(
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        cfg: AppsConfig,
        commander: Arc<Commander>,
        instance: &str,
    ) -> Result<Arc<Apps>, ServiceError> {
        crate::outbound::service_url(&cfg.url).map_err(|e| ServiceError::Rejected(format!("--apps-and-books-url {e}")))?;
        let url_key = files::load_or_create_key(store.as_ref(), &secrets).await.map_err(|e| {
            let why = crate::logfmt::chain(&e);
            tracing::error!(error = %why, "apps: the key in-house app links are signed with is not usable; in-house installs are out of service");
            why
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ServiceError::internal("building the Apps and Books HTTP client", e))?;
        Ok(Arc::new(Apps {
            store,
            secrets,
            cfg,
            commander,
            instance: instance.to_owned(),
            http,
            clients: Mutex::new(HashMap::new()),
            url_key,
            sync_lock: tokio::sync::Mutex::new(()),
            changed: std::sync::OnceLock::new(),
        }))
    }

    /// Who to tell when the catalog changes (once).
    pub fn on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.changed.set(f);
    }

    pub(crate) fn fleet_changed(&self) {
        if let Some(f) = self.changed.get() {
            f();
        }
    }

    /// Reconcile licences and refresh counts periodically (one instance at a time).
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        crate::ops::lease::spawn_leased(
            self.store.clone(),
            "apps-licences",
            &self.instance,
            self.cfg.sync_interval,
            false,
            move || {
                let me = me.clone();
                async move {
                    let r = me.sync().await;
                    for e in &r.errors {
                        tracing::warn!(error = %e, "Apps and Books sync");
                    }
                }
            },
        );
        let me = self.clone();
        crate::ops::lease::spawn_leased(
            self.store.clone(),
            "apps-states",
            &self.instance,
            Duration::from_secs(300),
            true,
            move || {
                let me = me.clone();
                async move {
                    if let Err(e) = me.poll_states().await {
                        tracing::warn!(error = %e, "app states not polled");
                    }
                }
            },
        );
    }

    /// Warnings for `/v1/health` and the console.
    pub async fn problems(&self) -> Vec<String> {
        let mut out = self.token_problems().await;
        if let Err(why) = &self.url_key {
            out.push(format!(
                "Apps: the stored key in-house app links are signed with does not open ({why}); in-house apps cannot be installed (same certs/secrets.keys on every instance?)"
            ));
        }
        out
    }
}

/// A record and its version.
pub(crate) async fn read<T: DeserializeOwned>(store: &dyn Store, collection: &str, key: &str) -> Result<Option<(T, u64)>, StoreError> {
    match store.record(collection, key).await? {
        Some(r) => Ok(Some((serde_json::from_value(r.value)?, r.version))),
        None => Ok(None),
    }
}

/// Change a record with compare-and-set (a few tries); false if it is absent.
pub(crate) async fn update<T: DeserializeOwned + Serialize>(
    store: &dyn Store,
    collection: &str,
    key: &str,
    f: impl Fn(&mut T),
) -> Result<bool, StoreError> {
    for _ in 0..8 {
        let Some((mut rec, v)) = read::<T>(store, collection, key).await? else {
            return Ok(false);
        };
        f(&mut rec);
        let value = serde_json::to_value(&rec)?;
        if store.put_record(collection, key, value, now(), Some(v)).await?.is_some() {
            return Ok(true);
        }
    }
    Err(StoreError::Db(format!("{collection} {key} kept changing")))
}

/// Every record of a collection whose key starts with `prefix`, in key order.
pub(crate) async fn with_prefix<T: DeserializeOwned>(
    store: &dyn Store,
    collection: &str,
    prefix: &str,
) -> Result<Vec<(String, T, u64)>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = if prefix.is_empty() { None } else { Some(prefix.to_owned()) };
    // Keys sort after the prefix itself; the first record may equal it exactly.
    if let Some(r) = store.record(collection, prefix).await? {
        if !prefix.is_empty() {
            out.push((prefix.to_owned(), serde_json::from_value(r.value)?, r.version));
        }
    }
    loop {
        let page = store.records_after(collection, after.clone(), 500).await?;
        let n = page.len();
        for (k, r) in page {
            if !k.starts_with(prefix) {
                return Ok(out);
            }
            after = Some(k.clone());
            match serde_json::from_value(r.value) {
                Ok(v) => out.push((k, v, r.version)),
                Err(e) => tracing::warn!(collection, key = %k, error = %e, "unreadable record skipped"),
            }
        }
        if n < 500 {
            return Ok(out);
        }
    }
}

/// A bundle identifier: reverse-DNS letters, digits, '.', '-' (Apple's rule), at most 155.
pub fn valid_bundle_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 155
        && !s.starts_with('.')
        && !s.ends_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// JSON for a value that serialises (never fails for our records).
pub(crate) fn to_json<T: Serialize>(v: &T) -> Json {
    serde_json::to_value(v).unwrap_or(Json::Null)
}

#[async_trait::async_trait]
impl crate::service::DeviceObserver for Apps {
    async fn command_result(
        &self,
        enrollment: &str,
        request_type: &str,
        acknowledged: bool,
        command: &str,
        answer: &plist::Dictionary,
        error: Option<String>,
    ) {
        Apps::command_result(self, enrollment, request_type, acknowledged, command, answer, error).await;
    }

    async fn device_left(&self, enrollment: &str) {
        if let Err(e) = Apps::device_left(self, enrollment).await {
            tracing::warn!(%enrollment, error = %e, "licences of a device that left not released; the sync will try again");
        }
    }
}
