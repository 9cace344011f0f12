//! The organisation's MDM push certificate: reading it (PKCS#12, including
//! old RC2-encrypted files, or PEM certificate + key), its topic (the
//! subject's UID, `com.apple.mgmt.…`), keeping it on disk (key 0600), and
//! making the signed push-certificate request that Apple's portal accepts.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::x509::{X509Req, X509};

use super::PushError;

/// A push certificate with its key.
#[derive(Clone)]
pub struct PushCert {
    pub cert: X509,
    pub key: PKey<Private>,
    /// Intermediates that came with it.
    pub chain: Vec<X509>,
    pub topic: String,
    pub not_after: i64,
}

impl std::fmt::Debug for PushCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCert")
            .field("topic", &self.topic)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The topic of an MDM push certificate: its subject's UID.
pub fn topic_of(cert: &X509) -> Result<String, PushError> {
    let uid = cert
        .subject_name()
        .entries_by_nid(Nid::USERID)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .ok_or_else(|| PushError::Certificate("the certificate has no UID in its subject: not an MDM push certificate".into()))?;
    if !uid.starts_with("com.apple.mgmt.") {
        return Err(PushError::Certificate(format!(
            "the certificate's UID {uid:?} does not start with com.apple.mgmt.: not an MDM push certificate"
        )));
    }
    Ok(uid)
}

impl PushCert {
    fn new(cert: X509, key: PKey<Private>, chain: Vec<X509>) -> Result<PushCert, PushError> {
        if !cert
            .public_key()
            .map_err(|e| PushError::Certificate(e.to_string()))?
            .public_eq(&key)
        {
            return Err(PushError::Certificate("the private key does not belong to the certificate".into()));
        }
        let topic = topic_of(&cert)?;
        let not_after = crate::pki::asn1_unix(cert.not_after());
        Ok(PushCert {
            cert,
            key,
            chain,
            topic,
            not_after,
        })
    }

    /// From PKCS#12 (DER) with its password. RC2-encrypted files need
    /// OpenSSL's legacy provider, which is loaded here.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<PushCert, PushError> {
        crate::pki::ossl::load_providers();
        let p12 = openssl::pkcs12::Pkcs12::from_der(der).map_err(|e| PushError::Certificate(format!("not PKCS#12: {e}")))?;
        let parsed = p12
            .parse2(password)
            .map_err(|e| PushError::Certificate(format!("cannot open the PKCS#12 (wrong password?): {e}")))?;
        let cert = parsed
            .cert
            .ok_or_else(|| PushError::Certificate("the PKCS#12 has no certificate".into()))?;
        let key = parsed
            .pkey
            .ok_or_else(|| PushError::Certificate("the PKCS#12 has no private key".into()))?;
        let chain = parsed.ca.map(|s| s.into_iter().collect()).unwrap_or_default();
        PushCert::new(cert, key, chain)
    }

    /// From PEM: the certificate (first), any intermediates, and the private
    /// key, in one buffer; an encrypted key needs `password`.
    pub fn from_pem(pem: &[u8], password: Option<&str>) -> Result<PushCert, PushError> {
        crate::pki::ossl::load_providers();
        let certs = X509::stack_from_pem(pem).map_err(|e| PushError::Certificate(format!("no PEM certificate: {e}")))?;
        let mut certs = certs.into_iter();
        let cert = certs.next().ok_or_else(|| PushError::Certificate("no PEM certificate".into()))?;
        if !pem.windows(17).any(|w| w == b"PRIVATE KEY-----\n" || w == b"PRIVATE KEY-----\r") {
            return Err(PushError::Certificate(
                "the PEM holds the certificate but no private key: give the key too (mdmd push-cert set CERT.pem --key push.key, \
                 the key `mdmd push-cert request` wrote; or the key appended to the same file)"
                    .into(),
            ));
        }
        let key = match password {
            Some(p) => PKey::private_key_from_pem_passphrase(pem, p.as_bytes()),
            None => PKey::private_key_from_pem(pem),
        }
        .map_err(|e| PushError::Certificate(format!("no usable PEM private key (encrypted? pass its password): {e}")))?;
        PushCert::new(cert, key, certs.collect())
    }

    /// Certificate + chain as PEM.
    pub fn cert_pem(&self) -> Result<Vec<u8>, PushError> {
        let mut out = self.cert.to_pem().map_err(|e| PushError::Certificate(e.to_string()))?;
        for c in &self.chain {
            out.extend(c.to_pem().map_err(|e| PushError::Certificate(e.to_string()))?);
        }
        Ok(out)
    }

    pub fn serial_hex(&self) -> String {
        self.cert
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    pub fn subject(&self) -> String {
        crate::pki::ca::describe(&self.cert)["subject"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Where the push certificate lives: `push-cert.pem` and `push-key.pem` (0600).
pub struct PushCertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PushCertFiles {
    pub fn in_dir(dir: &Path) -> PushCertFiles {
        PushCertFiles {
            cert: dir.join("push-cert.pem"),
            key: dir.join("push-key.pem"),
        }
    }

    pub fn load(&self) -> Result<Option<PushCert>, PushError> {
        let (cert, key) = match (std::fs::read(&self.cert), std::fs::read(&self.key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(PushError::Io(e.to_string())),
        };
        let mut all = cert;
        all.extend_from_slice(&key);
        PushCert::from_pem(&all, None).map(Some)
    }

    /// Write both files, each atomically (key first), fsynced.
    pub fn save(&self, pc: &PushCert) -> Result<(), PushError> {
        let key = pc
            .key
            .private_key_to_pem_pkcs8()
            .map_err(|e| PushError::Certificate(e.to_string()))?;
        replace_file(&self.key, &key)?;
        replace_file(&self.cert, &pc.cert_pem()?)
    }
}

fn replace_file(path: &Path, contents: &[u8]) -> Result<(), PushError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| PushError::Io(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// A CSR for a new push certificate, for `key`.
pub fn csr(key: &PKey<Private>, organization: &str) -> Result<X509Req, PushError> {
    let e = |e: openssl::error::ErrorStack| PushError::Certificate(e.to_string());
    let mut name = openssl::x509::X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_text("CN", "mdmd MDM push").map_err(e)?;
    name.append_entry_by_text("O", organization).map_err(e)?;
    let mut b = X509Req::builder().map_err(e)?;
    b.set_subject_name(&name.build()).map_err(e)?;
    b.set_pubkey(key).map_err(e)?;
    b.sign(key, MessageDigest::sha256()).map_err(e)?;
    Ok(b.build())
}

/// The push-certificate request file Apple's portal accepts: a base64
/// plist with the CSR (base64 DER), the MDM vendor certificate chain (PEM)
/// and the vendor's SHA-256 RSA signature over the CSR's DER (base64).
/// `vendor_chain` is the vendor certificate and its issuers (Apple's WWDR
/// intermediate and root, when the admin has them).
pub fn vendor_signed_request(csr: &X509Req, vendor_key: &PKey<Private>, vendor_chain: &[X509]) -> Result<Vec<u8>, PushError> {
    let e = |e: openssl::error::ErrorStack| PushError::Certificate(e.to_string());
    let vendor = vendor_chain
        .first()
        .ok_or_else(|| PushError::Certificate("no vendor certificate".into()))?;
    if !vendor.public_key().map_err(e)?.public_eq(vendor_key) {
        return Err(PushError::Certificate(
            "the vendor key does not belong to the vendor certificate".into(),
        ));
    }
    let csr_der = csr.to_der().map_err(e)?;
    let mut signer = Signer::new(MessageDigest::sha256(), vendor_key).map_err(e)?;
    signer.update(&csr_der).map_err(e)?;
    let sig = signer.sign_to_vec().map_err(e)?;
    let mut chain = String::new();
    for c in vendor_chain {
        chain.push_str(&String::from_utf8_lossy(&c.to_pem().map_err(e)?));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut d = plist::Dictionary::new();
    d.insert("PushCertRequestCSR".into(), b64.encode(&csr_der).into());
    d.insert("PushCertCertificateChain".into(), chain.into());
    d.insert("PushCertSignature".into(), b64.encode(sig).into());
    Ok(b64.encode(crate::protocol::to_xml(&d)).into_bytes())
}
