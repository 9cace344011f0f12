//! The leased licence sync: licence counts and App Store versions refreshed
//! from Apple (a new version offered to the devices that have the app),
//! associations a crash interrupted finished or undone (Apple's assignments
//! say which), and the licences of devices no longer enrolled released.

use super::install::{Licence, SyncReport};
use super::{to_json, with_prefix, Apps, AppsFailure, LICENCES};
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
}
