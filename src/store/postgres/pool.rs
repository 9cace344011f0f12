//! The PostgreSQL connection pool (deadpool), TLS (postgres-openssl) and the
//! URL as shown in messages.

use std::str::FromStr as _;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};

use super::*;

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(super) fn make_pool(cfg: &PgConfig) -> Result<Pool> {
    let mut pc = tokio_postgres::Config::from_str(&cfg.url).map_err(|e| setup("bad database URL", e))?;
    if pc.get_connect_timeout().is_none() {
        pc.connect_timeout(cfg.op_timeout);
    }
    pc.keepalives(true);
    pc.keepalives_idle(Duration::from_secs(30));
    if pc.get_application_name().is_none() {
        pc.application_name("mdmd");
    }
    let tls = {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).map_err(|e| setup("TLS for the database", e))?;
        match &cfg.ca_file {
            Some(ca) => {
                b.set_ca_file(ca).map_err(|e| setup(&format!("database CA {}", ca.display()), e))?;
                b.set_verify(openssl::ssl::SslVerifyMode::PEER);
            }
            None => b.set_verify(openssl::ssl::SslVerifyMode::NONE),
        }
        postgres_openssl::MakeTlsConnector::new(b.build())
    };
    let mgr = Manager::from_config(
        pc,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(cfg.pool_size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(cfg.op_timeout))
        .create_timeout(Some(cfg.op_timeout))
        .recycle_timeout(Some(cfg.op_timeout))
        .build()
        .map_err(|e| setup("database pool", e))
}

fn setup(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Setup {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}
