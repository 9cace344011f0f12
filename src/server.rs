//! `mdmd serve`: wires configuration, store, service and HTTP together.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rand::RngCore as _;

use crate::config::ServeConfig;
use crate::http::{App, Stats};
use crate::service::{Mdm, NoPush};
use crate::store::redb::RedbStore;

/// Write a secret file readable only by its owner (0600), failing if it exists.
pub fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Read a secret file, or generate it with `make` and store it 0600. Returns (value, generated).
fn load_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(path = %path.display(), "secret file was readable by others; set to 0600");
            }
            Ok((s.trim().to_owned(), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = make();
            write_secret(path, format!("{v}\n").as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            Ok((v, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod {}", dir.display()))?;
    Ok(())
}

pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    ensure_dir(&cfg.data_dir)?;
    ensure_dir(&cfg.certs_dir)?;
    let api_key = match cfg.api_key.clone() {
        Some(k) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => {
            let path = cfg.data_dir.join("api-key");
            let (k, generated) = load_or_create(&path, || random_token(24))?;
            if generated {
                println!("Generated admin API key (stored 0600 in {}): {k}", path.display());
            }
            k
        }
    };
    let topic = match cfg.topic.clone() {
        Some(t) => t,
        None => load_or_create(&cfg.data_dir.join("topic"), || format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4()))?.0,
    };
    if !topic.starts_with("com.apple.mgmt.") {
        anyhow::bail!("topic {topic:?} must start with com.apple.mgmt.");
    }
    let store = Arc::new(RedbStore::open(&cfg.data_dir.join("mdmd.redb")).context("opening the database")?);
    let mdm = Arc::new(Mdm::new(store, topic.clone(), Arc::new(NoPush)));
    mdm.spawn_seen_flusher();
    let app = Arc::new(App { mdm: mdm.clone(), api_key, stats: Stats::default(), max_body: cfg.max_body, max_api_body: cfg.max_api_body });
    let router = crate::http::router(app);
    let listener = tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = %cfg.public_url(), %topic, "mdmd serving");
    println!("mdmd listening on http://{addr}");
    let _ = std::io::stdout().flush();
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    mdm.flush_seen().await.ok();
    Ok(())
}
