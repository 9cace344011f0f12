//! `mdmd blueprints`: what groups of devices get, planned, applied and followed.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::table::table;
use super::{print, read_text_or_stdin, show};

#[derive(Args)]
pub struct BlueprintsArgs {
    #[command(subcommand)]
    what: BlueprintsCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl BlueprintsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum BlueprintsCmd {
    /// Create or replace a blueprint from a JSON file (`-` for stdin).
    ///
    /// It is named after the file unless `--name` is given. The file:
    /// {"groups": ["sales"] or ["*"], "profiles": [template identifiers],
    /// "apps": [{"itunes_store_id": N or "manifest_url": URL, "identifier": bundle id,
    /// "configuration": {…}, "management_flags": N}], "declaration_sets": [sets],
    /// "enrollment_commands": [commands sent once to each device]}.
    Apply {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// What applying a file would install and remove, per device; queues nothing.
    Plan {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// Every blueprint.
    List,
    /// One blueprint.
    Show { name: String },
    /// Per device: converged, pending (with what) or failed (with the device's errors).
    Status {
        name: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete a blueprint: what it installed and no other blueprint wants is removed.
    Rm { name: String },
}

fn read(file: &std::path::Path, name: Option<String>) -> anyhow::Result<(String, Value)> {
    let text = read_text_or_stdin(file)?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let name = match name {
        Some(n) => n,
        None => file
            .file_stem()
            .filter(|_| file.as_os_str() != "-")
            .map(|s| s.to_string_lossy().into_owned())
            .context("name the blueprint with --name when reading stdin")?,
    };
    Ok((name, v))
}

fn blueprints_table(v: &Value) -> String {
    let n = |b: &Value, k: &str| b[k].as_array().map_or(0, Vec::len).to_string();
    let rows: Vec<Vec<String>> = v["blueprints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let groups: Vec<&str> = b["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            vec![
                b["name"].as_str().unwrap_or("").to_owned(),
                groups.join(","),
                n(b, "profiles"),
                n(b, "apps"),
                n(b, "declaration_sets"),
                n(b, "enrollment_commands"),
            ]
        })
        .collect();
    table(&["NAME", "GROUPS", "PROFILES", "APPS", "SETS", "COMMANDS"], &rows)
}

fn status_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let what: Vec<String> = d["pending"]
                .as_array()
                .or(d["failed"].as_array())
                .into_iter()
                .flatten()
                .map(|i| format!("{} {}", i["kind"].as_str().unwrap_or(""), i["item"].as_str().unwrap_or("")))
                .collect();
            vec![
                d["enrollment"].as_str().unwrap_or("").to_owned(),
                d["state"].as_str().unwrap_or("").to_owned(),
                what.join("; "),
            ]
        })
        .collect();
    table(&["ENROLLMENT", "STATE", "ITEMS"], &rows)
}

impl BlueprintsCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            BlueprintsCmd::Apply { file, name } => {
                let (name, v) = read(&file, name)?;
                print(
                    &a.send(Method::PUT, &format!("/v1/blueprints/{}", enc(&name)), Some(v))
                        .await?
                        .ok()?,
                );
            }
            BlueprintsCmd::Plan { file, name } => {
                let (name, v) = read(&file, name)?;
                print(
                    &a.send(Method::PUT, &format!("/v1/blueprints/{}?dry_run=true", enc(&name)), Some(v))
                        .await?
                        .ok()?,
                );
            }
            BlueprintsCmd::List => show(&a.get("/v1/blueprints").await?, blueprints_table),
            BlueprintsCmd::Show { name } => print(&a.get(&format!("/v1/blueprints/{}", enc(&name))).await?),
            BlueprintsCmd::Status { name, limit } => show(
                &a.get(&format!("/v1/blueprints/{}/status?limit={limit}", enc(&name))).await?,
                status_table,
            ),
            BlueprintsCmd::Rm { name } => print(
                &a.send(Method::DELETE, &format!("/v1/blueprints/{}", enc(&name)), None)
                    .await?
                    .ok()?,
            ),
        }
        Ok(())
    }
}
