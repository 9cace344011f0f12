//! Test harness: runs the real `mdmd` binary on 127.0.0.1 with its own data
//! directory, and talks to it over real HTTP; and the helpers the test files
//! share (free ports, child processes, polling, certificate serials).
//!
//! Choosing the store, one way: `MDMD_TEST_STORE=postgres` runs every server
//! test on PostgreSQL (a fresh database per server, [`pg::TestDb`]); without
//! it they run on redb. `make test` runs the suite once each way. A test that
//! needs PostgreSQL whatever the switch (two instances on one database, the
//! database failing under a server, a copy into PostgreSQL) takes its
//! database from [`pg::TestDb::create`] too, which skips (saying so) without a
//! server, or fails with `MDMD_TEST_REQUIRE_POSTGRES=1`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod ade;
pub mod browser;
pub mod derived;
pub mod ldap;
pub mod oidc;
pub mod pg;
pub mod push;

use serde_json::Value;

pub const API_KEY: &str = "test-admin-key-0123456789";
pub const ENROLL_USER: (&str, &str) = ("tester", "enroll-pw");

/// RSA keys shared by the simulated devices of a test process (keygen is slow;
/// every device still gets its own certificate from SCEP).
pub fn pool_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static KEYS: std::sync::OnceLock<Vec<openssl::pkey::PKey<openssl::pkey::Private>>> = std::sync::OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let keys = KEYS.get_or_init(|| mdmd::sim::load::key_pool(4).expect("keys"));
    keys[NEXT.fetch_add(1, Ordering::Relaxed) % keys.len()].clone()
}

pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub base: String,
    pub extra: Vec<String>,
    /// With `MDMD_TEST_STORE=postgres`, the database this server uses.
    _db: Option<std::sync::Arc<pg::TestDb>>,
    /// Debug logs as JSON lines go here instead of the test's stderr (`start_logged`).
    pub log: Option<PathBuf>,
}

/// Do the server tests run on PostgreSQL (`MDMD_TEST_STORE=postgres`)?
pub fn on_postgres() -> bool {
    std::env::var("MDMD_TEST_STORE").as_deref() == Ok("postgres")
}

/// `MDMD_TEST_STORE=postgres` runs every server test on PostgreSQL (a fresh
/// database each) instead of redb.
fn store_args(extra: &[String]) -> (Vec<String>, Option<std::sync::Arc<pg::TestDb>>) {
    let mut extra = extra.to_vec();
    if !on_postgres() || extra.iter().any(|a| a == "--database-url") {
        return (extra, None);
    }
    let db = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(pg::TestDb::create())
    })
    .join()
    .expect("create database")
    .expect("MDMD_TEST_STORE=postgres needs a PostgreSQL server");
    extra.extend(["--database-url".to_owned(), db.url.clone()]);
    (extra, Some(std::sync::Arc::new(db)))
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(extra, false)
    }

    /// A server whose debug logs (JSON lines) go to a file: `log_text()`.
    pub fn start_logged(extra: &[&str]) -> Self {
        Self::start_inner(extra, true)
    }

    fn start_inner(extra: &[&str], logged: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (extra, db) = store_args(&extra.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let log = logged.then(|| dir.path().join("mdmd.log"));
        let mut s = Server {
            child: None,
            dir,
            addr: "127.0.0.1:0".into(),
            base: String::new(),
            extra,
            _db: db,
            log,
        };
        s.spawn();
        s
    }

    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
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
            .arg("--enroll-user")
            .arg(format!("{}:{}", ENROLL_USER.0, ENROLL_USER.1))
            .args(if self.extra.iter().any(|a| a == "--inventory-interval") {
                &[][..]
            } else {
                // Tests count the commands a device gets: no automatic inventory unless asked for.
                &["--inventory-interval", "0"][..]
            })
            .args(if self.extra.iter().any(|a| a == "--ddm-enable") {
                &[][..]
            } else {
                // Nor a DeclarativeManagement command after enrollment unless asked for.
                &["--ddm-enable", "false"][..]
            })
            .args(&self.extra)
            .stdout(Stdio::piped());
        match &self.log {
            Some(p) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(p).expect("log file");
                cmd.env("MDMD_LOG", "debug").env("MDMD_LOG_FORMAT", "json").stderr(f);
            }
            None => {
                cmd.env("MDMD_LOG", std::env::var("MDMD_LOG").unwrap_or_else(|_| "error".into()))
                    .stderr(Stdio::inherit());
            }
        }
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

    /// Another instance with the same flags (e.g. the same `--database-url`)
    /// and a copy of this one's certs dir, as a second machine behind a balancer.
    pub fn second(&self) -> Server {
        let extra: Vec<String> = self.extra.clone();
        self.second_with(&extra.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `second` with other flags.
    pub fn second_with(&self, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let to = dir.path().join("certs");
        std::fs::create_dir_all(&to).expect("certs dir");
        for e in std::fs::read_dir(self.certs_dir()).expect("certs dir").flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy certs");
            }
        }
        let mut s = Server {
            child: None,
            dir,
            addr: "127.0.0.1:0".into(),
            base: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _db: self._db.clone(),
            log: None,
        };
        s.spawn();
        s
    }

    /// The PostgreSQL database this server stores in (`--database-url`), if any.
    pub fn database_url(&self) -> Option<&str> {
        let i = self.extra.iter().position(|a| a == "--database-url")?;
        self.extra.get(i + 1).map(String::as_str)
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

    /// An HTTPS client that trusts the server's CA (as an admin would after `mdmd ca show`).
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(self.certs_dir().join("ca.pem")).expect("ca.pem");
        mdmd::sim::http_client_trusting(Some(&pem)).expect("client")
    }

    pub fn admin(&self) -> mdmd::sim::load::Admin {
        mdmd::sim::load::Admin::new(&self.base, API_KEY, self.client())
    }

    pub async fn topic(&self) -> String {
        self.admin().get("/v1/info").await.expect("info")["topic"]
            .as_str()
            .expect("topic")
            .to_owned()
    }

    pub async fn profile(&self) -> Vec<u8> {
        mdmd::sim::download_profile(&self.client(), &format!("{}/mdm/enroll", self.base), Some(ENROLL_USER))
            .await
            .expect("profile")
    }

    /// A simulated iPhone that has installed the enrollment profile and has its
    /// SCEP identity (call `enroll()` for Authenticate + TokenUpdate).
    pub async fn device(&self) -> mdmd::sim::SimDevice {
        let der = self.profile().await;
        mdmd::sim::SimDevice::from_profile(self.client(), &der, Some(pool_key()))
            .await
            .expect("SCEP enrollment")
    }
}

impl Server {
    /// A simulated iPhone that has enrolled (Authenticate + TokenUpdate).
    pub async fn enrolled(&self) -> mdmd::sim::SimDevice {
        let d = self.device().await;
        d.enroll().await.expect("Authenticate + TokenUpdate");
        d
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn enqueue(admin: &mdmd::sim::load::Admin, targets: &[&str], command: Value) -> String {
    let v = admin
        .post("/v1/commands", serde_json::json!({"targets": targets, "command": command}))
        .await
        .expect("enqueue");
    v["command_uuid"].as_str().expect("uuid").to_owned()
}

impl Server {
    /// Run an admin subcommand of the real binary against this server;
    /// returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_mdmd"))
            .args(args)
            .arg("--server")
            .arg(&self.base)
            .arg("--api-key")
            .arg(API_KEY)
            .arg("--trust-ca")
            .arg(self.certs_dir().join("ca.pem"))
            .env("MDMD_LOG", "error")
            .output()
            .expect("run mdmd");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// An API account with this role (`mdmd accounts add`): its secret.
    pub fn account(&self, name: &str, role: &str) -> String {
        let v = self.cli_json(&["accounts", "add", name, "--role", role]);
        assert_eq!(v["role"], role, "{v}");
        v["secret"].as_str().expect("secret").to_owned()
    }

    /// `cli` whose stdout is JSON; panics with stderr on failure.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let (ok, out, err) = self.cli(args);
        assert!(ok, "mdmd {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("mdmd {args:?}: not JSON ({e}): {out}"))
    }
}

/// The path of a file shipped in the repository.
pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Run the `openssl` CLI in `dir`; panics with its stderr on failure.
pub fn openssl(args: &[&str], dir: &std::path::Path) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl CLI");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Sign `input` (attached, DER) with a throwaway self-signed identity named
/// `cn`, as Apple Configurator or Apple's provisioning service would: `out`.
pub fn sign_with_throwaway(dir: &std::path::Path, cn: &str, input: &str, out: &str) {
    let subj = format!("/CN={cn}");
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "tk.pem", "-out", "tc.pem", "-subj", &subj, "-days", "1",
        ],
        dir,
    );
    openssl(
        &[
            "smime",
            "-sign",
            "-nodetach",
            "-binary",
            "-outform",
            "der",
            "-signer",
            "tc.pem",
            "-inkey",
            "tk.pem",
            "-in",
            input,
            "-out",
            out,
        ],
        dir,
    );
}

/// A `.mobileconfig` template with these payloads (XML) and a fresh top-level UUID.
pub fn template(identifier: &str, payloads: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>{identifier}</string><key>PayloadUUID</key><string>{}</string>
<key>PayloadDisplayName</key><string>{identifier}</string>
<key>PayloadContent</key><array>{payloads}</array></dict></plist>"#,
        uuid::Uuid::new_v4().to_string().to_uppercase()
    )
    .into_bytes()
}

/// One profile's entry in `GET /v1/devices/{id}/profiles` (Null if absent).
pub async fn device_profile(srv: &Server, id: &str, identifier: &str) -> Value {
    let v = srv.admin().get(&format!("/v1/devices/{id}/profiles")).await.expect("profiles");
    v["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .find(|p| p["identifier"] == identifier)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Run the `mdmd` binary with exactly these arguments (no server implied);
/// returns (success, stdout, stderr).
pub fn mdmd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mdmd"))
        .args(args)
        .env("MDMD_LOG", "error")
        .output()
        .expect("run mdmd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback port nothing listened on a moment ago (for a stand-in server
/// started later, or an address where nothing answers).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A child process (a stand-in server for one test) killed and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A certificate's serial number in hex, as the admin API shows it.
pub fn serial_hex(cert: &openssl::x509::X509Ref) -> String {
    cert.serial_number().to_bn().expect("serial").to_hex_str().expect("hex").to_string()
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Poll `f` every 100 ms until it is true or `within` has passed: whether it came true.
pub async fn wait_until<F: std::future::Future<Output = bool>>(within: Duration, mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Poll with the device until a DeclarativeManagement command comes (10 s at most).
pub async fn wait_for_sync(d: &mut mdmd::sim::SimDevice) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if d.session().await.unwrap().iter().any(|h| h.request_type == "DeclarativeManagement") {
            return;
        }
        assert!(Instant::now() < deadline, "no DeclarativeManagement command came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sign in to the console as an account: (client without redirects, session cookie, a CSRF token of a page).
pub async fn console_login(srv: &Server, name: &str, secret: &str) -> (reqwest::Client, String, String) {
    let pem = std::fs::read(srv.certs_dir().join("ca.pem")).unwrap();
    let http = mdmd::sim::http_client_builder(Some(&pem))
        .unwrap()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let between = |h: &str, a: &str, b: &str| -> String {
        let i = h.find(a).expect("marker") + a.len();
        h[i..i + h[i..].find(b).expect("end")].to_owned()
    };
    let cookie = |r: &reqwest::Response, n: &str| -> String {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(&format!("{n}="))
                    .map(|v| v.split(';').next().unwrap_or("").to_owned())
            })
            .expect("cookie")
    };
    let form = http.get(format!("{}/ui/login", srv.base)).send().await.unwrap();
    let login = cookie(&form, "mdmd_ui_login");
    let html = form.text().await.unwrap();
    let token = between(&html, "name=\"csrf\" value=\"", "\"");
    let r = http
        .post(format!("{}/ui/login", srv.base))
        .header("cookie", format!("mdmd_ui_login={login}"))
        .form(&[("csrf", token.as_str()), ("name", name), ("secret", secret), ("next", "/ui/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = cookie(&r, "mdmd_ui");
    let html = http
        .get(format!("{}/ui/", srv.base))
        .header("cookie", format!("mdmd_ui={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = between(&html, "name=\"csrf\" value=\"", "\"");
    (http, session, csrf)
}

/// A console page's HTML, fetched with a session from [`console_login`].
pub async fn console_page(http: &reqwest::Client, srv: &Server, session: &str, path: &str) -> String {
    http.get(format!("{}{path}", srv.base))
        .header("cookie", format!("mdmd_ui={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A webhook receiver on loopback: (its URL, every event body it was sent).
pub async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    g.lock().unwrap().push(v);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (format!("http://{a}/hook"), got)
}
