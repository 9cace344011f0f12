//! The PostgreSQL store: the same role traits as `redb`, for several mdmd
//! instances on one database. One file per role trait of `store`
//! (`checkin`, `queue`, `pki`, `profiles`, `lease`, `settings`, `inventory`,
//! `records`, `outbox`, `copy`); the schema and its migrations in `schema`,
//! the connection pool in `pool`, group commit in `writer`. The rules every
//! backend applies are in `store::model`; these files only read and write rows.
//!
//! - **Crates**: tokio-postgres with a deadpool connection pool (statements
//!   prepared once per connection and cached), TLS by postgres-openssl when
//!   the URL asks for it (`sslmode=require`).
//! - **Schema**: versioned migrations (`MIGRATIONS`) applied at start and by
//!   `mdmd db migrate`, serialised across instances by an advisory lock.
//!   Records keep the JSON shape of `model` (jsonb), with the keys, queue
//!   order and status as real columns so the queue is an index scan. Keys are
//!   `COLLATE "C"`: pages come in byte order, as on redb.
//! - **Concurrency**: every write is one transaction that locks the rows it
//!   reads (`FOR UPDATE`), so any instance may serve any request; per-device
//!   FIFO follows from the `command_seq` sequence.
//! - **Group commit**: writer tasks take every write waiting in the queue and
//!   run them in one transaction, one commit (one WAL flush) for all, and only
//!   then answer each. If a batch fails (a deadlock with another instance, a
//!   lost connection) each of its writes is retried alone, so one bad write
//!   never fails its neighbours. Nothing is acknowledged before `COMMIT`
//!   returned.
//! - **Round trips**: a device's requests are the hot path. Identity and
//!   binding are one statement (`identity_and_enrollment`), a command
//!   result with the next command is one statement committed on its own
//!   (`queue::REPORT_AT_ONCE`; results that update a profile's record, or
//!   carry webhook events, take a group-commit transaction), so `Idle` and
//!   a result are two round trips each. `round_trips()` counts statements
//!   (`GET /v1/stats`: `db_round_trips`).
//! - **Faults**: every operation is bounded by `op_timeout` (pool wait,
//!   connect and query): a database that is away or partitioned gives
//!   a `StoreError` (HTTP 503) within that time, never a hang; the pool
//!   replaces broken connections by itself when the database is back.

mod checkin;
mod copy;
mod inventory;
mod lease;
mod outbox;
mod pki;
mod pool;
mod profiles;
mod queue;
mod records;
mod schema;
mod settings;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool, Transaction};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::types::ToSql;

use super::*;
use crate::protocol::ErrorChainItem;
use checkin::*;
use inventory::*;
use outbox::*;
use pki::*;
use pool::*;
use profiles::*;
use queue::*;
use records::*;
use writer::*;

pub use pool::redact;
pub use queue::SETTLE_AFTER;
pub use schema::MIGRATIONS;

#[derive(Debug, Clone)]
pub struct PgConfig {
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Writer tasks (each runs one group-commit transaction at a time).
    pub writers: usize,
    /// Upper bound on any one store operation, waiting for a connection included.
    pub op_timeout: Duration,
    /// Verify the server's TLS certificate against this CA (PEM). Without it,
    /// TLS (`sslmode=prefer|require`) encrypts but does not verify, as libpq's
    /// `require` does.
    pub ca_file: Option<std::path::PathBuf>,
}

impl PgConfig {
    pub fn new(url: &str) -> PgConfig {
        PgConfig {
            url: url.to_owned(),
            pool_size: 16,
            writers: 4,
            op_timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

pub struct PgStore {
    pool: Pool,
    jobs: mpsc::UnboundedSender<Job>,
    op_timeout: Duration,
    url_shown: String,
    fanout: FanoutPolicy,
}

impl PgStore {
    /// Connect (checking the database answers), apply pending migrations and start the writers.
    pub async fn connect(cfg: PgConfig) -> Result<PgStore> {
        let pool = make_pool(&cfg)?;
        let store = PgStore::with_pool(pool, &cfg);
        store.migrate().await?;
        Ok(store)
    }

    /// Connect without touching the schema (for `db migrate --status`).
    pub async fn connect_unmigrated(cfg: PgConfig) -> Result<PgStore> {
        let pool = make_pool(&cfg)?;
        Ok(PgStore::with_pool(pool, &cfg))
    }

    fn with_pool(pool: Pool, cfg: &PgConfig) -> PgStore {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..cfg.writers.max(1) {
            let (pool, rx, t) = (pool.clone(), rx.clone(), cfg.op_timeout);
            tokio::spawn(async move { writer(pool, rx, t).await });
        }
        PgStore {
            pool,
            jobs: tx,
            op_timeout: cfg.op_timeout,
            url_shown: redact(&cfg.url),
            fanout: FanoutPolicy::default(),
        }
    }

    /// When commands become fan-outs and how many stay open (`queue`'s module doc).
    pub fn with_fanout(mut self, p: FanoutPolicy) -> Self {
        self.fanout = p;
        self
    }

    async fn bounded<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.op_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Db(format!(
                "the database did not answer within {} s",
                self.op_timeout.as_secs_f32()
            ))),
        }
    }

    /// Run a read on a pooled connection.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.bounded(async {
            let c = self.pool.get().await?;
            f(c).await
        })
        .await
    }
}

/// Statements sent to PostgreSQL by this process (BEGIN and COMMIT included;
/// a statement prepared on first use per connection is not counted): each is
/// one round trip. `GET /v1/stats` shows it, `mdmd sim load` divides it by
/// the requests it made.
static ROUND_TRIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Round trips to PostgreSQL since this process started.
pub fn round_trips() -> u64 {
    ROUND_TRIPS.load(std::sync::atomic::Ordering::Relaxed)
}

pub(super) fn round_trip() {
    ROUND_TRIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

// ---- Row helpers: statements prepared once per connection, JSON columns.

pub(super) type P<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn rows<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<Vec<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await?;
    round_trip();
    c.query(&st, p).await.map_err(StoreError::Postgres)
}

pub(super) async fn opt<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<Option<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await?;
    round_trip();
    c.query_opt(&st, p).await.map_err(StoreError::Postgres)
}

pub(super) async fn one<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<tokio_postgres::Row> {
    let st = c.prepare_cached(sql).await?;
    round_trip();
    c.query_one(&st, p).await.map_err(StoreError::Postgres)
}

pub(super) async fn exec<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await?;
    round_trip();
    c.execute(&st, p).await.map_err(StoreError::Postgres)
}

pub(super) fn json<T: serde::de::DeserializeOwned>(row: &tokio_postgres::Row, idx: usize) -> Result<T> {
    let v: serde_json::Value = row.try_get(idx)?;
    Ok(serde_json::from_value(v)?)
}

pub(super) fn opt_json<T: serde::de::DeserializeOwned>(row: &tokio_postgres::Row, idx: usize) -> Result<Option<T>> {
    let v: Option<serde_json::Value> = row.try_get(idx)?;
    v.map(|v| serde_json::from_value(v).map_err(StoreError::from)).transpose()
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(v)?)
}

pub(super) fn status_str(s: DeliveryStatus) -> &'static str {
    match s {
        DeliveryStatus::Pending => "Pending",
        DeliveryStatus::NotNow => "NotNow",
        DeliveryStatus::Acknowledged => "Acknowledged",
        DeliveryStatus::Error => "Error",
        DeliveryStatus::CommandFormatError => "CommandFormatError",
        DeliveryStatus::Cleared => "Cleared",
        DeliveryStatus::Superseded => "Superseded",
    }
}

pub(super) fn status_from(s: &str) -> Result<DeliveryStatus> {
    Ok(match s {
        "Pending" => DeliveryStatus::Pending,
        "NotNow" => DeliveryStatus::NotNow,
        "Acknowledged" => DeliveryStatus::Acknowledged,
        "Error" => DeliveryStatus::Error,
        "CommandFormatError" => DeliveryStatus::CommandFormatError,
        "Cleared" => DeliveryStatus::Cleared,
        "Superseded" => DeliveryStatus::Superseded,
        other => return Err(StoreError::Corrupt(format!("unknown delivery status {other:?}"))),
    })
}

pub(super) const DELIVERY_COLS: &str = "d.enrollment, d.seq, d.status, d.queued_at, d.updated_at, d.not_now_count, d.error_chain, d.result";

/// A delivery from the first eight columns of `DELIVERY_COLS`, starting at `at`.
pub(super) fn delivery_row(r: &tokio_postgres::Row, at: usize) -> Result<Delivery> {
    let status: String = r.try_get(at + 2)?;
    let seq: i64 = r.try_get(at + 1)?;
    let nn: i32 = r.try_get(at + 5)?;
    Ok(Delivery {
        enrollment: r.try_get(at)?,
        seq: seq as u64,
        status: status_from(&status)?,
        queued_at: r.try_get(at + 3)?,
        updated_at: r.try_get(at + 4)?,
        not_now_count: nn as u32,
        error_chain: opt_json::<Vec<ErrorChainItem>>(r, at + 6)?.unwrap_or_default(),
        result: r.try_get(at + 7)?,
    })
}
