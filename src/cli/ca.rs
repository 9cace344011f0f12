//! `mdmd ca`: mdmd's own certificate authority — what is in use, issued
//! certificates, revocation, identity renewal, and the ACME certificate.

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{enc, AdminClient, ClientOpts};
use super::{print, show, table};

#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    what: CaCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl CaArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum CaCmd {
    /// The CA, TLS and profile-signing certificates in use, with expiry dates.
    Show,
    /// Certificates issued to devices.
    Certs,
    /// Revoke an issued certificate by serial (hex): its device is refused from then on.
    Revoke { serial: String },
    /// Ask every device whose identity expires soon to renew it now.
    Renew,
    /// The ACME certificate (with `serve --acme-domain`): names, expiry, last error.
    Acme,
    /// Order a new ACME certificate now; waits for the CA.
    AcmeRenew,
}

impl CaCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let v = match self {
            CaCmd::Show => a.get("/v1/ca").await?,
            CaCmd::Certs => a.get("/v1/certificates?limit=1000").await?,
            CaCmd::Revoke { serial } => a.post(&format!("/v1/certificates/{}/revoke", enc(&serial)), json!({})).await?,
            CaCmd::Renew => a.post("/v1/identities/renew", json!({})).await?,
            CaCmd::Acme => a.get("/v1/acme").await?,
            CaCmd::AcmeRenew => a.post("/v1/acme/renew", json!({})).await?,
        };
        if v.get("certificates").is_some_and(|c| c.is_array()) {
            show(&v, table::certificates);
        } else {
            print(&v);
        }
        Ok(())
    }
}
