//! `mdmd sim`: simulated devices that speak the real protocol, and the
//! benchmarks built on them (enroll, fleet, load, SCEP, connect floor, ISE).
//! This family drives the load generator (`mdmd::sim`); its admin calls use
//! the load generator's own client, as the benchmarks measure it.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use mdmd::sim::load::{Admin, LoadConfig};

use super::client::ClientOpts;
use super::{parse_user, print};

#[derive(Args)]
pub struct SimArgs {
    #[command(subcommand)]
    what: SimCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl SimArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        self.what.run(&self.client).await
    }
}

/// The APNs stand-in of `sim fleet` and `sim soak`.
#[derive(Args)]
pub struct StandInArgs {
    /// Where the APNs stand-in listens (loopback).
    #[arg(long, default_value = "127.0.0.1:2197")]
    apns_listen: String,
    /// CA (PEM) that issued the push certificate: clients must present a certificate from it.
    #[arg(long)]
    push_ca: std::path::PathBuf,
    /// Write the stand-in's TLS certificate here (mdmd's --apns-ca).
    #[arg(long)]
    write_apns_ca: std::path::PathBuf,
}

#[derive(Subcommand)]
pub enum SimCmd {
    /// A stand-in of Apple's ADE API with devices assigned to it, and a server token for mdmd.
    Abm(super::sim_ade::AbmArgs),
    /// An ADE iPhone's first boot: MachineInfo, enrollment, Setup Assistant until DeviceConfigured.
    AdeIphone(super::sim_ade::AdeIphoneArgs),
    /// Seed a store (a data dir or postgres:// URL, mdmd stopped) with N devices as
    /// inventory would leave them, for fleet-sized figures (`make ise-bench`).
    Seed {
        #[arg(long)]
        store: String,
        #[arg(short = 'n', long, default_value_t = 100_000)]
        devices: usize,
    },
    /// Query the Cisco ISE API by MAC for random seeded devices and report latency.
    IseBench {
        /// A `nac` account: NAME:SECRET.
        #[arg(long)]
        account: String,
        /// How many devices were seeded.
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(short = 'n', long, default_value_t = 5000)]
        requests: usize,
        #[arg(short, long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Enroll N simulated devices (profile, SCEP, Authenticate, TokenUpdate) and answer their queued commands once.
    Enroll {
        #[arg(short = 'n', long, default_value_t = 1)]
        devices: usize,
        /// Enrollment credentials USER:PASSWORD (see `serve --enroll-user`).
        #[arg(long)]
        user: Option<String>,
        /// Or an invitation URL (from `mdmd invite`); good for one device.
        #[arg(long)]
        invite: Option<String>,
        /// Also play a derived-credential provider's app with this bundle id:
        /// wait for its managed configuration ($DERIVED_CREDENTIAL_URL and
        /// $DERIVED_CREDENTIAL_TOKEN), then upload a credential made by a
        /// throw-away test CA for each --provider-usage.
        #[arg(long)]
        provider_app: Option<String>,
        #[arg(long, default_value = "authentication")]
        provider_usage: Vec<String>,
        /// How long to wait for the app's configuration (seconds).
        #[arg(long, default_value_t = 60)]
        provider_wait: u64,
        /// The devices are supervised (DeviceInformation says IsSupervised and they take
        /// Apple's supervised-only commands and settings); unsupervised otherwise.
        #[arg(long)]
        supervised: bool,
        /// Stay online after enrolling: every device polls the server (a connect
        /// session) every --poll-secs and answers what is queued, until Ctrl-C.
        #[arg(long)]
        stay: bool,
        /// With --stay: seconds between polls.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        poll_secs: u64,
    },
    /// Account-driven enrollment, as a person typing their work account in Settings:
    /// service discovery, the 401 Bearer challenge, the directory sign-in form (serve
    /// with --ldap-url and --account-driven), the access token, the profile, SCEP,
    /// Authenticate and TokenUpdate. `--kind byod` enrolls a personal device (User
    /// Enrollment: an EnrollmentID, no UDID); `adde` an organisation's.
    AccountEnroll {
        /// The work account typed in Settings (its domain's discovery is read from --server).
        #[arg(long)]
        email: String,
        /// Directory credentials USER:PASSWORD for the sign-in form.
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "byod", value_parser = ["byod", "adde"])]
        kind: String,
    },
    /// A long-running fleet woken by push: an APNs stand-in (HTTP/2, TLS, client certificate
    /// required) and N enrolled devices that answer when pushed. Start mdmd with
    /// `--apns-url` (printed) and `--apns-ca FILE` (written here).
    Fleet {
        #[arg(short = 'n', long, default_value_t = 10)]
        devices: usize,
        /// Enrollment credentials USER:PASSWORD.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        standin: StandInArgs,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Measure: this many rounds of one command to one device, then to every device
        /// (POST /v1/commands → push → the device's result stored), median and p99; then exit.
        #[arg(long)]
        measure_rounds: Option<usize>,
        /// Devices enrolled at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The devices are supervised (DeviceInformation says IsSupervised and they take
        /// Apple's supervised-only commands and settings); unsupervised otherwise.
        #[arg(long)]
        supervised: bool,
    },
    /// An hour (or --minutes) at a steady load, sampled each minute: N devices woken by push
    /// (an APNs stand-in, as `fleet`) that also check in every --poll-secs, a command to a
    /// random batch every --command-secs, a profile installed on a batch and removed again
    /// every --profile-secs. Each sample (a JSON line in --out) has the server's RSS, open
    /// files and CPU (--server-pid), the store's size on disk (--data-dir), the p50/p99/max
    /// latency of the devices' requests, and the ACME certificate's serial. `make soak`.
    Soak {
        #[arg(short = 'n', long, default_value_t = 2000)]
        devices: usize,
        /// Enrollment credentials USER:PASSWORD.
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=24 * 60))]
        minutes: u64,
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        sample_secs: u64,
        /// Each device checks in this often, besides when pushed.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        poll_secs: u64,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        command_secs: u64,
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        profile_secs: u64,
        /// Devices per command and per profile install.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Devices enrolled at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[command(flatten)]
        standin: StandInArgs,
        /// The server's process id (RSS, open files, CPU).
        #[arg(long)]
        server_pid: Option<u32>,
        /// The server's data directory (store size on disk).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Samples go here, one JSON object per line (appended).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// SCEP issuance benchmark against any SCEP URL (mdmd's /scep or a peer) with a static challenge.
    ScepBench {
        #[arg(long)]
        url: String,
        #[arg(long)]
        challenge: String,
        #[arg(short = 'n', long, default_value_t = 200)]
        requests: usize,
        #[arg(short, long, default_value_t = 8)]
        concurrency: usize,
        /// Report this process's CPU time (e.g. the SCEP server's pid) per issuance.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The floor for connect requests: a bare TLS endpoint on mdmd's own listener code
    /// (OpenSSL, hyper) that answers every request with an empty 200 — no routing,
    /// signature check or store. Loopback only. Measure it beside mdmd with `sim idle-bench`.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Certificate chain (PEM), e.g. mdmd's `<certs-dir>/tls.pem`.
        #[arg(long)]
        tls_cert: std::path::PathBuf,
        #[arg(long)]
        tls_key: std::path::PathBuf,
    },
    /// Connect requests side by side with the floor: enroll D devices at --server, then send
    /// N signed Idle polls (signed beforehand) to --url (mdmd's /mdm/connect, or a bare server),
    /// and report requests/s and, with --pid, that process's CPU per request.
    IdleBench {
        #[arg(long)]
        url: String,
        /// Enrollment credentials USER:PASSWORD (devices enroll at --server).
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 16)]
        devices: usize,
        #[arg(short = 'n', long, default_value_t = 5000)]
        requests: usize,
        #[arg(short, long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, value_enum, default_value = "shared")]
        connections: mdmd::sim::load::Connections,
        #[arg(long)]
        sha1_signatures: bool,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Load test: N devices, R rounds of (enqueue to all → every device runs Idle → command → Acknowledged → empty).
    Load {
        #[arg(short = 'n', long, default_value_t = 1000)]
        devices: usize,
        #[arg(short, long, default_value_t = 5)]
        rounds: usize,
        #[arg(short, long, default_value_t = 64)]
        concurrency: usize,
        /// Stop starting new rounds after this many seconds.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
        /// How devices use connections: shared (one keep-alive pool), per-device (a fresh
        /// TLS connection per device), per-request (a fresh TCP+TLS connection per request).
        #[arg(long, value_enum, default_value = "shared")]
        connections: mdmd::sim::load::Connections,
        /// The SCEP envelope cipher devices use (auto: AES if the server offers it, else 3DES).
        #[arg(long, value_enum, default_value = "auto")]
        envelope: mdmd::sim::pki::Envelope,
        /// Sign Mdm-Signature with SHA-1 (as some clients still do) instead of SHA-256.
        #[arg(long)]
        sha1_signatures: bool,
        /// The command each round sends: DeviceInformation (its answer is stored as
        /// inventory and device facts) or one that only stores its result, such as
        /// ProvisioningProfileList (the command loop's own cost).
        #[arg(long, default_value = "DeviceInformation")]
        request_type: String,
        /// Enrollment credentials USER:PASSWORD.
        #[arg(long)]
        user: String,
        /// Another instance of the same installation (same database, same
        /// API key): devices enroll at --server, then poll all instances
        /// round-robin; CPU is summed over them. Repeatable.
        #[arg(long)]
        also: Vec<String>,
    },
    /// Chaos: start mdmd instances (this binary) on one store, enroll N devices that poll and
    /// answer a stream of commands (queries, a profile install, a blueprint and its change),
    /// SIGKILL and restart the instances in turn (and PostgreSQL once, with --pg-restart), then
    /// check from outside that every result answered 200 is stored once, nothing is delivered
    /// again after its result got 200, no command is lost and every device converged.
    /// Exits non-zero if any check fails. Loopback only.
    Chaos {
        #[arg(short = 'n', long, default_value_t = 1000)]
        devices: usize,
        /// PostgreSQL for the instances (several instances); without it, redb and one instance.
        #[arg(long, env = "MDMD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Instances on PostgreSQL.
        #[arg(long, default_value_t = 2)]
        instances: usize,
        /// Kills, one instance after the other.
        #[arg(long, default_value_t = 4)]
        kills: usize,
        /// Seconds between kills.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// A shell command that restarts PostgreSQL, run once halfway
        /// (e.g. "pg_ctlcluster 15 main restart").
        #[arg(long)]
        pg_restart: Option<String>,
        /// Seconds the fleet may take to converge after the last kill.
        #[arg(long, default_value_t = 180)]
        settle: u64,
        /// Devices enrolling at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Keep the instances' certs, data and logs here (default: a temporary directory).
        #[arg(long)]
        work: Option<std::path::PathBuf>,
        /// Passed to the instances (`serve --fanout-min-targets`): commands to
        /// at least this many devices are stored as fan-outs.
        #[arg(long)]
        fanout_min_targets: Option<u64>,
    },
}

impl SimCmd {
    pub async fn run(self, client: &ClientOpts) -> anyhow::Result<()> {
        match self {
            SimCmd::Abm(a) => a.run().await?,
            SimCmd::AdeIphone(a) => a.run(client).await?,
            SimCmd::Enroll {
                devices,
                user,
                invite,
                provider_app,
                provider_usage,
                provider_wait,
                supervised,
                stay,
                poll_secs,
            } => {
                let test_ca = match &provider_app {
                    Some(_) => Some(mdmd::sim::pki::test_ca("mdmd sim derived-credential CA")?),
                    None => None,
                };
                let http = client.http()?;
                let n = if invite.is_some() { 1 } else { devices.min(10_000) };
                let mut online = Vec::new();
                let creds = match &user {
                    Some(u) => Some(parse_user(u)?),
                    None => None,
                };
                for _ in 0..n {
                    let der = match (&invite, &creds) {
                        (Some(url), _) => mdmd::sim::download_profile(&http, url, None).await?,
                        (None, Some((u, p))) => {
                            mdmd::sim::download_profile(&http, &format!("{}/mdm/enroll", client.server), Some((u, p))).await?
                        }
                        (None, None) => anyhow::bail!("pass --user USER:PASSWORD or --invite URL"),
                    };
                    let mut d = mdmd::sim::SimDevice::from_profile(http.clone(), &der, None).await?;
                    d.supervised = supervised;
                    d.enroll().await?;
                    let handled = d.session().await?;
                    outln!("{} enrolled ({} commands answered)", d.udid, handled.len());
                    if let (Some(app), Some(ca)) = (&provider_app, &test_ca) {
                        let until = std::time::Instant::now() + std::time::Duration::from_secs(provider_wait);
                        while d.apps.get(app).and_then(|a| a.config.as_ref()).is_none() {
                            if std::time::Instant::now() > until {
                                anyhow::bail!("{app} got no managed configuration within {provider_wait} s");
                            }
                            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                            d.session().await?;
                        }
                        for usage in &provider_usage {
                            let password = mdmd::pki::random_token(12);
                            let p12 = mdmd::sim::pki::issue_pkcs12(ca, &format!("{} {usage}", d.udid), 365, &password)?;
                            let (status, v) = d.provider_app_upload(app, usage, &p12, &password).await?;
                            outln!("{app}: {usage} credential posted: HTTP {status} {v}");
                        }
                        let handled = d.session().await?;
                        outln!("{} answered {} more commands", d.udid, handled.len());
                    }
                    if stay {
                        online.push(d);
                    }
                }
                if stay {
                    stay_online(online, Duration::from_secs(poll_secs)).await;
                }
            }
            SimCmd::AccountEnroll { email, user, kind } => {
                let (u, p) = parse_user(&user)?;
                let mut b = reqwest::Client::builder()
                    .user_agent("MDM/1.0 mdmd-sim")
                    .timeout(std::time::Duration::from_secs(30))
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(pem) = client.trust_pem()? {
                    b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
                }
                let version = format!("mdm-{kind}");
                let mut d = mdmd::sim::account::enroll_with_directory(b.build()?, &client.server, &version, &email, &u, &p).await?;
                d.enroll().await?;
                let handled = d.session().await?;
                let what = if d.enrollment_id.is_some() {
                    "User Enrollment"
                } else {
                    "device enrollment"
                };
                outln!("{} enrolled ({what}, {} commands answered)", d.id(), handled.len());
            }
            SimCmd::Fleet {
                devices,
                user,
                standin,
                seconds,
                measure_rounds,
                concurrency,
                supervised,
            } => {
                let StandInArgs {
                    apns_listen,
                    push_ca,
                    write_apns_ca,
                } = standin;
                let http = client.http()?;
                let cas = openssl::x509::X509::stack_from_pem(
                    &std::fs::read(&push_ca).with_context(|| format!("reading {}", push_ca.display()))?,
                )?;
                let standin = mdmd::sim::apns::StandIn::start(&apns_listen, cas).await?;
                std::fs::write(&write_apns_ca, standin.server_cert.to_pem()?)?;
                eprintln!(
                    "APNs stand-in on {} (mdmd --apns-url {} --apns-ca {})",
                    standin.addr,
                    standin.url(),
                    write_apns_ca.display()
                );
                let (u, p) = parse_user(&user)?;
                let stats = std::sync::Arc::new(mdmd::sim::fleet::FleetStats::default());
                let keys = mdmd::sim::load::key_pool(8)?;
                let standin = std::sync::Arc::new(standin);
                let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
                let mut joins = Vec::new();
                for i in 0..devices.min(100_000) {
                    let (http, standin, stats, sem, key) = (
                        http.clone(),
                        standin.clone(),
                        stats.clone(),
                        sem.clone(),
                        keys[i % keys.len()].clone(),
                    );
                    let (url, u, p) = (format!("{}/mdm/enroll", client.server), u.clone(), p.clone());
                    joins.push(tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await?;
                        let der = mdmd::sim::download_profile(&http, &url, Some((&u, &p))).await?;
                        let mut d = mdmd::sim::SimDevice::from_profile(http.clone(), &der, Some(key)).await?;
                        d.supervised = supervised;
                        d.enroll().await?;
                        let udid = d.udid.clone();
                        mdmd::sim::fleet::serve(&standin, d, stats);
                        anyhow::Ok(udid)
                    }));
                }
                let mut handles = Vec::new();
                for j in joins {
                    handles.push(j.await??);
                }
                eprintln!("{} devices enrolled and listening for pushes", handles.len());
                if let Some(rounds) = measure_rounds {
                    let a = Admin::new(&client.server, &client.api_key()?, client.http()?);
                    let within = Duration::from_secs(seconds);
                    let one = mdmd::sim::fleet::measure(&a, &stats, &handles[..1], rounds, within).await?;
                    let all = mdmd::sim::fleet::measure(&a, &stats, &handles, rounds.min(3), within).await?;
                    print(&json!({"one_target": one, "all_targets": all, "fleet": stats.report(handles.len(), &standin)}));
                    return Ok(());
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = tokio::signal::ctrl_c() => break,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {
                            eprintln!("{}", serde_json::to_string(&stats.report(handles.len(), &standin))?);
                        }
                    }
                }
                print(&serde_json::to_value(stats.report(handles.len(), &standin))?);
            }
            SimCmd::Soak {
                devices,
                user,
                minutes,
                sample_secs,
                poll_secs,
                command_secs,
                profile_secs,
                batch,
                concurrency,
                standin,
                server_pid,
                data_dir,
                out,
            } => {
                let StandInArgs {
                    apns_listen,
                    push_ca,
                    write_apns_ca,
                } = standin;
                let (u, p) = parse_user(&user)?;
                let cfg = mdmd::sim::soak::SoakConfig {
                    server: client.server.clone(),
                    api_key: client.api_key()?,
                    user: (u, p),
                    devices,
                    duration: Duration::from_secs(minutes * 60),
                    sample_every: Duration::from_secs(sample_secs),
                    poll_every: Duration::from_secs(poll_secs),
                    command_every: Duration::from_secs(command_secs),
                    batch,
                    profile_every: Duration::from_secs(profile_secs),
                    concurrency,
                    apns_listen,
                    push_ca,
                    write_apns_ca,
                    server_pid,
                    data_dir,
                    out,
                };
                let r = mdmd::sim::soak::run(cfg, client.http()?).await?;
                print(&serde_json::to_value(r)?);
            }
            SimCmd::Seed { store, devices } => {
                let s = super::db::open_named_store(&store, true).await?;
                let secs = mdmd::sim::nac::seed(&*s, devices).await?;
                print(&json!({"seeded": devices, "store": s.describe(), "seconds": secs}));
            }
            SimCmd::IseBench {
                account,
                devices,
                requests,
                concurrency,
            } => {
                let (user, password) = parse_user(&account)?;
                let r = mdmd::sim::nac::ise_bench(client.http()?, &client.server, &user, &password, devices, requests, concurrency).await?;
                print(&serde_json::to_value(r)?);
            }
            SimCmd::ScepBench {
                url,
                challenge,
                requests,
                concurrency,
                pid,
            } => {
                let cpu = |pid: Option<u32>| pid.map(proc_cpu).unwrap_or(0.0);
                let c0 = cpu(pid);
                let (ok, secs) = mdmd::sim::load::scep_bench(client.http()?, &url, &challenge, requests, concurrency).await?;
                let c1 = cpu(pid);
                print(&json!({
                    "issued": ok,
                    "seconds": secs,
                    "issuances_per_second": ok as f64 / secs,
                    "server_cpu_ms_per_issuance": pid.map(|_| (c1 - c0) * 1000.0 / ok.max(1) as f64),
                }));
            }
            SimCmd::BareServer { listen, tls_cert, tls_key } => {
                let pair = mdmd::pki::ca::load_pair(&tls_cert, &tls_key)?;
                let tls = std::sync::Arc::new(mdmd::app::LiveTls::new(
                    mdmd::http::listener::acceptor_for(&pair)?,
                    tls_cert,
                    tls_key,
                ));
                let l = tokio::net::TcpListener::bind(&listen).await?;
                if !l.local_addr()?.ip().is_loopback() {
                    anyhow::bail!("the bare server listens on loopback only");
                }
                outln!("bare server listening on https://{}", l.local_addr()?);
                mdmd::http::listener::serve_bare(l, tls).await;
            }
            SimCmd::IdleBench {
                url,
                user,
                devices,
                requests,
                concurrency,
                connections,
                sha1_signatures,
                pid,
            } => {
                let cfg = LoadConfig {
                    server: client.server.clone(),
                    api_key: String::new(),
                    client: client.http()?,
                    enroll_user: parse_user(&user)?,
                    devices,
                    rounds: 0,
                    concurrency,
                    deadline: Duration::from_secs(600),
                    also: Vec::new(),
                    progress: false,
                    connections,
                    trust_pem: client.trust_pem()?,
                    style: mdmd::sim::pki::ClientStyle {
                        envelope: mdmd::sim::pki::Envelope::Auto,
                        sha1_signatures,
                    },
                    request_type: "DeviceInformation".into(),
                };
                let devs = mdmd::sim::load::enroll_devices(&cfg, devices.max(1)).await?;
                let cpu = |pid: Option<u32>| pid.map(proc_cpu).unwrap_or(0.0);
                let c0 = cpu(pid);
                let (ok, secs) = mdmd::sim::load::idle_bench(&cfg, &devs, &url, requests, concurrency).await?;
                let c1 = cpu(pid);
                print(&json!({
                    "url": url,
                    "connections": connections,
                    "answered_200": ok,
                    "requests": requests,
                    "seconds": secs,
                    "requests_per_second": requests as f64 / secs,
                    "server_cpu_ms_per_request": pid.map(|_| (c1 - c0) * 1000.0 / requests.max(1) as f64),
                }));
            }
            SimCmd::Load {
                devices,
                rounds,
                concurrency,
                max_seconds,
                user,
                also,
                connections,
                envelope,
                sha1_signatures,
                request_type,
            } => {
                let api_key = client.api_key()?;
                let r = mdmd::sim::load::run(LoadConfig {
                    server: client.server.clone(),
                    api_key,
                    client: client.http()?,
                    enroll_user: parse_user(&user)?,
                    devices: devices.min(100_000),
                    rounds,
                    concurrency,
                    deadline: Duration::from_secs(max_seconds),
                    also,
                    progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    connections,
                    trust_pem: client.trust_pem()?,
                    style: mdmd::sim::pki::ClientStyle { envelope, sha1_signatures },
                    request_type,
                })
                .await?;
                print(&serde_json::to_value(r)?);
            }
            SimCmd::Chaos {
                devices,
                database_url,
                instances,
                kills,
                interval,
                pg_restart,
                settle,
                concurrency,
                work,
                fanout_min_targets,
            } => {
                let tmp = tempfile::tempdir()?;
                let work = work.unwrap_or_else(|| tmp.path().to_owned());
                let r = mdmd::sim::chaos::run(mdmd::sim::chaos::ChaosConfig {
                    bin: std::env::current_exe()?,
                    work: work.clone(),
                    database_url,
                    instances: instances.clamp(1, 8),
                    devices: devices.clamp(1, 20_000),
                    kills,
                    interval: Duration::from_secs(interval),
                    pg_restart,
                    concurrency: concurrency.max(1),
                    settle: Duration::from_secs(settle),
                    fanout_min_targets,
                })
                .await?;
                print(&serde_json::to_value(&r)?);
                if !r.ok {
                    eprint!("{}", mdmd::sim::chaos::logs(&work));
                    anyhow::bail!("chaos: a check failed (see the report)");
                }
            }
        }
        Ok(())
    }
}

/// `sim enroll --stay`: every device polls every `every` and answers what is
/// queued (an erased or unenrolled device goes quiet), until Ctrl-C.
async fn stay_online(mut devices: Vec<mdmd::sim::SimDevice>, every: Duration) {
    eprintln!(
        "{} device(s) online, polling every {} s; Ctrl-C to stop",
        devices.len(),
        every.as_secs()
    );
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(every) => {}
        }
        for d in devices.iter_mut().filter(|d| !d.erased && !d.unenrolled) {
            match d.session().await {
                Ok(handled) => {
                    for h in handled {
                        outln!("{} answered {} {} ({:?})", d.udid, h.request_type, h.command_uuid, h.status);
                    }
                }
                Err(e) => tracing::warn!(udid = %d.udid, error = %format!("{e:#}"), "poll failed"),
            }
        }
    }
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> f64 {
    mdmd::sim::soak::proc_figures(pid).2.unwrap_or(0.0)
}
