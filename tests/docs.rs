//! Docs that run: every ```sh block of README.md and docs/*.md is run here,
//! as written, against a real server (placeholders such as `<UDID>` filled
//! in, example hosts pointed at local stand-ins). A block whose commands no
//! longer work fails here before it misleads a reader, and a new block with
//! no test fails `every_command_block_is_run`.
//!
//! They are about the docs, not the store: on the PostgreSQL pass of the
//! suite (`MDMD_TEST_STORE=postgres`) they return at once; the README's
//! PostgreSQL block runs on PostgreSQL in the redb pass.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, API_KEY};
use serde_json::Value;

/// A fenced block of a doc: the heading it is under, its language, its text
/// (indentation of a block inside a list removed).
#[derive(Debug)]
struct Block {
    file: String,
    heading: String,
    /// Which block of this language under that heading (0, 1 …).
    n: usize,
    lang: String,
    body: String,
}

/// Every fenced block of README.md and docs/*.md.
fn blocks() -> Vec<Block> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(common::repo_file("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(common::repo_file(&file)).expect("read the doc");
        let mut heading = String::new();
        let mut counts: std::collections::HashMap<(String, String), usize> = Default::default();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let trimmed = line.trim_start();
            if line.starts_with('#') {
                heading = line.to_owned();
                continue;
            }
            let Some(lang) = trimmed.strip_prefix("```") else { continue };
            let indent = line.len() - trimmed.len();
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(l.get(indent.min(l.len() - l.trim_start().len())..).unwrap_or(l));
                body.push('\n');
            }
            let n = counts.entry((heading.clone(), lang.to_owned())).or_default();
            out.push(Block {
                file: file.clone(),
                heading: heading.clone(),
                n: *n,
                lang: lang.trim().to_owned(),
                body,
            });
            *n += 1;
        }
    }
    out
}

/// The `n`th ```sh block under `heading` in `file`, as lines.
fn sh_block(file: &str, heading: &str, n: usize) -> Vec<String> {
    blocks()
        .into_iter()
        .find(|b| b.file == file && b.heading == heading && b.lang == "sh" && b.n == n)
        .unwrap_or_else(|| panic!("{file}: no sh block {n} under {heading:?}"))
        .body
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Which test runs each command block: (file, heading, n, test).
const RUNNERS: &[(&str, &str, usize, &str)] = &[
    ("README.md", "# mdmd", 0, "the_first_screen_runs"),
    ("README.md", "# mdmd", 1, "the_first_screen_runs"),
    ("README.md", "## Manage", 0, "managing_a_demo_fleet_runs"),
    ("README.md", "## Manage", 1, "managing_a_demo_fleet_runs"),
    ("README.md", "## Profiles", 0, "managing_a_demo_fleet_runs"),
    ("README.md", "## Groups and blueprints", 0, "managing_a_demo_fleet_runs"),
    ("docs/groups.md", "# Groups and blueprints", 0, "managing_a_demo_fleet_runs"),
    ("docs/access-tokens.md", "## Shared access tokens (PingID and others)", 0, "managing_a_demo_fleet_runs"),
    ("README.md", "## Declarative management", 0, "the_ddm_blocks_run"),
    ("README.md", "## Enroll a device", 0, "serving_and_enrolling_run"),
    ("README.md", "## Apps", 0, "the_apps_blocks_run"),
    ("docs/apps.md", "## Apps and Books: the content token", 0, "the_apps_blocks_run"),
    ("docs/apps.md", "## The catalog", 0, "the_apps_blocks_run"),
    ("docs/apps.md", "## Install and remove", 0, "the_apps_blocks_run"),
    ("README.md", "## Try it without an iPhone", 0, "trying_it_without_an_iphone_runs"),
    ("docs/ade.md", "## 1. Connect mdmd to ABM (once per ABM server, yearly for the token)", 0, "the_ade_blocks_run"),
    ("docs/ade.md", "## 1. Connect mdmd to ABM (once per ABM server, yearly for the token)", 1, "the_ade_blocks_run"),
    ("docs/ade.md", "## 2. Assign devices to mdmd in ABM", 0, "the_ade_blocks_run"),
    ("docs/ade.md", "## 3. Define the ADE profile", 0, "the_ade_blocks_run"),
    ("docs/ade.md", "## 5. Setup Assistant waits (`await_device_configured`)", 0, "the_ade_blocks_run"),
    ("docs/ade.md", "## Try it without Apple", 0, "the_ade_blocks_run"),
    ("docs/directory.md", "## LDAP (Active Directory, OpenLDAP)", 0, "the_directory_blocks_run"),
    ("docs/directory.md", "## LDAP (Active Directory, OpenLDAP)", 1, "the_directory_blocks_run"),
    ("docs/directory.md", "## OpenID Connect (Entra ID, Okta, Keycloak)", 0, "the_directory_blocks_run"),
    (
        "docs/performance.md",
        "## Connect requests beside the floor (`mdmd sim bare-server` + `mdmd sim idle-bench`, 2026-11-24)",
        0,
        "the_benchmark_commands_run",
    ),
    ("README.md", "## Push (APNs)", 0, "the_push_certificate_steps_run"),
    ("README.md", "## Several instances on PostgreSQL", 0, "the_postgresql_block_runs"),
    ("README.md", "## Organisation CAs and derived credentials", 0, "organisation_cas_and_derived_credentials_run"),
    ("README.md", "## Organisation CAs and derived credentials", 1, "organisation_cas_and_derived_credentials_run"),
    ("docs/derived-credentials.md", "## An organisation CA behind mdmd's SCEP proxy", 0, "organisation_cas_and_derived_credentials_run"),
    ("docs/ddm.md", "## Declarations", 0, "the_ddm_blocks_run"),
    ("docs/ddm.md", "## Sets and assignments", 0, "the_ddm_blocks_run"),
    ("docs/ddm.md", "## The status channel", 0, "the_ddm_blocks_run"),
    ("docs/ddm.md", "## Software updates", 0, "the_ddm_blocks_run"),
];

/// Every ```sh block is run by a test (`RUNNERS`), every fenced block says
/// what it is (a language), and every runner names a block that exists.
#[test]
fn every_command_block_is_run() {
    let all = blocks();
    let mut missing = Vec::new();
    for b in &all {
        assert!(!b.lang.is_empty(), "{} under {:?}: a fenced block without a language", b.file, b.heading);
        if b.lang == "sh" && !RUNNERS.iter().any(|r| (r.0, r.1, r.2) == (b.file.as_str(), b.heading.as_str(), b.n)) {
            missing.push(format!("(\"{}\", \"{}\", {}, …)", b.file, b.heading, b.n));
        }
        assert!(
            b.lang != "sh" || !b.body.lines().any(|l| l.trim_start().starts_with("mdmd ") && l.contains(" | mdmd ")),
            "{} under {:?}: alternatives written as a pipe",
            b.file,
            b.heading
        );
    }
    assert!(missing.is_empty(), "command blocks no test runs:\n{}", missing.join("\n"));
    let me = include_str!("docs.rs");
    for (file, heading, n, test) in RUNNERS {
        assert!(
            all.iter().any(|b| b.file == *file && b.heading == *heading && b.lang == "sh" && b.n == *n),
            "{file}: no sh block {n} under {heading:?}"
        );
        assert!(me.contains(&format!("async fn {test}(")) || me.contains(&format!("fn {test}(")), "no test {test}");
    }
}

/// A shell for documented commands: `mdmd` on PATH (its output kept, so a
/// later line can use what an earlier one printed: `last command_uuid`),
/// pointed at `srv`, in `dir`.
struct Shell<'a> {
    dir: &'a Path,
    env: Vec<(String, String)>,
}

impl<'a> Shell<'a> {
    fn new(dir: &'a Path, srv: &Server) -> Self {
        Shell {
            dir,
            env: vec![
                ("MDMD_SERVER".into(), srv.base.clone()),
                ("MDMD_API_KEY".into(), API_KEY.into()),
                ("MDMD_TRUST_CA".into(), srv.certs_dir().join("ca.pem").display().to_string()),
            ],
        }
    }

    /// Run `lines` (placeholders replaced by `fill`) with bash; every command
    /// must succeed. Returns (stdout, stderr).
    fn run(&self, lines: &[String], fill: &[(&str, &str)]) -> (String, String) {
        let bin = Path::new(env!("CARGO_BIN_EXE_mdmd")).parent().unwrap().to_owned();
        let mut script = String::from(
            "set -euo pipefail\n\
             touch .out\n\
             mdmd() { command mdmd \"$@\" | tee -a .out; }\n\
             last() { grep -o \"\\\"$1\\\": *\\\"[^\\\"]*\\\"\" .out | tail -1 | sed 's/.*: *\"\\(.*\\)\"/\\1/'; }\n\n\
             trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
             serve_here() {\n\
               command mdmd serve \"$@\" > serve.out 2> serve.err &\n\
               for _ in $(seq 1 600); do grep -q 'mdmd listening on' serve.out && break; kill -0 $! 2>/dev/null || break; sleep 0.1; done\n\
               grep -q 'mdmd listening on' serve.out || { cat serve.err >&2; return 1; }\n\
               export MDMD_SERVER=\"$(grep -o 'mdmd listening on [^ ]*' serve.out | head -1 | cut -d' ' -f4)\"\n\
               export MDMD_TRUST_CA=\"$PWD/certs/ca.pem\" MDMD_SERVE_PID=$!\n\
               if [ -f data/api-key ]; then export MDMD_API_KEY=\"$(cat data/api-key)\"; fi\n\
             }\n",
        );
        for l in lines {
            let mut l = l.clone();
            for (k, v) in fill {
                l = l.replace(k, v);
            }
            script.push_str(&l);
            script.push('\n');
        }
        // Its own process group, output to files: whatever it leaves in the
        // background is killed with it, and nothing holds a pipe open.
        use std::os::unix::process::CommandExt as _;
        let (out_file, err_file) = (self.dir.join(".script.out"), self.dir.join(".script.err"));
        let mut cmd = std::process::Command::new("bash");
        cmd.args(["-c", &script])
            .current_dir(self.dir)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_file).unwrap())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("MDMD_LOG", "error")
            .env("MDMD_OUTPUT", "json");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bash");
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::process::Command::new("kill")
            .args(["-9", "--", &format!("-{}", child.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = child.wait();
        let (stdout, stderr) = (
            std::fs::read_to_string(&out_file).unwrap_or_default(),
            std::fs::read_to_string(&err_file).unwrap_or_default(),
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "the documented commands failed ({}):\n{script}\n--- stderr:\n{stderr}\n--- stdout:\n{stdout}",
            status.map_or("timed out after 120 s".to_owned(), |s| s.to_string())
        );
        (stdout, stderr)
    }

    /// Run the `n`th sh block under `heading` of `file`.
    fn block(&self, file: &str, heading: &str, n: usize, fill: &[(&str, &str)]) -> (String, String) {
        self.run(&sh_block(file, heading, n), fill)
    }
}

/// Run the docs once, in the redb pass (see the module doc).
fn second_pass() -> bool {
    if common::on_postgres() {
        eprintln!("docs run in the redb pass of the suite");
    }
    common::on_postgres()
}

/// The active, enrolled devices of a demo server (bounded wait for `n`).
async fn demo_devices(srv: &Server, n: usize) -> Vec<String> {
    let admin = srv.admin();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = admin.get("/v1/devices?limit=100").await.expect("devices");
        let ids: Vec<String> = v["devices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["active"] == true && d["push_token_present"] == true)
                    .filter_map(|d| d["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() >= n {
            return ids;
        }
        assert!(Instant::now() < deadline, "{} of {n} demo devices enrolled within 60 s", ids.len());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Wait (bounded) until every delivery of command `uuid` is final; returns them.
async fn finished(srv: &Server, uuid: &str) -> Vec<Value> {
    let admin = srv.admin();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = admin.get(&format!("/v1/commands/{uuid}")).await.expect("command");
        let d = v["deliveries"].as_array().cloned().unwrap_or_default();
        if !d.is_empty() && d.iter().all(|d| d["status"] != "Pending" && d["status"] != "NotNow") {
            return d;
        }
        assert!(Instant::now() < deadline, "command {uuid} not finished within 30 s: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The README's first screen: `make run` and `make test` are real targets
/// (their recipes checked with `make -n`: running them here would build a
/// release and run this suite inside itself; CI runs `make test` for real),
/// then the demo block as written — `make demo`'s paths, its devices answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_screen_runs() {
    if second_pass() {
        return;
    }
    for line in sh_block("README.md", "# mdmd", 0) {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let target = line.strip_prefix("make ").expect("make lines");
        let out = std::process::Command::new("make")
            .args(["-n", target])
            .current_dir(common::repo_file(""))
            .output()
            .expect("make");
        assert!(out.status.success(), "make -n {target}: {}", String::from_utf8_lossy(&out.stderr));
        let makefile = std::fs::read_to_string(common::repo_file("Makefile")).unwrap();
        assert!(makefile.lines().any(|l| l.starts_with(&format!("{target}:"))), "no target {target}");
    }

    let srv = Server::start_with(&["--demo", "2"]);
    let devices = demo_devices(&srv, 2).await;
    let dir = tempfile::tempdir().unwrap();
    // `make demo`'s layout: demo-certs, demo-data/api-key, target/release/mdmd.
    std::os::unix::fs::symlink(srv.certs_dir(), dir.path().join("demo-certs")).unwrap();
    std::fs::create_dir(dir.path().join("demo-data")).unwrap();
    std::fs::write(dir.path().join("demo-data/api-key"), API_KEY).unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mdmd"), dir.path().join("target/release/mdmd")).unwrap();
    let mut sh = Shell::new(dir.path(), &srv);
    sh.env.retain(|(k, _)| k == "MDMD_SERVER");
    let (out, _) = sh.block("README.md", "# mdmd", 1, &[("<UDID>", &devices[0]), ("<UUID>", "\"$(last command_uuid)\"")]);
    assert!(out.contains(&devices[1]), "mdmd devices lists the demo devices: {out}");
    let uuid = out
        .split("\"command_uuid\"")
        .nth(1)
        .and_then(|s| s.split('"').nth(1))
        .expect("a command_uuid printed")
        .to_owned();
    let d = finished(&srv, &uuid).await;
    assert_eq!(d[0]["status"], "Acknowledged", "{d:?}");
}

const WIFI: &str = r#"<dict><key>PayloadType</key><string>com.apple.wifi.managed</string>
<key>PayloadVersion</key><integer>1</integer><key>PayloadIdentifier</key><string>com.example.wifi.w</string>
<key>PayloadUUID</key><string>0F1E0000-0000-4000-8000-00000000D0C5</string>
<key>SSID_STR</key><string>Example</string><key>EncryptionType</key><string>WPA2</string>
<key>Password</key><string>correct horse</string><key>AutoJoin</key><true/></dict>"#;

/// README "Manage", "Profiles", "Groups and blueprints", docs/groups.md and
/// docs/access-tokens.md, against `serve --demo`: every command succeeds
/// and the commands it queued are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managing_a_demo_fleet_runs() {
    if second_pass() {
        return;
    }
    let srv = Server::start_with(&["--demo", "3"]);
    let devices = demo_devices(&srv, 3).await;
    let (d0, d1, d2) = (devices[0].as_str(), devices[1].as_str(), devices[2].as_str());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // The files the commands name.
    std::fs::write(p.join("wifi.mobileconfig"), common::template("com.example.wifi", WIFI)).unwrap();
    std::fs::write(p.join("appconfig.json"), r#"{"server": "https://app.example.com", "device": "$UDID"}"#).unwrap();
    std::fs::write(p.join("cfg.json"), r#"{"mode": "kiosk"}"#).unwrap();
    std::fs::write(
        p.join("pp.plist"),
        r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>UUID</key><string>6F1A0000-0000-4000-8000-000000000001</string><key>Name</key><string>Example</string></dict></plist>"#,
    )
    .unwrap();
    common::sign_with_throwaway(p, "iPhone Distribution: Example", "pp.plist", "app.mobileprovision");
    // A certificate that is no device's current identity (a phase-1 identity), to revoke.
    let certs = srv.admin().get("/v1/certificates?limit=1000").await.unwrap();
    let serial = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purpose"] == "profile-service")
        .and_then(|c| c["serial"].as_str())
        .expect("a profile-service identity")
        .to_owned();
    let sh = Shell::new(p, &srv);
    let uuid = ("<COMMAND-UUID>", "\"$(last command_uuid)\"");

    sh.block("README.md", "## Manage", 0, &[("<UDID>", d0), uuid, ("<SERIAL>", &serial)]);
    let (out, _) = sh.block(
        "README.md",
        "## Manage",
        1,
        &[("mdmd cmd erase <UDID>", &format!("mdmd cmd erase {d2}")), ("<UDID>", d0)],
    );
    // Every command it queued is answered (the demo devices are woken by push).
    let queued: Vec<&str> = out
        .split("\"command_uuid\"")
        .skip(1)
        .filter_map(|s| s.split('"').nth(1))
        .collect();
    assert!(queued.len() >= 10, "{out}");
    for u in queued {
        let d = finished(&srv, u).await;
        assert!(d.iter().all(|d| d["status"] != "CommandFormatError"), "{u}: {d:?}");
    }
    let revoked = srv.admin().get(&format!("/v1/certificates/{serial}")).await.unwrap();
    assert!(revoked.to_string().contains("revoked"), "{revoked}");

    sh.block("README.md", "## Profiles", 0, &[("UDID1", d0), ("UDID2", d1), ("<UDID>", d0)]);
    assert!(srv.admin().get("/v1/profiles/com.example.wifi").await.is_err(), "the last line removed the template");

    sh.block("README.md", "## Groups and blueprints", 0, &[]);
    let st = srv.admin().get("/v1/blueprints/sales/status").await.unwrap();
    assert!(st.is_object(), "{st}");
    // docs/groups.md names a declaration set: give it one.
    sh.run(
        &[
            "echo '{\"Type\":\"com.apple.configuration.passcode.settings\",\"Identifier\":\"pc\",\"Payload\":{}}' > pc.json".into(),
            "mdmd ddm put pc.json && mdmd ddm set-add staff pc".into(),
        ],
        &[],
    );
    sh.block(
        "docs/groups.md",
        "# Groups and blueprints",
        0,
        &[("F2LXK0ABCD12", d1), ("00008101-001A2B3C4D5E6F70", d2)],
    );
    let pilot = srv.admin().get("/v1/groups/pilot").await.unwrap();
    assert!(pilot.to_string().contains(d1), "{pilot}");

    // A shared access token, then the Settings command that carries it.
    sh.run(&["mdmd access-tokens generate".into()], &[]);
    let (out, _) = sh.block(
        "docs/access-tokens.md",
        "## Shared access tokens (PingID and others)",
        0,
        &[("UDID1", d0), ("UDID2", d1)],
    );
    let u = out.split("\"command_uuid\"").nth(1).and_then(|s| s.split('"').nth(1)).expect("queued").to_owned();
    let d = finished(&srv, &u).await;
    assert!(d.iter().all(|d| d["status"] == "Acknowledged"), "{d:?}");
}

/// README "Declarative management" and docs/ddm.md: declarations, the
/// activation, a set, an assignment, status, a search and an OS requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ddm_blocks_run() {
    if second_pass() {
        return;
    }
    let srv = Server::start();
    let d = srv.enrolled().await;
    let dir = tempfile::tempdir().unwrap();
    let sh = Shell::new(dir.path(), &srv);
    let (_, err) = sh.block("README.md", "## Declarative management", 0, &[("UDID", &d.udid)]);
    assert!(!err.contains("warning"), "a future deadline gives no warning: {err}");
    let set = srv.admin().get("/v1/sets/staff").await.unwrap();
    assert!(set["declarations"].to_string().contains("\"act\""), "{set}");
    assert_eq!(set["missing_references"], serde_json::json!([]), "{set}");

    // A deadline already past is taken, with a warning.
    let (_, err) = sh.run(&["mdmd ddm update staff --version 17.2 --deadline 2020-01-01T00:00:00".to_owned()], &[]);
    assert!(err.contains("warning: the deadline 2020-01-01T00:00:00 has already passed"), "{err}");

    // docs/ddm.md, block by block (its first block ends by deleting pc: put it back for the next).
    let fill = [("UDID…", d.udid.as_str()), ("UDID", d.udid.as_str())];
    sh.block("docs/ddm.md", "## Declarations", 0, &fill);
    assert!(srv.admin().get("/v1/declarations/pc").await.is_err(), "ddm rm pc deleted it");
    sh.run(&["mdmd ddm put pc.json".into()], &[]);
    sh.block("docs/ddm.md", "## Sets and assignments", 0, &fill);
    sh.block("docs/ddm.md", "## The status channel", 0, &fill);
    let (out, _) = sh.block("docs/ddm.md", "## Software updates", 0, &fill);
    assert!(out.contains("17.2"), "{out}");
}

/// README "Organisation CAs and derived credentials" and
/// docs/derived-credentials.md: the example CAs are Debian's `scepserver`
/// and an NDES admin-page stand-in on 127.0.0.1; the PKCS#12 files come from
/// a PIV-D test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisation_cas_and_derived_credentials_run() {
    if second_pass() {
        return;
    }
    use common::derived::{ndes_admin, scepserver, TestCa, CHALLENGE};
    let srv = Server::start();
    let d = srv.enrolled().await;
    let scep = scepserver().await;
    let (challenge_url, _, _) = ndes_admin(CHALLENGE).await;
    let dir = tempfile::tempdir().unwrap();
    let sh = Shell::new(dir.path(), &srv);
    sh.block(
        "README.md",
        "## Organisation CAs and derived credentials",
        0,
        &[
            ("https://ndes.corp.example/certsrv/mscep/mscep.dll", &scep.url),
            ("'https://CORP%5Cndes-svc:PASSWORD@ndes.corp.example/certsrv/mscep_admin/'", &challenge_url),
            ("http://ca.lab.example:8080/scep", &scep.url),
            ("S3CRET", CHALLENGE),
        ],
    );
    let cas = srv.admin().get("/v1/cas").await.unwrap().to_string();
    assert!(cas.contains("\"lab\"") && !cas.contains("\"corp\""), "lab added, corp added then removed: {cas}");
    sh.block(
        "docs/derived-credentials.md",
        "## An organisation CA behind mdmd's SCEP proxy",
        0,
        &[("http://ca.corp.example:8080/scep", &scep.url), ("S3CRET", CHALLENGE)],
    );

    let piv = TestCa::new("PIV-D Test CA");
    let (auth, _) = piv.issue("Alice Auth", 86_400 * 30, None, None, "PIN");
    let (sign, sign_cert) = piv.issue("Alice Signing", 86_400 * 30, None, None, "PIN");
    std::fs::write(dir.path().join("alice.p12"), auth).unwrap();
    std::fs::write(dir.path().join("alice-sign.p12"), sign).unwrap();
    let serial = common::serial_hex(&sign_cert);
    let (out, _) = sh.block(
        "README.md",
        "## Organisation CAs and derived credentials",
        1,
        &[
            ("--device UDID", &format!("--device {}", d.udid)),
            ("<SERIAL>", &serial),
            ("<ID>", "\"$(grep -o '\"dc_[^\"]*\"' .out | head -1 | tr -d '\"')\""),
        ],
    );
    assert!(out.contains("keyCompromise") || out.contains("revoked"), "{out}");
    let left = srv.admin().get("/v1/derived-credentials").await.unwrap();
    assert_eq!(left["derived_credentials"].as_array().map(Vec::len), Some(0), "one revoked, one removed: {left}");
    assert_eq!(left["ended"].as_array().map(Vec::len), Some(1), "the revoked one is kept as ended: {left}");
}

/// `lines` with each `mdmd serve …` command (continuation lines joined)
/// turned into `serve_here …`: in the background, on a free loopback port,
/// the shell then pointed at it (`MDMD_SERVER`, `MDMD_TRUST_CA`, the API key).
fn serving(lines: Vec<String>) -> Vec<String> {
    let mut joined: Vec<String> = Vec::new();
    let mut cont = false;
    for l in lines {
        if cont {
            let last = joined.last_mut().expect("a line to continue");
            last.truncate(last.trim_end().trim_end_matches('\\').len());
            last.push(' ');
            last.push_str(l.trim_start());
        } else {
            joined.push(l.clone());
        }
        cont = l.trim_end().ends_with('\\');
    }
    joined
        .into_iter()
        .map(|l| {
            let Some(rest) = l.trim_start().strip_prefix("mdmd serve") else { return l };
            let code = rest.split(" #").next().unwrap_or("").trim_end();
            let code = code.strip_suffix('&').unwrap_or(code).trim_end();
            let mut words: Vec<String> = code.split(' ').map(str::to_owned).collect();
            match words.iter().position(|w| w == "--listen") {
                Some(i) if i + 1 < words.len() => words[i + 1] = "127.0.0.1:0".into(),
                _ => words.extend(["--listen".into(), "127.0.0.1:0".into()]),
            }
            format!("serve_here{}", words.join(" "))
        })
        .collect()
}

impl<'a> Shell<'a> {
    /// A shell with no server yet (a block that starts its own).
    fn bare(dir: &'a Path) -> Self {
        Shell { dir, env: Vec::new() }
    }
}

/// README "Enroll a device": serve with an enrollment user, an invitation
/// with its QR code, the signed enrollment profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_and_enrolling_run() {
    if second_pass() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sh = Shell::bare(dir.path());
    let (out, _) = sh.run(&serving(sh_block("README.md", "## Enroll a device", 0)), &[]);
    assert!(out.contains("https://mdm.example.com:8443/"), "the invitation is for the public URL: {out}");
    let png = std::fs::read(dir.path().join("invite.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let profile = std::fs::read(dir.path().join("enroll.mobileconfig")).unwrap();
    let cms = openssl::pkcs7::Pkcs7::from_der(&profile).expect("a CMS-signed profile");
    assert!(cms.signed().is_some());
}

/// README "Push (APNs)": the request for Apple's portal, then (playing the
/// portal: a certificate for the request's key, from a test CA) setting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_certificate_steps_run() {
    if second_pass() {
        return;
    }
    use base64::Engine as _;
    use common::push::TestCa;
    let srv = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let vendor = TestCa::new("MDM Vendor: Example");
    std::fs::write(dir.path().join("vendor.pem"), vendor.cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.path().join("vendor.key"), vendor.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let lines = sh_block("README.md", "## Push (APNs)", 0);
    let at = lines.iter().position(|l| l.starts_with("# 2.")).expect("step 2");
    let sh = Shell::new(dir.path(), &srv);
    sh.run(&lines[..at], &[]);
    // Apple's portal.
    let b64 = std::fs::read_to_string(dir.path().join("push/push-request.b64")).unwrap();
    let req: plist::Dictionary =
        plist::from_bytes(&base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap()).unwrap();
    let csr = base64::engine::general_purpose::STANDARD
        .decode(req["PushCertRequestCSR"].as_string().unwrap())
        .unwrap();
    let topic = common::push::new_topic();
    let cert = TestCa::new("Test Apple Push CA").sign_push_csr(&csr, &topic, 365);
    std::fs::write(dir.path().join("MDM_Certificate.pem"), cert.to_pem().unwrap()).unwrap();
    let (out, _) = sh.run(&lines[at..], &[]);
    assert!(out.contains(&topic), "push-cert show names the topic: {out}");
    assert_eq!(srv.admin().get("/v1/info").await.unwrap()["topic"], topic.as_str());
}

/// README "Several instances on PostgreSQL": `createdb`, `db copy` of an
/// installation with an enrolled device, and an instance behind a
/// TLS-terminating balancer (`--plain-http`) serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_block_runs() {
    if second_pass() {
        return;
    }
    let name = format!("mdmd_docs_{}", uuid::Uuid::new_v4().simple());
    let Some((base, db)) = common::pg::TestDb::adopt(&name) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shell::bare(dir.path());
    // An existing installation in ./data and ./certs, with a device.
    let (out, _) = sh.run(
        &[
            "serve_here --enroll-user sim:sim --listen 127.0.0.1:0 --ddm-enable false --inventory-interval 0".into(),
            "mdmd sim enroll -n 1 --user sim:sim".into(),
            "mdmd devices".into(),
            "kill %1 && wait".into(),
        ],
        &[],
    );
    let udid = out
        .split("\"udid\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("an enrolled device")
        .to_owned();
    sh.env.push(("KEY".into(), std::fs::read_to_string(dir.path().join("data/api-key")).unwrap().trim().to_owned()));
    let mut lines = serving(sh_block("README.md", "## Several instances on PostgreSQL", 0));
    lines.push("mdmd devices".into());
    let (out, _) = sh.run(
        &lines,
        &[
            ("createdb mdmd", &format!("createdb --maintenance-db='{base}' {name}")),
            ("postgres://mdmd:PASSWORD@db.example.com/mdmd?sslmode=require", &db.url),
        ],
    );
    assert!(out.contains(&udid), "the copied device is served from PostgreSQL: {out}");
    drop(db);
}

/// README "Apps" and docs/apps.md, against the stand-in of Apple's Apps and
/// Books API (a content token of its own, Pages with licences) and an .ipa
/// built here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_blocks_run() {
    if second_pass() {
        return;
    }
    use mdmd::sim::vpp_api::VppStandIn;
    let vpp = VppStandIn::start("Example Org").await.expect("stand-in");
    vpp.add_app("361309726", 5);
    vpp.set_app_meta("361309726", "Pages", "com.apple.Pages", "13.1");
    let url = vpp.url();
    let args = ["--apps-and-books-url", url.as_str(), "--apps-sync-interval", "3600"];
    for (blocks, bundle) in [
        (vec![("README.md", "## Apps")], "com.example.field"),
        (
            vec![
                ("docs/apps.md", "## Apps and Books: the content token"),
                ("docs/apps.md", "## The catalog"),
                ("docs/apps.md", "## Install and remove"),
            ],
            "com.example.field",
        ),
    ] {
        let srv = Server::start_with(&args);
        let d = srv.enrolled().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sToken_for_Example.vpptoken"), vpp.token_file()).unwrap();
        std::fs::write(dir.path().join("Field.ipa"), mdmd::protocol::ipa::build_ipa(bundle, "1.0", "Field")).unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"server": "https://field.example.com", "device": "$UDID"}"#).unwrap();
        let sh = Shell::new(dir.path(), &srv);
        for (file, heading) in blocks {
            sh.block(
                file,
                heading,
                0,
                &[("~/Downloads/", ""), ("DEVICE-UDID …", &d.udid), ("DEVICE-UDID", &d.udid)],
            );
        }
        let apps = srv.admin().get("/v1/apps").await.unwrap().to_string();
        assert!(apps.contains("com.apple.Pages"), "{apps}");
        let mine = srv.admin().get(&format!("/v1/devices/{}/apps", d.udid)).await.unwrap();
        assert!(mine.to_string().contains("com.apple.Pages"), "{mine}");
    }
}

/// README "Try it without an iPhone": a server, simulated devices enrolling,
/// two load runs (bounded here: tens of devices, not thousands), and — with
/// the directory the comment names (OpenLDAP's slapd) — account-driven
/// enrollment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trying_it_without_an_iphone_runs() {
    if second_pass() {
        return;
    }
    let Some(ldap) = common::ldap::Slapd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bind-pw"), &ldap.bind_password).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path().join("bind-pw"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let directory = format!(
        "--ldap-url {} --ldap-ca {} --ldap-base-dn {} --ldap-bind-dn {} --ldap-bind-password-file bind-pw \
         --ldap-required-group cn=mdm-users,ou=groups,{} --account-driven byod,adde",
        ldap.ldaps_url,
        ldap.ca_pem.display(),
        ldap.base_dn,
        ldap.bind_dn,
        ldap.base_dn
    );
    let sh = Shell::bare(dir.path());
    let lines = serving(sh_block("README.md", "## Try it without an iPhone", 0));
    let (out, _) = sh.run(
        &lines,
        &[
            ("serve_here --enroll-user sim:sim", &format!("serve_here --enroll-user sim:sim {directory}")),
            ("-n 1000", "-n 40"),
            ("-n 300", "-n 20"),
            ("alice@example.com --user alice:PASSWORD", "alice@example.org --user alice:alice-pw"),
        ],
    );
    assert!(out.contains("User Enrollment"), "{out}");
}

/// docs/ade.md: connecting to ABM, syncing, ADE profiles and a device
/// waiting in Setup Assistant, against the stand-in of Apple's ADE API (the
/// token file made as ABM makes it, encrypted to the key mdmd printed); then
/// "Try it without Apple" as written, `mdmd sim abm` and `sim ade-iphone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ade_blocks_run() {
    if second_pass() {
        return;
    }
    use mdmd::sim::ade_api::AdeStandIn;
    const FILE: &str = "docs/ade.md";
    const CONNECT: &str = "## 1. Connect mdmd to ABM (once per ABM server, yearly for the token)";
    let abm = AdeStandIn::start("docs server").await.unwrap();
    let serial = "DOCS00000001";
    abm.add_device(serial, "iPhone 15");
    let srv = common::ade::start(&abm, &[]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let sh = Shell::new(p, &srv);
    sh.block(FILE, CONNECT, 0, &[]);
    // ABM: the server token, encrypted to the certificate uploaded there.
    let cert = openssl::x509::X509::from_pem(&std::fs::read(p.join("mdmd-ade.pem")).unwrap()).unwrap();
    let token = mdmd::sim::ade::seal_token_file(&abm.token, &cert).unwrap();
    std::fs::write(p.join("mdmd_Token_2026-12-04.p7m"), token).unwrap();
    sh.block(FILE, CONNECT, 1, &[("~/Downloads/", "")]);
    let (out, _) = sh.block(FILE, "## 2. Assign devices to mdmd in ABM", 0, &[]);
    assert!(out.contains(serial), "{out}");
    // The profile files: the doc's own JSON, and one for iPads.
    let corporate = blocks()
        .into_iter()
        .find(|b| b.file == FILE && b.heading == "## 3. Define the ADE profile" && b.lang == "json")
        .expect("the profile JSON")
        .body;
    std::fs::write(p.join("corporate.json"), corporate).unwrap();
    std::fs::write(p.join("ipads.json"), r#"{"profile_name": "iPads", "is_supervised": true}"#).unwrap();
    let (out, _) = sh.block(FILE, "## 3. Define the ADE profile", 0, &[]);
    assert!(out.contains("Example Corp"), "{out}");
    // A device ABM assigns now gets the default profile at the next sync.
    let serial = "DOCS00000002";
    abm.add_device(serial, "iPhone 15");
    sh.run(&["mdmd ade sync".into()], &[]);
    // A blueprint gives every device a profile: Setup Assistant waits for it.
    let clip = r#"<dict><key>PayloadType</key><string>com.apple.webClip.managed</string>
<key>PayloadVersion</key><integer>1</integer><key>PayloadIdentifier</key><string>com.example.docs-clip.c</string>
<key>PayloadUUID</key><string>D0C50000-0000-4000-8000-000000000003</string><key>URL</key><string>https://it.example.com</string>
<key>Label</key><string>IT</string></dict>"#;
    let admin = srv.admin();
    admin.post_bytes("/v1/profiles", common::template("com.example.docs-clip", clip)).await.unwrap();
    let (s, v) = admin
        .call(
            reqwest::Method::PUT,
            "/v1/blueprints/setup",
            Some(serde_json::json!({"groups": ["*"], "profiles": ["com.example.docs-clip"]})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    // It boots, enrolls and waits in Setup Assistant (it has not answered yet).
    let conf = mdmd::sim::ade::activation(&srv.client(), &abm.url(), serial).await.unwrap().expect("a profile assigned");
    let udid = mdmd::sim::random_udid();
    let phone = mdmd::sim::ade::first_boot(srv.client(), &conf, &udid, serial, None).await.unwrap();
    assert!(phone.awaiting_configuration);
    let (out, _) = sh.block(FILE, "## 5. Setup Assistant waits (`await_device_configured`)", 0, &[("UDID", &udid)]);
    assert!(out.contains("releasing"), "{out}");

    // "Try it without Apple", with its own server.
    let dir = tempfile::tempdir().unwrap();
    let sh = Shell::bare(dir.path());
    let (out, err) = sh.run(
        &serving(sh_block(FILE, "## Try it without Apple", 0)),
        &[
            (
                "# restart mdmd with --ade-url http://127.0.0.1:PORT (the URL printed), then:",
                "for _ in $(seq 1 100); do grep -q '\"ade_url\"' .out && break; sleep 0.1; done\n\
                 ABM_URL=\"$(last ade_url)\"; kill %1; wait %1 || true\n\
                 serve_here --enroll-user sim:sim --ade-url \"$ABM_URL\" --listen 127.0.0.1:0",
            ),
            ("http://127.0.0.1:PORT", "\"$ABM_URL\""),
        ],
    );
    assert!(err.contains("SIM000000001: Apple says enroll at"), "{err}");
    assert!(out.contains("DeviceConfigured"), "{out}");
}

/// Each `mdmd serve` of a block (after `serving`), run on its own with
/// `fill`: the server must start and, checking its way to the directory and
/// the identity provider at start, report nothing wrong with them in
/// `GET /v1/health`. Returns the health answers.
fn serve_each(dir: &Path, lines: Vec<String>, fill: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().filter(|l| l.starts_with("serve_here")).enumerate() {
        let run = tempfile::tempdir_in(dir).unwrap();
        for f in ["ldap-pw", "oidc-secret", "ldap-ca.pem"] {
            if dir.join(f).exists() {
                std::fs::copy(dir.join(f), run.path().join(f)).unwrap();
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(run.path().join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        let sh = Shell::bare(run.path());
        let check = "sleep 2; curl -sf --cacert \"$MDMD_TRUST_CA\" -H \"Authorization: Bearer $MDMD_API_KEY\" \
                     \"$MDMD_SERVER/v1/health\" > health.json"
            .to_owned();
        sh.run(&[line.clone(), check], fill);
        let h: Value = serde_json::from_slice(&std::fs::read(run.path().join("health.json")).unwrap()).unwrap();
        let warnings = h["warnings"].to_string().to_lowercase();
        assert!(
            !warnings.contains("ldap") && !warnings.contains("directory") && !warnings.contains("identity provider"),
            "serve {i}: {h}"
        );
        out.push(h);
    }
    out
}

/// docs/directory.md: Active Directory's and OpenLDAP's flags against
/// OpenLDAP's slapd (the hosts, DNs and files of the examples pointed at it;
/// AD's filter as written), OpenLDAP's with a sign-in through them; each
/// identity provider's flags against the certified OpenID provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_blocks_run() {
    if second_pass() {
        return;
    }
    let Some(ldap) = common::ldap::Slapd::start() else { return };
    let Some(idp) = common::oidc::Idp::start(&["https://mdm.example.com/auth/oidc/callback".to_owned()]) else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ldap-pw"), &ldap.bind_password).unwrap();
    std::fs::write(dir.path().join("oidc-secret"), &idp.client_secret).unwrap();
    let ca = ldap.ca_pem.display().to_string();
    const FILE: &str = "docs/directory.md";
    let base = ldap.base_dn.as_str();
    let group = format!("cn=mdm-users,ou=groups,{base}");
    // Active Directory's block.
    serve_each(
        dir.path(),
        serving(sh_block(FILE, "## LDAP (Active Directory, OpenLDAP)", 0)),
        &[
            ("ldaps://dc1.corp.example.com", &ldap.ldaps_url),
            ("corp-root.pem", &ca),
            ("'dc=corp,dc=example,dc=com'", base),
            ("'mdmd-svc@corp.example.com'", &ldap.bind_dn),
            ("/etc/mdmd/ldap-pw", "ldap-pw"),
            ("'CN=MDM Users,OU=Groups,DC=corp,DC=example,DC=com'", &group),
        ],
    );
    // OpenLDAP's, then a sign-in through it.
    let mut lines = serving(sh_block(FILE, "## LDAP (Active Directory, OpenLDAP)", 1));
    let fill = [
        ("ldap://ldap.example.com", ldap.url.as_str()),
        ("ldap-ca.pem", ca.as_str()),
        ("'dc=example,dc=com'", base),
        ("'cn=mdmd,ou=services,dc=example,dc=com'", ldap.bind_dn.as_str()),
        ("/etc/mdmd/ldap-pw", "ldap-pw"),
        ("'cn=mdm-users,ou=groups,dc=example,dc=com'", group.as_str()),
    ];
    serve_each(dir.path(), lines.clone(), &fill);
    lines.push(
        "curl -sf --cacert \"$MDMD_TRUST_CA\" -u alice:alice-pw \"$MDMD_SERVER/mdm/enroll\" -o enroll.mobileconfig".into(),
    );
    lines.push("curl -s -o /dev/null -w '%{http_code}' --cacert \"$MDMD_TRUST_CA\" -u alice:wrong \"$MDMD_SERVER/mdm/enroll\" > wrong.txt || true".into());
    let run = tempfile::tempdir_in(dir.path()).unwrap();
    std::fs::copy(dir.path().join("ldap-pw"), run.path().join("ldap-pw")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(run.path().join("ldap-pw"), std::fs::Permissions::from_mode(0o600)).unwrap();
    Shell::bare(run.path()).run(&lines, &fill);
    let profile = std::fs::read(run.path().join("enroll.mobileconfig")).unwrap();
    assert!(openssl::pkcs7::Pkcs7::from_der(&profile).is_ok(), "alice signed in and got her profile");
    assert_eq!(std::fs::read_to_string(run.path().join("wrong.txt")).unwrap(), "401");

    // The identity providers' flags, each against the certified OpenID provider.
    serve_each(
        dir.path(),
        serving(sh_block(FILE, "## OpenID Connect (Entra ID, Okta, Keycloak)", 0)),
        &[
            ("https://login.microsoftonline.com/TENANT-ID/v2.0", &idp.issuer),
            ("https://example.okta.com", &idp.issuer),
            ("https://sso.example.com/realms/corp", &idp.issuer),
            ("APP-ID", &idp.client_id),
            ("--oidc-client-id mdmd", &format!("--oidc-client-id {}", idp.client_id)),
            ("/etc/mdmd/oidc-secret", "oidc-secret"),
        ],
    );
}

/// docs/performance.md's connect-request benchmark as written, bounded
/// (500 requests, not 20,000) and on free ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_commands_run() {
    if second_pass() {
        return;
    }
    let heading = blocks()
        .into_iter()
        .find(|b| b.file == "docs/performance.md" && b.lang == "sh" && b.heading.contains("`mdmd sim idle-bench`"))
        .expect("the benchmark block")
        .heading;
    let dir = tempfile::tempdir().unwrap();
    let bare = format!("127.0.0.1:{}", common::free_port());
    let (out, _) = Shell::bare(dir.path()).run(
        &serving(sh_block("docs/performance.md", &heading, 0)),
        &[
            ("127.0.0.1:18651", &bare),
            ("https://127.0.0.1:18650", "\"$MDMD_SERVER\""),
            ("-n 20000", "-n 500"),
            ("<mdmd pid>", "\"$MDMD_SERVE_PID\""),
        ],
    );
    assert!(out.contains("500"), "{out}");
}
