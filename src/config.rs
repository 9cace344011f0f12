//! Server configuration: flags with `MDMD_*` environment equivalents.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (devices, SCEP and the admin API share it).
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: String,
    /// Where the database and generated secrets live (created on first start).
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded store, e.g.
    /// `postgres://mdmd:PASSWORD@db.example.com/mdmd?sslmode=require`. Every
    /// instance on one database (same certs dir contents) serves any request.
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Page cache of the embedded store, in MiB (the store itself may be larger).
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_DB_CACHE_MB", default_value_t = 256)]
    pub db_cache_mb: usize,
    /// A command (without a profile) to at least this many devices is stored
    /// once, as a fan-out, instead of one queue entry per device (both stores).
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_FANOUT_MIN_TARGETS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub fanout_min_targets: u64,
    /// Verify the database's TLS certificate against this CA (PEM).
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// Database connections per instance.
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: usize,
    /// Give up on any one database operation after this many seconds (the
    /// device gets a 503 and retries).
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_DATABASE_TIMEOUT", default_value_t = 10)]
    pub database_timeout: u64,
    /// How often to pick up shared settings changed on another instance
    /// (the push certificate), in milliseconds.
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_SHARED_REFRESH_MS", default_value_t = 3000)]
    pub shared_refresh_ms: u64,
    /// Conditional enrollment: serve the enrollment profile only to clients on
    /// these networks (CIDR, repeat or comma-separate), e.g. the corporate Wi-Fi
    /// and VPN ranges. Empty: from anywhere (credentials or an invitation still needed).
    #[arg(help_heading = "Enrollment")]
    #[arg(long = "enroll-network", env = "MDMD_ENROLL_NETWORKS", value_delimiter = ',')]
    pub enroll_networks: Vec<String>,
    /// Proxies (CIDR) whose X-Forwarded-For / Forwarded header names the client.
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long = "trusted-proxy", env = "MDMD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// The one header the trusted proxies write the client's address into:
    /// `x-forwarded-for` or `forwarded` (RFC 7239). The other is ignored, so a
    /// client cannot name its own address through a proxy that only appends.
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_FORWARDED_HEADER", default_value = "x-forwarded-for")]
    pub forwarded_header: String,
    /// Lifetime of per-device access tokens (`$DEVICE_ACCESS_TOKEN`), in days;
    /// apps get a new one when half of it has passed.
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long, env = "MDMD_DEVICE_TOKEN_DAYS", default_value_t = 30)]
    pub device_token_days: i64,
    /// How long a SCEP proxy token (`$SCEP_PROXY_URL:CA` in a profile) stays
    /// valid, in days: the device must run SCEP within this time.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_SCEP_PROXY_TOKEN_DAYS", default_value_t = 7)]
    pub scep_proxy_token_days: i64,
    /// Re-install a profile this many days before the certificate an
    /// organisation CA issued through it expires.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_ORG_CERT_RENEW_DAYS", default_value_t = 30)]
    pub org_cert_renew_days: i64,
    /// Bound on every request to an organisation CA (seconds); a CA slower
    /// than this is a 504 for the device.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_CA_TIMEOUT", default_value_t = 15)]
    pub ca_timeout: u64,
    /// Lifetime of a provider app's upload token (`$DERIVED_CREDENTIAL_TOKEN`),
    /// in hours; the app configuration is re-sent with a new one halfway.
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long, env = "MDMD_DERIVED_TOKEN_HOURS", default_value_t = 24)]
    pub derived_token_hours: i64,
    /// How often one instance looks at the derived credentials, in seconds:
    /// an expired one ends (its profiles leave the devices and wait again),
    /// and those due are checked for revocation.
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long, env = "MDMD_DERIVED_CHECK_INTERVAL", default_value_t = 600)]
    pub derived_check_interval: u64,
    /// Ask each derived credential's OCSP responder or CRL (named in its
    /// certificate) at most this often, in seconds; 0: never.
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long, env = "MDMD_DERIVED_REVOCATION_INTERVAL", default_value_t = 3600)]
    pub derived_revocation_interval: i64,
    /// Bound on each CRL download or OCSP request (seconds).
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long, env = "MDMD_DERIVED_REVOCATION_TIMEOUT", default_value_t = 10)]
    pub derived_revocation_timeout: u64,
    /// The largest CRL read, in MiB.
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long, env = "MDMD_DERIVED_CRL_MAX_MB", default_value_t = 32)]
    pub derived_crl_max_mb: usize,
    /// Networks (CIDR) revocation checks may reach although refused by
    /// default: loopback, link-local (cloud metadata), e.g. `127.0.0.1/32`
    /// for a responder on this host. Repeat or comma-separate.
    #[arg(help_heading = "Access tokens and derived credentials")]
    #[arg(long = "derived-revocation-allow", env = "MDMD_DERIVED_REVOCATION_ALLOW", value_delimiter = ',')]
    pub derived_revocation_allow: Vec<String>,
    /// Post every check-in and command result here (MicroMDM/NanoMDM webhook JSON); repeatable.
    #[arg(help_heading = "Admin API, metrics and webhooks")]
    #[arg(long = "webhook-url", env = "MDMD_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,
    /// Sign webhook bodies: `X-Hmac-Signature: base64(HMAC-SHA256(secret, body))`.
    #[arg(help_heading = "Admin API, metrics and webhooks")]
    #[arg(long, env = "MDMD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Give an undelivered webhook event up after this many hours.
    #[arg(help_heading = "Admin API, metrics and webhooks")]
    #[arg(long, env = "MDMD_WEBHOOK_MAX_AGE_HOURS", default_value_t = 24)]
    pub webhook_max_age_hours: i64,
    /// A bearer token Prometheus may use for `GET /metrics` (the admin key works too).
    #[arg(help_heading = "Admin API, metrics and webhooks")]
    #[arg(long, env = "MDMD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve `GET /metrics` without credentials (behind a private network only).
    #[arg(help_heading = "Admin API, metrics and webhooks")]
    #[arg(long, env = "MDMD_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Compliance policy (TOML, see docs/compliance.md); re-read when it changes.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_COMPLIANCE_POLICY")]
    pub compliance_policy: Option<PathBuf>,
    /// Refresh each device's inventory (DeviceInformation, SecurityInfo,
    /// CertificateList, ProfileList, InstalledApplicationList) this often, in
    /// seconds, and right after it enrolls; never more often than it checks in.
    /// 0: only when an admin asks.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_INVENTORY_INTERVAL", default_value_t = 4 * 3600)]
    pub inventory_interval: i64,
    /// How often to look for stale inventory and re-evaluate compliance, in seconds.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_INVENTORY_SWEEP", default_value_t = 900)]
    pub inventory_sweep: u64,
    /// How often one instance compares every device with its blueprints, in
    /// seconds (devices are also reconciled as their facts change).
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_RECONCILE_INTERVAL", default_value_t = 900)]
    pub reconcile_interval: u64,
    /// Where certificates and keys live (created on first start).
    #[arg(help_heading = "Storage")]
    #[arg(long, env = "MDMD_CERTS_DIR", default_value = "./certs")]
    pub certs_dir: PathBuf,
    /// The URL devices use to reach this server; it goes into profiles.
    /// Default: https://localhost:<port>.
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Admin API key. If unset, one is generated on first start, stored 0600
    /// in the data dir as `api-key`, and printed once.
    #[arg(help_heading = "Admin API, metrics and webhooks")]
    #[arg(long, env = "MDMD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// APNs topic devices enroll with: the UID of your MDM push certificate.
    /// Default: a generated `com.apple.mgmt.External.<uuid>` kept in the data dir.
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_TOPIC")]
    pub topic: Option<String>,
    /// Largest accepted device request body, in bytes.
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_MAX_BODY", default_value_t = 4 * 1024 * 1024)]
    pub max_body: usize,
    /// Serve plain HTTP: only behind a TLS-terminating proxy, which must pass
    /// the device's client certificate in an RFC 9440 `Client-Cert` header
    /// (or leave authentication to `Mdm-Signature`).
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_PLAIN_HTTP")]
    pub plain_http: bool,
    /// Use this CA certificate (PEM) instead of the generated one (with --ca-key).
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// Private key (PEM) of --ca-cert.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Use this TLS certificate chain (PEM, e.g. from a public CA) instead of one from our CA.
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Obtain and renew the TLS certificate over ACME (RFC 8555, e.g. Let's
    /// Encrypt) for this name; repeatable (the first is the public URL's host
    /// by default). The enrollment profile then installs no private root.
    #[arg(help_heading = "ACME (public TLS certificate)")]
    #[arg(long = "acme-domain", env = "MDMD_ACME_DOMAINS", value_delimiter = ',', conflicts_with_all = ["tls_cert", "plain_http"])]
    pub acme_domains: Vec<String>,
    /// The ACME CA's directory URL.
    #[arg(
        long,
        env = "MDMD_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    #[arg(help_heading = "ACME (public TLS certificate)")]
    pub acme_directory: String,
    /// Contact address for the ACME account (expiry notices); repeatable.
    #[arg(help_heading = "ACME (public TLS certificate)")]
    #[arg(long = "acme-email", env = "MDMD_ACME_EMAILS", value_delimiter = ',')]
    pub acme_emails: Vec<String>,
    /// Trust this CA (PEM) for the ACME directory's own HTTPS (a test CA such as Pebble's).
    #[arg(help_heading = "ACME (public TLS certificate)")]
    #[arg(long, env = "MDMD_ACME_ROOT")]
    pub acme_root: Option<PathBuf>,
    /// Where to answer HTTP-01 challenges (the CA connects to port 80 of the
    /// domain); `off` when port 80 is forwarded to the main listener instead,
    /// which answers `/.well-known/acme-challenge/` too.
    #[arg(help_heading = "ACME (public TLS certificate)")]
    #[arg(long, env = "MDMD_ACME_HTTP_LISTEN", default_value = "[::]:80")]
    pub acme_http_listen: String,
    /// Renew the ACME certificate this many days before it expires.
    #[arg(help_heading = "ACME (public TLS certificate)")]
    #[arg(long, env = "MDMD_ACME_RENEW_DAYS", default_value_t = 30)]
    pub acme_renew_days: i64,
    /// Turn declarative management on (a DeclarativeManagement command) when an
    /// iOS 15+ device enrolls.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_DDM_ENABLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub ddm_enable: bool,
    /// Subscribe every device to mdmd's status items (OS version and build,
    /// model, passcode compliance, declaration status, software update state).
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_DDM_STATUS_SUBSCRIPTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub ddm_status_subscriptions: bool,
    /// Collect declaration changes this long (ms) before sending each device one sync command.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_DDM_COALESCE_MS", default_value_t = 500)]
    pub ddm_coalesce_ms: u64,
    /// Sign profiles with this identity (PEM) instead of one from our CA.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_SIGNER_CERT", requires = "signer_key")]
    pub signer_cert: Option<PathBuf>,
    /// Private key (PEM) of --signer-cert.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_SIGNER_KEY", requires = "signer_cert")]
    pub signer_key: Option<PathBuf>,
    /// Organisation name shown in profiles and certificates.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_ORGANIZATION", default_value = "mdmd")]
    pub organization: String,
    /// Validity of issued device identities, in days.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_IDENTITY_DAYS", default_value_t = 365)]
    pub identity_days: u32,
    /// Renew a device identity (re-send the enrollment profile) this many days before it expires.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_RENEW_BEFORE_DAYS", default_value_t = 60)]
    pub renew_before_days: i64,
    /// Largest RSA key (bits) a SCEP request may ask us to certify; smaller
    /// than 2048 bits is always refused. Subjects are bounded too (at most 16
    /// attributes of 64 characters, no CA's name): see `pki::scep::policy`.
    #[arg(long, env = "MDMD_SCEP_MAX_KEY_BITS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(2048..=16384), help_heading = "Certificates (CA, SCEP, profile signing)")]
    pub scep_max_key_bits: u32,
    /// How often to look for identities to renew, in seconds.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_RENEW_INTERVAL", default_value_t = 6 * 3600)]
    pub renew_interval: u64,
    /// Lifetime of the single-use SCEP challenge in a downloaded profile, in seconds.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_CHALLENGE_TTL", default_value_t = 3600)]
    pub challenge_ttl: i64,
    /// A static SCEP challenge accepted in addition to the single-use ones (optional; at
    /// least 24 characters: it enrolls a device).
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_SCEP_CHALLENGE", hide_env_values = true)]
    pub scep_challenge: Option<String>,
    /// Who may download the enrollment profile with HTTP basic auth: USER:PASSWORD
    /// (repeat the flag, or comma-separate in MDMD_ENROLL_USERS).
    #[arg(help_heading = "Enrollment")]
    #[arg(long = "enroll-user", env = "MDMD_ENROLL_USERS", value_delimiter = ',', hide_env_values = true)]
    pub enroll_users: Vec<String>,
    /// Load every `*.mobileconfig` in this folder as a profile template at
    /// start (validated; an invalid file is logged and skipped). Empty: none.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_PROFILES_DIR", default_value = "./profiles")]
    pub profiles_dir: Option<PathBuf>,
    /// Load every `*.json` in this folder as a blueprint at start, named
    /// after the file (`sales.json` → `sales`; checked like the API's; an
    /// invalid file is logged and skipped). Empty: none.
    #[arg(help_heading = "Fleet policy (profiles, blueprints, compliance, inventory, DDM)")]
    #[arg(long, env = "MDMD_BLUEPRINTS_DIR", default_value = "./blueprints")]
    pub blueprints_dir: Option<PathBuf>,
    /// Encrypt every profile's payloads to its device's identity certificate
    /// (EncryptedPayloadContent). `--encrypt-profiles false` sends them signed only.
    #[arg(help_heading = "Certificates (CA, SCEP, profile signing)")]
    #[arg(long, env = "MDMD_ENCRYPT_PROFILES", default_value_t = true, action = clap::ArgAction::Set)]
    pub encrypt_profiles: bool,
    /// APNs base URL. Default: Apple's production host (`--apns-sandbox` for the sandbox);
    /// a local APNs stand-in for tests.
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_APNS_URL")]
    pub apns_url: Option<String>,
    /// Use Apple's sandbox APNs host (development devices only).
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_APNS_SANDBOX")]
    pub apns_sandbox: bool,
    /// Also trust this CA (PEM) for the APNs server's certificate (a local stand-in).
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_APNS_CA")]
    pub apns_ca: Option<PathBuf>,
    /// `apns-expiration`: seconds APNs may hold a push for an offline device (0: try once).
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_APNS_EXPIRATION", default_value_t = 86_400)]
    pub apns_expiration: i64,
    /// Wake-ups for one device within this many milliseconds become one push.
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_PUSH_COALESCE_MS", default_value_t = 200)]
    pub push_coalesce_ms: u64,
    /// Attempts per push for retryable failures (429, 5xx, network), with exponential backoff and jitter.
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_PUSH_MAX_ATTEMPTS", default_value_t = 5)]
    pub push_max_attempts: u32,
    /// First retry delay in milliseconds (doubles per attempt).
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_PUSH_BACKOFF_MS", default_value_t = 1000)]
    pub push_backoff_ms: u64,
    /// Pushes in flight at once (HTTP/2 streams).
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_PUSH_MAX_IN_FLIGHT", default_value_t = 1000)]
    pub push_max_in_flight: usize,
    /// Push again a device that has commands waiting and has not checked in for this many seconds (0: never).
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_REPUSH_AFTER", default_value_t = 3600)]
    pub repush_after: i64,
    /// How often to look for such devices, in seconds.
    #[arg(help_heading = "Push (APNs)")]
    #[arg(long, env = "MDMD_REPUSH_INTERVAL", default_value_t = 900)]
    pub repush_interval: u64,
    /// What `GET /mdm/enroll` serves: `three-phase` (Apple's profile service: the device identifies
    /// itself, then gets its SCEP identity, then the MDM profile encrypted to it) or `single` (one
    /// profile with CA, SCEP and MDM payloads; also what `mdmd enroll-profile` gives).
    #[arg(help_heading = "Enrollment")]
    #[arg(long, env = "MDMD_ENROLL_FLOW", default_value = "three-phase", value_parser = ["three-phase", "single"])]
    pub enroll_flow: String,
    /// Apple's device CA certificates (PEM): a phase-1 request must be signed by a device
    /// certificate from them, and only such attested devices may re-enroll over an active enrollment.
    #[arg(help_heading = "Enrollment")]
    #[arg(long, env = "MDMD_DEVICE_ATTESTATION_CA")]
    pub device_attestation_ca: Option<PathBuf>,
    /// Re-enrollment of an active device by another identity: `strict` (default) accepts it only
    /// after the device checked out, through an attested (profile-service) enrollment or our own
    /// renewal, or with an admin's approval (`mdmd devices approve-reenroll`); `open` accepts any
    /// identity our CA issued (labs only: anyone with an enrollment profile can take over a device).
    #[arg(help_heading = "Enrollment")]
    #[arg(long, env = "MDMD_REENROLL_POLICY", default_value = "strict", value_parser = ["strict", "open"])]
    pub reenroll_policy: String,
    /// Largest accepted admin API request body, in bytes (a 100,000-target enqueue is ~5 MB).
    #[arg(help_heading = "Listener and TLS")]
    #[arg(long, env = "MDMD_MAX_API_BODY", default_value_t = 64 * 1024 * 1024)]
    pub max_api_body: usize,
    /// A demo where everything finishes: an enrollment user (demo:demo unless
    /// --enroll-user is given), an APNs stand-in on loopback with a throwaway
    /// push certificate, and N simulated iPhones that enroll over HTTPS, stay
    /// online and answer commands. Refuses a store holding enrollments that
    /// are not the demo's: give it a data dir of its own (`make demo`).
    #[arg(help_heading = "Demo")]
    #[arg(long, env = "MDMD_DEMO", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000),
          conflicts_with_all = ["apns_url", "apns_ca", "apns_sandbox"])]
    pub demo: Option<u32>,
    #[command(flatten)]
    pub limits: LimitsConfig,
    #[command(flatten)]
    pub directory: DirectoryConfig,
    #[command(flatten)]
    pub ade: AdeFlags,
    #[command(flatten)]
    pub apps: AppsFlags,
}

/// Apps: Apps and Books licences and in-house apps. See docs/apps.md.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Apps (Apps and Books licences, in-house apps)")]
pub struct AppsFlags {
    /// Apple's Apps and Books API (the default), or a stand-in: `http://` is allowed only on loopback.
    #[arg(long, env = "MDMD_APPS_AND_BOOKS_URL", default_value = crate::vpp::APPLE_URL)]
    pub apps_and_books_url: String,
    /// Refresh licence counts and App Store versions, and release the licences of devices that
    /// left, this often, in seconds (also on demand: `mdmd apps sync`).
    #[arg(long, env = "MDMD_APPS_SYNC_INTERVAL", default_value_t = 3600)]
    pub apps_sync_interval: u64,
    /// How long the download link of an in-house app sent to a device works, in seconds.
    #[arg(long, env = "MDMD_APP_DOWNLOAD_LIFETIME", default_value_t = 7 * 86_400)]
    pub app_download_lifetime: i64,
    /// The largest in-house app (.ipa) taken, in MiB.
    #[arg(long, env = "MDMD_APP_MAX_SIZE", default_value_t = 2048)]
    pub app_max_size: u64,
    /// How long to wait for Apple to confirm a licence assignment, in seconds.
    #[arg(long, env = "MDMD_APPS_EVENT_TIMEOUT", default_value_t = 60)]
    pub apps_event_timeout: u64,
}

/// Automated Device Enrollment (Apple Business Manager). See docs/ade.md.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Automated Device Enrollment (Apple Business Manager)")]
pub struct AdeFlags {
    /// Apple's ADE API (the default), or a stand-in: `http://` is allowed only on loopback.
    #[arg(long, env = "MDMD_ADE_URL", default_value = crate::ade::APPLE_URL)]
    pub ade_url: String,
    /// Sync devices with Apple this often, in seconds (also on demand: `mdmd ade sync`).
    #[arg(long, env = "MDMD_ADE_SYNC_INTERVAL", default_value_t = 1800)]
    pub ade_sync_interval: u64,
    /// Serve the ADE enrollment profile to serials no sync has seen (a device assigned in ABM
    /// minutes ago). Off: an unknown serial is refused (403).
    #[arg(long, env = "MDMD_ADE_ALLOW_UNKNOWN")]
    pub ade_allow_unknown: bool,
    /// Release a device waiting in Setup Assistant (`await_device_configured`) after this many
    /// seconds even if its blueprint items are still pending, with a warning.
    #[arg(long, env = "MDMD_ADE_AWAIT_TIMEOUT", default_value_t = 1800)]
    pub ade_await_timeout: i64,
    /// Devices asked of Apple per page (1–1000).
    #[arg(long, env = "MDMD_ADE_PAGE_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub ade_page_size: u32,
}

/// Who enrolls and who signs in to the console: the organisation's directory
/// (LDAP) and identity provider (OpenID Connect). See docs/directory.md.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Directory and identity provider")]
pub struct DirectoryConfig {
    /// LDAP server for enrollment sign-in: `ldaps://dc1.example.com` or
    /// `ldap://ldap.example.com` (add --ldap-starttls). Users enroll with their
    /// directory user name and password (search, then bind as them).
    #[arg(long, env = "MDMD_LDAP_URL")]
    pub ldap_url: Option<String>,
    /// Upgrade an `ldap://` connection with StartTLS (refused if the server cannot).
    #[arg(long, env = "MDMD_LDAP_STARTTLS")]
    pub ldap_starttls: bool,
    /// Trust this CA (PEM) for ldaps:// and StartTLS, besides the system's.
    #[arg(long, env = "MDMD_LDAP_CA")]
    pub ldap_ca: Option<PathBuf>,
    /// Where users (and, by default, groups) are searched: `dc=example,dc=com`.
    #[arg(long, env = "MDMD_LDAP_BASE_DN")]
    pub ldap_base_dn: Option<String>,
    /// The service account mdmd searches with (`cn=mdmd,ou=services,dc=example,dc=com`;
    /// Active Directory also takes `mdmd@example.com`). Empty: anonymous search.
    #[arg(long, env = "MDMD_LDAP_BIND_DN")]
    pub ldap_bind_dn: Option<String>,
    /// The service account's password (prefer --ldap-bind-password-file or the
    /// environment: flags show in `ps`). Held in memory only, never stored or logged.
    #[arg(long, env = "MDMD_LDAP_BIND_PASSWORD", hide_env_values = true)]
    pub ldap_bind_password: Option<String>,
    /// Read the service account's password from this file (must not be readable by others).
    #[arg(long, env = "MDMD_LDAP_BIND_PASSWORD_FILE")]
    pub ldap_bind_password_file: Option<PathBuf>,
    /// How a user entry is found; `{user}` is the name typed, escaped (RFC 4515).
    /// Active Directory: `(&(sAMAccountName={user})(!(userAccountControl:1.2.840.113556.1.4.803:=2)))`.
    #[arg(long, env = "MDMD_LDAP_USER_FILTER", default_value = "(uid={user})")]
    pub ldap_user_filter: String,
    /// The attribute holding the user name recorded (AD: `sAMAccountName`).
    #[arg(long, env = "MDMD_LDAP_USERNAME_ATTR", default_value = "uid")]
    pub ldap_username_attr: String,
    /// The attribute holding the email address.
    #[arg(long, env = "MDMD_LDAP_EMAIL_ATTR", default_value = "mail")]
    pub ldap_email_attr: String,
    /// Attributes tried in turn for the full name.
    #[arg(long, env = "MDMD_LDAP_NAME_ATTRS", value_delimiter = ',', default_value = "displayName,cn")]
    pub ldap_name_attrs: Vec<String>,
    /// Where groups are searched when user entries have no `memberOf` (default: --ldap-base-dn).
    #[arg(long, env = "MDMD_LDAP_GROUP_BASE_DN")]
    pub ldap_group_base_dn: Option<String>,
    /// How a user's groups are found without `memberOf`; `{dn}` is the user's DN, escaped.
    #[arg(long, env = "MDMD_LDAP_GROUP_FILTER", default_value = "(|(member={dn})(uniqueMember={dn}))")]
    pub ldap_group_filter: String,
    /// Only members of this group may enroll: the DN of a `groupOfNames` or
    /// `groupOfUniqueNames` (read from the group's `member`/`uniqueMember`, so no `memberOf` is needed).
    #[arg(long, env = "MDMD_LDAP_REQUIRED_GROUP")]
    pub ldap_required_group: Option<String>,
    /// Give up on any one directory or identity-provider call after this many seconds (503).
    #[arg(long, env = "MDMD_DIRECTORY_TIMEOUT", default_value_t = 5)]
    pub directory_timeout: u64,
    /// OpenID Connect issuer for enrollment and console sign-in (its
    /// `/.well-known/openid-configuration` is read): Entra ID
    /// `https://login.microsoftonline.com/TENANT/v2.0`, Okta `https://ORG.okta.com`,
    /// Keycloak `https://HOST/realms/REALM`. Register `PUBLIC_URL/auth/oidc/callback` as redirect URI.
    #[arg(long, env = "MDMD_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The client (application) id registered at the identity provider.
    #[arg(long, env = "MDMD_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// The client secret (prefer the environment or --oidc-client-secret-file). None: a public client (PKCE only).
    #[arg(long, env = "MDMD_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// Read the client secret from this file (must not be readable by others).
    #[arg(long, env = "MDMD_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The name on the "Sign in with …" button.
    #[arg(long, env = "MDMD_OIDC_NAME", default_value = "your organisation")]
    pub oidc_name: String,
    /// Scopes asked for besides `openid` (comma-separated).
    #[arg(long, env = "MDMD_OIDC_SCOPES", value_delimiter = ',', default_value = "email,profile")]
    pub oidc_scopes: Vec<String>,
    /// The ID-token claim holding the user name.
    #[arg(long, env = "MDMD_OIDC_USERNAME_CLAIM", default_value = "preferred_username")]
    pub oidc_username_claim: String,
    /// The ID-token claim holding the groups (Entra ID: `groups`, object ids unless configured otherwise).
    #[arg(long, env = "MDMD_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// Members of this identity-provider group sign in to the console as `admin`.
    #[arg(long, env = "MDMD_OIDC_ADMIN_GROUP")]
    pub oidc_admin_group: Option<String>,
    /// … as `operator`.
    #[arg(long, env = "MDMD_OIDC_OPERATOR_GROUP")]
    pub oidc_operator_group: Option<String>,
    /// … as `read-only`.
    #[arg(long, env = "MDMD_OIDC_READ_ONLY_GROUP")]
    pub oidc_read_only_group: Option<String>,
    /// Only members of this identity-provider group may enroll.
    #[arg(long, env = "MDMD_OIDC_REQUIRED_GROUP")]
    pub oidc_required_group: Option<String>,
    /// Account-driven enrollment (Settings → "Sign in to Work or School Account"):
    /// which kinds `/.well-known/com.apple.remotemanagement` offers — `byod` (User
    /// Enrollment, personal devices), `adde` (account-driven Device Enrollment).
    /// Empty: off. Needs LDAP or OpenID Connect. Serve the well-known path on the
    /// users' email domain (or redirect it here).
    #[arg(long, env = "MDMD_ACCOUNT_DRIVEN", value_delimiter = ',', value_parser = ["byod", "adde"])]
    pub account_driven: Vec<String>,
    /// The Managed Apple Account of an account-driven enrollment: the user's
    /// `email` (default) or `username@DOMAIN` with `domain:DOMAIN`.
    #[arg(long, env = "MDMD_MANAGED_APPLE_ID", default_value = "email")]
    pub managed_apple_id: String,
}

/// Bounded cost of unauthenticated and low-privilege requests.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsConfig {
    /// Failed credential checks (admin key, account secret, console sign-in,
    /// enrollment password) allowed per client address (IPv6: per /64) in
    /// --auth-fail-window; more get 429 with Retry-After. 0: no limit.
    #[arg(long, env = "MDMD_AUTH_FAIL_PER_SOURCE", default_value_t = 10)]
    pub auth_fail_per_source: u32,
    /// Failed checks for one account name in --auth-fail-window after which
    /// addresses that have failed too are refused for it; an address without
    /// failures (the owner) is never refused, so guessing cannot lock anyone out.
    #[arg(long, env = "MDMD_AUTH_FAIL_PER_ACCOUNT", default_value_t = 20)]
    pub auth_fail_per_account: u32,
    /// The window of the failure counts, in seconds.
    #[arg(long, env = "MDMD_AUTH_FAIL_WINDOW", default_value_t = 300)]
    pub auth_fail_window: u64,
    /// Argon2id checks of older account records at once (19 MiB each); new
    /// account secrets are checked with SHA-256 and need none.
    #[arg(long, env = "MDMD_AUTH_HASH_CONCURRENCY", default_value_t = 2)]
    pub auth_hash_concurrency: usize,
    /// Addresses and names each rate limiter remembers (oldest forgotten first).
    #[arg(long, env = "MDMD_LIMITER_ENTRIES", default_value_t = 65_536)]
    pub limiter_entries: usize,
    /// Enrollment profiles and profile-service answers (each makes a single-use
    /// secret) per client address in --enroll-window; more get 429. A device
    /// enrolling takes three (about 1000 devices an hour from one address by
    /// default); raise it, or 0 for no limit, for bulk enrollment or load tests
    /// from one address.
    #[arg(long, env = "MDMD_ENROLL_PER_SOURCE", default_value_t = 3000)]
    pub enroll_per_source: u32,
    /// The window of --enroll-per-source, in seconds.
    #[arg(long, env = "MDMD_ENROLL_WINDOW", default_value_t = 3600)]
    pub enroll_window: u64,
    /// Close a connection whose TLS handshake has not finished after this many seconds.
    #[arg(long, env = "MDMD_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub tls_handshake_timeout: u64,
    /// Close a connection whose request headers have not all arrived after this many seconds.
    #[arg(long, env = "MDMD_HEADER_READ_TIMEOUT", default_value_t = 20)]
    pub header_read_timeout: u64,
    /// Close a connection with no request in flight and no traffic for this many seconds.
    #[arg(long, env = "MDMD_IDLE_TIMEOUT", default_value_t = 120)]
    pub idle_timeout: u64,
    /// Connections served at once; further ones are closed at once (logged
    /// once per episode). 0: the open-file limit less a reserve, at most 10000.
    #[arg(long, env = "MDMD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// How often expired single-use secrets (challenges, invitations, tokens)
    /// are deleted, in seconds (one instance, leased).
    #[arg(long, env = "MDMD_SECRET_PRUNE_INTERVAL", default_value_t = 600)]
    pub secret_prune_interval: u64,
    /// Keep an expired single-use secret this many seconds before deleting it
    /// (so a late device is told "expired", not "unknown").
    #[arg(long, env = "MDMD_SECRET_GRACE", default_value_t = 86_400)]
    pub secret_grace: i64,
}

impl LimitsConfig {
    /// --max-connections, or the open-file limit less a reserve (at most 10000).
    pub fn connection_cap(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
        match soft {
            Some(n) => n.saturating_sub(128).clamp(64, 10_000),
            None => 1000,
        }
    }
}

impl ServeConfig {
    pub fn port(&self) -> u16 {
        self.listen.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(8443)
    }

    pub fn public_url(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://localhost:{}", self.port()))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The host part of the public URL (for the TLS certificate).
    pub fn public_host(&self) -> String {
        let url = self.public_url();
        let rest = url.split("://").nth(1).unwrap_or(&url);
        let hostport = rest.split('/').next().unwrap_or(rest);
        if let Some(v6) = hostport.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6).to_owned();
        }
        hostport.split(':').next().unwrap_or(hostport).to_owned()
    }
}
