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
        let v = a.post("/v1/push", json!({"targets": self.targets})).await?;
        print(&v);
        // Nothing reached APNs: say why and fail, so scripts notice.
        let results: Vec<&serde_json::Value> = v["results"].as_object().map(|m| m.values().collect()).unwrap_or_default();
        if !results.is_empty() && results.iter().all(|r| r["accepted"] != true) {
            let why = results.iter().filter_map(|r| r["outcome"].as_str()).next().unwrap_or("refused");
            if why.contains("no push certificate") {
                anyhow::bail!("nothing was pushed: {why} (create one: mdmd push-cert request, then mdmd push-cert set)");
            }
            anyhow::bail!("nothing was pushed: {why}");
        }
        Ok(())
    }
}
