//! What the CA builds for SCEP: a device identity certificate and the
//! SUCCESS CertRep that carries it, encoded here and signed by OpenSSL with
//! the pooled key contexts of `CaFast`.

use super::*;

/// A certificate this CA issued, with what the store records of it.
pub struct Issued {
    pub der: Vec<u8>,
    pub serial: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

fn ext(oid: ObjectIdentifier, critical: bool, value: &impl Encode) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(der_err)?).map_err(der_err)?,
    })
}

fn der_err(e: der::Error) -> PkiError {
    PkiError::Crypto(format!("DER: {e}"))
}

fn time(unix: i64) -> Result<Time, PkiError> {
    let d = std::time::Duration::from_secs(unix.max(0) as u64);
    // UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5).
    if unix < 2_524_608_000 {
        Ok(Time::UtcTime(UtcTime::from_unix_duration(d).map_err(der_err)?))
    } else {
        Ok(Time::GeneralTime(
            der::asn1::GeneralizedTime::from_unix_duration(d).map_err(der_err)?,
        ))
    }
}

/// "CN=…, O=…" in the certificate's order, with OpenSSL's short names.
pub fn name_string(n: &Name) -> String {
    let mut out = Vec::new();
    for rdn in n.0.iter() {
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let short = match oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.5" => "serialNumber",
                "2.5.4.4" => "SN",
                "2.5.4.42" => "GN",
                "2.5.4.12" => "title",
                "1.2.840.113549.1.9.1" => "emailAddress",
                "0.9.2342.19200300.100.1.1" => "UID",
                "0.9.2342.19200300.100.1.25" => "DC",
                other => other,
            };
            out.push(format!("{short}={}", String::from_utf8_lossy(atv.value.value())));
        }
    }
    out.join(", ")
}

/// Issue a device identity (TLS client, RSA key from the CSR) for `days`:
/// the same profile as `Pki::issue_identity`, encoded here, signed by the
/// issuing CA `ca` (RSA or ECDSA).
pub fn issue_identity(ca: &CaFast, csr: &Csr, days: u32) -> Result<Issued, PkiError> {
    use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectKeyIdentifier};
    let mut serial = [0u8; 16];
    openssl::rand::rand_bytes(&mut serial)?;
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive, 16 bytes
    let now = crate::clock::now();
    let (not_before, not_after) = (now - 300, now + days as i64 * 86_400);
    let ski = sha1_of(csr.spki.subject_public_key.raw_bytes());
    let rfc = const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS;
    let extensions: Extensions = vec![
        ext(
            rfc,
            true,
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
        )?,
        ext(
            const_oid::db::rfc5280::ID_CE_KEY_USAGE,
            true,
            &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
        )?,
        ext(
            const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE,
            false,
            &ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_CLIENT_AUTH]),
        )?,
        ext(
            const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
            false,
            &SubjectKeyIdentifier(OctetString::new(ski).map_err(der_err)?),
        )?,
        ext(
            const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca.key_id.clone()).map_err(der_err)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        )?,
    ];
    let alg = ca.signature_alg();
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(der_err)?,
        signature: alg.clone(),
        issuer: ca.subject.clone(),
        validity: Validity {
            not_before: time(not_before)?,
            not_after: time(not_after)?,
        },
        subject: csr.subject.clone(),
        subject_public_key_info: csr.spki.clone(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(der_err)?;
    let sig = ca
        .sign_sha256(&tbs_der)
        .ok_or_else(|| PkiError::Crypto(format!("signing the certificate: {}", openssl::error::ErrorStack::get())))?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(der_err)?,
    };
    Ok(Issued {
        der: cert.to_der().map_err(der_err)?,
        serial: serial_hex(&serial),
        subject: name_string(&csr.subject),
        not_before,
        not_after,
    })
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, PkiError> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(der_err)?;
    Ok(Attribute { oid, values })
}

fn printable(s: &str) -> Result<Any, PkiError> {
    Any::encode_from(&PrintableStringRef::new(s).map_err(der_err)?).map_err(der_err)
}

fn octets(b: &[u8]) -> Result<Any, PkiError> {
    Any::encode_from(&OctetString::new(b).map_err(der_err)?).map_err(der_err)
}

/// A SUCCESS CertRep: the certificate (and `chain`, an issuing CA between it
/// and the root) in a degenerate SignedData, encrypted
/// to the request's signer with its cipher, signed by the CA with the SCEP
/// attributes. The same shape as OpenSSL's path builds.
pub fn cert_rep_success(
    ca: &CaFast,
    signer_der: &[u8],
    cipher: Sym,
    transaction_id: &str,
    recipient_nonce: &[u8],
    cert_der: &[u8],
    chain: &[Vec<u8>],
) -> Result<Vec<u8>, PkiError> {
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::enveloped_data::{EncryptedContentInfo, KeyTransRecipientInfo, RecipientInfos};
    use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignerInfo, SignerInfos};
    let bad = |what: &str| PkiError::Crypto(format!("{what}: {}", openssl::error::ErrorStack::get()));
    let issued = Certificate::from_der(cert_der).map_err(der_err)?;
    let signer = Certificate::from_der(signer_der).map_err(der_err)?;
    let (signer_key, _) = rsa_public(&signer.tbs_certificate.subject_public_key_info)
        .ok_or_else(|| PkiError::BadMessage("the request's signer key is not RSA".into()))?;
    // Degenerate certs-only SignedData.
    let mut certs = SetOfVec::new();
    certs.insert(CertificateChoices::Certificate(issued)).map_err(der_err)?;
    for c in chain {
        certs
            .insert(CertificateChoices::Certificate(Certificate::from_der(c).map_err(der_err)?))
            .map_err(der_err)?;
    }
    let degenerate = SignedData {
        version: cms::content_info::CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(certs)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    let inner = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&degenerate).map_err(der_err)?,
    }
    .to_der()
    .map_err(der_err)?;
    // EnvelopedData to the signer.
    let mut key = vec![0u8; cipher.key_len()];
    let mut iv = vec![0u8; cipher.iv_len()];
    openssl::rand::rand_bytes(&mut key)?;
    openssl::rand::rand_bytes(&mut iv)?;
    let encrypted = cipher.run(true, &key, &iv, &inner).ok_or_else(|| bad("encrypting the CertRep"))?;
    let enc_key = (|| {
        let mut c = PkeyCtx::new(&signer_key).ok()?;
        c.encrypt_init().ok()?;
        c.set_rsa_padding(Padding::PKCS1).ok()?;
        let mut out = Vec::new();
        c.encrypt_to_vec(&key, &mut out).ok()?;
        Some(out)
    })()
    .ok_or_else(|| bad("encrypting the content key"))?;
    let mut recips = SetOfVec::new();
    recips
        .insert(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: cms::content_info::CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: signer.tbs_certificate.issuer.clone(),
                serial_number: signer.tbs_certificate.serial_number.clone(),
            }),
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            enc_key: OctetString::new(enc_key).map_err(der_err)?,
        }))
        .map_err(der_err)?;
    let env = EnvelopedData {
        version: cms::content_info::CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(recips),
        encrypted_content: EncryptedContentInfo {
            content_type: ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(octets(&iv)?),
            },
            encrypted_content: Some(OctetString::new(encrypted).map_err(der_err)?),
        },
        unprotected_attrs: None,
    };
    let content = ContentInfo {
        content_type: ID_ENVELOPED_DATA,
        content: Any::encode_from(&env).map_err(der_err)?,
    }
    .to_der()
    .map_err(der_err)?;
    // The outer SignedData by the CA.
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut attrs: SetOfVec<Attribute> = SetOfVec::new();
    for a in [
        attribute(ID_CONTENT_TYPE, Any::encode_from(&ID_DATA).map_err(der_err)?)?,
        attribute(
            ID_SIGNING_TIME,
            Any::encode_from(&UtcTime::from_unix_duration(now).map_err(der_err)?).map_err(der_err)?,
        )?,
        attribute(ID_MESSAGE_DIGEST, octets(&sha2::Sha256::digest(&content))?)?,
        attribute(SCEP_TRANSACTION_ID, printable(transaction_id)?)?,
        attribute(SCEP_MESSAGE_TYPE, printable("3")?)?,
        attribute(SCEP_PKI_STATUS, printable("0")?)?,
        attribute(SCEP_SENDER_NONCE, octets(&nonce)?)?,
        attribute(SCEP_RECIPIENT_NONCE, octets(recipient_nonce)?)?,
    ] {
        attrs.insert(a).map_err(der_err)?;
    }
    let signature = ca
        .sign_sha256(&attrs.to_der().map_err(der_err)?)
        .ok_or_else(|| bad("signing the CertRep"))?;
    let sha256 = AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: Some(Any::null()),
    };
    let mut signer_infos = SetOfVec::new();
    signer_infos
        .insert(SignerInfo {
            version: cms::content_info::CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: ca.issuer.clone(),
                serial_number: ca.serial.clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs: Some(attrs),
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            signature: OctetString::new(signature).map_err(der_err)?,
            unsigned_attrs: None,
        })
        .map_err(der_err)?;
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms.insert(sha256).map_err(der_err)?;
    let mut ca_certs = SetOfVec::new();
    ca_certs
        .insert(CertificateChoices::Certificate(
            Certificate::from_der(&ca.cert_der).map_err(der_err)?,
        ))
        .map_err(der_err)?;
    let outer = SignedData {
        version: cms::content_info::CmsVersion::V1,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: Some(octets(&content)?),
        },
        certificates: Some(CertificateSet(ca_certs)),
        crls: None,
        signer_infos: SignerInfos(signer_infos),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&outer).map_err(der_err)?,
    }
    .to_der()
    .map_err(der_err)
}
