//! The stand-in's descriptions of apps, and what a device asks of the store:
//!
//! - `GET /service/config` (the token needed, like every API route): Apple's
//!   "Service Config" — `urls` (`contentMetadataLookup` is this stand-in's
//!   `/lookup`; the others name Apple's real services) and `limits`.
//! - `GET /lookup?version=2&id=ID1,ID2&p=mdm-lockup&caller=MDM&platform=…&cc=…`
//!   (no token, as Apple's legacy lookup): `{"results": {ID: {name, bundleId,
//!   artistName, offers: [{version: {display, externalId}}], minimumOSVersion,
//!   kind, artwork}}}` for the apps and books this "Apple" knows (bought with
//!   `add_app`/`add_book`, or described with `set_app_meta`); unknown ids are
//!   simply absent. No `id`, more than 100 ids, or a `version` other than 2
//!   is 400.
//! - `GET /sim/licence?adamId=…&serialNumber=…` (no token; not Apple's: what
//!   the App Store checks when a device without an Apple Account installs a
//!   device-assigned app): `{"licensed", "bundleId", "version"}`. Unknown
//!   app: `licensed` false and no bundle id.
//!
//! An app without a description is "App {id}", `com.example.app{id}`, 1.0.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{lock, query, Reply, State, VppStandIn};

/// Ids one lookup takes.
const MAX_LOOKUP_IDS: usize = 100;

/// An app as the store describes it.
#[derive(Clone, Debug)]
pub(super) struct AppMetaRec {
    name: String,
    bundle_id: String,
    version: String,
}

impl VppStandIn {
    /// Describe an app in the store: what the lookup answers and what a
    /// licensed device installs (its bundle id and version). Calling it again
    /// is a new version in the store.
    pub fn set_app_meta(&self, adam_id: &str, name: &str, bundle_id: &str, version: &str) {
        lock(&self.state).meta.insert(
            adam_id.to_owned(),
            AppMetaRec {
                name: name.to_owned(),
                bundle_id: bundle_id.to_owned(),
                version: version.to_owned(),
            },
        );
    }
}

/// A stable external version identifier for (adamId, version): what Apple's
/// `externalId` and a device's `ExternalVersionIdentifier` carry.
fn external_version_id(adam_id: &str, version: &str) -> i64 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("{adam_id}/{version}").as_bytes());
    // 9 decimal digits, as Apple's are.
    100_000_000 + (i64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]])) % 900_000_000)
}

impl State {
    /// What the store says of an app it knows: described, or bought without
    /// a description (the defaults).
    fn meta_of(&self, adam_id: &str) -> Option<(AppMetaRec, &'static str)> {
        let product = self.assets.get(adam_id).map(|a| a.product_type);
        if let Some(m) = self.meta.get(adam_id) {
            return Some((m.clone(), product.unwrap_or("App")));
        }
        let product = product?;
        Some((
            AppMetaRec {
                name: format!("App {adam_id}"),
                bundle_id: format!("com.example.app{adam_id}"),
                version: "1.0".into(),
            },
            product,
        ))
    }

    /// The routes that take no token; `None` for every other path.
    pub(super) fn tokenless(&mut self, method: &str, sub: &str, parts: &hyper::http::request::Parts) -> Option<Reply> {
        if !matches!(sub, "/lookup" | "/sim/licence") {
            return None;
        }
        self.stats.requests += 1;
        let key = if method == "GET" {
            format!("GET {sub}")
        } else {
            "other".to_owned()
        };
        *self.stats.calls.entry(key).or_default() += 1;
        if method != "GET" {
            return Some(Reply::error(
                405,
                crate::vpp::errors::METHOD,
                "This request contains an unsupported HTTP method for the requested endpoint.",
            ));
        }
        let q = match query(parts) {
            Ok(q) => q,
            Err(r) => return Some(r),
        };
        Some(match sub {
            "/lookup" => self.lookup(&q),
            _ => self.licence(&q),
        })
    }

    pub(super) fn service_config(&self) -> Reply {
        let mut m = self.common();
        m.insert(
            "urls".into(),
            json!({
                "contentMetadataLookup": format!("{}/lookup", self.base),
                "clientConfigSrv": format!("{}/client/config", self.base),
                "getAssetsSrv": format!("{}/assets", self.base),
                "getAssignmentsSrv": format!("{}/assignments", self.base),
                "associateAssetsSrv": format!("{}/assets/associate", self.base),
                "disassociateAssetsSrv": format!("{}/assets/disassociate", self.base),
                "statusSrv": format!("{}/status", self.base),
            }),
        );
        m.insert(
            "limits".into(),
            json!({ "maxAssets": crate::vpp::MAX_ASSETS, "maxSerialNumbers": crate::vpp::MAX_SERIALS }),
        );
        Reply::json(Value::Object(m))
    }

    fn lookup(&self, q: &HashMap<String, String>) -> Reply {
        let bad = |why: &str| Reply {
            status: 400,
            body: json!({ "errorMessage": why }),
            headers: Vec::new(),
        };
        if q.get("version").is_some_and(|v| v != "2") {
            return bad("Unsupported version.");
        }
        let Some(ids) = q.get("id").map(|s| s.trim()).filter(|s| !s.is_empty()) else {
            return bad("id is required.");
        };
        let ids: Vec<&str> = ids.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if ids.len() > MAX_LOOKUP_IDS {
            return bad("Too many ids.");
        }
        let mut results = serde_json::Map::new();
        for id in ids {
            let Some((m, product)) = self.meta_of(id) else { continue };
            let kind = if product == "Book" { "ebook" } else { "iosSoftware" };
            results.insert(
                id.to_owned(),
                json!({
                    "id": id,
                    "name": m.name,
                    "bundleId": m.bundle_id,
                    "artistName": self.org_name,
                    "kind": kind,
                    "minimumOSVersion": "16.0",
                    "offers": [{
                        "price": 0,
                        "priceFormatted": "Free",
                        "version": { "display": m.version, "externalId": external_version_id(id, &m.version) },
                    }],
                    "artwork": [{ "url": format!("https://is1-ssl.mzstatic.example/{id}/512x512bb.png"), "width": 512, "height": 512 }],
                }),
            );
        }
        Reply::json(json!({ "results": results }))
    }

    fn licence(&self, q: &HashMap<String, String>) -> Reply {
        let text = |k: &str| q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
        let (Some(adam_id), Some(serial)) = (text("adamId"), text("serialNumber")) else {
            return Reply::invalid("adamId and serialNumber are required.");
        };
        let licensed = self
            .assets
            .get(adam_id)
            .is_some_and(|a| a.device_assignable && a.holders.contains(serial));
        let mut out = json!({ "adamId": adam_id, "serialNumber": serial, "licensed": licensed });
        if let Some((m, _)) = self.meta_of(adam_id) {
            out["bundleId"] = json!(m.bundle_id);
            out["version"] = json!(m.version);
            out["name"] = json!(m.name);
            out["externalVersionId"] = json!(external_version_id(adam_id, &m.version));
        }
        Reply::json(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpp::{ContentToken, VppClient};

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client")
    }

    async fn get(url: &str) -> (u16, Value) {
        let r = http().get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn service_config_and_lookup_through_the_client() {
        let apple = VppStandIn::start("Example Org").await.unwrap();
        let token = ContentToken::parse(apple.token_file().as_bytes()).unwrap();
        let client = VppClient::new(&apple.url(), token, http()).unwrap();
        apple.add_app("361309726", 10);
        apple.set_app_meta("361309726", "Pages", "com.apple.Pages", "13.1");
        apple.add_app("408709785", 5);
        apple.add_book("123", 1);

        let sc = client.service_config().await.unwrap();
        let lookup = sc.content_metadata_lookup.clone().unwrap();
        assert_eq!(lookup, format!("{}/lookup", apple.url()));
        assert_eq!(sc.raw["limits"]["maxAssets"], 25);

        let mut ids: Vec<String> = vec!["408709785".into(), "361309726".into(), "999".into(), "not-a-number".into()];
        let metas = client.lookup(&lookup, &ids, Some("DE")).await.unwrap();
        let got: Vec<(&str, &str, Option<&str>, Option<&str>)> = metas
            .iter()
            .map(|m| (m.adam_id.as_str(), m.name.as_str(), m.bundle_id.as_deref(), m.version.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("408709785", "App 408709785", Some("com.example.app408709785"), Some("1.0")),
                ("361309726", "Pages", Some("com.apple.Pages"), Some("13.1")),
            ]
        );
        assert_eq!(metas[1].artist.as_deref(), Some("Example Org"));
        assert_eq!(metas[1].minimum_os.as_deref(), Some("16.0"));
        assert!(metas[1].icon_url.as_deref().is_some_and(|u| u.starts_with("https://")));

        // More than 100 ids: several requests, every answer kept.
        for i in 0..150 {
            apple.add_app(&format!("{}", 1000 + i), 1);
        }
        ids = (0..150).map(|i| format!("{}", 1000 + i)).collect();
        let before = apple.stats().calls.get("GET /lookup").copied().unwrap_or(0);
        let metas = client.lookup(&lookup, &ids, None).await.unwrap();
        assert_eq!(metas.len(), 150);
        assert_eq!(apple.stats().calls["GET /lookup"] - before, 2);
        // A lookup URL the service URL rule refuses is not asked.
        assert!(matches!(
            client.lookup("http://example.com/lookup", &ids, None).await,
            Err(crate::vpp::VppError::BadUrl(_))
        ));
        let st = apple.stats();
        assert_eq!(st.calls["GET /service/config"], 1);
        assert_eq!(st.refused, 0);
    }

    #[tokio::test]
    async fn routes_are_strict() {
        let apple = VppStandIn::start("Example Org").await.unwrap();
        apple.add_app("1", 1);
        // The service config needs the token; the lookup and the licence check do not.
        assert_eq!(get(&format!("{}/service/config", apple.url())).await.0, 401);
        let (s, v) = get(&format!("{}/lookup?version=2&p=mdm-lockup", apple.url())).await;
        assert_eq!(s, 400, "{v}");
        let (s, v) = get(&format!("{}/lookup?version=2&id=1,2&p=mdm-lockup&cc=us", apple.url())).await;
        assert_eq!(s, 200);
        assert_eq!(v["results"]["1"]["bundleId"], "com.example.app1");
        assert!(v["results"].get("2").is_none());
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        assert_eq!(get(&format!("{}/lookup?id={}", apple.url(), many.join(","))).await.0, 400);
        let (s, v) = get(&format!("{}/sim/licence?adamId=1&serialNumber=C02", apple.url())).await;
        assert_eq!(s, 200);
        assert_eq!(
            (v["licensed"].as_bool(), v["bundleId"].as_str()),
            (Some(false), Some("com.example.app1"))
        );
        let (s, v) = get(&format!("{}/sim/licence?adamId=77&serialNumber=C02", apple.url())).await;
        assert_eq!((s, v["licensed"].as_bool(), v.get("bundleId")), (200, Some(false), None));
        assert_eq!(get(&format!("{}/sim/licence?adamId=1", apple.url())).await.0, 400);
        let r = http().post(format!("{}/lookup?id=1", apple.url())).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
        let st = apple.stats();
        assert_eq!(st.calls["GET /lookup"], 3);
        assert_eq!(st.calls["GET /sim/licence"], 3);
        assert_eq!(st.refused, 1);
    }
}
