//! mdmd: an Apple MDM server. `mdmd serve` runs it; the other subcommands are
//! clients of its admin API.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use mdmd::config::ServeConfig;
use mdmd::sim::load::{Admin, LoadConfig};

#[derive(Parser)]
#[command(
    name = "mdmd",
    version,
    about = "An Apple MDM server: enrollment, SCEP CA, check-in, durable command queue.",
    long_about = "An Apple MDM server.\n\n`mdmd serve` runs the server (state in ./data, certificates in ./certs, both created on first start).\nEvery other subcommand is a client of a running server's admin API: point it at one with --server/MDMD_SERVER\nand authenticate with --api-key/MDMD_API_KEY (by default read from ./data/api-key)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ClientOpts {
    /// URL of a running mdmd.
    #[arg(long, env = "MDMD_SERVER", default_value = "https://localhost:8443", global = true)]
    server: String,
    /// Admin API key (default: contents of ./data/api-key).
    #[arg(long, env = "MDMD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Also trust this CA (PEM) for the server's TLS certificate (default: ./certs/ca.pem if present).
    #[arg(long, env = "MDMD_TRUST_CA", global = true)]
    trust_ca: Option<std::path::PathBuf>,
}

impl ClientOpts {
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let path = self
            .trust_ca
            .clone()
            .or_else(|| Some(std::path::PathBuf::from("certs/ca.pem")).filter(|p| p.exists()));
        let pem = match path {
            Some(p) => Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        mdmd::sim::http_client_trusting(pem.as_deref())
    }

    fn admin(&self) -> anyhow::Result<Admin> {
        let key = match &self.api_key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string("data/api-key")
                .map(|s| s.trim().to_owned())
                .context("no API key: pass --api-key or set MDMD_API_KEY (or run where ./data/api-key exists)")?,
        };
        Ok(Admin::new(&self.server, &key, self.client()?))
    }
}

fn parse_user(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .context("expected USER:PASSWORD")
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(ServeConfig),
    /// List and inspect enrolled devices (and user channels).
    Devices {
        #[command(subcommand)]
        what: Option<DevicesCmd>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Queue commands and read their results.
    Cmd {
        #[command(subcommand)]
        what: CmdCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The certificate authority: what is in use, issued certificates, revocation.
    Ca {
        #[command(subcommand)]
        what: CaCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Create a single-use enrollment invitation (URL and QR code).
    Invite {
        /// Seconds until the invitation expires.
        #[arg(long, default_value_t = 7 * 86_400)]
        expires_in: i64,
        /// Write the QR code as PNG here.
        #[arg(long)]
        png: Option<std::path::PathBuf>,
        /// Write the QR code as SVG here.
        #[arg(long)]
        svg: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write the signed enrollment profile to stdout (`mdmd enroll-profile > enroll.mobileconfig`).
    EnrollProfile {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Simulated devices that speak the real protocol (tests and load).
    Sim {
        #[command(subcommand)]
        what: SimCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand)]
enum DevicesCmd {
    /// List enrollments (paged: --after the last id of the previous page).
    List {
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one enrollment.
    Show { id: String },
    /// Show an enrollment's commands, pending and finished.
    Commands { id: String },
    /// Clear an enrollment's pending commands.
    Clear { id: String },
}

#[derive(Subcommand)]
enum CmdCmd {
    /// Queue a command, e.g. `mdmd cmd send -t UDID '{"RequestType":"DeviceInformation","Queries":["OSVersion"]}'`.
    Send {
        /// Target enrollment ids (repeat, or comma-separated).
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
        /// The command as JSON (data as base64 strings, dates as RFC 3339). `-` reads stdin.
        command: String,
    },
    /// Show a command's status per target, with results.
    Show { uuid: String },
}

#[derive(Subcommand)]
enum CaCmd {
    /// The CA, TLS and profile-signing certificates in use, with expiry dates.
    Show,
    /// Certificates issued to devices.
    Certs,
    /// Revoke an issued certificate by serial (hex): its device is refused from then on.
    Revoke { serial: String },
    /// Ask every device whose identity expires soon to renew it now.
    Renew,
}

#[derive(Subcommand)]
enum SimCmd {
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
        /// Enrollment credentials USER:PASSWORD.
        #[arg(long)]
        user: String,
    },
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

async fn client_main(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve(_) => unreachable!("handled in main"),
        Cmd::Devices { what, client } => {
            let a = client.admin()?;
            let v = match what.unwrap_or(DevicesCmd::List { after: None, limit: 100 }) {
                DevicesCmd::List { after, limit } => {
                    let mut path = format!("/v1/devices?limit={limit}");
                    if let Some(a) = after {
                        path.push_str(&format!("&after={}", urlencoding::encode(&a)));
                    }
                    a.get(&path).await?
                }
                DevicesCmd::Show { id } => a.get(&format!("/v1/devices/{}", urlencoding::encode(&id))).await?,
                DevicesCmd::Commands { id } => a.get(&format!("/v1/devices/{}/commands", urlencoding::encode(&id))).await?,
                DevicesCmd::Clear { id } => match a
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/devices/{}/commands", urlencoding::encode(&id)),
                        None,
                    )
                    .await?
                {
                    (200, v) => v,
                    (s, v) => anyhow::bail!("HTTP {s}: {v}"),
                },
            };
            print(&v);
        }
        Cmd::Cmd { what, client } => {
            let a = client.admin()?;
            match what {
                CmdCmd::Send { targets, command } => {
                    let text = if command == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        command
                    };
                    let cmd: Value = serde_json::from_str(&text).context("the command must be JSON")?;
                    print(&a.post("/v1/commands", json!({"targets": targets, "command": cmd})).await?);
                }
                CmdCmd::Show { uuid } => print(&a.get(&format!("/v1/commands/{}", urlencoding::encode(&uuid))).await?),
            }
        }
        Cmd::Ca { what, client } => {
            let a = client.admin()?;
            let v = match what {
                CaCmd::Show => a.get("/v1/ca").await?,
                CaCmd::Certs => a.get("/v1/certificates?limit=1000").await?,
                CaCmd::Revoke { serial } => {
                    a.post(&format!("/v1/certificates/{}/revoke", urlencoding::encode(&serial)), json!({}))
                        .await?
                }
                CaCmd::Renew => a.post("/v1/identities/renew", json!({})).await?,
            };
            print(&v);
        }
        Cmd::Invite {
            expires_in,
            png,
            svg,
            client,
        } => {
            let a = client.admin()?;
            let v = a.post("/v1/enrollments/invitations", json!({"expires_in": expires_in})).await?;
            if let Some(p) = png {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(v["qr_png_base64"].as_str().unwrap_or_default())?;
                std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
            }
            if let Some(p) = svg {
                std::fs::write(&p, v["qr_svg"].as_str().unwrap_or_default()).with_context(|| format!("writing {}", p.display()))?;
            }
            println!(
                "{}\nexpires {}",
                v["url"].as_str().unwrap_or_default(),
                v["expires_at"].as_str().unwrap_or_default()
            );
        }
        Cmd::EnrollProfile { client } => {
            let a = client.admin()?;
            let resp = a
                .client
                .get(format!("{}/v1/enrollments/profile", a.base))
                .bearer_auth(&a.key)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                anyhow::bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            use std::io::Write as _;
            std::io::stdout().write_all(&body)?;
        }
        Cmd::Sim { what, client } => match what {
            SimCmd::Enroll { devices, user, invite } => {
                let http = client.client()?;
                let n = if invite.is_some() { 1 } else { devices.min(10_000) };
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
                    d.enroll().await?;
                    let handled = d.session().await?;
                    println!("{} enrolled ({} commands answered)", d.udid, handled.len());
                }
            }
            SimCmd::ScepBench {
                url,
                challenge,
                requests,
                concurrency,
                pid,
            } => {
                let cpu = |pid: Option<u32>| pid.map(|p| proc_cpu(p)).unwrap_or(0.0);
                let c0 = cpu(pid);
                let (ok, secs) = mdmd::sim::load::scep_bench(client.client()?, &url, &challenge, requests, concurrency).await?;
                let c1 = cpu(pid);
                print(&json!({
                    "issued": ok,
                    "seconds": secs,
                    "issuances_per_second": ok as f64 / secs,
                    "server_cpu_ms_per_issuance": pid.map(|_| (c1 - c0) * 1000.0 / ok.max(1) as f64),
                }));
            }
            SimCmd::Load {
                devices,
                rounds,
                concurrency,
                max_seconds,
                user,
            } => {
                let a = client.admin()?;
                let r = mdmd::sim::load::run(LoadConfig {
                    server: client.server.clone(),
                    api_key: a.key.clone(),
                    client: client.client()?,
                    enroll_user: parse_user(&user)?,
                    devices: devices.min(100_000),
                    rounds,
                    concurrency,
                    deadline: Duration::from_secs(max_seconds),
                })
                .await?;
                print(&serde_json::to_value(r)?);
            }
        },
    }
    Ok(())
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    t(11) + t(12)
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mdmd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MDMD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Serve(cfg) => rt.block_on(mdmd::server::run(cfg)),
        other => rt.block_on(client_main(other)),
    }
}
