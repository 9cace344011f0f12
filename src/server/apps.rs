//! `serve`'s app flags → `service::apps::Apps` (the Apps and Books URL checked,
//! sizes and intervals bounded).

use std::sync::Arc;

/// `serve`'s app flags → `service::apps::Apps`.
pub(super) async fn build(
    flags: &crate::config::AppsFlags,
    public_url: &str,
    store: Arc<dyn crate::store::Store>,
    secrets: Arc<crate::pki::secrets::SecretBox>,
    commander: Arc<crate::service::commands::Commander>,
    instance: &str,
) -> anyhow::Result<Arc<crate::service::apps::Apps>> {
    crate::outbound::service_url(&flags.apps_and_books_url).map_err(|e| anyhow::anyhow!("--apps-and-books-url {e}"))?;
    let cfg = crate::service::apps::AppsConfig {
        url: flags.apps_and_books_url.trim_end_matches('/').to_owned(),
        public_url: public_url.to_owned(),
        download_lifetime: flags.app_download_lifetime.max(1),
        max_ipa: flags.app_max_size.clamp(1, 16 * 1024) * 1024 * 1024,
        sync_interval: std::time::Duration::from_secs(flags.apps_sync_interval.max(10)),
        event_timeout: std::time::Duration::from_secs(flags.apps_event_timeout.clamp(1, 600)),
    };
    Ok(crate::service::apps::Apps::new(store, secrets, cfg, commander, instance).await?)
}
