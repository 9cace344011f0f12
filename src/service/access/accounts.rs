//! API accounts: named credentials with a role, for people and for systems
//! (a NAC such as Cisco ISE polls with a `nac` account). Secrets are shown
//! once and stored hashed (records in the store, so every instance knows
//! every account).
//!
//! Secrets are generated here (`NAME.` + 32 random characters, ~160 bits), never
//! chosen by people, so a slow password hash buys nothing: new secrets are
//! stored as `sha256:<hex>` and checked in constant time, which costs the same
//! microseconds for a known name, an unknown name and a wrong secret (no timing
//! oracle, no memory per attempt). Older records hold Argon2id hashes: those are
//! still verified, at most `hash_permits` at a time (19 MiB each), and upgraded to
//! SHA-256 on the first success. A verified secret is remembered for `CACHE_FOR`;
//! a secret found wrong is remembered too (bounded), so repeating it costs no hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::clock::now;
use crate::service::ServiceError;
use crate::store::Store;

const COLLECTION: &str = "accounts";
/// How long a verified secret is trusted without hashing it again (and how
/// long a deleted account may still work on another instance).
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// How long a secret found wrong is remembered (no hash for it again meanwhile).
const WRONG_FOR: Duration = Duration::from_secs(600);
/// Entries of each cache.
const CACHE_MAX: usize = 10_000;
/// The prefix of a stored SHA-256 secret hash.
const SHA256_PREFIX: &str = "sha256:";

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

    /// May this role do `action` in `area`? (Which area an API route is:
    /// `api::permissions`.)
    pub fn allows(self, area: Area, action: Action) -> bool {
        use Area::*;
        let read = action == Action::Read;
        let sensitive = match area {
            Accounts | Secrets | AccessTokens => true,
            PushCert | Cas | AdeTokens | AppTokens | Acme | DerivedCredentials | DerivedCredential => !read,
            _ => false,
        };
        match self {
            Role::Admin => true,
            Role::Operator => area != Ise && (!sensitive || (read && area != Accounts)),
            // Reads, but no enrollment material (a profile with a live challenge enrolls a device).
            Role::ReadOnly => area != Ise && (read || area == VerifyToken) && !matches!(area, Accounts | AccessTokens | Enrollments),
            Role::Nac => area == Ise || area == VerifyToken || (read && matches!(area, Devices | Compliance)),
            Role::Issuer => area == DerivedCredentials && (read || action == Action::Create),
        }
    }
}

/// What part of the fleet a request touches, as roles see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The Cisco ISE MDM API.
    Ise,
    /// Checking an access token (a gateway asks).
    VerifyToken,
    /// API accounts.
    Accounts,
    /// Stored secrets (keyring).
    Secrets,
    /// Access tokens for identity providers.
    AccessTokens,
    /// The APNs push certificate.
    PushCert,
    /// Organisation CAs.
    Cas,
    /// ADE server tokens and profiles (Apple Business Manager's credentials for
    /// this server, and where its devices enroll).
    AdeTokens,
    /// Apps and Books content tokens (the organisation's licences).
    AppTokens,
    /// mdmd's ACME certificate.
    Acme,
    /// The derived-credential collection (a provider lists and posts here).
    DerivedCredentials,
    /// Anything under one derived credential.
    DerivedCredential,
    /// Enrollment material (profiles with live challenges, invitations).
    Enrollments,
    /// Devices.
    Devices,
    /// The fleet's compliance summary.
    Compliance,
    /// Everything else (commands, profiles, declarations, certificates …).
    Other,
}

/// What a request does in its area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reads (GET, HEAD).
    Read,
    /// Creates (POST).
    Create,
    /// Changes or removes (PUT, PATCH, DELETE …).
    Change,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    role: Role,
    /// `sha256:<hex>` (current) or an Argon2id PHC string (older records).
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
    /// SHA-256(name NUL secret) of secrets found wrong -> when.
    wrong: Mutex<HashMap<[u8; 32], Instant>>,
    /// Argon2id verifications at once (each takes 19 MiB).
    hashing: tokio::sync::Semaphore,
    /// Argon2id verifications run by this instance.
    hashes: std::sync::atomic::AtomicU64,
}

/// `sha256:<hex>` of a secret.
fn sha256_hash(secret: &str) -> String {
    use sha2::Digest as _;
    format!("{SHA256_PREFIX}{}", hex::encode(sha2::Sha256::digest(secret.as_bytes())))
}

/// Remember `key` in a bounded map: expired entries go first, then all of them.
fn remember<V>(map: &mut HashMap<[u8; 32], V>, key: [u8; 32], v: V, alive: impl Fn(&V) -> bool) {
    if map.len() >= CACHE_MAX {
        map.retain(|_, v| alive(v));
        if map.len() >= CACHE_MAX {
            map.clear();
        }
    }
    map.insert(key, v);
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
        Accounts::with_hash_permits(store, 2)
    }

    /// At most `permits` Argon2id verifications (older records) run at once.
    pub fn with_hash_permits(store: Arc<dyn Store>, permits: usize) -> Accounts {
        Accounts {
            store,
            cache: Mutex::new(HashMap::new()),
            wrong: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(permits.max(1)),
            hashes: std::sync::atomic::AtomicU64::new(0),
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
        let hash = sha256_hash(&secret);
        let rec = Stored {
            role,
            hash,
            created_at: now(),
        };
        let value = serde_json::to_value(&rec).map_err(|e| ServiceError::internal("encoding the account record", e))?;
        match self.store.put_record(COLLECTION, name, value, now(), Some(0)).await? {
            Some(_) => {
                if let Ok(mut w) = self.wrong.lock() {
                    w.clear();
                }
                Ok(secret)
            }
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
    /// Costs no password hash for an unknown name, a SHA-256 record, or a secret
    /// already found wrong; Argon2id (older records) runs under the permits.
    pub async fn verify(&self, name: &str, secret: &str) -> Result<Option<Role>, ServiceError> {
        let m = crate::metrics::get();
        let key = cache_key(name, secret);
        if let Ok(c) = self.cache.lock() {
            if let Some((role, at)) = c.get(&key) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(Some(*role));
                }
            }
        }
        if let Ok(w) = self.wrong.lock() {
            if w.get(&key).is_some_and(|at| at.elapsed() < WRONG_FOR) {
                m.credential_check("known-wrong");
                return Ok(None);
            }
        }
        let Some(r) = self.store.record(COLLECTION, name).await? else {
            m.credential_check("unknown-account");
            return Ok(None);
        };
        let Ok(stored) = serde_json::from_value::<Stored>(r.value) else {
            return Ok(None);
        };
        let ok = if let Some(hex_hash) = stored.hash.strip_prefix(SHA256_PREFIX) {
            use subtle::ConstantTimeEq as _;
            let mine = sha256_hash(secret);
            let mine = mine.strip_prefix(SHA256_PREFIX).unwrap_or("");
            hex_hash.len() == mine.len() && bool::from(hex_hash.as_bytes().ct_eq(mine.as_bytes()))
        } else {
            let ok = self.argon2_verify(&stored.hash, secret).await?;
            if ok {
                self.upgrade(name, &stored, secret, r.version).await;
            }
            ok
        };
        if !ok {
            m.credential_check("wrong");
            if let Ok(mut w) = self.wrong.lock() {
                remember(&mut w, key, Instant::now(), |at| at.elapsed() < WRONG_FOR);
            }
            return Ok(None);
        }
        m.credential_check("ok");
        if let Ok(mut c) = self.cache.lock() {
            remember(&mut c, key, (stored.role, Instant::now()), |(_, at)| at.elapsed() < CACHE_FOR);
        }
        Ok(Some(stored.role))
    }

    /// An Argon2id check of an older record, under the permits.
    async fn argon2_verify(&self, phc: &str, secret: &str) -> Result<bool, ServiceError> {
        let _permit = match tokio::time::timeout(Duration::from_secs(10), self.hashing.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(ServiceError::internal("waiting for a password check", e)),
            Err(_) => return Err(ServiceError::Busy("too many password checks at once; try again".into())),
        };
        crate::metrics::get().password_hashes.inc();
        self.hashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (phc, secret) = (phc.to_owned(), secret.to_owned());
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(|e| ServiceError::internal("checking a password", e))
    }

    /// Store an older record's verified secret as SHA-256 (only if the record did not change).
    async fn upgrade(&self, name: &str, stored: &Stored, secret: &str, version: u64) {
        let rec = Stored {
            hash: sha256_hash(secret),
            ..stored.clone()
        };
        let Ok(value) = serde_json::to_value(&rec) else { return };
        match self.store.put_record(COLLECTION, name, value, now(), Some(version)).await {
            Ok(Some(_)) => tracing::info!(account = %name, "account secret hash upgraded from Argon2id to SHA-256"),
            Ok(None) => {}
            Err(e) => tracing::warn!(account = %name, error = %e, "account secret hash upgrade failed"),
        }
    }

    /// Argon2id verifications this instance has run.
    pub fn hashes_run(&self) -> u64 {
        self.hashes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// For tests: store an account with an Argon2id hash, as older versions did.
    #[doc(hidden)]
    pub async fn create_legacy(&self, name: &str, secret: &str, role: Role) -> Result<(), ServiceError> {
        let s2 = secret.to_owned();
        let hash = tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon2::Argon2::default().hash_password(s2.as_bytes(), &salt).map(|h| h.to_string())
        })
        .await
        .map_err(|e| ServiceError::internal("hashing a secret", e))?
        .map_err(|e| ServiceError::internal("hashing a secret", e.to_string()))?;
        let rec = Stored {
            role,
            hash,
            created_at: now(),
        };
        let value = serde_json::to_value(&rec).map_err(crate::store::StoreError::from)?;
        self.store.put_record(COLLECTION, name, value, now(), Some(0)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Accounts, Role};

    /// An older Argon2id record: hashed under the permits, a wrong secret is hashed
    /// once (then remembered), an unknown name never, and the first success
    /// upgrades the record to SHA-256 (no hash from then on).
    #[tokio::test]
    async fn hashes_only_when_needed_and_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn crate::store::Store> =
            std::sync::Arc::new(crate::store::redb::RedbStore::open(&dir.path().join("db")).unwrap());
        let a = Accounts::with_hash_permits(store.clone(), 1);
        a.create_legacy("old", "old.secretsecretsecret", Role::ReadOnly).await.unwrap();
        assert_eq!(a.verify("nobody", "nobody.x").await.unwrap(), None);
        assert_eq!(a.hashes_run(), 0, "an unknown name costs no hash");
        assert_eq!(a.verify("old", "old.wrong").await.unwrap(), None);
        assert_eq!(a.verify("old", "old.wrong").await.unwrap(), None);
        assert_eq!(a.hashes_run(), 1, "a secret known to be wrong costs no second hash");
        assert_eq!(a.verify("old", "old.secretsecretsecret").await.unwrap(), Some(Role::ReadOnly));
        assert_eq!(a.hashes_run(), 2);
        let rec = store.record("accounts", "old").await.unwrap().unwrap();
        assert!(rec.value["hash"].as_str().unwrap().starts_with("sha256:"), "{}", rec.value);
        // A fresh instance (no caches) verifies the upgraded record without hashing.
        let b = Accounts::with_hash_permits(store.clone(), 1);
        assert_eq!(b.verify("old", "old.secretsecretsecret").await.unwrap(), Some(Role::ReadOnly));
        assert_eq!(b.verify("old", "old.wrong2").await.unwrap(), None);
        assert_eq!(b.hashes_run(), 0);
        // New accounts are SHA-256 from the start.
        let s = b.create("new", Role::Nac).await.unwrap();
        assert_eq!(b.verify("new", &s).await.unwrap(), Some(Role::Nac));
        assert_eq!(b.hashes_run(), 0);
    }

    #[test]
    fn roles_by_area() {
        use super::{Action, Area};
        assert!(Role::Admin.allows(Area::Accounts, Action::Create));
        assert!(!Role::Operator.allows(Area::Accounts, Action::Read));
        assert!(Role::Operator.allows(Area::Secrets, Action::Read));
        assert!(!Role::Operator.allows(Area::Cas, Action::Change));
        assert!(Role::ReadOnly.allows(Area::VerifyToken, Action::Create));
        assert!(!Role::ReadOnly.allows(Area::Enrollments, Action::Read));
        assert!(Role::Issuer.allows(Area::DerivedCredentials, Action::Create));
        assert!(!Role::Issuer.allows(Area::DerivedCredentials, Action::Change));
        assert!(!Role::Issuer.allows(Area::DerivedCredential, Action::Read));
        assert!(Role::Nac.allows(Area::Compliance, Action::Read));
        assert!(!Role::Nac.allows(Area::Compliance, Action::Create));
    }
}
