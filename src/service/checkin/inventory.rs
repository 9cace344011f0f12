//! Inventory: what devices report about themselves, kept as current state,
//! refreshed on a schedule, and the compliance evaluated from it.

use std::sync::Arc;

use crate::clock::now;
use crate::service::access::compliance::{evaluate, Facts};
use crate::service::{Mdm, ServiceError};
use crate::store::{ComplianceRecord, InventoryItem};

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
        self.store.put_inventory(device, item).await?;
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
        let rec = evaluate(
            &policy,
            &version,
            &Facts {
                enrollment: &e,
                inventory: &inventory,
                profiles: &profiles,
                now: now(),
            },
        );
        let old = self.store.compliance(device).await?;
        if old
            .as_ref()
            .is_none_or(|o| o.state != rec.state || o.reasons != rec.reasons || o.policy != rec.policy)
        {
            if let Some(o) = &old {
                if o.state != rec.state {
                    tracing::info!(enrollment = %device, from = o.state.as_str(), to = rec.state.as_str(), reasons = ?rec.reasons, "compliance changed");
                }
            }
            self.store.set_compliance(device, rec.clone()).await?;
            self.fact_changed(device);
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
    /// Also re-evaluates compliance of every device (time-based rules).
    pub async fn inventory_sweep(self: &Arc<Self>, interval: i64) -> Result<(usize, usize), ServiceError> {
        let horizon = now() - interval;
        let mut after = None;
        let mut due = Vec::new();
        let mut evaluated = 0;
        loop {
            let page = self.store.enrollments(after.clone(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for e in page.iter().filter(|e| e.id == e.device) {
                self.evaluate_compliance(&e.id).await?;
                evaluated += 1;
                if interval <= 0 || !e.active {
                    continue;
                }
                let inv = self.store.inventory(&e.id).await?;
                let reported = inv.iter().filter(|i| i.kind == "DeviceInformation").map(|i| i.reported_at).max();
                let stale = reported.is_none_or(|r| r < horizon && e.last_seen_at > r);
                if stale && self.store.next_command(&e.id, false).await?.is_none() {
                    due.push(e.id.clone());
                }
            }
        }
        let n = due.len();
        if n > 0 {
            tracing::info!(devices = n, "refreshing inventory");
            for chunk in due.chunks(10_000) {
                self.request_inventory(chunk.to_vec()).await?;
            }
        }
        Ok((n, evaluated))
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
