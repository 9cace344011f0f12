//! `mdmd compliance`: counts, and the devices in one status with their reasons.

use clap::Args;

use super::client::{enc, AdminClient, ClientOpts};

#[derive(Args)]
pub struct ComplianceArgs {
    #[command(flatten)]
    what: Compliance,
    #[command(flatten)]
    client: ClientOpts,
}

impl ComplianceArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Args)]
pub struct Compliance {
    /// compliant, non_compliant (default) or unknown.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    after: Option<String>,
}

impl Compliance {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let mut q = Vec::new();
        if let Some(s) = self.status {
            q.push(format!("status={}", enc(&s)));
        }
        if let Some(s) = self.after {
            q.push(format!("after={}", enc(&s)));
        }
        super::show(&a.get(&format!("/v1/compliance?{}", q.join("&"))).await?, super::table::compliance);
        Ok(())
    }
}
