//! Queueing what the reconciler decided: each item for all of its devices at
//! once (a profile through the `Commander`'s install, an app or command as
//! one fan-out or per-device copies, a declaration set assigned), and what
//! each device's record says about it afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::model::*;
use super::reconcile::{Look, RunStats};
use super::Fleet;
use crate::clock::now;
use crate::service::commands::CommandInput;
use crate::service::ServiceError;

impl Fleet {
    /// Queue every step of the claimed devices, grouped by item. Returns per
    /// device: item key → its new record (None: forget it).
    pub(super) async fn execute(&self, claimed: &mut [Look], stats: &mut RunStats) -> HashMap<String, Vec<(String, Option<Applied>)>> {
        let mut out: HashMap<String, Vec<(String, Option<Applied>)>> = HashMap::new();
        // Item key → (the step, its devices).
        let mut installs: BTreeMap<String, (Wanted, Vec<String>)> = BTreeMap::new();
        let mut removals: BTreeMap<String, (Applied, Vec<String>)> = BTreeMap::new();
        for l in claimed.iter() {
            for s in &l.plan.steps {
                match s {
                    Step::Install { key, wanted } => installs
                        .entry(key.clone())
                        .or_insert_with(|| (wanted.clone(), Vec::new()))
                        .1
                        .push(l.id.clone()),
                    Step::Remove { key, applied } => removals
                        .entry(key.clone())
                        .or_insert_with(|| (applied.clone(), Vec::new()))
                        .1
                        .push(l.id.clone()),
                }
            }
        }
        let t = now();
        let blueprints_of = |id: &str, key: &str| -> Vec<String> {
            claimed
                .iter()
                .find(|l| l.id == id)
                .and_then(|l| l.desired.items.get(key))
                .map(|w| w.blueprints.clone())
                .unwrap_or_default()
        };
        for (key, (wanted, targets)) in installs {
            let res = self.install(&wanted.want, targets.clone()).await;
            match res {
                Ok(sent) => {
                    for target in &targets {
                        let entry = out.entry(target.clone()).or_default();
                        let (command, state, chain) = match sent.get(target) {
                            Some(Ok(uuid)) => {
                                stats.commands += 1;
                                (uuid.clone(), ItemState::Pending, Vec::new())
                            }
                            Some(Err(msg)) => (
                                None,
                                ItemState::Failed,
                                vec![crate::protocol::ErrorChainItem {
                                    code: 0,
                                    domain: "mdmd".into(),
                                    localized_description: msg.clone(),
                                    us_english_description: None,
                                }],
                            ),
                            None => continue,
                        };
                        let bundle_id = match &wanted.want {
                            Want::App(a) => a.app.clone().or_else(|| a.identifier.clone()),
                            _ => None,
                        };
                        entry.push((
                            key.clone(),
                            Some(Applied {
                                kind: wanted.want.kind().into(),
                                label: wanted.want.label(),
                                version: wanted.want.version(),
                                command,
                                state: if wanted.want.kind() == "declaration_set" && state == ItemState::Pending {
                                    ItemState::Done
                                } else {
                                    state
                                },
                                error_chain: chain,
                                by_hand: false,
                                bundle_id,
                                blueprints: blueprints_of(target, &key),
                                at: t,
                            }),
                        ));
                    }
                }
                Err(e) => tracing::warn!(item = %key, error = %e, "blueprint item not queued; tried again later"),
            }
        }
        for (key, (applied, targets)) in removals {
            match self.remove(&applied, targets.clone()).await {
                Ok(n) => {
                    stats.commands += n;
                    for target in targets {
                        out.entry(target).or_default().push((key.clone(), None));
                    }
                }
                Err(e) => tracing::warn!(item = %key, error = %e, "blueprint item not removed; tried again later"),
            }
        }
        out
    }

    /// Queue one item for its devices: per device, the command's uuid (None
    /// for a set), or why it could not be sent.
    pub(super) async fn install(
        &self,
        want: &Want,
        targets: Vec<String>,
    ) -> Result<HashMap<String, Result<Option<String>, String>>, ServiceError> {
        let c = &self.commander;
        let mut out = HashMap::new();
        let batch = match want {
            Want::Profile { identifier, .. } => c.install_template(identifier, targets.clone(), true).await,
            Want::App(a) if a.app.is_some() => {
                let id = a.app.clone().unwrap_or_default();
                let apps = self
                    .apps()
                    .ok_or_else(|| ServiceError::Rejected("the app catalog is not available".into()))?;
                let opts = crate::service::apps::install::InstallOptions {
                    configuration: a.configuration.clone(),
                };
                match apps.install(&id, targets.clone(), opts).await {
                    Ok(r) => {
                        for f in r.failed {
                            out.insert(f.target, Err(f.error));
                        }
                        for (t, uuid) in r.commands {
                            out.insert(t, Ok(Some(uuid)));
                        }
                        for t in targets {
                            out.entry(t).or_insert_with(|| Err("not queued".into()));
                        }
                    }
                    Err(crate::service::apps::AppsFailure::Service(e)) => return Err(e),
                    Err(e) => {
                        // Refused for every target (too few licences, Apple's refusal): each fails, tried again later.
                        for t in targets {
                            out.insert(t, Err(e.to_string()));
                        }
                    }
                }
                return Ok(out);
            }
            Want::App(a) => {
                let cmd = app_command(a);
                let b = c.enqueue(CommandInput::Json(cmd.clone()), targets.clone(), true).await;
                if let (Ok(b), Some(bundle), Some(access)) = (&b, &a.identifier, c.access()) {
                    bind_config(access, bundle, &cmd, b).await;
                }
                b
            }
            Want::Command(cmd) => c.enqueue(CommandInput::Json(cmd.clone()), targets.clone(), true).await,
            Want::Set(set) => {
                let ddm = c
                    .mdm
                    .ddm()
                    .ok_or_else(|| ServiceError::Rejected("declarative management is not available".into()))?;
                for t in targets {
                    match ddm.assign(&t, set, true).await {
                        Ok(_) => {
                            out.insert(t, Ok(None));
                        }
                        Err(e) => {
                            out.insert(t, Err(e.to_string()));
                        }
                    }
                }
                return Ok(out);
            }
        };
        let b = match batch {
            Ok(b) => b,
            Err(crate::service::commands::CommandError::Service(e)) => return Err(e),
            // Refused because of some of the devices (a supervised-only item and a
            // device that is not supervised, a User Enrollment): halve until each
            // refusal is its own devices', so the others still get the item.
            Err(_) if targets.len() > 1 => {
                let (first, second) = targets.split_at(targets.len() / 2);
                let mut out = Box::pin(self.install(want, first.to_vec())).await?;
                out.extend(Box::pin(self.install(want, second.to_vec())).await?);
                return Ok(out);
            }
            Err(e) => {
                // The item itself is wrong (a schema problem) or refused for this device: it fails it.
                for t in targets {
                    out.insert(t, Err(e.to_string()));
                }
                return Ok(out);
            }
        };
        for f in b.failed {
            out.insert(f.target, Err(f.error));
        }
        for t in &b.waiting {
            out.insert(t.clone(), Ok(None));
        }
        for t in targets {
            if out.contains_key(&t) || b.unknown_targets.contains(&t) {
                continue;
            }
            let uuid = b.commands.get(&t).cloned().or_else(|| b.command_uuid.clone());
            out.insert(t, Ok(uuid));
        }
        Ok(out)
    }

    pub(super) async fn remove(&self, a: &Applied, targets: Vec<String>) -> Result<u64, ServiceError> {
        let c = &self.commander;
        let err = |e: crate::service::commands::CommandError| match e {
            crate::service::commands::CommandError::Service(s) => s,
            other => ServiceError::Rejected(other.to_string()),
        };
        match a.kind.as_str() {
            "profile" => Ok(c.remove_profile(&a.label, targets, true).await.map_err(err)?.queued),
            "app" if a.label.starts_with("catalog:") => {
                let Some(id) = &a.bundle_id else { return Ok(0) };
                let apps = self
                    .apps()
                    .ok_or_else(|| ServiceError::Rejected("the app catalog is not available".into()))?;
                match apps.remove(id, targets).await {
                    Ok(r) => Ok(r.queued),
                    Err(crate::service::apps::AppsFailure::Service(e)) => Err(e),
                    // Gone from the catalog: nothing mdmd can still send for it.
                    Err(crate::service::apps::AppsFailure::NotFound(_)) => Ok(0),
                    Err(e) => Err(ServiceError::Rejected(e.to_string())),
                }
            }
            "app" => {
                let Some(bundle) = &a.bundle_id else { return Ok(0) };
                let cmd = json!({"RequestType": "RemoveApplication", "Identifier": bundle});
                Ok(c.enqueue(CommandInput::Json(cmd), targets, true).await.map_err(err)?.queued)
            }
            "declaration_set" => {
                if let Some(ddm) = c.mdm.ddm() {
                    for t in targets {
                        ddm.assign(&t, &a.label, false).await?;
                    }
                }
                Ok(0)
            }
            _ => Ok(0),
        }
    }
}

/// The InstallApplication an app item sends.
pub fn app_command(a: &AppSpec) -> Json {
    let mut c = json!({"RequestType": "InstallApplication"});
    if let Some(n) = a.itunes_store_id {
        c["iTunesStoreID"] = json!(n);
    } else if let Some(u) = &a.manifest_url {
        c["ManifestURL"] = json!(u);
    }
    if let Some(f) = a.management_flags {
        c["ManagementFlags"] = json!(f);
    }
    if let Some(conf) = &a.configuration {
        c["Configuration"] = conf.clone();
    }
    c
}

/// Remember an app configuration that carries token variables, so a token
/// rotation re-sends the configuration alone (by bundle identifier).
async fn bind_config(access: &Arc<crate::service::access::tokens::Access>, bundle: &str, cmd: &Json, b: &crate::service::commands::Batch) {
    let Ok((d, _)) = crate::service::commands::Commander::validated(CommandInput::Json(cmd.clone())) else {
        return;
    };
    let Some(conf) = d.get("Configuration").and_then(plist::Value::as_dictionary) else {
        return;
    };
    let mut used = BTreeSet::new();
    crate::profiles::vars::used(&plist::Value::Dictionary(conf.clone()), &mut used);
    let per_device = used.contains("DEVICE_ACCESS_TOKEN") || used.contains("DERIVED_CREDENTIAL_TOKEN");
    if !(per_device || used.contains("ACCESS_TOKEN")) {
        return;
    }
    let sent: Vec<String> = b.commands.keys().cloned().collect();
    if let Err(e) = access.bind_app_config(bundle, conf, &sent, per_device).await {
        tracing::warn!(app = %bundle, error = %e, "app configuration not remembered for token rotation");
    }
}
