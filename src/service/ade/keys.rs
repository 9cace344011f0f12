//! The key pair ABM encrypts server tokens to: made once, kept sealed in the
//! shared settings (every instance reads the same), its certificate the
//! "public key" an admin uploads to Apple Business Manager. And opening the
//! server-token file ABM hands back: an S/MIME (PKCS#7 enveloped-data)
//! message to that certificate whose plaintext holds the token's JSON.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509};

use crate::ade::ServerToken;
use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::service::ServiceError;
use crate::store::Store;

/// The shared setting holding the sealed key and certificate (PEM).
pub const KEY_SETTING: &str = "ade.key";

/// Largest server-token file read (ABM's are about 3 KB).
pub const MAX_TOKEN_FILE: usize = 64 * 1024;

pub struct AdeKey {
    key: PKey<Private>,
    pub cert: X509,
}

impl std::fmt::Debug for AdeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdeKey")
            .field("cert", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

/// Why a server-token file was not taken (400, in words an admin can act on).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("the server token file is larger than {MAX_TOKEN_FILE} bytes")]
    TooLarge,
    #[error("this is not a server token file from Apple Business Manager (an S/MIME encrypted message): {0}")]
    NotSmime(String),
    #[error("the server token file is not encrypted to this server's public key: download a new token from Apple Business Manager after uploading the certificate from `mdmd ade public-key` ({0})")]
    OtherKey(String),
    #[error("the server token inside the file is not usable: {0}")]
    BadToken(String),
    #[error("the server token expired at {0}: download a new one from Apple Business Manager")]
    Expired(String),
}

fn internal(what: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> ServiceError {
    move |e| ServiceError::internal(what, e)
}

impl AdeKey {
    /// The key pair every instance shares: read it, or make it (the first
    /// instance to store it wins; the others take that one).
    pub async fn load_or_create(store: &dyn Store, secrets: &SecretBox, host: &str) -> Result<AdeKey, ServiceError> {
        if let Some(s) = store.setting(KEY_SETTING).await? {
            return Self::open(secrets, &s.value);
        }
        let fresh = Self::generate(host)?;
        let mut pem = fresh.cert.to_pem().map_err(internal("encoding the ADE certificate"))?;
        pem.extend(fresh.key.private_key_to_pem_pkcs8().map_err(internal("encoding the ADE key"))?);
        let sealed = secrets
            .seal(&pem, KEY_SETTING)
            .map_err(|e| ServiceError::internal("sealing the ADE key", e))?;
        let stored = store.setting_or_insert(KEY_SETTING, sealed.into_bytes(), now()).await?;
        Self::open(secrets, &stored.value)
    }

    fn open(secrets: &SecretBox, sealed: &[u8]) -> Result<AdeKey, ServiceError> {
        let sealed = std::str::from_utf8(sealed).map_err(|e| ServiceError::internal("the stored ADE key is corrupt", e))?;
        let pem = secrets
            .open(sealed, KEY_SETTING)
            .map_err(|e| ServiceError::internal("opening the stored ADE key (same certs/secrets.keys on every instance?)", e))?;
        let cert = X509::from_pem(&pem).map_err(internal("reading the stored ADE certificate"))?;
        let key = PKey::private_key_from_pem(&pem).map_err(internal("reading the stored ADE key"))?;
        Ok(AdeKey { key, cert })
    }

    fn generate(host: &str) -> Result<AdeKey, ServiceError> {
        let rsa = Rsa::generate(2048).map_err(internal("making the ADE key"))?;
        let key = PKey::from_rsa(rsa).map_err(internal("making the ADE key"))?;
        let mut name = X509NameBuilder::new().map_err(internal("naming the ADE certificate"))?;
        let cn: String = format!("mdmd ADE {host}").chars().take(64).collect();
        name.append_entry_by_text("CN", &cn)
            .map_err(internal("naming the ADE certificate"))?;
        let name = name.build();
        let mut b = X509::builder().map_err(internal("building the ADE certificate"))?;
        b.set_version(2).map_err(internal("building the ADE certificate"))?;
        let mut serial = BigNum::new().map_err(internal("building the ADE certificate"))?;
        serial
            .rand(64, MsbOption::MAYBE_ZERO, false)
            .map_err(internal("building the ADE certificate"))?;
        let serial = serial.to_asn1_integer().map_err(internal("building the ADE certificate"))?;
        b.set_serial_number(&serial).map_err(internal("building the ADE certificate"))?;
        b.set_subject_name(&name).map_err(internal("building the ADE certificate"))?;
        b.set_issuer_name(&name).map_err(internal("building the ADE certificate"))?;
        b.set_pubkey(&key).map_err(internal("building the ADE certificate"))?;
        let from = Asn1Time::days_from_now(0).map_err(internal("building the ADE certificate"))?;
        let until = Asn1Time::days_from_now(3650).map_err(internal("building the ADE certificate"))?;
        b.set_not_before(&from).map_err(internal("building the ADE certificate"))?;
        b.set_not_after(&until).map_err(internal("building the ADE certificate"))?;
        b.sign(&key, MessageDigest::sha256())
            .map_err(internal("signing the ADE certificate"))?;
        Ok(AdeKey { key, cert: b.build() })
    }

    /// The certificate to upload to Apple Business Manager (PEM).
    pub fn cert_pem(&self) -> Result<Vec<u8>, ServiceError> {
        self.cert.to_pem().map_err(internal("encoding the ADE certificate"))
    }

    /// Open a server-token file: decrypt it with our key and read the token.
    /// An expired token is refused.
    pub fn open_token_file(&self, file: &[u8]) -> Result<ServerToken, TokenFileError> {
        if file.len() > MAX_TOKEN_FILE {
            return Err(TokenFileError::TooLarge);
        }
        let p7 = parse_enveloped(file)?;
        let plain = p7
            .decrypt(&self.key, &self.cert, Pkcs7Flags::empty())
            .map_err(|e| TokenFileError::OtherKey(first_reason(&e)))?;
        let token = ServerToken::from_plaintext(&plain).map_err(|e| TokenFileError::BadToken(e.to_string()))?;
        let expires = token.expires_at().map_err(|e| TokenFileError::BadToken(e.to_string()))?;
        if expires <= now() {
            return Err(TokenFileError::Expired(token.access_token_expiry.clone()));
        }
        Ok(token)
    }
}

/// The message, as ABM writes it (S/MIME with headers), as PEM, or as DER.
fn parse_enveloped(file: &[u8]) -> Result<Pkcs7, TokenFileError> {
    let text = std::str::from_utf8(file).ok();
    let p7 = if text.is_some_and(|t| t.contains("-----BEGIN PKCS7-----")) {
        Pkcs7::from_pem(file).map_err(|e| TokenFileError::NotSmime(first_reason(&e)))?
    } else if text.is_some_and(|t| t.to_ascii_lowercase().contains("content-type:")) {
        Pkcs7::from_smime(file).map_err(|e| TokenFileError::NotSmime(first_reason(&e)))?.0
    } else {
        Pkcs7::from_der(file).map_err(|e| TokenFileError::NotSmime(first_reason(&e)))?
    };
    if p7.type_().map(|t| t.nid()) != Some(openssl::nid::Nid::PKCS7_ENVELOPED) {
        return Err(TokenFileError::NotSmime("the message is not encrypted (enveloped-data)".into()));
    }
    Ok(p7)
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_owned))
        .unwrap_or_else(|| "unreadable".into())
}
