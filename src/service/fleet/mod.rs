//! Fleet policy: groups and blueprints, and the reconciler that makes every
//! device converge on what its blueprints want.
//!
//! - **Groups** (`fleet.groups` records): static (UDIDs, serial numbers) or
//!   dynamic (a CEL rule over the device object, `rules`).
//! - **Blueprints** (`fleet.blueprints`): for some groups (or `*`, every
//!   enrolled device) profile templates, apps with their configuration,
//!   declaration sets and commands sent once per device.
//! - **Each device's record** (`fleet.devices`, `model::DeviceState`): its
//!   groups, what mdmd put there for which blueprint, the digest of what it
//!   wanted when last reconciled.
//!
//! When does a device get reconciled? At enrollment, before its first
//! inventory (`Nudges::enrolled`); whenever a fact its groups could read
//! changes (`Nudges::changed`: check-in, inventory, attributes, compliance,
//! DDM status, command results), that one device alone; when a group
//! changes, every device (groups evaluated again); when a blueprint or a
//! template changes, every device whose wanted state moved; and in a leased
//! periodic sweep that compares digests and queues nothing for a device that
//! already matches. `reconcile` holds the how.

pub mod execute;
pub mod model;
pub mod nudges;
pub mod reconcile;
pub mod rules;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::clock::now;
use crate::service::commands::{CommandInput, Commander};
use crate::service::ServiceError;
use model::*;
pub use nudges::Nudges;
use reconcile::{RunStats, Snapshot};

/// Names of groups and blueprints.
pub fn valid_name(s: &str) -> bool {
    s.len() <= 64 && crate::protocol::declarative::valid_identifier(s)
}

pub const MAX_MEMBERS: usize = 100_000;
pub const MAX_ITEMS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0} changed meanwhile; try again")]
    Conflict(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for FleetError {
    fn from(e: crate::store::StoreError) -> Self {
        FleetError::Service(e.into())
    }
}

fn bad(m: impl Into<String>) -> FleetError {
    FleetError::BadRequest(m.into())
}

pub struct Fleet {
    pub commander: Arc<Commander>,
    pub nudges: Arc<Nudges>,
    instance: String,
    rules: Mutex<HashMap<String, Arc<rules::Rule>>>,
    payloads: Mutex<HashMap<String, Vec<String>>>,
    /// Whole-fleet runs wanted: (evaluate groups, full comparison); one at a time.
    everyone: Mutex<Option<(bool, bool)>>,
    wake_everyone: tokio::sync::Notify,
    /// The last snapshot single-device reconciles used (`reconcile::SNAPSHOT_TTL`).
    recent: Mutex<Option<(std::time::Instant, Arc<Snapshot>)>>,
    /// Whole-fleet runs of this instance, one at a time.
    pub(crate) fleet_run: tokio::sync::Mutex<()>,
    /// The app catalog blueprints name apps from (`set_apps`).
    apps: std::sync::OnceLock<Arc<crate::service::apps::Apps>>,
}

impl Fleet {
    pub fn new(commander: Arc<Commander>, nudges: Arc<Nudges>, instance: &str) -> Arc<Fleet> {
        Arc::new(Fleet {
            commander,
            nudges,
            instance: instance.to_owned(),
            rules: Mutex::new(HashMap::new()),
            payloads: Mutex::new(HashMap::new()),
            everyone: Mutex::new(None),
            wake_everyone: tokio::sync::Notify::new(),
            recent: Mutex::new(None),
            fleet_run: tokio::sync::Mutex::new(()),
            apps: std::sync::OnceLock::new(),
        })
    }

    /// Blueprints may name catalog apps; a catalog change reconciles the fleet.
    pub fn set_apps(self: &Arc<Self>, apps: Arc<crate::service::apps::Apps>) {
        let me = Arc::downgrade(self);
        apps.on_change(Box::new(move || {
            if let Some(f) = me.upgrade() {
                f.everyone(false, false);
            }
        }));
        let _ = self.apps.set(apps);
    }

    pub fn apps(&self) -> Option<&Arc<crate::service::apps::Apps>> {
        self.apps.get()
    }

    /// Start the reconciler: devices nudged by facts, and whole-fleet runs.
    pub fn start(self: &Arc<Self>) {
        self.nudges.listen();
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.nudges.wait(Duration::from_secs(1)).await;
                // A short pause gathers the burst of facts one check-in brings
                // (not when an enrollment is waiting for its blueprints).
                if !me.nudges.awaited() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                loop {
                    let (ids, done) = me.nudges.take(reconcile::CHUNK);
                    if ids.is_empty() {
                        break;
                    }
                    let n = ids.len();
                    match me.reconcile(ids).await {
                        Ok(s) => {
                            crate::metrics::get().reconciled.inc_by(n as u64);
                            crate::metrics::get().reconcile_commands.inc_by(s.commands);
                            if s.commands > 0 {
                                tracing::debug!(devices = n, commands = s.commands, "devices reconciled");
                            }
                        }
                        Err(e) => tracing::warn!(devices = n, error = %e, "reconcile failed; the sweep will try again"),
                    }
                    for (_, tx) in done {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.wake_everyone.notified().await;
                while let Some((evaluate, full)) = me.everyone.lock().ok().and_then(|mut w| w.take()) {
                    let t = std::time::Instant::now();
                    match me.reconcile_all(evaluate, full).await {
                        Ok(s) => {
                            crate::metrics::get().reconciled.inc_by(s.devices as u64);
                            crate::metrics::get().reconcile_commands.inc_by(s.commands);
                            tracing::info!(
                                devices = s.devices,
                                changed = s.changed,
                                commands = s.commands,
                                busy = s.busy,
                                seconds = t.elapsed().as_secs_f64(),
                                evaluate,
                                "fleet reconciled"
                            )
                        }
                        Err(e) => tracing::warn!(error = %e, "fleet reconcile failed; the sweep will try again"),
                    }
                }
            }
        });
    }

    /// Reconcile every device in the background (merged with a run already asked for).
    pub fn everyone(&self, evaluate: bool, full: bool) {
        if let Ok(mut r) = self.recent.lock() {
            *r = None;
        }
        if let Ok(mut w) = self.everyone.lock() {
            let (e, f) = w.unwrap_or((false, false));
            *w = Some((e || evaluate, f || full));
        }
        self.wake_everyone.notify_one();
    }

    /// The periodic sweep (leased): digests only, nothing queued for a device that matches.
    pub async fn sweep(&self) -> Result<RunStats, ServiceError> {
        self.reconcile_all(false, false).await
    }

    // ---- Groups

    pub async fn put_group(&self, name: &str, body: &Json) -> Result<Group, FleetError> {
        if !valid_name(name) || name == EVERYONE {
            return Err(bad(format!("group name {name:?}: 1 to 64 letters, digits, '.', '-', '_'")));
        }
        let obj = body.as_object().ok_or_else(|| bad("body must be a JSON object"))?;
        if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "members" | "rule")) {
            return Err(bad(format!("unknown key {k:?} (a group has \"members\" or \"rule\")")));
        }
        let members = obj.get("members");
        let rule = obj.get("rule");
        let mut g = Group {
            name: name.to_owned(),
            members: Vec::new(),
            rule: None,
            updated_at: now(),
        };
        match (members, rule) {
            (Some(m), None) => {
                let list = m
                    .as_array()
                    .ok_or_else(|| bad("\"members\" must be a list of UDIDs or serial numbers"))?;
                if list.len() > MAX_MEMBERS {
                    return Err(bad(format!("at most {MAX_MEMBERS} members")));
                }
                let mut seen = BTreeSet::new();
                for v in list {
                    let s = v.as_str().map(str::trim).unwrap_or_default();
                    if s.is_empty() || s.len() > 128 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        return Err(bad(format!("member {v}: a UDID or serial number")));
                    }
                    seen.insert(s.to_uppercase());
                }
                g.members = seen.into_iter().collect();
            }
            (None, Some(r)) => {
                let src = r.as_str().ok_or_else(|| bad("\"rule\" must be a string"))?;
                let compiled = self.compiled(src).map_err(|e| bad(e.to_string()))?;
                g.rule = Some(compiled.source.clone());
            }
            _ => return Err(bad("a group has either \"members\" (static) or \"rule\" (dynamic)")),
        }
        let store = &self.commander.mdm.store;
        store
            .put_record(
                GROUPS,
                name,
                serde_json::to_value(&g).map_err(crate::store::StoreError::from)?,
                now(),
                None,
            )
            .await?;
        tracing::info!(group = %name, dynamic = g.rule.is_some(), "group stored");
        self.everyone(true, false);
        Ok(g)
    }

    /// Every record of a collection, decoded.
    pub(crate) async fn all<T: serde::de::DeserializeOwned>(&self, collection: &str) -> Result<Vec<T>, crate::store::StoreError> {
        let mut out = Vec::new();
        for (_, r) in self.commander.mdm.store.records(collection).await? {
            out.push(serde_json::from_value(r.value)?);
        }
        Ok(out)
    }

    /// One record, decoded; `what` names it in the 404.
    async fn one<T: serde::de::DeserializeOwned>(&self, collection: &str, what: &str, name: &str) -> Result<T, FleetError> {
        let r = self
            .commander
            .mdm
            .store
            .record(collection, name)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no {what} {name}")))?;
        Ok(serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?)
    }

    pub async fn groups(&self) -> Result<Vec<Group>, FleetError> {
        Ok(self.all(GROUPS).await?)
    }

    pub async fn group(&self, name: &str) -> Result<Group, FleetError> {
        self.one(GROUPS, "group", name).await
    }

    /// Devices whose record says they are in `pred`'s groups, up to `limit`.
    async fn devices_where(
        &self,
        limit: usize,
        pred: impl Fn(&DeviceState) -> bool,
    ) -> Result<(Vec<(String, DeviceState)>, bool), FleetError> {
        let store = &self.commander.mdm.store;
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = store.records_after(DEVICES, after.clone(), 2000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (k, r) in page {
                let s: DeviceState = serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?;
                if pred(&s) {
                    if out.len() >= limit {
                        return Ok((out, true));
                    }
                    out.push((k, s));
                }
            }
        }
        Ok((out, false))
    }

    /// A group with its current members (as last evaluated).
    pub async fn group_view(&self, name: &str, limit: usize) -> Result<Json, FleetError> {
        let g = self.group(name).await?;
        let (members, truncated) = self.devices_where(limit, |s| s.groups.iter().any(|x| x == name)).await?;
        let blueprints: Vec<String> = self
            .blueprints()
            .await?
            .into_iter()
            .filter(|b| b.spec.groups.iter().any(|x| x == name))
            .map(|b| b.name)
            .collect();
        Ok(json!({
            "name": g.name,
            "kind": if g.rule.is_some() { "dynamic" } else { "static" },
            "rule": g.rule,
            "members": g.members,
            "current_members": members.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            "truncated": truncated,
            "blueprints": blueprints,
            "updated_at": rfc3339(g.updated_at),
        }))
    }

    pub async fn delete_group(&self, name: &str) -> Result<(), FleetError> {
        let users: Vec<String> = self
            .blueprints()
            .await?
            .into_iter()
            .filter(|b| b.spec.groups.iter().any(|g| g == name))
            .map(|b| b.name)
            .collect();
        if !users.is_empty() {
            return Err(bad(format!("blueprints {} use group {name}: change them first", users.join(", "))));
        }
        if !self.commander.mdm.store.delete_record(GROUPS, name, None).await? {
            return Err(FleetError::NotFound(format!("no group {name}")));
        }
        self.everyone(true, false);
        Ok(())
    }

    // ---- Blueprints

    /// Check a blueprint as an admin wrote it.
    pub async fn check_blueprint(&self, name: &str, body: &Json) -> Result<BlueprintSpec, FleetError> {
        if !valid_name(name) {
            return Err(bad(format!("blueprint name {name:?}: 1 to 64 letters, digits, '.', '-', '_'")));
        }
        let spec: BlueprintSpec = serde_json::from_value(body.clone()).map_err(|e| bad(format!("blueprint: {e}")))?;
        if spec.groups.is_empty() {
            return Err(bad("\"groups\": name at least one group, or \"*\" for every enrolled device"));
        }
        let n = spec.profiles.len() + spec.apps.len() + spec.declaration_sets.len() + spec.enrollment_commands.len();
        if n > MAX_ITEMS {
            return Err(bad(format!("at most {MAX_ITEMS} items in a blueprint")));
        }
        let groups: BTreeSet<String> = self.groups().await?.into_iter().map(|g| g.name).collect();
        for g in &spec.groups {
            if g != EVERYONE && !groups.contains(g) {
                return Err(bad(format!("no group {g} (create it first: mdmd groups set {g} …)")));
            }
        }
        let store = &self.commander.mdm.store;
        for p in &spec.profiles {
            if store.template(p).await?.is_none() {
                return Err(bad(format!("no profile template {p} (add it first: mdmd profiles add FILE)")));
            }
        }
        let mut apps_seen = BTreeSet::new();
        for (i, a) in spec.apps.iter().enumerate() {
            if a.catalog_version.is_some() {
                return Err(bad(format!("apps[{i}].catalog_version is mdmd's own: leave it out")));
            }
            if let Some(id) = &a.app {
                if a.itunes_store_id.is_some() || a.manifest_url.is_some() || a.identifier.is_some() || a.management_flags.is_some() {
                    return Err(bad(format!(
                        "apps[{i}]: a catalog app (\"app\") takes only \"configuration\" besides; its flags are the catalog's (mdmd apps set)"
                    )));
                }
                let apps = self.apps().ok_or_else(|| bad("the app catalog is not available on this server"))?;
                if let Err(e) = apps.app(id).await {
                    return Err(bad(format!("apps[{i}]: {e} (add it first: mdmd apps add)")));
                }
                if let Some(c) = &a.configuration {
                    if !c.is_object() {
                        return Err(bad(format!("apps[{i}].configuration: a JSON object")));
                    }
                    let probe = json!({"RequestType": "InstallApplication", "iTunesStoreID": 1, "Configuration": c});
                    Commander::validated(CommandInput::Json(probe)).map_err(|e| bad(format!("apps[{i}]: {e}")))?;
                }
                if !apps_seen.insert(a.key()) {
                    return Err(bad(format!("apps[{i}]: this app is listed twice")));
                }
                continue;
            }
            match (a.itunes_store_id, &a.manifest_url) {
                (Some(_), None) => {}
                (None, Some(u)) if u.starts_with("https://") && u.len() <= 2048 => {}
                (None, Some(_)) => return Err(bad(format!("apps[{i}].manifest_url: an https:// URL"))),
                _ => return Err(bad(format!("apps[{i}]: exactly one of app, itunes_store_id and manifest_url"))),
            }
            if a.configuration.as_ref().is_some_and(|c| !c.is_object()) {
                return Err(bad(format!("apps[{i}].configuration: a JSON object")));
            }
            if let Some(b) = &a.identifier {
                if b.is_empty() || b.len() > 255 || !b.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
                    return Err(bad(format!("apps[{i}].identifier: a bundle identifier")));
                }
            }
            if !apps_seen.insert(a.key()) {
                return Err(bad(format!("apps[{i}]: this app is listed twice")));
            }
            Commander::validated(CommandInput::Json(execute::app_command(a))).map_err(|e| bad(format!("apps[{i}]: {e}")))?;
        }
        if !spec.declaration_sets.is_empty() {
            let ddm = self
                .commander
                .mdm
                .ddm()
                .ok_or_else(|| bad("declarative management is not available on this server"))?;
            for s in &spec.declaration_sets {
                if !crate::protocol::declarative::valid_identifier(s) {
                    return Err(bad(format!("declaration set {s:?}: letters, digits, '.', '-', '_'")));
                }
                let _ = ddm;
            }
        }
        for (i, c) in spec.enrollment_commands.iter().enumerate() {
            let (d, _) = Commander::validated(CommandInput::Json(c.clone())).map_err(|e| bad(format!("enrollment_commands[{i}]: {e}")))?;
            let rt = d.get("RequestType").and_then(plist::Value::as_string).unwrap_or_default();
            if matches!(
                rt,
                "InstallProfile" | "RemoveProfile" | "EraseDevice" | "DeviceLock" | "ClearPasscode"
            ) {
                return Err(bad(format!(
                    "enrollment_commands[{i}]: {rt} is not sent automatically (profiles belong in \"profiles\")"
                )));
            }
            if !crate::service::commands::sealed::secret_paths(&d).is_empty() {
                return Err(bad(format!(
                    "enrollment_commands[{i}]: carries a secret, which blueprints do not store (send it as a command)"
                )));
            }
        }
        Ok(spec)
    }

    pub async fn put_blueprint(&self, name: &str, body: &Json, source: &str) -> Result<(Blueprint, bool), FleetError> {
        let spec = self.check_blueprint(name, body).await?;
        let store = &self.commander.mdm.store;
        let old = store.record(BLUEPRINTS, name).await?;
        let changed = old
            .as_ref()
            .and_then(|r| serde_json::from_value::<Blueprint>(r.value.clone()).ok())
            .is_none_or(|o| o.spec != spec);
        let b = Blueprint {
            name: name.to_owned(),
            spec,
            source: source.to_owned(),
            updated_at: now(),
        };
        if changed {
            store
                .put_record(
                    BLUEPRINTS,
                    name,
                    serde_json::to_value(&b).map_err(crate::store::StoreError::from)?,
                    now(),
                    None,
                )
                .await?;
            tracing::info!(blueprint = %name, source, "blueprint stored");
            self.everyone(false, false);
        }
        Ok((b, changed))
    }

    pub async fn blueprints(&self) -> Result<Vec<Blueprint>, FleetError> {
        Ok(self.all(BLUEPRINTS).await?)
    }

    pub async fn blueprint(&self, name: &str) -> Result<Blueprint, FleetError> {
        self.one(BLUEPRINTS, "blueprint", name).await
    }

    pub async fn delete_blueprint(&self, name: &str) -> Result<(), FleetError> {
        if !self.commander.mdm.store.delete_record(BLUEPRINTS, name, None).await? {
            return Err(FleetError::NotFound(format!("no blueprint {name}")));
        }
        tracing::info!(blueprint = %name, "blueprint deleted");
        self.everyone(false, false);
        Ok(())
    }

    /// What storing `spec` as blueprint `name` (None: deleting it; the stored
    /// one when planning it as it is) would queue, per device. Queues nothing.
    pub async fn plan(&self, name: &str, spec: Option<BlueprintSpec>, limit: usize) -> Result<Json, FleetError> {
        let mut snap: Snapshot = self.snapshot().await?;
        snap.blueprints.retain(|b| b.name != name);
        if let Some(spec) = spec {
            snap.blueprints.push(Blueprint {
                name: name.to_owned(),
                spec,
                source: "plan".into(),
                updated_at: now(),
            });
            snap.blueprints.sort_by(|a, b| a.name.cmp(&b.name));
            // Templates a plan names are known: the check did that.
        }
        let store = self.commander.mdm.store.clone();
        let mut devices = Vec::new();
        let mut after = None;
        let (mut installs, mut removals, mut affected) = (0u64, 0u64, 0u64);
        let mut truncated = false;
        loop {
            let page = store.enrollments(after.clone(), reconcile::CHUNK).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let page: Vec<_> = page.into_iter().filter(|e| e.id == e.device).collect();
            let ids: Vec<String> = page.iter().map(|e| e.id.clone()).collect();
            for l in self.look_many(&snap, ids, Some(page), false, true).await? {
                if l.plan.steps.is_empty() {
                    continue;
                }
                affected += 1;
                let mut inst = Vec::new();
                let mut rem = Vec::new();
                for s in &l.plan.steps {
                    match s {
                        model::Step::Install { wanted, .. } => {
                            installs += 1;
                            inst.push(json!({"kind": wanted.want.kind(), "item": wanted.want.label(), "blueprints": wanted.blueprints}))
                        }
                        model::Step::Remove { applied, .. } => {
                            removals += 1;
                            rem.push(json!({"kind": applied.kind, "item": applied.label}))
                        }
                    }
                }
                if devices.len() < limit {
                    devices.push(json!({"enrollment": l.id, "install": inst, "remove": rem, "conflicts": l.desired.conflicts}));
                } else {
                    truncated = true;
                }
            }
        }
        Ok(json!({
            "blueprint": name,
            "devices_affected": affected,
            "installs": installs,
            "removals": removals,
            "devices": devices,
            "truncated": truncated,
        }))
    }

    /// Every device a blueprint applies to, with its state.
    pub async fn status(&self, name: &str, limit: usize) -> Result<Json, FleetError> {
        self.blueprint(name).await?;
        let (devices, truncated) = self.devices_where(usize::MAX, |s| s.blueprints.iter().any(|b| b == name)).await?;
        let mut counts = std::collections::BTreeMap::new();
        let mut out = Vec::new();
        for (id, s) in devices {
            let profiles = self.commander.mdm.store.device_profiles(&id).await?;
            let (state, items) = blueprint_status(&s, name, &profiles);
            *counts.entry(state.clone()).or_insert(0u64) += 1;
            if out.len() < limit {
                let key = if state == "failed" { "failed" } else { "pending" };
                let mut d = json!({"enrollment": id, "state": state});
                if !items.is_empty() {
                    d[key] = Json::Array(items);
                }
                out.push(d);
            }
        }
        Ok(
            json!({"blueprint": name, "counts": counts, "devices": out, "truncated": truncated || out.len() < counts.values().sum::<u64>() as usize}),
        )
    }

    /// Has everything the blueprints sent this enrollment (`enrolled_at`) been
    /// answered (installed or failed)? `None` before the reconciler has looked
    /// at this enrollment; `Some(false)` while an item is pending or the device
    /// is being reconciled. (Setup Assistant waits on this.)
    pub async fn settled(&self, id: &str, enrolled_at: i64) -> Result<Option<bool>, FleetError> {
        let store = &self.commander.mdm.store;
        let Some(r) = store.record(DEVICES, id).await? else {
            // No blueprint at all: nothing to wait for.
            return Ok(if self.blueprints().await?.is_empty() { Some(true) } else { None });
        };
        let s: DeviceState = serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?;
        if s.epoch != enrolled_at || s.updated_at < enrolled_at {
            return Ok(None);
        }
        if s.claim.is_some() {
            return Ok(Some(false));
        }
        let profiles = store.device_profiles(id).await?;
        Ok(Some(s.blueprints.iter().all(|b| blueprint_status(&s, b, &profiles).0 != "pending")))
    }

    /// A device's groups and blueprints, with each blueprint's state there.
    pub async fn device_view(&self, id: &str) -> Result<Json, FleetError> {
        let store = &self.commander.mdm.store;
        let Some(r) = store.record(DEVICES, id).await? else {
            return Ok(json!({"groups": [], "blueprints": []}));
        };
        let s: DeviceState = serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?;
        let profiles = store.device_profiles(id).await?;
        let blueprints: Vec<Json> = s
            .blueprints
            .iter()
            .map(|b| {
                let (state, items) = blueprint_status(&s, b, &profiles);
                json!({"name": b, "state": state, "items": items})
            })
            .collect();
        Ok(json!({
            "groups": s.groups,
            "blueprints": blueprints,
            "conflicts": s.conflicts,
            "problems": s.problems,
            "reconciled_at": rfc3339(s.updated_at),
        }))
    }

    /// Load every `*.json` in a folder as a blueprint named after the file.
    /// Returns (loaded, skipped).
    pub async fn load_dir(&self, dir: &std::path::Path) -> (usize, usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            tracing::debug!(dir = %dir.display(), "no blueprints folder");
            return (0, 0);
        };
        let mut files: Vec<_> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let (mut ok, mut bad_files) = (0, 0);
        for p in files {
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let source = format!(
                "file:{}",
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            );
            let r = match std::fs::read(&p) {
                Ok(bytes) if bytes.len() <= 1 << 20 => match serde_json::from_slice::<Json>(&bytes) {
                    Ok(v) => self.put_blueprint(&name, &v, &source).await.map(drop),
                    Err(e) => Err(bad(format!("not JSON: {e}"))),
                },
                Ok(_) => Err(bad("larger than 1 MiB")),
                Err(e) => Err(bad(e.to_string())),
            };
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    bad_files += 1;
                    tracing::error!(file = %p.display(), error = %e, "blueprint not loaded");
                }
            }
        }
        (ok, bad_files)
    }
}

/// Unix seconds as RFC 3339 (null when unset).
fn rfc3339(t: i64) -> Json {
    if t <= 0 {
        return Json::Null;
    }
    crate::clock::rfc3339(t).map_or(Json::Null, Json::String)
}
