//! The organisation's own CAs (Microsoft NDES, a DigiCert or Smallstep CA,
//! any SCEP server): registered by name, checked when added (GetCACaps,
//! GetCACert), their challenge sealed at rest; mdmd's SCEP proxy in front of
//! them; and the certificates they issued to devices, learned from each
//! device's CertificateList, kept for renewal.
//!
//! The proxy (`/scep-proxy/{ca}/{token}`) forwards GetCACaps, GetCACert and
//! PKIOperation for a valid token only: a token is a `SecretKind::ScepProxy`
//! secret bound to one device, one profile install and one CA, stored in the
//! same transaction as the InstallProfile that carries it, and used once a
//! certificate has come back through it (the CertRep's pkiStatus is SUCCESS).
//! The device's request and the CA's answer are passed through unchanged:
//! the challenge inside the request is signed by the device and encrypted to
//! the CA, so nothing on the way can read or swap it.
//!
//! The upstream client is reqwest (bounded by a timeout); NDES challenge
//! pages are read from their HTML (UTF-16 or UTF-8) without an NTLM login:
//! put the credentials of a basic-auth account in the URL.

use std::sync::Arc;
use std::time::Duration;

use openssl::pkcs7::Pkcs7;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::pki::sha256_hex;
use crate::store::{SecretKind, Store, StoreError};

/// The record collections this module keeps.
pub const CAS: &str = "cas";
pub const ORG_CERTS: &str = "org-certs";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    /// The CA answered badly or not at all.
    #[error("{0}")]
    Upstream(String),
    /// The CA did not answer in time.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Our own failure (sealing, a stored value that does not open): never
    /// the caller's fault; the cause is kept for the log.
    #[error("{what}")]
    Internal {
        what: &'static str,
        #[source]
        source: crate::service::BoxError,
    },
}

#[derive(Debug, Clone)]
pub struct OrgCaConfig {
    pub public_url: String,
    /// How long a proxy token in a profile stays valid (seconds).
    pub proxy_ttl: i64,
    /// Re-install a profile this long before its certificate expires (seconds).
    pub renew_before: i64,
    /// Bound on every request to a CA.
    pub timeout: Duration,
}

/// A CA as stored. The challenge (or the challenge URL, which may carry
/// credentials) is sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CaRecord {
    name: String,
    scep_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenge_url: Option<String>,
    /// The challenge URL without credentials, to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenge_url_shown: Option<String>,
    caps: Vec<String>,
    /// GetCACert's certificates (DER, base64), CA first.
    chain: Vec<String>,
    created_at: i64,
}

/// How a CA's challenge is obtained.
pub enum Challenge {
    Static(String),
    /// NDES-style: fetched per install.
    Url(String),
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertView {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub sha256: String,
    #[schema(value_type = String, format = DateTime)]
    pub not_before: i64,
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaView {
    pub name: String,
    pub scep_url: String,
    /// `static` or `url`.
    pub challenge: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge_url: Option<String>,
    pub caps: Vec<String>,
    pub chain: Vec<CertView>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A certificate an organisation CA issued to a device, learned from the
/// device's CertificateList.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct OrgCert {
    pub ca: String,
    pub enrollment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub serial: String,
    pub subject: String,
    pub sha256: String,
    #[schema(value_type = String, format = DateTime)]
    pub not_before: i64,
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
    #[schema(value_type = String, format = DateTime)]
    pub learned_at: i64,
    /// When mdmd re-installed the profile to renew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub renewal_queued_at: Option<i64>,
}

/// A proxied answer: status, content type, body.
pub struct Proxied {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

pub fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn cert_view(c: &X509) -> CertView {
    let name = |n: &openssl::x509::X509NameRef| {
        n.entries()
            .map(|e| {
                format!(
                    "{}={}",
                    e.object().nid().short_name().unwrap_or("?"),
                    e.data().to_string().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    CertView {
        subject: name(c.subject_name()),
        issuer: name(c.issuer_name()),
        serial: c
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default(),
        sha256: c.to_der().map(|d| crate::pki::cert_sha256(&d)).unwrap_or_default(),
        not_before: crate::pki::asn1_unix(c.not_before()),
        not_after: crate::pki::asn1_unix(c.not_after()),
    }
}

pub fn describe_cert(c: &X509) -> CertView {
    cert_view(c)
}

/// What is wrong with an answer from a CA or a challenge URL.
#[derive(Debug, thiserror::Error)]
pub enum BadAnswer {
    #[error("GetCACert answered neither a certificate nor a PKCS#7")]
    NotCertificates,
    #[error("GetCACert's PKCS#7 has no certificate")]
    NoCertificate,
    #[error("the NDES page names no challenge")]
    NoChallenge,
    #[error("NDES says its password cache is full (too many unused challenges)")]
    CacheFull,
    #[error("NDES refused: the account may not request challenges")]
    NotPermitted,
    #[error("the challenge URL's answer is neither a challenge nor an NDES page")]
    Unrecognised,
}

/// The certificates of a GetCACert answer: one DER certificate, or a
/// degenerate PKCS#7 with the CA (and RA) certificates.
fn parse_ca_certs(body: &[u8]) -> Result<Vec<X509>, BadAnswer> {
    if let Ok(c) = X509::from_der(body) {
        return Ok(vec![c]);
    }
    let p7 = Pkcs7::from_der(body).map_err(|_| BadAnswer::NotCertificates)?;
    let certs: Vec<X509> = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|s| s.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(BadAnswer::NoCertificate);
    }
    // The CA (a certificate that can sign certificates) first.
    let mut certs = certs;
    certs.sort_by_key(|c| !is_ca(c));
    Ok(certs)
}

fn is_ca(c: &X509) -> bool {
    x509_parser::parse_x509_certificate(&c.to_der().unwrap_or_default())
        .ok()
        .and_then(|(_, x)| x.basic_constraints().ok().flatten().map(|b| b.value.ca))
        .unwrap_or(false)
}

/// The challenge in an answer from a challenge URL: plain text, or an NDES
/// `mscep_admin` page ("The enrollment challenge password is: <B> … </B>").
pub fn parse_challenge_page(body: &[u8]) -> Result<String, BadAnswer> {
    let text = if body.len() >= 2 && (body.starts_with(&[0xFF, 0xFE]) || body.iter().skip(1).step_by(2).take(64).all(|b| *b == 0)) {
        let start = if body.starts_with(&[0xFF, 0xFE]) { 2 } else { 0 };
        let units: Vec<u16> = body[start..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    let lower = text.to_ascii_lowercase();
    if let Some(at) = lower.find("challenge password is") {
        let rest = &text[at..];
        let lrest = &lower[at..];
        let open = lrest.find("<b>").map(|i| i + 3);
        let close = open.and_then(|o| lrest[o..].find("</b>").map(|c| o + c));
        if let (Some(o), Some(c)) = (open, close) {
            let v = rest[o..c].trim();
            if !v.is_empty() {
                return Ok(v.to_owned());
            }
        }
        return Err(BadAnswer::NoChallenge);
    }
    if lower.contains("password cache") && lower.contains("full") {
        return Err(BadAnswer::CacheFull);
    }
    if lower.contains("do not have sufficient permission") {
        return Err(BadAnswer::NotPermitted);
    }
    let t = text.trim();
    if t.is_empty() || t.len() > 256 || t.contains('<') || t.contains('\n') {
        return Err(BadAnswer::Unrecognised);
    }
    Ok(t.to_owned())
}

/// A URL without its user:password part, to show.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparsable)".into(),
    }
}

pub struct OrgCas {
    store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    http: reqwest::Client,
    pub cfg: OrgCaConfig,
}

fn upstream(e: reqwest::Error, what: &str) -> CaError {
    if e.is_timeout() {
        CaError::Timeout(format!("{what}: the CA did not answer in time"))
    } else {
        // The error names the URL; credentials in it are not printed by reqwest.
        CaError::Upstream(format!("{what}: {}", e.without_url()))
    }
}

impl OrgCas {
    pub fn new(store: Arc<dyn Store>, secrets: Arc<SecretBox>, cfg: OrgCaConfig) -> Result<OrgCas, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(OrgCas { store, secrets, http, cfg })
    }

    fn aad(name: &str, field: &str) -> String {
        crate::pki::secrets::aad(&format!("ca:{name}"), field)
    }

    async fn get(&self, name: &str) -> Result<(CaRecord, u64), CaError> {
        let r = self
            .store
            .record(CAS, name)
            .await?
            .ok_or_else(|| CaError::NotFound(format!("no organisation CA {name}")))?;
        let rec: CaRecord = serde_json::from_value(r.value).map_err(StoreError::from)?;
        Ok((rec, r.version))
    }

    /// Ask a SCEP server for its capabilities and certificates.
    async fn probe(&self, scep_url: &str) -> Result<(Vec<String>, Vec<X509>), CaError> {
        let caps = self
            .http
            .get(scep_url)
            .query(&[("operation", "GetCACaps")])
            .send()
            .await
            .map_err(|e| upstream(e, "GetCACaps"))?;
        if !caps.status().is_success() {
            return Err(CaError::Upstream(format!("GetCACaps: the CA answered HTTP {}", caps.status())));
        }
        let caps = caps.text().await.map_err(|e| upstream(e, "GetCACaps"))?;
        let caps: Vec<String> = caps
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty() && l.len() < 64)
            .collect();
        let cert = self
            .http
            .get(scep_url)
            .query(&[("operation", "GetCACert")])
            .send()
            .await
            .map_err(|e| upstream(e, "GetCACert"))?;
        if !cert.status().is_success() {
            return Err(CaError::Upstream(format!("GetCACert: the CA answered HTTP {}", cert.status())));
        }
        let body = cert.bytes().await.map_err(|e| upstream(e, "GetCACert"))?;
        let chain = parse_ca_certs(&body).map_err(|e| CaError::Upstream(e.to_string()))?;
        Ok((caps, chain))
    }

    /// Register a CA after checking it answers as a SCEP server. Nothing is
    /// saved unless the check passes.
    pub async fn add(&self, name: &str, scep_url: &str, challenge: Challenge) -> Result<CaView, CaError> {
        if !valid_name(name) {
            return Err(CaError::Invalid(
                "a CA name is 1 to 64 letters, digits, '.', '_' or '-' (it is used as $SCEP_PROXY_URL:NAME)".into(),
            ));
        }
        let u = reqwest::Url::parse(scep_url).map_err(|e| CaError::Invalid(format!("scep_url: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") || u.query().is_some() {
            return Err(CaError::Invalid("scep_url: an http(s) URL without a query".into()));
        }
        let (sealed, url_sealed, shown) = match &challenge {
            Challenge::Static(c) => {
                if c.is_empty() || c.len() > 255 {
                    return Err(CaError::Invalid("challenge: 1 to 255 characters".into()));
                }
                (Some(self.seal(name, "challenge", c)?), None, None)
            }
            Challenge::Url(c) => {
                let cu = reqwest::Url::parse(c).map_err(|e| CaError::Invalid(format!("challenge_url: {e}")))?;
                if !matches!(cu.scheme(), "http" | "https") {
                    return Err(CaError::Invalid("challenge_url: an http(s) URL".into()));
                }
                (None, Some(self.seal(name, "challenge_url", c)?), Some(without_credentials(c)))
            }
        };
        if self.store.record(CAS, name).await?.is_some() {
            return Err(CaError::Exists(format!("organisation CA {name} exists (remove it first)")));
        }
        let (caps, chain) = self.probe(scep_url).await?;
        let rec = CaRecord {
            name: name.to_owned(),
            scep_url: scep_url.to_owned(),
            challenge: sealed,
            challenge_url: url_sealed,
            challenge_url_shown: shown,
            caps,
            chain: chain
                .iter()
                .filter_map(|c| c.to_der().ok())
                .map(|d| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d))
                .collect(),
            created_at: now(),
        };
        let value = serde_json::to_value(&rec).map_err(StoreError::from)?;
        if self.store.put_record(CAS, name, value, now(), Some(0)).await?.is_none() {
            return Err(CaError::Exists(format!("organisation CA {name} exists (remove it first)")));
        }
        tracing::info!(ca = %name, scep_url = %rec.scep_url, "organisation CA added");
        Ok(view(&rec))
    }

    fn seal(&self, name: &str, field: &str, v: &str) -> Result<String, CaError> {
        self.secrets
            .seal(v.as_bytes(), &Self::aad(name, field))
            .map_err(|e| CaError::Internal {
                what: "sealing a CA challenge",
                source: e.into(),
            })
    }

    fn open(&self, name: &str, field: &str, sealed: &str) -> Result<String, CaError> {
        let raw = self.secrets.open(sealed, &Self::aad(name, field)).map_err(|e| CaError::Internal {
            what: "opening a stored CA challenge",
            source: format!("the stored {field} of CA {name}: {e}").into(),
        })?;
        String::from_utf8(raw).map_err(|e| CaError::Internal {
            what: "reading a stored CA challenge",
            source: format!("the stored {field} of CA {name}: {e}").into(),
        })
    }

    /// Reseal stored challenges under the current key (after `secrets rotate`).
    pub async fn reseal(&self) -> Result<u64, CaError> {
        let mut n = 0;
        for (name, r) in self.store.records(CAS).await? {
            let mut rec: CaRecord = serde_json::from_value(r.value).map_err(StoreError::from)?;
            let mut changed = false;
            for (field, slot) in [("challenge", &mut rec.challenge), ("challenge_url", &mut rec.challenge_url)] {
                if let Some(old) = slot.as_ref().filter(|v| self.secrets.needs_reseal(v)) {
                    let plain = self.open(&name, field, old)?;
                    *slot = Some(self.seal(&name, field, &plain)?);
                    changed = true;
                }
            }
            if changed {
                let value = serde_json::to_value(&rec).map_err(StoreError::from)?;
                if self.store.put_record(CAS, &name, value, now(), Some(r.version)).await?.is_some() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    pub async fn list(&self) -> Result<Vec<CaView>, CaError> {
        let mut out = Vec::new();
        for (_, r) in self.store.records(CAS).await? {
            let rec: CaRecord = serde_json::from_value(r.value).map_err(StoreError::from)?;
            out.push(view(&rec));
        }
        Ok(out)
    }

    pub async fn show(&self, name: &str) -> Result<CaView, CaError> {
        Ok(view(&self.get(name).await?.0))
    }

    pub async fn exists(&self, name: &str) -> Result<bool, CaError> {
        Ok(self.store.record(CAS, name).await?.is_some())
    }

    pub async fn remove(&self, name: &str) -> Result<(), CaError> {
        if !self.store.delete_record(CAS, name, None).await? {
            return Err(CaError::NotFound(format!("no organisation CA {name}")));
        }
        tracing::info!(ca = %name, "organisation CA removed");
        Ok(())
    }

    /// The CA's challenge for one install: the static one, or a fresh one
    /// from its challenge URL. Never logged.
    pub async fn challenge(&self, name: &str) -> Result<String, CaError> {
        let (rec, _) = self.get(name).await?;
        if let Some(s) = &rec.challenge {
            return self.open(name, "challenge", s);
        }
        let sealed = rec
            .challenge_url
            .as_deref()
            .ok_or_else(|| CaError::Upstream(format!("CA {name} has no challenge")))?;
        let url = self.open(name, "challenge_url", sealed)?;
        let resp = self.http.get(&url).send().await.map_err(|e| upstream(e, "challenge URL"))?;
        if !resp.status().is_success() {
            return Err(CaError::Upstream(format!("challenge URL: HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| upstream(e, "challenge URL"))?;
        parse_challenge_page(&body).map_err(|e| CaError::Upstream(format!("challenge URL of CA {name}: {e}")))
    }

    /// The proxy URL for a token.
    pub fn proxy_url(&self, ca: &str, token: &str) -> String {
        format!("{}/scep-proxy/{ca}/{token}", self.cfg.public_url)
    }

    /// Forward one SCEP request for a valid token. The token is checked
    /// before anything is sent to the CA.
    pub async fn proxy(&self, ca: &str, token: &str, query: &str, post: Option<(String, Vec<u8>)>) -> Result<Proxied, CaError> {
        let hash = sha256_hex(token);
        let secret = self
            .store
            .secret(SecretKind::ScepProxy, &hash)
            .await?
            .ok_or_else(|| CaError::Forbidden("unknown SCEP proxy token".into()))?;
        if secret.used_at.is_some() {
            return Err(CaError::Forbidden(
                "this SCEP proxy token was already used for a certificate".into(),
            ));
        }
        if secret.expires_at <= now() {
            return Err(CaError::Forbidden("this SCEP proxy token has expired".into()));
        }
        if purpose_ca(&secret.purpose) != Some(ca) {
            return Err(CaError::Forbidden("this SCEP proxy token is for another CA".into()));
        }
        let operation = url_param(query, "operation").unwrap_or_default();
        if !matches!(operation.as_str(), "GetCACaps" | "GetCACert" | "PKIOperation" | "GetNextCACert") {
            return Err(CaError::Invalid(format!("unsupported SCEP operation {operation:?}")));
        }
        let (rec, _) = self.get(ca).await.map_err(|e| match e {
            CaError::NotFound(_) => CaError::Forbidden(format!("organisation CA {ca} is no longer configured")),
            e => e,
        })?;
        let url = if query.is_empty() {
            rec.scep_url.clone()
        } else {
            format!("{}?{query}", rec.scep_url)
        };
        let req = match post {
            Some((ct, body)) => self.http.post(&url).header(reqwest::header::CONTENT_TYPE, ct).body(body),
            None => self.http.get(&url),
        };
        let resp = req.send().await.map_err(|e| upstream(e, "SCEP proxy"))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let body = resp.bytes().await.map_err(|e| upstream(e, "SCEP proxy"))?.to_vec();
        if status >= 500 {
            return Err(CaError::Upstream(format!("the CA answered HTTP {status}")));
        }
        if operation == "PKIOperation" && (200..300).contains(&status) && cert_rep_success(&body) {
            self.store.consume_secret(SecretKind::ScepProxy, &hash, now()).await?;
            tracing::info!(
                ca,
                enrollment = secret.enrollment.as_deref().unwrap_or(""),
                "certificate returned through the SCEP proxy; token used"
            );
        }
        Ok(Proxied {
            status,
            content_type,
            body,
        })
    }

    /// The organisation CAs' certificates (name, CA certificate), to match a
    /// device's certificates against.
    async fn issuers(&self) -> Result<Vec<(String, X509)>, CaError> {
        let mut out = Vec::new();
        for (_, r) in self.store.records(CAS).await? {
            let rec: CaRecord = serde_json::from_value(r.value).map_err(StoreError::from)?;
            for b in &rec.chain {
                if let Some(c) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b)
                    .ok()
                    .and_then(|d| X509::from_der(&d).ok())
                {
                    out.push((rec.name.clone(), c));
                }
            }
        }
        Ok(out)
    }

    /// Record the certificates in a CertificateList answer that an
    /// organisation CA issued. `profile_for(ca)` names the profile that
    /// brought them. Returns how many were new.
    pub async fn learn_certificates(
        &self,
        enrollment: &str,
        certs: Vec<Vec<u8>>,
        profile_for: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    ) -> Result<usize, CaError> {
        if certs.is_empty() {
            return Ok(0);
        }
        let issuers = self.issuers().await?;
        if issuers.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        for der in certs {
            let Ok(c) = X509::from_der(&der) else { continue };
            let found = issuers.iter().find(|(_, ca)| {
                ca.subject_name().try_cmp(c.issuer_name()).is_ok_and(|o| o.is_eq())
                    && ca.public_key().is_ok_and(|k| c.verify(&k).unwrap_or(false))
                    && ca.to_der().ok() != Some(der.clone())
            });
            // A failed verification leaves entries on the thread's error queue.
            let _ = openssl::error::ErrorStack::get();
            let Some((ca, _)) = found else {
                continue;
            };
            let v = cert_view(&c);
            let key = format!("{ca}/{}", v.serial);
            if self.store.record(ORG_CERTS, &key).await?.is_some() {
                continue;
            }
            let rec = OrgCert {
                ca: ca.clone(),
                enrollment: enrollment.to_owned(),
                profile: profile_for(ca),
                serial: v.serial,
                subject: v.subject,
                sha256: v.sha256,
                not_before: v.not_before,
                not_after: v.not_after,
                learned_at: now(),
                renewal_queued_at: None,
            };
            let value = serde_json::to_value(&rec).map_err(StoreError::from)?;
            if self.store.put_record(ORG_CERTS, &key, value, now(), Some(0)).await?.is_some() {
                tracing::info!(ca = %rec.ca, enrollment, serial = %rec.serial, profile = rec.profile.as_deref().unwrap_or(""), "organisation certificate recorded");
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every recorded organisation certificate (optionally of one enrollment).
    pub async fn certificates(&self, enrollment: Option<&str>) -> Result<Vec<OrgCert>, CaError> {
        let mut out = Vec::new();
        for (_, r) in self.store.records(ORG_CERTS).await? {
            let c: OrgCert = serde_json::from_value(r.value).map_err(StoreError::from)?;
            if enrollment.is_none_or(|e| e == c.enrollment) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Certificates due for renewal (within `renew_before` of expiry, not yet
    /// renewed, with a profile to re-install).
    pub async fn due_for_renewal(&self, at: i64) -> Result<Vec<OrgCert>, CaError> {
        let horizon = at + self.cfg.renew_before;
        Ok(self
            .certificates(None)
            .await?
            .into_iter()
            .filter(|c| c.not_after <= horizon && c.renewal_queued_at.is_none() && c.profile.is_some())
            .collect())
    }

    pub async fn mark_renewal(&self, c: &OrgCert, at: i64) -> Result<(), CaError> {
        let key = format!("{}/{}", c.ca, c.serial);
        let mut c = c.clone();
        c.renewal_queued_at = Some(at);
        let value = serde_json::to_value(&c).map_err(StoreError::from)?;
        self.store.put_record(ORG_CERTS, &key, value, at, None).await?;
        Ok(())
    }
}

fn view(r: &CaRecord) -> CaView {
    CaView {
        name: r.name.clone(),
        scep_url: r.scep_url.clone(),
        challenge: if r.challenge.is_some() { "static" } else { "url" },
        challenge_url: r.challenge_url_shown.clone(),
        caps: r.caps.clone(),
        chain: r
            .chain
            .iter()
            .filter_map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok())
            .filter_map(|d| X509::from_der(&d).ok())
            .map(|c| cert_view(&c))
            .collect(),
        created_at: r.created_at,
    }
}

/// The certificates (DER) of every organisation CA's chain, as stored (a
/// record that does not read adds nothing): names SCEP subjects may not use.
pub async fn chain_ders(store: &dyn Store) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    for (_, r) in store.records(CAS).await? {
        if let Ok(rec) = serde_json::from_value::<CaRecord>(r.value) {
            out.extend(
                rec.chain
                    .iter()
                    .filter_map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok()),
            );
        }
    }
    Ok(out)
}

/// The purpose of a proxy token: `scep-proxy:<ca>:<profile>`.
pub fn token_purpose(ca: &str, profile: &str) -> String {
    format!("scep-proxy:{ca}:{profile}")
}

fn purpose_ca(p: &str) -> Option<&str> {
    p.strip_prefix("scep-proxy:")?.split(':').next()
}

fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| urlencoding::decode(v).map(|s| s.into_owned()).unwrap_or_default())
    })
}

/// Whether a CertRep says SUCCESS (pkiStatus 0): a certificate is inside.
fn cert_rep_success(body: &[u8]) -> bool {
    let Ok(p7) = Pkcs7::from_der(body) else { return false };
    matches!(
        crate::pki::ossl::signed_attribute(&p7, crate::pki::ossl::nids().pki_status),
        Some(crate::pki::ossl::AttrValue::Printable(s)) if s == "0"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndes_pages_and_plain_challenges() {
        let page = "<HTML><Body>The enrollment challenge password is: <B> 0123ABCD4567EF89 </B><P> This password can be used only once";
        assert_eq!(parse_challenge_page(page.as_bytes()).unwrap(), "0123ABCD4567EF89");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(page.encode_utf16().flat_map(|u| u.to_le_bytes()))
            .collect();
        assert_eq!(parse_challenge_page(&utf16).unwrap(), "0123ABCD4567EF89");
        assert_eq!(parse_challenge_page(b"s3cret\n").unwrap(), "s3cret");
        assert!(parse_challenge_page(b"<html>The password cache is full.</html>").is_err());
        assert!(parse_challenge_page(b"<html>oops</html>").is_err());
        assert!(parse_challenge_page(b"").is_err());
    }

    #[test]
    fn names_and_params() {
        assert!(valid_name("corp-ca.1"));
        assert!(!valid_name("a/b") && !valid_name("") && !valid_name("x y"));
        assert_eq!(url_param("operation=PKIOperation&message=a%2Bb", "message").as_deref(), Some("a+b"));
        assert_eq!(purpose_ca(&token_purpose("corp", "com.x")), Some("corp"));
        assert_eq!(
            without_credentials("https://u:p@ndes.example/certsrv/mscep_admin/"),
            "https://ndes.example/certsrv/mscep_admin/"
        );
    }
}
