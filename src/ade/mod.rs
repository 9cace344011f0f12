//! Automated Device Enrollment (ADE, formerly DEP): Apple's Device Assignment
//! web service at `mdmenrollment.apple.com`, which tells us which devices
//! Apple Business Manager assigned to this server and carries the enrollment
//! profile a device receives at activation.
//!
//! This room owns the server token (`ServerToken`: the four OAuth
//! credentials and their expiry, from the decrypted `.p7m` file an admin
//! downloads), OAuth 1.0a signing and verification (`oauth`), and the client
//! (`client::AdeClient`): a session from `GET /session`, then the account,
//! the device list (fetch, then sync with the cursor), device details and the
//! profile calls (define, get, assign, remove). What each Apple answer means
//! for the caller is one `AdeError` variant: a cursor to start over, terms an
//! admin must accept, a token to replace, throttling that outlasted the
//! retries. It sits below the services (like `push`): it reads the clock and
//! nothing above it; what to do with the devices is the caller's.
//!
//! The stand-in of Apple's side for tests and `mdmd sim` is `sim::ade_api`.

pub mod client;
pub mod oauth;

pub use client::AdeClient;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Apple's Device Assignment service.
pub const APPLE_URL: &str = "https://mdmenrollment.apple.com";

/// The largest decrypted token file we read.
const MAX_TOKEN_TEXT: usize = 64 * 1024;
/// The longest credential we accept (Apple's are well under 100 characters).
const MAX_TOKEN_FIELD: usize = 1024;

/// A server token: the OAuth 1.0a credentials Apple Business Manager hands
/// this server (the decrypted token file). `Debug` shows the consumer key and
/// the expiry only.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerToken {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub access_token: String,
    pub access_secret: String,
    /// RFC 3339, e.g. `2027-10-11T20:25:57Z`.
    pub access_token_expiry: String,
}

impl std::fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerToken")
            .field("consumer_key", &self.consumer_key)
            .field("consumer_secret", &"<redacted>")
            .field("access_token", &"<redacted>")
            .field("access_secret", &"<redacted>")
            .field("access_token_expiry", &self.access_token_expiry)
            .finish()
    }
}

impl ServerToken {
    /// Parse the plaintext of a decrypted server token: the JSON between
    /// `-----BEGIN MESSAGE-----` and `-----END MESSAGE-----` (or bare JSON);
    /// every field required and non-empty, bounded sizes; expiry parsed as
    /// RFC 3339.
    pub fn from_plaintext(text: &[u8]) -> Result<ServerToken, AdeError> {
        if text.len() > MAX_TOKEN_TEXT {
            return Err(AdeError::BadToken(format!(
                "the token file is {} bytes; a server token is a few hundred (is this the right file?)",
                text.len()
            )));
        }
        let text =
            std::str::from_utf8(text).map_err(|_| AdeError::BadToken("the token file is not text: decrypt the .p7m file first".into()))?;
        const BEGIN: &str = "-----BEGIN MESSAGE-----";
        const END: &str = "-----END MESSAGE-----";
        let json = match text.find(BEGIN) {
            Some(i) => {
                let rest = &text[i + BEGIN.len()..];
                let j = rest
                    .find(END)
                    .ok_or_else(|| AdeError::BadToken("the token file has BEGIN MESSAGE but no END MESSAGE (truncated?)".into()))?;
                &rest[..j]
            }
            None => text,
        };
        let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|_| {
            AdeError::BadToken(
                "the token is not the JSON Apple sends: decrypt the .p7m file downloaded from Apple Business Manager with this server's key"
                    .into(),
            )
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| AdeError::BadToken("the token's JSON is not an object".into()))?;
        let field = |name: &str| crate::outbound::token_field(obj, name, "server token", MAX_TOKEN_FIELD).map_err(AdeError::BadToken);
        let token = ServerToken {
            consumer_key: field("consumer_key")?,
            consumer_secret: field("consumer_secret")?,
            access_token: field("access_token")?,
            access_secret: field("access_secret")?,
            access_token_expiry: field("access_token_expiry")?,
        };
        token.expires_at()?;
        Ok(token)
    }

    /// Expiry as unix seconds.
    pub fn expires_at(&self) -> Result<i64, AdeError> {
        time::OffsetDateTime::parse(self.access_token_expiry.trim(), &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| {
                AdeError::BadToken(format!(
                    "the server token's access_token_expiry {:?} is not an RFC 3339 time",
                    bounded(&self.access_token_expiry, 64)
                ))
            })
    }
}

/// A device as Apple's device list holds it. Sync answers also carry
/// `op_type` (`added`, `modified`, `deleted`) and `op_date`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Device {
    pub serial_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    /// `empty`, `assigned`, `pushed` or `removed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_assign_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_push_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_date: Option<String>,
}

/// One page of `POST /server/devices` or `POST /devices/sync`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DevicePage {
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub more_to_follow: bool,
    #[serde(default)]
    pub fetched_until: Option<String>,
}

/// The answer to defining, assigning or removing a profile: per serial
/// number `SUCCESS`, `NOT_ACCESSIBLE`, `FAILED` (or `THROTTLED`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProfileResult {
    #[serde(default)]
    pub profile_uuid: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: BTreeMap<String, String>,
}

/// `null` where Apple might send it for an empty list.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Error)]
pub enum AdeError {
    #[error("Apple says the sync cursor has expired (older than 7 days): fetch the full device list again")]
    ExpiredCursor,
    #[error("Apple does not know this sync cursor: fetch the full device list again")]
    InvalidCursor,
    #[error(
        "Apple refuses service until the organisation accepts new terms and conditions: an administrator must sign in to Apple Business Manager (or Apple School Manager) and accept them"
    )]
    TermsNotSigned,
    #[error("Apple rejected the ADE server token ({0}): download a new token for this server from Apple Business Manager and upload it")]
    TokenRejected(String),
    #[error("Apple denied access ({0}): check that the device or profile belongs to this server in Apple Business Manager")]
    Forbidden(String),
    #[error("Apple is throttling requests: try again in {retry_after_secs} seconds")]
    Throttled { retry_after_secs: u64 },
    #[error("Apple answered HTTP {status}: {code}")]
    Apple { status: u16, code: String },
    #[error("could not reach Apple's Device Assignment service: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("Apple's answer could not be read: {0}")]
    Decode(String),
    #[error("bad ADE server token: {0}")]
    BadToken(String),
    #[error("bad Device Assignment service URL: {0}")]
    BadUrl(String),
}

pub(crate) use crate::outbound::bounded;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"consumer_key":"CK_48dd68d198350f51258e885ce9a5c37ab7f98543c4a697323d75682a6c10a32501cb247e3db08105db868f73f2c972bdb6ae77112aea803b9219eb52689d42e6","consumer_secret":"CS_34c7b2b531a600d99a0e4edcf4a78ded79b86ef318118c2f5bcfee1b011108c32d5302df801adbe29d446eb78f02b13144e323eb9aad51c79f01e50cb45c3a68","access_token":"AT_927696831c59ba510cfe4ec1a69e5267c19881257d4bca2906a99d0785b785a6f6fdeb09774954fdd5e2d0ad952e3af52c6d8d2f21c924ba0caf4a031c158b89","access_secret":"AS_c31afd7a09691d83548489336e8ff1cb11b82b6bca13f793344496a556b1f4972eaff4dde6deb5ac9cf076fdfa97ec97699c34d515947b9cf9ed31c99dded6ba","access_token_expiry":"2027-10-11T20:25:57Z"}"#;

    #[test]
    fn token_in_message_armour() {
        let text = format!(
            "Content-Type: text/plain;charset=UTF8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\r\n{GOOD}\r\n-----END MESSAGE-----\r\n"
        );
        let t = ServerToken::from_plaintext(text.as_bytes()).unwrap();
        assert!(t.consumer_key.starts_with("CK_48dd"));
        assert!(t.access_secret.starts_with("AS_c31a"));
        assert_eq!(t.expires_at().unwrap(), 1823286357);
        // Bare JSON too.
        assert_eq!(ServerToken::from_plaintext(GOOD.as_bytes()).unwrap(), t);
        // Debug never shows the secrets.
        let dbg = format!("{t:?}");
        assert!(dbg.contains("CK_48dd") && dbg.contains("2027-10-11"));
        assert!(!dbg.contains("CS_") && !dbg.contains("AT_") && !dbg.contains("AS_"), "{dbg}");
    }

    #[test]
    fn token_problems_in_words() {
        let err = |s: &str| match ServerToken::from_plaintext(s.as_bytes()) {
            Err(AdeError::BadToken(m)) => m,
            other => panic!("{other:?}"),
        };
        let missing = GOOD.replace("\"access_secret\"", "\"other\"");
        assert_eq!(err(&missing), "the server token has no access_secret");
        let empty = GOOD.replace("\"CK_48dd68d198350f51258e885ce9a5c37ab7f98543c4a697323d75682a6c10a32501cb247e3db08105db868f73f2c972bdb6ae77112aea803b9219eb52689d42e6\"", "\"  \"");
        assert_eq!(err(&empty), "the server token's consumer_key is empty");
        let number = GOOD.replace("\"2027-10-11T20:25:57Z\"", "12");
        assert_eq!(err(&number), "the server token's access_token_expiry is not a string");
        let date = GOOD.replace("2027-10-11T20:25:57Z", "next year");
        assert!(err(&date).contains("not an RFC 3339 time"));
        assert!(err("junk").contains("not the JSON Apple sends"));
        assert!(err("[1,2]").contains("not an object"));
        assert!(err("-----BEGIN MESSAGE-----\n{").contains("no END MESSAGE"));
        assert!(matches!(
            ServerToken::from_plaintext(&[0xff, 0xfe, 0x00]),
            Err(AdeError::BadToken(m)) if m.contains("not text")
        ));
        let huge = "x".repeat(MAX_TOKEN_TEXT + 1);
        assert!(err(&huge).contains("bytes"));
        let long = GOOD.replace("CK_48dd", &format!("CK_{}", "a".repeat(MAX_TOKEN_FIELD)));
        assert!(err(&long).contains("characters long"));
        let control = GOOD.replace("CK_48dd", "CK_\\u0007");
        assert!(err(&control).contains("control characters"));
    }

    #[test]
    fn pages_tolerate_nulls() {
        let p: DevicePage = serde_json::from_str(r#"{"devices":null,"cursor":"c","more_to_follow":null}"#).unwrap();
        assert!(p.devices.is_empty() && !p.more_to_follow);
        assert_eq!(p.cursor.as_deref(), Some("c"));
        let r: ProfileResult = serde_json::from_str(r#"{"devices":{"A":"SUCCESS"}}"#).unwrap();
        assert_eq!(r.profile_uuid, None);
        assert_eq!(r.devices["A"], "SUCCESS");
    }

    #[test]
    fn bounded_cuts_on_a_char_boundary() {
        assert_eq!(bounded("héllo", 2), "h");
        assert_eq!(bounded("abc", 10), "abc");
    }
}
