//! Commands and the queue: what admins ask for (here, `Commander`), the one
//! fan-out path every queued command takes (`enqueue`), and the secrets
//! inside queued commands, sealed at rest (`sealed`).
//!
//! Queueing commands for admins: validation against Apple's schemas, and
//! commands that differ per device. A command that is the same for every
//! target is stored once and queued to all (`QueueStore::enqueue`). A command
//! that uses `$VARIABLES`, a ClearPasscode without an UnlockToken (filled from
//! the escrowed one), and every InstallProfile (filled, encrypted to the
//! device, signed) is built per device and queued with
//! `QueueStore::enqueue_each`, together with any single-use SCEP challenges
//! it carries, in one transaction. A target whose copy cannot be built (a
//! variable without a value, no identity certificate to encrypt to) gets a
//! clear error and nothing is queued for it.
//!
//! A profile install (`POST /v1/profiles/{id}/install`): each target's copy
//! is built on the blocking pool (variables filled; `$SCEP_CHALLENGE` becomes
//! a new single-use challenge bound to the device and payload; payloads
//! encrypted to the device; signed); `enqueue_each` stores the commands and
//! challenges in one transaction, supersedes a still pending command for the
//! same profile, and marks the profile `pending` on each device. The
//! device's result updates the profile's state inside the same `report`
//! transaction (the command record carries a profile tag). A certificate
//! SCEP issues against such a challenge records its purpose and device and
//! is never accepted as an MDM identity.

mod app_configs;
pub mod enqueue;
pub mod nac;
mod per_device;

pub use per_device::CopyError;
use per_device::PerDevice;
pub mod sealed;

use std::collections::BTreeMap;
use std::sync::Arc;

use openssl::x509::X509;
use plist::{Dictionary, Value};
use serde::Serialize;

use crate::clock::now;
use crate::pki::sha256_hex;
use crate::pki::Pki;
use crate::profiles::{self, vars, Template, TemplateError};
use crate::protocol::schema::{Problem, Schema};
use crate::protocol::Command;
use crate::service::credentials::derived::{Delivery, Derived, WaitingProfile};
use crate::service::credentials::orgca::OrgCas;
use crate::service::{Mdm, ServiceError};
use crate::store::{CommandRecord, Enrollment, OneTimeSecret, ProfileAction, ProfileState, ProfileTag, ProfileTemplate, SecretKind};

/// How long a SCEP challenge inside a queued profile stays valid: the
/// device may be away for a while before it installs the profile.
pub const PROFILE_CHALLENGE_TTL: i64 = 30 * 86_400;

#[derive(Debug, Clone)]
pub struct CommanderConfig {
    pub public_url: String,
    /// Encrypt every profile's payloads to its device (EncryptedPayloadContent).
    pub encrypt_profiles: bool,
}

pub struct Commander {
    pub mdm: Arc<Mdm>,
    pki: Arc<Pki>,
    pub cfg: CommanderConfig,
    /// Access tokens for `$ACCESS_TOKEN` / `$DEVICE_ACCESS_TOKEN`.
    access: Option<Arc<crate::service::access::tokens::Access>>,
    /// Organisation CAs (`$SCEP_PROXY_URL:NAME`, `$SCEP_CHALLENGE:NAME`).
    orgcas: Option<Arc<OrgCas>>,
    /// Derived credentials (`$DERIVED_CREDENTIAL:usage`).
    derived: Option<Arc<Derived>>,
}

/// Where a command carries managed app configuration: (bundle id, Configuration).
/// A command as an admin sends it.
pub enum CommandInput {
    /// JSON (data as base64, dates as RFC 3339), converted by the schema.
    Json(serde_json::Value),
    /// A plist dictionary `{RequestType, …}`, checked against the schema.
    Plist(Dictionary),
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Failed {
    pub target: String,
    pub error: String,
}

/// What an enqueue did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Batch {
    /// The command, when one command serves every target; with per-device
    /// commands, the first target's.
    pub command_uuid: Option<String>,
    /// Per-device commands: target -> command uuid.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub commands: BTreeMap<String, String>,
    pub queued: u64,
    pub unknown_targets: Vec<String>,
    /// Targets whose copy could not be built; nothing was queued for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<Failed>,
    /// Targets that wait for a derived credential: the profile is sent when it arrives.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for CommandError {
    fn from(e: crate::store::StoreError) -> Self {
        CommandError::Service(e.into())
    }
}

fn invalid(path: &str, message: impl Into<String>) -> CommandError {
    CommandError::Invalid(vec![Problem {
        path: path.into(),
        message: message.into(),
    }])
}

/// The value of a variable for an enrollment (None: no value; never "").
pub fn var_value(e: &Enrollment, name: &str, public_url: &str) -> Option<String> {
    let i = &e.info;
    let v = match name {
        "UDID" => e.udid.clone(),
        "SERIAL_NUMBER" => i.serial_number.clone(),
        "DEVICE_NAME" => i.device_name.clone(),
        "PRODUCT_NAME" => i.product_name.clone(),
        "MODEL" => i.model.clone(),
        "OS_VERSION" => i.os_version.clone(),
        "IMEI" => i.imei.clone(),
        "MEID" => i.meid.clone(),
        "WIFI_MAC" => i.wifi_mac.clone(),
        "BLUETOOTH_MAC" => i.bluetooth_mac.clone(),
        "PHONE_NUMBER" => i.phone_number.clone(),
        "ENROLLMENT_ID" => Some(e.id.clone()),
        "DEVICE_GUID" => Some(e.device_guid()),
        "USERNAME" => e.username(),
        "EMAIL" => e.email(),
        "FULL_NAME" => e.full_name(),
        "SCEP_URL" => Some(format!("{public_url}/scep")),
        "DERIVED_CREDENTIAL_URL" => Some(format!("{public_url}/v1/derived-credentials")),
        "SERVER_URL" => Some(public_url.to_owned()),
        _ => None,
    };
    v.filter(|s| !s.trim().is_empty())
}

/// Whether [`Commander::enqueue_as`] remembers the app configurations it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remember {
    Yes,
    No,
}

impl Commander {
    pub fn new(mdm: Arc<Mdm>, pki: Arc<Pki>, cfg: CommanderConfig) -> Self {
        Commander {
            mdm,
            pki,
            cfg,
            access: None,
            orgcas: None,
            derived: None,
        }
    }

    /// Organisation CAs and derived credentials, for the variables that name them.
    pub fn with_credentials(mut self, orgcas: Arc<OrgCas>, derived: Arc<Derived>) -> Self {
        self.orgcas = Some(orgcas);
        self.derived = Some(derived);
        self
    }

    pub fn orgcas(&self) -> Option<&Arc<OrgCas>> {
        self.orgcas.as_ref()
    }

    pub fn derived(&self) -> Option<&Arc<Derived>> {
        self.derived.as_ref()
    }

    /// Access tokens, for `$ACCESS_TOKEN` and `$DEVICE_ACCESS_TOKEN`.
    pub fn with_access(mut self, access: Arc<crate::service::access::tokens::Access>) -> Self {
        self.access = Some(access);
        self
    }

    pub fn access(&self) -> Option<&Arc<crate::service::access::tokens::Access>> {
        self.access.as_ref()
    }

    /// Validate and queue a command for `targets`.
    /// With `push`, the targets are woken (APNs) once it is queued.
    pub async fn enqueue(&self, input: CommandInput, targets: Vec<String>, push: bool) -> Result<Batch, CommandError> {
        self.enqueue_as(input, targets, push, Remember::Yes).await
    }

    /// [`Commander::enqueue`]; with [`Remember::No`], app configurations in
    /// the command are not remembered as the admin's (a device-named one
    /// being re-sent).
    async fn enqueue_as(&self, input: CommandInput, targets: Vec<String>, push: bool, remember: Remember) -> Result<Batch, CommandError> {
        let (command, unlock_token) = Self::validated(input)?;
        let rt = command.get("RequestType").and_then(Value::as_string).unwrap_or_default().to_owned();
        let schema = crate::protocol::schema::Schema::get();
        if schema.command(&rt).is_some_and(|c| c.ue_forbidden) {
            self.refuse_user_enrollments(&rt, &targets).await?;
        }
        if let Some(what) = schema.supervised_only_command(&command) {
            self.refuse_unsupervised(&what, &targets).await?;
        }
        match rt.as_str() {
            "InstallProfile" => {
                let payload = match command.get("Payload") {
                    Some(Value::Data(d)) => d.clone(),
                    _ => return Err(invalid("Payload", "is required (the .mobileconfig)")),
                };
                let t = Template::parse(&payload).map_err(template_error)?;
                let dict = profiles::parse_stored(&t.xml).map_err(|e| invalid("Payload", e.to_string()))?;
                let mut b = self.install(&t.identifier, Some(t.sha256.clone()), dict, targets, push).await?;
                b.warnings = t.warnings;
                Ok(b)
            }
            "RemoveProfile" => {
                let id = command.get("Identifier").and_then(Value::as_string).unwrap_or_default().to_owned();
                self.queue_same(command, targets, Some(remove_tag(&id)), push).await
            }
            _ => {
                let mut used = std::collections::BTreeSet::new();
                vars::used(&Value::Dictionary(command.clone()), &mut used);
                if let Some(n) = used
                    .iter()
                    .find(|n| matches!(vars::split(n).0, "SCEP_CHALLENGE" | "SCEP_PROXY_URL" | "DERIVED_CREDENTIAL"))
                {
                    return Err(invalid("", format!("${n} belongs in a profile template")));
                }
                if used.is_empty() && !unlock_token {
                    self.queue_same(command, targets, None, push).await
                } else {
                    let per_device = used.contains("DEVICE_ACCESS_TOKEN") || used.contains("DERIVED_CREDENTIAL_TOKEN");
                    let tokens = used.contains("ACCESS_TOKEN") || per_device;
                    let configs = if tokens && remember == Remember::Yes {
                        app_configs::app_configurations(&command)
                    } else {
                        Vec::new()
                    };
                    let b = self
                        .queue_each(PerDevice::Fill { command, unlock_token }, targets, None, push)
                        .await?;
                    if let Some(access) = self.access.as_ref() {
                        let sent: Vec<String> = b.commands.keys().cloned().collect();
                        for (id, conf) in configs {
                            match id {
                                Some(id) => access.bind_app_config(&id, &conf, &sent, per_device).await?,
                                None => {
                                    for (target, uuid) in &b.commands {
                                        access.await_identifier(uuid, target, &conf, per_device).await?;
                                    }
                                }
                            }
                        }
                    }
                    Ok(b)
                }
            }
        }
    }

    /// Apple's User Enrollment limits: `what` is refused by personal devices, so
    /// naming one among `targets` is an error (nothing is queued).
    async fn refuse_user_enrollments(&self, what: &str, targets: &[String]) -> Result<(), CommandError> {
        let mut personal = Vec::new();
        for t in targets {
            if self.mdm.store.enrollment(t).await?.is_some_and(|e| e.is_user_enrollment()) {
                personal.push(t.clone());
                if personal.len() == 10 {
                    break;
                }
            }
        }
        if personal.is_empty() {
            return Ok(());
        }
        Err(invalid(
            "",
            format!(
                "{what} is not allowed on a User Enrollment (a personal device): {}",
                personal.join(", ")
            ),
        ))
    }

    /// Apple's supervised-only commands, Settings items, payloads and keys
    /// (`what`, from `Schema::supervised_only_command` / `_profile`): naming
    /// a device known not to be supervised among `targets` is an error
    /// (nothing is queued). A device that has not said yet is let through:
    /// it refuses by itself. Only called when there is such a part, so the
    /// common command never reads an enrollment here.
    async fn refuse_unsupervised(&self, what: &str, targets: &[String]) -> Result<(), CommandError> {
        use futures_util::StreamExt as _;
        // Read a few at a time (a fan-out may name 100,000 devices); owned
        // values, so the future stays Send.
        let mut reads = futures_util::stream::iter(targets.to_vec())
            .map(|t| {
                let store = self.mdm.store.clone();
                async move { store.enrollment(&t).await.map(|e| (t, e)) }
            })
            .buffered(32);
        let mut unsupervised = Vec::new();
        while let Some(read) = reads.next().await {
            let (t, e) = read?;
            if e.is_some_and(|e| e.supervised() == Some(false)) {
                unsupervised.push(t);
                if unsupervised.len() == 10 {
                    break;
                }
            }
        }
        if unsupervised.is_empty() {
            return Ok(());
        }
        Err(invalid(
            "",
            format!(
                "{what} is supervised-only (Apple's schema); these devices are not supervised: {}",
                unsupervised.join(", ")
            ),
        ))
    }

    /// A stored template and its parsed dictionary.
    async fn stored_template(&self, identifier: &str) -> Result<(crate::store::ProfileTemplate, Dictionary), CommandError> {
        let t = self
            .mdm
            .store
            .template(identifier)
            .await?
            .ok_or_else(|| CommandError::NotFound(format!("no profile {identifier}")))?;
        let dict = profiles::parse_stored(&t.xml)
            .map_err(|e| CommandError::Service(ServiceError::internal("the stored template does not parse", e)))?;
        Ok((t, dict))
    }

    /// Queue InstallProfile of a stored template.
    pub async fn install_template(&self, identifier: &str, targets: Vec<String>, push: bool) -> Result<Batch, CommandError> {
        let (t, dict) = self.stored_template(identifier).await?;
        self.install(identifier, Some(t.sha256.clone()), dict, targets, push).await
    }

    /// Queue RemoveProfile of a profile identifier.
    pub async fn remove_profile(&self, identifier: &str, targets: Vec<String>, push: bool) -> Result<Batch, CommandError> {
        let mut d = Dictionary::new();
        d.insert("RequestType".into(), "RemoveProfile".into());
        d.insert("Identifier".into(), identifier.into());
        self.queue_same(d, targets, Some(remove_tag(identifier)), push).await
    }

    /// Store a template (validated); with `reinstall`, queue it again to every
    /// enrollment that has it installed or pending when its content changed.
    pub async fn upload(
        &self,
        bytes: &[u8],
        source: &str,
        reinstall: bool,
    ) -> Result<(ProfileTemplate, bool, Option<Batch>), CommandError> {
        let t = Template::parse(bytes).map_err(template_error)?;
        // Organisation CAs the template names must exist.
        for v in &t.variables {
            if let ("SCEP_PROXY_URL" | "SCEP_CHALLENGE", Some(ca)) = vars::split(v) {
                let known = match self.orgcas.as_ref() {
                    Some(c) => c.exists(ca).await.map_err(|e| invalid("", e.to_string()))?,
                    None => false,
                };
                if !known {
                    return Err(invalid(
                        "PayloadContent",
                        format!("${v} names no organisation CA (add it first: mdmd cas add {ca} --scep-url URL --challenge …)"),
                    ));
                }
            }
        }
        let rec = ProfileTemplate {
            identifier: t.identifier.clone(),
            uuid: t.uuid.clone(),
            display_name: t.display_name.clone(),
            payload_types: t.payload_types.clone(),
            variables: t.variables.iter().cloned().collect(),
            xml: t.xml.clone(),
            sha256: t.sha256.clone(),
            warnings: t.warnings.iter().map(|w| w.to_string()).collect(),
            source: source.to_owned(),
            created_at: now(),
            updated_at: now(),
        };
        let old = self.mdm.store.put_template(rec.clone()).await?;
        let changed = old.as_ref().is_none_or(|o| o.sha256 != rec.sha256);
        tracing::info!(profile = %rec.identifier, changed, source, "profile template stored");
        if changed && old.is_some() {
            if let Some(ddm) = self.mdm.ddm() {
                if let Err(e) = ddm.template_changed(&rec.identifier).await {
                    tracing::warn!(profile = %rec.identifier, error = %e, "DDM: could not re-token configurations of this profile");
                }
            }
        }
        let mut batch = None;
        if reinstall && changed && old.is_some() {
            let targets: Vec<String> = self
                .mdm
                .store
                .profile_devices(&rec.identifier)
                .await?
                .into_iter()
                .filter(|d| matches!(d.state, ProfileState::Installed | ProfileState::Pending))
                .map(|d| d.enrollment)
                .collect();
            if !targets.is_empty() {
                batch = Some(self.install_template(&rec.identifier, targets, true).await?);
            }
        }
        Ok((rec, changed, batch))
    }

    /// Load every `*.mobileconfig` in a folder as templates. Invalid files are
    /// logged and skipped. Returns (loaded, skipped).
    pub async fn load_dir(&self, dir: &std::path::Path) -> (usize, usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            tracing::debug!(dir = %dir.display(), "no profiles folder");
            return (0, 0);
        };
        let mut files: Vec<_> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "mobileconfig"))
            .collect();
        files.sort();
        let (mut ok, mut bad) = (0, 0);
        for p in files {
            let source = format!(
                "file:{}",
                p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            );
            let r = match std::fs::read(&p) {
                Ok(bytes) => self.upload(&bytes, &source, false).await.map(drop),
                Err(e) => Err(invalid("", e.to_string())),
            };
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    bad += 1;
                    tracing::error!(file = %p.display(), error = %e, "profile not loaded");
                }
            }
        }
        (ok, bad)
    }

    /// Schema-check an admin's command. Returns the plist command and whether
    /// the UnlockToken is to be filled from escrow.
    /// Also held to `protocol::limits::MAX_DEPTH` as it will be stored; the
    /// admin-JSON fuzz target's entry point.
    pub fn validated(input: CommandInput) -> Result<(Dictionary, bool), CommandError> {
        let schema = Schema::get();
        let (d, fill) = match input {
            CommandInput::Json(mut j) => {
                let fill = j.get("RequestType").and_then(|v| v.as_str()) == Some("ClearPasscode")
                    && j.get("UnlockToken").is_none_or(|v| v.is_null());
                if fill {
                    if let Some(o) = j.as_object_mut() {
                        o.insert("UnlockToken".into(), serde_json::Value::String(String::new()));
                    }
                }
                let d = schema.json_to_command(&j).map_err(|e| invalid(&e.path, e.problem))?;
                (d, fill)
            }
            CommandInput::Plist(mut d) => {
                let fill = d.get("RequestType").and_then(Value::as_string) == Some("ClearPasscode") && !d.contains_key("UnlockToken");
                if fill {
                    d.insert("UnlockToken".into(), Value::Data(Vec::new()));
                }
                let f = schema.check_command_plist(&d);
                // Unknown keys in a command are mistakes, not Apple's future.
                let problems: Vec<Problem> = f.errors.into_iter().chain(f.warnings).collect();
                if !problems.is_empty() {
                    return Err(CommandError::Invalid(problems));
                }
                (d, fill)
            }
        };
        // Stored and sent inside {CommandUUID, Command}: one level more.
        if crate::protocol::limits::dict_depth(&d) + 1 > crate::protocol::limits::MAX_DEPTH {
            let most = crate::protocol::limits::MAX_DEPTH - 1;
            return Err(invalid("", format!("the command nests deeper than {most} arrays and dictionaries")));
        }
        Ok((d, fill))
    }

    async fn queue_same(
        &self,
        command: Dictionary,
        targets: Vec<String>,
        tag: Option<ProfileTag>,
        push: bool,
    ) -> Result<Batch, CommandError> {
        let paths = crate::service::commands::sealed::secret_paths(&command);
        let cmd = Command::new(command).map_err(|e| invalid("RequestType", e.to_string()))?;
        let mut rec = CommandRecord::new(&cmd, now(), tag);
        rec.body = crate::service::commands::sealed::seal(&self.mdm.secrets, &rec.uuid, std::mem::take(&mut rec.body), &paths)
            .map_err(|e| ServiceError::internal("sealing the command's secrets", e))?;
        let out = self.mdm.fan_out(rec, targets, push).await?;
        Ok(Batch {
            // Nothing is stored when no target is known.
            command_uuid: (out.queued > 0).then_some(cmd.uuid),
            queued: out.queued,
            unknown_targets: out.unknown,
            ..Batch::default()
        })
    }

    async fn install(
        &self,
        identifier: &str,
        sha256: Option<String>,
        template: Dictionary,
        targets: Vec<String>,
        push: bool,
    ) -> Result<Batch, CommandError> {
        let payload_ids = payload_ids(&template);
        let schema = crate::protocol::schema::Schema::get();
        if let Some(t) = payload_types(&template)
            .into_iter()
            .find(|t| schema.payload(t).is_some_and(|p| p.ue_forbidden))
        {
            self.refuse_user_enrollments(&format!("a {t} payload"), &targets).await?;
        }
        if let Some(what) = schema.supervised_only_profile(&template) {
            self.refuse_unsupervised(&what, &targets).await?;
        }
        let tag = ProfileTag {
            identifier: identifier.to_owned(),
            action: ProfileAction::Install,
            sha256,
        };
        let needed = derived_usages(&template);
        let mut targets = targets;
        let mut waiting = Vec::new();
        if !needed.is_empty() {
            let derived = self
                .derived
                .as_ref()
                .ok_or_else(|| invalid("", "derived credentials are not set up on this server"))?;
            if !self.cfg.encrypt_profiles {
                return Err(invalid(
                    "",
                    "a profile with a derived credential is only sent encrypted to its device (serve with --encrypt-profiles true)",
                ));
            }
            let mut ready = Vec::with_capacity(targets.len());
            for t in targets {
                let Some(e) = self.mdm.store.enrollment(&t).await? else {
                    ready.push(t);
                    continue;
                };
                let missing = derived.missing(&e, &needed).await.map_err(ServiceError::from)?;
                if missing.is_empty() {
                    ready.push(t);
                    continue;
                }
                let at = now();
                derived
                    .update_waiting(&t, |w| {
                        let since = w.profiles.get(identifier).map_or(at, |p| p.since);
                        w.profiles.insert(
                            identifier.to_owned(),
                            WaitingProfile {
                                usages: missing.clone(),
                                since,
                            },
                        );
                    })
                    .await
                    .map_err(ServiceError::from)?;
                tracing::info!(enrollment = %t, profile = %identifier, missing = ?missing, "profile waits for a derived credential");
                waiting.push(t);
            }
            targets = ready;
        }
        let mut used = std::collections::BTreeSet::new();
        vars::used(&Value::Dictionary(template.clone()), &mut used);
        let shared = used.is_empty() && needed.is_empty() && !self.cfg.encrypt_profiles && targets.len() > 1;
        let job = PerDevice::Profile {
            template,
            identifier: identifier.to_owned(),
            payload_ids,
        };
        if shared {
            let again = job.clone();
            if let Some(b) = self.queue_shared_profile(again, targets.clone(), tag.clone(), push).await? {
                return Ok(b);
            }
        }
        let mut b = if targets.is_empty() {
            Batch::default()
        } else {
            self.queue_each(job, targets, Some(tag), push).await?
        };
        if let (false, Some(derived)) = (needed.is_empty(), self.derived.as_ref()) {
            for t in b.commands.keys() {
                derived
                    .update_waiting(t, |w| {
                        w.profiles.remove(identifier);
                    })
                    .await
                    .map_err(ServiceError::from)?;
            }
        }
        b.waiting = waiting;
        Ok(b)
    }
}

/// The derived-credential usages a template's PKCS#12 payloads stand for.
/// The PayloadIdentifier of each payload, in order ("" where missing): a
/// `$SCEP_CHALLENGE` is bound to its payload by index.
/// The payload types of a profile's payloads.
fn payload_types(template: &Dictionary) -> Vec<String> {
    match template.get("PayloadContent") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|p| p.as_dictionary().and_then(|d| d.get("PayloadType")).and_then(Value::as_string))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn payload_ids(template: &Dictionary) -> Vec<String> {
    match template.get("PayloadContent") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_dictionary()
                    .and_then(|d| d.get("PayloadIdentifier"))
                    .and_then(Value::as_string)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub fn derived_usages(template: &Dictionary) -> Vec<String> {
    let mut out: Vec<String> = template
        .get("PayloadContent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_dictionary)
        .filter_map(|d| {
            let ty = d.get("PayloadType").and_then(Value::as_string)?;
            profiles::validate::derived_usage(ty, d).map(str::to_owned)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn remove_tag(identifier: &str) -> ProfileTag {
    ProfileTag {
        identifier: identifier.to_owned(),
        action: ProfileAction::Remove,
        sha256: None,
    }
}

fn template_error(e: TemplateError) -> CommandError {
    match e {
        TemplateError::NotAProfile(m) => invalid("", m),
        TemplateError::Invalid(f) => CommandError::Invalid(f.errors),
    }
}

#[async_trait::async_trait]
impl crate::service::IdentityHook for Commander {
    async fn command_finished(&self, enrollment: &str, request_type: &str, raw: &[u8]) {
        if request_type == "InstallApplication" {
            self.app_identified(enrollment, raw).await;
            return;
        }
        if matches!(request_type, "InstallProfile" | "RemoveProfile") {
            // Required profiles: compliance follows the result in the same step.
            if let Err(e) = self.mdm.evaluate_compliance(enrollment).await {
                tracing::warn!(%enrollment, error = %e, "compliance not re-evaluated after a profile result");
            }
        }
        self.follow_up(enrollment, request_type, raw).await;
    }

    /// Profile installs still pending on the device were encrypted to its old
    /// identity: build them again for the new one (the new commands supersede
    /// the old). Profiles sent as raw commands, not templates, cannot be
    /// rebuilt; the device will refuse them and they show as failed.
    async fn identity_changed(&self, enrollment: &str) {
        if !self.cfg.encrypt_profiles {
            return;
        }
        let pending = match self.mdm.store.device_profiles(enrollment).await {
            Ok(list) => list.into_iter().filter(|d| d.state == ProfileState::Pending),
            Err(e) => {
                tracing::warn!(%enrollment, error = %e, "cannot re-encrypt pending profiles");
                return;
            }
        };
        for d in pending {
            match self.mdm.store.template(&d.identifier).await {
                Ok(Some(_)) => match self.install_template(&d.identifier, vec![enrollment.to_owned()], false).await {
                    Ok(b) if b.queued == 1 => {
                        tracing::info!(%enrollment, profile = %d.identifier, "pending profile re-encrypted to the renewed identity")
                    }
                    Ok(b) => tracing::warn!(%enrollment, profile = %d.identifier, failed = ?b.failed, "pending profile not rebuilt"),
                    Err(e) => tracing::warn!(%enrollment, profile = %d.identifier, error = %e, "pending profile not rebuilt"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%enrollment, error = %e, "cannot re-encrypt pending profiles"),
            }
        }
    }
}
