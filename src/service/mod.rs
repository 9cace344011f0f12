//! The rules of the protocol: the check-in state machine and the command
//! loop, over the store's role traits. No HTTP here: handlers call in with a
//! parsed request and get back what to answer.

pub mod checkin;
pub mod connect;
pub mod enqueue;
pub mod enroll;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::store::{Store, StoreError};

pub use checkin::CheckinReply;

#[derive(Debug, Error)]
pub enum ServiceError {
    /// The request is well-formed but not acceptable (unknown enrollment, wrong topic…).
    #[error("{0}")]
    Rejected(String),
    /// The request names an identity other than the one that signed it.
    #[error("identity mismatch: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Wakes devices after something was queued for them (APNs, or nothing).
pub trait Waker: Send + Sync {
    fn wake(&self, enrollment_ids: Vec<String>);
}

/// A waker that only logs: used until a push certificate is configured.
pub struct NoPush;
impl Waker for NoPush {
    fn wake(&self, ids: Vec<String>) {
        tracing::debug!(count = ids.len(), "no push certificate configured: devices are not woken");
    }
}

pub struct Mdm {
    pub store: Arc<dyn Store>,
    /// The APNs topic devices must name (from the push certificate or configuration).
    pub topic: String,
    waker: Arc<dyn Waker>,
    /// Last-seen times, flushed to the store in the background (not worth an fsync per poll).
    seen: Mutex<HashMap<String, i64>>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Mdm {
    pub fn new(store: Arc<dyn Store>, topic: String, waker: Arc<dyn Waker>) -> Self {
        Mdm {
            store,
            topic,
            waker,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn mark_seen(&self, id: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(id.to_owned(), now());
        }
    }

    /// Write accumulated last-seen times to the store. Called periodically.
    pub async fn flush_seen(&self) -> Result<(), StoreError> {
        let batch: Vec<(String, i64)> = match self.seen.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.store.touch(batch).await
    }

    pub fn spawn_seen_flusher(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(m) = me.upgrade() else { break };
                if let Err(e) = m.flush_seen().await {
                    tracing::warn!(error = %e, "could not record last-seen times");
                }
            }
        });
    }
}
