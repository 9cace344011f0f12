//! What wakes devices, as the services see it: the `Waker` trait (the
//! `Pusher` implements it; `NoPush` stands in without a push certificate)
//! and the APNs `Topic` devices enroll with. Defined here, beside the one
//! real implementation, so that `service` imports `push` and never the other
//! way round.

use std::sync::Arc;

/// Wakes devices after something was queued for them (APNs, or nothing).
pub trait Waker: Send + Sync {
    fn wake(&self, enrollment_ids: Vec<String>);
    /// A TokenUpdate arrived for this token (hex): pushes to it may resume,
    /// even if APNs called it dead moments ago.
    fn token_updated(&self, _token_hex: &str) {}
}

/// A waker that only logs: used until a push certificate is configured.
pub struct NoPush;
impl Waker for NoPush {
    fn wake(&self, ids: Vec<String>) {
        tracing::debug!(count = ids.len(), "no push certificate configured: devices are not woken");
    }
}

/// The APNs topic devices enroll with: the push certificate's UID (or the
/// placeholder until one is set). Changes at run time when an admin sets a
/// certificate with another topic (forced).
pub struct Topic(std::sync::RwLock<String>);

impl Topic {
    pub fn new(t: String) -> Arc<Topic> {
        Arc::new(Topic(std::sync::RwLock::new(t)))
    }

    pub fn get(&self) -> String {
        self.0.read().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn set(&self, t: String) {
        if let Ok(mut g) = self.0.write() {
            *g = t;
        }
    }
}
