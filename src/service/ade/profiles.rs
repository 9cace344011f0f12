//! ADE profiles: defined at Apple on every token before they are stored, the default
//! profile (with its CEL rule) assigned to devices, and assignment by hand.

use super::*;

impl Ade {
    /// Define (or redefine) an ADE profile at Apple on every server (or the
    /// ones named) and keep it. Apple's profiles cannot change: a changed one
    /// is defined anew and devices that had the old one get the new one.
    pub async fn put_profile(
        &self,
        name: &str,
        body: &Json,
        default: bool,
        servers: Vec<String>,
        rule: Option<String>,
    ) -> Result<Json, AdeFailure> {
        if !crate::service::fleet::valid_name(name) {
            return Err(AdeFailure::Invalid(format!("{name:?} is not a profile name")));
        }
        let (profile, warnings) = self.check_profile(body)?;
        if let Some(r) = rule.as_deref() {
            crate::service::fleet::rules::Rule::compile(r).map_err(|e| AdeFailure::Invalid(format!("rule: {e}")))?;
        }
        let tokens: Vec<String> = self.store.records(TOKENS).await?.into_iter().map(|(n, _)| n).collect();
        for s in &servers {
            if !tokens.contains(s) {
                return Err(AdeFailure::Invalid(format!("no ADE server token {s}")));
            }
        }
        let old = self.profile_record(name).await?;
        // Defined at Apple before anything is stored: a profile Apple refuses changes nothing.
        let mut uuids = BTreeMap::new();
        for t in &tokens {
            let c = self.client(t).await?;
            let r = c.define_profile(&profile).await?;
            let uuid = r
                .profile_uuid
                .ok_or_else(|| AdeFailure::Apple(AdeError::Decode("no profile_uuid in Apple's answer".into())))?;
            uuids.insert(t.clone(), uuid);
        }
        let rec = ProfileRecord {
            profile,
            uuids: uuids.clone(),
            default,
            servers,
            rule,
            updated_at: now(),
        };
        let expect = old.as_ref().map_or(0, |(_, v)| *v);
        let v = serde_json::to_value(&rec).map_err(StoreError::from)?;
        if self.store.put_record(PROFILES, name, v, now(), Some(expect)).await?.is_none() {
            return Err(AdeFailure::Service(ServiceError::Busy(
                "the profile changed at the same time: try again".into(),
            )));
        }
        tracing::info!(profile = %name, default, defined_at = uuids.len(), "ADE profile defined");
        // Devices that had this profile get the new definition.
        let mut reassigned = 0;
        if old.is_some() {
            for (t, uuid) in &uuids {
                let serials = self.devices_with_profile(t, name).await?;
                if !serials.is_empty() {
                    reassigned += self.assign(t, name, uuid, serials).await?;
                }
            }
        }
        let mut view = Self::profile_json(name, &rec);
        view["reassigned"] = json!(reassigned);
        if !warnings.is_empty() {
            view["warnings"] = json!(warnings);
        }
        Ok(view)
    }

    /// Apple's profile JSON checked and completed: `url` defaults to our
    /// enrollment URL; skip keys must be Apple's; anchor certificates must parse.
    pub(super) fn check_profile(&self, body: &Json) -> Result<(Json, Vec<String>), AdeFailure> {
        let Some(obj) = body.as_object() else {
            return Err(AdeFailure::Invalid("an ADE profile is a JSON object".into()));
        };
        let mut p = obj.clone();
        let mut warnings = Vec::new();
        match p.get("profile_name") {
            Some(Json::String(s)) if !s.trim().is_empty() && s.len() <= 200 => {}
            _ => return Err(AdeFailure::Invalid("profile_name is required (a non-empty string)".into())),
        }
        // Devices go where `url` says: this server, nowhere else.
        let origin = origin_of(&self.cfg.enroll_url);
        match p.get("url") {
            None => {
                p.insert("url".into(), json!(self.cfg.enroll_url));
            }
            Some(Json::String(u)) if u.len() <= 2048 && u.starts_with(&format!("{origin}/")) => {}
            Some(_) => {
                return Err(AdeFailure::Invalid(format!(
                    "url must be this server's (under {origin}/; leave it out for {})",
                    self.cfg.enroll_url
                )))
            }
        }
        if p.contains_key("supervising_host_certs") {
            warnings.push("supervising_host_certs: those computers may pair with and manage these devices (Apple Configurator)".into());
        }
        const BOOLS: [&str; 7] = [
            "allow_pairing",
            "is_supervised",
            "is_multi_user",
            "is_mandatory",
            "await_device_configured",
            "is_mdm_removable",
            "auto_advance_setup",
        ];
        const STRINGS: [&str; 8] = [
            "department",
            "support_phone_number",
            "support_email_address",
            "org_magic",
            "language",
            "region",
            "configuration_web_url",
            "profile_name",
        ];
        for (k, v) in &p {
            if BOOLS.contains(&k.as_str()) {
                if !v.is_boolean() {
                    return Err(AdeFailure::Invalid(format!("{k} must be true or false")));
                }
            } else if STRINGS.contains(&k.as_str()) {
                if v.as_str().is_none_or(|s| s.len() > 2048) {
                    return Err(AdeFailure::Invalid(format!("{k} must be a string")));
                }
            } else if !matches!(
                k.as_str(),
                "url" | "skip_setup_items" | "anchor_certs" | "supervising_host_certs" | "devices"
            ) {
                warnings.push(format!("{k} is not a profile key mdmd knows: passed to Apple as given"));
            }
        }
        if p.get("is_supervised") == Some(&json!(false)) {
            warnings.push("is_supervised false: iOS 13 and later supervise every ADE device anyway".into());
        }
        if let Some(items) = p.get("skip_setup_items") {
            let Some(items) = items.as_array().filter(|a| a.len() <= 100) else {
                return Err(AdeFailure::Invalid("skip_setup_items must be an array of Apple's skip keys".into()));
            };
            let names: Vec<&str> = items.iter().filter_map(Json::as_str).collect();
            if names.len() != items.len() {
                return Err(AdeFailure::Invalid("skip_setup_items must be an array of strings".into()));
            }
            let unknown = crate::protocol::ade::unknown_skip_keys(names);
            if !unknown.is_empty() {
                return Err(AdeFailure::Invalid(format!(
                    "skip_setup_items: not Setup Assistant skip keys in Apple's schema: {}",
                    unknown.join(", ")
                )));
            }
        }
        for k in ["anchor_certs", "supervising_host_certs"] {
            let Some(certs) = p.get(k) else { continue };
            let Some(certs) = certs.as_array().filter(|a| a.len() <= 20) else {
                return Err(AdeFailure::Invalid(format!("{k} must be an array of base64 DER certificates")));
            };
            for (i, c) in certs.iter().enumerate() {
                use base64::Engine as _;
                let der = c
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok())
                    .ok_or_else(|| AdeFailure::Invalid(format!("{k}[{i}] is not base64")))?;
                openssl::x509::X509::from_der(&der).map_err(|_| AdeFailure::Invalid(format!("{k}[{i}] is not a DER certificate")))?;
            }
        }
        Ok((Json::Object(p), warnings))
    }

    pub(crate) async fn profile_record(&self, name: &str) -> Result<Option<(ProfileRecord, u64)>, StoreError> {
        match self.store.record(PROFILES, name).await? {
            Some(r) => Ok(Some((serde_json::from_value(r.value)?, r.version))),
            None => Ok(None),
        }
    }

    pub(crate) async fn profile_records(&self) -> Result<Vec<(String, ProfileRecord)>, StoreError> {
        let mut out = Vec::new();
        for (n, r) in self.store.records(PROFILES).await? {
            out.push((n, serde_json::from_value(r.value)?));
        }
        Ok(out)
    }

    pub(super) fn profile_json(name: &str, r: &ProfileRecord) -> Json {
        json!({
            "name": name,
            "profile": r.profile,
            "uuids": r.uuids,
            "default": r.default,
            "servers": r.servers,
            "rule": r.rule,
            "updated_at": rfc3339(r.updated_at),
        })
    }

    pub async fn profiles(&self) -> Result<Vec<Json>, StoreError> {
        Ok(self
            .profile_records()
            .await?
            .iter()
            .map(|(n, r)| Self::profile_json(n, r))
            .collect())
    }

    pub async fn profile(&self, name: &str) -> Result<Option<Json>, StoreError> {
        Ok(self.profile_record(name).await?.map(|(r, _)| Self::profile_json(name, &r)))
    }

    pub async fn delete_profile(&self, name: &str) -> Result<bool, StoreError> {
        self.store.delete_record(PROFILES, name, None).await
    }

    /// Our profile (name and record) with this UUID at Apple, if any.
    pub(crate) async fn profile_by_uuid(&self, uuid: &str) -> Result<Option<(String, ProfileRecord)>, StoreError> {
        Ok(self
            .profile_records()
            .await?
            .into_iter()
            .find(|(_, r)| r.uuids.values().any(|u| u.eq_ignore_ascii_case(uuid))))
    }
}
