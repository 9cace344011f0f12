//! Managed app configurations that carry access tokens, remembered so they
//! can be re-sent when tokens change (the sending is `service::commands`').
//!
//! Two kinds, kept apart by whose word names the app:
//!
//! - **Admin-named** (`app-configs`, keyed by bundle id): a `Settings` →
//!   `ApplicationConfiguration`, an `InstallApplication` with an
//!   `Identifier`, a blueprint's app. One configuration per app, with the
//!   devices it went to.
//! - **Device-named** (`app-configs-device`, keyed by device and bundle id):
//!   an `InstallApplication` by `iTunesStoreID` or `ManifestURL` only waits
//!   (`app-configs-pending`, by command UUID) until the device's
//!   acknowledgement names the app. A device's word is believed for that
//!   device only: it can never change what other devices get, nor add itself
//!   to another app's configuration. A later admin-named configuration that
//!   reached the device supersedes it.

use serde::{Deserialize, Serialize};

use super::Access;
use crate::clock::now;
use crate::service::ServiceError;

const APP_CONFIGS: &str = "app-configs";
/// Configurations whose app a device named, keyed by [`device_key`].
const DEVICE_CONFIGS: &str = "app-configs-device";
/// Configurations sent by `InstallApplication` without an `Identifier`
/// (`iTunesStoreID` or `ManifestURL`), keyed by command UUID until the
/// device's answer names the app.
const PENDING_CONFIGS: &str = "app-configs-pending";
/// A pending configuration whose device never answered is dropped after this.
const PENDING_LIFETIME: i64 = 30 * 86_400;

/// A remembered managed app configuration that uses token variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppConfig {
    /// The `Configuration` dictionary before filling, as XML plist.
    pub configuration: String,
    pub targets: Vec<String>,
    pub per_device: bool,
    pub sent_at: i64,
    /// The shared token the last sending carried (`None`: sent before this
    /// was kept, or no token existed); another one carried now means the
    /// configuration is due again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

/// A configuration whose app one device named, for that device only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceAppConfig {
    pub enrollment: String,
    pub identifier: String,
    /// The `Configuration` dictionary before filling, as XML plist.
    pub configuration: String,
    pub per_device: bool,
    pub sent_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingConfig {
    enrollment: String,
    configuration: String,
    per_device: bool,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_id: Option<String>,
}

fn device_key(enrollment: &str, identifier: &str) -> String {
    format!("{enrollment}/{identifier}")
}

fn xml(configuration: &plist::Dictionary) -> String {
    String::from_utf8_lossy(&crate::protocol::to_xml(configuration)).into_owned()
}

impl Access {
    /// Remember an app configuration that uses token variables, sent by the
    /// admin (or re-sent) to `targets` under the bundle id `identifier`.
    pub async fn bind_app_config(
        &self,
        identifier: &str,
        configuration: &plist::Dictionary,
        targets: &[String],
        per_device: bool,
    ) -> Result<(), ServiceError> {
        let xml = xml(configuration);
        let token_id = self.carried().await?.map(|t| t.id);
        for _ in 0..10 {
            let cur = self.store.record(APP_CONFIGS, identifier).await?;
            let (mut ac, version) = match cur {
                Some(r) => (
                    serde_json::from_value::<AppConfig>(r.value).map_err(crate::store::StoreError::from)?,
                    r.version,
                ),
                None => (
                    AppConfig {
                        configuration: xml.clone(),
                        targets: Vec::new(),
                        per_device,
                        sent_at: 0,
                        token_id: None,
                    },
                    0,
                ),
            };
            ac.configuration = xml.clone();
            ac.per_device = per_device;
            ac.sent_at = now();
            ac.token_id = token_id.clone();
            for t in targets {
                if !ac.targets.contains(t) {
                    ac.targets.push(t.clone());
                }
            }
            let value = serde_json::to_value(&ac).map_err(crate::store::StoreError::from)?;
            if self
                .store
                .put_record(APP_CONFIGS, identifier, value, now(), Some(version))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(ServiceError::Busy("app configuration kept changing; try again".into()))
    }

    /// Remember a configuration sent by `InstallApplication` without an
    /// `Identifier` until the device's answer names the app
    /// ([`Access::identifier_learned`]).
    pub async fn await_identifier(
        &self,
        command_uuid: &str,
        enrollment: &str,
        configuration: &plist::Dictionary,
        per_device: bool,
    ) -> Result<(), ServiceError> {
        let p = PendingConfig {
            enrollment: enrollment.to_owned(),
            configuration: xml(configuration),
            per_device,
            at: now(),
            token_id: self.carried().await?.map(|t| t.id),
        };
        let value = serde_json::to_value(&p).map_err(crate::store::StoreError::from)?;
        self.store.put_record(PENDING_CONFIGS, command_uuid, value, now(), None).await?;
        Ok(())
    }

    /// Whether the admin-named configuration of `identifier` reached
    /// `enrollment` at or after `at` (it then supersedes a device-named one).
    async fn superseded(&self, identifier: &str, enrollment: &str, at: i64) -> Result<bool, ServiceError> {
        Ok(match self.store.record(APP_CONFIGS, identifier).await? {
            Some(r) => {
                serde_json::from_value::<AppConfig>(r.value).is_ok_and(|ac| ac.sent_at >= at && ac.targets.iter().any(|t| t == enrollment))
            }
            None => false,
        })
    }

    /// A device acknowledged `InstallApplication` `command_uuid` for the app
    /// `identifier`: a configuration waiting for that name is remembered
    /// under it, for this device only. Returns whether one was waiting.
    pub async fn identifier_learned(&self, command_uuid: &str, enrollment: &str, identifier: &str) -> Result<bool, ServiceError> {
        let Some(r) = self.store.record(PENDING_CONFIGS, command_uuid).await? else {
            return Ok(false);
        };
        let Ok(p) = serde_json::from_value::<PendingConfig>(r.value) else {
            self.store.delete_record(PENDING_CONFIGS, command_uuid, None).await?;
            return Ok(false);
        };
        if p.enrollment != enrollment {
            // Another channel's answer cannot name this device's app.
            return Ok(false);
        }
        if crate::protocol::limits::parse_value(p.configuration.as_bytes()).is_err() {
            self.store.delete_record(PENDING_CONFIGS, command_uuid, None).await?;
            return Ok(false);
        }
        // What the admin sent this device for the app since stays; so does a
        // newer device-named configuration (an old answer arriving late).
        let key = device_key(enrollment, identifier);
        let kept = if self.superseded(identifier, enrollment, p.at).await? {
            false
        } else {
            let cur = self.store.record(DEVICE_CONFIGS, &key).await?;
            if cur
                .as_ref()
                .and_then(|r| serde_json::from_value::<DeviceAppConfig>(r.value.clone()).ok())
                .is_some_and(|d| d.sent_at > p.at)
            {
                false
            } else {
                let d = DeviceAppConfig {
                    enrollment: enrollment.to_owned(),
                    identifier: identifier.to_owned(),
                    configuration: p.configuration,
                    per_device: p.per_device,
                    sent_at: p.at,
                    token_id: p.token_id,
                };
                let value = serde_json::to_value(&d).map_err(crate::store::StoreError::from)?;
                let put = self
                    .store
                    .put_record(DEVICE_CONFIGS, &key, value, now(), cur.map(|r| r.version).or(Some(0)))
                    .await?
                    .is_some();
                if put {
                    // An older admin-named configuration of this app no
                    // longer goes to this device (and to no other one less).
                    self.remove_target(identifier, enrollment).await?;
                }
                put
            }
        };
        self.store.delete_record(PENDING_CONFIGS, command_uuid, None).await?;
        Ok(kept)
    }

    /// Take a device off an admin-named configuration's targets.
    async fn remove_target(&self, identifier: &str, enrollment: &str) -> Result<(), ServiceError> {
        for _ in 0..10 {
            let Some(r) = self.store.record(APP_CONFIGS, identifier).await? else {
                return Ok(());
            };
            let mut ac = serde_json::from_value::<AppConfig>(r.value).map_err(crate::store::StoreError::from)?;
            let before = ac.targets.len();
            ac.targets.retain(|t| t != enrollment);
            if ac.targets.len() == before {
                return Ok(());
            }
            let value = serde_json::to_value(&ac).map_err(crate::store::StoreError::from)?;
            if self
                .store
                .put_record(APP_CONFIGS, identifier, value, now(), Some(r.version))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(ServiceError::Busy("app configuration kept changing; try again".into()))
    }

    /// Drop pending configurations whose device never answered.
    pub async fn expire_pending(&self) -> Result<usize, ServiceError> {
        let horizon = now() - PENDING_LIFETIME;
        let mut n = 0;
        for (k, r) in self.store.records(PENDING_CONFIGS).await? {
            let old = serde_json::from_value::<PendingConfig>(r.value).map_or(true, |p| p.at < horizon);
            if old && self.store.delete_record(PENDING_CONFIGS, &k, Some(r.version)).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The admin-named configurations, by bundle id.
    pub async fn app_configs(&self) -> Result<Vec<(String, AppConfig)>, ServiceError> {
        let mut out = Vec::new();
        for (k, r) in self.store.records(APP_CONFIGS).await? {
            if let Ok(ac) = serde_json::from_value::<AppConfig>(r.value) {
                out.push((k, ac));
            }
        }
        Ok(out)
    }

    /// The device-named configurations still in force (those an
    /// admin-named one superseded are dropped here).
    pub async fn device_app_configs(&self) -> Result<Vec<DeviceAppConfig>, ServiceError> {
        let shared: std::collections::HashMap<String, AppConfig> = self.app_configs().await?.into_iter().collect();
        let mut out = Vec::new();
        for (k, r) in self.store.records(DEVICE_CONFIGS).await? {
            let Ok(d) = serde_json::from_value::<DeviceAppConfig>(r.value) else {
                continue;
            };
            let superseded = shared
                .get(&d.identifier)
                .is_some_and(|ac| ac.sent_at >= d.sent_at && ac.targets.contains(&d.enrollment));
            if superseded {
                self.store.delete_record(DEVICE_CONFIGS, &k, Some(r.version)).await?;
            } else {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// A device-named configuration was re-sent carrying `token_id`.
    pub async fn device_app_config_sent(&self, enrollment: &str, identifier: &str, token_id: Option<String>) -> Result<(), ServiceError> {
        let key = device_key(enrollment, identifier);
        for _ in 0..10 {
            let Some(r) = self.store.record(DEVICE_CONFIGS, &key).await? else {
                return Ok(());
            };
            let mut d = serde_json::from_value::<DeviceAppConfig>(r.value).map_err(crate::store::StoreError::from)?;
            d.sent_at = now();
            d.token_id = token_id.clone();
            let value = serde_json::to_value(&d).map_err(crate::store::StoreError::from)?;
            if self
                .store
                .put_record(DEVICE_CONFIGS, &key, value, now(), Some(r.version))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(ServiceError::Busy("app configuration kept changing; try again".into()))
    }
}
