//! Per-device variables in profile templates and managed app configurations.
//!
//! A string value may use `$NAME` or `${NAME}` for any name in [`VARIABLES`];
//! other `$` text is left alone (passwords may contain dollars). Values are
//! substituted inside parsed plist strings, never in the XML text, so a value
//! can never change the document's structure. A variable with no value for a
//! device is an error for that device: it is never replaced by "".
//!
//! A few variables take a qualifier after a colon, `$NAME:qualifier` or
//! `${NAME:qualifier}` (see [`QUALIFIED`]): `$SCEP_PROXY_URL:corp` names the
//! organisation CA `corp`, `$DERIVED_CREDENTIAL:signing` a usage. The
//! reference's name then includes the qualifier (`SCEP_PROXY_URL:corp`).

use std::collections::BTreeSet;

use plist::Value;

/// The variables, with what they are filled from.
pub const VARIABLES: &[(&str, &str)] = &[
    ("UDID", "the device's UDID"),
    ("SERIAL_NUMBER", "serial number (Authenticate or DeviceInformation)"),
    ("DEVICE_NAME", "device name (Authenticate or DeviceInformation)"),
    ("PRODUCT_NAME", "product name, e.g. iPhone16,1"),
    ("MODEL", "model, e.g. MTLT3LL/A"),
    ("OS_VERSION", "OS version"),
    ("IMEI", "IMEI (cellular devices)"),
    ("MEID", "MEID (CDMA devices)"),
    ("WIFI_MAC", "Wi-Fi MAC address (DeviceInformation WiFiMAC)"),
    ("BLUETOOTH_MAC", "Bluetooth MAC address (DeviceInformation BluetoothMAC)"),
    ("PHONE_NUMBER", "phone number (DeviceInformation PhoneNumber)"),
    ("ENROLLMENT_ID", "the enrollment id mdmd uses for the channel (UDID, or UDID:user)"),
    (
        "DEVICE_GUID",
        "a stable GUID for the device, as Cisco ISE 3.1+ expects it in the identity certificate's SAN URI ID:Cisco:DeviceGuid:$DEVICE_GUID",
    ),
    (
        "USERNAME",
        "the device's user: an admin-set attribute, else who signed in to enroll it (directory, identity provider, invitation), else the user channel's short name",
    ),
    ("EMAIL", "the device's user's email: an admin-set attribute, else who enrolled it"),
    ("FULL_NAME", "the device's user's full name: an admin-set attribute, else who enrolled it"),
    (
        "SCEP_CHALLENGE",
        "a fresh single-use SCEP challenge for this device and payload (SCEP payloads only)",
    ),
    (
        "ACCESS_TOKEN",
        "the shared access token in effect (mdmd access-tokens), for an identity provider; app configurations using it are re-sent when it changes",
    ),
    (
        "DEVICE_ACCESS_TOKEN",
        "a signed per-device token (ES256 JWT: enrollment, compliance, expiry; keys at /.well-known/jwks.json), re-sent before it expires",
    ),
    (
        "SCEP_PROXY_URL",
        "with :CA, mdmd's SCEP proxy URL for the organisation CA named CA, carrying a token bound to this device and install (SCEP payload URL only)",
    ),
    (
        "DERIVED_CREDENTIAL",
        "with :authentication, :signing or :encryption, the device's derived credential (PKCS#12) of that usage: the whole PayloadContent of a com.apple.security.pkcs12 payload; mdmd fills in Password",
    ),
    (
        "DERIVED_CREDENTIAL_URL",
        "the URL a derived-credential provider's app posts the device's credentials to (managed app configuration)",
    ),
    (
        "DERIVED_CREDENTIAL_TOKEN",
        "a per-device token for DERIVED_CREDENTIAL_URL that can only post this device's credentials (managed app configuration)",
    ),
    ("SCEP_URL", "this server's SCEP URL"),
    ("SERVER_URL", "this server's public URL"),
];

/// Variables that take (or, except SCEP_CHALLENGE, need) a `:qualifier`.
pub const QUALIFIED: &[&str] = &["SCEP_CHALLENGE", "SCEP_PROXY_URL", "DERIVED_CREDENTIAL"];

/// The usages a derived credential can have.
pub const DERIVED_USAGES: &[&str] = &["authentication", "signing", "encryption"];

pub fn is_variable(name: &str) -> bool {
    match name.split_once(':') {
        Some((base, q)) => QUALIFIED.contains(&base) && !q.is_empty() && q.bytes().all(qualifier_char),
        None => VARIABLES.iter().any(|(n, _)| *n == name),
    }
}

fn qualifier_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// A reference's base name and qualifier: `SCEP_PROXY_URL:corp` -> (`SCEP_PROXY_URL`, Some(`corp`)).
pub fn split(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((b, q)) => (b, Some(q)),
        None => (name, None),
    }
}

/// One variable reference found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    start: usize,
    end: usize,
    name: String,
}

fn name_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'
}

fn refs(s: &str) -> Vec<Ref> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'{') {
            if let Some(close) = s[i + 2..].find('}') {
                let name = &s[i + 2..i + 2 + close];
                if is_variable(name) {
                    out.push(Ref {
                        start: i,
                        end: i + 3 + close,
                        name: name.to_owned(),
                    });
                    i += 3 + close;
                    continue;
                }
            }
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && name_char(b[j]) {
            j += 1;
        }
        // A qualifier: `$SCEP_PROXY_URL:corp`.
        if QUALIFIED.contains(&&s[i + 1..j]) && b.get(j) == Some(&b':') {
            let mut k = j + 1;
            while k < b.len() && qualifier_char(b[k]) {
                k += 1;
            }
            // A trailing dot or dash is punctuation, not part of the name.
            while k > j + 1 && matches!(b[k - 1], b'.' | b'-') {
                k -= 1;
            }
            if k > j + 1 {
                j = k;
            }
        }
        let name = &s[i + 1..j];
        if is_variable(name) {
            out.push(Ref {
                start: i,
                end: j,
                name: name.to_owned(),
            });
        }
        i = j.max(i + 1);
    }
    out
}

/// The variables a string uses.
pub fn in_str(s: &str) -> Vec<String> {
    refs(s).into_iter().map(|r| r.name).collect()
}

/// Every variable used anywhere in a plist value (strings and dictionary values).
pub fn used(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => out.extend(in_str(s)),
        Value::Array(a) => a.iter().for_each(|x| used(x, out)),
        Value::Dictionary(d) => d.values().for_each(|x| used(x, out)),
        _ => {}
    }
}

/// A variable that has no value for this device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("${name} (at {path}) has no value for this device")]
pub struct Missing {
    pub name: String,
    pub path: String,
}

/// Replace every variable in the strings of `v`; `lookup(name, path)` gives
/// a value or `None` (then the whole substitution fails).
pub fn fill(v: &mut Value, path: &str, lookup: &mut dyn FnMut(&str, &str) -> Option<String>) -> Result<(), Missing> {
    match v {
        Value::String(s) => {
            let rs = refs(s);
            if rs.is_empty() {
                return Ok(());
            }
            let mut out = String::with_capacity(s.len());
            let mut at = 0;
            for r in rs {
                out.push_str(&s[at..r.start]);
                match lookup(&r.name, path) {
                    Some(val) => out.push_str(&val),
                    None => {
                        return Err(Missing {
                            name: r.name,
                            path: path.to_owned(),
                        })
                    }
                }
                at = r.end;
            }
            out.push_str(&s[at..]);
            *s = out;
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                fill(x, &format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Dictionary(d) => {
            for (k, x) in d.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                fill(x, &p, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_known_names_only() {
        assert_eq!(in_str("user-$UDID@corp"), vec!["UDID"]);
        assert_eq!(in_str("${SERIAL_NUMBER}x$EMAIL"), vec!["SERIAL_NUMBER", "EMAIL"]);
        assert!(in_str("pa$$word $HOME ${NOPE} $").is_empty());
        // A longer unknown name is not a shorter known one.
        assert!(in_str("$UDIDS").is_empty());
    }

    #[test]
    fn qualified_names() {
        assert_eq!(in_str("$SCEP_PROXY_URL:corp-ca"), vec!["SCEP_PROXY_URL:corp-ca"]);
        assert_eq!(in_str("${SCEP_CHALLENGE:corp}x"), vec!["SCEP_CHALLENGE:corp"]);
        assert_eq!(in_str("$SCEP_CHALLENGE"), vec!["SCEP_CHALLENGE"]);
        assert_eq!(in_str("$DERIVED_CREDENTIAL:signing."), vec!["DERIVED_CREDENTIAL:signing"]);
        assert_eq!(in_str("$DERIVED_CREDENTIAL_URL"), vec!["DERIVED_CREDENTIAL_URL"]);
        assert_eq!(in_str("$UDID:x"), vec!["UDID"]);
        // Without a qualifier they are found (and the validator says what is missing).
        assert_eq!(in_str("$SCEP_PROXY_URL ${SCEP_PROXY_URL:}"), vec!["SCEP_PROXY_URL"]);
    }

    #[test]
    fn fills_or_names_what_is_missing() {
        let mut v = Value::Dictionary(
            [("A".to_owned(), Value::String("cn=$UDID, ${DEVICE_NAME}!".into()))]
                .into_iter()
                .collect(),
        );
        let mut look = |n: &str, _: &str| match n {
            "UDID" => Some("U1".to_owned()),
            "DEVICE_NAME" => Some("Ann's $UDID".to_owned()),
            _ => None,
        };
        fill(&mut v, "", &mut look).unwrap();
        // A value is not expanded again.
        assert_eq!(v.as_dictionary().unwrap()["A"], Value::String("cn=U1, Ann's $UDID!".into()));
        let mut w = Value::Array(vec![Value::String("$EMAIL".into())]);
        let e = fill(&mut w, "P", &mut look).unwrap_err();
        assert_eq!(e.name, "EMAIL");
        assert_eq!(e.path, "P[0]");
    }
}
