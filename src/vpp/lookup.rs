//! What the Apps and Books service says about itself and about the apps:
//! `GET /service/config` (Apple's "Service Config": the URLs of Apple's
//! other services and the request limits) and the legacy content metadata
//! lookup ("Getting app and book information (Legacy)") at the
//! `contentMetadataLookup` URL it names — an app's name, bundle id, current
//! version, minimum OS and icon, by Apple ID (adamId).
//!
//! The lookup is another Apple host: it needs no token and is sent none. Its
//! URL passes the same rule as the service URL (`crate::outbound::service_url`:
//! https, or http only to loopback); at most `MAX_LOOKUP_IDS` ids go in one
//! request (more are sent in several); the answer is read with the client's
//! size bound and every string kept is cut to a bound.

use reqwest::Method;
use serde_json::Value;

use super::{bounded, AppMeta, ServiceConfig, VppClient, VppError};

/// Ids in one lookup request.
pub const MAX_LOOKUP_IDS: usize = 100;
/// The longest URL kept from Apple's answers.
const MAX_URL: usize = 2048;
/// The longest name (app, artist) kept.
const MAX_NAME: usize = 256;
/// The longest bundle identifier Apple allows.
const MAX_BUNDLE_ID: usize = 155;
/// The longest version string kept.
const MAX_VERSION: usize = 64;
/// The longest adamId accepted (they are decimal numbers).
const MAX_ADAM_ID: usize = 20;

impl VppClient {
    /// `GET /service/config`: Apple's other URLs (`urls`) and limits; the
    /// content metadata lookup URL among them (`urls.contentMetadataLookup`,
    /// or v1's `contentMetadataLookupUrl`).
    pub async fn service_config(&self) -> Result<ServiceConfig, VppError> {
        let url = reqwest::Url::parse(&format!("{}/service/config", self.base)).map_err(|e| VppError::BadUrl(e.to_string()))?;
        let raw = self.send(Method::GET, url, "/service/config", None, true, None).await?;
        if !raw.is_object() {
            return Err(VppError::Decode("/service/config: the answer is not a JSON object".into()));
        }
        let lookup = raw
            .get("urls")
            .and_then(|u| u.get("contentMetadataLookup"))
            .or_else(|| raw.get("contentMetadataLookupUrl"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_URL && !s.chars().any(char::is_control))
            .map(str::to_owned);
        Ok(ServiceConfig {
            content_metadata_lookup: lookup,
            raw,
        })
    }

    /// The apps `adam_ids` name, from the content metadata lookup at
    /// `lookup_url` (what `service_config` gave), in the storefront of
    /// `country` (ISO 3166 alpha-2, as `/client/config` says; `us` without).
    /// Ids Apple does not know (and ids that are not numbers) are simply
    /// absent from the answer; the rest come in the order asked, once each.
    pub async fn lookup(&self, lookup_url: &str, adam_ids: &[String], country: Option<&str>) -> Result<Vec<AppMeta>, VppError> {
        let base = lookup_base(lookup_url)?;
        let cc = country
            .map(str::trim)
            .filter(|c| c.len() == 2 && c.chars().all(|x| x.is_ascii_alphabetic()))
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| "us".to_owned());
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<&str> = adam_ids
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty() && s.len() <= MAX_ADAM_ID && s.bytes().all(|b| b.is_ascii_digit()))
            .filter(|s| seen.insert(*s))
            .collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(MAX_LOOKUP_IDS) {
            let mut url = base.clone();
            url.query_pairs_mut()
                .append_pair("version", "2")
                .append_pair("id", &chunk.join(","))
                .append_pair("p", "mdm-lockup")
                .append_pair("caller", "MDM")
                .append_pair("platform", "enterprisestore")
                .append_pair("cc", &cc)
                .append_pair("l", "en");
            let v = self.send(Method::GET, url, "lookup", None, false, None).await?;
            let results = match v.get("results") {
                None | Some(Value::Null) => continue,
                Some(Value::Object(m)) => m,
                Some(_) => return Err(VppError::Decode("lookup: results is not an object".into())),
            };
            for id in chunk {
                if let Some(r) = results.get(*id).filter(|r| r.is_object()) {
                    out.push(app_meta(id, r));
                }
            }
        }
        Ok(out)
    }
}

/// The lookup URL checked by the service URL rule, its own query kept (ours
/// is appended after it).
fn lookup_base(lookup_url: &str) -> Result<reqwest::Url, VppError> {
    let lookup_url = lookup_url.trim();
    let (path, query) = match lookup_url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (lookup_url, None),
    };
    let checked = crate::outbound::service_url(path).map_err(|e| VppError::BadUrl(format!("the content metadata lookup URL {e}")))?;
    let whole = match query.filter(|q| !q.is_empty()) {
        Some(q) if q.contains('#') => {
            return Err(VppError::BadUrl(format!(
                "the content metadata lookup URL {}: no fragment",
                bounded(lookup_url, 200)
            )))
        }
        Some(q) => format!("{checked}?{q}"),
        None => checked,
    };
    reqwest::Url::parse(&whole).map_err(|e| VppError::BadUrl(format!("the content metadata lookup URL: {e}")))
}

/// A string field, trimmed, control characters replaced, cut to `max`; none when empty.
fn text(v: Option<&Value>, max: usize) -> Option<String> {
    let s = v?.as_str()?.trim();
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cut = bounded(&clean, max).trim();
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// One result of the lookup.
fn app_meta(id: &str, r: &Value) -> AppMeta {
    let version = r
        .get("offers")
        .and_then(Value::as_array)
        .and_then(|o| o.first())
        .and_then(|o| o.get("version"))
        .and_then(|v| text(v.get("display"), MAX_VERSION));
    // `artwork`: a list of sizes (the legacy answer) or one object.
    let artwork = match r.get("artwork") {
        Some(Value::Array(a)) => a.first(),
        other => other,
    };
    let icon_url = text(artwork.and_then(|a| a.get("url")), MAX_URL);
    let bundle_id = text(r.get("bundleId"), MAX_BUNDLE_ID);
    AppMeta {
        adam_id: id.to_owned(),
        name: text(r.get("name"), MAX_NAME)
            .or_else(|| bundle_id.clone())
            .unwrap_or_else(|| id.to_owned()),
        bundle_id,
        version,
        minimum_os: text(r.get("minimumOSVersion"), MAX_VERSION),
        artist: text(r.get("artistName"), MAX_NAME),
        icon_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_url_rule() {
        let ok = |u: &str| lookup_base(u).map(|u| u.to_string());
        assert_eq!(
            ok("https://uclient-api.itunes.apple.com/WebObjects/MZStorePlatform.woa/wa/lookup").unwrap(),
            "https://uclient-api.itunes.apple.com/WebObjects/MZStorePlatform.woa/wa/lookup"
        );
        assert_eq!(ok("https://example.com/lookup?x=1").unwrap(), "https://example.com/lookup?x=1");
        assert_eq!(ok("http://127.0.0.1:9/mdm/v2/lookup").unwrap(), "http://127.0.0.1:9/mdm/v2/lookup");
        for bad in [
            "http://example.com/lookup",
            "https://u:p@example.com/lookup",
            "https://example.com/lookup#x",
            "https://example.com/lookup?x=1#y",
            "ftp://127.0.0.1/lookup",
            "",
        ] {
            assert!(matches!(lookup_base(bad), Err(VppError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn results_read_within_bounds() {
        let r = json!({
            "name": format!("Pages{}", "x".repeat(1000)),
            "bundleId": "com.apple.Pages",
            "artistName": "Apple\u{7}",
            "offers": [{"version": {"display": "13.1", "externalId": 123}}],
            "minimumOSVersion": "16.0",
            "kind": "iosSoftware",
            "artwork": [{"url": "https://is1.example.com/icon.png", "width": 512}],
        });
        let m = app_meta("361309726", &r);
        assert_eq!(m.name.len(), MAX_NAME);
        assert_eq!(m.bundle_id.as_deref(), Some("com.apple.Pages"));
        assert_eq!(m.version.as_deref(), Some("13.1"));
        assert_eq!(m.minimum_os.as_deref(), Some("16.0"));
        assert_eq!(m.artist.as_deref(), Some("Apple"));
        assert_eq!(m.icon_url.as_deref(), Some("https://is1.example.com/icon.png"));
        // Odd shapes: nothing but the id, never a panic.
        let m = app_meta("1", &json!({"name": 7, "offers": "none", "artwork": {"url": 3}}));
        assert_eq!((m.name.as_str(), m.bundle_id, m.version, m.icon_url), ("1", None, None, None));
        let m = app_meta("2", &json!({"bundleId": "com.example.a", "artwork": {"url": "https://x/y.png"}}));
        assert_eq!(m.name, "com.example.a");
        assert_eq!(m.icon_url.as_deref(), Some("https://x/y.png"));
    }
}
