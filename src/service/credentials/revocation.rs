//! Is a derived credential still good? Its certificate's OCSP responders are
//! asked first, then its CRL distribution points; `pki::revocation` reads
//! and verifies the answers against the credential's issuer (from the
//! PKCS#12's chain). Only a verified "revoked" ends a credential; an
//! unreachable, slow, oversized or unverifiable source is a failed check:
//! logged, kept with the credential (`revocation_check`), and nothing is
//! removed.
//!
//! The URLs come from a certificate someone uploaded — an `issuer` account,
//! or the provider's app with a device's upload token — so mdmd fetching
//! them is a request on that someone's behalf (SSRF). The bounds:
//! - `http`/`https` only, no credentials in the URL, no redirects, no proxy
//!   (a direct connection, so the address check below holds);
//! - the address every name resolves to (and an address written in the URL)
//!   must not be loopback, link-local (169.254.0.0/16 — cloud metadata —
//!   and fe80::/10), unspecified, multicast or broadcast, unless a network
//!   in `--derived-revocation-allow` contains it. Private networks are
//!   allowed: an organisation's CA usually publishes there;
//! - a timeout on every request (connect and body), at most
//!   `--derived-crl-max-mb` of CRL and 64 KiB of OCSP response, at most two
//!   URLs of each kind per certificate;
//! - one check per credential per `--derived-revocation-interval`, each CRL
//!   URL fetched once per sweep (shared by the credentials that name it),
//!   an OCSP responder that failed not asked again in the same sweep;
//! - what came back is never shown: only the URL, the HTTP status, or why
//!   the answer was not believed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use openssl::x509::{X509Crl, X509Ref, X509};
use serde::{Deserialize, Serialize};

use crate::pki::revocation::{self as rev, Verdict};

/// The largest OCSP response read.
const MAX_OCSP_BYTES: usize = 64 * 1024;

/// How revocation is checked (flags of `mdmd serve`).
#[derive(Debug, Clone)]
pub struct RevocationConfig {
    /// Ask each credential's sources at most this often (seconds).
    pub every: i64,
    /// Bound on each request, body included.
    pub timeout: Duration,
    pub max_crl_bytes: usize,
    /// Networks allowed besides the default (CIDR, e.g. `127.0.0.1/32`).
    pub allow: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--derived-revocation-allow {0:?}: not a network (CIDR) or address")]
    BadNetwork(String),
    #[error("the HTTP client for revocation checks: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why a source could not be asked or its answer not believed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("not an http(s) URL without credentials")]
    BadUrl,
    #[error("the address {0} is {1}: not reached (--derived-revocation-allow lets it)")]
    Refused(IpAddr, &'static str),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Answer(#[from] rev::RevocationError),
}

impl FetchError {
    /// The source did not answer at all (as opposed to a bad answer).
    fn unreachable(&self) -> bool {
        matches!(self, FetchError::Timeout(_) | FetchError::Transport(_) | FetchError::Refused(..))
    }
}

/// The last check of a credential, kept with it and shown in its view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RevocationCheck {
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: i64,
    /// `good`, `unknown` (the responder does not know it), `failed`
    /// (no source answered usably) or `not checked` (nothing to check with).
    pub status: String,
    /// The source that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed checks in a row.
    #[serde(default)]
    pub failures: u32,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Good {
        via: String,
    },
    Revoked {
        via: String,
        reason: String,
        at: Option<String>,
    },
    Unknown {
        via: String,
    },
    Failed(String),
    /// Nothing to ask, or nothing to verify an answer with.
    NotChecked(String),
}

impl Outcome {
    /// The record of a check that did not end the credential.
    pub fn record(&self, at: i64, previous: Option<&RevocationCheck>) -> RevocationCheck {
        let (status, via, error) = match self {
            Outcome::Good { via } => ("good", Some(via.clone()), None),
            Outcome::Unknown { via } => ("unknown", Some(via.clone()), None),
            Outcome::Failed(e) => ("failed", None, Some(e.clone())),
            Outcome::NotChecked(e) => ("not checked", None, Some(e.clone())),
            Outcome::Revoked { via, reason, .. } => ("revoked", Some(via.clone()), Some(reason.clone())),
        };
        let failures = match self {
            Outcome::Failed(_) => previous.map_or(0, |p| p.failures).saturating_add(1),
            _ => 0,
        };
        RevocationCheck {
            checked_at: at,
            status: status.to_owned(),
            via,
            error,
            failures,
        }
    }
}

/// Shared by the checks of one sweep.
#[derive(Default)]
pub struct Run {
    /// CRLs by (URL, issuer), verified against that issuer.
    crls: HashMap<(String, Vec<u8>), Result<Arc<X509Crl>, String>>,
    /// OCSP responders that did not answer in this sweep.
    dead: HashMap<String, String>,
    /// Requests made in this sweep.
    pub fetches: usize,
    /// The sweep's budget is spent: no more sources are asked.
    pub out_of_time: bool,
}

/// A refused address: why, or None when it may be reached.
fn refused(ip: IpAddr, allow: &[IpNet]) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if allow.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    match ip {
        IpAddr::V4(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V4(a) if a.is_link_local() => Some("link-local (cloud metadata lives there)"),
        IpAddr::V4(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => Some("not a host address"),
        IpAddr::V6(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        IpAddr::V6(a) if a.is_unspecified() || a.is_multicast() => Some("not a host address"),
        _ => None,
    }
}

/// Resolves names, dropping the addresses revocation checks may not reach.
struct Guarded {
    allow: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow = self.allow.clone();
        Box::pin(async move {
            let mut why = None;
            let ok: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| match refused(a.ip(), &allow) {
                    None => true,
                    Some(w) => {
                        why = Some((a.ip(), w));
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = match why {
                    Some((ip, w)) => Box::new(FetchError::Refused(ip, w)),
                    None => format!("{host} has no address").into(),
                };
                return Err(e);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

pub struct Checker {
    http: reqwest::Client,
    allow: Arc<Vec<IpNet>>,
    pub cfg: RevocationConfig,
}

impl Checker {
    pub fn new(cfg: RevocationConfig) -> Result<Checker, SetupError> {
        let mut allow = Vec::new();
        for a in cfg.allow.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            let net = a
                .parse::<IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| SetupError::BadNetwork(a.to_owned()))?;
            allow.push(net);
        }
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Guarded { allow: allow.clone() }))
            .build()?;
        Ok(Checker { http, allow, cfg })
    }

    /// Is a credential last checked at `last` due at `now`?
    pub fn due(&self, last: Option<i64>, now: i64) -> bool {
        last.is_none_or(|l| l + self.cfg.every <= now)
    }

    fn error(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            return FetchError::Timeout(self.cfg.timeout.as_secs());
        }
        // A refused address comes back from the resolver inside the error chain.
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(FetchError::Refused(ip, why)) = s.downcast_ref::<FetchError>() {
                return FetchError::Refused(*ip, why);
            }
            src = s.source();
        }
        let e = e.without_url();
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            text = format!("{text}: {s}");
            src = s.source();
        }
        FetchError::Transport(crate::outbound::bounded(&text, 300).to_owned())
    }

    /// GET (or POST an OCSP request to) `url`, reading at most `max` bytes.
    async fn fetch(&self, url: &str, ocsp: Option<Vec<u8>>, max: usize) -> Result<Vec<u8>, FetchError> {
        let u = reqwest::Url::parse(url.trim()).map_err(|_| FetchError::BadUrl)?;
        if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() || u.password().is_some() {
            return Err(FetchError::BadUrl);
        }
        // An address in the URL is not resolved, so it is checked here.
        let host = u.host_str().ok_or(FetchError::BadUrl)?;
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            check_literal(ip, &self.allow)?;
        }
        let req = match ocsp {
            Some(body) => self
                .http
                .post(u)
                .header(reqwest::header::CONTENT_TYPE, "application/ocsp-request")
                .header(reqwest::header::ACCEPT, "application/ocsp-response")
                .body(body),
            None => self.http.get(u),
        };
        let mut resp = req.send().await.map_err(|e| self.error(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(FetchError::TooLarge(max));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.error(e))? {
            if out.len() + chunk.len() > max {
                return Err(FetchError::TooLarge(max));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn ask_ocsp(&self, url: &str, cert: &X509Ref, issuer: &X509Ref) -> Result<Verdict, FetchError> {
        let req = rev::ocsp_request(cert, issuer)?;
        let body = self.fetch(url, Some(req), MAX_OCSP_BYTES).await?;
        Ok(rev::ocsp_verdict(&body, cert, issuer)?)
    }

    async fn issuers_crl(&self, url: &str, issuer: &X509Ref) -> Result<X509Crl, FetchError> {
        let body = self.fetch(url, None, self.cfg.max_crl_bytes).await?;
        Ok(rev::issuers_crl(&body, issuer)?)
    }

    /// Ask a certificate's sources: OCSP first, then CRLs. `chain` is what
    /// came with it (its issuer must be there to verify the answers).
    pub async fn check(&self, cert: &X509, chain: &[X509], run: &mut Run, now: i64) -> Outcome {
        let sources = rev::sources(cert);
        if sources.is_empty() {
            return Outcome::NotChecked("the certificate names no OCSP responder or CRL (http)".into());
        }
        let Some(issuer) = rev::issuer_of(cert, chain) else {
            return Outcome::NotChecked("the PKCS#12 holds no issuer certificate to verify CRL or OCSP answers with".into());
        };
        let mut errors = Vec::new();
        let mut unknown = None;
        for url in &sources.ocsp {
            if let Some(e) = run.dead.get(url) {
                errors.push(format!("OCSP {url}: {e}"));
                continue;
            }
            run.fetches += 1;
            match self.ask_ocsp(url, cert, issuer).await {
                Ok(Verdict::Good) => {
                    return Outcome::Good {
                        via: format!("ocsp {url}"),
                    }
                }
                Ok(Verdict::Revoked { reason, at }) => {
                    return Outcome::Revoked {
                        via: format!("ocsp {url}"),
                        reason,
                        at,
                    }
                }
                Ok(Verdict::Unknown) => unknown = Some(format!("ocsp {url}")),
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "derived credential: OCSP check failed");
                    if e.unreachable() {
                        run.dead.insert(url.clone(), e.to_string());
                    }
                    errors.push(format!("OCSP {url}: {e}"));
                }
            }
        }
        let key = issuer.to_der().unwrap_or_default();
        for url in &sources.crl {
            let k = (url.clone(), key.clone());
            if !run.crls.contains_key(&k) {
                run.fetches += 1;
                let got = self.issuers_crl(url, issuer).await.map(Arc::new).map_err(|e| {
                    tracing::warn!(url = %url, error = %e, "derived credential: CRL not usable");
                    e.to_string()
                });
                run.crls.insert(k.clone(), got);
            }
            match run.crls.get(&k) {
                Some(Ok(crl)) => match rev::crl_verdict(crl, cert, now) {
                    Ok(Verdict::Revoked { reason, at }) => {
                        return Outcome::Revoked {
                            via: format!("crl {url}"),
                            reason,
                            at,
                        }
                    }
                    Ok(_) => return Outcome::Good { via: format!("crl {url}") },
                    Err(e) => errors.push(format!("CRL {url}: {e}")),
                },
                Some(Err(e)) => errors.push(format!("CRL {url}: {e}")),
                None => {}
            }
        }
        match unknown {
            Some(via) => Outcome::Unknown { via },
            None => Outcome::Failed(errors.join("; ")),
        }
    }
}

fn check_literal(ip: IpAddr, allow: &[IpNet]) -> Result<(), FetchError> {
    match refused(ip, allow) {
        Some(why) => Err(FetchError::Refused(ip, why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_are_refused_unless_allowed() {
        let none: Vec<IpNet> = Vec::new();
        for (ip, bad) in [
            ("127.0.0.1", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("255.255.255.255", true),
            ("224.0.0.1", true),
            ("::1", true),
            ("fe80::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("10.1.2.3", false),
            ("192.168.1.1", false),
            ("8.8.8.8", false),
            ("2001:db8::1", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refused(ip, &none).is_some(), bad, "{ip}");
        }
        let allow = vec!["127.0.0.0/8".parse::<IpNet>().unwrap()];
        assert!(refused("127.0.0.1".parse().unwrap(), &allow).is_none());
        assert!(refused("::ffff:127.0.0.1".parse().unwrap(), &allow).is_none());
        assert!(refused("169.254.169.254".parse().unwrap(), &allow).is_some());
    }

    #[test]
    fn bad_allow_networks_are_refused_at_start() {
        let cfg = |a: &str| RevocationConfig {
            every: 3600,
            timeout: Duration::from_secs(5),
            max_crl_bytes: 1 << 20,
            allow: vec![a.to_owned()],
        };
        assert!(Checker::new(cfg("127.0.0.1")).is_ok());
        assert!(Checker::new(cfg("10.0.0.0/8")).is_ok());
        assert!(matches!(Checker::new(cfg("ten")), Err(SetupError::BadNetwork(_))));
    }

    #[tokio::test]
    async fn urls_are_checked_before_anything_is_sent() {
        let c = Checker::new(RevocationConfig {
            every: 3600,
            timeout: Duration::from_secs(2),
            max_crl_bytes: 1 << 20,
            allow: Vec::new(),
        })
        .unwrap();
        for u in ["ftp://x.example/crl", "http://u:p@x.example/crl", "file:///etc/passwd", "nonsense"] {
            assert!(matches!(c.fetch(u, None, 10).await, Err(FetchError::BadUrl)), "{u}");
        }
        for u in [
            "http://127.0.0.1:9/crl",
            "http://[::1]:9/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            assert!(matches!(c.fetch(u, None, 10).await, Err(FetchError::Refused(..))), "{u}");
        }
        // A name that resolves to loopback is refused by the resolver.
        let e = c.fetch("http://localhost:9/crl", None, 10).await.unwrap_err();
        assert!(matches!(e, FetchError::Refused(..)), "{e}");
    }
}
