//! The simulated device's apps, as an iPhone without an Apple Account has
//! them: what `InstallApplication`, `RemoveApplication`,
//! `InstalledApplicationList`, `ManagedApplicationList`,
//! `ManagedApplicationConfiguration` and the `ApplicationConfiguration`
//! setting do and answer.
//!
//! `InstallApplication` is acknowledged at once (`State` Queued) and the
//! install is done later, by `SimDevice::settle_apps` at the start of the
//! next session, as a device installs in the background:
//!
//! - an App Store app (`iTunesStoreID`) needs `Options.PurchaseMethod` 1 (a
//!   licence assigned to the device; without it the device would ask for an
//!   Apple Account it does not have) and the store (`SimDevice::app_store`,
//!   the Apps and Books stand-in's URL) confirming the licence for its
//!   serial number (`GET {app_store}/sim/licence`); the store says the
//!   bundle id and version;
//! - an in-house app (`ManifestURL`, https) is installed from its manifest
//!   and the .ipa the manifest names, both fetched (recorded in
//!   `SimDevice::fetches`) and read with `protocol::ipa`;
//! - an `Identifier` alone re-installs (updates) an app already installed.
//!
//! Anything else fails: the app is not installed and `ManagedApplicationList`
//! reports it `Failed` until the next `InstallApplication` or
//! `RemoveApplication` of it. A failed update leaves the installed version.
//! Until settled, an app is listed under its `Identifier`; when the command
//! named none, under the bundle id the store's lookup gives for an
//! `iTunesStoreID` (as a device answers), else `store.<id>` /
//! `manifest.<file>`; once the store or the .ipa says its bundle id, under
//! that. The lists describe exactly what is
//! installed, beside a few apps the user installed (`BUILT_IN`).

use anyhow::Context as _;
use plist::{Dictionary, Value};

use super::answers::error_chain;
use super::SimDevice;
use crate::protocol::{Command, Status};

/// The largest manifest, licence answer and .ipa a simulated device reads.
const MAX_MANIFEST: usize = crate::protocol::ipa::MAX_MANIFEST;
const MAX_LICENCE_ANSWER: usize = 64 * 1024;
const MAX_IPA: usize = 256 * 1024 * 1024;

/// A managed app as the device holds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimApp {
    /// Its managed app configuration.
    pub config: Option<Dictionary>,
    /// `CFBundleShortVersionString` (InstalledApplicationList `ShortVersion`);
    /// empty until installed.
    pub version: String,
    /// `CFBundleVersion` (InstalledApplicationList `Version`), when it differs.
    pub build: Option<String>,
    pub name: String,
    /// Apple's ManagedApplicationList status: `Queued`, `Managed`, `Failed` …
    pub status: String,
    /// The App Store id (an App Store app).
    pub adam_id: Option<i64>,
    /// `ManagementFlags` as the command gave them.
    pub management_flags: i64,
    /// `ExternalVersionIdentifier` (App Store apps; 0 otherwise).
    pub external_version: i64,
    pub bundle_size: u64,
    /// Why the last install failed.
    pub failure: Option<String>,
}

impl SimApp {
    /// An app installed and managed (as tests set one up directly).
    pub fn managed(bundle_id: &str, version: &str) -> SimApp {
        SimApp {
            version: version.to_owned(),
            name: bundle_id.to_owned(),
            status: "Managed".into(),
            bundle_size: 10_000_000,
            ..SimApp::default()
        }
    }

    /// On the device (an update may be pending).
    pub fn installed(&self) -> bool {
        self.status == "Managed"
    }
}

/// Where a queued install comes from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    Store {
        adam_id: i64,
        purchase_method: i64,
    },
    Manifest(String),
    /// Only a bundle id.
    Identifier,
}

/// An install acknowledged, not yet done.
#[derive(Debug, Clone)]
pub(super) struct PendingInstall {
    source: Source,
    /// The `Identifier` the command named.
    identifier: Option<String>,
}

/// What an install came to.
struct Installed {
    bundle_id: String,
    name: String,
    version: String,
    build: Option<String>,
    adam_id: Option<i64>,
    external_version: i64,
    size: u64,
}

/// An install that failed: why, and the bundle id if it was learned.
struct Failed {
    bundle_id: Option<String>,
    reason: String,
}

fn failed(reason: impl Into<String>) -> Failed {
    Failed {
        bundle_id: None,
        reason: reason.into(),
    }
}

/// Apps the user installed from the App Store before enrollment (not managed).
const BUILT_IN: &[(&str, &str, &str, i64)] = &[
    ("com.microsoft.Office.Outlook", "Outlook", "4.2445.0", 245_000_000),
    ("com.cisco.anyconnect", "Cisco Secure Client", "5.1.4", 61_000_000),
    ("com.apple.Keynote", "Keynote", "14.2", 612_000_000),
];

fn d(pairs: Vec<(&str, Value)>) -> Dictionary {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(|v| {
        v.as_signed_integer()
            .or_else(|| v.as_unsigned_integer().and_then(|u| i64::try_from(u).ok()))
    })
}

fn format_error(text: &str) -> (Status, Value) {
    (Status::Error, error_chain(12021, "MCMDMErrorDomain", text))
}

/// `InstallApplication`: queue it; the answer's `Identifier` and `State`.
pub(super) fn install(dev: &mut SimDevice, c: &Dictionary) -> Result<Dictionary, (Status, Value)> {
    let store_id = int(c.get("iTunesStoreID"));
    let identifier = c.get("Identifier").and_then(Value::as_string).map(str::to_owned);
    let manifest = c.get("ManifestURL").and_then(Value::as_string).map(str::to_owned);
    let options = c.get("Options").and_then(Value::as_dictionary);
    let purchase_method = int(options.and_then(|o| o.get("PurchaseMethod"))).unwrap_or(0);
    let flags = int(c.get("ManagementFlags")).unwrap_or(0);
    let config = c.get("Configuration").and_then(Value::as_dictionary).cloned();
    if let Some(p) = identifier.as_deref().and_then(crate::protocol::ipa::bundle_id_problem) {
        return Err(format_error(&format!("The Identifier {p}.")));
    }
    let (source, placeholder) = match (store_id, &manifest) {
        (Some(n), _) => (
            Source::Store {
                adam_id: n,
                purchase_method,
            },
            format!("store.{n}"),
        ),
        (None, Some(u)) => {
            if !u.starts_with("https://") {
                return Err(format_error("The manifest URL must begin with https:."));
            }
            let file = u.split(['?', '#']).next().unwrap_or("").rsplit('/').next().unwrap_or("");
            (
                Source::Manifest(u.clone()),
                format!("manifest.{}", if file.is_empty() { "app" } else { file }),
            )
        }
        (None, None) if identifier.is_some() => (Source::Identifier, String::new()),
        (None, None) => return Err(format_error("No app to install.")),
    };
    // The app's key: the Identifier, an installed app of this store id, the
    // bundle id the store's lookup gave, or the placeholder.
    let key = identifier
        .clone()
        .or_else(|| store_id.and_then(|n| dev.apps.iter().find(|(_, a)| a.adam_id == Some(n)).map(|(k, _)| k.clone())))
        .or_else(|| store_id.and_then(|n| dev.store_names.get(&n).cloned()))
        .unwrap_or(placeholder);
    let app = dev.apps.entry(key.clone()).or_default();
    if !app.installed() {
        *app = SimApp {
            name: key.clone(),
            status: "Queued".into(),
            adam_id: store_id,
            ..SimApp::default()
        };
    }
    app.management_flags = flags;
    if config.is_some() {
        app.config = config;
    }
    app.failure = None;
    dev.pending_apps.insert(key.clone(), PendingInstall { source, identifier });
    Ok(d(vec![("Identifier", key.into()), ("State", "Queued".into())]))
}

/// `RemoveApplication`: a managed app (installed, queued or failed) goes.
pub(super) fn remove(dev: &mut SimDevice, c: &Dictionary) -> Result<Dictionary, (Status, Value)> {
    let id = c.get("Identifier").and_then(Value::as_string).unwrap_or("");
    dev.pending_apps.remove(id);
    if dev.apps.remove(id).is_none() {
        return Err((Status::Error, error_chain(12029, "MCMDMErrorDomain", "The app is not managed.")));
    }
    Ok(Dictionary::new())
}

fn wanted(c: &Dictionary) -> Option<Vec<&str>> {
    c.get("Identifiers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_string).collect())
}

/// `InstalledApplicationList`: the managed apps installed, then the user's
/// (unless `ManagedAppsOnly`), filtered by `Identifiers`.
pub(super) fn installed_list(dev: &SimDevice, c: &Dictionary) -> Dictionary {
    let wanted = wanted(c);
    let managed_only = c.get("ManagedAppsOnly").and_then(Value::as_boolean).unwrap_or(false);
    let keep = |id: &str| wanted.as_ref().is_none_or(|w| w.contains(&id));
    let entry = |id: &str, name: &str, short: &str, build: &str, size: u64, store: bool| {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        d(vec![
            ("Identifier", id.into()),
            ("Name", name.into()),
            ("Version", build.into()),
            ("ShortVersion", short.into()),
            ("BundleSize", size.into()),
            ("DynamicSize", (size / 4).into()),
            ("Installing", false.into()),
            ("IsValidated", true.into()),
            ("AppStoreVendable", store.into()),
            ("DeviceBasedVPP", false.into()),
            ("BetaApp", false.into()),
            ("AdHocCodeSigned", false.into()),
            ("HasUpdateAvailable", false.into()),
        ])
    };
    let mut list = Vec::new();
    for (id, a) in dev.apps.iter().filter(|(id, a)| a.installed() && keep(id)) {
        let mut e = entry(
            id,
            &a.name,
            &a.version,
            a.build.as_deref().unwrap_or(&a.version),
            a.bundle_size,
            a.adam_id.is_some(),
        );
        if a.adam_id.is_some() {
            e.insert("DeviceBasedVPP".into(), true.into());
            e.insert("ExternalVersionIdentifier".into(), a.external_version.into());
        }
        list.push(Value::Dictionary(e));
    }
    if !managed_only {
        for (id, name, v, size) in BUILT_IN {
            if keep(id) && !dev.apps.get(*id).is_some_and(SimApp::installed) {
                list.push(Value::Dictionary(entry(id, name, v, v, *size as u64, true)));
            }
        }
    }
    d(vec![("InstalledApplicationList", Value::Array(list))])
}

/// `ManagedApplicationList`: every managed app and its status, filtered by `Identifiers`.
pub(super) fn managed_list(dev: &SimDevice, c: &Dictionary) -> Dictionary {
    let wanted = wanted(c);
    let mut list = Dictionary::new();
    for (id, a) in &dev.apps {
        if wanted.as_ref().is_some_and(|w| !w.contains(&id.as_str())) {
            continue;
        }
        list.insert(
            id.clone(),
            Value::Dictionary(d(vec![
                ("Status", a.status.clone().into()),
                ("ManagementFlags", a.management_flags.into()),
                ("HasConfiguration", a.config.is_some().into()),
                ("HasFeedback", false.into()),
                ("IsValidated", a.installed().into()),
                ("UnusedRedemptionCode", "".into()),
                ("ExternalVersionIdentifier", a.external_version.into()),
            ])),
        );
    }
    d(vec![("ManagedApplicationList", Value::Dictionary(list))])
}

/// `ManagedApplicationConfiguration`: the configurations asked for.
pub(super) fn configurations(dev: &SimDevice, c: &Dictionary) -> Dictionary {
    let items = wanted(c)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| {
            let config = dev.apps.get(id)?.config.clone()?;
            Some(Value::Dictionary(d(vec![
                ("Identifier", id.into()),
                ("Configuration", Value::Dictionary(config)),
            ])))
        })
        .collect();
    d(vec![("ApplicationConfigurations", Value::Array(items))])
}

/// The `ApplicationConfiguration` setting: a managed app's new configuration
/// (a failed install has no app to configure).
pub(super) fn set_configuration(dev: &mut SimDevice, id: &str, config: Option<Dictionary>) {
    if let Some(app) = dev.apps.get_mut(id).filter(|a| a.status != "Failed") {
        app.config = config;
    }
}

/// `a` < `b` as dotted version numbers (`16.0` < `18.1`).
fn older(a: &str, b: &str) -> bool {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.trim().parse().unwrap_or(0)).collect() };
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
        if x != y {
            return x < y;
        }
    }
    false
}

impl SimDevice {
    /// Before answering an `InstallApplication` that names an App Store app
    /// by `iTunesStoreID` only, learn its bundle id from the store's lookup
    /// (a device answers with the app's bundle identifier). Unreachable or
    /// unknown: the answer names a placeholder.
    pub(super) async fn name_store_app(&mut self, c: &Dictionary) {
        let (Some(n), None) = (int(c.get("iTunesStoreID")), c.get("Identifier")) else {
            return;
        };
        if self.store_names.contains_key(&n) {
            return;
        }
        let Some(store) = self.app_store.clone() else { return };
        let url = format!(
            "{}/lookup?version=2&id={n}&p=mdm-lockup&caller=MDM&platform=iphone",
            store.trim_end_matches('/')
        );
        let Ok((200, body)) = self.get_bounded(&url, MAX_LICENCE_ANSWER).await else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return;
        };
        if let Some(b) = v["results"][n.to_string()]["bundleId"]
            .as_str()
            .filter(|b| crate::protocol::ipa::bundle_id_problem(b).is_none())
        {
            self.store_names.insert(n, b.to_owned());
        }
    }

    /// Do the queued installs (the start of every session): ask the store,
    /// fetch manifests and apps; each ends installed or `Failed`.
    pub async fn settle_apps(&mut self) {
        let pending = std::mem::take(&mut self.pending_apps);
        for (key, p) in pending {
            let outcome = self.resolve(&key, &p).await;
            self.apply(&key, &p, outcome);
        }
    }

    async fn resolve(&mut self, key: &str, p: &PendingInstall) -> Result<Installed, Failed> {
        let got = match &p.source {
            Source::Store { adam_id, purchase_method } => self.store_install(*adam_id, *purchase_method).await?,
            Source::Manifest(url) => self.manifest_install(url).await?,
            Source::Identifier => match self.apps.get(key).filter(|a| a.installed()) {
                Some(a) => Installed {
                    bundle_id: key.to_owned(),
                    name: a.name.clone(),
                    version: a.version.clone(),
                    build: a.build.clone(),
                    adam_id: a.adam_id,
                    external_version: a.external_version,
                    size: a.bundle_size,
                },
                None => {
                    return Err(failed(
                        "The app is not on the device, and without an iTunesStoreID or a ManifestURL there is nothing to install.",
                    ))
                }
            },
        };
        if let Some(id) = p.identifier.as_deref().filter(|id| *id != got.bundle_id) {
            return Err(Failed {
                bundle_id: None,
                reason: format!("The app is {}, not {id}.", got.bundle_id),
            });
        }
        Ok(got)
    }

    /// An App Store app with a device licence.
    async fn store_install(&mut self, adam_id: i64, purchase_method: i64) -> Result<Installed, Failed> {
        if purchase_method != 1 {
            return Err(failed(
                "The device has no Apple Account to buy the app with (PurchaseMethod 1, a device licence, was not asked for).",
            ));
        }
        let Some(store) = self.app_store.clone() else {
            return Err(failed("The App Store could not be reached."));
        };
        let url = format!(
            "{}/sim/licence?adamId={adam_id}&serialNumber={}",
            store.trim_end_matches('/'),
            urlencoding::encode(&self.serial)
        );
        let (status, body) = self
            .get_bounded(&url, MAX_LICENCE_ANSWER)
            .await
            .map_err(|e| failed(format!("The App Store could not be reached: {e:#}")))?;
        if status != 200 {
            return Err(failed(format!("The App Store answered HTTP {status}.")));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| failed("The App Store's answer is not JSON."))?;
        let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
        let bundle_id = text("bundleId").filter(|b| crate::protocol::ipa::bundle_id_problem(b).is_none());
        if v.get("licensed").and_then(serde_json::Value::as_bool) != Some(true) {
            return Err(Failed {
                bundle_id,
                reason: "The device holds no licence of the app, and has no Apple Account to buy it with.".into(),
            });
        }
        let bundle_id = bundle_id.ok_or_else(|| failed("The App Store did not say the app's bundle id."))?;
        let version = text("version").unwrap_or_else(|| "1.0".into());
        Ok(Installed {
            name: text("name").unwrap_or_else(|| bundle_id.clone()),
            bundle_id,
            version,
            build: None,
            adam_id: Some(adam_id),
            external_version: v.get("externalVersionId").and_then(serde_json::Value::as_i64).unwrap_or(0),
            size: 20_000_000 + (adam_id.unsigned_abs() % 100) * 1_000_000,
        })
    }

    /// An in-house app: its manifest, then its .ipa.
    async fn manifest_install(&mut self, url: &str) -> Result<Installed, Failed> {
        let manifest = self.fetch(url, MAX_MANIFEST).await?;
        let (ipa_url, bundle_id, _) = crate::protocol::ipa::parse_manifest(&manifest).map_err(|e| failed(e.to_string()))?;
        if !ipa_url.starts_with("https://") {
            return Err(failed("The app's URL in the manifest is not https."));
        }
        let ipa = self.fetch(&ipa_url, MAX_IPA).await?;
        let size = ipa.len() as u64;
        let info = crate::protocol::ipa::read_ipa(std::io::Cursor::new(ipa), size).map_err(|e| failed(e.to_string()))?;
        if info.bundle_id != bundle_id {
            return Err(failed(format!(
                "The manifest names {bundle_id}, but the app is {}.",
                info.bundle_id
            )));
        }
        if let Some(min) = info.minimum_os.as_deref().filter(|m| older(&self.os_version, m)) {
            return Err(Failed {
                bundle_id: Some(bundle_id),
                reason: format!("The app needs iOS {min}; the device runs {}.", self.os_version),
            });
        }
        Ok(Installed {
            bundle_id: info.bundle_id,
            name: info.name,
            version: info.version,
            build: info.build,
            adam_id: None,
            external_version: 0,
            size,
        })
    }

    /// GET for an install, recorded in `fetches`; the body of a 200.
    async fn fetch(&mut self, url: &str, max: usize) -> Result<Vec<u8>, Failed> {
        match self.get_bounded(url, max).await {
            Ok((status, body)) => {
                self.fetches.push((url.to_owned(), status));
                if status != 200 {
                    return Err(failed(format!("{url} answered HTTP {status}.")));
                }
                Ok(body)
            }
            Err(e) => {
                self.fetches.push((url.to_owned(), 0));
                Err(failed(format!("{url} could not be fetched: {e:#}")))
            }
        }
    }

    /// GET `url`: the status and at most `max` bytes of body (more is an error).
    async fn get_bounded(&self, url: &str, max: usize) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut resp = self.client.get(url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|n| n > max as u64) {
            anyhow::bail!("the answer is larger than {max} bytes");
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if out.len() + chunk.len() > max {
                anyhow::bail!("the answer is larger than {max} bytes");
            }
            out.extend_from_slice(&chunk);
        }
        Ok((status, out))
    }

    /// Record what an install came to.
    fn apply(&mut self, key: &str, p: &PendingInstall, outcome: Result<Installed, Failed>) {
        // The command was superseded (removed) meanwhile: nothing to record.
        let Some(mut app) = self.apps.remove(key) else { return };
        match outcome {
            Ok(got) => {
                if key != got.bundle_id {
                    // Learned the bundle id: an app already there under it is updated.
                    if let Some(old) = self.apps.remove(&got.bundle_id) {
                        if app.config.is_none() {
                            app.config = old.config;
                        }
                    }
                }
                app.status = "Managed".into();
                app.name = got.name;
                app.version = got.version;
                app.build = got.build;
                app.adam_id = got.adam_id.or(app.adam_id);
                app.external_version = got.external_version;
                app.bundle_size = got.size;
                app.failure = None;
                self.apps.insert(got.bundle_id, app);
            }
            Err(f) => {
                tracing::debug!(app = key, reason = %f.reason, "sim: install failed");
                if app.installed() {
                    // A failed update: the installed version stays.
                    app.failure = Some(f.reason);
                    self.apps.insert(key.to_owned(), app);
                    return;
                }
                let bundle_id = f
                    .bundle_id
                    .filter(|b| p.identifier.is_none() && !self.apps.get(b).is_some_and(SimApp::installed))
                    .unwrap_or_else(|| key.to_owned());
                self.apps.insert(
                    bundle_id,
                    SimApp {
                        name: app.name,
                        status: "Failed".into(),
                        adam_id: app.adam_id,
                        management_flags: app.management_flags,
                        failure: Some(f.reason),
                        ..SimApp::default()
                    },
                );
            }
        }
    }
}

/// Answer the app commands; `None` for the others.
pub(super) fn respond(dev: &mut SimDevice, cmd: &Command) -> Option<Result<Dictionary, (Status, Value)>> {
    let c = &cmd.command;
    Some(match cmd.request_type.as_str() {
        "InstallApplication" => install(dev, c),
        "RemoveApplication" => remove(dev, c),
        "InstalledApplicationList" => Ok(installed_list(dev, c)),
        "ManagedApplicationList" => Ok(managed_list(dev, c)),
        "ManagedApplicationConfiguration" => Ok(configurations(dev, c)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
