//! Events out: every check-in and every command result as JSON in the
//! MicroMDM/NanoMDM webhook format (`topic` `mdm.Authenticate`,
//! `mdm.TokenUpdate`, `mdm.CheckOut`, `mdm.Connect` …; `checkin_event` /
//! `acknowledge_event` with `udid`, `enrollment_id`, `status`,
//! `command_uuid`, `url_params`, `raw_payload` base64), so existing consumers
//! work unchanged, and mdmd's own events under `mdmd.*` topics with an
//! `mdmd_event` object.
//!
//! Delivery is at-least-once from the store's outbox: an event is written
//! with the state change it reports (command results, TokenUpdate) or before
//! the device hears back (other check-ins), one row per receiver. A worker
//! (one instance at a time, by lease) posts them oldest first with a bounded
//! timeout, signs the body with HMAC-SHA256 (`X-Hmac-Signature`, base64) when
//! a secret is set, names the event in `X-Mdmd-Event-Id` for deduplication,
//! retries with exponential backoff and jitter, and gives an event up after
//! `max_age`. Devices never wait for a receiver. Bodies are sealed in the
//! outbox with the secrets keyring (a TokenUpdate carries the UnlockToken)
//! and opened only to be posted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::store::{OutboxEvent, Store, StoreError};

/// How a sealed outbox body starts (`pki::secrets`' sealed form).
const SEALED: &str = "sealed:v1:";

fn event_aad(event_id: &str) -> String {
    format!("webhook/{event_id}")
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub secret: Option<String>,
    /// Give an event up this long after it happened (seconds).
    pub max_age: i64,
    /// Bound on one POST.
    pub timeout: Duration,
}

#[derive(Default)]
pub struct WebhookCounters {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub given_up: AtomicU64,
}

pub struct Webhooks {
    store: Arc<dyn Store>,
    cfg: WebhookConfig,
    /// Seals every event body in the outbox (a TokenUpdate's raw payload
    /// carries the UnlockToken); opened only to post it.
    sealer: Arc<SecretBox>,
    http: reqwest::Client,
    pub counters: WebhookCounters,
}

fn created_at_rfc3339(t: i64) -> String {
    crate::clock::rfc3339(t).unwrap_or_default()
}

/// HMAC-SHA256 of a body, base64 (the `X-Hmac-Signature` header).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut m = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    m.update(body);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// Why one delivery failed (kept as the event's `last_error`, retried later).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the stored event does not open: {0}")]
    Unsealed(#[source] crate::pki::PkiError),
    #[error("the stored event is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    /// The receiver could not be reached (the URL left out: it may hold a token).
    #[error("{0}")]
    Send(#[source] reqwest::Error),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
}

impl Webhooks {
    pub fn new(store: Arc<dyn Store>, cfg: WebhookConfig, sealer: Arc<SecretBox>) -> Result<Webhooks, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Webhooks {
            store,
            cfg,
            sealer,
            http,
            counters: WebhookCounters::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.cfg.urls.is_empty()
    }

    /// One outbox row per receiver for an event body.
    fn rows(&self, topic: &str, build: impl Fn(&str, &str) -> Value) -> Vec<OutboxEvent> {
        if self.cfg.urls.is_empty() {
            return Vec::new();
        }
        let id = uuid::Uuid::new_v4().to_string();
        let t = now();
        let plain = build(&id, &created_at_rfc3339(t)).to_string();
        let body = match self.sealer.seal(plain.as_bytes(), &event_aad(&id)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = %id, %topic, error = %e, "webhook event not stored: it cannot be sealed");
                return Vec::new();
            }
        };
        self.cfg
            .urls
            .iter()
            .map(|u| OutboxEvent {
                event_id: id.clone(),
                topic: topic.to_owned(),
                sink: u.clone(),
                body: body.clone(),
                created_at: t,
                attempts: 0,
                next_at: 0,
                last_error: None,
            })
            .collect()
    }

    /// A check-in (`mdm.<MessageType>`).
    pub fn checkin_event(&self, topic: &str, udid: Option<&str>, enrollment_id: Option<&str>, raw: &[u8]) -> Vec<OutboxEvent> {
        let raw = base64::engine::general_purpose::STANDARD.encode(raw);
        self.rows(topic, |id, at| {
            let mut ev = serde_json::Map::new();
            if let Some(u) = udid {
                ev.insert("udid".into(), json!(u));
            }
            if let Some(e) = enrollment_id {
                ev.insert("enrollment_id".into(), json!(e));
            }
            ev.insert("url_params".into(), Value::Null);
            ev.insert("raw_payload".into(), json!(raw));
            json!({"topic": topic, "event_id": id, "created_at": at, "checkin_event": ev})
        })
    }

    /// A command result (`mdm.Connect`).
    pub fn acknowledge_event(
        &self,
        udid: Option<&str>,
        enrollment_id: Option<&str>,
        status: &str,
        command_uuid: Option<&str>,
        raw: &[u8],
    ) -> Vec<OutboxEvent> {
        let raw = base64::engine::general_purpose::STANDARD.encode(raw);
        self.rows("mdm.Connect", |id, at| {
            let mut ev = serde_json::Map::new();
            if let Some(u) = udid {
                ev.insert("udid".into(), json!(u));
            }
            if let Some(e) = enrollment_id {
                ev.insert("enrollment_id".into(), json!(e));
            }
            ev.insert("status".into(), json!(status));
            if let Some(c) = command_uuid {
                ev.insert("command_uuid".into(), json!(c));
            }
            ev.insert("raw_payload".into(), json!(raw));
            json!({"topic": "mdm.Connect", "event_id": id, "created_at": at, "acknowledge_event": ev})
        })
    }

    /// mdmd's own events (`mdmd.ProfileInstalled` …).
    pub fn own_event(&self, topic: &str, detail: Value) -> Vec<OutboxEvent> {
        self.rows(
            topic,
            |id, at| json!({"topic": topic, "event_id": id, "created_at": at, "mdmd_event": detail}),
        )
    }

    /// Store events on their own (not tied to a state change).
    pub async fn emit(&self, events: Vec<OutboxEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.store.add_events(events).await
    }

    /// Post every due event once. Returns how many were delivered.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let mut delivered = 0;
        loop {
            let now_ms = now() * 1000;
            let due = self.store.due_events(now_ms, 64).await?;
            if due.is_empty() {
                return Ok(delivered);
            }
            let n = due.len();
            for entry in due {
                let mut ev = entry.event;
                if now() - ev.created_at > self.cfg.max_age {
                    tracing::warn!(event = %ev.event_id, topic = %ev.topic, sink = %ev.sink, attempts = ev.attempts, "webhook event given up (too old)");
                    self.counters.given_up.fetch_add(1, Relaxed);
                    self.store.remove_event(entry.seq).await?;
                    continue;
                }
                match self.post(&ev).await {
                    Ok(()) => {
                        self.counters.delivered.fetch_add(1, Relaxed);
                        self.store.remove_event(entry.seq).await?;
                        delivered += 1;
                    }
                    Err(why) => {
                        self.counters.failed_attempts.fetch_add(1, Relaxed);
                        ev.attempts += 1;
                        let base = 1000i64 << ev.attempts.min(10); // 2 s … ~17 min
                        let wait = base.min(600_000);
                        let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=wait / 4);
                        ev.next_at = now() * 1000 + wait + jitter;
                        tracing::debug!(event = %ev.event_id, sink = %ev.sink, attempts = ev.attempts, error = %why, "webhook delivery failed; will retry");
                        ev.last_error = Some(why.to_string());
                        self.store.retry_event(entry.seq, ev).await?;
                    }
                }
            }
            if n < 64 {
                return Ok(delivered);
            }
        }
    }

    /// The JSON to post: sealed bodies opened (rows from before sealing are plain).
    fn plain_body(&self, ev: &OutboxEvent) -> Result<String, DeliveryError> {
        if !ev.body.starts_with(SEALED) {
            return Ok(ev.body.clone());
        }
        let b = self
            .sealer
            .open(&ev.body, &event_aad(&ev.event_id))
            .map_err(DeliveryError::Unsealed)?;
        String::from_utf8(b).map_err(DeliveryError::NotUtf8)
    }

    async fn post(&self, ev: &OutboxEvent) -> Result<(), DeliveryError> {
        let body = self.plain_body(ev)?;
        let mut req = self
            .http
            .post(&ev.sink)
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header("X-Mdmd-Event-Id", &ev.event_id);
        if let Some(s) = &self.cfg.secret {
            req = req.header("X-Hmac-Signature", signature(s.as_bytes(), body.as_bytes()));
        }
        let req = req.body(body);
        let resp = req.send().await.map_err(|e| DeliveryError::Send(e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(resp.status()))
        }
    }

    /// Delivery state for `/v1/stats` and `/metrics`.
    pub async fn state(&self) -> Value {
        let s = self.store.outbox_stats().await.unwrap_or_default();
        crate::metrics::get().outbox_depth.set(s.depth as i64);
        json!({
            "receivers": self.cfg.urls.len(),
            "outbox_depth": s.depth,
            "oldest_waiting_seconds": s.oldest_created_at.map(|t| now() - t),
            "delivered": self.counters.delivered.load(Relaxed),
            "failed_attempts": self.counters.failed_attempts.load(Relaxed),
            "given_up": self.counters.given_up.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", "what do ya want for nothing?".
        let sig = signature(b"Jefe", b"what do ya want for nothing?");
        let hex = hex::encode(base64::engine::general_purpose::STANDARD.decode(sig).unwrap());
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
