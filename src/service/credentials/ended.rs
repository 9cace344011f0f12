//! Derived credentials that ended: revoked (by the provider through the
//! API, or as their CRL or OCSP responder says) or expired. An ended
//! credential leaves the active ones (so its profiles wait again) and an
//! audit record in `ENDED` (kept [`RETENTION`]): who or what ended it, why,
//! when. A revoked certificate cannot be posted again (except one merely on
//! hold, `certificateHold`). An admin's `DELETE` stays a plain deletion.

use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use super::derived::{view, CredentialView, Derived, DerivedError, Owner, Stored, CREDENTIALS};
use super::revocation::RevocationCheck;
use crate::clock::now;
use crate::store::StoreError;

pub const ENDED: &str = "derived-ended";
/// Ended records are kept this long (seconds).
pub const RETENTION: i64 = 400 * 86_400;
/// The longest reason a provider may give.
const MAX_REASON: usize = 200;

/// An ended credential, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndedView {
    pub id: String,
    pub owner: Owner,
    pub usage: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[schema(value_type = String, format = DateTime)]
    pub not_before: i64,
    #[schema(value_type = String, format = DateTime)]
    pub not_after: i64,
    pub source: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// `revoked` or `expired`.
    pub status: String,
    #[schema(value_type = String, format = DateTime)]
    pub ended_at: i64,
    /// `account:NAME` (the provider's call), `ocsp URL`, `crl URL` or `expiry`.
    pub by: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The revocation time the CRL or OCSP answer gives.
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// Why a credential ends.
#[derive(Debug, Clone)]
pub struct Ending {
    pub status: &'static str,
    pub by: String,
    pub reason: Option<String>,
    pub revoked_at: Option<String>,
}

impl Ending {
    pub fn expired() -> Ending {
        Ending {
            status: "expired",
            by: "expiry".into(),
            reason: None,
            revoked_at: None,
        }
    }

    pub fn revoked(by: String, reason: Option<String>, revoked_at: Option<String>) -> Ending {
        Ending {
            status: "revoked",
            by,
            reason,
            revoked_at,
        }
    }
}

/// Which credential a revocation names.
#[derive(Debug, Clone)]
pub enum Named {
    Id(String),
    /// The certificate's serial (hex, any case, colons allowed) and
    /// optionally its issuer (as the credential shows it).
    Serial {
        serial: String,
        issuer: Option<String>,
    },
}

/// What a revocation did.
#[derive(Debug)]
pub struct Revoked {
    pub ended: EndedView,
    /// The credential as it was, when this call ended it (None: it had
    /// ended before; nothing more to do).
    pub was_active: Option<CredentialView>,
}

/// Serials as `CertView` writes them: upper-case hex, no leading zeros.
fn normal_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_uppercase();
    let t = hex.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_owned()
    }
}

fn ended_view(s: &Stored, e: &Ending) -> EndedView {
    EndedView {
        id: s.id.clone(),
        owner: s.owner.clone(),
        usage: s.usage.clone(),
        subject: s.subject.clone(),
        issuer: s.issuer.clone(),
        serial: s.serial.clone(),
        not_before: s.not_before,
        not_after: s.not_after,
        source: s.source.clone(),
        created_at: s.created_at,
        status: e.status.to_owned(),
        ended_at: now(),
        by: e.by.clone(),
        reason: e.reason.clone(),
        revoked_at: e.revoked_at.clone(),
    }
}

impl Derived {
    /// The active credentials: (record key, credential).
    pub(super) async fn active(&self) -> Result<Vec<(String, Stored)>, DerivedError> {
        let mut out = Vec::new();
        for (key, r) in self.store.records(CREDENTIALS).await? {
            out.push((key, serde_json::from_value(r.value).map_err(StoreError::from)?));
        }
        Ok(out)
    }

    /// A credential's certificate and the chain that came with it.
    pub(super) fn certificates(&self, key: &str, s: &Stored) -> Result<(X509, Vec<X509>), DerivedError> {
        let decode = |b: &str| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b)
                .ok()
                .and_then(|d| X509::from_der(&d).ok())
        };
        if let Some(cert) = decode(&s.cert) {
            return Ok((cert, s.chain.iter().filter_map(|c| decode(c)).collect()));
        }
        // Stored before certificates were kept beside the PKCS#12.
        let d = self.open(key, s)?;
        crate::pki::ossl::load_providers();
        let p = openssl::pkcs12::Pkcs12::from_der(&d.pkcs12)
            .and_then(|p| p.parse2(&d.password))
            .map_err(|e| DerivedError::internal("reading a stored derived credential", format!("credential {}: {e}", s.id)))?;
        let cert = p.cert.ok_or_else(|| {
            DerivedError::internal(
                "reading a stored derived credential",
                format!("credential {}: no certificate", s.id),
            )
        })?;
        Ok((cert, p.ca.map(|c| c.into_iter().collect()).unwrap_or_default()))
    }

    /// Keep the result of a revocation check with the credential (if it is
    /// still the one at `key`).
    pub(super) async fn record_check(&self, key: &str, id: &str, check: RevocationCheck) -> Result<(), DerivedError> {
        for _ in 0..4 {
            let Some(r) = self.store.record(CREDENTIALS, key).await? else {
                return Ok(());
            };
            let mut s: Stored = serde_json::from_value(r.value).map_err(StoreError::from)?;
            if s.id != id {
                return Ok(());
            }
            s.revocation = Some(check.clone());
            let value = serde_json::to_value(&s).map_err(StoreError::from)?;
            if self
                .store
                .put_record(CREDENTIALS, key, value, now(), Some(r.version))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// End the credential `id` at `key`: an audit record, then it leaves the
    /// active ones. None if it is no longer there (replaced or ended meanwhile).
    pub(super) async fn end(&self, key: &str, id: &str, ending: &Ending) -> Result<Option<(EndedView, CredentialView)>, DerivedError> {
        for _ in 0..8 {
            let Some(r) = self.store.record(CREDENTIALS, key).await? else {
                return Ok(None);
            };
            let s: Stored = serde_json::from_value(r.value).map_err(StoreError::from)?;
            if s.id != id {
                return Ok(None);
            }
            let ended = ended_view(&s, ending);
            let value = serde_json::to_value(&ended).map_err(StoreError::from)?;
            self.store.put_record(ENDED, id, value, now(), None).await?;
            if self.store.delete_record(CREDENTIALS, key, Some(r.version)).await? {
                tracing::info!(
                    id,
                    usage = %s.usage,
                    status = ending.status,
                    by = %ending.by,
                    reason = ending.reason.as_deref().unwrap_or(""),
                    "derived credential ended"
                );
                return Ok(Some((ended, view(&s))));
            }
        }
        Err(DerivedError::Store(StoreError::Db(
            "derived credential: too many concurrent changes".into(),
        )))
    }

    /// The ended credentials, newest first.
    pub async fn ended(&self) -> Result<Vec<EndedView>, DerivedError> {
        let mut out: Vec<EndedView> = Vec::new();
        for (_, r) in self.store.records(ENDED).await? {
            out.push(serde_json::from_value(r.value).map_err(StoreError::from)?);
        }
        out.sort_by(|a, b| b.ended_at.cmp(&a.ended_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The revocation of this certificate, if it was revoked (a hold does
    /// not count: it may be released).
    pub(super) async fn revoked(&self, issuer: &str, serial: &str) -> Result<Option<EndedView>, DerivedError> {
        Ok(self
            .ended()
            .await?
            .into_iter()
            .find(|e| e.status == "revoked" && e.issuer == issuer && e.serial == serial && e.reason.as_deref() != Some("certificateHold")))
    }

    /// Forget ended records older than `before`.
    pub(super) async fn prune_ended(&self, before: i64) -> Result<usize, DerivedError> {
        let mut n = 0;
        for (key, r) in self.store.records(ENDED).await? {
            let old = serde_json::from_value::<EndedView>(r.value).map_or(true, |e| e.ended_at < before);
            if old && self.store.delete_record(ENDED, &key, Some(r.version)).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The provider says a credential is revoked: it ends (status `revoked`,
    /// `by`, the reason given). Revoking one that already ended changes
    /// nothing and says so.
    pub async fn revoke(&self, named: Named, reason: Option<String>, by: String) -> Result<Revoked, DerivedError> {
        let reason = match reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()) {
            Some(r) if r.len() > MAX_REASON || r.chars().any(char::is_control) => {
                return Err(DerivedError::Invalid(format!(
                    "reason: at most {MAX_REASON} characters, no control characters"
                )))
            }
            r => r,
        };
        let matches = |id: &str, issuer: &str, serial: &str| match &named {
            Named::Id(want) => id == want,
            Named::Serial { serial: want, issuer: iss } => {
                normal_serial(serial) == normal_serial(want) && iss.as_deref().is_none_or(|i| i == issuer)
            }
        };
        if let Named::Serial { serial, .. } = &named {
            if serial.is_empty() || serial.len() > 128 || !normal_serial(serial).chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(DerivedError::Invalid("serial: the certificate's serial number in hex".into()));
            }
        }
        let found: Vec<(String, Stored)> = self
            .active()
            .await?
            .into_iter()
            .filter(|(_, s)| matches(&s.id, &s.issuer, &s.serial))
            .collect();
        if found.len() > 1 {
            return Err(DerivedError::Invalid(
                "several credentials have this serial: name the issuer too, or the id".into(),
            ));
        }
        let ending = Ending::revoked(by, reason, None);
        if let Some((key, s)) = found.into_iter().next() {
            if let Some((ended, was)) = self.end(&key, &s.id, &ending).await? {
                return Ok(Revoked {
                    ended,
                    was_active: Some(was),
                });
            }
        }
        // Already ended (or ended just now by someone else).
        match self.ended().await?.into_iter().find(|e| matches(&e.id, &e.issuer, &e.serial)) {
            Some(ended) => Ok(Revoked { ended, was_active: None }),
            None => Err(DerivedError::NotFound(match named {
                Named::Id(id) => format!("no derived credential {id}"),
                Named::Serial { serial, .. } => format!("no derived credential with serial {serial}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn serials_compare_as_numbers_in_hex() {
        assert_eq!(super::normal_serial("00:3f:19:0E"), "3F190E");
        assert_eq!(super::normal_serial("3F190E"), "3F190E");
        assert_eq!(super::normal_serial("00"), "0");
    }
}
