//! Reconciling devices: read what each device is and has, work out the
//! difference (`model::plan_device`), queue it, record it.
//!
//! Devices are taken in chunks. Every command of a chunk that is the same
//! kind of thing (one profile, one app, one command) is queued for all of its
//! devices at once, so a blueprint edit that concerns the whole fleet costs
//! one store transaction per item and chunk, not one per device.
//!
//! One reconciler per device at a time, across instances: before queueing
//! anything for a device, its record is claimed with a compare-and-set on its
//! version (`Claim`, which expires); a device whose claim is lost or held by
//! another instance is left to that instance and looked at again shortly.
//! The final write releases the claim. Two instances reacting to the same
//! change therefore never queue the same install twice: the second finds the
//! claim, and then the first one's record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use serde_json::{json, Value as Json};

use super::model::*;
use super::rules::{self, DeviceFacts, Rule};
use super::Fleet;
use crate::clock::now;
use crate::service::ServiceError;
use crate::store::{DeliveryStatus, DeviceProfile, Enrollment, RecordWrite};

/// Devices read and planned together.
pub const CHUNK: usize = 1000;
/// How long a claim holds if its holder goes away (ms).
const CLAIM_MS: i64 = 120_000;
/// Reads in flight at once.
const READS: usize = 32;
/// How long single-device reconciles reuse one read of groups, blueprints and templates.
const SNAPSHOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Groups (compiled), blueprints and template versions, read once per run.
pub struct Snapshot {
    pub groups: Vec<(Group, Option<Arc<Rule>>)>,
    pub blueprints: Vec<Blueprint>,
    pub templates: Templates,
}

impl Snapshot {
    fn dynamic(&self) -> bool {
        self.groups.iter().any(|(_, r)| r.is_some())
    }

    /// The groups a device is in.
    pub fn memberships(&self, e: &Enrollment, device: Option<&cel::Value>) -> Vec<String> {
        let udid = e.udid.as_deref().unwrap_or(&e.id).to_uppercase();
        let serial = e.info.serial_number.as_deref().map(str::to_uppercase);
        let ctx = device.map(rules::context);
        self.groups
            .iter()
            .filter(|(g, rule)| match rule {
                Some(r) => ctx.as_ref().is_some_and(|c| r.matches_in(c)),
                None => g.members.iter().any(|m| *m == udid || Some(m) == serial.as_ref()),
            })
            .map(|(g, _)| g.name.clone())
            .collect()
    }
}

/// What one device is, has and should have.
pub struct Look {
    pub id: String,
    pub state: DeviceState,
    pub version: u64,
    pub groups: Vec<String>,
    pub desired: Desired,
    pub digest: String,
    pub profiles: Vec<DeviceProfile>,
    pub plan: DevicePlan,
    /// Not an enrolled device channel (any more): its record is emptied.
    pub gone: bool,
    /// `state` differs from the stored record already (results learned, a new enrollment).
    pub refreshed: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct RunStats {
    pub devices: usize,
    pub changed: usize,
    pub commands: u64,
    pub busy: usize,
}

impl Fleet {
    pub async fn snapshot(&self) -> Result<Snapshot, ServiceError> {
        let store = &self.commander.mdm.store;
        let mut groups = Vec::new();
        for g in self.all::<Group>(GROUPS).await? {
            let rule = match &g.rule {
                Some(src) => match self.compiled(src) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(group = %g.name, error = %e, "stored group rule does not compile: the group is empty");
                        continue;
                    }
                },
                None => None,
            };
            groups.push((g, rule));
        }
        let blueprints = self.all::<Blueprint>(BLUEPRINTS).await?;
        let mut templates = Templates::default();
        for t in store.templates().await? {
            let inner = self.inner_payloads(&t.sha256, &t.xml);
            templates.versions.insert(t.identifier, (t.sha256, inner));
        }
        if let Some(apps) = self.apps() {
            for a in apps.catalog().await? {
                templates.apps.insert(a.id.clone(), a.digest());
            }
        }
        Ok(Snapshot {
            groups,
            blueprints,
            templates,
        })
    }

    pub(super) fn compiled(&self, src: &str) -> Result<Arc<Rule>, rules::RuleError> {
        if let Some(r) = self.rules.lock().ok().and_then(|m| m.get(src).cloned()) {
            return Ok(r);
        }
        let r = Arc::new(Rule::compile(src)?);
        if let Ok(mut m) = self.rules.lock() {
            if m.len() > 1000 {
                m.clear();
            }
            m.insert(src.to_owned(), r.clone());
        }
        Ok(r)
    }

    /// The PayloadIdentifiers inside a template (cached by its hash).
    fn inner_payloads(&self, sha: &str, xml: &[u8]) -> Vec<String> {
        if let Some(v) = self.payloads.lock().ok().and_then(|m| m.get(sha).cloned()) {
            return v;
        }
        let ids: Vec<String> = crate::profiles::parse_stored(xml)
            .ok()
            .and_then(|d| d.get("PayloadContent").and_then(plist::Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_dictionary()?.get("PayloadIdentifier")?.as_string().map(str::to_owned))
            .collect();
        if let Ok(mut m) = self.payloads.lock() {
            if m.len() > 1000 {
                m.clear();
            }
            m.insert(sha.to_owned(), ids.clone());
        }
        ids
    }

    /// The device object rules see.
    pub async fn device_value(&self, e: &Enrollment) -> Result<Json, ServiceError> {
        let store = &self.commander.mdm.store;
        let inventory = store.inventory(&e.id).await?;
        let compliance = store.compliance(&e.id).await?;
        let mut ddm = BTreeMap::new();
        if let Some(d) = self.commander.mdm.ddm() {
            if let Ok(Some(s)) = d.status(&e.id).await {
                ddm = s.items.into_iter().map(|(k, v)| (k, v.value)).collect();
            }
        }
        Ok(rules::device_object(&DeviceFacts {
            enrollment: e,
            inventory: &inventory,
            compliance: compliance.as_ref(),
            ddm,
        }))
    }

    /// Look at one device: its groups (re-evaluated when `evaluate`), what it
    /// should have and the plan. `extra` replaces or adds a blueprint (a dry run).
    #[allow(clippy::too_many_arguments)]
    pub async fn look(
        &self,
        snap: &Snapshot,
        e: Option<Enrollment>,
        id: &str,
        record: Option<crate::store::Record>,
        evaluate: bool,
        full: bool,
    ) -> Result<Option<Look>, ServiceError> {
        let store = &self.commander.mdm.store;
        let (state, version) = match record {
            Some(r) => (
                serde_json::from_value::<DeviceState>(r.value).map_err(crate::store::StoreError::from)?,
                r.version,
            ),
            None => (DeviceState::default(), 0),
        };
        let Some(e) = e.filter(|e| e.id == e.device) else {
            return Ok(None);
        };
        let enrolled = e.active && e.checked_out_at.is_none();
        if !enrolled {
            if e.token_updated_at.is_none() && e.checked_out_at.is_none() {
                // Authenticated, not yet enrolled: nothing to do until TokenUpdate.
                return Ok(None);
            }
            if version == 0 || (state.groups.is_empty() && state.blueprints.is_empty() && state.claim.is_none()) {
                return Ok(None);
            }
            return Ok(Some(Look {
                id: id.to_owned(),
                state,
                version,
                groups: Vec::new(),
                desired: Desired::default(),
                digest: String::new(),
                profiles: Vec::new(),
                plan: DevicePlan::default(),
                gone: true,
                refreshed: false,
            }));
        }
        let stored = state.clone();
        let mut state = state;
        if state.epoch != e.enrolled_at {
            // A new enrollment: the device kept nothing from the last one.
            state.applied.clear();
            state.announced.clear();
            state.epoch = e.enrolled_at;
        }
        let groups = if evaluate || version == 0 {
            let obj = if snap.dynamic() {
                Some(rules::to_cel(&self.device_value(&e).await?))
            } else {
                None
            };
            snap.memberships(&e, obj.as_ref())
        } else {
            // Sweeps keep the memberships facts last gave (every fact change re-evaluates them).
            let known: BTreeSet<&str> = snap.groups.iter().map(|(g, _)| g.name.as_str()).collect();
            state.groups.iter().filter(|g| known.contains(g.as_str())).cloned().collect()
        };
        let set: BTreeSet<String> = groups.iter().cloned().collect();
        let desired = desired(&snap.blueprints, &set, &snap.templates);
        let digest = desired.digest(&groups);
        if !full && version > 0 && digest == state.digest && state.epoch == e.enrolled_at && state.claim.is_none() {
            return Ok(None);
        }
        // Results of app and command items still pending.
        if state
            .applied
            .values()
            .any(|a| a.kind != "profile" && a.state == ItemState::Pending && a.command.is_some())
        {
            let recent = store.device_commands(id, 200).await?;
            let mut drop_keys = Vec::new();
            for (k, a) in state
                .applied
                .iter_mut()
                .filter(|(_, a)| a.kind != "profile" && a.state == ItemState::Pending)
            {
                let Some(c) = recent.iter().find(|c| Some(&c.command_uuid) == a.command.as_ref()) else {
                    continue;
                };
                match c.delivery.status {
                    DeliveryStatus::Acknowledged => {
                        a.state = ItemState::Done;
                        // InstallApplication answers with the app's bundle id: what removal needs.
                        if a.kind == "app" && a.bundle_id.is_none() {
                            a.bundle_id = c
                                .delivery
                                .result
                                .as_deref()
                                .and_then(|r| crate::protocol::limits::parse_value(r).ok())
                                .and_then(|v| v.as_dictionary()?.get("Identifier")?.as_string().map(str::to_owned));
                        }
                    }
                    DeliveryStatus::Error | DeliveryStatus::CommandFormatError => {
                        a.state = ItemState::Failed;
                        a.error_chain = c.delivery.error_chain.clone();
                    }
                    DeliveryStatus::Cleared | DeliveryStatus::Superseded => drop_keys.push(k.clone()),
                    _ => {}
                }
            }
            for k in drop_keys {
                state.applied.remove(&k);
            }
        }
        let profiles = store.device_profiles(id).await?;
        let intent = state.claim.as_ref().map(|c| c.intent.clone()).unwrap_or_default();
        let plan = plan_device(&desired, &state, &profiles, &intent, now());
        let refreshed = state != stored;
        Ok(Some(Look {
            id: id.to_owned(),
            state,
            version,
            groups,
            desired,
            digest,
            profiles,
            plan,
            gone: false,
            refreshed,
        }))
    }

    /// Look at many devices (enrollments read here unless given).
    pub async fn look_many(
        &self,
        snap: &Snapshot,
        ids: Vec<String>,
        given: Option<Vec<Enrollment>>,
        evaluate: bool,
        full: bool,
    ) -> Result<Vec<Look>, ServiceError> {
        let store = self.commander.mdm.store.clone();
        let records = store.records_of(DEVICES, ids.clone()).await?;
        let enrollments: Vec<Option<Enrollment>> = match given {
            Some(list) => list.into_iter().map(Some).collect(),
            None => {
                let got: Vec<Result<Option<Enrollment>, ServiceError>> = stream::iter(ids.iter().cloned())
                    .map(|id| {
                        let store = store.clone();
                        async move { store.enrollment(&id).await.map_err(ServiceError::from) }
                    })
                    .buffered(READS)
                    .collect()
                    .await;
                got.into_iter().collect::<Result<_, _>>()?
            }
        };
        let looks: Vec<Result<Option<Look>, ServiceError>> = stream::iter(ids.into_iter().zip(enrollments).zip(records))
            .map(|((id, e), r)| async move { self.look(snap, e, &id, r, evaluate, full).await })
            .buffered(READS)
            .collect()
            .await;
        Ok(looks.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect())
    }

    /// The snapshot for reconciling single devices: read again at most every
    /// `SNAPSHOT_TTL` (a change of groups, blueprints or templates drops it at once).
    async fn recent_snapshot(&self) -> Result<Arc<Snapshot>, ServiceError> {
        if let Some((at, s)) = self.recent.lock().ok().and_then(|g| g.clone()) {
            if at.elapsed() < SNAPSHOT_TTL {
                return Ok(s);
            }
        }
        let s = Arc::new(self.snapshot().await?);
        if let Ok(mut g) = self.recent.lock() {
            *g = Some((std::time::Instant::now(), s.clone()));
        }
        Ok(s)
    }

    /// Reconcile these devices (fact changes, enrollment: groups re-evaluated, full comparison).
    pub async fn reconcile(&self, ids: Vec<String>) -> Result<RunStats, ServiceError> {
        let snap = self.recent_snapshot().await?;
        let mut stats = RunStats::default();
        if snap.groups.is_empty() && snap.blueprints.is_empty() {
            // Nothing to be in or to have (removals after the last blueprint went
            // are the whole-fleet run's and the sweep's).
            return Ok(stats);
        }
        for chunk in ids.chunks(CHUNK) {
            let looks = self.look_many(&snap, chunk.to_vec(), None, true, true).await?;
            stats.devices += chunk.len();
            self.apply(looks, &mut stats).await?;
        }
        Ok(stats)
    }

    /// Every enrolled device: with `evaluate`, groups are evaluated again (a
    /// group changed); with `full`, every device is compared in full, else only
    /// those whose wanted state moved (the periodic sweep, a blueprint change).
    pub async fn reconcile_all(&self, evaluate: bool, full: bool) -> Result<RunStats, ServiceError> {
        let _one = self.fleet_run.lock().await;
        let snap = self.snapshot().await?;
        let store = self.commander.mdm.store.clone();
        let mut stats = RunStats::default();
        let mut after = None;
        loop {
            let page = store.enrollments(after.clone(), CHUNK).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let page: Vec<Enrollment> = page.into_iter().filter(|e| e.id == e.device).collect();
            stats.devices += page.len();
            let ids: Vec<String> = page.iter().map(|e| e.id.clone()).collect();
            let looks = self.look_many(&snap, ids, Some(page), evaluate, full).await?;
            self.apply(looks, &mut stats).await?;
        }
        Ok(stats)
    }

    /// Claim, queue, record.
    async fn apply(&self, looks: Vec<Look>, stats: &mut RunStats) -> Result<(), ServiceError> {
        let store = self.commander.mdm.store.clone();
        let t = now();
        let ms = now() * 1000;
        // Devices with commands to queue are claimed first.
        let mut to_claim = Vec::new();
        let mut quiet = Vec::new();
        for l in looks {
            if l.state.claim.as_ref().is_some_and(|c| c.holder != self.instance && c.until > ms) {
                stats.busy += 1;
                self.retry_later(&l.id);
                continue;
            }
            if l.plan.steps.is_empty() {
                quiet.push(l);
            } else {
                to_claim.push(l);
            }
        }
        let claims: Vec<RecordWrite> = to_claim
            .iter()
            .map(|l| {
                let mut s = l.state.clone();
                s.claim = Some(Claim {
                    holder: self.instance.clone(),
                    until: ms + CLAIM_MS,
                    intent: l.plan.steps.iter().map(|s| s.key().to_owned()).collect(),
                });
                RecordWrite {
                    collection: DEVICES.into(),
                    key: l.id.clone(),
                    value: serde_json::to_value(&s).unwrap_or(Json::Null),
                    expect: Some(l.version),
                }
            })
            .collect();
        let won = if claims.is_empty() {
            Vec::new()
        } else {
            store.put_records(claims, t).await?
        };
        let mut claimed = Vec::new();
        for (mut l, v) in to_claim.into_iter().zip(won) {
            match v {
                Some(v) => {
                    l.version = v;
                    claimed.push(l);
                }
                None => {
                    stats.busy += 1;
                    self.retry_later(&l.id);
                }
            }
        }
        let mut done = self.execute(&mut claimed, stats).await;
        // Record: the claimed ones with what was queued, the quiet ones where anything moved.
        let mut writes = Vec::new();
        let mut finals: Vec<(String, DeviceState, Vec<DeviceProfile>)> = Vec::new();
        for l in claimed.into_iter().chain(quiet) {
            let mut s = l.state.clone();
            let before = s.clone();
            s.claim = None;
            if l.gone {
                // Checked out: in no group, wanting nothing. What was applied
                // stays on record, so a re-enrolled device's leftovers are
                // known as the blueprints' and not taken for an admin's.
                s.groups.clear();
                s.blueprints.clear();
                s.conflicts.clear();
                s.problems.clear();
                s.announced.clear();
                s.digest.clear();
            } else {
                for (k, a) in &l.plan.adopt {
                    s.applied.insert(k.clone(), a.clone());
                }
                for k in &l.plan.forget {
                    s.applied.remove(k);
                }
                if let Some(results) = done.remove(&l.id) {
                    for (k, r) in results {
                        match r {
                            Some(a) => {
                                s.applied.insert(k, a);
                            }
                            None => {
                                s.applied.remove(&k);
                            }
                        }
                    }
                }
                s.groups = l.groups.clone();
                s.blueprints = l.desired.blueprints.clone();
                s.conflicts = l.desired.conflicts.clone();
                s.problems = l.desired.problems.clone();
                s.digest = l.digest.clone();
            }
            if s == before && l.version > 0 && !l.refreshed {
                // Nothing to record, but a profile may have just been installed.
                if !s.blueprints.is_empty() {
                    self.announce(&l.id, s, &l.profiles, l.version).await;
                }
                continue;
            }
            if l.version == 0 && s.groups.is_empty() && s.blueprints.is_empty() && s.applied.is_empty() {
                // In no group, wanting nothing: no record needed.
                continue;
            }
            s.updated_at = t;
            stats.changed += 1;
            writes.push(RecordWrite {
                collection: DEVICES.into(),
                key: l.id.clone(),
                value: serde_json::to_value(&s).unwrap_or(Json::Null),
                expect: Some(l.version),
            });
            finals.push((l.id, s, l.profiles));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let wrote = store.put_records(writes, t).await?;
        for ((id, s, profiles), v) in finals.into_iter().zip(wrote) {
            if v.is_none() {
                // Changed under us (a claim expired and was taken): look again.
                self.retry_later(&id);
                continue;
            }
            self.announce(&id, s, &profiles, v.unwrap_or(0)).await;
        }
        Ok(())
    }

    fn retry_later(&self, id: &str) {
        let nudges = self.nudges.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            nudges.changed(&id);
        });
    }

    /// Webhook events when a device's state for a blueprint becomes converged or failed.
    async fn announce(&self, id: &str, mut s: DeviceState, profiles: &[DeviceProfile], version: u64) {
        let mut events = Vec::new();
        for b in &s.blueprints {
            let (state, items) = blueprint_status(&s, b, profiles);
            if s.announced.get(b) == Some(&state) {
                continue;
            }
            if state == "converged" || state == "failed" {
                events.push((b.clone(), state.clone(), items));
            }
            s.announced.insert(b.clone(), state);
        }
        s.announced.retain(|b, _| s.blueprints.contains(b));
        if events.is_empty() {
            return;
        }
        for (b, state, _) in &events {
            let m = crate::metrics::get();
            if state == "converged" {
                m.blueprint_converged.inc();
            } else {
                m.blueprint_failed.inc();
            }
            tracing::info!(enrollment = %id, blueprint = %b, %state, "blueprint state");
        }
        if let Some(w) = self.commander.mdm.webhooks() {
            let mut out = Vec::new();
            for (b, state, items) in events {
                let topic = if state == "converged" {
                    "mdmd.BlueprintConverged"
                } else {
                    "mdmd.BlueprintFailed"
                };
                out.extend(w.own_event(topic, json!({"enrollment": id, "blueprint": b, "state": state, "items": items})));
            }
            if let Err(e) = w.emit(out).await {
                tracing::warn!(enrollment = %id, error = %e, "blueprint event not stored");
            }
        }
        // Remember what was announced (best effort: a lost race announces again).
        let _ = self
            .commander
            .mdm
            .store
            .put_record(DEVICES, id, serde_json::to_value(&s).unwrap_or(Json::Null), now(), Some(version))
            .await;
    }
}
