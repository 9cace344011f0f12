//! Installing and removing catalog apps, licences, and what devices say.
//!
//! **Install.** Targets are checked first (enrolled, not a User Enrollment
//! for a device licence, serial number known). For an App Store app the
//! serial numbers without a licence are counted against the licences Apple
//! says are available: too few refuses the whole request with nothing sent.
//! The licence records are written (`associating`), Apple is asked to
//! associate and its event is awaited; serials Apple refused fail alone.
//! Only then is `InstallApplication` queued (`iTunesStoreID`, `Options`
//! `PurchaseMethod` 1: the device licence, no Apple Account), or for an
//! in-house app its per-device manifest URL. Each target's `DeviceApp`
//! record says where it stands.
//!
//! **Results.** `InstallApplication`'s answer (`State`, an error chain),
//! `ManagedApplicationList` (`Status`) and `InstalledApplicationList`
//! (versions) move each record: queued, installing, installed (with the
//! version), failed (with the reason), rejected (by the user),
//! update_available, removing.
//!
//! **Leaving.** `RemoveApplication` releases the licence; so does a device
//! checking out or being erased (every licence of its serial). The leased
//! `sync` finishes what a crash interrupted (`associating` records Apple
//! completed or not), releases licences of devices no longer enrolled, and
//! refreshes licence counts and App Store versions.

use std::collections::{BTreeMap, HashMap};

use plist::Value;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::catalog::{AppKind, AppRecord};
use super::{read, to_json, Apps, AppsFailure, DEVICE_APPS, LICENCES};
use crate::clock::{now, rfc3339};
use crate::service::commands::CommandInput;
use crate::service::ServiceError;
use crate::store::{RecordWrite, StoreError};
use crate::vpp::VppError;

/// Most targets in one request.
pub const MAX_TARGETS: usize = 100_000;

/// One device's state of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceApp {
    pub app: String,
    pub enrollment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// queued, installing, installed, failed, rejected, update_available, removing.
    pub state: String,
    /// The version the device reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The catalog version last sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A licence is associated with its serial number for this app.
    #[serde(default)]
    pub licence: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub updated_at: i64,
    /// When mdmd last asked the device for its managed apps about this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<i64>,
}

impl DeviceApp {
    /// The device has (or is getting) the app.
    pub fn holds(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "installing" | "installed" | "update_available")
    }

    pub fn view(&self) -> Json {
        json!({
            "app": self.app,
            "enrollment": self.enrollment,
            "serial": self.serial,
            "state": self.state,
            "version": self.version,
            "error": self.error,
            "licence": self.licence,
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

/// A licence mdmd associated (or is associating).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Licence {
    pub token: String,
    pub adam_id: String,
    pub pricing_param: String,
    pub serial: String,
    pub enrollment: String,
    pub app: String,
    /// associating, associated.
    pub state: String,
    pub at: i64,
}

pub(super) fn licence_key(token: &str, adam: &str, serial: &str) -> String {
    format!("{token}/{adam}/{serial}")
}

pub(super) fn device_app_key(app: &str, enrollment: &str) -> String {
    format!("{app}/{enrollment}")
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct InstallReport {
    pub queued: u64,
    pub licences_associated: u64,
    pub failed: Vec<crate::service::commands::Failed>,
    /// Target → the command queued for it.
    #[serde(skip)]
    pub commands: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct RemoveReport {
    pub queued: u64,
    pub licences_released: u64,
    pub failed: Vec<crate::service::commands::Failed>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
#[schema(as = AppsSyncReport)]
pub struct SyncReport {
    pub tokens: usize,
    pub assets: usize,
    pub released: usize,
    pub errors: Vec<String>,
}

/// What `install` may be told besides the app.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// A configuration in place of the catalog's (a blueprint's own).
    pub configuration: Option<Json>,
}

fn fail(target: &str, error: impl Into<String>) -> crate::service::commands::Failed {
    crate::service::commands::Failed {
        target: target.to_owned(),
        error: error.into(),
    }
}

/// Apple's `State`/`Status` → ours.
pub(super) fn state_of(apple: &str) -> &'static str {
    match apple {
        "Managed" => "installed",
        "Failed" => "failed",
        "UserRejected" | "UpdateRejected" | "ManagementRejected" => "rejected",
        "ManagedButUninstalled" => "removed",
        "UserInstalledApp" => "failed",
        _ => "installing",
    }
}

impl Apps {
    /// Install a catalog app on devices.
    pub async fn install(&self, id: &str, targets: Vec<String>, opts: InstallOptions) -> Result<InstallReport, AppsFailure> {
        if targets.len() > MAX_TARGETS {
            return Err(AppsFailure::Invalid(format!("at most {MAX_TARGETS} targets at once")));
        }
        let app = self.app(id).await?;
        let mut report = InstallReport::default();
        let mut targets = targets;
        targets.sort();
        targets.dedup();
        // Who can have it.
        let mut ok: Vec<(String, Option<String>)> = Vec::new();
        for t in targets {
            let Some(e) = self.store.enrollment(&t).await? else {
                report.failed.push(fail(&t, "no such enrollment"));
                continue;
            };
            if !e.active || e.checked_out_at.is_some() {
                report.failed.push(fail(&t, "not enrolled (checked out or not finished)"));
                continue;
            }
            let serial = e.info.serial_number.clone().filter(|s| !s.trim().is_empty());
            if app.kind == AppKind::AppStore {
                if e.is_user_enrollment() {
                    report.failed.push(fail(
                        &t,
                        "a User Enrollment (personal device) does not say its serial number: a device licence cannot be assigned to it",
                    ));
                    continue;
                }
                if serial.is_none() {
                    report.failed.push(fail(
                        &t,
                        "its serial number is not known yet (it is read at the first inventory): try again shortly",
                    ));
                    continue;
                }
            }
            ok.push((t, serial));
        }
        if ok.is_empty() {
            return Ok(report);
        }
        let mut with_licence: Vec<(String, Option<String>)> = Vec::new();
        if app.kind == AppKind::AppStore {
            let (token, adam, pp) = store_ids(&app)?;
            let keys: Vec<String> = ok
                .iter()
                .map(|(_, s)| licence_key(&token, &adam, s.as_deref().unwrap_or_default()))
                .collect();
            let have = self.store.records_of(LICENCES, keys).await?;
            let mut need: Vec<(String, String)> = Vec::new();
            let mut unsure: Vec<(String, String, Licence)> = Vec::new();
            for ((t, s), rec) in ok.iter().zip(have) {
                let Some(s) = s else { continue };
                let lic = rec.and_then(|r| serde_json::from_value::<Licence>(r.value).ok());
                match lic {
                    None => need.push((t.clone(), s.clone())),
                    Some(l) if l.enrollment != *t && self.enrolled(&l.enrollment).await? => report.failed.push(fail(
                        t,
                        format!(
                            "its serial number {s} already holds this app's licence for enrollment {}: two enrolled devices cannot share a serial number",
                            l.enrollment
                        ),
                    )),
                    Some(l) if l.state == "associated" => {
                        if l.enrollment != *t {
                            // The same serial re-enrolled under another id: the licence follows it.
                            self.adopt_licence(&token, &adam, s, t, &l).await?;
                        }
                        with_licence.push((t.clone(), Some(s.clone())));
                    }
                    Some(l) => unsure.push((t.clone(), s.clone(), l)),
                }
            }
            // Associations not confirmed yet (a timeout, a crash): Apple's assignments say.
            if !unsure.is_empty() {
                let client = self.client(&token).await?;
                for (t, s, l) in unsure {
                    if client.assignments(Some(&adam), Some(&s)).await?.is_empty() {
                        self.store.delete_record(LICENCES, &licence_key(&token, &adam, &s), None).await?;
                        need.push((t, s));
                    } else {
                        let mut done = l.clone();
                        done.state = "associated".into();
                        self.adopt_licence(&token, &adam, &s, &t, &done).await?;
                        with_licence.push((t, Some(s)));
                    }
                }
            }
            if !need.is_empty() {
                let client = self.client(&token).await?;
                let assets = client.assets().await?;
                let available = assets.iter().find(|a| a.adam_id == adam).map_or(0, |a| a.available_count.max(0));
                if need.len() as i64 > available {
                    return Err(AppsFailure::Conflict(format!(
                        "only {available} licence(s) of {} ({adam}) are available and {} device(s) need one: nothing was sent. Buy more in Apple Business Manager, or remove the app from devices that no longer need it",
                        app.name,
                        need.len()
                    )));
                }
                let (done, failed) = self.associate(&app, &token, &adam, &pp, &need).await?;
                report.licences_associated = done.len() as u64;
                for (t, why) in failed {
                    report.failed.push(fail(&t, why));
                }
                with_licence.extend(done.into_iter().map(|(t, s)| (t, Some(s))));
            }
        } else {
            with_licence = ok;
        }
        if with_licence.is_empty() {
            return Ok(report);
        }
        self.queue_install(&app, &with_licence, &opts, &mut report).await?;
        Ok(report)
    }

    /// Is this enrollment enrolled (active, not checked out)?
    pub(super) async fn enrolled(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .enrollment(id)
            .await?
            .is_some_and(|e| e.active && e.checked_out_at.is_none()))
    }

    /// Record a licence as this enrollment's (associated).
    async fn adopt_licence(&self, token: &str, adam: &str, serial: &str, enrollment: &str, l: &Licence) -> Result<(), StoreError> {
        let mut mine = l.clone();
        mine.enrollment = enrollment.to_owned();
        mine.state = "associated".into();
        mine.at = now();
        self.store
            .put_record(LICENCES, &licence_key(token, adam, serial), to_json(&mine), now(), None)
            .await?;
        Ok(())
    }

    /// Associate licences with serials: (target, serial) done, (target, why) failed.
    #[allow(clippy::type_complexity)]
    async fn associate(
        &self,
        app: &AppRecord,
        token: &str,
        adam: &str,
        pp: &str,
        need: &[(String, String)],
    ) -> Result<(Vec<(String, String)>, Vec<(String, String)>), AppsFailure> {
        let t = now();
        let writes: Vec<RecordWrite> = need
            .iter()
            .map(|(target, serial)| RecordWrite {
                collection: LICENCES.into(),
                key: licence_key(token, adam, serial),
                value: to_json(&Licence {
                    token: token.to_owned(),
                    adam_id: adam.to_owned(),
                    pricing_param: pp.to_owned(),
                    serial: serial.clone(),
                    enrollment: target.clone(),
                    app: app.id.clone(),
                    state: "associating".into(),
                    at: t,
                }),
                expect: None,
            })
            .collect();
        self.store.put_records(writes, t).await?;
        let serials: Vec<String> = need.iter().map(|(_, s)| s.clone()).collect();
        let client = self.client(token).await?;
        let undo = |serials: Vec<String>| async move {
            for s in serials {
                let _ = self.store.delete_record(LICENCES, &licence_key(token, adam, &s), None).await;
            }
        };
        let events = match client.associate(adam, pp, &serials).await {
            Ok(ev) => ev,
            Err(e) => {
                undo(serials).await;
                return Err(match e {
                    VppError::NoLicences { .. } => AppsFailure::Conflict(e.to_string()),
                    other => AppsFailure::Apple(other),
                });
            }
        };
        let mut refused: HashMap<String, String> = HashMap::new();
        let mut unsure = false;
        for ev in events {
            match client.wait_event(&ev, self.cfg.event_timeout).await {
                Ok(_) => {}
                Err(VppError::EventFailed(failures)) => {
                    for f in failures {
                        let why = match f.error_number {
                            Some(crate::vpp::errors::NOT_ENOUGH_LICENSES) => {
                                format!("no licences of {} are left (Apple, error 9709)", app.name)
                            }
                            n => format!(
                                "Apple did not assign the licence{}: {}",
                                n.map(|n| format!(" (error {n})")).unwrap_or_default(),
                                f.error_message.unwrap_or_default()
                            ),
                        };
                        match f.serial_number {
                            Some(s) => {
                                refused.insert(s, why);
                            }
                            None => {
                                for s in &serials {
                                    refused.entry(s.clone()).or_insert_with(|| why.clone());
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(app = %app.id, error = %e, "licence association not confirmed; the sync will finish it");
                    unsure = true;
                }
            }
        }
        if unsure {
            return Err(AppsFailure::Service(ServiceError::Busy(
                "Apple has not finished assigning the licences yet: try again in a minute".into(),
            )));
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut writes = Vec::new();
        let t = now();
        for (target, serial) in need {
            match refused.get(serial) {
                Some(why) => {
                    let _ = self.store.delete_record(LICENCES, &licence_key(token, adam, serial), None).await;
                    failed.push((target.clone(), why.clone()));
                }
                None => {
                    writes.push(RecordWrite {
                        collection: LICENCES.into(),
                        key: licence_key(token, adam, serial),
                        value: to_json(&Licence {
                            token: token.to_owned(),
                            adam_id: adam.to_owned(),
                            pricing_param: pp.to_owned(),
                            serial: serial.clone(),
                            enrollment: target.clone(),
                            app: app.id.clone(),
                            state: "associated".into(),
                            at: t,
                        }),
                        expect: None,
                    });
                    done.push((target.clone(), serial.clone()));
                }
            }
        }
        self.store.put_records(writes, t).await?;
        self.adjust_counts(&app.id, done.len() as i64).await;
        crate::metrics::get().app_licences_associated.inc_by(done.len() as u64);
        tracing::info!(app = %app.id, associated = done.len(), refused = failed.len(), "licences associated");
        Ok((done, failed))
    }

    /// The InstallApplication for one app (the manifest URL filled per device later).
    fn install_command(app: &AppRecord, configuration: Option<&Json>) -> Json {
        let mut c = json!({"RequestType": "InstallApplication"});
        if let Some(adam) = &app.adam_id {
            c["iTunesStoreID"] = adam.parse::<u64>().map(Json::from).unwrap_or(Json::Null);
            c["Options"] = json!({"PurchaseMethod": 1});
        }
        if let Some(f) = app.management_flags() {
            c["ManagementFlags"] = json!(f);
        }
        if let Some(conf) = configuration {
            c["Configuration"] = conf.clone();
        }
        c
    }

    async fn queue_install(
        &self,
        app: &AppRecord,
        targets: &[(String, Option<String>)],
        opts: &InstallOptions,
        report: &mut InstallReport,
    ) -> Result<(), AppsFailure> {
        let conf = opts.configuration.as_ref().or(app.configuration.as_ref());
        let base = Self::install_command(app, conf);
        let c = &self.commander;
        let ids: Vec<String> = targets.iter().map(|(t, _)| t.clone()).collect();
        let mut sent: BTreeMap<String, String> = BTreeMap::new();
        match app.kind {
            AppKind::AppStore => {
                let b = c
                    .enqueue(CommandInput::Json(base.clone()), ids.clone(), true)
                    .await
                    .map_err(command_failure)?;
                for f in b.failed {
                    report.failed.push(f);
                }
                for t in &ids {
                    if let Some(u) = b.commands.get(t).or(b.command_uuid.as_ref()) {
                        if !report.failed.iter().any(|f| &f.target == t) && !b.unknown_targets.contains(t) {
                            sent.insert(t.clone(), u.clone());
                        }
                    }
                }
            }
            AppKind::InHouse => {
                for t in &ids {
                    let Some(url) = self.manifest_url(app, t) else {
                        report.failed.push(fail(
                            t,
                            "in-house app links are out of service: the key they are signed with does not open (see /v1/health)",
                        ));
                        continue;
                    };
                    let mut cmd = base.clone();
                    cmd["ManifestURL"] = json!(url);
                    match c.enqueue(CommandInput::Json(cmd), vec![t.clone()], false).await {
                        Ok(b) => {
                            report.failed.extend(b.failed);
                            if let Some(u) = b.commands.get(t).or(b.command_uuid.as_ref()) {
                                sent.insert(t.clone(), u.clone());
                            }
                        }
                        Err(e) => report.failed.push(fail(t, e.to_string())),
                    }
                }
            }
        }
        // A configuration with token variables is re-sent alone when the token changes.
        if let (Some(conf), Some(access)) = (conf, c.access()) {
            bind_config(access, &app.bundle_id, conf, &sent.keys().cloned().collect::<Vec<_>>()).await;
        }
        let t = now();
        let serial_of: HashMap<&String, &Option<String>> = targets.iter().map(|(t, s)| (t, s)).collect();
        let writes: Vec<RecordWrite> = sent
            .iter()
            .map(|(target, uuid)| RecordWrite {
                collection: DEVICE_APPS.into(),
                key: device_app_key(&app.id, target),
                value: to_json(&DeviceApp {
                    app: app.id.clone(),
                    enrollment: target.clone(),
                    serial: serial_of.get(target).and_then(|s| (*s).clone()),
                    state: "queued".into(),
                    version: None,
                    sent_version: Some(app.version.clone()),
                    error: None,
                    licence: app.kind == AppKind::AppStore,
                    command: Some(uuid.clone()),
                    updated_at: t,
                    polled_at: None,
                }),
                expect: None,
            })
            .collect();
        report.queued = sent.len() as u64;
        self.store.put_records(writes, t).await?;
        if app.kind == AppKind::InHouse {
            // Woken once the records exist: a link works only for a device whose record says it was sent.
            c.mdm.wake(sent.keys().cloned().collect());
        }
        report.commands = sent;
        crate::metrics::get().app_installs.inc_by(report.queued);
        Ok(())
    }

    /// Remove a catalog app from devices and release their licences.
    pub async fn remove(&self, id: &str, targets: Vec<String>) -> Result<RemoveReport, AppsFailure> {
        if targets.len() > MAX_TARGETS {
            return Err(AppsFailure::Invalid(format!("at most {MAX_TARGETS} targets at once")));
        }
        let app = self.app(id).await?;
        let mut report = RemoveReport::default();
        let mut known = Vec::new();
        for t in targets {
            match self.store.enrollment(&t).await? {
                Some(_) => known.push(t),
                None => report.failed.push(fail(&t, "no such enrollment")),
            }
        }
        if known.is_empty() {
            return Ok(report);
        }
        let cmd = json!({"RequestType": "RemoveApplication", "Identifier": app.bundle_id});
        let b = self
            .commander
            .enqueue(CommandInput::Json(cmd), known.clone(), true)
            .await
            .map_err(command_failure)?;
        report.queued = b.queued;
        let t = now();
        for target in &known {
            let key = device_app_key(&app.id, target);
            let uuid = b.commands.get(target).or(b.command_uuid.as_ref()).cloned();
            let _ = super::update::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &key, |d| {
                d.state = "removing".into();
                d.command = uuid.clone();
                d.error = None;
                d.updated_at = t;
            })
            .await?;
        }
        report.licences_released = self.release_for(&app, &known).await? as u64;
        Ok(report)
    }

    /// Release the app's licences held by these enrollments' serials.
    async fn release_for(&self, app: &AppRecord, enrollments: &[String]) -> Result<usize, AppsFailure> {
        if app.kind != AppKind::AppStore {
            return Ok(0);
        }
        let (token, adam, _) = store_ids(app)?;
        // The serial it says now and the one its licence was given for.
        let mut keys: Vec<(String, String)> = Vec::new();
        for e in enrollments {
            let mut serials: Vec<String> = Vec::new();
            if let Some(en) = self.store.enrollment(e).await? {
                serials.extend(en.info.serial_number.filter(|s| !s.is_empty()));
            }
            if let Some((d, _)) = read::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &device_app_key(&app.id, e)).await? {
                serials.extend(d.serial.filter(|s| !serials.contains(s)));
            }
            keys.extend(serials.into_iter().map(|s| (e.clone(), licence_key(&token, &adam, &s))));
        }
        let just_keys: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
        let mut held = Vec::new();
        for ((e, k), r) in keys.iter().zip(self.store.records_of(LICENCES, just_keys).await?) {
            // Only the licence this enrollment was given: a device naming another's serial releases nothing.
            if let Some(l) = r
                .and_then(|r| serde_json::from_value::<Licence>(r.value).ok())
                .filter(|l| l.enrollment == *e)
            {
                held.push((k.clone(), l));
            }
        }
        self.release(held).await
    }

    /// Disassociate licences (grouped per token and app) and forget them.
    pub(crate) async fn release(&self, held: Vec<(String, Licence)>) -> Result<usize, AppsFailure> {
        let mut groups: BTreeMap<(String, String, String), Vec<(String, String)>> = BTreeMap::new();
        for (k, l) in held {
            groups
                .entry((l.token.clone(), l.adam_id.clone(), l.pricing_param.clone()))
                .or_default()
                .push((k, l.serial));
        }
        let mut released = 0;
        for ((token, adam, pp), list) in groups {
            let client = self.client(&token).await?;
            let serials: Vec<String> = list.iter().map(|(_, s)| s.clone()).collect();
            let events = client.disassociate(&adam, &pp, &serials).await?;
            let mut gone_anyway: Vec<String> = Vec::new();
            for ev in events {
                match client.wait_event(&ev, self.cfg.event_timeout).await {
                    Ok(_) => {}
                    // A serial that holds no licence (9610) is released all the same.
                    Err(VppError::EventFailed(f)) => {
                        for x in f {
                            if x.error_number != Some(crate::vpp::errors::LICENSE_NOT_FOUND) {
                                if let Some(s) = x.serial_number {
                                    tracing::warn!(app = %adam, serial = %s, error = ?x.error_message, "licence not released");
                                    gone_anyway.push(s);
                                }
                            }
                        }
                    }
                    Err(e) => return Err(AppsFailure::Apple(e)),
                }
            }
            let mut by_app: BTreeMap<String, i64> = BTreeMap::new();
            for (k, s) in &list {
                if gone_anyway.contains(s) {
                    continue;
                }
                if let Some((l, _)) = read::<Licence>(self.store.as_ref(), LICENCES, k).await? {
                    *by_app.entry(l.app).or_default() += 1;
                }
                self.store.delete_record(LICENCES, k, None).await?;
                released += 1;
            }
            for (app, n) in by_app {
                self.adjust_counts(&app, -n).await;
            }
        }
        crate::metrics::get().app_licences_released.inc_by(released as u64);
        Ok(released)
    }

    /// A device left (checked out, erased): release every licence of its
    /// serial mdmd associated, and forget its app states.
    pub async fn device_left(&self, enrollment: &str) -> Result<usize, AppsFailure> {
        // The licences its serial can hold: one per App Store app of the catalog.
        let apps = self.catalog().await?;
        let serial = self
            .store
            .enrollment(enrollment)
            .await?
            .and_then(|e| e.info.serial_number)
            .filter(|s| !s.is_empty());
        let mut keys = Vec::new();
        for a in apps.iter().filter(|a| a.kind == AppKind::AppStore) {
            let Ok((token, adam, _)) = store_ids(a) else { continue };
            let mut serials: Vec<String> = serial.iter().cloned().collect();
            if let Some((d, _)) = read::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &device_app_key(&a.id, enrollment)).await? {
                serials.extend(d.serial.filter(|s| serial.as_ref() != Some(s)));
            }
            for s in serials {
                keys.push(licence_key(&token, &adam, &s));
            }
        }
        let mut held = Vec::new();
        for (k, r) in keys.iter().zip(self.store.records_of(LICENCES, keys.clone()).await?) {
            if let Some(l) = r.and_then(|r| serde_json::from_value::<Licence>(r.value).ok()) {
                if l.enrollment == enrollment {
                    held.push((k.clone(), l));
                }
            }
        }
        let n = self.release(held).await?;
        for a in &apps {
            let _ = self
                .store
                .delete_record(DEVICE_APPS, &device_app_key(&a.id, enrollment), None)
                .await;
        }
        if n > 0 {
            tracing::info!(%enrollment, licences = n, "device left: licences released");
        }
        Ok(n)
    }

    /// One device's apps.
    pub async fn device_view(&self, enrollment: &str) -> Result<Vec<Json>, StoreError> {
        let apps = self.catalog().await?;
        let keys: Vec<String> = apps.iter().map(|a| device_app_key(&a.id, enrollment)).collect();
        let mut out = Vec::new();
        for (a, r) in apps.iter().zip(self.store.records_of(DEVICE_APPS, keys).await?) {
            if let Some(d) = r.and_then(|r| serde_json::from_value::<DeviceApp>(r.value).ok()) {
                let mut v = d.view();
                v["name"] = json!(a.name);
                v["catalog_version"] = json!(a.version);
                out.push(v);
            }
        }
        Ok(out)
    }

    /// A new version: sent to every device that has the app (or is getting it).
    pub(super) async fn offer_update(&self, app: &AppRecord) -> Result<usize, AppsFailure> {
        let targets: Vec<String> = self
            .device_apps(&app.id)
            .await?
            .into_iter()
            .filter(|d| d.holds() && d.sent_version.as_deref() != Some(app.version.as_str()) || d.state == "update_available")
            .map(|d| d.enrollment)
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let r = self.install(&app.id, targets, InstallOptions::default()).await?;
        Ok(r.queued as usize)
    }
}

fn store_ids(app: &AppRecord) -> Result<(String, String, String), AppsFailure> {
    match (&app.token, &app.adam_id) {
        (Some(t), Some(a)) => Ok((t.clone(), a.clone(), app.pricing_param.clone().unwrap_or_else(|| "STDQ".into()))),
        _ => Err(AppsFailure::Service(ServiceError::internal(
            "a catalog App Store app without its token or Adam id",
            std::io::Error::other(app.id.clone()),
        ))),
    }
}

fn command_failure(e: crate::service::commands::CommandError) -> AppsFailure {
    match e {
        crate::service::commands::CommandError::Service(s) => AppsFailure::Service(s),
        other => AppsFailure::Invalid(other.to_string()),
    }
}

/// Remember a configuration that carries token variables, so a token
/// rotation re-sends the configuration alone (Settings ApplicationConfiguration).
async fn bind_config(access: &std::sync::Arc<crate::service::access::tokens::Access>, bundle: &str, conf: &Json, sent: &[String]) {
    let probe = json!({"RequestType": "InstallApplication", "iTunesStoreID": 1, "Configuration": conf});
    let Ok((d, _)) = crate::service::commands::Commander::validated(CommandInput::Json(probe)) else {
        return;
    };
    let Some(conf) = d.get("Configuration").and_then(Value::as_dictionary) else {
        return;
    };
    let mut used = std::collections::BTreeSet::new();
    crate::profiles::vars::used(&Value::Dictionary(conf.clone()), &mut used);
    let per_device = used.contains("DEVICE_ACCESS_TOKEN") || used.contains("DERIVED_CREDENTIAL_TOKEN");
    if !(per_device || used.contains("ACCESS_TOKEN")) || sent.is_empty() {
        return;
    }
    if let Err(e) = access.bind_app_config(bundle, conf, sent, per_device).await {
        tracing::warn!(app = %bundle, error = %e, "app configuration not remembered for token rotation");
    }
}
