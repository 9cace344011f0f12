//! A real OpenID provider for the identity tests: panva's certified
//! `oidc-provider` (npm, pinned in `tests/oidc/package.json`) on Node, behind a
//! small Rust front on 127.0.0.1.
//!
//! ```text
//!   relying party / login() ──► front http://127.0.0.1:F (the issuer) ──► node provider.mjs on 127.0.0.1:N
//! ```
//!
//! The provider's issuer is the front's URL, so discovery, the JWKS, the
//! authorization and token endpoints are all reached through the front. The
//! front forwards every request as is, except that it can rewrite the
//! `id_token` of the token endpoint's answers ([`Idp::tamper`]): a broken
//! signature, or re-signed with the provider's own current key but a wrong
//! nonce, an expiry in the past or another audience.
//!
//! Client: [`Idp::client_id`] / [`Idp::client_secret`], the redirect URIs
//! given to [`Idp::start`], authorization code flow only, PKCE (S256)
//! required, client_secret_basic and client_secret_post both accepted. Scopes
//! `openid email profile groups`; `email`, `name`, `preferred_username` and
//! `groups` are in the ID token. Consent is never asked.
//!
//! Users (tests/oidc/provider.mjs): alice / alice-pw (alice@example.org,
//! "Alice Archer", groups mdm-admins + sales), oscar / oscar-pw (mdm-operators),
//! rita / rita-pw (mdm-readers), nadia / nadia-pw (no group).
//!
//! Needs `node` and `npm ci` run in tests/oidc (`.ci/run` does it); without
//! them [`Idp::start`] returns `None` unless `MDMD_TEST_REQUIRE_DIRECTORY` is
//! set, when it panics. It installs nothing itself.
//!
//! Lifetime: node and the front are stopped on drop; node also exits by itself
//! when its stdin closes (the test process is gone) or after 30 minutes. The
//! front runs on its own thread and tokio runtime, so the harness works from
//! plain `#[test]`s as well as `#[tokio::test]`s.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::KillOnDrop;

/// How the front rewrites the `id_token` in token-endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Forward untouched.
    None,
    /// Bytes of the signature flipped (header and claims untouched).
    BadSignature,
    /// Re-signed with the provider's current key, `nonce` changed.
    WrongNonce,
    /// Re-signed, `exp` an hour in the past (`iat` two hours).
    ExpiredToken,
    /// Re-signed, `aud` (and `azp`) another client's.
    OtherAudience,
}

/// The audience [`Tamper::OtherAudience`] puts in the ID token.
pub const OTHER_AUDIENCE: &str = "some-other-client";
/// The nonce [`Tamper::WrongNonce`] puts in the ID token.
pub const WRONG_NONCE: &str = "not-the-nonce-that-was-sent";

/// The provider's signing key: an RSA key, its `kid`, as PEM (to re-sign) and JWK (for node).
#[derive(Clone)]
struct SigningKey {
    kid: String,
    pem: Vec<u8>,
    jwk: Value,
}

impl SigningKey {
    fn generate() -> SigningKey {
        let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
        let kid = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let b = |n: &openssl::bn::BigNumRef| URL_SAFE_NO_PAD.encode(n.to_vec());
        let jwk = json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b(rsa.n()), "e": b(rsa.e()), "d": b(rsa.d()),
            "p": b(rsa.p().expect("p")), "q": b(rsa.q().expect("q")),
            "dp": b(rsa.dmp1().expect("dp")), "dq": b(rsa.dmq1().expect("dq")), "qi": b(rsa.iqmp().expect("qi")),
        });
        SigningKey {
            kid,
            pem: rsa.private_key_to_pem().expect("PEM"),
            jwk,
        }
    }
}

/// What the front shares with the test: the tamper mode and the current key.
struct Shared {
    tamper: Mutex<Tamper>,
    key: Mutex<SigningKey>,
    node_port: u16,
}

pub struct Idp {
    /// `http://127.0.0.1:PORT`: the front, what a relying party is configured with.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    dir: tempfile::TempDir,
    node_bin: PathBuf,
    redirect_uris: Vec<String>,
    front_port: u16,
    node: Option<KillOnDrop>,
    front: Option<Front>,
    shared: Arc<Shared>,
}

fn oidc_dir() -> PathBuf {
    super::repo_file("tests/oidc")
}

/// `node` on the PATH, if it runs.
fn find_node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let node = std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file())?;
    let ok = Command::new(&node)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(node)
}

impl Idp {
    /// The provider and its front, running, with one client allowed these
    /// redirect URIs. `None` when node or `tests/oidc/node_modules` is missing
    /// (panics instead with `MDMD_TEST_REQUIRE_DIRECTORY` set).
    pub fn start(redirect_uris: &[String]) -> Option<Idp> {
        let installed = oidc_dir().join("node_modules/oidc-provider/package.json").is_file();
        let (Some(node_bin), true) = (find_node(), installed) else {
            let why = "the test OpenID provider needs node and `npm ci` in tests/oidc";
            if super::ldap::directory_required() {
                panic!("MDMD_TEST_REQUIRE_DIRECTORY is set but {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        };
        let (front_port, node_port) = super::ldap::two_free_ports();
        let shared = Arc::new(Shared {
            tamper: Mutex::new(Tamper::None),
            key: Mutex::new(SigningKey::generate()),
            node_port,
        });
        let mut idp = Idp {
            issuer: format!("http://127.0.0.1:{front_port}"),
            client_id: "mdmd-test-client".into(),
            client_secret: "mdmd-test-client-secret-0123456789".into(),
            dir: tempfile::Builder::new().prefix("mdmd-oidc-").tempdir().expect("tempdir"),
            node_bin,
            redirect_uris: redirect_uris.to_vec(),
            front_port,
            node: None,
            front: None,
            shared,
        };
        idp.front = Some(Front::start(front_port, idp.shared.clone()));
        idp.spawn_node();
        Some(idp)
    }

    /// Stop the provider and its front: the issuer's port refuses connections.
    pub fn stop(&mut self) {
        self.node = None;
        self.front = None;
    }

    /// Start again after [`Idp::stop`]: same ports, same client, same signing
    /// key (sessions and codes of the old process are gone).
    pub fn start_again(&mut self) {
        self.stop();
        self.front = Some(Front::start(self.front_port, self.shared.clone()));
        self.spawn_node();
    }

    /// Restart the provider with a new signing key (a new `kid`); the old key
    /// is no longer in its JWKS. The front stays up.
    pub fn rotate_key(&mut self) {
        self.node = None;
        *self.shared.key.lock().unwrap() = SigningKey::generate();
        self.spawn_node();
    }

    /// Restart the provider with these redirect URIs for the client (e.g. once
    /// the relying party's address is known). Same key, same ports.
    pub fn set_redirect_uris(&mut self, redirect_uris: &[String]) {
        self.node = None;
        self.redirect_uris = redirect_uris.to_vec();
        self.spawn_node();
    }

    /// The `kid` of the provider's current signing key.
    pub fn kid(&self) -> String {
        self.shared.key.lock().unwrap().kid.clone()
    }

    /// How the front rewrites ID tokens from now on.
    pub fn tamper(&self, t: Tamper) {
        *self.shared.tamper.lock().unwrap() = t;
    }

    /// The provider's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }

    fn spawn_node(&mut self) {
        let d = self.dir.path();
        let port = self.shared.node_port;
        let config = json!({
            "issuer": self.issuer,
            "port": port,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "jwks": {"keys": [self.shared.key.lock().unwrap().jwk.clone()]},
            "max_lifetime_secs": 1800,
        });
        std::fs::write(d.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).expect("config.json");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("provider.log"))
            .expect("provider.log");
        let child = Command::new(&self.node_bin)
            .arg(oidc_dir().join("provider.mjs"))
            .arg(d.join("config.json"))
            .current_dir(oidc_dir())
            // provider.mjs exits when this pipe closes: with the Child, or with the test process.
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn node");
        let mut child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("the OpenID provider exited ({status}) before listening; its log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                drop(child);
                panic!("the OpenID provider did not listen within 20 s; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.node = Some(child);
    }

    /// Log in at the provider as a browser would: GET `authorize_url`, follow
    /// redirects to the login form, post `user` / `password`, follow redirects
    /// until one leaves the provider. Ok(that Location: the relying party's
    /// callback with `code` and `state`, or with `error`), or Err(the page)
    /// when the login fails.
    pub async fn login(&self, authorize_url: &str, user: &str, password: &str) -> Result<String, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let idp = reqwest::Url::parse(&self.issuer).map_err(|e| e.to_string())?.origin();
        let mut jar = CookieJar::default();
        let mut url = reqwest::Url::parse(authorize_url).map_err(|e| format!("{authorize_url}: {e}"))?;
        let mut form: Option<Vec<(&str, &str)>> = None;
        let mut posted = false;
        for _ in 0..20 {
            let mut req = match form.take() {
                Some(fields) => client.post(url.clone()).form(&fields),
                None => client.get(url.clone()),
            };
            if url.origin() == idp {
                if let Some(c) = jar.header(&url) {
                    req = req.header(reqwest::header::COOKIE, c);
                }
            }
            let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
            jar.store(&url, resp.headers());
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{status} without a Location from {url}"))?;
                let next = url.join(loc).map_err(|e| format!("Location {loc}: {e}"))?;
                if next.origin() != idp {
                    return Ok(next.to_string());
                }
                url = next;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            match (posted, form_action(&body)) {
                (false, Some(action)) if status.is_success() => {
                    url = url.join(&action).map_err(|e| format!("form action {action}: {e}"))?;
                    form = Some(vec![("login", user), ("password", password)]);
                    posted = true;
                }
                _ => return Err(format!("{status} from {url}: {body}")),
            }
        }
        Err(format!("too many redirects from {authorize_url}"))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `action` of the login form (`<form … action="…">` holding `id="login"`).
fn form_action(html: &str) -> Option<String> {
    if !html.contains("id=\"login\"") {
        return None;
    }
    let form = &html[html.find("<form")?..];
    let rest = &form[form.find("action=\"")? + "action=\"".len()..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

/// Just enough of a browser's cookie jar for one host: name, value and path.
#[derive(Default)]
struct CookieJar(Vec<(String, String, String)>);

impl CookieJar {
    fn store(&mut self, url: &reqwest::Url, headers: &reqwest::header::HeaderMap) {
        for v in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let mut parts = v.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            // RFC 6265 default path: the request path up to its last '/'.
            let mut path = match url.path().rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => url.path()[..i].to_owned(),
            };
            let mut expired = value.is_empty();
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.to_ascii_lowercase().as_str() {
                    "path" if v.starts_with('/') => path = v.to_owned(),
                    "max-age" => expired |= v.trim().parse::<i64>().map(|s| s <= 0).unwrap_or(false),
                    "expires" => expired |= v.contains("1970"),
                    _ => {}
                }
            }
            self.0.retain(|(n, _, p)| !(n == name && *p == path));
            if !expired {
                self.0.push((name.to_owned(), value.to_owned(), path));
            }
        }
    }

    fn header(&self, url: &reqwest::Url) -> Option<String> {
        let path = url.path();
        let matches = |p: &str| path == p || (path.starts_with(p) && (p.ends_with('/') || path[p.len()..].starts_with('/')));
        let c: Vec<String> = self
            .0
            .iter()
            .filter(|(_, _, p)| matches(p))
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect();
        (!c.is_empty()).then(|| c.join("; "))
    }
}

/// The front: an HTTP proxy on its own thread and tokio runtime. Dropping it
/// stops it: the listener and every connection are closed.
struct Front {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Front {
    fn start(port: u16, shared: Arc<Shared>) -> Front {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("oidc-front-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(serve(listener, shared, rx));
                // Dropping the runtime cancels every connection task.
            })
            .expect("front thread");
        Front {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>, mut shutdown: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("client");
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let (client, shared) = (client.clone(), shared.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| forward(req, client.clone(), shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// Forward one request to the node provider; rewrite a token answer's `id_token` per the tamper mode.
async fn forward(req: Request<Incoming>, client: reqwest::Client, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = parts.headers.clone();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    // Plain bodies, so that the token answer can be read and rewritten.
    headers.remove(hyper::header::ACCEPT_ENCODING);
    if let Some(host) = parts.headers.get(hyper::header::HOST) {
        headers.insert("x-forwarded-host", host.clone());
    }
    headers.insert("x-forwarded-proto", hyper::header::HeaderValue::from_static("http"));
    let url = format!("http://127.0.0.1:{}{pq}", shared.node_port);
    let upstream = match client.request(parts.method, &url).headers(headers).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("the OpenID provider is not answering: {e}"))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(r);
        }
    };
    let status = upstream.status();
    let mut out_headers = upstream.headers().clone();
    for h in HOP_BY_HOP {
        out_headers.remove(*h);
    }
    let mut bytes = upstream.bytes().await.unwrap_or_default();
    let mode = *shared.tamper.lock().unwrap();
    if mode != Tamper::None && status.is_success() && path.ends_with("/token") {
        if let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) {
            if let Some(token) = v.get("id_token").and_then(Value::as_str) {
                let key = shared.key.lock().unwrap().clone();
                v["id_token"] = Value::String(tamper_id_token(token, mode, &key));
                bytes = Bytes::from(serde_json::to_vec(&v).expect("JSON"));
            }
        }
    }
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    *r.headers_mut() = out_headers;
    Ok(r)
}

fn tamper_id_token(token: &str, mode: Tamper, key: &SigningKey) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "the ID token is not a JWS: {token}");
    let mut claims: Value = URL_SAFE_NO_PAD
        .decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("ID token claims");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    match mode {
        Tamper::None => return token.to_owned(),
        Tamper::BadSignature => {
            let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
            let n = sig.len();
            sig[0] ^= 0xff;
            sig[n / 2] ^= 0x5a;
            sig[n - 1] ^= 0x01;
            return format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        }
        Tamper::WrongNonce => claims["nonce"] = json!(WRONG_NONCE),
        Tamper::ExpiredToken => {
            claims["iat"] = json!(now - 7200);
            claims["exp"] = json!(now - 3600);
        }
        Tamper::OtherAudience => {
            claims["aud"] = json!(OTHER_AUDIENCE);
            if claims.get("azp").is_some() {
                claims["azp"] = json!(OTHER_AUDIENCE);
            }
        }
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key.pem).expect("RSA key");
    jsonwebtoken::encode(&header, &claims, &key).expect("re-sign the ID token")
}
