//! OpenID Connect sign-in: mdmd as a relying party of the organisation's
//! identity provider, with the authorization code flow, PKCE (S256), `state`
//! and `nonce`.
//!
//! # The flow
//!
//! 1. [`Oidc::begin`] builds the provider's authorization URL and a
//!    [`PendingLogin`]: a fresh random `state` (32 bytes, base64url), `nonce`
//!    (32 bytes) and PKCE verifier (32 bytes; its SHA-256 challenge goes into
//!    the URL), and the time it started. `begin` writes nothing anywhere: the
//!    caller keeps the `PendingLogin` (mdmd seals it into a cookie) and sends
//!    the browser to the URL.
//! 2. The provider signs the person in and sends the browser back to our
//!    `redirect_url` with `code` and `state`.
//! 3. [`Oidc::finish`] checks, before any network: that the returned `state`
//!    equals the pending one (constant time), that the sign-in started at most
//!    10 minutes ago, and that the code and the pending values are well formed.
//!    Then it exchanges the code at the token endpoint with the PKCE verifier
//!    (and the client secret for a confidential client: HTTP Basic, or the
//!    request body when the provider only supports `client_secret_post`) and
//!    verifies the ID token it gets back:
//!    - the signature, against the provider's published keys (JWKS), with an
//!      algorithm both the provider advertises and we accept: RS*, PS*, ES*,
//!      EdDSA; HS* only for a confidential client (the key is the client
//!      secret); never `none`;
//!    - `iss` equal to the configured issuer, `aud` containing our client id
//!      and, when there are several audiences, `azp` equal to our client id
//!      (a present `azp` must always be ours);
//!    - `exp` not passed and `iat` not in the future (60 s leeway for clock
//!      skew), by mdmd's clock (`crate::clock`);
//!    - `nonce` equal to the pending nonce.
//!
//!    Then it maps the verified claims to a [`SignedIn`] (see [`OidcConfig`] for
//!    the claim names): the user name falls back to the whole e-mail address,
//!    then to `sub`; an e-mail with `email_verified: false` is ignored; groups
//!    are bounded (at most 256, each at most 256 characters, or the sign-in is
//!    refused). The access token is not used for anything (so `at_hash` is
//!    not checked) and nothing is fetched from the userinfo endpoint.
//!
//! # Discovery, caching and key rotation
//!
//! The provider's metadata (`/.well-known/openid-configuration`) and its
//! JWKS are fetched on first use, cached, and fetched again after an hour.
//! Endpoints must be `https` (plain `http` only on loopback, for tests), like
//! the issuer itself. When an ID token's signature cannot be checked with the
//! cached keys (its `kid` is unknown, or the signature does not verify) the
//! metadata and JWKS are fetched again — at most once per 10 seconds, so a
//! stream of bad tokens cannot turn into a stream of fetches — and the token
//! is verified once more: a provider that rotates its signing key is followed
//! without a restart.
//!
//! # Errors
//!
//! The provider unreachable, too slow (every HTTP call is bounded by
//! `timeout`), answering 5xx or with a redirect (redirects are never followed:
//! SSRF) is `Unavailable`, naming the issuer. A token endpoint refusing the
//! code (4xx, `invalid_grant` …) is `Refused` with the provider's error code;
//! every failed check is `Refused` with its reason. Codes, tokens and the
//! client secret are never logged nor put into error messages.
//!
//! Discovery, PKCE, the authorization URL, the token request and the ID token
//! verification are the `openidconnect` crate's (a well-kept, widely used
//! implementation); this module configures it strictly, adds the checks it
//! leaves to the relying party (`state`, pending age, `azp`, `iat`, key
//! rotation, https-only endpoints) and reads the configurable claims.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreErrorResponseType, CoreIdToken, CoreIdTokenVerifier,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::url::{Host, Url};
use openidconnect::{
    AsyncHttpClient, AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, DiscoveryError,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IdTokenVerifier, IssuerUrl, LoginHint, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, StandardErrorResponse,
    TokenResponse as _,
};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tracing::{debug, info, warn};

use super::{bounded, DirectoryError, Secret, SignedIn};
use crate::clock;

/// Provider metadata and keys are fetched again after this long (seconds).
const METADATA_TTL: i64 = 3600;
/// At most one key-rotation refetch per this many seconds after a signature
/// that fails with a key we have ...
const ROTATION_REFETCH_INTERVAL: i64 = 10;
/// ... and per this many when the token names a key we do not have (a
/// rotation: the usual case, and one an attacker cannot cause without the
/// provider's signature on a token it hands to us).
const UNKNOWN_KEY_REFETCH_INTERVAL: i64 = 1;
/// After a failed discovery, callers get the same answer for this long
/// (seconds) instead of each waiting out their own timeout.
const FAILURE_MEMO: i64 = 5;
/// A sign-in must finish within this many seconds of its start.
const PENDING_MAX_AGE: i64 = 600;
/// Clock skew tolerated on `exp`, `iat` and the pending login's start (seconds).
const LEEWAY: i64 = 60;
/// Random bytes in `state` and `nonce`.
const RANDOM_BYTES: u32 = 32;
/// The largest answer read from the provider.
const MAX_BODY: usize = 1 << 20;
/// The longest authorization code accepted from the callback.
const MAX_CODE: usize = 4096;
/// Bounds on the claims mapped into `SignedIn`.
const MAX_GROUPS: usize = 256;
const MAX_CLAIM_CHARS: usize = 256;
const MAX_EMAIL_CHARS: usize = 320;
const MAX_LOGIN_HINT_CHARS: usize = 256;

/// How mdmd talks to the identity provider.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The issuer identifier, exactly as the provider states it in its
    /// metadata (trailing slash included or not). `https`; plain `http` only
    /// for a loopback host (127.0.0.1, ::1, localhost), for tests.
    pub issuer: String,
    pub client_id: String,
    /// Confidential client (`client_secret_basic`, or `client_secret_post`
    /// when that is all the provider supports); `None`: a public client,
    /// relying on PKCE alone.
    pub client_secret: Option<Secret>,
    /// Our callback, e.g. `https://mdm.example.com/auth/oidc/callback`.
    pub redirect_url: String,
    /// Requested scopes; `openid` is always requested.
    pub scopes: Vec<String>,
    /// The user name's claim (one only the provider's admins can set); falls back to the e-mail, then `sub`.
    /// A dotted name (`realm_access.name`) reaches into nested objects when no
    /// top-level claim has that exact name (the same holds for every claim below).
    pub username_claim: String,
    pub email_claim: String,
    pub name_claim: String,
    /// An array of strings (a single string is accepted); absent means no groups.
    pub groups_claim: String,
    /// The bound on every HTTP call (discovery, JWKS, token).
    pub timeout: Duration,
}

impl OidcConfig {
    /// Defaults: scopes `openid email profile`, the standard claim names,
    /// `groups` for groups, a 10 s timeout, a public client.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>, redirect_url: impl Into<String>) -> OidcConfig {
        OidcConfig {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            redirect_url: redirect_url.into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            username_claim: "preferred_username".into(),
            email_claim: "email".into(),
            name_claim: "name".into(),
            groups_claim: "groups".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What must survive between [`Oidc::begin`] and [`Oidc::finish`]. All of it
/// is secret to the browser's session (mdmd seals it into a cookie).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Unix seconds (`crate::clock`).
    pub created_at: i64,
}

/// The relying party: configuration, an HTTP client that follows no
/// redirects, and the provider's metadata and keys, cached.
pub struct Oidc {
    cfg: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: ProviderHttp,
    cache: Mutex<Option<Arc<Provider>>>,
    /// The last failed fetch (when, why), answered again for `FAILURE_MEMO` s.
    last_failure: Mutex<Option<(i64, String)>>,
    /// One fetch at a time; latecomers use its result.
    fetching: tokio::sync::Mutex<()>,
    /// When the last key-rotation refetch started (`i64::MIN`: never).
    last_rotation_fetch: AtomicI64,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.cfg.issuer)
            .field("client_id", &self.cfg.client_id)
            .finish_non_exhaustive()
    }
}

/// The provider's metadata (with its JWKS) as fetched at `fetched_at`.
struct Provider {
    metadata: CoreProviderMetadata,
    fetched_at: i64,
}

impl Provider {
    fn fresh(&self, now: i64) -> bool {
        now >= self.fetched_at && now - self.fetched_at < METADATA_TTL
    }
}

/// `openidconnect`'s client once built from discovered metadata: the
/// authorization endpoint is set, the token and userinfo endpoints may be.
type RelyingParty = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

impl Oidc {
    /// Check the configuration (URLs, client id, scopes, timeout) and build
    /// the HTTP client. No network.
    pub fn new(cfg: OidcConfig) -> Result<Oidc, DirectoryError> {
        let issuer_url = check_url(&cfg.issuer).map_err(|m| config(format!("issuer {m}")))?;
        if issuer_url.query().is_some() {
            return Err(config(format!("issuer {}: must not have a query", cfg.issuer)));
        }
        let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| config(format!("issuer {}: {e}", cfg.issuer)))?;
        check_url(&cfg.redirect_url).map_err(|m| config(format!("redirect URL {m}")))?;
        let redirect = RedirectUrl::new(cfg.redirect_url.clone()).map_err(|e| config(format!("redirect URL {}: {e}", cfg.redirect_url)))?;
        if cfg.client_id.is_empty() || cfg.client_id.chars().count() > MAX_CLAIM_CHARS || cfg.client_id.chars().any(char::is_control) {
            return Err(config("the client id must be 1 to 256 printable characters".into()));
        }
        if cfg.client_secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return Err(config("the client secret is empty".into()));
        }
        if let Some(bad) = cfg.scopes.iter().find(|s| !valid_scope(s)) {
            return Err(config(format!("scope {bad:?} is not a valid scope token")));
        }
        if cfg.timeout.is_zero() {
            return Err(config("the timeout must be above zero".into()));
        }
        let client = reqwest::Client::builder()
            // Following redirects would let the provider's answers point us anywhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            // Sign-ins are rare; a fresh connection each time never trips on
            // one the provider closed (a restart, an idle timeout).
            .pool_max_idle_per_host(0)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("mdmd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config(format!("HTTP client: {e}")))?;
        let http = ProviderHttp {
            client,
            issuer: cfg.issuer.clone(),
            timeout: cfg.timeout,
        };
        Ok(Oidc {
            cfg,
            issuer,
            redirect,
            http,
            cache: Mutex::new(None),
            last_failure: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            last_rotation_fetch: AtomicI64::new(i64::MIN),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// The authorization URL to send the browser to, and what to keep until
    /// the callback. `login_hint` is passed on when it is short and printable
    /// (dropped otherwise: it is only a hint). Discovers the provider on first
    /// use.
    pub async fn begin(&self, login_hint: Option<&str>) -> Result<(String, PendingLogin), DirectoryError> {
        let provider = self.provider().await?;
        let client = self.client(&provider);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random_len(RANDOM_BYTES);
        let nonce = Nonce::new_random_len(RANDOM_BYTES);
        let (state_for_url, nonce_for_url) = (state.clone(), nonce.clone());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || state_for_url,
                move || nonce_for_url,
            )
            .set_pkce_challenge(challenge);
        // `openid` is added by the crate, first.
        let mut seen: Vec<&str> = vec!["openid"];
        for scope in &self.cfg.scopes {
            if !seen.contains(&scope.as_str()) {
                seen.push(scope);
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        match login_hint.map(str::trim) {
            Some(h) if usable_text(h, MAX_LOGIN_HINT_CHARS) => {
                request = request.set_login_hint(LoginHint::new(h.to_owned()));
            }
            Some(h) if !h.is_empty() => debug!("oidc: unusable login hint dropped"),
            _ => {}
        }
        let (url, _, _) = request.url();
        let pending = PendingLogin {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            created_at: clock::now(),
        };
        debug!(issuer = %self.cfg.issuer, "oidc: sign-in started");
        Ok((url.to_string(), pending))
    }

    /// The callback: check `state` and the pending login's age, exchange
    /// `code`, verify the ID token, map its claims. See the module doc.
    pub async fn finish(&self, pending: &PendingLogin, code: &str, state: &str) -> Result<SignedIn, DirectoryError> {
        check_pending(pending, state, clock::now())?;
        if code.is_empty() || code.len() > MAX_CODE || !code.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refused("the authorization code is malformed"));
        }

        let provider = self.provider().await?;
        let client = self.client(&provider);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| refused("the provider publishes no token endpoint"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        let response = request.request_async(&self.http).await.map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| refused("the token endpoint's answer has no ID token"))?;

        let claims = match self.verify(&provider, id_token, pending) {
            Ok(claims) => claims,
            Err(e) if signing_key_problem(&e) => match self.refetch_for_rotation(&provider, unknown_key(&e)).await? {
                Some(newer) => self.verify(&newer, id_token, pending).map_err(verification_error)?,
                None => return Err(verification_error(e)),
            },
            Err(e) => return Err(verification_error(e)),
        };
        let signed_in = map_claims(&self.cfg, &claims)?;
        info!(
            issuer = %self.cfg.issuer,
            username = %signed_in.username,
            groups = signed_in.groups.len(),
            "oidc: signed in"
        );
        Ok(signed_in)
    }

    /// Fetch the provider's metadata and JWKS now, replacing the cache (a
    /// health check, or a warm-up at start).
    /// A failure here is reported, not remembered: a health check must not
    /// make the next sign-ins fail fast.
    pub async fn discover(&self) -> Result<(), DirectoryError> {
        let _one = self.fetching.lock().await;
        let r = self.fetch().await.map(|_| ());
        if r.is_err() {
            *lock(&self.last_failure) = None;
        }
        r
    }

    /// The cached provider, fetched first when absent or older than an hour.
    async fn provider(&self) -> Result<Arc<Provider>, DirectoryError> {
        if let Some(p) = self.cached().filter(|p| p.fresh(clock::now())) {
            return Ok(p);
        }
        let _one = self.fetching.lock().await;
        let now = clock::now();
        if let Some(p) = self.cached().filter(|p| p.fresh(now)) {
            return Ok(p); // fetched while we waited
        }
        let memo = lock(&self.last_failure).clone();
        if let Some((at, why)) = memo {
            if now >= at && now - at < FAILURE_MEMO {
                return Err(DirectoryError::Unavailable(why));
            }
        }
        self.fetch().await
    }

    /// After a signature failure with `seen`'s keys: a newer provider to try
    /// again with (one fetched meanwhile, or fetched now), or None when the
    /// last rotation refetch is too recent.
    async fn refetch_for_rotation(&self, seen: &Arc<Provider>, unknown_key: bool) -> Result<Option<Arc<Provider>>, DirectoryError> {
        let _one = self.fetching.lock().await;
        if let Some(p) = self.cached().filter(|p| !Arc::ptr_eq(p, seen)) {
            return Ok(Some(p));
        }
        let now = clock::now();
        let last = self.last_rotation_fetch.load(Ordering::Relaxed);
        let interval = if unknown_key {
            UNKNOWN_KEY_REFETCH_INTERVAL
        } else {
            ROTATION_REFETCH_INTERVAL
        };
        if last != i64::MIN && now >= last && now - last < interval {
            if !unknown_key {
                debug!(issuer = %self.cfg.issuer, "oidc: bad signature; keys were refetched moments ago");
                return Ok(None);
            }
            // A key we do not have, the keys fetched within the last second (for another
            // token): wait out the second rather than refuse a freshly rotated key.
            debug!(issuer = %self.cfg.issuer, "oidc: unknown signing key; keys were refetched moments ago, waiting a second");
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            if let Some(p) = self.cached().filter(|p| !Arc::ptr_eq(p, seen)) {
                return Ok(Some(p));
            }
        }
        self.last_rotation_fetch.store(now, Ordering::Relaxed);
        info!(issuer = %self.cfg.issuer, "oidc: ID token signed with an unknown key; fetching the provider's keys again");
        self.fetch().await.map(Some)
    }

    fn cached(&self) -> Option<Arc<Provider>> {
        lock(&self.cache).clone()
    }

    /// Discovery and JWKS, checked and cached. Callers hold `fetching`.
    async fn fetch(&self) -> Result<Arc<Provider>, DirectoryError> {
        let fetched = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| self.discovery_error(e))
            .and_then(|metadata| {
                self.check_metadata(&metadata)?;
                Ok(metadata)
            });
        let metadata = match fetched {
            Ok(m) => m,
            Err(e) => {
                warn!(issuer = %self.cfg.issuer, error = %e, "oidc: discovery failed");
                *lock(&self.last_failure) = Some((clock::now(), e.to_string()));
                return Err(e);
            }
        };
        let provider = Arc::new(Provider {
            metadata,
            fetched_at: clock::now(),
        });
        *lock(&self.cache) = Some(provider.clone());
        *lock(&self.last_failure) = None;
        info!(
            issuer = %self.cfg.issuer,
            keys = provider.metadata.jwks().keys().len(),
            "oidc: provider metadata and keys fetched"
        );
        Ok(provider)
    }

    /// The discovered endpoints must be as safe as the issuer: https, or
    /// http on loopback. (Every request is checked again when it is sent.)
    fn check_metadata(&self, m: &CoreProviderMetadata) -> Result<(), DirectoryError> {
        let issuer = &self.cfg.issuer;
        check_url(m.authorization_endpoint().as_str()).map_err(|e| refused(format!("{issuer}: authorization endpoint {e}")))?;
        let token = m
            .token_endpoint()
            .ok_or_else(|| refused(format!("{issuer}: the provider publishes no token endpoint")))?;
        check_url(token.as_str()).map_err(|e| refused(format!("{issuer}: token endpoint {e}")))?;
        check_url(m.jwks_uri().as_str()).map_err(|e| refused(format!("{issuer}: jwks_uri {e}")))?;
        Ok(())
    }

    fn discovery_error(&self, e: DiscoveryError<DirectoryError>) -> DirectoryError {
        let issuer = &self.cfg.issuer;
        match e {
            DiscoveryError::Request(e) => e,
            DiscoveryError::Response(_, _, why) => DirectoryError::Unavailable(format!("{issuer}: discovery: {why}")),
            DiscoveryError::Parse(e) => {
                DirectoryError::Unavailable(format!("{issuer}: discovery: unreadable metadata or key set (at `{}`)", e.path()))
            }
            DiscoveryError::UrlParse(e) => config(format!("issuer {issuer}: {e}")),
            DiscoveryError::Validation(why) => refused(format!("{issuer}: discovery: {why}")),
            other => DirectoryError::Unavailable(format!("{issuer}: discovery: {other}")),
        }
    }

    /// `openidconnect`'s client for `provider`'s metadata.
    fn client(&self, provider: &Provider) -> RelyingParty {
        let secret = self.cfg.client_secret.as_ref().map(|s| ClientSecret::new(s.expose().to_owned()));
        let confidential = secret.is_some();
        let client = CoreClient::from_provider_metadata(provider.metadata.clone(), ClientId::new(self.cfg.client_id.clone()), secret)
            .set_redirect_uri(self.redirect.clone());
        if !confidential {
            return client; // the crate sends client_id in the body
        }
        // RFC 6749 and OIDC Discovery: absent means client_secret_basic.
        let methods = provider.metadata.token_endpoint_auth_methods_supported();
        let basic = methods.is_none_or(|m| m.contains(&CoreClientAuthMethod::ClientSecretBasic));
        let post = methods.is_some_and(|m| m.contains(&CoreClientAuthMethod::ClientSecretPost));
        if !basic && post {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client.set_auth_type(AuthType::BasicAuth)
        }
    }

    /// Verify `id_token` with `provider`'s keys; its claims as JSON.
    fn verify(&self, provider: &Provider, id_token: &CoreIdToken, pending: &PendingLogin) -> Result<Value, ClaimsVerificationError> {
        let confidential = self.cfg.client_secret.is_some();
        let advertised = provider.metadata.id_token_signing_alg_values_supported();
        let algs: Vec<CoreJwsSigningAlgorithm> = advertised.iter().filter(|a| acceptable_alg(a, confidential)).cloned().collect();
        if algs.is_empty() {
            return Err(ClaimsVerificationError::Unsupported(format!(
                "the provider signs ID tokens only with algorithms we do not accept ({})",
                advertised.iter().map(alg_name).collect::<Vec<_>>().join(", ")
            )));
        }
        let client_id = ClientId::new(self.cfg.client_id.clone());
        let keys = provider.metadata.jwks().clone();
        let verifier: CoreIdTokenVerifier<'static> = match &self.cfg.client_secret {
            Some(secret) => IdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(secret.expose().to_owned()),
                self.issuer.clone(),
                keys,
            ),
            None => IdTokenVerifier::new_public_client(client_id, self.issuer.clone(), keys),
        };
        let now = clock::now();
        let verifier = verifier
            .set_allowed_algs(algs)
            // Other audiences are accepted only with `azp` naming us (checked below).
            .set_other_audience_verifier_fn(|_| true)
            // `exp` is compared with this: now, less the leeway.
            .set_time_fn(move || unix_time(now - LEEWAY).into())
            .set_issue_time_verifier_fn(move |iat| {
                if iat.timestamp() > now + LEEWAY {
                    Err(format!("issued in the future ({} s ahead)", iat.timestamp() - now))
                } else {
                    Ok(())
                }
            });
        let nonce = Nonce::new(pending.nonce.clone());
        let claims = id_token.claims(&verifier, &nonce)?;
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != self.cfg.client_id => {
                return Err(ClaimsVerificationError::InvalidAudience(format!(
                    "the authorized party `{}` is not this client",
                    azp.as_str()
                )));
            }
            None if claims.audiences().len() > 1 => {
                return Err(ClaimsVerificationError::InvalidAudience(
                    "several audiences and no authorized party (azp)".into(),
                ));
            }
            _ => {}
        }
        // Verified: read the payload (the same bytes the signature covers) for
        // the configurable claims the crate's types do not carry.
        verified_payload(&id_token.to_string()).map_err(ClaimsVerificationError::Other)
    }
}

/// The HTTP client `openidconnect` calls through: every call bounded by the
/// timeout, only https (or loopback http) URLs, no redirects, bodies at most
/// 1 MiB, 5xx and 3xx answers turned into `Unavailable`.
struct ProviderHttp {
    client: reqwest::Client,
    issuer: String,
    timeout: Duration,
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = DirectoryError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, DirectoryError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let endpoint = endpoint_name(&request.uri().to_string());
            let what = format!("identity provider {} ({} {endpoint})", self.issuer, request.method());
            bounded(self.timeout, &what, self.send(request, &what)).await
        })
    }
}

impl ProviderHttp {
    async fn send(&self, request: HttpRequest, what: &str) -> Result<HttpResponse, DirectoryError> {
        check_url(&request.uri().to_string()).map_err(|e| refused(format!("{what}: {e}")))?;
        let request = reqwest::Request::try_from(request)
            .map_err(|e| DirectoryError::Unavailable(format!("{what}: cannot build the request: {}", describe(&e))))?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| DirectoryError::Unavailable(format!("{what}: {}", describe(&e))))?;
        let status = response.status();
        debug!(issuer = %self.issuer, status = status.as_u16(), "oidc: provider answered");
        if status.is_redirection() {
            return Err(DirectoryError::Unavailable(format!(
                "{what}: answered with a redirect (HTTP {status}), which is not followed"
            )));
        }
        if status.is_server_error() {
            return Err(DirectoryError::Unavailable(format!("{what}: answered HTTP {status}")));
        }
        if response.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(DirectoryError::Unavailable(format!("{what}: the answer is larger than 1 MiB")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| DirectoryError::Unavailable(format!("{what}: {}", describe(&e))))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(DirectoryError::Unavailable(format!("{what}: the answer is larger than 1 MiB")));
            }
            body.extend_from_slice(&chunk);
        }
        let mut answer = openidconnect::http::Response::builder().status(status);
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        answer
            .body(body)
            .map_err(|e| DirectoryError::Unavailable(format!("{what}: unreadable answer: {e}")))
    }
}

/// A reqwest error in a few words and its causes (no URL: we name the endpoint).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else if e.is_builder() {
        "bad request"
    } else {
        "request failed"
    };
    let mut causes: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !causes.iter().any(|c| c.contains(&s_text)) {
            causes.push(s_text);
        }
        source = s.source();
    }
    if causes.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

/// `scheme://host[:port]/path` of a URL: no query, no user info.
fn endpoint_name(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(port) => format!("{}://{host}:{port}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        Err(_) => "an unparsable URL".to_owned(),
    }
}

/// An absolute `https` URL (or `http` on a loopback host), with no user info
/// and no fragment. The error reads after the URL's role ("issuer …").
fn check_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{}: must not carry a user name or password", endpoint_name(s)));
    }
    if url.fragment().is_some() {
        return Err(format!("{}: must not have a fragment", endpoint_name(s)));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if url.host().is_some_and(|h| is_loopback(&h)) => Ok(url),
        "http" => Err(format!("{s}: must be https (http only for 127.0.0.1, ::1 or localhost)")),
        _ => Err(format!("{}: must be an https URL", endpoint_name(s))),
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// RFC 6749 §3.3 scope-token: one or more of %x21 / %x23-5B / %x5D-7E.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Signature algorithms accepted for ID tokens: asymmetric ones, and HMAC
/// only when the client secret is truly secret (a confidential client).
fn acceptable_alg(alg: &CoreJwsSigningAlgorithm, confidential: bool) -> bool {
    use CoreJwsSigningAlgorithm as A;
    match alg {
        A::RsaSsaPkcs1V15Sha256
        | A::RsaSsaPkcs1V15Sha384
        | A::RsaSsaPkcs1V15Sha512
        | A::RsaSsaPssSha256
        | A::RsaSsaPssSha384
        | A::RsaSsaPssSha512
        | A::EcdsaP256Sha256
        | A::EcdsaP384Sha384
        | A::EcdsaP521Sha512
        | A::EdDsa => true,
        A::HmacSha256 | A::HmacSha384 | A::HmacSha512 => confidential,
        A::None => false,
        _ => false,
    }
}

fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Signature failures that fresh keys could cure: an unknown `kid`, no or
/// several candidate keys, a signature that does not verify with the key we have.
/// The token names a key the cached JWKS does not have.
fn unknown_key(e: &ClaimsVerificationError) -> bool {
    matches!(
        e,
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)
    )
}

fn signing_key_problem(e: &ClaimsVerificationError) -> bool {
    matches!(
        e,
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey
                | SignatureVerificationError::AmbiguousKeyId(_)
                | SignatureVerificationError::CryptoError(_)
                | SignatureVerificationError::InvalidKey(_)
        )
    )
}

fn verification_error(e: ClaimsVerificationError) -> DirectoryError {
    use ClaimsVerificationError as E;
    refused(match e {
        E::Expired(m) => format!("ID token expired or not yet valid: {m}"),
        E::InvalidAudience(m) => format!("ID token audience: {m}"),
        E::InvalidIssuer(m) => format!("ID token issuer: {m}"),
        E::InvalidNonce(m) if m.contains("nonce") => format!("ID token {m}"),
        E::InvalidNonce(m) => format!("ID token nonce: {m}"),
        E::InvalidSubject(m) => format!("ID token subject: {m}"),
        E::SignatureVerification(s) => format!("ID token signature: {s}"),
        E::Unsupported(m) => format!("ID token unsupported: {m}"),
        other => format!("ID token: {other}"),
    })
}

fn token_error(e: RequestTokenError<DirectoryError, StandardErrorResponse<CoreErrorResponseType>>) -> DirectoryError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = printable(r.error().as_ref(), 64);
            let description = r
                .error_description()
                .map(|d| format!(" ({})", printable(d, 200)))
                .unwrap_or_default();
            refused(format!("the token endpoint refused the code: {code}{description}"))
        }
        RequestTokenError::Request(e) => e,
        // Never the body nor serde's message: they could quote a token.
        RequestTokenError::Parse(e, _) => refused(format!(
            "the token endpoint's answer is not a valid token response (at `{}`)",
            e.path()
        )),
        RequestTokenError::Other(m) => refused(format!("token endpoint: {}", printable(&m, 200))),
    }
}

/// `s` without control characters, at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().filter(|c| !c.is_control()).count() > max {
        out.push('…');
    }
    out
}

/// The checks on the callback that need no network: `state` (constant
/// time), the pending login's age, its values' shape.
fn check_pending(pending: &PendingLogin, state: &str, now: i64) -> Result<(), DirectoryError> {
    if pending.state.is_empty() || state.is_empty() {
        return Err(refused("state missing"));
    }
    if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
        return Err(refused("state mismatch: the callback is not for this browser's sign-in"));
    }
    let age = now - pending.created_at;
    if age > PENDING_MAX_AGE {
        return Err(refused(format!(
            "the sign-in expired: started {age} s ago, at most {PENDING_MAX_AGE} s allowed"
        )));
    }
    if age < -LEEWAY {
        return Err(refused("the sign-in's start time is in the future"));
    }
    if pending.nonce.is_empty() {
        return Err(refused("nonce missing"));
    }
    // RFC 7636 §4.1: 43 to 128 unreserved characters.
    let v = &pending.pkce_verifier;
    if !(43..=128).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
        return Err(refused("the PKCE verifier is malformed"));
    }
    Ok(())
}

/// The JSON payload of a compact JWS (header.payload.signature).
fn verified_payload(jwt: &str) -> Result<Value, String> {
    let mut parts = jwt.split('.');
    let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(p), Some(_), None) => p,
        _ => return Err("the ID token is not a compact JWS".into()),
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the ID token's payload is not base64url".to_string())?;
    serde_json::from_slice(&bytes).map_err(|_| "the ID token's payload is not JSON".to_string())
}

/// Verified claims to `SignedIn`, with the configured claim names.
///
/// - user name: `username_claim`, else the (whole) e-mail, else
///   `sub`; Refused when none is usable (a string of 1 to 256 characters
///   without control characters);
/// - e-mail: `email_claim`, ignored when `email_verified` is false;
/// - full name: `name_claim`;
/// - groups: `groups_claim`, an array of strings or one string; more than
///   256 groups, a group over 256 characters or a non-string is Refused;
///   empty names dropped, duplicates removed.
fn map_claims(cfg: &OidcConfig, claims: &Value) -> Result<SignedIn, DirectoryError> {
    if !claims.is_object() {
        return Err(refused("the ID token's claims are not a JSON object"));
    }
    let subject = text_claim(claims, "sub", MAX_CLAIM_CHARS);
    let email_unverified = matches!(claims.get("email_verified"), Some(Value::Bool(false)))
        || claims.get("email_verified").and_then(Value::as_str) == Some("false");
    let email = if email_unverified {
        None
    } else {
        text_claim(claims, &cfg.email_claim, MAX_EMAIL_CHARS)
    };
    let full_name = text_claim(claims, &cfg.name_claim, MAX_CLAIM_CHARS);
    let username = text_claim(claims, &cfg.username_claim, MAX_CLAIM_CHARS)
        // The whole address, never its local part: `ceo@gmail.com` is not `ceo@corp`.
        .or_else(|| email.clone())
        .or_else(|| subject.clone())
        .ok_or_else(|| {
            refused(format!(
                "the ID token names no usable user name (claim `{}`, the e-mail or sub)",
                cfg.username_claim
            ))
        })?;
    let groups = groups_claim(claims, &cfg.groups_claim)?;
    Ok(SignedIn {
        username,
        email,
        full_name,
        groups,
        subject,
    })
}

/// A claim by name: the top-level member, else (for a dotted name) the path
/// through nested objects.
fn claim<'v>(claims: &'v Value, name: &str) -> Option<&'v Value> {
    if name.is_empty() {
        return None;
    }
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    name.split('.').try_fold(claims, |v, part| v.get(part))
}

/// A string claim, trimmed, if usable.
fn text_claim(claims: &Value, name: &str, max: usize) -> Option<String> {
    let s = claim(claims, name)?.as_str()?.trim();
    usable_text(s, max).then(|| s.to_owned())
}

fn usable_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

fn groups_claim(claims: &Value, name: &str) -> Result<Vec<String>, DirectoryError> {
    let values: Vec<&Value> = match claim(claims, name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v @ Value::String(_)) => vec![v],
        Some(_) => return Err(refused(format!("the groups claim `{name}` is not a list of strings"))),
    };
    if values.len() > MAX_GROUPS {
        return Err(refused(format!(
            "the groups claim `{name}` lists {} groups, at most {MAX_GROUPS} accepted",
            values.len()
        )));
    }
    let mut groups: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let g = v
            .as_str()
            .ok_or_else(|| refused(format!("the groups claim `{name}` is not a list of strings")))?
            .trim();
        if g.is_empty() {
            continue;
        }
        if !usable_text(g, MAX_CLAIM_CHARS) {
            return Err(refused(format!(
                "the groups claim `{name}` has a group name over {MAX_CLAIM_CHARS} characters or with control characters"
            )));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_owned());
        }
    }
    Ok(groups)
}

fn unix_time(secs: i64) -> std::time::SystemTime {
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        std::time::UNIX_EPOCH + offset
    } else {
        std::time::UNIX_EPOCH - offset
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn refused(why: impl Into<String>) -> DirectoryError {
    DirectoryError::Refused(why.into())
}

fn config(why: String) -> DirectoryError {
    DirectoryError::Config(why)
}

#[cfg(test)]
mod tests;
