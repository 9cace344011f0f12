//! `serve`'s directory flags → `service::directory::Directory` (LDAP, OpenID
//! Connect, console roles). Secrets come from flags, the environment or
//! files that others may not read; they stay in memory.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::DirectoryConfig;
use crate::service::directory::{ldap, oidc, Directory, RoleGroups, Secret};

/// A secret from a flag or a file (the file must be private: 0600 or stricter).
fn secret(value: &Option<String>, file: &Option<std::path::PathBuf>, what: &str) -> anyhow::Result<Option<Secret>> {
    if let Some(p) = file {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(p)
                .with_context(|| format!("{what}: {}", p.display()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "{what}: {} is readable by others (mode {:o}); chmod 600 it",
                    p.display(),
                    mode & 0o777
                );
            }
        }
        let s = std::fs::read_to_string(p).with_context(|| format!("{what}: reading {}", p.display()))?;
        let s = s.trim_end_matches(['\n', '\r']);
        if s.is_empty() {
            anyhow::bail!("{what}: {} is empty", p.display());
        }
        return Ok(Some(Secret::new(s)));
    }
    Ok(value.as_deref().filter(|v| !v.is_empty()).map(Secret::new))
}

pub fn build(cfg: &DirectoryConfig, public_url: &str, secrets: Arc<crate::pki::secrets::SecretBox>) -> anyhow::Result<Directory> {
    let mut d = Directory::new(secrets);
    let timeout = std::time::Duration::from_secs(cfg.directory_timeout.clamp(1, 60));
    if let Some(url) = cfg.ldap_url.as_deref().filter(|u| !u.is_empty()) {
        let base = cfg
            .ldap_base_dn
            .clone()
            .filter(|b| !b.is_empty())
            .context("--ldap-url needs --ldap-base-dn")?;
        let mut l = ldap::LdapConfig::new(url, base);
        l.starttls = cfg.ldap_starttls;
        if let Some(p) = &cfg.ldap_ca {
            l.ca_pem = Some(std::fs::read(p).with_context(|| format!("--ldap-ca: reading {}", p.display()))?);
        }
        l.bind_dn = cfg.ldap_bind_dn.clone().filter(|b| !b.is_empty());
        if let Some(pw) = secret(&cfg.ldap_bind_password, &cfg.ldap_bind_password_file, "--ldap-bind-password-file")? {
            l.bind_password = pw;
        }
        if l.bind_dn.is_some() && l.bind_password.expose().is_empty() {
            anyhow::bail!("--ldap-bind-dn needs --ldap-bind-password (or --ldap-bind-password-file)");
        }
        l.user_filter = cfg.ldap_user_filter.clone();
        l.username_attr = cfg.ldap_username_attr.clone();
        l.email_attr = cfg.ldap_email_attr.clone();
        l.name_attrs = cfg.ldap_name_attrs.clone();
        l.group_base_dn = cfg.ldap_group_base_dn.clone().filter(|b| !b.is_empty());
        l.group_filter = cfg.ldap_group_filter.clone();
        l.required_group = cfg.ldap_required_group.clone().filter(|g| !g.is_empty());
        l.timeout = timeout;
        d.ldap = Some(ldap::Ldap::new(l).map_err(|e| anyhow::anyhow!("LDAP: {e}"))?);
    }
    if let Some(issuer) = cfg.oidc_issuer.as_deref().filter(|u| !u.is_empty()) {
        let client_id = cfg
            .oidc_client_id
            .clone()
            .filter(|c| !c.is_empty())
            .context("--oidc-issuer needs --oidc-client-id")?;
        let mut o = oidc::OidcConfig::new(issuer, client_id, format!("{public_url}/auth/oidc/callback"));
        o.client_secret = secret(&cfg.oidc_client_secret, &cfg.oidc_client_secret_file, "--oidc-client-secret-file")?;
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(cfg.oidc_scopes.iter().filter(|s| !s.is_empty() && *s != "openid").cloned());
        o.scopes = scopes;
        o.username_claim = cfg.oidc_username_claim.clone();
        o.groups_claim = cfg.oidc_groups_claim.clone();
        o.timeout = timeout.max(std::time::Duration::from_secs(5));
        d.oidc = Some(oidc::Oidc::new(o).map_err(|e| anyhow::anyhow!("OpenID Connect: {e}"))?);
        d.idp_name = cfg.oidc_name.clone();
        d.roles = RoleGroups {
            admin: cfg.oidc_admin_group.clone().filter(|g| !g.is_empty()),
            operator: cfg.oidc_operator_group.clone().filter(|g| !g.is_empty()),
            read_only: cfg.oidc_read_only_group.clone().filter(|g| !g.is_empty()),
        };
        d.oidc_required_group = cfg.oidc_required_group.clone().filter(|g| !g.is_empty());
    }
    if !cfg.account_driven.is_empty() && !d.enabled() {
        anyhow::bail!("--account-driven needs a directory: --ldap-url or --oidc-issuer");
    }
    d.account_driven = cfg.account_driven.clone();
    d.managed_apple_id = match cfg.managed_apple_id.as_str() {
        "email" => None,
        other => match other.strip_prefix("domain:").filter(|d| !d.is_empty() && d.contains('.')) {
            Some(dom) => Some(dom.to_owned()),
            None => anyhow::bail!("--managed-apple-id takes `email` or `domain:DOMAIN`"),
        },
    };
    Ok(d)
}
