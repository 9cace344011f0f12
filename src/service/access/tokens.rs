//! Access tokens for identity providers and gateways.
//!
//! **Shared tokens** (PingID-style): secrets the IdP is configured with and
//! mdmd puts into managed apps' configuration (`$ACCESS_TOKEN`), so the IdP
//! accepts sign-ins only from managed apps. Several may be active (rotation
//! without lock-outs); each has an effective date; the last active one can
//! only be revoked together with generating its replacement. All tokens live
//! in one store record changed by compare-and-set, so two instances cannot
//! both revoke "the other" token. Values are sealed at rest (`secrets.keys`).
//!
//! **Per-device tokens** (`$DEVICE_ACCESS_TOKEN`): an ES256 JWT naming the
//! enrollment, its compliance and an expiry, verifiable by anyone with the
//! keys at `/.well-known/jwks.json`; re-sent to the app before it expires.
//!
//! **App configurations** that use either variable are remembered
//! (`super::app_configs`) and re-sent as `Settings` →
//! `ApplicationConfiguration` whenever the shared token changes, and for
//! per-device tokens when half their lifetime has passed.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::service::ServiceError;
use crate::store::Store;

const COLLECTION: &str = "access";
const TOKENS_KEY: &str = "tokens";
const AUDIENCE: &str = "mdmd-access";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    id: String,
    sealed: String,
    created_at: i64,
    effective_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tokens {
    tokens: Vec<StoredToken>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenView {
    pub id: String,
    pub value: String,
    pub created_at: i64,
    pub effective_at: i64,
    pub revoked_at: Option<i64>,
    /// Not revoked (it may still wait for its effective date).
    pub active: bool,
    /// Active and past its effective date: accepted now.
    pub effective: bool,
    /// Where it stands for the identity provider: `required` (the newest in
    /// effect: what the provider requires now), `scheduled` (required from
    /// `effective_at`; already on the devices), `superseded` (in effect, a
    /// newer one too; still accepted until revoked) or `revoked`.
    pub status: &'static str,
    /// The token devices carry: the newest active one, in effect or not, so
    /// it is on every device before the provider starts requiring it.
    pub carried: bool,
    /// Said of a value an admin typed that is easy to guess (shorter than 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What the identity provider requires when, in one place: the token it
/// requires now, the next one and from when, and the one devices carry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Schedule {
    /// (id, effective since)
    pub required: Option<(String, i64)>,
    /// (id, required from): the earliest scheduled token.
    pub next: Option<(String, i64)>,
    pub carried: Option<String>,
}

impl Schedule {
    pub fn of(list: &[TokenView]) -> Schedule {
        Schedule {
            required: list.iter().find(|t| t.status == "required").map(|t| (t.id.clone(), t.effective_at)),
            next: list
                .iter()
                .filter(|t| t.status == "scheduled")
                .min_by_key(|t| (t.effective_at, t.created_at))
                .map(|t| (t.id.clone(), t.effective_at)),
            carried: list.iter().find(|t| t.carried).map(|t| t.id.clone()),
        }
    }

    /// One sentence for people.
    pub fn summary(&self) -> String {
        let at = |t: i64| crate::clock::rfc3339(t).unwrap_or_else(|| t.to_string());
        let mut s = match &self.required {
            Some((id, since)) => format!(
                "the identity provider should require token {id} now (in effect since {})",
                at(*since)
            ),
            None => "no token is in effect yet".to_owned(),
        };
        if let Some((id, from)) = &self.next {
            s.push_str(&format!("; token {id} from {}", at(*from)));
        }
        match &self.carried {
            Some(id) => s.push_str(&format!("; devices carry token {id}")),
            None => s.push_str("; no token to distribute"),
        }
        s
    }
}

/// The shortest value not warned about.
const SHORT_TOKEN: usize = 16;
/// The longest value taken (a token goes into app configurations).
const MAX_TOKEN: usize = 4096;

/// What a verification says.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    pub valid: bool,
    /// "shared" or "device".
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The device the token names (device tokens) or was presented for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// A shared token's effective date (told with "not yet effective").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    /// Not before: when it was issued (relying parties honour it).
    #[serde(default)]
    pub nbf: i64,
    pub exp: i64,
    pub compliance: String,
    pub managed: bool,
}

pub struct Access {
    pub(super) store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    issuer: String,
    device_token_secs: i64,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    kid: String,
    jwk: serde_json::Value,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn aad() -> &'static str {
    "access-token"
}

impl Access {
    /// Load (or create, 0600) the P-256 signing key in `certs_dir`.
    pub fn load_or_create(
        certs_dir: &Path,
        store: Arc<dyn Store>,
        secrets: Arc<SecretBox>,
        issuer: &str,
        device_token_secs: i64,
    ) -> anyhow::Result<Access> {
        use anyhow::Context as _;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        let path = certs_dir.join("access-jwt-key.pem");
        let pem = match std::fs::read(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                let key = openssl::pkey::PKey::from_ec_key(EcKey::generate(&group)?)?;
                let pem = key.private_key_to_pem_pkcs8()?;
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                f.write_all(&pem)?;
                f.sync_all()?;
                pem
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let key = openssl::pkey::PKey::private_key_from_pem(&pem).with_context(|| format!("{}: not a PEM key", path.display()))?;
        let ec = key.ec_key().context("the access-token key must be an EC P-256 key")?;
        let mut ctx = openssl::bn::BigNumContext::new()?;
        let (mut x, mut y) = (openssl::bn::BigNum::new()?, openssl::bn::BigNum::new()?);
        ec.public_key().affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
        let pad = |b: &openssl::bn::BigNum| b.to_vec_padded(32);
        let (x, y) = (pad(&x)?, pad(&y)?);
        let spki = key.public_key_to_der()?;
        let kid = {
            use sha2::Digest as _;
            hex::encode(&sha2::Sha256::digest(&spki)[..8])
        };
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": b64url(&x), "y": b64url(&y),
            "kid": kid, "use": "sig", "alg": "ES256",
        });
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(&pem).context("access-token key")?;
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(&b64url(&x), &b64url(&y)).context("access-token public key")?;
        Ok(Access {
            store,
            secrets,
            issuer: issuer.to_owned(),
            device_token_secs: device_token_secs.max(300),
            encoding,
            decoding,
            kid,
            jwk,
        })
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    async fn load(&self) -> Result<(Tokens, u64), ServiceError> {
        match self.store.record(COLLECTION, TOKENS_KEY).await? {
            Some(r) => Ok((serde_json::from_value(r.value).map_err(crate::store::StoreError::from)?, r.version)),
            None => Ok((Tokens::default(), 0)),
        }
    }

    fn view(&self, t: &StoredToken, at: i64) -> Result<TokenView, ServiceError> {
        let value = self.secrets.open(&t.sealed, aad()).map_err(|e| ServiceError::Internal {
            what: "opening a stored access token",
            source: format!("token {}: {e}", t.id).into(),
        })?;
        Ok(TokenView {
            id: t.id.clone(),
            value: String::from_utf8_lossy(&value).into_owned(),
            created_at: t.created_at,
            effective_at: t.effective_at,
            revoked_at: t.revoked_at,
            active: t.revoked_at.is_none(),
            effective: t.revoked_at.is_none() && t.effective_at <= at,
            status: if t.revoked_at.is_some() {
                "revoked"
            } else if t.effective_at > at {
                "scheduled"
            } else {
                "superseded"
            },
            carried: false,
            warning: None,
        })
    }

    /// Every token, with where each stands (`status`, `carried`).
    pub async fn list(&self) -> Result<Vec<TokenView>, ServiceError> {
        let (t, _) = self.load().await?;
        let at = now();
        let mut l = t.tokens.iter().map(|x| self.view(x, at)).collect::<Result<Vec<_>, _>>()?;
        let newest = |l: &[TokenView], only_effective: bool| {
            l.iter()
                .enumerate()
                .filter(|(_, t)| t.active && (!only_effective || t.effective))
                .max_by_key(|(_, t)| (t.effective_at, t.created_at))
                .map(|(i, _)| i)
        };
        if let Some(i) = newest(&l, true) {
            l[i].status = "required";
        }
        if let Some(i) = newest(&l, false) {
            l[i].carried = true;
        }
        Ok(l)
    }

    /// The token apps get: the newest active one, even before its effective
    /// date (the identity provider's effective date is when it starts
    /// *requiring* the token; it must be on the devices by then).
    pub async fn carried(&self) -> Result<Option<TokenView>, ServiceError> {
        Ok(self.list().await?.into_iter().find(|t| t.carried))
    }

    /// The value of [`Access::carried`].
    pub async fn current(&self) -> Result<Option<String>, ServiceError> {
        Ok(self.carried().await?.map(|t| t.value))
    }

    /// Apply `change` to the token list with compare-and-set (retried on a
    /// concurrent change); the change may refuse.
    async fn update<R>(&self, mut change: impl FnMut(&mut Tokens) -> Result<R, ServiceError>) -> Result<R, ServiceError> {
        for _ in 0..10 {
            let (mut t, version) = self.load().await?;
            let r = change(&mut t)?;
            let value = serde_json::to_value(&t).map_err(crate::store::StoreError::from)?;
            if self
                .store
                .put_record(COLLECTION, TOKENS_KEY, value, now(), Some(version))
                .await?
                .is_some()
            {
                return Ok(r);
            }
        }
        Err(ServiceError::Busy("the tokens kept changing underneath; try again".into()))
    }

    fn new_stored(&self, value: &str, effective_at: Option<i64>) -> Result<StoredToken, ServiceError> {
        // The identity provider sets the rule (PingID sets none): any value, but not
        // empty, padded with spaces, multi-line or enormous.
        if value.is_empty() || value.trim() != value || value.len() > MAX_TOKEN || value.chars().any(char::is_control) {
            return Err(ServiceError::Rejected(format!(
                "a token is 1 to {MAX_TOKEN} characters, without surrounding spaces or control characters"
            )));
        }
        let t = now();
        Ok(StoredToken {
            id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            sealed: self
                .secrets
                .seal(value.as_bytes(), aad())
                .map_err(|e| ServiceError::internal("sealing an access token", e))?,
            created_at: t,
            effective_at: effective_at.unwrap_or(t),
            revoked_at: None,
        })
    }

    /// Add a token (`value`, or a new UUID), optionally revoking another in
    /// the same step. Returns the new token.
    pub async fn add(&self, value: Option<String>, effective_at: Option<i64>, revoke: Option<String>) -> Result<TokenView, ServiceError> {
        let value = value.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let fresh = self.new_stored(&value, effective_at)?;
        let existing_values: Vec<String> = self.list().await?.into_iter().filter(|t| t.active).map(|t| t.value).collect();
        if existing_values.contains(&value) {
            return Err(ServiceError::Rejected("that token is already active".into()));
        }
        let added = self
            .update(|t| {
                if let Some(old) = &revoke {
                    let Some(o) = t.tokens.iter_mut().find(|x| &x.id == old && x.revoked_at.is_none()) else {
                        return Err(ServiceError::Rejected(format!("no active token {old}")));
                    };
                    o.revoked_at = Some(now());
                }
                t.tokens.push(fresh.clone());
                Ok(fresh.clone())
            })
            .await?;
        let mut v = self.view(&added, now())?;
        if value.chars().count() < SHORT_TOKEN {
            v.warning = Some(format!(
                "this token has fewer than {SHORT_TOKEN} characters: easy to guess (let mdmd generate one unless your identity provider dictates it)"
            ));
        }
        Ok(v)
    }

    /// Change a token's value or effective date.
    pub async fn edit(&self, id: &str, value: Option<String>, effective_at: Option<i64>) -> Result<TokenView, ServiceError> {
        let sealed = match &value {
            Some(v) => Some(self.new_stored(v, None)?.sealed),
            None => None,
        };
        // As `add`: two active tokens with one value would keep it accepted
        // after either is revoked.
        if let Some(v) = &value {
            if self.list().await?.iter().any(|t| t.active && t.id != id && &t.value == v) {
                return Err(ServiceError::Rejected("another active token has that value".into()));
            }
        }
        let t = self
            .update(|t| {
                let Some(x) = t.tokens.iter_mut().find(|x| x.id == id && x.revoked_at.is_none()) else {
                    return Err(ServiceError::Rejected(format!("no active token {id}")));
                };
                if let Some(s) = &sealed {
                    x.sealed = s.clone();
                }
                if let Some(e) = effective_at {
                    x.effective_at = e;
                }
                Ok(x.clone())
            })
            .await?;
        self.view(&t, now())
    }

    /// Revoke a token. The last active one is refused unless `replace`, which
    /// generates its replacement in the same step. Returns the replacement.
    pub async fn revoke(&self, id: &str, replace: bool) -> Result<Option<TokenView>, ServiceError> {
        let fresh = if replace {
            Some(self.new_stored(&uuid::Uuid::new_v4().to_string(), None)?)
        } else {
            None
        };
        let r = self
            .update(|t| {
                let others = t.tokens.iter().filter(|x| x.id != id && x.revoked_at.is_none()).count();
                let Some(x) = t.tokens.iter_mut().find(|x| x.id == id && x.revoked_at.is_none()) else {
                    return Err(ServiceError::Rejected(format!("no active token {id}")));
                };
                if others == 0 && fresh.is_none() {
                    return Err(ServiceError::Forbidden(
                        "that is the last active token: generate its replacement in the same step (--replace), or add another first".into(),
                    ));
                }
                x.revoked_at = Some(now());
                if let Some(f) = &fresh {
                    t.tokens.push(f.clone());
                }
                Ok(fresh.clone())
            })
            .await?;
        r.map(|f| self.view(&f, now())).transpose()
    }

    /// A per-device token for this enrollment.
    pub fn device_token(&self, device: &str, compliance: &str, managed: bool) -> Result<String, ServiceError> {
        let t = now();
        let claims = DeviceClaims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: device.to_owned(),
            iat: t,
            nbf: t,
            exp: t + self.device_token_secs,
            compliance: compliance.to_owned(),
            managed,
        };
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, &claims, &self.encoding).map_err(|e| ServiceError::internal("signing a device token", e))
    }

    pub fn device_token_secs(&self) -> i64 {
        self.device_token_secs
    }

    /// Is this token one we accept now? For a device token, also what the
    /// device is now (managed, compliance), not only what the token says.
    pub async fn verify(&self, token: &str, device: Option<&str>) -> Result<Verdict, ServiceError> {
        let mut v = Verdict {
            valid: false,
            kind: "shared",
            token_id: None,
            reason: None,
            device: device.map(str::to_owned),
            managed: None,
            compliance: None,
            expires_at: None,
            effective_at: None,
        };
        if token.matches('.').count() == 2 && token.starts_with("ey") {
            v.kind = "device";
            let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
            val.set_audience(&[AUDIENCE]);
            val.set_issuer(&[&self.issuer]);
            val.leeway = 30;
            val.validate_nbf = true;
            match jsonwebtoken::decode::<DeviceClaims>(token, &self.decoding, &val) {
                Ok(d) => {
                    let c = d.claims;
                    v.expires_at = Some(c.exp);
                    if device.is_some_and(|x| x != c.sub) {
                        v.reason = Some(format!("the token is for another device ({})", c.sub));
                        return Ok(v);
                    }
                    v.device = Some(c.sub.clone());
                    self.device_state(&c.sub, &mut v).await?;
                    v.valid = v.managed == Some(true);
                    if !v.valid {
                        v.reason = Some("the device is no longer managed".into());
                    }
                }
                Err(e) => v.reason = Some(format!("not a valid device token: {e}")),
            }
            return Ok(v);
        }
        let at = now();
        let list = self.list().await?;
        // A value revoked once may be added again later: the active token
        // answers for it, not the revoked one listed first.
        let same = |t: &&TokenView| bool::from(subtle::ConstantTimeEq::ct_eq(t.value.as_bytes(), token.as_bytes()));
        match list.iter().filter(same).find(|t| t.active).or_else(|| list.iter().find(same)) {
            None => v.reason = Some("unknown token".into()),
            Some(t) if !t.active => {
                v.token_id = Some(t.id.clone());
                v.reason = Some("revoked".into());
            }
            Some(t) if t.effective_at > at => {
                v.token_id = Some(t.id.clone());
                v.effective_at = Some(t.effective_at);
                v.reason = Some(format!(
                    "not yet effective (from {})",
                    crate::clock::rfc3339(t.effective_at).unwrap_or_else(|| t.effective_at.to_string())
                ));
            }
            Some(t) => {
                v.token_id = Some(t.id.clone());
                v.valid = true;
            }
        }
        if let Some(d) = device {
            self.device_state(d, &mut v).await?;
            if v.valid && v.managed != Some(true) {
                v.valid = false;
                v.reason = Some("the device is not managed".into());
            }
        }
        Ok(v)
    }

    async fn device_state(&self, id: &str, v: &mut Verdict) -> Result<(), ServiceError> {
        let e = self.store.enrollment(id).await?;
        v.managed = Some(e.as_ref().is_some_and(|e| e.active && e.checked_out_at.is_none()));
        v.compliance = Some(self.store.compliance(id).await?.map_or("unknown", |c| c.state.as_str()).to_owned());
        Ok(())
    }
}
