//! Shared state of a running server: the services and settings every
//! request handler reaches (`App`), and process counters. It sits below
//! `http` and `api`, which both use it; it knows nothing of either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::service::Mdm;

/// Connections accepted and TLS handshakes completed, for `/v1/stats`.
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
pub static HANDSHAKES: AtomicU64 = AtomicU64::new(0);
/// Handshakes that resumed a TLS session (no signature by the server key).
pub static RESUMED: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub struct Stats {
    pub checkins: AtomicU64,
    pub connects: AtomicU64,
    pub rejected: AtomicU64,
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub use crate::pki::tls::LiveTls;

pub struct App {
    /// Automated Device Enrollment: server tokens, ADE profiles, sync, Setup Assistant.
    pub ade: Arc<crate::service::ade::Ade>,
    /// The app catalog: Apps and Books licences, in-house apps, each device's apps.
    pub apps: Arc<crate::service::apps::Apps>,
    /// The organisation's directory and identity provider (enrollment and console sign-in).
    pub directory: Arc<crate::service::directory::Directory>,
    pub mdm: Arc<Mdm>,
    pub pki: Arc<crate::pki::Pki>,
    pub enroller: Arc<crate::service::enroll::Enroller>,
    /// Admin commands and profiles (validation, per-device copies).
    pub commander: Arc<crate::service::commands::Commander>,
    /// Groups, blueprints and the reconciler.
    pub fleet: Arc<crate::service::fleet::Fleet>,
    /// APNs wake-ups and the push certificate.
    pub pusher: Arc<crate::push::Pusher>,
    /// Behind a TLS-terminating proxy: trust its `Client-Cert` header.
    pub plain_http: bool,
    /// Basic-auth users allowed to download the enrollment profile.
    pub enroll_users: Vec<(String, String)>,
    /// Networks enrollment is allowed from (conditional enrollment).
    pub enroll_networks: crate::service::enroll::netpolicy::NetPolicy,
    pub api_key: String,
    /// Named API accounts with roles.
    pub accounts: Arc<crate::service::access::accounts::Accounts>,
    /// Failed credential checks per source and per account (429 over the limit).
    pub limiter: Arc<crate::service::access::limits::CredentialLimiter>,
    /// Secret-creating enrollment requests per source.
    pub enroll_budget: Arc<crate::service::access::limits::SourceBudget>,
    pub stats: Stats,
    pub max_body: usize,
    pub max_api_body: usize,
    /// A token that may read `/metrics` (besides the admin key).
    pub metrics_token: Option<String>,
    /// Serve `/metrics` without credentials.
    pub metrics_public: bool,
    /// The TLS configuration the listener serves (None with --plain-http).
    pub tls: Option<Arc<LiveTls>>,
    /// ACME certificate management (with --acme-domain).
    pub acme: Option<Arc<crate::ops::acme::Acme>>,
    /// This instance's id (leases, readiness probe).
    pub instance: String,
    /// Where data and certificates live: watched for free space.
    pub disk_paths: Vec<std::path::PathBuf>,
}
