//! API accounts: named credentials with a role, for people and for systems
//! (a NAC such as Cisco ISE polls with a `nac` account). Secrets are shown
//! once and stored as Argon2id hashes (records in the store, so every
//! instance knows every account); a verified secret is remembered in memory
//! for `CACHE_FOR`, so a NAC polling every few seconds costs one hash a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use super::{now, ServiceError};
use crate::store::Store;

const COLLECTION: &str = "accounts";
/// How long a verified secret is trusted without hashing it again (and how
/// long a deleted account may still work on another instance).
pub const CACHE_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Devices, commands, profiles, enrollment; not accounts, keys or certificates.
    Operator,
    /// Reads only.
    ReadOnly,
    /// Network access control: the Cisco ISE API, device and compliance reads, token checks.
    Nac,
    /// A derived-credential provider: posts (and lists) derived credentials, nothing else.
    Issuer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "operator" => Role::Operator,
            "read-only" | "readonly" | "read_only" => Role::ReadOnly,
            "nac" => Role::Nac,
            "issuer" => Role::Issuer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "read-only",
            Role::Nac => "nac",
            Role::Issuer => "issuer",
        }
    }

    /// May this role make this request?
    pub fn allows(self, method: &axum::http::Method, path: &str) -> bool {
        let read = matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
        let ise = path.starts_with("/ciscoise/");
        let verify = path == "/v1/access/verify";
        let sensitive = path.starts_with("/v1/accounts")
            || path.starts_with("/v1/secrets")
            || path.starts_with("/v1/access-tokens")
            || (path.starts_with("/v1/push-cert") && !read)
            || (path.starts_with("/v1/cas") && !read)
            || (path.starts_with("/v1/acme") && !read)
            || (path.starts_with("/v1/derived-credentials") && !read);
        match self {
            Role::Admin => true,
            Role::Operator => !ise && (!sensitive || (read && !path.starts_with("/v1/accounts"))),
            // Reads, but no enrollment material (a profile with a live challenge enrolls a device).
            Role::ReadOnly => {
                !ise && (read || verify)
                    && !path.starts_with("/v1/accounts")
                    && !path.starts_with("/v1/access-tokens")
                    && !path.starts_with("/v1/enrollments")
            }
            Role::Nac => ise || verify || (read && (path.starts_with("/v1/devices") || path == "/v1/compliance")),
            Role::Issuer => path == "/v1/derived-credentials" && (read || *method == axum::http::Method::POST),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    role: Role,
    /// Argon2id, PHC string.
    hash: String,
    created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    /// SHA-256(name NUL secret) -> (role, verified at).
    cache: Mutex<HashMap<[u8; 32], (Role, Instant)>>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n != "admin"
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn cache_key(name: &str, secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>) -> Accounts {
        Accounts {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Create an account; returns its secret (`NAME.RANDOM`), which is not kept.
    pub async fn create(&self, name: &str, role: Role) -> Result<String, ServiceError> {
        if !valid_name(name) {
            return Err(ServiceError::Rejected(format!(
                "account name {name:?}: 1-64 of a-z 0-9 - _ (and not \"admin\", which is the admin key's)"
            )));
        }
        let random: String = {
            use rand::Rng as _;
            let mut r = rand::thread_rng();
            (0..32)
                .map(|_| char::from(b"abcdefghijkmnopqrstuvwxyz23456789"[r.gen_range(0..33)]))
                .collect()
        };
        let secret = format!("{name}.{random}");
        let s2 = secret.clone();
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2::Argon2::default().hash_password(s2.as_bytes(), &salt).map(|h| h.to_string())
        })
        .await
        .map_err(|e| ServiceError::Rejected(e.to_string()))?
        .map_err(|e| ServiceError::Rejected(format!("hashing: {e}")))?;
        let rec = Stored {
            role,
            hash,
            created_at: now(),
        };
        let value = serde_json::to_value(&rec).map_err(crate::store::StoreError::from)?;
        match self.store.put_record(COLLECTION, name, value, now(), Some(0)).await? {
            Some(_) => Ok(secret),
            None => Err(ServiceError::Rejected(format!("account {name} exists (delete it first)"))),
        }
    }

    pub async fn list(&self) -> Result<Vec<AccountView>, ServiceError> {
        let mut out = Vec::new();
        for (name, r) in self.store.records(COLLECTION).await? {
            if let Ok(s) = serde_json::from_value::<Stored>(r.value) {
                out.push(AccountView {
                    name,
                    role: s.role,
                    created_at: s.created_at,
                });
            }
        }
        Ok(out)
    }

    /// An account's role and creation time, if it exists (a re-created account is another one).
    pub async fn current(&self, name: &str) -> Result<Option<(Role, i64)>, ServiceError> {
        let Some(r) = self.store.record(COLLECTION, name).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_value::<Stored>(r.value).ok().map(|s| (s.role, s.created_at)))
    }

    pub async fn delete(&self, name: &str) -> Result<bool, ServiceError> {
        let gone = self.store.delete_record(COLLECTION, name, None).await?;
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
        Ok(gone)
    }

    /// The account's role if `secret` is its secret; None if not (or no such account).
    pub async fn verify(&self, name: &str, secret: &str) -> Result<Option<Role>, ServiceError> {
        let key = cache_key(name, secret);
        if let Ok(c) = self.cache.lock() {
            if let Some((role, at)) = c.get(&key) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(Some(*role));
                }
            }
        }
        let Some(r) = self.store.record(COLLECTION, name).await? else {
            return Ok(None);
        };
        let Ok(stored) = serde_json::from_value::<Stored>(r.value) else {
            return Ok(None);
        };
        let secret = secret.to_owned();
        let hash = stored.hash.clone();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Ok(None);
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
            }
            c.insert(key, (stored.role, Instant::now()));
        }
        Ok(Some(stored.role))
    }
}

#[cfg(test)]
mod tests {
    use super::Role;
    use axum::http::Method;

    #[test]
    fn roles() {
        let g = Method::GET;
        let p = Method::POST;
        assert!(Role::Admin.allows(&p, "/v1/accounts"));
        assert!(!Role::Operator.allows(&p, "/v1/accounts"));
        assert!(!Role::Operator.allows(&g, "/v1/accounts"));
        assert!(Role::Operator.allows(&p, "/v1/commands"));
        assert!(!Role::Operator.allows(&Method::PUT, "/v1/push-cert"));
        assert!(Role::Operator.allows(&g, "/v1/push-cert"));
        assert!(Role::ReadOnly.allows(&g, "/v1/devices"));
        assert!(!Role::ReadOnly.allows(&p, "/v1/commands"));
        // Enrollment material (a profile with a live challenge) is not a read.
        assert!(!Role::ReadOnly.allows(&g, "/v1/enrollments/profile"));
        assert!(!Role::Nac.allows(&g, "/v1/enrollments/profile"));
        assert!(Role::Operator.allows(&g, "/v1/enrollments/profile"));
        assert!(!Role::ReadOnly.allows(&g, "/ciscoise/mdminfo/"));
        assert!(Role::Nac.allows(&g, "/ciscoise/mdminfo/"));
        assert!(Role::Nac.allows(&p, "/ciscoise/mdm/api/v3/action/pinlock"));
        assert!(Role::Nac.allows(&g, "/v1/devices"));
        assert!(!Role::Nac.allows(&p, "/v1/commands"));
        assert!(!Role::Nac.allows(&g, "/v1/certificates"));
    }
}
