//! APNs wake-ups. `cert` reads and keeps the organisation's push
//! certificate and makes the request for a new one; `client` speaks HTTP/2
//! to APNs; `Pusher` (the service's `Waker`) decides whom to push and when:
//! coalescing wake-ups per device, bounded retries with jittered backoff,
//! what each APNs answer means for the token, the certificate's health, and
//! a periodic re-push of devices that have work waiting. A push never
//! touches the command queue: a failed push drops nothing.
//!
//! A wake-up: `Mdm::wake` → the `Pusher` collects ids for
//! `--push-coalesce-ms` → per id (bounded in flight) the enrollment's token,
//! PushMagic and topic from the store (never before TokenUpdate; not to a
//! token APNs called dead until a newer TokenUpdate) → `ApnsClient` POSTs on
//! the shared HTTP/2 connection → the outcome is kept in memory (API) and
//! written to the enrollment in batches; the re-push sweep tries again later.

pub mod cert;
pub mod client;
pub mod wake;

pub use wake::{NoPush, Topic, Waker};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng as _;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};

use crate::clock::now;
use crate::store::{PushRecord, Store};
use cert::{PushCert, PushCertFiles};
use client::{ApnsClient, PushResult};

#[derive(Debug, Error)]
pub enum PushError {
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error(
        "the certificate's topic {to} differs from {from}, the topic enrolled devices use: {stranded} enrolled device(s) could no longer be woken and would have to re-enroll (renew the existing certificate in Apple's portal instead, or force)"
    )]
    TopicChange { from: String, to: String, stranded: u64 },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Wake-ups for the same device within this window become one push.
    pub coalesce: Duration,
    /// Attempts for retryable outcomes (429, 5xx, network), with exponential backoff and jitter.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    /// Pushes in flight at once.
    pub max_in_flight: usize,
    /// Re-push a device with pending commands not seen for this long (seconds; 0: never).
    pub repush_after: i64,
    /// How often to look for such devices.
    pub repush_every: Duration,
    /// This instance, as a lease holder (the re-push sweep runs on one instance).
    pub instance: String,
    /// How often to check the shared store for a push certificate set on another instance.
    pub cert_refresh: Duration,
}

/// The latest push to an enrollment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PushStatus {
    pub at: i64,
    pub outcome: String,
    /// The push reached APNs and was accepted.
    pub accepted: bool,
    /// APNs said the token is dead: no pushes to it until a newer TokenUpdate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub token_disabled: bool,
}

/// Counters for `/v1/stats` and load tests.
#[derive(Debug, Default, Serialize, Clone)]
pub struct PushCounters {
    pub requested: u64,
    pub accepted: u64,
    pub retried: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// The setting that carries the push certificate and key (sealed) to every instance.
const CERT_SETTING: &str = "push-cert";

pub struct Pusher {
    pub client: ApnsClient,
    store: Arc<dyn Store>,
    secrets: Arc<crate::pki::secrets::SecretBox>,
    /// Version of the shared certificate setting in use (0: none).
    cert_version: std::sync::atomic::AtomicU64,
    topic: Arc<Topic>,
    files: PushCertFiles,
    cfg: PushConfig,
    pending: Mutex<HashSet<String>>,
    in_flight: Mutex<HashSet<String>>,
    notify: Notify,
    sem: Arc<Semaphore>,
    latest: Mutex<HashMap<String, PushStatus>>,
    unflushed: Mutex<Vec<PushRecord>>,
    /// token -> when APNs said it is dead (pushes resume after a newer TokenUpdate).
    dead: Mutex<HashMap<String, i64>>,
    /// A 403 from APNs: surfaced on health, no pushes until a certificate is set.
    cert_error: Mutex<Option<(i64, String)>>,
    counters: Mutex<PushCounters>,
    /// `mdmd.PushFailed` events (when receivers are configured).
    webhooks: Option<Arc<crate::ops::webhooks::Webhooks>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pusher {
    pub fn new(
        client: ApnsClient,
        store: Arc<dyn Store>,
        secrets: Arc<crate::pki::secrets::SecretBox>,
        topic: Arc<Topic>,
        files: PushCertFiles,
        cfg: PushConfig,
        webhooks: Option<Arc<crate::ops::webhooks::Webhooks>>,
    ) -> Arc<Pusher> {
        Arc::new(Pusher {
            client,
            store,
            secrets,
            cert_version: std::sync::atomic::AtomicU64::new(0),
            topic,
            files,
            sem: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            cfg,
            pending: Mutex::new(HashSet::new()),
            in_flight: Mutex::new(HashSet::new()),
            notify: Notify::new(),
            latest: Mutex::new(HashMap::new()),
            unflushed: Mutex::new(Vec::new()),
            dead: Mutex::new(HashMap::new()),
            cert_error: Mutex::new(None),
            counters: Mutex::new(PushCounters::default()),
            webhooks: webhooks.filter(|w| w.enabled()),
        })
    }

    /// Load the certificate (the shared one in the store, else the files, which
    /// are then shared) and start the background tasks. Returns its topic.
    pub async fn start(self: &Arc<Self>) -> Result<Option<String>, PushError> {
        let pc = match self.shared_cert().await? {
            Some((pc, version)) => {
                self.cert_version.store(version, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = self.files.save(&pc) {
                    tracing::warn!(error = %e, "cannot write the shared push certificate to the certs dir");
                }
                Some(pc)
            }
            None => match self.files.load()? {
                Some(pc) => {
                    self.share(&pc).await?;
                    Some(pc)
                }
                None => None,
            },
        };
        let topic = pc.map(|pc| {
            let t = pc.topic.clone();
            self.client.set_identity(pc);
            t
        });
        self.check_expiry();
        let me = self.clone();
        tokio::spawn(async move { me.dispatch_loop().await });
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(p) = me.upgrade() else { break };
                p.flush().await;
            }
        });
        let me = Arc::downgrade(self);
        let every = self.cfg.cert_refresh.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(p) = me.upgrade() else { break };
                p.refresh_cert().await;
            }
        });
        let me = Arc::downgrade(self);
        let every = self.cfg.repush_every.max(Duration::from_secs(1));
        let lease = crate::ops::lease::Lease::new(self.store.clone(), "repush-sweep", &self.cfg.instance, every * 3);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(p) = me.upgrade() else { break };
                p.check_expiry();
                if !lease.held().await {
                    continue;
                }
                if let Err(e) = p.repush_sweep().await {
                    tracing::warn!(error = %e, "re-push sweep failed");
                }
            }
        });
        Ok(topic)
    }

    /// The certificate in the shared store, with its version.
    async fn shared_cert(&self) -> Result<Option<(PushCert, u64)>, PushError> {
        let Some(s) = self.store.setting(CERT_SETTING).await? else {
            return Ok(None);
        };
        let sealed = String::from_utf8(s.value).map_err(|_| PushError::Certificate("stored push certificate is corrupt".into()))?;
        let pem = self.secrets.open(&sealed, CERT_SETTING).map_err(|e| {
            PushError::Certificate(format!(
                "cannot open the stored push certificate (same certs/secrets.keys on every instance?): {e}"
            ))
        })?;
        Ok(Some((PushCert::from_pem(&pem, None)?, s.version)))
    }

    /// Put the certificate and key (sealed) where every instance finds it.
    async fn share(&self, pc: &PushCert) -> Result<(), PushError> {
        let mut pem = pc.cert_pem()?;
        pem.extend_from_slice(
            &pc.key
                .private_key_to_pem_pkcs8()
                .map_err(|e| PushError::Certificate(e.to_string()))?,
        );
        let sealed = self
            .secrets
            .seal(&pem, CERT_SETTING)
            .map_err(|e| PushError::Certificate(e.to_string()))?;
        let v = self.store.put_setting(CERT_SETTING, sealed.into_bytes(), now()).await?;
        self.cert_version.store(v, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Take up a certificate another instance set.
    async fn refresh_cert(&self) {
        let known = self.cert_version.load(std::sync::atomic::Ordering::Relaxed);
        match self.store.setting(CERT_SETTING).await {
            Ok(Some(s)) if s.version != known => {}
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cannot check for a new push certificate");
                return;
            }
        }
        match self.shared_cert().await {
            Ok(Some((pc, version))) => {
                let topic = pc.topic.clone();
                tracing::info!(%topic, not_after = pc.not_after, "push certificate changed (set on another instance)");
                if let Err(e) = self.files.save(&pc) {
                    tracing::warn!(error = %e, "cannot write the push certificate to the certs dir");
                }
                self.client.set_identity(pc);
                self.topic.set(topic);
                *lock(&self.cert_error) = None;
                self.cert_version.store(version, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot load the shared push certificate"),
        }
    }

    pub fn configured(&self) -> bool {
        self.client.identity().is_some()
    }

    pub fn counters(&self) -> PushCounters {
        lock(&self.counters).clone()
    }

    pub fn latest(&self, id: &str) -> Option<PushStatus> {
        lock(&self.latest).get(id).cloned()
    }

    /// Set (or replace) the push certificate. A different topic than enrolled
    /// devices use is refused unless `force`. Takes effect for the next push.
    pub async fn set_certificate(&self, pc: PushCert, force: bool) -> Result<(String, u64), PushError> {
        let current = self.topic.get();
        let mut stranded = 0;
        if pc.topic != current {
            let mut after = None;
            loop {
                let page = self.store.enrollments(after.clone(), 1000).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                stranded += page.iter().filter(|e| e.checked_out_at.is_none() && e.topic != pc.topic).count() as u64;
            }
            if stranded > 0 && !force {
                return Err(PushError::TopicChange {
                    from: current,
                    to: pc.topic,
                    stranded,
                });
            }
        }
        self.files.save(&pc)?;
        self.share(&pc).await?;
        let topic = pc.topic.clone();
        tracing::info!(%topic, not_after = pc.not_after, stranded, "push certificate set");
        self.client.set_identity(pc);
        self.topic.set(topic.clone());
        *lock(&self.cert_error) = None;
        Ok((topic, stranded))
    }

    /// What the health endpoint and `GET /v1/push-cert` show.
    pub fn health(&self) -> serde_json::Value {
        let cert_error = lock(&self.cert_error).clone();
        match self.client.identity() {
            None => serde_json::json!({
                "configured": false,
                "topic": self.topic.get(),
                "warning": "no push certificate: enrolled devices cannot be woken, and devices enrolled now use a placeholder topic and will have to re-enroll once a certificate is set",
            }),
            Some(pc) => {
                let days = (pc.not_after - now()) / 86_400;
                let mut warnings = Vec::new();
                if days < 30 {
                    warnings.push(format!(
                        "the push certificate expires in {days} day(s): renew it in Apple's portal (same topic)"
                    ));
                }
                if let Some((at, reason)) = &cert_error {
                    warnings.push(format!(
                        "APNs refused the certificate ({reason}) at {at}: pushes stopped until a certificate is set"
                    ));
                }
                serde_json::json!({
                    "configured": true,
                    "topic": pc.topic,
                    "subject": pc.subject(),
                    "serial": pc.serial_hex(),
                    "not_after": crate::clock::json_time(pc.not_after),
                    "days_left": days,
                    "expiring_soon": days < 30,
                    "certificate_error": cert_error.map(|(_, r)| r),
                    "warnings": warnings,
                })
            }
        }
    }

    fn check_expiry(&self) {
        if let Some(pc) = self.client.identity() {
            let days = (pc.not_after - now()) / 86_400;
            if days < 30 {
                tracing::warn!(topic = %pc.topic, days_left = days, "the push certificate expires soon: renew it in Apple's portal (same topic)");
            }
        }
    }

    async fn dispatch_loop(self: Arc<Self>) {
        loop {
            self.notify.notified().await;
            tokio::time::sleep(self.cfg.coalesce).await;
            let ids: Vec<String> = lock(&self.pending).drain().collect();
            for id in ids {
                if !lock(&self.in_flight).insert(id.clone()) {
                    continue; // a push to it is under way: that one wakes it
                }
                let me = self.clone();
                let permit = match self.sem.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                tokio::spawn(async move {
                    me.push_one(&id).await;
                    lock(&me.in_flight).remove(&id);
                    drop(permit);
                });
            }
        }
    }

    /// Push to each target now and report what happened (bounded concurrency).
    pub async fn push_now(self: &Arc<Self>, ids: Vec<String>) -> Vec<(String, PushStatus)> {
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            let me = self.clone();
            let sem = self.sem.clone();
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire_owned().await;
                let s = me.push_one(&id).await;
                (id, s)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    }

    fn count(&self, f: impl FnOnce(&mut PushCounters)) {
        f(&mut lock(&self.counters));
    }

    /// One enrollment: look up its token, push with retries, record the outcome.
    pub async fn push_one(&self, id: &str) -> PushStatus {
        self.count(|c| c.requested += 1);
        let skip = |why: &str| {
            self.count(|c| c.skipped += 1);
            PushStatus {
                at: now(),
                outcome: format!("not pushed: {why}"),
                accepted: false,
                token_disabled: false,
            }
        };
        if !self.configured() {
            return skip("no push certificate");
        }
        if let Some((_, reason)) = lock(&self.cert_error).clone() {
            return skip(&format!("APNs refused the certificate ({reason})"));
        }
        let e = match self.store.enrollment(id).await {
            Ok(Some(e)) => e,
            Ok(None) => return skip("unknown enrollment"),
            Err(err) => return skip(&format!("storage: {err}")),
        };
        if e.checked_out_at.is_some() || !e.active {
            return skip("enrollment not active");
        }
        let Some(p) = e.push else {
            return skip("no TokenUpdate yet");
        };
        if let Some(d) = &p.disabled {
            return skip(&format!("token disabled ({d}) until a newer TokenUpdate"));
        }
        if lock(&self.dead).get(&p.token).is_some_and(|at| *at >= p.updated_at) {
            return skip("token disabled until a newer TokenUpdate");
        }
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let r = self.client.push(&p.token, &p.push_magic, &p.topic).await;
            match r {
                PushResult::Retry { ref reason } if attempt < self.cfg.max_attempts => {
                    self.count(|c| c.retried += 1);
                    let cap = self.cfg.backoff_base.as_millis() as u64 * (1u64 << (attempt - 1).min(10));
                    // Full jitter: spread retries so a burst of failures does not come back as one.
                    let wait = rand::thread_rng().gen_range(cap / 2..=cap.max(1));
                    tracing::debug!(enrollment = %id, %reason, attempt, wait_ms = wait, "push will be retried");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                other => break other,
            }
        };
        let at = now();
        let accepted = matches!(result, PushResult::Accepted { .. });
        let disable = matches!(result, PushResult::Unregistered { .. } | PushResult::BadToken { .. });
        crate::metrics::get().push(match &result {
            PushResult::Accepted { .. } => "accepted",
            PushResult::Unregistered { .. } => "unregistered",
            PushResult::BadToken { .. } => "bad_token",
            PushResult::Certificate { .. } => "certificate",
            PushResult::Retry { .. } => "gave_up",
            PushResult::Failed { .. } => "failed",
        });
        match &result {
            PushResult::Accepted { .. } => self.count(|c| c.accepted += 1),
            PushResult::Certificate { reason } => {
                self.count(|c| c.failed += 1);
                tracing::error!(%reason, "APNs refused the push certificate: pushes stop until a certificate is set");
                *lock(&self.cert_error) = Some((at, reason.clone()));
            }
            other => {
                self.count(|c| c.failed += 1);
                tracing::warn!(enrollment = %id, outcome = %other.label(), attempts = attempt, "push not accepted");
            }
        }
        if !accepted {
            if let Some(w) = self.webhooks.as_ref() {
                let ev = w.own_event(
                    "mdmd.PushFailed",
                    serde_json::json!({"enrollment": id, "outcome": result.label(), "attempts": attempt, "token_disabled": disable}),
                );
                if let Err(e) = w.emit(ev).await {
                    tracing::warn!(enrollment = %id, error = %e, "push event not stored");
                }
            }
        }
        if disable {
            lock(&self.dead).insert(p.token.clone(), at);
        }
        let status = PushStatus {
            at,
            outcome: result.label(),
            accepted,
            token_disabled: disable,
        };
        lock(&self.latest).insert(id.to_owned(), status.clone());
        lock(&self.unflushed).push(PushRecord {
            id: id.to_owned(),
            token: p.token,
            at,
            outcome: status.outcome.clone(),
            disable,
        });
        status
    }

    /// Write recorded outcomes to the store (batched; not acknowledged state).
    pub async fn flush(&self) {
        let batch: Vec<PushRecord> = std::mem::take(&mut *lock(&self.unflushed));
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_pushes(batch).await {
            tracing::warn!(error = %e, "could not record push outcomes");
        }
    }

    /// Push every active device that has commands waiting and has not been
    /// seen for `repush_after` seconds.
    pub async fn repush_sweep(&self) -> Result<usize, PushError> {
        if self.cfg.repush_after <= 0 || !self.configured() {
            return Ok(0);
        }
        let horizon = now() - self.cfg.repush_after;
        let mut after = None;
        let mut due = Vec::new();
        loop {
            let page = self.store.enrollments(after.clone(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for e in page {
                if e.active
                    && e.checked_out_at.is_none()
                    && e.push.as_ref().is_some_and(|p| p.disabled.is_none())
                    && e.last_seen_at < horizon
                {
                    if self.store.next_command(&e.id, false).await?.is_some() {
                        due.push(e.id);
                    }
                }
            }
        }
        let n = due.len();
        if n > 0 {
            tracing::info!(count = n, "re-pushing devices with commands waiting");
            self.wake(due);
        }
        Ok(n)
    }
}

impl Waker for Pusher {
    fn token_updated(&self, token_hex: &str) {
        // Second-resolution times cannot order a TokenUpdate after a 410 in the same second.
        lock(&self.dead).remove(token_hex);
    }

    fn wake(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        if !self.configured() {
            tracing::debug!(count = ids.len(), "no push certificate configured: devices are not woken");
            return;
        }
        lock(&self.pending).extend(ids);
        self.notify.notify_one();
    }
}
