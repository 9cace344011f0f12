//! SCEP's server side on structures parsed and built in Rust (the RustCrypto
//! `cms` and `x509-cert` crates), with OpenSSL doing only the cryptography:
//! the CA key parsed once, its signing and decryption contexts pooled, the
//! symmetric ciphers fetched once (DES from the legacy provider).
//!
//! Why: with OpenSSL 3.0 (Debian 12) every `d2i` of a structure that holds a
//! public key (`PKCS7`, `X509`, `X509_REQ`) builds a decoder context by name
//! (~0.4 ms each under `OSSL_DECODER_CTX_new_for_pkey`), and `X509_set_pubkey`
//! encodes through the encoder framework the same way; an enrollment did five
//! of these, more than the three RSA private-key operations it needs
//! (`perf`, docs/performance.md). Here a PKCSReq costs one DER parse, two RSA
//! public-key verifications, the RSA decryption of the content key, the CA's
//! signature on the certificate and on the CertRep.
//!
//! The same rule as `fastcms`: anything this path does not handle (BER
//! encodings, unknown algorithms, a signature that does not verify here) is
//! `None`, and the caller uses OpenSSL's full PKCS#7 path, which gives the
//! authoritative answer and error. This path can make a valid request cheaper,
//! never accept more.

use std::sync::{Mutex, OnceLock};

use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, OctetString, PrintableStringRef, SetOfVec, UtcTime};
use der::{Decode, Encode};
use openssl::pkey::{PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use sha2::Digest as _;
use x509_cert::attr::Attribute;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use crate::pki::asn1::{digest_for, md_named, rsa_public, serial_hex, RSA_ENCRYPTION};
use crate::pki::PkiError;

mod build;
pub use build::{cert_rep_success, issue_identity, name_string, Issued};

pub const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
pub const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
pub const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const SCEP_MESSAGE_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.2");
pub const SCEP_PKI_STATUS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.3");
pub const SCEP_SENDER_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.5");
pub const SCEP_RECIPIENT_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.6");
pub const SCEP_TRANSACTION_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.7");

/// The content-encryption ciphers SCEP clients use (CBC, as RFC 8894 asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym {
    Des,
    Des3,
    Aes128,
    Aes192,
    Aes256,
}

impl Sym {
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Sym> {
        Some(match oid.to_string().as_str() {
            "1.3.14.3.2.7" => Sym::Des,
            "1.2.840.113549.3.7" => Sym::Des3,
            "2.16.840.1.101.3.4.1.2" => Sym::Aes128,
            "2.16.840.1.101.3.4.1.22" => Sym::Aes192,
            "2.16.840.1.101.3.4.1.42" => Sym::Aes256,
            _ => return None,
        })
    }

    fn oid(self) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(match self {
            Sym::Des => "1.3.14.3.2.7",
            Sym::Des3 => "1.2.840.113549.3.7",
            Sym::Aes128 => "2.16.840.1.101.3.4.1.2",
            Sym::Aes192 => "2.16.840.1.101.3.4.1.22",
            Sym::Aes256 => "2.16.840.1.101.3.4.1.42",
        })
    }

    fn key_len(self) -> usize {
        match self {
            Sym::Des => 8,
            Sym::Des3 | Sym::Aes192 => 24,
            Sym::Aes128 => 16,
            Sym::Aes256 => 32,
        }
    }

    fn iv_len(self) -> usize {
        match self {
            Sym::Des | Sym::Des3 => 8,
            _ => 16,
        }
    }

    /// The same cipher for OpenSSL's PKCS#7 functions (the fallback path).
    pub fn symm(self) -> openssl::symm::Cipher {
        use openssl::symm::Cipher;
        match self {
            Sym::Des => Cipher::des_cbc(),
            Sym::Des3 => Cipher::des_ede3_cbc(),
            Sym::Aes128 => Cipher::aes_128_cbc(),
            Sym::Aes192 => Cipher::aes_192_cbc(),
            Sym::Aes256 => Cipher::aes_256_cbc(),
        }
    }

    pub fn from_symm(c: openssl::symm::Cipher) -> Option<Sym> {
        [Sym::Des, Sym::Des3, Sym::Aes128, Sym::Aes192, Sym::Aes256]
            .into_iter()
            .find(|s| s.symm().nid() == c.nid())
    }

    /// Fetched once (explicit fetch: no lookup by name per message).
    fn fetched(self) -> Option<&'static openssl::cipher::CipherRef> {
        static C: OnceLock<Vec<Option<openssl::cipher::Cipher>>> = OnceLock::new();
        let all = C.get_or_init(|| {
            crate::pki::ossl::load_providers();
            ["DES-CBC", "DES-EDE3-CBC", "AES-128-CBC", "AES-192-CBC", "AES-256-CBC"]
                .iter()
                .map(|n| openssl::cipher::Cipher::fetch(None, n, None).ok())
                .collect()
        });
        let i = match self {
            Sym::Des => 0,
            Sym::Des3 => 1,
            Sym::Aes128 => 2,
            Sym::Aes192 => 3,
            Sym::Aes256 => 4,
        };
        all.get(i)?.as_deref()
    }

    fn run(self, encrypt: bool, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        let cipher = self.fetched()?;
        let mut ctx = openssl::cipher_ctx::CipherCtx::new().ok()?;
        if encrypt {
            ctx.encrypt_init(Some(cipher), Some(key), Some(iv)).ok()?;
        } else {
            ctx.decrypt_init(Some(cipher), Some(key), Some(iv)).ok()?;
        }
        let mut out = Vec::with_capacity(data.len() + 32);
        ctx.cipher_update_vec(data, &mut out).ok()?;
        ctx.cipher_final_vec(&mut out).ok()?;
        Some(out)
    }
}

/// OpenSSL contexts kept ready for reuse: creating one fetches its algorithm
/// by name, which on OpenSSL 3.0 costs more than a public-key operation.
struct Pool<T>(Mutex<Vec<T>>);

impl<T> Pool<T> {
    fn with<R>(&self, make: impl FnOnce() -> Option<T>, f: impl FnOnce(&mut T) -> Option<R>) -> Option<R> {
        let taken = self.0.lock().ok().and_then(|mut v| v.pop());
        let mut ctx = match taken {
            Some(c) => c,
            None => make()?,
        };
        let r = f(&mut ctx);
        if r.is_some() {
            if let Ok(mut v) = self.0.lock() {
                if v.len() < 64 {
                    v.push(ctx);
                }
            }
        }
        r
    }
}

/// A CA key as the fast path needs it, parsed once at start: the issuing CA
/// (RSA or ECDSA P-256: it signs certificates) or the SCEP recipient (RSA:
/// devices encrypt their requests to it and it signs the CertReps), which is
/// the CA itself for an RSA CA and a separate RA certificate for an EC one.
pub struct CaFast {
    key: PKey<Private>,
    /// RSA (PKCS#1 v1.5 signatures, key transport) or else ECDSA.
    rsa: bool,
    cert_der: Vec<u8>,
    subject: Name,
    /// The certificate's issuer: with its serial, how CMS names it.
    issuer: Name,
    serial: SerialNumber,
    /// The CA's subject key identifier (AuthorityKeyIdentifier of what it issues).
    key_id: Vec<u8>,
    /// The CA public key's verify context (chain checks of our own identities).
    verify: Pool<PkeyCtx<Public>>,
    sign: Pool<PkeyCtx<Private>>,
    decrypt: Pool<PkeyCtx<Private>>,
}

impl CaFast {
    /// `None` unless the key is RSA or ECDSA P-256.
    pub fn new(cert: &openssl::x509::X509Ref, key: &PKey<Private>) -> Option<CaFast> {
        let rsa = key.rsa().is_ok();
        if !rsa && !crate::pki::ca::is_p256(key) {
            return None;
        }
        let cert_der = cert.to_der().ok()?;
        let parsed = Certificate::from_der(&cert_der).ok()?;
        let tbs = &parsed.tbs_certificate;
        let key_id = tbs
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
            .and_then(|e| OctetString::from_der(e.extn_value.as_bytes()).ok())
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or_else(|| sha1_of(tbs.subject_public_key_info.subject_public_key.raw_bytes()));
        Some(CaFast {
            key: key.clone(),
            rsa,
            subject: tbs.subject.clone(),
            issuer: tbs.issuer.clone(),
            serial: tbs.serial_number.clone(),
            key_id,
            cert_der,
            verify: Pool(Mutex::new(Vec::new())),
            sign: Pool(Mutex::new(Vec::new())),
            decrypt: Pool(Mutex::new(Vec::new())),
        })
    }

    /// Can devices encrypt SCEP requests to this key (RSA key transport)?
    pub fn is_rsa(&self) -> bool {
        self.rsa
    }

    /// The signature algorithm of what this key signs: sha256WithRSAEncryption
    /// (NULL parameters) or ecdsa-with-SHA256 (none, RFC 5758).
    fn signature_alg(&self) -> AlgorithmIdentifierOwned {
        if self.rsa {
            AlgorithmIdentifierOwned {
                oid: SHA256_WITH_RSA,
                parameters: Some(Any::null()),
            }
        } else {
            AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            }
        }
    }

    /// SHA-256 signature by this key over `data`: PKCS#1 v1.5 for RSA, a DER
    /// ECDSA-Sig-Value for EC.
    fn sign_sha256(&self, data: &[u8]) -> Option<Vec<u8>> {
        let digest = sha2::Sha256::digest(data);
        self.sign.with(
            || {
                let mut c = PkeyCtx::new(&self.key).ok()?;
                c.sign_init().ok()?;
                if self.rsa {
                    c.set_rsa_padding(Padding::PKCS1).ok()?;
                }
                c.set_signature_md(md_named("sha256")?).ok()?;
                Some(c)
            },
            |c| {
                let mut sig = Vec::new();
                c.sign_to_vec(&digest, &mut sig).ok()?;
                Some(sig)
            },
        )
    }

    fn decrypt_key(&self, enc: &[u8]) -> Option<Vec<u8>> {
        if !self.rsa {
            return None;
        }
        self.decrypt.with(
            || {
                let mut c = PkeyCtx::new(&self.key).ok()?;
                c.decrypt_init().ok()?;
                c.set_rsa_padding(Padding::PKCS1).ok()?;
                Some(c)
            },
            |c| {
                let mut out = Vec::new();
                let r = c.decrypt_to_vec(enc, &mut out).ok().map(|_| out);
                // A failed decryption leaves entries on the thread's error queue.
                let _ = openssl::error::ErrorStack::get();
                r
            },
        )
    }

    /// Was `cert` issued (signed) by this CA? Signature and issuer name only;
    /// the caller checks dates and revocation.
    pub fn issued(&self, cert: &Certificate) -> bool {
        if cert.tbs_certificate.issuer != self.subject || cert.signature_algorithm.oid != self.signature_alg().oid {
            return false;
        }
        let Ok(tbs) = cert.tbs_certificate.to_der() else { return false };
        let digest = sha2::Sha256::digest(&tbs);
        let sig = cert.signature.raw_bytes();
        let ok = self.verify.with(
            || {
                let pk = PKey::public_key_from_der(&self.key.public_key_to_der().ok()?).ok()?;
                let mut c = PkeyCtx::new(&pk).ok()?;
                c.verify_init().ok()?;
                if self.rsa {
                    c.set_rsa_padding(Padding::PKCS1).ok()?;
                }
                c.set_signature_md(md_named("sha256")?).ok()?;
                Some(c)
            },
            |c| Some(c.verify(&digest, sig).unwrap_or(false)),
        );
        let _ = openssl::error::ErrorStack::get();
        ok == Some(true)
    }
}

fn sha1_of(b: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(b).to_vec()
}

/// The digest of a signature algorithm (RSA PKCS#1 v1.5 ones).
fn rsa_sig_digest(oid: &ObjectIdentifier) -> Option<ObjectIdentifier> {
    Some(ObjectIdentifier::new_unwrap(match oid.to_string().as_str() {
        "1.2.840.113549.1.1.5" => "1.3.14.3.2.26",
        "1.2.840.113549.1.1.11" => "2.16.840.1.101.3.4.2.1",
        "1.2.840.113549.1.1.12" => "2.16.840.1.101.3.4.2.2",
        "1.2.840.113549.1.1.13" => "2.16.840.1.101.3.4.2.3",
        _ => return None,
    }))
}

/// Verify an RSA PKCS#1 v1.5 signature over a digest with a key used once.
fn verify_once(key: &PKey<Public>, md: &str, digest: &[u8], sig: &[u8]) -> bool {
    let ok = (|| {
        let mut c = PkeyCtx::new(key).ok()?;
        c.verify_init().ok()?;
        c.set_rsa_padding(Padding::PKCS1).ok()?;
        c.set_signature_md(md_named(md)?).ok()?;
        c.verify(digest, sig).ok()
    })();
    let _ = openssl::error::ErrorStack::get();
    ok == Some(true)
}

/// PKCS#10 as devices send it: like `x509_cert::request::CertReq`, but any
/// version number (some iOS releases send 2 where RFC 2986 says 0, and
/// OpenSSL accepts it), so the re-encoded info is byte for byte what was signed.
#[derive(der::Sequence)]
struct ReqInfo {
    version: u8,
    subject: Name,
    public_key: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    attributes: x509_cert::attr::Attributes,
}

#[derive(der::Sequence)]
struct Req {
    info: ReqInfo,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

/// A decrypted PKCS#10 request, parsed.
#[derive(Clone)]
pub struct Csr {
    pub der: Vec<u8>,
    pub subject: Name,
    pub spki: SubjectPublicKeyInfoOwned,
    pub challenge: Option<String>,
}

impl Csr {
    /// Parse and check the self-signature (RSA keys only: our policy).
    /// `Err` says why it is not acceptable.
    pub fn parse(der: Vec<u8>) -> Result<Csr, String> {
        let req = Req::from_der(&der).map_err(|e| format!("not a PKCS#10 request: {e}"))?;
        let Some((key, _)) = rsa_public(&req.info.public_key) else {
            return Err("key must be RSA".into());
        };
        let info = req.info.to_der().map_err(|e| e.to_string())?;
        let Some((md, d)) = rsa_sig_digest(&req.algorithm.oid).and_then(|o| digest_for(&o, &info)) else {
            return Err("unsupported CSR signature algorithm".into());
        };
        if !verify_once(&key, md, &d, req.signature.raw_bytes()) {
            return Err("CSR self-signature does not verify".into());
        }
        Ok(Csr {
            challenge: crate::pki::asn1::challenge_password(&der),
            subject: req.info.subject,
            spki: req.info.public_key,
            der,
        })
    }

    /// Parse a request whose self-signature OpenSSL already checked.
    pub fn verified(der: Vec<u8>) -> Result<Csr, String> {
        let req = Req::from_der(&der).map_err(|e| format!("not a PKCS#10 request: {e}"))?;
        Ok(Csr {
            challenge: crate::pki::asn1::challenge_password(&der),
            subject: req.info.subject,
            spki: req.info.public_key,
            der,
        })
    }

    /// Size of the RSA modulus in bits, if RSA.
    pub fn rsa_bits(&self) -> Option<usize> {
        rsa_public(&self.spki).map(|(_, b)| b)
    }
}

/// What the fast path read from a pkiMessage.
pub struct Parsed {
    pub message_type: Option<u32>,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    pub signer_der: Vec<u8>,
    pub cipher: Sym,
    pub csr: Result<Csr, String>,
}

fn attr_value(attrs: &SetOfVec<Attribute>, oid: ObjectIdentifier) -> Option<&Any> {
    attrs.iter().find(|a| a.oid == oid).and_then(|a| a.values.iter().next())
}

/// Read a PKCSReq/RenewalReq: `None` when anything is outside this path.
pub fn parse(ca: &CaFast, der: &[u8]) -> Option<Parsed> {
    match parse_inner(ca, der) {
        Ok(p) => Some(p),
        Err(why) => {
            tracing::debug!(why, "SCEP request takes OpenSSL's path");
            None
        }
    }
}

fn parse_inner(ca: &CaFast, der: &[u8]) -> Result<Parsed, &'static str> {
    let ci = ContentInfo::from_der(der).map_err(|_| "not DER ContentInfo")?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err("not SignedData");
    }
    let sd = ci.content.decode_as::<SignedData>().map_err(|_| "SignedData does not decode")?;
    let mut signers = sd.signer_infos.0.iter();
    let (Some(si), None) = (signers.next(), signers.next()) else {
        return Err("not exactly one signer");
    };
    let SignerIdentifier::IssuerAndSerialNumber(ias) = &si.sid else {
        return Err("signer named by key identifier");
    };
    let signer = sd
        .certificates
        .as_ref()
        .ok_or("no certificates")?
        .0
        .iter()
        .find_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c)
                if c.tbs_certificate.serial_number == ias.serial_number && c.tbs_certificate.issuer == ias.issuer =>
            {
                Some(c)
            }
            _ => None,
        })
        .ok_or("signer certificate not included")?;
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or("no content")?
        .decode_as::<OctetString>()
        .map_err(|_| "content is not one OCTET STRING")?;
    let attrs = si.signed_attrs.as_ref().ok_or("no signed attributes")?;
    let printable = |oid| {
        attr_value(attrs, oid).and_then(|v| {
            v.decode_as::<PrintableStringRef>()
                .ok()
                .map(|s| s.as_str().to_owned())
                .or_else(|| std::str::from_utf8(v.value()).ok().map(str::to_owned))
        })
    };
    let message_type = printable(SCEP_MESSAGE_TYPE).and_then(|s| s.trim().parse::<u32>().ok());
    let transaction_id = printable(SCEP_TRANSACTION_ID).ok_or("no transactionID")?;
    let sender_nonce = attr_value(attrs, SCEP_SENDER_NONCE)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or("no senderNonce")?
        .as_bytes()
        .to_vec();
    // The signature: messageDigest over the content, the key's signature over the attributes.
    let (md, body_digest) = digest_for(&si.digest_alg.oid, econtent.as_bytes()).ok_or("digest algorithm")?;
    let claimed = attr_value(attrs, ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or("no messageDigest")?;
    if claimed.as_bytes() != body_digest.as_slice() {
        return Err("messageDigest differs");
    }
    let sig_alg = &si.signature_algorithm.oid;
    if *sig_alg != RSA_ENCRYPTION && rsa_sig_digest(sig_alg) != Some(si.digest_alg.oid) {
        return Err("signature algorithm");
    }
    let (signer_key, _) = rsa_public(&signer.tbs_certificate.subject_public_key_info).ok_or("signer key is not RSA")?;
    let signed = attrs.to_der().map_err(|_| "attributes do not encode")?;
    let (_, attrs_digest) = digest_for(&si.digest_alg.oid, &signed).ok_or("digest algorithm")?;
    if !verify_once(&signer_key, md, &attrs_digest, si.signature.as_bytes()) {
        return Err("signature does not verify here");
    }
    // The EnvelopedData: the content key for us, then the CSR.
    let env_ci = ContentInfo::from_der(econtent.as_bytes()).map_err(|_| "content is not DER ContentInfo")?;
    if env_ci.content_type != ID_ENVELOPED_DATA {
        return Err("content is not EnvelopedData");
    }
    let env = env_ci
        .content
        .decode_as::<EnvelopedData>()
        .map_err(|_| "EnvelopedData does not decode")?;
    let eci = &env.encrypted_content;
    let cipher = Sym::from_oid(&eci.content_enc_alg.oid).ok_or("content cipher")?;
    let iv = eci
        .content_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<OctetString>().ok())
        .filter(|iv| iv.as_bytes().len() == cipher.iv_len())
        .ok_or("IV")?;
    let ktri = env
        .recip_infos
        .0
        .iter()
        .find_map(|r| match r {
            RecipientInfo::Ktri(k) => match &k.rid {
                RecipientIdentifier::IssuerAndSerialNumber(i) if i.issuer == ca.issuer && i.serial_number == ca.serial => Some(k),
                _ => None,
            },
            _ => None,
        })
        .ok_or("no recipient info for our CA")?;
    if ktri.key_enc_alg.oid != RSA_ENCRYPTION {
        return Err("key transport algorithm");
    }
    let content_key = ca
        .decrypt_key(ktri.enc_key.as_bytes())
        .filter(|k| k.len() == cipher.key_len())
        .ok_or("content key does not decrypt")?;
    let encrypted = eci.encrypted_content.as_ref().ok_or("no encrypted content")?;
    let csr_der = cipher
        .run(false, &content_key, iv.as_bytes(), encrypted.as_bytes())
        .ok_or("content does not decrypt")?;
    // Anything wrong with the CSR: OpenSSL gives the definitive answer and message.
    let csr = Csr::parse(csr_der).map_err(|_| "CSR")?;
    Ok(Parsed {
        message_type,
        transaction_id,
        sender_nonce,
        signer_der: signer.to_der().map_err(|_| "signer does not encode")?,
        cipher,
        csr: Ok(csr),
    })
}


#[cfg(test)]
pub(crate) fn why_not(ca: &CaFast, der: &[u8]) -> Option<&'static str> {
    parse_inner(ca, der).err()
}
