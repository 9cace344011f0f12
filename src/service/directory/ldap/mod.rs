//! LDAP sign-in for enrollment: search-then-bind against the organisation's
//! directory (OpenLDAP, Active Directory, 389-DS, FreeIPA …).
//!
//! The protocol is spoken by [`ldap3`], the well-kept asynchronous LDAP
//! client crate, with TLS from `native-tls`; nothing here encodes LDAP by hand.
//! This module decides what to ask and what the answers mean.
//!
//! # The flow of [`Ldap::authenticate`]
//!
//! 1. Before any network I/O, the user name and password are checked: an empty
//!    password (or one of only NULs, control characters or white space, or one
//!    with a NUL anywhere) is `BadCredentials`, because a simple bind with an
//!    empty password is an *unauthenticated* bind (RFC 4513 §5.1.2) that many
//!    servers answer with success. Empty user names, names over
//!    [`MAX_USERNAME_BYTES`] and names with control characters are refused the
//!    same way.
//! 2. Connection 1, as mdmd's service account (`bind_dn`, or anonymous when
//!    none is configured): subtree search of `base_dn` with `user_filter`, where
//!    `{user}` is the RFC 4515-escaped user name ([`escape_filter_value`]), so
//!    `*` or `a)(uid=*` are literal characters, never filter syntax. Exactly one
//!    entry must match; none or several is `BadCredentials`.
//! 3. Connection 2, fresh: a simple bind *as that entry's DN* with the
//!    password. `invalidCredentials` (49) — which is also how OpenLDAP's
//!    ppolicy and Active Directory (`data 533`/`775`) answer for a disabled or
//!    locked account — or any other refusal is `BadCredentials`; `busy` (51) and
//!    `unavailable` (52) are `Unavailable`. The connection is then unbound.
//! 4. Back on connection 1: when `required_group` is set, a BASE-scope search
//!    on that group's DN with `(|(member=DN)(uniqueMember=DN))` (the user's DN
//!    escaped) must find the group, else `NotInGroup`. This needs no memberOf
//!    overlay, and happens only after the password was accepted, so it tells
//!    nothing about group membership to someone who does not know it.
//! 5. The profile: the canonical user name (`username_attr`, preferring the
//!    value equal to what was typed), e-mail (`email_attr`), full name (first
//!    present of `name_attrs`) and groups: the first RDN value of each
//!    `member_of_attr` value when the entry carries that attribute, else the
//!    `group_name_attr` of the groups a search of `group_base_dn` (default
//!    `base_dn`) with `group_filter` (`{dn}` the escaped user DN) finds.
//!
//! Failures of the service account's bind are `Unavailable` (an administrator
//! must fix mdmd's configuration; it is not the user's fault) and are logged
//! with `tracing::warn`. Passwords are never logged.
//!
//! # Bounds
//!
//! - Time: every network step — connect (TCP, TLS handshake, StartTLS), each
//!   bind, each search, unbind — is bounded by `timeout`, both inside ldap3
//!   (`LdapConnSettings::set_conn_timeout`, `Ldap::with_timeout`, the search's
//!   server-side time limit) and around it ([`super::bounded`]). A directory
//!   that does not answer, refuses the connection or fails TLS is
//!   `Unavailable` with a message naming the URL.
//! - Size: the user search asks for (and reads) at most 2 entries, the group
//!   search at most [`MAX_GROUPS`] + 1; at most [`MAX_GROUPS`] groups are kept,
//!   and each value kept (user name, e-mail, name, group names) is stripped of
//!   control characters and cut to [`MAX_VALUE_CHARS`] characters. Entries are
//!   decoded without panicking on odd answers (non-UTF-8 values are skipped).
//! - Connections: each is driven by its own task (ldap3's connection future),
//!   unbound when done (that too bounded, by at most 1 s) and dropped, which
//!   ends that task and closes the socket. Nothing is pooled.
//! - Panics: ldap3 `expect`s well-formed answers (a non-UTF-8 diagnostic
//!   message in a bind response panics it), so each call runs in a task of
//!   its own and such a panic is `Unavailable`, not the caller's panic.
//!
//! # TLS
//!
//! `ldaps://` URLs and `starttls` on `ldap://` use a `native_tls` connector
//! prepared once in [`Ldap::new`]: TLS 1.2 or later, the system's roots plus
//! the certificates of `ca_pem` when given, hostname verification on. A plain
//! `ldap://` URL without StartTLS sends passwords in clear; [`Ldap::new`] warns.
//!
//! Known limits: nested groups are not expanded (Active Directory's
//! `memberOf` lists direct groups only); an unknown user is answered without a
//! user bind, so faster than a wrong password — rate limiting sign-ins is the
//! caller's business.

use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::{StructureTag, PL};
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchOptions};

use super::{bounded, DirectoryError, Secret, SignedIn};

/// Longest user name accepted (bytes of UTF-8).
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest password accepted (bytes of UTF-8); longer is `BadCredentials` without asking.
pub const MAX_PASSWORD_BYTES: usize = 4096;
/// Most groups kept for one person.
pub const MAX_GROUPS: usize = 256;
/// Longest attribute value kept (characters); longer values are cut.
pub const MAX_VALUE_CHARS: usize = 256;

// LDAP result codes (RFC 4511 appendix A).
const RC_SUCCESS: u32 = 0;
const RC_SIZE_LIMIT_EXCEEDED: u32 = 4;
const RC_REFERRAL: u32 = 10;
const RC_NO_SUCH_OBJECT: u32 = 32;
const RC_INVALID_CREDENTIALS: u32 = 49;
const RC_BUSY: u32 = 51;
const RC_UNAVAILABLE: u32 = 52;

/// "No attributes" in a search request (RFC 4511 §4.5.1.8).
const NO_ATTRS: &str = "1.1";

/// How mdmd finds and checks people in an LDAP directory.
#[derive(Clone, Debug)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]` (an IPv6 host in brackets).
    pub url: String,
    /// StartTLS on an `ldap://` URL (ignored for `ldaps://`, which is TLS already).
    pub starttls: bool,
    /// Extra trusted CA certificate(s), PEM, for ldaps/StartTLS; the system's roots are trusted too.
    pub ca_pem: Option<Vec<u8>>,
    /// Where people are searched (subtree).
    pub base_dn: String,
    /// The service account used for searches (None: anonymous search).
    pub bind_dn: Option<String>,
    pub bind_password: Secret,
    /// Finds a person; `{user}` is replaced by the RFC 4515-escaped user name. Default `(uid={user})`.
    pub user_filter: String,
    /// The attribute holding the canonical user name: `uid` (Active Directory: `sAMAccountName`).
    pub username_attr: String,
    /// Default `mail`.
    pub email_attr: String,
    /// The full name: the first of these present. Default `displayName`, `cn`.
    pub name_attrs: Vec<String>,
    /// Default `memberOf`: used for groups when the person's entry has it.
    pub member_of_attr: String,
    /// Where groups are searched when the entry has no memberOf (default `base_dn`).
    pub group_base_dn: Option<String>,
    /// Finds a person's groups; `{dn}` is replaced by the escaped user DN.
    /// Default `(|(member={dn})(uniqueMember={dn}))`.
    pub group_filter: String,
    /// A group's name: default `cn`.
    pub group_name_attr: String,
    /// A group DN the person must be a member of (`member` or `uniqueMember`).
    pub required_group: Option<String>,
    /// Bound for EACH network step (connect, bind, search). Default 5 s.
    pub timeout: Duration,
}

impl LdapConfig {
    /// A configuration with the defaults for an OpenLDAP-style directory.
    pub fn new(url: impl Into<String>, base_dn: impl Into<String>) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            starttls: false,
            ca_pem: None,
            base_dn: base_dn.into(),
            bind_dn: None,
            bind_password: Secret::default(),
            user_filter: "(uid={user})".into(),
            username_attr: "uid".into(),
            email_attr: "mail".into(),
            name_attrs: vec!["displayName".into(), "cn".into()],
            member_of_attr: "memberOf".into(),
            group_base_dn: None,
            group_filter: "(|(member={dn})(uniqueMember={dn}))".into(),
            group_name_attr: "cn".into(),
            required_group: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// An LDAP directory client: a checked configuration and its TLS connector.
/// Every call opens its own connections; share it freely (`Arc`).
pub struct Ldap(Arc<Inner>);

struct Inner {
    cfg: LdapConfig,
    /// `scheme://host:port`, as checked.
    url: String,
    /// The connection is TLS (ldaps, or ldap with StartTLS).
    tls: bool,
    connector: Option<native_tls::TlsConnector>,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("url", &self.0.url)
            .field("tls", &self.0.tls)
            .finish_non_exhaustive()
    }
}

/// Escape a value for an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\`
/// and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`.
pub fn escape_filter_value(s: &str) -> String {
    ldap3::ldap_escape(s).into_owned()
}

impl Ldap {
    /// Check `cfg` and prepare the TLS connector. `Config` when the URL is not
    /// `ldap://` / `ldaps://` with a host, `ca_pem` holds no readable
    /// certificate, a filter lacks its placeholder or does not parse, an
    /// attribute name is empty or odd, a DN is empty, the timeout is zero, or
    /// a service account DN comes without a password.
    pub fn new(cfg: LdapConfig) -> Result<Ldap, DirectoryError> {
        Inner::new(cfg).map(|inner| Ldap(Arc::new(inner)))
    }

    pub fn config(&self) -> &LdapConfig {
        &self.0.cfg
    }

    /// Search-then-bind: bind as the service account, search `base_dn`
    /// (subtree) with `user_filter` for exactly one entry (0 or >1 →
    /// `BadCredentials`), then bind AS THAT DN with `password` on a fresh
    /// connection (invalidCredentials/49 or any bind refusal →
    /// `BadCredentials`), read e-mail, name and groups, and when
    /// `required_group` is set, check membership by a base-scope search on the
    /// group (`NotInGroup` when it does not list the user). See the module
    /// documentation for the details and bounds.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<SignedIn, DirectoryError> {
        if let Err(why) = check_user_name(user).and_then(|_| check_password(password)) {
            tracing::debug!(url = %self.0.url, why, "LDAP sign-in refused before asking the directory");
            return Err(DirectoryError::BadCredentials);
        }
        let (inner, user, password) = (self.0.clone(), user.to_owned(), password.to_owned());
        isolated(&self.0.url, async move { inner.authenticate(&user, &password).await }).await
    }

    /// Bind as the service account and unbind: a health check. `Unavailable`
    /// when the directory cannot be reached or refuses, `BadCredentials` when
    /// it says the service account's password is wrong (49). Without a
    /// service account, an anonymous read of the root DSE shows the directory
    /// answers (whatever it answers).
    pub async fn check(&self) -> Result<(), DirectoryError> {
        let inner = self.0.clone();
        isolated(&self.0.url, async move { inner.check().await }).await
    }
}

/// Run `f` in a task of its own, so that a panic in ldap3 while decoding an
/// odd answer (its result parsing `expect`s well-formed PDUs) is
/// `Unavailable` rather than the caller's panic. Dropping the returned future
/// aborts the task.
async fn isolated<T: Send + 'static>(
    url: &str,
    f: impl std::future::Future<Output = Result<T, DirectoryError>> + Send + 'static,
) -> Result<T, DirectoryError> {
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(f);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(url, error = %e, "LDAP: the client failed on the directory's answer");
            Err(DirectoryError::Unavailable(format!(
                "the answer of the directory at {url} could not be read"
            )))
        }
    }
}

impl Inner {
    fn new(cfg: LdapConfig) -> Result<Inner, DirectoryError> {
        let config = DirectoryError::Config;
        let (scheme, url) = check_url(&cfg.url).map_err(config)?;
        if cfg.timeout.is_zero() {
            return Err(config("the timeout must be more than zero".into()));
        }
        check_filter("user_filter", &cfg.user_filter, "{user}").map_err(config)?;
        check_filter("group_filter", &cfg.group_filter, "{dn}").map_err(config)?;
        for (what, name) in [
            ("username_attr", &cfg.username_attr),
            ("email_attr", &cfg.email_attr),
            ("member_of_attr", &cfg.member_of_attr),
            ("group_name_attr", &cfg.group_name_attr),
        ]
        .into_iter()
        .chain(cfg.name_attrs.iter().map(|n| ("name_attrs", n)))
        {
            if !is_attribute_name(name) {
                return Err(config(format!("{what} {name:?} is not an attribute name")));
            }
        }
        for (what, dn) in [
            ("bind_dn", &cfg.bind_dn),
            ("group_base_dn", &cfg.group_base_dn),
            ("required_group", &cfg.required_group),
        ] {
            if dn.as_deref().is_some_and(|d| d.trim().is_empty()) {
                return Err(config(format!("{what} is empty (leave it unset instead)")));
            }
        }
        if cfg.bind_dn.is_some() && cfg.bind_password.expose().is_empty() {
            // An empty password would make the service bind an unauthenticated one.
            return Err(config("bind_dn is set but bind_password is empty".into()));
        }

        let tls = scheme == "ldaps" || cfg.starttls;
        let connector = if tls {
            let mut b = native_tls::TlsConnector::builder();
            b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
            if let Some(pem) = &cfg.ca_pem {
                let certs = native_tls::Certificate::stack_from_pem(pem)
                    .map_err(|e| config(format!("ca_pem is not readable PEM certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(config("ca_pem holds no certificate".into()));
                }
                for c in certs {
                    b.add_root_certificate(c);
                }
            }
            Some(b.build().map_err(|e| config(format!("cannot prepare TLS: {e}")))?)
        } else {
            if cfg.ca_pem.is_some() {
                // Not worth refusing, but a sign the administrator believes the connection is TLS.
                tracing::warn!(url = %url, "LDAP: ca_pem is set but the connection is not TLS (use ldaps:// or starttls); it is unused");
            }
            tracing::warn!(url = %url, "LDAP without TLS: passwords cross the network in clear (use ldaps:// or starttls)");
            None
        };
        Ok(Inner { cfg, url, tls, connector })
    }

    /// [`Ldap::authenticate`], once the user name and password were checked.
    async fn authenticate(&self, user: &str, password: &str) -> Result<SignedIn, DirectoryError> {
        let mut svc = self.connect().await?;
        let result = self.sign_in(&mut svc, user, password).await;
        self.close(svc).await;
        result
    }

    /// [`Ldap::check`].
    async fn check(&self) -> Result<(), DirectoryError> {
        let mut conn = self.connect().await?;
        let result = match self.cfg.bind_dn {
            Some(_) => self.bind_service(&mut conn, true).await,
            None => self
                .search(
                    &mut conn,
                    "reading the root DSE",
                    "",
                    Scope::Base,
                    "(objectClass=*)",
                    &[NO_ATTRS],
                    1,
                )
                .await
                .map(|_| ()),
        };
        self.close(conn).await;
        result
    }

    async fn sign_in(&self, svc: &mut ldap3::Ldap, user: &str, password: &str) -> Result<SignedIn, DirectoryError> {
        self.bind_service(svc, false).await?;

        // Find the one entry.
        let filter = self.cfg.user_filter.replace("{user}", &escape_filter_value(user));
        let mut attrs: Vec<&str> = Vec::new();
        for a in [&self.cfg.username_attr, &self.cfg.email_attr, &self.cfg.member_of_attr]
            .into_iter()
            .chain(&self.cfg.name_attrs)
        {
            if !attrs.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                attrs.push(a);
            }
        }
        let found = self
            .search(svc, "searching for the user", &self.cfg.base_dn, Scope::Subtree, &filter, &attrs, 1)
            .await?;
        match found.rc {
            RC_SUCCESS | RC_SIZE_LIMIT_EXCEEDED | RC_REFERRAL => {}
            RC_NO_SUCH_OBJECT => {
                tracing::warn!(
                    url = %self.url,
                    base_dn = %self.cfg.base_dn,
                    "LDAP: base_dn does not exist (or the service account cannot see it)"
                );
                return Err(DirectoryError::Config(format!(
                    "base_dn {} does not exist at {} (or mdmd may not see it)",
                    self.cfg.base_dn, self.url
                )));
            }
            rc => return Err(self.refused_search("the user search", rc, &found.text)),
        }
        if found.more || found.entries.len() > 1 {
            tracing::warn!(url = %self.url, user, filter = %filter, "LDAP: the user filter matches more than one entry; sign-in refused");
            return Err(DirectoryError::BadCredentials);
        }
        let Some(entry) = found.entries.into_iter().next().filter(|e| !e.dn.is_empty()) else {
            tracing::debug!(url = %self.url, user, "LDAP: no such user");
            return Err(DirectoryError::BadCredentials);
        };

        // The password, on a connection of the user's own.
        let mut mine = self.connect().await?;
        let bound = self.bind_user(&mut mine, &entry.dn, user, password).await;
        self.close(mine).await;
        bound?;

        let username = pick_username(&entry, &self.cfg.username_attr, user);
        if let Some(group) = &self.cfg.required_group {
            if !self.is_member(svc, group, &entry.dn).await? {
                tracing::info!(url = %self.url, user = %username, group = %group, "LDAP: signed in but not in the required group");
                return Err(DirectoryError::NotInGroup {
                    user: username,
                    group: group.clone(),
                });
            }
        }
        let groups = match entry.values(&self.cfg.member_of_attr) {
            Some(dns) => keep_groups(dns.iter().filter_map(|dn| first_rdn_value(dn))),
            None => self.search_groups(svc, &entry.dn).await?,
        };
        let email = entry.first(&self.cfg.email_attr).map(clip).filter(|s| !s.is_empty());
        let full_name = self
            .cfg
            .name_attrs
            .iter()
            .filter_map(|a| entry.first(a))
            .map(clip)
            .find(|s| !s.is_empty());
        tracing::debug!(url = %self.url, user = %username, groups = groups.len(), "LDAP sign-in");
        Ok(SignedIn {
            username,
            email,
            full_name,
            groups,
            subject: Some(entry.dn),
        })
    }

    /// Open a connection (TCP, then TLS or StartTLS as configured) and start
    /// driving it; the driving task ends when the returned handle is dropped.
    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let t = self.cfg.timeout;
        let mut settings = LdapConnSettings::new().set_conn_timeout(t);
        if let Some(c) = &self.connector {
            settings = settings.set_connector(c.clone());
        }
        if self.url.starts_with("ldap://") {
            settings = settings.set_starttls(self.cfg.starttls);
        }
        let what = format!("connecting to {}", self.url);
        let (conn, ldap) = bounded(t, &what, async {
            LdapConnAsync::with_settings(settings, &self.url)
                .await
                .map_err(|e| self.transport(&what, e))
        })
        .await?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(url = %url, error = %e, "LDAP connection ended with an error");
            }
        });
        Ok(ldap)
    }

    /// Unbind (politely, briefly: on a broken connection it fails at once),
    /// then drop the handle, which ends the driving task and closes the socket.
    async fn close(&self, mut ldap: ldap3::Ldap) {
        let _ = tokio::time::timeout(self.cfg.timeout.min(Duration::from_secs(1)), ldap.unbind()).await;
    }

    /// Bind as the service account, if there is one. A refusal is the
    /// configuration's fault: `Unavailable` (for `check`, 49 is `BadCredentials`).
    async fn bind_service(&self, ldap: &mut ldap3::Ldap, checking: bool) -> Result<(), DirectoryError> {
        let Some(dn) = &self.cfg.bind_dn else { return Ok(()) };
        let res = self
            .bind(ldap, "binding as mdmd's service account", dn, self.cfg.bind_password.expose())
            .await?;
        if res.rc == RC_SUCCESS {
            return Ok(());
        }
        tracing::warn!(
            url = %self.url,
            bind_dn = %dn,
            rc = res.rc,
            text = %res.text,
            "LDAP: the directory refused mdmd's service account; check bind_dn and bind_password"
        );
        if checking && res.rc == RC_INVALID_CREDENTIALS {
            return Err(DirectoryError::BadCredentials);
        }
        Err(DirectoryError::Unavailable(format!(
            "the directory refused mdmd's service account {dn} at {}: {}",
            self.url,
            describe(res.rc, &res.text)
        )))
    }

    /// Bind as the person found. Any refusal is `BadCredentials`, but for a
    /// server saying it is busy or unavailable.
    async fn bind_user(&self, ldap: &mut ldap3::Ldap, dn: &str, user: &str, password: &str) -> Result<(), DirectoryError> {
        let res = self.bind(ldap, "binding as the user", dn, password).await?;
        match res.rc {
            RC_SUCCESS => Ok(()),
            RC_BUSY | RC_UNAVAILABLE => {
                tracing::warn!(url = %self.url, user, rc = res.rc, text = %res.text, "LDAP: the directory could not check a password");
                Err(DirectoryError::Unavailable(format!(
                    "the directory at {} could not check the password: {}",
                    self.url,
                    describe(res.rc, &res.text)
                )))
            }
            rc => {
                // 49 covers wrong passwords and disabled or locked accounts (AD: "data 533/775").
                tracing::info!(url = %self.url, user, rc, text = %res.text, "LDAP: the directory refused the user's password");
                Err(DirectoryError::BadCredentials)
            }
        }
    }

    async fn bind(&self, ldap: &mut ldap3::Ldap, what: &str, dn: &str, password: &str) -> Result<ldap3::LdapResult, DirectoryError> {
        // Never an unauthenticated bind: the callers have refused empty passwords already.
        if password.is_empty() {
            return Err(DirectoryError::BadCredentials);
        }
        let t = self.cfg.timeout;
        let what = format!("{what} at {}", self.url);
        bounded(t, &what, async {
            ldap.with_timeout(t)
                .simple_bind(dn, password)
                .await
                .map_err(|e| self.transport(&what, e))
        })
        .await
    }

    /// Is `user_dn` a `member` or `uniqueMember` of the group `group_dn`?
    async fn is_member(&self, svc: &mut ldap3::Ldap, group_dn: &str, user_dn: &str) -> Result<bool, DirectoryError> {
        let dn = escape_filter_value(user_dn);
        let filter = format!("(|(member={dn})(uniqueMember={dn}))");
        let found = self
            .search(svc, "checking the required group", group_dn, Scope::Base, &filter, &[NO_ATTRS], 1)
            .await?;
        match found.rc {
            RC_SUCCESS | RC_SIZE_LIMIT_EXCEEDED => Ok(!found.entries.is_empty()),
            RC_NO_SUCH_OBJECT => {
                tracing::warn!(
                    url = %self.url,
                    group = %group_dn,
                    "LDAP: the required group does not exist (or the service account cannot see it)"
                );
                Ok(false)
            }
            rc => Err(self.refused_search("the group membership check", rc, &found.text)),
        }
    }

    /// The names of the groups listing `user_dn` (`group_filter` under `group_base_dn`).
    async fn search_groups(&self, svc: &mut ldap3::Ldap, user_dn: &str) -> Result<Vec<String>, DirectoryError> {
        let filter = self.cfg.group_filter.replace("{dn}", &escape_filter_value(user_dn));
        let base = self.cfg.group_base_dn.as_deref().unwrap_or(&self.cfg.base_dn);
        let found = self
            .search(
                svc,
                "searching the user's groups",
                base,
                Scope::Subtree,
                &filter,
                &[self.cfg.group_name_attr.as_str()],
                MAX_GROUPS,
            )
            .await?;
        match found.rc {
            RC_SUCCESS | RC_SIZE_LIMIT_EXCEEDED | RC_REFERRAL => {}
            RC_NO_SUCH_OBJECT => {
                tracing::warn!(
                    url = %self.url,
                    group_base_dn = %base,
                    "LDAP: the group base DN does not exist (or the service account cannot see it)"
                );
                return Err(DirectoryError::Config(format!(
                    "the group base DN {base} does not exist at {}",
                    self.url
                )));
            }
            rc => return Err(self.refused_search("the group search", rc, &found.text)),
        }
        if found.more {
            tracing::warn!(url = %self.url, dn = %user_dn, "LDAP: more than {MAX_GROUPS} groups; only the first {MAX_GROUPS} are kept");
        }
        Ok(keep_groups(found.entries.iter().filter_map(|g| {
            g.first(&self.cfg.group_name_attr)
                .map(str::to_owned)
                .or_else(|| first_rdn_value(&g.dn))
        })))
    }

    /// Search, reading at most `limit` entries (the server is asked for at
    /// most `limit` + 1, so that `more` says whether there were more).
    /// Referrals are skipped. A failed LDAP result is returned, not an error:
    /// the caller knows what each code means for it.
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        ldap: &mut ldap3::Ldap,
        what: &str,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Found, DirectoryError> {
        let t = self.cfg.timeout;
        let attrs: Vec<String> = attrs.iter().map(|a| a.to_string()).collect();
        let opts = SearchOptions::new()
            .sizelimit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .timelimit(i32::try_from(t.as_secs().max(1)).unwrap_or(i32::MAX));
        let what = format!("{what} at {}", self.url);
        bounded(t, &what, async {
            let mut stream = ldap
                .with_search_options(opts)
                .with_timeout(t)
                .streaming_search(base, scope, filter, attrs)
                .await
                .map_err(|e| self.transport(&what, e))?;
            let mut entries = Vec::new();
            let mut more = false;
            while let Some(re) = stream.next().await.map_err(|e| self.transport(&what, e))? {
                if re.is_ref() || re.is_intermediate() {
                    continue;
                }
                if entries.len() == limit {
                    more = true;
                    break;
                }
                let entry = Entry::decode(re.0)
                    .ok_or_else(|| DirectoryError::Unavailable(format!("{what}: an entry in the answer could not be read")))?;
                entries.push(entry);
            }
            if more {
                // Stop reading; tell the server it may stop too.
                let id = stream.ldap_handle().last_id();
                let _ = stream.finish().await;
                let _ = ldap.abandon(id).await;
                return Ok(Found {
                    entries,
                    rc: RC_SIZE_LIMIT_EXCEEDED,
                    text: String::new(),
                    more,
                });
            }
            let res = stream.finish().await;
            let more = res.rc == RC_SIZE_LIMIT_EXCEEDED;
            Ok(Found {
                entries,
                rc: res.rc,
                text: res.text,
                more,
            })
        })
        .await
    }

    /// A transport failure (refused, TLS, timeout, closed) as `Unavailable`;
    /// `what` names the step and the URL.
    fn transport(&self, what: &str, e: LdapError) -> DirectoryError {
        let detail = match e {
            LdapError::Io { source } => source.to_string(),
            LdapError::NativeTLS { source } => format!("TLS failed: {source}"),
            LdapError::Timeout { .. } => format!("no answer within {} s", self.cfg.timeout.as_secs_f32()),
            LdapError::LdapResult { result } => describe(result.rc, &result.text),
            LdapError::EndOfStream | LdapError::ResultRecv { .. } | LdapError::OpSend { .. } => "the connection was closed".into(),
            e => e.to_string(),
        };
        tracing::debug!(url = %self.url, what, detail = %detail, "LDAP unavailable");
        DirectoryError::Unavailable(format!("{what}: {detail}"))
    }

    fn refused_search(&self, what: &str, rc: u32, text: &str) -> DirectoryError {
        tracing::warn!(url = %self.url, rc, text, "LDAP: the directory refused {what}");
        DirectoryError::Unavailable(format!("the directory at {} refused {what}: {}", self.url, describe(rc, text)))
    }
}

/// What a search found.
struct Found {
    entries: Vec<Entry>,
    rc: u32,
    text: String,
    /// More entries matched than were read.
    more: bool,
}

/// A search result entry: its DN and its attributes (names lower-cased,
/// UTF-8 values only, as the directory sent them).
#[derive(Debug, PartialEq)]
struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    /// Decode a SearchResultEntry (RFC 4511 §4.5.2) from what ldap3 parsed,
    /// without panicking on an unexpected shape (ldap3's `SearchEntry::construct` would).
    fn decode(tag: StructureTag) -> Option<Entry> {
        fn constructed(t: StructureTag) -> Option<Vec<StructureTag>> {
            t.expect_constructed()
        }
        let mut parts = constructed(tag.match_id(4)?)?.into_iter();
        let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
        let mut attrs = Vec::new();
        for attr in constructed(parts.next()?)? {
            let mut a = constructed(attr)?.into_iter();
            let name = String::from_utf8(a.next()?.expect_primitive()?).ok()?.to_ascii_lowercase();
            let values = constructed(a.next()?)?
                .into_iter()
                .filter_map(|v| match v.payload {
                    PL::P(bytes) => String::from_utf8(bytes).ok(),
                    PL::C(_) => None,
                })
                .collect();
            attrs.push((name, values));
        }
        Some(Entry { dn, attrs })
    }

    /// The values of `attr` (case-insensitive), if the entry has the attribute.
    fn values(&self, attr: &str) -> Option<&[String]> {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.as_slice())
    }

    fn first(&self, attr: &str) -> Option<&str> {
        self.values(attr)?.first().map(String::as_str)
    }
}

/// The canonical user name: the value of `attr` equal to what was typed (in
/// the directory's spelling), else its first value, else what was typed.
fn pick_username(entry: &Entry, attr: &str, typed: &str) -> String {
    let values = entry.values(attr).unwrap_or_default();
    let v = values
        .iter()
        .find(|v| v.trim().eq_ignore_ascii_case(typed.trim()))
        .or(values.first());
    match v.map(|v| clip(v)).filter(|v| !v.is_empty()) {
        Some(v) => v,
        None => clip(typed),
    }
}

/// Group names, cleaned, without duplicates, at most `MAX_GROUPS`.
fn keep_groups(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names.map(|n| clip(&n)).filter(|n| !n.is_empty()) {
        if out.len() == MAX_GROUPS {
            break;
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// A directory value as kept: control characters removed, white space
/// trimmed, at most `MAX_VALUE_CHARS` characters.
fn clip(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    s.trim().chars().take(MAX_VALUE_CHARS).collect::<String>().trim_end().to_owned()
}

/// The value of a DN's first RDN, unescaped (RFC 4514): `Staff` for
/// `cn=Staff,ou=Groups,dc=example,dc=org`, `Smith, J` for `cn=Smith\, J,…`.
fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, rest) = dn.split_once('=')?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b',' | b'+' | b';' => break,
            b'\\' if i + 1 < bytes.len() => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(bytes[i + 1]);
                        i += 2;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let v = String::from_utf8(out).ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// `rc=49 (invalidCredentials): text` for logs and messages.
fn describe(rc: u32, text: &str) -> String {
    let r = ldap3::LdapResult {
        rc,
        matched: String::new(),
        text: String::new(),
        refs: vec![],
        ctrls: vec![],
    };
    // ldap3's Display gives the code's name: `rc=49 (invalidCredentials), dn: "", text: ""`.
    let full = r.to_string();
    let name = full.split_once(", dn:").map_or(full.as_str(), |(n, _)| n);
    let text = clip(text);
    if text.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {text}")
    }
}

/// `ldap://host[:port]` or `ldaps://host[:port]` (an optional trailing `/`),
/// as (scheme, `scheme://host:port`).
fn check_url(url: &str) -> Result<(&'static str, String), String> {
    let bad = |why: &str| format!("url {url:?}: {why} (want ldap://host[:port] or ldaps://host[:port])");
    let (scheme, rest) = url.trim().split_once("://").ok_or_else(|| bad("not a URL"))?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "ldap" => ("ldap", 389),
        "ldaps" => ("ldaps", 636),
        _ => return Err(bad("the scheme must be ldap or ldaps")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("only a host and a port may follow the scheme"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address in brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after the address"))?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (h, p) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.contains(':') {
            return Err(bad("an IPv6 address must be in brackets"));
        }
        (h.to_owned(), p)
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("the port must be 1-65535")),
        },
    };
    Ok((scheme, format!("{scheme}://{}:{port}", host.to_ascii_lowercase())))
}

/// A filter template must hold its placeholder and parse once it is filled.
fn check_filter(what: &str, filter: &str, placeholder: &str) -> Result<(), String> {
    if !filter.contains(placeholder) {
        return Err(format!("{what} {filter:?} must contain {placeholder}"));
    }
    if ldap3::parse_filter(filter.replace(placeholder, "x")).is_err() {
        return Err(format!("{what} {filter:?} is not a valid LDAP filter"));
    }
    Ok(())
}

/// An attribute description: a name or OID, with options (`cn;lang-en`).
fn is_attribute_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ';' | '.'))
}

/// Why a user name is refused without asking the directory.
fn check_user_name(user: &str) -> Result<(), &'static str> {
    if user.trim().is_empty() {
        return Err("empty user name");
    }
    if user.len() > MAX_USERNAME_BYTES {
        return Err("user name too long");
    }
    if user.chars().any(char::is_control) {
        return Err("control character in the user name");
    }
    Ok(())
}

/// Why a password is refused without asking the directory. An empty password
/// would make the bind unauthenticated (RFC 4513 §5.1.2): never sent.
fn check_password(password: &str) -> Result<(), &'static str> {
    if password.chars().all(|c| c.is_control() || c.is_whitespace()) {
        return Err("empty password");
    }
    if password.contains('\0') {
        return Err("NUL in the password");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err("password too long");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
