//! Derived credentials (NIST SP 800-157): PKCS#12 identities derived from a
//! person's PIV card by the organisation's provider (Entrust, Intercede,
//! DISA Purebred), posted to mdmd by the provider's app or an `issuer`
//! account, and delivered inside profiles that wait for them.
//!
//! A credential belongs to a device or to a user (then to every device of
//! that user) and has one usage: authentication, signing or encryption. A
//! newer credential of the same owner and usage replaces the older. The
//! PKCS#12 and its password are sealed at rest with the secrets keyring and
//! leave mdmd only inside a profile encrypted to the device.
//!
//! Profiles that need a credential the device does not have yet wait
//! (`WAITING`, one record per enrollment) and are sent when it arrives; the
//! glue with profile installs lives in `commands`.
//!
//! A credential whose certificate has expired is no longer delivered (it
//! counts as missing at once); the periodic check (`checks`) ends it, as it
//! ends one its CRL or OCSP responder says is revoked (`revocation`), and
//! the provider can revoke one (`ended`): an ended credential leaves an
//! audit record (`ENDED`) and its profiles leave the devices.

use std::collections::BTreeMap;
use std::sync::Arc;

use openssl::pkcs12::Pkcs12;
use serde::{Deserialize, Serialize};

use super::revocation::{Checker, RevocationCheck};
use crate::clock::now;
use crate::pki::revocation::Sources;
use crate::pki::secrets::SecretBox;
use crate::service::ServiceError;
use crate::store::{Enrollment, LookupKey, SecretKind, Store, StoreError};

pub const CREDENTIALS: &str = "derived-credentials";
pub const WAITING: &str = "derived-waiting";

/// How long `$DERIVED_CREDENTIAL_TOKEN` stays valid by default (seconds).
pub const DEFAULT_UPLOAD_TTL: i64 = 86_400;
/// Flag credentials this close to expiry (seconds).
pub const EXPIRY_WARNING: i64 = 30 * 86_400;
/// Upload tokens start with this, so they are told apart from API keys.
pub const TOKEN_PREFIX: &str = "dct_";

#[derive(Debug, thiserror::Error)]
pub enum DerivedError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Our own failure (sealing, a stored value that does not open): never
    /// the caller's fault; the cause is kept for the log.
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: crate::service::BoxError,
    },
}

impl DerivedError {
    pub(super) fn internal(what: &'static str, source: impl Into<crate::service::BoxError>) -> Self {
        DerivedError::Internal {
            what,
            source: source.into(),
        }
    }
}

impl From<DerivedError> for ServiceError {
    fn from(e: DerivedError) -> Self {
        match e {
            DerivedError::Store(s) => s.into(),
            DerivedError::Forbidden(m) => ServiceError::Forbidden(m),
            DerivedError::Internal { what, source } => ServiceError::Internal { what, source },
            other => ServiceError::Rejected(other.to_string()),
        }
    }
}

/// Who a credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Owner {
    Device(String),
    User(String),
}

impl Owner {
    fn key(&self, usage: &str) -> String {
        match self {
            Owner::Device(d) => format!("device:{d}:{usage}"),
            Owner::User(u) => format!("user:{u}:{usage}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) id: String,
    pub(super) owner: Owner,
    pub(super) usage: String,
    pub(super) subject: String,
    pub(super) issuer: String,
    pub(super) serial: String,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    /// Sealed base64 PKCS#12 and sealed password.
    pkcs12: String,
    password: String,
    pub(super) source: String,
    pub(super) created_at: i64,
    /// The certificate and the chain that came with it (base64 DER, public),
    /// for revocation checks; empty in records from before them (then the
    /// PKCS#12 is opened).
    #[serde(default)]
    pub(super) cert: String,
    #[serde(default)]
    pub(super) chain: Vec<String>,
    #[serde(default)]
    pub(super) sources: Sources,
    #[serde(default)]
    pub(super) revocation: Option<RevocationCheck>,
}

/// What the API shows of a credential (never the key or password).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub owner: Owner,
    pub usage: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[schema(value_type = String, format = DateTime)]
    pub not_before: i64,
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
    pub source: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Within 30 days of expiry (or expired).
    pub expiring: bool,
    /// The OCSP responders and CRLs its certificate names.
    pub revocation_sources: Sources,
    /// The last revocation check (none yet, or nothing to check with).
    pub revocation_check: Option<RevocationCheck>,
}

pub(super) fn view(s: &Stored) -> CredentialView {
    CredentialView {
        id: s.id.clone(),
        owner: s.owner.clone(),
        usage: s.usage.clone(),
        subject: s.subject.clone(),
        issuer: s.issuer.clone(),
        serial: s.serial.clone(),
        not_before: s.not_before,
        not_after: s.not_after,
        source: s.source.clone(),
        created_at: s.created_at,
        expiring: s.not_after - now() < EXPIRY_WARNING,
        revocation_sources: s.sources.clone(),
        revocation_check: s.revocation.clone(),
    }
}

/// A credential ready to go into a profile.
#[derive(Clone)]
pub struct Delivery {
    pub pkcs12: Vec<u8>,
    pub password: String,
}

/// Profiles an enrollment waits with: identifier -> (usages, since).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Waiting {
    pub profiles: BTreeMap<String, WaitingProfile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitingProfile {
    pub usages: Vec<String>,
    pub since: i64,
}

pub struct Derived {
    pub(super) store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    pub upload_ttl: i64,
    checker: Option<Checker>,
}

/// Check a PKCS#12: it opens with the password, has a key and a certificate
/// that belong together, and the certificate is in date.
fn check_pkcs12(der: &[u8], password: &str) -> Result<(openssl::x509::X509, Vec<openssl::x509::X509>), DerivedError> {
    crate::pki::ossl::load_providers();
    let p12 = Pkcs12::from_der(der).map_err(|_| DerivedError::Invalid("pkcs12: not a PKCS#12 file".into()))?;
    let parsed = p12
        .parse2(password)
        .map_err(|_| DerivedError::Invalid("pkcs12: the password does not open it".into()))?;
    let key = parsed
        .pkey
        .ok_or_else(|| DerivedError::Invalid("pkcs12: it holds no private key".into()))?;
    let cert = parsed
        .cert
        .ok_or_else(|| DerivedError::Invalid("pkcs12: it holds no certificate for its private key (the key does not match)".into()))?;
    let matches = cert.public_key().map(|p| p.public_eq(&key)).unwrap_or(false);
    if !matches {
        return Err(DerivedError::Invalid(
            "pkcs12: the private key does not belong to the certificate".into(),
        ));
    }
    let t = now();
    if crate::pki::asn1_unix(cert.not_after()) <= t {
        return Err(DerivedError::Invalid("pkcs12: the certificate has expired".into()));
    }
    if crate::pki::asn1_unix(cert.not_before()) > t + 300 {
        return Err(DerivedError::Invalid("pkcs12: the certificate is not valid yet".into()));
    }
    let chain = parsed.ca.map(|s| s.into_iter().collect()).unwrap_or_default();
    Ok((cert, chain))
}

impl Derived {
    pub fn new(store: Arc<dyn Store>, secrets: Arc<SecretBox>, upload_ttl: i64) -> Derived {
        Derived {
            store,
            secrets,
            upload_ttl,
            checker: None,
        }
    }

    /// Check revocation (CRL, OCSP) in the periodic check.
    pub fn with_revocation(mut self, checker: Checker) -> Derived {
        self.checker = Some(checker);
        self
    }

    pub fn checker(&self) -> Option<&Checker> {
        self.checker.as_ref()
    }

    fn aad(key: &str, field: &str) -> String {
        crate::pki::secrets::aad(&format!("derived:{key}"), field)
    }

    /// Store a credential (replacing the owner's credential of that usage).
    /// Returns the new credential and the one it replaced.
    pub async fn post(
        &self,
        owner: Owner,
        usage: &str,
        pkcs12: &[u8],
        password: &str,
        source: &str,
    ) -> Result<(CredentialView, Option<CredentialView>), DerivedError> {
        if !crate::profiles::vars::DERIVED_USAGES.contains(&usage) {
            return Err(DerivedError::Invalid(format!(
                "usage: one of {}",
                crate::profiles::vars::DERIVED_USAGES.join(", ")
            )));
        }
        match &owner {
            Owner::Device(d) => {
                if self.store.enrollment(d).await?.is_none() {
                    return Err(DerivedError::NotFound(format!("no enrollment {d}")));
                }
            }
            Owner::User(u) => {
                if u.is_empty() || u.len() > 256 {
                    return Err(DerivedError::Invalid("user: 1 to 256 characters".into()));
                }
            }
        }
        let (cert, chain) = check_pkcs12(pkcs12, password)?;
        let v = crate::service::credentials::orgca::describe_cert(&cert);
        if let Some(r) = self.revoked(&v.issuer, &v.serial).await? {
            return Err(DerivedError::Invalid(format!(
                "pkcs12: this certificate was revoked ({}, {}): post a new one",
                r.by,
                r.reason.as_deref().unwrap_or("no reason given")
            )));
        }
        let der = |c: &openssl::x509::X509| {
            c.to_der()
                .map(|d| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d))
                .map_err(|e| DerivedError::internal("encoding a certificate", e))
        };
        let key = owner.key(usage);
        let old = self.store.record(CREDENTIALS, &key).await?;
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pkcs12);
        let seal = |v: &[u8], f: &str| {
            self.secrets
                .seal(v, &Self::aad(&key, f))
                .map_err(|e| DerivedError::internal("sealing a derived credential", e))
        };
        let rec = Stored {
            id: format!("dc_{}", uuid::Uuid::new_v4().simple()),
            owner,
            usage: usage.to_owned(),
            subject: v.subject,
            issuer: v.issuer,
            serial: v.serial,
            not_before: v.not_before,
            not_after: v.not_after,
            pkcs12: seal(b64.as_bytes(), "pkcs12")?,
            password: seal(password.as_bytes(), "password")?,
            source: source.to_owned(),
            created_at: now(),
            cert: der(&cert)?,
            chain: chain.iter().map(der).collect::<Result<_, _>>()?,
            sources: crate::pki::revocation::sources(&cert),
            revocation: None,
        };
        let value = serde_json::to_value(&rec).map_err(StoreError::from)?;
        self.store.put_record(CREDENTIALS, &key, value, now(), None).await?;
        let old = old.and_then(|r| serde_json::from_value::<Stored>(r.value).ok()).map(|s| view(&s));
        tracing::info!(id = %rec.id, usage, source, subject = %rec.subject, replaced = old.is_some(), "derived credential stored");
        Ok((view(&rec), old))
    }

    /// Reseal stored credentials under the current key (after `secrets rotate`).
    pub async fn reseal(&self) -> Result<u64, DerivedError> {
        let mut n = 0;
        for (key, r) in self.store.records(CREDENTIALS).await? {
            let mut s: Stored = serde_json::from_value(r.value).map_err(StoreError::from)?;
            if !self.secrets.needs_reseal(&s.pkcs12) && !self.secrets.needs_reseal(&s.password) {
                continue;
            }
            for (field, slot) in [("pkcs12", &mut s.pkcs12), ("password", &mut s.password)] {
                let plain = self
                    .secrets
                    .open(slot, &Self::aad(&key, field))
                    .map_err(|e| DerivedError::internal("opening a stored derived credential", format!("credential {key}: {e}")))?;
                *slot = self
                    .secrets
                    .seal(&plain, &Self::aad(&key, field))
                    .map_err(|e| DerivedError::internal("sealing a derived credential", e))?;
            }
            let value = serde_json::to_value(&s).map_err(StoreError::from)?;
            if self
                .store
                .put_record(CREDENTIALS, &key, value, now(), Some(r.version))
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The user a device's user credentials come from.
    pub fn user_of(e: &Enrollment) -> Option<String> {
        e.username()
    }

    async fn stored_for(&self, e: &Enrollment, usage: &str) -> Result<Option<(String, Stored)>, DerivedError> {
        let mut keys = vec![Owner::Device(e.device.clone()).key(usage)];
        if let Some(u) = Self::user_of(e) {
            keys.push(Owner::User(u).key(usage));
        }
        let t = now();
        for k in keys {
            if let Some(r) = self.store.record(CREDENTIALS, &k).await? {
                let s: Stored = serde_json::from_value(r.value).map_err(StoreError::from)?;
                // An expired certificate is not delivered: the periodic check ends it.
                if s.not_after <= t {
                    continue;
                }
                return Ok(Some((k, s)));
            }
        }
        Ok(None)
    }

    /// The credential of a usage for an enrollment (the device's own, else
    /// its user's), opened for delivery.
    pub async fn for_enrollment(&self, e: &Enrollment, usage: &str) -> Result<Option<Delivery>, DerivedError> {
        let Some((key, s)) = self.stored_for(e, usage).await? else {
            return Ok(None);
        };
        self.open(&key, &s).map(Some)
    }

    /// A stored credential's PKCS#12 and password.
    pub(super) fn open(&self, key: &str, s: &Stored) -> Result<Delivery, DerivedError> {
        let open = |v: &str, f: &str| {
            self.secrets
                .open(v, &Self::aad(key, f))
                .map_err(|err| DerivedError::internal("opening a stored derived credential", format!("credential {}: {err}", s.id)))
        };
        let b64 = open(&s.pkcs12, "pkcs12")?;
        let pkcs12 = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
            .map_err(|e| DerivedError::internal("reading a stored derived credential", format!("credential {}: {e}", s.id)))?;
        let password = String::from_utf8(open(&s.password, "password")?)
            .map_err(|e| DerivedError::internal("reading a stored derived credential", format!("credential {}: {e}", s.id)))?;
        Ok(Delivery { pkcs12, password })
    }

    /// The credentials that apply to an enrollment (one per usage).
    pub async fn list_for(&self, e: &Enrollment) -> Result<Vec<CredentialView>, DerivedError> {
        let mut out = Vec::new();
        for u in crate::profiles::vars::DERIVED_USAGES {
            if let Some((_, s)) = self.stored_for(e, u).await? {
                out.push(view(&s));
            }
        }
        Ok(out)
    }

    pub async fn list(&self) -> Result<Vec<CredentialView>, DerivedError> {
        let mut out = Vec::new();
        for (_, r) in self.store.records(CREDENTIALS).await? {
            let s: Stored = serde_json::from_value(r.value).map_err(StoreError::from)?;
            out.push(view(&s));
        }
        Ok(out)
    }

    /// Delete a credential by id. Returns what it was.
    pub async fn delete(&self, id: &str) -> Result<CredentialView, DerivedError> {
        for (key, r) in self.store.records(CREDENTIALS).await? {
            let s: Stored = serde_json::from_value(r.value).map_err(StoreError::from)?;
            if s.id == id {
                self.store.delete_record(CREDENTIALS, &key, Some(r.version)).await?;
                tracing::info!(id, usage = %s.usage, "derived credential deleted");
                return Ok(view(&s));
            }
        }
        Err(DerivedError::NotFound(format!("no derived credential {id}")))
    }

    /// The device channels an owner's credential applies to.
    pub async fn enrollments_of(&self, owner: &Owner) -> Result<Vec<String>, DerivedError> {
        Ok(match owner {
            Owner::Device(d) => vec![d.clone()],
            Owner::User(u) => self.store.find(LookupKey::User, u).await?,
        })
    }

    /// Which usages of `needed` the enrollment has no credential for.
    pub async fn missing(&self, e: &Enrollment, needed: &[String]) -> Result<Vec<String>, DerivedError> {
        let mut out = Vec::new();
        for u in needed {
            if self.stored_for(e, u).await?.is_none() {
                out.push(u.clone());
            }
        }
        Ok(out)
    }

    pub async fn waiting(&self, enrollment: &str) -> Result<Waiting, DerivedError> {
        Ok(match self.store.record(WAITING, enrollment).await? {
            Some(r) => serde_json::from_value(r.value).map_err(StoreError::from)?,
            None => Waiting::default(),
        })
    }

    /// Change an enrollment's waiting profiles (compare-and-set, retried).
    pub async fn update_waiting(&self, enrollment: &str, f: impl Fn(&mut Waiting)) -> Result<(), DerivedError> {
        for _ in 0..8 {
            let cur = self.store.record(WAITING, enrollment).await?;
            let (mut w, version) = match cur {
                Some(r) => (serde_json::from_value::<Waiting>(r.value).map_err(StoreError::from)?, r.version),
                None => (Waiting::default(), 0),
            };
            let before = w.profiles.clone();
            f(&mut w);
            if w.profiles == before {
                return Ok(());
            }
            let done = if w.profiles.is_empty() {
                version == 0 || self.store.delete_record(WAITING, enrollment, Some(version)).await?
            } else {
                let value = serde_json::to_value(&w).map_err(StoreError::from)?;
                self.store
                    .put_record(WAITING, enrollment, value, now(), Some(version))
                    .await?
                    .is_some()
            };
            if done {
                return Ok(());
            }
        }
        Err(DerivedError::Store(StoreError::Db(
            "waiting profiles: too many concurrent changes".into(),
        )))
    }

    /// Check an upload token: the enrollment it is for.
    pub async fn check_token(&self, token: &str) -> Result<String, DerivedError> {
        let hash = crate::pki::sha256_hex(token);
        let s = self
            .store
            .secret(SecretKind::DerivedUpload, &hash)
            .await?
            .ok_or_else(|| DerivedError::Forbidden("unknown derived-credential token".into()))?;
        if s.expires_at <= now() {
            return Err(DerivedError::Forbidden("the derived-credential token has expired".into()));
        }
        s.enrollment
            .ok_or_else(|| DerivedError::Forbidden("the derived-credential token names no device".into()))
    }

    /// Credentials within 30 days of expiry (for warnings).
    pub async fn expiring(&self) -> Result<Vec<CredentialView>, DerivedError> {
        Ok(self.list().await?.into_iter().filter(|c| c.expiring).collect())
    }
}
