//! Devices waiting in Setup Assistant. An ADE profile with
//! `await_device_configured` keeps the device there after it enrolls; it
//! says so with `AwaitingConfiguration` in its TokenUpdate, and the check-in
//! service records it here (`note_awaiting`). mdmd sends `DeviceConfigured`
//! when the device's blueprint items are all acknowledged (installed or
//! failed: the reconciler has run for this enrollment and nothing is
//! pending), when an admin releases it, or after `--ade-await-timeout` (with
//! a warning) — never leaving a device in Setup Assistant for ever. One
//! instance watches at a time (lease `ade-setup`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::{Ade, AdeFailure, WAITING};
use crate::clock::{now, rfc3339};
use crate::ops::lease::Lease;
use crate::service::commands::CommandInput;
use crate::store::{DeliveryStatus, Store, StoreError};

/// How often waiting devices are looked at.
const POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// Released devices stay listed this long (seconds).
const KEEP_RELEASED: i64 = 86_400;

/// One enrollment in Setup Assistant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Waiting {
    /// When its TokenUpdate said it is waiting.
    pub since: i64,
    /// The enrollment's `enrolled_at`: a later enrollment of the device starts over.
    pub epoch: i64,
    /// `waiting`, `releasing` (DeviceConfigured queued), `released`, `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Why it was (or is being) released: `configured`, `admin`, `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Called by the check-in service on a TokenUpdate with `AwaitingConfiguration`:
/// remember the device (once per enrollment).
pub async fn note_awaiting(store: &dyn Store, id: &str, enrolled_at: i64) -> Result<(), StoreError> {
    if let Some(r) = store.record(WAITING, id).await? {
        let w: Waiting = serde_json::from_value(r.value)?;
        if w.epoch == enrolled_at {
            return Ok(());
        }
        let fresh = fresh(enrolled_at);
        store
            .put_record(WAITING, id, serde_json::to_value(&fresh)?, now(), Some(r.version))
            .await?;
        return Ok(());
    }
    store
        .put_record(WAITING, id, serde_json::to_value(fresh(enrolled_at))?, now(), Some(0))
        .await?;
    Ok(())
}

fn fresh(epoch: i64) -> Waiting {
    Waiting {
        since: now(),
        epoch,
        state: "waiting".into(),
        command: None,
        reason: None,
        released_at: None,
        warning: None,
    }
}

impl Ade {
    pub(super) async fn setup_loop(self: &Arc<Self>) {
        let lease = Lease::new(self.store.clone(), "ade-setup", &self.instance, std::time::Duration::from_secs(10));
        loop {
            if lease.held().await {
                if let Err(e) = self.setup_pass().await {
                    tracing::warn!(error = %e, "looking at devices in Setup Assistant failed");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One look at every waiting device.
    pub async fn setup_pass(&self) -> Result<(), AdeFailure> {
        let all = self.store.records(WAITING).await?;
        let waiting = all
            .iter()
            .filter(|(_, r)| r.value.get("state").and_then(|s| s.as_str()) == Some("waiting"))
            .count();
        crate::metrics::get().ade_waiting.set(waiting as i64);
        for (id, r) in all {
            let Ok(w) = serde_json::from_value::<Waiting>(r.value) else {
                continue;
            };
            if let Err(e) = self.look_at(&id, w, r.version).await {
                tracing::warn!(enrollment = %id, error = %e, "Setup Assistant: not handled this time");
            }
        }
        Ok(())
    }

    async fn look_at(&self, id: &str, mut w: Waiting, version: u64) -> Result<(), AdeFailure> {
        let t = now();
        if matches!(w.state.as_str(), "released" | "failed") {
            if w.released_at.is_some_and(|r| t - r > KEEP_RELEASED) {
                self.store.delete_record(WAITING, id, Some(version)).await?;
            }
            return Ok(());
        }
        let e = self.store.enrollment(id).await?;
        let Some(e) = e.filter(|e| e.enrolled_at == w.epoch && e.checked_out_at.is_none()) else {
            // Checked out or enrolled again since: this wait is over.
            self.store.delete_record(WAITING, id, Some(version)).await?;
            return Ok(());
        };
        if w.state == "releasing" {
            let Some(uuid) = w.command.clone() else {
                return Ok(());
            };
            let status = self
                .store
                .command(&uuid)
                .await?
                .and_then(|(_, d)| d.into_iter().find(|d| d.enrollment == id))
                .map(|d| d.status);
            match status {
                Some(DeliveryStatus::Acknowledged) => {
                    w.state = "released".into();
                    w.released_at = Some(t);
                    tracing::info!(enrollment = %id, reason = w.reason.as_deref().unwrap_or(""), waited_s = t - w.since, "DeviceConfigured acknowledged: Setup Assistant goes on");
                }
                Some(DeliveryStatus::Pending | DeliveryStatus::NotNow) => return Ok(()),
                other => {
                    w.state = "failed".into();
                    w.released_at = Some(t);
                    w.warning = Some(format!("DeviceConfigured was not acknowledged ({other:?})"));
                    tracing::warn!(enrollment = %id, status = ?other, "DeviceConfigured was not acknowledged");
                }
            }
            self.store
                .put_record(WAITING, id, serde_json::to_value(&w).map_err(StoreError::from)?, t, Some(version))
                .await?;
            return Ok(());
        }
        // Waiting: ready once the reconciler ran for this enrollment and nothing it sent is pending.
        let settled = self
            .fleet
            .settled(id, e.enrolled_at)
            .await
            .map_err(|err| AdeFailure::Invalid(err.to_string()))?;
        if settled == Some(true) {
            return self.release(id, w, version, "configured", None).await;
        }
        if t - w.since >= self.cfg.await_timeout {
            let warning = format!(
                "released after waiting {} s in Setup Assistant (--ade-await-timeout) with blueprint items still pending",
                t - w.since
            );
            tracing::warn!(enrollment = %id, "{warning}");
            return self.release(id, w, version, "timeout", Some(warning)).await;
        }
        Ok(())
    }

    async fn release(&self, id: &str, mut w: Waiting, version: u64, reason: &str, warning: Option<String>) -> Result<(), AdeFailure> {
        let b = self
            .commander
            .enqueue(
                CommandInput::Json(json!({"RequestType": "DeviceConfigured"})),
                vec![id.to_owned()],
                true,
            )
            .await
            .map_err(|e| AdeFailure::Invalid(format!("DeviceConfigured not queued: {e}")))?;
        w.state = "releasing".into();
        w.command = b.command_uuid;
        w.reason = Some(reason.to_owned());
        w.warning = warning;
        self.store
            .put_record(
                WAITING,
                id,
                serde_json::to_value(&w).map_err(StoreError::from)?,
                now(),
                Some(version),
            )
            .await?;
        tracing::info!(enrollment = %id, reason, "DeviceConfigured queued");
        Ok(())
    }

    /// An admin releases a waiting device now.
    pub async fn release_now(&self, id: &str) -> Result<Json, AdeFailure> {
        let r = self
            .store
            .record(WAITING, id)
            .await?
            .ok_or_else(|| AdeFailure::NotFound(format!("{id} is not waiting in Setup Assistant")))?;
        let w: Waiting = serde_json::from_value(r.value).map_err(StoreError::from)?;
        if w.state != "waiting" {
            return Err(AdeFailure::Invalid(format!("{id} is already {}", w.state)));
        }
        self.release(id, w, r.version, "admin", None).await?;
        Ok(self.waiting_view(id).await?.unwrap_or(Json::Null))
    }

    fn waiting_json(id: &str, w: &Waiting) -> Json {
        let t = now();
        json!({
            "enrollment": id,
            "state": w.state,
            "since": rfc3339(w.since),
            "waiting_seconds": w.released_at.unwrap_or(t) - w.since,
            "command": w.command,
            "reason": w.reason,
            "released_at": w.released_at.and_then(rfc3339),
            "warning": w.warning,
        })
    }

    pub async fn waiting_view(&self, id: &str) -> Result<Option<Json>, StoreError> {
        Ok(match self.store.record(WAITING, id).await? {
            Some(r) => Some(Self::waiting_json(id, &serde_json::from_value(r.value)?)),
            None => None,
        })
    }

    /// Every device in (or recently out of) Setup Assistant.
    pub async fn waiting(&self) -> Result<Vec<Json>, StoreError> {
        let mut out = Vec::new();
        for (id, r) in self.store.records(WAITING).await? {
            if let Ok(w) = serde_json::from_value::<Waiting>(r.value) {
                out.push(Self::waiting_json(&id, &w));
            }
        }
        Ok(out)
    }
}
