//! Devices whose facts changed, waiting for the reconciler. Whoever learns a
//! fact (a check-in, an inventory answer, an admin's attribute, compliance,
//! DDM status, a command result) calls `changed`; the reconciler takes them
//! in batches, each device once however often it changed. Bounded: past
//! `MAX_WAITING` devices the set stops growing and the periodic sweep (which
//! visits every device) catches what was dropped.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

pub const MAX_WAITING: usize = 1_000_000;

#[derive(Default)]
struct Waiting {
    ids: BTreeSet<String>,
    done: Vec<(String, oneshot::Sender<()>)>,
    listening: bool,
    dropped: u64,
}

#[derive(Default)]
pub struct Nudges {
    state: Mutex<Waiting>,
    notify: Notify,
}

impl Nudges {
    pub fn new() -> Nudges {
        Nudges::default()
    }

    /// A reconciler takes from here from now on (until then, `changed` keeps nothing).
    pub fn listen(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.listening = true;
        }
    }

    /// Something the device's groups or blueprints depend on changed.
    pub fn changed(&self, id: &str) {
        let Ok(mut s) = self.state.lock() else { return };
        if !s.listening {
            return;
        }
        if s.ids.len() >= MAX_WAITING && !s.ids.contains(id) {
            s.dropped += 1;
            return;
        }
        s.ids.insert(id.to_owned());
        drop(s);
        self.notify.notify_one();
    }

    /// A device just enrolled: wait (up to `wait`) until the reconciler has
    /// queued what its blueprints want, so those commands come first.
    pub async fn enrolled(&self, id: &str, wait: Duration) {
        let rx = {
            let Ok(mut s) = self.state.lock() else { return };
            if !s.listening {
                return;
            }
            let (tx, rx) = oneshot::channel();
            s.ids.insert(id.to_owned());
            s.done.push((id.to_owned(), tx));
            rx
        };
        self.notify.notify_one();
        if tokio::time::timeout(wait, rx).await.is_err() {
            tracing::warn!(enrollment = %id, "blueprints not applied before the first inventory (the reconciler is busy)");
        }
    }

    /// Up to `limit` waiting devices, and those waited on among them.
    pub fn take(&self, limit: usize) -> (Vec<String>, Vec<(String, oneshot::Sender<()>)>) {
        let Ok(mut s) = self.state.lock() else {
            return (Vec::new(), Vec::new());
        };
        let mut ids = Vec::new();
        // Waited-on devices first.
        let waited: Vec<String> = s.done.iter().map(|(i, _)| i.clone()).collect();
        for i in waited {
            if s.ids.remove(&i) {
                ids.push(i);
            }
        }
        while ids.len() < limit {
            let Some(i) = s.ids.pop_first() else { break };
            ids.push(i);
        }
        let taken: BTreeSet<&String> = ids.iter().collect();
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut s.done).into_iter().partition(|(i, _)| taken.contains(i));
        s.done = keep;
        (ids, done)
    }

    /// Is an enrollment waiting on the reconciler?
    pub fn awaited(&self) -> bool {
        self.state.lock().is_ok_and(|s| !s.done.is_empty())
    }

    pub fn waiting(&self) -> usize {
        self.state.lock().map_or(0, |s| s.ids.len())
    }

    /// Wait until something is there (or `max` passes).
    pub async fn wait(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.notify.notified()).await;
    }
}
