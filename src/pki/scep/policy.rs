//! What a SCEP request may ask for, checked before anything is issued,
//! stored or logged. Fixed bounds (protocol and RFC 5280 upper bounds):
//!
//! - the request (PKCS#10) is at most [`MAX_CSR_BYTES`]; its extensions
//!   (SANs included) are never copied into what we issue, whose extensions
//!   are our own;
//! - the subject has at most [`MAX_SUBJECT_ATTRS`] attributes, each value at
//!   most [`MAX_ATTR_CHARS`] characters (RFC 5280's `ub-common-name` and
//!   friends), and no common name of our CA or of an organisation CA (nor our
//!   CA's whole name);
//! - the key is RSA of at least [`MIN_RSA_BITS`] and at most the configured
//!   maximum (`--scep-max-key-bits`);
//! - the `transactionID` is 1 to [`MAX_TRANSACTION_ID`] characters of
//!   PrintableString (RFC 8894 § 3.2.1.1 uses a hash in hex), checked when
//!   the message is parsed: a request that breaks it is answered 400 and
//!   never logged with it.

use x509_cert::name::Name;

use super::fast::Csr;

pub const MAX_CSR_BYTES: usize = 16 * 1024;
pub const MAX_SUBJECT_ATTRS: usize = 16;
pub const MAX_ATTR_CHARS: usize = 64;
pub const MIN_RSA_BITS: usize = 2048;
pub const MAX_TRANSACTION_ID: usize = 128;
/// The default of `--scep-max-key-bits`.
pub const DEFAULT_MAX_RSA_BITS: usize = 4096;

/// The names a device's certificate may not carry: the common names (lower
/// case) and whole names (DER) of our CA and of the organisation CAs.
#[derive(Debug, Clone, Default)]
pub struct Reserved {
    pub common_names: Vec<String>,
    pub names_der: Vec<Vec<u8>>,
}

impl Reserved {
    /// Add a CA certificate's names (DER; unreadable input adds nothing).
    pub fn add_cert_der(&mut self, der: &[u8]) {
        use der::{Decode as _, Encode as _};
        let Ok(c) = x509_cert::Certificate::from_der(der) else {
            return;
        };
        let subject = &c.tbs_certificate.subject;
        self.common_names.extend(common_names(subject).map(|cn| normal(&cn)));
        if let Ok(d) = subject.to_der() {
            self.names_der.push(d);
        }
    }
}

fn normal(s: &str) -> String {
    s.trim().to_lowercase()
}

const CN: &str = "2.5.4.3";

fn common_names(n: &Name) -> impl Iterator<Item = String> + '_ {
    n.0.iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid.to_string() == CN)
        .map(|atv| String::from_utf8_lossy(atv.value.value()).into_owned())
}

/// Check a CSR against the policy: `Err` is the reason, fit for a log line
/// (it never quotes the request's values at length).
pub fn check_csr(csr: &Csr, max_rsa_bits: usize, reserved: &Reserved) -> Result<(), String> {
    if csr.der.len() > MAX_CSR_BYTES {
        return Err(format!("the request is {} bytes (at most {MAX_CSR_BYTES})", csr.der.len()));
    }
    match csr.rsa_bits() {
        Some(bits) if (MIN_RSA_BITS..=max_rsa_bits).contains(&bits) => {}
        bits => {
            return Err(format!(
                "key must be RSA of {MIN_RSA_BITS} to {max_rsa_bits} bits (got {} bits)",
                bits.unwrap_or(0)
            ))
        }
    }
    check_subject(&csr.subject, reserved)
}

/// The subject's bounds and reserved names.
pub fn check_subject(subject: &Name, reserved: &Reserved) -> Result<(), String> {
    let attrs: Vec<_> = subject.0.iter().flat_map(|rdn| rdn.0.iter()).collect();
    if attrs.len() > MAX_SUBJECT_ATTRS {
        return Err(format!("the subject has {} attributes (at most {MAX_SUBJECT_ATTRS})", attrs.len()));
    }
    for atv in &attrs {
        let chars = String::from_utf8_lossy(atv.value.value()).chars().count();
        if chars > MAX_ATTR_CHARS {
            return Err(format!(
                "subject attribute {} is {chars} characters (at most {MAX_ATTR_CHARS})",
                atv.oid
            ));
        }
    }
    if let Ok(d) = der::Encode::to_der(subject) {
        if reserved.names_der.contains(&d) {
            return Err("the subject is a CA's name".into());
        }
    }
    if let Some(cn) = common_names(subject).find(|cn| reserved.common_names.contains(&normal(cn))) {
        return Err(format!(
            "the subject names a CA ({:?})",
            cn.chars().take(MAX_ATTR_CHARS).collect::<String>()
        ));
    }
    Ok(())
}

/// Is this an acceptable `transactionID`?
pub fn check_transaction_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_TRANSACTION_ID {
        return Err(format!(
            "transactionID must be 1 to {MAX_TRANSACTION_ID} characters (got {})",
            id.len()
        ));
    }
    let printable = |c: char| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c);
    if !id.chars().all(printable) {
        return Err("transactionID must be PrintableString characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        use std::str::FromStr as _;
        Name::from_str(s).expect("a name")
    }

    #[test]
    fn subjects() {
        let mut reserved = Reserved::default();
        let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut n = openssl::x509::X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", "Corp Issuing CA").unwrap();
        n.append_entry_by_text("O", "Corp").unwrap();
        let ca = crate::sim::pki::self_signed(&key, &n.build()).unwrap();
        reserved.add_cert_der(&ca.to_der().unwrap());
        reserved.add_cert_der(b"not a certificate");
        assert!(check_subject(&name("CN=device 1,O=Corp"), &reserved).is_ok());
        assert!(check_subject(&name(&format!("CN={}", "a".repeat(MAX_ATTR_CHARS))), &reserved).is_ok());
        assert!(check_subject(&name(&format!("CN={}", "a".repeat(MAX_ATTR_CHARS + 1))), &reserved).is_err());
        assert!(check_subject(&name("CN= corp issuing ca "), &reserved).is_err());
        assert!(check_subject(&name("CN=Corp Issuing CA,O=Else"), &reserved).is_err());
        let many = (0..=MAX_SUBJECT_ATTRS).map(|i| format!("OU=u{i}")).collect::<Vec<_>>().join(",");
        assert!(check_subject(&name(&many), &reserved).is_err());
    }

    #[test]
    fn transaction_ids() {
        assert!(check_transaction_id("3F2A0B").is_ok());
        assert!(check_transaction_id(&"a".repeat(MAX_TRANSACTION_ID)).is_ok());
        assert!(check_transaction_id(&"a".repeat(MAX_TRANSACTION_ID + 1)).is_err());
        assert!(check_transaction_id("").is_err());
        assert!(check_transaction_id("abc\nforged line").is_err());
        assert!(check_transaction_id("ab\u{1b}[31m").is_err());
    }
}
