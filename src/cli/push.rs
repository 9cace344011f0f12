//! `mdmd push`: wake enrollments now and show what APNs said.

use clap::Args;
use serde_json::json;

use super::client::{AdminClient, ClientOpts};
use super::print;

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    what: Push,
    #[command(flatten)]
    client: ClientOpts,
}

impl PushArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Args)]
pub struct Push {
    #[arg(required = true, value_delimiter = ',')]
    targets: Vec<String>,
}

impl Push {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        print(&a.post("/v1/push", json!({"targets": self.targets})).await?);
        Ok(())
    }
}
