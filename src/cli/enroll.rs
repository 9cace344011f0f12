//! `mdmd invite` and `mdmd enroll-profile`: ways in for a device — a
//! single-use invitation (URL and QR code), or the signed enrollment profile.

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::client::{AdminClient, ClientOpts};

#[derive(Args)]
pub struct InviteArgs {
    #[command(flatten)]
    what: Invite,
    #[command(flatten)]
    client: ClientOpts,
}

impl InviteArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Args)]
pub struct Invite {
    /// Seconds until the invitation expires.
    #[arg(long, default_value_t = 7 * 86_400)]
    expires_in: i64,
    /// Write the QR code as PNG here.
    #[arg(long)]
    png: Option<std::path::PathBuf>,
    /// Write the QR code as SVG here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// The person it is for: their enrollment records them ($USERNAME, ISE's
    /// username, user-scoped derived credentials, group rules on device.user).
    #[arg(long)]
    user: Option<String>,
    /// Their email ($EMAIL); needs --user.
    #[arg(long, requires = "user")]
    email: Option<String>,
    /// Their full name ($FULL_NAME); needs --user.
    #[arg(long, requires = "user")]
    full_name: Option<String>,
}

impl Invite {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        let v = a
            .post(
                "/v1/enrollments/invitations",
                json!({"expires_in": self.expires_in, "user": self.user, "email": self.email, "full_name": self.full_name}),
            )
            .await?;
        if let Some(p) = self.png {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD.decode(v["qr_png_base64"].as_str().unwrap_or_default())?;
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(p) = self.svg {
            std::fs::write(&p, v["qr_svg"].as_str().unwrap_or_default()).with_context(|| format!("writing {}", p.display()))?;
        }
        outln!(
            "{}\nexpires {}",
            v["url"].as_str().unwrap_or_default(),
            v["expires_at"].as_str().unwrap_or_default()
        );
        if let Some(u) = v["user"].as_str() {
            outln!("for {u}");
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct EnrollProfileArgs {
    #[command(flatten)]
    client: ClientOpts,
}

impl EnrollProfileArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        enroll_profile(&self.client.admin()?).await
    }
}

/// The signed enrollment profile, to stdout as it came.
pub async fn enroll_profile(a: &AdminClient) -> anyhow::Result<()> {
    let body = a.get_bytes("/v1/enrollments/profile").await?;
    use std::io::Write as _;
    std::io::stdout().write_all(&body)?;
    Ok(())
}
