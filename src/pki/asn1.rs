//! DER helpers shared by the RustCrypto fast paths (SCEP in `scep::fast`,
//! `Mdm-Signature` in `cms::fast`) and their OpenSSL fallbacks: digests by
//! algorithm OID computed in Rust, OpenSSL digests fetched once, an RSA key
//! from a SubjectPublicKeyInfo, serials as OpenSSL prints them, and a CSR's
//! challengePassword. They sit below both paths so neither imports the
//! other.

use const_oid::ObjectIdentifier;
use der::Decode as _;
use openssl::pkey::{PKey, Public};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

/// rsaEncryption (PKCS #1).
pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The digest algorithm, and the data's digest computed in Rust (no OpenSSL
/// algorithm fetch, whose locks are a visible cost per request on OpenSSL 3.0).
pub fn digest_for(oid: &ObjectIdentifier, content: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    use sha2::Digest as _;
    Some(match oid.to_string().as_str() {
        "1.3.14.3.2.26" => ("sha1", sha1::Sha1::digest(content).to_vec()),
        "2.16.840.1.101.3.4.2.1" => ("sha256", sha2::Sha256::digest(content).to_vec()),
        "2.16.840.1.101.3.4.2.2" => ("sha384", sha2::Sha384::digest(content).to_vec()),
        "2.16.840.1.101.3.4.2.3" => ("sha512", sha2::Sha512::digest(content).to_vec()),
        _ => return None,
    })
}

/// The OpenSSL digest of a `digest_for` name, fetched once (explicit fetch).
pub fn md_named(name: &str) -> Option<&'static openssl::md::MdRef> {
    static M: std::sync::OnceLock<Vec<(&'static str, Option<openssl::md::Md>)>> = std::sync::OnceLock::new();
    let all = M.get_or_init(|| {
        [
            ("sha1", "SHA1"),
            ("sha256", "SHA2-256"),
            ("sha384", "SHA2-384"),
            ("sha512", "SHA2-512"),
        ]
        .into_iter()
        .map(|(ours, theirs)| (ours, openssl::md::Md::fetch(None, theirs, None).ok()))
        .collect()
    });
    all.iter().find(|(n, _)| *n == name)?.1.as_deref()
}

/// An RSA public key from a SubjectPublicKeyInfo, built from its modulus and
/// exponent (no decoder framework). `None` for other key types.
pub fn rsa_public(spki: &SubjectPublicKeyInfoOwned) -> Option<(PKey<Public>, usize)> {
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        n: der::asn1::UintRef<'a>,
        e: der::asn1::UintRef<'a>,
    }
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return None;
    }
    let k = RsaPublicKey::from_der(spki.subject_public_key.as_bytes()?).ok()?;
    let n = openssl::bn::BigNum::from_slice(k.n.as_bytes()).ok()?;
    let e = openssl::bn::BigNum::from_slice(k.e.as_bytes()).ok()?;
    let bits = n.num_bits() as usize;
    let rsa = openssl::rsa::Rsa::from_public_components(n, e).ok()?;
    Some((PKey::from_rsa(rsa).ok()?, bits))
}

/// Upper-case hex of a positive serial without leading zero bytes (as OpenSSL prints it).
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let s = hex::encode_upper(&bytes[start..]);
    if s.is_empty() {
        "0".into()
    } else {
        s
    }
}

/// PKCS#9 challengePassword of a CSR.
pub fn challenge_password(csr_der: &[u8]) -> Option<String> {
    use x509_parser::cri_attributes::ParsedCriAttribute;
    use x509_parser::prelude::FromDer as _;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der).ok()?;
    let found = csr
        .certification_request_info
        .iter_attributes()
        .find_map(|a| match a.parsed_attribute() {
            ParsedCriAttribute::ChallengePassword(c) => Some(c.0.clone()),
            _ => None,
        });
    found
}
