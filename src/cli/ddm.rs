//! `mdmd ddm`: declarative management — declarations, sets, assignments, the
//! status channel, and OS version requirements.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::print;

#[derive(Args)]
pub struct DdmArgs {
    #[command(subcommand)]
    what: DdmCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl DdmArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum DdmCmd {
    /// Create or replace a declaration from a JSON file (`{Type, Identifier, Payload}`; `-`: stdin),
    /// validated against Apple's schema.
    Put { file: std::path::PathBuf },
    /// Declarations (with mdmd's own status subscription).
    List,
    /// One declaration.
    Show { identifier: String },
    /// Delete a declaration: it leaves every set, and devices remove it.
    Rm { identifier: String },
    /// Sets, or one set with its declarations, enrollments and what does not add up.
    Sets { set: Option<String> },
    /// Add declarations to a set.
    SetAdd { set: String, identifiers: Vec<String> },
    /// Remove declarations from a set.
    SetRm { set: String, identifiers: Vec<String> },
    /// Assign a set to enrollments.
    Assign {
        set: String,
        #[arg(required = true)]
        enrollments: Vec<String>,
    },
    /// Unassign a set from enrollments.
    Unassign {
        set: String,
        #[arg(required = true)]
        enrollments: Vec<String>,
    },
    /// An enrollment's effective declarations, tokens and what the device says about each.
    Device { enrollment: String },
    /// An enrollment's status items (latest values) from the status channel.
    Status { enrollment: String },
    /// Enrollments by a status item, e.g. `ddm find device.operating-system.version lt 17.2`.
    Find {
        item: String,
        /// eq, ne, lt, le, gt or ge (versions compare numerically).
        op: String,
        value: String,
    },
    /// Require an OS version by a local deadline (yyyy-mm-ddThh:mm:ss) for a set; without
    /// --version, show each device's update state.
    Update {
        set: String,
        #[arg(long, requires = "deadline")]
        version: Option<String>,
        #[arg(long)]
        build: Option<String>,
        #[arg(long)]
        deadline: Option<String>,
        #[arg(long)]
        details_url: Option<String>,
    },
}

impl DdmCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        // Each call's answer, checked: an error carries the declaration's problems.
        let call = |method: Method, path: String, body: Option<Value>| async move { a.send(method, &path, body).await?.ok_or_problems() };
        let v = match self {
            DdmCmd::Put { file } => {
                let text = super::read_text_or_stdin(&file)?;
                let body: Value = serde_json::from_str(&text).context("the declaration must be JSON")?;
                call(Method::PUT, "/v1/declarations".into(), Some(body)).await?
            }
            DdmCmd::List => {
                super::show(&a.get("/v1/declarations").await?, super::table::declarations);
                return Ok(());
            }
            DdmCmd::Show { identifier } => call(Method::GET, format!("/v1/declarations/{}", enc(&identifier)), None).await?,
            DdmCmd::Rm { identifier } => call(Method::DELETE, format!("/v1/declarations/{}", enc(&identifier)), None).await?,
            DdmCmd::Sets { set: None } => {
                super::show(&a.get("/v1/sets").await?, super::table::sets);
                return Ok(());
            }
            DdmCmd::Sets { set: Some(s) } => call(Method::GET, format!("/v1/sets/{}", enc(&s)), None).await?,
            DdmCmd::SetAdd { set, identifiers } | DdmCmd::SetRm { set, identifiers } if identifiers.is_empty() => {
                anyhow::bail!("name the declarations to change in set {set}")
            }
            DdmCmd::SetAdd { set, identifiers } => {
                let mut out = Vec::new();
                for id in identifiers {
                    out.push(call(Method::PUT, format!("/v1/sets/{}/declarations/{}", enc(&set), enc(&id)), None).await?);
                }
                json!({"changes": out})
            }
            DdmCmd::SetRm { set, identifiers } => {
                let mut out = Vec::new();
                for id in identifiers {
                    out.push(call(Method::DELETE, format!("/v1/sets/{}/declarations/{}", enc(&set), enc(&id)), None).await?);
                }
                json!({"changes": out})
            }
            DdmCmd::Assign { set, enrollments } => {
                let mut out = Vec::new();
                for e in enrollments {
                    out.push(call(Method::PUT, format!("/v1/devices/{}/sets/{}", enc(&e), enc(&set)), None).await?);
                }
                json!({"changes": out})
            }
            DdmCmd::Unassign { set, enrollments } => {
                let mut out = Vec::new();
                for e in enrollments {
                    out.push(call(Method::DELETE, format!("/v1/devices/{}/sets/{}", enc(&e), enc(&set)), None).await?);
                }
                json!({"changes": out})
            }
            DdmCmd::Device { enrollment } => call(Method::GET, format!("/v1/devices/{}/declarations", enc(&enrollment)), None).await?,
            DdmCmd::Status { enrollment } => call(Method::GET, format!("/v1/devices/{}/status", enc(&enrollment)), None).await?,
            DdmCmd::Find { item, op, value } => {
                let path = format!("/v1/status?item={}&op={}&value={}", enc(&item), enc(&op), enc(&value));
                call(Method::GET, path, None).await?
            }
            DdmCmd::Update {
                set,
                version: Some(version),
                build,
                deadline,
                details_url,
            } => {
                let body = json!({"version": version, "build": build, "deadline": deadline, "details_url": details_url});
                call(Method::PUT, format!("/v1/software-updates/{}", enc(&set)), Some(body)).await?
            }
            DdmCmd::Update { set, .. } => call(Method::GET, format!("/v1/software-updates/{}", enc(&set)), None).await?,
        };
        print(&v);
        for w in v["warnings"].as_array().into_iter().flatten() {
            eprintln!("warning: {}", w.as_str().unwrap_or_default());
        }
        Ok(())
    }
}
