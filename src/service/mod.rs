//! The rules of the protocol, over the store's role traits, grouped by
//! subject. No HTTP here: handlers call in with a parsed request (and plain
//! values, never headers) and get back what to answer.
//!
//! - `checkin/`: devices talking to us — check-in messages, the command loop
//!   (`connect`), inventory.
//! - `commands/`: what admins queue (`Commander`), the one fan-out path
//!   (`enqueue`), secrets sealed inside queued commands.
//! - `enroll/`: the enrollment profile and Apple's profile service (`ota`),
//!   SCEP issuance policy, invitations, renewal, the identity rule,
//!   conditional enrollment by network.
//! - `ddm`: declarative device management.
//! - `access/`: accounts and roles, credential limits, access tokens,
//!   compliance, NAC posture.
//! - `credentials/`: organisation CAs, derived credentials, what follows an
//!   install.
//!
//! `Mdm` (here) is the device-facing service: its state is this struct, built
//! whole by `server::run` (`with_*`, no setters after the fact); its methods
//! live with their subject (`checkin`, `checkin::connect`,
//! `checkin::inventory`, `commands::enqueue`, `access::nac`). Infrastructure the services
//! share lives below them: the clock (`crate::clock`), leases, the webhook
//! outbox and ACME (`crate::ops`), wake-ups (`crate::push`).

pub mod access;
pub mod ade;
pub mod apps;
pub mod checkin;
pub mod commands;
pub mod credentials;
pub mod ddm;
pub mod directory;
pub mod enroll;
pub mod fleet;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::clock::now;
use crate::ops::webhooks;
use crate::pki::secrets::SecretBox;
use crate::push::{Topic, Waker};
use crate::store::{Store, StoreError};

pub use checkin::CheckinReply;

/// Any error, kept as the cause of one of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a service call can fail with. Only `Rejected` and `Forbidden` blame
/// the caller (4xx); `Busy` asks it to try again; `Store` and `Internal` are
/// ours (5xx) and keep their cause for the log, never for the client.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The client's request is not acceptable (unknown enrollment, wrong topic…).
    #[error("{0}")]
    Rejected(String),
    /// The request names an identity other than the one that signed it.
    #[error("identity mismatch: {0}")]
    Forbidden(String),
    /// Too much at once, or state that kept changing: try again shortly.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Our own failure (sealing, signing with our keys, a corrupt stored
    /// value, a task that died): never the client's fault.
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: BoxError,
    },
}

impl ServiceError {
    /// An internal failure while doing `what`, keeping its cause.
    pub fn internal(what: &'static str, source: impl Into<BoxError>) -> Self {
        ServiceError::Internal {
            what,
            source: source.into(),
        }
    }
}

/// Told when a device's identity certificate changed (identity renewal):
/// whatever was encrypted to the old certificate and is still queued must be
/// built again for the new one.
///
/// Also told when a command finished with Acknowledged, to follow up on
/// what it did (an installed profile's certificates, for one).
#[async_trait::async_trait]
pub trait IdentityHook: Send + Sync {
    async fn identity_changed(&self, enrollment: &str);
    async fn command_finished(&self, _enrollment: &str, _request_type: &str, _raw: &[u8]) {}
}

/// Told what devices say about apps (command results) and when a device
/// leaves management (check-out, erase): the app catalog (`apps`) follows
/// its licences and states through this. Set once, after both exist.
#[async_trait::async_trait]
pub trait DeviceObserver: Send + Sync {
    async fn command_result(
        &self,
        enrollment: &str,
        request_type: &str,
        acknowledged: bool,
        command: &str,
        answer: &plist::Dictionary,
        error: Option<String>,
    );
    async fn device_left(&self, enrollment: &str);
}

/// The request types a `DeviceObserver` hears about.
pub const OBSERVED: &[&str] = &[
    "InstallApplication",
    "RemoveApplication",
    "ManagedApplicationList",
    "InstalledApplicationList",
    "EraseDevice",
];

pub struct Mdm {
    pub store: Arc<dyn Store>,
    /// The APNs topic devices must name (from the push certificate or configuration).
    pub topic: Arc<Topic>,
    waker: Arc<dyn Waker>,
    /// Seals UnlockToken and BootstrapToken before they are stored.
    pub secrets: Arc<SecretBox>,
    /// Refuse re-enrollment of an active device by another identity unless
    /// vouched for or approved (`--reenroll-policy strict`, the default).
    pub strict_reenroll: bool,
    /// Weak: the hook (the `Commander`) owns this `Mdm`; see `with_identity_hook`.
    identity_hook: Option<std::sync::Weak<dyn IdentityHook>>,
    /// Last-seen times, flushed to the store in the background (not worth an fsync per poll).
    seen: Mutex<HashMap<String, i64>>,
    /// The compliance policy (reloaded when its file changes).
    pub policy: Arc<access::compliance::PolicyFile>,
    /// Refresh inventory this often (seconds) and after enrollment; 0: never.
    pub inventory_interval: i64,
    /// Events out (when receivers are configured).
    webhooks: Option<Arc<webhooks::Webhooks>>,
    /// Declarative management.
    ddm: Option<Arc<ddm::Ddm>>,
    /// Devices whose facts changed, for the blueprint reconciler (`fleet`).
    pub nudges: Arc<fleet::Nudges>,
    /// The app catalog, told of app results and devices leaving (`set_observer`).
    observer: std::sync::OnceLock<std::sync::Weak<dyn DeviceObserver>>,
}

impl Mdm {
    pub fn new(store: Arc<dyn Store>, topic: Arc<Topic>, waker: Arc<dyn Waker>, secrets: Arc<SecretBox>) -> Self {
        Mdm {
            store,
            topic,
            waker,
            secrets,
            strict_reenroll: true,
            identity_hook: None,
            seen: Mutex::new(HashMap::new()),
            policy: Arc::new(access::compliance::PolicyFile::empty()),
            inventory_interval: 0,
            webhooks: None,
            ddm: None,
            nudges: Arc::new(fleet::Nudges::new()),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Who hears of app results and devices leaving (once; later calls are ignored).
    pub fn set_observer(&self, o: std::sync::Weak<dyn DeviceObserver>) {
        let _ = self.observer.set(o);
    }

    fn observer(&self) -> Option<Arc<dyn DeviceObserver>> {
        self.observer.get().and_then(std::sync::Weak::upgrade)
    }

    /// A finished command the observer cares about.
    pub(crate) async fn observe_result(
        &self,
        id: &str,
        request_type: &str,
        acknowledged: bool,
        command: &str,
        answer: &plist::Dictionary,
        error: Option<String>,
    ) {
        if !OBSERVED.contains(&request_type) {
            return;
        }
        if let Some(o) = self.observer() {
            o.command_result(id, request_type, acknowledged, command, answer, error).await;
        }
    }

    /// A device left management: the observer releases what it held, in the background.
    pub(crate) fn observe_left(&self, id: &str) {
        if let Some(o) = self.observer() {
            let id = id.to_owned();
            tokio::spawn(async move { o.device_left(&id).await });
        }
    }

    /// Send events to these webhooks (when any receiver is configured).
    pub fn with_webhooks(mut self, w: Arc<webhooks::Webhooks>) -> Self {
        self.webhooks = Some(w);
        self
    }

    /// The webhooks, when any receiver is configured.
    pub fn webhooks(&self) -> Option<&Arc<webhooks::Webhooks>> {
        self.webhooks.as_ref().filter(|w| w.enabled())
    }

    /// Compliance policy and inventory schedule.
    pub fn with_inventory(mut self, policy: Arc<access::compliance::PolicyFile>, interval: i64) -> Self {
        self.policy = policy;
        self.inventory_interval = interval;
        self
    }

    pub fn with_reenroll_policy(mut self, strict: bool) -> Self {
        self.strict_reenroll = strict;
        self
    }

    /// Declarative management. The `Ddm` queues through this `Mdm`, so it is
    /// built inside it: `Arc::new_cyclic(|me| Mdm::new(…).with_ddm(Ddm::new(…, me.clone())))`.
    pub fn with_ddm(mut self, d: Arc<ddm::Ddm>) -> Self {
        self.ddm = Some(d);
        self
    }

    pub fn ddm(&self) -> Option<&Arc<ddm::Ddm>> {
        self.ddm.as_ref()
    }

    /// What follows an identity change or a finished command. The hook (the
    /// `Commander`) owns this `Mdm`, so the two are built together:
    /// `Arc::new_cyclic(|hook| Commander::new(Arc::new(Mdm::new(…).with_identity_hook(hook.clone())), …))`
    /// (see `server::run`); the weak reference upgrades once both exist.
    pub fn with_identity_hook(mut self, hook: std::sync::Weak<dyn IdentityHook>) -> Self {
        self.identity_hook = Some(hook);
        self
    }

    /// Something a device's groups or blueprint state may read changed.
    pub fn fact_changed(&self, id: &str) {
        self.nudges.changed(id);
    }

    pub(crate) async fn command_finished(&self, id: &str, request_type: &str, raw: &[u8]) {
        if let Some(h) = self.identity_hook.as_ref().and_then(std::sync::Weak::upgrade) {
            h.command_finished(id, request_type, raw).await;
        }
    }

    pub(crate) async fn identity_changed(&self, id: &str) {
        if let Some(h) = self.identity_hook.as_ref().and_then(std::sync::Weak::upgrade) {
            h.identity_changed(id).await;
        }
    }

    fn mark_seen(&self, id: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(id.to_owned(), now());
        }
    }

    /// Write accumulated last-seen times to the store. Called periodically.
    pub async fn flush_seen(&self) -> Result<(), StoreError> {
        let batch: Vec<(String, i64)> = match self.seen.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.store.touch(batch).await
    }

    /// Reseal every stored token that is not sealed under the current key
    /// (after a rotation, and legacy plain records). Returns how many
    /// enrollments changed.
    pub async fn reseal_all(&self) -> Result<u64, ServiceError> {
        use crate::pki::secrets::aad;
        let mut after = None;
        let mut total = 0;
        loop {
            let page = self.store.enrollments(after.clone(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let mut updates = Vec::new();
            for e in &page {
                let redo = |v: &Option<String>, field: &str| -> Option<(String, String)> {
                    let old = v.as_ref().filter(|s| self.secrets.needs_reseal(s))?;
                    let plain = self.secrets.open(old, &aad(&e.id, field)).ok()?;
                    Some((old.clone(), self.secrets.seal(&plain, &aad(&e.id, field)).ok()?))
                };
                let u = crate::store::Reseal {
                    id: e.id.clone(),
                    unlock_token: redo(&e.unlock_token, "unlock"),
                    bootstrap_token: redo(&e.bootstrap_token, "bootstrap"),
                };
                if u.unlock_token.is_some() || u.bootstrap_token.is_some() {
                    updates.push(u);
                }
            }
            if !updates.is_empty() {
                total += self.store.reseal_tokens(updates).await?;
            }
        }
        Ok(total)
    }

    /// The device's UnlockToken, opened (for ClearPasscode).
    pub fn unlock_token(&self, e: &crate::store::Enrollment) -> Option<Vec<u8>> {
        let sealed = e.unlock_token.as_ref()?;
        match self.secrets.open(sealed, &crate::pki::secrets::aad(&e.id, "unlock")) {
            Ok(t) => Some(t),
            Err(err) => {
                tracing::error!(enrollment = %e.id, error = %err, "stored UnlockToken does not open");
                None
            }
        }
    }

    pub fn spawn_seen_flusher(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(m) = me.upgrade() else { break };
                if let Err(e) = m.flush_seen().await {
                    tracing::warn!(error = %e, "could not record last-seen times");
                }
            }
        });
    }
}
