//! Pure protocol types: check-in messages, command reports, commands, and the
//! schema table generated from Apple's device-management YAML. No I/O here.

pub mod ade;
pub mod builders;
pub mod checkin;
pub mod command;
pub mod declarative;
pub mod ids;
pub mod ipa;
pub mod json;
pub mod limits;
pub mod schema;
pub mod suggest;

pub use checkin::{CheckinMessage, CheckinRequest};
pub use command::{Command, CommandReport, ErrorChainItem, Status};
pub use ids::{EnrollmentId, EnrollmentKind, Ids};

use thiserror::Error;

/// Everything that can be wrong with a device's request body.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("body is not a property list: {0}")]
    NotAPlist(String),
    #[error("property list root is not a dictionary")]
    NotADictionary,
    #[error("missing required key {0}")]
    MissingKey(&'static str),
    #[error("key {key} has the wrong type: {detail}")]
    BadKey { key: String, detail: String },
    #[error("unknown MessageType {0:?}")]
    UnknownMessageType(String),
    #[error("unknown Status {0:?}")]
    UnknownStatus(String),
    #[error("no enrollment identifier (UDID or EnrollmentID) in request")]
    NoIdentifier,
    #[error("enrollment identifier is not valid: {0}")]
    BadIdentifier(String),
}

/// Parse a request body (XML or binary plist) into its root dictionary,
/// within `limits`' bounds on nesting and size.
pub fn parse_dict(body: &[u8]) -> Result<plist::Dictionary, ProtocolError> {
    let value = limits::parse_value(body).map_err(|e| ProtocolError::NotAPlist(e.to_string()))?;
    match value {
        plist::Value::Dictionary(d) => Ok(d),
        _ => Err(ProtocolError::NotADictionary),
    }
}

/// A device request body, classified: what the fuzz target and the HTTP
/// handler both start from.
#[derive(Debug)]
pub enum Request {
    Checkin(CheckinRequest),
    Report(CommandReport),
}

/// Parse any bytes as a device request. Never panics.
pub fn parse_request(body: &[u8]) -> Result<Request, ProtocolError> {
    let d = parse_dict(body)?;
    if checkin::is_checkin(&d) {
        CheckinRequest::from_dict(&d).map(Request::Checkin)
    } else {
        CommandReport::from_owned_dict(d).map(Request::Report)
    }
}

/// Serialise a dictionary as an XML plist document.
pub fn to_xml(dict: &plist::Dictionary) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // Writing to a Vec cannot fail for a well-formed in-memory Value.
    if plist::Value::Dictionary(dict.clone()).to_writer_xml(&mut out).is_err() {
        out.clear();
    }
    out
}

pub(crate) fn get_str<'a>(d: &'a plist::Dictionary, key: &'static str) -> Result<Option<&'a str>, ProtocolError> {
    match d.get(key) {
        None => Ok(None),
        Some(plist::Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ProtocolError::BadKey {
            key: key.into(),
            detail: "expected string".into(),
        }),
    }
}

pub(crate) fn get_data<'a>(d: &'a plist::Dictionary, key: &'static str) -> Result<Option<&'a [u8]>, ProtocolError> {
    match d.get(key) {
        None => Ok(None),
        Some(plist::Value::Data(b)) => Ok(Some(b.as_slice())),
        Some(_) => Err(ProtocolError::BadKey {
            key: key.into(),
            detail: "expected data".into(),
        }),
    }
}

pub(crate) fn get_bool(d: &plist::Dictionary, key: &'static str) -> Result<Option<bool>, ProtocolError> {
    match d.get(key) {
        None => Ok(None),
        Some(plist::Value::Boolean(b)) => Ok(Some(*b)),
        Some(_) => Err(ProtocolError::BadKey {
            key: key.into(),
            detail: "expected boolean".into(),
        }),
    }
}

#[cfg(test)]
mod fuzz_regression {
    /// The fuzz target's entry point over real captures and cheap mutations of
    /// them (bit flips, truncations): must never panic.
    #[test]
    fn mutated_captures_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/nanomdm-device-captures");
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "plist"))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        seeds.push(b"bplist00\xd1\x01\x02".to_vec());
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in &seeds {
            assert!(super::parse_request(seed).is_ok() || seed.starts_with(b"bplist"));
            for _ in 0..400 {
                let mut m = seed.clone();
                match next() % 3 {
                    0 => {
                        let i = (next() as usize) % m.len();
                        m[i] ^= 1 << (next() % 8);
                    }
                    1 => m.truncate((next() as usize) % m.len()),
                    _ => {
                        let i = (next() as usize) % m.len();
                        m.insert(i, (next() % 256) as u8);
                    }
                }
                let _ = super::parse_request(&m);
            }
        }
    }
}
