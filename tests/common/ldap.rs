//! A real OpenLDAP `slapd` (Debian's) for the directory tests, on loopback.
//!
//! [`Slapd::start`] makes a temporary directory with a `slapd.conf` (back_mdb,
//! schemas core/cosine/inetorgperson/nis, the ppolicy overlay), a test CA and
//! a server certificate for 127.0.0.1/localhost, loads
//! `fixtures/directory/tree.ldif` with `slapadd`, and runs slapd in the
//! foreground on `ldap://127.0.0.1:P1` (StartTLS offered) and
//! `ldaps://127.0.0.1:P2`. Its output goes to `slapd.log` in that directory.
//!
//! The tree (`dc=example,dc=org`):
//! - `ou=people`: `uid=alice` (alice-pw, alice@example.org, "Alice Archer"),
//!   `uid=bob` (bob-pw, bob@example.org, "Bob Baker"), `uid=carol` (carol-pw,
//!   carol@example.org, "Carol Carter"). Carol is DISABLED: the ppolicy
//!   overlay's administrative lock, `pwdAccountLockedTime: 000001010000Z`, so
//!   slapd answers her bind with invalidCredentials (49) although the password
//!   is right. A search filter can exclude her with `(!(pwdAccountLockedTime=*))`
//!   (an operational attribute: the service account may read it).
//! - `ou=groups`: `cn=mdm-users` (groupOfNames; member alice, carol) and
//!   `cn=sales` (groupOfUniqueNames; uniqueMember alice, bob). No memberOf
//!   overlay: groups are found by searching `member` / `uniqueMember`.
//! - `ou=services`: `cn=mdmd`, the service account ([`Slapd::bind_dn`] /
//!   [`Slapd::bind_password`]).
//!
//! ACLs: `userPassword` is readable by nobody (anonymous may bind with it);
//! the service account reads everything else, a user reads their own entry,
//! anonymous reads nothing but the root DSE and the schema. The rootdn is
//! `cn=admin,dc=example,dc=org` / `admin-secret` ([`Slapd::admin_dn`]).
//!
//! Lifetime: killed on drop and by [`Slapd::stop`]; slapd runs under
//! `timeout`, so even if the test process dies it is gone after
//! [`MAX_LIFETIME_SECS`].
//!
//! Without slapd installed, [`Slapd::start`] returns `None` (the test skips,
//! saying so) unless `MDMD_TEST_REQUIRE_DIRECTORY` is set, when it panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// slapd is killed by `timeout` after this long whatever happens to the tests.
pub const MAX_LIFETIME_SECS: u64 = 1800;

const SCHEMA_DIR: &str = "/etc/ldap/schema";
const MODULE_DIR: &str = "/usr/lib/ldap";
const BASE_DN: &str = "dc=example,dc=org";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PASSWORD: &str = "admin-secret";
const SERVICE_DN: &str = "cn=mdmd,ou=services,dc=example,dc=org";
const SERVICE_PASSWORD: &str = "mdmd-service-pw";

/// Must the directory tests run (`MDMD_TEST_REQUIRE_DIRECTORY` set, as in CI)?
pub fn directory_required() -> bool {
    std::env::var_os("MDMD_TEST_REQUIRE_DIRECTORY").is_some_and(|v| !v.is_empty())
}

pub struct Slapd {
    /// `ldap://127.0.0.1:PORT` (StartTLS is available on it).
    pub url: String,
    /// `ldaps://127.0.0.1:PORT2`.
    pub ldaps_url: String,
    /// PEM of the test CA that issued slapd's certificate (SAN IP:127.0.0.1, DNS:localhost).
    pub ca_pem: PathBuf,
    /// `dc=example,dc=org`.
    pub base_dn: String,
    /// The service account: `cn=mdmd,ou=services,dc=example,dc=org`.
    pub bind_dn: String,
    pub bind_password: String,
    /// The rootdn, for tests that change the tree (`ldapmodify`).
    pub admin_dn: String,
    pub admin_password: String,
    dir: tempfile::TempDir,
    slapd: PathBuf,
    port: u16,
    ldaps_port: u16,
    /// `timeout … slapd …`.
    child: Option<Child>,
}

/// Two different loopback ports nothing listened on a moment ago.
pub fn two_free_ports() -> (u16, u16) {
    let a = super::free_port();
    let b = std::iter::repeat_with(super::free_port).find(|&b| b != a).expect("a port");
    (a, b)
}

/// `name` on the PATH or in the sbin directories (not on a user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Slapd {
    /// A fresh directory, running. `None` when slapd (or slapadd, the schemas,
    /// the modules) is not installed and `MDMD_TEST_REQUIRE_DIRECTORY` is unset.
    pub fn start() -> Option<Slapd> {
        let found = (
            find_program("slapd"),
            find_program("slapadd"),
            Path::new(SCHEMA_DIR).join("inetorgperson.schema").is_file(),
            Path::new(MODULE_DIR).join("back_mdb.so").exists() && Path::new(MODULE_DIR).join("ppolicy.so").exists(),
        );
        let (Some(slapd), Some(slapadd), true, true) = found else {
            let why = "OpenLDAP's slapd is not installed (Debian: apt-get install slapd ldap-utils)";
            if directory_required() {
                panic!("MDMD_TEST_REQUIRE_DIRECTORY is set but {why}");
            }
            eprintln!("skipping: {why}");
            return None;
        };

        let dir = tempfile::Builder::new().prefix("mdmd-slapd-").tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("db")).expect("db dir");
        make_certs(d);
        std::fs::write(d.join("slapd.conf"), slapd_conf(d)).expect("slapd.conf");

        let ldif = super::repo_file("fixtures/directory/tree.ldif");
        let out = Command::new(&slapadd)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(&ldif)
            .output()
            .expect("run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let (port, ldaps_port) = two_free_ports();
        let mut s = Slapd {
            url: format!("ldap://127.0.0.1:{port}"),
            ldaps_url: format!("ldaps://127.0.0.1:{ldaps_port}"),
            ca_pem: d.join("ca.pem"),
            base_dn: BASE_DN.into(),
            bind_dn: SERVICE_DN.into(),
            bind_password: SERVICE_PASSWORD.into(),
            admin_dn: ADMIN_DN.into(),
            admin_password: ADMIN_PASSWORD.into(),
            slapd,
            port,
            ldaps_port,
            child: None,
            dir,
        };
        s.spawn();
        Some(s)
    }

    /// The DN of a person in `ou=people` (`uid=NAME,ou=people,dc=example,dc=org`).
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={uid},ou=people,{}", self.base_dn)
    }

    /// slapd's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Kill slapd: the directory is down, both ports refuse connections.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Kill slapd itself (its pid is in the pidfile; `timeout` then exits),
        // or, failing that, ask `timeout` to pass a SIGTERM on.
        match self.slapd_pid() {
            Some(pid) => unsafe {
                libc::kill(pid, libc::SIGKILL);
            },
            None => unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            },
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().ok().flatten().is_none() {
            if let Some(pid) = self.slapd_pid() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("slapd.pid"));
    }

    /// Start slapd again after [`Slapd::stop`]: same ports, same data.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// slapd's pid from its pidfile, if that process is still a slapd.
    fn slapd_pid(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = std::fs::read_to_string(self.dir.path().join("slapd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (pid > 0 && comm.trim() == "slapd").then_some(pid)
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("slapd.pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("slapd.log"))
            .expect("slapd.log");
        let child = Command::new("timeout")
            .args(["--kill-after=10", &MAX_LIFETIME_SECS.to_string()])
            .arg(&self.slapd)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/", self.port, self.ldaps_port))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn slapd (under timeout)");
        self.child = Some(child);

        // Ready when both ports accept and slapd has written its pidfile.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let accepts = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if self.slapd_pid().is_some() && accepts(self.port) && accepts(self.ldaps_port) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("slapd exited ({status}) before listening; its log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("slapd did not listen on {} within 10 s; its log:\n{}", self.url, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test CA (`ca.pem`) and slapd's certificate from it (`server.pem`,
/// `server.key`) for IP:127.0.0.1 and DNS:localhost.
fn make_certs(d: &Path) {
    let ossl = |args: &str| {
        super::openssl(&args.split_whitespace().collect::<Vec<_>>(), d);
    };
    ossl(
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=mdmd-test-directory-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    ossl("req -new -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost");
    std::fs::write(
        d.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("server.ext");
    ossl("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem");
}

fn slapd_conf(d: &Path) -> String {
    let p = |name: &str| d.join(name).display().to_string();
    format!(
        r#"# Written by tests/common/ldap.rs
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema

modulepath {modules}
moduleload back_mdb
moduleload ppolicy

pidfile "{pid}"
argsfile "{args}"

TLSCACertificateFile "{ca}"
TLSCertificateFile "{cert}"
TLSCertificateKeyFile "{key}"

# Anyone may read the root DSE (StartTLS, naming contexts) and the schema.
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read

database mdb
suffix "{base}"
rootdn "{admin}"
rootpw {admin_pw}
directory "{db}"
maxsize 16777216
index objectClass eq
index uid,mail,cn eq
index member,uniqueMember eq

# Password policy: the default one has pwdLockout TRUE; a pwdAccountLockedTime
# of 000001010000Z locks an account for good (carol).
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{base}"

access to attrs=userPassword
    by anonymous auth
    by self auth
    by * none
access to *
    by dn.exact="{service}" read
    by self read
    by * none
"#,
        schema = SCHEMA_DIR,
        modules = MODULE_DIR,
        pid = p("slapd.pid"),
        args = p("slapd.args"),
        ca = p("ca.pem"),
        cert = p("server.pem"),
        key = p("server.key"),
        db = p("db"),
        base = BASE_DN,
        admin = ADMIN_DN,
        admin_pw = ADMIN_PASSWORD,
        service = SERVICE_DN,
    )
}
