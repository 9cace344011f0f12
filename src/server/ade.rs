//! `serve`'s ADE flags → `service::ade::Ade` (its key pair made or read,
//! periodic sync and the Setup Assistant watch started).

use std::sync::Arc;

use crate::config::AdeFlags;
use crate::service::ade::{Ade, AdeConfig, ENROLL_PATH};
use crate::service::commands::Commander;
use crate::service::enroll::Enroller;
use crate::service::fleet::Fleet;

/// `--ade-url` must be https, or http on loopback (a stand-in).
fn check_url(u: &str) -> anyhow::Result<()> {
    crate::outbound::service_url(u)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("--ade-url {e}"))
}

#[allow(clippy::too_many_arguments)]
pub async fn build(
    flags: &AdeFlags,
    public_url: &str,
    store: Arc<dyn crate::store::Store>,
    secrets: Arc<crate::pki::secrets::SecretBox>,
    commander: Arc<Commander>,
    enroller: Arc<Enroller>,
    fleet: Arc<Fleet>,
    instance: &str,
) -> anyhow::Result<Arc<Ade>> {
    check_url(&flags.ade_url)?;
    let host = reqwest::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into());
    let cfg = AdeConfig {
        url: flags.ade_url.trim_end_matches('/').to_owned(),
        enroll_url: format!("{public_url}{ENROLL_PATH}"),
        sync_interval: std::time::Duration::from_secs(flags.ade_sync_interval.max(10)),
        allow_unknown: flags.ade_allow_unknown,
        await_timeout: flags.ade_await_timeout.max(10),
        page_size: flags.ade_page_size.clamp(1, 1000),
    };
    let ade = Ade::new(store, secrets, cfg, commander, enroller, fleet, instance, &host)
        .await
        .map_err(|e| anyhow::anyhow!("ADE: {e}"))?;
    ade.start();
    Ok(ade)
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_rule() {
        assert!(super::check_url("https://mdmenrollment.apple.com").is_ok());
        assert!(super::check_url("http://127.0.0.1:8080").is_ok());
        assert!(super::check_url("http://[::1]:8080").is_ok());
        assert!(super::check_url("http://example.com").is_err());
        assert!(super::check_url("ftp://127.0.0.1").is_err());
    }
}
