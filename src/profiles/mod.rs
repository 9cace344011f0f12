//! Configuration profiles: reading, and (see `pki`) signing and encrypting.

/// The top-level identity of a profile (`PayloadIdentifier`, `PayloadUUID`,
/// `PayloadDisplayName`), from a plain or CMS-signed `.mobileconfig`.
pub fn peek(bytes: &[u8]) -> Option<(String, String, String)> {
    let plain = match plist::Value::from_reader(std::io::Cursor::new(bytes)) {
        Ok(v) => v,
        Err(_) => {
            let content = signed_content(bytes)?;
            plist::Value::from_reader(std::io::Cursor::new(content)).ok()?
        }
    };
    let d = plain.as_dictionary()?;
    let s = |k: &str| d.get(k).and_then(plist::Value::as_string).map(str::to_owned);
    Some((
        s("PayloadIdentifier")?,
        s("PayloadUUID")?,
        s("PayloadDisplayName").unwrap_or_default(),
    ))
}

/// The content of a CMS SignedData, without checking the signature.
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
