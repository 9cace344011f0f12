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
        if let CaCmd::EcIssuing(o) = &self.what {
            return o.run();
        }
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
    /// Opt an installation with an RSA CA into ECDSA: create an ECDSA P-256
    /// issuing CA under the same root for new device identities, and have
    /// the next start issue an ECDSA profile signer. Works on the certs
    /// directory; run it with the server stopped, then start it. Devices keep
    /// trusting the same root and their current identities (docs/pki.md).
    EcIssuing(EcIssuing),
}

#[derive(Args)]
pub struct EcIssuing {
    /// The server's certs directory.
    #[arg(long, env = "MDMD_CERTS_DIR", default_value = "./certs")]
    certs_dir: std::path::PathBuf,
    /// The CA certificate, if the server is given one (`serve --ca-cert`).
    #[arg(long, env = "MDMD_CA_CERT", requires = "ca_key")]
    ca_cert: Option<std::path::PathBuf>,
    /// Its key (`serve --ca-key`).
    #[arg(long, env = "MDMD_CA_KEY", requires = "ca_cert")]
    ca_key: Option<std::path::PathBuf>,
}

impl EcIssuing {
    fn run(&self) -> anyhow::Result<()> {
        let wrote = mdmd::pki::ca::create_ec_issuing(&self.certs_dir, self.ca_cert.as_deref(), self.ca_key.as_deref())?;
        print(&json!({
            "issuing_ca": wrote[0].display().to_string(),
            "changed": wrote.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "next": "start mdmd: new device identities are signed by the ECDSA issuing CA",
        }));
        Ok(())
    }
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
            CaCmd::EcIssuing(_) => return Ok(()),
        };
        if v.get("certificates").is_some_and(|c| c.is_array()) {
            show(&v, table::certificates);
        } else {
            print(&v);
        }
        Ok(())
    }
}
