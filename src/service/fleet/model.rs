//! Groups, blueprints and each device's reconcile record, as stored (JSON
//! records in `RecordStore` collections), and the pure part of reconciling:
//! what a device should have (`desired`) and what to do about what it has
//! (`plan_device`). No I/O here; `reconcile` feeds it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::protocol::ErrorChainItem;
use crate::store::{DeviceProfile, ProfileState};

pub const GROUPS: &str = "fleet.groups";
pub const BLUEPRINTS: &str = "fleet.blueprints";
/// One record per device channel: `DeviceState`.
pub const DEVICES: &str = "fleet.devices";

/// Every enrolled device channel.
pub const EVERYONE: &str = "*";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    pub name: String,
    /// Static members: UDIDs and serial numbers (serials upper-cased).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// A dynamic group's rule (CEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default)]
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// A catalog app (`mdmd apps`), by its id (bundle identifier): installed
    /// with its licence (App Store) or its per-device download URL (in-house).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Set by the reconciler, never by a blueprint: the catalog app's version
    /// digest, so a new version or configuration re-sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itunes_store_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_url: Option<String>,
    /// The app's bundle identifier: needed to re-send its configuration alone
    /// (a token rotation) and to remove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Managed app configuration; takes profile variables ($UDID, $ACCESS_TOKEN …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_flags: Option<u64>,
}

impl AppSpec {
    /// What identifies the app across blueprints.
    pub fn key(&self) -> String {
        if let Some(id) = &self.app {
            return format!("app:catalog:{id}");
        }
        match (&self.itunes_store_id, &self.manifest_url) {
            (Some(n), _) => format!("app:itunes:{n}"),
            (None, Some(u)) => format!("app:manifest:{u}"),
            (None, None) => "app:?".into(),
        }
    }

    /// The version of what is sent: any change re-sends.
    pub fn version(&self) -> String {
        digest(&serde_json::to_vec(self).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintSpec {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    #[serde(default)]
    pub declaration_sets: Vec<String>,
    #[serde(default)]
    pub enrollment_commands: Vec<Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blueprint {
    pub name: String,
    #[serde(flatten)]
    pub spec: BlueprintSpec,
    /// "api" or the file it was loaded from.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub updated_at: i64,
}

impl Blueprint {
    pub fn applies_to(&self, groups: &BTreeSet<String>) -> bool {
        self.spec.groups.iter().any(|g| g == EVERYONE || groups.contains(g))
    }
}

pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(bytes)[..8])
}

/// One thing a blueprint puts on a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// A profile template (its current version).
    Profile {
        identifier: String,
        sha256: String,
    },
    App(AppSpec),
    Set(String),
    /// Sent once per device.
    Command(Json),
}

impl Want {
    pub fn version(&self) -> String {
        match self {
            Want::Profile { sha256, .. } => sha256.clone(),
            Want::App(a) => a.version(),
            Want::Set(_) => "1".into(),
            Want::Command(c) => digest(&serde_json::to_vec(c).unwrap_or_default()),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Want::Profile { .. } => "profile",
            Want::App(_) => "app",
            Want::Set(_) => "declaration_set",
            Want::Command(_) => "command",
        }
    }

    /// How a person names it (template identifier, app, set, command type).
    pub fn label(&self) -> String {
        match self {
            Want::Profile { identifier, .. } => identifier.clone(),
            Want::App(a) => a.key().trim_start_matches("app:").to_owned(),
            Want::Set(s) => s.clone(),
            Want::Command(c) => c.get("RequestType").and_then(Json::as_str).unwrap_or("?").to_owned(),
        }
    }
}

/// The key of a wanted item in `DeviceState::applied`.
pub fn want_key(w: &Want) -> String {
    match w {
        Want::Profile { identifier, .. } => format!("profile:{identifier}"),
        Want::App(a) => a.key(),
        Want::Set(s) => format!("set:{s}"),
        Want::Command(_) => format!("command:{}", w.version()),
    }
}

/// A wanted item with the blueprints that want it.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub want: Want,
    pub blueprints: Vec<String>,
}

/// What the templates a blueprint may name are (identifier → sha256, inner payload identifiers).
#[derive(Debug, Clone, Default)]
pub struct Templates {
    pub versions: BTreeMap<String, (String, Vec<String>)>,
    /// Catalog apps: id → version digest.
    pub apps: BTreeMap<String, String>,
}

/// The union of the blueprints that apply, and the conflicts found on the way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub items: BTreeMap<String, Wanted>,
    pub blueprints: Vec<String>,
    /// In words; the items concerned are left as they are.
    pub conflicts: Vec<String>,
    /// The keys of the conflicting items.
    pub conflicted: BTreeSet<String>,
    /// Items that cannot be had (a template that does not exist), in words.
    pub problems: Vec<String>,
}

impl Desired {
    /// Changes whenever anything to be sent changes.
    pub fn digest(&self, groups: &[String]) -> String {
        let mut s = String::new();
        for g in groups {
            s.push_str(g);
            s.push('\n');
        }
        for (k, w) in &self.items {
            s.push_str(k);
            s.push('=');
            s.push_str(&w.want.version());
            s.push('\n');
        }
        for c in self.conflicts.iter().chain(&self.problems) {
            s.push_str(c);
            s.push('\n');
        }
        digest(s.as_bytes())
    }
}

/// What a device should have: the blueprints (in name order) that apply to its groups.
pub fn desired(blueprints: &[Blueprint], groups: &BTreeSet<String>, templates: &Templates) -> Desired {
    let mut d = Desired::default();
    let mut conflicted: BTreeSet<String> = BTreeSet::new();
    // Inner payload identifier → the template that carries it.
    let mut payload_owner: BTreeMap<String, String> = BTreeMap::new();
    for b in blueprints.iter().filter(|b| b.applies_to(groups)) {
        d.blueprints.push(b.name.clone());
        let mut wants: Vec<Want> = Vec::new();
        for p in &b.spec.profiles {
            match templates.versions.get(p) {
                Some((sha, inner)) => {
                    for id in inner {
                        match payload_owner.get(id) {
                            Some(other) if other != p => {
                                d.conflicts.push(format!(
                                    "payload {id} is in both profile {other} and profile {p} (blueprint {})",
                                    b.name
                                ));
                                conflicted.insert(format!("profile:{p}"));
                                conflicted.insert(format!("profile:{other}"));
                            }
                            _ => {
                                payload_owner.insert(id.clone(), p.clone());
                            }
                        }
                    }
                    wants.push(Want::Profile {
                        identifier: p.clone(),
                        sha256: sha.clone(),
                    })
                }
                None => d
                    .problems
                    .push(format!("blueprint {} names profile {p}, which does not exist", b.name)),
            }
        }
        for a in &b.spec.apps {
            match &a.app {
                Some(id) => match templates.apps.get(id) {
                    Some(v) => {
                        let mut a = a.clone();
                        a.catalog_version = Some(v.clone());
                        wants.push(Want::App(a));
                    }
                    None => d
                        .problems
                        .push(format!("blueprint {} names app {id}, which is not in the catalog", b.name)),
                },
                None => wants.push(Want::App(a.clone())),
            }
        }
        wants.extend(b.spec.declaration_sets.iter().cloned().map(Want::Set));
        wants.extend(b.spec.enrollment_commands.iter().cloned().map(Want::Command));
        for w in wants {
            let key = want_key(&w);
            match d.items.get_mut(&key) {
                Some(have) if have.want.version() != w.version() => {
                    d.conflicts.push(format!(
                        "{} {}: blueprints {} and {} want different versions",
                        w.kind(),
                        w.label(),
                        have.blueprints.join(", "),
                        b.name
                    ));
                    conflicted.insert(key);
                }
                Some(have) => {
                    if !have.blueprints.contains(&b.name) {
                        have.blueprints.push(b.name.clone());
                    }
                }
                None => {
                    d.items.insert(
                        key,
                        Wanted {
                            want: w,
                            blueprints: vec![b.name.clone()],
                        },
                    );
                }
            }
        }
    }
    for k in &conflicted {
        d.items.remove(k);
    }
    d.conflicted = conflicted;
    d
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Pending,
    Done,
    Failed,
}

/// Something mdmd put on a device for a blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub kind: String,
    pub label: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub state: ItemState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_chain: Vec<ErrorChainItem>,
    /// Found on the device before a blueprint wanted it (an admin installed
    /// it): never removed by a blueprint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_hand: bool,
    /// The app's bundle identifier, for removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    #[serde(default)]
    pub blueprints: Vec<String>,
    pub at: i64,
}

/// The reconciler's record of one device channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The enrollment this describes (its `enrolled_at`): a new enrollment starts empty.
    #[serde(default)]
    pub epoch: i64,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub blueprints: Vec<String>,
    /// `Desired::digest` when last reconciled.
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub applied: BTreeMap<String, Applied>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Blueprint → the state last announced (webhooks fire on changes).
    #[serde(default)]
    pub announced: BTreeMap<String, String>,
    /// Held by the instance reconciling this device until `until` (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    #[serde(default)]
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub holder: String,
    pub until: i64,
    /// Items being queued under this claim: if the holder dies before its
    /// final write, whoever comes next knows these were sent by a blueprint.
    #[serde(default)]
    pub intent: Vec<String>,
}

/// One step of a device's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Install { key: String, wanted: Wanted },
    Remove { key: String, applied: Applied },
}

impl Step {
    pub fn key(&self) -> &str {
        match self {
            Step::Install { key, .. } | Step::Remove { key, .. } => key,
        }
    }
}

/// What to do on one device, and the items found already there (adopted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicePlan {
    pub steps: Vec<Step>,
    /// Items already on the device as wanted: recorded, nothing sent.
    pub adopt: Vec<(String, Applied)>,
    /// Items no longer wanted that need no command (drop from the record).
    pub forget: Vec<String>,
}

/// The difference between what a device should have and what it has.
/// `profiles`: every profile mdmd tracks on the device; `intent`: items a
/// dead reconciler was sending (see `Claim`).
pub fn plan_device(desired: &Desired, state: &DeviceState, profiles: &[DeviceProfile], intent: &[String], now: i64) -> DevicePlan {
    let mut plan = DevicePlan::default();
    let tracked = |id: &str| profiles.iter().find(|p| p.identifier == id);
    for (key, wanted) in &desired.items {
        let version = wanted.want.version();
        let applied = state.applied.get(key);
        match &wanted.want {
            Want::Profile { identifier, sha256 } => {
                let on_device = tracked(identifier);
                let there = on_device.is_some_and(|p| {
                    p.sha256.as_deref() == Some(sha256) && matches!(p.state, ProfileState::Installed | ProfileState::Pending)
                });
                let failed = on_device.is_some_and(|p| p.sha256.as_deref() == Some(sha256) && p.state == ProfileState::Failed);
                match applied {
                    Some(a) if a.version == version && (there || failed) => {
                        if a.blueprints != wanted.blueprints {
                            let mut a = a.clone();
                            a.blueprints = wanted.blueprints.clone();
                            plan.adopt.push((key.clone(), a));
                        }
                    }
                    _ if there || (failed && applied.is_some_and(|a| a.version == version)) => {
                        // Already there at this version: record it, send nothing.
                        let by_hand = match applied {
                            Some(a) => a.by_hand,
                            None => !intent.contains(key),
                        };
                        plan.adopt.push((
                            key.clone(),
                            Applied {
                                kind: "profile".into(),
                                label: identifier.clone(),
                                version,
                                command: on_device.and_then(|p| p.command_uuid.clone()),
                                state: if failed { ItemState::Failed } else { ItemState::Pending },
                                error_chain: Vec::new(),
                                by_hand,
                                bundle_id: None,
                                blueprints: wanted.blueprints.clone(),
                                at: now,
                            },
                        ));
                    }
                    _ => plan.steps.push(Step::Install {
                        key: key.clone(),
                        wanted: wanted.clone(),
                    }),
                }
            }
            _ => match applied {
                // A command is sent once; other items again only when they change
                // (or when their command was cleared from the queue).
                // (A copy mdmd could not make — a variable without a value — is tried again.)
                Some(a) if (a.version == version || a.kind == "command") && !(a.state == ItemState::Failed && a.command.is_none()) => {
                    if a.blueprints != wanted.blueprints {
                        let mut a = a.clone();
                        a.blueprints = wanted.blueprints.clone();
                        plan.adopt.push((key.clone(), a));
                    }
                }
                _ => plan.steps.push(Step::Install {
                    key: key.clone(),
                    wanted: wanted.clone(),
                }),
            },
        }
    }
    // Conflicted items stay as they are: neither removed nor changed.
    for (key, a) in &state.applied {
        if desired.items.contains_key(key) || desired.conflicted.contains(key) {
            continue;
        }
        let needs_command = !a.by_hand
            && match a.kind.as_str() {
                "profile" => tracked(&a.label).is_some_and(|p| {
                    matches!(
                        p.state,
                        ProfileState::Installed | ProfileState::Pending | ProfileState::Missing | ProfileState::Failed
                    )
                }),
                "app" => a.bundle_id.is_some(),
                "declaration_set" => true,
                _ => false,
            };
        if needs_command {
            plan.steps.push(Step::Remove {
                key: key.clone(),
                applied: a.clone(),
            });
        } else {
            plan.forget.push(key.clone());
        }
    }
    plan
}

/// A device's state for one blueprint: converged, pending (with what) or failed.
pub fn blueprint_status(state: &DeviceState, blueprint: &str, profiles: &[DeviceProfile]) -> (String, Vec<Json>) {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for a in state.applied.values().filter(|a| a.blueprints.iter().any(|b| b == blueprint)) {
        let (st, chain) = if a.state == ItemState::Failed && a.command.is_none() {
            // mdmd could not make the device's copy: nothing was sent.
            (ItemState::Failed, a.error_chain.clone())
        } else if a.kind == "profile" {
            match profiles.iter().find(|p| p.identifier == a.label) {
                Some(p) if p.sha256.as_deref() == Some(a.version.as_str()) => match p.state {
                    ProfileState::Installed => (ItemState::Done, Vec::new()),
                    ProfileState::Failed => (ItemState::Failed, p.error_chain.clone()),
                    _ => (ItemState::Pending, Vec::new()),
                },
                _ => (ItemState::Pending, Vec::new()),
            }
        } else {
            (a.state, a.error_chain.clone())
        };
        let item = serde_json::json!({"kind": a.kind, "item": a.label});
        match st {
            ItemState::Done => {}
            ItemState::Pending => pending.push(item),
            ItemState::Failed => {
                let mut item = item;
                item["error_chain"] = serde_json::to_value(&chain).unwrap_or(Json::Null);
                failed.push(item)
            }
        }
    }
    let conflicts: Vec<Json> = state
        .conflicts
        .iter()
        .filter(|c| c.contains(blueprint))
        .map(|c| serde_json::json!({"kind": "conflict", "item": c}))
        .collect();
    if !failed.is_empty() || !conflicts.is_empty() {
        failed.extend(conflicts);
        ("failed".into(), failed)
    } else if !pending.is_empty() {
        ("pending".into(), pending)
    } else {
        ("converged".into(), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bp(name: &str, groups: &[&str], profiles: &[&str]) -> Blueprint {
        Blueprint {
            name: name.into(),
            spec: BlueprintSpec {
                groups: groups.iter().map(|s| s.to_string()).collect(),
                profiles: profiles.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            source: "api".into(),
            updated_at: 0,
        }
    }

    fn templates(list: &[(&str, &str, &[&str])]) -> Templates {
        Templates {
            versions: list
                .iter()
                .map(|(id, sha, inner)| (id.to_string(), (sha.to_string(), inner.iter().map(|s| s.to_string()).collect())))
                .collect(),
            apps: BTreeMap::new(),
        }
    }

    fn groups(g: &[&str]) -> BTreeSet<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn union_conflicts_and_plans() {
        let t = templates(&[("wifi", "s1", &["wifi.p"]), ("vpn", "s2", &["vpn.p"]), ("wifi2", "s3", &["wifi.p"])]);
        let bps = vec![
            bp("a", &["sales"], &["wifi"]),
            bp("b", &["*"], &["vpn", "wifi"]),
            bp("c", &["ops"], &["wifi2"]),
        ];
        let d = desired(&bps, &groups(&["sales"]), &t);
        assert_eq!(d.blueprints, vec!["a", "b"]);
        assert_eq!(d.items.len(), 2);
        assert_eq!(d.items["profile:wifi"].blueprints, vec!["a", "b"]);
        assert!(d.conflicts.is_empty());
        // wifi and wifi2 carry the same payload: a conflict, neither is sent.
        let d2 = desired(&bps, &groups(&["sales", "ops"]), &t);
        assert_eq!(d2.conflicts.len(), 1, "{:?}", d2.conflicts);
        assert!(!d2.items.contains_key("profile:wifi") && !d2.items.contains_key("profile:wifi2"));
        // Apps: same app, two configurations.
        let mut x = bp("x", &["*"], &[]);
        x.spec.apps = vec![AppSpec {
            app: None,
            catalog_version: None,
            itunes_store_id: Some(1),
            manifest_url: None,
            identifier: None,
            configuration: Some(json!({"a": 1})),
            management_flags: None,
        }];
        let mut y = x.clone();
        y.name = "y".into();
        y.spec.apps[0].configuration = Some(json!({"a": 2}));
        let d3 = desired(&[x, y], &groups(&[]), &t);
        assert!(d3.items.is_empty() && d3.conflicts.len() == 1);

        // Fresh device: install both. Then nothing once they are pending/installed.
        let state = DeviceState::default();
        let p = plan_device(&d, &state, &[], &[], 1);
        assert_eq!(p.steps.len(), 2);
        let mut state = DeviceState::default();
        for s in &p.steps {
            if let Step::Install { key, wanted } = s {
                state.applied.insert(
                    key.clone(),
                    Applied {
                        kind: "profile".into(),
                        label: wanted.want.label(),
                        version: wanted.want.version(),
                        command: None,
                        state: ItemState::Pending,
                        error_chain: vec![],
                        by_hand: false,
                        bundle_id: None,
                        blueprints: wanted.blueprints.clone(),
                        at: 1,
                    },
                );
            }
        }
        let profs = |st: ProfileState| -> Vec<DeviceProfile> {
            [("wifi", "s1"), ("vpn", "s2")]
                .iter()
                .map(|(id, sha)| DeviceProfile {
                    enrollment: "D".into(),
                    identifier: id.to_string(),
                    state: st,
                    command_uuid: None,
                    sha256: Some(sha.to_string()),
                    updated_at: 1,
                    error_chain: vec![],
                })
                .collect()
        };
        assert_eq!(
            plan_device(&d, &state, &profs(ProfileState::Installed), &[], 2),
            DevicePlan::default()
        );
        // The user removed them: installed again.
        assert_eq!(plan_device(&d, &state, &profs(ProfileState::Missing), &[], 2).steps.len(), 2);
        // Out of every group: only "b" (everyone) remains; wifi stays (b wants it too).
        let d4 = desired(&bps, &groups(&[]), &t);
        let p4 = plan_device(&d4, &state, &profs(ProfileState::Installed), &[], 2);
        assert!(p4.steps.is_empty());
        assert_eq!(p4.adopt.len(), 1, "wifi now only for b");
        // No blueprint at all: both removed.
        let p5 = plan_device(&Desired::default(), &state, &profs(ProfileState::Installed), &[], 2);
        assert_eq!(p5.steps.iter().filter(|s| matches!(s, Step::Remove { .. })).count(), 2);
        // An admin's own install is adopted, and never removed.
        let p6 = plan_device(&d, &DeviceState::default(), &profs(ProfileState::Installed), &[], 2);
        assert!(p6.steps.is_empty() && p6.adopt.iter().all(|(_, a)| a.by_hand));
        let hand = DeviceState {
            applied: p6.adopt.into_iter().collect(),
            ..DeviceState::default()
        };
        let p7 = plan_device(&Desired::default(), &hand, &profs(ProfileState::Installed), &[], 3);
        assert!(p7.steps.is_empty() && p7.forget.len() == 2);
    }
}
