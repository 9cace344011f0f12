//! A fast path for `Mdm-Signature`: the same checks as OpenSSL's PKCS#7
//! verify, on a structure parsed with the RustCrypto `cms` crate, with the
//! signer certificate parsed and chain-checked once and cached by its hash.
//!
//! Why: with OpenSSL 3.0 (Debian 12), `d2i_PKCS7` of a one-certificate
//! signature costs ~0.4 ms of CPU, almost all of it in the provider decoder
//! framework's locks while decoding the embedded certificate's public key
//! (see benches/identity.rs). That alone was over the budget for a whole
//! request. Here a request costs one DER parse, one digest and one RSA/ECDSA
//! verify with a cached key (OpenSSL does the crypto).
//!
//! Anything unusual (BER encoding, no signed attributes, several signers,
//! unknown algorithms) is `Unsupported`, and the caller falls back to
//! OpenSSL's full verification; so does a "does not verify" answer, so this
//! path can only ever make a valid request cheaper, never accept more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;

use crate::pki::asn1::{digest_for, md_named};

pub enum Fast {
    /// Verified: the signer certificate.
    Verified(Arc<CachedCert>),
    /// Well-formed but does not verify.
    Invalid(String),
    /// Not a shape this path handles: use OpenSSL.
    Unsupported,
}

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");

impl CachedCert {
    /// Verify `sig` over data whose digest (by `md`) is `digest`.
    fn verify_digest(&self, md: &'static str, digest: &[u8], sig: &[u8]) -> bool {
        let Ok(mut slot) = self.ctx.lock() else { return false };
        if slot.as_ref().map(|(m, _)| *m) != Some(md) {
            let made = (|| {
                let mut ctx = openssl::pkey_ctx::PkeyCtx::new(&self.key).ok()?;
                ctx.verify_init().ok()?;
                ctx.set_signature_md(md_named(md)?).ok()?;
                Some(ctx)
            })();
            match made {
                Some(ctx) => *slot = Some((md, ctx)),
                None => return false,
            }
        }
        match slot.as_mut() {
            Some((_, ctx)) => ctx.verify(digest, sig).unwrap_or(false),
            None => false,
        }
    }
}

fn signature_alg_ok(oid: &ObjectIdentifier) -> bool {
    matches!(
        oid.to_string().as_str(),
        // rsaEncryption, sha{1,256,384,512}WithRSAEncryption, ecdsa-with-SHA{1,256,384,512}
        "1.2.840.113549.1.1.1"
            | "1.2.840.113549.1.1.5"
            | "1.2.840.113549.1.1.11"
            | "1.2.840.113549.1.1.12"
            | "1.2.840.113549.1.1.13"
            | "1.2.840.10045.4.1"
            | "1.2.840.10045.4.3.2"
            | "1.2.840.10045.4.3.3"
            | "1.2.840.10045.4.3.4"
    )
}

/// A signer certificate parsed once (in Rust: an OpenSSL `d2i_X509` costs
/// ~0.4 ms in the decoder framework on OpenSSL 3.0).
pub struct CachedCert {
    pub der: Vec<u8>,
    pub key: PKey<Public>,
    /// A verify context kept ready per digest, so a request costs one public-key
    /// operation and no OpenSSL algorithm fetch.
    ctx: Mutex<Option<(&'static str, openssl::pkey_ctx::PkeyCtx<Public>)>>,
    /// SHA-256 of the DER, hex.
    pub hash: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    /// Issuer and serial, to match a SignerInfo's `sid`.
    pub issuer: x509_cert::name::Name,
    pub serial_number: x509_cert::serial_number::SerialNumber,
}

impl CachedCert {
    fn parse(der: &[u8], cert: &x509_cert::Certificate) -> Option<CachedCert> {
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        let key = match crate::pki::asn1::rsa_public(spki) {
            Some((k, _)) => k,
            None => PKey::public_key_from_der(&spki.to_der().ok()?).ok()?,
        };
        let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        Some(CachedCert {
            der: der.to_vec(),
            key,
            ctx: Mutex::new(None),
            hash: crate::pki::cert_sha256(der),
            serial: crate::pki::asn1::serial_hex(tbs.serial_number.as_bytes()),
            not_before: secs(&tbs.validity.not_before),
            not_after: secs(&tbs.validity.not_after),
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        })
    }

    /// The certificate as OpenSSL's type (parsed on demand: slow path only).
    pub fn x509(&self) -> Option<X509> {
        X509::from_der(&self.der).ok()
    }
}

/// Signer certificates by DER, parsed once (bounded).
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<Vec<u8>, Arc<CachedCert>>>,
}

const MAX_CACHED: usize = 200_000;

impl KeyCache {
    /// The cached certificate for `cert_der` (parsed here if `parsed` is not given).
    pub fn key(&self, cert_der: &[u8], parsed: Option<&x509_cert::Certificate>) -> Option<Arc<CachedCert>> {
        if let Some(k) = self.keys.lock().ok()?.get(cert_der) {
            return Some(k.clone());
        }
        let k = Arc::new(match parsed {
            Some(c) => CachedCert::parse(cert_der, c)?,
            None => CachedCert::parse(cert_der, &x509_cert::Certificate::from_der(cert_der).ok()?)?,
        });
        let mut m = self.keys.lock().ok()?;
        if m.len() >= MAX_CACHED {
            m.clear();
        }
        m.insert(cert_der.to_vec(), k.clone());
        Some(k)
    }
}

/// SignedData with the certificates left as raw DER: a known signer is found
/// in the cache by its bytes without decoding the certificate again.
#[derive(der::Sequence)]
struct LazySignedData<'a> {
    version: cms::content_info::CmsVersion,
    digest_algorithms: der::AnyRef<'a>,
    encap_content_info: cms::signed_data::EncapsulatedContentInfo,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    certificates: Option<der::asn1::SetOfVec<der::AnyRef<'a>>>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    crls: Option<der::AnyRef<'a>>,
    signer_infos: cms::signed_data::SignerInfos,
}

#[derive(der::Sequence)]
struct LazyContentInfo<'a> {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: der::AnyRef<'a>,
}

/// Verify a detached signature over `content`.
pub fn verify_detached(cache: &KeyCache, sig_der: &[u8], content: &[u8]) -> Fast {
    let Ok(ci) = LazyContentInfo::from_der(sig_der) else {
        return Fast::Unsupported;
    };
    if ci.content_type != ID_SIGNED_DATA {
        return Fast::Unsupported;
    }
    let Ok(sd) = ci.content.decode_as::<LazySignedData>() else {
        return Fast::Unsupported;
    };
    if sd.encap_content_info.econtent.is_some() || sd.encap_content_info.econtent_type != ID_DATA {
        return Fast::Unsupported; // not detached over id-data
    }
    let mut signers = sd.signer_infos.0.iter();
    let (Some(si), None) = (signers.next(), signers.next()) else {
        return Fast::Unsupported;
    };
    let cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return Fast::Unsupported;
    };
    let Some(certs) = &sd.certificates else { return Fast::Unsupported };
    // The signer: a cached certificate whose issuer and serial match, else decode each.
    let mut found = None;
    for c in certs.iter() {
        let Ok(cert_der) = c.to_der() else { return Fast::Unsupported };
        let Some(k) = cache.key(&cert_der, None) else { continue };
        if k.issuer == ias.issuer && k.serial_number == ias.serial_number {
            if found.is_some() {
                return Fast::Unsupported;
            }
            found = Some(k);
        }
    }
    let Some(key) = found else { return Fast::Unsupported };
    let Some((md, body_digest)) = digest_for(&si.digest_alg.oid, content) else {
        return Fast::Unsupported;
    };
    if !signature_alg_ok(&si.signature_algorithm.oid) {
        return Fast::Unsupported;
    }
    let Some(attrs) = &si.signed_attrs else { return Fast::Unsupported };
    let mut message_digest = None;
    for a in attrs.iter() {
        if a.oid == ID_MESSAGE_DIGEST {
            message_digest = a.values.iter().next().and_then(|v| v.decode_as::<der::asn1::OctetString>().ok());
        } else if a.oid == ID_CONTENT_TYPE {
            let ok = a.values.iter().next().and_then(|v| v.decode_as::<ObjectIdentifier>().ok()) == Some(ID_DATA);
            if !ok {
                return Fast::Invalid("contentType attribute is not id-data".into());
            }
        }
    }
    let Some(message_digest) = message_digest else {
        return Fast::Unsupported;
    };
    if message_digest.as_bytes() != &body_digest[..] {
        return Fast::Invalid("messageDigest does not match the body".into());
    }
    let Ok(signed) = attrs.to_der() else { return Fast::Unsupported };
    let Some((_, signed_digest)) = digest_for(&si.digest_alg.oid, &signed) else {
        return Fast::Unsupported;
    };
    let verified = key.verify_digest(md, &signed_digest, si.signature.as_bytes());
    if verified {
        Fast::Verified(key)
    } else {
        Fast::Invalid("signature does not verify".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> (X509, openssl::pkey::PKey<openssl::pkey::Private>) {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "device").unwrap();
        let n = n.build();
        (crate::sim::pki::self_signed(&key, &n).unwrap(), key)
    }

    #[test]
    fn agrees_with_openssl() {
        let (cert, key) = signer();
        let cache = KeyCache::default();
        let body = b"<plist><dict><key>Status</key><string>Idle</string></dict></plist>";
        let sig = crate::pki::cms::sign_detached(&cert, &key, body).unwrap();
        match verify_detached(&cache, &sig, body) {
            Fast::Verified(c) => assert_eq!(c.der, cert.to_der().unwrap()),
            _ => panic!("a valid signature must verify"),
        }
        assert!(crate::pki::cms::verify_detached(&sig, body).is_ok());
        // Cached the second time, same answer.
        assert!(matches!(verify_detached(&cache, &sig, body), Fast::Verified(_)));
        let mut other = body.to_vec();
        other[10] ^= 1;
        assert!(matches!(verify_detached(&cache, &sig, &other), Fast::Invalid(_)));
        assert!(crate::pki::cms::verify_detached(&sig, &other).is_err());
        // A signature from another key with this certificate's identity.
        let (_, key2) = signer();
        let forged = crate::pki::cms::sign_detached(&cert, &key2, body);
        if let Ok(f) = forged {
            assert!(!matches!(verify_detached(&cache, &f, body), Fast::Verified(_)));
        }
        assert!(matches!(verify_detached(&cache, b"garbage", body), Fast::Unsupported));
        // An attached (non-detached) signature is left to OpenSSL.
        let attached = openssl::pkcs7::Pkcs7::sign(
            &cert,
            &key,
            &openssl::stack::Stack::new().unwrap(),
            body,
            openssl::pkcs7::Pkcs7Flags::BINARY,
        )
        .unwrap();
        assert!(matches!(
            verify_detached(&cache, &attached.to_der().unwrap(), body),
            Fast::Unsupported
        ));
    }
}
