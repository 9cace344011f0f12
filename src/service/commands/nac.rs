//! Network access control's actions on one device: Cisco ISE's
//! `pin_lock`, `full_wipe` and `corporate_wipe` (docs/ise.md).
//!
//! - `pin_lock`: DeviceLock.
//! - `full_wipe`: EraseDevice (the app catalog gives the device's licences
//!   back when the device acknowledges it).
//! - `corporate_wipe`: take back what mdmd put on the device, leave the
//!   user's own apps and data, and keep the device enrolled (the MDM
//!   enrollment profile is never removed: that would be an unenrollment,
//!   which ISE does not ask for). In this order:
//!   1. every managed app mdmd knows on the device, with its data
//!      (RemoveApplication): the app catalog's apps the device holds
//!      (queued, installing, installed, update available: `app_devices`
//!      records), removed through the catalog so their Apps and Books
//!      licences go back (ISE waits at most `CATALOG_WAIT` for Apple to
//!      confirm a release; it goes on after the answer); and the apps the device itself last reported
//!      managed (or on their way) in a ManagedApplicationList answer, unless
//!      a RemoveApplication of them was queued or done since. (An
//!      InstallApplication's answer is not taken: before the app is
//!      downloaded its `Identifier` may be a placeholder.) A list only
//!      updates the apps it names: one asked with `Identifiers` says nothing
//!      of the others;
//!   2. every provisioning profile mdmd installed (RemoveProvisioningProfile);
//!   3. every configuration profile mdmd installed that is on the device or
//!      on its way (RemoveProfile; their Wi-Fi, VPN, mail and app payloads
//!      go with them).
//!
//! How mdmd knows its provisioning profiles and the managed apps outside
//! the catalog: from the device's command history (its newest `HISTORY`
//! commands, in queue order). A provisioning profile is mdmd's when the
//! device acknowledged an InstallProvisioningProfile carrying it (the UUID
//! is read from the CMS-signed plist inside the stored command); it stops
//! counting when a RemoveProvisioningProfile of it is queued or
//! acknowledged, or when a later ProvisioningProfileList answer no longer
//! lists it. A ProvisioningProfileList answer alone adds nothing: iOS lists
//! the provisioning profiles apps brought too, and those are not mdmd's to
//! remove. (Inventory does not keep ProvisioningProfileList or
//! ManagedApplicationList answers; the history does, with each answer.)
//!
//! A wipe with nothing to remove queues nothing and says so; what a wipe
//! queued is logged (`NAC action queued`, with the bundle ids, profile
//! identifiers and provisioning profile UUIDs) and is in the device's
//! command list (`GET /v1/devices/{id}/commands`). ISE's answer has only
//! `action_status` and `failure_reason`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use plist::{Dictionary, Value};
use serde::Serialize;

use super::{CommandError, CommandInput, Commander};
use crate::service::apps::{Apps, AppsFailure, DeviceApp, DEVICE_APPS};
use crate::store::{DeliveryStatus, InventoryItem, ProfileState};

/// How many of a device's newest commands a corporate wipe reads.
pub const HISTORY: usize = 5000;

/// How long a corporate wipe waits for a catalog app's removal (the
/// licence release included) before it answers.
const CATALOG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a corporate wipe with nothing to remove answers.
pub const NOTHING_INSTALLED: &str = "nothing to remove: no managed app, configuration profile or provisioning profile \
that mdmd installed is on this device (or its removal is already queued); the enrollment stays";

/// What an action needs besides the commander.
pub struct NacContext<'a> {
    /// The app catalog: its apps are removed through it (licences go back).
    pub apps: &'a Arc<Apps>,
    /// The MDM enrollment profile's identifier: never removed.
    pub enrollment_profile: &'a str,
}

/// One command queued by an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Queued {
    pub request_type: String,
    /// What it acts on: a bundle id, profile identifier or provisioning
    /// profile UUID (empty for DeviceLock and EraseDevice).
    pub target: String,
}

/// What an action queued.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NacOutcome {
    pub action: String,
    pub queued: Vec<Queued>,
    /// Parts that did not go as asked (a licence not released, a command
    /// not queued); the rest was queued.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl NacOutcome {
    fn new(action: &str) -> Self {
        NacOutcome {
            action: action.to_owned(),
            ..NacOutcome::default()
        }
    }

    fn push(&mut self, request_type: &str, target: &str) {
        self.queued.push(Queued {
            request_type: request_type.to_owned(),
            target: target.to_owned(),
        });
    }

    /// Something was queued.
    pub fn applied(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Why nothing was queued (for ISE's `failure_reason`).
    pub fn why_nothing(&self) -> String {
        if self.action == "corporate_wipe" {
            NOTHING_INSTALLED.to_owned()
        } else {
            "the command was not queued: the device is not enrolled".to_owned()
        }
    }

    /// The targets of one request type, in the order queued.
    pub fn targets(&self, request_type: &str) -> Vec<&str> {
        self.queued
            .iter()
            .filter(|q| q.request_type == request_type)
            .map(|q| q.target.as_str())
            .collect()
    }

    /// `RemoveApplication a, b; RemoveProfile c` (for logs).
    pub fn summary(&self) -> String {
        let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for q in &self.queued {
            let v = by.entry(q.request_type.as_str()).or_default();
            if !q.target.is_empty() {
                v.push(q.target.as_str());
            }
        }
        by.iter()
            .map(|(rt, t)| {
                if t.is_empty() {
                    (*rt).to_owned()
                } else {
                    format!("{rt} {}", t.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One entry of a device's command history, as a corporate wipe reads it.
#[derive(Debug, Clone)]
pub struct Past {
    pub request_type: String,
    pub status: DeliveryStatus,
    /// The command as sent (for the types that name what they act on).
    pub command: Option<Dictionary>,
    /// The device's answer (acknowledged queries).
    pub answer: Option<Dictionary>,
}

/// What the history says mdmd put on the device and is still there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// Managed apps (bundle ids).
    pub apps: BTreeSet<String>,
    /// Provisioning profiles mdmd installed (UUIDs).
    pub provisioning: BTreeSet<String>,
}

/// ManagedApplicationList statuses of an app that is managed and on the
/// device or on its way. Not: ManagedButUninstalled (the user removed it),
/// Unknown, PromptingForManagement (not managed yet), and the transient
/// UserInstalledApp, UserRejected, ManagementRejected, Failed.
const PRESENT: [&str; 13] = [
    "Queued",
    "NeedsRedemption",
    "Redeeming",
    "Prompting",
    "PromptingForLogin",
    "ValidatingPurchase",
    "PromptingForUpdate",
    "PromptingForUpdateLogin",
    "ValidatingUpdate",
    "Updating",
    "Installing",
    "Managed",
    "UpdateRejected",
];

/// The managed apps and provisioning profiles a device's history (oldest
/// first) says mdmd put there and are still there.
pub fn known_from_history(history: &[Past]) -> Known {
    let mut k = Known::default();
    let s = |d: Option<&Dictionary>, key: &str| d.and_then(|d| d.get(key)).and_then(Value::as_string).map(str::to_owned);
    for p in history {
        let done = p.status == DeliveryStatus::Acknowledged;
        let queued_or_done = done || p.status.is_pending();
        match p.request_type.as_str() {
            "ManagedApplicationList" if done => {
                let list = p
                    .answer
                    .as_ref()
                    .and_then(|a| a.get("ManagedApplicationList"))
                    .and_then(Value::as_dictionary);
                for (bundle, item) in list.into_iter().flatten() {
                    let status = item.as_dictionary().and_then(|d| d.get("Status")).and_then(Value::as_string);
                    if status.is_some_and(|st| PRESENT.contains(&st)) {
                        k.apps.insert(bundle.clone());
                    } else {
                        k.apps.remove(bundle);
                    }
                }
            }
            "RemoveApplication" if queued_or_done => {
                if let Some(id) = s(p.command.as_ref(), "Identifier") {
                    k.apps.remove(&id);
                }
            }
            "InstallProvisioningProfile" if done => {
                if let Some(uuid) = p
                    .command
                    .as_ref()
                    .and_then(|c| c.get("ProvisioningProfile"))
                    .and_then(Value::as_data)
                    .and_then(provisioning_uuid)
                {
                    k.provisioning.insert(uuid);
                }
            }
            "RemoveProvisioningProfile" if queued_or_done => {
                if let Some(uuid) = s(p.command.as_ref(), "UUID") {
                    k.provisioning.retain(|u| !u.eq_ignore_ascii_case(&uuid));
                }
            }
            "ProvisioningProfileList" if done => {
                if let Some(list) = p
                    .answer
                    .as_ref()
                    .and_then(|a| a.get("ProvisioningProfileList"))
                    .and_then(Value::as_array)
                {
                    let on: Vec<String> = list
                        .iter()
                        .filter_map(|i| i.as_dictionary().and_then(|d| d.get("UUID")).and_then(Value::as_string))
                        .map(str::to_owned)
                        .collect();
                    k.provisioning.retain(|u| on.iter().any(|o| o.eq_ignore_ascii_case(u)));
                }
            }
            _ => {}
        }
    }
    k
}

/// The UUID of a provisioning profile (a CMS-signed plist, as Apple issues them).
pub fn provisioning_uuid(der: &[u8]) -> Option<String> {
    let content = crate::profiles::signed_content(der)?;
    let d = crate::protocol::limits::parse_dictionary(&content).ok()?;
    d.get("UUID")
        .and_then(Value::as_string)
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
}

/// The identifiers of the profiles the device lists that carry the MDM
/// payload (`com.apple.mdm`): its enrollment, never removed by a wipe.
fn enrollment_profiles(inventory: &[InventoryItem]) -> BTreeSet<String> {
    let list = inventory
        .iter()
        .find(|i| i.kind == "ProfileList")
        .and_then(|i| i.data.get("ProfileList"))
        .and_then(serde_json::Value::as_array);
    let mut out = BTreeSet::new();
    for p in list.into_iter().flatten() {
        let mdm = p.get("PayloadContent").and_then(serde_json::Value::as_array).is_some_and(|c| {
            c.iter()
                .any(|x| x.get("PayloadType").and_then(serde_json::Value::as_str) == Some("com.apple.mdm"))
        });
        if let (true, Some(id)) = (mdm, p.get("PayloadIdentifier").and_then(serde_json::Value::as_str)) {
            out.insert(id.to_owned());
        }
    }
    out
}

impl Commander {
    /// A network access control's action on one device (see the module):
    /// what was queued.
    pub async fn nac_action(&self, action: &str, id: &str, ctx: &NacContext<'_>) -> Result<NacOutcome, CommandError> {
        let mut out = NacOutcome::new(action);
        match action {
            "pin_lock" => {
                let c =
                    serde_json::json!({"RequestType": "DeviceLock", "Message": "Locked by your organisation's network access control."});
                if self.enqueue(CommandInput::Json(c), vec![id.to_owned()], true).await?.queued > 0 {
                    out.push("DeviceLock", "");
                }
            }
            "full_wipe" => {
                let c = serde_json::json!({"RequestType": "EraseDevice"});
                if self.enqueue(CommandInput::Json(c), vec![id.to_owned()], true).await?.queued > 0 {
                    out.push("EraseDevice", "");
                }
            }
            "corporate_wipe" => self.corporate_wipe(id, ctx, &mut out).await?,
            other => return Err(CommandError::NotFound(format!("unknown action {other}"))),
        }
        Ok(out)
    }

    async fn corporate_wipe(&self, id: &str, ctx: &NacContext<'_>, out: &mut NacOutcome) -> Result<(), CommandError> {
        let known = known_from_history(&self.history_of(id).await?);

        // 1. Managed apps: the catalog's through the catalog, the others by bundle id.
        let catalog = ctx.apps.catalog().await?;
        let keys: Vec<String> = catalog.iter().map(|a| format!("{}/{id}", a.id)).collect();
        let records = self.mdm.store.records_of(DEVICE_APPS, keys).await?;
        let mut apps: BTreeSet<String> = known.apps;
        let mut through_catalog: BTreeMap<String, String> = BTreeMap::new();
        for (a, r) in catalog.iter().zip(records) {
            let holds = r
                .and_then(|r| serde_json::from_value::<DeviceApp>(r.value).ok())
                .is_some_and(|d| d.holds());
            if holds {
                apps.insert(a.bundle_id.clone());
            }
            if apps.contains(&a.bundle_id) {
                through_catalog.insert(a.bundle_id.clone(), a.id.clone());
            }
        }
        for bundle in &apps {
            match through_catalog.get(bundle) {
                Some(app) => self.remove_catalog_app(ctx, app, bundle, id, out).await?,
                None => {
                    let c = serde_json::json!({"RequestType": "RemoveApplication", "Identifier": bundle});
                    if self.enqueue(CommandInput::Json(c), vec![id.to_owned()], true).await?.queued > 0 {
                        out.push("RemoveApplication", bundle);
                    }
                }
            }
        }

        // 2. Provisioning profiles mdmd installed.
        for uuid in &known.provisioning {
            let c = serde_json::json!({"RequestType": "RemoveProvisioningProfile", "UUID": uuid});
            if self.enqueue(CommandInput::Json(c), vec![id.to_owned()], true).await?.queued > 0 {
                out.push("RemoveProvisioningProfile", uuid);
            }
        }

        // 3. Configuration profiles mdmd installed, on the device or on their way; never the enrollment.
        let enrollment = enrollment_profiles(&self.mdm.store.inventory(id).await?);
        for p in self.mdm.store.device_profiles(id).await? {
            let there = matches!(
                p.state,
                ProfileState::Installed | ProfileState::Pending | ProfileState::RemoveFailed
            );
            if !there || p.identifier == ctx.enrollment_profile || enrollment.contains(&p.identifier) {
                continue;
            }
            if self.remove_profile(&p.identifier, vec![id.to_owned()], true).await?.queued > 0 {
                out.push("RemoveProfile", &p.identifier);
            }
        }
        Ok(())
    }

    /// Remove a catalog app through the catalog (its licence goes back).
    /// Apple's confirmation of the licence release may take a while
    /// (`--apps-event-timeout`): ISE is not kept waiting past
    /// `CATALOG_WAIT`; the removal goes on, and the app's record tells
    /// whether RemoveApplication was queued.
    async fn remove_catalog_app(
        &self,
        ctx: &NacContext<'_>,
        app: &str,
        bundle: &str,
        id: &str,
        out: &mut NacOutcome,
    ) -> Result<(), CommandError> {
        let apps = ctx.apps.clone();
        let (app_id, target) = (app.to_owned(), id.to_owned());
        let task = tokio::spawn(async move { apps.remove(&app_id, vec![target]).await });
        match tokio::time::timeout(CATALOG_WAIT, task).await {
            Ok(Ok(Ok(r))) if r.queued > 0 => out.push("RemoveApplication", bundle),
            Ok(Ok(Ok(r))) => out.warnings.push(format!(
                "RemoveApplication {bundle} not queued: {}",
                r.failed.iter().map(|f| f.error.as_str()).collect::<Vec<_>>().join("; ")
            )),
            // Queued; Apple's service did not take the licence back.
            Ok(Ok(Err(AppsFailure::Apple(e)))) => {
                out.push("RemoveApplication", bundle);
                out.warnings.push(format!("the licence of {bundle} was not released: {e}"));
            }
            Ok(Ok(Err(AppsFailure::Service(e)))) => return Err(CommandError::Service(e)),
            Ok(Ok(Err(e))) => out.warnings.push(format!("RemoveApplication {bundle} not queued: {e}")),
            Ok(Err(e)) => out.warnings.push(format!("RemoveApplication {bundle} not queued: {e}")),
            Err(_) => {
                let rec = self.mdm.store.record(DEVICE_APPS, &format!("{app}/{id}")).await?;
                let removing = rec
                    .and_then(|r| serde_json::from_value::<DeviceApp>(r.value).ok())
                    .is_some_and(|d| d.state == "removing");
                if removing {
                    out.push("RemoveApplication", bundle);
                    out.warnings.push(format!("the licence of {bundle} is still being released"));
                } else {
                    out.warnings.push(format!(
                        "RemoveApplication {bundle} not confirmed within {CATALOG_WAIT:?}; it may still be queued"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The device's newest commands (oldest first), with the sent command
    /// or the answer where a corporate wipe reads them.
    async fn history_of(&self, id: &str) -> Result<Vec<Past>, CommandError> {
        let mut out = Vec::new();
        for c in self.mdm.store.device_commands(id, HISTORY).await? {
            let st = c.delivery.status;
            let done = st == DeliveryStatus::Acknowledged;
            let body = match c.request_type.as_str() {
                "RemoveApplication" | "RemoveProvisioningProfile" => done || st.is_pending(),
                "InstallProvisioningProfile" => done,
                _ => false,
            };
            let answer = done && matches!(c.request_type.as_str(), "ManagedApplicationList" | "ProvisioningProfileList");
            if !body && !answer {
                continue;
            }
            let command = if body { self.sent_command(&c.command_uuid).await? } else { None };
            let answer = if answer {
                c.delivery
                    .result
                    .as_deref()
                    .and_then(|r| crate::protocol::limits::parse_dictionary(r).ok())
            } else {
                None
            };
            out.push(Past {
                request_type: c.request_type,
                status: st,
                command,
                answer,
            });
        }
        Ok(out)
    }

    /// A stored command's `Command` dictionary (secrets opened).
    async fn sent_command(&self, uuid: &str) -> Result<Option<Dictionary>, CommandError> {
        let Some((rec, _)) = self.mdm.store.command(uuid).await? else {
            return Ok(None);
        };
        let xml = match super::sealed::open(&self.mdm.secrets, uuid, &rec.body) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(command = %uuid, error = %e, "stored command does not open; left out of the wipe");
                return Ok(None);
            }
        };
        Ok(crate::protocol::Command::from_xml(&xml).ok().map(|c| c.command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: Vec<(&str, Value)>) -> Dictionary {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn past(rt: &str, status: DeliveryStatus, command: Option<Dictionary>, answer: Option<Dictionary>) -> Past {
        Past {
            request_type: rt.into(),
            status,
            command,
            answer,
        }
    }

    fn managed_list(items: &[(&str, &str)]) -> Past {
        let list: Dictionary = items
            .iter()
            .map(|(b, s)| ((*b).to_owned(), Value::Dictionary(dict(vec![("Status", (*s).into())]))))
            .collect();
        past(
            "ManagedApplicationList",
            DeliveryStatus::Acknowledged,
            None,
            Some(dict(vec![("ManagedApplicationList", Value::Dictionary(list))])),
        )
    }

    fn remove_app(bundle: &str, status: DeliveryStatus) -> Past {
        past("RemoveApplication", status, Some(dict(vec![("Identifier", bundle.into())])), None)
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn apps_follow_the_latest_list_and_removals() {
        let h = vec![
            managed_list(&[
                ("com.a", "Managed"),
                ("com.b", "Installing"),
                ("com.c", "ManagedButUninstalled"),
                ("com.d", "Managed"),
            ]),
            remove_app("com.d", DeliveryStatus::Acknowledged),
            // An install's answer adds nothing (its Identifier may be a placeholder).
            past(
                "InstallApplication",
                DeliveryStatus::Acknowledged,
                None,
                Some(dict(vec![("Identifier", "store.361309726".into()), ("State", "Queued".into())])),
            ),
            // A later list: com.b failed (transient), com.a still there, com.e coming.
            managed_list(&[("com.a", "Managed"), ("com.b", "Failed"), ("com.e", "Queued")]),
            // A removal still queued counts: the app is on its way out.
            remove_app("com.e", DeliveryStatus::Pending),
            // A removal the device refused does not.
            remove_app("com.a", DeliveryStatus::Error),
        ];
        let k = known_from_history(&h);
        assert_eq!(k.apps, set(&["com.a"]));
        assert!(k.provisioning.is_empty());
        // Unacknowledged lists say nothing.
        let mut l = managed_list(&[("com.x", "Managed")]);
        l.status = DeliveryStatus::Error;
        assert_eq!(known_from_history(&[l]), Known::default());
    }

    /// A CMS-signed plist with this UUID (as Apple signs provisioning profiles).
    fn signed_profile(uuid: &str) -> Vec<u8> {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509::X509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Apple Distribution").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>Name</key><string>In-House</string><key>UUID</key><string>{uuid}</string></dict></plist>"
        );
        openssl::cms::CmsContentInfo::sign(
            Some(&cert),
            Some(&key),
            None,
            Some(body.as_bytes()),
            openssl::cms::CMSOptions::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap()
    }

    fn install_pp(uuid: &str, status: DeliveryStatus) -> Past {
        past(
            "InstallProvisioningProfile",
            status,
            Some(dict(vec![("ProvisioningProfile", Value::Data(signed_profile(uuid)))])),
            None,
        )
    }

    fn pp_list(uuids: &[&str]) -> Past {
        let list = uuids
            .iter()
            .map(|u| Value::Dictionary(dict(vec![("UUID", (*u).into()), ("Name", "x".into())])))
            .collect();
        past(
            "ProvisioningProfileList",
            DeliveryStatus::Acknowledged,
            None,
            Some(dict(vec![("ProvisioningProfileList", Value::Array(list))])),
        )
    }

    #[test]
    fn provisioning_profiles_are_those_mdmd_installed_and_the_device_still_has() {
        assert_eq!(provisioning_uuid(&signed_profile("AAAA-1")).as_deref(), Some("AAAA-1"));
        assert_eq!(provisioning_uuid(b"not cms"), None);
        let h = vec![
            // Listed by the device but never installed by mdmd: not mdmd's.
            pp_list(&["APP-BROUGHT"]),
            install_pp("P-1", DeliveryStatus::Acknowledged),
            install_pp("P-2", DeliveryStatus::Acknowledged),
            install_pp("P-3", DeliveryStatus::Acknowledged),
            install_pp("P-4", DeliveryStatus::Error),
            install_pp("P-5", DeliveryStatus::Pending),
            past(
                "RemoveProvisioningProfile",
                DeliveryStatus::Acknowledged,
                Some(dict(vec![("UUID", "p-2".into())])),
                None,
            ),
            // The device no longer has P-3.
            pp_list(&["P-1", "APP-BROUGHT"]),
            past(
                "InstallProvisioningProfile",
                DeliveryStatus::Acknowledged,
                Some(dict(vec![("ProvisioningProfile", Value::Data(b"garbage".to_vec()))])),
                None,
            ),
        ];
        let k = known_from_history(&h);
        assert_eq!(k.provisioning, set(&["P-1"]));
        assert!(k.apps.is_empty());
    }

    #[test]
    fn the_enrollment_profile_is_recognised_by_its_mdm_payload() {
        let inv = vec![InventoryItem {
            kind: "ProfileList".into(),
            reported_at: 0,
            data: serde_json::json!({"ProfileList": [
                {"PayloadIdentifier": "com.example.enroll", "PayloadContent": [{"PayloadType": "com.apple.security.scep"}, {"PayloadType": "com.apple.mdm"}]},
                {"PayloadIdentifier": "com.example.wifi", "PayloadContent": [{"PayloadType": "com.apple.wifi.managed"}]},
            ]}),
        }];
        assert_eq!(enrollment_profiles(&inv), set(&["com.example.enroll"]));
        assert!(enrollment_profiles(&[]).is_empty());
    }

    #[test]
    fn outcome_summary_and_reasons() {
        let mut o = NacOutcome::new("corporate_wipe");
        assert!(!o.applied());
        assert_eq!(o.why_nothing(), NOTHING_INSTALLED);
        o.push("RemoveApplication", "com.a");
        o.push("RemoveApplication", "com.b");
        o.push("RemoveProfile", "com.example.wifi");
        assert!(o.applied());
        assert_eq!(o.targets("RemoveApplication"), vec!["com.a", "com.b"]);
        assert_eq!(o.summary(), "RemoveApplication com.a, com.b; RemoveProfile com.example.wifi");
        let mut l = NacOutcome::new("pin_lock");
        assert!(l.why_nothing().contains("not enrolled"));
        l.push("DeviceLock", "");
        assert_eq!(l.summary(), "DeviceLock");
    }
}
