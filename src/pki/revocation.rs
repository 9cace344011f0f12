//! Revocation of certificates mdmd did not issue (derived credentials):
//! where to ask — the OCSP responders of the Authority Information Access
//! extension and the CRL distribution points — the OCSP request, and what a
//! CRL or an OCSP response says about one certificate, verified against the
//! certificate's issuer. Parsing and signature checks are OpenSSL's
//! (`X509Crl`, `openssl::ocsp`); nothing here touches the network (the
//! fetching, with its bounds, is `service::credentials::revocation`).
//!
//! Not handled: delta CRLs, indirect CRLs (entries for another issuer),
//! LDAP distribution points (only `http`/`https` URLs are kept), OCSP nonces
//! (the `openssl` crate does not wrap them; freshness comes from
//! thisUpdate/nextUpdate, as with RFC 5019 responders that ignore nonces).

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::ocsp::{OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{CrlStatus, X509Crl, X509CrlRef, X509Ref, X509VerifyResult, X509};
use serde::{Deserialize, Serialize};

/// At most this many URLs of each kind are taken from one certificate.
pub const MAX_URLS: usize = 2;
/// A URL longer than this is ignored.
const MAX_URL_LEN: usize = 2048;
/// An OCSP response without nextUpdate older than this is not believed (seconds).
const MAX_OCSP_AGE: u32 = 7 * 86_400;
/// Clock skew allowed on OCSP thisUpdate/nextUpdate (seconds).
const OCSP_SKEW: u32 = 300;

/// Where a certificate says its revocation can be learned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sources {
    /// OCSP responders (Authority Information Access).
    pub ocsp: Vec<String>,
    /// CRL distribution points.
    pub crl: Vec<String>,
}

impl Sources {
    pub fn is_empty(&self) -> bool {
        self.ocsp.is_empty() && self.crl.is_empty()
    }
}

/// Clears OpenSSL's error queue for this thread when dropped. Checks that
/// answer "no" without an error (`X509Crl::verify`, `X509::verify` → false,
/// an undecodable extension → None) leave their reasons queued, and the next
/// TLS read or write on the same thread — a PostgreSQL connection of the
/// store, an HTTPS client — takes them for its own failure and drops the
/// connection. Every function here that reads outside bytes holds one.
struct ClearErrors;

impl Drop for ClearErrors {
    fn drop(&mut self) {
        let _ = ErrorStack::get();
    }
}

fn http_url(u: &str) -> bool {
    let l = u.trim().to_ascii_lowercase();
    (l.starts_with("http://") || l.starts_with("https://")) && u.len() <= MAX_URL_LEN
}

/// The http(s) OCSP responders and CRL distribution points a certificate
/// names (at most [`MAX_URLS`] of each).
pub fn sources(cert: &X509Ref) -> Sources {
    let _clear = ClearErrors;
    let ocsp = cert
        .ocsp_responders()
        .map(|s| s.iter().map(|u| u.to_string()).filter(|u| http_url(u)).take(MAX_URLS).collect())
        .unwrap_or_default();
    let mut crl = Vec::new();
    if let Some(points) = cert.crl_distribution_points() {
        for name in points.iter().filter_map(|p| p.distpoint()).filter_map(|d| d.fullname()) {
            for uri in name.iter().filter_map(|g| g.uri()) {
                if http_url(uri) && crl.len() < MAX_URLS && !crl.iter().any(|c| c == uri) {
                    crl.push(uri.to_owned());
                }
            }
        }
    }
    Sources { ocsp, crl }
}

/// The certificate in `chain` that issued `cert` (names match and its key
/// verifies the signature).
pub fn issuer_of<'a>(cert: &X509Ref, chain: &'a [X509]) -> Option<&'a X509> {
    let _clear = ClearErrors;
    chain
        .iter()
        .find(|c| c.issued(cert) == X509VerifyResult::OK && c.public_key().and_then(|k| cert.verify(&k)).unwrap_or(false))
}

/// What a CRL or an OCSP responder says of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Good,
    /// `reason` as RFC 5280 names it; `at` as the answer gives the time.
    Revoked {
        reason: String,
        at: Option<String>,
    },
    /// The OCSP responder does not know the certificate.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("not a CRL (DER or PEM)")]
    NotACrl,
    #[error("the CRL is issued by {0}, not by the certificate's issuer")]
    CrlIssuer(String),
    #[error("the CRL's signature does not verify with the issuer's key")]
    CrlSignature,
    #[error("the CRL is out of date (its next update was {0})")]
    CrlStale(String),
    #[error("not an OCSP response")]
    NotOcsp,
    #[error("the OCSP responder answered {0}")]
    OcspStatus(&'static str),
    #[error("the OCSP response does not verify against the issuer: {0}")]
    OcspVerify(ErrorStack),
    #[error("the OCSP response says nothing about this certificate")]
    OcspNoAnswer,
    #[error("the OCSP response is out of date or not valid yet")]
    OcspStale,
    #[error("crypto: {0}")]
    Crypto(#[from] ErrorStack),
}

/// RFC 5280 CRLReason names (also OCSP's revocation reasons).
pub fn reason_name(code: i64) -> String {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        -1 => "unspecified",
        _ => return format!("reason {code}"),
    }
    .to_owned()
}

fn cert_id(cert: &X509Ref, issuer: &X509Ref) -> Result<OcspCertId, ErrorStack> {
    OcspCertId::from_cert(MessageDigest::sha1(), cert, issuer)
}

/// A DER OCSP request for `cert` (SHA-1 CertID, as responders expect).
pub fn ocsp_request(cert: &X509Ref, issuer: &X509Ref) -> Result<Vec<u8>, RevocationError> {
    let _clear = ClearErrors;
    let mut req = OcspRequest::new()?;
    req.add_id(cert_id(cert, issuer)?)?;
    Ok(req.to_der()?)
}

/// Read a DER OCSP response about `cert`: signed by its issuer or by a
/// responder the issuer delegated (OCSPSigning), answering for this
/// certificate, and current.
pub fn ocsp_verdict(der: &[u8], cert: &X509Ref, issuer: &X509Ref) -> Result<Verdict, RevocationError> {
    let _clear = ClearErrors;
    let resp = OcspResponse::from_der(der).map_err(|_| RevocationError::NotOcsp)?;
    let status = resp.status();
    if status != OcspResponseStatus::SUCCESSFUL {
        let name = match status {
            OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
            OcspResponseStatus::INTERNAL_ERROR => "internalError",
            OcspResponseStatus::TRY_LATER => "tryLater",
            OcspResponseStatus::SIG_REQUIRED => "sigRequired",
            OcspResponseStatus::UNAUTHORIZED => "unauthorized",
            _ => "an unknown status",
        };
        return Err(RevocationError::OcspStatus(name));
    }
    let basic = resp.basic()?;
    let mut certs = Stack::new()?;
    certs.push(issuer.to_owned())?;
    let mut store = X509StoreBuilder::new()?;
    store.add_cert(issuer.to_owned())?;
    // The issuer may be an intermediate: it is the trust anchor here.
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
    let store = store.build();
    basic
        .verify(&certs, &store, OcspFlag::empty())
        .map_err(RevocationError::OcspVerify)?;
    let id = cert_id(cert, issuer)?;
    let st = basic.find_status(&id).ok_or(RevocationError::OcspNoAnswer)?;
    let max_age = st.next_update().is_none().then_some(MAX_OCSP_AGE);
    st.check_validity(OCSP_SKEW, max_age).map_err(|_| RevocationError::OcspStale)?;
    Ok(if st.status == OcspCertStatus::GOOD {
        Verdict::Good
    } else if st.status == OcspCertStatus::REVOKED {
        Verdict::Revoked {
            reason: reason_name(i64::from(st.reason.as_raw())),
            at: st.revocation_time.map(|t| t.to_string()),
        }
    } else {
        Verdict::Unknown
    })
}

/// Parse a CRL (DER, else PEM) and check it is `issuer`'s: same name, its
/// signature verifies with the issuer's key.
pub fn issuers_crl(body: &[u8], issuer: &X509Ref) -> Result<X509Crl, RevocationError> {
    let _clear = ClearErrors;
    let crl = X509Crl::from_der(body)
        .or_else(|_| X509Crl::from_pem(body))
        .map_err(|_| RevocationError::NotACrl)?;
    let same = crl.issuer_name().try_cmp(issuer.subject_name()).map(|o| o.is_eq()).unwrap_or(false);
    if !same {
        let name = crl
            .issuer_name()
            .entries()
            .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(RevocationError::CrlIssuer(name));
    }
    let key = issuer.public_key()?;
    if !crl.verify(&key).unwrap_or(false) {
        return Err(RevocationError::CrlSignature);
    }
    Ok(crl)
}

/// What an issuer's CRL (checked by [`issuers_crl`]) says of `cert` at
/// `now`. A listed certificate is revoked even in an out-of-date CRL; an
/// unlisted one is good only while the CRL is current.
pub fn crl_verdict(crl: &X509CrlRef, cert: &X509Ref, now: i64) -> Result<Verdict, RevocationError> {
    let _clear = ClearErrors;
    match crl.get_by_serial(cert.serial_number()) {
        CrlStatus::Revoked(entry) => {
            let reason = entry
                .extension::<openssl::x509::ReasonCode>()
                .ok()
                .flatten()
                .and_then(|(_, r)| r.get_i64().ok())
                .unwrap_or(0);
            return Ok(Verdict::Revoked {
                reason: reason_name(reason),
                at: Some(entry.revocation_date().to_string()),
            });
        }
        CrlStatus::RemoveFromCrl(_) | CrlStatus::NotRevoked => {}
    }
    if let Some(next) = crl.next_update() {
        if super::asn1_unix(next) < now {
            return Err(RevocationError::CrlStale(next.to_string()));
        }
    }
    Ok(Verdict::Good)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::{X509Builder, X509Extension, X509NameBuilder};

    fn name(cn: &str) -> openssl::x509::X509Name {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    }

    fn key() -> PKey<Private> {
        PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
    }

    #[allow(deprecated)]
    fn cert(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>, exts: &[(Nid, &str)]) -> X509 {
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name(cn)).unwrap();
        b.set_issuer_name(issuer.map_or(name(cn).as_ref(), |(i, _)| i.subject_name()))
            .unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        for (nid, v) in exts {
            b.append_extension(X509Extension::new_nid(None, None, *nid, v).unwrap()).unwrap();
        }
        b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256()).unwrap();
        b.build()
    }

    #[test]
    fn sources_keep_http_urls_only_and_at_most_two() {
        let (ck, lk) = (key(), key());
        let ca = cert("CA", &ck, None, &[]);
        let leaf = cert(
            "Leaf",
            &lk,
            Some((&ca, &ck)),
            &[
                (
                    Nid::CRL_DISTRIBUTION_POINTS,
                    "URI:ldap://dir.example/cn=CA?certificateRevocationList,URI:http://crl.example/a.crl,URI:https://crl.example/b.crl,URI:http://crl.example/c.crl",
                ),
                (Nid::INFO_ACCESS, "OCSP;URI:http://ocsp.example/,caIssuers;URI:http://ca.example/ca.cer"),
            ],
        );
        let s = sources(&leaf);
        assert_eq!(s.ocsp, vec!["http://ocsp.example/".to_owned()]);
        assert_eq!(
            s.crl,
            vec!["http://crl.example/a.crl".to_owned(), "https://crl.example/b.crl".to_owned()]
        );
        assert!(sources(&ca).is_empty());
        assert_eq!(
            issuer_of(&leaf, &[leaf.clone(), ca.clone()]).map(|c| c.to_der().unwrap()),
            Some(ca.to_der().unwrap())
        );
        let other = cert("CA", &key(), None, &[]);
        assert!(issuer_of(&leaf, &[other]).is_none(), "same name, other key");
    }

    #[test]
    fn garbage_answers_are_errors() {
        let (ck, lk) = (key(), key());
        let ca = cert("CA", &ck, None, &[]);
        let leaf = cert("Leaf", &lk, Some((&ca, &ck)), &[]);
        assert!(matches!(issuers_crl(b"nope", &ca), Err(RevocationError::NotACrl)));
        // "successful" without a body.
        assert!(ocsp_verdict(b"\x30\x03\x0a\x01\x00", &leaf, &ca).is_err());
        assert!(matches!(ocsp_verdict(&[], &leaf, &ca), Err(RevocationError::NotOcsp)));
        // tryLater: a well-formed response without a body.
        let later = OcspResponse::create(OcspResponseStatus::TRY_LATER, None).unwrap().to_der().unwrap();
        assert!(matches!(
            ocsp_verdict(&later, &leaf, &ca),
            Err(RevocationError::OcspStatus("tryLater"))
        ));
        let req = ocsp_request(&leaf, &ca).unwrap();
        assert!(OcspRequest::from_der(&req).is_ok());
        assert_eq!(reason_name(1), "keyCompromise");
        assert_eq!(reason_name(77), "reason 77");
    }
}
