//! `mdmd secrets`: the keyring that seals escrowed device tokens at rest.

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{AdminClient, ClientOpts};
use super::print;

#[derive(Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    what: SecretsCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl SecretsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum SecretsCmd {
    /// Add a new current key and reseal every stored UnlockToken and BootstrapToken.
    Rotate,
}

impl SecretsCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            SecretsCmd::Rotate => print(&a.post("/v1/secrets/rotate", json!({})).await?),
        }
        Ok(())
    }
}
