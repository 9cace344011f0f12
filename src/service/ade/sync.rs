//! Syncing with Apple: the first run of a token fetches every device
//! (`POST /server/devices`, paged with a cursor), later runs ask for what
//! changed since (`POST /devices/sync`). The cursor is stored after each
//! page's devices, so an interrupted run resumes; an expired or invalid
//! cursor starts a full fetch again. New devices (empty `profile_status` in
//! a full fetch, `added` in a sync) get the default profile that fits them.
//! One instance syncs at a time (lease `ade-sync`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::{Ade, AdeFailure, DeviceRecord, ProfileRecord, DEVICES, TOKENS};
use crate::ade::{AdeError, Device};
use crate::clock::now;
use crate::ops::lease::Lease;
use crate::service::ServiceError;
use crate::store::{RecordWrite, StoreError};

/// What one token's sync did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = AdeSyncReport)]
pub struct SyncReport {
    pub token: String,
    /// A full fetch (first run, or the cursor had expired).
    pub full: bool,
    pub pages: u32,
    pub devices: u64,
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    /// Devices a default profile was assigned to.
    pub assigned: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Ade {
    pub(super) async fn sync_loop(&self) {
        let lease = Lease::new(
            self.store.clone(),
            "ade-sync",
            &self.instance,
            self.cfg.sync_interval.saturating_mul(3).max(std::time::Duration::from_secs(60)),
        );
        let mut first = true;
        loop {
            let skip = std::mem::replace(&mut first, false) && !self.tokens_at_start;
            if !skip && lease.held().await {
                match self.sync_all().await {
                    Ok(r) => {
                        for t in r.iter().filter(|t| t.error.is_some()) {
                            tracing::warn!(token = %t.token, error = t.error.as_deref().unwrap_or(""), "ADE sync failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ADE sync failed"),
                }
            }
            tokio::time::sleep(self.cfg.sync_interval).await;
        }
    }

    /// Sync every token now (the periodic run, `POST /v1/ade/sync`). One
    /// run at a time across instances (lease `ade-sync-run`, held while it
    /// runs): another instance's run in progress is `Busy`.
    pub async fn sync_all(&self) -> Result<Vec<SyncReport>, ServiceError> {
        let _one_here = self.sync_lock.lock().await;
        let run = Lease::new(
            self.store.clone(),
            "ade-sync-run",
            &self.instance,
            std::time::Duration::from_secs(600),
        );
        if !run.held().await {
            return Err(ServiceError::Busy(
                "an ADE sync is running on another instance: try again shortly".into(),
            ));
        }
        let out = self.sync_tokens().await;
        run.release().await;
        Ok(out?)
    }

    async fn sync_tokens(&self) -> Result<Vec<SyncReport>, StoreError> {
        let names: Vec<String> = self.store.records(TOKENS).await?.into_iter().map(|(n, _)| n).collect();
        let mut out = Vec::new();
        for name in names {
            let mut r = SyncReport {
                token: name.clone(),
                ..SyncReport::default()
            };
            let outcome = self.sync_token(&name, &mut r).await;
            crate::metrics::get().ade_sync(outcome.is_ok());
            if let Err(e) = outcome {
                let msg = e.to_string();
                self.note_error(&name, &msg).await;
                r.error = Some(msg);
            }
            tracing::info!(token = %name, full = r.full, pages = r.pages, devices = r.devices, added = r.added, modified = r.modified, deleted = r.deleted, assigned = r.assigned, "ADE sync");
            out.push(r);
        }
        Ok(out)
    }

    async fn sync_token(&self, name: &str, r: &mut SyncReport) -> Result<(), AdeFailure> {
        let Some((rec, _)) = self.token_record(name).await? else {
            return Ok(());
        };
        if rec.expires_at <= now() {
            return Err(AdeFailure::Apple(AdeError::TokenRejected(
                "the server token has expired: upload a new one".into(),
            )));
        }
        if rec.expires_at - now() < super::EXPIRY_WARNING {
            tracing::warn!(token = %name, expires = ?crate::clock::rfc3339(rec.expires_at), "ADE server token expires within 30 days: renew it in Apple Business Manager and upload the new one");
        }
        let client = self.client(name).await?;
        let mut cursor = rec.cursor.clone();
        let mut full = cursor.is_none();
        r.full = full;
        let mut candidates: Vec<DeviceRecord> = Vec::new();
        // Bounded: Apple's pages hold up to 1000 devices; a million devices is 1000 pages.
        for _ in 0..100_000 {
            let page = if full {
                client.fetch_devices(cursor.as_deref(), self.cfg.page_size).await
            } else {
                client.sync_devices(cursor.as_deref().unwrap_or_default(), self.cfg.page_size).await
            };
            let page = match page {
                Ok(p) => p,
                Err(e @ (AdeError::ExpiredCursor | AdeError::InvalidCursor)) if !full || cursor.is_some() => {
                    tracing::warn!(token = %name, error = %e, "ADE cursor no longer valid: fetching every device again");
                    r.problems.push(format!("{e}: fetched every device again"));
                    cursor = None;
                    full = true;
                    r.full = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            r.pages += 1;
            let devices: Vec<&Device> = page
                .devices
                .iter()
                .filter(|d| !d.serial_number.is_empty() && d.serial_number.len() <= 64)
                .collect();
            // What we had of them, in one read.
            let olds = self
                .store
                .records_of(DEVICES, devices.iter().map(|d| d.serial_number.clone()).collect())
                .await?;
            let mut writes = Vec::with_capacity(devices.len());
            for (d, old) in devices.into_iter().zip(olds) {
                let old: Option<DeviceRecord> = match old {
                    Some(r) => Some(serde_json::from_value(r.value).map_err(StoreError::from)?),
                    None => None,
                };
                let rec = merge(old.as_ref(), d, name, full);
                r.devices += 1;
                match rec.op.as_str() {
                    "added" => r.added += 1,
                    "modified" => r.modified += 1,
                    "deleted" => r.deleted += 1,
                    _ => {}
                }
                let new_device = if full {
                    rec.profile_status.as_deref().is_none_or(|s| s == "empty" || s == "removed")
                } else {
                    rec.op == "added"
                };
                if new_device && rec.op != "deleted" {
                    candidates.push(rec.clone());
                }
                writes.push(RecordWrite {
                    collection: DEVICES.into(),
                    key: d.serial_number.clone(),
                    value: serde_json::to_value(&rec).map_err(StoreError::from)?,
                    expect: None,
                });
            }
            if !writes.is_empty() {
                self.store.put_records(writes, now()).await?;
            }
            // The devices first, then the cursor: a crash in between re-reads a page, never skips one.
            let next = page.cursor.clone().or(cursor.clone());
            let done = !page.more_to_follow;
            let fetched = full && done;
            self.update_token(name, |t| {
                t.cursor = next.clone();
                t.synced_at = Some(now());
                if fetched {
                    t.fetched_at = Some(now());
                }
            })
            .await?;
            cursor = next;
            if done {
                break;
            }
            if !full && page.devices.is_empty() {
                break;
            }
        }
        r.assigned = self.assign_defaults(name, candidates, &mut r.problems).await?;
        self.update_token(name, |t| {
            t.last_error = None;
            t.last_error_at = None;
        })
        .await?;
        Ok(())
    }

    /// Give each device the default profile that fits it; returns how many were assigned.
    async fn assign_defaults(&self, server: &str, devices: Vec<DeviceRecord>, problems: &mut Vec<String>) -> Result<u64, AdeFailure> {
        if devices.is_empty() {
            return Ok(0);
        }
        let defaults: Vec<(String, ProfileRecord, Option<crate::service::fleet::rules::Rule>)> = self
            .profile_records()
            .await?
            .into_iter()
            .filter(|(_, p)| p.default && (p.servers.is_empty() || p.servers.iter().any(|s| s == server)))
            .map(|(n, p)| {
                let rule = p.rule.as_deref().and_then(|r| crate::service::fleet::rules::Rule::compile(r).ok());
                (n, p, rule)
            })
            .collect();
        if defaults.is_empty() {
            return Ok(0);
        }
        let mut by_profile: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in devices {
            let obj = crate::service::fleet::rules::to_cel(&json!({
                "serial": d.serial,
                "model": d.model.clone().unwrap_or_default(),
                "description": d.description.clone().unwrap_or_default(),
                "color": d.color.clone().unwrap_or_default(),
                "os": d.os.clone().unwrap_or_default(),
                "device_family": d.device_family.clone().unwrap_or_default(),
                "server": server,
            }));
            // A default with a rule that matches wins over one without (more specific); then by name.
            let pick = defaults
                .iter()
                .find(|(_, _, rule)| rule.as_ref().is_some_and(|r| r.matches(&obj)))
                .or_else(|| defaults.iter().find(|(_, p, _)| p.rule.is_none()));
            if let Some((n, _, _)) = pick {
                by_profile.entry(n.clone()).or_default().push(d.serial);
            }
        }
        let mut assigned = 0;
        for (profile, serials) in by_profile {
            let uuid = match self.profile_record(&profile).await?.and_then(|(p, _)| p.uuids.get(server).cloned()) {
                Some(u) => u,
                None => match self.define_at(&profile, server).await {
                    Ok(u) => u,
                    Err(e) => {
                        problems.push(format!("profile {profile} not defined at Apple: {e}"));
                        continue;
                    }
                },
            };
            assigned += self.assign(server, &profile, &uuid, serials).await?;
        }
        Ok(assigned)
    }

    /// Define one of our profiles at one more server; returns its UUID there.
    pub(super) async fn define_at(&self, profile: &str, server: &str) -> Result<String, AdeFailure> {
        let (p, _) = self
            .profile_record(profile)
            .await?
            .ok_or_else(|| AdeFailure::NotFound(format!("no ADE profile {profile}")))?;
        let client = self.client(server).await?;
        let res = client.define_profile(&p.profile).await?;
        let uuid = res
            .profile_uuid
            .ok_or_else(|| AdeFailure::Apple(AdeError::Decode("no profile_uuid in Apple's answer".into())))?;
        for _ in 0..5 {
            let Some((mut rec, v)) = self.profile_record(profile).await? else {
                break;
            };
            rec.uuids.insert(server.to_owned(), uuid.clone());
            let value = serde_json::to_value(&rec).map_err(StoreError::from)?;
            if self
                .store
                .put_record(super::PROFILES, profile, value, now(), Some(v))
                .await?
                .is_some()
            {
                break;
            }
        }
        Ok(uuid)
    }

    /// Assign a profile (its UUID at this server) to devices, 1000 at a
    /// time, and record what Apple said of each. Returns how many succeeded.
    pub(super) async fn assign(&self, server: &str, profile: &str, uuid: &str, serials: Vec<String>) -> Result<u64, AdeFailure> {
        let client = self.client(server).await?;
        let mut ok = 0;
        for chunk in serials.chunks(1000) {
            let res = client.assign_profile(uuid, chunk).await?;
            let olds = self.store.records_of(DEVICES, chunk.to_vec()).await?;
            let mut writes = Vec::new();
            for (s, old) in chunk.iter().zip(olds) {
                let status = res.devices.get(s).cloned().unwrap_or_else(|| "NOT_REPORTED".into());
                let Some(old) = old else { continue };
                let mut d: DeviceRecord = serde_json::from_value(old.value).map_err(StoreError::from)?;
                if status == "SUCCESS" {
                    ok += 1;
                    d.profile_status = Some("assigned".into());
                    d.profile_uuid = Some(uuid.to_owned());
                    d.profile = Some(profile.to_owned());
                    d.assign_error = None;
                } else {
                    tracing::warn!(serial = %s, profile, status = %status, "ADE profile not assigned");
                    d.assign_error = Some(status);
                }
                d.updated_at = now();
                writes.push(RecordWrite {
                    collection: DEVICES.into(),
                    key: s.clone(),
                    value: serde_json::to_value(&d).map_err(StoreError::from)?,
                    expect: None,
                });
            }
            self.store.put_records(writes, now()).await?;
        }
        crate::metrics::get().ade_assigned.inc_by(ok);
        tracing::info!(server, profile, assigned = ok, "ADE profile assigned");
        Ok(ok)
    }
}

/// A device as Apple reported it, over what we had.
fn merge(old: Option<&DeviceRecord>, d: &Device, server: &str, full: bool) -> DeviceRecord {
    let mut rec = old.cloned().unwrap_or_default();
    rec.serial = d.serial_number.clone();
    rec.server = server.to_owned();
    rec.op = match d.op_type.as_deref() {
        Some(op @ ("added" | "modified" | "deleted")) => op.to_owned(),
        _ if full => "fetched".to_owned(),
        _ => "modified".to_owned(),
    };
    rec.op_date = d.op_date.clone().or(rec.op_date);
    macro_rules! take {
        ($($f:ident),*) => {$( if d.$f.is_some() { rec.$f = d.$f.clone(); } )*};
    }
    take!(
        model,
        description,
        color,
        os,
        device_family,
        profile_status,
        profile_uuid,
        profile_assign_time,
        device_assigned_date
    );
    if d.profile_uuid.is_some() && d.profile_uuid != old.and_then(|o| o.profile_uuid.clone()) {
        // Assigned elsewhere (in ABM, or by another MDM server's tooling): our name no longer applies.
        rec.profile = None;
    }
    rec.updated_at = now();
    rec
}
