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
