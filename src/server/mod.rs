//! `mdmd serve`: wires configuration, store, service and HTTP together.

mod ade;
mod apps;
mod demo;
mod directory;
mod tasks;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::app::App;
use crate::config::ServeConfig;
use crate::pki::{CaConfig, Pki};
use crate::service::commands::{Commander, CommanderConfig};
use crate::service::enroll::{EnrollConfig, Enroller};
use crate::service::Mdm;
use crate::store::redb::RedbStore;
use tasks::*;

/// The shortest admin API key accepted at start.
pub const MIN_API_KEY_CHARS: usize = 24;

/// Read a secret file, or generate it with `make` and store it 0600. Returns (value, generated).
fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(path = %path.display(), "secret file was readable by others; set to 0600");
            }
            Ok((s.trim().to_owned(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = make();
            crate::pki::write_secret(path, format!("{v}\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            Ok((v, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub use crate::pki::random_token;

pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod {}", dir.display()))?;
    Ok(())
}

pub async fn run(mut cfg: ServeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    if cfg.public_url.is_none() {
        // Default: this host (or the ACME name) on the port actually bound
        // (also when --listen used port 0).
        let scheme = if cfg.plain_http { "http" } else { "https" };
        let host = cfg.acme_domains.first().map(String::as_str).unwrap_or("localhost");
        cfg.public_url = Some(match addr.port() {
            443 if scheme == "https" => format!("https://{host}"),
            p => format!("{scheme}://{host}:{p}"),
        });
    }
    let demo = demo::prepare(&mut cfg).await?;
    let app = build(&cfg).await?;
    if let Some(d) = &demo {
        d.start(app.clone(), &cfg).await?;
    }
    let (mdm, pki, topic, pusher) = (app.mdm.clone(), app.pki.clone(), app.mdm.topic.get(), app.pusher.clone());
    let tls = app.tls.clone();
    if let (Some(acme), Some(t)) = (app.acme.clone(), &tls) {
        if cfg.acme_http_listen != "off" {
            let l = tokio::net::TcpListener::bind(&cfg.acme_http_listen).await.with_context(|| {
                format!(
                    "binding --acme-http-listen {} (use `off` if port 80 reaches the main listener)",
                    cfg.acme_http_listen
                )
            })?;
            let r = crate::http::acme::challenge_router(app.clone(), cfg.public_url());
            // The same timeouts as the main listener, and a small cap of its own inside the
            // main cap's reserve, so port 80 cannot use up the process's open files.
            let limits = crate::http::listener::ConnLimits {
                max_connections: ACME_PORT_MAX_CONNECTIONS,
                ..conn_limits(&cfg.limits)
            };
            tokio::spawn(crate::http::listener::serve(l, r, None, limits, std::future::pending()));
        }
        spawn_acme(acme, t.clone(), app.mdm.store.clone(), &app.instance);
    }
    let router = router(app);
    if let Some(t) = &tls {
        spawn_tls_reload(t.clone());
    }
    let _ = &pki;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, public_url = %cfg.public_url(), %topic, "mdmd serving");
    println!("mdmd listening on {scheme}://{addr}");
    println!(
        "console: {}/ui/ (sign in as admin with the API key, or an account: mdmd accounts add NAME --role operator)",
        cfg.public_url()
    );
    if let Some(d) = &demo {
        println!("{}", d.banner(&cfg));
    }
    if let Some(host) = loopback_host(&cfg.public_url()) {
        tracing::warn!(public_url = %cfg.public_url(), "the public URL names this machine only ({host}): phones cannot reach it; set --public-url");
        // Loud for a person at a terminal; the log line above is for the rest.
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!(
                "WARNING: --public-url is {} ({host} is this machine only). Phones cannot reach it: enrollment links,\n\
             invitations and their QR codes will not work on a real device. Give the name devices use:\n\
             mdmd serve --public-url https://mdm.example.com (MDMD_PUBLIC_URL). Simulated devices are fine.",
                cfg.public_url()
            );
        }
    }
    let _ = std::io::stdout().flush();
    crate::http::listener::serve(listener, router, tls, conn_limits(&cfg.limits), shutdown_signal()).await;
    mdm.flush_seen().await.ok();
    pusher.flush().await;
    Ok(())
}

/// The host of `url` when it is loopback (`localhost`, 127.0.0.0/8, `::1`):
/// a public URL no phone can reach.
fn loopback_host(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    let loopback = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(a) => a.is_loopback() || a.is_unspecified(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    loopback.then_some(host)
}

/// Connections the plain-HTTP ACME challenge port serves at once (well inside the
/// reserve of open files that `--max-connections`'s default leaves).
const ACME_PORT_MAX_CONNECTIONS: usize = 64;

/// The listener's limits from the `Limits` flags.
pub fn conn_limits(c: &crate::config::LimitsConfig) -> crate::http::listener::ConnLimits {
    use std::time::Duration;
    crate::http::listener::ConnLimits {
        handshake_timeout: Duration::from_secs(c.tls_handshake_timeout.max(1)),
        header_read_timeout: Duration::from_secs(c.header_read_timeout.max(1)),
        idle_timeout: Duration::from_secs(c.idle_timeout.max(1)),
        max_connections: c.connection_cap(),
    }
}

/// Every route: the devices' (`http`) and the admin API (`api`), with the
/// API's authentication around the latter.
pub fn router(app: Arc<App>) -> axum::Router {
    let api = crate::api::router()
        .layer(axum::extract::DefaultBodyLimit::max(app.max_api_body))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), crate::api::auth));
    crate::http::router(app.max_body)
        .merge(api)
        .merge(crate::console::router(app.clone()))
        .layer(axum::middleware::from_fn(crate::http::track))
        .with_state(app)
}

/// Everything but the listener: secrets, CA, store, services and background
/// tasks, as the app the HTTP layer serves (also used by benches).
pub async fn build(cfg: &ServeConfig) -> anyhow::Result<Arc<App>> {
    ensure_dir(&cfg.data_dir)?;
    ensure_dir(&cfg.certs_dir)?;
    let api_key = match cfg.api_key.clone() {
        Some(k) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => {
            let path = cfg.data_dir.join("api-key");
            let (k, generated) = load_or_create(&path, || random_token(24))?;
            if generated {
                println!("Generated admin API key (stored 0600 in {}): {k}", path.display());
            }
            k
        }
    };
    if api_key.chars().count() < MIN_API_KEY_CHARS {
        anyhow::bail!(
            "the admin API key (--api-key / MDMD_API_KEY, or {}) has {} characters; it must have at least {MIN_API_KEY_CHARS} \
             (generate one with `openssl rand -hex 24`)",
            cfg.data_dir.join("api-key").display(),
            api_key.chars().count()
        );
    }
    // A static SCEP challenge is a credential that enrolls a device: as strong as the admin key.
    if let Some(c) = cfg.scep_challenge.as_deref().filter(|c| !c.is_empty()) {
        if c.chars().count() < MIN_API_KEY_CHARS {
            anyhow::bail!(
                "the static SCEP challenge (--scep-challenge / MDMD_SCEP_CHALLENGE) has {} characters; it must have at \
                 least {MIN_API_KEY_CHARS} (generate one with `openssl rand -hex 24`)",
                c.chars().count()
            );
        }
    }
    let store = open_store(cfg).await?;
    let topic = match cfg.topic.clone() {
        Some(t) => t,
        None => {
            // One topic for every instance on the database: the first one stored wins.
            let local = load_or_create(&cfg.data_dir.join("topic"), || {
                format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4())
            })?
            .0;
            let shared = store
                .setting_or_insert("topic", local.into_bytes(), crate::clock::now())
                .await
                .context("reading the shared topic")?;
            String::from_utf8(shared.value).context("stored topic is not UTF-8")?
        }
    };
    if !topic.starts_with("com.apple.mgmt.") {
        anyhow::bail!("topic {topic:?} must start with com.apple.mgmt.");
    }
    let ca_cfg = CaConfig {
        certs_dir: cfg.certs_dir.clone(),
        public_host: cfg.public_host(),
        ca_cert: cfg.ca_cert.clone(),
        ca_key: cfg.ca_key.clone(),
        tls_cert: cfg.tls_cert.clone(),
        tls_key: cfg.tls_key.clone(),
        signer_cert: cfg.signer_cert.clone(),
        signer_key: cfg.signer_key.clone(),
        organization: cfg.organization.clone(),
    };
    let pki = Arc::new(
        tokio::task::spawn_blocking(move || Pki::load_or_create(&ca_cfg))
            .await?
            .context("setting up the CA")?,
    );
    let secrets = Arc::new(
        crate::pki::secrets::SecretBox::load_or_create(&cfg.certs_dir.join("secrets.keys")).context("loading the secrets keyring")?,
    );
    // Composition, bottom-up: every part is built whole from the parts below
    // it (no setters after the fact). The two cycles — the `Ddm` queues through
    // the `Mdm` that owns it, and the `Commander` (the `Mdm`'s identity hook)
    // owns the `Mdm` — are closed with `Arc::new_cyclic`: the inner part gets a
    // weak reference to the outer one while both are built.
    let topic = crate::push::Topic::new(topic);
    let instance = crate::ops::lease::instance_id();
    for u in &cfg.webhook_urls {
        match reqwest::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => {}
            _ => anyhow::bail!("--webhook-url {u:?}: an http(s) URL"),
        }
    }
    let webhooks = Arc::new(
        crate::ops::webhooks::Webhooks::new(
            store.clone(),
            crate::ops::webhooks::WebhookConfig {
                urls: cfg.webhook_urls.clone(),
                secret: cfg.webhook_secret.clone().filter(|s| !s.is_empty()),
                max_age: cfg.webhook_max_age_hours.max(1) * 3600,
                timeout: std::time::Duration::from_secs(10),
            },
            secrets.clone(),
        )
        .map_err(|e| anyhow::anyhow!("webhook client: {e}"))?,
    );
    let apns = crate::push::client::ApnsClient::new(crate::push::client::ApnsConfig {
        base_url: cfg.apns_url.clone().unwrap_or_else(|| {
            if cfg.apns_sandbox {
                crate::push::client::SANDBOX.into()
            } else {
                crate::push::client::PRODUCTION.into()
            }
        }),
        extra_ca: cfg.apns_ca.clone(),
        expiration_secs: cfg.apns_expiration,
        timeout: std::time::Duration::from_secs(15),
    })?;
    let pusher = crate::push::Pusher::new(
        apns,
        store.clone(),
        secrets.clone(),
        topic.clone(),
        crate::push::cert::PushCertFiles::in_dir(&cfg.certs_dir),
        crate::push::PushConfig {
            coalesce: std::time::Duration::from_millis(cfg.push_coalesce_ms),
            max_attempts: cfg.push_max_attempts.max(1),
            backoff_base: std::time::Duration::from_millis(cfg.push_backoff_ms.max(1)),
            max_in_flight: cfg.push_max_in_flight.max(1),
            repush_after: cfg.repush_after,
            repush_every: std::time::Duration::from_secs(cfg.repush_interval.max(1)),
            instance: instance.clone(),
            cert_refresh: std::time::Duration::from_millis(cfg.shared_refresh_ms.max(100)),
        },
        Some(webhooks.clone()),
    );
    match pusher.start().await.context("loading the push certificate")? {
        Some(t) => {
            if cfg.topic.as_ref().is_some_and(|flag| *flag != t) {
                anyhow::bail!(
                    "--topic {:?} differs from the push certificate's topic {t:?}",
                    cfg.topic.clone().unwrap_or_default()
                );
            }
            topic.set(t);
        }
        // The demo sets its own right after (`demo::Demo::start`).
        None if cfg.demo.is_some() => {}
        None => tracing::warn!(
            topic = %topic.get(),
            "no push certificate (mdmd push-cert set): devices cannot be woken, and devices enrolled now use this placeholder topic and will have to re-enroll once a certificate is set"
        ),
    }
    let policy = Arc::new(
        crate::service::access::compliance::PolicyFile::load(cfg.compliance_policy.clone())
            .map_err(|e| anyhow::anyhow!("compliance policy: {e}"))?,
    );
    if cfg.reenroll_policy == "open" {
        tracing::warn!("--reenroll-policy open: any identity from this CA may take over an enrolled device (labs only)");
    }
    let (tls, acme) = if cfg.plain_http {
        (None, None)
    } else if !cfg.acme_domains.is_empty() {
        let (c, k) = (cfg.certs_dir.join("acme.pem"), cfg.certs_dir.join("acme.key"));
        let root = match &cfg.acme_root {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading --acme-root {}", p.display()))?),
            None => None,
        };
        let acme = crate::ops::acme::Acme::new(
            store.clone(),
            secrets.clone(),
            crate::ops::acme::AcmeConfig {
                domains: cfg.acme_domains.clone(),
                directory: cfg.acme_directory.clone(),
                contacts: cfg.acme_emails.clone(),
                root,
                renew_before: cfg.acme_renew_days.max(1) * 86_400,
                cert_path: c.clone(),
                key_path: k.clone(),
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Until the CA has issued one, serve our own certificate.
        let tls = Arc::new(crate::app::LiveTls::new(crate::http::listener::acceptor(&pki)?, c, k));
        if tls.cert_path.exists() {
            if let Err(e) = tls.reload() {
                tracing::warn!(error = %e, "the ACME certificate on disk is not usable; serving our own until a new one is issued");
            }
        }
        (Some(tls), Some(Arc::new(acme)))
    } else {
        let (c, k) = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => (cfg.certs_dir.join("tls.pem"), cfg.certs_dir.join("tls.key")),
        };
        (
            Some(Arc::new(crate::app::LiveTls::new(crate::http::listener::acceptor(&pki)?, c, k))),
            None,
        )
    };
    let enroll_cfg = EnrollConfig {
        public_url: cfg.public_url(),
        organization: cfg.organization.clone(),
        identity_days: cfg.identity_days.max(1),
        challenge_ttl: cfg.challenge_ttl.max(1),
        static_challenge: cfg.scep_challenge.clone().filter(|c| !c.is_empty()),
        renew_before_days: cfg.renew_before_days,
        max_key_bits: cfg.scep_max_key_bits as usize,
        three_phase: cfg.enroll_flow != "single",
        device_attestation_ca: match &cfg.device_attestation_ca {
            Some(p) => {
                let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                let mut b = openssl::x509::store::X509StoreBuilder::new()?;
                for c in openssl::x509::X509::stack_from_pem(&pem).with_context(|| format!("{}: not PEM certificates", p.display()))? {
                    b.add_cert(c)?;
                }
                b.set_purpose(openssl::x509::X509PurposeId::ANY)?;
                Some(Arc::new(b.build()))
            }
            None => None,
        },
    };
    let enroller = Arc::new(
        Enroller::new(pki.clone(), store.clone(), enroll_cfg, topic.clone())
            .with_webhooks(webhooks.clone())
            .with_tls(tls.clone()),
    );
    let mut enroll_users = Vec::new();
    for u in &cfg.enroll_users {
        match u.split_once(':') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => enroll_users.push((n.to_owned(), p.to_owned())),
            _ => anyhow::bail!("--enroll-user takes USER:PASSWORD"),
        }
    }
    let access = Arc::new(
        crate::service::access::tokens::Access::load_or_create(
            &cfg.certs_dir,
            store.clone(),
            secrets.clone(),
            &cfg.public_url(),
            cfg.device_token_days.max(1) * 86_400,
        )
        .context("access-token signing key")?,
    );
    let orgcas = Arc::new(
        crate::service::credentials::orgca::OrgCas::new(
            store.clone(),
            secrets.clone(),
            crate::service::credentials::orgca::OrgCaConfig {
                public_url: cfg.public_url(),
                proxy_ttl: cfg.scep_proxy_token_days.max(1) * 86_400,
                renew_before: cfg.org_cert_renew_days.max(0) * 86_400,
                timeout: std::time::Duration::from_secs(cfg.ca_timeout.clamp(1, 300)),
            },
        )
        .map_err(|e| anyhow::anyhow!("organisation CA client: {e}"))?,
    );
    let derived = crate::service::credentials::derived::Derived::new(store.clone(), secrets.clone(), cfg.derived_token_hours.max(1) * 3600);
    let derived = Arc::new(match cfg.derived_revocation_interval {
        0 => derived,
        every => derived.with_revocation(crate::service::credentials::revocation::Checker::new(
            crate::service::credentials::revocation::RevocationConfig {
                every,
                timeout: std::time::Duration::from_secs(cfg.derived_revocation_timeout.clamp(1, 300)),
                max_crl_bytes: cfg.derived_crl_max_mb.clamp(1, 1024) << 20,
                allow: cfg.derived_revocation_allow.clone(),
            },
        )?),
    });
    let ddm_cfg = crate::service::ddm::DdmConfig {
        status_subscriptions: cfg.ddm_status_subscriptions,
        enable_after_enroll: cfg.ddm_enable,
        coalesce: std::time::Duration::from_millis(cfg.ddm_coalesce_ms),
        public_url: cfg.public_url(),
    };
    let commander_cfg = CommanderConfig {
        public_url: cfg.public_url(),
        encrypt_profiles: cfg.encrypt_profiles,
    };
    let commander = Arc::new_cyclic(|hook: &std::sync::Weak<Commander>| {
        let hook: std::sync::Weak<dyn crate::service::IdentityHook> = hook.clone();
        let mdm = Arc::new_cyclic(|me: &std::sync::Weak<Mdm>| {
            Mdm::new(store.clone(), topic.clone(), pusher.clone(), secrets.clone())
                .with_reenroll_policy(cfg.reenroll_policy != "open")
                .with_inventory(policy, cfg.inventory_interval.max(0))
                .with_webhooks(webhooks.clone())
                .with_ddm(crate::service::ddm::Ddm::new(store.clone(), ddm_cfg, me.clone()))
                .with_identity_hook(hook)
        });
        Commander::new(mdm, pki.clone(), commander_cfg)
            .with_access(access)
            .with_credentials(orgcas, derived)
    });
    let mdm = commander.mdm.clone();
    let fleet = crate::service::fleet::Fleet::new(commander.clone(), mdm.nudges.clone(), &instance);
    let apps = apps::build(
        &cfg.apps,
        &cfg.public_url(),
        store.clone(),
        secrets.clone(),
        commander.clone(),
        &instance,
    )
    .await?;
    fleet.set_apps(apps.clone());
    {
        let o: Arc<dyn crate::service::DeviceObserver> = apps.clone();
        mdm.set_observer(Arc::downgrade(&o));
    }

    // Background work, now that every part exists.
    spawn_inventory(mdm.clone(), cfg.inventory_sweep.max(10), &instance);
    mdm.spawn_seen_flusher();
    // Tokens stored before sealing (or under a rotated-out key) are resealed now.
    match mdm.reseal_all().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(enrollments = n, "stored tokens resealed under the current key"),
        Err(e) => tracing::warn!(error = %e, "could not reseal stored tokens"),
    }
    spawn_renewals(enroller.clone(), mdm.clone(), cfg.renew_interval.max(60), &instance);
    spawn_secret_pruning(
        store.clone(),
        cfg.limits.secret_prune_interval.max(1),
        cfg.limits.secret_grace.max(0),
        &instance,
    );
    spawn_fanout_settling(store.clone(), &instance);
    spawn_token_renewal(commander.clone(), &instance);
    spawn_org_cert_renewal(commander.clone(), &instance);
    crate::service::credentials::checks::spawn(
        commander.clone(),
        std::time::Duration::from_secs(cfg.derived_check_interval.max(1)),
        &instance,
    );
    if webhooks.enabled() {
        spawn_webhook_delivery(webhooks, store.clone(), &instance);
    }
    if let Some(ddm) = mdm.ddm() {
        ddm.start();
    }
    if let Some(dir) = &cfg.profiles_dir {
        let (ok, bad) = commander.load_dir(dir).await;
        if ok + bad > 0 {
            tracing::info!(dir = %dir.display(), loaded = ok, skipped = bad, "profile templates loaded");
        }
    }
    fleet.start();
    if let Some(dir) = cfg.blueprints_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
        let (ok, bad) = fleet.load_dir(dir).await;
        if ok + bad > 0 {
            tracing::info!(dir = %dir.display(), loaded = ok, skipped = bad, "blueprints loaded");
        }
    }
    spawn_reconcile_sweep(fleet.clone(), cfg.reconcile_interval.max(10), &instance);
    let directory = Arc::new(directory::build(&cfg.directory, &cfg.public_url(), secrets.clone())?);
    if directory.enabled() {
        // Every instance checks its own way to the directory: a warning in /v1/health, not a failed sign-in, says it first.
        let d = directory.clone();
        tokio::spawn(async move {
            loop {
                d.check_now().await;
                tokio::time::sleep(std::time::Duration::from_secs(300)).await;
            }
        });
    }
    let ade = ade::build(
        &cfg.ade,
        &cfg.public_url(),
        store.clone(),
        secrets.clone(),
        commander.clone(),
        enroller.clone(),
        fleet.clone(),
        &instance,
    )
    .await?;
    apps.start();
    let app = Arc::new(App {
        ade,
        apps,
        directory,
        mdm: mdm.clone(),
        pki: pki.clone(),
        enroller,
        commander,
        fleet,
        pusher,
        plain_http: cfg.plain_http,
        enroll_users,
        enroll_networks: crate::service::enroll::netpolicy::NetPolicy::new(&cfg.enroll_networks, &cfg.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--enroll-network / --trusted-proxy: {e}"))?
            .with_header(
                crate::service::enroll::netpolicy::ForwardedHeader::parse(&cfg.forwarded_header)
                    .map_err(|e| anyhow::anyhow!("--forwarded-header: {e}"))?,
            ),
        api_key,
        accounts: Arc::new(crate::service::access::accounts::Accounts::with_hash_permits(
            mdm.store.clone(),
            cfg.limits.auth_hash_concurrency,
        )),
        limiter: Arc::new(crate::service::access::limits::CredentialLimiter::new(
            crate::service::access::limits::LimitConfig {
                per_source: cfg.limits.auth_fail_per_source,
                per_account: cfg.limits.auth_fail_per_account,
                window: std::time::Duration::from_secs(cfg.limits.auth_fail_window.max(1)),
                max_entries: cfg.limits.limiter_entries,
            },
        )),
        enroll_budget: Arc::new(crate::service::access::limits::SourceBudget::new(
            cfg.limits.enroll_per_source,
            std::time::Duration::from_secs(cfg.limits.enroll_window.max(1)),
            cfg.limits.limiter_entries,
        )),
        stats: crate::app::Stats::default(),
        max_body: cfg.max_body,
        max_api_body: cfg.max_api_body,
        tls,
        acme,
        instance: instance.clone(),
        metrics_token: cfg.metrics_token.clone().filter(|t| !t.is_empty()),
        metrics_public: cfg.metrics_public,
        disk_paths: vec![cfg.data_dir.clone(), cfg.certs_dir.clone()],
    });
    Ok(app)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// The store `cfg` names: PostgreSQL with `--database-url`, else redb in the data dir.
pub async fn open_store(cfg: &ServeConfig) -> anyhow::Result<Arc<dyn crate::store::Store>> {
    match &cfg.database_url {
        Some(url) if !url.is_empty() => {
            let pc = pg_config(cfg, url);
            let shown = crate::store::postgres::redact(url);
            let s = crate::store::postgres::PgStore::connect(pc)
                .await
                .with_context(|| format!("opening PostgreSQL at {shown}"))?
                .with_fanout(fanout_policy(cfg));
            tracing::info!(database = %shown, "store: PostgreSQL");
            Ok(Arc::new(s))
        }
        _ => {
            let db_path = cfg.data_dir.join("mdmd.redb");
            let store = RedbStore::open_with_cache(&db_path, cfg.db_cache_mb.max(16) << 20)
                .context("opening the database")?
                .with_fanout(fanout_policy(cfg));
            // The database holds escrowed tokens: owner only.
            std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("chmod {}", db_path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

fn fanout_policy(cfg: &ServeConfig) -> crate::store::FanoutPolicy {
    crate::store::FanoutPolicy {
        min_targets: usize::try_from(cfg.fanout_min_targets).unwrap_or(usize::MAX).max(1),
        ..Default::default()
    }
}

pub fn pg_config(cfg: &ServeConfig, url: &str) -> crate::store::postgres::PgConfig {
    crate::store::postgres::PgConfig {
        url: url.to_owned(),
        pool_size: cfg.database_pool.max(2),
        writers: (cfg.database_pool / 4).clamp(1, 8),
        op_timeout: std::time::Duration::from_secs(cfg.database_timeout.max(1)),
        ca_file: cfg.database_ca.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_public_urls_are_named() {
        for u in [
            "https://localhost:8443",
            "https://LOCALHOST",
            "https://127.0.0.1:8443",
            "https://127.9.9.9",
            "https://[::1]:8443",
            "https://0.0.0.0",
            "https://mdm.localhost",
        ] {
            assert!(loopback_host(u).is_some(), "{u}");
        }
        for u in [
            "https://mdm.example.com",
            "https://192.168.1.10:8443",
            "https://[2001:db8::1]",
            "https://localhost.example.com",
            "not a url",
        ] {
            assert!(loopback_host(u).is_none(), "{u}");
        }
    }
}
