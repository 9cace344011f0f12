//! The catalog: every app mdmd can put on devices, keyed by bundle
//! identifier (a device holds one app per bundle identifier).
//!
//! An App Store app is added by its Adam id (`itunes_store_id`): the content
//! token whose assets hold it (or the one named) gives its licence counts,
//! and Apple's content metadata lookup its name, bundle id and version. An
//! in-house app is its `.ipa`: the archive's Info.plist says what it is
//! (`protocol::ipa`), anything else is refused; the file is kept in chunks
//! (`files`). Uploading an `.ipa` of a bundle id already in the catalog is a
//! new version, offered to every device that has the app.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::install::DeviceApp;
use super::{read, to_json, valid_bundle_id, with_prefix, Apps, AppsFailure, APPS, DEVICE_APPS};
use crate::clock::{now, rfc3339};
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::vpp::Asset;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    AppStore,
    InHouse,
}

/// Licence counts of an App Store app (Apple's `/assets`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licences {
    pub total: i64,
    pub assigned: i64,
    pub available: i64,
}

/// A stored `.ipa`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpaFile {
    pub sha256: String,
    pub size: u64,
    pub chunks: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub id: String,
    pub kind: AppKind,
    pub name: String,
    pub bundle_id: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_param: Option<String>,
    /// The content token whose licences it uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipa: Option<IpaFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licences: Option<Licences>,
    /// The default managed app configuration (takes profile variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Json>,
    /// ManagementFlags 1: the app goes when the device leaves management.
    pub remove_on_unenroll: bool,
    /// ManagementFlags 4: its data is not backed up.
    pub prevent_backup: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl AppRecord {
    /// InstallApplication's ManagementFlags (none: omitted).
    pub fn management_flags(&self) -> Option<i64> {
        match (self.remove_on_unenroll, self.prevent_backup) {
            (false, false) => None,
            (true, false) => Some(1),
            (false, true) => Some(4),
            (true, true) => Some(5),
        }
    }

    /// What a blueprint's copy depends on: any change re-sends.
    pub fn digest(&self) -> String {
        let sent = json!([
            self.version,
            self.ipa.as_ref().map(|i| &i.sha256),
            self.configuration,
            self.management_flags()
        ]);
        crate::service::fleet::model::digest(&serde_json::to_vec(&sent).unwrap_or_default())
    }
}

/// How a new catalog app is asked for (`POST /v1/apps` as JSON).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreAppRequest {
    pub itunes_store_id: u64,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub bundle_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub configuration: Option<Json>,
    #[serde(default)]
    pub remove_on_unenroll: Option<bool>,
    #[serde(default)]
    pub prevent_backup: Option<bool>,
}

/// Changes to a catalog app (`PUT /v1/apps/{id}`): absent keys stay.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// `null` removes the configuration.
    #[serde(default, deserialize_with = "some_json")]
    pub configuration: Option<Option<Json>>,
    #[serde(default)]
    pub remove_on_unenroll: Option<bool>,
    #[serde(default)]
    pub prevent_backup: Option<bool>,
}

fn some_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Json>>, D::Error> {
    Ok(Some(Option::<Json>::deserialize(d)?))
}

/// A configuration is a dictionary whose variables exist (checked like a command's).
fn check_configuration(c: &Json) -> Result<(), AppsFailure> {
    if !c.is_object() {
        return Err(AppsFailure::Invalid(
            "configuration must be a JSON object (the app's managed configuration)".into(),
        ));
    }
    let probe = json!({"RequestType": "InstallApplication", "iTunesStoreID": 1, "Configuration": c});
    crate::service::commands::Commander::validated(crate::service::commands::CommandInput::Json(probe))
        .map(drop)
        .map_err(|e| AppsFailure::Invalid(format!("configuration: {e}")))
}

impl Apps {
    /// Every catalog app.
    pub async fn catalog(&self) -> Result<Vec<AppRecord>, StoreError> {
        let mut out = Vec::new();
        for (k, r) in self.store.records(APPS).await? {
            match serde_json::from_value(r.value) {
                Ok(a) => out.push(a),
                Err(e) => tracing::warn!(app = %k, error = %e, "unreadable catalog record skipped"),
            }
        }
        Ok(out)
    }

    pub async fn app(&self, id: &str) -> Result<AppRecord, AppsFailure> {
        match read::<AppRecord>(self.store.as_ref(), APPS, id).await? {
            Some((a, _)) => Ok(a),
            None => Err(AppsFailure::NotFound(format!(
                "no app {} in the catalog",
                crate::outbound::bounded(id, 160)
            ))),
        }
    }

    /// Which token holds licences of an Adam id, and that asset.
    async fn find_asset(&self, adam_id: &str, wanted: Option<&str>) -> Result<(String, Asset), AppsFailure> {
        let names = match wanted {
            Some(n) => vec![n.to_owned()],
            None => self.token_names().await?,
        };
        if names.is_empty() {
            return Err(AppsFailure::Invalid(
                "no Apps and Books content token is uploaded: App Store apps are installed on licences (mdmd apps tokens add NAME FILE)"
                    .into(),
            ));
        }
        for name in &names {
            let client = self.client(name).await?;
            let assets = client.assets().await?;
            if let Some(a) = assets.into_iter().find(|a| a.adam_id == adam_id) {
                return Ok((name.clone(), a));
            }
        }
        Err(AppsFailure::Invalid(format!(
            "no licences of App Store app {adam_id} are held by {}: buy it (even a free app) in Apple Business Manager for that location first",
            if wanted.is_some() { format!("token {}", names[0]) } else { "any content token".to_owned() }
        )))
    }

    /// Add an App Store app (or refresh one already there).
    pub async fn add_store_app(&self, req: StoreAppRequest) -> Result<Json, AppsFailure> {
        if req.itunes_store_id == 0 {
            return Err(AppsFailure::Invalid(
                "itunes_store_id must be the app's App Store id (a positive number)".into(),
            ));
        }
        if let Some(c) = &req.configuration {
            check_configuration(c)?;
        }
        let adam = req.itunes_store_id.to_string();
        let (token, asset) = self.find_asset(&adam, req.token.as_deref()).await?;
        if asset.product_type.eq_ignore_ascii_case("book") {
            return Err(AppsFailure::Invalid(format!("{adam} is a book, not an app")));
        }
        if !asset.device_assignable {
            return Err(AppsFailure::Invalid(format!(
                "Apple says the licences of {adam} cannot be assigned to devices (only to users): mdmd installs apps on device licences"
            )));
        }
        let meta = self.lookup(&token, &adam).await;
        let bundle_id = match (req.bundle_id.clone(), meta.as_ref().and_then(|m| m.bundle_id.clone())) {
            (Some(b), Some(m)) if b != m => {
                return Err(AppsFailure::Invalid(format!("Apple says app {adam} is {m}, not {b}")));
            }
            (Some(b), _) | (None, Some(b)) => b,
            (None, None) => {
                return Err(AppsFailure::Invalid(format!(
                    "Apple's content metadata did not say the bundle id of app {adam}: give it as bundle_id"
                )))
            }
        };
        if !valid_bundle_id(&bundle_id) {
            return Err(AppsFailure::Invalid(format!(
                "{:?} is not a bundle identifier",
                crate::outbound::bounded(&bundle_id, 160)
            )));
        }
        let old = read::<AppRecord>(self.store.as_ref(), APPS, &bundle_id).await?;
        if let Some((o, _)) = &old {
            if o.kind != AppKind::AppStore || o.adam_id.as_deref() != Some(adam.as_str()) {
                return Err(AppsFailure::Conflict(format!(
                    "the catalog already has {bundle_id} as another app: remove it first"
                )));
            }
        }
        let t = now();
        let rec = AppRecord {
            id: bundle_id.clone(),
            kind: AppKind::AppStore,
            name: req
                .name
                .clone()
                .or_else(|| meta.as_ref().map(|m| m.name.clone()))
                .unwrap_or_else(|| format!("App {adam}")),
            bundle_id: bundle_id.clone(),
            version: meta.as_ref().and_then(|m| m.version.clone()).unwrap_or_default(),
            adam_id: Some(adam),
            pricing_param: Some(if asset.pricing_param.is_empty() {
                "STDQ".into()
            } else {
                asset.pricing_param.clone()
            }),
            token: Some(token),
            minimum_os: meta.as_ref().and_then(|m| m.minimum_os.clone()),
            ipa: None,
            licences: Some(Licences {
                total: asset.total_count,
                assigned: asset.assigned_count,
                available: asset.available_count,
            }),
            configuration: req
                .configuration
                .clone()
                .or_else(|| old.as_ref().and_then(|(o, _)| o.configuration.clone())),
            remove_on_unenroll: req
                .remove_on_unenroll
                .or(old.as_ref().map(|(o, _)| o.remove_on_unenroll))
                .unwrap_or(true),
            prevent_backup: req.prevent_backup.or(old.as_ref().map(|(o, _)| o.prevent_backup)).unwrap_or(true),
            created_at: old.as_ref().map_or(t, |(o, _)| o.created_at),
            updated_at: t,
        };
        let expect = old.as_ref().map_or(0, |(_, v)| *v);
        if self
            .store
            .put_record(APPS, &bundle_id, to_json(&rec), t, Some(expect))
            .await?
            .is_none()
        {
            return Err(AppsFailure::Service(ServiceError::Busy(format!(
                "{bundle_id} changed at the same time: try again"
            ))));
        }
        tracing::info!(app = %bundle_id, adam = ?rec.adam_id, "App Store app added to the catalog");
        self.fleet_changed();
        Ok(self.app_view(&rec, false).await?)
    }

    /// Apple's metadata of one app (best effort: None when it cannot be had).
    async fn lookup(&self, token: &str, adam: &str) -> Option<crate::vpp::AppMeta> {
        let (rec, _) = self.token_record(token).await.ok()??;
        let url = rec.lookup_url.clone()?;
        let client = self.client(token).await.ok()?;
        match client.lookup(&url, &[adam.to_owned()], rec.country.as_deref()).await {
            Ok(list) => list.into_iter().find(|m| m.adam_id == adam),
            Err(e) => {
                tracing::warn!(app = %adam, error = %e, "App Store metadata not read");
                None
            }
        }
    }

    /// Add an in-house app from a spooled `.ipa` (or a new version of one).
    pub async fn add_ipa(
        &self,
        path: &std::path::Path,
        sha256: &str,
        size: u64,
        remove_on_unenroll: Option<bool>,
        prevent_backup: Option<bool>,
    ) -> Result<(Json, bool), AppsFailure> {
        let info = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || -> Result<crate::protocol::ipa::IpaInfo, AppsFailure> {
                let f = std::fs::File::open(&path).map_err(|e| ServiceError::internal("opening the spooled upload", e))?;
                crate::protocol::ipa::read_ipa(std::io::BufReader::new(f), size).map_err(|e| AppsFailure::Invalid(e.to_string()))
            })
            .await
            .map_err(|e| ServiceError::internal("reading the uploaded app", e))??
        };
        if !valid_bundle_id(&info.bundle_id) {
            return Err(AppsFailure::Invalid(format!(
                "the app's CFBundleIdentifier {:?} is not a bundle identifier",
                crate::outbound::bounded(&info.bundle_id, 160)
            )));
        }
        let id = info.bundle_id.clone();
        let old = read::<AppRecord>(self.store.as_ref(), APPS, &id).await?;
        if let Some((o, _)) = &old {
            if o.kind != AppKind::InHouse {
                return Err(AppsFailure::Conflict(format!(
                    "the catalog already has {id} as an App Store app: an in-house build cannot replace it"
                )));
            }
        }
        let file = self.store_file(path, sha256, size).await?;
        let t = now();
        let rec = AppRecord {
            id: id.clone(),
            kind: AppKind::InHouse,
            name: info.name.clone(),
            bundle_id: id.clone(),
            version: info.version.clone(),
            adam_id: None,
            pricing_param: None,
            token: None,
            minimum_os: info.minimum_os.clone(),
            ipa: Some(file),
            licences: None,
            configuration: old.as_ref().and_then(|(o, _)| o.configuration.clone()),
            remove_on_unenroll: remove_on_unenroll
                .or(old.as_ref().map(|(o, _)| o.remove_on_unenroll))
                .unwrap_or(true),
            prevent_backup: prevent_backup.or(old.as_ref().map(|(o, _)| o.prevent_backup)).unwrap_or(true),
            created_at: old.as_ref().map_or(t, |(o, _)| o.created_at),
            updated_at: t,
        };
        let expect = old.as_ref().map_or(0, |(_, v)| *v);
        if self.store.put_record(APPS, &id, to_json(&rec), t, Some(expect)).await?.is_none() {
            return Err(AppsFailure::Service(ServiceError::Busy(format!(
                "{id} changed at the same time: try again"
            ))));
        }
        let replaced = old
            .as_ref()
            .and_then(|(o, _)| o.ipa.clone())
            .filter(|f| f.sha256 != rec.ipa.as_ref().map_or("", |n| n.sha256.as_str()));
        if let Some(f) = replaced {
            self.drop_file_later(f);
        }
        tracing::info!(app = %id, version = %rec.version, size, "in-house app stored");
        let new_version = old
            .as_ref()
            .is_some_and(|(o, _)| o.ipa.as_ref().map(|f| &f.sha256) != rec.ipa.as_ref().map(|f| &f.sha256));
        let mut view = self.app_view(&rec, false).await?;
        if new_version {
            let n = self.offer_update(&rec).await?;
            view["offered_to"] = json!(n);
        }
        self.fleet_changed();
        Ok((view, old.is_none()))
    }

    /// Change an app's configuration or flags.
    pub async fn set_app(&self, id: &str, s: AppSettings) -> Result<Json, AppsFailure> {
        if let Some(Some(c)) = &s.configuration {
            check_configuration(c)?;
        }
        self.app(id).await?;
        let t = now();
        super::update::<AppRecord>(self.store.as_ref(), APPS, id, |a| {
            if let Some(c) = &s.configuration {
                a.configuration = c.clone();
            }
            if let Some(b) = s.remove_on_unenroll {
                a.remove_on_unenroll = b;
            }
            if let Some(b) = s.prevent_backup {
                a.prevent_backup = b;
            }
            a.updated_at = t;
        })
        .await?;
        self.fleet_changed();
        let rec = self.app(id).await?;
        Ok(self.app_view(&rec, false).await?)
    }

    /// Remove an app from the catalog: refused while devices have it.
    pub async fn delete_app(&self, id: &str) -> Result<(), AppsFailure> {
        let (rec, v) = read::<AppRecord>(self.store.as_ref(), APPS, id)
            .await?
            .ok_or_else(|| AppsFailure::NotFound(format!("no app {} in the catalog", crate::outbound::bounded(id, 160))))?;
        let held = self.device_apps(id).await?.into_iter().filter(|d| d.holds()).count();
        if held > 0 {
            return Err(AppsFailure::Conflict(format!(
                "{held} device(s) still have {id}: remove it from them first (mdmd apps remove {id} …), or from the blueprints that install it"
            )));
        }
        // Licences still associated for it (devices whose install failed or was declined) go back first.
        if rec.kind == AppKind::AppStore {
            if let (Some(token), Some(adam)) = (&rec.token, &rec.adam_id) {
                let held: Vec<(String, super::install::Licence)> =
                    with_prefix::<super::install::Licence>(self.store.as_ref(), super::LICENCES, &format!("{token}/{adam}/"))
                        .await?
                        .into_iter()
                        .map(|(k, l, _)| (k, l))
                        .collect();
                if !held.is_empty() {
                    let n = held.len();
                    self.release(held).await?;
                    tracing::info!(app = %id, licences = n, "licences of a deleted app released");
                }
            }
        }
        // (Releasing moved the cached counts: the record's version now.)
        let v = read::<AppRecord>(self.store.as_ref(), APPS, id).await?.map_or(v, |(_, v)| v);
        if !self.store.delete_record(APPS, id, Some(v)).await? {
            return Err(AppsFailure::Service(ServiceError::Busy(format!(
                "{id} changed at the same time: try again"
            ))));
        }
        for (k, _, _) in with_prefix::<Json>(self.store.as_ref(), DEVICE_APPS, &format!("{id}/")).await? {
            let _ = self.store.delete_record(DEVICE_APPS, &k, None).await;
        }
        if let Some(f) = rec.ipa {
            self.drop_file_later(f);
        }
        self.fleet_changed();
        tracing::info!(app = %id, "app removed from the catalog");
        Ok(())
    }

    /// Every device's state of one app.
    pub async fn device_apps(&self, id: &str) -> Result<Vec<DeviceApp>, StoreError> {
        Ok(with_prefix::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &format!("{id}/"))
            .await?
            .into_iter()
            .map(|(_, d, _)| d)
            .collect())
    }

    /// The API's view of an app; with `devices`, every device's state.
    pub async fn app_view(&self, a: &AppRecord, devices: bool) -> Result<Json, StoreError> {
        let states = self.device_apps(&a.id).await?;
        let count = |f: &dyn Fn(&DeviceApp) -> bool| states.iter().filter(|d| f(d)).count();
        let mut v = json!({
            "id": a.id,
            "kind": a.kind,
            "name": a.name,
            "bundle_id": a.bundle_id,
            "version": a.version,
            "remove_on_unenroll": a.remove_on_unenroll,
            "prevent_backup": a.prevent_backup,
            "updated_at": rfc3339(a.updated_at),
            "created_at": rfc3339(a.created_at),
            "devices": {
                "installed": count(&|d| d.state == "installed"),
                "pending": count(&|d| matches!(d.state.as_str(), "queued" | "installing" | "update_available" | "removing")),
                "failed": count(&|d| matches!(d.state.as_str(), "failed" | "rejected")),
            },
        });
        if let Some(n) = &a.adam_id {
            v["itunes_store_id"] = n.parse::<u64>().map(Json::from).unwrap_or_else(|_| json!(n));
        }
        if let Some(t) = &a.token {
            v["token"] = json!(t);
        }
        if let Some(m) = &a.minimum_os {
            v["minimum_os"] = json!(m);
        }
        if let Some(f) = &a.ipa {
            v["size"] = json!(f.size);
            v["sha256"] = json!(f.sha256);
        }
        if let Some(l) = &a.licences {
            v["licences"] = to_json(l);
        }
        if let Some(c) = &a.configuration {
            v["configuration"] = c.clone();
        }
        if devices {
            v["device_states"] = Json::Array(states.iter().map(DeviceApp::view).collect());
        }
        Ok(v)
    }

    pub async fn list_view(&self) -> Result<Vec<Json>, StoreError> {
        let mut out = Vec::new();
        for a in self.catalog().await? {
            out.push(self.app_view(&a, false).await?);
        }
        Ok(out)
    }

    /// Move an app's cached licence counts by `assigned` (negative: released)
    /// until the next refresh reads Apple's.
    pub(crate) async fn adjust_counts(&self, id: &str, assigned: i64) {
        if assigned == 0 {
            return;
        }
        let _ = super::update::<AppRecord>(self.store.as_ref(), APPS, id, |a| {
            if let Some(l) = a.licences.as_mut() {
                l.assigned = (l.assigned + assigned).max(0);
                l.available = (l.available - assigned).clamp(0, l.total.max(0));
            }
        })
        .await;
    }

    /// Refresh licence counts (and App Store metadata) of the catalog's apps
    /// from one token's assets; apps whose version moved are offered to the
    /// devices that have them.
    pub(crate) async fn refresh_token_apps(&self, token: &str) -> Result<usize, AppsFailure> {
        let client = self.client(token).await?;
        let assets = client.assets().await?;
        let apps: Vec<AppRecord> = self
            .catalog()
            .await?
            .into_iter()
            .filter(|a| a.token.as_deref() == Some(token))
            .collect();
        let metas = match self
            .token_record(token)
            .await?
            .and_then(|(r, _)| r.lookup_url.clone().map(|u| (u, r.country)))
        {
            Some((url, country)) if !apps.is_empty() => {
                let ids: Vec<String> = apps.iter().filter_map(|a| a.adam_id.clone()).collect();
                client.lookup(&url, &ids, country.as_deref()).await.unwrap_or_else(|e| {
                    tracing::warn!(token, error = %e, "App Store metadata not refreshed");
                    Vec::new()
                })
            }
            _ => Vec::new(),
        };
        for a in &apps {
            let Some(adam) = a.adam_id.as_deref() else { continue };
            let counts = assets.iter().find(|x| x.adam_id == adam).map(|x| Licences {
                total: x.total_count,
                assigned: x.assigned_count,
                available: x.available_count,
            });
            let version = metas.iter().find(|m| m.adam_id == adam).and_then(|m| m.version.clone());
            let moved = version.as_ref().is_some_and(|v| !a.version.is_empty() && *v != a.version);
            let t = now();
            super::update::<AppRecord>(self.store.as_ref(), APPS, &a.id, |r| {
                r.licences = counts.clone().or(Some(Licences::default()));
                if let Some(v) = &version {
                    r.version = v.clone();
                }
                r.updated_at = t;
            })
            .await?;
            if moved {
                let rec = self.app(&a.id).await?;
                let n = self.offer_update(&rec).await?;
                tracing::info!(app = %a.id, version = %rec.version, devices = n, "App Store update offered");
            }
        }
        Ok(assets.len())
    }
}
