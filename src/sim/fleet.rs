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
    /// When each session that answered commands finished (for latency figures).
    pub finished: std::sync::Mutex<Vec<std::time::Instant>>,
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
    answer_pushes(dev, rx, stats)
}

/// As `serve`, for a device whose token was registered already (`StandIn::register`,
/// e.g. before it enrolled, so that no push sent during enrollment is lost).
pub fn answer_pushes(dev: SimDevice, wakes: mpsc::UnboundedReceiver<String>, stats: Arc<FleetStats>) -> tokio::task::JoinHandle<SimDevice> {
    tokio::spawn(run(dev, wakes, stats))
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
                if !h.is_empty() {
                    if let Ok(mut f) = stats.finished.lock() {
                        f.push(std::time::Instant::now());
                    }
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Relaxed);
                tracing::warn!(udid = %dev.udid, error = %e, "simulated device session failed");
            }
        }
    }
    dev
}

/// Median and 99th percentile of the time from queueing a command (through
/// the admin API, pushed) to each target's result being stored, over
/// `rounds` rounds to `targets`.
pub async fn measure(
    admin: &super::load::Admin,
    stats: &FleetStats,
    targets: &[String],
    rounds: usize,
    within: std::time::Duration,
) -> anyhow::Result<serde_json::Value> {
    let mut lat = Vec::new();
    for _ in 0..rounds {
        if let Ok(mut f) = stats.finished.lock() {
            f.clear();
        }
        let t0 = std::time::Instant::now();
        admin
            .post(
                "/v1/commands",
                serde_json::json!({"targets": targets, "command": {"RequestType": "SecurityInfo"}}),
            )
            .await?;
        loop {
            let n = stats.finished.lock().map(|f| f.len()).unwrap_or(0);
            if n >= targets.len() || t0.elapsed() > within {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        if let Ok(f) = stats.finished.lock() {
            lat.extend(f.iter().map(|t| t.duration_since(t0).as_secs_f64() * 1000.0));
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(serde_json::json!({
        "targets": targets.len(),
        "rounds": rounds,
        "results": lat.len(),
        "expected": targets.len() * rounds,
        "median_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": lat.last().copied().unwrap_or(f64::NAN),
    }))
}
