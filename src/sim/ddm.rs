//! A simulated device's declarative management: sync tokens, fetch only
//! the declarations whose ServerToken changed, validate them against
//! Apple's schema, activate what activations name, apply status
//! subscriptions and software-update enforcement, and report status.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _};
use serde_json::{json, Value as Json};

use super::SimDevice;
use crate::protocol::declarative::{self, Kind};

/// A declaration as the device holds it.
#[derive(Debug, Clone)]
pub struct Held {
    pub kind: Kind,
    pub r#type: String,
    pub server_token: String,
    pub payload: serde_json::Map<String, Json>,
    /// valid / invalid (Apple's `valid` status value).
    pub valid: &'static str,
    pub active: bool,
    pub reasons: Vec<Json>,
}

#[derive(Clone, Default)]
pub struct DdmState {
    pub enabled: bool,
    pub declarations_token: Option<String>,
    /// The SyncTokens `Timestamp` of the last sync (RFC 3339, as served).
    pub tokens_timestamp: Option<String>,
    pub declarations: BTreeMap<String, Held>,
    /// Declarations fetched (GET declaration/…), over the device's life.
    pub fetched: u64,
    /// Status items the device reports (from active status subscriptions).
    pub subscribed: BTreeSet<String>,
    /// An enforced OS version: (version, build, local deadline).
    pub enforced: Option<(String, Option<String>, String)>,
    pub install_state: String,
    /// Legacy configurations applied: declaration → (ServerToken, profile identifier).
    pub legacy: BTreeMap<String, (String, String)>,
    /// Identities from SCEP credential assets: asset → (ServerToken, identity).
    pub identities: BTreeMap<String, (String, super::pki::SimIdentity)>,
    /// Items already reported (later reports carry changes only).
    reported: BTreeMap<String, Json>,
}

fn set_path(root: &mut serde_json::Map<String, Json>, dotted: &str, v: Json) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut cur = root;
    for p in parts {
        let e = cur.entry(p.to_owned()).or_insert_with(|| json!({}));
        if !e.is_object() {
            *e = json!({});
        }
        let Some(o) = e.as_object_mut() else { return };
        cur = o;
    }
    cur.insert(last.to_owned(), v);
}

impl SimDevice {
    /// A `DeclarativeManagement` check-in: (HTTP status, body).
    pub async fn ddm_checkin(&self, endpoint: &str, data: Option<Vec<u8>>) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut d = self.dict(vec![("MessageType", "DeclarativeManagement".into()), ("Endpoint", endpoint.into())]);
        if let Some(b) = data {
            d.insert("Data".into(), plist::Value::Data(b));
        }
        self.put_raw(
            &self.checkin_url.clone(),
            "application/x-apple-aspen-mdm-checkin",
            crate::protocol::to_xml(&d),
        )
        .await
    }

    async fn ddm_json(&self, endpoint: &str) -> anyhow::Result<Json> {
        let (status, body) = self.ddm_checkin(endpoint, None).await?;
        if status != 200 {
            bail!("{endpoint}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        serde_json::from_slice(&body).with_context(|| format!("{endpoint}: not JSON"))
    }

    /// The DeclarativeManagement command's Data: the server's sync tokens.
    pub fn ddm_command(&mut self, data: Option<&[u8]>) -> anyhow::Result<Option<String>> {
        self.ddm.enabled = true;
        let Some(data) = data else { return Ok(None) };
        let v: Json = serde_json::from_slice(data).context("DeclarativeManagement Data is not JSON")?;
        Ok(v["SyncTokens"]["DeclarationsToken"].as_str().map(str::to_owned))
    }

    /// Synchronise as iOS does: tokens; if they changed, the items; fetch
    /// what is new or changed; drop what is gone; (re)activate; apply; report
    /// status. Returns the identifiers fetched.
    pub async fn ddm_sync(&mut self) -> anyhow::Result<Vec<String>> {
        self.ddm.enabled = true;
        let tokens = self.ddm_json("tokens").await?;
        let token = tokens["SyncTokens"]["DeclarationsToken"].as_str().unwrap_or_default().to_owned();
        self.ddm.tokens_timestamp = tokens["SyncTokens"]["Timestamp"].as_str().map(str::to_owned);
        let mut fetched = Vec::new();
        if self.ddm.declarations_token.as_deref() != Some(token.as_str()) {
            let items = self.ddm_json("declaration-items").await?;
            let mut seen = BTreeSet::new();
            for kind in [Kind::Activation, Kind::Asset, Kind::Configuration, Kind::Management] {
                for it in items["Declarations"][kind.items_key()].as_array().into_iter().flatten() {
                    let (Some(id), Some(st)) = (it["Identifier"].as_str(), it["ServerToken"].as_str()) else {
                        bail!("declaration-items: an item without Identifier or ServerToken");
                    };
                    seen.insert(id.to_owned());
                    if self.ddm.declarations.get(id).is_some_and(|h| h.server_token == st) {
                        continue;
                    }
                    let (status, body) = self.ddm_checkin(&format!("declaration/{}/{id}", kind.as_str()), None).await?;
                    if status != 200 {
                        bail!("declaration/{}/{id}: HTTP {status}", kind.as_str());
                    }
                    self.ddm.fetched += 1;
                    fetched.push(id.to_owned());
                    let v: Json = serde_json::from_slice(&body).context("a declaration is not JSON")?;
                    let (valid, reasons, ty, payload) = match declarative::validate(&v) {
                        Ok((ty, got_id, payload, k)) if got_id == id && k == kind => ("valid", Vec::new(), ty, payload),
                        Ok((ty, _, payload, _)) => (
                            "invalid",
                            vec![
                                json!({"code": "Error.ConfigurationCannotBeDeserialized", "description": "identifier or kind differ from the item"}),
                            ],
                            ty,
                            payload,
                        ),
                        Err(problems) => (
                            "invalid",
                            vec![json!({"code": "Error.ConfigurationCannotBeDeserialized",
                                "description": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")})],
                            v["Type"].as_str().unwrap_or_default().to_owned(),
                            v["Payload"].as_object().cloned().unwrap_or_default(),
                        ),
                    };
                    self.ddm.declarations.insert(
                        id.to_owned(),
                        Held {
                            kind,
                            r#type: ty,
                            server_token: v["ServerToken"].as_str().unwrap_or(st).to_owned(),
                            payload,
                            valid,
                            active: false,
                            reasons,
                        },
                    );
                }
            }
            self.ddm.declarations.retain(|id, _| seen.contains(id));
            self.ddm.declarations_token = Some(token);
        }
        self.ddm_activate();
        self.ddm_apply_legacy().await;
        self.ddm_apply_identities().await;
        self.ddm_apply_updates();
        self.ddm_report(fetched.is_empty()).await?;
        Ok(fetched)
    }

    /// Activations whose configurations are all valid are active, and so are
    /// those configurations; everything else is inactive.
    fn ddm_activate(&mut self) {
        let decls = &mut self.ddm.declarations;
        let mut active_cfgs = BTreeSet::new();
        let mut acts = Vec::new();
        for (id, h) in decls.iter() {
            if h.kind != Kind::Activation {
                continue;
            }
            let names: Vec<String> = h
                .payload
                .get("StandardConfigurations")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let ok = h.valid == "valid" && names.iter().all(|n| decls.get(n).is_some_and(|c| c.valid == "valid"));
            if ok {
                active_cfgs.extend(names);
            }
            acts.push((id.clone(), ok));
        }
        for (id, ok) in acts {
            if let Some(h) = decls.get_mut(&id) {
                h.active = ok;
            }
        }
        for (id, h) in decls.iter_mut() {
            if h.kind != Kind::Activation {
                h.active = h.valid == "valid" && (h.kind != Kind::Configuration || active_cfgs.contains(id));
            }
        }
        let mut subscribed = BTreeSet::new();
        let mut enforced = None;
        for h in decls.values().filter(|h| h.active && h.kind == Kind::Configuration) {
            match h.r#type.as_str() {
                "com.apple.configuration.management.status-subscriptions" => {
                    for it in h.payload.get("StatusItems").and_then(|v| v.as_array()).into_iter().flatten() {
                        if let Some(n) = it["Name"].as_str() {
                            subscribed.insert(n.to_owned());
                        }
                    }
                }
                "com.apple.configuration.softwareupdate.enforcement.specific" => {
                    let s = |k: &str| h.payload.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                    if let (Some(v), Some(t)) = (s("TargetOSVersion"), s("TargetLocalDateTime")) {
                        enforced = Some((v, s("TargetBuildVersion"), t));
                    }
                }
                _ => {}
            }
        }
        self.ddm.subscribed = subscribed;
        self.ddm.enforced = enforced;
    }

    /// Active `com.apple.configuration.legacy` configurations: fetch each
    /// ProfileURL with the device identity as TLS client certificate and
    /// install the profile; configurations that went away take their
    /// profile with them. A failure makes the configuration inactive with
    /// the reason.
    async fn ddm_apply_legacy(&mut self) {
        let want: Vec<(String, String, String)> = self
            .ddm
            .declarations
            .iter()
            .filter(|(_, h)| h.active && h.r#type == "com.apple.configuration.legacy")
            .filter_map(|(id, h)| {
                let url = h.payload.get("ProfileURL")?.as_str()?.to_owned();
                Some((id.clone(), h.server_token.clone(), url))
            })
            .collect();
        let keep: BTreeSet<&String> = want.iter().map(|(id, _, _)| id).collect();
        let gone: Vec<String> = self.ddm.legacy.keys().filter(|id| !keep.contains(id)).cloned().collect();
        for id in gone {
            if let Some((_, profile)) = self.ddm.legacy.remove(&id) {
                self.profiles.remove(&profile);
            }
        }
        for (id, token, url) in want {
            if self.ddm.legacy.get(&id).is_some_and(|(t, _)| *t == token) {
                continue;
            }
            match self.fetch_and_install(&url).await {
                Ok(profile) => {
                    self.ddm.legacy.insert(id, (token, profile));
                }
                Err(e) => {
                    if let Some(h) = self.ddm.declarations.get_mut(&id) {
                        h.active = false;
                        h.reasons = vec![json!({"code": "Error.ConfigurationCannotBeApplied", "description": format!("{e:#}")})];
                    }
                }
            }
        }
    }

    /// An HTTPS client presenting the device identity (as iOS does for
    /// assets and profiles with MDM authentication).
    fn identity_client(&self) -> anyhow::Result<reqwest::Client> {
        let ident = self.identity.clone().context("no device identity")?;
        let mut b = reqwest::Client::builder()
            .identity(reqwest::Identity::from_pkcs8_pem(
                &ident.cert.to_pem()?,
                &ident.key.private_key_to_pem_pkcs8()?,
            )?)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = self.profile.as_ref().and_then(|p| p.ca.as_ref()) {
            b = b.add_root_certificate(reqwest::Certificate::from_der(&ca.to_der()?)?);
        }
        Ok(b.build()?)
    }

    /// Active `com.apple.configuration.security.identity` configurations
    /// whose credential asset is a SCEP asset: fetch its settings, run SCEP,
    /// keep the identity (once per asset ServerToken).
    async fn ddm_apply_identities(&mut self) {
        let want: Vec<(String, String, String, String)> = self
            .ddm
            .declarations
            .iter()
            .filter(|(_, h)| h.active && h.r#type == "com.apple.configuration.security.identity")
            .filter_map(|(cfg, h)| {
                let asset = h.payload.get("CredentialAssetReference")?.as_str()?.to_owned();
                let a = self.ddm.declarations.get(&asset)?;
                if a.r#type != "com.apple.asset.credential.scep" || a.valid != "valid" {
                    return None;
                }
                let url = a.payload.get("Reference")?.get("DataURL")?.as_str()?.to_owned();
                Some((cfg.clone(), asset, a.server_token.clone(), url))
            })
            .collect();
        let keep: BTreeSet<&String> = want.iter().map(|(_, a, _, _)| a).collect();
        self.ddm.identities.retain(|a, _| keep.contains(a));
        for (cfg, asset, token, url) in want {
            if self.ddm.identities.get(&asset).is_some_and(|(t, _)| *t == token) {
                continue;
            }
            match self.scep_from_asset(&url).await {
                Ok(ident) => {
                    self.ddm.identities.insert(asset, (token, ident));
                }
                Err(e) => {
                    if let Some(h) = self.ddm.declarations.get_mut(&cfg) {
                        h.active = false;
                        h.reasons = vec![json!({"code": "Error.ConfigurationCannotBeApplied", "description": format!("{e:#}")})];
                    }
                }
            }
        }
    }

    async fn scep_from_asset(&self, url: &str) -> anyhow::Result<super::pki::SimIdentity> {
        let client = self.identity_client()?;
        let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        let v: Json = serde_json::from_slice(&body).context("the SCEP asset is not JSON")?;
        let scep_url = v["URL"].as_str().context("the SCEP asset has no URL")?;
        let mut subject = Vec::new();
        for rdn in v["Subject"].as_array().into_iter().flatten() {
            for pair in rdn.as_array().into_iter().flatten() {
                if let (Some(k), Some(val)) = (pair.get(0).and_then(|x| x.as_str()), pair.get(1).and_then(|x| x.as_str())) {
                    subject.push((k.to_owned(), val.to_owned()));
                }
            }
        }
        let bits = v["Keysize"].as_u64().unwrap_or(2048).max(2048) as u32;
        let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(bits)?)?;
        let ca = self.profile.as_ref().and_then(|p| p.ca.clone());
        super::pki::scep_enroll(&self.client, scep_url, ca.as_ref(), key, &subject, v["Challenge"].as_str(), None)
            .await?
            .map_err(|e| anyhow::anyhow!("SCEP refused: {e}"))
    }

    async fn fetch_and_install(&mut self, url: &str) -> anyhow::Result<String> {
        let ident = self.identity.clone().context("no device identity")?;
        let resp = self
            .identity_client()?
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body = resp.bytes().await?.to_vec();
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        let trust = self.profile.as_ref().and_then(|p| p.ca.clone());
        let (top, _) = super::pki::open_profile(&body, trust.as_ref(), Some(&ident))?;
        let profile = top
            .get("PayloadIdentifier")
            .and_then(plist::Value::as_string)
            .context("the profile has no PayloadIdentifier")?
            .to_owned();
        let mut d = plist::Dictionary::new();
        d.insert("RequestType".into(), "InstallProfile".into());
        d.insert("Payload".into(), plist::Value::Data(body));
        let cmd = crate::protocol::Command::new(d)?;
        self.try_install(&cmd)
            .await
            .map_err(|(status, chain)| anyhow::anyhow!("install: {status:?} {chain:?}"))?;
        Ok(profile)
    }

    /// Software-update enforcement: before the deadline the update downloads;
    /// at the deadline it installs (the OS version becomes the target).
    fn ddm_apply_updates(&mut self) {
        let Some((target, build, deadline)) = self.ddm.enforced.clone() else {
            self.ddm.install_state = "none".into();
            return;
        };
        if declarative::version_cmp(&self.os_version, &target) != std::cmp::Ordering::Less {
            self.ddm.install_state = "none".into();
            return;
        }
        let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        let due = time::PrimitiveDateTime::parse(&deadline, &fmt)
            .map(|d| d.assume_utc().unix_timestamp() <= crate::clock::now())
            .unwrap_or(false);
        if due {
            self.os_version = target;
            self.build_version = build.unwrap_or_else(|| format!("{}A{}", 20 + self.os_version.len(), self.os_version.replace('.', "")));
            self.ddm.install_state = "none".into();
        } else {
            self.ddm.install_state = "downloading".into();
        }
    }

    /// The current value of a status item, as this device knows it.
    fn ddm_item(&self, name: &str) -> Option<Json> {
        let decl_list = |kind: Kind| -> Json {
            Json::Array(
                self.ddm
                    .declarations
                    .iter()
                    .filter(|(_, h)| h.kind == kind)
                    .map(|(id, h)| {
                        let mut d = json!({"identifier": id, "server-token": h.server_token, "active": h.active, "valid": h.valid});
                        if !h.reasons.is_empty() {
                            d["reasons"] = Json::Array(h.reasons.clone());
                        }
                        d
                    })
                    .collect(),
            )
        };
        Some(match name {
            "device.operating-system.version" => json!(self.os_version),
            "device.operating-system.build-version" => json!(self.build_version),
            "device.model.family" => json!(if self.product_name.starts_with("iPad") { "iPad" } else { "iPhone" }),
            "device.model.identifier" => json!(self.product_name),
            "passcode.is-compliant" | "passcode.is-present" => json!(self.passcode),
            "management.declarations" => json!({
                "activations": decl_list(Kind::Activation),
                "configurations": decl_list(Kind::Configuration),
                "assets": decl_list(Kind::Asset),
                "management": decl_list(Kind::Management),
            }),
            "softwareupdate.install-state" => json!(self.ddm.install_state),
            "softwareupdate.pending-version" => match &self.ddm.enforced {
                Some((v, b, _)) if self.ddm.install_state != "none" => {
                    json!({"os-version": v, "build-version": b.clone().unwrap_or_default()})
                }
                _ => return None,
            },
            _ => return None,
        })
    }

    /// A status report: every subscribed item the first time (FullReport),
    /// then the ones that changed. Always sent after a sync, as iOS does.
    pub async fn ddm_report(&mut self, changes_only: bool) -> anyhow::Result<()> {
        let full = !changes_only || self.ddm.reported.is_empty();
        let mut items = serde_json::Map::new();
        let mut now = BTreeMap::new();
        for name in self
            .ddm
            .subscribed
            .clone()
            .iter()
            .chain(["management.declarations".to_owned()].iter())
        {
            if let Some(v) = self.ddm_item(name) {
                if full || self.ddm.reported.get(name) != Some(&v) {
                    set_path(&mut items, name, v.clone());
                }
                now.insert(name.clone(), v);
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let body = json!({"StatusItems": items, "Errors": [], "FullReport": full});
        let (status, resp) = self.ddm_checkin("status", Some(body.to_string().into_bytes())).await?;
        if status != 200 {
            bail!("status: HTTP {status}: {}", String::from_utf8_lossy(&resp).trim());
        }
        self.ddm.reported = now;
        Ok(())
    }
}
