//! ACME (RFC 8555): a publicly trusted TLS certificate for mdmd's own names,
//! obtained and renewed with HTTP-01 challenges.
//!
//! The protocol (account, orders, authorizations, JWS signing) is the
//! `instant-acme` crate's; it runs here on our own reqwest client (OpenSSL),
//! so that a test CA's root (`--acme-root`, e.g. Pebble's) can be trusted
//! without a second TLS stack. The certificate key is ECDSA P-256, made
//! here with OpenSSL, and the CSR too.
//!
//! State lives in the store so that several instances share one
//! certificate and any of them answers a challenge:
//! - `acme/account`: the account's credentials (sealed) and its directory;
//! - `acme/certificate`: the chain (PEM) and its key (sealed);
//! - `acme-challenges/<token>`: key authorizations while an order runs.
//!
//! Ordering runs on whichever instance holds the `acme` lease; every
//! instance writes the stored certificate to its own files, where the TLS
//! reloader picks it up without a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509ReqBuilder, X509};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::now;
use crate::pki::secrets::SecretBox;
use crate::store::{Store, StoreError};

const COLLECTION: &str = "acme";
const CHALLENGES: &str = "acme-challenges";
/// A challenge answer is kept this long at most (an order takes seconds).
const CHALLENGE_TTL: i64 = 3600;
/// After a failed order, wait this long (doubling per failure, up to a day).
const FIRST_BACKOFF: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME: {0}")]
    Protocol(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("writing the certificate: {0}")]
    Io(String),
}

impl From<instant_acme::Error> for AcmeError {
    fn from(e: instant_acme::Error) -> Self {
        AcmeError::Protocol(e.to_string())
    }
}

impl From<openssl::error::ErrorStack> for AcmeError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        AcmeError::Invalid(format!("OpenSSL: {e}"))
    }
}

pub struct AcmeConfig {
    pub domains: Vec<String>,
    pub directory: String,
    pub contacts: Vec<String>,
    /// A root (PEM) to trust for the directory's HTTPS besides the system's.
    pub root: Option<Vec<u8>>,
    /// Renew this many seconds before expiry.
    pub renew_before: i64,
    /// Where this instance serves the certificate from.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// The stored certificate.
#[derive(Serialize, Deserialize, Clone)]
struct StoredCert {
    domains: Vec<String>,
    directory: String,
    chain_pem: String,
    key_sealed: String,
    serial: String,
    not_after: i64,
    issued_at: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials_sealed: String,
}

/// What the last attempts did (this instance's view), for `/v1/acme` and health.
#[derive(Default, Clone, Serialize)]
pub struct AcmeState {
    pub last_attempt: Option<i64>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub next_attempt: i64,
    pub issued: u64,
}

pub struct Acme {
    store: Arc<dyn Store>,
    secrets: Arc<SecretBox>,
    cfg: AcmeConfig,
    http: reqwest::Client,
    state: Mutex<AcmeState>,
    force: AtomicBool,
    /// One order at a time on this instance.
    ordering: tokio::sync::Mutex<()>,
}

/// instant-acme's HTTP over reqwest (OpenSSL TLS, our trust roots).
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let method =
                reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut r = client.request(method, parts.uri.to_string()).body(body);
            for (k, v) in parts.headers.iter() {
                r = r.header(k.as_str(), v.as_bytes());
            }
            let resp = r.send().await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut out = http::Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers().iter() {
                out = out.header(k.as_str(), v.as_bytes());
            }
            let bytes = resp.bytes().await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let out = out
                .body(http_body_util::Full::new(bytes))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(out))
        })
    }
}

impl Acme {
    pub fn new(store: Arc<dyn Store>, secrets: Arc<SecretBox>, cfg: AcmeConfig) -> Result<Acme, AcmeError> {
        if cfg.domains.is_empty() {
            return Err(AcmeError::Invalid("no --acme-domain".into()));
        }
        for d in &cfg.domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.parse::<std::net::IpAddr>().is_err()
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
                        && !l.starts_with('-')
                });
            if !ok {
                return Err(AcmeError::Invalid(format!("--acme-domain {d:?}: a DNS name")));
            }
        }
        if !cfg.directory.starts_with("https://") {
            return Err(AcmeError::Invalid(format!("--acme-directory {:?}: an https URL", cfg.directory)));
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("mdmd/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30));
        if let Some(pem) = &cfg.root {
            for c in X509::stack_from_pem(pem).map_err(|e| AcmeError::Invalid(format!("--acme-root: {e}")))? {
                let der = c.to_der()?;
                let cert = reqwest::Certificate::from_der(&der).map_err(|e| AcmeError::Invalid(format!("--acme-root: {e}")))?;
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| AcmeError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Acme {
            store,
            secrets,
            cfg,
            http,
            state: Mutex::new(AcmeState::default()),
            force: AtomicBool::new(false),
            ordering: tokio::sync::Mutex::new(()),
        })
    }

    pub fn domains(&self) -> &[String] {
        &self.cfg.domains
    }

    /// The key authorization for an HTTP-01 token, if an order of ours awaits it.
    pub async fn key_authorization(&self, token: &str) -> Option<String> {
        if token.is_empty() || token.len() > 128 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        let rec = self.store.record(CHALLENGES, token).await.ok()??;
        if rec.value.get("expires").and_then(|v| v.as_i64()).unwrap_or(0) < now() {
            return None;
        }
        rec.value.get("key_authorization").and_then(|v| v.as_str()).map(str::to_owned)
    }

    /// Ask for a new certificate at the next run, whatever the current one's dates.
    pub fn request_renewal(&self) {
        self.force.store(true, Ordering::SeqCst);
        self.state.lock().unwrap_or_else(|p| p.into_inner()).next_attempt = 0;
    }

    async fn stored(&self) -> Result<Option<StoredCert>, AcmeError> {
        match self.store.record(COLLECTION, "certificate").await? {
            Some(r) => Ok(serde_json::from_value(r.value).ok()),
            None => Ok(None),
        }
    }

    /// Why a new certificate is needed now, if it is.
    async fn due(&self) -> Result<Option<String>, AcmeError> {
        if self.force.load(Ordering::SeqCst) {
            return Ok(Some("renewal requested".into()));
        }
        let Some(c) = self.stored().await? else {
            return Ok(Some("no certificate yet".into()));
        };
        let mut want = self.cfg.domains.clone();
        want.sort();
        let mut have = c.domains.clone();
        have.sort();
        if want != have {
            return Ok(Some(format!("the domains changed (had {})", c.domains.join(", "))));
        }
        if c.directory != self.cfg.directory {
            return Ok(Some("the ACME directory changed".into()));
        }
        if c.not_after - now() <= self.cfg.renew_before {
            return Ok(Some("it expires soon".into()));
        }
        Ok(None)
    }

    /// On the lease holder: order a certificate if one is due (and the
    /// backoff after a failure has passed). True when one was issued.
    pub async fn run_once(&self) -> bool {
        let _one = self.ordering.lock().await;
        let t = now();
        if self.state.lock().unwrap_or_else(|p| p.into_inner()).next_attempt > t {
            return false;
        }
        let reason = match self.due().await {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "ACME: cannot read the stored certificate");
                return false;
            }
        };
        tracing::info!(domains = %self.cfg.domains.join(","), directory = %self.cfg.directory, %reason, "ACME: ordering a certificate");
        let result = self.order().await;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last_attempt = Some(t);
        match result {
            Ok(serial) => {
                self.force.store(false, Ordering::SeqCst);
                st.last_error = None;
                st.failures = 0;
                st.next_attempt = 0;
                st.issued += 1;
                tracing::info!(%serial, "ACME: certificate issued");
                crate::metrics::get().acme(true);
                true
            }
            Err(e) => {
                st.failures += 1;
                let wait = (FIRST_BACKOFF << (st.failures - 1).min(10)).min(86_400);
                st.next_attempt = t + wait;
                st.last_error = Some(e.to_string());
                tracing::warn!(error = %e, retry_in_s = wait, "ACME: no certificate");
                crate::metrics::get().acme(false);
                false
            }
        }
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let http = || Box::new(ReqwestHttp(self.http.clone())) as Box<dyn HttpClient>;
        if let Some(r) = self.store.record(COLLECTION, "account").await? {
            if let Ok(a) = serde_json::from_value::<StoredAccount>(r.value) {
                if a.directory == self.cfg.directory {
                    let plain = self
                        .secrets
                        .open(&a.credentials_sealed, "acme.account")
                        .map_err(|e| AcmeError::Invalid(format!("the stored ACME account does not open: {e}")))?;
                    let creds: instant_acme::AccountCredentials =
                        serde_json::from_slice(&plain).map_err(|e| AcmeError::Invalid(format!("the stored ACME account: {e}")))?;
                    return Ok(Account::builder_with_http(http()).from_credentials(creds).await?);
                }
            }
        }
        let contacts: Vec<String> = self.cfg.contacts.iter().map(|c| format!("mailto:{c}")).collect();
        let contact_refs: Vec<&str> = contacts.iter().map(String::as_str).collect();
        let (account, creds) = Account::builder_with_http(http())
            .create(
                &NewAccount {
                    contact: &contact_refs,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.cfg.directory.clone(),
                None,
            )
            .await?;
        let plain = serde_json::to_vec(&creds).map_err(|e| AcmeError::Invalid(e.to_string()))?;
        let sealed = self
            .secrets
            .seal(&plain, "acme.account")
            .map_err(|e| AcmeError::Invalid(format!("sealing the ACME account: {e}")))?;
        let value = serde_json::to_value(StoredAccount {
            directory: self.cfg.directory.clone(),
            credentials_sealed: sealed,
        })
        .map_err(|e| AcmeError::Invalid(e.to_string()))?;
        self.store.put_record(COLLECTION, "account", value, now(), None).await?;
        tracing::info!(account = %account.id(), "ACME: account registered");
        Ok(account)
    }

    /// One order, start to finish: HTTP-01 for every name, CSR, chain.
    async fn order(&self) -> Result<String, AcmeError> {
        let account = self.account().await?;
        let ids: Vec<Identifier> = self.cfg.domains.iter().map(|d| Identifier::Dns(d.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut tokens = Vec::new();
        let result = async {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    s => return Err(AcmeError::Protocol(format!("authorization for {} is {s:?}", a.identifier()))),
                }
                let name = a.identifier().to_string();
                let mut ch = a
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::Protocol(format!("the CA offers no http-01 challenge for {name}")))?;
                let token = ch.token.clone();
                let ka = ch.key_authorization();
                let value = json!({"key_authorization": ka.as_str(), "expires": now() + CHALLENGE_TTL, "domain": name});
                self.store.put_record(CHALLENGES, &token, value, now(), None).await?;
                tokens.push(token);
                ch.set_ready().await?;
            }
            let status = order
                .poll_ready(
                    &RetryPolicy::new()
                        .initial_delay(Duration::from_millis(250))
                        .timeout(Duration::from_secs(120)),
                )
                .await?;
            if status != OrderStatus::Ready {
                let why = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_default();
                return Err(AcmeError::Protocol(format!("the order is {status:?} {why}").trim().to_owned()));
            }
            let (key, csr) = self.key_and_csr()?;
            order.finalize_csr(&csr).await?;
            let chain = order
                .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
                .await?;
            Ok((key, chain))
        }
        .await;
        for t in &tokens {
            let _ = self.store.delete_record(CHALLENGES, t, None).await;
        }
        let (key, chain) = result?;
        self.save(key, chain).await
    }

    fn key_and_csr(&self) -> Result<(PKey<openssl::pkey::Private>, Vec<u8>), AcmeError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let mut b = X509ReqBuilder::new()?;
        b.set_pubkey(&key)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, &self.cfg.domains[0])?;
        b.set_subject_name(&name.build())?;
        let mut san = SubjectAlternativeName::new();
        for d in &self.cfg.domains {
            san.dns(d);
        }
        let ext = san.build(&b.x509v3_context(None))?;
        let mut exts = Stack::new()?;
        exts.push(ext)?;
        b.add_extensions(&exts)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok((key, b.build().to_der()?))
    }

    /// Check the chain, store it with its key sealed, return the serial.
    async fn save(&self, key: PKey<openssl::pkey::Private>, chain_pem: String) -> Result<String, AcmeError> {
        let certs =
            X509::stack_from_pem(chain_pem.as_bytes()).map_err(|e| AcmeError::Protocol(format!("the CA's chain is not PEM: {e}")))?;
        let leaf = certs
            .first()
            .ok_or_else(|| AcmeError::Protocol("the CA sent no certificate".into()))?;
        if !leaf.public_key()?.public_eq(&key) {
            return Err(AcmeError::Protocol("the certificate is not for our key".into()));
        }
        let serial = leaf.serial_number().to_bn()?.to_hex_str()?.to_string();
        let key_pem = key.private_key_to_pem_pkcs8()?;
        let key_sealed = self
            .secrets
            .seal(&key_pem, "acme.certificate")
            .map_err(|e| AcmeError::Invalid(format!("sealing the key: {e}")))?;
        let rec = StoredCert {
            domains: self.cfg.domains.clone(),
            directory: self.cfg.directory.clone(),
            chain_pem,
            key_sealed,
            serial: serial.clone(),
            not_after: crate::pki::asn1_unix(leaf.not_after()),
            issued_at: now(),
        };
        let value = serde_json::to_value(rec).map_err(|e| AcmeError::Invalid(e.to_string()))?;
        self.store.put_record(COLLECTION, "certificate", value, now(), None).await?;
        Ok(serial)
    }

    /// Write the stored certificate to this instance's files if they differ.
    /// True when the files changed (the caller reloads TLS).
    pub async fn install_local(&self) -> Result<bool, AcmeError> {
        let Some(c) = self.stored().await? else {
            return Ok(false);
        };
        if std::fs::read_to_string(&self.cfg.cert_path).ok().as_deref() == Some(c.chain_pem.as_str()) {
            return Ok(false);
        }
        let key_pem = self
            .secrets
            .open(&c.key_sealed, "acme.certificate")
            .map_err(|e| AcmeError::Invalid(format!("the stored key does not open: {e}")))?;
        let write = |path: &std::path::Path, data: &[u8], secret: bool| -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            if secret {
                crate::pki::write_secret(&tmp, data)?;
            } else {
                std::fs::write(&tmp, data)?;
                std::fs::File::open(&tmp)?.sync_all()?;
            }
            std::fs::rename(&tmp, path)
        };
        write(&self.cfg.key_path, &key_pem, true).map_err(|e| AcmeError::Io(format!("{}: {e}", self.cfg.key_path.display())))?;
        write(&self.cfg.cert_path, c.chain_pem.as_bytes(), false)
            .map_err(|e| AcmeError::Io(format!("{}: {e}", self.cfg.cert_path.display())))?;
        tracing::info!(serial = %c.serial, cert = %self.cfg.cert_path.display(), "ACME: certificate installed");
        Ok(true)
    }

    /// For `/v1/acme` and health.
    pub async fn status(&self) -> serde_json::Value {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let cert = self.stored().await.ok().flatten();
        json!({
            "domains": self.cfg.domains,
            "directory": self.cfg.directory,
            "certificate": cert.map(|c| json!({
                "serial": c.serial,
                "domains": c.domains,
                "not_after": crate::clock::json_time(c.not_after),
                "issued_at": crate::clock::json_time(c.issued_at),
                "renew_at": crate::clock::json_time(c.not_after - self.cfg.renew_before),
            })),
            "last_attempt": st.last_attempt.map(crate::clock::json_time),
            "last_error": st.last_error,
            "failures": st.failures,
            "next_attempt": if st.next_attempt > 0 { Some(st.next_attempt) } else { None },
            "renewal_requested": self.force.load(Ordering::SeqCst),
        })
    }

    /// The last failure, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).last_error.clone()
    }
}
