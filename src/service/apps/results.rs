//! What devices say about catalog apps: `InstallApplication`'s answer
//! (`State`, `RejectionReason`, the error chain), `RemoveApplication`,
//! `ManagedApplicationList` (`Status`) and `InstalledApplicationList`
//! (versions) move each `DeviceApp` record; an acknowledged `EraseDevice`
//! is a device leaving. Only records mdmd made are touched: a device listing
//! apps it was never sent creates nothing.

use std::collections::HashMap;

use plist::{Dictionary, Value};

use super::catalog::AppRecord;
use super::install::{device_app_key, state_of, DeviceApp};
use super::{read, Apps, AppsFailure, DEVICE_APPS};
use crate::clock::now;

impl Apps {
    /// What a finished command says about apps on the device.
    pub async fn command_result(
        &self,
        enrollment: &str,
        request_type: &str,
        acknowledged: bool,
        command: &str,
        answer: &Dictionary,
        error: Option<String>,
    ) {
        let r = match request_type {
            "InstallApplication" => self.install_result(enrollment, command, acknowledged, answer, error).await,
            "RemoveApplication" => self.remove_result(enrollment, command, acknowledged, error).await,
            "ManagedApplicationList" if acknowledged => self.managed_list(enrollment, answer).await,
            "InstalledApplicationList" if acknowledged => self.installed_list(enrollment, answer).await,
            "EraseDevice" if acknowledged => self.device_left(enrollment).await.map(drop),
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(%enrollment, request_type, error = %e, "app state not updated");
        }
    }

    /// The record a command was sent for.
    async fn record_of_command(&self, enrollment: &str, command: &str) -> Result<Option<(String, DeviceApp)>, AppsFailure> {
        for a in self.catalog().await? {
            let key = device_app_key(&a.id, enrollment);
            if let Some((d, _)) = read::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &key).await? {
                if d.command.as_deref() == Some(command) {
                    return Ok(Some((key, d)));
                }
            }
        }
        Ok(None)
    }

    async fn install_result(
        &self,
        enrollment: &str,
        command: &str,
        ok: bool,
        answer: &Dictionary,
        error: Option<String>,
    ) -> Result<(), AppsFailure> {
        let Some((key, _)) = self.record_of_command(enrollment, command).await? else {
            return Ok(());
        };
        let apple_state = answer.get("State").and_then(Value::as_string).unwrap_or("Queued").to_owned();
        let rejection = answer.get("RejectionReason").and_then(Value::as_string).map(str::to_owned);
        let t = now();
        super::update::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &key, |d| {
            if ok {
                d.state = if rejection.is_some() {
                    "failed".into()
                } else {
                    state_of(&apple_state).into()
                };
                d.error = rejection.as_ref().map(|r| format!("the device refused the install: {r}"));
            } else {
                d.state = "failed".into();
                d.error = Some(error.clone().unwrap_or_else(|| "the device answered Error".into()));
            }
            d.updated_at = t;
        })
        .await?;
        Ok(())
    }

    async fn remove_result(&self, enrollment: &str, command: &str, ok: bool, error: Option<String>) -> Result<(), AppsFailure> {
        let Some((key, _)) = self.record_of_command(enrollment, command).await? else {
            return Ok(());
        };
        if ok {
            self.store.delete_record(DEVICE_APPS, &key, None).await?;
        } else {
            let t = now();
            super::update::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &key, |d| {
                d.state = "failed".into();
                d.error = Some(format!("removal failed: {}", error.clone().unwrap_or_default()));
                d.updated_at = t;
            })
            .await?;
        }
        Ok(())
    }

    async fn managed_list(&self, enrollment: &str, answer: &Dictionary) -> Result<(), AppsFailure> {
        let Some(list) = answer.get("ManagedApplicationList").and_then(Value::as_dictionary) else {
            return Ok(());
        };
        let t = now();
        for (bundle, v) in list {
            let Some(status) = v.as_dictionary().and_then(|d| d.get("Status")).and_then(Value::as_string) else {
                continue;
            };
            let key = device_app_key(bundle, enrollment);
            let new = state_of(status);
            let status = status.to_owned();
            super::update::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &key, |d| {
                if d.state == "removing" {
                    return;
                }
                if d.state == "update_available" && new == "installed" {
                    return;
                }
                d.state = new.into();
                d.error = match new {
                    "failed" => Some(format!("the device reports {status}")),
                    "rejected" => Some(format!("the user declined ({status})")),
                    _ => None,
                };
                d.updated_at = t;
            })
            .await?;
        }
        Ok(())
    }

    async fn installed_list(&self, enrollment: &str, answer: &Dictionary) -> Result<(), AppsFailure> {
        let Some(list) = answer.get("InstalledApplicationList").and_then(Value::as_array) else {
            return Ok(());
        };
        let catalog: HashMap<String, AppRecord> = self.catalog().await?.into_iter().map(|a| (a.id.clone(), a)).collect();
        let t = now();
        for item in list.iter().filter_map(Value::as_dictionary) {
            let Some(bundle) = item.get("Identifier").and_then(Value::as_string) else {
                continue;
            };
            let Some(app) = catalog.get(bundle) else { continue };
            let version = item
                .get("ShortVersion")
                .or_else(|| item.get("Version"))
                .and_then(Value::as_string)
                .map(str::to_owned);
            let installing = item.get("Installing").and_then(Value::as_boolean).unwrap_or(false);
            let key = device_app_key(bundle, enrollment);
            super::update::<DeviceApp>(self.store.as_ref(), DEVICE_APPS, &key, |d| {
                d.version = version.clone();
                if d.state == "removing" || installing {
                    return;
                }
                let behind = !app.version.is_empty() && version.as_deref().is_some_and(|v| v != app.version);
                d.state = if behind { "update_available".into() } else { "installed".into() };
                d.error = None;
                d.updated_at = t;
            })
            .await?;
        }
        Ok(())
    }
}
