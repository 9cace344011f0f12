//! Inventory: what devices report about themselves, kept as current state,
//! refreshed on a schedule, and the compliance evaluated from it.
//!
//! The sweep reads what is due, not the fleet: each enrollment has a store
//! schedule entry (`InventoryStore::schedule`) for its next inventory refresh
//! (set when a refresh is asked and when DeviceInformation arrives) and, when
//! a time-based compliance rule can change its verdict, for its next
//! re-evaluation (`ComplianceRecord::recheck_at`). A store without the
//! entries (from before them, or a `db copy`) gets them from one full pass.

use std::sync::Arc;

use crate::clock::now;
use crate::service::access::compliance::{evaluate, Facts};
use crate::service::{Mdm, ServiceError};
use crate::store::{ComplianceRecord, InventoryItem};

/// Schedule kinds: the next inventory refresh, the next compliance re-evaluation.
const INVENTORY_DUE: &str = "inventory";
const COMPLIANCE_DUE: &str = "compliance";
/// An entry of this kind is there once the schedule was filled from a full
/// pass (kept in the schedule itself, which `db copy` leaves behind with it).
const SCHEDULE_BUILT: &str = "schedule-built";
/// Due entries read per page, and pages per sweep (the rest waits for the next).
const PAGE: usize = 1000;
const MAX_PAGES: usize = 100;

/// The query commands whose answers are kept as inventory.
pub const KINDS: [&str; 5] = [
    "DeviceInformation",
    "SecurityInfo",
    "CertificateList",
    "ProfileList",
    "InstalledApplicationList",
];

/// The device facts a refresh asks DeviceInformation for, beside the
/// network queries ([`queries_for`]).
pub const QUERIES: [&str; 19] = [
    "UDID",
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "ModelName",
    "Model",
    "ProductName",
    "SerialNumber",
    "IMEI",
    "MEID",
    "ModemFirmwareVersion",
    "WiFiMAC",
    "BluetoothMAC",
    "PhoneNumber",
    "IsSupervised",
    "IsActivationLockEnabled",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
];

/// What a refresh asks one device: [`QUERIES`] and every network query
/// Apple's schema gives iOS (ICCID, carriers, carrier settings, roaming,
/// hotspot, MCC/MNC, service subscriptions …), less what a User Enrollment
/// refuses. Queries iOS deprecated stay: a device answers what it still
/// supports and leaves out the rest, and older devices have only those.
pub fn queries_for(user_enrollment: bool) -> Vec<&'static str> {
    let schema = crate::protocol::schema::Schema::get();
    let refused = |n: &str| user_enrollment && schema.device_queries.iter().any(|q| q.name == n && q.ue_forbidden());
    let mut out: Vec<&'static str> = QUERIES.iter().copied().filter(|n| !refused(n)).collect();
    for q in schema
        .device_queries
        .iter()
        .filter(|q| q.network() && !(user_enrollment && q.ue_forbidden()))
    {
        if !out.contains(&q.name.as_str()) {
            out.push(q.name.as_str());
        }
    }
    out
}

/// The query commands of one inventory refresh other than DeviceInformation,
/// as admin-API JSON.
pub fn refresh_commands() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({"RequestType": "SecurityInfo"}),
        serde_json::json!({"RequestType": "CertificateList"}),
        serde_json::json!({"RequestType": "ProfileList"}),
        serde_json::json!({"RequestType": "InstalledApplicationList"}),
    ]
}

impl Mdm {
    /// Keep a query command's answer as the device's current inventory of that kind.
    /// `d` is the answer's dictionary (parsed once, on arrival).
    pub(crate) async fn record_inventory(&self, device: &str, kind: &str, mut d: plist::Dictionary) -> Result<(), ServiceError> {
        if !KINDS.contains(&kind) {
            return Ok(());
        }
        for k in ["CommandUUID", "Status", "UDID", "EnrollmentID", "EnrollmentUserID", "UserID"] {
            d.remove(k);
        }
        let item = InventoryItem {
            kind: kind.to_owned(),
            reported_at: now(),
            data: crate::protocol::json::plist_to_json(&plist::Value::Dictionary(d)),
        };
        let at = item.reported_at;
        self.store.put_inventory(device, item).await?;
        if kind == "DeviceInformation" && self.inventory_interval > 0 {
            self.store
                .schedule(INVENTORY_DUE, vec![(device.to_owned(), Some(at + self.inventory_interval))])
                .await?;
        }
        self.evaluate_compliance(device).await?;
        self.fact_changed(device);
        Ok(())
    }

    /// Evaluate and store one device's compliance; None if unknown.
    pub async fn evaluate_compliance(&self, device: &str) -> Result<Option<ComplianceRecord>, ServiceError> {
        let Some(e) = self.store.enrollment(device).await? else {
            return Ok(None);
        };
        let inventory = self.store.inventory(device).await?;
        let profiles = self.store.device_profiles(device).await?;
        let (policy, version) = self.policy.get();
        let t = now();
        let mut rec = evaluate(
            &policy,
            &version,
            &Facts {
                enrollment: &e,
                inventory: &inventory,
                profiles: &profiles,
                now: t,
            },
        );
        let old = self.store.compliance(device).await?;
        // The schedule keeps the earlier of a re-evaluation still to come and
        // the new one (an early look changes nothing); one that has come is replaced.
        let scheduled = old.as_ref().and_then(|o| o.recheck_at).filter(|r| *r > t);
        rec.recheck_at = match (rec.recheck_at, scheduled) {
            (Some(new), Some(s)) => Some(new.min(s)),
            (new, s) => new.or(s),
        };
        let recheck_moved = old.as_ref().and_then(|o| o.recheck_at) != rec.recheck_at;
        if recheck_moved {
            // Before the record: a crash between the two leaves an extra look, never a missed one.
            self.store
                .schedule(COMPLIANCE_DUE, vec![(device.to_owned(), rec.recheck_at)])
                .await?;
        }
        let verdict_changed = old
            .as_ref()
            .is_none_or(|o| o.state != rec.state || o.reasons != rec.reasons || o.policy != rec.policy);
        if recheck_moved || verdict_changed {
            if let Some(o) = &old {
                if o.state != rec.state {
                    tracing::info!(enrollment = %device, from = o.state.as_str(), to = rec.state.as_str(), reasons = ?rec.reasons, "compliance changed");
                }
            }
            self.store.set_compliance(device, rec.clone()).await?;
            if verdict_changed {
                self.fact_changed(device);
            }
            if old.as_ref().is_none_or(|o| o.state != rec.state) {
                self.compliance_event(&e, old.as_ref(), &rec).await;
            }
        }
        Ok(Some(rec))
    }

    /// `mdmd.ComplianceChanged`: a conditional-access partner (SphereShield,
    /// an identity provider) learns at once that a device fell out of (or
    /// back into) compliance, with who and what the device is.
    async fn compliance_event(&self, e: &crate::store::Enrollment, old: Option<&ComplianceRecord>, rec: &ComplianceRecord) {
        let Some(w) = self.webhooks() else { return };
        let detail = serde_json::json!({
            "enrollment": e.id,
            "udid": e.udid,
            "serial_number": e.info.serial_number,
            "imei": e.info.imei,
            "product_name": e.info.product_name,
            "os_version": e.info.os_version,
            "user": crate::service::commands::var_value(e, "USERNAME", ""),
            "old_status": old.map(|o| o.state.as_str()),
            "new_status": rec.state.as_str(),
            "reasons": rec.reasons,
            "policy": rec.policy,
        });
        if let Err(err) = w.emit(w.own_event("mdmd.ComplianceChanged", detail)).await {
            tracing::warn!(enrollment = %e.id, error = %err, "compliance event not stored");
        }
    }

    /// Queue an inventory refresh (the five query commands) for these devices.
    pub async fn request_inventory(&self, ids: Vec<String>) -> Result<u64, ServiceError> {
        if ids.is_empty() {
            return Ok(0);
        }
        if self.inventory_interval > 0 {
            // Looked at again after an interval even if no answer comes (DeviceInformation's reschedules).
            let next = now() + self.inventory_interval;
            self.store
                .schedule(INVENTORY_DUE, ids.iter().map(|id| (id.clone(), Some(next))).collect())
                .await?;
        }
        // DeviceInformation asks what each device can answer: grouped by query list.
        let mut groups: std::collections::BTreeMap<Vec<&'static str>, Vec<String>> = std::collections::BTreeMap::new();
        for id in &ids {
            let ue = self.store.enrollment(id).await?.is_some_and(|e| e.is_user_enrollment());
            groups.entry(queries_for(ue)).or_default().push(id.clone());
        }
        let mut commands: Vec<(serde_json::Value, Vec<String>)> = groups
            .into_iter()
            .map(|(q, ids)| (serde_json::json!({"RequestType": "DeviceInformation", "Queries": q}), ids))
            .collect();
        commands.extend(refresh_commands().into_iter().map(|c| (c, ids.clone())));
        let mut queued = 0;
        for (c, ids) in commands {
            match self.enqueue_json(&c, ids).await {
                Ok((_, out)) => queued = out.queued,
                Err(crate::service::commands::enqueue::EnqueueError::Service(e)) => return Err(e),
                Err(crate::service::commands::enqueue::EnqueueError::Invalid(e)) => {
                    return Err(ServiceError::internal(
                        "building an inventory command",
                        format!("{}: {}", e.path, e.problem),
                    ))
                }
            }
        }
        Ok(queued)
    }

    /// Refresh the inventory of active devices whose inventory is older than
    /// `interval` seconds: only devices seen since their last report and with
    /// nothing queued, so a device that does not check in is never asked twice.
    /// Also re-evaluates compliance where a time-based rule is due. Reads the
    /// schedule's due entries, not every enrollment (the first run on a store
    /// without the schedule is a full pass that fills it). Returns (refreshes
    /// asked, compliance evaluations).
    pub async fn inventory_sweep(self: &Arc<Self>, interval: i64) -> Result<(usize, usize), ServiceError> {
        if self.store.due(SCHEDULE_BUILT, i64::MAX, 1).await?.is_empty() {
            let r = self.full_sweep(interval).await?;
            self.store.schedule(SCHEDULE_BUILT, vec![("v1".into(), Some(0))]).await?;
            return Ok(r);
        }
        let t = now();
        let mut evaluated = 0;
        for _ in 0..MAX_PAGES {
            let due = self.store.due(COMPLIANCE_DUE, t, PAGE).await?;
            for (id, _) in &due {
                // Evaluating moves (or clears) the entry.
                if self.evaluate_compliance(id).await?.is_none() {
                    self.store.schedule(COMPLIANCE_DUE, vec![(id.clone(), None)]).await?;
                }
                evaluated += 1;
            }
            if due.len() < PAGE {
                break;
            }
        }
        let mut asked = Vec::new();
        if interval > 0 {
            for _ in 0..MAX_PAGES {
                let due = self.store.due(INVENTORY_DUE, t, PAGE).await?;
                let mut next = Vec::with_capacity(due.len());
                for (id, _) in &due {
                    let Some(e) = self.store.enrollment(id).await? else {
                        next.push((id.clone(), None));
                        continue;
                    };
                    let (stale, at) = self.inventory_due(&e, t, interval).await?;
                    if stale {
                        asked.push(id.clone());
                    }
                    next.push((id.clone(), at));
                }
                self.store.schedule(INVENTORY_DUE, next).await?;
                if due.len() < PAGE {
                    break;
                }
            }
        }
        self.ask_inventory(&asked).await?;
        Ok((asked.len(), evaluated))
    }

    /// Whether device `e` gets an inventory refresh now, and when it is next
    /// looked at (None: not while it is inactive).
    async fn inventory_due(&self, e: &crate::store::Enrollment, t: i64, interval: i64) -> Result<(bool, Option<i64>), ServiceError> {
        if !e.active || e.id != e.device {
            return Ok((false, None));
        }
        let inv = self.store.inventory(&e.id).await?;
        let reported = inv.iter().filter(|i| i.kind == "DeviceInformation").map(|i| i.reported_at).max();
        let stale = reported.is_none_or(|r| r < t - interval && e.last_seen_at > r);
        let ask = stale && self.store.next_command(&e.id, false).await?.is_none();
        // Not stale yet: when it will be; stale (asked, or away): an interval from now.
        let at = match reported {
            Some(r) if r >= t - interval => r + interval,
            _ => t + interval,
        };
        Ok((ask, Some(at.max(t + 1))))
    }

    async fn ask_inventory(&self, due: &[String]) -> Result<(), ServiceError> {
        if !due.is_empty() {
            tracing::info!(devices = due.len(), "refreshing inventory");
            for chunk in due.chunks(10_000) {
                self.request_inventory(chunk.to_vec()).await?;
            }
        }
        Ok(())
    }

    /// Every device: compliance evaluated (which schedules its re-evaluation)
    /// and, with `interval`, its inventory refreshed when stale and its next
    /// look scheduled. The sweep's first run on a store, and a new policy's.
    pub async fn full_sweep(self: &Arc<Self>, interval: i64) -> Result<(usize, usize), ServiceError> {
        let t = now();
        let mut after = None;
        let mut due = Vec::new();
        let mut evaluated = 0;
        loop {
            let page = self.store.enrollments(after.clone(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let mut next = Vec::new();
            for e in page.iter().filter(|e| e.id == e.device) {
                self.evaluate_compliance(&e.id).await?;
                evaluated += 1;
                if interval <= 0 {
                    continue;
                }
                let (ask, at) = self.inventory_due(e, t, interval).await?;
                if ask {
                    due.push(e.id.clone());
                }
                next.push((e.id.clone(), at));
            }
            if !next.is_empty() {
                self.store.schedule(INVENTORY_DUE, next).await?;
            }
        }
        self.ask_inventory(&due).await?;
        Ok((due.len(), evaluated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_query_of_apples_schema_is_asked() {
        let all = queries_for(false);
        for q in [
            "ICCID",
            "CurrentCarrierNetwork",
            "SubscriberCarrierNetwork",
            "CarrierSettingsVersion",
            "ModemFirmwareVersion",
            "DataRoamingEnabled",
            "VoiceRoamingEnabled",
            "PersonalHotspotEnabled",
            "ServiceSubscriptions",
            "IsRoaming",
            "CurrentMCC",
            "SubscriberMNC",
            "PhoneNumber",
            "UDID",
        ] {
            assert!(all.contains(&q), "{q} in {all:?}");
        }
        let n = all.len();
        let mut dedup = all.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), n, "no query twice");
        // A User Enrollment is not asked what it refuses.
        let ue = queries_for(true);
        assert!(!ue.contains(&"UDID") && !ue.contains(&"IMEI") && !ue.contains(&"ICCID"), "{ue:?}");
        assert!(ue.contains(&"OSVersion"), "{ue:?}");
    }
}
