//! The one module with `unsafe`: OpenSSL calls the `openssl` crate does not
//! wrap, all of them for SCEP (RFC 8894) PKCS#7 messages:
//!
//! - reading the signed attributes of a SignerInfo (messageType, pkiStatus,
//!   failInfo, transactionID, senderNonce, recipientNonce);
//! - building a SignedData whose SignerInfo carries such attributes (CertRep);
//! - building a degenerate certs-only SignedData;
//! - finding the content-encryption cipher of an EnvelopedData, so the reply
//!   uses what the client used.
//!
//! Every pointer here comes from an owned `openssl` object that outlives the
//! call, or is created and freed within the function. Tested in `scep` tests
//! and against Debian's `scepclient` in `tests/pki.rs`.
//!
//! The crate denies `unsafe_code` (src/lib.rs); this module alone allows it.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use foreign_types::ForeignTypeRef;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::Pkcs7Ref;
use openssl::pkey::{PKeyRef, Private};
use openssl::symm::Cipher;
use openssl::x509::X509Ref;
use openssl_sys as ffi;

use super::PkiError;

/// The SCEP attribute OIDs (2.16.840.1.113733.1.9.*) registered with OpenSSL.
#[derive(Debug, Clone, Copy)]
pub struct ScepNids {
    pub message_type: Nid,
    pub pki_status: Nid,
    pub fail_info: Nid,
    pub sender_nonce: Nid,
    pub recipient_nonce: Nid,
    pub transaction_id: Nid,
}

fn nid_for(oid: &str, sn: &str) -> Nid {
    if let Ok(obj) = openssl::asn1::Asn1Object::from_str(oid) {
        let n = obj.nid();
        if n != Nid::UNDEF {
            return n;
        }
    }
    Nid::create(oid, sn, sn).unwrap_or(Nid::UNDEF)
}

pub fn nids() -> &'static ScepNids {
    static N: OnceLock<ScepNids> = OnceLock::new();
    N.get_or_init(|| ScepNids {
        message_type: nid_for("2.16.840.1.113733.1.9.2", "scepMessageType"),
        pki_status: nid_for("2.16.840.1.113733.1.9.3", "scepPkiStatus"),
        fail_info: nid_for("2.16.840.1.113733.1.9.4", "scepFailInfo"),
        sender_nonce: nid_for("2.16.840.1.113733.1.9.5", "scepSenderNonce"),
        recipient_nonce: nid_for("2.16.840.1.113733.1.9.6", "scepRecipientNonce"),
        transaction_id: nid_for("2.16.840.1.113733.1.9.7", "scepTransId"),
    })
}

/// Load OpenSSL's default and legacy providers (DES and RC2 live in legacy),
/// default first, and keep both for the life of the process.
pub fn load_providers() {
    static P: OnceLock<Vec<openssl::provider::Provider>> = OnceLock::new();
    P.get_or_init(|| {
        let mut v = Vec::new();
        for name in ["default", "legacy"] {
            match openssl::provider::Provider::try_load(None, name, true) {
                Ok(p) => v.push(p),
                Err(e) => {
                    tracing::warn!(provider = name, error = %e, "OpenSSL provider not loaded")
                }
            }
        }
        v
    });
}

/// A signed attribute value as SCEP encodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// PrintableString (messageType, pkiStatus, failInfo, transactionID).
    Printable(String),
    /// OCTET STRING (nonces).
    Octets(Vec<u8>),
}

/// Read one signed attribute of the first SignerInfo.
pub fn signed_attribute(p7: &Pkcs7Ref, nid: Nid) -> Option<AttrValue> {
    // SAFETY: p7 is a live PKCS7; the signer-info stack and the returned
    // ASN1_TYPE are owned by it and only read while `p7` is borrowed.
    unsafe {
        let p = p7.as_ptr();
        if ffi::OBJ_obj2nid((*p).type_) != Nid::PKCS7_SIGNED.as_raw() {
            return None;
        }
        let sis = ffi::PKCS7_get_signer_info(p);
        if sis.is_null() || ffi::OPENSSL_sk_num(sis as *const _) < 1 {
            return None;
        }
        let si = ffi::OPENSSL_sk_value(sis as *const _, 0) as *mut ffi::PKCS7_SIGNER_INFO;
        let at = ffi::PKCS7_get_signed_attribute(si, nid.as_raw());
        if at.is_null() {
            return None;
        }
        let ty = (*at).type_;
        let s = (*at).value.ptr as *const ffi::ASN1_STRING;
        if s.is_null() {
            return None;
        }
        let len = ffi::ASN1_STRING_length(s);
        let data = ffi::ASN1_STRING_get0_data(s);
        if len < 0 || data.is_null() {
            return None;
        }
        let bytes = std::slice::from_raw_parts(data, len as usize).to_vec();
        match ty {
            ffi::V_ASN1_OCTET_STRING => Some(AttrValue::Octets(bytes)),
            _ => Some(AttrValue::Printable(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }
}

/// The content-encryption cipher of an EnvelopedData.
pub fn envelope_cipher(p7: &Pkcs7Ref) -> Option<Cipher> {
    // SAFETY: read-only walk of a live PKCS7 of type enveloped; each pointer is
    // checked for null before use and owned by `p7`.
    unsafe {
        let p = p7.as_ptr();
        if ffi::OBJ_obj2nid((*p).type_) != Nid::PKCS7_ENVELOPED.as_raw() {
            return None;
        }
        let env = (*p).d.enveloped;
        if env.is_null() || (*env).enc_data.is_null() || (*(*env).enc_data).algorithm.is_null() {
            return None;
        }
        let mut obj: *const ffi::ASN1_OBJECT = ptr::null();
        ffi::X509_ALGOR_get0(&mut obj, ptr::null_mut(), ptr::null_mut(), (*(*env).enc_data).algorithm);
        if obj.is_null() {
            return None;
        }
        Cipher::from_nid(Nid::from_raw(ffi::OBJ_obj2nid(obj)))
    }
}

struct Owned(*mut ffi::PKCS7);
impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we own this PKCS7 and free it once.
        unsafe { ffi::PKCS7_free(self.0) }
    }
}

fn check(ok: bool, what: &str) -> Result<(), PkiError> {
    if ok {
        Ok(())
    } else {
        Err(PkiError::Crypto(format!("{what}: {}", openssl::error::ErrorStack::get())))
    }
}

fn to_der(p7: &Owned) -> Result<Vec<u8>, PkiError> {
    // SAFETY: p7.0 is a complete PKCS7; Pkcs7::from_ptr takes ownership of a
    // duplicate made by i2d/d2i, so we serialise via a borrowed ref instead.
    let r = unsafe { Pkcs7Ref::from_ptr(p7.0) };
    r.to_der().map_err(|e| PkiError::Crypto(e.to_string()))
}

/// A degenerate certs-only SignedData (as `openssl crl2pkcs7 -nocrl` writes).
pub fn degenerate(certs: &[&X509Ref]) -> Result<Vec<u8>, PkiError> {
    // SAFETY: a fresh PKCS7 is created, filled through OpenSSL's own setters
    // (which up-ref the certificates) and freed by `Owned`.
    unsafe {
        let p7 = Owned(ffi::PKCS7_new());
        check(!p7.0.is_null(), "PKCS7_new")?;
        check(ffi::PKCS7_set_type(p7.0, Nid::PKCS7_SIGNED.as_raw()) == 1, "PKCS7_set_type")?;
        check(ffi::PKCS7_content_new(p7.0, Nid::PKCS7_DATA.as_raw()) == 1, "PKCS7_content_new")?;
        for c in certs {
            check(ffi::PKCS7_add_certificate(p7.0, c.as_ptr()) == 1, "PKCS7_add_certificate")?;
        }
        to_der(&p7)
    }
}

/// A SignedData over `content` (attached, eContentType id-data) by `cert`/`key`
/// whose SignerInfo carries `attrs` as signed attributes (plus contentType;
/// OpenSSL adds messageDigest and signingTime).
pub fn sign_with_attributes(
    content: &[u8],
    cert: &X509Ref,
    key: &PKeyRef<Private>,
    md: MessageDigest,
    attrs: &[(Nid, AttrValue)],
) -> Result<Vec<u8>, PkiError> {
    // SAFETY: as in `degenerate`; attribute values are created here and
    // ownership passes to the SignerInfo on success (freed by us on failure).
    unsafe {
        let p7 = Owned(ffi::PKCS7_new());
        check(!p7.0.is_null(), "PKCS7_new")?;
        check(ffi::PKCS7_set_type(p7.0, Nid::PKCS7_SIGNED.as_raw()) == 1, "PKCS7_set_type")?;
        let si = ffi::PKCS7_add_signature(p7.0, cert.as_ptr(), key.as_ptr(), md.as_ptr());
        check(!si.is_null(), "PKCS7_add_signature")?;
        check(ffi::PKCS7_add_certificate(p7.0, cert.as_ptr()) == 1, "PKCS7_add_certificate")?;
        let ct = ffi::OBJ_nid2obj(Nid::PKCS7_DATA.as_raw());
        check(
            ffi::PKCS7_add_signed_attribute(si, Nid::PKCS9_CONTENTTYPE.as_raw(), ffi::V_ASN1_OBJECT, ct as *mut c_void) == 1,
            "contentType",
        )?;
        for (nid, v) in attrs {
            let (ty, bytes): (c_int, &[u8]) = match v {
                AttrValue::Printable(s) => (ffi::V_ASN1_PRINTABLESTRING, s.as_bytes()),
                AttrValue::Octets(b) => (ffi::V_ASN1_OCTET_STRING, b.as_slice()),
            };
            let s = ffi::ASN1_STRING_type_new(ty);
            check(!s.is_null(), "ASN1_STRING_type_new")?;
            if ffi::ASN1_STRING_set(s, bytes.as_ptr() as *const c_void, bytes.len() as c_int) != 1
                || ffi::PKCS7_add_signed_attribute(si, nid.as_raw(), ty, s as *mut c_void) != 1
            {
                ffi::ASN1_STRING_free(s);
                return Err(PkiError::Crypto(format!(
                    "signed attribute {nid:?}: {}",
                    openssl::error::ErrorStack::get()
                )));
            }
        }
        check(ffi::PKCS7_content_new(p7.0, Nid::PKCS7_DATA.as_raw()) == 1, "PKCS7_content_new")?;
        let bio = ffi::PKCS7_dataInit(p7.0, ptr::null_mut());
        check(!bio.is_null(), "PKCS7_dataInit")?;
        let written = if content.is_empty() {
            0
        } else {
            ffi::BIO_write(bio, content.as_ptr() as *const c_void, content.len() as c_int)
        };
        let finished = written == content.len() as c_int && ffi::PKCS7_dataFinal(p7.0, bio) == 1;
        ffi::BIO_free_all(bio);
        check(finished, "PKCS7_dataFinal")?;
        to_der(&p7)
    }
}

extern "C" {
    // In libcrypto, not bound by openssl-sys (PKCS7_set_detached is a macro over it).
    fn PKCS7_ctrl(p7: *mut ffi::PKCS7, cmd: c_int, larg: std::os::raw::c_long, parg: *mut std::os::raw::c_char) -> std::os::raw::c_long;
}

/// A detached SignedData over `content` with digest `md` (an `Mdm-Signature`
/// as clients that still use SHA-1 make it; `Pkcs7::sign` always uses SHA-256).
pub fn sign_detached_with(content: &[u8], cert: &X509Ref, key: &PKeyRef<Private>, md: MessageDigest) -> Result<Vec<u8>, PkiError> {
    let der = sign_with_attributes(content, cert, key, md, &[])?;
    let p7 = openssl::pkcs7::Pkcs7::from_der(&der)?;
    // SAFETY: `p7` is a valid, owned PKCS7 SignedData; PKCS7_OP_SET_DETACHED_SIGNATURE (1)
    // only drops the embedded content.
    unsafe {
        check(PKCS7_ctrl(p7.as_ptr(), 1, 1, ptr::null_mut()) == 1, "PKCS7_set_detached")?;
    }
    Ok(p7.to_der()?)
}
