//! Who a person is, said by the organisation's directory or identity
//! provider: LDAP search-then-bind (`ldap`), OpenID Connect's authorization
//! code flow with PKCE (`oidc`), and what a sign-in yields (`SignedIn`, kept on
//! the enrollment as `store::EnrollUser`).
//!
//! Both clients are time-bounded on every call (`timeout`): a directory that
//! does not answer is `Unavailable`, never a hang. Secrets they hold (the
//! service account's password, the client secret) live only in memory: they
//! come from flags, environment or files, are never written to the store and
//! never logged (`Secret`'s `Debug` prints nothing).

pub mod ldap;
pub mod oidc;

use std::time::Duration;

/// A person signed in through the directory or the identity provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedIn {
    /// The short user name (LDAP `uid`/`sAMAccountName`, OIDC `preferred_username`).
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// Group names (LDAP: the groups' `cn`; OIDC: the groups claim).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The directory entry's DN (LDAP) or the subject (OIDC `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Why a sign-in did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Unknown user, wrong or empty password, disabled account: one answer for all.
    #[error("wrong user name or password")]
    BadCredentials,
    /// Signed in, but outside the group enrollment requires.
    #[error("{user} is not a member of {group}")]
    NotInGroup { user: String, group: String },
    /// The directory or identity provider cannot be reached or did not answer in time.
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
    /// The identity provider's answer failed a check (signature, nonce, state, audience …).
    #[error("the identity provider's answer was refused: {0}")]
    Refused(String),
    /// Our configuration is wrong (bad URL, unreadable CA …).
    #[error("directory configuration: {0}")]
    Config(String),
}

/// A secret value held in memory only; its `Debug` shows nothing.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[secret]")
    }
}

/// Run `f` within `limit`; out of time is `Unavailable`.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(DirectoryError::Unavailable(format!(
            "{what}: no answer within {} s",
            limit.as_secs_f32()
        ))),
    }
}

/// Which groups of the identity provider give which console role.
#[derive(Debug, Clone, Default)]
pub struct RoleGroups {
    pub admin: Option<String>,
    pub operator: Option<String>,
    pub read_only: Option<String>,
}

impl RoleGroups {
    /// The strongest role the groups give, if any.
    pub fn role(&self, groups: &[String]) -> Option<crate::service::access::accounts::Role> {
        use crate::service::access::accounts::Role;
        let member = |g: &Option<String>| g.as_ref().is_some_and(|g| groups.iter().any(|x| x == g));
        if member(&self.admin) {
            Some(Role::Admin)
        } else if member(&self.operator) {
            Some(Role::Operator)
        } else if member(&self.read_only) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }
}

/// What a web sign-in at the identity provider is for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "for", rename_all = "kebab-case")]
pub enum Purpose {
    /// The enrollment profile (`GET /mdm/enroll`).
    Enroll,
    /// A console session, then this console page.
    Console { next: String },
    /// An account-driven enrollment's access token (`mode`: `byod` or `adde`).
    AccountDriven { mode: String },
}

/// A sign-in in progress: kept by the browser in a cookie sealed with the
/// keyring (so starting one stores nothing, and any instance can finish it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub login: oidc::PendingLogin,
    pub purpose: Purpose,
}

/// The organisation's directory and identity provider, as configured.
pub struct Directory {
    pub ldap: Option<ldap::Ldap>,
    pub oidc: Option<oidc::Oidc>,
    /// Shown on "Sign in with …".
    pub idp_name: String,
    /// Console roles from identity-provider groups.
    pub roles: RoleGroups,
    /// An identity-provider group a person must be in to enroll.
    pub oidc_required_group: Option<String>,
    /// Account-driven enrollment kinds offered (`byod`, `adde`); empty: off.
    pub account_driven: Vec<String>,
    /// `None`: the Managed Apple Account is the user's email; `Some(domain)`: `username@domain`.
    pub managed_apple_id: Option<String>,
    /// What the last check of each found wrong (`check_now`), for `/v1/health`.
    problems: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
    secrets: std::sync::Arc<crate::pki::secrets::SecretBox>,
}

const PENDING_AAD: &str = "mdmd-oidc-pending";
/// A sign-in must finish within this many seconds.
pub const PENDING_SECONDS: i64 = 600;

impl Directory {
    pub fn new(secrets: std::sync::Arc<crate::pki::secrets::SecretBox>) -> Directory {
        Directory {
            ldap: None,
            oidc: None,
            idp_name: "your identity provider".into(),
            roles: RoleGroups::default(),
            oidc_required_group: None,
            account_driven: Vec::new(),
            managed_apple_id: None,
            problems: Default::default(),
            secrets,
        }
    }

    /// Anything configured at all.
    pub fn enabled(&self) -> bool {
        self.ldap.is_some() || self.oidc.is_some()
    }

    /// Seal a sign-in in progress for the browser to keep.
    pub fn seal(&self, p: &Pending) -> Result<String, DirectoryError> {
        let json = serde_json::to_vec(p).map_err(|e| DirectoryError::Config(format!("encoding the sign-in state: {e}")))?;
        self.secrets
            .seal(&json, PENDING_AAD)
            .map_err(|e| DirectoryError::Config(format!("sealing the sign-in state: {e}")))
    }

    /// Open what `seal` made: `None` if it was not ours, was changed, or is too old.
    pub fn open(&self, sealed: &str) -> Option<Pending> {
        if sealed.len() > 8192 {
            return None;
        }
        // Only what this keyring sealed: the legacy plain form would let a browser write its own state.
        let raw = self.secrets.open_sealed(sealed, PENDING_AAD).ok()?;
        let p: Pending = serde_json::from_slice(&raw).ok()?;
        let age = crate::clock::now().checked_sub(p.login.created_at)?;
        (0..=PENDING_SECONDS).contains(&age).then_some(p)
    }

    /// Start a web sign-in at the identity provider: where to send the browser, and the sealed state.
    pub async fn begin(&self, purpose: Purpose, login_hint: Option<&str>) -> Result<(String, String), DirectoryError> {
        let oidc = self
            .oidc
            .as_ref()
            .ok_or_else(|| DirectoryError::Config("no identity provider is configured (--oidc-issuer)".into()))?;
        let (url, login) = oidc.begin(login_hint).await?;
        let sealed = self.seal(&Pending { login, purpose })?;
        Ok((url, sealed))
    }

    /// Finish a web sign-in (the callback's `code` and `state`), checking the required group.
    pub async fn finish(&self, p: &Pending, code: &str, state: &str) -> Result<SignedIn, DirectoryError> {
        let oidc = self
            .oidc
            .as_ref()
            .ok_or_else(|| DirectoryError::Config("no identity provider is configured (--oidc-issuer)".into()))?;
        oidc.finish(&p.login, code, state).await
    }

    /// Whether this person may enroll (the required group, if any).
    pub fn may_enroll(&self, s: &SignedIn) -> Result<(), DirectoryError> {
        match &self.oidc_required_group {
            Some(g) if !s.groups.iter().any(|x| x == g) => Err(DirectoryError::NotInGroup {
                user: s.username.clone(),
                group: g.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl Directory {
    /// Check that the directory answers mdmd's service account and the
    /// identity provider its discovery document; keep what is wrong (logged once per change).
    pub async fn check_now(&self) {
        if let Some(l) = &self.ldap {
            let r = l.check().await.map_err(|e| match e {
                DirectoryError::BadCredentials => format!(
                    "LDAP {}: the directory refused mdmd's service account (--ldap-bind-dn / password)",
                    l.config().url
                ),
                other => format!("LDAP {}: {other}", l.config().url),
            });
            self.note("ldap", r.err());
        }
        if let Some(o) = &self.oidc {
            let r = o
                .discover()
                .await
                .map_err(|e| format!("identity provider {}: {e}", o.config().issuer));
            self.note("oidc", r.err());
        }
    }

    /// Record what a check or a sign-in found about `what` (`ldap`, `oidc`): a problem, or none.
    pub fn note(&self, what: &'static str, problem: Option<String>) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(m) => {
                if p.get(what) != Some(&m) {
                    tracing::warn!(problem = %m, "directory check");
                }
                p.insert(what, m);
            }
            None => {
                if p.remove(what).is_some() {
                    tracing::info!(directory = what, "directory check: reachable again");
                }
            }
        }
    }

    /// What the last checks found wrong, one line each.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The Managed Apple Account an account-driven enrollment assigns this person.
    pub fn managed_apple_id(&self, s: &SignedIn) -> Option<String> {
        match &self.managed_apple_id {
            Some(domain) => Some(format!("{}@{domain}", s.username)),
            None => s.email.clone(),
        }
    }
}

impl SignedIn {
    /// What an enrollment records of this person.
    pub fn enroll_user(&self, method: &str) -> crate::store::EnrollUser {
        crate::store::EnrollUser {
            username: self.username.clone(),
            email: self.email.clone(),
            full_name: self.full_name.clone(),
            groups: self.groups.clone(),
            method: method.to_owned(),
            signed_in_at: crate::clock::now(),
            managed_apple_id: None,
            enrollment_mode: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Directory {
        Directory::new(std::sync::Arc::new(crate::pki::secrets::SecretBox::ephemeral()))
    }

    fn pending(created_at: i64) -> Pending {
        Pending {
            login: oidc::PendingLogin {
                state: "s".into(),
                nonce: "n".into(),
                pkce_verifier: "v".repeat(43),
                created_at,
            },
            purpose: Purpose::Enroll,
        }
    }

    #[test]
    fn only_sealed_fresh_state_is_taken_back() {
        let d = dir();
        let now = crate::clock::now();
        let sealed = d.seal(&pending(now)).unwrap();
        assert!(d.open(&sealed).is_some());
        // Written by the browser itself (unsealed JSON, base64): refused.
        use base64::Engine as _;
        let forged = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&pending(now)).unwrap());
        assert!(d.open(&forged).is_none());
        // Changed by one character: refused.
        let mut bytes = sealed.clone().into_bytes();
        let i = bytes.len() - 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(d.open(&String::from_utf8(bytes).unwrap()).is_none());
        // Too old, from the future, or absurd: refused, without overflow.
        for t in [now - PENDING_SECONDS - 1, now + 60, i64::MIN, i64::MAX] {
            assert!(d.open(&d.seal(&pending(t)).unwrap()).is_none(), "{t}");
        }
        // Another keyring's: refused.
        assert!(dir().open(&sealed).is_none());
        assert!(d.open(&"x".repeat(10_000)).is_none());
    }

    #[test]
    fn roles_come_from_configured_groups_only() {
        use crate::service::access::accounts::Role;
        let r = RoleGroups {
            admin: Some("mdm-admins".into()),
            operator: Some("ops".into()),
            read_only: None,
        };
        assert_eq!(r.role(&["ops".into(), "mdm-admins".into()]), Some(Role::Admin));
        assert_eq!(r.role(&["ops".into()]), Some(Role::Operator));
        assert_eq!(r.role(&["admin".into(), "Admin".into(), "MDM-ADMINS".into()]), None);
        assert_eq!(RoleGroups::default().role(&["".into()]), None);
    }
}
