//! The leased licence sync: licence counts and App Store versions refreshed
//! from Apple (a new version offered to the devices that have the app),
//! associations a crash interrupted finished or undone (Apple's assignments
//! say which), and the licences of devices no longer enrolled released.

use super::install::{DeviceApp, Licence, SyncReport};
use super::{to_json, with_prefix, Apps, AppsFailure, DEVICE_APPS, LICENCES};

/// An install still unanswered after this long is asked about (ManagedApplicationList).
const POLL_AFTER: i64 = 120;
/// And asked again at most this often while it stays so.
const POLL_EVERY: i64 = 3600;
use crate::clock::{now, rfc3339};

impl Apps {
    /// Refresh licence counts and versions; finish or undo interrupted
    /// associations; release licences of devices no longer enrolled.
    pub async fn sync(&self) -> SyncReport {
        let _one = self.sync_lock.lock().await;
        let mut report = SyncReport::default();
        let names = match self.token_names().await {
            Ok(n) => n,
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        for name in &names {
            report.tokens += 1;
            if let Some((r, _)) = self.token_record(name).await.ok().flatten() {
                if r.expires_at - now() < super::EXPIRY_WARNING {
                    tracing::warn!(token = %name, expires = ?rfc3339(r.expires_at), "Apps and Books content token expires soon: renew it in Apple Business Manager");
                }
            }
            match self.refresh_token_apps(name).await {
                Ok(n) => {
                    report.assets += n;
                    self.note_token_error(name, None).await;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.note_token_error(name, Some(&msg)).await;
                    report.errors.push(format!("{name}: {msg}"));
                }
            }
        }
        match self.reconcile_licences().await {
            Ok(n) => report.released = n,
            Err(e) => report.errors.push(e.to_string()),
        }
        report
    }

    async fn reconcile_licences(&self) -> Result<usize, AppsFailure> {
        let all = with_prefix::<Licence>(self.store.as_ref(), LICENCES, "").await?;
        let t = now();
        let mut release = Vec::new();
        for (k, l, _) in all {
            let e = self.store.enrollment(&l.enrollment).await?;
            let enrolled = e.as_ref().is_some_and(|e| e.active && e.checked_out_at.is_none());
            if l.state == "associating" {
                if t - l.at < 300 {
                    continue;
                }
                // Interrupted: ask Apple whether the serial holds it.
                let client = self.client(&l.token).await?;
                let holds = !client.assignments(Some(&l.adam_id), Some(&l.serial)).await?.is_empty();
                if !holds {
                    self.store.delete_record(LICENCES, &k, None).await?;
                    continue;
                }
                let mut done = l.clone();
                done.state = "associated".into();
                self.store.put_record(LICENCES, &k, to_json(&done), t, None).await?;
            }
            if !enrolled {
                release.push((k, l));
            }
        }
        if release.is_empty() {
            return Ok(0);
        }
        self.release(release).await
    }

    /// Ask devices whose installs are still queued or installing for their
    /// managed apps (one fan-out), at most every `POLL_EVERY` per record.
    pub async fn poll_states(&self) -> Result<usize, AppsFailure> {
        let t = now();
        let mut due: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for (k, d, _) in with_prefix::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, "").await? {
            let waiting = matches!(d.state.as_str(), "queued" | "installing");
            if !waiting || t - d.updated_at < POLL_AFTER || d.polled_at.is_some_and(|p| t - p < POLL_EVERY) {
                continue;
            }
            due.insert(d.enrollment.clone());
            let _ = super::update::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &k, |r| r.polled_at = Some(t)).await;
        }
        if due.is_empty() {
            return Ok(0);
        }
        let n = due.len();
        let cmd = serde_json::json!({"RequestType": "ManagedApplicationList"});
        self.commander
            .enqueue(crate::service::commands::CommandInput::Json(cmd), due.into_iter().collect(), true)
            .await
            .map_err(|e| AppsFailure::Invalid(e.to_string()))?;
        tracing::debug!(devices = n, "asked for managed app lists");
        Ok(n)
    }
}
