//! Background work that must run on one instance at a time (identity renewal
//! sweep, re-push): a named lease in the shared store, renewed by its holder
//! at every run and taken over by another instance once it expires.

use std::sync::Arc;

use crate::store::Store;

/// This process's name as a lease holder: host, pid and a random part.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &rand[..8])
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Lease {
    store: Arc<dyn Store>,
    name: &'static str,
    holder: String,
    ttl_ms: i64,
}

impl Lease {
    /// A lease that lasts `ttl` past each successful `held()`: make it a few
    /// run intervals, so a live holder keeps it and a dead one loses it soon.
    pub fn new(store: Arc<dyn Store>, name: &'static str, holder: &str, ttl: std::time::Duration) -> Lease {
        Lease {
            store,
            name,
            holder: holder.to_owned(),
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// Take or extend the lease; false (and run nothing) if another instance
    /// holds it or the store cannot say.
    pub async fn held(&self) -> bool {
        match self.store.acquire_lease(self.name, &self.holder, now_ms(), self.ttl_ms).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!(lease = self.name, "another instance holds the lease: not running");
                false
            }
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "cannot take the lease: not running");
                false
            }
        }
    }

    pub async fn release(&self) {
        if let Err(e) = self.store.release_lease(self.name, &self.holder).await {
            tracing::debug!(lease = self.name, error = %e, "cannot release the lease");
        }
    }
}

/// Run `work` every `every` on whichever instance holds the lease `name`
/// (the lease lasts three intervals). With `skip_first`, the first run waits
/// one interval.
pub fn spawn_leased<F, Fut>(
    store: Arc<dyn Store>,
    name: &'static str,
    instance: &str,
    every: std::time::Duration,
    skip_first: bool,
    work: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let lease = Lease::new(store, name, instance, every * 3);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        if skip_first {
            tick.tick().await;
        }
        loop {
            tick.tick().await;
            if lease.held().await {
                work().await;
            }
        }
    });
}
