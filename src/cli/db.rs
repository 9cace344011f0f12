//! `mdmd db`: schema migrations, and moving an installation between stores.
//! Opens stores itself (mdmd stopped); no server involved.

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct DbArgs {
    #[command(subcommand)]
    what: DbCmd,
}

impl DbArgs {
    pub async fn run(self) -> anyhow::Result<()> {
        self.what.run().await
    }
}

#[derive(Subcommand)]
pub enum DbCmd {
    /// Apply pending schema migrations to a PostgreSQL database (`mdmd serve` does this at start too).
    Migrate {
        #[arg(long, env = "MDMD_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// Only show which migrations are applied.
        #[arg(long)]
        status: bool,
    },
    /// Copy every record from one store into another, empty one, then read the
    /// target back and compare row counts and checksums table by table. Stop
    /// mdmd first. A store is a data dir (redb: DIR/mdmd.redb) or a postgres:// URL.
    ///
    /// Example: mdmd db copy --from ./data --to postgres://mdmd@db/mdmd
    Copy {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

impl DbCmd {
    pub async fn run(self) -> anyhow::Result<()> {
        use mdmd::store::postgres::{PgConfig, PgStore};
        match self {
            DbCmd::Migrate { database_url, status } => {
                let s = PgStore::connect_unmigrated(PgConfig::new(&database_url)).await?;
                if !status {
                    let applied = s.migrate().await.context("applying migrations")?;
                    if applied.is_empty() {
                        outln!("schema up to date");
                    } else {
                        outln!("applied migration(s) {applied:?}");
                    }
                }
                for (v, name, done) in s.migration_status().await? {
                    outln!("{v:>4}  {:<8} {name}", if done { "applied" } else { "pending" });
                }
                Ok(())
            }
            DbCmd::Copy { from, to } => {
                let src = open_named_store(&from, false).await?;
                let dst = open_named_store(&to, true).await?;
                for t in [
                    mdmd::store::Table::Enrollments,
                    mdmd::store::Table::Commands,
                    mdmd::store::Table::Certs,
                ] {
                    if !dst.export(t, None, 1).await?.is_empty() {
                        anyhow::bail!("{} already holds {}: copy only into an empty store", dst.describe(), t.name());
                    }
                }
                eprintln!("copying {} -> {}", src.describe(), dst.describe());
                let t0 = std::time::Instant::now();
                let rep = mdmd::store::copy::copy_all(&*src, &*dst).await?;
                outln!("{:<16} {:>10} {:>10}  {:<16} ", "table", "source", "target", "checksum");
                for (name, (a, b)) in &rep.tables {
                    outln!(
                        "{name:<16} {:>10} {:>10}  {:016x} {}",
                        a.rows,
                        b.rows,
                        a.checksum,
                        if a == b { "ok" } else { "MISMATCH" }
                    );
                }
                if !rep.verified() {
                    anyhow::bail!("the copy does not match its source (see MISMATCH above)");
                }
                let total: u64 = rep.tables.values().map(|(a, _)| a.rows).sum();
                outln!(
                    "copied {total} records from {} to {} in {:.1} s; counts and checksums match",
                    rep.from,
                    rep.to,
                    t0.elapsed().as_secs_f64()
                );
                Ok(())
            }
        }
    }
}

/// A store named on the command line: a postgres:// URL or a redb data dir (or file).
pub async fn open_named_store(spec: &str, create: bool) -> anyhow::Result<std::sync::Arc<dyn mdmd::store::Store>> {
    use mdmd::store::postgres::{PgConfig, PgStore};
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let s = PgStore::connect(PgConfig::new(spec))
            .await
            .with_context(|| format!("opening {}", mdmd::store::postgres::redact(spec)))?;
        return Ok(std::sync::Arc::new(s));
    }
    let p = std::path::Path::new(spec);
    let file = if p.is_dir() || (!p.exists() && p.extension().is_none()) {
        p.join("mdmd.redb")
    } else {
        p.to_path_buf()
    };
    if !create && !file.exists() {
        anyhow::bail!("{}: no mdmd database there", file.display());
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let s =
        mdmd::store::redb::RedbStore::open(&file).with_context(|| format!("opening {} (is mdmd still running on it?)", file.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    }
    Ok(std::sync::Arc::new(s))
}
