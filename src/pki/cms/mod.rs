//! CMS/PKCS#7 helpers: sign profiles (attached), verify `Mdm-Signature`
//! (detached, over the raw body), encrypt profiles to a device.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Ref, X509};

pub mod fast;

use super::{Pki, PkiError};

/// CMS SignedData with the profile bytes attached, signed by the profile-signing identity.
pub fn sign_profile(pki: &Pki, profile: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut certs = Stack::new()?;
    for c in pki.signer.chain.iter().chain(std::iter::once(&pki.ca.cert)) {
        certs.push(c.clone())?;
    }
    // BINARY: never touch line endings, or the signature no longer matches the bytes.
    let p7 = Pkcs7::sign(&pki.signer.cert, &pki.signer.key, &certs, profile, Pkcs7Flags::BINARY)?;
    Ok(p7.to_der()?)
}

/// Verify a detached signature over `content` and return the signer certificate.
/// Only the signature is checked here; the caller checks the chain and binding.
pub fn verify_detached(sig_der: &[u8], content: &[u8]) -> Result<X509, PkiError> {
    let p7 = Pkcs7::from_der(sig_der).map_err(|e| PkiError::BadMessage(format!("signature is not PKCS#7: {e}")))?;
    let none = Stack::new()?;
    let signers = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| PkiError::BadSignature(format!("no signer certificate: {e}")))?;
    let signer = signers
        .iter()
        .next()
        .ok_or_else(|| PkiError::BadSignature("no signer".into()))?
        .to_owned();
    let store = openssl::x509::store::X509StoreBuilder::new()?.build();
    p7.verify(&none, &store, Some(content), None, Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY)
        .map_err(|e| PkiError::BadSignature(e.to_string()))?;
    Ok(signer)
}

/// Sign `content` detached (what a device does for `Mdm-Signature`).
pub fn sign_detached(cert: &X509Ref, key: &openssl::pkey::PKeyRef<openssl::pkey::Private>, content: &[u8]) -> Result<Vec<u8>, PkiError> {
    let certs = Stack::new()?;
    let p7 = Pkcs7::sign(cert, key, &certs, content, Pkcs7Flags::BINARY | Pkcs7Flags::DETACHED)?;
    Ok(p7.to_der()?)
}

/// EnvelopedData (AES-256-CBC) of `data` to one recipient certificate.
pub fn encrypt_to(cert: &X509Ref, data: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut certs = Stack::new()?;
    certs.push(cert.to_owned())?;
    let cms = CmsContentInfo::encrypt(&certs, data, Cipher::aes_256_cbc(), CMSOptions::BINARY)?;
    Ok(cms.to_der()?)
}
