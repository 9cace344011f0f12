//! The background tasks `serve` starts: each runs on one instance at a
//! time (a lease in the store) unless it is per-instance (TLS reload).

use std::path::Path;
use std::sync::Arc;

use crate::ops::lease::spawn_leased;
use crate::service::commands::Commander;
use crate::service::enroll::Enroller;
use crate::service::Mdm;

/// ACME: the lease holder orders a certificate when one is due (checked
/// every 30 s, cheap when none is); every instance installs the stored one
/// in its files and serves it at once.
pub(super) fn spawn_acme(
    acme: Arc<crate::ops::acme::Acme>,
    tls: Arc<crate::app::LiveTls>,
    store: Arc<dyn crate::store::Store>,
    instance: &str,
) {
    let install = {
        let (acme, tls) = (acme.clone(), tls.clone());
        move || {
            let (acme, tls) = (acme.clone(), tls.clone());
            async move {
                match acme.install_local().await {
                    Ok(true) => match tls.reload() {
                        Ok(_) => tracing::info!(cert = %tls.cert_path.display(), "TLS: now serving the ACME certificate"),
                        Err(e) => tracing::warn!(error = %e, "TLS: the ACME certificate does not load"),
                    },
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "ACME: cannot install the stored certificate"),
                }
            }
        }
    };
    let every = install.clone();
    tokio::spawn(async move {
        loop {
            every().await;
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        }
    });
    spawn_leased(store, "acme", instance, std::time::Duration::from_secs(30), false, move || {
        let (acme, install) = (acme.clone(), install.clone());
        async move {
            if acme.run_once().await {
                install().await;
            }
        }
    });
}

/// The TLS certificate files are read again when they change (checked every
/// 2 s) or on SIGHUP; new connections get the new certificate, open ones
/// keep theirs.
pub(super) fn spawn_tls_reload(tls: Arc<crate::app::LiveTls>) {
    let stamp = |t: &crate::app::LiveTls| {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        (m(&t.cert_path), m(&t.key_path))
    };
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = stamp(&tls);
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let by_signal = tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
                _ = hangup => true,
            };
            let now = stamp(&tls);
            if !by_signal && now == last {
                continue;
            }
            last = now;
            match crate::http::listener::reload(&tls) {
                Ok(true) => tracing::info!(cert = %tls.cert_path.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                // Half-written files (the key before the certificate): the next change retries.
                Err(e) => {
                    tracing::warn!(cert = %tls.cert_path.display(), error = %e, "TLS certificate not reloaded; the current one stays")
                }
            }
        }
    });
}

/// Expired single-use secrets (challenges, invitations, tokens; most are created
/// by requests without admin credentials) are deleted `grace` seconds after they
/// expire (one instance, leased; in batches, so one run is bounded).
pub(super) fn spawn_secret_pruning(store: Arc<dyn crate::store::Store>, every_secs: u64, grace: i64, instance: &str) {
    let s2 = store.clone();
    spawn_leased(
        store,
        "secret-prune",
        instance,
        std::time::Duration::from_secs(every_secs),
        false,
        move || {
            let store = s2.clone();
            async move {
                let before = crate::clock::now().saturating_sub(grace);
                let mut total = 0u64;
                // At most 100 batches a run; the rest waits for the next run.
                for _ in 0..100 {
                    match store.prune_secrets(before, 1000).await {
                        Ok(n) => {
                            total += n;
                            if n < 1000 {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "pruning expired single-use secrets failed");
                            break;
                        }
                    }
                }
                if total > 0 {
                    tracing::info!(deleted = total, "expired single-use secrets pruned");
                }
            }
        },
    );
}

/// Open fan-outs (a command to many devices, stored once) settle some minutes
/// after they were queued, when the devices that are online have answered:
/// the rest get ordinary queue entries, so polls stop checking the fan-out
/// (PostgreSQL; redb settles as answers come in). One instance, every minute.
pub(super) fn spawn_fanout_settling(store: Arc<dyn crate::store::Store>, instance: &str) {
    let s2 = store.clone();
    spawn_leased(
        store,
        "fanout-settle",
        instance,
        std::time::Duration::from_secs(60),
        true,
        move || {
            let store = s2.clone();
            async move {
                let before = crate::clock::now().saturating_sub(crate::store::postgres::SETTLE_AFTER);
                match store.settle_fanouts(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(fanouts = n, "open fan-outs settled"),
                    Err(e) => tracing::warn!(error = %e, "settling open fan-outs failed"),
                }
            }
        },
    );
}

/// Per-device access tokens are re-sent to apps before they expire (hourly check, one instance).
pub(super) fn spawn_token_renewal(commander: Arc<Commander>, instance: &str) {
    let store = commander.mdm.store.clone();
    spawn_leased(
        store,
        "token-renewal",
        instance,
        std::time::Duration::from_secs(3600),
        false,
        move || {
            let commander = commander.clone();
            async move {
                match commander.resend_app_configs(true).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(configurations = n, "per-device access tokens renewed"),
                    Err(e) => tracing::warn!(error = %e, "renewing per-device access tokens failed"),
                }
            }
        },
    );
}

/// Webhook events leave the outbox here (one instance at a time; every second).
pub(super) fn spawn_webhook_delivery(webhooks: Arc<crate::ops::webhooks::Webhooks>, store: Arc<dyn crate::store::Store>, instance: &str) {
    spawn_leased(
        store,
        "webhook-delivery",
        instance,
        std::time::Duration::from_secs(1),
        false,
        move || {
            let w = webhooks.clone();
            async move {
                match w.deliver_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(delivered = n, "webhook events delivered"),
                    Err(e) => tracing::warn!(error = %e, "webhook delivery: the outbox is unavailable"),
                }
            }
        },
    );
}

/// Organisation-CA certificates near expiry get their profile re-installed (hourly, one instance).
pub(super) fn spawn_org_cert_renewal(commander: Arc<Commander>, instance: &str) {
    let store = commander.mdm.store.clone();
    spawn_leased(
        store,
        "org-cert-renewal",
        instance,
        std::time::Duration::from_secs(3600),
        true,
        move || {
            let commander = commander.clone();
            async move {
                match commander.renew_org_certs().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(profiles = n, "organisation certificates renewed"),
                    Err(e) => tracing::warn!(error = %e, "organisation certificate renewal failed"),
                }
            }
        },
    );
}

/// The blueprint sweep: one instance compares every device's wanted state
/// with what it was last given (queues nothing where they match).
pub(super) fn spawn_reconcile_sweep(fleet: Arc<crate::service::fleet::Fleet>, every_secs: u64, instance: &str) {
    let store = fleet.commander.mdm.store.clone();
    spawn_leased(
        store,
        "blueprint-sweep",
        instance,
        std::time::Duration::from_secs(every_secs),
        false,
        move || {
            let fleet = fleet.clone();
            async move {
                let t = std::time::Instant::now();
                match fleet.sweep().await {
                    Ok(s) => tracing::info!(
                        devices = s.devices,
                        changed = s.changed,
                        commands = s.commands,
                        seconds = t.elapsed().as_secs_f64(),
                        "blueprint sweep"
                    ),
                    Err(e) => tracing::warn!(error = %e, "blueprint sweep failed"),
                }
            }
        },
    );
}

pub(super) fn spawn_inventory(mdm: Arc<Mdm>, every_secs: u64, instance: &str) {
    let every = std::time::Duration::from_secs(every_secs);
    // The policy file is watched every few seconds; a new policy re-evaluates every device here.
    let watcher = mdm.clone();
    tokio::spawn(async move {
        // The policy given at start applies at once: the fleet is re-evaluated
        // when the version last applied (kept in the store, for every
        // instance) is another.
        apply_policy_if_new(&watcher).await;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3));
        loop {
            tick.tick().await;
            match watcher.policy.reload() {
                Ok(true) => {
                    tracing::info!(version = %watcher.policy.get().1, "compliance policy changed: re-evaluating");
                    apply_policy_if_new(&watcher).await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "compliance policy not reloaded (the previous one stays in force)"),
            }
        }
    });
    let store = mdm.store.clone();
    spawn_leased(store, "inventory-sweep", instance, every, true, move || {
        let mdm = mdm.clone();
        async move {
            match mdm.inventory_sweep(mdm.inventory_interval).await {
                Ok((due, evaluated)) => tracing::debug!(due, evaluated, "inventory sweep"),
                Err(e) => tracing::warn!(error = %e, "inventory sweep failed"),
            }
        }
    });
}

/// Where the version of the compliance policy last applied to the fleet is kept.
const POLICY_APPLIED: (&str, &str) = ("compliance", "applied-policy");

/// Re-evaluate every device when the policy in force is not the one last
/// applied; then remember it as applied.
async fn apply_policy_if_new(mdm: &Arc<Mdm>) {
    let version = mdm.policy.get().1;
    let applied = match mdm.store.record(POLICY_APPLIED.0, POLICY_APPLIED.1).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "could not read which compliance policy was applied");
            return;
        }
    };
    if applied
        .as_ref()
        .is_some_and(|r| r.value["version"].as_str() == Some(version.as_str()))
    {
        return;
    }
    match mdm.full_sweep(0).await {
        Ok((_, evaluated)) => tracing::info!(%version, evaluated, "compliance policy applied to the fleet"),
        Err(e) => {
            tracing::warn!(error = %e, "compliance re-evaluation failed");
            return;
        }
    }
    let value = serde_json::json!({"version": version});
    if let Err(e) = mdm
        .store
        .put_record(POLICY_APPLIED.0, POLICY_APPLIED.1, value, crate::clock::now(), None)
        .await
    {
        tracing::warn!(error = %e, "could not record the compliance policy as applied");
    }
}

pub(super) fn spawn_renewals(enroller: Arc<Enroller>, mdm: Arc<Mdm>, every_secs: u64, instance: &str) {
    let store = mdm.store.clone();
    spawn_leased(
        store,
        "renewal-sweep",
        instance,
        std::time::Duration::from_secs(every_secs),
        false,
        move || {
            let (enroller, mdm) = (enroller.clone(), mdm.clone());
            async move {
                if let Err(e) = enroller.renewal_sweep(&mdm).await {
                    tracing::warn!(error = %e, "identity renewal sweep failed");
                }
            }
        },
    );
}
