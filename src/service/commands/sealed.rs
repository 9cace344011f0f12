//! Secrets inside queued commands: which values of a command are secret,
//! how such a command's body is sealed at rest, and how it is shown to
//! people.
//!
//! A value is secret when the service filled it in from a secret (an
//! escrowed UnlockToken, `$ACCESS_TOKEN`, `$DEVICE_ACCESS_TOKEN`,
//! `$DERIVED_CREDENTIAL_TOKEN`; a profile carrying a SCEP challenge, a proxy
//! token or a token where others than its device could read it: not
//! encrypted to the device, or outside its encrypted payloads — a derived
//! credential is only ever sent encrypted) or when Apple's schema key says so
//! (`UnlockToken`, `PIN`, passwords, …: [`SECRET_KEYS`]), and mdmd's own
//! in-house app download links ([`APP_LINK`]). The service marks
//! each one by its key path when it builds the command. A command with any
//! secret is stored sealed with the keyring (`pki::secrets`, AES-256-GCM,
//! the command's UUID as associated data):
//!
//! `mdmd-sealed-command:v1 <JSON key paths>\n<sealed:v1:…>`
//!
//! The key paths stay readable (they are not secret) so that views can say
//! what they left out without opening anything. The body is opened only to
//! hand it to its device ([`open`]); views show every marked value as
//! [`REDACTED`] to every role ([`redacted_command`]). Bodies without the
//! prefix are plain XML (commands without secrets, and every command stored
//! before sealing) and pass through unchanged.

use std::borrow::Cow;

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

use crate::pki::secrets::SecretBox;
use crate::pki::PkiError;

const MAGIC: &[u8] = b"mdmd-sealed-command:v1 ";

/// What a view shows instead of a secret value.
pub const REDACTED: &str = "[redacted]";

/// Command keys whose values are secret wherever they appear (Apple's
/// command schemas): ClearPasscode's UnlockToken, DeviceLock's and
/// EraseDevice's PIN, firmware / recovery-lock / mirroring passwords, the
/// FileVault unlock material, admin password hashes, app redemption codes.
pub const SECRET_KEYS: &[&str] = &[
    "UnlockToken",
    "PIN",
    "Password",
    "CurrentPassword",
    "NewPassword",
    "passwordHash",
    "PrivateKeyExport",
    "PrivateKeyExportPassword",
    "RedemptionCode",
];

/// The path of mdmd's per-device app download links (`service::apps::files`):
/// a `ManifestURL` carrying one is sealed and redacted like a token.
pub const APP_LINK: &str = "/mdm/apps/";

/// Keys of a device's command result whose values are secret.
pub const SECRET_RESULT_KEYS: &[&str] = &["ActivationLockBypassCode", "UnlockToken", "BootstrapToken"];

/// Variables whose values are secrets (bare names; `NAME:arg` forms are
/// split first).
pub fn secret_variable(name: &str) -> bool {
    matches!(
        crate::profiles::vars::split(name).0,
        "ACCESS_TOKEN" | "DEVICE_ACCESS_TOKEN" | "DERIVED_CREDENTIAL_TOKEN" | "SCEP_CHALLENGE" | "SCEP_PROXY_URL" | "DERIVED_CREDENTIAL"
    )
}

/// One step of a key path: a dictionary key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step {
    Index(usize),
    Key(String),
}

/// A key path inside the command dictionary.
pub type KeyPath = Vec<Step>;

/// Human form of a path: `Settings[0].Configuration["a.b"]`.
pub fn path_text(p: &[Step]) -> String {
    let mut s = String::new();
    for step in p {
        match step {
            Step::Index(i) => s.push_str(&format!("[{i}]")),
            Step::Key(k) if k.contains(['.', '[', ']', '"']) => s.push_str(&format!("[{k:?}]")),
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
        }
    }
    s
}

fn walk(v: &Value, at: &mut KeyPath, out: &mut Vec<KeyPath>, hit: &dyn Fn(Option<&str>, &Value) -> bool) {
    let key = match at.last() {
        Some(Step::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    if hit(key, v) {
        out.push(at.clone());
        return;
    }
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(Step::Index(i));
                walk(x, at, out, hit);
                at.pop();
            }
        }
        Value::Dictionary(d) => {
            for (k, x) in d {
                at.push(Step::Key(k.clone()));
                walk(x, at, out, hit);
                at.pop();
            }
        }
        _ => {}
    }
}

/// Paths in `command` (before its variables are filled) of every value that
/// is secret: a schema key of [`SECRET_KEYS`] (with a non-empty value), or
/// a string that uses a secret variable.
pub fn secret_paths(command: &Dictionary) -> Vec<KeyPath> {
    let mut out = Vec::new();
    let hit = |key: Option<&str>, v: &Value| -> bool {
        let schema = key.is_some_and(|k| SECRET_KEYS.contains(&k))
            && match v {
                Value::String(s) => !s.is_empty(),
                Value::Data(d) => !d.is_empty(),
                _ => true,
            };
        let var = match v {
            Value::String(s) => {
                let mut used = std::collections::BTreeSet::new();
                crate::profiles::vars::used(v, &mut used);
                !s.is_empty() && used.iter().any(|n| secret_variable(n))
            }
            _ => false,
        };
        // mdmd's own download link for an in-house app: whoever holds it can fetch the app.
        let link = key == Some("ManifestURL") && matches!(v, Value::String(s) if s.contains(APP_LINK));
        schema || var || link
    };
    for (k, x) in command {
        walk(x, &mut vec![Step::Key(k.clone())], &mut out, &hit);
    }
    out.sort();
    out.dedup();
    out
}

/// Is this stored body sealed?
pub fn is_sealed(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

fn aad(uuid: &str) -> String {
    format!("command/{uuid}")
}

/// Seal a command's XML with the paths of its secrets (nothing to seal when
/// there are none: the XML is returned as it is).
pub fn seal(secrets: &SecretBox, uuid: &str, xml: Vec<u8>, paths: &[KeyPath]) -> Result<Vec<u8>, PkiError> {
    if paths.is_empty() {
        return Ok(xml);
    }
    let header = serde_json::to_vec(paths).map_err(|e| PkiError::Crypto(format!("command secret paths: {e}")))?;
    let sealed = secrets.seal(&xml, &aad(uuid))?;
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(sealed.as_bytes());
    Ok(out)
}

fn split(body: &[u8]) -> Result<(&[u8], &[u8]), PkiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| PkiError::BadMessage("not a sealed command".into()))?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| PkiError::BadMessage("sealed command without its key paths".into()))?;
    Ok((&rest[..nl], &rest[nl + 1..]))
}

/// The key paths a stored body marks as secret (none for a plain body).
pub fn paths(body: &[u8]) -> Result<Vec<KeyPath>, PkiError> {
    if !is_sealed(body) {
        return Ok(Vec::new());
    }
    let (header, _) = split(body)?;
    serde_json::from_slice(header).map_err(|e| PkiError::BadMessage(format!("sealed command key paths: {e}")))
}

/// The XML a device gets for a stored body.
pub fn open<'a>(secrets: &SecretBox, uuid: &str, body: &'a [u8]) -> Result<Cow<'a, [u8]>, PkiError> {
    if !is_sealed(body) {
        return Ok(Cow::Borrowed(body));
    }
    let (_, sealed) = split(body)?;
    let sealed = std::str::from_utf8(sealed).map_err(|_| PkiError::BadMessage("sealed command is not text".into()))?;
    secrets.open(sealed, &aad(uuid)).map(Cow::Owned)
}

fn replace_at(v: &mut Value, path: &[Step]) {
    let Some((first, rest)) = path.split_first() else {
        *v = Value::String(REDACTED.into());
        return;
    };
    let next = match (first, v) {
        (Step::Key(k), Value::Dictionary(d)) => d.get_mut(k),
        (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    };
    if let Some(n) = next {
        replace_at(n, rest);
    }
}

/// Replace every value at `paths` (and every [`SECRET_KEYS`] value, which
/// also covers commands stored before sealing) with [`REDACTED`].
pub fn redact(command: &mut Dictionary, paths: &[KeyPath]) {
    let mut all = secret_paths(command);
    all.extend(paths.iter().cloned());
    let mut v = Value::Dictionary(std::mem::take(command));
    for p in &all {
        replace_at(&mut v, p);
    }
    if let Value::Dictionary(d) = v {
        *command = d;
    }
}

/// Replace the values of [`SECRET_RESULT_KEYS`] in a device's answer.
pub fn redact_result(result: &mut Value) {
    let mut found = Vec::new();
    walk(result, &mut Vec::new(), &mut found, &|k: Option<&str>, _: &Value| {
        k.is_some_and(|k| SECRET_RESULT_KEYS.contains(&k))
    });
    for p in &found {
        replace_at(result, p);
    }
}

/// A stored command as people see it: its `Command` dictionary with every
/// secret redacted (the body opened only in memory when it is sealed), and
/// the paths that were redacted. `None` when the body cannot be read.
pub fn redacted_command(secrets: &SecretBox, uuid: &str, body: &[u8]) -> Option<(Dictionary, Vec<String>)> {
    let marked = paths(body).ok()?;
    let xml = match open(secrets, uuid, body) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(command = %uuid, error = %e, "stored command does not open");
            return None;
        }
    };
    let v = crate::protocol::limits::parse_value(xml.as_ref()).ok()?;
    let mut command = v.into_dictionary()?.remove("Command")?.into_dictionary()?;
    let before = secret_paths(&command);
    redact(&mut command, &marked);
    let mut shown: Vec<String> = marked.iter().chain(before.iter()).map(|p| path_text(p)).collect();
    shown.sort();
    shown.dedup();
    Some((command, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(xml: &str) -> Dictionary {
        Value::from_reader_xml(std::io::Cursor::new(xml.as_bytes()))
            .unwrap()
            .into_dictionary()
            .unwrap()
    }

    #[test]
    fn paths_seal_open_redact() {
        let c = dict(
            r#"<plist version="1.0"><dict><key>RequestType</key><string>Settings</string><key>Settings</key><array><dict>
            <key>Item</key><string>ApplicationConfiguration</string><key>Configuration</key><dict>
            <key>a.b</key><string>Bearer $ACCESS_TOKEN</string><key>plain</key><string>$UDID</string></dict></dict></array>
            <key>PIN</key><string>123456</string></dict></plist>"#,
        );
        let p = secret_paths(&c);
        let texts: Vec<String> = p.iter().map(|x| path_text(x)).collect();
        assert_eq!(texts, vec!["PIN".to_owned(), "Settings[0].Configuration[\"a.b\"]".to_owned()]);
        let b = SecretBox::ephemeral();
        let xml =
            b"<?xml version=\"1.0\"?><plist><dict><key>Command</key><dict><key>PIN</key><string>123456</string></dict></dict></plist>"
                .to_vec();
        let sealed = seal(&b, "U1", xml.clone(), &p).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        assert_eq!(paths(&sealed).unwrap(), p);
        assert_eq!(open(&b, "U1", &sealed).unwrap().as_ref(), xml.as_slice());
        assert!(open(&b, "U2", &sealed).is_err(), "bound to its command");
        let (shown, _) = redacted_command(&b, "U1", &sealed).unwrap();
        assert_eq!(shown.get("PIN").and_then(Value::as_string), Some(REDACTED));
        // No secrets: stored as it is.
        assert_eq!(seal(&b, "U3", xml.clone(), &[]).unwrap(), xml);
        assert!(paths(b"mdmd-sealed-command:v1 no newline").is_err());
        assert!(open(&b, "U1", b"mdmd-sealed-command:v1 []\nsealed:v1:zz:AAAA").is_err());
    }
}
