//! Configuration profiles: reading `.mobileconfig` templates (plain or
//! CMS-signed), validating them against Apple's schemas (`validate`),
//! per-device variables (`vars`), and rendering a device's copy: variables
//! filled, PayloadContent encrypted to the device's identity certificate
//! (EncryptedPayloadContent, CMS EnvelopedData AES-256), and CMS-signed by the
//! profile-signing identity.

pub mod appconfig;
pub mod validate;
pub mod vars;

use std::collections::BTreeSet;

use plist::{Dictionary, Value};
use sha2::Digest as _;
use thiserror::Error;

use crate::pki::{cms, Pki, PkiError};
use crate::protocol::limits::{self, PlistError};
use crate::protocol::schema::{Findings, Problem};

/// The top-level identity of a profile (`PayloadIdentifier`, `PayloadUUID`,
/// `PayloadDisplayName`), from a plain or CMS-signed `.mobileconfig`.
pub fn peek(bytes: &[u8]) -> Option<(String, String, String)> {
    let d = parse_any(bytes).ok()?;
    let s = |k: &str| d.get(k).and_then(Value::as_string).map(str::to_owned);
    Some((
        s("PayloadIdentifier")?,
        s("PayloadUUID")?,
        s("PayloadDisplayName").unwrap_or_default(),
    ))
}

/// The content of a CMS SignedData, without checking who signed it (the
/// integrity of the signed bytes is still checked).
pub fn signed_content(der: &[u8]) -> Option<Vec<u8>> {
    let mut cms = openssl::cms::CmsContentInfo::from_der(der).ok()?;
    let mut out = Vec::new();
    cms.verify(
        None,
        None,
        None,
        Some(&mut out),
        openssl::cms::CMSOptions::NO_SIGNER_CERT_VERIFY | openssl::cms::CMSOptions::BINARY,
    )
    .ok()?;
    Some(out)
}

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("not a configuration profile: {0}")]
    NotAProfile(String),
    #[error("the profile has {} problem(s): {}", .0.errors.len(), .0.errors.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Findings),
}

/// A profile's outer dictionary, from a plain plist (XML or binary) or a
/// CMS-signed one.
pub fn parse_any(bytes: &[u8]) -> Result<Dictionary, TemplateError> {
    let plain = match limits::parse_value(bytes) {
        Ok(v) => v,
        // Over a bound is final: it is a plist, just not one we take.
        Err(e @ (PlistError::TooDeep | PlistError::TooManyValues | PlistError::TooLarge)) => {
            return Err(TemplateError::NotAProfile(e.to_string()))
        }
        Err(e) => {
            let content =
                signed_content(bytes).ok_or_else(|| TemplateError::NotAProfile(format!("neither a plist ({e}) nor CMS-signed data")))?;
            limits::parse_value(&content).map_err(|e| TemplateError::NotAProfile(format!("signed content is not a plist: {e}")))?
        }
    };
    match plain {
        Value::Dictionary(d) => Ok(d),
        _ => Err(TemplateError::NotAProfile("the plist's root is not a dictionary".into())),
    }
}

/// A validated template, ready to store and render.
#[derive(Debug, Clone)]
pub struct Template {
    pub identifier: String,
    pub uuid: String,
    pub display_name: String,
    pub payload_types: Vec<String>,
    /// Variables the template uses.
    pub variables: BTreeSet<String>,
    /// The template as XML (unsigned).
    pub xml: Vec<u8>,
    /// SHA-256 (hex) of `xml`: a new upload with the same hash changes nothing.
    pub sha256: String,
    pub warnings: Vec<Problem>,
}

impl Template {
    /// Parse and validate an uploaded `.mobileconfig`.
    pub fn parse(bytes: &[u8]) -> Result<Template, TemplateError> {
        let dict = parse_any(bytes)?;
        let findings = validate::validate(&dict);
        if !findings.is_ok() {
            return Err(TemplateError::Invalid(findings));
        }
        let s = |k: &str| dict.get(k).and_then(Value::as_string).unwrap_or_default().to_owned();
        let payload_types = match dict.get("PayloadContent") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|p| p.as_dictionary()?.get("PayloadType")?.as_string().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let mut variables = BTreeSet::new();
        vars::used(&Value::Dictionary(dict.clone()), &mut variables);
        let xml = crate::protocol::to_xml(&dict);
        Ok(Template {
            identifier: s("PayloadIdentifier"),
            uuid: s("PayloadUUID"),
            display_name: s("PayloadDisplayName"),
            payload_types,
            variables,
            sha256: hex::encode(sha2::Sha256::digest(&xml)),
            xml,
            warnings: findings.warnings,
        })
    }
}

#[derive(Debug, Error)]
pub enum RenderError {
    #[error(transparent)]
    Missing(#[from] vars::Missing),
    #[error("stored template is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Crypto(#[from] PkiError),
    /// A `$DERIVED_CREDENTIAL:usage` payload with no such credential for the device.
    #[error("PayloadContent[{index}]: no {usage} derived credential for this device")]
    MissingDerived { index: usize, usage: String },
}

/// Parse a stored template's XML.
pub fn parse_stored(xml: &[u8]) -> Result<Dictionary, RenderError> {
    match limits::parse_value(xml) {
        Ok(Value::Dictionary(d)) => Ok(d),
        Ok(_) => Err(RenderError::Corrupt("root is not a dictionary".into())),
        Err(e) => Err(RenderError::Corrupt(e.to_string())),
    }
}

/// Fill a template's variables for one device, encrypt its payloads to
/// `recipient` (when given) and sign the result. `lookup(name, path)` gives
/// each variable's value. Returns the signed `.mobileconfig` (DER).
pub fn render(
    pki: &Pki,
    template: &Dictionary,
    lookup: &mut dyn FnMut(&str, &str) -> Option<String>,
    recipient: Option<&openssl::x509::X509Ref>,
) -> Result<Vec<u8>, RenderError> {
    let mut v = Value::Dictionary(template.clone());
    vars::fill(&mut v, "", lookup)?;
    let Value::Dictionary(mut top) = v else {
        return Err(RenderError::Corrupt("root is not a dictionary".into()));
    };
    if let Some(cert) = recipient {
        encrypt_payloads(&mut top, cert)?;
    }
    Ok(cms::sign_profile(pki, &crate::protocol::to_xml(&top))?)
}

/// Put derived credentials in place: every PKCS#12 payload whose
/// PayloadContent is `$DERIVED_CREDENTIAL:usage` gets the credential's
/// PKCS#12 as its PayloadContent and its password as Password.
pub fn fill_derived(top: &mut Dictionary, get: &dyn Fn(&str) -> Option<(Vec<u8>, String)>) -> Result<(), RenderError> {
    let Some(Value::Array(items)) = top.get_mut("PayloadContent") else {
        return Ok(());
    };
    for (i, item) in items.iter_mut().enumerate() {
        let Some(d) = item.as_dictionary_mut() else { continue };
        let ty = d.get("PayloadType").and_then(Value::as_string).unwrap_or_default().to_owned();
        let Some(usage) = validate::derived_usage(&ty, d).map(str::to_owned) else {
            continue;
        };
        let (data, password) = get(&usage).ok_or_else(|| RenderError::MissingDerived {
            index: i,
            usage: usage.clone(),
        })?;
        d.insert("PayloadContent".into(), Value::Data(data));
        d.insert("Password".into(), Value::String(password));
    }
    Ok(())
}

/// Replace PayloadContent by EncryptedPayloadContent: the PayloadContent
/// array as a plist, in CMS EnvelopedData (AES-256) to `cert`.
pub fn encrypt_payloads(top: &mut Dictionary, cert: &openssl::x509::X509Ref) -> Result<(), PkiError> {
    let content = top.remove("PayloadContent").unwrap_or(Value::Array(Vec::new()));
    let mut xml = Vec::new();
    content
        .to_writer_xml(&mut xml)
        .map_err(|e| PkiError::Crypto(format!("serialising PayloadContent: {e}")))?;
    let enveloped = cms::encrypt_to(cert, &xml)?;
    top.insert("EncryptedPayloadContent".into(), Value::Data(enveloped));
    top.insert("IsEncrypted".into(), Value::Boolean(true));
    Ok(())
}
