//! An XML client of Cisco ISE's MDM API, written from Cisco's published
//! shapes (an `<ise_api>` envelope; `deviceList` of `device` with
//! `macaddress` and `attributes`; HTTP basic with an account that has the
//! API role), shared by tests/nac.rs and tests/ise.rs.
#![allow(dead_code)]

pub struct Ise {
    pub base: String,
    pub client: reqwest::Client,
    pub user: String,
    pub password: String,
}

pub struct Device {
    pub mac: String,
    pub attrs: std::collections::HashMap<String, String>,
}

pub fn parse(xml: &str) -> (String, Vec<Device>) {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML ({e}): {xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "ise_api", "{xml}");
    let name = root
        .children()
        .find(|n| n.has_tag_name("name"))
        .and_then(|n| n.text())
        .unwrap_or_default()
        .to_owned();
    let mut out = Vec::new();
    for d in root.descendants().filter(|n| n.has_tag_name("device")) {
        let mac = d
            .children()
            .find(|n| n.has_tag_name("macaddress"))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .to_owned();
        let mut attrs = std::collections::HashMap::new();
        for a in d.descendants().filter(|n| n.is_element() && n.children().all(|c| !c.is_element())) {
            // Leaves, with compliance's children as compliance.status etc.
            let parent = a.parent().map(|p| p.tag_name().name()).unwrap_or_default();
            let key = if parent == "compliance" || parent == "result" {
                format!("{parent}.{}", a.tag_name().name())
            } else {
                a.tag_name().name().to_owned()
            };
            attrs.insert(key, a.text().unwrap_or_default().to_owned());
        }
        out.push(Device { mac, attrs });
    }
    (name, out)
}

/// The text of the first element named `name` (e.g. `paging_info`).
pub fn field(xml: &str, name: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let n = doc.descendants().find(|n| n.has_tag_name(name))?;
    Some(n.text().unwrap_or_default().to_owned())
}

impl Ise {
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: String) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn api_path(&self, version: u32) -> String {
        let (s, body) = self.get(&format!("/ciscoise/mdminfo/?ise_api_version={version}")).await;
        assert_eq!(s, 200, "{body}");
        let doc = roxmltree::Document::parse(&body).unwrap();
        let f = |n: &str| {
            doc.descendants()
                .find(|x| x.has_tag_name(n))
                .and_then(|x| x.text())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(f("name"), "mdminfo");
        assert_eq!(f("api_version"), version.to_string());
        assert_eq!(f("vendor"), "mdmd");
        assert!(f("query_max_size").parse::<u32>().unwrap() >= 1000);
        assert!(f("redirect_url").ends_with("/mdm/enroll"));
        for k in ["messaging_support", "product_name", "product_version"] {
            assert!(!f(k).is_empty(), "{k} in {body}");
        }
        f("api_path")
    }
}
