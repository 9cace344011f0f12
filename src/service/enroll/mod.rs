//! Enrollment, from the first download to the renewed identity: Apple's
//! over-the-air profile service (`ota`), who a certificate may speak for
//! (`identity`), which networks may enroll (`netpolicy`), and (here) the
//! signed enrollment profile, SCEP issuance policy, invitations and identity
//! renewal. The SCEP wire format and its bounds are `pki::scep`.
//!
//! Enrollment: the signed enrollment profile, SCEP issuance policy
//! (challenges, subjects, validity), invitations, and identity renewal.
//!
//! The whole path: `GET /mdm/enroll` (basic auth or a single-use
//! invitation) → the profile service's phases (`ota`; `--enroll-flow single`
//! skips phases 1 and 3) → `/scep` issues the MDM identity and records the
//! UDID it is bound to (and whether it was attested: "vouched") before the
//! CertRep leaves → `Authenticate` (`checkin`, deciding by
//! `identity::admission`) binds the certificate hash to the enrollment →
//! `TokenUpdate` makes it pushable. A leased background sweep re-sends the
//! enrollment profile (encrypted to the device, with a challenge bound to
//! it) to devices whose identity expires within `--renew-before-days`; the
//! following `Authenticate` with the identity renewed from the current one
//! is a renewal (queue and history kept; pending profile installs are
//! rebuilt for the new identity).

pub mod account;
pub mod identity;
pub mod netpolicy;
pub mod ota;

use std::sync::Arc;

use base64::Engine as _;
use openssl::x509::X509;
use plist::{Dictionary, Value};
use sha2::Digest as _;
use subtle::ConstantTimeEq;

use crate::clock::now;
use crate::pki::scep::{self, FailInfo, MessageType};
use crate::pki::sha256_hex;
use crate::pki::{cms, Identity, Pki, PkiError};
use crate::service::{Mdm, ServiceError};
use crate::store::{Consumed, EnrollUser, IssuedCert, OneTimeSecret, SecretKind, Store};

#[derive(Clone)]
pub struct EnrollConfig {
    pub public_url: String,
    pub organization: String,
    /// Validity of issued device identities, in days.
    pub identity_days: u32,
    /// Lifetime of a dynamic SCEP challenge in a downloaded profile, in seconds.
    pub challenge_ttl: i64,
    /// A static challenge accepted in addition to dynamic ones (optional).
    pub static_challenge: Option<String>,
    /// Re-send the enrollment profile this many days before the identity expires.
    pub renew_before_days: i64,
    /// Largest RSA key a SCEP request may have certified (`--scep-max-key-bits`).
    pub max_key_bits: usize,
    /// What `GET /mdm/enroll` serves: Apple's three-phase profile service, or the single profile.
    pub three_phase: bool,
    /// Apple's device CA certificates: phase-1 signers must chain to them.
    pub device_attestation_ca: Option<std::sync::Arc<openssl::x509::store::X509Store>>,
}

pub struct Enroller {
    pub pki: Arc<Pki>,
    pub(crate) store: Arc<dyn Store>,
    pub cfg: EnrollConfig,
    topic: Arc<crate::service::Topic>,
    /// `mdmd.CertificateIssued` events (when receivers are configured).
    webhooks: Option<Arc<crate::ops::webhooks::Webhooks>>,
    /// The TLS configuration served (none behind a proxy).
    tls: Option<Arc<crate::pki::tls::LiveTls>>,
}

/// A stable UUID derived from a name (so payload UUIDs survive restarts).
fn stable_uuid(name: &str) -> String {
    let h = sha2::Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string().to_uppercase()
}

/// What a single-use secret carries besides its purpose (see `OneTimeSecret`).
#[derive(Debug, Clone, Default)]
pub struct SecretFor {
    /// The device it was made for.
    pub enrollment: Option<String>,
    /// It reaches only that device.
    pub vouched: bool,
    /// The identity (SHA-256) a renewal challenge renews.
    pub renews: Option<String>,
    /// Who signed in for it.
    pub user: Option<EnrollUser>,
    /// The ADE enrollment it is for.
    pub ade: Option<crate::store::AdeOrigin>,
}

impl SecretFor {
    /// For no device in particular, carrying who signed in.
    pub fn user(user: Option<EnrollUser>) -> SecretFor {
        SecretFor {
            user,
            ..SecretFor::default()
        }
    }
}

fn payload(kind: &str, identifier: &str, uuid: &str, name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), kind.into());
    d.insert("PayloadVersion".into(), 1.into());
    d.insert("PayloadIdentifier".into(), identifier.into());
    d.insert("PayloadUUID".into(), uuid.into());
    d.insert("PayloadDisplayName".into(), name.into());
    d
}

/// The outcome of a SCEP PKIOperation.
pub enum ScepReply {
    /// A CertRep (SUCCESS or FAILURE) to answer with HTTP 200.
    CertRep(Vec<u8>),
    /// Not even a CertRep can be built: HTTP 400.
    Unparsable(String),
}

fn consumed_reason(c: &Consumed) -> &'static str {
    match c {
        Consumed::Ok(_) => "ok",
        Consumed::Unknown => "wrong challenge password",
        Consumed::AlreadyUsed => "challenge password already used",
        Consumed::Expired => "challenge password expired",
    }
}

impl Enroller {
    /// Whether devices need our root to trust the server: yes when the TLS
    /// certificate served is one our CA issued (or unknown, behind a
    /// TLS-terminating proxy); no with a publicly trusted one (ACME, or the
    /// admin's), and the enrollment profile then installs no root at all.
    pub fn tls_needs_our_root(&self) -> bool {
        let Some(tls) = self.tls.as_ref() else {
            return true;
        };
        match tls.certificate() {
            Some(c) => {
                let ours = c.verify(&self.pki.ca.key).unwrap_or(false);
                // A failed verification leaves entries on the thread's error queue.
                let _ = openssl::error::ErrorStack::get();
                ours
            }
            None => true,
        }
    }

    pub fn new(pki: Arc<Pki>, store: Arc<dyn Store>, cfg: EnrollConfig, topic: Arc<crate::service::Topic>) -> Self {
        Enroller {
            pki,
            store,
            cfg,
            topic,
            webhooks: None,
            tls: None,
        }
    }

    /// Send `mdmd.CertificateIssued` events to these webhooks (if any receiver is configured).
    pub fn with_webhooks(mut self, w: Arc<crate::ops::webhooks::Webhooks>) -> Self {
        self.webhooks = Some(w).filter(|w| w.enabled());
        self
    }

    /// The TLS configuration served (none behind a TLS-terminating proxy).
    pub fn with_tls(mut self, tls: Option<Arc<crate::pki::tls::LiveTls>>) -> Self {
        self.tls = tls;
        self
    }

    fn host(&self) -> String {
        self.cfg
            .public_url
            .split("://")
            .nth(1)
            .unwrap_or("mdmd")
            .split(['/', ':'])
            .next()
            .unwrap_or("mdmd")
            .to_owned()
    }

    pub fn profile_identifier(&self) -> String {
        format!("mdmd.{}.enrollment", self.host())
    }

    /// Create a single-use secret of `kind`, valid for `ttl` seconds.
    pub async fn new_secret(&self, kind: SecretKind, purpose: &str, ttl: i64) -> Result<(String, i64), ServiceError> {
        self.new_secret_with(kind, purpose, ttl, SecretFor::default()).await
    }

    /// A single-use secret for one device (`vouched`: it reaches only that device).
    pub async fn new_secret_for(
        &self,
        kind: SecretKind,
        purpose: &str,
        ttl: i64,
        enrollment: Option<String>,
        vouched: bool,
    ) -> Result<(String, i64), ServiceError> {
        self.new_secret_with(
            kind,
            purpose,
            ttl,
            SecretFor {
                enrollment,
                vouched,
                ..SecretFor::default()
            },
        )
        .await
    }

    /// A single-use secret with everything it carries (`SecretFor`).
    pub async fn new_secret_with(&self, kind: SecretKind, purpose: &str, ttl: i64, f: SecretFor) -> Result<(String, i64), ServiceError> {
        let token = crate::pki::random_token(20);
        let t = now();
        let rec = OneTimeSecret {
            created_at: t,
            expires_at: t + ttl,
            purpose: purpose.to_owned(),
            used_at: None,
            enrollment: f.enrollment,
            vouched: f.vouched,
            renews: f.renews,
            user: f.user,
            ade: f.ade,
        };
        self.store.add_secret(kind, &sha256_hex(&token), rec).await?;
        Ok((token, t + ttl))
    }

    /// The enrollment profile (unsigned plist) with a given challenge.
    pub fn profile_plist(&self, challenge: &str, scep_uuid: &str) -> Result<Vec<u8>, PkiError> {
        let id = self.profile_identifier();
        let topic = self.topic.get();
        let org = self.cfg.organization.clone();
        let url = &self.cfg.public_url;
        let mut root = payload(
            "com.apple.security.root",
            &format!("{id}.ca"),
            &stable_uuid(&format!("{id}.ca.{topic}")),
            &format!("{org} CA"),
        );
        root.insert("PayloadContent".into(), Value::Data(self.pki.ca.cert.to_der()?));
        root.insert("PayloadCertificateFileName".into(), "ca.cer".into());

        let mut scep = payload("com.apple.security.scep", &format!("{id}.scep"), scep_uuid, "Device identity");
        let mut sc = Dictionary::new();
        sc.insert("URL".into(), format!("{url}/scep").into());
        sc.insert("Challenge".into(), challenge.into());
        sc.insert("Keysize".into(), 2048.into());
        sc.insert("Key Type".into(), "RSA".into());
        sc.insert("Key Usage".into(), 5.into());
        let rdn = |k: &str, v: &str| Value::Array(vec![Value::Array(vec![k.into(), v.into()])]);
        sc.insert(
            "Subject".into(),
            // Within the SCEP subject policy (`pki::scep::policy`: 64 characters an attribute).
            Value::Array(vec![
                rdn("O", &org.chars().take(crate::pki::scep::policy::MAX_ATTR_CHARS).collect::<String>()),
                rdn("CN", &format!("mdmd device {}", uuid::Uuid::new_v4())),
            ]),
        );
        scep.insert("PayloadContent".into(), Value::Dictionary(sc));

        let mut mdm = payload(
            "com.apple.mdm",
            &format!("{id}.mdm"),
            &stable_uuid(&format!("{id}.mdm.{topic}")),
            "Device management",
        );
        mdm.insert("ServerURL".into(), format!("{url}/mdm/connect").into());
        mdm.insert("CheckInURL".into(), format!("{url}/mdm/checkin").into());
        mdm.insert("Topic".into(), topic.into());
        mdm.insert("IdentityCertificateUUID".into(), scep_uuid.into());
        mdm.insert("AccessRights".into(), 8191.into());
        mdm.insert("SignMessage".into(), true.into());
        mdm.insert("CheckOutWhenRemoved".into(), true.into());
        mdm.insert(
            "ServerCapabilities".into(),
            Value::Array(vec![
                "com.apple.mdm.per-user-connections".into(),
                "com.apple.mdm.bootstraptoken".into(),
            ]),
        );

        let mut top = Dictionary::new();
        top.insert("PayloadType".into(), "Configuration".into());
        top.insert("PayloadVersion".into(), 1.into());
        top.insert("PayloadIdentifier".into(), id.clone().into());
        top.insert("PayloadUUID".into(), uuid::Uuid::new_v4().to_string().to_uppercase().into());
        top.insert("PayloadDisplayName".into(), format!("{org} device management").into());
        top.insert("PayloadOrganization".into(), org.clone().into());
        top.insert(
            "PayloadDescription".into(),
            "Installs the certificates and settings that let your organisation manage this device.".into(),
        );
        top.insert("TargetDeviceType".into(), 1.into());
        top.insert(
            "PayloadContent".into(),
            Value::Array(if self.tls_needs_our_root() {
                vec![Value::Dictionary(root), Value::Dictionary(scep), Value::Dictionary(mdm)]
            } else {
                vec![Value::Dictionary(scep), Value::Dictionary(mdm)]
            }),
        );
        Ok(crate::protocol::to_xml(&top))
    }

    /// A signed enrollment profile with a fresh single-use challenge (for `user`, who signed in for it).
    pub async fn signed_profile(&self, purpose: &str, ttl: i64, user: Option<EnrollUser>) -> Result<Vec<u8>, ServiceError> {
        let (challenge, _) = self
            .new_secret_with(SecretKind::Challenge, purpose, ttl, SecretFor::user(user))
            .await?;
        let plist = self
            .profile_plist(&challenge, &uuid::Uuid::new_v4().to_string().to_uppercase())
            .map_err(|e| ServiceError::internal("building the enrollment profile", e))?;
        cms::sign_profile(&self.pki, &plist).map_err(|e| ServiceError::internal("signing the enrollment profile", e))
    }

    /// The enrollment profile for an identity renewal, its payloads encrypted
    /// to the device's current identity (it holds a fresh SCEP challenge).
    async fn renewal_profile(&self, e: &crate::store::Enrollment) -> Result<Vec<u8>, ServiceError> {
        let current = match &e.cert_hash {
            Some(h) => self.store.cert_by_hash(h).await?.map(|c| (h.clone(), c)),
            None => None,
        };
        let Some((hash, current)) = current.filter(|(_, c)| crate::service::enroll::identity::is_mdm(c.purpose.as_deref())) else {
            return Err(ServiceError::Rejected("no identity certificate on record to encrypt to".into()));
        };
        let cert = current
            .der
            .as_deref()
            .and_then(|d| X509::from_der(d).ok())
            .ok_or_else(|| ServiceError::Rejected("no identity certificate on record to encrypt to".into()))?;
        // The challenge reaches only the holder of the current identity (encrypted to
        // it): what it yields renews that identity, vouched as much as it is.
        let (challenge, _) = self
            .new_secret_with(
                SecretKind::Challenge,
                &format!("renewal:{}", e.id),
                30 * 86_400,
                SecretFor {
                    enrollment: Some(e.id.clone()),
                    vouched: current.vouched,
                    renews: Some(hash),
                    user: None,
                    ade: None,
                },
            )
            .await?;
        let xml = self
            .profile_plist(&challenge, &uuid::Uuid::new_v4().to_string().to_uppercase())
            .map_err(|e| ServiceError::internal("building the renewal profile", e))?;
        let mut top = crate::profiles::parse_stored(&xml).map_err(|e| ServiceError::internal("reading the renewal profile", e))?;
        if let Some(u) = e.user.as_ref() {
            // The same EnrollmentMode and Managed Apple Account as the profile installed.
            let mode = match u.enrollment_mode.as_deref() {
                Some("BYOD") => Some(account::Mode::Byod),
                Some("ADDE") => Some(account::Mode::Adde),
                _ => None,
            };
            if let (Some(mode), Some(managed)) = (mode, u.managed_apple_id.as_deref()) {
                account::mark_account_driven(&mut top, mode, managed);
            }
        }
        crate::profiles::encrypt_payloads(&mut top, &cert).map_err(|e| ServiceError::internal("encrypting the renewal profile", e))?;
        cms::sign_profile(&self.pki, &crate::protocol::to_xml(&top)).map_err(|e| ServiceError::internal("signing the renewal profile", e))
    }

    /// Use an invitation token once: the person it was issued to, if any.
    pub async fn use_invitation(&self, token: &str) -> Result<Result<Option<EnrollUser>, &'static str>, ServiceError> {
        Ok(
            match self.store.consume_secret(SecretKind::Invitation, &sha256_hex(token), now()).await? {
                Consumed::Ok(s) => Ok(s.user),
                Consumed::Unknown => Err("unknown invitation"),
                Consumed::AlreadyUsed => Err("this invitation has already been used"),
                Consumed::Expired => Err("this invitation has expired"),
            },
        )
    }

    /// Handle a PKIOperation message.
    pub async fn pki_operation(&self, der: &[u8]) -> Result<ScepReply, ServiceError> {
        let req = match scep::parse_request(&self.pki, der) {
            Ok(r) => r,
            Err(e) => {
                crate::metrics::get().scep("unreadable");
                return Ok(ScepReply::Unparsable(e.to_string()));
            }
        };
        let outcome = self.decide(&req).await?;
        let issued = match outcome {
            Ok(cert) => {
                crate::metrics::get().scep("issued");
                if let Some(w) = self.webhooks.as_ref() {
                    let x509 = X509::from_der(&cert.der).map_err(|e| ServiceError::internal("reading the issued certificate", e))?;
                    let v = crate::service::credentials::orgca::describe_cert(&x509);
                    let ev = w.own_event(
                        "mdmd.CertificateIssued",
                        serde_json::json!({"serial": v.serial, "subject": v.subject, "not_after": crate::clock::json_time(v.not_after), "sha256": v.sha256}),
                    );
                    w.emit(ev).await?;
                }
                Ok(cert)
            }
            Err((fail, why)) => {
                crate::metrics::get().scep("refused");
                tracing::warn!(transaction = %req.transaction_id, reason = %why, "SCEP request refused");
                Err(fail)
            }
        };
        let rep = scep::cert_rep(&self.pki, &req, issued.as_ref().map(|c| c.der.as_slice()).map_err(|f| *f))
            .map_err(|e| ServiceError::Rejected(format!("building CertRep: {e}")))?;
        Ok(ScepReply::CertRep(rep))
    }

    async fn decide(&self, req: &scep::ScepRequest) -> Result<Result<crate::pki::scep::fast::Issued, (FailInfo, String)>, ServiceError> {
        let csr = match &req.csr {
            Ok(c) => c,
            Err(e) => return Ok(Err(e.clone())),
        };
        let reserved = self.reserved_names().await?;
        if let Err(e) = crate::pki::scep::policy::check_csr(csr, self.cfg.max_key_bits, &reserved) {
            return Ok(Err((FailInfo::BadRequest, e)));
        }
        // A single-use challenge is used in the same commit that records the certificate.
        let mut consume = None;
        let grant = match req.message_type {
            MessageType::PkcsReq => match self.check_challenge(csr.challenge.as_deref(), &mut consume).await? {
                Err(e) => return Ok(Err((FailInfo::BadRequest, e.into()))),
                Ok(secret) => crate::service::enroll::identity::grant_for_challenge(secret.as_ref()),
            },
            MessageType::RenewalReq => {
                // Signed by an identity we issued that is still valid and not revoked.
                let old = match Identity::from_der(&self.pki, &req.signer_der) {
                    Ok(i) => i,
                    Err(e) => return Ok(Err((FailInfo::BadMessageCheck, format!("renewal signer: {e}")))),
                };
                let signer = match self.store.cert_by_hash(&old.hash).await? {
                    Some(c) if c.revoked_at.is_none() => c,
                    Some(_) => return Ok(Err((FailInfo::BadCertId, "renewal signer is revoked".into()))),
                    None => return Ok(Err((FailInfo::BadCertId, "renewal signer was not issued by this CA".into()))),
                };
                let (current, approval) = match crate::service::enroll::identity::enrollment_of(&signer) {
                    Some(id) if crate::service::enroll::identity::is_mdm(signer.purpose.as_deref()) => {
                        let current = self.store.enrollment(id).await?;
                        let approval = self
                            .store
                            .secret(SecretKind::ReenrollApproval, &sha256_hex(id))
                            .await?
                            .is_some_and(|a| a.used_at.is_none() && a.expires_at >= now());
                        (current, approval)
                    }
                    _ => (None, false),
                };
                match crate::service::enroll::identity::grant_for_renewal(&signer, &old.hash, current.as_ref(), approval) {
                    Ok(g) => g,
                    Err(why) => return Ok(Err((FailInfo::BadCertId, why.to_string()))),
                }
            }
            _ => return Ok(Err((FailInfo::BadRequest, "only PKCSReq and RenewalReq are supported".into()))),
        };
        let issued = self
            .pki
            .issue_for(csr, self.cfg.identity_days)
            .map_err(|e| ServiceError::internal("issuing the device certificate", e))?;
        let rec = IssuedCert {
            serial: issued.serial.clone(),
            sha256: crate::pki::cert_sha256(&issued.der),
            subject: issued.subject.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            issued_at: now(),
            enrollment: grant.enrollment,
            revoked_at: None,
            purpose: Some(grant.purpose),
            der: Some(issued.der.clone()),
            udid: grant.udid,
            vouched: grant.vouched,
            renewed_from: grant.renewed_from,
            user: grant.user,
            ade: grant.ade,
        };
        // Recorded durably before the certificate leaves the server.
        match consume {
            Some(hash) => match self
                .store
                .record_cert_consuming(rec.clone(), SecretKind::Challenge, &hash, now())
                .await?
            {
                Consumed::Ok(_) => {}
                // Used by a concurrent request since it was read: this certificate is not handed out.
                other => return Ok(Err((FailInfo::BadRequest, consumed_reason(&other).into()))),
            },
            None => self.store.record_cert(rec.clone()).await?,
        }
        tracing::info!(serial = %rec.serial, subject = %rec.subject, purpose = rec.purpose.as_deref().unwrap_or(crate::service::enroll::identity::MDM), vouched = rec.vouched, renewal = rec.renewed_from.is_some(), "issued device identity");
        Ok(Ok(issued))
    }

    /// Names a device certificate may not carry: our CA's and the organisation CAs'.
    async fn reserved_names(&self) -> Result<crate::pki::scep::policy::Reserved, ServiceError> {
        let mut r = crate::pki::scep::policy::Reserved::default();
        r.add_cert_der(
            &self
                .pki
                .ca
                .cert
                .to_der()
                .map_err(|e| ServiceError::internal("encoding our CA certificate", e))?,
        );
        for der in crate::service::credentials::orgca::chain_ders(self.store.as_ref()).await? {
            r.add_cert_der(&der);
        }
        Ok(r)
    }

    /// Check a challenge: a static one, or a single-use one that exists, is
    /// unused and unexpired (returned, with its hash in `consume`: the caller
    /// uses it in the commit that records the certificate).
    async fn check_challenge(
        &self,
        presented: Option<&str>,
        consume: &mut Option<String>,
    ) -> Result<Result<Option<OneTimeSecret>, &'static str>, ServiceError> {
        let Some(c) = presented.filter(|c| !c.is_empty()) else {
            return Ok(Err("no challenge password"));
        };
        if let Some(s) = &self.cfg.static_challenge {
            if bool::from(s.as_bytes().ct_eq(c.as_bytes())) {
                return Ok(Ok(None));
            }
        }
        let hash = sha256_hex(c);
        let found = self.store.secret(SecretKind::Challenge, &hash).await?;
        Ok(match OneTimeSecret::consume(found, now()) {
            Consumed::Ok(s) => {
                *consume = Some(hash);
                Ok(Some(s))
            }
            other => Err(consumed_reason(&other)),
        })
    }

    /// Re-send the enrollment profile (InstallProfile) to every active device
    /// whose identity expires within `renew_before_days` and that has no renewal
    /// pending. Returns the enrollments asked to renew.
    pub async fn renewal_sweep(&self, mdm: &Mdm) -> Result<Vec<String>, ServiceError> {
        let horizon = now() + self.cfg.renew_before_days * 86_400;
        let mut after = None;
        let mut asked = Vec::new();
        loop {
            let page = self.store.enrollments(after.clone(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            // Not yet asked, or asked over a week ago and still not renewed (the
            // InstallProfile failed or the device was away): ask again.
            let retry_before = now() - 7 * 86_400;
            let due = |e: &&crate::store::Enrollment| {
                e.kind == crate::protocol::EnrollmentKind::Device && e.active && e.renewal_requested_at.is_none_or(|t| t < retry_before)
            };
            for e in page.iter().filter(due) {
                if e.identity_not_after.is_some_and(|na| na < horizon) {
                    let profile = match self.renewal_profile(e).await {
                        Ok(p) => p,
                        Err(err) => {
                            tracing::warn!(enrollment = %e.id, error = %err, "cannot build the renewal profile");
                            continue;
                        }
                    };
                    let cmd = serde_json::json!({"RequestType": "InstallProfile", "Payload": base64::engine::general_purpose::STANDARD.encode(profile)});
                    mdm.enqueue_json(&cmd, vec![e.id.clone()]).await.map_err(|e| match e {
                        crate::service::commands::enqueue::EnqueueError::Service(e) => e,
                        crate::service::commands::enqueue::EnqueueError::Invalid(p) => {
                            ServiceError::internal("queueing the renewal profile", format!("{}: {}", p.path, p.problem))
                        }
                    })?;
                    self.store.mark_renewal(&e.id, now()).await?;
                    asked.push(e.id.clone());
                }
            }
        }
        if !asked.is_empty() {
            tracing::info!(count = asked.len(), "identity renewal requested");
        }
        Ok(asked)
    }
}
