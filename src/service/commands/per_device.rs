//! Per-device copies of a command: `$VARIABLES` filled, the escrowed
//! UnlockToken added, profiles filled, encrypted to the device and signed,
//! each with its single-use SCEP challenges. Built on the blocking pool,
//! spread over the cores (`Renderer`), and queued with
//! `QueueStore::enqueue_each` in one transaction; a target whose copy cannot
//! be made gets its own failure in the batch and nothing queued.

use super::*;

/// How each target's copy is made.
#[derive(Clone)]
pub(super) enum PerDevice {
    /// Fill the variables of a command (and the UnlockToken when asked).
    Fill { command: Dictionary, unlock_token: bool },
    /// Render a profile: fill, encrypt, sign, wrap in InstallProfile.
    Profile {
        template: Dictionary,
        identifier: String,
        /// PayloadIdentifier of each payload, by index (for challenge purposes).
        payload_ids: Vec<String>,
    },
}

/// One target's built command and the secrets it carries.
type Built = (CommandRecord, Vec<(SecretKind, String, OneTimeSecret)>);

/// Why one target's copy could not be made: shown to the admin as that
/// target's failure (`Batch::failed`), with the same text either way.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Something about this device or the template (no UnlockToken, a
    /// variable without a value, no identity certificate to encrypt to…).
    #[error("{0}")]
    Target(String),
    /// Our own failure (a stored certificate that does not parse, sealing).
    #[error("{what}: {source}")]
    Internal {
        what: &'static str,
        #[source]
        source: crate::service::BoxError,
    },
}

impl CopyError {
    fn internal(what: &'static str, source: impl Into<crate::service::BoxError>) -> Self {
        CopyError::Internal {
            what,
            source: source.into(),
        }
    }
}

impl Commander {
    pub(super) async fn queue_each(
        &self,
        job: PerDevice,
        targets: Vec<String>,
        tag: Option<ProfileTag>,
        push: bool,
    ) -> Result<Batch, CommandError> {
        let (mut batch, results) = self.render(job, targets, tag).await?;
        let mut items = Vec::with_capacity(results.len());
        let mut secrets = Vec::new();
        for (target, r) in results {
            match r {
                Ok((rec, s)) => {
                    batch.commands.insert(target.clone(), rec.uuid.clone());
                    secrets.extend(s);
                    items.push((rec, target));
                }
                Err(error) => {
                    if let CopyError::Internal { .. } = &error {
                        tracing::error!(%target, error = %error, "a per-device copy could not be made");
                    }
                    batch.failed.push(Failed {
                        target,
                        error: error.to_string(),
                    })
                }
            }
        }
        if items.is_empty() {
            return Ok(batch);
        }
        let woken: Vec<String> = items.iter().map(|(_, t)| t.clone()).collect();
        let request_type = items[0].0.request_type.clone();
        let out = self.mdm.store.enqueue_each(items, secrets).await?;
        batch.queued = out.queued;
        crate::metrics::get().commands_queued.inc_by(out.queued);
        for u in out.unknown {
            // Unenrolled between the read and the write.
            batch.commands.remove(&u);
            batch.unknown_targets.push(u);
        }
        batch.command_uuid = batch.commands.values().next().cloned();
        if push {
            self.mdm.wake(woken);
        }
        tracing::info!(%request_type, queued = batch.queued, failed = batch.failed.len(), unknown = batch.unknown_targets.len(), "per-device commands queued");
        Ok(batch)
    }

    /// A profile without variables, not encrypted: one signed copy serves
    /// every target (stored once, queued to all in one transaction). None when
    /// the copy cannot be made that way (the caller builds one per device).
    pub(super) async fn queue_shared_profile(
        &self,
        job: PerDevice,
        targets: Vec<String>,
        tag: ProfileTag,
        push: bool,
    ) -> Result<Option<Batch>, CommandError> {
        let Some(first) = targets.first().cloned() else { return Ok(None) };
        let (_, results) = self.render(job, vec![first], Some(tag)).await?;
        let Some((_, Ok((rec, secrets)))) = results.into_iter().next() else {
            return Ok(None);
        };
        if !secrets.is_empty() {
            return Ok(None);
        }
        let uuid = rec.uuid.clone();
        let out = self.mdm.fan_out(rec, targets, push).await?;
        Ok(Some(Batch {
            command_uuid: Some(uuid),
            queued: out.queued,
            unknown_targets: out.unknown,
            ..Batch::default()
        }))
    }

    /// A stored template as one device gets it: variables filled, signed, and
    /// encrypted to the device (with --encrypt-profiles): what a declarative
    /// `com.apple.configuration.legacy` configuration's ProfileURL serves.
    /// The single-use secrets it carries are stored before it is returned.
    pub async fn profile_for_device(&self, identifier: &str, enrollment: &str) -> Result<Vec<u8>, CommandError> {
        let (_, template) = self.stored_template(identifier).await?;
        let payload_ids = payload_ids(&template);
        let job = PerDevice::Profile {
            template,
            identifier: identifier.to_owned(),
            payload_ids,
        };
        let (batch, results) = self.render(job, vec![enrollment.to_owned()], None).await?;
        if let Some(f) = batch.failed.first() {
            return Err(invalid("", f.error.clone()));
        }
        let Some((_, r)) = results.into_iter().next() else {
            return Err(CommandError::NotFound(format!("no enrollment {enrollment}")));
        };
        let (rec, secrets) = r.map_err(|e| match e {
            CopyError::Target(m) => invalid("", m),
            CopyError::Internal { what, source } => CommandError::Service(ServiceError::Internal { what, source }),
        })?;
        for (kind, hash, secret) in secrets {
            self.mdm.store.add_secret(kind, &hash, secret).await?;
        }
        let xml = crate::service::commands::sealed::open(&self.mdm.secrets, &rec.uuid, &rec.body)
            .map_err(|e| CommandError::Service(ServiceError::internal("opening the rendered command", e)))?;
        let cmd = crate::protocol::limits::parse_value(xml.as_ref())
            .map_err(|e| CommandError::Service(ServiceError::internal("parsing the rendered command", e)))?;
        cmd.as_dictionary()
            .and_then(|d| d.get("Command"))
            .and_then(Value::as_dictionary)
            .and_then(|c| c.get("Payload"))
            .and_then(Value::as_data)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| CommandError::Service(ServiceError::internal("the rendered command", "it has no Payload")))
    }

    /// Per-device copies of a command or profile for `targets` (not queued).
    #[allow(clippy::type_complexity)]
    async fn render(
        &self,
        job: PerDevice,
        targets: Vec<String>,
        tag: Option<ProfileTag>,
    ) -> Result<(Batch, Vec<(String, Result<Built, CopyError>)>), CommandError> {
        let mut targets = targets;
        targets.sort_unstable();
        targets.dedup();
        let need_cert = matches!(job, PerDevice::Profile { .. }) && self.cfg.encrypt_profiles;
        let mut batch = Batch::default();
        let mut ctx = Vec::with_capacity(targets.len());
        for t in targets {
            let Some(e) = self.mdm.store.enrollment(&t).await? else {
                batch.unknown_targets.push(t);
                continue;
            };
            let cert = if need_cert { self.identity_cert_der(&e).await? } else { None };
            ctx.push((e, cert));
        }
        // Token variables: fetched (shared) or signed (per device) here, filled on the render threads.
        let mut used = std::collections::BTreeSet::new();
        match &job {
            PerDevice::Fill { command, .. } => vars::used(&Value::Dictionary(command.clone()), &mut used),
            PerDevice::Profile { template, .. } => vars::used(&Value::Dictionary(template.clone()), &mut used),
        }
        let mut extra: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if used.contains("ACCESS_TOKEN") || used.contains("DEVICE_ACCESS_TOKEN") {
            let access = self
                .access
                .as_ref()
                .ok_or_else(|| invalid("", "access tokens are not set up on this server"))?;
            let shared = if used.contains("ACCESS_TOKEN") {
                access.current().await?
            } else {
                None
            };
            for (e, _) in &ctx {
                let m = extra.entry(e.id.clone()).or_default();
                if let Some(s) = &shared {
                    m.insert("ACCESS_TOKEN".into(), s.clone());
                }
                if used.contains("DEVICE_ACCESS_TOKEN") {
                    let c = self.mdm.store.compliance(&e.device).await?;
                    let state = c.map_or("unknown", |c| c.state.as_str());
                    let managed = e.active && e.checked_out_at.is_none();
                    if let Ok(t) = access.device_token(&e.device, state, managed) {
                        m.insert("DEVICE_ACCESS_TOKEN".into(), t);
                    }
                }
            }
        }
        // Organisation CAs and derived credentials: only inside profiles
        // encrypted to their device.
        let org: std::collections::BTreeSet<String> = used
            .iter()
            .filter_map(|n| match vars::split(n) {
                ("SCEP_PROXY_URL" | "SCEP_CHALLENGE", Some(ca)) => Some(ca.to_owned()),
                _ => None,
            })
            .collect();
        let usages: Vec<String> = used
            .iter()
            .filter_map(|n| match vars::split(n) {
                ("DERIVED_CREDENTIAL", Some(u)) => Some(u.to_owned()),
                _ => None,
            })
            .collect();
        if (!org.is_empty() || !usages.is_empty()) && !self.cfg.encrypt_profiles {
            return Err(invalid(
                "",
                "a profile with an organisation CA's challenge or a derived credential is only sent encrypted to its device (serve with --encrypt-profiles true)",
            ));
        }
        let mut prefail: BTreeMap<String, String> = BTreeMap::new();
        if !org.is_empty() {
            let cas = self
                .orgcas
                .as_ref()
                .ok_or_else(|| invalid("", "organisation CAs are not set up on this server"))?;
            for ca in &org {
                if !cas.exists(ca).await.map_err(|e| invalid("", e.to_string()))? {
                    return Err(invalid("", format!("no organisation CA {ca} (add it with mdmd cas add)")));
                }
                let name = format!("SCEP_CHALLENGE:{ca}");
                if !used.contains(&name) {
                    continue;
                }
                for (e, _) in &ctx {
                    // Static, or fetched per install (NDES); never logged.
                    match cas.challenge(ca).await {
                        Ok(c) => {
                            extra.entry(e.id.clone()).or_default().insert(name.clone(), c);
                        }
                        Err(err) => {
                            prefail.insert(e.id.clone(), format!("the challenge of CA {ca}: {err}"));
                        }
                    }
                }
            }
        }
        let mut dc: BTreeMap<String, BTreeMap<String, Delivery>> = BTreeMap::new();
        if !usages.is_empty() {
            let derived = self
                .derived
                .as_ref()
                .ok_or_else(|| invalid("", "derived credentials are not set up on this server"))?;
            for (e, _) in &ctx {
                for u in &usages {
                    match derived.for_enrollment(e, u).await {
                        Ok(Some(d)) => {
                            dc.entry(e.id.clone()).or_default().insert(u.clone(), d);
                        }
                        Ok(None) => {
                            prefail.insert(e.id.clone(), format!("no {u} derived credential for this device"));
                        }
                        Err(err) => {
                            prefail.insert(e.id.clone(), err.to_string());
                        }
                    }
                }
            }
        }
        if !prefail.is_empty() {
            ctx.retain(|(e, _)| !prefail.contains_key(&e.id));
            batch
                .failed
                .extend(prefail.into_iter().map(|(target, error)| Failed { target, error }));
        }
        let job = Arc::new(job);
        // A profile that carries a secret (a challenge, a proxy token, a
        // token, a derived credential) readable by anyone but its device is
        // sealed whole at rest and redacted in views: when it is not
        // encrypted, or a secret sits outside the encrypted payloads.
        let secret_profile = match &*job {
            PerDevice::Profile { template, .. } => {
                let mut outside = std::collections::BTreeSet::new();
                for (_, v) in template.iter().filter(|(k, _)| k.as_str() != "PayloadContent") {
                    vars::used(v, &mut outside);
                }
                let secret = used.iter().any(|n| crate::service::commands::sealed::secret_variable(n)) || !usages.is_empty();
                (secret && !self.cfg.encrypt_profiles) || outside.iter().any(|n| crate::service::commands::sealed::secret_variable(n))
            }
            PerDevice::Fill { .. } => false,
        };
        let me = Arc::new(Renderer {
            secret_profile,
            sealer: self.mdm.secrets.clone(),
            dc,
            proxy_ttl: self.orgcas.as_ref().map_or(7 * 86_400, |c| c.cfg.proxy_ttl),
            upload_ttl: self
                .derived
                .as_ref()
                .map_or(crate::service::credentials::derived::DEFAULT_UPLOAD_TTL, |d| d.upload_ttl),
            extra,
            pki: self.pki.clone(),
            public_url: self.cfg.public_url.clone(),
            encrypt: self.cfg.encrypt_profiles,
            unlock: ctx
                .iter()
                .filter(|_| matches!(*job, PerDevice::Fill { unlock_token: true, .. }))
                .map(|(e, _)| (e.id.clone(), self.mdm.unlock_token(e)))
                .collect(),
            tag,
        });
        let results = tokio::task::spawn_blocking(move || me.render_all(&job, ctx))
            .await
            .map_err(|e| ServiceError::internal("rendering per-device copies", e))?;
        Ok((batch, results))
    }

    /// The enrollment's identity certificate (DER), to encrypt to. It is
    /// parsed on the rendering threads: with OpenSSL 3 parsing costs more
    /// than the encryption.
    async fn identity_cert_der(&self, e: &Enrollment) -> Result<Option<Vec<u8>>, CommandError> {
        let Some(h) = &e.cert_hash else { return Ok(None) };
        let Some(c) = self.mdm.store.cert_by_hash(h).await? else {
            return Ok(None);
        };
        Ok(c.der)
    }
}

/// Builds per-device copies on the blocking pool, spread over the cores.
struct Renderer {
    /// Profiles carry secrets: their Payload is marked secret and sealed.
    secret_profile: bool,
    /// The keyring that seals commands with secrets at rest.
    sealer: Arc<crate::pki::secrets::SecretBox>,
    /// Per-enrollment values of token variables.
    extra: BTreeMap<String, BTreeMap<String, String>>,
    /// Per-enrollment derived credentials, by usage.
    dc: BTreeMap<String, BTreeMap<String, Delivery>>,
    proxy_ttl: i64,
    upload_ttl: i64,
    pki: Arc<Pki>,
    public_url: String,
    encrypt: bool,
    unlock: BTreeMap<String, Option<Vec<u8>>>,
    tag: Option<ProfileTag>,
}

impl Renderer {
    /// A provider app's upload token for this device (`$DERIVED_CREDENTIAL_TOKEN`).
    fn upload_token(&self, e: &Enrollment, t: i64, secrets: &mut Vec<(SecretKind, String, OneTimeSecret)>) -> String {
        let token = format!(
            "{}{}",
            crate::service::credentials::derived::TOKEN_PREFIX,
            crate::pki::random_token(24)
        );
        secrets.push((
            SecretKind::DerivedUpload,
            sha256_hex(&token),
            OneTimeSecret {
                created_at: t,
                expires_at: t + self.upload_ttl,
                purpose: "derived-credential-upload".into(),
                used_at: None,
                enrollment: Some(e.device.clone()),
                vouched: false,
                renews: None,
                user: None,
                ade: None,
            },
        ));
        token
    }

    fn render_all(&self, job: &PerDevice, ctx: Vec<(Enrollment, Option<Vec<u8>>)>) -> Vec<(String, Result<Built, CopyError>)> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16);
        if ctx.len() < 16 || threads == 1 {
            return ctx
                .iter()
                .map(|(e, c)| (e.id.clone(), self.render_one(job, e, c.as_ref())))
                .collect();
        }
        let chunk = ctx.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = ctx
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(e, c)| (e.id.clone(), self.render_one(job, e, c.as_ref())))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        })
    }

    fn render_one(&self, job: &PerDevice, e: &Enrollment, cert_der: Option<&Vec<u8>>) -> Result<Built, CopyError> {
        let t = now();
        let cert = match cert_der {
            Some(d) => Some(X509::from_der(d).map_err(|err| CopyError::internal("stored identity certificate", err))?),
            None => None,
        };
        let cert = cert.as_ref();
        let mut secrets = Vec::new();
        let mut secret_paths: Vec<crate::service::commands::sealed::KeyPath> = Vec::new();
        let command = match job {
            PerDevice::Fill { command, unlock_token } => {
                secret_paths = crate::service::commands::sealed::secret_paths(command);
                if *unlock_token {
                    secret_paths.push(vec![crate::service::commands::sealed::Step::Key("UnlockToken".into())]);
                }
                let mut v = Value::Dictionary(command.clone());
                let extra = self.extra.get(&e.id);
                vars::fill(&mut v, "", &mut |name, _| {
                    if name == "DERIVED_CREDENTIAL_TOKEN" {
                        return Some(self.upload_token(e, t, &mut secrets));
                    }
                    extra
                        .and_then(|x| x.get(name).cloned())
                        .or_else(|| var_value(e, name, &self.public_url))
                })
                .map_err(|m| CopyError::Target(m.to_string()))?;
                let Value::Dictionary(mut d) = v else {
                    return Err(CopyError::internal("the command", "not a dictionary"));
                };
                if *unlock_token {
                    match self.unlock.get(&e.id).cloned().flatten() {
                        Some(tok) => {
                            d.insert("UnlockToken".into(), Value::Data(tok));
                        }
                        None => {
                            return Err(CopyError::Target(
                                "no UnlockToken escrowed for this device (it sends one in TokenUpdate once it has a passcode)".into(),
                            ))
                        }
                    }
                }
                d
            }
            PerDevice::Profile {
                template,
                identifier,
                payload_ids,
            } => {
                if self.encrypt && cert.is_none() {
                    return Err(CopyError::Target("no identity certificate on record to encrypt the profile to (re-enroll the device, or serve with --encrypt-profiles false)".into()));
                }
                let mut lookup = |name: &str, path: &str| {
                    if name == "SCEP_CHALLENGE" {
                        let idx: Option<usize> = path
                            .strip_prefix("PayloadContent[")
                            .and_then(|r| r.split(']').next())
                            .and_then(|n| n.parse().ok());
                        let payload = idx.and_then(|i| payload_ids.get(i)).cloned().unwrap_or_default();
                        let token = crate::pki::random_token(20);
                        secrets.push((
                            SecretKind::Challenge,
                            sha256_hex(&token),
                            OneTimeSecret {
                                created_at: t,
                                expires_at: t + PROFILE_CHALLENGE_TTL,
                                purpose: format!("profile:{identifier}/{payload}"),
                                used_at: None,
                                enrollment: Some(e.id.clone()),
                                vouched: false,
                                renews: None,
                                user: None,
                                ade: None,
                            },
                        ));
                        return Some(token);
                    }
                    if let ("SCEP_PROXY_URL", Some(ca)) = vars::split(name) {
                        let token = crate::pki::random_token(24);
                        secrets.push((
                            SecretKind::ScepProxy,
                            sha256_hex(&token),
                            OneTimeSecret {
                                created_at: t,
                                expires_at: t + self.proxy_ttl,
                                purpose: crate::service::credentials::orgca::token_purpose(ca, identifier),
                                used_at: None,
                                enrollment: Some(e.id.clone()),
                                vouched: false,
                                renews: None,
                                user: None,
                                ade: None,
                            },
                        ));
                        return Some(format!("{}/scep-proxy/{ca}/{token}", self.public_url));
                    }
                    if name == "DERIVED_CREDENTIAL_TOKEN" {
                        return Some(self.upload_token(e, t, &mut secrets));
                    }
                    self.extra
                        .get(&e.id)
                        .and_then(|x| x.get(name).cloned())
                        .or_else(|| var_value(e, name, &self.public_url))
                };
                let filled;
                let template = match self.dc.get(&e.id) {
                    Some(creds) => {
                        let mut t = template.clone();
                        profiles::fill_derived(&mut t, &|u| creds.get(u).map(|d| (d.pkcs12.clone(), d.password.clone())))
                            .map_err(|m| CopyError::Target(m.to_string()))?;
                        filled = t;
                        &filled
                    }
                    None => template,
                };
                let signed = profiles::render(&self.pki, template, &mut lookup, cert.map(|c| c.as_ref()).filter(|_| self.encrypt))
                    .map_err(|err| match err {
                        profiles::RenderError::Corrupt(_) => CopyError::internal("the stored template", err),
                        other => CopyError::Target(other.to_string()),
                    })?;
                if self.secret_profile {
                    secret_paths.push(vec![crate::service::commands::sealed::Step::Key("Payload".into())]);
                }
                let mut d = Dictionary::new();
                d.insert("RequestType".into(), "InstallProfile".into());
                d.insert("Payload".into(), Value::Data(signed));
                d
            }
        };
        let cmd = Command::new(command).map_err(|e| CopyError::Target(e.to_string()))?;
        let mut rec = CommandRecord {
            targets: 1,
            ..CommandRecord::new(&cmd, t, self.tag.clone())
        };
        rec.body = crate::service::commands::sealed::seal(&self.sealer, &rec.uuid, std::mem::take(&mut rec.body), &secret_paths)
            .map_err(|err| CopyError::internal("sealing the command's secrets", err))?;
        Ok((rec, secrets))
    }
}
