//! Docs that run: command blocks from the README are run, as written,
//! against a real server (placeholders such as `UDID` filled in). A block
//! whose commands no longer work fails here before it misleads a reader.
//!
//! On redb, and on PostgreSQL with `MDMD_TEST_STORE=postgres` (tests/common).

mod common;

use common::{Server, API_KEY};

/// The first ```sh block after the heading `heading` in `file`.
fn sh_block(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(common::repo_file(file)).expect("read the doc");
    let after = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("{file}: no heading {heading:?}"))
        .1;
    let body = after.split_once("```sh\n").expect("a sh block").1;
    let body = body.split_once("```").expect("the block ends").0;
    body.lines().map(str::to_owned).collect()
}

/// Run `lines` with bash in a fresh directory, the CLI on PATH and pointed at
/// `srv`; every line must succeed. Returns stderr.
fn run(srv: &Server, lines: &[String], fill: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_mdmd")).parent().unwrap().to_owned();
    let mut script = String::from("set -euo pipefail\n");
    for l in lines {
        let mut l = l.clone();
        for (k, v) in fill {
            l = l.replace(k, v);
        }
        script.push_str(&l);
        script.push('\n');
    }
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("MDMD_SERVER", &srv.base)
        .env("MDMD_API_KEY", API_KEY)
        .env("MDMD_TRUST_CA", srv.certs_dir().join("ca.pem"))
        .env("MDMD_LOG", "error")
        .env("MDMD_OUTPUT", "json")
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the documented commands failed:\n{script}\n--- stderr:\n{err}\n--- stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// README "Declarative management": declarations, the activation, a set,
/// an assignment, status, a search and an OS requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_ddm_block_runs() {
    let srv = Server::start();
    let d = srv.enrolled().await;
    let lines = sh_block("README.md", "## Declarative management");
    assert!(lines.iter().any(|l| l.contains("ddm set-add")), "{lines:?}");
    let err = run(&srv, &lines, &[("UDID", &d.udid)]);
    assert!(!err.contains("warning"), "a future deadline gives no warning: {err}");
    let set = srv.admin().get("/v1/sets/staff").await.unwrap();
    assert!(set["declarations"].to_string().contains("\"act\""), "{set}");
    assert_eq!(set["missing_references"], serde_json::json!([]), "{set}");

    // A deadline already past is taken, with a warning.
    let err = run(
        &srv,
        &["mdmd ddm update staff --version 17.2 --deadline 2020-01-01T00:00:00".to_owned()],
        &[],
    );
    assert!(
        err.contains("warning: the deadline 2020-01-01T00:00:00 has already passed"),
        "{err}"
    );
}
