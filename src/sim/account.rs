//! A simulated iPhone in account-driven enrollment, as Apple documents it: a
//! person types their work account in Settings; the device reads the
//! domain's service discovery, POSTs its signed attributes to the BaseURL,
//! is told (401, `WWW-Authenticate: Bearer method="apple-as-web"`) where the
//! person signs in, opens that page, waits for the 308 to
//! `apple-remotemanagement-user-login://authentication-results?access-token=…`,
//! and POSTs again with `Authorization: Bearer`, getting its enrollment profile.
//! `SimDevice::from_profile` then enrolls it: a `BYOD` profile makes a User
//! Enrollment (an EnrollmentID, no UDID in anything it says).

use anyhow::{bail, Context as _};

use super::{pki, SimDevice};

/// What the 401 told the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub method: String,
    pub url: String,
}

/// Parse `Bearer method="apple-as-web", url="…"`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let rest = h.trim().strip_prefix("Bearer")?.trim();
    let mut method = None;
    let mut url = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "method" => method = Some(v),
            "url" => url = Some(v),
            _ => {}
        }
    }
    Some(Challenge {
        method: method?,
        url: url?,
    })
}

/// The access token in the 308's Location.
pub fn token_from_location(loc: &str) -> Option<String> {
    let q = loc.strip_prefix("apple-remotemanagement-user-login://authentication-results?")?;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("access-token="))
        .map(|t| urlencoding::decode(t).map(|c| c.into_owned()).unwrap_or_else(|_| t.to_owned()))
}

/// A device's first steps: discovery for `email` and `version` (`mdm-byod` /
/// `mdm-adde`) → the BaseURL; POST without a token → the challenge.
pub async fn discover(client: &reqwest::Client, base: &str, email: &str, version: &str) -> anyhow::Result<(String, Vec<u8>, Challenge)> {
    let url = format!(
        "{}/.well-known/com.apple.remotemanagement?user-identifier={}&model-family=iPhone",
        base.trim_end_matches('/'),
        urlencoding::encode(email)
    );
    let doc: serde_json::Value = client
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("service discovery")?;
    let Some(base_url) = doc["Servers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["Version"] == version)
        .and_then(|s| s["BaseURL"].as_str())
    else {
        bail!("service discovery offers no {version}: {doc}");
    };
    let body = signed_attributes()?;
    let resp = client
        .post(base_url)
        .header(reqwest::header::CONTENT_TYPE, "application/pkcs7-signature")
        .body(body.clone())
        .send()
        .await?;
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        bail!("the first POST to {base_url} answered {}, not 401", resp.status());
    }
    let h = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let c = parse_challenge(&h).with_context(|| format!("WWW-Authenticate {h:?}"))?;
    if c.method != "apple-as-web" {
        bail!("unexpected sign-in method {}", c.method);
    }
    Ok((base_url.to_owned(), body, c))
}

/// The device's attributes (LANGUAGE, PRODUCT, VERSION), signed by its own key.
pub fn signed_attributes() -> anyhow::Result<Vec<u8>> {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let mut n = openssl::x509::X509NameBuilder::new()?;
    n.append_entry_by_text("CN", "Apple iPhone Device CA")?;
    let id = pki::SimIdentity {
        cert: pki::self_signed(&key, &n.build())?,
        key,
    };
    let mut d = plist::Dictionary::new();
    d.insert("LANGUAGE".into(), "en-US".into());
    d.insert("PRODUCT".into(), "iPhone16,1".into());
    d.insert("VERSION".into(), "22B83".into());
    pki::sign_attached(&id, &crate::protocol::to_xml(&d))
}

/// The web view's sign-in against a directory form: GET the page, POST the
/// user and password, return the Location of the 308.
pub async fn directory_signin(client: &reqwest::Client, url: &str, email: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let page = format!("{url}?user-identifier={}", urlencoding::encode(email));
    let r = client.get(&page).send().await?;
    if !r.status().is_success() {
        bail!("sign-in page: HTTP {}", r.status());
    }
    let r = client.post(url).form(&[("user", user), ("password", password)]).send().await?;
    if r.status() != reqwest::StatusCode::PERMANENT_REDIRECT {
        bail!("sign-in: HTTP {}: {}", r.status(), r.text().await.unwrap_or_default().trim());
    }
    Ok(r.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned())
}

/// The second POST, with the token: the enrollment profile (or the HTTP status and body).
pub async fn fetch_profile(
    client: &reqwest::Client,
    base_url: &str,
    body: &[u8],
    token: &str,
) -> anyhow::Result<Result<Vec<u8>, (u16, String)>> {
    let resp = client
        .post(base_url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/pkcs7-signature")
        .body(body.to_vec())
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?.to_vec();
    if !status.is_success() {
        return Ok(Err((status.as_u16(), String::from_utf8_lossy(&bytes).into_owned())));
    }
    Ok(Ok(bytes))
}

/// The whole flow with a directory sign-in, then SCEP: a device ready to `enroll()`.
pub async fn enroll_with_directory(
    client: reqwest::Client,
    base: &str,
    version: &str,
    email: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<SimDevice> {
    let (base_url, body, challenge) = discover(&client, base, email, version).await?;
    let loc = directory_signin(&client, &challenge.url, email, user, password).await?;
    let token = token_from_location(&loc).with_context(|| format!("no access token in {loc:?}"))?;
    let profile = fetch_profile(&client, &base_url, &body, &token)
        .await?
        .map_err(|(s, b)| anyhow::anyhow!("profile: HTTP {s}: {}", b.trim()))?;
    SimDevice::from_profile(client, &profile, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_and_token_are_read_as_apple_writes_them() {
        assert_eq!(
            parse_challenge(r#"Bearer method="apple-as-web", url="https://mdm.example.com/a?b=c""#),
            Some(Challenge {
                method: "apple-as-web".into(),
                url: "https://mdm.example.com/a?b=c".into()
            })
        );
        assert_eq!(parse_challenge("Basic realm=x"), None);
        assert_eq!(
            token_from_location("apple-remotemanagement-user-login://authentication-results?access-token=abc%2Bd").as_deref(),
            Some("abc+d")
        );
        assert_eq!(token_from_location("https://evil/?access-token=x"), None);
    }
}
