//! What follows certificates that are not mdmd's own: organisation-CA
//! certificates learned after an install and renewed before they expire,
//! and profiles that wait for, follow, or lose a derived credential.

use std::collections::BTreeMap;

use plist::Value;

use crate::clock::now;
use crate::service::commands::{Batch, CommandInput, Commander};
use crate::service::credentials::derived::{CredentialView, DerivedError};
use crate::store::ProfileState;

/// The organisation CAs a template's SCEP payloads reach through the proxy.
fn proxy_cas(variables: &[String]) -> Vec<String> {
    variables
        .iter()
        .filter_map(|v| v.strip_prefix("SCEP_PROXY_URL:").map(str::to_owned))
        .collect()
}

fn template_uses(variables: &[String], usage: &str) -> bool {
    variables.iter().any(|v| v == &format!("DERIVED_CREDENTIAL:{usage}"))
}

/// What a credential change did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Followed {
    /// Profiles queued (install or re-install), per enrollment.
    pub installed: BTreeMap<String, Vec<String>>,
    /// Profiles removed and set waiting again, per enrollment.
    pub removed: BTreeMap<String, Vec<String>>,
}

impl Commander {
    /// After an acknowledged InstallProfile of a template that gets a
    /// certificate from an organisation CA, ask for the CertificateList;
    /// from a CertificateList, record that CA's certificates.
    pub async fn follow_up(&self, enrollment: &str, request_type: &str, raw: &[u8]) {
        let Some(cas) = self.orgcas() else { return };
        let Ok(d) = crate::protocol::parse_dict(raw) else { return };
        match request_type {
            "InstallProfile" => {
                let Some(uuid) = d.get("CommandUUID").and_then(Value::as_string) else {
                    return;
                };
                let tag = match self.mdm.store.command(uuid).await {
                    Ok(Some((rec, _))) => rec.profile,
                    _ => None,
                };
                let Some(tag) = tag else { return };
                let uses = match self.mdm.store.template(&tag.identifier).await {
                    Ok(Some(t)) => !proxy_cas(&t.variables).is_empty(),
                    _ => false,
                };
                if uses {
                    let c = serde_json::json!({"RequestType": "CertificateList"});
                    match self.enqueue(CommandInput::Json(c), vec![enrollment.to_owned()], true).await {
                        Ok(_) => {
                            tracing::debug!(enrollment, profile = %tag.identifier, "CertificateList asked after an organisation-CA install")
                        }
                        Err(e) => tracing::warn!(enrollment, error = %e, "could not ask for the CertificateList"),
                    }
                }
            }
            "CertificateList" => {
                let certs: Vec<Vec<u8>> = d
                    .get("CertificateList")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_dictionary()?.get("Data")?.as_data().map(<[u8]>::to_vec))
                    .collect();
                // Which installed profile brought each CA's certificate: the
                // latest install of a template using that CA.
                let mut by_ca: BTreeMap<String, (i64, String)> = BTreeMap::new();
                if let Ok(list) = self.mdm.store.device_profiles(enrollment).await {
                    for p in list
                        .iter()
                        .filter(|p| matches!(p.state, ProfileState::Installed | ProfileState::Pending))
                    {
                        if let Ok(Some(t)) = self.mdm.store.template(&p.identifier).await {
                            for ca in proxy_cas(&t.variables) {
                                let e = by_ca.entry(ca).or_insert((p.updated_at, p.identifier.clone()));
                                if p.updated_at > e.0 {
                                    *e = (p.updated_at, p.identifier.clone());
                                }
                            }
                        }
                    }
                }
                let pick = move |ca: &str| by_ca.get(ca).map(|(_, id)| id.clone());
                if let Err(e) = cas.learn_certificates(enrollment, certs, &pick).await {
                    tracing::warn!(enrollment, error = %e, "could not record organisation certificates");
                }
            }
            _ => {}
        }
    }

    /// Re-install the profiles whose organisation-CA certificate expires
    /// within the renewal window, so the device gets a new one. Returns how
    /// many were queued.
    pub async fn renew_org_certs(&self) -> Result<usize, super::orgca::CaError> {
        let Some(cas) = self.orgcas() else { return Ok(0) };
        let t = now();
        let mut n = 0;
        for c in cas.due_for_renewal(t).await? {
            let Some(profile) = c.profile.clone() else { continue };
            let active = matches!(self.mdm.store.enrollment(&c.enrollment).await, Ok(Some(e)) if e.active && e.checked_out_at.is_none());
            if !active {
                continue;
            }
            match self.install_template(&profile, vec![c.enrollment.clone()], true).await {
                Ok(b) if b.queued > 0 || !b.waiting.is_empty() => {
                    cas.mark_renewal(&c, t).await?;
                    tracing::info!(enrollment = %c.enrollment, ca = %c.ca, serial = %c.serial, %profile, "profile re-installed to renew its certificate");
                    n += 1;
                }
                Ok(b) => tracing::warn!(enrollment = %c.enrollment, %profile, failed = ?b.failed, "renewal not queued"),
                Err(e) => tracing::warn!(enrollment = %c.enrollment, %profile, error = %e, "renewal not queued"),
            }
        }
        Ok(n)
    }

    /// Templates that use a derived credential of `usage`.
    async fn dependent_templates(&self, usage: &str) -> Result<Vec<String>, DerivedError> {
        Ok(self
            .mdm
            .store
            .templates()
            .await?
            .into_iter()
            .filter(|t| template_uses(&t.variables, usage))
            .map(|t| t.identifier)
            .collect())
    }

    /// A credential arrived (new, or replacing `replaced`): send the profiles
    /// that waited for it, and re-install those that carry the old one.
    pub async fn derived_posted(&self, cred: &CredentialView, replaced: bool) -> Result<Followed, DerivedError> {
        let Some(derived) = self.derived() else {
            return Ok(Followed::default());
        };
        let dependents = self.dependent_templates(&cred.usage).await?;
        let mut out = Followed::default();
        for enr in derived.enrollments_of(&cred.owner).await? {
            let mut profiles: Vec<String> = derived
                .waiting(&enr)
                .await?
                .profiles
                .into_iter()
                .filter(|(_, w)| w.usages.contains(&cred.usage))
                .map(|(id, _)| id)
                .collect();
            if replaced {
                for p in self.mdm.store.device_profiles(&enr).await? {
                    if matches!(p.state, ProfileState::Installed | ProfileState::Pending) && dependents.contains(&p.identifier) {
                        profiles.push(p.identifier);
                    }
                }
            }
            profiles.sort();
            profiles.dedup();
            for p in profiles {
                let b = self.install_dependent(&p, &enr).await;
                if b.queued > 0 {
                    out.installed.entry(enr.clone()).or_default().push(p);
                }
            }
        }
        Ok(out)
    }

    /// A credential was deleted: profiles that carried it are removed from
    /// the devices and wait again (or, where another credential of that
    /// usage still applies, such as the user's, re-installed with it).
    pub async fn derived_deleted(&self, cred: &CredentialView) -> Result<Followed, DerivedError> {
        let Some(derived) = self.derived() else {
            return Ok(Followed::default());
        };
        let dependents = self.dependent_templates(&cred.usage).await?;
        let mut out = Followed::default();
        for enr in derived.enrollments_of(&cred.owner).await? {
            let Some(e) = self.mdm.store.enrollment(&enr).await? else {
                continue;
            };
            let still = derived.missing(&e, std::slice::from_ref(&cred.usage)).await?.is_empty();
            for p in self.mdm.store.device_profiles(&enr).await? {
                if !(matches!(p.state, ProfileState::Installed | ProfileState::Pending) && dependents.contains(&p.identifier)) {
                    continue;
                }
                if still {
                    if self.install_dependent(&p.identifier, &enr).await.queued > 0 {
                        out.installed.entry(enr.clone()).or_default().push(p.identifier);
                    }
                    continue;
                }
                if let Err(err) = self.remove_profile(&p.identifier, vec![enr.clone()], true).await {
                    tracing::warn!(enrollment = %enr, profile = %p.identifier, error = %err, "dependent profile not removed");
                    continue;
                }
                let (id, usage, at) = (p.identifier.clone(), cred.usage.clone(), now());
                derived
                    .update_waiting(&enr, |w| {
                        w.profiles.insert(
                            id.clone(),
                            crate::service::credentials::derived::WaitingProfile {
                                usages: vec![usage.clone()],
                                since: at,
                            },
                        );
                    })
                    .await?;
                out.removed.entry(enr.clone()).or_default().push(p.identifier);
            }
        }
        Ok(out)
    }

    async fn install_dependent(&self, profile: &str, enrollment: &str) -> Batch {
        match self.install_template(profile, vec![enrollment.to_owned()], true).await {
            Ok(b) => {
                if b.queued > 0 {
                    tracing::info!(%enrollment, %profile, "profile sent with the device's derived credential");
                } else if !b.failed.is_empty() {
                    tracing::warn!(%enrollment, %profile, failed = ?b.failed, "profile with a derived credential not sent");
                }
                b
            }
            Err(e) => {
                tracing::warn!(%enrollment, %profile, error = %e, "profile with a derived credential not sent");
                Batch::default()
            }
        }
    }
}
