//! Test harness: runs the real `mdmd` binary on 127.0.0.1 with its own data
//! directory, and talks to it over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const API_KEY: &str = "test-admin-key-0123456789";

pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub base: String,
    pub extra: Vec<String>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Server { child: None, dir, addr: "127.0.0.1:0".into(), base: String::new(), extra: extra.iter().map(|s| s.to_string()).collect() };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdmd"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--certs-dir")
            .arg(self.certs_dir())
            .arg("--api-key")
            .arg(API_KEY)
            .args(&self.extra)
            .env("MDMD_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn mdmd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            assert!(Instant::now() < deadline, "mdmd did not start");
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("mdmd listening on ") {
                        break u.trim().to_owned();
                    }
                }
                _ => panic!("mdmd exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.base = url.clone();
        self.addr = url.split("://").nth(1).unwrap_or_default().to_owned();
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Start again on the same address and data.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn admin(&self) -> mdmd::sim::load::Admin {
        mdmd::sim::load::Admin::new(&self.base, API_KEY).expect("admin client")
    }

    pub async fn topic(&self) -> String {
        self.admin().get("/v1/info").await.expect("info")["topic"].as_str().expect("topic").to_owned()
    }

    pub async fn device(&self) -> mdmd::sim::SimDevice {
        mdmd::sim::SimDevice::new(&self.base, &self.topic().await, mdmd::sim::http_client().expect("client"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn enqueue(admin: &mdmd::sim::load::Admin, targets: &[&str], command: Value) -> String {
    let v = admin.post("/v1/commands", serde_json::json!({"targets": targets, "command": command})).await.expect("enqueue");
    v["command_uuid"].as_str().expect("uuid").to_owned()
}
