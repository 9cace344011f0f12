//! Apple's Apps and Books for Organizations API (formerly VPP, the Volume
//! Purchase Program), version 2, at `vpp.itunes.apple.com/mdm/v2`: the
//! licences an organisation bought in Apple Business Manager, and which
//! devices hold one. A device is given an App Store app without an Apple
//! Account by associating one of the app's licences with its serial number
//! here, then sending it `InstallApplication`.
//!
//! This room owns the content token (`ContentToken`: the sToken file an admin
//! downloads from Apple Business Manager, base64 of JSON `{token, expDate,
//! orgName}`, sent whole as `Authorization: Bearer …`) and the client
//! (`client::VppClient`): the location (`GET /client/config`), the assets and
//! their licence counts (`GET /assets`, every page), associating and
//! disassociating licences with serial numbers (`POST
//! /assets/associate|disassociate`, asynchronous: an event id, then `GET
//! /status` until COMPLETE or FAILED), and the assignments (`GET
//! /assignments`, every page). What each Apple answer means for the caller is
//! one `VppError` variant: a token to replace, no licences left, an event that
//! failed for some serials, throttling that outlasted the retries. What the
//! service says about itself (`GET /service/config`) and the apps' names,
//! bundle ids and versions (the legacy content metadata lookup) are
//! `lookup`'s. It sits
//! below the services (like `ade`): it reads the clock and nothing above it;
//! which app goes to which device is the caller's.
//!
//! Apple's error numbers (developer.apple.com/documentation/devicemanagement,
//! "Handling error responses" and "Service Config"): 9601 login required,
//! 9621 token expired, 9622 invalid authentication token, 9625 token revoked,
//! 9722 malformed `Authorization` (all 401: `TokenRejected`); 9646 too many
//! requests (429) and 9729 unavailable (503): retried as `Retry-After` says;
//! 9709 not enough licences (in an event's failures, or at once:
//! `NoLicences`); 9610 licence not found (disassociating a serial that holds
//! none); 9602, 9700–9708, 9718, 9719, 9726, 9727 malformed requests
//! (`Apple`).
//!
//! The stand-in of Apple's side for tests and `mdmd sim` is `sim::vpp_api`.

pub mod client;
pub mod lookup;

pub use client::VppClient;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Apple's Apps and Books service, version 2.
pub const APPLE_URL: &str = "https://vpp.itunes.apple.com/mdm/v2";

/// Apple's documented request limits (`GET /service/config`, `limits`):
/// serial numbers and assets in one associate or disassociate request.
pub const MAX_SERIALS: usize = 1000;
pub const MAX_ASSETS: usize = 25;

/// Apple's error numbers this crate acts on (see the module header).
pub mod errors {
    pub const INVALID_ARGUMENT: i64 = 9602;
    pub const LOGIN_REQUIRED: i64 = 9601;
    pub const LICENSE_NOT_FOUND: i64 = 9610;
    pub const TOKEN_EXPIRED: i64 = 9621;
    pub const INVALID_TOKEN: i64 = 9622;
    pub const TOKEN_REVOKED: i64 = 9625;
    pub const TOO_MANY_REQUESTS: i64 = 9646;
    pub const PAGE_INDEX: i64 = 9650;
    pub const MAX_ASSETS: i64 = 9700;
    pub const MAX_USERS: i64 = 9701;
    pub const MAX_SERIALS: i64 = 9702;
    pub const DUPLICATE_ASSETS: i64 = 9703;
    pub const DUPLICATE_USERS: i64 = 9704;
    pub const DUPLICATE_SERIALS: i64 = 9705;
    pub const NOT_REVOCABLE: i64 = 9706;
    pub const NOT_DEVICE_ASSIGNABLE: i64 = 9707;
    pub const EVENT_NOT_FOUND: i64 = 9708;
    pub const NOT_ENOUGH_LICENSES: i64 = 9709;
    pub const ASSET_REQUIRED: i64 = 9718;
    pub const ASSIGNEES_REQUIRED: i64 = 9719;
    pub const INVALID_VERSION: i64 = 9721;
    pub const BAD_AUTHORIZATION: i64 = 9722;
    pub const METHOD: i64 = 9726;
    pub const CONTENT_TYPE: i64 = 9727;
    pub const UNAVAILABLE: i64 = 9729;
    pub const USER_NOT_FOUND: i64 = 9609;

    /// The numbers that mean: this token no longer works, upload a new one.
    pub const TOKEN: &[i64] = &[LOGIN_REQUIRED, TOKEN_EXPIRED, INVALID_TOKEN, TOKEN_REVOKED, BAD_AUTHORIZATION];
}

/// The largest token file we read.
const MAX_TOKEN_TEXT: usize = 16 * 1024;
/// The longest field inside it.
const MAX_TOKEN_FIELD: usize = 8 * 1024;

/// A content token (sToken): the file an admin downloads from Apple Business
/// Manager (Preferences → Payments and Billing → Content Tokens). `Debug`
/// shows the organisation and the expiry only.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentToken {
    /// The file's text, whitespace removed: what goes after `Bearer `.
    pub stoken: String,
    pub org_name: String,
    /// `expDate`, unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for ContentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentToken")
            .field("stoken", &"<redacted>")
            .field("org_name", &self.org_name)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl ContentToken {
    /// The file's text: base64 of JSON `{token, expDate, orgName}`. Bounded
    /// size, every field required, non-empty and a string; `expDate` in RFC
    /// 3339 or Apple's `2027-10-11T20:25:57-0700`. An expired token parses
    /// (Apple is the judge; see `expired`).
    pub fn parse(text: &[u8]) -> Result<ContentToken, VppError> {
        if text.len() > MAX_TOKEN_TEXT {
            return Err(VppError::BadToken(format!(
                "the token file is {} bytes; a content token is well under {MAX_TOKEN_TEXT} (is this the right file?)",
                text.len()
            )));
        }
        let text = std::str::from_utf8(text).map_err(|_| VppError::BadToken("the token file is not text".into()))?;
        // One line as Apple writes it; a copy may have been wrapped or carry a BOM.
        let stoken: String = text
            .trim_start_matches('\u{feff}')
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if stoken.is_empty() {
            return Err(VppError::BadToken("the token file is empty".into()));
        }
        let json = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(&stoken).map_err(|_| {
                VppError::BadToken(
                    "the token file is not base64: upload the .vpptoken file downloaded from Apple Business Manager as it is".into(),
                )
            })?
        };
        let v: serde_json::Value = serde_json::from_slice(&json)
            .map_err(|_| VppError::BadToken("the token is not the JSON Apple writes (token, expDate, orgName)".into()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| VppError::BadToken("the token's JSON is not an object".into()))?;
        let field = |name: &str| crate::outbound::token_field(obj, name, "content token", MAX_TOKEN_FIELD).map_err(VppError::BadToken);
        field("token")?;
        let org_name = field("orgName")?;
        let exp = field("expDate")?;
        let expires_at = parse_time(&exp).ok_or_else(|| {
            VppError::BadToken(format!(
                "the content token's expDate {:?} is not a date (RFC 3339 or 2027-10-11T20:25:57-0700)",
                bounded(&exp, 64)
            ))
        })?;
        Ok(ContentToken {
            stoken,
            org_name,
            expires_at,
        })
    }

    /// Past its `expDate` at `now` (unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at <= now
    }
}

/// A date as Apple writes them: RFC 3339 (`2027-10-11T20:25:57Z`,
/// `…-07:00`, fractions) or `2027-10-11T20:25:57-0700` / `…+0000`; unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    const APPLE: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]");
    const APPLE_FRACTION: &[time::format_description::FormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond][offset_hour sign:mandatory][offset_minute]"
    );
    let s = s.trim();
    time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(s, APPLE))
        .or_else(|_| time::OffsetDateTime::parse(s, APPLE_FRACTION))
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Unix seconds as Apple writes dates: `2030-11-08T22:33:22+0000`.
pub fn apple_time(t: i64) -> Option<String> {
    const FORMAT: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+0000");
    time::OffsetDateTime::from_unix_timestamp(t).ok()?.format(FORMAT).ok()
}

/// An app or book the organisation owns licences of (`GET /assets`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub adam_id: String,
    /// `STDQ` or `PLUS`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pricing_param: String,
    /// `App` or `Book`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub product_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub device_assignable: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub revocable: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub assigned_count: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub available_count: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub retired_count: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub total_count: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub supported_platforms: Vec<String>,
}

/// The token's location (`GET /client/config`).
#[derive(Clone, PartialEq)]
pub struct ClientConfig {
    /// `locationName` (v2), or `location.locationName` (v1's shape).
    pub location_name: Option<String>,
    /// `location.locationId`: only v1 answers carry it.
    pub location_id: Option<i64>,
    /// `countryISO2ACode`.
    pub country: Option<String>,
    /// `tokenExpirationDate`, as Apple wrote it.
    pub token_expiration: Option<String>,
    /// `uId`: the library; two tokens of one location share it.
    pub uid: Option<String>,
    /// The whole answer, `notificationAuthToken` redacted.
    pub raw: serde_json::Value,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("location_name", &self.location_name)
            .field("location_id", &self.location_id)
            .field("country", &self.country)
            .field("token_expiration", &self.token_expiration)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

/// What the service says about itself (`GET /service/config`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// `urls.contentMetadataLookup`: where `VppClient::lookup` asks.
    pub content_metadata_lookup: Option<String>,
    /// The whole answer.
    pub raw: serde_json::Value,
}

/// An app as the content metadata lookup describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppMeta {
    pub adam_id: String,
    /// `name` (the bundle id, or the adamId, when Apple gave none).
    pub name: String,
    /// `bundleId`.
    pub bundle_id: Option<String>,
    /// `offers[0].version.display`: the current version in the store.
    pub version: Option<String>,
    /// `minimumOSVersion`.
    pub minimum_os: Option<String>,
    /// `artistName`.
    pub artist: Option<String>,
    /// The first `artwork` URL.
    pub icon_url: Option<String>,
}

/// An asynchronous event's state (`GET /status?eventId=…`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventStatus {
    /// `PENDING`, `COMPLETE` or `FAILED` (FAILED also when only some failed).
    pub status: String,
    /// `ASSOCIATE`, `DISASSOCIATE`, `REVOKE` …
    pub event_type: Option<String>,
    pub completed: i64,
    pub requested: i64,
    pub failures: Vec<Failure>,
}

/// One failed (asset, serial number) of an event: Apple's `ErrorResponse`
/// with its `errorInfo` (assets, serial numbers, users) spread out, one
/// `Failure` per asset and serial (or user).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failure {
    pub adam_id: Option<String>,
    pub serial_number: Option<String>,
    pub error_number: Option<i64>,
    pub error_message: Option<String>,
}

/// A licence held by a device (or a user: then no serial number).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub adam_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub pricing_param: String,
    #[serde(default)]
    pub serial_number: Option<String>,
}

/// `null` where Apple might send it for an empty value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Error)]
pub enum VppError {
    #[error("bad content token: {0}")]
    BadToken(String),
    #[error("bad Apps and Books service URL: {0}")]
    BadUrl(String),
    #[error(
        "Apple rejected the content token ({0}): download a new content token for this location from Apple Business Manager (Preferences → Payments and Billing) and upload it"
    )]
    TokenRejected(String),
    #[error("no licences of {adam_id} are left: buy more in Apple Business Manager or release some")]
    NoLicences { adam_id: String },
    #[error("Apple answered HTTP {status}{}: {message}", number.map(|n| format!(" (error {n})")).unwrap_or_default())]
    Apple { status: u16, number: Option<i64>, message: String },
    #[error("Apple is throttling requests: try again in {retry_after_secs} seconds")]
    Throttled { retry_after_secs: u64 },
    #[error("could not reach Apple's Apps and Books service: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("Apple's answer could not be read: {0}")]
    Decode(String),
    #[error("the event failed for {}", describe_failures(.0))]
    EventFailed(Vec<Failure>),
    #[error("{0}")]
    Timeout(String),
}

fn describe_failures(f: &[Failure]) -> String {
    if f.is_empty() {
        return "reasons Apple did not give".into();
    }
    let mut parts: Vec<String> = f
        .iter()
        .take(5)
        .map(|x| {
            let who = x.serial_number.as_deref().unwrap_or("?");
            let what = x.adam_id.as_deref().unwrap_or("?");
            let why = x.error_message.as_deref().unwrap_or("no reason given");
            match x.error_number {
                Some(n) => format!("{who} ({what}): {why} [{n}]"),
                None => format!("{who} ({what}): {why}"),
            }
        })
        .collect();
    if f.len() > 5 {
        parts.push(format!("and {} more", f.len() - 5));
    }
    parts.join("; ")
}

pub(crate) use crate::outbound::bounded;

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn file(json: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    const GOOD: &str = r#"{"token":"VGhpcyBpcyBhIHNhbXBsZSB0ZXh0IHdoaWNoIHdhcyB1c2VkIHRvIGNyZWF0ZSB0aGUgc2ltdWxhdG9yIHRva2VuCg==","expDate":"2027-10-11T20:25:57-0700","orgName":"Example Org"}"#;

    #[test]
    fn token_parses_and_hides() {
        let text = file(GOOD);
        let t = ContentToken::parse(format!("{text}\n").as_bytes()).unwrap();
        assert_eq!(t.stoken, text);
        assert_eq!(t.org_name, "Example Org");
        // 2027-10-11T20:25:57-0700 = 2027-10-12T03:25:57Z.
        assert_eq!(t.expires_at, 1823311557);
        assert!(!t.expired(1_700_000_000) && t.expired(1823311557));
        // A wrapped copy with a BOM is the same token.
        let wrapped = format!("\u{feff}{}\r\n{}\n", &text[..40], &text[40..]);
        assert_eq!(ContentToken::parse(wrapped.as_bytes()).unwrap(), t);
        let dbg = format!("{t:?}");
        assert!(dbg.contains("Example Org") && !dbg.contains(&text[..20]), "{dbg}");
    }

    #[test]
    fn expiry_date_forms() {
        for (s, want) in [
            ("2027-10-11T20:25:57-0700", 1823311557),
            ("2027-10-12T03:25:57+0000", 1823311557),
            ("2027-10-12T03:25:57Z", 1823311557),
            ("2027-10-12T05:25:57+02:00", 1823311557),
            ("2027-10-12T03:25:57.250Z", 1823311557),
            ("2027-10-11T20:25:57.5-0700", 1823311557),
            // Long past: parses (Apple refuses it with 9621).
            ("2020-12-31T13:57:19+02:00", 1609415839),
        ] {
            assert_eq!(parse_time(s), Some(want), "{s}");
            let t = ContentToken::parse(file(&GOOD.replace("2027-10-11T20:25:57-0700", s)).as_bytes()).unwrap();
            assert_eq!(t.expires_at, want, "{s}");
        }
        for bad in ["2027-10-11", "next year", "2027-10-11T20:25:57", "2027-13-11T20:25:57Z", ""] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(apple_time(1823311557).as_deref(), Some("2027-10-12T03:25:57+0000"));
        assert_eq!(parse_time(&apple_time(1_900_000_000).unwrap()), Some(1_900_000_000));
    }

    #[test]
    fn token_problems_in_words() {
        let err = |b: &[u8]| match ContentToken::parse(b) {
            Err(VppError::BadToken(m)) => m,
            other => panic!("{other:?}"),
        };
        let json = |s: &str| err(file(s).as_bytes());
        for name in ["token", "expDate", "orgName"] {
            let missing = GOOD.replace(&format!("\"{name}\""), "\"other\"");
            assert_eq!(json(&missing), format!("the content token has no {name}"));
        }
        assert_eq!(json(&GOOD.replace("Example Org", " ")), "the content token's orgName is empty");
        assert_eq!(
            json(&GOOD.replace("\"2027-10-11T20:25:57-0700\"", "1823311557")),
            "the content token's expDate is not a string"
        );
        assert!(json(&GOOD.replace("2027-10-11T20:25:57-0700", "soon")).contains("is not a date"));
        assert!(json(&GOOD.replace("Example Org", "Ex\\u0007")).contains("control characters"));
        assert!(json(&GOOD.replace("Example Org", &"a".repeat(MAX_TOKEN_FIELD + 1))).contains("characters long"));
        assert!(json("[1,2]").contains("not an object"));
        assert!(json("junk").contains("not the JSON"));
        assert!(err(b"not base64 at all!").contains("not base64"));
        assert!(err(b"  \n").contains("empty"));
        assert!(err(&[0xff, 0xfe, 0x00]).contains("not text"));
        assert!(err(&vec![b'A'; MAX_TOKEN_TEXT + 1]).contains("bytes"));
    }

    #[test]
    fn wire_shapes_tolerate_nulls() {
        let a: Asset = serde_json::from_str(
            r#"{"adamId":"408709785","assignedCount":5000,"availableCount":10000,"deviceAssignable":true,"pricingParam":"STDQ","productType":"App","retiredCount":0,"revocable":true,"supportedPlatforms":["iOS"],"totalCount":15000}"#,
        )
        .unwrap();
        assert_eq!((a.adam_id.as_str(), a.available_count, a.total_count), ("408709785", 10000, 15000));
        assert_eq!(a.supported_platforms, ["iOS"]);
        let a: Asset = serde_json::from_str(r#"{"adamId":"1","supportedPlatforms":null,"revocable":null}"#).unwrap();
        assert!(a.supported_platforms.is_empty() && !a.revocable);
        let x: Assignment = serde_json::from_str(r#"{"adamId":"1","pricingParam":"STDQ","clientUserId":"u"}"#).unwrap();
        assert_eq!(x.serial_number, None);
    }

    #[test]
    fn failures_read_in_words() {
        let e = VppError::EventFailed(vec![Failure {
            adam_id: Some("408709785".into()),
            serial_number: Some("C02X".into()),
            error_number: Some(9709),
            error_message: Some("There aren't enough assets available to complete this association.".into()),
        }]);
        assert_eq!(
            e.to_string(),
            "the event failed for C02X (408709785): There aren't enough assets available to complete this association. [9709]"
        );
        let e = VppError::Apple {
            status: 400,
            number: Some(9705),
            message: "dup".into(),
        };
        assert_eq!(e.to_string(), "Apple answered HTTP 400 (error 9705): dup");
        assert_eq!(bounded("héllo", 2), "h");
    }
}
