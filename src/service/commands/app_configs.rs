//! App configurations that carry access tokens (`$ACCESS_TOKEN`,
//! `$DEVICE_ACCESS_TOKEN`, `$DERIVED_CREDENTIAL_TOKEN`): remembered per app
//! when sent (by `Settings`, or `InstallApplication` with or without an
//! `Identifier`: without one, the device's answer names the app, for that
//! device only) and re-sent as `Settings` → `ApplicationConfiguration` when
//! tokens change or fall due (`service::access::app_configs` keeps them).

use plist::{Dictionary, Value};

use std::collections::BTreeMap;

use super::{CommandError, CommandInput, Commander, Remember};
use crate::clock::now;
use crate::profiles::vars;

/// The app configurations in a command, by app (`None`: an
/// `InstallApplication` that names its app by store id or manifest only; the
/// device's answer names it).
pub(super) fn app_configurations(command: &Dictionary) -> Vec<(Option<String>, Dictionary)> {
    let mut out = Vec::new();
    match command.get("RequestType").and_then(Value::as_string) {
        Some("Settings") => {
            for item in command.get("Settings").and_then(Value::as_array).into_iter().flatten() {
                let Some(d) = item.as_dictionary() else { continue };
                if d.get("Item").and_then(Value::as_string) == Some("ApplicationConfiguration") {
                    if let (Some(id), Some(c)) = (
                        d.get("Identifier").and_then(Value::as_string),
                        d.get("Configuration").and_then(Value::as_dictionary),
                    ) {
                        out.push((Some(id.to_owned()), c.clone()));
                    }
                }
            }
        }
        Some("InstallApplication") => {
            if let Some(c) = command.get("Configuration").and_then(Value::as_dictionary) {
                let id = command.get("Identifier").and_then(Value::as_string).map(str::to_owned);
                out.push((id, c.clone()));
            }
        }
        _ => {}
    }
    out
}

/// `Settings` → `ApplicationConfiguration` for one app.
fn settings(identifier: &str, conf: Dictionary) -> Dictionary {
    let mut item = Dictionary::new();
    item.insert("Item".into(), "ApplicationConfiguration".into());
    item.insert("Identifier".into(), identifier.into());
    item.insert("Configuration".into(), Value::Dictionary(conf));
    let mut d = Dictionary::new();
    d.insert("RequestType".into(), "Settings".into());
    d.insert("Settings".into(), Value::Array(vec![Value::Dictionary(item)]));
    d
}

/// Whether a stored configuration (XML) uses `$ACCESS_TOKEN`.
fn uses_shared_token(configuration: &str) -> bool {
    let Ok(v) = crate::protocol::limits::parse_value(configuration.as_bytes()) else {
        return false;
    };
    let mut used = std::collections::BTreeSet::new();
    vars::used(&v, &mut used);
    used.contains("ACCESS_TOKEN")
}

impl Commander {
    /// Re-send every remembered app configuration that uses token variables
    /// (all of them, or only those due: per-device tokens older than half
    /// their lifetime, or a shared token other than the one carried now).
    /// Returns how many configurations were re-sent.
    pub async fn resend_app_configs(&self, only_due_device_tokens: bool) -> Result<usize, CommandError> {
        let Some(access) = self.access.as_ref() else { return Ok(0) };
        let lifetime = match self.derived.as_ref() {
            Some(d) => access.device_token_secs().min(d.upload_ttl),
            None => access.device_token_secs(),
        };
        let horizon = now() - lifetime / 2;
        if only_due_device_tokens {
            match access.expire_pending().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "app configurations whose devices never named the app dropped"),
                Err(e) => tracing::warn!(error = %e, "could not drop old pending app configurations"),
            }
        }
        let carried = access.carried().await?.map(|t| t.id);
        let mut n = 0;
        for (identifier, ac) in access.app_configs().await? {
            let Ok(Value::Dictionary(conf)) = crate::protocol::limits::parse_value(ac.configuration.as_bytes()) else {
                tracing::warn!(app = %identifier, "stored app configuration is not a dictionary: skipped");
                continue;
            };
            if only_due_device_tokens {
                // Due: per-device tokens past half their lifetime, or a shared
                // token other than the one devices should carry now.
                let mut used = std::collections::BTreeSet::new();
                vars::used(&Value::Dictionary(conf.clone()), &mut used);
                let device_due = ac.per_device && ac.sent_at <= horizon;
                let shared_due = used.contains("ACCESS_TOKEN") && ac.token_id != carried;
                if !(device_due || shared_due) {
                    continue;
                }
            }
            if ac.targets.is_empty() {
                continue;
            }
            let b = self
                .enqueue(CommandInput::Plist(settings(&identifier, conf)), ac.targets.clone(), true)
                .await?;
            tracing::info!(app = %identifier, queued = b.queued, failed = b.failed.len(), "app configuration re-sent with current tokens");
            n += 1;
        }
        // Configurations a device named the app of: each to its own device,
        // devices sharing one configuration in one batch.
        let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for d in access.device_app_configs().await? {
            if only_due_device_tokens {
                let due = (d.per_device && d.sent_at <= horizon) || (d.token_id != carried && uses_shared_token(&d.configuration));
                if !due {
                    continue;
                }
            }
            groups.entry((d.identifier, d.configuration)).or_default().push(d.enrollment);
        }
        for ((identifier, configuration), targets) in groups {
            let Ok(Value::Dictionary(conf)) = crate::protocol::limits::parse_value(configuration.as_bytes()) else {
                tracing::warn!(app = %identifier, "stored app configuration is not a dictionary: skipped");
                continue;
            };
            let b = self
                .enqueue_as(CommandInput::Plist(settings(&identifier, conf)), targets, true, Remember::No)
                .await?;
            for enrollment in b.commands.keys() {
                access.device_app_config_sent(enrollment, &identifier, carried.clone()).await?;
            }
            tracing::info!(app = %identifier, queued = b.queued, failed = b.failed.len(), "device-named app configuration re-sent with current tokens");
            n += 1;
        }
        Ok(n)
    }

    /// A device acknowledged an `InstallApplication`: a configuration sent
    /// with it that waited for the app's name is remembered under it.
    pub(super) async fn app_identified(&self, enrollment: &str, raw: &[u8]) {
        let Some(access) = self.access.as_ref() else { return };
        let Ok(d) = crate::protocol::parse_dict(raw) else { return };
        let (Some(uuid), Some(identifier)) = (
            d.get("CommandUUID").and_then(Value::as_string),
            d.get("Identifier").and_then(Value::as_string),
        ) else {
            return;
        };
        if crate::protocol::ipa::bundle_id_problem(identifier).is_some() {
            tracing::warn!(enrollment, command = %uuid, "InstallApplication answered with an unusable Identifier: its configuration is not kept");
            return;
        }
        match access.identifier_learned(uuid, enrollment, identifier).await {
            Ok(true) => tracing::info!(enrollment, app = %identifier, "app configuration remembered for re-sending"),
            Ok(false) => {}
            Err(e) => tracing::warn!(enrollment, error = %e, "could not remember an app configuration"),
        }
    }
}
