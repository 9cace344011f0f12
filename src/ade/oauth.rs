//! OAuth 1.0a (RFC 5849) with HMAC-SHA1, as Apple's `GET /session` takes it:
//! the header `Authorization: OAuth realm="ADM", oauth_consumer_key=…,
//! oauth_token=…, oauth_signature_method="HMAC-SHA1", oauth_signature=…,
//! oauth_timestamp=…, oauth_nonce=…, oauth_version="1.0"`.
//!
//! The signature base string is `METHOD&pct(base URL)&pct(sorted,
//! normalized parameters)` (§3.4.1), the key `pct(consumer secret) &
//! pct(token secret)` (§3.4.2), percent-encoding everything but the
//! unreserved set (§3.6). `authorization` signs (the client); `verify`
//! checks a presented header against a token (the stand-in); remembering
//! nonces is the verifier's.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::ServerToken;

/// The realm Apple's service names.
pub const REALM: &str = "ADM";
/// The longest `Authorization` header `verify` reads.
const MAX_HEADER: usize = 8 * 1024;

/// RFC 5849 §3.6: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX` (upper-case hex).
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh nonce: 32 random alphanumerics.
pub fn nonce() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng as _;
    rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}

/// The base string URI (§3.4.1.2): scheme and host in lower case, the port
/// only when not the scheme's default, the path, no query or fragment. Also
/// the query's parameters (decoded), which take part in the signature.
fn base_uri(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = u.host_str().ok_or("the URL has no host")?.to_ascii_lowercase();
    let mut out = format!("{}://{host}", u.scheme().to_ascii_lowercase());
    // `Url` already leaves out the scheme's default port.
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(u.path());
    let query = u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    Ok((out, query))
}

/// The signature base string for `method` and `url` with `params` (the
/// protocol parameters but `realm` and `oauth_signature`; the URL's query
/// parameters are added here).
pub fn base_string(method: &str, url: &str, params: &[(String, String)]) -> Result<String, String> {
    let (uri, query) = base_uri(url)?;
    let mut all: Vec<(String, String)> = params.iter().chain(query.iter()).map(|(k, v)| (pct(k), pct(v))).collect();
    all.sort();
    let normalized = all.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    Ok(format!("{}&{}&{}", method.to_ascii_uppercase(), pct(&uri), pct(&normalized)))
}

fn mac(consumer_secret: &str, token_secret: &str) -> Hmac<Sha1> {
    let key = format!("{}&{}", pct(consumer_secret), pct(token_secret));
    // HMAC takes a key of any length.
    <Hmac<Sha1> as Mac>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// HMAC-SHA1 of the base string, base64 (§3.4.2).
pub fn signature(base: &str, consumer_secret: &str, token_secret: &str) -> String {
    use base64::Engine as _;
    let mut m = mac(consumer_secret, token_secret);
    m.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// The `Authorization` header value for a request to `url` signed with `token`.
pub fn authorization(method: &str, url: &str, token: &ServerToken, timestamp: i64, nonce: &str) -> Result<String, String> {
    let mut params = vec![
        ("oauth_consumer_key".to_owned(), token.consumer_key.clone()),
        ("oauth_nonce".to_owned(), nonce.to_owned()),
        ("oauth_signature_method".to_owned(), "HMAC-SHA1".to_owned()),
        ("oauth_timestamp".to_owned(), timestamp.to_string()),
        ("oauth_token".to_owned(), token.access_token.clone()),
        ("oauth_version".to_owned(), "1.0".to_owned()),
    ];
    let base = base_string(method, url, &params)?;
    let sig = signature(&base, &token.consumer_secret, &token.access_secret);
    params.push(("oauth_signature".to_owned(), sig));
    let mut out = format!("OAuth realm=\"{REALM}\"");
    for (k, v) in &params {
        out.push_str(&format!(", {k}=\"{}\"", pct(v)));
    }
    Ok(out)
}

/// Why a presented header is refused, sorted as Apple answers: a malformed
/// request (400: a parameter missing, duplicated or unsupported) or wrong
/// credentials (401: consumer key, token, signature, timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed(String),
    Unauthorized(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(m) | Refusal::Unauthorized(m) => f.write_str(m),
        }
    }
}

/// What a verified header carried (the nonce is the verifier's to remember).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub nonce: String,
    pub timestamp: i64,
}

/// The parameters of an `OAuth …` header, decoded; a parameter twice is refused.
pub fn parse_header(header: &str) -> Result<Vec<(String, String)>, Refusal> {
    let bad = |m: &str| Refusal::Malformed(m.to_owned());
    if header.len() > MAX_HEADER {
        return Err(bad("the Authorization header is too long"));
    }
    let rest = header
        .trim()
        .strip_prefix("OAuth ")
        .ok_or_else(|| bad("the Authorization header is not OAuth"))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| bad("an OAuth parameter without a value"))?;
        let v = v
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| bad("an OAuth parameter value is not quoted"))?;
        let k = urlencoding::decode(k.trim()).map_err(|_| bad("an OAuth parameter name is not UTF-8"))?;
        let v = urlencoding::decode(v).map_err(|_| bad("an OAuth parameter value is not UTF-8"))?;
        if out.iter().any(|(have, _)| *have == k) {
            return Err(Refusal::Malformed(format!("duplicated OAuth parameter {k}")));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// Check a presented `Authorization` header for `method` `url` against
/// `token`: realm `ADM`, HMAC-SHA1, version 1.0, the token's consumer key and
/// access token, a timestamp within `max_skew` seconds of `now`, and a
/// signature made with the token's secrets. Nonce replay is the caller's.
pub fn verify(method: &str, url: &str, header: &str, token: &ServerToken, now: i64, max_skew: i64) -> Result<Verified, Refusal> {
    let params = parse_header(header)?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for k in [
        "oauth_consumer_key",
        "oauth_token",
        "oauth_signature_method",
        "oauth_signature",
        "oauth_timestamp",
        "oauth_nonce",
        "oauth_version",
    ] {
        if get(k).is_none() {
            return Err(Refusal::Malformed(format!("missing OAuth parameter {k}")));
        }
    }
    if let Some((k, _)) = params.iter().find(|(k, _)| k != "realm" && !k.starts_with("oauth_")) {
        return Err(Refusal::Malformed(format!("unsupported OAuth parameter {k}")));
    }
    if get("oauth_signature_method") != Some("HMAC-SHA1") {
        return Err(Refusal::Malformed("unsupported signature method".into()));
    }
    if get("oauth_version") != Some("1.0") {
        return Err(Refusal::Malformed("unsupported OAuth version".into()));
    }
    if get("realm") != Some(REALM) {
        return Err(Refusal::Unauthorized(format!("the realm is not {REALM}")));
    }
    let unauthorized = |m: &str| Refusal::Unauthorized(m.to_owned());
    if get("oauth_consumer_key") != Some(token.consumer_key.as_str()) {
        return Err(unauthorized("invalid consumer key"));
    }
    if get("oauth_token") != Some(token.access_token.as_str()) {
        return Err(unauthorized("invalid or expired token"));
    }
    let timestamp: i64 = get("oauth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| unauthorized("the timestamp is not a number"))?;
    if (now - timestamp).abs() > max_skew {
        return Err(unauthorized("the timestamp is too far from now"));
    }
    let nonce = get("oauth_nonce").unwrap_or_default().to_owned();
    if nonce.is_empty() {
        return Err(unauthorized("the nonce is empty"));
    }
    let signed: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "realm" && k != "oauth_signature")
        .cloned()
        .collect();
    let base = base_string(method, url, &signed).map_err(Refusal::Malformed)?;
    let presented = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(get("oauth_signature").unwrap_or_default())
            .map_err(|_| unauthorized("invalid signature"))?
    };
    let mut m = mac(&token.consumer_secret, &token.access_secret);
    m.update(base.as_bytes());
    // Constant time.
    m.verify_slice(&presented).map_err(|_| unauthorized("invalid signature"))?;
    Ok(Verified { nonce, timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ServerToken {
        ServerToken {
            consumer_key: "CK_key".into(),
            consumer_secret: "CS_secret".into(),
            access_token: "AT_token".into(),
            access_secret: "AS_secret".into(),
            access_token_expiry: "2030-01-01T00:00:00Z".into(),
        }
    }

    /// RFC 5849 §1.2 (and OAuth Core 1.0 Appendix A): the photos example.
    #[test]
    fn rfc5849_photos_example() {
        let params = |nonce: &str, ts: &str, version: bool| {
            let mut p = vec![
                ("oauth_consumer_key".to_owned(), "dpf43f3p2l4k3l03".to_owned()),
                ("oauth_token".to_owned(), "nnch734d00sl2jdk".to_owned()),
                ("oauth_signature_method".to_owned(), "HMAC-SHA1".to_owned()),
                ("oauth_timestamp".to_owned(), ts.to_owned()),
                ("oauth_nonce".to_owned(), nonce.to_owned()),
            ];
            if version {
                p.push(("oauth_version".to_owned(), "1.0".to_owned()));
            }
            p
        };
        let url = "http://photos.example.net/photos?file=vacation.jpg&size=original";
        let base = base_string("GET", url, &params("chapoH", "137131202", false)).unwrap();
        assert_eq!(
            base,
            "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3DchapoH%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131202%26oauth_token%3Dnnch734d00sl2jdk%26size%3Doriginal"
        );
        assert_eq!(
            signature(&base, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00"),
            "MdpQcU8iPSUjWoN/UDMsK2sui9I="
        );
        // OAuth Core 1.0, Appendix A.5: with oauth_version.
        let base = base_string("GET", url, &params("kllo9940pd9333jh", "1191242096", true)).unwrap();
        assert_eq!(
            signature(&base, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00"),
            "tR3+Ty81lMeYAr/Fid0kMTYa/WM="
        );
    }

    #[test]
    fn percent_encoding_is_rfc3986() {
        assert_eq!(pct("abcABC123-._~"), "abcABC123-._~");
        assert_eq!(pct("a b+c/=&%é"), "a%20b%2Bc%2F%3D%26%25%C3%A9");
        // The default port is left out of the base string URI, others kept; host lower-cased.
        let b = base_string("get", "HTTPS://MDMENROLLMENT.apple.com:443/session", &[]).unwrap();
        assert_eq!(b, "GET&https%3A%2F%2Fmdmenrollment.apple.com%2Fsession&");
        let b = base_string("GET", "http://127.0.0.1:8080/session", &[]).unwrap();
        assert_eq!(b, "GET&http%3A%2F%2F127.0.0.1%3A8080%2Fsession&");
    }

    #[test]
    fn signs_and_verifies() {
        let t = token();
        let url = "https://mdmenrollment.apple.com/session";
        let h = authorization("GET", url, &t, 1_700_000_000, "n0nce").unwrap();
        assert!(h.starts_with("OAuth realm=\"ADM\", oauth_consumer_key=\"CK_key\""), "{h}");
        assert!(h.contains("oauth_version=\"1.0\"") && h.contains("oauth_signature_method=\"HMAC-SHA1\""));
        assert!(!h.contains("CS_secret") && !h.contains("AS_secret"));
        let v = verify("GET", url, &h, &t, 1_700_000_100, 300).unwrap();
        assert_eq!(
            v,
            Verified {
                nonce: "n0nce".into(),
                timestamp: 1_700_000_000
            }
        );

        let unauthorized = |r: Result<Verified, Refusal>| matches!(r, Err(Refusal::Unauthorized(_)));
        let malformed = |r: Result<Verified, Refusal>| matches!(r, Err(Refusal::Malformed(_)));
        // Stale, another URL, another method, other secrets, other key.
        assert!(unauthorized(verify("GET", url, &h, &t, 1_700_000_301, 300)));
        assert!(unauthorized(verify(
            "GET",
            "https://mdmenrollment.apple.com/account",
            &h,
            &t,
            1_700_000_000,
            300
        )));
        assert!(unauthorized(verify("POST", url, &h, &t, 1_700_000_000, 300)));
        let mut other = t.clone();
        other.access_secret = "AS_other".into();
        assert!(unauthorized(verify("GET", url, &h, &other, 1_700_000_000, 300)));
        let mut other = t.clone();
        other.consumer_key = "CK_other".into();
        assert!(unauthorized(verify("GET", url, &h, &other, 1_700_000_000, 300)));
        // A tampered signature.
        let tampered = h.replacen("oauth_signature=\"", "oauth_signature=\"AA", 1);
        assert!(unauthorized(verify("GET", url, &tampered, &t, 1_700_000_000, 300)));
        // Wrong realm; unsupported method or version; a parameter missing or twice; not OAuth at all.
        assert!(unauthorized(verify(
            "GET",
            url,
            &h.replace("realm=\"ADM\"", "realm=\"X\""),
            &t,
            1_700_000_000,
            300
        )));
        assert!(malformed(verify(
            "GET",
            url,
            &h.replace("HMAC-SHA1", "PLAINTEXT"),
            &t,
            1_700_000_000,
            300
        )));
        assert!(malformed(verify(
            "GET",
            url,
            &h.replace("\"1.0\"", "\"2.0\""),
            &t,
            1_700_000_000,
            300
        )));
        assert!(malformed(verify(
            "GET",
            url,
            &h.replace("oauth_nonce", "oauth_x"),
            &t,
            1_700_000_000,
            300
        )));
        assert!(malformed(verify(
            "GET",
            url,
            &format!("{h}, oauth_nonce=\"again\""),
            &t,
            1_700_000_000,
            300
        )));
        assert!(malformed(verify("GET", url, "Bearer abc", &t, 1_700_000_000, 300)));
        assert!(malformed(verify("GET", url, "OAuth junk, =, \"", &t, 1_700_000_000, 300)));
        assert!(malformed(verify(
            "GET",
            url,
            &"OAuth a=\"b\",".repeat(2000),
            &t,
            1_700_000_000,
            300
        )));
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
