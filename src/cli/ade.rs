//! `mdmd ade`: Automated Device Enrollment with Apple Business Manager —
//! the public key, server tokens, ADE profiles, devices, sync, Setup Assistant.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::table::table;
use super::{print, show};

#[derive(Args)]
pub struct AdeArgs {
    #[command(subcommand)]
    what: AdeCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl AdeArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum AdeCmd {
    /// Print the certificate to upload to Apple Business Manager (Preferences →
    /// your MDM server → Upload Public Key). ABM encrypts server tokens to it.
    PublicKey {
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Upload the server token file ABM gave you (`*.p7m`), under a name of your choice
    /// (one per ABM server: several may be in use at once).
    UploadToken {
        /// Letters, digits, '.', '-', '_' (at most 64), e.g. `main`.
        name: String,
        /// The downloaded token file.
        file: std::path::PathBuf,
    },
    /// Server tokens: expiry, ABM server, last sync and error.
    Tokens,
    /// Forget a server token.
    RmToken { name: String },
    /// Define an ADE profile at Apple from Apple's profile JSON (`profile_name`,
    /// `is_supervised`, `await_device_configured`, `skip_setup_items` …; `url`
    /// defaults to this server's ADE enrollment URL).
    SetProfile {
        name: String,
        /// The profile JSON file.
        file: std::path::PathBuf,
        /// Assign it automatically to every new device (the default profile).
        #[arg(long)]
        default: bool,
        /// As the default, only for devices of this server token (repeat for several).
        #[arg(long = "abm-server")]
        servers: Vec<String>,
        /// As the default, only for devices this CEL rule matches, e.g. `device.model.startsWith("iPad")`
        /// (fields: serial, model, description, color, os, device_family, server).
        #[arg(long)]
        rule: Option<String>,
    },
    /// ADE profiles with their UUID at each ABM server.
    Profiles,
    /// Forget an ADE profile (devices keep what Apple has for them).
    RmProfile { name: String },
    /// Assign an ADE profile to devices now, by serial number.
    Assign {
        profile: String,
        #[arg(required = true)]
        serials: Vec<String>,
    },
    /// Devices ABM assigned to this server: ABM state, profile, enrolled or not.
    Devices {
        /// Only devices of this server token.
        #[arg(long)]
        abm_server: Option<String>,
        /// Serials after this one (paging).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// Sync devices with Apple now (every server token).
    Sync,
    /// Devices waiting in Setup Assistant for DeviceConfigured (and recently released).
    Waiting,
    /// Send DeviceConfigured to a waiting device now.
    Release {
        /// The enrollment id (UDID).
        id: String,
    },
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn tokens_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                s(&t["name"]),
                s(&t["server_name"]),
                s(&t["expires_at"]),
                s(&t["synced_at"]),
                s(&t["last_error"]),
            ]
        })
        .collect();
    table(&["NAME", "ABM SERVER", "EXPIRES", "SYNCED", "LAST ERROR"], &rows)
}

fn profiles_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["name"]),
                s(&p["profile"]["profile_name"]),
                if p["default"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    String::new()
                },
                s(&p["rule"]),
                p["uuids"].as_object().map(|m| m.len().to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "PROFILE NAME", "DEFAULT", "RULE", "SERVERS"], &rows)
}

fn devices_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(&d["serial"]),
                s(&d["model"]),
                s(&d["server"]),
                s(&d["op"]),
                s(&d["profile_status"]),
                s(&d["profile"]),
                if d["enrolled"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    table(
        &["SERIAL", "MODEL", "SERVER", "ABM", "PROFILE STATUS", "PROFILE", "ENROLLED"],
        &rows,
    )
}

fn waiting_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(&d["enrollment"]),
                s(&d["state"]),
                s(&d["waiting_seconds"]),
                s(&d["reason"]),
                s(&d["warning"]),
            ]
        })
        .collect();
    table(&["ENROLLMENT", "STATE", "WAITING (S)", "REASON", "WARNING"], &rows)
}

impl AdeCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            AdeCmd::PublicKey { out } => {
                let pem = a.get_bytes("/v1/ade/public-key").await?;
                match out {
                    Some(p) => {
                        std::fs::write(&p, &pem)?;
                        eprintln!("wrote {}: upload it to Apple Business Manager", p.display());
                    }
                    None => super::out(&String::from_utf8_lossy(&pem)),
                }
            }
            AdeCmd::UploadToken { name, file } => {
                let body = std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let resp = a
                    .put_bytes(&format!("/v1/ade/tokens/{}", enc(&name)), "application/pkcs7-mime", &[], body)
                    .await?;
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    anyhow::bail!("HTTP {status}: {}", v.get("error").cloned().unwrap_or(v));
                }
                print(&v);
            }
            AdeCmd::Tokens => show(&a.get("/v1/ade/tokens").await?, tokens_table),
            AdeCmd::RmToken { name } => print(
                &a.send(Method::DELETE, &format!("/v1/ade/tokens/{}", enc(&name)), None)
                    .await?
                    .ok()?,
            ),
            AdeCmd::SetProfile {
                name,
                file,
                default,
                servers,
                rule,
            } => {
                let text = super::read_text_or_stdin(&file)?;
                let body: Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", file.display()))?;
                let mut q = vec![format!("default={default}")];
                if !servers.is_empty() {
                    q.push(format!("server={}", enc(&servers.join(","))));
                }
                if let Some(r) = rule {
                    q.push(format!("rule={}", enc(&r)));
                }
                let path = format!("/v1/ade/profiles/{}?{}", enc(&name), q.join("&"));
                print(&a.send(Method::PUT, &path, Some(body)).await?.ok()?);
            }
            AdeCmd::Profiles => show(&a.get("/v1/ade/profiles").await?, profiles_table),
            AdeCmd::RmProfile { name } => print(
                &a.send(Method::DELETE, &format!("/v1/ade/profiles/{}", enc(&name)), None)
                    .await?
                    .ok()?,
            ),
            AdeCmd::Assign { profile, serials } => {
                let body = serde_json::json!({ "devices": serials });
                print(&a.post(&format!("/v1/ade/profiles/{}/assign", enc(&profile)), body).await?);
            }
            AdeCmd::Devices { abm_server, after, limit } => {
                let mut q = vec![format!("limit={limit}")];
                if let Some(s) = abm_server {
                    q.push(format!("server={}", enc(&s)));
                }
                if let Some(s) = after {
                    q.push(format!("after={}", enc(&s)));
                }
                show(&a.get(&format!("/v1/ade/devices?{}", q.join("&"))).await?, devices_table);
            }
            AdeCmd::Sync => {
                let r = a.send(Method::POST, "/v1/ade/sync", None).await?;
                let failed = r.status != 200;
                print(&r.body);
                if failed {
                    anyhow::bail!("the sync of at least one token failed (see error above)");
                }
            }
            AdeCmd::Waiting => show(&a.get("/v1/ade/waiting").await?, waiting_table),
            AdeCmd::Release { id } => print(
                &a.send(Method::POST, &format!("/v1/ade/waiting/{}/release", enc(&id)), None)
                    .await?
                    .ok()?,
            ),
        }
        Ok(())
    }
}
