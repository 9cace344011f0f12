//! The command line: the clap tree below `mdmd`, one module per subcommand
//! family, and how answers are printed.
//!
//! `serve` runs the server; `db` and parts of `sim` open a store or play devices
//! themselves; every other family is a client of a running server's admin API
//! and gets one `AdminClient` (`client`). Tables for people live in `table`.
//! `main.rs` only parses, starts logging and calls `run`.
//!
//! Everything for stdout goes through [`out`] (`outln!`): when the reader
//! goes away (`mdmd devices | head -1`) the program ends quietly instead of
//! panicking on the broken pipe.

/// `println!` to stdout through [`out`].
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::out(&format!("{}\n", format_args!($($t)*))) };
}

pub mod access_tokens;
pub mod accounts;
pub mod ade;
pub mod apps;
pub mod blueprints;
pub mod ca;
pub mod client;
pub mod cmd;
pub mod compliance;
pub mod credentials;
pub mod db;
pub mod ddm;
pub mod devices;
pub mod enroll;
pub mod groups;
pub mod profiles;
pub mod push;
pub mod push_cert;
pub mod secrets;
pub mod serve;
pub mod sim;
pub mod sim_ade;
pub mod table;

use std::sync::OnceLock;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<mdmd::config::ServeConfig>),
    /// List and inspect enrolled devices (and user channels).
    Devices(devices::DevicesArgs),
    /// Queue commands and read their results.
    Cmd(cmd::CmdArgs),
    /// The certificate authority: what is in use, issued certificates, revocation.
    Ca(ca::CaArgs),
    /// Configuration profile templates: add, list, show, remove, install on devices.
    Profiles(profiles::ProfilesArgs),
    /// The MDM push certificate: request one from Apple, set it, show it.
    PushCert(push_cert::PushCertArgs),
    /// Push (wake) enrollments now and show what APNs said.
    Push(push::PushArgs),
    /// The keyring that seals escrowed device tokens at rest.
    Secrets(secrets::SecretsArgs),
    /// Create a single-use enrollment invitation (URL and QR code).
    Invite(enroll::InviteArgs),
    /// Write the signed enrollment profile to stdout (`mdmd enroll-profile > enroll.mobileconfig`).
    EnrollProfile(enroll::EnrollProfileArgs),
    /// The database: schema migrations, moving an installation between stores.
    Db(db::DbArgs),
    /// API accounts with roles (admin, operator, read-only, nac, issuer); admin key only.
    Accounts(accounts::AccountsArgs),
    /// Shared access tokens for identity providers ($ACCESS_TOKEN in managed app configuration).
    AccessTokens(access_tokens::AccessTokensArgs),
    /// The organisation's own CAs (SCEP servers: NDES, Smallstep, DigiCert …)
    /// that profiles reach through mdmd's SCEP proxy with $SCEP_PROXY_URL:NAME
    /// and $SCEP_CHALLENGE:NAME.
    Cas(credentials::CasArgs),
    /// Derived credentials (PIV-D): PKCS#12 identities from the organisation's
    /// provider, delivered in profiles whose PKCS#12 payload is $DERIVED_CREDENTIAL:usage.
    DerivedCredentials(credentials::DerivedArgs),
    /// Declarative management: declarations, sets, assignments, the status
    /// channel, and OS version requirements.
    Ddm(ddm::DdmArgs),
    /// Compliance at a glance: counts, and the devices in one status with their reasons.
    Compliance(compliance::ComplianceArgs),
    /// Device groups: static (UDIDs, serial numbers) or dynamic (a CEL rule over the device).
    Groups(groups::GroupsArgs),
    /// Blueprints: profiles, apps, declaration sets and enrollment commands for
    /// groups of devices, reconciled on every device that is or joins them.
    Blueprints(blueprints::BlueprintsArgs),
    /// Automated Device Enrollment (Apple Business Manager): the public key,
    /// server tokens, ADE profiles, devices, sync, and Setup Assistant.
    Ade(ade::AdeArgs),
    /// The app catalog: App Store apps licensed through Apple's Apps and Books content
    /// tokens, and in-house apps (.ipa); install and remove them on devices.
    ///
    /// `tokens` manages the content tokens (admin only) and `sync` refreshes licence counts;
    /// `add`, `list`, `show`, `set` and `rm` manage the catalog; `install` and `remove` act on
    /// devices (an App Store app gets a licence per device, released when it is removed);
    /// `device` shows one device's apps.
    #[command(after_help = apps::EXAMPLES)]
    Apps(apps::AppsArgs),
    /// Simulated devices that speak the real protocol (tests and load).
    Sim(sim::SimArgs),
}

/// Run one subcommand to its end.
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve(cfg) => serve::run(*cfg).await,
        Command::Db(c) => c.run().await,
        Command::Devices(c) => c.run().await,
        Command::Cmd(c) => c.run().await,
        Command::Ca(c) => c.run().await,
        Command::Profiles(c) => c.run().await,
        Command::PushCert(c) => c.run().await,
        Command::Push(c) => c.run().await,
        Command::Secrets(c) => c.run().await,
        Command::Invite(c) => c.run().await,
        Command::EnrollProfile(c) => c.run().await,
        Command::Accounts(c) => c.run().await,
        Command::AccessTokens(c) => c.run().await,
        Command::Cas(c) => c.run().await,
        Command::DerivedCredentials(c) => c.run().await,
        Command::Ddm(c) => c.run().await,
        Command::Compliance(c) => c.run().await,
        Command::Groups(c) => c.run().await,
        Command::Blueprints(c) => c.run().await,
        Command::Ade(c) => c.run().await,
        Command::Apps(c) => c.run().await,
        Command::Sim(c) => c.run().await,
    }
}

static TABLES: OnceLock<bool> = OnceLock::new();

/// Choose how answers print, from `-o`: `table`, `json`, or `auto` (tables on a terminal).
pub fn set_output(mode: &str) {
    let _ = TABLES.set(match mode {
        "table" => true,
        "json" => false,
        _ => std::io::IsTerminal::is_terminal(&std::io::stdout()),
    });
}

/// Write to stdout. A reader that went away (a closed pipe) ends the
/// program quietly with success, as Unix tools do; any other write error
/// ends it with a message.
pub fn out(s: &str) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "mdmd: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Print for people (when tables are on) or as JSON.
pub fn show(v: &Value, render: impl Fn(&Value) -> String) {
    if *TABLES.get().unwrap_or(&false) {
        out(&render(v));
    } else {
        print(v);
    }
}

/// Print the API's JSON, pretty.
pub fn print(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// Print an enqueue's answer; an error (non-zero exit) when the command
/// reached no device, saying why (unknown targets, per-device failures).
pub fn print_batch(v: &Value) -> anyhow::Result<()> {
    print(v);
    let waiting = v["waiting"].as_array().is_some_and(|w| !w.is_empty());
    if v["queued"].as_u64().unwrap_or(0) > 0 || waiting {
        return Ok(());
    }
    let mut why = Vec::new();
    if let Some(u) = v["unknown_targets"].as_array().filter(|u| !u.is_empty()) {
        let names: Vec<&str> = u.iter().filter_map(Value::as_str).take(5).collect();
        let more = if u.len() > 5 {
            format!(" and {} more", u.len() - 5)
        } else {
            String::new()
        };
        why.push(format!("not enrolled here: {}{more}", names.join(", ")));
    }
    if let Some(f) = v["failed"].as_array().filter(|f| !f.is_empty()) {
        for x in f.iter().take(3) {
            why.push(format!(
                "{}: {}",
                x["target"].as_str().unwrap_or("?"),
                x["error"].as_str().unwrap_or("failed")
            ));
        }
    }
    if why.is_empty() {
        why.push("no targets".into());
    }
    anyhow::bail!("the command reached no device ({})", why.join("; "))
}

/// `USER:PASSWORD` as a pair.
pub fn parse_user(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .context("expected USER:PASSWORD")
}

/// A file's contents, or stdin's for `-`.
pub fn read_text_or_stdin(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        Ok(std::io::read_to_string(std::io::stdin())?)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// A file's bytes, with its name in the error.
pub fn read_file(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}
