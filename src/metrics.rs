//! Process metrics in the Prometheus (OpenMetrics) text format, on the
//! `prometheus-client` crate. One registry per process; every layer records
//! into it (`metrics::get()`), and `GET /metrics` encodes it. This module
//! imports nothing of ours, so any room may use it.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct HourCount {
    hour: u64,
    acknowledged: u64,
    failed: u64,
    not_now: u64,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub checkins: Family<TypeLabels, Counter>,
    pub command_results: Family<StatusLabels, Counter>,
    pub commands_queued: Counter,
    /// Devices that reached every item of a blueprint / failed one.
    pub blueprint_converged: Counter,
    pub blueprint_failed: Counter,
    /// Devices reconciled against their blueprints, and commands that queued.
    pub reconciled: Counter,
    pub reconcile_commands: Counter,
    pub scep: Family<OutcomeLabels, Counter>,
    pub push: Family<OutcomeLabels, Counter>,
    pub acme: Family<OutcomeLabels, Counter>,
    /// ADE syncs by outcome (ok, failed), profiles assigned, MachineInfo POSTs by outcome.
    pub ade_syncs: Family<OutcomeLabels, Counter>,
    pub ade_assigned: Counter,
    pub ade_enrollments: Family<OutcomeLabels, Counter>,
    /// Devices waiting in Setup Assistant (set by the watch).
    pub ade_waiting: Gauge,
    /// Apps: InstallApplication queued for catalog apps, licences associated and released.
    pub app_installs: Counter,
    pub app_licences_associated: Counter,
    pub app_licences_released: Counter,
    /// In-house app downloads by outcome (manifest, ipa, refused).
    pub app_downloads: Family<OutcomeLabels, Counter>,
    pub tls: Family<OutcomeLabels, Counter>,
    /// Account secret checks by outcome (ok, wrong, unknown-account, known-wrong, refused).
    pub credential_checks: Family<OutcomeLabels, Counter>,
    /// Argon2id verifications (older account records only).
    pub password_hashes: Counter,
    pub commit_batch: Family<BackendLabels, Histogram>,
    pub commit_seconds: Family<BackendLabels, Histogram>,
    /// Command reports per hour over the last day (this process), for "failed in the last day".
    recent: std::sync::Mutex<[HourCount; 24]>,
    /// Set when scraped.
    pub queue_depth: Gauge,
    pub enrollments: Gauge,
    pub outbox_depth: Gauge,
}

fn latency() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn batch() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("mdmd");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            checkins: Family::default(),
            command_results: Family::default(),
            commands_queued: Counter::default(),
            blueprint_converged: Counter::default(),
            blueprint_failed: Counter::default(),
            reconciled: Counter::default(),
            reconcile_commands: Counter::default(),
            scep: Family::default(),
            push: Family::default(),
            acme: Family::default(),
            ade_syncs: Family::default(),
            ade_assigned: Counter::default(),
            ade_enrollments: Family::default(),
            ade_waiting: Gauge::default(),
            app_installs: Counter::default(),
            app_licences_associated: Counter::default(),
            app_licences_released: Counter::default(),
            app_downloads: Family::default(),
            tls: Family::default(),
            credential_checks: Family::default(),
            password_hashes: Counter::default(),
            commit_batch: Family::new_with_constructor(batch as fn() -> Histogram),
            commit_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            recent: std::sync::Mutex::new([HourCount::default(); 24]),
            queue_depth: Gauge::default(),
            enrollments: Gauge::default(),
            outbox_depth: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("http_requests", "HTTP requests by route, method and status", m.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.request_seconds.clone(),
        );
        r.register("checkins", "Check-in messages by MessageType", m.checkins.clone());
        r.register("command_results", "Command reports by status", m.command_results.clone());
        r.register("commands_queued", "Commands queued (per target)", m.commands_queued.clone());
        r.register(
            "blueprint_converged",
            "Times a device reached every item of a blueprint",
            m.blueprint_converged.clone(),
        );
        r.register(
            "blueprint_failed",
            "Times a device failed an item of a blueprint",
            m.blueprint_failed.clone(),
        );
        r.register("reconciled_devices", "Devices compared with their blueprints", m.reconciled.clone());
        r.register(
            "reconcile_commands",
            "Commands the blueprint reconciler queued (per target)",
            m.reconcile_commands.clone(),
        );
        r.register("scep", "SCEP PKIOperations by outcome (issued, refused)", m.scep.clone());
        r.register("push", "APNs pushes by outcome", m.push.clone());
        r.register("tls_handshakes", "TLS handshakes completed, full or resumed", m.tls.clone());
        r.register(
            "credential_checks",
            "Admin API / console credential checks by outcome (ok, wrong, unknown-account, known-wrong, refused)",
            m.credential_checks.clone(),
        );
        r.register(
            "password_hashes",
            "Argon2id verifications of older account records",
            m.password_hashes.clone(),
        );
        r.register(
            "ade_syncs",
            "ADE syncs with Apple by outcome (ok, failed), per token",
            m.ade_syncs.clone(),
        );
        r.register(
            "ade_profiles_assigned",
            "Devices an ADE profile was assigned to",
            m.ade_assigned.clone(),
        );
        r.register(
            "ade_enrollments",
            "ADE MachineInfo requests by outcome (served, refused, bad)",
            m.ade_enrollments.clone(),
        );
        r.register(
            "ade_waiting",
            "Devices waiting in Setup Assistant for DeviceConfigured",
            m.ade_waiting.clone(),
        );
        r.register(
            "app_installs",
            "InstallApplication commands queued for catalog apps",
            m.app_installs.clone(),
        );
        r.register(
            "app_licences_associated",
            "Apps and Books licences associated with device serial numbers",
            m.app_licences_associated.clone(),
        );
        r.register(
            "app_licences_released",
            "Apps and Books licences released (app removed, device left)",
            m.app_licences_released.clone(),
        );
        r.register(
            "app_downloads",
            "In-house app downloads by outcome (manifest, ipa, refused)",
            m.app_downloads.clone(),
        );
        r.register("acme_orders", "ACME certificate orders by outcome (issued, failed)", m.acme.clone());
        r.register(
            "store_commit_batch_size",
            "Writes committed together (group commit)",
            m.commit_batch.clone(),
        );
        r.register("store_commit_duration_seconds", "Store commit latency", m.commit_seconds.clone());
        r.register("queue_depth", "Commands pending across all enrollments", m.queue_depth.clone());
        r.register("enrollments", "Enrollments on record", m.enrollments.clone());
        r.register("webhook_outbox_depth", "Events waiting for delivery", m.outbox_depth.clone());
        Metrics { registry: r, ..m }
    }

    /// The registry in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels { route: route.to_owned() })
            .observe(took.as_secs_f64());
    }

    pub fn credential_check(&self, outcome: &str) {
        self.credential_checks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn checkin(&self, message_type: &str) {
        self.checkins
            .get_or_create(&TypeLabels {
                r#type: message_type.to_owned(),
            })
            .inc();
    }

    pub fn command_result(&self, status: &str) {
        self.command_results
            .get_or_create(&StatusLabels { status: status.to_owned() })
            .inc();
        let hour = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 3600);
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut r[(hour % 24) as usize];
        if slot.hour != hour {
            *slot = HourCount {
                hour,
                ..HourCount::default()
            };
        }
        match status {
            "Acknowledged" => slot.acknowledged += 1,
            "Error" | "CommandFormatError" => slot.failed += 1,
            "NotNow" => slot.not_now += 1,
            _ => {}
        }
    }

    /// Command reports in the last 24 hours seen by this process: (acknowledged, failed, not now).
    pub fn results_last_day(&self) -> (u64, u64, u64) {
        let hour = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 3600);
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter()
            .filter(|h| h.hour + 24 > hour && h.hour <= hour)
            .fold((0, 0, 0), |a, h| (a.0 + h.acknowledged, a.1 + h.failed, a.2 + h.not_now))
    }

    pub fn scep(&self, outcome: &str) {
        count(&self.scep, outcome);
    }

    pub fn push(&self, outcome: &str) {
        count(&self.push, outcome);
    }

    pub fn tls_handshake(&self, resumed: bool) {
        count(&self.tls, if resumed { "resumed" } else { "full" });
    }

    pub fn ade_sync(&self, ok: bool) {
        count(&self.ade_syncs, if ok { "ok" } else { "failed" });
    }

    pub fn ade_enrollment(&self, outcome: &str) {
        count(&self.ade_enrollments, outcome);
    }

    pub fn app_download(&self, outcome: &str) {
        count(&self.app_downloads, outcome);
    }

    pub fn acme(&self, issued: bool) {
        count(&self.acme, if issued { "issued" } else { "failed" });
    }

    pub fn commit(&self, backend: &str, writes: usize, took: Duration) {
        let l = BackendLabels {
            backend: backend.to_owned(),
        };
        self.commit_batch.get_or_create(&l).observe(writes as f64);
        self.commit_seconds.get_or_create(&l).observe(took.as_secs_f64());
    }
}

/// One more of `outcome` in a family of counters by outcome.
fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
    family
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}
