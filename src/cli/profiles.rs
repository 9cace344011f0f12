//! `mdmd profiles`: configuration profile templates — add, list, show,
//! remove, install on and remove from devices — and the variables they may use.

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::print;

#[derive(Args)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    what: ProfilesCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl ProfilesArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        if let ProfilesCmd::Vars = self.what {
            vars();
            return Ok(());
        }
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum ProfilesCmd {
    /// Upload a .mobileconfig (plain or signed); it is validated against Apple's schemas.
    Add {
        file: std::path::PathBuf,
        /// If the profile changed, queue the new version to every device that has it.
        #[arg(long)]
        reinstall: bool,
    },
    /// List templates.
    List,
    /// Show a template, its XML and its state on every device.
    Show { identifier: String },
    /// Delete a template.
    Rm {
        identifier: String,
        /// Also queue RemoveProfile to every device that has it.
        #[arg(long)]
        remove_from_devices: bool,
    },
    /// Queue InstallProfile (filled in, encrypted and signed per device).
    Install {
        identifier: String,
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
    },
    /// Queue RemoveProfile.
    Remove {
        identifier: String,
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
    },
    /// The variables templates may use (no server needed).
    Vars,
}

impl ProfilesCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let v = match self {
            ProfilesCmd::Add { file, reinstall } => {
                let body = super::read_file(&file)?;
                let q = if reinstall { "?reinstall=true" } else { "" };
                a.post_profile(&format!("/v1/profiles{q}"), body).await?
            }
            ProfilesCmd::List => {
                super::show(&a.get("/v1/profiles").await?, super::table::profiles);
                return Ok(());
            }
            ProfilesCmd::Show { identifier } => a.get(&format!("/v1/profiles/{}", enc(&identifier))).await?,
            ProfilesCmd::Rm {
                identifier,
                remove_from_devices,
            } => {
                let q = if remove_from_devices { "?remove=true" } else { "" };
                a.send(Method::DELETE, &format!("/v1/profiles/{}{q}", enc(&identifier)), None)
                    .await?
                    .ok_200()?
            }
            ProfilesCmd::Install { identifier, targets } => {
                let v = a
                    .post(&format!("/v1/profiles/{}/install", enc(&identifier)), json!({"targets": targets}))
                    .await?;
                return super::print_batch(&v);
            }
            ProfilesCmd::Remove { identifier, targets } => {
                let v = a
                    .post(&format!("/v1/profiles/{}/remove", enc(&identifier)), json!({"targets": targets}))
                    .await?;
                return super::print_batch(&v);
            }
            ProfilesCmd::Vars => {
                vars();
                return Ok(());
            }
        };
        print(&v);
        Ok(())
    }
}

/// `profiles vars`: the variables templates may use (no server needed).
fn vars() {
    for (name, what) in mdmd::profiles::vars::VARIABLES {
        outln!("${name:<16} {what}");
    }
}
