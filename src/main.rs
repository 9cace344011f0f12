//! mdmd: an Apple MDM server. `mdmd serve` runs it; the other subcommands are
//! clients of its admin API.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use mdmd::config::ServeConfig;
use mdmd::sim::load::{Admin, LoadConfig};

#[derive(Parser)]
#[command(name = "mdmd", version, about = "An Apple MDM server: enrollment, SCEP CA, check-in, durable command queue.",
    long_about = "An Apple MDM server.\n\n`mdmd serve` runs the server (state in ./data, certificates in ./certs, both created on first start).\nEvery other subcommand is a client of a running server's admin API: point it at one with --server/MDMD_SERVER\nand authenticate with --api-key/MDMD_API_KEY (by default read from ./data/api-key).")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ClientOpts {
    /// URL of a running mdmd.
    #[arg(long, env = "MDMD_SERVER", default_value = "http://127.0.0.1:8443", global = true)]
    server: String,
    /// Admin API key (default: contents of ./data/api-key).
    #[arg(long, env = "MDMD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

impl ClientOpts {
    fn admin(&self) -> anyhow::Result<Admin> {
        let key = match &self.api_key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string("data/api-key")
                .map(|s| s.trim().to_owned())
                .context("no API key: pass --api-key or set MDMD_API_KEY (or run where ./data/api-key exists)")?,
        };
        Admin::new(&self.server, &key)
    }
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
enum SimCmd {
    /// Enroll N simulated devices and answer their queued commands once.
    Enroll {
        #[arg(short = 'n', long, default_value_t = 1)]
        devices: usize,
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
                DevicesCmd::Clear { id } => match a.call(reqwest::Method::DELETE, &format!("/v1/devices/{}/commands", urlencoding::encode(&id)), None).await? {
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
                    let text = if command == "-" { std::io::read_to_string(std::io::stdin())? } else { command };
                    let cmd: Value = serde_json::from_str(&text).context("the command must be JSON")?;
                    print(&a.post("/v1/commands", json!({"targets": targets, "command": cmd})).await?);
                }
                CmdCmd::Show { uuid } => print(&a.get(&format!("/v1/commands/{}", urlencoding::encode(&uuid))).await?),
            }
        }
        Cmd::Sim { what, client } => match what {
            SimCmd::Enroll { devices } => {
                let a = client.admin()?;
                let topic = a.get("/v1/info").await?["topic"].as_str().unwrap_or_default().to_owned();
                let http = mdmd::sim::http_client()?;
                for _ in 0..devices.min(10_000) {
                    let mut d = mdmd::sim::SimDevice::new(&client.server, &topic, http.clone());
                    d.enroll().await?;
                    let handled = d.session().await?;
                    println!("{} enrolled ({} commands answered)", d.udid, handled.len());
                }
            }
            SimCmd::Load { devices, rounds, concurrency, max_seconds } => {
                let a = client.admin()?;
                let r = mdmd::sim::load::run(LoadConfig {
                    server: client.server.clone(),
                    api_key: a.key.clone(),
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
