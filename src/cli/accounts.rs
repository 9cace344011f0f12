//! `mdmd accounts`: API accounts with roles (admin key only).

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::print;

#[derive(Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    what: AccountsCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl AccountsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum AccountsCmd {
    /// Create an account; prints its secret once (bearer token, or basic NAME:SECRET).
    Add {
        name: String,
        /// admin, operator, read-only, nac (Cisco ISE and other NACs) or issuer (derived-credential providers).
        #[arg(long)]
        role: String,
    },
    List,
    Rm {
        name: String,
    },
}

impl AccountsCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let v = match self {
            AccountsCmd::Add { name, role } => a.post("/v1/accounts", json!({"name": name, "role": role})).await?,
            AccountsCmd::List => {
                super::show(&a.get("/v1/accounts").await?, super::table::accounts);
                return Ok(());
            }
            AccountsCmd::Rm { name } => a
                .send(Method::DELETE, &format!("/v1/accounts/{}", enc(&name)), None)
                .await?
                .ok_200()?,
        };
        print(&v);
        Ok(())
    }
}
