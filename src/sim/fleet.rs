//! A long-running fleet of simulated devices woken by push: each device
//! registers its token with the APNs stand-in (`apns`) and, whenever a push
//! with its PushMagic arrives, connects and answers what is queued, as an
//! iPhone does. Used by `mdmd sim fleet`, the tests and load runs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::apns::StandIn;
use super::SimDevice;

#[derive(Debug, Default)]
pub struct FleetStats {
    pub wakes: AtomicU64,
    pub sessions: AtomicU64,
    pub commands: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub devices: usize,
    pub pushes_received: u64,
    pub sessions: u64,
    pub commands_answered: u64,
    pub errors: u64,
    pub standin_requests: u64,
    pub standin_rejected: u64,
}

impl FleetStats {
    pub fn report(&self, devices: usize, s: &StandIn) -> FleetReport {
        FleetReport {
            devices,
            pushes_received: self.wakes.load(Relaxed),
            sessions: self.sessions.load(Relaxed),
            commands_answered: self.commands.load(Relaxed),
            errors: self.errors.load(Relaxed),
            standin_requests: s.stats.requests.load(Relaxed),
            standin_rejected: s.stats.rejected.load(Relaxed),
        }
    }
}

/// Register an enrolled device with the stand-in and answer every push.
/// Runs until the stand-in goes away.
pub fn serve(standin: &StandIn, dev: SimDevice, stats: Arc<FleetStats>) -> tokio::task::JoinHandle<SimDevice> {
    let rx = standin.register(&hex::encode(&dev.token), &dev.topic);
    tokio::spawn(run(dev, rx, stats))
}

async fn run(mut dev: SimDevice, mut wakes: mpsc::UnboundedReceiver<String>, stats: Arc<FleetStats>) -> SimDevice {
    while let Some(magic) = wakes.recv().await {
        stats.wakes.fetch_add(1, Relaxed);
        // Pushes that arrived meanwhile are one wake-up.
        let mut ours = magic == dev.push_magic;
        while let Ok(m) = wakes.try_recv() {
            stats.wakes.fetch_add(1, Relaxed);
            ours |= m == dev.push_magic;
        }
        if !ours || dev.erased {
            continue; // not our PushMagic: iOS ignores it
        }
        match dev.session().await {
            Ok(h) => {
                stats.sessions.fetch_add(1, Relaxed);
                stats.commands.fetch_add(h.len() as u64, Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Relaxed);
                tracing::warn!(udid = %dev.udid, error = %e, "simulated device session failed");
            }
        }
    }
    dev
}
