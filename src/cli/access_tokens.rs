//! `mdmd access-tokens`: shared access tokens for identity providers
//! (generate, add, edit, revoke and rotate, verify).

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{enc, AdminClient, ClientOpts, Method};
use super::print;

#[derive(Args)]
pub struct AccessTokensArgs {
    #[command(subcommand)]
    what: AccessTokensCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl AccessTokensArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum AccessTokensCmd {
    /// Generate a new token (a UUID). Apps using $ACCESS_TOKEN get it at once, so it is on every
    /// device before the identity provider starts requiring it (its effective date).
    Generate {
        /// When the identity provider starts requiring it (RFC 3339); default now. Give the
        /// same date in the identity provider (PingID: the MDM token's effective date).
        #[arg(long)]
        effective_at: Option<String>,
        /// Revoke this token in the same step (rotation).
        #[arg(long)]
        revoke: Option<String>,
    },
    /// Add a token you choose (any value your identity provider dictates; a short one is warned about).
    Add {
        value: String,
        /// When the identity provider starts requiring it (RFC 3339); default now.
        #[arg(long)]
        effective_at: Option<String>,
        #[arg(long)]
        revoke: Option<String>,
    },
    /// The tokens, and which one the identity provider should require from when (`schedule`).
    List,
    /// Change a token's value or effective date.
    Edit {
        id: String,
        #[arg(long)]
        value: Option<String>,
        #[arg(long)]
        effective_at: Option<String>,
    },
    /// Revoke a token; the last one only with --replace (its replacement is generated in the same step).
    Revoke {
        id: String,
        #[arg(long)]
        replace: bool,
    },
    /// Ask what an identity provider would: is this token (shared or per-device) accepted now?
    Verify {
        token: String,
        #[arg(long)]
        device: Option<String>,
    },
}

impl AccessTokensCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let changes = matches!(
            self,
            AccessTokensCmd::Generate { .. } | AccessTokensCmd::Add { .. } | AccessTokensCmd::Edit { .. } | AccessTokensCmd::Revoke { .. }
        );
        let v = match self {
            AccessTokensCmd::Generate { effective_at, revoke } => a
                .send(
                    Method::POST,
                    "/v1/access-tokens",
                    Some(json!({"effective_at": effective_at, "revoke": revoke})),
                )
                .await?
                .ok()?,
            AccessTokensCmd::Add {
                value,
                effective_at,
                revoke,
            } => a
                .send(
                    Method::POST,
                    "/v1/access-tokens",
                    Some(json!({"value": value, "effective_at": effective_at, "revoke": revoke})),
                )
                .await?
                .ok()?,
            AccessTokensCmd::List => {
                let v = a.get("/v1/access-tokens").await?;
                super::show(&v, super::table::access_tokens);
                if let Some(s) = v["schedule"]["summary"].as_str() {
                    eprintln!("{s}");
                }
                return Ok(());
            }
            AccessTokensCmd::Edit { id, value, effective_at } => a
                .send(
                    Method::PUT,
                    &format!("/v1/access-tokens/{}", enc(&id)),
                    Some(json!({"value": value, "effective_at": effective_at})),
                )
                .await?
                .ok()?,
            AccessTokensCmd::Revoke { id, replace } => a
                .send(Method::DELETE, &format!("/v1/access-tokens/{}?replace={replace}", enc(&id)), None)
                .await?
                .ok()?,
            AccessTokensCmd::Verify { token, device } => a.post("/v1/access/verify", json!({"token": token, "device": device})).await?,
        };
        print(&v);
        // Which token the identity provider should require from when, said once more for people.
        let summary = if changes {
            a.get("/v1/access-tokens").await.ok().map(|l| l["schedule"]["summary"].clone())
        } else {
            Some(v["schedule"]["summary"].clone())
        };
        if let Some(serde_json::Value::String(s)) = summary {
            eprintln!("{s}");
        }
        Ok(())
    }
}
