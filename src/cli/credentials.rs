//! `mdmd cas` and `mdmd derived-credentials`: credentials from the
//! organisation — its own CAs reached through mdmd's SCEP proxy, and derived
//! credentials (PIV-D) posted by its provider. The API side is `api::credentials`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::print;

#[derive(Args)]
pub struct CasArgs {
    #[command(subcommand)]
    what: CasCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl CasArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Args)]
pub struct DerivedArgs {
    #[command(subcommand)]
    what: DerivedCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl DerivedArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum CasCmd {
    /// Add a CA: it is asked for its capabilities and certificates at once;
    /// nothing is saved if it does not answer as a SCEP server.
    Add {
        /// The name profiles use: $SCEP_PROXY_URL:NAME, $SCEP_CHALLENGE:NAME.
        name: String,
        /// The CA's SCEP URL (e.g. https://ndes.corp.example/certsrv/mscep/mscep.dll).
        #[arg(long)]
        scep_url: String,
        /// A static challenge (stored encrypted, never shown again).
        #[arg(
            long,
            env = "MDMD_CA_CHALLENGE",
            hide_env_values = true,
            conflicts_with = "challenge_url",
            required_unless_present = "challenge_url"
        )]
        challenge: Option<String>,
        /// A URL that hands out one-time challenges (NDES mscep_admin; basic-auth
        /// credentials may be in the URL), fetched for every profile install.
        #[arg(long)]
        challenge_url: Option<String>,
    },
    List,
    /// A CA with its certificate chain.
    Show {
        name: String,
    },
    /// The certificates this CA issued to devices through the proxy.
    Certificates {
        name: String,
    },
    Rm {
        name: String,
    },
    /// Re-install profiles whose certificates expire soon (also runs hourly).
    Renew,
}

impl CasCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let v = match self {
            CasCmd::Add {
                name,
                scep_url,
                challenge,
                challenge_url,
            } => a
                .send(
                    Method::POST,
                    "/v1/cas",
                    Some(json!({"name": name, "scep_url": scep_url, "challenge": challenge, "challenge_url": challenge_url})),
                )
                .await?
                .ok()?,
            CasCmd::List => {
                super::show(&a.get("/v1/cas").await?, super::table::cas);
                return Ok(());
            }
            CasCmd::Show { name } => a.send(Method::GET, &format!("/v1/cas/{}", enc(&name)), None).await?.ok()?,
            CasCmd::Certificates { name } => a
                .send(Method::GET, &format!("/v1/cas/{}/certificates", enc(&name)), None)
                .await?
                .ok()?,
            CasCmd::Rm { name } => a.send(Method::DELETE, &format!("/v1/cas/{}", enc(&name)), None).await?.ok()?,
            CasCmd::Renew => a.send(Method::POST, "/v1/cas/renewals", None).await?.ok()?,
        };
        print(&v);
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum DerivedCmd {
    /// Post a credential from a PKCS#12 file for a device or a user.
    Add {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        device: Option<String>,
        /// Every device of this user (who enrolled it, a USERNAME attribute, or the user channel).
        #[arg(long)]
        user: Option<String>,
        /// authentication, signing or encryption.
        #[arg(long)]
        usage: String,
        /// The .p12 file.
        #[arg(long)]
        pkcs12: std::path::PathBuf,
        /// The .p12 file's password.
        #[arg(long, env = "MDMD_PKCS12_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Active credentials, and those that ended (revoked, expired).
    List,
    /// Delete a credential: profiles that carry it are removed from the devices and wait again.
    Rm { id: String },
    /// Revoke a credential as its provider would: like rm, but an audit
    /// record is kept and the certificate cannot be posted again.
    Revoke {
        /// The credential's id (dc_…).
        #[arg(conflicts_with = "serial", required_unless_present = "serial")]
        id: Option<String>,
        /// The certificate's serial number (hex) instead of the id.
        #[arg(long)]
        serial: Option<String>,
        /// With --serial: the issuer as the credential shows it.
        #[arg(long, requires = "serial")]
        issuer: Option<String>,
        /// Why, kept in the audit record (e.g. keyCompromise; at most 200 characters).
        #[arg(long)]
        reason: Option<String>,
    },
}

impl DerivedCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let v = match self {
            DerivedCmd::Add {
                device,
                user,
                usage,
                pkcs12,
                password,
            } => {
                use base64::Engine as _;
                let der = std::fs::read(&pkcs12).with_context(|| format!("reading {}", pkcs12.display()))?;
                let body = json!({"device": device, "user": user, "usage": usage, "pkcs12": base64::engine::general_purpose::STANDARD.encode(der), "password": password});
                a.send(Method::POST, "/v1/derived-credentials", Some(body)).await?.ok()?
            }
            DerivedCmd::List => {
                super::show(&a.get("/v1/derived-credentials").await?, super::table::derived);
                return Ok(());
            }
            DerivedCmd::Rm { id } => a
                .send(Method::DELETE, &format!("/v1/derived-credentials/{}", enc(&id)), None)
                .await?
                .ok()?,
            DerivedCmd::Revoke {
                id,
                serial,
                issuer,
                reason,
            } => {
                let mut body = serde_json::Map::new();
                for (k, v) in [("id", id), ("serial", serial), ("issuer", issuer), ("reason", reason)] {
                    if let Some(v) = v {
                        body.insert(k.into(), json!(v));
                    }
                }
                a.send(
                    Method::POST,
                    "/v1/derived-credentials/revocations",
                    Some(serde_json::Value::Object(body)),
                )
                .await?
                .ok()?
            }
        };
        print(&v);
        Ok(())
    }
}
