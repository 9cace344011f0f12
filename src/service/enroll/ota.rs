//! Over-the-air enrollment in Apple's three phases (the "profile service"):
//!
//! 1. `GET /mdm/enroll` (credentials or invitation) serves a signed profile
//!    whose only content is a `Profile Service` payload: our URL, the device
//!    attributes we want, and a single-use challenge.
//! 2. The device POSTs those attributes as a CMS SignedData, signed by its own
//!    Apple-issued certificate. We verify the signature, consume the
//!    challenge, and (with `--device-attestation-ca`) check the signer chains
//!    to Apple's device CA and names the UDID claimed. We answer with our CA and a SCEP payload whose
//!    challenge is bound to the UDID the device stated: the certificate SCEP
//!    issues records that UDID, and is vouched for only if the device was
//!    attested.
//! 3. The device POSTs the attributes again, signed by that new identity. It
//!    must name the same UDID. We answer with the MDM profile (CA, a SCEP
//!    payload for the MDM identity bound to that UDID, the MDM payload),
//!    its payloads encrypted to that identity, signed.

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use plist::{Dictionary, Value};

use crate::clock::now;
use crate::pki::cms;
use crate::pki::sha256_hex;
use crate::service::enroll::{Enroller, SecretFor};
use crate::service::ServiceError;
use crate::store::{Consumed, EnrollUser, SecretKind};

/// The attributes a device is asked for in phase 1.
pub const DEVICE_ATTRIBUTES: &[&str] = &["UDID", "SERIAL", "PRODUCT", "VERSION", "IMEI", "MEID", "ICCID"];

fn rejected(m: impl Into<String>) -> ServiceError {
    ServiceError::Rejected(m.into())
}

impl Enroller {
    /// The phase-1 profile: a signed `Profile Service` payload with a fresh challenge.
    pub async fn profile_service_profile(&self, purpose: &str, ttl: i64, user: Option<EnrollUser>) -> Result<Vec<u8>, ServiceError> {
        let (challenge, _) = self
            .new_secret_with(SecretKind::ProfileService, purpose, ttl, SecretFor::user(user))
            .await?;
        let id = self.profile_identifier();
        let org = &self.cfg.organization;
        let mut content = Dictionary::new();
        content.insert("URL".into(), format!("{}/mdm/profile-service", self.cfg.public_url).into());
        content.insert(
            "DeviceAttributes".into(),
            Value::Array(DEVICE_ATTRIBUTES.iter().map(|a| Value::String((*a).into())).collect()),
        );
        content.insert("Challenge".into(), challenge.into());
        let mut top = Dictionary::new();
        top.insert("PayloadType".into(), "Profile Service".into());
        top.insert("PayloadVersion".into(), 1.into());
        top.insert("PayloadIdentifier".into(), format!("{id}.profile-service").into());
        top.insert("PayloadUUID".into(), uuid::Uuid::new_v4().to_string().to_uppercase().into());
        top.insert("PayloadDisplayName".into(), format!("{org} device enrollment").into());
        top.insert("PayloadOrganization".into(), org.clone().into());
        top.insert(
            "PayloadDescription".into(),
            "Enrolls this device with your organisation: it identifies the device, then installs its certificates and settings.".into(),
        );
        top.insert("PayloadContent".into(), Value::Dictionary(content));
        cms::sign_profile(&self.pki, &crate::protocol::to_xml(&top)).map_err(|e| ServiceError::internal("signing the profile", e))
    }

    /// A phase-1 or phase-3 POST. Returns the signed profile to answer with.
    pub async fn profile_service(&self, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let (signer, attrs) = read_body(body)?;
        let udid = attrs
            .get("UDID")
            .and_then(Value::as_string)
            .filter(|u| !u.is_empty() && u.len() <= 128)
            .ok_or_else(|| rejected("the device attributes have no UDID"))?
            .to_owned();
        if self.pki.verify_chain(&signer).is_ok() {
            self.phase3(&signer, &udid).await
        } else {
            self.phase1(&signer, &udid, &attrs).await
        }
    }

    /// With `--device-attestation-ca`, check that `signer` is a device
    /// certificate from that CA naming `udid` (403 otherwise): true. Without
    /// it nothing can be proven: false.
    pub(crate) fn attest(&self, signer: &X509, udid: &str, phase: &str) -> Result<bool, ServiceError> {
        let Some(store) = &self.cfg.device_attestation_ca else {
            return Ok(false);
        };
        verify_in(store, signer).map_err(|e| match e {
            ChainError::Refused(e) => ServiceError::Forbidden(format!(
                "{phase}: the signer is not a device certificate from the attestation CA: {e}"
            )),
            ChainError::Setup(e) => ServiceError::internal("verifying against the attestation CA", e),
        })?;
        // The device certificate names the device: it must be the UDID claimed.
        let cn = signer
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
            .unwrap_or_default();
        if cn != udid {
            return Err(ServiceError::Forbidden(format!(
                "{phase}: the device certificate is for {cn:?}, not for the UDID claimed ({udid})"
            )));
        }
        Ok(true)
    }

    async fn phase1(&self, signer: &X509, udid: &str, attrs: &Dictionary) -> Result<Vec<u8>, ServiceError> {
        let attested = self.attest(signer, udid, "phase 1")?;
        let challenge = attrs
            .get("CHALLENGE")
            .and_then(Value::as_string)
            .ok_or_else(|| ServiceError::Forbidden("phase 1: no CHALLENGE in the device attributes".into()))?;
        let user = match self
            .store
            .consume_secret(SecretKind::ProfileService, &sha256_hex(challenge), now())
            .await?
        {
            Consumed::Ok(s) => s.user,
            Consumed::Unknown => return Err(ServiceError::Forbidden("phase 1: unknown challenge".into())),
            Consumed::AlreadyUsed => return Err(ServiceError::Forbidden("phase 1: the challenge was already used".into())),
            Consumed::Expired => return Err(ServiceError::Forbidden("phase 1: the challenge has expired".into())),
        };
        let (scep_challenge, _) = self
            .new_secret_with(
                SecretKind::Challenge,
                &format!("profile-service:{udid}"),
                self.cfg.challenge_ttl,
                SecretFor {
                    enrollment: Some(udid.to_owned()),
                    vouched: attested,
                    renews: None,
                    user,
                    ade: None,
                },
            )
            .await?;
        tracing::info!(%udid, attested, "profile service phase 1");
        // CA and SCEP only: the identity that phase 3 is signed with.
        let xml = self
            .profile_plist(&scep_challenge, &uuid::Uuid::new_v4().to_string().to_uppercase())
            .map_err(|e| ServiceError::internal("building the enrollment profile", e))?;
        let mut top = crate::profiles::parse_stored(&xml).map_err(|e| ServiceError::internal("reading the enrollment profile", e))?;
        if let Some(Value::Array(items)) = top.get_mut("PayloadContent") {
            items.retain(|p| p.as_dictionary().and_then(|d| d.get("PayloadType")).and_then(Value::as_string) != Some("com.apple.mdm"));
        }
        top.insert("PayloadIdentifier".into(), format!("{}.identity", self.profile_identifier()).into());
        top.insert(
            "PayloadDisplayName".into(),
            format!("{} device identity", self.cfg.organization).into(),
        );
        cms::sign_profile(&self.pki, &crate::protocol::to_xml(&top)).map_err(|e| ServiceError::internal("signing the profile", e))
    }

    async fn phase3(&self, signer: &X509, udid: &str) -> Result<Vec<u8>, ServiceError> {
        let der = signer
            .to_der()
            .map_err(|e| ServiceError::internal("encoding the signer certificate", e))?;
        let rec = self
            .store
            .cert_by_hash(&crate::pki::cert_sha256(&der))
            .await?
            .ok_or_else(|| ServiceError::Forbidden("phase 3: the signer is not an identity this CA issued".into()))?;
        if rec.revoked_at.is_some() || !crate::service::enroll::identity::may_sign_phase3(rec.purpose.as_deref()) {
            return Err(ServiceError::Forbidden(
                "phase 3: the signer's identity is revoked or not an enrollment identity".into(),
            ));
        }
        if rec.udid.as_deref() != Some(udid) {
            return Err(ServiceError::Forbidden(format!(
                "phase 3: the signer's identity was not issued for device {udid}"
            )));
        }
        let (challenge, _) = self
            .new_secret_with(
                SecretKind::Challenge,
                &format!("enroll:{udid}"),
                self.cfg.challenge_ttl,
                SecretFor {
                    enrollment: Some(udid.to_owned()),
                    vouched: rec.vouched,
                    renews: None,
                    user: rec.user.clone(),
                    ade: rec.ade.clone(),
                },
            )
            .await?;
        let xml = self
            .profile_plist(&challenge, &uuid::Uuid::new_v4().to_string().to_uppercase())
            .map_err(|e| ServiceError::internal("building the enrollment profile", e))?;
        let mut top = crate::profiles::parse_stored(&xml).map_err(|e| ServiceError::internal("reading the enrollment profile", e))?;
        crate::profiles::encrypt_payloads(&mut top, signer).map_err(|e| ServiceError::internal("encrypting the enrollment profile", e))?;
        tracing::info!(%udid, vouched = rec.vouched, "profile service phase 3");
        cms::sign_profile(&self.pki, &crate::protocol::to_xml(&top)).map_err(|e| ServiceError::internal("signing the profile", e))
    }
}

/// A profile-service POST read: the signer and the device attributes (a
/// plist dictionary within `protocol::limits`), the signature checked but not
/// who signed. Also the fuzz target's entry point.
pub fn read_body(body: &[u8]) -> Result<(X509, Dictionary), ServiceError> {
    let (signer, content) = signed_attributes(body)?;
    let attrs = crate::protocol::limits::parse_dictionary(&content)
        .map_err(|e| rejected(format!("the signed content is not a plist dictionary: {e}")))?;
    Ok((signer, attrs))
}

/// The signer and content of a CMS SignedData (attached), its signature checked.
fn signed_attributes(body: &[u8]) -> Result<(X509, Vec<u8>), ServiceError> {
    let p7 = Pkcs7::from_der(body).map_err(|e| rejected(format!("the body is not a CMS SignedData: {e}")))?;
    let none: Stack<X509> = Stack::new().map_err(|e| ServiceError::internal("OpenSSL", e))?;
    let signer = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| rejected(format!("no signer certificate: {e}")))?
        .iter()
        .next()
        .map(|c| c.to_owned())
        .ok_or_else(|| rejected("no signer certificate"))?;
    let store = openssl::x509::store::X509StoreBuilder::new()
        .map_err(|e| ServiceError::internal("OpenSSL", e))?
        .build();
    let mut content = Vec::new();
    p7.verify(&none, &store, None, Some(&mut content), Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY)
        .map_err(|e| ServiceError::Forbidden(format!("the signature does not verify: {e}")))?;
    Ok((signer, content))
}

/// Why a certificate does not verify against a store.
#[derive(Debug, thiserror::Error)]
enum ChainError {
    /// It does not chain (OpenSSL's reason).
    #[error("{0}")]
    Refused(String),
    /// OpenSSL could not run the check at all (ours).
    #[error(transparent)]
    Setup(#[from] openssl::error::ErrorStack),
}

fn verify_in(store: &openssl::x509::store::X509Store, cert: &X509) -> Result<(), ChainError> {
    let mut ctx = openssl::x509::X509StoreContext::new()?;
    let chain = Stack::new()?;
    let (ok, err) = ctx.init(store, cert, &chain, |c| Ok((c.verify_cert()?, c.error().error_string().to_owned())))?;
    if ok {
        Ok(())
    } else {
        Err(ChainError::Refused(err))
    }
}
