//! `mdmd cmd`: queue commands (as JSON, as a plist, or typed with flags) to
//! many targets, and read their results.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{enc, AdminClient, ClientOpts};
use super::{print_batch, show, table};

#[derive(Args)]
pub struct CmdArgs {
    #[command(subcommand)]
    what: CmdCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl CmdArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Args)]
pub struct Targets {
    /// Target enrollment ids (UDIDs; repeat or comma-separate; `@FILE` reads one per line, `@-` stdin).
    #[arg(required = true, value_delimiter = ',')]
    targets: Vec<String>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

#[derive(Subcommand)]
pub enum CmdCmd {
    /// Queue a command, e.g. `mdmd cmd send -t UDID '{"RequestType":"DeviceInformation","Queries":["OSVersion"]}'`.
    Send {
        /// Target enrollment ids (repeat, or comma-separated; `@FILE` reads one per line, `@-` stdin).
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
        /// The command as JSON (data as base64 strings, dates as RFC 3339). `-` reads stdin.
        command: String,
    },
    /// Show a command's status per target, with results.
    Show { uuid: String },
    /// Queue a command given as a plist file (`{RequestType, …}`), validated like JSON.
    SendPlist {
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
        file: std::path::PathBuf,
    },
    /// DeviceLock: lock the screen now, optionally with a message and phone number.
    Lock {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        phone: Option<String>,
        /// Find My PIN (macOS only).
        #[arg(long)]
        pin: Option<String>,
    },
    /// EraseDevice: wipe the device.
    Erase {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        pin: Option<String>,
        #[arg(long)]
        preserve_data_plan: bool,
        #[arg(long)]
        disallow_proximity_setup: bool,
    },
    /// ClearPasscode: the escrowed UnlockToken is filled in by the server.
    ClearPasscode {
        #[command(flatten)]
        t: Targets,
    },
    /// DeviceInformation: the queries named (repeat --query), or every query key.
    DeviceInfo {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "query")]
        queries: Vec<String>,
    },
    /// SecurityInfo: passcode compliance, encryption, management status.
    SecurityInfo {
        #[command(flatten)]
        t: Targets,
    },
    /// CertificateList: certificates and identities on the device.
    CertificateList {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        managed_only: bool,
    },
    /// ProfileList: installed configuration profiles (reconciled with mdmd's records).
    ProfileList {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        managed_only: bool,
    },
    /// InstallProfile of a .mobileconfig file (for a stored template: `mdmd profiles install`).
    InstallProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// RemoveProfile by PayloadIdentifier.
    RemoveProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        identifier: String,
    },
    /// ProvisioningProfileList.
    ProvisioningProfileList {
        #[command(flatten)]
        t: Targets,
    },
    /// InstallProvisioningProfile from a .mobileprovision file.
    InstallProvisioningProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// RemoveProvisioningProfile by UUID.
    RemoveProvisioningProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        uuid: String,
    },
    /// InstallApplication by App Store id, manifest URL or bundle id, with managed app configuration.
    InstallApp {
        #[command(flatten)]
        t: Targets,
        #[arg(long, conflicts_with_all = ["manifest_url", "identifier"])]
        itunes_id: Option<i64>,
        #[arg(long, conflicts_with = "identifier")]
        manifest_url: Option<String>,
        #[arg(long)]
        identifier: Option<String>,
        /// 1 remove with MDM profile, 4 prevent data backup, 5 both.
        #[arg(long)]
        management_flags: Option<i64>,
        /// Managed app configuration: a JSON object or key=value lines file (values may use $VARIABLES).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// RemoveApplication.
    RemoveApp {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        identifier: String,
    },
    /// InstalledApplicationList.
    InstalledApps {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "identifier")]
        identifiers: Vec<String>,
        #[arg(long)]
        managed_only: bool,
    },
    /// ManagedApplicationList.
    ManagedApps {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "identifier")]
        identifiers: Vec<String>,
    },
    /// ManagedApplicationConfiguration: the configuration of managed apps.
    AppConfig {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "identifier", required = true)]
        identifiers: Vec<String>,
    },
    /// Restrictions: the effective restrictions.
    Restrictions {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        profile_restrictions: bool,
    },
    /// Settings: data/voice roaming, managed app configuration.
    Settings {
        #[command(flatten)]
        t: Targets,
        #[arg(long, value_parser = on_off, value_name = "on|off")]
        data_roaming: Option<bool>,
        #[arg(long, value_parser = on_off, value_name = "on|off")]
        voice_roaming: Option<bool>,
        /// BUNDLE_ID=FILE: the app's managed configuration (a JSON object or key=value lines).
        #[arg(long, value_name = "BUNDLE_ID=FILE")]
        app_config: Vec<String>,
    },
}

impl CmdCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            CmdCmd::Send { targets, command } => {
                let text = if command == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    command
                };
                let cmd: Value = serde_json::from_str(&text).context("the command must be JSON")?;
                print_batch(&enqueue(a, expand_targets(targets)?, cmd).await?)?;
            }
            CmdCmd::Show { uuid } => show(&a.get(&format!("/v1/commands/{}", enc(&uuid))).await?, table::command),
            CmdCmd::SendPlist { targets, file } => {
                let xml = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                print_batch(&enqueue(a, expand_targets(targets)?, json!(xml)).await?)?;
            }
            typed => {
                let (spec, targets) = typed_command(typed)?;
                print_batch(&enqueue(a, expand_targets(targets)?, spec.to_json()).await?)?;
            }
        }
        Ok(())
    }
}

fn read_json_object(p: &std::path::Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    app_config_text(&text, p)
}

/// A managed app configuration: a JSON object, or `key=value` lines (an
/// app vendor's AppConfig file); warnings go to standard error.
pub(super) fn app_config_text(text: &str, p: &std::path::Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let i = mdmd::profiles::appconfig::parse(text).with_context(|| {
        format!(
            "{}: not a managed app configuration (a JSON object or key=value lines)",
            p.display()
        )
    })?;
    for w in &i.warnings {
        eprintln!("warning: {}: {w}", p.display());
    }
    Ok(i.configuration)
}

/// Targets as given, with `@FILE` (one id per line; `@-`: stdin) expanded.
pub(super) fn expand_targets(given: Vec<String>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(given.len());
    for t in given {
        match t.strip_prefix('@') {
            Some(path) => {
                let text = if path == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading targets from stdin")?
                } else {
                    std::fs::read_to_string(path).with_context(|| format!("reading targets from {path}"))?
                };
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_owned),
                );
            }
            None => out.push(t),
        }
    }
    if out.is_empty() {
        anyhow::bail!("no targets");
    }
    Ok(out)
}

/// POST /v1/commands; for a large target list on a terminal, a running
/// status line on stderr while the server queues it.
async fn enqueue(a: &AdminClient, targets: Vec<String>, command: Value) -> anyhow::Result<Value> {
    let n = targets.len();
    let show = n >= 1000 && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let ticker = show.then(|| {
        tokio::spawn(async move {
            loop {
                eprint!("\rqueueing for {n} targets… {:.1} s", started.elapsed().as_secs_f64());
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    });
    let r = a.post("/v1/commands", json!({"targets": targets, "command": command})).await;
    if let Some(t) = ticker {
        t.abort();
        match &r {
            Ok(v) => eprintln!(
                "\rqueued for {} of {n} targets in {:.2} s",
                v["queued"].as_u64().unwrap_or(0),
                started.elapsed().as_secs_f64()
            ),
            Err(_) => eprintln!(),
        }
    }
    r
}

/// A typed command from the CLI, and its targets.
fn typed_command(c: CmdCmd) -> anyhow::Result<(mdmd::protocol::builders::CommandSpec, Vec<String>)> {
    use mdmd::protocol::builders::{AppSource, CommandSpec as S, Setting};
    let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(match c {
        CmdCmd::Lock { t, message, phone, pin } => (
            S::DeviceLock {
                pin,
                message,
                phone_number: phone,
            },
            t.targets,
        ),
        CmdCmd::Erase {
            t,
            pin,
            preserve_data_plan,
            disallow_proximity_setup,
        } => (
            S::EraseDevice {
                pin,
                preserve_data_plan,
                disallow_proximity_setup,
            },
            t.targets,
        ),
        CmdCmd::ClearPasscode { t } => (S::ClearPasscode, t.targets),
        CmdCmd::DeviceInfo { t, queries } => (S::DeviceInformation { queries }, t.targets),
        CmdCmd::SecurityInfo { t } => (S::SecurityInfo, t.targets),
        CmdCmd::CertificateList { t, managed_only } => (S::CertificateList { managed_only }, t.targets),
        CmdCmd::ProfileList { t, managed_only } => (S::ProfileList { managed_only }, t.targets),
        CmdCmd::InstallProfile { t, file } => (
            S::InstallProfile {
                mobileconfig: read(&file)?,
            },
            t.targets,
        ),
        CmdCmd::RemoveProfile { t, identifier } => (S::RemoveProfile { identifier }, t.targets),
        CmdCmd::ProvisioningProfileList { t } => (S::ProvisioningProfileList { managed_only: false }, t.targets),
        CmdCmd::InstallProvisioningProfile { t, file } => (S::InstallProvisioningProfile { profile: read(&file)? }, t.targets),
        CmdCmd::RemoveProvisioningProfile { t, uuid } => (S::RemoveProvisioningProfile { uuid }, t.targets),
        CmdCmd::InstallApp {
            t,
            itunes_id,
            manifest_url,
            identifier,
            management_flags,
            config,
        } => {
            let app = match (itunes_id, manifest_url, identifier) {
                (Some(n), _, _) => AppSource::ITunesStoreId(n),
                (_, Some(u), _) => AppSource::ManifestUrl(u),
                (_, _, Some(i)) => AppSource::Identifier(i),
                _ => anyhow::bail!("name the app: --itunes-id, --manifest-url or --identifier"),
            };
            let configuration = match config {
                Some(p) => Some(read_json_object(&p)?),
                None => None,
            };
            (
                S::InstallApplication {
                    app,
                    management_flags,
                    configuration,
                },
                t.targets,
            )
        }
        CmdCmd::RemoveApp { t, identifier } => (S::RemoveApplication { identifier }, t.targets),
        CmdCmd::InstalledApps {
            t,
            identifiers,
            managed_only,
        } => (
            S::InstalledApplicationList {
                identifiers,
                managed_apps_only: managed_only,
            },
            t.targets,
        ),
        CmdCmd::ManagedApps { t, identifiers } => (S::ManagedApplicationList { identifiers }, t.targets),
        CmdCmd::AppConfig { t, identifiers } => (S::ManagedApplicationConfiguration { identifiers }, t.targets),
        CmdCmd::Restrictions { t, profile_restrictions } => (S::Restrictions { profile_restrictions }, t.targets),
        CmdCmd::Settings {
            t,
            data_roaming,
            voice_roaming,
            app_config,
        } => {
            let mut items = Vec::new();
            if let Some(b) = data_roaming {
                items.push(Setting::DataRoaming(b));
            }
            if let Some(b) = voice_roaming {
                items.push(Setting::VoiceRoaming(b));
            }
            for a in app_config {
                let (id, file) = a.split_once('=').context("--app-config takes BUNDLE_ID=FILE")?;
                items.push(Setting::ApplicationConfiguration {
                    identifier: id.to_owned(),
                    configuration: read_json_object(std::path::Path::new(file))?,
                });
            }
            if items.is_empty() {
                anyhow::bail!("name at least one setting");
            }
            (S::Settings(items), t.targets)
        }
        CmdCmd::Send { .. } | CmdCmd::Show { .. } | CmdCmd::SendPlist { .. } => anyhow::bail!("not a typed command"),
    })
}
