//! mdmd: an Apple MDM server. `mdmd serve` runs it; the other subcommands are
//! clients of its admin API.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use mdmd::config::ServeConfig;
use mdmd::sim::load::{Admin, LoadConfig};

#[derive(Parser)]
#[command(
    name = "mdmd",
    version,
    about = "An Apple MDM server: enrollment, SCEP CA, check-in, durable command queue.",
    long_about = "An Apple MDM server.\n\n`mdmd serve` runs the server (state in ./data, certificates in ./certs, both created on first start).\nEvery other subcommand is a client of a running server's admin API: point it at one with --server/MDMD_SERVER\nand authenticate with --api-key/MDMD_API_KEY (by default read from ./data/api-key)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log lines as `text` (for people) or `json` (one object per line, for log shippers).
    /// The level comes from MDMD_LOG (default info; e.g. MDMD_LOG=info,mdmd::access=warn
    /// drops the per-request lines).
    #[arg(long, env = "MDMD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
    /// Answers as `table` (for people) or `json` (the API's JSON, for scripts). Default: a table
    /// on a terminal, JSON when piped (devices, devices show, cmd show, ca certs; the rest is JSON).
    #[arg(short = 'o', long, env = "MDMD_OUTPUT", value_parser = ["auto", "table", "json"], default_value = "auto", global = true)]
    output: String,
}

mod human;

static TABLES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Print for people (when tables are on) or as JSON.
fn show(v: &Value, render: fn(&Value) -> String) {
    if *TABLES.get().unwrap_or(&false) {
        print!("{}", render(v));
    } else {
        print(v);
    }
}

#[derive(Args, Clone)]
struct ClientOpts {
    /// URL of a running mdmd.
    #[arg(long, env = "MDMD_SERVER", default_value = "https://localhost:8443", global = true)]
    server: String,
    /// Admin API key (default: contents of ./data/api-key).
    #[arg(long, env = "MDMD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Also trust this CA (PEM) for the server's TLS certificate (default: ./certs/ca.pem if present).
    #[arg(long, env = "MDMD_TRUST_CA", global = true)]
    trust_ca: Option<std::path::PathBuf>,
}

impl ClientOpts {
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        mdmd::sim::http_client_trusting(self.trust_pem()?.as_deref())
    }

    /// The CA clients trust: --trust-ca, else ./certs/ca.pem when there is one.
    fn trust_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self
            .trust_ca
            .clone()
            .or_else(|| Some(std::path::PathBuf::from("certs/ca.pem")).filter(|p| p.exists()));
        Ok(match path {
            Some(p) => Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        })
    }

    fn admin(&self) -> anyhow::Result<Admin> {
        let key = match &self.api_key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string("data/api-key")
                .map(|s| s.trim().to_owned())
                .context("no API key: pass --api-key or set MDMD_API_KEY (or run where ./data/api-key exists)")?,
        };
        Ok(Admin::new(&self.server, &key, self.client()?))
    }
}

fn parse_user(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .context("expected USER:PASSWORD")
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(ServeConfig),
    /// List and inspect enrolled devices (and user channels).
    Devices {
        #[command(subcommand)]
        what: Option<DevicesCmd>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Queue commands and read their results.
    Cmd {
        #[command(subcommand)]
        what: CmdCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The certificate authority: what is in use, issued certificates, revocation.
    Ca {
        #[command(subcommand)]
        what: CaCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Configuration profile templates: add, list, show, remove, install on devices.
    Profiles {
        #[command(subcommand)]
        what: ProfilesCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The MDM push certificate: request one from Apple, set it, show it.
    PushCert {
        #[command(subcommand)]
        what: PushCertCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Push (wake) enrollments now and show what APNs said.
    Push {
        #[arg(required = true, value_delimiter = ',')]
        targets: Vec<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The keyring that seals escrowed device tokens at rest.
    Secrets {
        #[command(subcommand)]
        what: SecretsCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Create a single-use enrollment invitation (URL and QR code).
    Invite {
        /// Seconds until the invitation expires.
        #[arg(long, default_value_t = 7 * 86_400)]
        expires_in: i64,
        /// Write the QR code as PNG here.
        #[arg(long)]
        png: Option<std::path::PathBuf>,
        /// Write the QR code as SVG here.
        #[arg(long)]
        svg: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write the signed enrollment profile to stdout (`mdmd enroll-profile > enroll.mobileconfig`).
    EnrollProfile {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The database: schema migrations, moving an installation between stores.
    Db {
        #[command(subcommand)]
        what: DbCmd,
    },
    /// API accounts with roles (admin, operator, read-only, nac, issuer); admin key only.
    Accounts {
        #[command(subcommand)]
        what: AccountsCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Shared access tokens for identity providers ($ACCESS_TOKEN in managed app configuration).
    AccessTokens {
        #[command(subcommand)]
        what: AccessTokensCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The organisation's own CAs (SCEP servers: NDES, Smallstep, DigiCert …)
    /// that profiles reach through mdmd's SCEP proxy with $SCEP_PROXY_URL:NAME
    /// and $SCEP_CHALLENGE:NAME.
    Cas {
        #[command(subcommand)]
        what: CasCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Derived credentials (PIV-D): PKCS#12 identities from the organisation's
    /// provider, delivered in profiles whose PKCS#12 payload is $DERIVED_CREDENTIAL:usage.
    DerivedCredentials {
        #[command(subcommand)]
        what: DerivedCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Declarative management: declarations, sets, assignments, the status
    /// channel, and OS version requirements.
    Ddm {
        #[command(subcommand)]
        what: DdmCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Compliance at a glance: counts, and the devices in one status with their reasons.
    Compliance {
        /// compliant, non_compliant (default) or unknown.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Simulated devices that speak the real protocol (tests and load).
    Sim {
        #[command(subcommand)]
        what: SimCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Apply pending schema migrations to a PostgreSQL database (`mdmd serve` does this at start too).
    Migrate {
        #[arg(long, env = "MDMD_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Only show which migrations are applied.
        #[arg(long)]
        status: bool,
    },
    /// Copy every record from one store into another, empty one, then read the
    /// target back and compare row counts and checksums table by table. Stop
    /// mdmd first. A store is a data dir (redb: DIR/mdmd.redb) or a postgres:// URL.
    ///
    /// Example: mdmd db copy --from ./data --to postgres://mdmd@db/mdmd
    Copy {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum CasCmd {
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

#[derive(Subcommand)]
enum DdmCmd {
    /// Create or replace a declaration from a JSON file (`{Type, Identifier, Payload}`; `-`: stdin),
    /// validated against Apple's schema.
    Put { file: std::path::PathBuf },
    /// Declarations (with mdmd's own status subscription).
    List,
    /// One declaration.
    Show { identifier: String },
    /// Delete a declaration: it leaves every set, and devices remove it.
    Rm { identifier: String },
    /// Sets, or one set with its declarations, enrollments and what does not add up.
    Sets { set: Option<String> },
    /// Add declarations to a set.
    SetAdd { set: String, identifiers: Vec<String> },
    /// Remove declarations from a set.
    SetRm { set: String, identifiers: Vec<String> },
    /// Assign a set to enrollments.
    Assign {
        set: String,
        #[arg(required = true)]
        enrollments: Vec<String>,
    },
    /// Unassign a set from enrollments.
    Unassign {
        set: String,
        #[arg(required = true)]
        enrollments: Vec<String>,
    },
    /// An enrollment's effective declarations, tokens and what the device says about each.
    Device { enrollment: String },
    /// An enrollment's status items (latest values) from the status channel.
    Status { enrollment: String },
    /// Enrollments by a status item, e.g. `ddm find device.operating-system.version lt 17.2`.
    Find {
        item: String,
        /// eq, ne, lt, le, gt or ge (versions compare numerically).
        op: String,
        value: String,
    },
    /// Require an OS version by a local deadline (yyyy-mm-ddThh:mm:ss) for a set; without
    /// --version, show each device's update state.
    Update {
        set: String,
        #[arg(long, requires = "deadline")]
        version: Option<String>,
        #[arg(long)]
        build: Option<String>,
        #[arg(long)]
        deadline: Option<String>,
        #[arg(long)]
        details_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum DerivedCmd {
    /// Post a credential from a PKCS#12 file for a device or a user.
    Add {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        device: Option<String>,
        /// Every device of this user (USERNAME attribute or user channel).
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
    List,
    /// Delete a credential: profiles that carry it are removed from the devices and wait again.
    Rm {
        id: String,
    },
}

#[derive(Subcommand)]
enum AccessTokensCmd {
    /// Generate a new token (a UUID); apps using $ACCESS_TOKEN get it once it is in effect.
    Generate {
        /// When it takes effect (RFC 3339); default now.
        #[arg(long)]
        effective_at: Option<String>,
        /// Revoke this token in the same step (rotation).
        #[arg(long)]
        revoke: Option<String>,
    },
    /// Add a token you choose (at least 16 characters).
    Add {
        value: String,
        #[arg(long)]
        effective_at: Option<String>,
        #[arg(long)]
        revoke: Option<String>,
    },
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

#[derive(Subcommand)]
enum AccountsCmd {
    /// Create an account; prints its secret once (bearer token, or basic NAME:SECRET).
    Add {
        name: String,
        /// admin, operator, read-only, nac (Cisco ISE and other NACs) or issuer (derived-credential providers).
        #[arg(long)]
        role: String,
    },
    List,
    Rm {
        name: String,
    },
}

#[derive(Subcommand)]
enum DevicesCmd {
    /// List enrollments (paged: --after the last id of the previous page).
    List {
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one enrollment.
    Show { id: String },
    /// Show an enrollment's commands, pending and finished.
    Commands { id: String },
    /// Clear an enrollment's pending commands.
    Clear { id: String },
    /// The profiles mdmd tracks on an enrollment (pending, installed, failed, removed, missing).
    Profiles { id: String },
    /// Allow the next enrollment of this device with a new identity (a wiped or replaced phone)
    /// to take over its active enrollment: once, within --expires-in seconds.
    ApproveReenroll {
        id: String,
        #[arg(long, default_value_t = 3600)]
        expires_in: i64,
    },
    /// Set attributes used by profile variables, e.g. `USERNAME=alice EMAIL=alice@example.com`
    /// (an empty value removes one).
    Set {
        id: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        attributes: Vec<String>,
    },
    /// Queue an inventory refresh now (DeviceInformation, SecurityInfo, CertificateList,
    /// ProfileList, InstalledApplicationList).
    Refresh { id: String },
    /// Find devices by what they reported: KIND is udid, serial, imei, meid, mac, phone or user
    /// (MACs and phone numbers in any spelling), e.g. `mdmd devices find mac F0-5C-77-1A-2B-3C`.
    Find { kind: String, value: String },
}

#[derive(Subcommand)]
enum ProfilesCmd {
    /// Upload a .mobileconfig (plain or signed); it is validated against Apple's schemas.
    Add {
        file: std::path::PathBuf,
        /// If the profile changed, queue the new version to every device that has it.
        #[arg(long)]
        reinstall: bool,
    },
    /// List templates.
    List,
    /// Show a template, its XML and its state on every device.
    Show { identifier: String },
    /// Delete a template.
    Rm {
        identifier: String,
        /// Also queue RemoveProfile to every device that has it.
        #[arg(long)]
        remove_from_devices: bool,
    },
    /// Queue InstallProfile (filled in, encrypted and signed per device).
    Install {
        identifier: String,
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
    },
    /// Queue RemoveProfile.
    Remove {
        identifier: String,
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
    },
    /// The variables templates may use (no server needed).
    Vars,
}

#[derive(Subcommand)]
enum PushCertCmd {
    /// Make the push key (0600) and CSR, and with your MDM vendor certificate the signed request
    /// file to upload at Apple's Push Certificates Portal (no server needed).
    Request {
        /// The MDM vendor certificate (PEM; Apple's intermediates may follow in the same file).
        #[arg(long)]
        vendor_cert: std::path::PathBuf,
        /// The MDM vendor certificate's private key (PEM).
        #[arg(long)]
        vendor_key: std::path::PathBuf,
        /// Password of an encrypted vendor key.
        #[arg(long, env = "MDMD_VENDOR_KEY_PASSWORD", hide_env_values = true)]
        vendor_key_password: Option<String>,
        /// Where to write the push key, CSR and request.
        #[arg(long, default_value = ".")]
        out_dir: std::path::PathBuf,
        #[arg(long, default_value = "mdmd")]
        organization: String,
    },
    /// Set the push certificate: PEM (with --key, or key in the same file) or PKCS#12 (.p12/.pfx, --password).
    Set {
        file: std::path::PathBuf,
        /// The private key (PEM), e.g. push-request.key from `push-cert request`.
        #[arg(long)]
        key: Option<std::path::PathBuf>,
        /// PKCS#12 or encrypted-key password.
        #[arg(long, env = "MDMD_PUSH_CERT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Accept a certificate with another topic even though enrolled devices would be stranded.
        #[arg(long)]
        force: bool,
    },
    /// Topic, expiry and health of the push certificate in use.
    Show,
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Add a new current key and reseal every stored UnlockToken and BootstrapToken.
    Rotate,
}

#[derive(Args)]
struct Targets {
    /// Target enrollment ids (UDIDs; repeat or comma-separate; `@FILE` reads one per line, `@-` stdin).
    #[arg(required = true, value_delimiter = ',')]
    targets: Vec<String>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

#[derive(Subcommand)]
enum CmdCmd {
    /// Queue a command, e.g. `mdmd cmd send -t UDID '{"RequestType":"DeviceInformation","Queries":["OSVersion"]}'`.
    Send {
        /// Target enrollment ids (repeat, or comma-separated; `@FILE` reads one per line, `@-` stdin).
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
        /// The command as JSON (data as base64 strings, dates as RFC 3339). `-` reads stdin.
        command: String,
    },
    /// Show a command's status per target, with results.
    Show { uuid: String },
    /// Queue a command given as a plist file (`{RequestType, …}`), validated like JSON.
    SendPlist {
        #[arg(short, long = "target", required = true, value_delimiter = ',')]
        targets: Vec<String>,
        file: std::path::PathBuf,
    },
    /// DeviceLock: lock the screen now, optionally with a message and phone number.
    Lock {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        phone: Option<String>,
        /// Find My PIN (macOS only).
        #[arg(long)]
        pin: Option<String>,
    },
    /// EraseDevice: wipe the device.
    Erase {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        pin: Option<String>,
        #[arg(long)]
        preserve_data_plan: bool,
        #[arg(long)]
        disallow_proximity_setup: bool,
    },
    /// ClearPasscode: the escrowed UnlockToken is filled in by the server.
    ClearPasscode {
        #[command(flatten)]
        t: Targets,
    },
    /// DeviceInformation: the queries named (repeat --query), or every query key.
    DeviceInfo {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "query")]
        queries: Vec<String>,
    },
    /// SecurityInfo: passcode compliance, encryption, management status.
    SecurityInfo {
        #[command(flatten)]
        t: Targets,
    },
    /// CertificateList: certificates and identities on the device.
    CertificateList {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        managed_only: bool,
    },
    /// ProfileList: installed configuration profiles (reconciled with mdmd's records).
    ProfileList {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        managed_only: bool,
    },
    /// InstallProfile of a .mobileconfig file (for a stored template: `mdmd profiles install`).
    InstallProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// RemoveProfile by PayloadIdentifier.
    RemoveProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        identifier: String,
    },
    /// ProvisioningProfileList.
    ProvisioningProfileList {
        #[command(flatten)]
        t: Targets,
    },
    /// InstallProvisioningProfile from a .mobileprovision file.
    InstallProvisioningProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// RemoveProvisioningProfile by UUID.
    RemoveProvisioningProfile {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        uuid: String,
    },
    /// InstallApplication by App Store id, manifest URL or bundle id, with managed app configuration.
    InstallApp {
        #[command(flatten)]
        t: Targets,
        #[arg(long, conflicts_with_all = ["manifest_url", "identifier"])]
        itunes_id: Option<i64>,
        #[arg(long, conflicts_with = "identifier")]
        manifest_url: Option<String>,
        #[arg(long)]
        identifier: Option<String>,
        /// 1 remove with MDM profile, 4 prevent data backup, 5 both.
        #[arg(long)]
        management_flags: Option<i64>,
        /// Managed app configuration: a JSON object file (values may use $VARIABLES).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// RemoveApplication.
    RemoveApp {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        identifier: String,
    },
    /// InstalledApplicationList.
    InstalledApps {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "identifier")]
        identifiers: Vec<String>,
        #[arg(long)]
        managed_only: bool,
    },
    /// ManagedApplicationList.
    ManagedApps {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "identifier")]
        identifiers: Vec<String>,
    },
    /// ManagedApplicationConfiguration: the configuration of managed apps.
    AppConfig {
        #[command(flatten)]
        t: Targets,
        #[arg(long = "identifier", required = true)]
        identifiers: Vec<String>,
    },
    /// Restrictions: the effective restrictions.
    Restrictions {
        #[command(flatten)]
        t: Targets,
        #[arg(long)]
        profile_restrictions: bool,
    },
    /// Settings: data/voice roaming, managed app configuration.
    Settings {
        #[command(flatten)]
        t: Targets,
        #[arg(long, value_parser = on_off, value_name = "on|off")]
        data_roaming: Option<bool>,
        #[arg(long, value_parser = on_off, value_name = "on|off")]
        voice_roaming: Option<bool>,
        /// BUNDLE_ID=FILE: a JSON object file as the app's managed configuration.
        #[arg(long, value_name = "BUNDLE_ID=FILE")]
        app_config: Vec<String>,
    },
}

fn read_json_object(p: &std::path::Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    match serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))? {
        Value::Object(o) => Ok(o),
        _ => anyhow::bail!("{}: expected a JSON object", p.display()),
    }
}

/// A typed command from the CLI, and its targets.
/// Targets as given, with `@FILE` (one id per line; `@-`: stdin) expanded.
fn expand_targets(given: Vec<String>) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(given.len());
    for t in given {
        match t.strip_prefix('@') {
            Some(path) => {
                let text = if path == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading targets from stdin")?
                } else {
                    std::fs::read_to_string(path).with_context(|| format!("reading targets from {path}"))?
                };
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_owned),
                );
            }
            None => out.push(t),
        }
    }
    if out.is_empty() {
        anyhow::bail!("no targets");
    }
    Ok(out)
}

/// POST /v1/commands; for a large target list on a terminal, a running
/// status line on stderr while the server queues it.
async fn enqueue(a: &mdmd::sim::load::Admin, targets: Vec<String>, command: Value) -> anyhow::Result<Value> {
    let n = targets.len();
    let show = n >= 1000 && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let ticker = show.then(|| {
        tokio::spawn(async move {
            loop {
                eprint!("\rqueueing for {n} targets… {:.1} s", started.elapsed().as_secs_f64());
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    });
    let r = a.post("/v1/commands", json!({"targets": targets, "command": command})).await;
    if let Some(t) = ticker {
        t.abort();
        match &r {
            Ok(v) => eprintln!(
                "\rqueued for {} of {n} targets in {:.2} s",
                v["queued"].as_u64().unwrap_or(0),
                started.elapsed().as_secs_f64()
            ),
            Err(_) => eprintln!(),
        }
    }
    r
}

fn typed_command(c: CmdCmd) -> anyhow::Result<(mdmd::protocol::builders::CommandSpec, Vec<String>)> {
    use mdmd::protocol::builders::{AppSource, CommandSpec as S, Setting};
    let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(match c {
        CmdCmd::Lock { t, message, phone, pin } => (
            S::DeviceLock {
                pin,
                message,
                phone_number: phone,
            },
            t.targets,
        ),
        CmdCmd::Erase {
            t,
            pin,
            preserve_data_plan,
            disallow_proximity_setup,
        } => (
            S::EraseDevice {
                pin,
                preserve_data_plan,
                disallow_proximity_setup,
            },
            t.targets,
        ),
        CmdCmd::ClearPasscode { t } => (S::ClearPasscode, t.targets),
        CmdCmd::DeviceInfo { t, queries } => (S::DeviceInformation { queries }, t.targets),
        CmdCmd::SecurityInfo { t } => (S::SecurityInfo, t.targets),
        CmdCmd::CertificateList { t, managed_only } => (S::CertificateList { managed_only }, t.targets),
        CmdCmd::ProfileList { t, managed_only } => (S::ProfileList { managed_only }, t.targets),
        CmdCmd::InstallProfile { t, file } => (
            S::InstallProfile {
                mobileconfig: read(&file)?,
            },
            t.targets,
        ),
        CmdCmd::RemoveProfile { t, identifier } => (S::RemoveProfile { identifier }, t.targets),
        CmdCmd::ProvisioningProfileList { t } => (S::ProvisioningProfileList { managed_only: false }, t.targets),
        CmdCmd::InstallProvisioningProfile { t, file } => (S::InstallProvisioningProfile { profile: read(&file)? }, t.targets),
        CmdCmd::RemoveProvisioningProfile { t, uuid } => (S::RemoveProvisioningProfile { uuid }, t.targets),
        CmdCmd::InstallApp {
            t,
            itunes_id,
            manifest_url,
            identifier,
            management_flags,
            config,
        } => {
            let app = match (itunes_id, manifest_url, identifier) {
                (Some(n), _, _) => AppSource::ITunesStoreId(n),
                (_, Some(u), _) => AppSource::ManifestUrl(u),
                (_, _, Some(i)) => AppSource::Identifier(i),
                _ => anyhow::bail!("name the app: --itunes-id, --manifest-url or --identifier"),
            };
            let configuration = match config {
                Some(p) => Some(read_json_object(&p)?),
                None => None,
            };
            (
                S::InstallApplication {
                    app,
                    management_flags,
                    configuration,
                },
                t.targets,
            )
        }
        CmdCmd::RemoveApp { t, identifier } => (S::RemoveApplication { identifier }, t.targets),
        CmdCmd::InstalledApps {
            t,
            identifiers,
            managed_only,
        } => (
            S::InstalledApplicationList {
                identifiers,
                managed_apps_only: managed_only,
            },
            t.targets,
        ),
        CmdCmd::ManagedApps { t, identifiers } => (S::ManagedApplicationList { identifiers }, t.targets),
        CmdCmd::AppConfig { t, identifiers } => (S::ManagedApplicationConfiguration { identifiers }, t.targets),
        CmdCmd::Restrictions { t, profile_restrictions } => (S::Restrictions { profile_restrictions }, t.targets),
        CmdCmd::Settings {
            t,
            data_roaming,
            voice_roaming,
            app_config,
        } => {
            let mut items = Vec::new();
            if let Some(b) = data_roaming {
                items.push(Setting::DataRoaming(b));
            }
            if let Some(b) = voice_roaming {
                items.push(Setting::VoiceRoaming(b));
            }
            for a in app_config {
                let (id, file) = a.split_once('=').context("--app-config takes BUNDLE_ID=FILE")?;
                items.push(Setting::ApplicationConfiguration {
                    identifier: id.to_owned(),
                    configuration: read_json_object(std::path::Path::new(file))?,
                });
            }
            if items.is_empty() {
                anyhow::bail!("name at least one setting");
            }
            (S::Settings(items), t.targets)
        }
        CmdCmd::Send { .. } | CmdCmd::Show { .. } | CmdCmd::SendPlist { .. } => anyhow::bail!("not a typed command"),
    })
}

#[derive(Subcommand)]
enum CaCmd {
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

#[derive(Subcommand)]
enum SimCmd {
    /// Seed a store (a data dir or postgres:// URL, mdmd stopped) with N devices as
    /// inventory would leave them, for fleet-sized figures (`make ise-bench`).
    Seed {
        #[arg(long)]
        store: String,
        #[arg(short = 'n', long, default_value_t = 100_000)]
        devices: usize,
    },
    /// Query the Cisco ISE API by MAC for random seeded devices and report latency.
    IseBench {
        /// A `nac` account: NAME:SECRET.
        #[arg(long)]
        account: String,
        /// How many devices were seeded.
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(short = 'n', long, default_value_t = 5000)]
        requests: usize,
        #[arg(short, long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Enroll N simulated devices (profile, SCEP, Authenticate, TokenUpdate) and answer their queued commands once.
    Enroll {
        #[arg(short = 'n', long, default_value_t = 1)]
        devices: usize,
        /// Enrollment credentials USER:PASSWORD (see `serve --enroll-user`).
        #[arg(long)]
        user: Option<String>,
        /// Or an invitation URL (from `mdmd invite`); good for one device.
        #[arg(long)]
        invite: Option<String>,
        /// Also play a derived-credential provider's app with this bundle id:
        /// wait for its managed configuration ($DERIVED_CREDENTIAL_URL and
        /// $DERIVED_CREDENTIAL_TOKEN), then upload a credential made by a
        /// throw-away test CA for each --provider-usage.
        #[arg(long)]
        provider_app: Option<String>,
        #[arg(long, default_value = "authentication")]
        provider_usage: Vec<String>,
        /// How long to wait for the app's configuration (seconds).
        #[arg(long, default_value_t = 60)]
        provider_wait: u64,
    },
    /// A long-running fleet woken by push: an APNs stand-in (HTTP/2, TLS, client certificate
    /// required) and N enrolled devices that answer when pushed. Start mdmd with
    /// `--apns-url` (printed) and `--apns-ca FILE` (written here).
    Fleet {
        #[arg(short = 'n', long, default_value_t = 10)]
        devices: usize,
        /// Enrollment credentials USER:PASSWORD.
        #[arg(long)]
        user: String,
        /// Where the stand-in listens (loopback).
        #[arg(long, default_value = "127.0.0.1:2197")]
        apns_listen: String,
        /// CA (PEM) that issued the push certificate: clients must present a certificate from it.
        #[arg(long)]
        push_ca: std::path::PathBuf,
        /// Write the stand-in's TLS certificate here (mdmd's --apns-ca).
        #[arg(long)]
        write_apns_ca: std::path::PathBuf,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Measure: this many rounds of one command to one device, then to every device
        /// (POST /v1/commands → push → the device's result stored), median and p99; then exit.
        #[arg(long)]
        measure_rounds: Option<usize>,
        /// Devices enrolled at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// SCEP issuance benchmark against any SCEP URL (mdmd's /scep or a peer) with a static challenge.
    ScepBench {
        #[arg(long)]
        url: String,
        #[arg(long)]
        challenge: String,
        #[arg(short = 'n', long, default_value_t = 200)]
        requests: usize,
        #[arg(short, long, default_value_t = 8)]
        concurrency: usize,
        /// Report this process's CPU time (e.g. the SCEP server's pid) per issuance.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The floor for connect requests: a bare TLS endpoint on mdmd's own listener code
    /// (OpenSSL, hyper) that answers every request with an empty 200 — no routing,
    /// signature check or store. Loopback only. Measure it beside mdmd with `sim idle-bench`.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Certificate chain (PEM), e.g. mdmd's `<certs-dir>/tls.pem`.
        #[arg(long)]
        tls_cert: std::path::PathBuf,
        #[arg(long)]
        tls_key: std::path::PathBuf,
    },
    /// Connect requests side by side with the floor: enroll D devices at --server, then send
    /// N signed Idle polls (signed beforehand) to --url (mdmd's /mdm/connect, or a bare server),
    /// and report requests/s and, with --pid, that process's CPU per request.
    IdleBench {
        #[arg(long)]
        url: String,
        /// Enrollment credentials USER:PASSWORD (devices enroll at --server).
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 16)]
        devices: usize,
        #[arg(short = 'n', long, default_value_t = 5000)]
        requests: usize,
        #[arg(short, long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, value_enum, default_value = "shared")]
        connections: mdmd::sim::load::Connections,
        #[arg(long)]
        sha1_signatures: bool,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Load test: N devices, R rounds of (enqueue to all → every device runs Idle → command → Acknowledged → empty).
    Load {
        #[arg(short = 'n', long, default_value_t = 1000)]
        devices: usize,
        #[arg(short, long, default_value_t = 5)]
        rounds: usize,
        #[arg(short, long, default_value_t = 64)]
        concurrency: usize,
        /// Stop starting new rounds after this many seconds.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
        /// How devices use connections: shared (one keep-alive pool), per-device (a fresh
        /// TLS connection per device), per-request (a fresh TCP+TLS connection per request).
        #[arg(long, value_enum, default_value = "shared")]
        connections: mdmd::sim::load::Connections,
        /// The SCEP envelope cipher devices use (auto: AES if the server offers it, else 3DES).
        #[arg(long, value_enum, default_value = "auto")]
        envelope: mdmd::sim::pki::Envelope,
        /// Sign Mdm-Signature with SHA-1 (as some clients still do) instead of SHA-256.
        #[arg(long)]
        sha1_signatures: bool,
        /// Enrollment credentials USER:PASSWORD.
        #[arg(long)]
        user: String,
        /// Another instance of the same installation (same database, same
        /// API key): devices enroll at --server, then poll all instances
        /// round-robin; CPU is summed over them. Repeatable.
        #[arg(long)]
        also: Vec<String>,
    },
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

async fn client_main(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve(_) | Cmd::Db { .. } => unreachable!("handled in main"),
        Cmd::Accounts { what, client } => {
            let a = client.admin()?;
            match what {
                AccountsCmd::Add { name, role } => print(&a.post("/v1/accounts", json!({"name": name, "role": role})).await?),
                AccountsCmd::List => print(&a.get("/v1/accounts").await?),
                AccountsCmd::Rm { name } => match a
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/accounts/{}", urlencoding::encode(&name)),
                        None,
                    )
                    .await?
                {
                    (200, v) => print(&v),
                    (s, v) => anyhow::bail!("HTTP {s}: {v}"),
                },
            }
        }
        Cmd::AccessTokens { what, client } => {
            let a = client.admin()?;
            let ok = |r: (u16, Value)| match r {
                (200 | 201, v) => Ok(v),
                (s, v) => Err(anyhow::anyhow!("HTTP {s}: {}", v.get("error").cloned().unwrap_or(v.clone()))),
            };
            let v = match what {
                AccessTokensCmd::Generate { effective_at, revoke } => a
                    .call(
                        reqwest::Method::POST,
                        "/v1/access-tokens",
                        Some(json!({"effective_at": effective_at, "revoke": revoke})),
                    )
                    .await
                    .map(ok)??,
                AccessTokensCmd::Add {
                    value,
                    effective_at,
                    revoke,
                } => a
                    .call(
                        reqwest::Method::POST,
                        "/v1/access-tokens",
                        Some(json!({"value": value, "effective_at": effective_at, "revoke": revoke})),
                    )
                    .await
                    .map(ok)??,
                AccessTokensCmd::List => a.get("/v1/access-tokens").await?,
                AccessTokensCmd::Edit { id, value, effective_at } => a
                    .call(
                        reqwest::Method::PUT,
                        &format!("/v1/access-tokens/{}", urlencoding::encode(&id)),
                        Some(json!({"value": value, "effective_at": effective_at})),
                    )
                    .await
                    .map(ok)??,
                AccessTokensCmd::Revoke { id, replace } => a
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/access-tokens/{}?replace={replace}", urlencoding::encode(&id)),
                        None,
                    )
                    .await
                    .map(ok)??,
                AccessTokensCmd::Verify { token, device } => a.post("/v1/access/verify", json!({"token": token, "device": device})).await?,
            };
            print(&v);
        }
        Cmd::Cas { what, client } => {
            let a = client.admin()?;
            let ok = |r: (u16, Value)| match r {
                (200 | 201, v) => Ok(v),
                (s, v) => Err(anyhow::anyhow!("HTTP {s}: {}", v.get("error").cloned().unwrap_or(v.clone()))),
            };
            let enc = |n: &str| urlencoding::encode(n).into_owned();
            let v = match what {
                CasCmd::Add {
                    name,
                    scep_url,
                    challenge,
                    challenge_url,
                } => a
                    .call(
                        reqwest::Method::POST,
                        "/v1/cas",
                        Some(json!({"name": name, "scep_url": scep_url, "challenge": challenge, "challenge_url": challenge_url})),
                    )
                    .await
                    .map(ok)??,
                CasCmd::List => a.get("/v1/cas").await?,
                CasCmd::Show { name } => a
                    .call(reqwest::Method::GET, &format!("/v1/cas/{}", enc(&name)), None)
                    .await
                    .map(ok)??,
                CasCmd::Certificates { name } => a
                    .call(reqwest::Method::GET, &format!("/v1/cas/{}/certificates", enc(&name)), None)
                    .await
                    .map(ok)??,
                CasCmd::Rm { name } => a
                    .call(reqwest::Method::DELETE, &format!("/v1/cas/{}", enc(&name)), None)
                    .await
                    .map(ok)??,
                CasCmd::Renew => a.call(reqwest::Method::POST, "/v1/cas/renewals", None).await.map(ok)??,
            };
            print(&v);
        }
        Cmd::Ddm { what, client } => {
            let a = client.admin()?;
            let ok = |r: (u16, Value)| match r {
                (200 | 201, v) => Ok(v),
                (s, v) => {
                    let problems: Vec<String> = v["problems"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| format!("\n  {}: {}", p["path"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or("")))
                        .collect();
                    Err(anyhow::anyhow!(
                        "HTTP {s}: {}{}",
                        v.get("error")
                            .and_then(|e| e.as_str())
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                        problems.concat()
                    ))
                }
            };
            let enc = |s: &str| urlencoding::encode(s).into_owned();
            use reqwest::Method as M;
            let v = match what {
                DdmCmd::Put { file } => {
                    let text = if file.as_os_str() == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
                    };
                    let body: Value = serde_json::from_str(&text).context("the declaration must be JSON")?;
                    ok(a.call(M::PUT, "/v1/declarations", Some(body)).await?)?
                }
                DdmCmd::List => a.get("/v1/declarations").await?,
                DdmCmd::Show { identifier } => ok(a.call(M::GET, &format!("/v1/declarations/{}", enc(&identifier)), None).await?)?,
                DdmCmd::Rm { identifier } => ok(a.call(M::DELETE, &format!("/v1/declarations/{}", enc(&identifier)), None).await?)?,
                DdmCmd::Sets { set: None } => a.get("/v1/sets").await?,
                DdmCmd::Sets { set: Some(s) } => ok(a.call(M::GET, &format!("/v1/sets/{}", enc(&s)), None).await?)?,
                DdmCmd::SetAdd { set, identifiers } | DdmCmd::SetRm { set, identifiers } if identifiers.is_empty() => {
                    anyhow::bail!("name the declarations to change in set {set}")
                }
                DdmCmd::SetAdd { set, identifiers } => {
                    let mut out = Vec::new();
                    for id in identifiers {
                        out.push(ok(a
                            .call(M::PUT, &format!("/v1/sets/{}/declarations/{}", enc(&set), enc(&id)), None)
                            .await?)?);
                    }
                    json!({"changes": out})
                }
                DdmCmd::SetRm { set, identifiers } => {
                    let mut out = Vec::new();
                    for id in identifiers {
                        out.push(ok(a
                            .call(M::DELETE, &format!("/v1/sets/{}/declarations/{}", enc(&set), enc(&id)), None)
                            .await?)?);
                    }
                    json!({"changes": out})
                }
                DdmCmd::Assign { set, enrollments } => {
                    let mut out = Vec::new();
                    for e in enrollments {
                        out.push(ok(a
                            .call(M::PUT, &format!("/v1/devices/{}/sets/{}", enc(&e), enc(&set)), None)
                            .await?)?);
                    }
                    json!({"changes": out})
                }
                DdmCmd::Unassign { set, enrollments } => {
                    let mut out = Vec::new();
                    for e in enrollments {
                        out.push(ok(a
                            .call(M::DELETE, &format!("/v1/devices/{}/sets/{}", enc(&e), enc(&set)), None)
                            .await?)?);
                    }
                    json!({"changes": out})
                }
                DdmCmd::Device { enrollment } => ok(a
                    .call(M::GET, &format!("/v1/devices/{}/declarations", enc(&enrollment)), None)
                    .await?)?,
                DdmCmd::Status { enrollment } => ok(a.call(M::GET, &format!("/v1/devices/{}/status", enc(&enrollment)), None).await?)?,
                DdmCmd::Find { item, op, value } => ok(a
                    .call(
                        M::GET,
                        &format!("/v1/status?item={}&op={}&value={}", enc(&item), enc(&op), enc(&value)),
                        None,
                    )
                    .await?)?,
                DdmCmd::Update {
                    set,
                    version: Some(version),
                    build,
                    deadline,
                    details_url,
                } => {
                    let body = json!({"version": version, "build": build, "deadline": deadline, "details_url": details_url});
                    ok(a.call(M::PUT, &format!("/v1/software-updates/{}", enc(&set)), Some(body)).await?)?
                }
                DdmCmd::Update { set, .. } => ok(a.call(M::GET, &format!("/v1/software-updates/{}", enc(&set)), None).await?)?,
            };
            print(&v);
        }
        Cmd::DerivedCredentials { what, client } => {
            let a = client.admin()?;
            let ok = |r: (u16, Value)| match r {
                (200 | 201, v) => Ok(v),
                (s, v) => Err(anyhow::anyhow!("HTTP {s}: {}", v.get("error").cloned().unwrap_or(v.clone()))),
            };
            let v = match what {
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
                    a.call(reqwest::Method::POST, "/v1/derived-credentials", Some(body))
                        .await
                        .map(ok)??
                }
                DerivedCmd::List => a.get("/v1/derived-credentials").await?,
                DerivedCmd::Rm { id } => a
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/derived-credentials/{}", urlencoding::encode(&id)),
                        None,
                    )
                    .await
                    .map(ok)??,
            };
            print(&v);
        }
        Cmd::Compliance { status, after, client } => {
            let a = client.admin()?;
            let mut q = Vec::new();
            if let Some(s) = status {
                q.push(format!("status={}", urlencoding::encode(&s)));
            }
            if let Some(s) = after {
                q.push(format!("after={}", urlencoding::encode(&s)));
            }
            print(&a.get(&format!("/v1/compliance?{}", q.join("&"))).await?);
        }
        Cmd::Devices { what, client } => {
            let a = client.admin()?;
            let what = what.unwrap_or(DevicesCmd::List { after: None, limit: 100 });
            let render: Option<fn(&Value) -> String> = match &what {
                DevicesCmd::List { .. } => Some(human::devices),
                DevicesCmd::Show { .. } => Some(human::device),
                _ => None,
            };
            let v = match what {
                DevicesCmd::List { after, limit } => {
                    let mut path = format!("/v1/devices?limit={limit}");
                    if let Some(a) = after {
                        path.push_str(&format!("&after={}", urlencoding::encode(&a)));
                    }
                    a.get(&path).await?
                }
                DevicesCmd::Show { id } => a.get(&format!("/v1/devices/{}", urlencoding::encode(&id))).await?,
                DevicesCmd::Commands { id } => a.get(&format!("/v1/devices/{}/commands", urlencoding::encode(&id))).await?,
                DevicesCmd::Profiles { id } => a.get(&format!("/v1/devices/{}/profiles", urlencoding::encode(&id))).await?,
                DevicesCmd::ApproveReenroll { id, expires_in } => {
                    a.post(
                        &format!("/v1/devices/{}/approve-reenroll", urlencoding::encode(&id)),
                        json!({"expires_in": expires_in}),
                    )
                    .await?
                }
                DevicesCmd::Set { id, attributes } => {
                    let mut m = serde_json::Map::new();
                    for kv in attributes {
                        let (k, v) = kv.split_once('=').context("attributes are KEY=VALUE")?;
                        m.insert(k.to_owned(), Value::String(v.to_owned()));
                    }
                    match a
                        .call(
                            reqwest::Method::PUT,
                            &format!("/v1/devices/{}/attributes", urlencoding::encode(&id)),
                            Some(Value::Object(m)),
                        )
                        .await?
                    {
                        (200, v) => v,
                        (s, v) => anyhow::bail!("HTTP {s}: {v}"),
                    }
                }
                DevicesCmd::Refresh { id } => match a
                    .call(
                        reqwest::Method::POST,
                        &format!("/v1/devices/{}/inventory", urlencoding::encode(&id)),
                        Some(json!({})),
                    )
                    .await?
                {
                    (200, v) => v,
                    (s, v) => anyhow::bail!("HTTP {s}: {v}"),
                },
                DevicesCmd::Find { kind, value } => {
                    let key = match kind.as_str() {
                        "udid" | "serial" | "imei" | "meid" | "mac" | "phone" | "user" => kind.clone(),
                        other => anyhow::bail!("find by {other:?}: udid, serial, imei, meid, mac, phone or user"),
                    };
                    a.get(&format!("/v1/devices?{key}={}", urlencoding::encode(&value))).await?
                }
                DevicesCmd::Clear { id } => match a
                    .call(
                        reqwest::Method::DELETE,
                        &format!("/v1/devices/{}/commands", urlencoding::encode(&id)),
                        None,
                    )
                    .await?
                {
                    (200, v) => v,
                    (s, v) => anyhow::bail!("HTTP {s}: {v}"),
                },
            };
            match render {
                Some(r) => show(&v, r),
                None => print(&v),
            }
        }
        Cmd::Cmd { what, client } => {
            let a = client.admin()?;
            match what {
                CmdCmd::Send { targets, command } => {
                    let text = if command == "-" {
                        std::io::read_to_string(std::io::stdin())?
                    } else {
                        command
                    };
                    let cmd: Value = serde_json::from_str(&text).context("the command must be JSON")?;
                    print(&enqueue(&a, expand_targets(targets)?, cmd).await?);
                }
                CmdCmd::Show { uuid } => show(
                    &a.get(&format!("/v1/commands/{}", urlencoding::encode(&uuid))).await?,
                    human::command,
                ),
                CmdCmd::SendPlist { targets, file } => {
                    let xml = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                    print(&enqueue(&a, expand_targets(targets)?, json!(xml)).await?);
                }
                typed => {
                    let (spec, targets) = typed_command(typed)?;
                    print(&enqueue(&a, expand_targets(targets)?, spec.to_json()).await?);
                }
            }
        }
        Cmd::Profiles { what, client } => {
            if let ProfilesCmd::Vars = what {
                for (name, what) in mdmd::profiles::vars::VARIABLES {
                    println!("${name:<16} {what}");
                }
                return Ok(());
            }
            let a = client.admin()?;
            let enc = |s: &str| urlencoding::encode(s).into_owned();
            let v = match what {
                ProfilesCmd::Add { file, reinstall } => {
                    let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                    let q = if reinstall { "?reinstall=true" } else { "" };
                    a.post_bytes(&format!("/v1/profiles{q}"), body).await?
                }
                ProfilesCmd::List => a.get("/v1/profiles").await?,
                ProfilesCmd::Show { identifier } => a.get(&format!("/v1/profiles/{}", enc(&identifier))).await?,
                ProfilesCmd::Rm {
                    identifier,
                    remove_from_devices,
                } => {
                    let q = if remove_from_devices { "?remove=true" } else { "" };
                    match a
                        .call(reqwest::Method::DELETE, &format!("/v1/profiles/{}{q}", enc(&identifier)), None)
                        .await?
                    {
                        (200, v) => v,
                        (s, v) => anyhow::bail!("HTTP {s}: {v}"),
                    }
                }
                ProfilesCmd::Install { identifier, targets } => {
                    a.post(&format!("/v1/profiles/{}/install", enc(&identifier)), json!({"targets": targets}))
                        .await?
                }
                ProfilesCmd::Remove { identifier, targets } => {
                    a.post(&format!("/v1/profiles/{}/remove", enc(&identifier)), json!({"targets": targets}))
                        .await?
                }
                ProfilesCmd::Vars => unreachable!("handled above"),
            };
            print(&v);
        }
        Cmd::PushCert { what, client } => match what {
            PushCertCmd::Request {
                vendor_cert,
                vendor_key,
                vendor_key_password,
                out_dir,
                organization,
            } => {
                push_cert_request(
                    &client,
                    &vendor_cert,
                    &vendor_key,
                    vendor_key_password.as_deref(),
                    &out_dir,
                    &organization,
                )
                .await?
            }
            PushCertCmd::Set {
                file,
                key,
                password,
                force,
            } => {
                let a = client.admin()?;
                let mut body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let p12 = file
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| x.eq_ignore_ascii_case("p12") || x.eq_ignore_ascii_case("pfx"));
                if let Some(k) = key {
                    body.push(b'\n');
                    body.extend(std::fs::read(&k).with_context(|| format!("reading {}", k.display()))?);
                }
                let mut req = a
                    .client
                    .put(format!("{}/v1/push-cert{}", a.base, if force { "?force=true" } else { "" }))
                    .bearer_auth(&a.key)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        if p12 { "application/x-pkcs12" } else { "application/x-pem-file" },
                    )
                    .body(body);
                if let Some(p) = password {
                    req = req.header("X-Password", p);
                }
                let resp = req.send().await?;
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    anyhow::bail!("HTTP {status}: {}", v["error"].as_str().unwrap_or(&v.to_string()));
                }
                print(&v);
            }
            PushCertCmd::Show => print(&client.admin()?.get("/v1/push-cert").await?),
        },
        Cmd::Push { targets, client } => print(&client.admin()?.post("/v1/push", json!({"targets": targets})).await?),
        Cmd::Secrets { what, client } => {
            let a = client.admin()?;
            match what {
                SecretsCmd::Rotate => print(&a.post("/v1/secrets/rotate", json!({})).await?),
            }
        }
        Cmd::Ca { what, client } => {
            let a = client.admin()?;
            let v = match what {
                CaCmd::Show => a.get("/v1/ca").await?,
                CaCmd::Certs => a.get("/v1/certificates?limit=1000").await?,
                CaCmd::Revoke { serial } => {
                    a.post(&format!("/v1/certificates/{}/revoke", urlencoding::encode(&serial)), json!({}))
                        .await?
                }
                CaCmd::Renew => a.post("/v1/identities/renew", json!({})).await?,
                CaCmd::Acme => a.get("/v1/acme").await?,
                CaCmd::AcmeRenew => a.post("/v1/acme/renew", json!({})).await?,
            };
            if v.get("certificates").is_some_and(|c| c.is_array()) {
                show(&v, human::certificates);
            } else {
                print(&v);
            }
        }
        Cmd::Invite {
            expires_in,
            png,
            svg,
            client,
        } => {
            let a = client.admin()?;
            let v = a.post("/v1/enrollments/invitations", json!({"expires_in": expires_in})).await?;
            if let Some(p) = png {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD.decode(v["qr_png_base64"].as_str().unwrap_or_default())?;
                std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
            }
            if let Some(p) = svg {
                std::fs::write(&p, v["qr_svg"].as_str().unwrap_or_default()).with_context(|| format!("writing {}", p.display()))?;
            }
            println!(
                "{}\nexpires {}",
                v["url"].as_str().unwrap_or_default(),
                v["expires_at"].as_str().unwrap_or_default()
            );
        }
        Cmd::EnrollProfile { client } => {
            let a = client.admin()?;
            let resp = a
                .client
                .get(format!("{}/v1/enrollments/profile", a.base))
                .bearer_auth(&a.key)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                anyhow::bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            use std::io::Write as _;
            std::io::stdout().write_all(&body)?;
        }
        Cmd::Sim { what, client } => match what {
            SimCmd::Enroll {
                devices,
                user,
                invite,
                provider_app,
                provider_usage,
                provider_wait,
            } => {
                let test_ca = match &provider_app {
                    Some(_) => Some(mdmd::sim::pki::test_ca("mdmd sim derived-credential CA")?),
                    None => None,
                };
                let http = client.client()?;
                let n = if invite.is_some() { 1 } else { devices.min(10_000) };
                let creds = match &user {
                    Some(u) => Some(parse_user(u)?),
                    None => None,
                };
                for _ in 0..n {
                    let der = match (&invite, &creds) {
                        (Some(url), _) => mdmd::sim::download_profile(&http, url, None).await?,
                        (None, Some((u, p))) => {
                            mdmd::sim::download_profile(&http, &format!("{}/mdm/enroll", client.server), Some((u, p))).await?
                        }
                        (None, None) => anyhow::bail!("pass --user USER:PASSWORD or --invite URL"),
                    };
                    let mut d = mdmd::sim::SimDevice::from_profile(http.clone(), &der, None).await?;
                    d.enroll().await?;
                    let handled = d.session().await?;
                    println!("{} enrolled ({} commands answered)", d.udid, handled.len());
                    if let (Some(app), Some(ca)) = (&provider_app, &test_ca) {
                        let until = std::time::Instant::now() + std::time::Duration::from_secs(provider_wait);
                        while d.apps.get(app).cloned().flatten().is_none() {
                            if std::time::Instant::now() > until {
                                anyhow::bail!("{app} got no managed configuration within {provider_wait} s");
                            }
                            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                            d.session().await?;
                        }
                        for usage in &provider_usage {
                            let password = mdmd::pki::random_token(12);
                            let p12 = mdmd::sim::pki::issue_pkcs12(ca, &format!("{} {usage}", d.udid), 365, &password)?;
                            let (status, v) = d.provider_app_upload(app, usage, &p12, &password).await?;
                            println!("{app}: {usage} credential posted: HTTP {status} {v}");
                        }
                        let handled = d.session().await?;
                        println!("{} answered {} more commands", d.udid, handled.len());
                    }
                }
            }
            SimCmd::Fleet {
                devices,
                user,
                apns_listen,
                push_ca,
                write_apns_ca,
                seconds,
                measure_rounds,
                concurrency,
            } => {
                let http = client.client()?;
                let cas = openssl::x509::X509::stack_from_pem(
                    &std::fs::read(&push_ca).with_context(|| format!("reading {}", push_ca.display()))?,
                )?;
                let standin = mdmd::sim::apns::StandIn::start(&apns_listen, cas).await?;
                std::fs::write(&write_apns_ca, standin.server_cert.to_pem()?)?;
                eprintln!(
                    "APNs stand-in on {} (mdmd --apns-url {} --apns-ca {})",
                    standin.addr,
                    standin.url(),
                    write_apns_ca.display()
                );
                let (u, p) = parse_user(&user)?;
                let stats = std::sync::Arc::new(mdmd::sim::fleet::FleetStats::default());
                let keys = mdmd::sim::load::key_pool(8)?;
                let standin = std::sync::Arc::new(standin);
                let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
                let mut joins = Vec::new();
                for i in 0..devices.min(100_000) {
                    let (http, standin, stats, sem, key) = (
                        http.clone(),
                        standin.clone(),
                        stats.clone(),
                        sem.clone(),
                        keys[i % keys.len()].clone(),
                    );
                    let (url, u, p) = (format!("{}/mdm/enroll", client.server), u.clone(), p.clone());
                    joins.push(tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await?;
                        let der = mdmd::sim::download_profile(&http, &url, Some((&u, &p))).await?;
                        let d = mdmd::sim::SimDevice::from_profile(http.clone(), &der, Some(key)).await?;
                        d.enroll().await?;
                        let udid = d.udid.clone();
                        mdmd::sim::fleet::serve(&standin, d, stats);
                        anyhow::Ok(udid)
                    }));
                }
                let mut handles = Vec::new();
                for j in joins {
                    handles.push(j.await??);
                }
                eprintln!("{} devices enrolled and listening for pushes", handles.len());
                if let Some(rounds) = measure_rounds {
                    let a = client.admin()?;
                    let within = Duration::from_secs(seconds);
                    let one = mdmd::sim::fleet::measure(&a, &stats, &handles[..1], rounds, within).await?;
                    let all = mdmd::sim::fleet::measure(&a, &stats, &handles, rounds.min(3), within).await?;
                    print(&json!({"one_target": one, "all_targets": all, "fleet": stats.report(handles.len(), &standin)}));
                    return Ok(());
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        _ = tokio::signal::ctrl_c() => break,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {
                            eprintln!("{}", serde_json::to_string(&stats.report(handles.len(), &standin))?);
                        }
                    }
                }
                print(&serde_json::to_value(stats.report(handles.len(), &standin))?);
            }
            SimCmd::Seed { store, devices } => {
                let s = open_named_store(&store, true).await?;
                let secs = mdmd::sim::nac::seed(&*s, devices).await?;
                print(&json!({"seeded": devices, "store": s.describe(), "seconds": secs}));
            }
            SimCmd::IseBench {
                account,
                devices,
                requests,
                concurrency,
            } => {
                let (user, password) = parse_user(&account)?;
                let r =
                    mdmd::sim::nac::ise_bench(client.client()?, &client.server, &user, &password, devices, requests, concurrency).await?;
                print(&serde_json::to_value(r)?);
            }
            SimCmd::ScepBench {
                url,
                challenge,
                requests,
                concurrency,
                pid,
            } => {
                let cpu = |pid: Option<u32>| pid.map(|p| proc_cpu(p)).unwrap_or(0.0);
                let c0 = cpu(pid);
                let (ok, secs) = mdmd::sim::load::scep_bench(client.client()?, &url, &challenge, requests, concurrency).await?;
                let c1 = cpu(pid);
                print(&json!({
                    "issued": ok,
                    "seconds": secs,
                    "issuances_per_second": ok as f64 / secs,
                    "server_cpu_ms_per_issuance": pid.map(|_| (c1 - c0) * 1000.0 / ok.max(1) as f64),
                }));
            }
            SimCmd::BareServer { listen, tls_cert, tls_key } => {
                let pair = mdmd::pki::ca::load_pair(&tls_cert, &tls_key)?;
                let tls = std::sync::Arc::new(mdmd::app::LiveTls::new(
                    mdmd::http::listener::acceptor_for(&pair)?,
                    tls_cert,
                    tls_key,
                ));
                let l = tokio::net::TcpListener::bind(&listen).await?;
                if !l.local_addr()?.ip().is_loopback() {
                    anyhow::bail!("the bare server listens on loopback only");
                }
                println!("bare server listening on https://{}", l.local_addr()?);
                let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
                mdmd::http::listener::serve(l, router, Some(tls), Default::default(), std::future::pending::<()>()).await;
            }
            SimCmd::IdleBench {
                url,
                user,
                devices,
                requests,
                concurrency,
                connections,
                sha1_signatures,
                pid,
            } => {
                let cfg = LoadConfig {
                    server: client.server.clone(),
                    api_key: String::new(),
                    client: client.client()?,
                    enroll_user: parse_user(&user)?,
                    devices,
                    rounds: 0,
                    concurrency,
                    deadline: Duration::from_secs(600),
                    also: Vec::new(),
                    progress: false,
                    connections,
                    trust_pem: client.trust_pem()?,
                    style: mdmd::sim::pki::ClientStyle {
                        envelope: mdmd::sim::pki::Envelope::Auto,
                        sha1_signatures,
                    },
                };
                let devs = mdmd::sim::load::enroll_devices(&cfg, devices.max(1)).await?;
                let cpu = |pid: Option<u32>| pid.map(proc_cpu).unwrap_or(0.0);
                let c0 = cpu(pid);
                let (ok, secs) = mdmd::sim::load::idle_bench(&cfg, &devs, &url, requests, concurrency).await?;
                let c1 = cpu(pid);
                print(&json!({
                    "url": url,
                    "connections": connections,
                    "answered_200": ok,
                    "requests": requests,
                    "seconds": secs,
                    "requests_per_second": requests as f64 / secs,
                    "server_cpu_ms_per_request": pid.map(|_| (c1 - c0) * 1000.0 / requests.max(1) as f64),
                }));
            }
            SimCmd::Load {
                devices,
                rounds,
                concurrency,
                max_seconds,
                user,
                also,
                connections,
                envelope,
                sha1_signatures,
            } => {
                let a = client.admin()?;
                let r = mdmd::sim::load::run(LoadConfig {
                    server: client.server.clone(),
                    api_key: a.key.clone(),
                    client: client.client()?,
                    enroll_user: parse_user(&user)?,
                    devices: devices.min(100_000),
                    rounds,
                    concurrency,
                    deadline: Duration::from_secs(max_seconds),
                    also,
                    progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    connections,
                    trust_pem: client.trust_pem()?,
                    style: mdmd::sim::pki::ClientStyle { envelope, sha1_signatures },
                })
                .await?;
                print(&serde_json::to_value(r)?);
            }
        },
    }
    Ok(())
}

/// `mdmd push-cert request`: push key (0600), CSR, and the vendor-signed request file.
async fn push_cert_request(
    client: &ClientOpts,
    vendor_cert: &std::path::Path,
    vendor_key: &std::path::Path,
    password: Option<&str>,
    out_dir: &std::path::Path,
    organization: &str,
) -> anyhow::Result<()> {
    use mdmd::push::cert;
    let chain =
        openssl::x509::X509::stack_from_pem(&std::fs::read(vendor_cert).with_context(|| format!("reading {}", vendor_cert.display()))?)
            .context("--vendor-cert: not PEM certificates")?;
    let kpem = std::fs::read(vendor_key).with_context(|| format!("reading {}", vendor_key.display()))?;
    let vkey = match password {
        Some(p) => openssl::pkey::PKey::private_key_from_pem_passphrase(&kpem, p.as_bytes()),
        None => openssl::pkey::PKey::private_key_from_pem(&kpem),
    }
    .context("--vendor-key: not a PEM private key (encrypted? pass --vendor-key-password)")?;
    std::fs::create_dir_all(out_dir)?;
    let key_path = out_dir.join("push-request.key");
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    mdmd::pki::write_secret(&key_path, &key.private_key_to_pem_pkcs8()?)
        .with_context(|| format!("writing {} (it must not exist yet)", key_path.display()))?;
    let csr = cert::csr(&key, organization)?;
    std::fs::write(out_dir.join("push-request.csr"), csr.to_pem()?)?;
    let req = cert::vendor_signed_request(&csr, &vkey, &chain)?;
    let req_path = out_dir.join("push-request.b64");
    std::fs::write(&req_path, &req)?;
    // Renewal: the topic of the certificate in use, if a server answers.
    let current = match client.admin() {
        Ok(a) => a.get("/v1/push-cert").await.ok().filter(|v| v["configured"] == true),
        Err(_) => None,
    };
    println!(
        "Wrote {} (0600), {} and {}.",
        key_path.display(),
        out_dir.join("push-request.csr").display(),
        req_path.display()
    );
    println!("1. Sign in at https://identity.apple.com/pushcert with your organisation's Apple Account.");
    match &current {
        Some(v) => println!(
            "2. RENEWAL: choose \"Renew\" next to the certificate with topic {} (expires in {} days) and upload {}.\n   Renewing keeps the topic: enrolled devices keep working. \"Create a Certificate\" would give a NEW topic and every enrolled device would have to re-enroll.",
            v["topic"].as_str().unwrap_or("?"),
            v["days_left"],
            req_path.display()
        ),
        None => println!("2. Choose \"Create a Certificate\" and upload {} (for a renewal choose \"Renew\" on the existing certificate instead: same topic).", req_path.display()),
    }
    println!("3. Download the certificate (MDM_…_Certificate.pem), then:");
    println!("   mdmd push-cert set MDM_Certificate.pem --key {}", key_path.display());
    Ok(())
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    t(11) + t(12)
}

/// A store named on the command line: a postgres:// URL or a redb data dir (or file).
async fn open_named_store(spec: &str, create: bool) -> anyhow::Result<std::sync::Arc<dyn mdmd::store::Store>> {
    use mdmd::store::postgres::{PgConfig, PgStore};
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let s = PgStore::connect(PgConfig::new(spec))
            .await
            .with_context(|| format!("opening {}", mdmd::store::postgres::redact(spec)))?;
        return Ok(std::sync::Arc::new(s));
    }
    let p = std::path::Path::new(spec);
    let file = if p.is_dir() || (!p.exists() && p.extension().is_none()) {
        p.join("mdmd.redb")
    } else {
        p.to_path_buf()
    };
    if !create && !file.exists() {
        anyhow::bail!("{}: no mdmd database there", file.display());
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let s =
        mdmd::store::redb::RedbStore::open(&file).with_context(|| format!("opening {} (is mdmd still running on it?)", file.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    }
    Ok(std::sync::Arc::new(s))
}

async fn db_main(what: DbCmd) -> anyhow::Result<()> {
    use mdmd::store::postgres::{PgConfig, PgStore};
    match what {
        DbCmd::Migrate { database_url, status } => {
            let s = PgStore::connect_unmigrated(PgConfig::new(&database_url)).await?;
            if !status {
                let applied = s.migrate().await.context("applying migrations")?;
                if applied.is_empty() {
                    println!("schema up to date");
                } else {
                    println!("applied migration(s) {applied:?}");
                }
            }
            for (v, name, done) in s.migration_status().await? {
                println!("{v:>4}  {:<8} {name}", if done { "applied" } else { "pending" });
            }
            Ok(())
        }
        DbCmd::Copy { from, to } => {
            let src = open_named_store(&from, false).await?;
            let dst = open_named_store(&to, true).await?;
            for t in [
                mdmd::store::Table::Enrollments,
                mdmd::store::Table::Commands,
                mdmd::store::Table::Certs,
            ] {
                if !dst.export(t, None, 1).await?.is_empty() {
                    anyhow::bail!("{} already holds {}: copy only into an empty store", dst.describe(), t.name());
                }
            }
            eprintln!("copying {} -> {}", src.describe(), dst.describe());
            let t0 = std::time::Instant::now();
            let rep = mdmd::store::copy::copy_all(&*src, &*dst).await?;
            println!("{:<16} {:>10} {:>10}  {:<16} {}", "table", "source", "target", "checksum", "");
            for (name, (a, b)) in &rep.tables {
                println!(
                    "{name:<16} {:>10} {:>10}  {:016x} {}",
                    a.rows,
                    b.rows,
                    a.checksum,
                    if a == b { "ok" } else { "MISMATCH" }
                );
            }
            if !rep.verified() {
                anyhow::bail!("the copy does not match its source (see MISMATCH above)");
            }
            let total: u64 = rep.tables.values().map(|(a, _)| a.rows).sum();
            println!(
                "copied {total} records from {} to {} in {:.1} s; counts and checksums match",
                rep.from,
                rep.to,
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("mdmd: {msg}");
            if let Some(hint) = next_step(&msg) {
                eprintln!("hint: {hint}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// What to do next after a common failure of an admin command.
fn next_step(msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    if m.contains("connection refused") || m.contains("error sending request") || m.contains("dns error") {
        Some("is mdmd serving there? Start it with `mdmd serve` (or `make run`), or point --server / MDMD_SERVER at it")
    } else if m.contains("certificate verify failed") || m.contains("self-signed certificate") || m.contains("unable to get local issuer") {
        Some("trust the server's CA: --trust-ca certs/ca.pem (MDMD_TRUST_CA), run from the directory that holds ./certs")
    } else if m.contains("http 401") || m.contains("missing or wrong credentials") {
        Some("check the API key: --api-key or MDMD_API_KEY (the server printed it on first start; it is in ./data/api-key)")
    } else if m.contains("http 403") {
        Some("this account's role may not do that: use the admin key or an account with the role it needs (mdmd accounts list)")
    } else {
        None
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = TABLES.set(match cli.output.as_str() {
        "table" => true,
        "json" => false,
        _ => std::io::IsTerminal::is_terminal(&std::io::stdout()),
    });
    mdmd::logfmt::init(cli.log_format == "json");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Serve(cfg) => rt.block_on(mdmd::server::run(cfg)),
        Cmd::Db { what } => rt.block_on(db_main(what)),
        other => rt.block_on(client_main(other)),
    }
}
