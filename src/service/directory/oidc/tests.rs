use super::*;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CLIENT: &str = "mdmd-test";
const REDIRECT: &str = "https://mdm.example.com/auth/oidc/callback";
const CODE: &str = "good-code";

fn cfg(issuer: &str) -> OidcConfig {
    OidcConfig::new(issuer, CLIENT, REDIRECT)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn is_refused(r: &Result<SignedIn, DirectoryError>, needle: &str) -> bool {
    matches!(r, Err(DirectoryError::Refused(m)) if m.contains(needle))
}

fn pending_now() -> PendingLogin {
    PendingLogin {
        state: "the-state".into(),
        nonce: "the-nonce".into(),
        pkce_verifier: "v".repeat(43),
        created_at: clock::now(),
    }
}

// ---- configuration -------------------------------------------------

#[test]
fn https_is_accepted_and_http_only_on_loopback() {
    assert!(Oidc::new(cfg("https://idp.example.com")).is_ok());
    assert!(Oidc::new(cfg("https://idp.example.com/realms/corp/")).is_ok());
    for loopback in ["http://127.0.0.1:8080", "http://[::1]:9000/x", "http://localhost:3000"] {
        assert!(Oidc::new(cfg(loopback)).is_ok(), "{loopback}");
    }
    for bad in [
        "http://idp.example.com",
        "http://10.0.0.1",
        "ftp://idp.example.com",
        "idp.example.com",
        "https://idp.example.com/#frag",
        "https://idp.example.com/?tenant=x",
        "https://user:pw@idp.example.com",
    ] {
        assert!(matches!(Oidc::new(cfg(bad)), Err(DirectoryError::Config(_))), "{bad}");
    }
}

#[test]
fn other_settings_are_checked() {
    let bad_redirect = OidcConfig::new("https://idp.example.com", CLIENT, "http://mdm.example.com/cb");
    assert!(matches!(Oidc::new(bad_redirect), Err(DirectoryError::Config(m)) if m.contains("redirect")));
    let local_redirect = OidcConfig::new("https://idp.example.com", CLIENT, "http://127.0.0.1:8443/cb");
    assert!(Oidc::new(local_redirect).is_ok());

    let mut c = cfg("https://idp.example.com");
    c.client_id = String::new();
    assert!(matches!(Oidc::new(c), Err(DirectoryError::Config(_))));
    let mut c = cfg("https://idp.example.com");
    c.client_secret = Some(Secret::new(""));
    assert!(matches!(Oidc::new(c), Err(DirectoryError::Config(_))));
    let mut c = cfg("https://idp.example.com");
    c.scopes.push("two words".into());
    assert!(matches!(Oidc::new(c), Err(DirectoryError::Config(m)) if m.contains("scope")));
    let mut c = cfg("https://idp.example.com");
    c.timeout = Duration::ZERO;
    assert!(matches!(Oidc::new(c), Err(DirectoryError::Config(_))));

    let d = OidcConfig::new("https://idp.example.com", CLIENT, REDIRECT);
    assert_eq!(d.scopes, ["openid", "email", "profile"]);
    assert_eq!(d.timeout, Duration::from_secs(10));
    assert_eq!(
        (
            d.username_claim.as_str(),
            d.email_claim.as_str(),
            d.name_claim.as_str(),
            d.groups_claim.as_str()
        ),
        ("preferred_username", "email", "name", "groups")
    );
}

#[test]
fn the_secret_stays_out_of_debug() {
    let mut c = cfg("https://idp.example.com");
    c.client_secret = Some(Secret::new("hunter2-very-secret"));
    assert!(!format!("{c:?}").contains("hunter2"));
    let o = Oidc::new(c).unwrap();
    assert!(!format!("{o:?}").contains("hunter2"));
}

#[test]
fn pending_login_round_trips_through_json() {
    let p = pending_now();
    let back: PendingLogin = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
}

// ---- the checks before any network ------------------------------------

#[tokio::test]
async fn state_mismatch_is_refused_without_network() {
    // Nothing listens on port 9: a network attempt would be Unavailable.
    let o = Oidc::new(cfg("http://127.0.0.1:9")).unwrap();
    let p = pending_now();
    let r = o.finish(&p, CODE, "another-state").await;
    assert!(is_refused(&r, "state mismatch"), "{r:?}");
    let r = o.finish(&p, CODE, "").await;
    assert!(is_refused(&r, "state"), "{r:?}");
    let r = o.finish(&p, CODE, "the-stat").await;
    assert!(is_refused(&r, "state mismatch"), "{r:?}");
}

#[tokio::test]
async fn expired_pending_is_refused() {
    let o = Oidc::new(cfg("http://127.0.0.1:9")).unwrap();
    let mut p = pending_now();
    p.created_at = clock::now() - PENDING_MAX_AGE - 1;
    let r = o.finish(&p, CODE, "the-state").await;
    assert!(is_refused(&r, "expired"), "{r:?}");
}

#[test]
fn pending_checks() {
    let now = clock::now();
    let p = pending_now();
    assert!(check_pending(&p, "the-state", now).is_ok());
    assert!(check_pending(&p, "the-state", now + PENDING_MAX_AGE).is_ok());
    assert!(check_pending(&p, "the-state", now + PENDING_MAX_AGE + 1).is_err());
    let future = PendingLogin {
        created_at: now + 3600,
        ..p.clone()
    };
    assert!(check_pending(&future, "the-state", now).is_err());
    let empty = PendingLogin {
        state: String::new(),
        ..p.clone()
    };
    assert!(check_pending(&empty, "", now).is_err());
    let no_nonce = PendingLogin {
        nonce: String::new(),
        ..p.clone()
    };
    assert!(check_pending(&no_nonce, "the-state", now).is_err());
    for v in ["short".to_string(), "v".repeat(129), format!("{}+", "v".repeat(43))] {
        let bad = PendingLogin {
            pkce_verifier: v,
            ..p.clone()
        };
        assert!(check_pending(&bad, "the-state", now).is_err());
    }
}

#[tokio::test]
async fn a_malformed_code_is_refused_without_network() {
    let o = Oidc::new(cfg("http://127.0.0.1:9")).unwrap();
    let p = pending_now();
    for code in ["", "has space", "line\nbreak"] {
        let r = o.finish(&p, code, "the-state").await;
        assert!(is_refused(&r, "code"), "{code:?}: {r:?}");
    }
    let long = "c".repeat(MAX_CODE + 1);
    assert!(is_refused(&o.finish(&p, &long, "the-state").await, "code"));
}

// ---- claim mapping -------------------------------------------------------

fn map(claims: Value) -> Result<SignedIn, DirectoryError> {
    map_claims(&cfg("https://idp.example.com"), &claims)
}

#[test]
fn standard_claims_map() {
    let s = map(json!({
        "sub": "u-1", "preferred_username": " alice ", "email": "alice@example.org",
        "email_verified": true, "name": "Alice Archer", "groups": ["mdm-admins", "sales"]
    }))
    .unwrap();
    assert_eq!(
        s,
        SignedIn {
            username: "alice".into(),
            email: Some("alice@example.org".into()),
            full_name: Some("Alice Archer".into()),
            groups: vec!["mdm-admins".into(), "sales".into()],
            subject: Some("u-1".into()),
        }
    );
}

#[test]
fn username_falls_back_to_the_email_then_sub() {
    // The whole address: bob@gmail.com must not become the organisation's bob.
    let s = map(json!({"sub": "u-1", "email": "bob@example.org"})).unwrap();
    assert_eq!(s.username, "bob@example.org");
    let s = map(json!({"sub": "u-1", "preferred_username": "", "email": "bob@example.org", "email_verified": false})).unwrap();
    assert_eq!(s.username, "u-1");
    let s = map(json!({"sub": "u-1", "preferred_username": 42})).unwrap();
    assert_eq!(s.username, "u-1");
    let s = map(json!({"sub": "u-1", "preferred_username": "x".repeat(257)})).unwrap();
    assert_eq!(s.username, "u-1");
    let r = map(json!({"name": "Nobody"}));
    assert!(is_refused(&r, "user name"), "{r:?}");
    let r = map(json!({"sub": "  ", "preferred_username": "a\u{0}b"}));
    assert!(is_refused(&r, "user name"), "{r:?}");
    assert!(is_refused(&map(json!(["not", "an", "object"])), "object"));
}

#[test]
fn an_unverified_email_is_ignored() {
    let s = map(json!({"sub": "u-1", "email": "mallory@victim.example", "email_verified": false})).unwrap();
    assert_eq!((s.username.as_str(), s.email), ("u-1", None));
    let s = map(json!({"sub": "u-1", "email": "m@x.example", "email_verified": "false"})).unwrap();
    assert_eq!(s.email, None);
    // Absent `email_verified` is not "false".
    let s = map(json!({"sub": "u-1", "email": "m@x.example"})).unwrap();
    assert_eq!(s.email.as_deref(), Some("m@x.example"));
}

#[test]
fn groups_are_bounded() {
    let s = map(json!({"sub": "u", "groups": "only-one"})).unwrap();
    assert_eq!(s.groups, ["only-one"]);
    let s = map(json!({"sub": "u"})).unwrap();
    assert!(s.groups.is_empty());
    let s = map(json!({"sub": "u", "groups": null})).unwrap();
    assert!(s.groups.is_empty());
    let s = map(json!({"sub": "u", "groups": ["a", "", " a ", "b"]})).unwrap();
    assert_eq!(s.groups, ["a", "b"]);

    let many: Vec<String> = (0..MAX_GROUPS).map(|i| format!("g{i}")).collect();
    assert_eq!(map(json!({"sub": "u", "groups": many})).unwrap().groups.len(), MAX_GROUPS);
    let too_many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
    assert!(is_refused(&map(json!({"sub": "u", "groups": too_many})), "at most 256"));
    let long = "g".repeat(MAX_CLAIM_CHARS);
    assert!(map(json!({"sub": "u", "groups": [long]})).is_ok());
    let too_long = "g".repeat(MAX_CLAIM_CHARS + 1);
    assert!(is_refused(&map(json!({"sub": "u", "groups": [too_long]})), "256"));
    assert!(is_refused(&map(json!({"sub": "u", "groups": ["a", 7]})), "strings"));
    assert!(is_refused(&map(json!({"sub": "u", "groups": {"a": 1}})), "strings"));
}

#[test]
fn claim_names_are_configurable_and_may_be_nested() {
    let mut c = cfg("https://idp.example.com");
    c.username_claim = "upn".into();
    c.email_claim = "mail".into();
    c.name_claim = "displayName".into();
    c.groups_claim = "realm_access.roles".into();
    let s = map_claims(
        &c,
        &json!({
            "sub": "u-9", "upn": "carol", "mail": "carol@example.org", "displayName": "Carol",
            "preferred_username": "ignored", "realm_access": {"roles": ["staff"]}
        }),
    )
    .unwrap();
    assert_eq!(s.username, "carol");
    assert_eq!(s.email.as_deref(), Some("carol@example.org"));
    assert_eq!(s.full_name.as_deref(), Some("Carol"));
    assert_eq!(s.groups, ["staff"]);
    // A top-level claim with the dotted name wins.
    let s = map_claims(
        &c,
        &json!({"sub": "u", "realm_access.roles": ["flat"], "realm_access": {"roles": ["nested"]}}),
    )
    .unwrap();
    assert_eq!(s.groups, ["flat"]);
}

#[test]
fn the_payload_is_read_from_the_compact_form() {
    let jwt = format!("{}.{}.{}", b64(b"{}"), b64(br#"{"sub":"x"}"#), b64(b"sig"));
    assert_eq!(verified_payload(&jwt).unwrap(), json!({"sub": "x"}));
    assert!(verified_payload("a.b").is_err());
    assert!(verified_payload("a.b.c.d").is_err());
    assert!(verified_payload("a.!!!.c").is_err());
}

#[test]
fn endpoint_names_carry_no_query() {
    assert_eq!(
        endpoint_name("https://idp.example.com:8443/token?x=secret"),
        "https://idp.example.com:8443/token"
    );
    assert_eq!(endpoint_name("https://idp.example.com/token"), "https://idp.example.com/token");
}

#[test]
fn provider_text_is_bounded_and_printable() {
    assert_eq!(printable("a\nb\u{7}c", 10), "abc");
    assert_eq!(printable(&"x".repeat(300), 200).chars().count(), 201);
}

#[allow(dead_code)]
fn futures_are_send(o: &Oidc, p: &PendingLogin) {
    fn send<T: Send>(_: &T) {}
    send(&o.begin(None));
    send(&o.finish(p, "", ""));
    send(&o.discover());
    fn sync<T: Send + Sync>(_: &T) {}
    sync(o);
}

// ---- against a small in-process provider ------------------------------

#[derive(Clone)]
enum Key {
    Rsa(String, PKey<Private>),
    Ec(String, PKey<Private>),
    Hmac(Vec<u8>),
    None,
}

impl Key {
    fn rsa(kid: &str) -> Key {
        Key::Rsa(kid.into(), PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
    }
    fn ec(kid: &str) -> Key {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Key::Ec(kid.into(), PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap())
    }
    fn alg(&self) -> &'static str {
        match self {
            Key::Rsa(..) => "RS256",
            Key::Ec(..) => "ES256",
            Key::Hmac(_) => "HS256",
            Key::None => "none",
        }
    }
    fn kid(&self) -> Option<&str> {
        match self {
            Key::Rsa(kid, _) | Key::Ec(kid, _) => Some(kid),
            _ => None,
        }
    }
    fn jwk(&self) -> Value {
        match self {
            Key::Rsa(kid, k) => {
                let rsa = k.rsa().unwrap();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
            }
            Key::Ec(kid, k) => {
                let ec = k.ec_key().unwrap();
                let (mut x, mut y) = (openssl::bn::BigNum::new().unwrap(), openssl::bn::BigNum::new().unwrap());
                let mut ctx = BigNumContext::new().unwrap();
                ec.public_key().affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx).unwrap();
                json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                       "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap())})
            }
            _ => Value::Null,
        }
    }
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Key::Rsa(_, k) => Signer::new(MessageDigest::sha256(), k).unwrap().sign_oneshot_to_vec(input).unwrap(),
            Key::Ec(_, k) => {
                let der = Signer::new(MessageDigest::sha256(), k).unwrap().sign_oneshot_to_vec(input).unwrap();
                let sig = EcdsaSig::from_der(&der).unwrap();
                [sig.r().to_vec_padded(32).unwrap(), sig.s().to_vec_padded(32).unwrap()].concat()
            }
            Key::Hmac(secret) => {
                let k = PKey::hmac(secret).unwrap();
                Signer::new(MessageDigest::sha256(), &k)
                    .unwrap()
                    .sign_oneshot_to_vec(input)
                    .unwrap()
            }
            Key::None => Vec::new(),
        }
    }
}

/// What the fake provider serves, and what it saw.
struct Idp {
    issuer: String,
    served: Vec<Key>,
    signer: Key,
    /// Merged over the default ID token claims (`null` removes one).
    claims: Value,
    /// Merged over the default metadata.
    metadata: Value,
    discovery_status: u16,
    /// Instead of a token: this status and body.
    token_answer: Option<(u16, String)>,
    omit_id_token: bool,
    nonce: String,
    challenge: Option<String>,
    discovery_fetches: usize,
    jwks_fetches: usize,
    token_form: Vec<(String, String)>,
    token_authorization: Option<String>,
}

struct Fake {
    issuer: String,
    idp: Arc<Mutex<Idp>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(key: Key) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let idp = Arc::new(Mutex::new(Idp {
            issuer: issuer.clone(),
            served: vec![key.clone()],
            signer: key,
            claims: json!({}),
            metadata: json!({}),
            discovery_status: 200,
            token_answer: None,
            omit_id_token: false,
            nonce: String::new(),
            challenge: None,
            discovery_fetches: 0,
            jwks_fetches: 0,
            token_form: Vec::new(),
            token_authorization: None,
        }));
        let shared = idp.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                tokio::spawn(answer(sock, shared.clone()));
            }
        });
        Fake { issuer, idp, task }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Idp) -> R) -> R {
        f(&mut lock(&self.idp))
    }

    fn oidc(&self) -> Oidc {
        Oidc::new(cfg(&self.issuer)).unwrap()
    }

    /// begin → (the provider signs in) → finish.
    async fn login(&self, o: &Oidc) -> Result<SignedIn, DirectoryError> {
        let (url, pending) = o.begin(None).await?;
        let url = Url::parse(&url).unwrap();
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        self.with(|i| {
            i.nonce = param("nonce").unwrap();
            i.challenge = param("code_challenge");
        });
        o.finish(&pending, CODE, &pending.state).await
    }
}

fn merge(base: &mut Value, patch: &Value) {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

async fn answer(mut sock: tokio::net::TcpStream, idp: Arc<Mutex<Idp>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let Ok(n) = sock.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            break (pos + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let Ok(n) = sock.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let body = &buf[head_end..head_end + length];
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let authorization = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_owned())
    });
    let (status, json) = route(&mut lock(&idp), &path, body, authorization);
    let location = if status == 302 {
        "Location: http://169.254.169.254/\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn route(i: &mut Idp, path: &str, body: &[u8], authorization: Option<String>) -> (u16, String) {
    let issuer = i.issuer.clone();
    match path {
        "/.well-known/openid-configuration" => {
            i.discovery_fetches += 1;
            let mut m = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256", "none"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            });
            merge(&mut m, &i.metadata);
            (i.discovery_status, m.to_string())
        }
        "/jwks" => {
            i.jwks_fetches += 1;
            let keys: Vec<Value> = i.served.iter().map(Key::jwk).filter(|k| !k.is_null()).collect();
            (200, json!({ "keys": keys }).to_string())
        }
        "/token" => {
            let form: Vec<(String, String)> = openidconnect::url::form_urlencoded::parse(body).into_owned().collect();
            i.token_form = form.clone();
            i.token_authorization = authorization;
            if let Some(a) = &i.token_answer {
                return a.clone();
            }
            let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            if field("code").as_deref() != Some(CODE) {
                return (
                    400,
                    json!({"error": "invalid_grant", "error_description": "unknown code"}).to_string(),
                );
            }
            if let Some(challenge) = &i.challenge {
                let verifier = field("code_verifier").unwrap_or_default();
                if b64(&Sha256::digest(verifier.as_bytes())) != *challenge {
                    return (400, json!({"error": "invalid_grant", "error_description": "PKCE"}).to_string());
                }
            }
            let now = clock::now();
            let mut claims = json!({
                "iss": issuer, "aud": CLIENT, "sub": "u-123", "iat": now, "exp": now + 300,
                "nonce": i.nonce, "preferred_username": "alice", "email": "alice@example.org",
                "email_verified": true, "name": "Alice Archer", "groups": ["mdm-admins", "sales"],
            });
            merge(&mut claims, &i.claims);
            let mut header = json!({"alg": i.signer.alg(), "typ": "JWT"});
            if let Some(kid) = i.signer.kid() {
                header["kid"] = json!(kid);
            }
            let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
            let jwt = format!("{input}.{}", b64(&i.signer.sign(input.as_bytes())));
            let mut answer = json!({"access_token": "at-secret", "token_type": "Bearer", "expires_in": 300});
            if !i.omit_id_token {
                answer["id_token"] = json!(jwt);
            }
            (200, answer.to_string())
        }
        _ => (404, json!({"error": "not found"}).to_string()),
    }
}

#[tokio::test]
async fn signs_in_with_pkce_state_and_nonce() {
    let fake = Fake::start(Key::rsa("k1")).await;
    let o = fake.oidc();
    let (url, pending) = o.begin(Some("alice@example.org")).await.unwrap();
    let url = Url::parse(&url).unwrap();
    assert_eq!(url.path(), "/auth");
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["state"], pending.state);
    assert_eq!(q["nonce"], pending.nonce);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"], b64(&Sha256::digest(pending.pkce_verifier.as_bytes())));
    assert_eq!(q["login_hint"], "alice@example.org");
    // 32 random bytes, base64url.
    assert_eq!(URL_SAFE_NO_PAD.decode(&pending.state).unwrap().len(), 32);
    assert_eq!(URL_SAFE_NO_PAD.decode(&pending.nonce).unwrap().len(), 32);
    assert!((clock::now() - pending.created_at).abs() <= 1);
    let (_, again) = o.begin(None).await.unwrap();
    assert_ne!(again.state, pending.state);
    assert_ne!(again.nonce, pending.nonce);
    assert_ne!(again.pkce_verifier, pending.pkce_verifier);

    let s = fake.login(&o).await.unwrap();
    assert_eq!(
        s,
        SignedIn {
            username: "alice".into(),
            email: Some("alice@example.org".into()),
            full_name: Some("Alice Archer".into()),
            groups: vec!["mdm-admins".into(), "sales".into()],
            subject: Some("u-123".into()),
        }
    );
    fake.with(|i| {
        // Discovery once, cached for the rest.
        assert_eq!((i.discovery_fetches, i.jwks_fetches), (1, 1));
        let field = |n: &str| i.token_form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(field("grant_type").as_deref(), Some("authorization_code"));
        assert_eq!(field("client_id").as_deref(), Some(CLIENT));
        assert_eq!(field("redirect_uri").as_deref(), Some(REDIRECT));
        assert!(field("code_verifier").is_some());
        assert!(field("client_secret").is_none());
        assert!(i.token_authorization.is_none());
    });
}

#[tokio::test]
async fn a_confidential_client_authenticates_as_the_provider_supports() {
    let fake = Fake::start(Key::rsa("k1")).await;
    let mut c = cfg(&fake.issuer);
    c.client_secret = Some(Secret::new("s3cret"));
    let o = Oidc::new(c.clone()).unwrap();
    fake.login(&o).await.unwrap();
    fake.with(|i| {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:s3cret"))
        );
        assert_eq!(i.token_authorization.as_deref(), Some(basic.as_str()));
        assert!(!i.token_form.iter().any(|(k, _)| k == "client_secret"));
        i.metadata = json!({"token_endpoint_auth_methods_supported": ["client_secret_post"]});
    });
    let o = Oidc::new(c).unwrap();
    fake.login(&o).await.unwrap();
    fake.with(|i| {
        assert!(i.token_authorization.is_none());
        assert!(i.token_form.contains(&("client_secret".into(), "s3cret".into())));
    });
}

#[tokio::test]
async fn es256_is_accepted() {
    let fake = Fake::start(Key::ec("e1")).await;
    assert_eq!(fake.login(&fake.oidc()).await.unwrap().username, "alice");
}

#[tokio::test]
async fn id_token_checks_refuse() {
    let fake = Fake::start(Key::rsa("k1")).await;
    let o = fake.oidc();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"nonce": "another"}), "nonce mismatch"),
        (json!({"nonce": null}), "nonce"),
        (json!({"aud": "someone-else"}), "audience"),
        (json!({"aud": [CLIENT, "other"]}), "azp"),
        (json!({"aud": [CLIENT, "other"], "azp": "other"}), "authorized party"),
        (json!({"azp": "other"}), "authorized party"),
        (json!({"iss": "https://evil.example"}), "issuer"),
        (json!({"exp": clock::now() - LEEWAY - 5}), "expired"),
        (json!({"iat": clock::now() + 3600, "exp": clock::now() + 7200}), "future"),
        (json!({"preferred_username": null, "email": null, "sub": ""}), "user name"),
    ];
    for (patch, why) in cases {
        fake.with(|i| i.claims = patch.clone());
        let r = fake.login(&o).await;
        assert!(is_refused(&r, why), "{patch}: {r:?}");
    }
    // Several audiences are fine when azp is us; expiry has a small leeway.
    for patch in [json!({"aud": [CLIENT, "other"], "azp": CLIENT}), json!({"exp": clock::now() - 5})] {
        fake.with(|i| i.claims = patch.clone());
        assert!(fake.login(&o).await.is_ok(), "{patch}");
    }
}

#[tokio::test]
async fn unsigned_and_hmac_tokens_are_refused_for_a_public_client() {
    let fake = Fake::start(Key::rsa("k1")).await;
    let o = fake.oidc();
    fake.with(|i| i.signer = Key::None);
    let r = fake.login(&o).await;
    assert!(matches!(r, Err(DirectoryError::Refused(_))), "{r:?}");
    // HS256 "signed" with something a public client's attacker knows.
    fake.with(|i| i.signer = Key::Hmac(CLIENT.as_bytes().to_vec()));
    let r = fake.login(&o).await;
    assert!(is_refused(&r, "signature"), "{r:?}");
    // A provider that offers nothing acceptable.
    fake.with(|i| {
        i.signer = Key::rsa("k1");
        i.metadata = json!({"id_token_signing_alg_values_supported": ["none", "HS256"]});
    });
    let o = fake.oidc();
    let r = fake.login(&o).await;
    assert!(is_refused(&r, "algorithms"), "{r:?}");
}

#[tokio::test]
async fn hmac_tokens_are_accepted_for_a_confidential_client() {
    let fake = Fake::start(Key::Hmac(b"s3cret".to_vec())).await;
    let mut c = cfg(&fake.issuer);
    c.client_secret = Some(Secret::new("s3cret"));
    assert!(fake.login(&Oidc::new(c).unwrap()).await.is_ok());
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_once() {
    let fake = Fake::start(Key::rsa("old")).await;
    let o = fake.oidc();
    fake.login(&o).await.unwrap();
    assert_eq!(fake.with(|i| i.jwks_fetches), 1);

    // The provider restarts with a new key: the cached JWKS does not know it.
    let new = Key::rsa("new");
    fake.with(|i| {
        i.served = vec![new.clone()];
        i.signer = new.clone();
    });
    assert_eq!(fake.login(&o).await.unwrap().username, "alice");
    assert_eq!(fake.with(|i| (i.discovery_fetches, i.jwks_fetches)), (2, 2));
    assert_eq!(fake.login(&o).await.unwrap().username, "alice");
    assert_eq!(fake.with(|i| i.jwks_fetches), 2);

    // A key it does not publish: refused, and fetched again at most once a second.
    fake.with(|i| i.signer = Key::rsa("unknown"));
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let r = fake.login(&o).await;
        assert!(is_refused(&r, "signature"), "{r:?}");
    }
    let seconds = started.elapsed().as_secs() as usize;
    let fetches = fake.with(|i| i.jwks_fetches);
    assert!(fetches <= 2 + seconds + 2, "{fetches} fetches in {seconds} s");
}

#[tokio::test]
async fn a_key_rotated_under_the_same_kid_is_followed() {
    let fake = Fake::start(Key::rsa("k1")).await;
    let o = fake.oidc();
    fake.login(&o).await.unwrap();
    let replaced = Key::rsa("k1");
    fake.with(|i| {
        i.served = vec![replaced.clone()];
        i.signer = replaced.clone();
    });
    assert!(fake.login(&o).await.is_ok());
    assert_eq!(fake.with(|i| i.jwks_fetches), 2);
}

#[tokio::test]
async fn token_endpoint_answers() {
    let fake = Fake::start(Key::rsa("k1")).await;
    let o = fake.oidc();
    fake.with(|i| {
        i.token_answer = Some((
            400,
            json!({"error": "invalid_grant", "error_description": "code\nreused"}).to_string(),
        ))
    });
    let r = fake.login(&o).await;
    assert!(is_refused(&r, "invalid_grant (codereused)"), "{r:?}");
    fake.with(|i| i.token_answer = Some((503, json!({"error": "temporarily_unavailable"}).to_string())));
    let r = fake.login(&o).await;
    assert!(
        matches!(&r, Err(DirectoryError::Unavailable(m)) if m.contains(&fake.issuer) && m.contains("503")),
        "{r:?}"
    );
    fake.with(|i| i.token_answer = Some((200, r#"{"access_token":"at-secret","token_type":7}"#.into())));
    let r = fake.login(&o).await;
    assert!(matches!(&r, Err(DirectoryError::Refused(m)) if !m.contains("at-secret")), "{r:?}");
    fake.with(|i| {
        i.token_answer = None;
        i.omit_id_token = true;
    });
    let r = fake.login(&o).await;
    assert!(is_refused(&r, "no ID token"), "{r:?}");

    // A code the provider does not know.
    fake.with(|i| i.omit_id_token = false);
    let (_, pending) = o.begin(None).await.unwrap();
    let r = o.finish(&pending, "stale-code", &pending.state).await;
    assert!(is_refused(&r, "invalid_grant"), "{r:?}");
}

#[tokio::test]
async fn discovery_problems() {
    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{port}");
    let o = Oidc::new(cfg(&issuer)).unwrap();
    let r = o.discover().await;
    assert!(matches!(&r, Err(DirectoryError::Unavailable(m)) if m.contains(&issuer)), "{r:?}");
    let r = o.begin(None).await;
    assert!(matches!(&r, Err(DirectoryError::Unavailable(m)) if m.contains(&issuer)), "{r:?}");

    // Accepts, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = cfg(&format!("http://127.0.0.1:{}", silent.local_addr().unwrap().port()));
    c.timeout = Duration::from_millis(300);
    let o = Oidc::new(c).unwrap();
    let started = std::time::Instant::now();
    let r = o.discover().await;
    assert!(matches!(&r, Err(DirectoryError::Unavailable(_))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(silent);

    // Redirects are not followed.
    let fake = Fake::start(Key::rsa("k1")).await;
    fake.with(|i| i.discovery_status = 302);
    let r = fake.oidc().discover().await;
    assert!(matches!(&r, Err(DirectoryError::Unavailable(m)) if m.contains("redirect")), "{r:?}");

    // The metadata names another issuer, or a plain-http endpoint elsewhere.
    fake.with(|i| {
        i.discovery_status = 200;
        i.metadata = json!({"issuer": "https://other.example"});
    });
    let r = fake.oidc().discover().await;
    assert!(matches!(&r, Err(DirectoryError::Refused(m)) if m.contains("issuer")), "{r:?}");
    fake.with(|i| i.metadata = json!({"token_endpoint": "http://idp.example.com/token"}));
    let r = fake.oidc().discover().await;
    assert!(
        matches!(&r, Err(DirectoryError::Refused(m)) if m.contains("token endpoint")),
        "{r:?}"
    );
    fake.with(|i| i.metadata = json!({"jwks_uri": "http://169.254.169.254/keys"}));
    let r = fake.oidc().discover().await;
    // Refused before any request leaves.
    assert!(
        matches!(&r, Err(DirectoryError::Refused(m)) if m.contains("must be https")),
        "{r:?}"
    );

    fake.with(|i| i.metadata = json!({}));
    assert!(fake.oidc().discover().await.is_ok());
}
