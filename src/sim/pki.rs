//! The device side of enrollment: verify the enrollment profile, generate a
//! key, run SCEP like an iPhone (GetCACaps, GetCACert, PKIOperation), and
//! sign every message with the issued identity.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Builder, X509Name, X509NameRef, X509};

use crate::pki::scep;

/// A device identity: the key and the certificate SCEP issued for it.
#[derive(Clone)]
pub struct SimIdentity {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl SimIdentity {
    /// The `Mdm-Signature` header value for a body.
    pub fn sign(&self, body: &[u8]) -> anyhow::Result<String> {
        let der = crate::pki::cms::sign_detached(&self.cert, &self.key, body)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der))
    }

    /// The same with a SHA-1 digest, as some clients still sign.
    pub fn sign_sha1(&self, body: &[u8]) -> anyhow::Result<String> {
        let der = crate::pki::ossl::sign_detached_with(body, &self.cert, &self.key, openssl::hash::MessageDigest::sha1())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der))
    }
}

/// The SCEP envelope (PKCSReq EnvelopedData) cipher a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// What the server's GetCACaps suggests (AES, else 3DES).
    Auto,
    Des,
    #[value(name = "3des")]
    #[serde(rename = "3des")]
    Des3,
    Aes,
}

impl Envelope {
    fn cipher(self) -> Option<Cipher> {
        match self {
            Envelope::Auto => None,
            Envelope::Des => Some(Cipher::des_cbc()),
            Envelope::Des3 => Some(Cipher::des_ede3_cbc()),
            Envelope::Aes => Some(Cipher::aes_128_cbc()),
        }
    }
}

/// How a simulated client speaks, where clients differ.
#[derive(Debug, Clone, Copy)]
pub struct ClientStyle {
    pub envelope: Envelope,
    pub sha1_signatures: bool,
}

impl Default for ClientStyle {
    fn default() -> Self {
        ClientStyle {
            envelope: Envelope::Auto,
            sha1_signatures: false,
        }
    }
}

tokio::task_local! {
    /// The style of the simulated device whose task this is (set by `SimDevice` and the load tool).
    pub static STYLE: ClientStyle;
}

fn style() -> ClientStyle {
    STYLE.try_with(|s| *s).unwrap_or_default()
}

impl EnrollmentProfile {
    /// The CA that issues this device's identity: the root the profile
    /// installs, or else what the SCEP server's GetCACert gives.
    pub async fn ensure_ca(&mut self, client: &reqwest::Client) -> anyhow::Result<X509> {
        if let Some(c) = &self.ca {
            return Ok(c.clone());
        }
        let c = get_ca_cert(client, &self.scep_url).await?;
        self.ca = Some(c.clone());
        Ok(c)
    }
}

/// GetCACert: the CA certificate.
pub async fn get_ca_cert(client: &reqwest::Client, url: &str) -> anyhow::Result<X509> {
    Ok(get_scep_certs(client, url).await?.ca)
}

/// What a SCEP client takes from GetCACert: the CA, and who to encrypt the
/// request to and expect the CertRep from (the CA itself, or its RA).
#[derive(Debug, Clone)]
pub struct ScepCerts {
    pub ca: X509,
    pub recipient: X509,
}

/// GetCACert as iOS reads it (RFC 8894 §4.2.1): one certificate is the CA
/// and the recipient; a certs-only PKCS#7 holds the CA (a CA certificate the
/// others are issued by) and an RA (not a CA, keyEncipherment, RSA, issued
/// by that CA), which the request is encrypted to.
pub async fn get_scep_certs(client: &reqwest::Client, url: &str) -> anyhow::Result<ScepCerts> {
    let der = client
        .get(format!("{url}?operation=GetCACert"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    if let Ok(c) = X509::from_der(&der) {
        return Ok(ScepCerts { ca: c.clone(), recipient: c });
    }
    let p7 = Pkcs7::from_der(&der).context("GetCACert: neither a certificate nor a PKCS#7")?;
    let certs: Vec<X509> = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|c| c.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    scep_certs_of(certs)
}

/// Pick the CA and the recipient out of GetCACert's certificates.
pub fn scep_certs_of(certs: Vec<X509>) -> anyhow::Result<ScepCerts> {
    use x509_parser::prelude::FromDer as _;
    struct Facts {
        ca: bool,
        key_encipherment: bool,
    }
    let facts = |c: &X509| -> anyhow::Result<Facts> {
        let der = c.to_der()?;
        let (_, p) = x509_parser::certificate::X509Certificate::from_der(&der).map_err(|e| anyhow::anyhow!("GetCACert: {e}"))?;
        Ok(Facts {
            ca: p.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca),
            // No keyUsage extension: any use.
            key_encipherment: p.key_usage().ok().flatten().is_none_or(|k| k.value.key_encipherment()),
        })
    };
    match certs.len() {
        0 => bail!("GetCACert: no certificate"),
        1 => {
            let c = certs.into_iter().next().context("GetCACert: no certificate")?;
            Ok(ScepCerts { ca: c.clone(), recipient: c })
        }
        _ => {
            let mut cas = Vec::new();
            let mut others = Vec::new();
            for c in certs {
                if facts(&c)?.ca {
                    cas.push(c);
                } else {
                    others.push(c);
                }
            }
            // The issuing CA: the one the RA is issued by (else the only CA).
            let ra = others
                .into_iter()
                .filter(|c| facts(c).is_ok_and(|f| f.key_encipherment) && c.public_key().is_ok_and(|k| k.rsa().is_ok()))
                .find(|ra| cas.iter().any(|ca| ca.issued(ra) == openssl::x509::X509VerifyResult::OK));
            match ra {
                Some(ra) => {
                    let ca = cas
                        .into_iter()
                        .find(|ca| {
                            ca.issued(&ra) == openssl::x509::X509VerifyResult::OK
                                && ca.public_key().is_ok_and(|k| ra.verify(&k).unwrap_or(false))
                        })
                        .context("GetCACert: the RA certificate is not signed by the CA beside it")?;
                    Ok(ScepCerts { ca, recipient: ra })
                }
                None if cas.len() == 1 => {
                    let ca = cas.into_iter().next().context("GetCACert: no CA")?;
                    Ok(ScepCerts { ca: ca.clone(), recipient: ca })
                }
                None => bail!("GetCACert: {} CA certificates and no RA to encrypt to", cas.len()),
            }
        }
    }
}

/// What an iPhone takes from an enrollment profile.
#[derive(Debug, Clone)]
pub struct EnrollmentProfile {
    pub identifier: String,
    /// The root the profile installs; else the SCEP CA (`ensure_ca`).
    pub ca: Option<X509>,
    pub scep_url: String,
    pub challenge: String,
    pub subject: Vec<(String, String)>,
    pub key_size: u32,
    pub server_url: String,
    pub checkin_url: String,
    pub topic: String,
    pub sign_message: bool,
    pub access_rights: i64,
    /// Account-driven enrollment: `BYOD` (User Enrollment) or `ADDE`.
    pub enrollment_mode: Option<String>,
    pub assigned_managed_apple_id: Option<String>,
}

pub fn self_signed(key: &PKey<Private>, name: &X509NameRef) -> anyhow::Result<X509> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = crate::pki::ca::random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(name)?;
    b.set_issuer_name(name)?;
    b.set_pubkey(key)?;
    b.set_not_before(&*openssl::asn1::Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*openssl::asn1::Asn1Time::days_from_now(1)?)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

fn der_utf8(s: &str) -> Vec<u8> {
    der_tlv(0x0c, s.as_bytes())
}

fn der_tlv(tag: u8, b: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if b.len() < 128 {
        out.push(b.len() as u8);
    } else {
        let len = (b.len() as u32).to_be_bytes();
        let skip = len.iter().take_while(|x| **x == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&len[skip..]);
    }
    out.extend_from_slice(b);
    out
}

/// A PKCS#10 request with subject and PKCS#9 challengePassword (rcgen; the
/// openssl crate cannot add CSR attributes).
pub fn csr(key: &PKey<Private>, subject: &[(String, String)], challenge: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let pem = String::from_utf8(key.private_key_to_pem_pkcs8()?)?;
    let kp = rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for (k, v) in subject {
        let ty = match k.as_str() {
            "CN" => rcgen::DnType::CommonName,
            "O" => rcgen::DnType::OrganizationName,
            "OU" => rcgen::DnType::OrganizationalUnitName,
            "C" => rcgen::DnType::CountryName,
            "L" => rcgen::DnType::LocalityName,
            "ST" => rcgen::DnType::StateOrProvinceName,
            _ => continue,
        };
        dn.push(ty, v.as_str());
    }
    params.distinguished_name = dn;
    const CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
    let attrs = match challenge {
        Some(c) => vec![rcgen::Attribute {
            oid: CHALLENGE_PASSWORD,
            values: der_tlv(0x31, &der_utf8(c)),
        }],
        None => vec![],
    };
    Ok(params.serialize_request_with_attributes(&kp, attrs)?.der().to_vec())
}

fn name_of(subject: &[(String, String)]) -> anyhow::Result<X509Name> {
    let mut n = openssl::x509::X509NameBuilder::new()?;
    for (k, v) in subject {
        n.append_entry_by_text(k, v)?;
    }
    if subject.is_empty() {
        n.append_entry_by_text("CN", "device")?;
    }
    Ok(n.build())
}

/// Open a PKCS#12 as a device imports it.
pub fn open_pkcs12(der: &[u8], password: &str) -> anyhow::Result<SimIdentity> {
    crate::pki::ossl::load_providers();
    let p = openssl::pkcs12::Pkcs12::from_der(der)?
        .parse2(password)
        .context("wrong password or damaged PKCS#12")?;
    Ok(SimIdentity {
        key: p.pkey.context("no private key")?,
        cert: p.cert.context("no certificate")?,
    })
}

/// A certificate builder with a fresh RSA-2048 key, a random serial, the
/// subject `CN=cn` and the issuer's name (`None`: self-issued).
fn builder(cn: &str, issuer: Option<&X509>) -> anyhow::Result<(PKey<Private>, X509Builder)> {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let mut n = X509Name::builder()?;
    n.append_entry_by_text("CN", cn)?;
    let n = n.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = crate::pki::ca::random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&n)?;
    b.set_issuer_name(issuer.map_or(n.as_ref(), |i| i.subject_name()))?;
    b.set_pubkey(&key)?;
    Ok((key, b))
}

/// A test CA (self-signed, RSA-2048) standing for an organisation's PIV
/// derived-credential CA.
pub fn test_ca(cn: &str) -> anyhow::Result<SimIdentity> {
    let (key, mut b) = builder(cn, None)?;
    b.set_not_before(&*openssl::asn1::Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*openssl::asn1::Asn1Time::days_from_now(3650)?)?;
    b.append_extension(openssl::x509::extension::BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        openssl::x509::extension::KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(SimIdentity { key, cert: b.build() })
}

/// An MDM push certificate for `topic` (subject `UID=topic, CN=cn`) issued
/// by `ca`, valid `days`, with a fresh key: what Apple's push CA would issue,
/// for an APNs stand-in that trusts `ca` (`apns::StandIn`).
pub fn issue_push_cert(ca: &SimIdentity, topic: &str, cn: &str, days: u32) -> anyhow::Result<SimIdentity> {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let mut n = X509Name::builder()?;
    n.append_entry_by_text("UID", topic)?;
    n.append_entry_by_text("CN", cn)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = crate::pki::ca::random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&n.build())?;
    b.set_issuer_name(ca.cert.subject_name())?;
    b.set_pubkey(&key)?;
    b.set_not_before(&*openssl::asn1::Asn1Time::days_from_now(0)?)?;
    b.set_not_after(&*openssl::asn1::Asn1Time::days_from_now(days)?)?;
    b.sign(&ca.key, MessageDigest::sha256())?;
    Ok(SimIdentity { key, cert: b.build() })
}

/// A credential issued by `ca` for `cn`, valid `days` (negative: already
/// expired), as a PKCS#12 with `password`.
pub fn issue_pkcs12(ca: &SimIdentity, cn: &str, days: i64, password: &str) -> anyhow::Result<Vec<u8>> {
    let (key, mut b) = builder(cn, Some(&ca.cert))?;
    let now = crate::clock::now();
    let (from, to) = if days >= 0 {
        (now - 60, now + days * 86_400)
    } else {
        (now + days * 86_400 - 86_400, now + days * 86_400)
    };
    b.set_not_before(&*openssl::asn1::Asn1Time::from_unix(from)?)?;
    b.set_not_after(&*openssl::asn1::Asn1Time::from_unix(to)?)?;
    b.append_extension(
        openssl::x509::extension::KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    b.sign(&ca.key, MessageDigest::sha256())?;
    let cert = b.build();
    let mut chain = Stack::new()?;
    chain.push(ca.cert.clone())?;
    let p12 = openssl::pkcs12::Pkcs12::builder()
        .name(cn)
        .pkey(&key)
        .cert(&cert)
        .ca(chain)
        .build2(password)?;
    Ok(p12.to_der()?)
}

/// Run SCEP against `url` and return the issued identity.
/// With `renew`, send a RenewalReq signed by the existing identity instead.
pub async fn scep_enroll(
    client: &reqwest::Client,
    url: &str,
    expected_ca: Option<&X509>,
    key: PKey<Private>,
    subject: &[(String, String)],
    challenge: Option<&str>,
    renew: Option<&SimIdentity>,
) -> anyhow::Result<Result<SimIdentity, String>> {
    let caps = client
        .get(format!("{url}?operation=GetCACaps"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    if !caps.lines().any(|l| matches!(l.trim(), "SHA-256" | "SHA-1" | "SHA-512")) {
        bail!("the SCEP server does not have the required capability (no SHA-x)");
    }
    let cipher = match style().envelope.cipher() {
        Some(c) => c,
        None if caps.lines().any(|l| l.trim() == "AES" || l.trim() == "SCEPStandard") => Cipher::aes_128_cbc(),
        None => Cipher::des_ede3_cbc(),
    };
    let ScepCerts { ca, recipient } = get_scep_certs(client, url).await?;
    if let Some(e) = expected_ca {
        if e.to_der()? != ca.to_der()? {
            bail!("GetCACert returned a CA other than the profile's");
        }
    }
    let csr_der = csr(&key, subject, challenge)?;
    let transient;
    let (signer_cert, signer_key) = match renew {
        Some(old) => (&old.cert, &old.key),
        None => {
            let n = name_of(subject)?;
            transient = self_signed(&key, &n)?;
            (&transient, &key)
        }
    };
    let (msg, _txid, _nonce) = scep::client_request(&recipient, signer_cert, signer_key, &csr_der, renew.is_some(), cipher)?;
    let resp = if caps.lines().any(|l| l.trim() == "POSTPKIOperation") {
        client
            .post(format!("{url}?operation=PKIOperation"))
            .header("Content-Type", "application/x-pki-message")
            .body(msg)
            .send()
            .await?
    } else {
        let m = urlencoding::encode(&base64::engine::general_purpose::STANDARD.encode(&msg)).into_owned();
        client.get(format!("{url}?operation=PKIOperation&message={m}")).send().await?
    };
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!("PKIOperation: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    let (pki_status, fail, cert) = scep::client_read_rep_chain(&body, &recipient, signer_cert, signer_key)?;
    match cert {
        Some((cert, others)) => {
            // As iOS: the new identity must be for this key and chain to the
            // SCEP CA, directly or through an issuing CA the reply carries.
            if !cert.public_key()?.public_eq(&key) {
                bail!("the issued certificate is not for this device's key");
            }
            if !chains_to(&cert, &others, &ca)? {
                bail!("the issued certificate does not chain to the SCEP CA");
            }
            Ok(Ok(SimIdentity { key, cert }))
        }
        None => Ok(Err(format!("pkiStatus {pki_status}, failInfo {}", fail.unwrap_or_default()))),
    }
}

/// Does `cert` chain to `root` (signatures, names, validity, CA flags), with
/// `intermediates` as untrusted help?
fn chains_to(cert: &X509, intermediates: &[X509], root: &X509) -> anyhow::Result<bool> {
    let mut store = openssl::x509::store::X509StoreBuilder::new()?;
    store.add_cert(root.clone())?;
    let store = store.build();
    let mut chain = Stack::new()?;
    for i in intermediates {
        chain.push(i.clone())?;
    }
    let mut ctx = openssl::x509::X509StoreContext::new()?;
    Ok(ctx.init(&store, cert, &chain, |c| c.verify_cert())?)
}

/// Open a signed profile as a device does: the signature must verify and
/// chain to `trust` (None: to the CA the profile itself installs, as for the
/// enrollment profile); EncryptedPayloadContent is decrypted with the
/// device's identity. Returns the outer dictionary with PayloadContent in
/// place, and whether it was encrypted.
pub fn open_profile(der: &[u8], trust: Option<&X509>, identity: Option<&SimIdentity>) -> anyhow::Result<(plist::Dictionary, bool)> {
    let content = crate::profiles::signed_content(der).context("the profile is not CMS-signed")?;
    let v = plist::Value::from_reader(std::io::Cursor::new(&content))?;
    let mut top = v.into_dictionary().context("profile is not a dictionary")?;
    let encrypted = top.contains_key("EncryptedPayloadContent");
    if let Some(enc) = top.remove("EncryptedPayloadContent") {
        let enc = enc.as_data().context("EncryptedPayloadContent is not data")?;
        let id = identity.context("the profile is encrypted and this device has no identity")?;
        let cms = openssl::cms::CmsContentInfo::from_der(enc).context("EncryptedPayloadContent is not CMS")?;
        let plain = cms
            .decrypt(&id.key, &id.cert)
            .context("EncryptedPayloadContent does not decrypt with this device's key")?;
        let inner = plist::Value::from_reader(std::io::Cursor::new(&plain)).context("decrypted content is not a plist")?;
        if inner.as_array().is_none() {
            bail!("decrypted content is not the PayloadContent array");
        }
        top.insert("PayloadContent".into(), inner);
    }
    let installed = top
        .get("PayloadContent")
        .and_then(|p| p.as_array())
        .context("no PayloadContent")?
        .iter()
        .filter_map(|p| p.as_dictionary())
        .find(|p| p.get("PayloadType").and_then(|x| x.as_string()) == Some("com.apple.security.root"))
        .map(|root| {
            root.get("PayloadContent")
                .and_then(|c| c.as_data())
                .context("root payload without data")
                .and_then(|d| Ok(X509::from_der(d)?))
        })
        .transpose()?;
    let p7 = Pkcs7::from_der(der)?;
    let mut out = Vec::new();
    let no_certs: Stack<X509> = Stack::new()?;
    let mut store = openssl::x509::store::X509StoreBuilder::new()?;
    store.set_purpose(openssl::x509::X509PurposeId::ANY)?;
    match trust.cloned().or(installed) {
        Some(ca) => {
            // The signature must verify and chain to the trusted CA.
            store.add_cert(ca)?;
            p7.verify(&no_certs, &store.build(), None, Some(&mut out), Pkcs7Flags::BINARY)
                .context("profile signature does not verify against its CA")?;
        }
        None => {
            // No root of ours to trust (the server's TLS is publicly trusted):
            // the signature must still be intact, and iOS shows the signer
            // as not verified.
            p7.verify(
                &no_certs,
                &store.build(),
                None,
                Some(&mut out),
                Pkcs7Flags::BINARY | Pkcs7Flags::NOVERIFY,
            )
            .context("profile signature does not verify")?;
        }
    }
    Ok((top, encrypted))
}

/// Verify a downloaded enrollment profile (CMS-signed, chain to the CA it
/// carries) and read what the device needs from it.
pub fn read_profile(der: &[u8]) -> anyhow::Result<EnrollmentProfile> {
    read_profile_as(der, None)
}

/// `read_profile` for a device that already has an identity (the renewal
/// profile is encrypted to it).
pub fn read_profile_as(der: &[u8], identity: Option<&SimIdentity>) -> anyhow::Result<EnrollmentProfile> {
    let (top, _) = open_profile(der, None, identity)?;
    let (mut p, scep_uuid) = scep_part(&top)?;
    let s = |d: &plist::Dictionary, k: &str| d.get(k).and_then(|x| x.as_string()).map(str::to_owned);
    let mdm = payloads_of(&top)?
        .iter()
        .filter_map(|p| p.as_dictionary())
        .find(|p| p.get("PayloadType").and_then(|x| x.as_string()) == Some("com.apple.mdm"))
        .context("no MDM payload")?;
    if s(mdm, "IdentityCertificateUUID") != Some(scep_uuid) {
        bail!("IdentityCertificateUUID does not name the SCEP payload");
    }
    let server_url = s(mdm, "ServerURL").context("no ServerURL")?;
    p.checkin_url = s(mdm, "CheckInURL").unwrap_or_else(|| server_url.clone());
    p.server_url = server_url;
    p.topic = s(mdm, "Topic").context("no Topic")?;
    p.sign_message = mdm.get("SignMessage").and_then(|x| x.as_boolean()).unwrap_or(false);
    p.access_rights = mdm.get("AccessRights").and_then(|x| x.as_signed_integer()).unwrap_or(0);
    p.enrollment_mode = s(mdm, "EnrollmentMode");
    p.assigned_managed_apple_id = s(mdm, "AssignedManagedAppleID");
    Ok(p)
}

fn payloads_of(top: &plist::Dictionary) -> anyhow::Result<&Vec<plist::Value>> {
    top.get("PayloadContent").and_then(|p| p.as_array()).context("no PayloadContent")
}

/// The SCEP payload's `Subject` as (name, value) pairs.
pub fn scep_subject(sc: &plist::Dictionary) -> Vec<(String, String)> {
    let mut subject = Vec::new();
    if let Some(rdns) = sc.get("Subject").and_then(|x| x.as_array()) {
        for pair in rdns.iter().filter_map(|r| r.as_array()).flatten().filter_map(|p| p.as_array()) {
            if let (Some(k), Some(v)) = (pair.first().and_then(|x| x.as_string()), pair.get(1).and_then(|x| x.as_string())) {
                subject.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    subject
}

/// The CA and SCEP settings of an opened profile, and the SCEP payload's UUID
/// (the MDM fields are left empty).
fn scep_part(top: &plist::Dictionary) -> anyhow::Result<(EnrollmentProfile, String)> {
    let payloads = payloads_of(top)?;
    let by_type = |t: &str| {
        payloads
            .iter()
            .filter_map(|p| p.as_dictionary())
            .find(|p| p.get("PayloadType").and_then(|x| x.as_string()) == Some(t))
    };
    // Without a root payload (publicly trusted TLS) the CA comes from GetCACert.
    let ca = match by_type("com.apple.security.root") {
        Some(root) => Some(X509::from_der(
            root.get("PayloadContent")
                .and_then(|c| c.as_data())
                .context("root payload without data")?,
        )?),
        None => None,
    };
    let scep = by_type("com.apple.security.scep").context("no SCEP payload")?;
    let sc = scep
        .get("PayloadContent")
        .and_then(|c| c.as_dictionary())
        .context("SCEP settings must be in the nested PayloadContent")?;
    let s = |k: &str| sc.get(k).and_then(|x| x.as_string()).map(str::to_owned);
    let p = EnrollmentProfile {
        identifier: top
            .get("PayloadIdentifier")
            .and_then(|x| x.as_string())
            .unwrap_or_default()
            .to_owned(),
        ca,
        scep_url: s("URL").context("no SCEP URL")?,
        challenge: s("Challenge").unwrap_or_default(),
        subject: scep_subject(sc),
        key_size: sc.get("Keysize").and_then(|x| x.as_unsigned_integer()).unwrap_or(1024) as u32,
        server_url: String::new(),
        checkin_url: String::new(),
        topic: String::new(),
        sign_message: false,
        access_rights: 0,
        enrollment_mode: None,
        assigned_managed_apple_id: None,
    };
    let uuid = scep.get("PayloadUUID").and_then(|x| x.as_string()).unwrap_or_default().to_owned();
    Ok((p, uuid))
}

/// CMS SignedData with `content` attached, signed by `by` (what a device
/// POSTs to a profile service).
pub fn sign_attached(by: &SimIdentity, content: &[u8]) -> anyhow::Result<Vec<u8>> {
    let certs: Stack<X509> = Stack::new()?;
    let p7 = Pkcs7::sign(&by.cert, &by.key, &certs, content, Pkcs7Flags::BINARY)?;
    Ok(p7.to_der()?)
}

/// Is this a (signed) profile-service profile?
pub fn is_profile_service(der: &[u8]) -> bool {
    crate::profiles::parse_any(der)
        .ok()
        .is_some_and(|d| d.get("PayloadType").and_then(|t| t.as_string()) == Some("Profile Service"))
}

/// The URL and challenge of a profile-service profile.
pub fn read_profile_service(der: &[u8]) -> anyhow::Result<(String, String)> {
    let top = crate::profiles::parse_any(der).map_err(|e| anyhow::anyhow!("{e}"))?;
    if top.get("PayloadType").and_then(|t| t.as_string()) != Some("Profile Service") {
        bail!("not a profile-service profile");
    }
    let c = top
        .get("PayloadContent")
        .and_then(|c| c.as_dictionary())
        .context("no PayloadContent")?;
    let s = |k: &str| c.get(k).and_then(|v| v.as_string()).map(str::to_owned);
    Ok((s("URL").context("no URL")?, s("Challenge").unwrap_or_default()))
}

/// The CA and SCEP settings of a profile (phase 2: no MDM payload).
pub fn read_scep_profile(der: &[u8]) -> anyhow::Result<EnrollmentProfile> {
    let (top, _) = open_profile(der, None, None)?;
    Ok(scep_part(&top)?.0)
}
