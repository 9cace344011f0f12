//! `mdmd sim chaos`: a fleet of simulated devices keeps polling and answering
//! a stream of commands (queries, a profile install, a blueprint and its
//! change) while the mdmd instances serving them are SIGKILLed and restarted
//! in turn, and PostgreSQL is restarted once (`--pg-restart`). Then the
//! queue's promises are checked from outside, through the admin API and the
//! devices' own records:
//! - every final result a device got 200 for is stored, once;
//! - nothing is delivered again after its final result got 200;
//! - no command is lost: every command whose enqueue got 200 finished on
//!   every target;
//! - every device converged: the blueprint's profiles (before and after its
//!   change) and the directly installed one are on the device.
//!
//! The instances are this binary (`serve`), spawned here with one certs
//! directory and one store: redb (one instance) or PostgreSQL (any number).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{Mutex, Semaphore};

use super::load::Admin;
use super::SimDevice;

const API_KEY: &str = "chaos-key-0123456789abcdefghij";
const PROFILES: [&str; 3] = ["com.example.chaos.one", "com.example.chaos.two", "com.example.chaos.direct"];

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The mdmd binary the instances run.
    pub bin: PathBuf,
    /// Where instances keep their certs, data and logs.
    pub work: PathBuf,
    /// PostgreSQL (several instances); none: redb, one instance.
    pub database_url: Option<String>,
    pub instances: usize,
    pub devices: usize,
    /// Instances killed (in turn) over the run.
    pub kills: usize,
    /// Time between kills.
    pub interval: Duration,
    /// A shell command that restarts PostgreSQL, run once halfway.
    pub pg_restart: Option<String>,
    /// Devices enrolling at once.
    pub concurrency: usize,
    /// How long devices may take to converge after the last kill.
    pub settle: Duration,
    /// `serve --fanout-min-targets` for the instances (None: their default).
    pub fanout_min_targets: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct ChaosReport {
    pub store: String,
    pub instances: usize,
    pub devices: usize,
    pub kills: usize,
    pub pg_restarts: usize,
    /// Commands whose enqueue got 200 (each to every device, or one per
    /// device where a profile is filled per device).
    pub commands: usize,
    /// Enqueues that got no answer (their instance was killed): not checked.
    pub enqueues_unanswered: usize,
    pub sessions: u64,
    /// Sessions cut short (an instance went away mid-way); the device retried elsewhere.
    pub sessions_interrupted: u64,
    /// Final results the devices got 200 for.
    pub results_acked: usize,
    /// Commands sent again after their final result got 200 (must be 0).
    pub redelivered_after_200: Vec<String>,
    /// Results that got 200 but are not stored as final (must be empty).
    pub lost_results: Vec<String>,
    /// A command stored twice for one device (must be empty).
    pub duplicates: Vec<String>,
    /// Commands (enqueue got 200) not finished on some device at the end (must be empty).
    pub undelivered: Vec<String>,
    /// Devices without every profile they should have (must be empty).
    pub unconverged: Vec<String>,
    pub seconds: f64,
    pub converge_seconds: f64,
    pub ok: bool,
}

struct Instance {
    port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<std::process::Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Instance {
    fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, cfg: &ChaosConfig, public: &str) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = std::process::Command::new(&cfg.bin);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--certs-dir")
            .arg(cfg.work.join("certs"))
            .args(["--api-key", API_KEY, "--enroll-user", "sim:sim", "--enroll-flow", "single", "--public-url", public])
            .env("MDMD_ENROLL_PER_SOURCE", "0")
            .env("MDMD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = &cfg.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(n) = cfg.fanout_min_targets {
            cmd.args(["--fanout-min-targets", &n.to_string()]);
        }
        self.child = Some(cmd.spawn().with_context(|| format!("starting {}", cfg.bin.display()))?);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let r = client.get(format!("{base}/v1/info")).bearer_auth(API_KEY).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{base} did not come up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A web clip profile with this identifier (also `soak`'s).
pub(super) fn template(identifier: &str) -> Vec<u8> {
    let u = || uuid::Uuid::new_v4().to_string().to_uppercase();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>{identifier}</string><key>PayloadUUID</key><string>{}</string>
<key>PayloadDisplayName</key><string>{identifier}</string>
<key>PayloadContent</key><array><dict><key>PayloadType</key><string>com.apple.webClip.managed</string>
<key>PayloadVersion</key><integer>1</integer><key>PayloadIdentifier</key><string>{identifier}.clip</string>
<key>PayloadUUID</key><string>{}</string><key>URL</key><string>https://intranet.example.com/{identifier}</string>
<key>Label</key><string>{identifier}</string></dict></array></dict></plist>"#,
        u(),
        u()
    )
    .into_bytes()
}

/// Try `f` on each live instance in turn until one answers.
async fn on_any<T, F, Fut>(admins: &[Admin], mut f: F) -> anyhow::Result<T>
where
    F: FnMut(Admin) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut last = None;
    for _ in 0..30 {
        for a in admins {
            match f(a.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no instance")))
}

#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    interrupted: AtomicU64,
}

/// One device: a session, a pause, again; an instance that fails is left
/// for the next one.
async fn poll(mut dev: SimDevice, first: usize, bases: Arc<Vec<String>>, stop: Arc<AtomicBool>, c: Arc<Counters>) -> SimDevice {
    use rand::Rng as _;
    let mut k = first;
    while !stop.load(Relaxed) {
        dev.retarget(&bases[k % bases.len()]);
        match dev.session().await {
            Ok(_) => c.sessions.fetch_add(1, Relaxed),
            Err(_) => {
                k += 1;
                c.interrupted.fetch_add(1, Relaxed)
            }
        };
        let pause = rand::thread_rng().gen_range(1000..3000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    dev
}

pub async fn run(cfg: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let instances = if cfg.database_url.is_some() { cfg.instances.max(1) } else { 1 };
    std::fs::create_dir_all(cfg.work.join("certs"))?;
    let mut inst = Vec::new();
    for i in 0..instances {
        inst.push(Instance {
            port: free_port()?,
            data: cfg.work.join(format!("data{i}")),
            log: cfg.work.join(format!("instance{i}.log")),
            child: None,
        });
    }
    let public = inst[0].base();
    // The first creates the CA; the others share it.
    inst[0].spawn(&cfg, &public)?;
    let ca_path = cfg.work.join("certs/ca.pem");
    let t = Instant::now();
    while !ca_path.exists() && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ca = std::fs::read(&ca_path).context("the first instance made no CA")?;
    let client = super::http_client_trusting(Some(&ca))?;
    ready(&client, &inst[0].base()).await?;
    for i in inst.iter_mut().skip(1) {
        i.spawn(&cfg, &public)?;
    }
    for i in &inst {
        ready(&client, &i.base()).await?;
    }
    let bases: Arc<Vec<String>> = Arc::new(inst.iter().map(Instance::base).collect());
    let admins: Vec<Admin> = bases.iter().map(|b| Admin::new(b, API_KEY, client.clone())).collect();

    // Policy: two profiles and a blueprint for every device (`*`) naming the first.
    for id in PROFILES {
        admins[0].post_bytes("/v1/profiles", template(id)).await?;
    }
    match admins[0]
        .call(reqwest::Method::PUT, "/v1/blueprints/chaos", Some(json!({"groups": ["*"], "profiles": [PROFILES[0]]})))
        .await?
    {
        (200, _) => {}
        (s, v) => bail!("PUT blueprint: HTTP {s}: {v}"),
    }

    // Enroll, spread over the instances.
    let keys = Arc::new(super::load::key_pool(8)?);
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..cfg.devices {
        let (sem, client, keys, base) = (sem.clone(), client.clone(), keys.clone(), bases[i % bases.len()].clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            let der = super::download_profile(&client, &format!("{base}/mdm/enroll"), Some(("sim", "sim"))).await?;
            let dev = SimDevice::from_profile(client, &der, Some(keys[i % keys.len()].clone())).await?;
            dev.enroll().await?;
            anyhow::Ok(dev)
        }));
    }
    let mut devices = Vec::with_capacity(cfg.devices);
    for t in tasks {
        devices.push(t.await??);
    }
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();

    // The fleet polls from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut polling = Vec::new();
    for (i, d) in devices.into_iter().enumerate() {
        polling.push(tokio::spawn(poll(d, i, bases.clone(), stop.clone(), counters.clone())));
    }

    // A stream of commands to every device, through whichever instance answers.
    let enqueued: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let unanswered = Arc::new(AtomicU64::new(0));
    let streaming = Arc::new(AtomicBool::new(true));
    let stream = {
        let (admins, ids, enqueued, unanswered, streaming) =
            (admins.clone(), ids.clone(), enqueued.clone(), unanswered.clone(), streaming.clone());
        tokio::spawn(async move {
            let kinds = ["ProfileList", "SecurityInfo", "DeviceInformation"];
            let mut n = 0usize;
            while streaming.load(Relaxed) {
                let a = &admins[n % admins.len()];
                let command = match kinds[n % kinds.len()] {
                    "DeviceInformation" => json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion", "SerialNumber"]}),
                    k => json!({"RequestType": k}),
                };
                let r = if n == 0 {
                    a.post(&format!("/v1/profiles/{}/install", PROFILES[2]), json!({"targets": ids})).await
                } else {
                    a.post("/v1/commands", json!({"targets": ids, "command": command})).await
                };
                // One command for every target, or (a profile filled per
                // device) one command per target.
                let per_device: Vec<(String, usize)> = r
                    .as_ref()
                    .ok()
                    .and_then(|v| v.get("commands"))
                    .and_then(Value::as_object)
                    .map(|m| m.values().filter_map(Value::as_str).map(|u| (u.to_owned(), 1)).collect())
                    .unwrap_or_default();
                match r.ok().as_ref().and_then(|v| v.get("command_uuid")).and_then(Value::as_str) {
                    Some(_) if !per_device.is_empty() => enqueued.lock().await.extend(per_device),
                    Some(u) => enqueued.lock().await.push((u.to_owned(), ids.len())),
                    None => {
                        unanswered.fetch_add(1, Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    // Kill the instances in turn; PostgreSQL restarts once, halfway; the blueprint changes after the first kill.
    let mut pg_restarts = 0;
    for k in 0..cfg.kills {
        tokio::time::sleep(cfg.interval).await;
        let victim = k % inst.len();
        inst[victim].kill9();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if k == cfg.kills / 2 {
            if let (Some(cmd), Some(_)) = (&cfg.pg_restart, &cfg.database_url) {
                let st = tokio::process::Command::new("sh").arg("-c").arg(cmd).status().await?;
                if !st.success() {
                    bail!("--pg-restart failed: {st}");
                }
                pg_restarts += 1;
            }
        }
        inst[victim].spawn(&cfg, &public)?;
        ready(&client, &inst[victim].base()).await?;
        if k == 0 {
            on_any(&admins, |a| async move {
                match a
                    .call(reqwest::Method::PUT, "/v1/blueprints/chaos", Some(json!({"groups": ["*"], "profiles": [PROFILES[0], PROFILES[1]]})))
                    .await?
                {
                    (200, _) => Ok(()),
                    (s, v) => bail!("PUT blueprint: HTTP {s}: {v}"),
                }
            })
            .await?;
        }
    }
    streaming.store(false, Relaxed);
    stream.await?;
    let enqueued = enqueued.lock().await.clone();

    // Converge: every command finished on every device, every profile on every device.
    let t_conv = Instant::now();
    let mut undelivered;
    loop {
        undelivered = Vec::new();
        for (u, targets) in &enqueued {
            let v = on_any(&admins, |a| {
                let u = u.clone();
                async move { a.get(&format!("/v1/commands/{u}")).await }
            })
            .await?;
            let open = v["deliveries"]
                .as_array()
                .map(|d| d.iter().filter(|d| matches!(d["status"].as_str(), Some("Pending" | "NotNow"))).count())
                .unwrap_or(usize::MAX);
            let reached = v["deliveries"].as_array().map_or(0, Vec::len);
            if open > 0 || reached != *targets {
                undelivered.push(format!("{u}: {open} open, {reached} of {targets} targets"));
            }
        }
        if undelivered.is_empty() || t_conv.elapsed() > cfg.settle {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // A last round of sessions after everything was queued, then the devices stop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Relaxed);
    let mut devices = Vec::new();
    for p in polling {
        devices.push(p.await?);
    }
    let converge_seconds = t_conv.elapsed().as_secs_f64();

    // The checks, from the devices' records against what the server stored.
    let mut report = ChaosReport {
        store: if cfg.database_url.is_some() { "postgres" } else { "redb" }.into(),
        instances,
        devices: devices.len(),
        kills: cfg.kills,
        pg_restarts,
        commands: enqueued.len(),
        enqueues_unanswered: unanswered.load(Relaxed) as usize,
        sessions: counters.sessions.load(Relaxed),
        sessions_interrupted: counters.interrupted.load(Relaxed),
        undelivered,
        converge_seconds,
        ..Default::default()
    };
    for d in &devices {
        report.results_acked += d.results_acked.len();
        report.redelivered_after_200.extend(d.redelivered.iter().map(|u| format!("{}: {u}", d.udid)));
        let v = on_any(&admins, |a| {
            let id = d.udid.clone();
            async move { a.get(&format!("/v1/devices/{id}/commands")).await }
        })
        .await?;
        let mut stored: BTreeMap<String, String> = BTreeMap::new();
        for c in v["commands"].as_array().into_iter().flatten() {
            let u = c["command_uuid"].as_str().unwrap_or_default().to_owned();
            let st = c["status"].as_str().unwrap_or_default().to_owned();
            if stored.insert(u.clone(), st).is_some() {
                report.duplicates.push(format!("{}: {u}", d.udid));
            }
        }
        for u in &d.results_acked {
            if !matches!(stored.get(u).map(String::as_str), Some("Acknowledged" | "Error")) {
                report.lost_results.push(format!("{}: {u} is {:?}", d.udid, stored.get(u)));
            }
        }
        let have: BTreeSet<&str> = d.profiles.keys().map(String::as_str).collect();
        let missing: Vec<&str> = PROFILES.iter().copied().filter(|p| !have.contains(p)).collect();
        if !missing.is_empty() {
            report.unconverged.push(format!("{}: missing {}", d.udid, missing.join(", ")));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.ok = report.redelivered_after_200.is_empty()
        && report.lost_results.is_empty()
        && report.duplicates.is_empty()
        && report.undelivered.is_empty()
        && report.unconverged.is_empty()
        && report.commands > 0
        && report.results_acked > 0;
    drop(inst);
    Ok(report)
}

/// The instances' logs, for a failed run.
pub fn logs(work: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(work).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!("== {}\n", e.path().display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}
