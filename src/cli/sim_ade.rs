//! `mdmd sim abm` and `mdmd sim ade-iphone`: Automated Device Enrollment
//! without Apple — a stand-in of Apple's ADE API with devices assigned to
//! it, and ADE iPhones booting for the first time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::client::ClientOpts;
use super::print;

/// A stand-in of Apple's ADE API (Apple Business Manager's side) on
/// loopback, for trying ADE without Apple: N devices assigned to it and a
/// server token file encrypted to mdmd's public key. Serve mdmd with
/// `--ade-url` (printed), upload the token (`mdmd ade upload-token`), sync,
/// then boot devices with `mdmd sim ade-iphone`.
#[derive(Args)]
pub struct AbmArgs {
    /// mdmd's ADE public key (PEM): `mdmd ade public-key --out FILE`.
    #[arg(long)]
    public_key: PathBuf,
    /// Write the server token file here.
    #[arg(long, default_value = "abm-token.p7m")]
    token_out: PathBuf,
    /// Devices ABM assigns to the server (their serials are printed).
    #[arg(short = 'n', long, default_value_t = 5)]
    devices: usize,
    /// The server's name in ABM.
    #[arg(long, default_value = "mdmd (simulated ABM)")]
    name: String,
    /// Stay up this many seconds (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

impl AbmArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let pem = std::fs::read(&self.public_key).with_context(|| format!("{}", self.public_key.display()))?;
        let cert = openssl::x509::X509::from_pem(&pem).context("the public key file is not a PEM certificate")?;
        let abm = mdmd::sim::ade_api::AdeStandIn::start(&self.name).await?;
        let mut serials = Vec::new();
        for i in 0..self.devices.min(100_000) {
            let serial = format!("SIM{:09}", i + 1);
            abm.add_device(&serial, if i % 3 == 2 { "iPad Air" } else { "iPhone 16" });
            serials.push(serial);
        }
        let file = mdmd::sim::ade::seal_token_file(&abm.token, &cert)?;
        std::fs::write(&self.token_out, file).with_context(|| format!("{}", self.token_out.display()))?;
        print(&json!({
            "ade_url": abm.url(),
            "token_file": self.token_out,
            "serials": serials,
            "next": [
                format!("mdmd serve --ade-url {} …", abm.url()),
                format!("mdmd ade upload-token abm {}", self.token_out.display()),
                "mdmd ade set-profile corporate profile.json --default".to_owned(),
                "mdmd ade sync".to_owned(),
                format!("mdmd sim ade-iphone --abm {} --serial {}", abm.url(), serials.first().cloned().unwrap_or_default()),
            ],
        }));
        if self.seconds == 0 {
            tokio::signal::ctrl_c().await?;
        } else {
            tokio::time::sleep(Duration::from_secs(self.seconds)).await;
        }
        Ok(())
    }
}

/// An ADE iPhone's first boot: ask the ABM stand-in (`mdmd sim abm`) what
/// to do, send MachineInfo to the URL it names, enroll (SCEP, Authenticate,
/// TokenUpdate), answer commands, and stay in Setup Assistant until
/// DeviceConfigured. Give `--trust-ca` (mdmd's CA) as for other commands.
#[derive(Args)]
pub struct AdeIphoneArgs {
    /// The stand-in's URL (printed by `mdmd sim abm`).
    #[arg(long)]
    abm: String,
    /// The device's serial number (assigned to the server in the stand-in).
    #[arg(long)]
    serial: String,
    /// The device's UDID (random by default).
    #[arg(long)]
    udid: Option<String>,
    /// Give up after this many seconds in Setup Assistant.
    #[arg(long, default_value_t = 600)]
    wait: u64,
}

impl AdeIphoneArgs {
    pub async fn run(self, client: &ClientOpts) -> anyhow::Result<()> {
        let http = client.http()?;
        let conf = mdmd::sim::ade::activation(&http, &self.abm, &self.serial).await?.with_context(|| {
            format!(
                "no ADE profile is assigned to {} (mdmd ade set-profile … --default; mdmd ade sync)",
                self.serial
            )
        })?;
        let udid = self.udid.unwrap_or_else(mdmd::sim::random_udid);
        eprintln!(
            "{}: Apple says enroll at {} (supervised, await configured: {})",
            self.serial, conf.url, conf.await_configured
        );
        let mut dev = mdmd::sim::ade::first_boot(http, &conf, &udid, &self.serial, None).await?;
        eprintln!("{udid}: enrolled; in Setup Assistant: {}", dev.awaiting_configuration);
        let sessions = (self.wait / 2).max(1) as usize;
        let handled = if dev.awaiting_configuration {
            mdmd::sim::ade::until_configured(&mut dev, sessions, Duration::from_secs(2)).await?
        } else {
            dev.session().await?.into_iter().map(|h| h.request_type).collect()
        };
        print(&json!({
            "udid": udid,
            "serial": self.serial,
            "supervised": dev.supervised,
            "commands": handled,
            "profiles": dev.profiles.keys().collect::<Vec<_>>(),
            "setup_assistant": if dev.awaiting_configuration { "waiting" } else { "done" },
        }));
        Ok(())
    }
}
