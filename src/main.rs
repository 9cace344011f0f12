//! mdmd: an Apple MDM server. `mdmd serve` runs it; the other subcommands are
//! clients of its admin API. This file parses the command line, starts
//! logging and hands the subcommand to `cli`, which holds one module per
//! subcommand family; failures end here with a hint at the next step.

use clap::Parser;

mod cli;

#[derive(Parser)]
#[command(
    name = "mdmd",
    version,
    about = "An Apple MDM server: enrollment, SCEP CA, check-in, durable command queue.",
    long_about = "An Apple MDM server.\n\n`mdmd serve` runs the server (state in ./data, certificates in ./certs, both created on first start).\nEvery other subcommand is a client of a running server's admin API: point it at one with --server/MDMD_SERVER\nand authenticate with --api-key/MDMD_API_KEY (by default read from ./data/api-key)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: cli::Command,
    /// Log lines as `text` (for people) or `json` (one object per line, for log shippers).
    /// The level comes from MDMD_LOG (default info; e.g. MDMD_LOG=info,mdmd::access=warn
    /// drops the per-request lines).
    #[arg(long, env = "MDMD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true, help_heading = "Logging and output")]
    log_format: String,
    /// Answers as `table` (for people) or `json` (the API's JSON, for scripts). Default: a table
    /// on a terminal, JSON when piped. Every list and `show` has a table; other answers are JSON.
    #[arg(short = 'o', long, env = "MDMD_OUTPUT", value_parser = ["auto", "table", "json"], default_value = "auto", global = true, help_heading = "Logging and output")]
    output: String,
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

/// What to do next after a common failure of an admin command: the most
/// specific cause first (a TLS or enrollment failure also reads as "a
/// request failed", and an enrollment 401 is not about the API key).
fn next_step(msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if has(&[
        "certificate verify failed",
        "self-signed certificate",
        "unable to get local issuer",
        "unknownissuer",
        "invalid peer certificate",
        "certificate is not trusted",
    ]) {
        Some("the server's TLS certificate is not trusted here: pass its CA with --trust-ca certs/ca.pem (MDMD_TRUST_CA), or run from the directory that holds the server's ./certs")
    } else if has(&["answers https, not http"]) {
        Some("mdmd serves HTTPS: use an https:// URL with --server / MDMD_SERVER (e.g. https://localhost:8443)")
    } else if has(&["invitation has already been used", "invitation has expired", "unknown invitation"]) {
        Some("an invitation enrolls one device and expires after its days: make a new one with `mdmd invite` and pass it with --invite")
    } else if has(&["profile download: http 401", "enrollment needs your enrollment credentials"]) {
        Some("the server refused these enrollment credentials: give the user the server was started with (`mdmd serve --enroll-user NAME:PASSWORD`; `make run` sets none), a directory user, or an invitation (`mdmd invite`, then --invite)")
    } else if has(&["connection refused", "error sending request", "dns error", "tcp connect error"]) {
        Some("is mdmd serving there? Start it with `mdmd serve` (or `make run`), or point --server / MDMD_SERVER at it")
    } else if has(&["http 401", "missing or wrong credentials"]) {
        Some("check the API key: --api-key or MDMD_API_KEY (the server printed it on first start; it is in ./data/api-key)")
    } else if has(&["http 403"]) {
        Some("this account's role may not do that: use the admin key or an account with the role it needs (mdmd accounts list)")
    } else {
        None
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli::set_output(&cli.output);
    mdmd::logfmt::init(cli.log_format == "json");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(cli::run(cli.cmd))
}

#[cfg(test)]
mod tests {
    /// Every subcommand's flags are consistent (clap checks them only when a
    /// subcommand is used: a clash would panic in an admin's hands).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
