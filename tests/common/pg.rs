//! PostgreSQL for tests: a fresh database per test on the server named by
//! `MDMD_TEST_DATABASE_URL`, or on 127.0.0.1:5432 if one answers there.
//! Without one the PostgreSQL tests say so and pass, unless
//! `MDMD_TEST_REQUIRE_POSTGRES=1` (CI), where they fail.

use std::time::Duration;

/// The server's base URL, or None (after saying why) if there is none.
pub fn base_url() -> Option<String> {
    if let Ok(u) = std::env::var("MDMD_TEST_DATABASE_URL") {
        if !u.is_empty() {
            return Some(u);
        }
    }
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().ok()?, Duration::from_millis(500)).is_ok();
    if up {
        return Some("postgres://postgres@127.0.0.1:5432/test".into());
    }
    if std::env::var("MDMD_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("MDMD_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL: set MDMD_TEST_DATABASE_URL or run one on 127.0.0.1:5432");
    }
    eprintln!("SKIPPED: no PostgreSQL (set MDMD_TEST_DATABASE_URL or run one on 127.0.0.1:5432)");
    None
}

/// A database created for one test and dropped after it.
pub struct TestDb {
    pub url: String,
    base: String,
    name: String,
}

fn with_db(url: &str, db: &str) -> String {
    // Replace the path (database name), keep any query.
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let host_end = head[scheme_end..].find('/').map_or(head.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &head[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn admin(base: &str, sql: &str) {
    let (c, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    let h = tokio::spawn(conn);
    c.batch_execute(sql).await.expect(sql);
    drop(c);
    let _ = h.await;
}

impl TestDb {
    /// A database named `name` that the test itself creates (e.g. with
    /// `createdb`): only its URL, and it is dropped after the test.
    /// Returns (the URL of the server's maintenance database, the database).
    pub fn adopt(name: &str) -> Option<(String, TestDb)> {
        let base = base_url()?;
        let db = TestDb {
            url: with_db(&base, name),
            base: base.clone(),
            name: name.to_owned(),
        };
        Some((base, db))
    }

    pub async fn create() -> Option<TestDb> {
        let base = base_url()?;
        let name = format!("mdmd_t_{}", uuid::Uuid::new_v4().simple());
        admin(&base, &format!("CREATE DATABASE {name}")).await;
        Some(TestDb {
            url: with_db(&base, &name),
            base,
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(admin(&base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
            }
        })
        .join();
    }
}

/// `url` with its host:port replaced.
pub fn with_hostport(url: &str, hostport: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let userinfo = authority.rfind('@').map_or("", |i| &authority[..=i]);
    format!("{}{userinfo}{hostport}{}", &url[..start], &rest[end..])
}

/// The database server's host:port in `url`.
pub fn hostport(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hp = authority.rfind('@').map_or(authority, |i| &authority[i + 1..]);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:5432")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Forward bytes.
    Pass,
    /// Connections are cut and new ones refused: the database restarting.
    Down,
    /// Connections stay open and silent: a network partition.
    Frozen,
}

/// A TCP proxy between mdmd and PostgreSQL that can cut or freeze the link.
pub struct FaultProxy {
    pub addr: std::net::SocketAddr,
    mode: std::sync::Arc<std::sync::Mutex<Mode>>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: String) -> FaultProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(Mode::Pass));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (m, c) = (mode.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = l.accept().await else { return };
                if *m.lock().unwrap() == Mode::Down {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let pipe = |m: std::sync::Arc<std::sync::Mutex<Mode>>| {
                    move |mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf| async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            loop {
                                let now = *m.lock().unwrap();
                                match now {
                                    Mode::Pass => break,
                                    Mode::Down => return,
                                    Mode::Frozen => tokio::time::sleep(Duration::from_millis(20)).await,
                                }
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                let a = tokio::spawn(pipe(m.clone())(ri, wo));
                let b = tokio::spawn(pipe(m.clone())(ro, wi));
                let mut cs = c.lock().unwrap();
                cs.push(a.abort_handle());
                cs.push(b.abort_handle());
            }
        });
        FaultProxy { addr, mode, conns, accept }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        if mode == Mode::Down {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
