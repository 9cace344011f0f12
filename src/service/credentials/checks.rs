//! The periodic check of derived credentials (one instance at a time, every
//! `--derived-check-interval`): a credential whose certificate has expired
//! ends at once; the others are checked for revocation (`revocation`) when
//! their last check is `--derived-revocation-interval` old, and one that is
//! revoked ends. An ended credential's profiles leave the devices and wait
//! again, as when it is deleted (`Commander::derived_deleted`).
//!
//! A pass asks the least recently checked credentials first and stops
//! asking sources once it has run for its budget (the check interval, at
//! least 30 s): the rest stay due for the next pass, and a pass never runs
//! into the next one however many sources hang.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::derived::{DerivedError, Stored};
use super::ended::{Ending, RETENTION};
use super::followup::Followed;
use super::revocation::{Outcome, Run};
use crate::clock::now;
use crate::service::commands::Commander;

/// What one pass did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Swept {
    pub expired: Vec<String>,
    pub revoked: Vec<String>,
    /// Credentials whose revocation could not be checked.
    pub failed: Vec<String>,
    pub checked: usize,
    /// Profiles removed and set waiting, per enrollment.
    pub removed: BTreeMap<String, Vec<String>>,
}

impl Commander {
    /// One pass over the derived credentials; revocation sources are asked
    /// until `budget` has passed.
    pub async fn derived_sweep(&self, budget: std::time::Duration) -> Result<Swept, DerivedError> {
        let Some(derived) = self.derived().cloned() else {
            return Ok(Swept::default());
        };
        let started = std::time::Instant::now();
        let mut out = Swept::default();
        let mut run = Run::default();
        let mut active = derived.active().await?;
        active.sort_by_key(|(_, s)| s.revocation.as_ref().map_or(i64::MIN, |c| c.checked_at));
        for (key, s) in active {
            run.out_of_time = started.elapsed() >= budget;
            if let Err(e) = self.check_one(&key, &s, &mut run, &mut out).await {
                tracing::warn!(id = %s.id, error = %e, "derived credential check failed");
            }
        }
        match derived.prune_ended(now() - RETENTION).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "old ended derived credentials forgotten"),
            Err(e) => tracing::warn!(error = %e, "pruning ended derived credentials failed"),
        }
        Ok(out)
    }

    async fn check_one(&self, key: &str, s: &Stored, run: &mut Run, out: &mut Swept) -> Result<(), DerivedError> {
        let Some(derived) = self.derived().cloned() else { return Ok(()) };
        let t = now();
        let ending = if s.not_after <= t {
            Some(Ending::expired())
        } else {
            let Some(checker) = derived.checker() else { return Ok(()) };
            if run.out_of_time || s.sources.is_empty() || !checker.due(s.revocation.as_ref().map(|c| c.checked_at), t) {
                return Ok(());
            }
            let (cert, chain) = derived.certificates(key, s)?;
            out.checked += 1;
            match checker.check(&cert, &chain, run, t).await {
                Outcome::Revoked { via, reason, at } => Some(Ending::revoked(via, Some(reason), at)),
                other => {
                    let rec = other.record(t, s.revocation.as_ref());
                    if let Outcome::Failed(e) = &other {
                        tracing::warn!(id = %s.id, failures = rec.failures, error = %e, "derived credential: revocation not checked; nothing removed");
                        out.failed.push(s.id.clone());
                    }
                    derived.record_check(key, &s.id, rec).await?;
                    None
                }
            }
        };
        let Some(ending) = ending else { return Ok(()) };
        let Some((ended, was)) = derived.end(key, &s.id, &ending).await? else {
            return Ok(());
        };
        let f: Followed = self.derived_deleted(&was).await?;
        if ended.status == "expired" {
            out.expired.push(ended.id);
        } else {
            out.revoked.push(ended.id);
        }
        for (enr, profiles) in f.removed {
            out.removed.entry(enr).or_default().extend(profiles);
        }
        Ok(())
    }
}

/// Run the check every `every` on whichever instance holds its lease.
pub fn spawn(commander: Arc<Commander>, every: std::time::Duration, instance: &str) {
    if commander.derived().is_none() {
        return;
    }
    let store = commander.mdm.store.clone();
    crate::ops::lease::spawn_leased(store, "derived-credential-check", instance, every, false, move || {
        let commander = commander.clone();
        async move {
            match commander.derived_sweep(every.max(std::time::Duration::from_secs(30))).await {
                Ok(s) => {
                    if !(s.expired.is_empty() && s.revoked.is_empty()) {
                        tracing::info!(expired = ?s.expired, revoked = ?s.revoked, profiles_removed = ?s.removed, "derived credentials ended");
                    }
                    tracing::debug!(checked = s.checked, failed = s.failed.len(), "derived credential check");
                }
                Err(e) => tracing::warn!(error = %e, "derived credential check failed"),
            }
        }
    });
}
