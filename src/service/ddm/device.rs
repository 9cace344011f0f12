//! What a device gets from declarative management: its effective
//! declarations and sync tokens, the endpoints it fetches (with the profile
//! and SCEP assets it may reach), the status channel (reports kept, fed into
//! inventory, searchable), turning DDM on with the sync command, and OS
//! requirements (software updates).

use super::*;

/// The replacement key of DeclarativeManagement sync commands: a newer one
/// supersedes the one still pending (`CommandRecord::supersede`).
const SYNC_KEY: &str = "ddm-sync";

impl Ddm {
    // ---- what a device gets

    pub(super) fn builtin(&self) -> Vec<StoredDeclaration> {
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

    /// `{SyncTokens: …}` for an enrollment. `Timestamp` is when this
    /// enrollment's set of declarations last really changed: the first time
    /// its current DeclarationsToken was computed (kept per enrollment, so a
    /// set assigned or withdrawn counts, and built-in declarations alone
    /// date from the first sync, not 1970), never earlier than the newest
    /// declaration's own change.
    pub async fn sync_tokens(&self, enrollment: &str) -> Result<Json, DdmError> {
        let decls = self.effective(enrollment).await?;
        let (token, latest) = Self::tokens_of(&decls);
        let changed = self.token_changed_at(enrollment, &token, latest).await?;
        Ok(json!({"SyncTokens": {"DeclarationsToken": token, "Timestamp": rfc3339(changed.max(latest).max(1))}}))
    }

    /// Since when `enrollment` has had `token` (now, if it is new to it).
    async fn token_changed_at(&self, enrollment: &str, token: &str, latest: i64) -> Result<i64, DdmError> {
        let cur = self.store.record(SYNCED, enrollment).await?;
        if let Some(r) = &cur {
            if r.value["token"].as_str() == Some(token) {
                return Ok(r.value["since"].as_i64().unwrap_or(latest));
            }
        }
        let at = crate::clock::now();
        let value = json!({"token": token, "since": at});
        // Another instance may have just written the same: either answer is right.
        self.store
            .put_record(SYNCED, enrollment, value, at, Some(cur.map_or(0, |r| r.version)))
            .await?;
        Ok(at)
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
                if let Some(m) = self.mdm.upgrade() {
                    m.fact_changed(enrollment);
                }
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
    /// enrollment, and push. It replaces the enrollment's sync still pending,
    /// so a device that stays away finds one, not one per change.
    pub async fn send_sync(&self, ids: Vec<String>) -> Result<usize, DdmError> {
        let Some(mdm) = self.mdm.upgrade() else {
            return Ok(0);
        };
        let mut ids = ids;
        ids.sort_unstable();
        ids.dedup();
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
            items.push((CommandRecord::new(&cmd, now(), None).superseding(SYNC_KEY), id.clone()));
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
        let Ok(local) = time::PrimitiveDateTime::parse(deadline, &fmt) else {
            return Err(DdmError::BadRequest(format!(
                "deadline {deadline:?}: local time as yyyy-mm-ddThh:mm:ss"
            )));
        };
        // Local time on each device: past everywhere once it is 14 hours
        // behind UTC (the furthest time zone ahead).
        let past = local.assume_utc().unix_timestamp() + 14 * 3600 < crate::clock::now();
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
        let mut v = self.software_updates(set).await?;
        if past {
            v["warnings"] = json!([format!(
                "the deadline {deadline} has already passed: devices that lack {version} install it at once, without notice"
            )]);
        }
        Ok(v)
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

/// Configurations and assets no activation (or configuration) names, and
/// names that point at nothing in the set.
pub(super) fn consistency(decls: &[StoredDeclaration]) -> (Vec<String>, Vec<Json>) {
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
