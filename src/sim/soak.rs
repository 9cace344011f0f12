//! `mdmd sim soak`: a fleet of simulated devices at a steady load for a long
//! time, sampled every minute, to show that the server stays flat.
//!
//! Every device registers its push token with the APNs stand-in (`apns`),
//! enrolls, then checks in every `poll_every` (spread over the interval) and
//! whenever a push with its PushMagic arrives, answering what is queued as an
//! iPhone does (`SimDevice::session`): queries, profile installs and removals,
//! and identity renewals (the server's renewal sweep re-sends the enrollment
//! profile; the device runs SCEP with a new key, Authenticate and TokenUpdate).
//! Meanwhile a stream of commands is queued through the admin API (one to a
//! random batch of devices every `command_every`, rotating over five request
//! types) and a profile is installed on a batch and removed again every
//! `profile_every`.
//!
//! Each sample (one JSON line in `out`) holds the server process's RSS, open
//! files and CPU, the store's size on disk, the latency of every device
//! request in the interval (p50, p99, max), what the fleet did, and the
//! serial of the TLS certificate the server holds over ACME (when it does),
//! so that a renewal shows as a change. `tools/soak.sh` starts the server,
//! Pebble and this, and `tools/soak_plot.py` draws the samples.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use super::apns::StandIn;
use super::load::Admin;
use super::{LatencyLog, SimDevice};

/// The profile installed and removed in turn.
const PROFILE: &str = "com.example.soak.clip";

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub server: String,
    pub api_key: String,
    /// Enrollment credentials (HTTP basic on `/mdm/enroll`).
    pub user: (String, String),
    pub devices: usize,
    pub duration: Duration,
    pub sample_every: Duration,
    /// Each device checks in this often (besides when pushed).
    pub poll_every: Duration,
    /// One command to `batch` random devices this often.
    pub command_every: Duration,
    pub batch: usize,
    /// A profile installed on (then removed from) `batch` devices this often.
    pub profile_every: Duration,
    /// Devices enrolling at once.
    pub concurrency: usize,
    /// Where the APNs stand-in listens, the CA its clients' certificates come
    /// from, and where its own certificate is written (mdmd's `--apns-ca`).
    pub apns_listen: String,
    pub push_ca: PathBuf,
    pub write_apns_ca: PathBuf,
    /// The server's process (RSS, open files, CPU from /proc).
    pub server_pid: Option<u32>,
    /// The server's data directory (its size on disk).
    pub data_dir: Option<PathBuf>,
    /// Samples, one JSON object per line.
    pub out: PathBuf,
}

#[derive(Debug, Default)]
struct Counters {
    sessions: AtomicU64,
    commands_answered: AtomicU64,
    errors: AtomicU64,
    wakes: AtomicU64,
    renewals: AtomicU64,
}

/// One minute (or `sample_every`) of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the fleet was enrolled.
    pub t: f64,
    pub rss_kib: Option<u64>,
    pub open_files: Option<u64>,
    pub store_bytes: Option<u64>,
    /// Server CPU (user + system) in this interval, seconds.
    pub server_cpu_s: Option<f64>,
    /// Device requests finished in this interval, and their latency.
    pub requests: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The same requests as the server timed them (`/mdm/` routes of
    /// `mdmd_http_request_duration_seconds`): the 99th percentile's bucket
    /// bound (buckets double from 0.1 ms), and how many requests.
    pub server_p99_ms_le: Option<f64>,
    pub server_requests: u64,
    /// Totals since the start of the steady phase.
    pub sessions: u64,
    pub commands_queued: u64,
    pub commands_answered: u64,
    pub pushes: u64,
    pub errors: u64,
    pub identity_renewals: u64,
    /// Serial of the ACME certificate the server holds (none: ACME off).
    pub acme_serial: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub devices: usize,
    pub enroll_seconds: f64,
    pub samples: usize,
    pub sessions: u64,
    pub commands_queued: u64,
    pub commands_answered: u64,
    pub pushes: u64,
    pub errors: u64,
    pub identity_renewals: u64,
    /// Distinct ACME certificates seen (2 or more: a renewal happened).
    pub acme_certificates: usize,
    /// After warm-up (the first quarter of the run): first and last sample.
    pub after_warmup: Value,
}

/// RSS (KiB), open files and CPU seconds (user + system) of a process, from /proc.
pub fn proc_figures(pid: u32) -> (Option<u64>, Option<u64>, Option<f64>) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    });
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().map(|stat| {
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
        t(11) + t(12)
    });
    (rss, fds, cpu)
}

/// Bytes on disk under a directory (allocated blocks, so a sparse or
/// preallocated file counts what it really takes).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn percentile(sorted: &[f32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(i.min(sorted.len() - 1)).map(|v| f64::from(*v))
}

/// A device's life: a check-in every `every` (first one at a random point
/// of the interval), and a session whenever its own push arrives.
async fn live(mut dev: SimDevice, mut wakes: mpsc::UnboundedReceiver<String>, every: Duration, c: Arc<Counters>) {
    let offset = every.mul_f64(rand::random::<f64>());
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        let go = tokio::select! {
            m = wakes.recv() => {
                let Some(m) = m else { break };
                c.wakes.fetch_add(1, Relaxed);
                let mut ours = m == dev.push_magic;
                while let Ok(m) = wakes.try_recv() {
                    c.wakes.fetch_add(1, Relaxed);
                    ours |= m == dev.push_magic;
                }
                ours
            }
            _ = tokio::time::sleep_until(next) => {
                next += every;
                true
            }
        };
        if !go || dev.erased || dev.unenrolled {
            continue;
        }
        let renewals = dev.renewals;
        match dev.session().await {
            Ok(h) => {
                c.sessions.fetch_add(1, Relaxed);
                c.commands_answered.fetch_add(h.len() as u64, Relaxed);
            }
            Err(e) => {
                c.errors.fetch_add(1, Relaxed);
                tracing::warn!(udid = %dev.udid, error = %format!("{e:#}"), "simulated device session failed");
            }
        }
        c.renewals.fetch_add(u64::from(dev.renewals - renewals), Relaxed);
    }
}

fn commands() -> [Value; 5] {
    [
        json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName", "OSVersion", "BatteryLevel", "AvailableDeviceCapacity"]}),
        json!({"RequestType": "SecurityInfo"}),
        json!({"RequestType": "ProfileList"}),
        json!({"RequestType": "CertificateList"}),
        json!({"RequestType": "InstalledApplicationList"}),
    ]
}

fn pick(ids: &[String], n: usize) -> Vec<String> {
    use rand::seq::SliceRandom as _;
    ids.choose_multiple(&mut rand::thread_rng(), n.min(ids.len())).cloned().collect()
}

/// Cumulative counts per bucket bound (seconds) of the server's request
/// latency histogram, over its `/mdm/` routes.
async fn server_buckets(http: &reqwest::Client, cfg: &SoakConfig) -> Vec<(f64, u64)> {
    let url = format!("{}/metrics", cfg.server.trim_end_matches('/'));
    let Ok(r) = http.get(url).bearer_auth(&cfg.api_key).send().await else {
        return Vec::new();
    };
    let Ok(text) = r.text().await else { return Vec::new() };
    let mut by_le: std::collections::BTreeMap<u64, (f64, u64)> = Default::default();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("mdmd_http_request_duration_seconds_bucket{") else {
            continue;
        };
        if !rest.contains("route=\"/mdm/") {
            continue;
        }
        let le = rest.split("le=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or("");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let n: u64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if le.is_nan() {
            continue;
        }
        by_le.entry(le.to_bits()).or_insert((le, 0)).1 += n;
    }
    let mut v: Vec<(f64, u64)> = by_le.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The bucket bound (ms) under which 99 % of the requests between two
/// readings of the histogram fall, and how many requests that was.
fn bucket_p99(before: &[(f64, u64)], after: &[(f64, u64)]) -> (Option<f64>, u64) {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            let b = before.iter().find(|(l, _)| l == le).map_or(0, |(_, n)| *n);
            (*le, n.saturating_sub(b))
        })
        .collect();
    let total = delta.last().map_or(0, |(_, n)| *n);
    if total == 0 {
        return (None, 0);
    }
    let want = (total as f64 * 0.99).ceil() as u64;
    let le = delta.iter().find(|(_, n)| *n >= want).map(|(le, _)| le * 1000.0);
    (le, total)
}

async fn acme_serial(admin: &Admin) -> Option<String> {
    match admin.call(reqwest::Method::GET, "/v1/acme", None).await {
        Ok((200, v)) => v["certificate"]["serial"].as_str().map(str::to_owned),
        _ => None,
    }
}

pub async fn run(cfg: SoakConfig, http: reqwest::Client) -> anyhow::Result<SoakReport> {
    let cas =
        openssl::x509::X509::stack_from_pem(&std::fs::read(&cfg.push_ca).with_context(|| format!("reading {}", cfg.push_ca.display()))?)?;
    let standin = Arc::new(StandIn::start(&cfg.apns_listen, cas).await?);
    std::fs::write(&cfg.write_apns_ca, standin.server_cert.to_pem()?)?;
    let admin = Admin::new(&cfg.server, &cfg.api_key, http.clone());
    let counters = Arc::new(Counters::default());
    let latency: Arc<LatencyLog> = Arc::default();

    // Enroll the fleet; each device is live as soon as it is enrolled.
    let t_enroll = Instant::now();
    let keys = super::load::key_pool(16)?;
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut joins = Vec::new();
    for i in 0..cfg.devices.min(100_000) {
        let (http, standin, sem, key, c, lat) = (
            http.clone(),
            standin.clone(),
            sem.clone(),
            keys[i % keys.len()].clone(),
            counters.clone(),
            latency.clone(),
        );
        let url = format!("{}/mdm/enroll", cfg.server.trim_end_matches('/'));
        let (u, p, every) = (cfg.user.0.clone(), cfg.user.1.clone(), cfg.poll_every);
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let der = super::download_profile(&http, &url, Some((&u, &p))).await?;
            let mut d = SimDevice::from_profile(http.clone(), &der, Some(key)).await?;
            // Registered before it enrolls: no push sent meanwhile is lost.
            let rx = standin.register(&hex::encode(&d.token), &d.topic);
            d.enroll().await?;
            d.latency = Some(lat);
            let id = d.id();
            let task = tokio::spawn(live(d, rx, every, c));
            anyhow::Ok((id, task))
        }));
    }
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for j in joins {
        let (id, t) = j.await??;
        ids.push(id);
        tasks.push(t);
    }
    let enroll_seconds = t_enroll.elapsed().as_secs_f64();
    eprintln!(
        "{} devices enrolled in {enroll_seconds:.1} s; steady load for {} s",
        ids.len(),
        cfg.duration.as_secs()
    );

    admin.post_bytes("/v1/profiles", super::chaos::template(PROFILE)).await?;
    if let Ok(mut v) = latency.lock() {
        v.clear(); // the steady phase's figures only
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.out)
        .with_context(|| format!("opening {}", cfg.out.display()))?;

    let start = tokio::time::Instant::now();
    let end = start + cfg.duration;
    let mut next_sample = start + cfg.sample_every;
    let mut next_command = start;
    let mut next_profile = start + cfg.profile_every;
    let mut rotation = commands().into_iter().cycle();
    let mut installed_on: Option<Vec<String>> = None;
    let mut queued = 0u64;
    let mut samples: Vec<Sample> = Vec::new();
    let mut cpu_before = cfg.server_pid.and_then(|p| proc_figures(p).2);
    let mut serials = std::collections::BTreeSet::new();
    let mut buckets_before = server_buckets(&http, &cfg).await;
    while tokio::time::Instant::now() < end {
        let at = next_sample.min(next_command).min(next_profile).min(end);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let now = tokio::time::Instant::now();
        if now >= next_command {
            next_command += cfg.command_every;
            let targets = pick(&ids, cfg.batch);
            let cmd = rotation.next().unwrap_or_else(|| json!({"RequestType": "SecurityInfo"}));
            match admin.post("/v1/commands", json!({"targets": targets, "command": cmd})).await {
                Ok(_) => queued += targets.len() as u64,
                Err(e) => eprintln!("queueing a command failed: {e:#}"),
            }
        }
        if now >= next_profile {
            next_profile += cfg.profile_every;
            let r = match installed_on.take() {
                None => {
                    let targets = pick(&ids, cfg.batch);
                    let r = admin
                        .post(&format!("/v1/profiles/{PROFILE}/install"), json!({"targets": targets}))
                        .await;
                    installed_on = Some(targets);
                    r
                }
                Some(targets) => {
                    admin
                        .post(&format!("/v1/profiles/{PROFILE}/remove"), json!({"targets": targets}))
                        .await
                }
            };
            match r {
                Ok(_) => queued += cfg.batch.min(ids.len()) as u64,
                Err(e) => eprintln!("installing or removing the soak profile failed: {e:#}"),
            }
        }
        if now >= next_sample || now >= end {
            next_sample += cfg.sample_every;
            let mut lat = latency.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
            lat.sort_by(|a, b| a.total_cmp(b));
            let (rss, fds, cpu) = match cfg.server_pid {
                Some(p) => proc_figures(p),
                None => (None, None, None),
            };
            let serial = acme_serial(&admin).await;
            let buckets = server_buckets(&http, &cfg).await;
            let (server_p99_ms_le, server_requests) = bucket_p99(&buckets_before, &buckets);
            buckets_before = buckets;
            if let Some(s) = &serial {
                serials.insert(s.clone());
            }
            let s = Sample {
                t: (now - start).as_secs_f64().round(),
                rss_kib: rss,
                open_files: fds,
                store_bytes: cfg.data_dir.as_deref().map(disk_usage),
                server_cpu_s: cpu.zip(cpu_before).map(|(a, b)| a - b),
                requests: lat.len(),
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
                max_ms: lat.last().map(|v| f64::from(*v)),
                server_p99_ms_le,
                server_requests,
                sessions: counters.sessions.load(Relaxed),
                commands_queued: queued,
                commands_answered: counters.commands_answered.load(Relaxed),
                pushes: counters.wakes.load(Relaxed),
                errors: counters.errors.load(Relaxed),
                identity_renewals: counters.renewals.load(Relaxed),
                acme_serial: serial,
            };
            cpu_before = cpu;
            use std::io::Write as _;
            let line = serde_json::to_string(&s)?;
            writeln!(out, "{line}")?;
            out.flush()?;
            eprintln!("{line}");
            samples.push(s);
        }
    }
    for t in tasks {
        t.abort();
    }
    let warm = samples.len() / 4;
    let after = |s: &Sample| {
        json!({"t": s.t, "rss_kib": s.rss_kib, "open_files": s.open_files, "store_bytes": s.store_bytes,
               "p99_ms": s.p99_ms, "commands_answered": s.commands_answered})
    };
    let after_warmup = match (samples.get(warm), samples.last()) {
        (Some(a), Some(b)) => json!({"first": after(a), "last": after(b)}),
        _ => Value::Null,
    };
    Ok(SoakReport {
        devices: ids.len(),
        enroll_seconds,
        samples: samples.len(),
        sessions: counters.sessions.load(Relaxed),
        commands_queued: queued,
        commands_answered: counters.commands_answered.load(Relaxed),
        pushes: counters.wakes.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        identity_renewals: counters.renewals.load(Relaxed),
        acme_certificates: serials.len(),
        after_warmup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_sorted_sample() {
        let v: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.99), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn p99_from_histogram_deltas() {
        let before = [(0.001, 10), (0.002, 10), (f64::INFINITY, 10)];
        let after = [(0.001, 60), (0.002, 109), (f64::INFINITY, 110)];
        // 100 new requests: 50 under 1 ms, 99 under 2 ms.
        assert_eq!(bucket_p99(&before, &after), (Some(2.0), 100));
        assert_eq!(bucket_p99(&after, &after), (None, 0));
    }

    #[test]
    fn this_process_is_measurable() {
        let (rss, fds, cpu) = proc_figures(std::process::id());
        assert!(rss.is_some_and(|r| r > 0));
        assert!(fds.is_some_and(|n| n >= 3));
        assert!(cpu.is_some());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        assert!(disk_usage(dir.path()) >= 10_000);
    }
}
