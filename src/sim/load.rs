//! The load generator: many simulated devices, real HTTP, bounded in count
//! and time. Reports connect round trips per second and the server's own CPU
//! time per request (from the server's process accounting via `/v1/stats`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::SimDevice;
use crate::protocol::Status;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub server: String,
    pub api_key: String,
    /// A client that trusts the server's TLS certificate.
    pub client: reqwest::Client,
    /// Basic-auth credentials for the enrollment profile.
    pub enroll_user: (String, String),
    pub devices: usize,
    pub rounds: usize,
    pub concurrency: usize,
    pub deadline: Duration,
    /// More instances of the same installation (one database): devices poll
    /// them round-robin after enrolling, and CPU is summed over all.
    pub also: Vec<String>,
    /// Show progress on stderr (a terminal).
    pub progress: bool,
    /// How devices use connections (as many real deployments' clients do:
    /// a fresh TCP+TLS connection per device, or even per request).
    pub connections: Connections,
    /// The CA (PEM) clients trust, for the fresh clients of `connections`.
    pub trust_pem: Option<Vec<u8>>,
    /// SCEP envelope cipher and Mdm-Signature digest of the simulated devices.
    pub style: super::pki::ClientStyle,
    /// The command of each round.
    pub request_type: String,
}

/// How simulated devices use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Connections {
    /// One pool for every device (keep-alive, shared).
    Shared,
    /// A client of its own per device: one fresh TLS connection each, kept alive.
    PerDevice,
    /// A fresh TCP+TLS connection for every request (no keep-alive).
    PerRequest,
}

impl LoadConfig {
    /// The HTTP client one simulated device uses.
    fn device_client(&self) -> anyhow::Result<reqwest::Client> {
        match self.connections {
            Connections::Shared => Ok(self.client.clone()),
            Connections::PerDevice => super::http_client_builder(self.trust_pem.as_deref())?.build().map_err(Into::into),
            Connections::PerRequest => super::http_client_builder(self.trust_pem.as_deref())?
                .pool_max_idle_per_host(0)
                .build()
                .map_err(Into::into),
        }
    }
}

/// A progress line on stderr, rewritten in place.
fn progress(on: bool, what: &str, done: usize, of: usize) {
    if on && (done == of || done % (of / 50).max(1) == 0) {
        eprint!("\r{what}: {done}/{of}{}", if done == of { "\n" } else { "" });
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub devices: usize,
    pub rounds: usize,
    pub round_trips: u64,
    /// Commands the server queued on its own during the rounds (a first
    /// inventory, a DeclarativeManagement sync), answered as a device would.
    pub server_commands: u64,
    pub requests: u64,
    pub seconds: f64,
    pub round_trips_per_second: f64,
    pub requests_per_second: f64,
    pub server_cpu_seconds: f64,
    pub server_cpu_ms_per_request: f64,
    pub enroll_seconds: f64,
    /// Enrollment profiles downloaded first (shared connections; a fresh
    /// one each with `per-request`), timed apart.
    pub profile_seconds: f64,
    pub server_cpu_ms_per_profile: f64,
    /// The whole enrollment of one device: its profile download plus the rest
    /// (for three-phase: phase 1, then phases 2 and 3 with two SCEP issuances).
    pub server_cpu_ms_per_device: f64,
    pub tls_handshakes_profiles: u64,
    /// Enrollments (SCEP + Authenticate + TokenUpdate, each device on its own
    /// client per `connections`) per second.
    pub enrollments_per_second: f64,
    pub server_cpu_ms_per_enrollment: f64,
    /// Instances the devices polled.
    pub instances: usize,
    /// CPU of local PostgreSQL processes in the same windows (when there are any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_cpu_ms_per_request: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_cpu_ms_per_enrollment: Option<f64>,
    /// Round trips to the database per connect request in the rounds (PostgreSQL;
    /// a `/v1/stats` read before and after counts a few too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_round_trips_per_request: Option<f64>,
    /// The command of each round.
    pub request_type: String,
    /// The rounds after the first one or two (which also answer the server's
    /// own first inventory and what it sets off): the command loop's steady state.
    pub steady: Option<SteadyRounds>,
    pub connections: Connections,
    pub envelope: super::pki::Envelope,
    pub sha1_signatures: bool,
    /// TLS handshakes the server completed during enrollment and during the rounds,
    /// how many of them resumed a session, and the rate over each phase.
    pub tls_handshakes_enrolling: u64,
    pub tls_handshakes_rounds: u64,
    pub tls_resumed: u64,
    pub tls_handshakes_per_second: f64,
}

/// The rounds after the first (the first two of four or more), measured on their own.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SteadyRounds {
    pub rounds: usize,
    pub requests: u64,
    /// Commands the server queued itself, answered in these rounds.
    pub server_commands: u64,
    pub server_cpu_ms_per_request: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_cpu_ms_per_request: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_round_trips_per_request: Option<f64>,
}

/// CPU seconds (user + system, reaped children included) of every local
/// process named `postgres`, or None if there is none.
pub fn local_postgres_cpu() -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let mut found = false;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(open) = stat.find('(') else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields after the name: state is [0]; utime [11], stime [12], cutime [13], cstime [14].
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += n(11) + n(12) + n(13) + n(14);
        found = true;
    }
    found.then(|| total as f64 / tick)
}

/// Summed over instances: (CPU seconds, connect requests, TLS handshakes,
/// resumed handshakes, database round trips).
async fn stats_sum(admins: &[Admin]) -> anyhow::Result<(f64, f64, f64, f64, f64)> {
    let mut t = (0.0, 0.0, 0.0, 0.0, 0.0);
    for a in admins {
        let v = a.get("/v1/stats").await?;
        t.0 += cpu(&v);
        t.1 += num(&v, "connects");
        t.2 += num(&v, "tls_handshakes");
        t.3 += num(&v, "tls_resumed");
        t.4 += num(&v, "db_round_trips");
    }
    Ok(t)
}

#[derive(Clone)]
pub struct Admin {
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
}

impl Admin {
    pub fn new(base: &str, key: &str, client: reqwest::Client) -> Self {
        Admin {
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            client,
        }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// POST a raw body (e.g. a .mobileconfig); returns (status, JSON).
    pub async fn call_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/x-apple-aspen-config")
            .body(body)
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        match self.call_bytes(path, body).await? {
            (200 | 201, v) => Ok(v),
            (s, v) => bail!("POST {path}: HTTP {s}: {v}"),
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        match self.call(reqwest::Method::GET, path, None).await? {
            (200, v) => Ok(v),
            (s, v) => bail!("GET {path}: HTTP {s}: {v}"),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        match self.call(reqwest::Method::POST, path, Some(body)).await? {
            (200 | 201, v) => Ok(v),
            (s, v) => bail!("POST {path}: HTTP {s}: {v}"),
        }
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn cpu(v: &Value) -> f64 {
    num(v, "cpu_user_seconds") + num(v, "cpu_system_seconds")
}

/// A few RSA keys shared by simulated devices: key generation is the client's
/// cost, not the server's, and each device still gets its own certificate.
pub fn key_pool(n: usize) -> anyhow::Result<Vec<openssl::pkey::PKey<openssl::pkey::Private>>> {
    (0..n.max(1))
        .map(|_| Ok(openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?))
        .collect()
}

pub async fn run(cfg: LoadConfig) -> anyhow::Result<LoadReport> {
    let admin = Admin::new(&cfg.server, &cfg.api_key, cfg.client.clone());
    let admins: Vec<Admin> = std::iter::once(&cfg.server)
        .chain(cfg.also.iter())
        .map(|s| Admin::new(s, &cfg.api_key, cfg.client.clone()))
        .collect();
    let keys = Arc::new(key_pool(8)?);
    let profile_url = format!("{}/mdm/enroll", cfg.server.trim_end_matches('/'));
    // Profiles first (as clients that enroll in bulk do), timed apart: over
    // the shared pool, or a fresh connection each with `--connections per-request`.
    let p0 = stats_sum(&admins).await?;
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut tasks = Vec::new();
    for _ in 0..cfg.devices {
        let client = match cfg.connections {
            Connections::PerRequest => cfg.device_client()?,
            _ => cfg.client.clone(),
        };
        let (sem, url) = (sem.clone(), profile_url.clone());
        let (u, p) = cfg.enroll_user.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            super::download_profile(&client, &url, Some((&u, &p))).await
        }));
    }
    let mut profiles = Vec::with_capacity(cfg.devices);
    for t in tasks {
        profiles.push(t.await??);
        progress(cfg.progress, "profiles", profiles.len(), cfg.devices);
    }
    let profile_seconds = started.elapsed().as_secs_f64();
    let p1 = stats_sum(&admins).await?;
    // Then each device enrolls with its own client: SCEP, Authenticate, TokenUpdate.
    let s0 = stats_sum(&admins).await?;
    let db0 = local_postgres_cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, der) in profiles.into_iter().enumerate() {
        let sem = sem.clone();
        let client = cfg.device_client()?;
        let keys = keys.clone();
        let style = cfg.style;
        tasks.push(tokio::spawn(super::pki::STYLE.scope(style, async move {
            let _p = sem.acquire().await;
            let dev = SimDevice::from_profile(client, &der, Some(keys[i % keys.len()].clone())).await?;
            dev.enroll().await?;
            anyhow::Ok(dev)
        })));
    }
    let mut devices = Vec::with_capacity(cfg.devices);
    for t in tasks {
        devices.push(t.await??);
        progress(cfg.progress, "enrolled", devices.len(), cfg.devices);
    }
    let enroll_seconds = started.elapsed().as_secs_f64();
    let s1 = stats_sum(&admins).await?;
    let db1 = local_postgres_cpu();
    let enroll_cpu = s1.0 - s0.0;
    let ids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let mut devices = devices;
    for (i, d) in devices.iter_mut().enumerate() {
        d.retarget(&admins[i % admins.len()].base);
    }
    // Answer what enrollment queued (the first inventory) before the timed rounds.
    {
        let mut tasks = Vec::new();
        for d in devices.drain(..) {
            let sem = sem.clone();
            tasks.push(tokio::spawn(super::pki::STYLE.scope(cfg.style, async move {
                let _p = sem.acquire().await;
                let mut d = d;
                d.session().await.map(|_| d)
            })));
        }
        for t in tasks {
            devices.push(t.await??);
        }
    }
    let devices: Vec<Arc<tokio::sync::Mutex<SimDevice>>> = devices.into_iter().map(|d| Arc::new(tokio::sync::Mutex::new(d))).collect();

    let before = stats_sum(&admins).await?;
    let db2 = local_postgres_cpu();
    let t0 = Instant::now();
    let mut round_trips = 0u64;
    let mut server_commands = 0u64;
    let mut steady0 = None;
    let warmup = if cfg.rounds >= 4 { 2 } else { 1 };
    let mut rounds = 0;
    for _ in 0..cfg.rounds {
        if t0.elapsed() > cfg.deadline {
            break;
        }
        let command = if cfg.request_type == "DeviceInformation" {
            json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion", "SerialNumber", "BatteryLevel"]})
        } else {
            json!({"RequestType": cfg.request_type})
        };
        let q = admin.post("/v1/commands", json!({"targets": ids, "command": command})).await?;
        if q.get("queued").and_then(Value::as_u64) != Some(ids.len() as u64) {
            bail!("enqueue did not reach every device: {q}");
        }
        let uuid = q.get("command_uuid").and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut tasks = Vec::new();
        for d in &devices {
            let d = d.clone();
            let sem = sem.clone();
            tasks.push(tokio::spawn(super::pki::STYLE.scope(cfg.style, async move {
                let _p = sem.acquire().await;
                let mut d = d.lock().await;
                d.session().await
            })));
        }
        for t in tasks {
            let handled = t.await??;
            // The round's command, answered once. A server may queue its own
            // (the first inventory, a DeclarativeManagement sync) right after
            // enrollment: those are answered too and counted apart.
            let ours: Vec<_> = handled.iter().filter(|h| h.command_uuid == uuid).collect();
            if ours.len() != 1 || ours[0].status != Status::Acknowledged {
                bail!("unexpected session: {handled:?}");
            }
            server_commands += handled.len() as u64 - 1;
            round_trips += 1;
        }
        rounds += 1;
        if rounds == warmup {
            // The first rounds also answer what the server queued itself after
            // enrollment (the first inventory, and what its answers set off): the
            // later rounds are the steady state.
            steady0 = Some((stats_sum(&admins).await?, local_postgres_cpu(), server_commands));
        }
        progress(cfg.progress, "rounds", rounds, cfg.rounds);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = stats_sum(&admins).await?;
    let db3 = local_postgres_cpu();
    let requests = (after.1 - before.1) as u64;
    let cpu = after.0 - before.0;
    let per = |a: Option<f64>, b: Option<f64>, n: u64| match (a, b) {
        (Some(a), Some(b)) if n > 0 => Some((b - a) * 1000.0 / n as f64),
        _ => None,
    };
    let db_cpu_ms_per_request = per(db2, db3, requests);
    let steady = match steady0 {
        Some((m, db_m, sc)) if rounds > warmup && after.1 > m.1 => {
            let n = after.1 - m.1;
            Some(SteadyRounds {
                rounds: rounds - warmup,
                requests: n as u64,
                server_commands: server_commands - sc,
                server_cpu_ms_per_request: (after.0 - m.0) * 1000.0 / n,
                db_cpu_ms_per_request: per(db_m, db3, n as u64),
                db_round_trips_per_request: (after.4 > 0.0).then(|| (after.4 - m.4) / n),
            })
        }
        _ => None,
    };
    let db_cpu_ms_per_enrollment = per(db0, db1, cfg.devices as u64);
    Ok(LoadReport {
        devices: cfg.devices,
        rounds,
        round_trips,
        server_commands,
        requests,
        seconds,
        round_trips_per_second: round_trips as f64 / seconds,
        requests_per_second: requests as f64 / seconds,
        server_cpu_seconds: cpu,
        server_cpu_ms_per_request: if requests > 0 { cpu * 1000.0 / requests as f64 } else { 0.0 },
        enroll_seconds,
        profile_seconds,
        server_cpu_ms_per_profile: (p1.0 - p0.0) * 1000.0 / cfg.devices.max(1) as f64,
        server_cpu_ms_per_device: ((p1.0 - p0.0) + enroll_cpu) * 1000.0 / cfg.devices.max(1) as f64,
        tls_handshakes_profiles: (p1.2 - p0.2) as u64,
        enrollments_per_second: cfg.devices as f64 / enroll_seconds,
        server_cpu_ms_per_enrollment: enroll_cpu * 1000.0 / cfg.devices.max(1) as f64,
        instances: admins.len(),
        db_cpu_ms_per_request,
        db_cpu_ms_per_enrollment,
        db_round_trips_per_request: (after.4 > 0.0 && requests > 0).then(|| (after.4 - before.4) / requests as f64),
        request_type: cfg.request_type.clone(),
        steady,
        connections: cfg.connections,
        envelope: cfg.style.envelope,
        sha1_signatures: cfg.style.sha1_signatures,
        tls_handshakes_enrolling: (s1.2 - s0.2) as u64,
        tls_handshakes_rounds: (after.2 - before.2) as u64,
        tls_resumed: (after.3 - s0.3) as u64,
        tls_handshakes_per_second: ((s1.2 - s0.2) + (after.2 - before.2)) / (enroll_seconds + seconds).max(1e-9),
    })
}

/// SCEP issuance benchmark against any SCEP server (mdmd or a peer such as
/// Debian's scepserver): N PKCSReq enrollments with a static challenge.
pub async fn scep_bench(client: reqwest::Client, url: &str, challenge: &str, n: usize, concurrency: usize) -> anyhow::Result<(usize, f64)> {
    let keys = Arc::new(key_pool(8)?);
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let run = run.clone();
        let (sem, client, keys, url, challenge) = (sem.clone(), client.clone(), keys.clone(), url.to_owned(), challenge.to_owned());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            let subject = vec![
                ("CN".to_owned(), format!("bench-{}-{i}", &run[..8])),
                ("O".to_owned(), "mdmd-bench".to_owned()),
            ];
            super::pki::scep_enroll(&client, &url, None, keys[i % keys.len()].clone(), &subject, Some(&challenge), None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await?? {
            Ok(_) => ok += 1,
            Err(e) => bail!("SCEP refused: {e}"),
        }
    }
    Ok((ok, t0.elapsed().as_secs_f64()))
}

/// Connect-request benchmark, for a side-by-side with a bare TLS endpoint:
/// `n` signed `Idle` PUTs (signed once per device beforehand: the client's
/// RSA cost stays out) from `devices` round-robin to `url`, `concurrency` at
/// a time, on connections as `connections` says. Returns (answered 200, seconds).
pub async fn idle_bench(cfg: &LoadConfig, devices: &[SimDevice], url: &str, n: usize, concurrency: usize) -> anyhow::Result<(usize, f64)> {
    let mut signed = Vec::with_capacity(devices.len());
    for d in devices {
        let body = crate::protocol::to_xml(&d.idle_report());
        let id = d.identity.as_ref().context("a device without an identity")?;
        let sig = if cfg.style.sha1_signatures {
            id.sign_sha1(&body)?
        } else {
            id.sign(&body)?
        };
        signed.push((body, sig));
    }
    if signed.is_empty() {
        bail!("no devices");
    }
    let signed = Arc::new(signed);
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let client = match cfg.connections {
        Connections::PerRequest => cfg.device_client()?,
        _ => cfg.client.clone(),
    };
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, client, signed, url) = (sem.clone(), client.clone(), signed.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            let (body, sig) = &signed[i % signed.len()];
            let r = client
                .put(&url)
                .header("Content-Type", "application/x-apple-aspen-mdm")
                .header("Mdm-Signature", sig.as_str())
                .body(body.clone())
                .send()
                .await?;
            let ok = r.status().as_u16() == 200;
            r.bytes().await?;
            anyhow::Ok(ok)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await?? {
            ok += 1;
        }
    }
    Ok((ok, t0.elapsed().as_secs_f64()))
}

/// Enroll `n` devices at `cfg.server` (profile, SCEP, Authenticate, TokenUpdate)
/// and answer what enrollment queued, so their Idle polls find empty queues.
pub async fn enroll_devices(cfg: &LoadConfig, n: usize) -> anyhow::Result<Vec<SimDevice>> {
    let keys = key_pool(4)?;
    let url = format!("{}/mdm/enroll", cfg.server.trim_end_matches('/'));
    let (u, p) = cfg.enroll_user.clone();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let der = super::download_profile(&cfg.client, &url, Some((&u, &p))).await?;
        let mut d = SimDevice::from_profile(cfg.client.clone(), &der, Some(keys[i % keys.len()].clone())).await?;
        d.enroll().await?;
        d.session().await?;
        out.push(d);
    }
    Ok(out)
}
