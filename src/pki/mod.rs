//! PKI: the built-in CA (create or load, issue, verify device identities),
//! SCEP (RFC 8894), and CMS helpers for profiles and `Mdm-Signature`.
//! All crypto is OpenSSL through the `openssl` crate; the few calls it does
//! not wrap live in `ossl`, the project's only `unsafe` module.

pub mod asn1;
pub mod ca;
pub mod cms;
pub mod identity;
pub mod ossl;
pub mod revocation;
pub mod scep;
pub mod secrets;
pub mod tls;

pub use ca::{CaConfig, Pki};
pub use identity::Identity;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("bad message: {0}")]
    BadMessage(String),
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    #[error("certificate not acceptable: {0}")]
    BadCertificate(String),
    #[error("{0}")]
    Io(String),
}

impl From<openssl::error::ErrorStack> for PkiError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        PkiError::Crypto(e.to_string())
    }
}

impl From<std::io::Error> for PkiError {
    fn from(e: std::io::Error) -> Self {
        PkiError::Io(e.to_string())
    }
}

/// Write a new secret file, 0600 from its creation, and flush it to disk.
pub fn write_secret(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// SHA-256 of a certificate's DER, as lower-case hex.
pub fn cert_sha256(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// SHA-256 of a string, as lower-case hex (how one-time secrets are looked up).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Unix time of an ASN.1 time.
pub fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = match openssl::asn1::Asn1Time::from_unix(0) {
        Ok(e) => e,
        Err(_) => return 0,
    };
    match epoch.diff(t) {
        Ok(d) => d.days as i64 * 86_400 + d.secs as i64,
        Err(_) => 0,
    }
}

/// A random secret as hex (`bytes` random bytes).
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}
