//! Declarative Device Management: declarations, sets, assignments, the
//! device's `DeclarativeManagement` endpoints, the status channel, and
//! software-update enforcement (the KMFDDM model, built in).
//!
//! Everything lives in versioned records (`RecordStore`), so both stores
//! carry it and several instances share it:
//! - `ddm-declarations/<identifier>`: Type, kind, Payload, ServerToken;
//! - `ddm-sets/<set>`: the identifiers in a set;
//! - `ddm-enrollment-sets/<enrollment>`: the sets assigned to an enrollment;
//! - `ddm-set-members/<set>` / `<enrollment>`: the index the other way, so a
//!   change to a set or a declaration reads only the affected sets' members
//!   (built from the assignments once per store; `members_of`);
//! - `ddm-status/<enrollment>`: the latest value of each status item with
//!   its time, declaration status, and the last errors.
//!
//! An enrollment's effective declarations are those of its sets plus, unless
//! turned off, mdmd's own status subscription (OS version and build, model,
//! passcode compliance, declaration status, software update state) and the
//! activation that applies it. When they change, the enrollment is marked;
//! marks are collected for a moment and each marked enrollment gets one
//! `DeclarativeManagement` command carrying its new sync tokens, and a push.

mod device;
use device::consistency;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::clock::now;
use crate::protocol::declarative::{self, Declaration, Kind};
use crate::protocol::schema::Problem;
use crate::service::{Mdm, ServiceError};
use crate::store::{CommandRecord, Store};

const DECLS: &str = "ddm-declarations";
const SETS: &str = "ddm-sets";
const ASSIGNED: &str = "ddm-enrollment-sets";
/// The set -> enrollments index (`members_of`) is built from ASSIGNED once per
/// store; this record says it was.
const INDEX_MARK: (&str, &str) = ("ddm-index", "set-members-v1");

/// The collection holding one record per enrollment assigned to `set`: a
/// set's or a declaration's change reads the set's members, not every
/// assignment. It may hold more than ASSIGNED (each enrollment's own record,
/// the truth) says, never less: `assign` writes it before and after adding a
/// set and removes it only after ASSIGNED no longer has the set (then checks
/// again); readers keep the members ASSIGNED confirms.
fn members_of(set: &str) -> String {
    format!("ddm-set-members/{set}")
}
const STATUS: &str = "ddm-status";
/// Per enrollment: the DeclarationsToken it was last given and since when
/// (the SyncTokens `Timestamp`: the time of the last real change).
const SYNCED: &str = "ddm-sync-tokens";

/// mdmd's own status subscription and the activation that applies it.
pub const STATUS_SUBSCRIPTION_ID: &str = "mdmd.status-subscriptions";
pub const STATUS_ACTIVATION_ID: &str = "mdmd.activation.status-subscriptions";
/// What mdmd subscribes every device to.
pub const SUBSCRIBED_ITEMS: &[&str] = &[
    "device.operating-system.version",
    "device.operating-system.build-version",
    "device.model.family",
    "device.model.identifier",
    "passcode.is-compliant",
    "passcode.is-present",
    "management.declarations",
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
    "softwareupdate.failure-reason",
];

#[derive(Debug, thiserror::Error)]
pub enum DdmError {
    #[error("invalid declaration: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Our own failure (sealing, a stored value that does not open): never
    /// the caller's fault; the cause is kept for the log.
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: super::BoxError,
    },
}

impl DdmError {
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            DdmError::Invalid(p) => p.clone(),
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DdmConfig {
    /// Include mdmd's status subscription in every enrollment's declarations.
    pub status_subscriptions: bool,
    /// Turn DDM on (a DeclarativeManagement command) after an iOS 15+ enrollment.
    pub enable_after_enroll: bool,
    /// Collect changes this long before sending the sync commands.
    pub coalesce: Duration,
    /// mdmd's public URL (for the profiles legacy configurations point at).
    pub public_url: String,
}

/// `ProfileURL` of a `com.apple.configuration.legacy` configuration that
/// names one of mdmd's profile templates.
pub const PROFILE_SCHEME: &str = "mdmd:profile/";

/// `Reference.DataURL` of a `com.apple.asset.credential.scep` asset whose
/// SCEP settings mdmd makes per device (its own CA, a single-use challenge).
pub const SCEP_ASSET: &str = "mdmd:scep";

fn is_scep_asset(d: &StoredDeclaration) -> bool {
    d.r#type == "com.apple.asset.credential.scep"
        && d.payload.get("Reference").and_then(|r| r.get("DataURL")).and_then(|u| u.as_str()) == Some(SCEP_ASSET)
}

fn profile_ref(payload: &serde_json::Map<String, Json>) -> Option<&str> {
    payload
        .get("ProfileURL")
        .and_then(|v| v.as_str())
        .and_then(|u| u.strip_prefix(PROFILE_SCHEME))
}

/// A stored declaration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDeclaration {
    pub r#type: String,
    pub identifier: String,
    pub kind: Kind,
    pub payload: serde_json::Map<String, Json>,
    pub server_token: String,
    pub updated_at: i64,
}

impl StoredDeclaration {
    pub fn served(&self) -> Declaration {
        Declaration {
            r#type: self.r#type.clone(),
            identifier: self.identifier.clone(),
            server_token: self.server_token.clone(),
            payload: self.payload.clone(),
        }
    }

    /// As a device gets it: a template reference becomes the URL the device
    /// fetches its own copy from.
    pub fn served_to_device(&self, public_url: &str) -> Declaration {
        let mut d = self.served();
        if let Some(t) = profile_ref(&self.payload) {
            let url = format!("{}/mdm/ddm/profiles/{}", public_url.trim_end_matches('/'), urlencoding::encode(t));
            d.payload.insert("ProfileURL".into(), Json::String(url));
        }
        if is_scep_asset(self) {
            let url = format!(
                "{}/mdm/ddm/assets/{}",
                public_url.trim_end_matches('/'),
                urlencoding::encode(&self.identifier)
            );
            d.payload
                .insert("Reference".into(), json!({"DataURL": url, "ContentType": "application/json"}));
            d.payload.insert("Authentication".into(), json!({"Type": "MDM"}));
        }
        d
    }

    fn view(&self) -> Json {
        json!({
            "Type": self.r#type,
            "Identifier": self.identifier,
            "ServerToken": self.server_token,
            "Payload": self.payload,
            "kind": self.kind,
            // Built-in declarations were never changed: no time.
            "updated_at": if self.updated_at > 0 { crate::clock::json_time(self.updated_at) } else { serde_json::Value::Null },
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SetRecord {
    declarations: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Assigned {
    sets: BTreeSet<String>,
}

/// The status channel's record of one enrollment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Item name → {value, at}.
    pub items: BTreeMap<String, ItemValue>,
    /// Declaration identifier → what the device said about it.
    pub declarations: BTreeMap<String, DeclarationStatus>,
    pub errors: Vec<Json>,
    pub reports: u64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemValue {
    pub value: Json,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeclarationStatus {
    pub kind: String,
    pub active: Option<bool>,
    pub valid: Option<String>,
    pub server_token: Option<String>,
    pub reasons: Json,
    pub at: i64,
}

pub struct Ddm {
    store: Arc<dyn Store>,
    pub cfg: DdmConfig,
    /// The service it queues through (weak: the `Mdm` owns this `Ddm`).
    mdm: Weak<Mdm>,
    dirty: Mutex<HashSet<String>>,
    kick: tokio::sync::Notify,
    /// The set -> enrollments index is known to be built (`ensure_index`).
    indexed: tokio::sync::OnceCell<()>,
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl Ddm {
    /// Built inside the `Mdm` it belongs to (`Arc::new_cyclic`): `mdm` is
    /// that service, reachable once it is built.
    pub fn new(store: Arc<dyn Store>, cfg: DdmConfig, mdm: Weak<Mdm>) -> Arc<Ddm> {
        Arc::new(Ddm {
            store,
            cfg,
            mdm,
            dirty: Mutex::new(HashSet::new()),
            kick: tokio::sync::Notify::new(),
            indexed: tokio::sync::OnceCell::new(),
        })
    }

    /// Start the sync sender.
    pub fn start(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(d) = me.upgrade() else { return };
                d.kick.notified().await;
                tokio::time::sleep(d.cfg.coalesce).await;
                let ids: Vec<String> = d.dirty.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
                if !ids.is_empty() {
                    if let Err(e) = d.send_sync(ids).await {
                        tracing::warn!(error = %e, "DDM: could not queue the sync commands");
                    }
                }
            }
        });
    }

    fn mark(&self, ids: impl IntoIterator<Item = String>) {
        let mut n = 0;
        {
            let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                d.insert(id);
                n += 1;
            }
        }
        if n > 0 {
            self.kick.notify_one();
        }
    }

    // ---- declarations

    pub async fn put_declaration(&self, v: &Json) -> Result<(StoredDeclaration, bool), DdmError> {
        let (ty, id, payload, kind) = declarative::validate(v).map_err(DdmError::Invalid)?;
        if id.starts_with("mdmd.") {
            return Err(DdmError::BadRequest(format!(
                "identifiers starting with \"mdmd.\" are mdmd's own ({id})"
            )));
        }
        if kind == Kind::Configuration && ty == "com.apple.configuration.management.status-subscriptions" && self.cfg.status_subscriptions {
            tracing::debug!("an admin status subscription beside mdmd's own");
        }
        let extra = match profile_ref(&payload) {
            Some(t) => match self.store.template(t).await? {
                Some(tpl) => tpl.sha256,
                None => {
                    return Err(DdmError::Invalid(vec![Problem {
                        path: "Payload.ProfileURL".into(),
                        message: format!("no profile template {t} (upload it with mdmd profiles add)"),
                    }]))
                }
            },
            None => String::new(),
        };
        let token = declarative::server_token(&ty, &payload, &extra);
        let old = self.store.record(DECLS, &id).await?;
        if let Some(o) = &old {
            let prev: StoredDeclaration = serde_json::from_value(o.value.clone()).map_err(crate::store::StoreError::from)?;
            if prev.r#type != ty {
                return Err(DdmError::Conflict(format!(
                    "declaration {id} is a {}; delete it before reusing the identifier for a {ty}",
                    prev.r#type
                )));
            }
            if prev.server_token == token {
                return Ok((prev, false));
            }
        }
        let rec = StoredDeclaration {
            r#type: ty,
            identifier: id.clone(),
            kind,
            payload,
            server_token: token,
            updated_at: now(),
        };
        let value = serde_json::to_value(&rec).map_err(crate::store::StoreError::from)?;
        let expect = Some(old.as_ref().map(|o| o.version).unwrap_or(0));
        if self.store.put_record(DECLS, &id, value, now(), expect).await?.is_none() {
            return Err(DdmError::Conflict(format!("declaration {id} changed meanwhile; try again")));
        }
        if old.is_some() {
            let affected = self.enrollments_with(&id).await?;
            self.mark(affected);
        }
        Ok((rec, true))
    }

    pub async fn declaration(&self, id: &str) -> Result<Option<StoredDeclaration>, DdmError> {
        if let Some(b) = self.builtin().into_iter().find(|d| d.identifier == id) {
            return Ok(Some(b));
        }
        Ok(match self.store.record(DECLS, id).await? {
            Some(r) => Some(serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?),
            None => None,
        })
    }

    pub async fn declarations(&self) -> Result<Vec<Json>, DdmError> {
        let mut out: Vec<Json> = self.builtin().iter().map(|d| d.view()).collect();
        for (_, r) in self.store.records(DECLS).await? {
            if let Ok(d) = serde_json::from_value::<StoredDeclaration>(r.value) {
                out.push(d.view());
            }
        }
        Ok(out)
    }

    /// Delete a declaration: it leaves every set (devices then remove it).
    pub async fn delete_declaration(&self, id: &str) -> Result<bool, DdmError> {
        let affected = self.enrollments_with(id).await?;
        if !self.store.delete_record(DECLS, id, None).await? {
            return Ok(false);
        }
        for (name, r) in self.store.records(SETS).await? {
            let mut s: SetRecord = serde_json::from_value(r.value).unwrap_or_default();
            if s.declarations.remove(id) {
                let value = serde_json::to_value(&s).map_err(crate::store::StoreError::from)?;
                self.store.put_record(SETS, &name, value, now(), None).await?;
            }
        }
        self.mark(affected);
        Ok(true)
    }

    // ---- sets

    async fn set_record(&self, set: &str) -> Result<(SetRecord, u64), DdmError> {
        Ok(match self.store.record(SETS, set).await? {
            Some(r) => (serde_json::from_value(r.value).unwrap_or_default(), r.version),
            None => (SetRecord::default(), 0),
        })
    }

    pub async fn set_add(&self, set: &str, id: &str) -> Result<bool, DdmError> {
        check_name("set", set)?;
        if self.store.record(DECLS, id).await?.is_none() {
            return Err(DdmError::NotFound(format!("no declaration {id}")));
        }
        self.set_change(set, |s| s.declarations.insert(id.to_owned())).await
    }

    pub async fn set_remove(&self, set: &str, id: &str) -> Result<bool, DdmError> {
        self.set_change(set, |s| s.declarations.remove(id)).await
    }

    async fn set_change(&self, set: &str, f: impl Fn(&mut SetRecord) -> bool) -> Result<bool, DdmError> {
        for _ in 0..5 {
            let (mut s, version) = self.set_record(set).await?;
            if !f(&mut s) {
                return Ok(false);
            }
            let value = serde_json::to_value(&s).map_err(crate::store::StoreError::from)?;
            if self.store.put_record(SETS, set, value, now(), Some(version)).await?.is_some() {
                let members = self.enrollments_in(set).await?;
                self.mark(members);
                return Ok(true);
            }
        }
        Err(DdmError::Conflict(format!("set {set} is changing; try again")))
    }

    /// A set: its declarations, enrollments, and what does not add up
    /// (configurations no activation names; references to nothing).
    pub async fn set_view(&self, set: &str) -> Result<Json, DdmError> {
        let (s, version) = self.set_record(set).await?;
        let members = self.enrollments_in(set).await?;
        if version == 0 && members.is_empty() {
            return Err(DdmError::NotFound(format!("no set {set}")));
        }
        let mut decls = Vec::new();
        for id in &s.declarations {
            if let Some(d) = self.declaration(id).await? {
                decls.push(d);
            }
        }
        let (unreferenced, missing) = consistency(&decls);
        Ok(json!({
            "set": set,
            "declarations": decls.iter().map(|d| d.view()).collect::<Vec<_>>(),
            "enrollments": members,
            "unreferenced_configurations": unreferenced,
            "missing_references": missing,
        }))
    }

    pub async fn sets(&self) -> Result<Json, DdmError> {
        let mut out = Vec::new();
        for (name, r) in self.store.records(SETS).await? {
            let s: SetRecord = serde_json::from_value(r.value).unwrap_or_default();
            out.push(json!({"set": name, "declarations": s.declarations}));
        }
        Ok(json!({"sets": out}))
    }

    // ---- assignments

    async fn assigned(&self, enrollment: &str) -> Result<(Assigned, u64), DdmError> {
        Ok(match self.store.record(ASSIGNED, enrollment).await? {
            Some(r) => (serde_json::from_value(r.value).unwrap_or_default(), r.version),
            None => (Assigned::default(), 0),
        })
    }

    pub async fn assign(&self, enrollment: &str, set: &str, on: bool) -> Result<bool, DdmError> {
        check_name("set", set)?;
        if self.store.enrollment(enrollment).await?.is_none() {
            return Err(DdmError::NotFound(format!("no enrollment {enrollment}")));
        }
        self.ensure_index().await?;
        let index = members_of(set);
        for _ in 0..5 {
            let (mut a, version) = self.assigned(enrollment).await?;
            let changed = if on { a.sets.insert(set.to_owned()) } else { a.sets.remove(set) };
            if !changed {
                return Ok(false);
            }
            if on {
                // The index first: it may say more than ASSIGNED, never less.
                self.store.put_record(&index, enrollment, json!(true), now(), None).await?;
            }
            let value = serde_json::to_value(&a).map_err(crate::store::StoreError::from)?;
            if self
                .store
                .put_record(ASSIGNED, enrollment, value, now(), Some(version))
                .await?
                .is_some()
            {
                if on {
                    // Again: a removal racing this one may have taken it out meanwhile.
                    self.store.put_record(&index, enrollment, json!(true), now(), None).await?;
                } else {
                    self.store.delete_record(&index, enrollment, None).await?;
                    // An addition racing this removal may have landed in between.
                    if self.assigned(enrollment).await?.0.sets.contains(set) {
                        self.store.put_record(&index, enrollment, json!(true), now(), None).await?;
                    }
                }
                self.mark([enrollment.to_owned()]);
                return Ok(true);
            }
        }
        Err(DdmError::Conflict(format!("{enrollment}'s sets are changing; try again")))
    }

    /// Build the set -> enrollments index from every assignment, once per
    /// store (a store from before it; several instances may race here, and
    /// every write is idempotent), then remember it in this process.
    async fn ensure_index(&self) -> Result<(), DdmError> {
        self.indexed
            .get_or_try_init(|| async {
                if self.store.record(INDEX_MARK.0, INDEX_MARK.1).await?.is_some() {
                    return Ok(());
                }
                let mut after = None;
                let mut n = 0usize;
                loop {
                    let page = self.store.records_after(ASSIGNED, after.clone(), 1000).await?;
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    let mut writes = Vec::new();
                    for (enrollment, r) in &page {
                        let a: Assigned = serde_json::from_value(r.value.clone()).unwrap_or_default();
                        for set in a.sets {
                            writes.push(crate::store::RecordWrite {
                                collection: members_of(&set),
                                key: enrollment.clone(),
                                value: json!(true),
                                expect: None,
                            });
                        }
                    }
                    n += writes.len();
                    if !writes.is_empty() {
                        self.store.put_records(writes, now()).await?;
                    }
                }
                self.store.put_record(INDEX_MARK.0, INDEX_MARK.1, json!(now()), now(), None).await?;
                if n > 0 {
                    tracing::info!(assignments = n, "DDM: set membership index built");
                }
                Ok::<(), DdmError>(())
            })
            .await?;
        Ok(())
    }

    pub async fn enrollment_sets(&self, enrollment: &str) -> Result<Vec<String>, DdmError> {
        Ok(self.assigned(enrollment).await?.0.sets.into_iter().collect())
    }

    /// The enrollments assigned to `set`: its index entries that ASSIGNED confirms.
    async fn enrollments_in(&self, set: &str) -> Result<Vec<String>, DdmError> {
        self.ensure_index().await?;
        let keys: Vec<String> = self.store.records(&members_of(set)).await?.into_iter().map(|(k, _)| k).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let recs = self.store.records_of(ASSIGNED, keys.clone()).await?;
        Ok(keys
            .into_iter()
            .zip(recs)
            .filter(|(_, r)| {
                r.as_ref()
                    .and_then(|r| serde_json::from_value::<Assigned>(r.value.clone()).ok())
                    .is_some_and(|a| a.sets.contains(set))
            })
            .map(|(k, _)| k)
            .collect())
    }

    /// Enrollments whose effective declarations include `id`: the members of
    /// the sets that hold it (sets are few; members are read per set).
    async fn enrollments_with(&self, id: &str) -> Result<Vec<String>, DdmError> {
        let sets: Vec<String> = self
            .store
            .records(SETS)
            .await?
            .into_iter()
            .filter(|(_, r)| serde_json::from_value::<SetRecord>(r.value.clone()).is_ok_and(|s| s.declarations.contains(id)))
            .map(|(k, _)| k)
            .collect();
        let mut out = BTreeSet::new();
        for set in &sets {
            out.extend(self.enrollments_in(set).await?);
        }
        Ok(out.into_iter().collect())
    }
}

fn check_name(what: &str, s: &str) -> Result<(), DdmError> {
    if declarative::valid_identifier(s) {
        Ok(())
    } else {
        Err(DdmError::BadRequest(format!("{what} {s:?}: letters, digits, '.', '-' and '_'")))
    }
}

impl From<DdmError> for ServiceError {
    fn from(e: DdmError) -> Self {
        match e {
            DdmError::Store(s) => ServiceError::Store(s),
            DdmError::Internal { what, source } => ServiceError::Internal { what, source },
            other => ServiceError::Rejected(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EnrollmentKind;
    use crate::store::Enrollment;

    fn ddm(store: &Arc<dyn Store>) -> Arc<Ddm> {
        let cfg = DdmConfig {
            status_subscriptions: false,
            enable_after_enroll: false,
            coalesce: Duration::from_secs(3600),
            public_url: "https://mdm.example".into(),
        };
        Ddm::new(store.clone(), cfg, Weak::new())
    }

    /// A set's members come from its index, confirmed by each enrollment's own
    /// record; a store from before the index gets it built once.
    #[tokio::test]
    async fn set_members_come_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::redb::RedbStore::open(&dir.path().join("d.redb")).unwrap());
        for id in ["E1", "E2", "E3"] {
            let e = Enrollment::blank(id, id, EnrollmentKind::Device, "t", 1);
            store.authenticate(e, false).await.unwrap();
        }
        let d = ddm(&store);
        assert!(d.assign("E1", "staff", true).await.unwrap());
        assert!(d.assign("E2", "staff", true).await.unwrap());
        assert!(d.assign("E3", "lab", true).await.unwrap());
        assert_eq!(d.enrollments_in("staff").await.unwrap(), vec!["E1", "E2"]);
        assert!(d.assign("E2", "staff", false).await.unwrap());
        assert_eq!(d.enrollments_in("staff").await.unwrap(), vec!["E1"]);
        assert!(store.records(&members_of("staff")).await.unwrap().iter().all(|(k, _)| k == "E1"));
        // An index entry ASSIGNED does not confirm (a crash between the two writes) is not a member.
        store.put_record(&members_of("staff"), "E3", json!(true), 1, None).await.unwrap();
        assert_eq!(d.enrollments_in("staff").await.unwrap(), vec!["E1"]);
        // A declaration's enrollments: the members of the sets holding it.
        store
            .put_record(SETS, "lab", json!({"declarations": ["x.decl"]}), 1, None)
            .await
            .unwrap();
        store
            .put_record(SETS, "staff", json!({"declarations": ["x.decl", "y.decl"]}), 1, None)
            .await
            .unwrap();
        assert_eq!(d.enrollments_with("x.decl").await.unwrap(), vec!["E1", "E3"]);
        assert_eq!(d.enrollments_with("y.decl").await.unwrap(), vec!["E1"]);
        // A store from before the index: assignments only, no index, no mark.
        for (c, k) in [(members_of("staff"), "E1"), (members_of("staff"), "E3"), (members_of("lab"), "E3")] {
            store.delete_record(&c, k, None).await.unwrap();
        }
        store.delete_record(INDEX_MARK.0, INDEX_MARK.1, None).await.unwrap();
        let fresh = ddm(&store);
        assert_eq!(fresh.enrollments_with("x.decl").await.unwrap(), vec!["E1", "E3"]);
        assert!(store.record(INDEX_MARK.0, INDEX_MARK.1).await.unwrap().is_some());
        assert_eq!(store.records(&members_of("lab")).await.unwrap().len(), 1);
    }
}
