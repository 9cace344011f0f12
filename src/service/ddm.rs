//! Declarative Device Management: declarations, sets, assignments, the
//! device's `DeclarativeManagement` endpoints, the status channel, and
//! software-update enforcement (the KMFDDM model, built in).
//!
//! Everything lives in versioned records (`RecordStore`), so both stores
//! carry it and several instances share it:
//! - `ddm-declarations/<identifier>`: Type, kind, Payload, ServerToken;
//! - `ddm-sets/<set>`: the identifiers in a set;
//! - `ddm-enrollment-sets/<enrollment>`: the sets assigned to an enrollment;
//! - `ddm-status/<enrollment>`: the latest value of each status item with
//!   its time, declaration status, and the last errors.
//!
//! An enrollment's effective declarations are those of its sets plus, unless
//! turned off, mdmd's own status subscription (OS version and build, model,
//! passcode compliance, declaration status, software update state) and the
//! activation that applies it. When they change, the enrollment is marked;
//! marks are collected for a moment and each marked enrollment gets one
//! `DeclarativeManagement` command carrying its new sync tokens, and a push.

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
const STATUS: &str = "ddm-status";

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
            "updated_at": self.updated_at,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
        for _ in 0..5 {
            let (mut a, version) = self.assigned(enrollment).await?;
            let changed = if on { a.sets.insert(set.to_owned()) } else { a.sets.remove(set) };
            if !changed {
                return Ok(false);
            }
            let value = serde_json::to_value(&a).map_err(crate::store::StoreError::from)?;
            if self
                .store
                .put_record(ASSIGNED, enrollment, value, now(), Some(version))
                .await?
                .is_some()
            {
                self.mark([enrollment.to_owned()]);
                return Ok(true);
            }
        }
        Err(DdmError::Conflict(format!("{enrollment}'s sets are changing; try again")))
    }

    pub async fn enrollment_sets(&self, enrollment: &str) -> Result<Vec<String>, DdmError> {
        Ok(self.assigned(enrollment).await?.0.sets.into_iter().collect())
    }

    async fn enrollments_in(&self, set: &str) -> Result<Vec<String>, DdmError> {
        Ok(self
            .store
            .records(ASSIGNED)
            .await?
            .into_iter()
            .filter(|(_, r)| serde_json::from_value::<Assigned>(r.value.clone()).is_ok_and(|a| a.sets.contains(set)))
            .map(|(k, _)| k)
            .collect())
    }

    /// Enrollments whose effective declarations include `id`.
    async fn enrollments_with(&self, id: &str) -> Result<Vec<String>, DdmError> {
        let sets: HashSet<String> = self
            .store
            .records(SETS)
            .await?
            .into_iter()
            .filter(|(_, r)| serde_json::from_value::<SetRecord>(r.value.clone()).is_ok_and(|s| s.declarations.contains(id)))
            .map(|(k, _)| k)
            .collect();
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .records(ASSIGNED)
            .await?
            .into_iter()
            .filter(|(_, r)| serde_json::from_value::<Assigned>(r.value.clone()).is_ok_and(|a| a.sets.iter().any(|s| sets.contains(s))))
            .map(|(k, _)| k)
            .collect())
    }

    // ---- what a device gets

    fn builtin(&self) -> Vec<StoredDeclaration> {
        if !self.cfg.status_subscriptions {
            return Vec::new();
        }
        let items: Vec<Json> = SUBSCRIBED_ITEMS.iter().map(|i| json!({"Name": i})).collect();
        let mk = |ty: &str, id: &str, kind: Kind, payload: Json| {
            let payload = payload.as_object().cloned().unwrap_or_default();
            StoredDeclaration {
                r#type: ty.to_owned(),
                identifier: id.to_owned(),
                kind,
                server_token: declarative::server_token(ty, &payload, ""),
                payload,
                updated_at: 0,
            }
        };
        vec![
            mk(
                "com.apple.configuration.management.status-subscriptions",
                STATUS_SUBSCRIPTION_ID,
                Kind::Configuration,
                json!({"StatusItems": items}),
            ),
            mk(
                "com.apple.activation.simple",
                STATUS_ACTIVATION_ID,
                Kind::Activation,
                json!({"StandardConfigurations": [STATUS_SUBSCRIPTION_ID]}),
            ),
        ]
    }

    /// The declarations an enrollment has now, by identifier.
    pub async fn effective(&self, enrollment: &str) -> Result<BTreeMap<String, StoredDeclaration>, DdmError> {
        let mut out: BTreeMap<String, StoredDeclaration> = self.builtin().into_iter().map(|d| (d.identifier.clone(), d)).collect();
        let (a, _) = self.assigned(enrollment).await?;
        let mut ids = BTreeSet::new();
        for set in &a.sets {
            ids.extend(self.set_record(set).await?.0.declarations);
        }
        for id in ids {
            if let Some(r) = self.store.record(DECLS, &id).await? {
                if let Ok(d) = serde_json::from_value::<StoredDeclaration>(r.value) {
                    out.insert(id, d);
                }
            }
        }
        Ok(out)
    }

    fn tokens_of(decls: &BTreeMap<String, StoredDeclaration>) -> (String, i64) {
        let pairs: Vec<(String, String)> = decls.values().map(|d| (d.identifier.clone(), d.server_token.clone())).collect();
        let latest = decls.values().map(|d| d.updated_at).max().unwrap_or(0);
        (declarative::declarations_token(&pairs), latest)
    }

    /// `{SyncTokens: …}` for an enrollment.
    pub async fn sync_tokens(&self, enrollment: &str) -> Result<Json, DdmError> {
        let decls = self.effective(enrollment).await?;
        let (token, latest) = Self::tokens_of(&decls);
        Ok(json!({"SyncTokens": {"DeclarationsToken": token, "Timestamp": rfc3339(latest.max(1))}}))
    }

    /// A DeclarativeManagement check-in. `Ok(None)`: no such declaration (404).
    pub async fn endpoint(&self, enrollment: &str, endpoint: &str, data: Option<&[u8]>) -> Result<Option<Vec<u8>>, DdmError> {
        match endpoint {
            "tokens" => Ok(Some(self.sync_tokens(enrollment).await?.to_string().into_bytes())),
            "declaration-items" => {
                let decls = self.effective(enrollment).await?;
                let (token, _) = Self::tokens_of(&decls);
                let mut by_kind: BTreeMap<&str, Vec<Json>> = [Kind::Activation, Kind::Asset, Kind::Configuration, Kind::Management]
                    .iter()
                    .map(|k| (k.items_key(), Vec::new()))
                    .collect();
                for d in decls.values() {
                    if let Some(v) = by_kind.get_mut(d.kind.items_key()) {
                        v.push(json!({"Identifier": d.identifier, "ServerToken": d.server_token}));
                    }
                }
                Ok(Some(
                    json!({"Declarations": by_kind, "DeclarationsToken": token})
                        .to_string()
                        .into_bytes(),
                ))
            }
            "status" => {
                let data = data.ok_or_else(|| DdmError::BadRequest("a status report needs Data".into()))?;
                self.status_report(enrollment, data).await?;
                Ok(Some(Vec::new()))
            }
            other => {
                let Some(rest) = other.strip_prefix("declaration/") else {
                    return Err(DdmError::BadRequest(format!("unknown declarative endpoint {other:?}")));
                };
                let (kind, id) = rest
                    .split_once('/')
                    .ok_or_else(|| DdmError::BadRequest(format!("{other:?}: declaration/<kind>/<identifier>")))?;
                let kind = Kind::parse(kind).ok_or_else(|| DdmError::BadRequest(format!("{other:?}: unknown kind")))?;
                let decls = self.effective(enrollment).await?;
                Ok(decls
                    .get(id)
                    .filter(|d| d.kind == kind)
                    .and_then(|d| serde_json::to_vec(&d.served_to_device(&self.cfg.public_url)).ok()))
            }
        }
    }

    /// A profile template was uploaded again: legacy configurations that
    /// point at it get a new ServerToken, and their devices sync.
    pub async fn template_changed(&self, template: &str) -> Result<usize, DdmError> {
        let sha = match self.store.template(template).await? {
            Some(t) => t.sha256,
            None => return Ok(0),
        };
        let mut n = 0;
        for (id, r) in self.store.records(DECLS).await? {
            let Ok(mut d) = serde_json::from_value::<StoredDeclaration>(r.value) else {
                continue;
            };
            if profile_ref(&d.payload) != Some(template) {
                continue;
            }
            let token = declarative::server_token(&d.r#type, &d.payload, &sha);
            if token == d.server_token {
                continue;
            }
            d.server_token = token;
            d.updated_at = now();
            let value = serde_json::to_value(&d).map_err(crate::store::StoreError::from)?;
            if self.store.put_record(DECLS, &id, value, now(), Some(r.version)).await?.is_some() {
                let affected = self.enrollments_with(&id).await?;
                n += affected.len();
                self.mark(affected);
            }
        }
        Ok(n)
    }

    /// The enrollment whose current identity is `cert_hash` (not revoked).
    async fn device_of(&self, cert_hash: &str) -> Result<String, DdmError> {
        let cert = self
            .store
            .cert_by_hash(cert_hash)
            .await?
            .ok_or_else(|| DdmError::NotFound("this identity is not one we issued".into()))?;
        if cert.revoked_at.is_some() {
            return Err(DdmError::Conflict("this identity is revoked".into()));
        }
        let enrollment = cert
            .enrollment
            .ok_or_else(|| DdmError::NotFound("this identity is not bound to an enrollment".into()))?;
        let e = self
            .store
            .enrollment(&enrollment)
            .await?
            .ok_or_else(|| DdmError::NotFound(format!("no enrollment {enrollment}")))?;
        if !e.active || e.checked_out_at.is_some() || e.cert_hash.as_deref() != Some(cert_hash) {
            return Err(DdmError::Conflict("this identity is not the enrollment's current one".into()));
        }
        Ok(enrollment)
    }

    /// The enrollment that may fetch template `template` with the identity
    /// `cert_hash`: one of its effective declarations points at the template.
    pub async fn profile_fetch_allowed(&self, cert_hash: &str, template: &str) -> Result<String, DdmError> {
        let enrollment = self.device_of(cert_hash).await?;
        let decls = self.effective(&enrollment).await?;
        if decls.values().any(|d| profile_ref(&d.payload) == Some(template)) {
            Ok(enrollment)
        } else {
            Err(DdmError::NotFound(format!(
                "no declaration of {enrollment} points at profile {template}"
            )))
        }
    }

    /// The enrollment that may fetch SCEP asset `asset` with `cert_hash`.
    pub async fn scep_asset_allowed(&self, cert_hash: &str, asset: &str) -> Result<String, DdmError> {
        let enrollment = self.device_of(cert_hash).await?;
        let decls = self.effective(&enrollment).await?;
        match decls.get(asset) {
            Some(d) if is_scep_asset(d) => Ok(enrollment),
            _ => Err(DdmError::NotFound(format!("{enrollment} has no SCEP credential asset {asset}"))),
        }
    }

    // ---- the status channel

    async fn status_report(&self, enrollment: &str, data: &[u8]) -> Result<(), DdmError> {
        let report: Json = serde_json::from_slice(data).map_err(|e| DdmError::BadRequest(format!("the status report is not JSON: {e}")))?;
        let items = report
            .get("StatusItems")
            .ok_or_else(|| DdmError::BadRequest("the status report has no StatusItems".into()))?;
        if !items.is_object() {
            return Err(DdmError::BadRequest("StatusItems must be an object".into()));
        }
        let full = report.get("FullReport").and_then(|v| v.as_bool()).unwrap_or(false);
        let t = now();
        for _ in 0..5 {
            let (mut rec, version) = match self.store.record(STATUS, enrollment).await? {
                Some(r) => (serde_json::from_value::<StatusRecord>(r.value).unwrap_or_default(), r.version),
                None => (StatusRecord::default(), 0),
            };
            if full {
                rec.items.clear();
            }
            for (name, value) in declarative::flatten_status(items) {
                if name == "management.declarations" {
                    if full {
                        rec.declarations.clear();
                    }
                    read_declaration_status(&value, t, &mut rec.declarations);
                }
                rec.items.insert(name, ItemValue { value, at: t });
            }
            rec.errors = report.get("Errors").and_then(|e| e.as_array()).cloned().unwrap_or_default();
            rec.reports += 1;
            rec.updated_at = t;
            let value = serde_json::to_value(&rec).map_err(crate::store::StoreError::from)?;
            if self.store.put_record(STATUS, enrollment, value, t, Some(version)).await?.is_some() {
                self.feed_inventory(enrollment, &rec).await;
                return Ok(());
            }
        }
        Err(DdmError::Conflict("concurrent status reports".into()))
    }

    /// What the status channel says about the device's OS and model goes
    /// into its facts (profile variables, `devices show`), and compliance is
    /// evaluated again (an OS update reported here can make it compliant).
    async fn feed_inventory(&self, enrollment: &str, rec: &StatusRecord) {
        let s = |n: &str| rec.items.get(n).and_then(|v| v.value.as_str()).map(str::to_owned);
        let info = crate::store::DeviceInfo {
            os_version: s("device.operating-system.version"),
            build_version: s("device.operating-system.build-version"),
            product_name: s("device.model.identifier"),
            ..Default::default()
        };
        if info.os_version.is_none() && info.build_version.is_none() && info.product_name.is_none() {
            return;
        }
        let Some(e) = self.store.enrollment(enrollment).await.ok().flatten() else {
            return;
        };
        let same = e.info.os_version == info.os_version
            && e.info.build_version == info.build_version
            && (info.product_name.is_none() || e.info.product_name == info.product_name);
        if same {
            return;
        }
        if let Err(err) = self.store.update_info(enrollment, info).await {
            tracing::warn!(%enrollment, error = %err, "DDM: status not recorded in the device facts");
            return;
        }
        if let Some(mdm) = self.mdm.upgrade() {
            if let Err(err) = mdm.evaluate_compliance(&e.device).await {
                tracing::warn!(%enrollment, error = %err, "DDM: compliance not evaluated");
            }
        }
    }

    pub async fn status(&self, enrollment: &str) -> Result<Option<StatusRecord>, DdmError> {
        Ok(match self.store.record(STATUS, enrollment).await? {
            Some(r) => Some(serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?),
            None => None,
        })
    }

    /// Enrollments whose latest value of `item` compares as asked
    /// (`op`: eq, ne, lt, le, gt, ge; versions compare numerically).
    pub async fn find_by_status(&self, item: &str, op: &str, value: &str) -> Result<Vec<Json>, DdmError> {
        use std::cmp::Ordering as O;
        let test = |o: O| match op {
            "eq" => o == O::Equal,
            "ne" => o != O::Equal,
            "lt" => o == O::Less,
            "le" => o != O::Greater,
            "gt" => o == O::Greater,
            "ge" => o != O::Less,
            _ => false,
        };
        if !matches!(op, "eq" | "ne" | "lt" | "le" | "gt" | "ge") {
            return Err(DdmError::BadRequest(format!("op {op:?}: one of eq, ne, lt, le, gt, ge")));
        }
        let mut out = Vec::new();
        for (id, r) in self.store.records(STATUS).await? {
            let Ok(rec) = serde_json::from_value::<StatusRecord>(r.value) else {
                continue;
            };
            let Some(v) = rec.items.get(item) else { continue };
            let have = match &v.value {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            let o = if have.chars().next().is_some_and(|c| c.is_ascii_digit()) && value.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                declarative::version_cmp(&have, value)
            } else {
                have.as_str().cmp(value)
            };
            if test(o) {
                out.push(json!({"enrollment": id, "value": v.value, "reported_at": rfc3339(v.at)}));
            }
        }
        Ok(out)
    }

    // ---- turning DDM on, and the sync command

    /// After an enrollment's first TokenUpdate: turn DDM on for iOS 15+.
    pub async fn enrolled(&self, enrollment: &str, os_version: Option<&str>) {
        if !self.cfg.enable_after_enroll {
            return;
        }
        let ok = os_version.is_some_and(|v| declarative::version_cmp(v, "15") != std::cmp::Ordering::Less);
        if ok {
            self.mark([enrollment.to_owned()]);
        }
    }

    /// Queue one DeclarativeManagement command (with the current tokens) per
    /// enrollment, and push.
    pub async fn send_sync(&self, ids: Vec<String>) -> Result<usize, DdmError> {
        let Some(mdm) = self.mdm.upgrade() else {
            return Ok(0);
        };
        let mut items = Vec::with_capacity(ids.len());
        for id in &ids {
            let tokens = self.sync_tokens(id).await?;
            let mut d = plist::Dictionary::new();
            d.insert("RequestType".into(), "DeclarativeManagement".into());
            d.insert("Data".into(), plist::Value::Data(tokens.to_string().into_bytes()));
            let cmd = crate::protocol::Command::new(d).map_err(|e| DdmError::Internal {
                what: "building the DeclarativeManagement command",
                source: e.into(),
            })?;
            items.push((CommandRecord::new(&cmd, now(), None), id.clone()));
        }
        let out = self.store.enqueue_each(items, Vec::new()).await?;
        let unknown: HashSet<&String> = out.unknown.iter().collect();
        let woken: Vec<String> = ids.iter().filter(|i| !unknown.contains(i)).cloned().collect();
        let n = woken.len();
        mdm.wake(woken);
        tracing::info!(enrollments = n, "DDM: sync commands queued");
        Ok(n)
    }

    // ---- software updates

    /// Require `version` (optionally `build`) by `deadline` (local
    /// `yyyy-mm-ddThh:mm:ss`) on the enrollments of `set`: one enforcement
    /// configuration and its activation in the set.
    pub async fn require_os(
        &self,
        set: &str,
        version: &str,
        build: Option<&str>,
        deadline: &str,
        details_url: Option<&str>,
    ) -> Result<Json, DdmError> {
        check_name("set", set)?;
        let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        if time::PrimitiveDateTime::parse(deadline, &fmt).is_err() {
            return Err(DdmError::BadRequest(format!(
                "deadline {deadline:?}: local time as yyyy-mm-ddThh:mm:ss"
            )));
        }
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(DdmError::BadRequest(format!("version {version:?}: such as 17.2")));
        }
        let cfg_id = format!("softwareupdate.{set}");
        let act_id = format!("softwareupdate.{set}.activation");
        let mut payload = json!({"TargetOSVersion": version, "TargetLocalDateTime": deadline});
        if let Some(b) = build {
            payload["TargetBuildVersion"] = json!(b);
        }
        if let Some(u) = details_url {
            payload["DetailsURL"] = json!(u);
        }
        self.put_declaration(&json!({
            "Type": "com.apple.configuration.softwareupdate.enforcement.specific",
            "Identifier": cfg_id,
            "Payload": payload,
        }))
        .await?;
        self.put_declaration(&json!({
            "Type": "com.apple.activation.simple",
            "Identifier": act_id,
            "Payload": {"StandardConfigurations": [cfg_id]},
        }))
        .await?;
        self.set_add(set, &cfg_id).await?;
        self.set_add(set, &act_id).await?;
        self.software_updates(set).await
    }

    /// Per enrollment of `set`: the required version and what the status
    /// channel says (installed, pending, downloading, installing, failed, unknown).
    pub async fn software_updates(&self, set: &str) -> Result<Json, DdmError> {
        let cfg_id = format!("softwareupdate.{set}");
        let Some(d) = self.declaration(&cfg_id).await? else {
            return Err(DdmError::NotFound(format!("no OS requirement for set {set}")));
        };
        let target = d
            .payload
            .get("TargetOSVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let deadline = d.payload.get("TargetLocalDateTime").cloned().unwrap_or(Json::Null);
        let mut devices = Vec::new();
        for id in self.enrollments_in(set).await? {
            let st = self.status(&id).await?;
            let item = |n: &str| st.as_ref().and_then(|s| s.items.get(n)).map(|v| v.value.clone());
            let version = item("device.operating-system.version").and_then(|v| v.as_str().map(str::to_owned));
            let install = item("softwareupdate.install-state").and_then(|v| v.as_str().map(str::to_owned));
            let state = match (&version, install.as_deref()) {
                (Some(v), _) if declarative::version_cmp(v, &target) != std::cmp::Ordering::Less => "installed",
                (_, Some("failed")) => "failed",
                (_, Some("downloading")) => "downloading",
                (_, Some("installing")) | (_, Some("prepared")) => "installing",
                (Some(_), _) => "pending",
                (None, _) => "unknown",
            };
            devices.push(json!({
                "enrollment": id,
                "state": state,
                "os_version": version,
                "install_state": install,
                "pending_version": item("softwareupdate.pending-version"),
                "failure_reason": item("softwareupdate.failure-reason"),
                "declaration": st.as_ref().and_then(|s| s.declarations.get(&cfg_id)),
            }));
        }
        Ok(json!({"set": set, "target_os_version": target, "deadline": deadline, "devices": devices}))
    }
}

fn check_name(what: &str, s: &str) -> Result<(), DdmError> {
    if declarative::valid_identifier(s) {
        Ok(())
    } else {
        Err(DdmError::BadRequest(format!("{what} {s:?}: letters, digits, '.', '-' and '_'")))
    }
}

/// Configurations and assets no activation (or configuration) names, and
/// names that point at nothing in the set.
fn consistency(decls: &[StoredDeclaration]) -> (Vec<String>, Vec<Json>) {
    let ids: HashSet<&str> = decls.iter().map(|d| d.identifier.as_str()).collect();
    let mut referenced = HashSet::new();
    let mut missing = Vec::new();
    for d in decls {
        for r in d.served().references() {
            if !ids.contains(r.as_str()) {
                missing.push(json!({"from": d.identifier, "to": r}));
            }
            referenced.insert(r);
        }
    }
    let unreferenced = decls
        .iter()
        .filter(|d| matches!(d.kind, Kind::Configuration | Kind::Asset) && !referenced.contains(&d.identifier))
        .map(|d| d.identifier.clone())
        .collect();
    (unreferenced, missing)
}

/// `management.declarations` ({activations, configurations, assets,
/// management: [{identifier, active, valid, server-token, reasons}]}).
fn read_declaration_status(v: &Json, t: i64, out: &mut BTreeMap<String, DeclarationStatus>) {
    let Some(o) = v.as_object() else { return };
    for (kind, list) in o {
        for d in list.as_array().into_iter().flatten() {
            let Some(id) = d.get("identifier").and_then(|x| x.as_str()) else {
                continue;
            };
            out.insert(
                id.to_owned(),
                DeclarationStatus {
                    kind: kind.trim_end_matches('s').to_owned(),
                    active: d.get("active").and_then(|x| x.as_bool()),
                    valid: d.get("valid").and_then(|x| x.as_str()).map(str::to_owned),
                    server_token: d.get("server-token").and_then(|x| x.as_str()).map(str::to_owned),
                    reasons: d.get("reasons").cloned().unwrap_or(Json::Null),
                    at: t,
                },
            );
        }
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
