//! `mdmd apps`: the app catalog (issue 28) — App Store apps licensed through Apple's Apps and
//! Books content tokens, and in-house apps uploaded as `.ipa` files — installed on and removed
//! from devices, and each device's apps.
//!
//! Every subcommand is one admin-API request (`/v1/apps…`, `/v1/apps-and-books/…`,
//! `/v1/devices/{id}/apps`); a refusal prints the server's `error` text and exits non-zero.
//! People get tables (`render`), scripts the API's JSON (`-o json`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::client::{enc, AdminClient, ClientOpts, Method, Reply};
use super::show;

mod render;

/// Examples under `mdmd apps --help`.
pub const EXAMPLES: &str = "\
Examples:
  mdmd apps tokens add main ~/Downloads/sToken_for_Example.vpptoken
  mdmd apps sync
  mdmd apps add --itunes-id 361309726 --config pages-config.json
  mdmd apps add ./FieldApp.ipa --keep-on-unenroll
  mdmd apps list
  mdmd apps install 7 00008030-001A2B3C4D5E6F70 @ipads.txt
  mdmd apps show 7
  mdmd apps device 00008030-001A2B3C4D5E6F70

Licences: installing an App Store app associates one of the token's licences with each device
(409 when too few are free: the error says how many are available and needed); removing it
releases the licence. In-house apps need no licence.";

/// How long an .ipa upload may take.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

#[derive(Args)]
pub struct AppsArgs {
    #[command(subcommand)]
    what: AppsCmd,
    #[command(flatten)]
    client: ClientOpts,
}

impl AppsArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        let a = self.client.admin()?;
        self.what.run(&a).await
    }
}

#[derive(Subcommand)]
pub enum AppsCmd {
    /// Apps and Books content tokens (the `.vpptoken` files from Apple Business Manager): add, list, remove.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Sync with Apple now: licence counts and licences.
    ///
    /// Refreshes every content token's licence counts and reconciles licences (releases those of
    /// devices that no longer have the app). Prints what it did; exits non-zero if a token failed.
    Sync,
    /// Add an app to the catalog: an App Store app by its id, or an in-house app from its .ipa.
    #[command(
        long_about = "Add an app to the catalog.\n\n\
            An App Store app is given by its App Store id and licensed through a content token \
            (`mdmd apps tokens add`). An in-house app is its .ipa file, uploaded as it is read; \
            uploading an .ipa whose bundle id is already in the catalog adds it as a new version, \
            offered to the devices that have the app (the answer says to how many).\n\n\
            By default the app is removed when a device unenrolls and its data is kept out of \
            device backups; --keep-on-unenroll and --allow-backup turn these off.",
        after_help = "Examples:\n  \
            mdmd apps add --itunes-id 361309726\n  \
            mdmd apps add --itunes-id 361309726 --token main --config pages-config.json\n  \
            mdmd apps add ./FieldApp.ipa --keep-on-unenroll --allow-backup"
    )]
    Add {
        /// The in-house app's .ipa file (instead of --itunes-id).
        #[arg(
            value_name = "FILE.ipa",
            required_unless_present = "itunes_id",
            conflicts_with_all = ["itunes_id", "token", "bundle_id", "config"]
        )]
        ipa: Option<PathBuf>,
        /// The App Store id: the number at the end of the app's App Store URL
        /// (https://apps.apple.com/app/id361309726 → 361309726).
        #[arg(long, value_name = "N")]
        itunes_id: Option<u64>,
        /// The content token whose licences the app uses (see `mdmd apps tokens list`);
        /// leave it out to let the server choose.
        #[arg(long, value_name = "NAME")]
        token: Option<String>,
        /// The app's bundle identifier, e.g. com.apple.Pages, when you want to give it rather
        /// than have the server learn it from Apple.
        #[arg(long, value_name = "ID")]
        bundle_id: Option<String>,
        /// Managed app configuration: a file holding a JSON object or the vendor's AppConfig
        /// `key=value` lines (`-` reads standard input),
        /// delivered to devices with the app.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Leave the app on a device when it unenrolls (default: removed with mdmd's profile).
        #[arg(long)]
        keep_on_unenroll: bool,
        /// Let devices back up the app's data (default: kept out of backups).
        #[arg(long)]
        allow_backup: bool,
    },
    /// The catalog: kind, version, licences free of total, devices installed/pending/failed.
    List,
    /// One app: its details, licences, and its state on every device.
    Show {
        /// The app's id (`mdmd apps list`).
        id: String,
    },
    /// Change an app's managed configuration, removal on unenroll, or backup setting.
    #[command(
        group(clap::ArgGroup::new("change").required(true).multiple(true)
            .args(["config", "no_config", "remove_on_unenroll", "prevent_backup"])),
        after_help = "Examples:\n  \
            mdmd apps set 7 --config pages-config.json\n  \
            mdmd apps set 7 --no-config\n  \
            mdmd apps set 7 --remove-on-unenroll false --prevent-backup true"
    )]
    Set {
        /// The app's id (`mdmd apps list`).
        id: String,
        /// New managed app configuration: a JSON object or `key=value` lines (`-` reads standard input).
        #[arg(long, value_name = "FILE", conflicts_with = "no_config")]
        config: Option<PathBuf>,
        /// Drop the app's managed configuration.
        #[arg(long)]
        no_config: bool,
        /// Remove the app when a device unenrolls (true/false, yes/no, on/off).
        #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
        remove_on_unenroll: Option<bool>,
        /// Keep the app's data out of device backups (true/false, yes/no, on/off).
        #[arg(long, value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
        prevent_backup: Option<bool>,
    },
    /// Take an app out of the catalog.
    ///
    /// Refused (409) while devices still have it: `mdmd apps remove ID TARGET…` first.
    Rm {
        /// The app's id (`mdmd apps list`).
        id: String,
    },
    /// Install an app on devices.
    ///
    /// For an App Store app a licence is associated with each device first; the request is
    /// refused (409) when too few are free, with how many are available and needed. Prints how
    /// many were queued and which targets failed; exits non-zero if any did.
    #[command(after_help = "Examples:\n  \
        mdmd apps install 7 00008030-001A2B3C4D5E6F70\n  \
        mdmd apps install 7 UDID1,UDID2 @more-udids.txt")]
    Install {
        /// The app's id (`mdmd apps list`).
        id: String,
        /// Enrollment ids (UDIDs): several, or comma-separated; `@FILE` reads one per line, `@-` stdin.
        #[arg(required = true, value_delimiter = ',', value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Remove an app from devices.
    ///
    /// An App Store app's licences are released. Exits non-zero if a target failed.
    Remove {
        /// The app's id (`mdmd apps list`).
        id: String,
        /// Enrollment ids (UDIDs): several, or comma-separated; `@FILE` reads one per line, `@-` stdin.
        #[arg(required = true, value_delimiter = ',', value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// One device's apps from the catalog: state, version, licence, error.
    Device {
        /// The enrollment id (UDID).
        enrollment: String,
    },
}

#[derive(Subcommand)]
pub enum TokensCmd {
    /// Upload a content token under a name of your choice (admin only).
    ///
    /// Download it in Apple Business Manager: Preferences → Payments and Billing → Content
    /// Tokens. Uploading under the same name again replaces it (a renewed token; they last a
    /// year). Several tokens (locations) may be in use at once.
    Add {
        /// Letters, digits, '.', '-', '_', e.g. `main`.
        name: String,
        /// The downloaded `.vpptoken` file (`-` reads standard input).
        file: PathBuf,
    },
    /// Content tokens: organisation, location, expiry, apps, last sync and error.
    List,
    /// Forget a content token (admin only). Upload it again to use its licences.
    Rm {
        /// The token's name (`mdmd apps tokens list`).
        name: String,
    },
}

/// The body of a 2xx answer; otherwise `HTTP status: ` and the server's `error` text.
fn checked(r: Reply) -> anyhow::Result<Value> {
    if (200..300).contains(&r.status) {
        return Ok(r.body);
    }
    let text = match r.body.get("error") {
        Some(Value::String(e)) => e.clone(),
        Some(other) => other.to_string(),
        None => match &r.body {
            Value::String(t) if t.trim().is_empty() => "no details".to_owned(),
            Value::String(t) => t.clone(),
            other => other.to_string(),
        },
    };
    anyhow::bail!("HTTP {}: {text}", r.status)
}

/// A managed app configuration from a file (`-`: stdin): a JSON object, or
/// the `key=value` lines app vendors ship as "AppConfig".
fn read_object(file: &std::path::Path) -> anyhow::Result<Map<String, Value>> {
    let text = super::read_text_or_stdin(file)?;
    super::cmd::app_config_text(&text, file)
}

/// The JSON body of `POST /v1/apps` for an App Store app.
fn store_app_body(
    itunes_id: u64,
    token: Option<String>,
    bundle_id: Option<String>,
    config: Option<Map<String, Value>>,
    keep_on_unenroll: bool,
    allow_backup: bool,
) -> Value {
    let mut b = json!({
        "itunes_store_id": itunes_id,
        "remove_on_unenroll": !keep_on_unenroll,
        "prevent_backup": !allow_backup,
    });
    if let Some(t) = token {
        b["token"] = Value::String(t);
    }
    if let Some(id) = bundle_id {
        b["bundle_id"] = Value::String(id);
    }
    if let Some(c) = config {
        b["configuration"] = Value::Object(c);
    }
    b
}

/// The query of `POST /v1/apps` for an .ipa.
fn ipa_query(keep_on_unenroll: bool, allow_backup: bool) -> String {
    format!("remove_on_unenroll={}&prevent_backup={}", !keep_on_unenroll, !allow_backup)
}

/// The JSON body of `PUT /v1/apps/{id}`: only what is to change (`configuration: null` drops it).
fn settings_body(
    config: Option<Map<String, Value>>,
    no_config: bool,
    remove_on_unenroll: Option<bool>,
    prevent_backup: Option<bool>,
) -> Value {
    let mut b = Map::new();
    if no_config {
        b.insert("configuration".into(), Value::Null);
    } else if let Some(c) = config {
        b.insert("configuration".into(), Value::Object(c));
    }
    if let Some(r) = remove_on_unenroll {
        b.insert("remove_on_unenroll".into(), Value::Bool(r));
    }
    if let Some(p) = prevent_backup {
        b.insert("prevent_backup".into(), Value::Bool(p));
    }
    Value::Object(b)
}

/// Print an install or remove answer; an error when some targets failed.
fn finish_fan_out(v: &Value, action: &str) -> anyhow::Result<()> {
    show(v, if action == "install" { render::installed } else { render::removed });
    let failed = v["failed"].as_array().map_or(0, Vec::len);
    if failed > 0 {
        anyhow::bail!("{action}: {failed} target(s) failed (see above)");
    }
    Ok(())
}

impl AppsCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            AppsCmd::Tokens(t) => t.run(a).await?,
            AppsCmd::Sync => {
                let v = checked(a.send(Method::POST, "/v1/apps-and-books/sync", None).await?)?;
                show(&v, render::synced);
                let errors = v["errors"].as_array().map_or(0, Vec::len);
                if errors > 0 {
                    anyhow::bail!("the sync reported {errors} error(s) (see above)");
                }
            }
            AppsCmd::Add {
                ipa: Some(file),
                keep_on_unenroll,
                allow_backup,
                ..
            } => {
                let path = format!("/v1/apps?{}", ipa_query(keep_on_unenroll, allow_backup));
                let r = a.post_file(&path, "application/octet-stream", &file, UPLOAD_TIMEOUT).await?;
                show(&checked(r)?, render::added);
            }
            AppsCmd::Add {
                ipa: None,
                itunes_id,
                token,
                bundle_id,
                config,
                keep_on_unenroll,
                allow_backup,
            } => {
                let id = itunes_id.context("give --itunes-id N or an .ipa file")?;
                let config = config.as_deref().map(read_object).transpose()?;
                let body = store_app_body(id, token, bundle_id, config, keep_on_unenroll, allow_backup);
                show(&checked(a.send(Method::POST, "/v1/apps", Some(body)).await?)?, render::added);
            }
            AppsCmd::List => show(&checked(a.send(Method::GET, "/v1/apps", None).await?)?, render::apps),
            AppsCmd::Show { id } => show(
                &checked(a.send(Method::GET, &format!("/v1/apps/{}", enc(&id)), None).await?)?,
                render::app,
            ),
            AppsCmd::Set {
                id,
                config,
                no_config,
                remove_on_unenroll,
                prevent_backup,
            } => {
                let config = config.as_deref().map(read_object).transpose()?;
                let body = settings_body(config, no_config, remove_on_unenroll, prevent_backup);
                let path = format!("/v1/apps/{}", enc(&id));
                show(&checked(a.send(Method::PUT, &path, Some(body)).await?)?, render::app);
            }
            AppsCmd::Rm { id } => {
                checked(a.send(Method::DELETE, &format!("/v1/apps/{}", enc(&id)), None).await?)?;
                eprintln!("removed app {id} from the catalog");
            }
            AppsCmd::Install { id, targets } => {
                let targets = super::cmd::expand_targets(targets)?;
                let path = format!("/v1/apps/{}/install", enc(&id));
                let v = checked(a.send(Method::POST, &path, Some(json!({ "targets": targets }))).await?)?;
                finish_fan_out(&v, "install")?;
            }
            AppsCmd::Remove { id, targets } => {
                let targets = super::cmd::expand_targets(targets)?;
                let path = format!("/v1/apps/{}/remove", enc(&id));
                let v = checked(a.send(Method::POST, &path, Some(json!({ "targets": targets }))).await?)?;
                finish_fan_out(&v, "remove")?;
            }
            AppsCmd::Device { enrollment } => show(
                &checked(a.send(Method::GET, &format!("/v1/devices/{}/apps", enc(&enrollment)), None).await?)?,
                render::device_apps,
            ),
        }
        Ok(())
    }
}

impl TokensCmd {
    pub async fn run(self, a: &AdminClient) -> anyhow::Result<()> {
        match self {
            TokensCmd::Add { name, file } => {
                let text = super::read_text_or_stdin(&file)?;
                let path = format!("/v1/apps-and-books/tokens/{}", enc(&name));
                let r = a.send_bytes(Method::PUT, &path, "text/plain", text.into_bytes()).await?;
                show(&checked(r)?, render::token);
            }
            TokensCmd::List => show(
                &checked(a.send(Method::GET, "/v1/apps-and-books/tokens", None).await?)?,
                render::tokens,
            ),
            TokensCmd::Rm { name } => {
                let path = format!("/v1/apps-and-books/tokens/{}", enc(&name));
                checked(a.send(Method::DELETE, &path, None).await?)?;
                eprintln!("removed content token {name}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: AppsCmd,
    }

    fn parse(args: &[&str]) -> Result<AppsCmd, clap::Error> {
        T::try_parse_from(std::iter::once("apps").chain(args.iter().copied())).map(|t| t.c)
    }

    #[test]
    fn add_takes_an_app_store_id_or_an_ipa_not_both() {
        assert!(matches!(
            parse(&["add", "--itunes-id", "361309726", "--token", "main"]),
            Ok(AppsCmd::Add {
                itunes_id: Some(361309726),
                ipa: None,
                ..
            })
        ));
        assert!(matches!(
            parse(&["add", "x.ipa", "--allow-backup"]),
            Ok(AppsCmd::Add {
                ipa: Some(_),
                allow_backup: true,
                ..
            })
        ));
        assert!(parse(&["add"]).is_err(), "one of them is needed");
        assert!(parse(&["add", "x.ipa", "--itunes-id", "1"]).is_err());
        assert!(
            parse(&["add", "x.ipa", "--token", "main"]).is_err(),
            "a token licenses App Store apps only"
        );
        assert!(parse(&["add", "--itunes-id", "abc"]).is_err());
    }

    #[test]
    fn set_needs_a_change_and_config_or_no_config() {
        assert!(parse(&["set", "7"]).is_err());
        assert!(parse(&["set", "7", "--config", "c.json", "--no-config"]).is_err());
        match parse(&["set", "7", "--remove-on-unenroll", "no", "--prevent-backup", "on"]) {
            Ok(AppsCmd::Set {
                remove_on_unenroll: Some(false),
                prevent_backup: Some(true),
                no_config: false,
                config: None,
                ..
            }) => {}
            _ => panic!("booleans parse"),
        }
        assert!(parse(&["set", "7", "--prevent-backup", "maybe"]).is_err());
    }

    #[test]
    fn install_targets_split_on_commas() {
        match parse(&["install", "7", "A,B", "C"]) {
            Ok(AppsCmd::Install { id, targets }) => {
                assert_eq!(id, "7");
                assert_eq!(targets, ["A", "B", "C"]);
            }
            _ => panic!("install parses"),
        }
        assert!(parse(&["remove", "7"]).is_err(), "a target is required");
        assert!(parse(&["tokens", "add", "main"]).is_err(), "the file is required");
    }

    #[test]
    fn bodies_follow_the_api() {
        let mut cfg = Map::new();
        cfg.insert("server".into(), json!("https://x.example"));
        let b = store_app_body(42, Some("main".into()), None, Some(cfg), false, false);
        assert_eq!(
            b,
            json!({"itunes_store_id": 42, "token": "main", "configuration": {"server": "https://x.example"},
                   "remove_on_unenroll": true, "prevent_backup": true})
        );
        let b = store_app_body(42, None, Some("com.apple.Pages".into()), None, true, true);
        assert_eq!(
            b,
            json!({"itunes_store_id": 42, "bundle_id": "com.apple.Pages", "remove_on_unenroll": false, "prevent_backup": false})
        );
        assert_eq!(ipa_query(false, false), "remove_on_unenroll=true&prevent_backup=true");
        assert_eq!(ipa_query(true, true), "remove_on_unenroll=false&prevent_backup=false");
        assert_eq!(
            settings_body(None, true, None, Some(false)),
            json!({"configuration": null, "prevent_backup": false})
        );
        assert_eq!(
            settings_body(Some(Map::new()), false, Some(true), None),
            json!({"configuration": {}, "remove_on_unenroll": true})
        );
    }

    #[test]
    fn refusals_read_as_the_servers_text() {
        let e = checked(Reply {
            status: 409,
            body: json!({"error": "3 licences available, 5 needed"}),
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "HTTP 409: 3 licences available, 5 needed");
        let e = checked(Reply {
            status: 502,
            body: Value::String("bad gateway".into()),
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "HTTP 502: bad gateway");
        assert_eq!(
            checked(Reply {
                status: 204,
                body: Value::String(String::new())
            })
            .unwrap(),
            Value::String(String::new())
        );
    }

    #[test]
    fn configuration_must_be_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"ServerURL": "https://x.example"}"#).unwrap();
        assert_eq!(read_object(&good).unwrap()["ServerURL"], "https://x.example");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "[1, 2]").unwrap();
        assert!(read_object(&bad).unwrap_err().to_string().contains("JSON object"));
        std::fs::write(&bad, "{").unwrap();
        assert!(read_object(&bad).is_err());
    }
}
