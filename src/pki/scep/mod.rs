//! SCEP (RFC 8894) messages: parse and decrypt a PKCSReq/RenewalReq
//! pkiMessage, and build the CertRep (SUCCESS or FAILURE). Policy (which
//! challenge, which subject, whether to issue) lives in `service::enroll`.

use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::rand::rand_bytes;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Req, X509};

pub mod fast;
pub mod policy;

use super::ossl::{self, AttrValue};
use super::{Pki, PkiError};
pub use fast::{Csr, Sym};

pub const CAPABILITIES: &str = "POSTPKIOperation\nSHA-256\nSHA-1\nAES\nDES3\nSCEPStandard\nRenewal\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    PkcsReq,
    RenewalReq,
    CertPoll,
    Other(u32),
}

/// RFC 8894 failInfo values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    BadAlg = 0,
    BadMessageCheck = 1,
    BadRequest = 2,
    BadTime = 3,
    BadCertId = 4,
}

/// What a pkiMessage says, as far as it could be read.
pub struct ScepRequest {
    pub message_type: MessageType,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    /// The signer (DER): a transient self-signed certificate (PKCSReq) or an existing identity (RenewalReq).
    pub signer_der: Vec<u8>,
    pub cipher: Sym,
    /// The decrypted CSR, or why it could not be had (answered with a FAILURE CertRep).
    pub csr: Result<Csr, (FailInfo, String)>,
}

impl Csr {
    /// Our key policy: RSA of at least 2048 bits (the SCEP payload asks for 2048).
    pub fn check_key(&self) -> Result<(), (FailInfo, String)> {
        match self.rsa_bits() {
            Some(bits) if bits >= 2048 => Ok(()),
            bits => Err((
                FailInfo::BadRequest,
                format!("key must be RSA of at least 2048 bits (got {} bits)", bits.unwrap_or(0)),
            )),
        }
    }
}

fn message_type(n: Option<u32>) -> Option<MessageType> {
    Some(match n? {
        19 => MessageType::PkcsReq,
        17 => MessageType::RenewalReq,
        20 => MessageType::CertPoll,
        o => MessageType::Other(o),
    })
}

/// Parse a pkiMessage. `Err` means it cannot even be answered with a CertRep
/// (not PKCS#7, no transaction id or nonce, no signer): answer HTTP 400.
/// The common shapes take `fastscep`'s path; anything else OpenSSL's.
pub fn parse_request(pki: &Pki, der: &[u8]) -> Result<ScepRequest, PkiError> {
    if let Some(p) = pki.fast.as_ref().and_then(|ca| fast::parse(ca, der)) {
        if let Some(message_type) = message_type(p.message_type) {
            policy::check_transaction_id(&p.transaction_id).map_err(PkiError::BadMessage)?;
            return Ok(ScepRequest {
                message_type,
                transaction_id: p.transaction_id,
                sender_nonce: p.sender_nonce,
                signer_der: p.signer_der,
                cipher: p.cipher,
                csr: p.csr.map_err(|e| (FailInfo::BadRequest, e)),
            });
        }
    }
    ossl::load_providers();
    let p7 = Pkcs7::from_der(der).map_err(|e| PkiError::BadMessage(format!("not a PKCS#7 message: {e}")))?;
    let n = ossl::nids();
    let printable = |nid| match ossl::signed_attribute(&p7, nid) {
        Some(AttrValue::Printable(s)) => Some(s),
        _ => None,
    };
    let message_type = message_type(printable(n.message_type).and_then(|s| s.trim().parse::<u32>().ok()))
        .ok_or_else(|| PkiError::BadMessage("no SCEP messageType attribute".into()))?;
    let transaction_id = printable(n.transaction_id).ok_or_else(|| PkiError::BadMessage("no transactionID".into()))?;
    policy::check_transaction_id(&transaction_id).map_err(PkiError::BadMessage)?;
    let sender_nonce = match ossl::signed_attribute(&p7, n.sender_nonce) {
        Some(AttrValue::Octets(b)) => b,
        _ => return Err(PkiError::BadMessage("no senderNonce".into())),
    };
    let none = Stack::new()?;
    let signer = p7
        .signers(&none, Pkcs7Flags::empty())
        .ok()
        .and_then(|s| s.iter().next().map(|c| c.to_owned()))
        .ok_or_else(|| PkiError::BadMessage("pkiMessage carries no signer certificate".into()))?;
    let mut req = ScepRequest {
        message_type,
        transaction_id,
        sender_nonce,
        signer_der: signer.to_der()?,
        cipher: Sym::Aes128,
        csr: Err((FailInfo::BadRequest, String::new())),
    };
    req.csr = open(pki, &p7, &mut req.cipher);
    Ok(req)
}

fn open(pki: &Pki, p7: &Pkcs7, cipher: &mut Sym) -> Result<Csr, (FailInfo, String)> {
    let store = openssl::x509::store::X509StoreBuilder::new()
        .map_err(|e| (FailInfo::BadMessageCheck, e.to_string()))?
        .build();
    let none = Stack::new().map_err(|e| (FailInfo::BadMessageCheck, e.to_string()))?;
    let mut content = Vec::new();
    p7.verify(&none, &store, None, Some(&mut content), Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY)
        .map_err(|e| (FailInfo::BadMessageCheck, format!("signature does not verify: {e}")))?;
    let env = Pkcs7::from_der(&content).map_err(|e| (FailInfo::BadMessageCheck, format!("content is not an EnvelopedData: {e}")))?;
    *cipher = ossl::envelope_cipher(&env)
        .and_then(Sym::from_symm)
        .ok_or((FailInfo::BadAlg, "unsupported content encryption".to_owned()))?;
    let ra = pki.scep_recipient();
    let csr_der = env.decrypt(&ra.key, &ra.cert, Pkcs7Flags::BINARY).map_err(|e| {
        (
            FailInfo::BadMessageCheck,
            format!("cannot decrypt (not encrypted to this CA?): {e}"),
        )
    })?;
    let req = X509Req::from_der(&csr_der).map_err(|e| (FailInfo::BadRequest, format!("not a PKCS#10 request: {e}")))?;
    let key = req.public_key().map_err(|e| (FailInfo::BadRequest, e.to_string()))?;
    let verified = req.verify(&key).unwrap_or(false);
    // A failed verification leaves entries on the thread's error queue.
    let _ = openssl::error::ErrorStack::get();
    if !verified {
        return Err((FailInfo::BadMessageCheck, "CSR self-signature does not verify".into()));
    }
    Csr::verified(csr_der).map_err(|e| (FailInfo::BadRequest, e))
}

fn nonce() -> Result<Vec<u8>, PkiError> {
    let mut b = vec![0u8; 16];
    rand_bytes(&mut b)?;
    Ok(b)
}

/// Build a CertRep: SUCCESS with the issued certificate (DER, encrypted to the
/// request's signer with the request's cipher), or FAILURE with failInfo.
pub fn cert_rep(pki: &Pki, req: &ScepRequest, result: Result<&[u8], FailInfo>) -> Result<Vec<u8>, PkiError> {
    if let (Ok(cert), Some(ca)) = (result, pki.fast.as_ref()) {
        let chain: Vec<Vec<u8>> = pki.issuer.iter().filter_map(|i| i.cert.to_der().ok()).collect();
        return fast::cert_rep_success(ca, &req.signer_der, req.cipher, &req.transaction_id, &req.sender_nonce, cert, &chain);
    }
    let n = ossl::nids();
    let mut attrs = vec![
        (n.transaction_id, AttrValue::Printable(req.transaction_id.clone())),
        (n.message_type, AttrValue::Printable("3".into())),
        (n.sender_nonce, AttrValue::Octets(nonce()?)),
        (n.recipient_nonce, AttrValue::Octets(req.sender_nonce.clone())),
    ];
    let content = match result {
        Ok(cert) => {
            attrs.push((n.pki_status, AttrValue::Printable("0".into())));
            let cert = X509::from_der(cert)?;
            let mut certs = vec![cert.as_ref()];
            certs.extend(pki.issuer.iter().map(|i| i.cert.as_ref()));
            let inner = ossl::degenerate(&certs)?;
            let mut to = Stack::new()?;
            to.push(X509::from_der(&req.signer_der)?)?;
            Pkcs7::encrypt(&to, &inner, req.cipher.symm(), Pkcs7Flags::BINARY)?.to_der()?
        }
        Err(fail) => {
            attrs.push((n.pki_status, AttrValue::Printable("2".into())));
            attrs.push((n.fail_info, AttrValue::Printable((fail as u8).to_string())));
            Vec::new()
        }
    };
    let ra = pki.scep_recipient();
    ossl::sign_with_attributes(&content, &ra.cert, &ra.key, MessageDigest::sha256(), &attrs)
}

/// What a SCEP client does: build a PKCSReq (or RenewalReq) for `csr`,
/// encrypted to `ca` and signed by `signer` (used by the simulator and tests).
pub fn client_request(
    ca: &X509,
    signer: &X509,
    signer_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    csr_der: &[u8],
    renewal: bool,
    cipher: Cipher,
) -> Result<(Vec<u8>, String, Vec<u8>), PkiError> {
    let txid = hex::encode(openssl::sha::sha256(&signer.public_key()?.public_key_to_der()?));
    client_request_with_id(ca, signer, signer_key, csr_der, renewal, cipher, &txid)
}

/// `client_request` with a given `transactionID` (tests send hostile ones).
pub fn client_request_with_id(
    ca: &X509,
    signer: &X509,
    signer_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    csr_der: &[u8],
    renewal: bool,
    cipher: Cipher,
    txid: &str,
) -> Result<(Vec<u8>, String, Vec<u8>), PkiError> {
    ossl::load_providers();
    let mut to = Stack::new()?;
    to.push(ca.clone())?;
    let env = Pkcs7::encrypt(&to, csr_der, cipher, Pkcs7Flags::BINARY)?.to_der()?;
    let n = ossl::nids();
    let txid = txid.to_owned();
    let sender_nonce = nonce()?;
    let attrs = vec![
        (n.transaction_id, AttrValue::Printable(txid.clone())),
        (n.message_type, AttrValue::Printable(if renewal { "17" } else { "19" }.into())),
        (n.sender_nonce, AttrValue::Octets(sender_nonce.clone())),
    ];
    let msg = ossl::sign_with_attributes(&env, signer, signer_key, MessageDigest::sha256(), &attrs)?;
    Ok((msg, txid, sender_nonce))
}

/// Read a CertRep as a client: (pkiStatus, failInfo, issued certificate).
pub fn client_read_rep(
    rep_der: &[u8],
    ca: &X509,
    my_cert: &X509,
    my_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<(String, Option<String>, Option<X509>), PkiError> {
    let (status, fail, issued) = client_read_rep_chain(rep_der, ca, my_cert, my_key)?;
    Ok((status, fail, issued.map(|(c, _)| c)))
}

/// The certificate a CertRep issued, and the other certificates it carries.
pub type IssuedChain = (X509, Vec<X509>);

/// As [`client_read_rep`], with the other certificates the reply carries
/// (an issuing CA): the issued one is the one that issued none of the others.
pub fn client_read_rep_chain(
    rep_der: &[u8],
    ca: &X509,
    my_cert: &X509,
    my_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
) -> Result<(String, Option<String>, Option<IssuedChain>), PkiError> {
    let p7 = Pkcs7::from_der(rep_der).map_err(|e| PkiError::BadMessage(e.to_string()))?;
    let mut certs = Stack::new()?;
    certs.push(ca.clone())?;
    let store = openssl::x509::store::X509StoreBuilder::new()?.build();
    let mut content = Vec::new();
    p7.verify(&certs, &store, None, Some(&mut content), Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY)
        .map_err(|e| PkiError::BadSignature(e.to_string()))?;
    let n = ossl::nids();
    let status = match ossl::signed_attribute(&p7, n.pki_status) {
        Some(AttrValue::Printable(s)) => s,
        _ => return Err(PkiError::BadMessage("CertRep without pkiStatus".into())),
    };
    let fail = match ossl::signed_attribute(&p7, n.fail_info) {
        Some(AttrValue::Printable(s)) => Some(s),
        _ => None,
    };
    if status != "0" {
        return Ok((status, fail, None));
    }
    let env = Pkcs7::from_der(&content).map_err(|e| PkiError::BadMessage(e.to_string()))?;
    let inner = env.decrypt(my_key, my_cert, Pkcs7Flags::BINARY)?;
    let degenerate = Pkcs7::from_der(&inner).map_err(|e| PkiError::BadMessage(e.to_string()))?;
    let mut certs: Vec<X509> = degenerate
        .signed()
        .and_then(|s| s.certificates())
        .map(|c| c.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    // A renewal's certificate is for the CSR's new key, not `my_key`: the
    // issued one is the leaf, the certificate that issued no other here.
    let leaf = (0..certs.len())
        .find(|&i| {
            certs
                .iter()
                .enumerate()
                .all(|(j, d)| i == j || certs[i].issued(d) != openssl::x509::X509VerifyResult::OK)
        })
        .ok_or_else(|| PkiError::BadMessage("CertRep without certificate".into()))?;
    let cert = certs.remove(leaf);
    Ok((status, fail, Some((cert, certs))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scep-request");

    /// A Pki built around the fixture CA (micromdm/scep's testdata).
    fn fixture_pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let cert = X509::from_pem(&std::fs::read(format!("{FIX}/ca.pem")).unwrap()).unwrap();
        let key = PKey::private_key_from_pem_passphrase(&std::fs::read(format!("{FIX}/ca.key")).unwrap(), b"").unwrap();
        let pki = pki_around(dir.path(), &cert, &key, "127.0.0.1");
        std::mem::forget(dir);
        pki
    }

    /// A Pki loaded from a certs directory holding this CA.
    fn pki_around(dir: &std::path::Path, cert: &X509, key: &PKey<openssl::pkey::Private>, host: &str) -> Pki {
        std::fs::write(dir.join("ca.pem"), cert.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("ca.key"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let cfg = super::super::CaConfig {
            certs_dir: dir.to_owned(),
            public_host: host.into(),
            ..Default::default()
        };
        Pki::load_or_create(&cfg).unwrap()
    }

    /// An installation made before CAs were EC: an RSA-2048 CA that is its
    /// own SCEP recipient (keyEncipherment and digitalSignature too).
    fn rsa_pki() -> (tempfile::TempDir, Pki) {
        use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
        let dir = tempfile::tempdir().unwrap();
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "old MDM CA").unwrap();
        let n = n.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&crate::pki::ca::random_serial().unwrap()).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(3650).unwrap()).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        let ku = KeyUsage::new().critical().key_cert_sign().crl_sign().digital_signature().key_encipherment().build();
        b.append_extension(ku.unwrap()).unwrap();
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(ski).unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let pki = pki_around(dir.path(), &b.build(), &key, "localhost");
        (dir, pki)
    }

    fn fresh_pki() -> (tempfile::TempDir, Pki) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::super::CaConfig {
            certs_dir: dir.path().to_owned(),
            public_host: "localhost".into(),
            ..Default::default()
        };
        let pki = Pki::load_or_create(&cfg).unwrap();
        (dir, pki)
    }

    /// A device key, its CSR for `subject` signed with `md`, and the transient self-signed certificate.
    fn device(subject: &[(&str, &str)], md: MessageDigest) -> (PKey<openssl::pkey::Private>, X509Req, X509) {
        let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        for (k, v) in subject {
            name.append_entry_by_text(k, v).unwrap();
        }
        let name = name.build();
        let mut rb = openssl::x509::X509ReqBuilder::new().unwrap();
        rb.set_subject_name(&name).unwrap();
        rb.set_pubkey(&key).unwrap();
        rb.sign(&key, md).unwrap();
        let selfsigned = crate::sim::pki::self_signed(&key, &name).unwrap();
        (key, rb.build(), selfsigned)
    }

    #[test]
    fn parses_a_real_apple_pkcsreq_and_answers_it() {
        let pki = fixture_pki();
        let der = std::fs::read(format!("{FIX}/PKCSReq.der")).unwrap();
        let req = parse_request(&pki, &der).unwrap();
        assert_eq!(req.message_type, MessageType::PkcsReq);
        assert!(!req.sender_nonce.is_empty());
        assert_eq!(req.cipher, Sym::Des3, "the Apple request uses 3DES");
        assert_eq!(
            fast::why_not(pki.fast.as_ref().unwrap(), &der),
            None,
            "a real device's request takes the fast path"
        );
        let csr = req.csr.as_ref().map_err(|e| e.1.clone()).unwrap();
        let cn = fast::name_string(&csr.subject);
        assert!(cn.starts_with("CN=com.apple.security.scep."), "{cn}");
        // This old capture uses the profile default Keysize of 1024: our policy refuses it.
        assert_eq!(csr.check_key().unwrap_err().0, FailInfo::BadRequest);
        let issued = pki.issue_for(csr, 365).unwrap();
        let rep = cert_rep(&pki, &req, Ok(&issued.der)).unwrap();
        let p7 = Pkcs7::from_der(&rep).unwrap();
        let n = ossl::nids();
        assert_eq!(ossl::signed_attribute(&p7, n.message_type), Some(AttrValue::Printable("3".into())));
        assert_eq!(ossl::signed_attribute(&p7, n.pki_status), Some(AttrValue::Printable("0".into())));
        assert_eq!(
            ossl::signed_attribute(&p7, n.recipient_nonce),
            Some(AttrValue::Octets(req.sender_nonce.clone()))
        );
        assert_eq!(
            ossl::signed_attribute(&p7, n.transaction_id),
            Some(AttrValue::Printable(req.transaction_id.clone()))
        );
        let fail = cert_rep(&pki, &req, Err(FailInfo::BadRequest)).unwrap();
        let p7 = Pkcs7::from_der(&fail).unwrap();
        assert_eq!(ossl::signed_attribute(&p7, n.pki_status), Some(AttrValue::Printable("2".into())));
        assert_eq!(ossl::signed_attribute(&p7, n.fail_info), Some(AttrValue::Printable("2".into())));
    }

    /// A new installation's PKI: an EC CA with an RSA RA.
    #[test]
    fn a_new_ca_is_p256_and_scep_goes_to_its_rsa_ra() {
        let (_dir, pki) = fresh_pki();
        assert!(crate::pki::ca::is_p256(&pki.ca.key), "the CA key");
        assert!(crate::pki::ca::is_p256(&pki.signer.key), "the profile signer's key");
        let ra = pki.ra.as_ref().expect("an RA");
        assert_eq!(ra.key.rsa().unwrap().size(), 256, "RSA-2048 RA");
        assert!(ra.cert.verify(&pki.ca.key).unwrap(), "issued by the CA");
        let text = String::from_utf8(ra.cert.to_text().unwrap()).unwrap();
        assert!(text.contains("CA:FALSE") && text.contains("Digital Signature, Key Encipherment"), "{text}");
        // GetCACert: RA and CA, which a client tells apart as iOS does.
        let (ct, der) = pki.get_ca_cert().unwrap();
        assert_eq!(ct, "application/x-x509-ca-ra-cert");
        let p7 = openssl::pkcs7::Pkcs7::from_der(&der).unwrap();
        let certs: Vec<X509> = p7.signed().unwrap().certificates().unwrap().iter().map(|c| c.to_owned()).collect();
        let picked = crate::sim::pki::scep_certs_of(certs).unwrap();
        assert_eq!(picked.ca.to_der().unwrap(), pki.ca.cert.to_der().unwrap());
        assert_eq!(picked.recipient.to_der().unwrap(), ra.cert.to_der().unwrap());
        // A restart keeps the keys.
        let again = Pki::load_or_create(&super::super::CaConfig {
            certs_dir: _dir.path().to_owned(),
            public_host: "localhost".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(again.ra.unwrap().cert.to_der().unwrap(), ra.cert.to_der().unwrap());
        assert_eq!(again.signer.cert.to_der().unwrap(), pki.signer.cert.to_der().unwrap());
        // An RSA CA of an older installation is its own recipient.
        let (_d, old) = rsa_pki();
        assert!(old.ra.is_none() && old.fast.is_some());
        assert_eq!(old.get_ca_cert().unwrap().0, "application/x-x509-ca-cert");
    }

    #[test]
    fn round_trip_with_our_client_for_every_cipher() {
        let ((_d1, fresh), (_d2, old)) = (fresh_pki(), rsa_pki());
        for (pki, sig_alg) in [(&fresh, "ecdsa-with-SHA256"), (&old, "sha256WithRSAEncryption")] {
        for cipher in [
            Cipher::aes_128_cbc(),
            Cipher::aes_256_cbc(),
            Cipher::des_ede3_cbc(),
            Cipher::des_cbc(),
        ] {
            let (key, csr, selfsigned) = device(&[("CN", "device")], MessageDigest::sha256());
            let (msg, _, _) = client_request(&pki.scep_recipient().cert, &selfsigned, &key, &csr.to_der().unwrap(), false, cipher).unwrap();
            let req = parse_request(pki, &msg).unwrap();
            assert_eq!(req.cipher.symm().nid(), cipher.nid());
            assert!(
                fast::parse(pki.fast.as_ref().unwrap(), &msg).is_some(),
                "fast path for {:?}",
                cipher.nid()
            );
            let csr = req.csr.as_ref().map_err(|e| e.1.clone()).unwrap();
            assert_eq!(csr.challenge, None);
            let issued = pki.issue_for(csr, 365).unwrap();
            let rep = cert_rep(pki, &req, Ok(&issued.der)).unwrap();
            let (status, _, cert) = client_read_rep(&rep, &pki.scep_recipient().cert, &selfsigned, &key).unwrap();
            assert_eq!(status, "0");
            let cert = cert.unwrap();
            assert_eq!(cert.to_der().unwrap(), issued.der);
            // What OpenSSL makes of the certificate we encoded.
            pki.verify_chain(&cert).unwrap();
            assert!(cert.public_key().unwrap().public_eq(&key));
            assert_eq!(issued.subject, "CN=device");
            assert_eq!(
                issued.serial,
                cert.serial_number().to_bn().unwrap().to_hex_str().unwrap().to_string()
            );
            assert_eq!(issued.not_after, crate::pki::asn1_unix(cert.not_after()));
            let text = String::from_utf8(cert.to_text().unwrap()).unwrap();
            for want in [
                "X509v3 Basic Constraints: critical",
                "CA:FALSE",
                "X509v3 Key Usage: critical",
                "Digital Signature, Key Encipherment",
                "TLS Web Client Authentication",
                "X509v3 Subject Key Identifier",
                "X509v3 Authority Key Identifier",
            ] {
                assert!(text.contains(want), "{want} missing in\n{text}");
            }
            assert!(text.contains(&format!("Signature Algorithm: {sig_alg}")), "{sig_alg}: {text}");
            assert_eq!(
                cert.authority_key_id().unwrap().as_slice(),
                pki.ca.cert.subject_key_id().unwrap().as_slice()
            );
            // The identity is then accepted as ours without OpenSSL's chain builder.
            let c = pki.keys.key(&issued.der, None).unwrap();
            pki.verify_chain_cached(&c).unwrap();
            assert!(crate::pki::Identity::from_der(pki, &issued.der).is_ok());
        }
        }
    }

    #[test]
    fn the_openssl_path_and_the_fast_path_agree() {
        let (_dir, mut pki) = fresh_pki();
        let (key, csr, selfsigned) = device(&[("O", "Org"), ("CN", "dev")], MessageDigest::sha1());
        let (msg, txid, nonce) = client_request(&pki.scep_recipient().cert, &selfsigned, &key, &csr.to_der().unwrap(), false, Cipher::des_cbc()).unwrap();
        let fast = parse_request(&pki, &msg).unwrap();
        let fast_issued = pki.issue_for(fast.csr.as_ref().map_err(|e| e.1.clone()).unwrap(), 30).unwrap();
        let ca_fast = pki.fast.take();
        let issuing = pki.issuing.take();
        let slow = parse_request(&pki, &msg).unwrap();
        assert_eq!(
            (fast.transaction_id.as_str(), fast.sender_nonce.as_slice()),
            (txid.as_str(), nonce.as_slice())
        );
        assert_eq!(
            (slow.transaction_id.as_str(), slow.sender_nonce.as_slice()),
            (txid.as_str(), nonce.as_slice())
        );
        assert_eq!((fast.message_type, fast.cipher), (slow.message_type, slow.cipher));
        assert_eq!(fast.signer_der, slow.signer_der);
        let (fc, sc) = (fast.csr.as_ref().ok().unwrap(), slow.csr.as_ref().ok().unwrap());
        assert_eq!((&fc.der, &fc.subject, &fc.spki), (&sc.der, &sc.subject, &sc.spki));
        // Both issuers make certificates OpenSSL accepts, with the same subject line.
        let slow_issued = pki.issue_for(sc, 30).unwrap();
        assert_eq!(fast_issued.subject, slow_issued.subject);
        assert_eq!(fast_issued.subject, "O=Org, CN=dev");
        let rep = cert_rep(&pki, &slow, Ok(&fast_issued.der)).unwrap();
        let (status, _, cert) = client_read_rep(&rep, &pki.scep_recipient().cert, &selfsigned, &key).unwrap();
        assert_eq!((status.as_str(), cert.unwrap().to_der().unwrap()), ("0", fast_issued.der.clone()));
        pki.fast = ca_fast;
        pki.issuing = issuing;
        // A request signed by another key with the same certificate: neither path accepts it.
        let other = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let (forged, _, _) = client_request(
            &pki.scep_recipient().cert,
            &selfsigned,
            &other,
            &csr.to_der().unwrap(),
            false,
            Cipher::aes_128_cbc(),
        )
        .unwrap();
        assert!(fast::parse(pki.fast.as_ref().unwrap(), &forged).is_none());
        let r = parse_request(&pki, &forged).unwrap();
        assert_eq!(r.csr.err().map(|e| e.0), Some(FailInfo::BadMessageCheck));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (_dir, pki) = fresh_pki();
        assert!(parse_request(&pki, b"garbage").is_err());
        assert!(parse_request(&pki, &[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        let degenerate = ossl::degenerate(&[&pki.ca.cert]).unwrap();
        assert!(parse_request(&pki, &degenerate).is_err());
    }
}
