//! A device identity as presented on a request: by `Mdm-Signature` (detached
//! CMS over the raw body), by the TLS client certificate, or by an RFC 9440
//! `Client-Cert` header from a trusted TLS-terminating proxy.

use base64::Engine as _;
use openssl::x509::X509;

use super::cms::fast::{self as fastcms, Fast};
use super::{asn1_unix, cert_sha256, cms, Pki, PkiError};

#[derive(Debug, Clone)]
pub struct Identity {
    /// SHA-256 of the certificate DER (hex): the key of the enrollment binding.
    pub hash: String,
    pub serial: String,
    pub not_after: i64,
}

impl Identity {
    /// Check the certificate chains to our CA and is within its validity.
    pub fn from_cert(pki: &Pki, cert: X509) -> Result<Identity, PkiError> {
        pki.verify_chain(&cert)?;
        let der = cert.to_der()?;
        let serial = cert.serial_number().to_bn()?.to_hex_str()?.to_string();
        Ok(Identity {
            hash: cert_sha256(&der),
            serial,
            not_after: asn1_unix(cert.not_after()),
        })
    }

    /// A certificate by its DER (a SCEP renewal's signer): parsed and
    /// chain-checked once, then cached like an `Mdm-Signature` signer.
    pub fn from_der(pki: &Pki, der: &[u8]) -> Result<Identity, PkiError> {
        match pki.keys.key(der, None) {
            Some(c) => {
                pki.verify_chain_cached(&c)?;
                Ok(Identity {
                    hash: c.hash.clone(),
                    serial: c.serial.clone(),
                    not_after: c.not_after,
                })
            }
            None => Self::from_cert(pki, X509::from_der(der).map_err(|e| PkiError::BadCertificate(e.to_string()))?),
        }
    }

    /// `Mdm-Signature`: base64 DER PKCS#7, detached, over the exact body bytes.
    pub fn from_signature(pki: &Pki, header: &str, body: &[u8]) -> Result<Identity, PkiError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(header.trim())
            .map_err(|e| PkiError::BadMessage(format!("Mdm-Signature is not base64: {e}")))?;
        let signer = match fastcms::verify_detached(&pki.keys, &der, body) {
            Fast::Verified(c) => {
                pki.verify_chain_cached(&c)?;
                return Ok(Identity {
                    hash: c.hash.clone(),
                    serial: c.serial.clone(),
                    not_after: c.not_after,
                });
            }
            // Unusual shapes, and any "no", get OpenSSL's full verification.
            Fast::Unsupported | Fast::Invalid(_) => cms::verify_detached(&der, body)?,
        };
        Self::from_cert(pki, signer)
    }

    /// RFC 9440 `Client-Cert: :<base64 DER>:`.
    pub fn from_client_cert_header(pki: &Pki, header: &str) -> Result<Identity, PkiError> {
        let v = header.trim().trim_matches(':');
        let der = base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|e| PkiError::BadMessage(format!("Client-Cert is not base64: {e}")))?;
        let cert = X509::from_der(&der).map_err(|e| PkiError::BadMessage(format!("Client-Cert is not a certificate: {e}")))?;
        Self::from_cert(pki, cert)
    }
}
