//! The certificate authority: created on first start in the certs dir (or
//! supplied by the admin), plus the TLS server certificate and the
//! profile-signing identity it issues.
//!
//! Keys: a new installation's CA, profile signer and TLS certificate are
//! ECDSA P-256 (a signature costs 10–30× less than RSA-2048's: docs/pki.md).
//! SCEP still needs RSA where the protocol does: a device encrypts its request
//! to the CA's key and verifies the CertRep with it, and iOS does that with
//! RSA only. So an EC CA issues a SCEP registration authority (`ra.pem`,
//! RSA-2048, keyEncipherment + digitalSignature) and GetCACert answers both
//! (RFC 8894 §4.2.1.2); device identities are still signed by the EC CA.
//! An installation made before this keeps its RSA CA (which is its own RA)
//! and its RSA signer until its admin opts in with `mdmd ca ec-issuing`: an
//! ECDSA issuing CA under the same RSA root (`issuing.pem`) then signs new
//! device identities and a new EC profile signer is issued (docs/pki.md).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, PKeyRef, Private, Public};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509Builder, X509NameBuilder, X509NameRef, X509Ref, X509};

use super::{asn1_unix, PkiError};

/// Where certificates come from: generated defaults, or files the admin supplies.
#[derive(Debug, Clone, Default)]
pub struct CaConfig {
    pub certs_dir: PathBuf,
    /// Host name or address of the public URL (goes into the TLS certificate).
    pub public_host: String,
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub signer_cert: Option<PathBuf>,
    pub signer_key: Option<PathBuf>,
    pub organization: String,
}

/// A certificate with its private key (and any intermediates, for TLS).
pub struct KeyPair {
    pub cert: X509,
    pub key: PKey<Private>,
    pub chain: Vec<X509>,
}

pub struct Pki {
    pub ca: KeyPair,
    /// The SCEP registration authority, when the CA's key cannot be SCEP's
    /// recipient (an EC CA): RSA, issued by the CA.
    pub ra: Option<KeyPair>,
    /// An ECDSA issuing CA under an RSA root (`mdmd ca ec-issuing`): it signs
    /// device identities instead of the root.
    pub issuer: Option<KeyPair>,
    pub tls: KeyPair,
    pub signer: KeyPair,
    trust: X509Store,
    /// SCEP's recipient (the RA, else an RSA CA) parsed once for SCEP's fast path.
    pub fast: Option<super::scep::fast::CaFast>,
    /// The CA parsed once for issuing device identities and checking their chain.
    pub issuing: Option<super::scep::fast::CaFast>,
    /// Signer public keys for the Mdm-Signature fast path.
    pub keys: super::cms::fast::KeyCache,
    /// Certificates (by SHA-256) already found to chain to our CA: chain
    /// verification is costly and immutable per certificate. Validity dates
    /// and revocation are still checked on every request.
    chained: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|e| PkiError::Io(format!("reading {}: {e}", path.display())))
}

/// A certificate (with any intermediates after it) and its key from PEM files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<KeyPair, PkiError> {
    let mut certs = X509::stack_from_pem(&read(cert)?)?;
    if certs.is_empty() {
        return Err(PkiError::Io(format!("{}: no certificate", cert.display())));
    }
    let leaf = certs.remove(0);
    let key = PKey::private_key_from_pem(&read(key)?)?;
    if !leaf.public_key()?.public_eq(&key) {
        return Err(PkiError::Io(format!("{} does not match {}", key_display(key.id()), cert.display())));
    }
    Ok(KeyPair {
        cert: leaf,
        key,
        chain: certs,
    })
}

fn key_display(id: openssl::pkey::Id) -> String {
    format!("{id:?} key")
}

fn save_pair(dir: &Path, name: &str, pair: &KeyPair) -> Result<(), PkiError> {
    let key_path = dir.join(format!("{name}.key"));
    let _ = std::fs::remove_file(&key_path);
    super::write_secret(&key_path, &pair.key.private_key_to_pem_pkcs8()?)?;
    std::fs::write(dir.join(format!("{name}.pem")), pair.cert.to_pem()?)?;
    Ok(())
}

pub fn random_serial() -> Result<Asn1Integer, PkiError> {
    let mut bn = BigNum::new()?;
    // 127 random bits, top bit clear: a positive 16-byte serial.
    bn.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn name(cn: &str, org: &str) -> Result<openssl::x509::X509Name, PkiError> {
    let mut n = X509NameBuilder::new()?;
    if !org.is_empty() {
        n.append_entry_by_text("O", org)?;
    }
    n.append_entry_by_text("CN", cn)?;
    Ok(n.build())
}

fn new_rsa(bits: u32) -> Result<PKey<Private>, PkiError> {
    Ok(PKey::from_rsa(Rsa::generate(bits)?)?)
}

/// A new ECDSA key on P-256 (prime256v1, what iOS accepts everywhere).
pub fn new_p256() -> Result<PKey<Private>, PkiError> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(openssl::ec::EcKey::generate(&group)?)?)
}

/// Is `key` an ECDSA key on P-256?
pub fn is_p256<T: openssl::pkey::HasPublic>(key: &PKeyRef<T>) -> bool {
    key.ec_key()
        .ok()
        .is_some_and(|k| k.group().curve_name() == Some(openssl::nid::Nid::X9_62_PRIME256V1))
}

/// Common builder: serial, validity, subject, issuer, key.
fn builder(
    subject: &X509NameRef,
    issuer: &X509NameRef,
    pubkey: &PKeyRef<Public>,
    days: u32,
    backdate_secs: i64,
) -> Result<X509Builder, PkiError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer)?;
    b.set_pubkey(pubkey)?;
    let now = crate::clock::now();
    let not_before = Asn1Time::from_unix(now - backdate_secs)?;
    let not_after = Asn1Time::from_unix(now + days as i64 * 86_400)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

fn public(key: &PKeyRef<Private>) -> Result<PKey<Public>, PkiError> {
    Ok(PKey::public_key_from_der(&key.public_key_to_der()?)?)
}

impl Pki {
    /// Load what exists, create what does not. Keys are written 0600.
    pub fn load_or_create(cfg: &CaConfig) -> Result<Pki, PkiError> {
        super::ossl::load_providers();
        let dir = &cfg.certs_dir;
        let org = if cfg.organization.is_empty() {
            "mdmd"
        } else {
            cfg.organization.as_str()
        };
        let ca = match (&cfg.ca_cert, &cfg.ca_key) {
            (Some(c), Some(k)) => load_pair(c, k)?,
            _ if dir.join("ca.pem").exists() => load_pair(&dir.join("ca.pem"), &dir.join("ca.key"))?,
            _ => {
                let pair = create_ca(org)?;
                save_pair(dir, "ca", &pair)?;
                tracing::info!(path = %dir.join("ca.pem").display(), "created certificate authority");
                pair
            }
        };
        let mut ts = X509StoreBuilder::new()?;
        ts.add_cert(ca.cert.clone())?;
        let trust = ts.build();
        let mut pki = Pki {
            tls: placeholder(&ca)?,
            signer: placeholder(&ca)?,
            ra: None,
            issuer: None,
            ca,
            trust,
            fast: None,
            issuing: None,
            keys: Default::default(),
            chained: Default::default(),
        };
        let issuing = dir.join("issuing.pem");
        if issuing.exists() {
            let p = load_pair(&issuing, &dir.join("issuing.key"))?;
            if !p.cert.verify(&pki.ca.key).unwrap_or(false) {
                let _ = openssl::error::ErrorStack::get();
                return Err(PkiError::Io(format!("{} is not issued by this CA", issuing.display())));
            }
            pki.issuer = Some(p);
        }
        let by = pki.identity_issuer();
        pki.issuing = super::scep::fast::CaFast::new(&by.cert, &by.key);
        if pki.ca.key.rsa().is_err() {
            // SCEP's envelope is RSA key transport: an EC CA needs an RSA RA.
            let ra = pki.supplied_or_issued((&None, &None), dir, "ra", |p| p.key.rsa().is_ok(), |pki| pki.issue_ra(org))?;
            pki.ra = Some(ra);
        }
        let recipient = pki.scep_recipient();
        pki.fast = super::scep::fast::CaFast::new(&recipient.cert, &recipient.key).filter(|f| f.is_rsa());
        let host = cfg.public_host.clone();
        pki.tls = pki.supplied_or_issued(
            (&cfg.tls_cert, &cfg.tls_key),
            dir,
            "tls",
            // ECDSA P-256: a handshake signature costs 10–30× less than RSA-2048's (docs/pki.md).
            // An older RSA certificate of ours is replaced (the admin's own stays as given).
            |p| covers(&p.cert, &host) && p.key.id() == openssl::pkey::Id::EC,
            |pki| pki.issue_tls(&host),
        )?;
        pki.signer = pki.supplied_or_issued(
            (&cfg.signer_cert, &cfg.signer_key),
            dir,
            "signer",
            |_| true,
            |pki| pki.issue_signer(org),
        )?;
        Ok(pki)
    }

    /// The admin's files if given; else ours from the certs dir if still good
    /// (issued by this CA, not expiring within 30 days, `fits`); else a new one.
    fn supplied_or_issued(
        &self,
        supplied: (&Option<PathBuf>, &Option<PathBuf>),
        dir: &Path,
        name: &str,
        fits: impl Fn(&KeyPair) -> bool,
        issue: impl FnOnce(&Pki) -> Result<KeyPair, PkiError>,
    ) -> Result<KeyPair, PkiError> {
        if let (Some(c), Some(k)) = supplied {
            return load_pair(c, k);
        }
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        if c.exists() {
            let p = load_pair(&c, &k)?;
            if fits(&p) && p.cert.verify(&self.ca.key).unwrap_or(false) && not_expiring(&p.cert) {
                return Ok(p);
            }
        }
        let p = issue(self)?;
        save_pair(dir, name, &p)?;
        tracing::info!(certificate = name, "issued certificate");
        Ok(p)
    }

    pub fn trust(&self) -> &X509Store {
        &self.trust
    }

    /// Who signs device identities: the issuing CA if there is one, else the CA.
    pub fn identity_issuer(&self) -> &KeyPair {
        self.issuer.as_ref().unwrap_or(&self.ca)
    }

    /// Who SCEP requests are encrypted to and CertReps signed by: the RA if
    /// there is one, else the (RSA) CA.
    pub fn scep_recipient(&self) -> &KeyPair {
        self.ra.as_ref().unwrap_or(&self.ca)
    }

    /// SCEP's GetCACert answer (RFC 8894 §4.2.1): the CA certificate alone, or
    /// with an RA a certs-only SignedData holding the RA and then the CA.
    pub fn get_ca_cert(&self) -> Result<(&'static str, Vec<u8>), PkiError> {
        match &self.ra {
            None => Ok(("application/x-x509-ca-cert", self.ca.cert.to_der()?)),
            Some(ra) => Ok(("application/x-x509-ca-ra-cert", super::ossl::degenerate(&[&ra.cert, &self.ca.cert])?)),
        }
    }

    /// The SCEP registration authority of an EC CA: RSA-2048, able to receive
    /// the device's content key and to sign CertReps; not a CA.
    fn issue_ra(&self, org: &str) -> Result<KeyPair, PkiError> {
        let key = new_rsa(2048)?;
        let subject = name(&format!("{org} MDM SCEP RA"), org)?;
        let left = (asn1_unix(self.ca.cert.not_after()) - crate::clock::now()) / 86_400;
        let days = left.clamp(31, 3650) as u32;
        let mut b = builder(&subject, self.ca.cert.subject_name(), public(&key)?.as_ref(), days, 3600)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
        Ok(KeyPair {
            cert: self.sign(b)?,
            key,
            chain: vec![],
        })
    }

    fn issue_tls(&self, host: &str) -> Result<KeyPair, PkiError> {
        let key = new_p256()?;
        let subject = name(host, "")?;
        let mut b = builder(&subject, self.ca.cert.subject_name(), public(&key)?.as_ref(), 397, 3600)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let mut san = SubjectAlternativeName::new();
        let mut hosts = vec![host.to_owned(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        hosts.dedup();
        for h in &hosts {
            if h.parse::<IpAddr>().is_ok() {
                san.ip(h);
            } else {
                san.dns(h);
            }
        }
        let ctx = b.x509v3_context(Some(&self.ca.cert), None);
        let ext = san.build(&ctx)?;
        b.append_extension(ext)?;
        Ok(KeyPair {
            cert: self.sign(b)?,
            key,
            chain: vec![],
        })
    }

    /// Add the key identifiers and sign with the CA.
    fn sign(&self, b: X509Builder) -> Result<X509, PkiError> {
        sign_by(&self.ca, b)
    }

    fn issue_signer(&self, org: &str) -> Result<KeyPair, PkiError> {
        let key = new_p256()?;
        let subject = name(&format!("{org} profile signing"), org)?;
        let mut b = builder(&subject, self.ca.cert.subject_name(), public(&key)?.as_ref(), 730, 3600)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().email_protection().code_signing().build()?)?;
        Ok(KeyPair {
            cert: self.sign(b)?,
            key,
            chain: vec![],
        })
    }

    /// Issue a device identity for a SCEP request: encoded in Rust and signed
    /// with the pooled CA key when the CA is RSA, else through OpenSSL's builder.
    pub fn issue_for(&self, csr: &super::scep::fast::Csr, days: u32) -> Result<super::scep::fast::Issued, PkiError> {
        if let Some(fast) = &self.issuing {
            return super::scep::fast::issue_identity(fast, csr, days);
        }
        let key = PKey::public_key_from_der(&der::Encode::to_der(&csr.spki).map_err(|e| PkiError::Crypto(e.to_string()))?)?;
        let subject = openssl::x509::X509Name::from_der(&der::Encode::to_der(&csr.subject).map_err(|e| PkiError::Crypto(e.to_string()))?)?;
        let cert = self.issue_identity(&key, &subject, days)?;
        let desc = describe(&cert);
        Ok(super::scep::fast::Issued {
            der: cert.to_der()?,
            serial: desc["serial"].as_str().unwrap_or_default().to_owned(),
            subject: desc["subject"].as_str().unwrap_or_default().to_owned(),
            not_before: asn1_unix(cert.not_before()),
            not_after: asn1_unix(cert.not_after()),
        })
    }

    /// Issue a device identity (SCEP): subject from the CSR, our policy for the rest.
    pub fn issue_identity(&self, pubkey: &PKeyRef<Public>, subject: &X509NameRef, days: u32) -> Result<X509, PkiError> {
        let by = self.identity_issuer();
        let mut b = builder(subject, by.cert.subject_name(), pubkey, days, 300)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().key_encipherment().build()?)?;
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        sign_by(by, b)
    }

    /// Does `cert` chain to our CA and is it within its validity window now?
    /// The chain result is cached; the dates are not. Our own CA's signature
    /// is checked on the DER in Rust with a pooled key (no OpenSSL parse).
    pub fn verify_chain_cached(&self, cert: &super::cms::fast::CachedCert) -> Result<(), PkiError> {
        let now = crate::clock::now();
        if cert.not_after < now {
            return Err(PkiError::BadCertificate("certificate has expired".into()));
        }
        if cert.not_before > now + 300 {
            return Err(PkiError::BadCertificate("certificate is not yet valid".into()));
        }
        if self.chained.lock().map(|s| s.contains(&cert.hash)).unwrap_or(false) {
            return Ok(());
        }
        let fast_ok = self
            .issuing
            .as_ref()
            .is_some_and(|f| <x509_cert::Certificate as der::Decode>::from_der(&cert.der).is_ok_and(|c| f.issued(&c)));
        if !fast_ok {
            let x = cert
                .x509()
                .ok_or_else(|| PkiError::BadCertificate("not a certificate OpenSSL can read".into()))?;
            self.verify_chain(&x)?;
        }
        if let Ok(mut s) = self.chained.lock() {
            if s.len() >= 200_000 {
                s.clear();
            }
            s.insert(cert.hash.clone());
        }
        Ok(())
    }

    /// Does `cert` chain to our CA (signature and validity window)?
    pub fn verify_chain(&self, cert: &X509Ref) -> Result<(), PkiError> {
        let mut ctx = openssl::x509::X509StoreContext::new()?;
        let mut chain = openssl::stack::Stack::new()?;
        if let Some(i) = &self.issuer {
            chain.push(i.cert.clone())?;
        }
        let (ok, err) = ctx.init(&self.trust, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error().error_string().to_owned()))
        })?;
        if ok {
            Ok(())
        } else {
            Err(PkiError::BadCertificate(err))
        }
    }
}

/// Add the key identifiers and sign with `by`.
fn sign_by(by: &KeyPair, mut b: X509Builder) -> Result<X509, PkiError> {
    let ctx = b.x509v3_context(Some(&by.cert), None);
    let ski = SubjectKeyIdentifier::new().build(&ctx)?;
    let aki = AuthorityKeyIdentifier::new().keyid(true).build(&ctx)?;
    b.append_extension(ski)?;
    b.append_extension(aki)?;
    b.sign(&by.key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// Opt an installation with an RSA root into ECDSA (`mdmd ca ec-issuing`):
/// an ECDSA P-256 issuing CA under the same root (`issuing.pem`, path length
/// 0, valid as long as the root) signs device identities from the next start,
/// and the RSA profile signer is removed so that the next start issues an EC
/// one. The root, the TLS certificate and every identity already issued stay
/// as they are: devices trust the same root, and SCEP still encrypts to it.
/// Run with the server stopped; returns what was written.
pub fn create_ec_issuing(dir: &Path, ca_cert: Option<&Path>, ca_key: Option<&Path>) -> Result<Vec<PathBuf>, PkiError> {
    super::ossl::load_providers();
    let (c, k) = match (ca_cert, ca_key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        _ => (dir.join("ca.pem"), dir.join("ca.key")),
    };
    if !c.exists() {
        return Err(PkiError::Io(format!("no CA at {} (start mdmd once, or give --certs-dir)", c.display())));
    }
    let ca = load_pair(&c, &k)?;
    if ca.key.rsa().is_err() {
        return Err(PkiError::Io("the CA is already ECDSA: device identities are signed with it".into()));
    }
    let (issuing, issuing_key) = (dir.join("issuing.pem"), dir.join("issuing.key"));
    if issuing.exists() {
        return Err(PkiError::Io(format!("{} exists already", issuing.display())));
    }
    let org = ca
        .cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::ORGANIZATIONNAME)
        .next()
        .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
        .unwrap_or_else(|| "mdmd".into());
    let key = new_p256()?;
    let subject = name(&format!("{org} MDM issuing CA (ECDSA)"), &org)?;
    let left = (asn1_unix(ca.cert.not_after()) - crate::clock::now()) / 86_400;
    if left < 31 {
        return Err(PkiError::Io("the CA expires within a month: replace it instead".into()));
    }
    let mut b = builder(&subject, ca.cert.subject_name(), public(&key)?.as_ref(), left.min(3650) as u32, 3600)?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().digital_signature().build()?)?;
    let cert = sign_by(&ca, b)?;
    super::write_secret(&issuing_key, &key.private_key_to_pem_pkcs8()?)?;
    std::fs::write(&issuing, cert.to_pem()?)?;
    let mut wrote = vec![issuing, issuing_key];
    // The profile signer: an RSA one of ours is re-issued as EC at the next start.
    let (sc, sk) = (dir.join("signer.pem"), dir.join("signer.key"));
    if let Ok(p) = load_pair(&sc, &sk) {
        if p.key.rsa().is_ok() {
            std::fs::remove_file(&sc)?;
            std::fs::remove_file(&sk)?;
            wrote.push(sc);
        }
    }
    Ok(wrote)
}

fn placeholder(ca: &KeyPair) -> Result<KeyPair, PkiError> {
    Ok(KeyPair {
        cert: ca.cert.clone(),
        key: ca.key.clone(),
        chain: vec![],
    })
}

/// A new CA: ECDSA P-256. SCEP's RSA needs are met by its RA (`issue_ra`).
fn create_ca(org: &str) -> Result<KeyPair, PkiError> {
    let key = new_p256()?;
    let subject = name(&format!("{org} MDM CA"), org)?;
    let mut b = builder(&subject, &subject, public(&key)?.as_ref(), 3650, 3600)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().digital_signature().build()?)?;
    let ctx = b.x509v3_context(None, None);
    let ski = SubjectKeyIdentifier::new().build(&ctx)?;
    b.append_extension(ski)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(KeyPair {
        cert: b.build(),
        key,
        chain: vec![],
    })
}

fn covers(cert: &X509Ref, host: &str) -> bool {
    cert.subject_alt_names().is_some_and(|names| {
        names.iter().any(|n| {
            n.dnsname() == Some(host)
                || n.ipaddress().is_some_and(|ip| match host.parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => ip == a.octets(),
                    Ok(IpAddr::V6(a)) => ip == a.octets(),
                    Err(_) => false,
                })
        })
    })
}

fn not_expiring(cert: &X509Ref) -> bool {
    asn1_unix(cert.not_after()) > crate::clock::now() + 30 * 86_400
}

/// One line about a certificate, for `mdmd ca show`.
pub fn describe(cert: &X509Ref) -> serde_json::Value {
    let subject: Vec<String> = cert
        .subject_name()
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                String::from_utf8_lossy(e.data().as_slice())
            )
        })
        .collect();
    serde_json::json!({
        "subject": subject.join(", "),
        "serial": cert.serial_number().to_bn().ok().and_then(|b| b.to_hex_str().ok()).map(|s| s.to_string()),
        "not_before": cert.not_before().to_string(),
        "not_after": cert.not_after().to_string(),
        "sha256": super::cert_sha256(&cert.to_der().unwrap_or_default()),
    })
}
