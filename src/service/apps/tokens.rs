//! Apps and Books content tokens: the sToken file of each location, stored
//! sealed (the whole text is the secret: Apple takes it as the Bearer), the
//! location Apple says it belongs to, expiry warnings, and a client per token.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::{read, update, Apps, AppsFailure, EXPIRY_WARNING, TOKENS};
use crate::clock::{now, rfc3339};
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::vpp::{ContentToken, VppClient, VppError};

/// The AAD a content token is sealed under.
fn token_aad(name: &str) -> String {
    format!("vpp-token:{name}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The sToken text, sealed.
    pub sealed: String,
    pub org_name: String,
    pub expires_at: i64,
    pub uploaded_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Apple's id of the location's library (`uId`): a replacement must be the same location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Apple's content metadata lookup URL (from `/service/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<i64>,
}

impl Apps {
    /// Store a content token file (replacing a token of the same name). The
    /// token is checked with Apple (`/client/config`) before it is kept: a
    /// token Apple refuses changes nothing.
    pub async fn put_token(&self, name: &str, file: &[u8]) -> Result<Json, AppsFailure> {
        if !crate::service::fleet::valid_name(name) {
            return Err(AppsFailure::Invalid(format!(
                "{:?} is not a token name (letters, digits, '.', '-', '_'; at most 64)",
                crate::outbound::bounded(name, 80)
            )));
        }
        let token = ContentToken::parse(file).map_err(|e| AppsFailure::Invalid(e.to_string()))?;
        if token.expired(now()) {
            return Err(AppsFailure::Invalid(format!(
                "this content token expired at {}: download a new one from Apple Business Manager (Preferences → Payments and Billing)",
                rfc3339(token.expires_at).unwrap_or_default()
            )));
        }
        let client = VppClient::new(&self.cfg.url, token.clone(), self.http.clone())?;
        let config = client.config().await.map_err(|e| match e {
            VppError::TokenRejected(_) => AppsFailure::Invalid(e.to_string()),
            other => AppsFailure::Apple(other),
        })?;
        if let Some((old, _)) = self.token_record(name).await? {
            let another = matches!((&old.uid, &config.uid), (Some(a), Some(b)) if a != b);
            let used = self.apps_of_token(name).await? > 0
                || !super::with_prefix::<Json>(self.store.as_ref(), super::LICENCES, &format!("{name}/"))
                    .await?
                    .is_empty();
            if another && used {
                return Err(AppsFailure::Conflict(format!(
                    "this token is for another location ({}) than the one token {name} holds licences in: upload it under another name",
                    config.location_name.as_deref().unwrap_or("unnamed")
                )));
            }
        }
        let lookup_url = match client.service_config().await {
            Ok(s) => s.content_metadata_lookup,
            Err(e) => {
                tracing::warn!(token = %name, error = %e, "Apps and Books service config not read; app names come from the admin");
                None
            }
        };
        let sealed = self
            .secrets
            .seal(token.stoken.as_bytes(), &token_aad(name))
            .map_err(|e| ServiceError::internal("sealing the content token", e))?;
        let rec = TokenRecord {
            sealed,
            org_name: token.org_name.clone(),
            expires_at: token.expires_at,
            uploaded_at: now(),
            location: config.location_name.clone(),
            country: config.country.clone(),
            uid: config.uid.clone(),
            lookup_url,
            synced_at: None,
            last_error: None,
            last_error_at: None,
        };
        self.store.put_record(TOKENS, name, super::to_json(&rec), now(), None).await?;
        if let Ok(mut m) = self.clients.lock() {
            m.remove(name);
        }
        tracing::info!(token = %name, org = %token.org_name, location = ?config.location_name, "Apps and Books content token stored");
        Ok(self.token_view(name).await?.unwrap_or(Json::Null))
    }

    pub(crate) async fn token_record(&self, name: &str) -> Result<Option<(TokenRecord, u64)>, StoreError> {
        read(self.store.as_ref(), TOKENS, name).await
    }

    /// A client for a token, kept while the token is the same.
    pub(crate) async fn client(&self, name: &str) -> Result<Arc<VppClient>, AppsFailure> {
        let (rec, _) = self
            .token_record(name)
            .await?
            .ok_or_else(|| AppsFailure::NotFound(format!("no Apps and Books content token {name}")))?;
        if let Ok(map) = self.clients.lock() {
            if let Some((sealed, c)) = map.get(name) {
                if *sealed == rec.sealed {
                    return Ok(c.clone());
                }
            }
        }
        let plain = self
            .secrets
            .open(&rec.sealed, &token_aad(name))
            .map_err(|e| ServiceError::internal("opening the stored content token", e))?;
        let token = ContentToken::parse(&plain).map_err(|e| ServiceError::internal("the stored content token is corrupt", e))?;
        let c = Arc::new(VppClient::new(&self.cfg.url, token, self.http.clone())?);
        if let Ok(mut map) = self.clients.lock() {
            map.insert(name.to_owned(), (rec.sealed.clone(), c.clone()));
        }
        Ok(c)
    }

    /// Record a failure on the token (shown in health and the console).
    pub(crate) async fn note_token_error(&self, name: &str, error: Option<&str>) {
        let e: Option<String> = error.map(|e| e.chars().take(500).collect());
        let t = now();
        let _ = update::<TokenRecord>(self.store.as_ref(), TOKENS, name, |r| {
            r.last_error = e.clone();
            r.last_error_at = e.as_ref().map(|_| t);
            if e.is_none() {
                r.synced_at = Some(t);
            }
        })
        .await;
    }

    fn token_json(name: &str, r: &TokenRecord, apps: usize) -> Json {
        let t = now();
        json!({
            "name": name,
            "org_name": r.org_name,
            "location": r.location,
            "country": r.country,
            "expires_at": rfc3339(r.expires_at),
            "expired": r.expires_at <= t,
            "expires_soon": r.expires_at > t && r.expires_at - t < EXPIRY_WARNING,
            "uploaded_at": rfc3339(r.uploaded_at),
            "synced_at": r.synced_at.and_then(rfc3339),
            "last_error": r.last_error,
            "last_error_at": r.last_error_at.and_then(rfc3339),
            "apps": apps,
        })
    }

    async fn apps_of_token(&self, name: &str) -> Result<usize, StoreError> {
        Ok(self.catalog().await?.iter().filter(|a| a.token.as_deref() == Some(name)).count())
    }

    pub async fn token_view(&self, name: &str) -> Result<Option<Json>, StoreError> {
        let Some((r, _)) = self.token_record(name).await? else {
            return Ok(None);
        };
        let n = self.apps_of_token(name).await?;
        Ok(Some(Self::token_json(name, &r, n)))
    }

    pub async fn tokens(&self) -> Result<Vec<Json>, StoreError> {
        let apps = self.catalog().await?;
        let mut out = Vec::new();
        for (name, r) in self.store.records(TOKENS).await? {
            let Ok(rec) = serde_json::from_value::<TokenRecord>(r.value) else {
                continue;
            };
            let n = apps.iter().filter(|a| a.token.as_deref() == Some(name.as_str())).count();
            out.push(Self::token_json(&name, &rec, n));
        }
        Ok(out)
    }

    /// The names of every token.
    pub(crate) async fn token_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.store.records(TOKENS).await?.into_iter().map(|(k, _)| k).collect())
    }

    /// Forget a token. Refused while catalog apps take their licences from it.
    pub async fn delete_token(&self, name: &str) -> Result<bool, AppsFailure> {
        let n = self.apps_of_token(name).await?;
        if n > 0 {
            return Err(AppsFailure::Conflict(format!(
                "{n} catalog app(s) take their licences from token {name}: remove them first (mdmd apps rm)"
            )));
        }
        let held = super::with_prefix::<Json>(self.store.as_ref(), super::LICENCES, &format!("{name}/"))
            .await?
            .len();
        if held > 0 {
            return Err(AppsFailure::Conflict(format!(
                "{held} licence(s) mdmd assigned with token {name} are still held: `mdmd apps sync` releases those of devices that left"
            )));
        }
        if let Ok(mut m) = self.clients.lock() {
            m.remove(name);
        }
        Ok(self.store.delete_record(TOKENS, name, None).await?)
    }

    pub(crate) async fn token_problems(&self) -> Vec<String> {
        let Ok(all) = self.store.records(TOKENS).await else {
            return vec!["Apps and Books: the content tokens could not be read".into()];
        };
        let t = now();
        let mut out = Vec::new();
        for (name, r) in all {
            let Ok(rec) = serde_json::from_value::<TokenRecord>(r.value) else {
                continue;
            };
            out.extend(crate::outbound::expiry_problem(
                &format!("Apps and Books content token {name}"),
                "download a new one from Apple Business Manager and upload it (mdmd apps tokens add)",
                rec.expires_at,
                t,
                EXPIRY_WARNING,
            ));
            if let Some(e) = &rec.last_error {
                out.push(format!("Apps and Books content token {name}: {e}"));
            }
        }
        out
    }
}
