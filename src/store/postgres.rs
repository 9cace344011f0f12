//! The PostgreSQL store: the same role traits as `redb`, for several mdmd
//! instances on one database.
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
//! - **Faults**: every operation is bounded by `op_timeout` (pool wait,
//!   connect and query): a database that is away or partitioned gives
//!   `StoreError::Db` (HTTP 503) within that time, never a hang; the pool
//!   replaces broken connections by itself when the database is back.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::types::ToSql;

use super::*;
use crate::protocol::ErrorChainItem;

/// Versioned schema changes, applied in order, each once, each in its own transaction.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial schema",
        r#"
CREATE TABLE settings (
    name text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL,
    updated_at bigint NOT NULL,
    version bigint NOT NULL
);
CREATE TABLE leases (
    name text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    expires_at_ms bigint NOT NULL
);
CREATE TABLE enrollments (
    id text COLLATE "C" PRIMARY KEY,
    device text COLLATE "C" NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX enrollments_device ON enrollments (device);
CREATE SEQUENCE command_seq;
CREATE TABLE commands (
    uuid text COLLATE "C" PRIMARY KEY,
    seq bigint NOT NULL,
    request_type text NOT NULL,
    created_at bigint NOT NULL,
    targets bigint NOT NULL,
    profile jsonb,
    body bytea NOT NULL
);
CREATE TABLE deliveries (
    enrollment text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    command_uuid text COLLATE "C" NOT NULL REFERENCES commands (uuid),
    status text NOT NULL,
    queued_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    not_now_count integer NOT NULL DEFAULT 0,
    error_chain jsonb,
    result bytea,
    PRIMARY KEY (enrollment, seq)
);
CREATE UNIQUE INDEX deliveries_by_command ON deliveries (command_uuid, enrollment);
CREATE INDEX deliveries_pending ON deliveries (enrollment, seq) WHERE status IN ('Pending', 'NotNow');
CREATE TABLE certs (
    sha256 text COLLATE "C" PRIMARY KEY,
    serial text COLLATE "C" NOT NULL UNIQUE,
    data jsonb NOT NULL
);
CREATE TABLE secrets (
    kind smallint NOT NULL,
    hash text COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (kind, hash)
);
CREATE TABLE templates (
    identifier text COLLATE "C" PRIMARY KEY,
    data jsonb NOT NULL
);
CREATE TABLE device_profiles (
    enrollment text COLLATE "C" NOT NULL,
    identifier text COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (enrollment, identifier)
);
CREATE INDEX device_profiles_by_identifier ON device_profiles (identifier, enrollment);
"#,
    ),
    (
        2,
        "inventory, lookups, compliance",
        r#"
CREATE TABLE lookups (
    key smallint NOT NULL,
    value text COLLATE "C" NOT NULL,
    source text COLLATE "C" NOT NULL,
    enrollment text COLLATE "C" NOT NULL,
    PRIMARY KEY (key, value, source)
);
CREATE INDEX lookups_by_source ON lookups (source);
CREATE TABLE inventory (
    enrollment text COLLATE "C" NOT NULL,
    kind text COLLATE "C" NOT NULL,
    reported_at bigint NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (enrollment, kind)
);
CREATE TABLE compliance (
    enrollment text COLLATE "C" PRIMARY KEY,
    state text NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX compliance_by_state ON compliance (state, enrollment);
"#,
    ),
    (
        3,
        "records (accounts, access tokens)",
        r#"
CREATE TABLE records (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    updated_at bigint NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (collection, key)
);
"#,
    ),
    (4, "lookup index: device GUIDs (rebuilt)", "DELETE FROM lookups;"),
    (
        5,
        "webhook outbox",
        "CREATE TABLE outbox (seq bigserial PRIMARY KEY, next_at bigint NOT NULL, data jsonb NOT NULL);
CREATE INDEX outbox_due ON outbox (next_at, seq);",
    ),
];

/// Serialises migrations across instances (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6d646d64_0001;
const MAX_BATCH: usize = 256;

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

type AnyBox = Box<dyn Any + Send>;
type TxFuture<'a> = Pin<Box<dyn Future<Output = Result<AnyBox>> + Send + 'a>>;
type TxFn = Box<dyn for<'a> Fn(&'a Transaction<'a>) -> TxFuture<'a> + Send + Sync>;
/// A write's result on its way back, with the batch size it committed in.
type Reply = oneshot::Sender<Result<AnyBox>>;

struct Job {
    run: TxFn,
    reply: Reply,
}

pub struct PgStore {
    pool: Pool,
    jobs: mpsc::UnboundedSender<Job>,
    op_timeout: Duration,
    url_shown: String,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The server's own message (code, detail) is more useful than "db error".
    match e.as_db_error() {
        Some(d) => StoreError::Db(format!("{} ({})", d.message(), d.code().code())),
        None => StoreError::Db(e.to_string()),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Db(format!("database unavailable: {e}"))
}

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

fn retryable(e: &StoreError) -> bool {
    // Deadlock or serialization failure with another writer: try again.
    matches!(e, StoreError::Db(m) if m.contains("(40P01)") || m.contains("(40001)"))
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
        }
    }

    /// Apply every migration not yet applied; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        self.bounded(async {
            let mut c = self.pool.get().await.map_err(pool_err)?;
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg)?;
            let mut applied = Vec::new();
            for (version, name, sql) in MIGRATIONS {
                let tx = c.transaction().await.map_err(pg)?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
                let done = tx
                    .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version])
                    .await
                    .map_err(pg)?
                    .is_some();
                if !done {
                    tx.batch_execute(sql).await.map_err(pg)?;
                    if *version == 2 || *version == 4 {
                        // Index the enrollments stored before the index existed.
                        for r in tx.query("SELECT data FROM enrollments", &[]).await.map_err(pg)? {
                            let e: Enrollment = json(&r, 0)?;
                            put_lookups(&tx, &e).await?;
                        }
                    }
                    tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
                        .await
                        .map_err(pg)?;
                    applied.push(*version);
                }
                tx.commit().await.map_err(pg)?;
            }
            Ok(applied)
        })
        .await
    }

    /// (version, name, applied) for every known migration.
    pub async fn migration_status(&self) -> Result<Vec<(i32, String, bool)>> {
        self.bounded(async {
            let c = self.pool.get().await.map_err(pool_err)?;
            let exists = c
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await
                .map_err(pg)?
                .get::<_, bool>(0);
            let done: Vec<i32> = if exists {
                c.query("SELECT version FROM schema_migrations", &[])
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            } else {
                Vec::new()
            };
            Ok(MIGRATIONS.iter().map(|(v, n, _)| (*v, (*n).to_owned(), done.contains(v))).collect())
        })
        .await
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
            let c = self.pool.get().await.map_err(pool_err)?;
            f(c).await
        })
        .await
    }

    /// Run `f` in the next group-commit transaction; resolves after COMMIT.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'a> Fn(&'a Transaction<'a>) -> Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>> + Send + Sync + 'static,
    {
        let run: TxFn = Box::new(move |tx| {
            let fut = f(tx);
            Box::pin(async move { fut.await.map(|v| Box::new(v) as AnyBox) })
        });
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job { run, reply }).map_err(|_| StoreError::Closed)?;
        // The writer bounds each attempt; this bounds the wait for a writer too.
        let any = match tokio::time::timeout(self.op_timeout * 3, rx).await {
            Ok(r) => r.map_err(|_| StoreError::Closed)??,
            Err(_) => return Err(StoreError::Db("the database did not answer in time".into())),
        };
        any.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Db("internal: write result of the wrong type".into()))
    }
}

fn make_pool(cfg: &PgConfig) -> Result<Pool> {
    let mut pc = tokio_postgres::Config::from_str(&cfg.url).map_err(|e| StoreError::Db(format!("bad database URL: {e}")))?;
    if pc.get_connect_timeout().is_none() {
        pc.connect_timeout(cfg.op_timeout);
    }
    pc.keepalives(true);
    pc.keepalives_idle(Duration::from_secs(30));
    if pc.get_application_name().is_none() {
        pc.application_name("mdmd");
    }
    let tls = {
        let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
            .map_err(|e| StoreError::Db(format!("TLS for the database: {e}")))?;
        match &cfg.ca_file {
            Some(ca) => {
                b.set_ca_file(ca)
                    .map_err(|e| StoreError::Db(format!("database CA {}: {e}", ca.display())))?;
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
        .map_err(|e| StoreError::Db(format!("database pool: {e}")))
}

async fn writer(pool: Pool, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>, op_timeout: Duration) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            batch
        };
        run_batch(&pool, batch, op_timeout).await;
    }
}

async fn attempt(pool: &Pool, jobs: &[&Job], op_timeout: Duration) -> Result<Vec<AnyBox>> {
    let started = std::time::Instant::now();
    let work = async {
        let mut c = pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await.map_err(pg)?;
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            out.push((j.run)(&tx).await?);
        }
        tx.commit().await.map_err(pg)?;
        crate::metrics::get().commit("postgres", jobs.len(), started.elapsed());
        Ok(out)
    };
    match tokio::time::timeout(op_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Db(format!(
            "the database did not commit within {} s",
            op_timeout.as_secs_f32()
        ))),
    }
}

async fn run_batch(pool: &Pool, batch: Vec<Job>, op_timeout: Duration) {
    let refs: Vec<&Job> = batch.iter().collect();
    match attempt(pool, &refs, op_timeout).await {
        Ok(results) => {
            for (job, r) in batch.into_iter().zip(results) {
                let _ = job.reply.send(Ok(r));
            }
        }
        Err(e) if batch.len() > 1 => {
            tracing::debug!(error = %e, jobs = batch.len(), "write batch failed; retrying each write alone");
            for job in batch {
                let r = alone(pool, &job, op_timeout).await;
                let _ = job.reply.send(r);
            }
        }
        Err(e) => {
            let job = batch.into_iter().next();
            if let Some(job) = job {
                let r = if retryable(&e) {
                    alone(pool, &job, op_timeout).await
                } else {
                    Err(e)
                };
                let _ = job.reply.send(r);
            }
        }
    }
}

/// One write in its own transaction, retried on deadlock or serialization failure.
async fn alone(pool: &Pool, job: &Job, op_timeout: Duration) -> Result<AnyBox> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(pool, &[job], op_timeout).await {
            Ok(mut v) => return v.pop().ok_or_else(|| StoreError::Db("internal: empty batch".into())),
            Err(e) if retryable(&e) && tries < 5 => {
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "database write failed");
                return Err(e);
            }
        }
    }
}

// ---------------------------------------------------------------- helpers

type P<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn rows<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<Vec<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.query(&st, p).await.map_err(pg)
}

async fn opt<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<Option<tokio_postgres::Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_opt(&st, p).await.map_err(pg)
}

async fn one<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<tokio_postgres::Row> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.query_one(&st, p).await.map_err(pg)
}

async fn exec<C: GenericClient>(c: &C, sql: &str, p: P<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await.map_err(pg)?;
    c.execute(&st, p).await.map_err(pg)
}

fn json<T: serde::de::DeserializeOwned>(row: &tokio_postgres::Row, idx: usize) -> Result<T> {
    let v: serde_json::Value = row.try_get(idx).map_err(pg)?;
    Ok(serde_json::from_value(v)?)
}

fn opt_json<T: serde::de::DeserializeOwned>(row: &tokio_postgres::Row, idx: usize) -> Result<Option<T>> {
    let v: Option<serde_json::Value> = row.try_get(idx).map_err(pg)?;
    v.map(|v| serde_json::from_value(v).map_err(StoreError::from)).transpose()
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(v)?)
}

fn status_str(s: DeliveryStatus) -> &'static str {
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

fn status_from(s: &str) -> Result<DeliveryStatus> {
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

const DELIVERY_COLS: &str = "d.enrollment, d.seq, d.status, d.queued_at, d.updated_at, d.not_now_count, d.error_chain, d.result";

/// A delivery from the first eight columns of `DELIVERY_COLS`, starting at `at`.
fn delivery_row(r: &tokio_postgres::Row, at: usize) -> Result<Delivery> {
    let status: String = r.try_get(at + 2).map_err(pg)?;
    let seq: i64 = r.try_get(at + 1).map_err(pg)?;
    let nn: i32 = r.try_get(at + 5).map_err(pg)?;
    Ok(Delivery {
        enrollment: r.try_get(at).map_err(pg)?,
        seq: seq as u64,
        status: status_from(&status)?,
        queued_at: r.try_get(at + 3).map_err(pg)?,
        updated_at: r.try_get(at + 4).map_err(pg)?,
        not_now_count: nn as u32,
        error_chain: opt_json::<Vec<ErrorChainItem>>(r, at + 6)?.unwrap_or_default(),
        result: r.try_get(at + 7).map_err(pg)?,
    })
}

async fn get_enrollment<C: GenericClient>(c: &C, id: &str, lock: bool) -> Result<Option<Enrollment>> {
    let sql = if lock {
        "SELECT data FROM enrollments WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT data FROM enrollments WHERE id = $1"
    };
    match opt(c, sql, &[&id]).await? {
        Some(r) => Ok(Some(json(&r, 0)?)),
        None => Ok(None),
    }
}

/// Store an enrollment and keep the lookup index in step with it.
async fn put_enrollment(tx: &Transaction<'_>, e: &Enrollment) -> Result<()> {
    exec(
        tx,
        "INSERT INTO enrollments (id, device, data) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET device = EXCLUDED.device, data = EXCLUDED.data",
        &[&e.id, &e.device, &to_json(e)?],
    )
    .await?;
    put_lookups(tx, e).await
}

async fn put_lookups<C: GenericClient>(c: &C, e: &Enrollment) -> Result<()> {
    let keys = e.lookup_keys();
    let k: Vec<i16> = keys.iter().map(|(k, _, _)| *k as i16).collect();
    let v: Vec<&str> = keys.iter().map(|(_, v, _)| v.as_str()).collect();
    let t: Vec<&str> = keys.iter().map(|(_, _, t)| t.as_str()).collect();
    // One statement: replace this record's entries unless they are already exactly these.
    exec(
        c,
        "WITH gone AS (DELETE FROM lookups WHERE source = $1 AND (key, value, enrollment) NOT IN (SELECT * FROM unnest($2::smallint[], $3::text[], $4::text[]))) INSERT INTO lookups (key, value, source, enrollment) SELECT k, v, $1, t FROM unnest($2::smallint[], $3::text[], $4::text[]) AS x(k, v, t) ON CONFLICT (key, value, source) DO UPDATE SET enrollment = EXCLUDED.enrollment",
        &[&e.id, &k, &v, &t],
    )
    .await?;
    Ok(())
}

/// Lock, change and store one enrollment; None if unknown.
async fn modify<R>(tx: &Transaction<'_>, id: &str, f: impl FnOnce(&mut Enrollment) -> (bool, R)) -> Result<Option<R>> {
    let Some(mut e) = get_enrollment(tx, id, true).await? else {
        return Ok(None);
    };
    let (changed, r) = f(&mut e);
    if changed {
        put_enrollment(tx, &e).await?;
    }
    Ok(Some(r))
}

async fn clear_pending(tx: &Transaction<'_>, ids: &[String], now: i64) -> Result<u64> {
    exec(
        tx,
        "UPDATE deliveries SET status = 'Cleared', updated_at = $2 WHERE enrollment = ANY($1) AND status IN ('Pending', 'NotNow')",
        &[&ids, &now],
    )
    .await
}

async fn first_pending<C: GenericClient>(c: &C, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
    let sql = if skip_not_now {
        "SELECT c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 AND d.status = 'Pending' ORDER BY d.seq LIMIT 1"
    } else {
        "SELECT c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 AND d.status IN ('Pending', 'NotNow') ORDER BY d.seq LIMIT 1"
    };
    match opt(c, sql, &[&id]).await? {
        Some(r) => Ok(Some(QueuedCommand {
            uuid: r.try_get(0).map_err(pg)?,
            request_type: r.try_get(1).map_err(pg)?,
            body: r.try_get(2).map_err(pg)?,
        })),
        None => Ok(None),
    }
}

async fn known_ids(tx: &Transaction<'_>, targets: &[String]) -> Result<Vec<String>> {
    let r = rows(tx, "SELECT id FROM enrollments WHERE id = ANY($1) ORDER BY id", &[&targets]).await?;
    Ok(r.iter().map(|r| r.get(0)).collect())
}

/// Allocate `n` queue positions.
async fn next_seqs(tx: &Transaction<'_>, n: usize) -> Result<Vec<i64>> {
    let n = n as i64;
    let r = rows(tx, "SELECT nextval('command_seq') FROM generate_series(1, $1::bigint)", &[&n]).await?;
    let mut v: Vec<i64> = r.iter().map(|r| r.get(0)).collect();
    v.sort_unstable();
    Ok(v)
}

async fn insert_commands(tx: &Transaction<'_>, recs: &[CommandRecord]) -> Result<()> {
    let uuids: Vec<&str> = recs.iter().map(|r| r.uuid.as_str()).collect();
    let seqs: Vec<i64> = recs.iter().map(|r| r.seq as i64).collect();
    let types: Vec<&str> = recs.iter().map(|r| r.request_type.as_str()).collect();
    let created: Vec<i64> = recs.iter().map(|r| r.created_at).collect();
    let targets: Vec<i64> = recs.iter().map(|r| r.targets as i64).collect();
    let profiles: Vec<Option<serde_json::Value>> = recs
        .iter()
        .map(|r| r.profile.as_ref().map(to_json).transpose())
        .collect::<Result<_>>()?;
    let bodies: Vec<&[u8]> = recs.iter().map(|r| r.body.as_slice()).collect();
    exec(
        tx,
        "INSERT INTO commands (uuid, seq, request_type, created_at, targets, profile, body) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::jsonb[], $7::bytea[])",
        &[&uuids, &seqs, &types, &created, &targets, &profiles, &bodies],
    )
    .await?;
    Ok(())
}

/// Pending deliveries as enqueued: (enrollment, seq, command uuid, queued at).
async fn insert_deliveries(tx: &Transaction<'_>, ids: &[&str], seqs: &[i64], uuids: &[&str], at: &[i64]) -> Result<()> {
    exec(
        tx,
        "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at) SELECT e, s, u, 'Pending', t, t FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS x(e, s, u, t)",
        &[&ids, &seqs, &uuids, &at],
    )
    .await?;
    Ok(())
}

/// A newer command for a profile supersedes the pending one, and the
/// profile is pending (install or removal) on the enrollment.
async fn track_profile(tx: &Transaction<'_>, rec: &CommandRecord, tag: &ProfileTag, id: &str) -> Result<()> {
    let old: Option<DeviceProfile> = match opt(
        tx,
        "SELECT data FROM device_profiles WHERE enrollment = $1 AND identifier = $2 FOR UPDATE",
        &[&id, &tag.identifier],
    )
    .await?
    {
        Some(r) => Some(json(&r, 0)?),
        None => None,
    };
    if let Some(old_uuid) = old.as_ref().and_then(|o| o.command_uuid.clone()) {
        exec(
            tx,
            "UPDATE deliveries SET status = 'Superseded', updated_at = $3 WHERE command_uuid = $1 AND enrollment = $2 AND status IN ('Pending', 'NotNow')",
            &[&old_uuid, &id, &rec.created_at],
        )
        .await?;
    }
    let dp = DeviceProfile::queued(rec, tag, old);
    put_device_profile(tx, id, &tag.identifier, &dp).await
}

async fn put_device_profile(tx: &Transaction<'_>, id: &str, identifier: &str, dp: &DeviceProfile) -> Result<()> {
    exec(
        tx,
        "INSERT INTO device_profiles (enrollment, identifier, data) VALUES ($1, $2, $3) ON CONFLICT (enrollment, identifier) DO UPDATE SET data = EXCLUDED.data",
        &[&id, &identifier, &to_json(dp)?],
    )
    .await?;
    Ok(())
}

async fn profile_result(tx: &Transaction<'_>, id: &str, tag: &ProfileTag, uuid: &str, d: &Delivery) -> Result<()> {
    let Some(r) = opt(
        tx,
        "SELECT data FROM device_profiles WHERE enrollment = $1 AND identifier = $2 FOR UPDATE",
        &[&id, &tag.identifier],
    )
    .await?
    else {
        return Ok(());
    };
    let mut dp: DeviceProfile = json(&r, 0)?;
    if !dp.apply_result(tag, uuid, d) {
        return Ok(());
    }
    put_device_profile(tx, id, &tag.identifier, &dp).await
}

// ---------------------------------------------------------------- write bodies

async fn authenticate_tx(tx: &Transaction<'_>, rec: Enrollment, keep_queue: bool) -> Result<AuthOutcome> {
    let now = rec.authenticated_at;
    if let Some(h) = &rec.cert_hash {
        if let Some(r) = opt(tx, "SELECT data FROM certs WHERE sha256 = $1 FOR UPDATE", &[h]).await? {
            let mut c: IssuedCert = json(&r, 0)?;
            match &c.enrollment {
                Some(other) if other != &rec.device => return Ok(AuthOutcome::CertBoundElsewhere),
                Some(_) => {}
                None => {
                    c.enrollment = Some(rec.device.clone());
                    exec(tx, "UPDATE certs SET data = $2 WHERE sha256 = $1", &[h, &to_json(&c)?]).await?;
                }
            }
        }
    }
    let rec = match get_enrollment(tx, &rec.id, true).await? {
        Some(old) => Enrollment {
            enrolled_at: old.enrolled_at,
            ..rec
        },
        None => rec,
    };
    if !keep_queue {
        let users: Vec<String> = rows(
            tx,
            "SELECT id FROM enrollments WHERE device = $1 AND id <> $1 ORDER BY id FOR UPDATE",
            &[&rec.id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut all = users.clone();
        all.push(rec.id.clone());
        clear_pending(tx, &all, now).await?;
        if !users.is_empty() {
            exec(
                tx,
                "UPDATE enrollments SET data = jsonb_set(data, '{active}', 'false') WHERE id = ANY($1)",
                &[&users],
            )
            .await?;
        }
    }
    put_enrollment(tx, &rec).await?;
    Ok(AuthOutcome::Stored)
}

async fn token_update_tx(tx: &Transaction<'_>, id: String, parent: String, u: TokenUpdateRecord) -> Result<Option<bool>> {
    let mut e = match get_enrollment(tx, &id, true).await? {
        Some(e) => e,
        None if id != parent => {
            let Some(dev) = get_enrollment(tx, &parent, false).await? else {
                return Ok(None);
            };
            dev.new_user_channel(&id, &u)
        }
        None => return Ok(None),
    };
    e.apply_token_update(u);
    put_enrollment(tx, &e).await?;
    let pending = opt(
        tx,
        "SELECT 1 FROM deliveries WHERE enrollment = $1 AND status IN ('Pending', 'NotNow') LIMIT 1",
        &[&id],
    )
    .await?
    .is_some();
    Ok(Some(pending))
}

async fn checkout_tx(tx: &Transaction<'_>, id: String, now: i64) -> Result<bool> {
    let Some(mut e) = get_enrollment(tx, &id, true).await? else {
        return Ok(false);
    };
    let users = rows(
        tx,
        "SELECT data FROM enrollments WHERE device = $1 AND id <> $1 ORDER BY id FOR UPDATE",
        &[&id],
    )
    .await?;
    for r in users {
        let mut u: Enrollment = json(&r, 0)?;
        u.active = false;
        u.checked_out_at = Some(now);
        put_enrollment(tx, &u).await?;
    }
    e.active = false;
    e.checked_out_at = Some(now);
    e.last_checkin_at = now;
    e.last_seen_at = now;
    put_enrollment(tx, &e).await?;
    Ok(true)
}

async fn enqueue_tx(tx: &Transaction<'_>, cmd: CommandRecord, targets: Vec<String>) -> Result<EnqueueOutcome> {
    let known = known_ids(tx, &targets).await?;
    let unknown: Vec<String> = {
        let k: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
        targets.iter().filter(|t| !k.contains(t.as_str())).cloned().collect()
    };
    let mut rec = cmd;
    rec.targets = known.len() as u64;
    rec.seq = next_seqs(tx, 1).await?.first().copied().unwrap_or(0) as u64;
    insert_commands(tx, std::slice::from_ref(&rec)).await?;
    if let Some(tag) = &rec.profile {
        for id in &known {
            track_profile(tx, &rec, tag, id).await?;
        }
    }
    let ids: Vec<&str> = known.iter().map(String::as_str).collect();
    let n = ids.len();
    insert_deliveries(
        tx,
        &ids,
        &vec![rec.seq as i64; n],
        &vec![rec.uuid.as_str(); n],
        &vec![rec.created_at; n],
    )
    .await?;
    Ok(EnqueueOutcome { queued: n as u64, unknown })
}

async fn enqueue_each_tx(
    tx: &Transaction<'_>,
    items: Vec<(CommandRecord, String)>,
    secrets: Vec<(SecretKind, String, OneTimeSecret)>,
) -> Result<EnqueueOutcome> {
    let targets: Vec<String> = items.iter().map(|(_, t)| t.clone()).collect();
    let known: std::collections::HashSet<String> = known_ids(tx, &targets).await?.into_iter().collect();
    let unknown: Vec<String> = targets.into_iter().filter(|t| !known.contains(t)).collect();
    for (kind, hash, rec) in &secrets {
        if rec.enrollment.as_ref().is_none_or(|e| known.contains(e)) {
            put_secret(tx, *kind, hash, rec).await?;
        }
    }
    let mut recs: Vec<(CommandRecord, String)> = items.into_iter().filter(|(_, t)| known.contains(t)).collect();
    let seqs = next_seqs(tx, recs.len()).await?;
    for ((rec, _), seq) in recs.iter_mut().zip(&seqs) {
        rec.targets = 1;
        rec.seq = *seq as u64;
    }
    let only: Vec<CommandRecord> = recs.iter().map(|(r, _)| r.clone()).collect();
    insert_commands(tx, &only).await?;
    for (rec, target) in &recs {
        if let Some(tag) = &rec.profile {
            track_profile(tx, rec, tag, target).await?;
        }
    }
    let ids: Vec<&str> = recs.iter().map(|(_, t)| t.as_str()).collect();
    let uuids: Vec<&str> = recs.iter().map(|(r, _)| r.uuid.as_str()).collect();
    let at: Vec<i64> = recs.iter().map(|(r, _)| r.created_at).collect();
    insert_deliveries(tx, &ids, &seqs, &uuids, &at).await?;
    Ok(EnqueueOutcome {
        queued: recs.len() as u64,
        unknown,
    })
}

async fn report_tx(tx: &Transaction<'_>, id: String, r: ReportRecord) -> Result<(ReportOutcome, Option<QueuedCommand>)> {
    let sql = format!(
        "SELECT {DELIVERY_COLS}, c.request_type, c.profile FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.command_uuid = $1 AND d.enrollment = $2 FOR UPDATE OF d"
    );
    let current = opt(tx, &sql, &[&r.command_uuid, &id]).await?;
    let outcome = match current {
        Some(row) => {
            let mut d = delivery_row(&row, 0)?;
            let request_type: String = row.try_get(8).map_err(pg)?;
            let tag: Option<ProfileTag> = opt_json(&row, 9)?;
            if !d.status.is_pending() {
                ReportOutcome::NotPending
            } else if r.status == DeliveryStatus::NotNow {
                exec(
                    tx,
                    "UPDATE deliveries SET status = 'NotNow', not_now_count = not_now_count + 1, updated_at = $3 WHERE enrollment = $1 AND seq = $2",
                    &[&id, &(d.seq as i64), &r.now],
                )
                .await?;
                ReportOutcome::NotNowRecorded
            } else {
                d.status = r.status;
                d.error_chain = r.error_chain.clone();
                d.updated_at = r.now;
                let chain = if d.error_chain.is_empty() {
                    None
                } else {
                    Some(to_json(&d.error_chain)?)
                };
                exec(
                    tx,
                    "UPDATE deliveries SET status = $3, error_chain = $4, result = $5, updated_at = $6 WHERE enrollment = $1 AND seq = $2",
                    &[&id, &(d.seq as i64), &status_str(d.status), &chain, &r.raw, &r.now],
                )
                .await?;
                if let Some(tag) = &tag {
                    profile_result(tx, &id, tag, &r.command_uuid, &d).await?;
                }
                ReportOutcome::Finished { request_type }
            }
        }
        None => ReportOutcome::NotPending,
    };
    let next = first_pending(tx, &id, true).await?;
    Ok((outcome, next))
}

async fn put_secret(tx: &Transaction<'_>, kind: SecretKind, hash: &str, rec: &OneTimeSecret) -> Result<()> {
    exec(
        tx,
        "INSERT INTO secrets (kind, hash, data) VALUES ($1, $2, $3) ON CONFLICT (kind, hash) DO UPDATE SET data = EXCLUDED.data",
        &[&(kind as i16), &hash, &to_json(rec)?],
    )
    .await?;
    Ok(())
}

async fn put_cert(tx: &Transaction<'_>, c: &IssuedCert) -> Result<()> {
    exec(
        tx,
        "INSERT INTO certs (sha256, serial, data) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO UPDATE SET serial = EXCLUDED.serial, data = EXCLUDED.data",
        &[&c.sha256, &c.serial, &to_json(c)?],
    )
    .await?;
    Ok(())
}

async fn import_tx(tx: &Transaction<'_>, rows_in: Vec<Row>) -> Result<()> {
    let mut max_seq = 0i64;
    for row in rows_in {
        match row {
            Row::Setting { name, setting } => {
                exec(
                    tx,
                    "INSERT INTO settings (name, value, updated_at, version) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version",
                    &[&name, &setting.value, &setting.updated_at, &(setting.version as i64)],
                )
                .await?;
            }
            Row::Cert(c) => put_cert(tx, &c).await?,
            Row::Secret { kind, hash, secret } => put_secret(tx, kind, &hash, &secret).await?,
            Row::Enrollment(e) => put_enrollment(tx, &e).await?,
            Row::Template(t) => {
                exec(
                    tx,
                    "INSERT INTO templates (identifier, data) VALUES ($1, $2) ON CONFLICT (identifier) DO UPDATE SET data = EXCLUDED.data",
                    &[&t.identifier, &to_json(&t)?],
                )
                .await?;
            }
            Row::Command(c) => {
                max_seq = max_seq.max(c.seq as i64);
                insert_commands(tx, std::slice::from_ref(&c)).await?;
            }
            Row::Delivery {
                command_uuid,
                enrollment,
                delivery: d,
            } => {
                let chain = if d.error_chain.is_empty() {
                    None
                } else {
                    Some(to_json(&d.error_chain)?)
                };
                exec(
                    tx,
                    "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at, not_now_count, error_chain, result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &enrollment,
                        &(d.seq as i64),
                        &command_uuid,
                        &status_str(d.status),
                        &d.queued_at,
                        &d.updated_at,
                        &(d.not_now_count as i32),
                        &chain,
                        &d.result,
                    ],
                )
                .await?;
            }
            Row::DeviceProfile {
                enrollment,
                identifier,
                profile,
            } => put_device_profile(tx, &enrollment, &identifier, &profile).await?,
            Row::Inventory { enrollment, item } => put_inventory_row(tx, &enrollment, &item).await?,
            Row::Compliance { enrollment, record } => put_compliance_row(tx, &enrollment, &record).await?,
            Row::Record { collection, key, record } => {
                exec(
                    tx,
                    "INSERT INTO records (collection, key, version, updated_at, value) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (collection, key) DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, value = EXCLUDED.value",
                    &[&collection, &key, &(record.version as i64), &record.updated_at, &record.value],
                )
                .await?;
            }
        }
    }
    if max_seq > 0 {
        exec(
            tx,
            "SELECT setval('command_seq', GREATEST($1, (SELECT last_value FROM command_seq)))",
            &[&max_seq],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl CheckinStore for PgStore {
    async fn authenticate(&self, rec: Enrollment, keep_queue: bool) -> Result<AuthOutcome> {
        self.write(move |tx| Box::pin(authenticate_tx(tx, rec.clone(), keep_queue))).await
    }

    async fn mark_renewal(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let id = id.clone();
            Box::pin(async move {
                modify(tx, &id, |e| {
                    e.renewal_requested_at = Some(now);
                    (true, ())
                })
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn token_update(&self, id: &str, parent: &str, u: TokenUpdateRecord) -> Result<Option<bool>> {
        let (id, parent) = (id.to_owned(), parent.to_owned());
        self.write(move |tx| {
            let (id, parent, u) = (id.clone(), parent.clone(), u.clone());
            Box::pin(async move {
                let events = u.events.clone();
                let out = token_update_tx(tx, id, parent, u).await?;
                if out.is_some() {
                    put_events(tx, &events).await?;
                }
                Ok(out)
            })
        })
        .await
    }

    async fn checkout(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| Box::pin(checkout_tx(tx, id.clone(), now))).await
    }

    async fn set_bootstrap_token(&self, id: &str, sealed: Option<String>, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (id, sealed) = (id.clone(), sealed.clone());
            Box::pin(async move {
                let r = modify(tx, &id, |e| {
                    e.bootstrap_token = sealed;
                    e.last_checkin_at = now;
                    e.last_seen_at = now;
                    (true, ())
                })
                .await?;
                Ok(r.is_some())
            })
        })
        .await
    }

    async fn update_info(&self, id: &str, info: DeviceInfo) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (id, info) = (id.clone(), info.clone());
            Box::pin(async move {
                let r = modify(tx, &id, |e| {
                    e.info.merge(info);
                    (true, ())
                })
                .await?;
                Ok(r.is_some())
            })
        })
        .await
    }

    async fn set_attributes(
        &self,
        id: &str,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (id, attrs) = (id.clone(), attrs.clone());
            Box::pin(async move {
                modify(tx, &id, |e| {
                    e.apply_attributes(attrs);
                    (true, e.attributes.clone())
                })
                .await
            })
        })
        .await
    }

    async fn reseal_tokens(&self, updates: Vec<Reseal>) -> Result<u64> {
        self.write(move |tx| {
            let updates = updates.clone();
            Box::pin(async move {
                let mut n = 0;
                for u in updates {
                    let id = u.id.clone();
                    let changed = modify(tx, &id, |e| {
                        let changed = e.apply_reseal(u);
                        (changed, changed)
                    })
                    .await?;
                    if changed == Some(true) {
                        n += 1;
                    }
                }
                Ok(n)
            })
        })
        .await
    }

    async fn note_refused_reenroll(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let id = id.clone();
            Box::pin(async move {
                modify(tx, &id, |e| {
                    e.refused_reenroll_at = Some(now);
                    e.refused_reenroll_count += 1;
                    (true, ())
                })
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn record_pushes(&self, records: Vec<PushRecord>) -> Result<()> {
        let mut records = records;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        self.write(move |tx| {
            let records = records.clone();
            Box::pin(async move {
                for r in records {
                    modify(tx, &r.id, |e| (e.apply_push(&r), ())).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<()> {
        let mut seen = seen;
        seen.sort();
        let ids: Vec<String> = seen.iter().map(|(i, _)| i.clone()).collect();
        let at: Vec<i64> = seen.iter().map(|(_, a)| *a).collect();
        self.write(move |tx| {
            let (ids, at) = (ids.clone(), at.clone());
            Box::pin(async move {
                exec(
                    tx,
                    "UPDATE enrollments e SET data = jsonb_set(e.data, '{last_seen_at}', to_jsonb(v.at)) FROM unnest($1::text[], $2::bigint[]) AS v(id, at) WHERE e.id = v.id AND (e.data->>'last_seen_at')::bigint < v.at",
                    &[&ids, &at],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn enrollment(&self, id: &str) -> Result<Option<Enrollment>> {
        self.read(|c| async move { get_enrollment(&c, id, false).await }).await
    }

    async fn counts(&self) -> Result<StoreCounts> {
        self.read(|c| async move {
            let r = one(
                &c,
                "SELECT (SELECT count(*) FROM enrollments), (SELECT count(*) FROM deliveries WHERE status IN ('Pending', 'NotNow'))",
                &[],
            )
            .await?;
            Ok(StoreCounts {
                enrollments: r.get::<_, i64>(0).max(0) as u64,
                pending_commands: r.get::<_, i64>(1).max(0) as u64,
            })
        })
        .await
    }

    async fn enrollments(&self, after: Option<String>, limit: usize) -> Result<Vec<Enrollment>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let r = match &after {
                Some(a) => rows(&c, "SELECT data FROM enrollments WHERE id > $1 ORDER BY id LIMIT $2", &[a, &limit]).await?,
                None => rows(&c, "SELECT data FROM enrollments ORDER BY id LIMIT $1", &[&limit]).await?,
            };
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }
}

#[async_trait]
impl QueueStore for PgStore {
    async fn enqueue(&self, cmd: CommandRecord, targets: Vec<String>) -> Result<EnqueueOutcome> {
        let mut targets = targets;
        targets.sort_unstable();
        targets.dedup();
        self.write(move |tx| Box::pin(enqueue_tx(tx, cmd.clone(), targets.clone()))).await
    }

    async fn enqueue_each(
        &self,
        items: Vec<(CommandRecord, String)>,
        secrets: Vec<(SecretKind, String, OneTimeSecret)>,
    ) -> Result<EnqueueOutcome> {
        let mut items = items;
        items.sort_by(|a, b| a.1.cmp(&b.1));
        self.write(move |tx| Box::pin(enqueue_each_tx(tx, items.clone(), secrets.clone())))
            .await
    }

    async fn next_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
        self.read(|c| async move { first_pending(&c, id, skip_not_now).await }).await
    }

    async fn report(&self, id: &str, report: ReportRecord) -> Result<(ReportOutcome, Option<QueuedCommand>)> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (id, report) = (id.clone(), report.clone());
            Box::pin(async move {
                // Also for a report already applied: the device sends it again when it got no answer.
                put_events(tx, &report.events).await?;
                report_tx(tx, id, report).await
            })
        })
        .await
    }

    async fn clear_queue(&self, id: &str, now: i64) -> Result<u64> {
        let id = vec![id.to_owned()];
        self.write(move |tx| {
            let id = id.clone();
            Box::pin(async move { clear_pending(tx, &id, now).await })
        })
        .await
    }

    async fn device_commands(&self, id: &str, limit: usize) -> Result<Vec<DeviceCommand>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let sql = format!(
                "SELECT {DELIVERY_COLS}, d.command_uuid, c.request_type FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 ORDER BY d.seq DESC LIMIT $2"
            );
            let r = rows(&c, &sql, &[&id, &limit]).await?;
            let mut out = r
                .iter()
                .map(|r| {
                    Ok(DeviceCommand {
                        delivery: delivery_row(r, 0)?,
                        command_uuid: r.try_get(8).map_err(pg)?,
                        request_type: r.try_get(9).map_err(pg)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn command(&self, uuid: &str) -> Result<Option<(CommandRecord, Vec<Delivery>)>> {
        self.read(|c| async move {
            let Some(r) = opt(
                &c,
                "SELECT uuid, seq, request_type, created_at, targets, profile, body FROM commands WHERE uuid = $1",
                &[&uuid],
            )
            .await?
            else {
                return Ok(None);
            };
            let rec = command_row(&r)?;
            let sql = format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.command_uuid = $1 ORDER BY d.enrollment");
            let ds = rows(&c, &sql, &[&uuid]).await?;
            let ds = ds.iter().map(|r| delivery_row(r, 0)).collect::<Result<Vec<_>>>()?;
            Ok(Some((rec, ds)))
        })
        .await
    }
}

fn command_row(r: &tokio_postgres::Row) -> Result<CommandRecord> {
    let seq: i64 = r.try_get(1).map_err(pg)?;
    let targets: i64 = r.try_get(4).map_err(pg)?;
    Ok(CommandRecord {
        uuid: r.try_get(0).map_err(pg)?,
        seq: seq as u64,
        request_type: r.try_get(2).map_err(pg)?,
        created_at: r.try_get(3).map_err(pg)?,
        targets: targets as u64,
        profile: opt_json(r, 5)?,
        body: r.try_get(6).map_err(pg)?,
    })
}

async fn consume_in(tx: &Transaction<'_>, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
    let cur: Option<OneTimeSecret> = match opt(
        tx,
        "SELECT data FROM secrets WHERE kind = $1 AND hash = $2 FOR UPDATE",
        &[&(kind as i16), &hash],
    )
    .await?
    {
        Some(r) => Some(json(&r, 0)?),
        None => None,
    };
    let outcome = OneTimeSecret::consume(cur, now);
    if let Consumed::Ok(s) = &outcome {
        put_secret(tx, kind, hash, s).await?;
    }
    Ok(outcome)
}

#[async_trait]
impl PkiStore for PgStore {
    async fn record_cert(&self, cert: IssuedCert) -> Result<()> {
        self.write(move |tx| {
            let cert = cert.clone();
            Box::pin(async move { put_cert(tx, &cert).await })
        })
        .await
    }

    async fn cert_by_hash(&self, sha256: &str) -> Result<Option<IssuedCert>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM certs WHERE sha256 = $1", &[&sha256])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn cert_by_serial(&self, serial: &str) -> Result<Option<IssuedCert>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM certs WHERE serial = $1", &[&serial])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn certs(&self, after: Option<String>, limit: usize) -> Result<Vec<IssuedCert>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let r = match &after {
                Some(a) => {
                    rows(
                        &c,
                        "SELECT data FROM certs WHERE serial > $1 ORDER BY serial LIMIT $2",
                        &[a, &limit],
                    )
                    .await?
                }
                None => rows(&c, "SELECT data FROM certs ORDER BY serial LIMIT $1", &[&limit]).await?,
            };
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }

    async fn revoke_cert(&self, serial: &str, now: i64) -> Result<bool> {
        let serial = serial.to_owned();
        self.write(move |tx| {
            let serial = serial.clone();
            Box::pin(async move {
                let Some(r) = opt(tx, "SELECT data FROM certs WHERE serial = $1 FOR UPDATE", &[&serial]).await? else {
                    return Ok(false);
                };
                let mut c: IssuedCert = json(&r, 0)?;
                if c.revoked_at.is_none() {
                    c.revoked_at = Some(now);
                    put_cert(tx, &c).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn add_secret(&self, kind: SecretKind, hash: &str, rec: OneTimeSecret) -> Result<()> {
        let hash = hash.to_owned();
        self.write(move |tx| {
            let (hash, rec) = (hash.clone(), rec.clone());
            Box::pin(async move { put_secret(tx, kind, &hash, &rec).await })
        })
        .await
    }

    async fn prune_secrets(&self, expired_before: i64, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                exec(
                    tx,
                    "DELETE FROM secrets WHERE (kind, hash) IN (SELECT kind, hash FROM secrets \
                     WHERE (data->>'expires_at')::bigint < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&expired_before, &limit],
                )
                .await
            })
        })
        .await
    }

    async fn secret(&self, kind: SecretKind, hash: &str) -> Result<Option<OneTimeSecret>> {
        self.read(|c| async move {
            opt(
                &c,
                "SELECT data FROM secrets WHERE kind = $1 AND hash = $2",
                &[&(kind as i16), &hash],
            )
            .await?
            .map(|r| json(&r, 0))
            .transpose()
        })
        .await
    }

    async fn consume_secret(&self, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write(move |tx| {
            let hash = hash.clone();
            Box::pin(async move { consume_in(tx, kind, &hash, now).await })
        })
        .await
    }

    async fn record_cert_consuming(&self, cert: IssuedCert, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write(move |tx| {
            let (hash, cert) = (hash.clone(), cert.clone());
            Box::pin(async move {
                let outcome = consume_in(tx, kind, &hash, now).await?;
                if let Consumed::Ok(_) = &outcome {
                    put_cert(tx, &cert).await?;
                }
                Ok(outcome)
            })
        })
        .await
    }
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn put_template(&self, t: ProfileTemplate) -> Result<Option<ProfileTemplate>> {
        self.write(move |tx| {
            let t = t.clone();
            Box::pin(async move {
                let old: Option<ProfileTemplate> =
                    match opt(tx, "SELECT data FROM templates WHERE identifier = $1 FOR UPDATE", &[&t.identifier]).await? {
                        Some(r) => Some(json(&r, 0)?),
                        None => None,
                    };
                let t = ProfileTemplate {
                    created_at: old.as_ref().map_or(t.created_at, |o| o.created_at),
                    ..t
                };
                exec(
                    tx,
                    "INSERT INTO templates (identifier, data) VALUES ($1, $2) ON CONFLICT (identifier) DO UPDATE SET data = EXCLUDED.data",
                    &[&t.identifier, &to_json(&t)?],
                )
                .await?;
                Ok(old)
            })
        })
        .await
    }

    async fn template(&self, identifier: &str) -> Result<Option<ProfileTemplate>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM templates WHERE identifier = $1", &[&identifier])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn templates(&self) -> Result<Vec<ProfileTemplate>> {
        self.read(|c| async move {
            let r = rows(&c, "SELECT data FROM templates ORDER BY identifier", &[]).await?;
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }

    async fn delete_template(&self, identifier: &str) -> Result<bool> {
        let identifier = identifier.to_owned();
        self.write(move |tx| {
            let identifier = identifier.clone();
            Box::pin(async move { Ok(exec(tx, "DELETE FROM templates WHERE identifier = $1", &[&identifier]).await? > 0) })
        })
        .await
    }

    async fn device_profiles(&self, enrollment: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT enrollment, identifier, data FROM device_profiles WHERE enrollment = $1 ORDER BY identifier",
                &[&enrollment],
            )
            .await?;
            r.iter().map(device_profile_row).collect()
        })
        .await
    }

    async fn profile_devices(&self, identifier: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT enrollment, identifier, data FROM device_profiles WHERE identifier = $1 ORDER BY enrollment",
                &[&identifier],
            )
            .await?;
            r.iter().map(device_profile_row).collect()
        })
        .await
    }

    async fn reconcile_profiles(&self, enrollment: &str, installed: Vec<String>, now: i64) -> Result<u64> {
        let enrollment = enrollment.to_owned();
        self.write(move |tx| {
            let (enrollment, installed) = (enrollment.clone(), installed.clone());
            Box::pin(async move {
                let current = rows(
                    tx,
                    "SELECT enrollment, identifier, data FROM device_profiles WHERE enrollment = $1 ORDER BY identifier FOR UPDATE",
                    &[&enrollment],
                )
                .await?;
                let mut n = 0;
                for r in &current {
                    let mut dp = device_profile_row(r)?;
                    if dp.reconcile(&installed, now) {
                        let ident = dp.identifier.clone();
                        put_device_profile(tx, &enrollment, &ident, &dp).await?;
                        n += 1;
                    }
                }
                Ok(n)
            })
        })
        .await
    }
}

fn device_profile_row(r: &tokio_postgres::Row) -> Result<DeviceProfile> {
    let mut dp: DeviceProfile = json(r, 2)?;
    dp.enrollment = r.try_get(0).map_err(pg)?;
    dp.identifier = r.try_get(1).map_err(pg)?;
    Ok(dp)
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        // Not batched: a lease is a promise about time, answered at once.
        self.read(|c| async move {
            let r = opt(
                &c,
                "INSERT INTO leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at_ms = EXCLUDED.expires_at_ms WHERE leases.holder = EXCLUDED.holder OR leases.expires_at_ms <= $4 RETURNING holder",
                &[&name, &holder, &(now_ms + ttl_ms), &now_ms],
            )
            .await?;
            Ok(r.is_some())
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.read(|c| async move {
            exec(&c, "DELETE FROM leases WHERE name = $1 AND holder = $2", &[&name, &holder]).await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SettingsStore for PgStore {
    async fn setting(&self, name: &str) -> Result<Option<Setting>> {
        self.read(|c| async move {
            let r = opt(&c, "SELECT value, updated_at, version FROM settings WHERE name = $1", &[&name]).await?;
            Ok(r.map(|r| Setting {
                value: r.get(0),
                updated_at: r.get(1),
                version: r.get::<_, i64>(2) as u64,
            }))
        })
        .await
    }

    async fn put_setting(&self, name: &str, value: Vec<u8>, now: i64) -> Result<u64> {
        let name = name.to_owned();
        self.write(move |tx| {
            let (name, value) = (name.clone(), value.clone());
            Box::pin(async move {
                let r = one(
                    tx,
                    "INSERT INTO settings (name, value, updated_at, version) VALUES ($1, $2, $3, 1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, version = settings.version + 1 RETURNING version",
                    &[&name, &value, &now],
                )
                .await?;
                Ok(r.get::<_, i64>(0) as u64)
            })
        })
        .await
    }

    async fn setting_or_insert(&self, name: &str, value: Vec<u8>, now: i64) -> Result<Setting> {
        let name = name.to_owned();
        self.write(move |tx| {
            let (name, value) = (name.clone(), value.clone());
            Box::pin(async move {
                exec(
                    tx,
                    "INSERT INTO settings (name, value, updated_at, version) VALUES ($1, $2, $3, 1) ON CONFLICT (name) DO NOTHING",
                    &[&name, &value, &now],
                )
                .await?;
                let r = one(tx, "SELECT value, updated_at, version FROM settings WHERE name = $1", &[&name]).await?;
                Ok(Setting {
                    value: r.get(0),
                    updated_at: r.get(1),
                    version: r.get::<_, i64>(2) as u64,
                })
            })
        })
        .await
    }
}

#[async_trait]
impl CopyStore for PgStore {
    async fn export(&self, table: Table, after: Option<String>, limit: usize) -> Result<Vec<Row>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let c = &c;
            let (a, b) = after.as_deref().map(split_cursor).unwrap_or(("", ""));
            let first = after.is_none();
            let out = match table {
                Table::Settings => rows(
                    c,
                    "SELECT name, value, updated_at, version FROM settings WHERE $1 OR name > $2 ORDER BY name LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Setting {
                        name: r.get(0),
                        setting: Setting {
                            value: r.get(1),
                            updated_at: r.get(2),
                            version: r.get::<_, i64>(3) as u64,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::Certs => rows(
                    c,
                    "SELECT data FROM certs WHERE $1 OR sha256 > $2 ORDER BY sha256 LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Cert(json(r, 0)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Secrets => {
                    let kind: i16 = a.parse().unwrap_or(0);
                    rows(
                        c,
                        "SELECT kind, hash, data FROM secrets WHERE $1 OR (kind, hash) > ($2, $3) ORDER BY kind, hash LIMIT $4",
                        &[&first, &kind, &b, &limit],
                    )
                    .await?
                    .iter()
                    .filter_map(|r| {
                        let kind = SecretKind::from_u8(r.get::<_, i16>(0) as u8)?;
                        Some(json(r, 2).map(|secret| Row::Secret {
                            kind,
                            hash: r.get(1),
                            secret,
                        }))
                    })
                    .collect::<Result<Vec<_>>>()?
                }
                Table::Enrollments => rows(
                    c,
                    "SELECT data FROM enrollments WHERE $1 OR id > $2 ORDER BY id LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Enrollment(json(r, 0)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Templates => rows(
                    c,
                    "SELECT data FROM templates WHERE $1 OR identifier > $2 ORDER BY identifier LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Template(json(r, 0)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Commands => rows(
                    c,
                    "SELECT uuid, seq, request_type, created_at, targets, profile, body FROM commands WHERE $1 OR uuid > $2 ORDER BY uuid LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| Ok(Row::Command(command_row(r)?)))
                .collect::<Result<Vec<_>>>()?,
                Table::Deliveries => {
                    let sql = format!(
                        "SELECT {DELIVERY_COLS}, d.command_uuid FROM deliveries d WHERE $1 OR (d.command_uuid, d.enrollment) > ($2, $3) ORDER BY d.command_uuid, d.enrollment LIMIT $4"
                    );
                    rows(c, &sql, &[&first, &a, &b, &limit])
                        .await?
                        .iter()
                        .map(|r| {
                            let delivery = delivery_row(r, 0)?;
                            Ok(Row::Delivery {
                                command_uuid: r.try_get(8).map_err(pg)?,
                                enrollment: delivery.enrollment.clone(),
                                delivery,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                }
                Table::Records => rows(
                    c,
                    "SELECT collection, key, version, updated_at, value FROM records WHERE $1 OR (collection, key) > ($2, $3) ORDER BY collection, key LIMIT $4",
                    &[&first, &a, &b, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Record {
                        collection: r.try_get(0).map_err(pg)?,
                        key: r.try_get(1).map_err(pg)?,
                        record: record_row(r, 2)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::Inventory => rows(
                    c,
                    "SELECT enrollment, data FROM inventory WHERE $1 OR (enrollment, kind) > ($2, $3) ORDER BY enrollment, kind LIMIT $4",
                    &[&first, &a, &b, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Inventory {
                        enrollment: r.try_get(0).map_err(pg)?,
                        item: json(r, 1)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::Compliance => rows(
                    c,
                    "SELECT enrollment, data FROM compliance WHERE $1 OR enrollment > $2 ORDER BY enrollment LIMIT $3",
                    &[&first, &a, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(Row::Compliance {
                        enrollment: r.try_get(0).map_err(pg)?,
                        record: json(r, 1)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
                Table::DeviceProfiles => rows(
                    c,
                    "SELECT enrollment, identifier, data FROM device_profiles WHERE $1 OR (enrollment, identifier) > ($2, $3) ORDER BY enrollment, identifier LIMIT $4",
                    &[&first, &a, &b, &limit],
                )
                .await?
                .iter()
                .map(|r| {
                    let profile = device_profile_row(r)?;
                    Ok(Row::DeviceProfile {
                        enrollment: profile.enrollment.clone(),
                        identifier: profile.identifier.clone(),
                        profile,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            };
            Ok(out)
        })
        .await
    }

    async fn import(&self, rows_in: Vec<Row>) -> Result<()> {
        self.write(move |tx| Box::pin(import_tx(tx, rows_in.clone()))).await
    }

    fn describe(&self) -> String {
        format!("PostgreSQL at {}", self.url_shown)
    }
}

async fn put_inventory_row(tx: &Transaction<'_>, id: &str, item: &InventoryItem) -> Result<()> {
    exec(
        tx,
        "INSERT INTO inventory (enrollment, kind, reported_at, data) VALUES ($1, $2, $3, $4) ON CONFLICT (enrollment, kind) DO UPDATE SET reported_at = EXCLUDED.reported_at, data = EXCLUDED.data",
        &[&id, &item.kind, &item.reported_at, &to_json(item)?],
    )
    .await?;
    Ok(())
}

async fn put_compliance_row(tx: &Transaction<'_>, id: &str, rec: &ComplianceRecord) -> Result<()> {
    exec(
        tx,
        "INSERT INTO compliance (enrollment, state, data) VALUES ($1, $2, $3) ON CONFLICT (enrollment) DO UPDATE SET state = EXCLUDED.state, data = EXCLUDED.data",
        &[&id, &rec.state.as_str(), &to_json(rec)?],
    )
    .await?;
    Ok(())
}

async fn enrollment_exists(tx: &Transaction<'_>, id: &str) -> Result<bool> {
    Ok(opt(tx, "SELECT 1 FROM enrollments WHERE id = $1", &[&id]).await?.is_some())
}

#[async_trait]
impl InventoryStore for PgStore {
    async fn put_inventory(&self, id: &str, item: InventoryItem) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (id, item) = (id.clone(), item.clone());
            Box::pin(async move {
                if !enrollment_exists(tx, &id).await? {
                    return Ok(false);
                }
                put_inventory_row(tx, &id, &item).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn inventory(&self, id: &str) -> Result<Vec<InventoryItem>> {
        self.read(|c| async move {
            let r = rows(&c, "SELECT data FROM inventory WHERE enrollment = $1 ORDER BY kind", &[&id]).await?;
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }

    async fn find(&self, key: LookupKey, value: &str) -> Result<Vec<String>> {
        let v = key.normalize(value);
        if v.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT DISTINCT enrollment FROM lookups WHERE key = $1 AND value = $2 ORDER BY enrollment",
                &[&(key as i16), &v],
            )
            .await?;
            Ok(r.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    async fn set_compliance(&self, id: &str, rec: ComplianceRecord) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let (id, rec) = (id.clone(), rec.clone());
            Box::pin(async move {
                if !enrollment_exists(tx, &id).await? {
                    return Ok(false);
                }
                put_compliance_row(tx, &id, &rec).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn compliance(&self, id: &str) -> Result<Option<ComplianceRecord>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM compliance WHERE enrollment = $1", &[&id])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn by_compliance(&self, state: ComplianceState, after: Option<String>, limit: usize) -> Result<Vec<String>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let first = after.is_none();
            let a = after.clone().unwrap_or_default();
            let r = rows(
                &c,
                "SELECT enrollment FROM compliance WHERE state = $1 AND ($2 OR enrollment > $3) ORDER BY enrollment LIMIT $4",
                &[&state.as_str(), &first, &a, &limit],
            )
            .await?;
            Ok(r.iter().map(|r| r.get(0)).collect())
        })
        .await
    }
}

fn record_row(r: &tokio_postgres::Row, at: usize) -> Result<Record> {
    Ok(Record {
        version: r.try_get::<_, i64>(at).map_err(pg)? as u64,
        updated_at: r.try_get(at + 1).map_err(pg)?,
        value: r.try_get(at + 2).map_err(pg)?,
    })
}

#[async_trait]
impl RecordStore for PgStore {
    async fn record(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        self.read(|c| async move {
            opt(
                &c,
                "SELECT version, updated_at, value FROM records WHERE collection = $1 AND key = $2",
                &[&collection, &key],
            )
            .await?
            .map(|r| record_row(&r, 0))
            .transpose()
        })
        .await
    }

    async fn records(&self, collection: &str) -> Result<Vec<(String, Record)>> {
        self.read(|c| async move {
            rows(
                &c,
                "SELECT key, version, updated_at, value FROM records WHERE collection = $1 ORDER BY key",
                &[&collection],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(pg)?, record_row(r, 1)?)))
            .collect()
        })
        .await
    }

    async fn put_record(
        &self,
        collection: &str,
        key: &str,
        value: serde_json::Value,
        now: i64,
        expect: Option<u64>,
    ) -> Result<Option<u64>> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        self.write(move |tx| {
            let (collection, key, value) = (collection.clone(), key.clone(), value.clone());
            Box::pin(async move {
                let have = opt(
                    tx,
                    "SELECT version FROM records WHERE collection = $1 AND key = $2 FOR UPDATE",
                    &[&collection, &key],
                )
                .await?
                .map_or(0, |r| r.get::<_, i64>(0) as u64);
                if expect.is_some_and(|e| e != have) {
                    return Ok(None);
                }
                let v = (have + 1) as i64;
                exec(
                    tx,
                    "INSERT INTO records (collection, key, version, updated_at, value) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (collection, key) DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, value = EXCLUDED.value",
                    &[&collection, &key, &v, &now, &value],
                )
                .await?;
                Ok(Some(v as u64))
            })
        })
        .await
    }

    async fn delete_record(&self, collection: &str, key: &str, expect: Option<u64>) -> Result<bool> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        self.write(move |tx| {
            let (collection, key) = (collection.clone(), key.clone());
            Box::pin(async move {
                let n = match expect {
                    Some(v) => {
                        exec(
                            tx,
                            "DELETE FROM records WHERE collection = $1 AND key = $2 AND version = $3",
                            &[&collection, &key, &(v as i64)],
                        )
                        .await?
                    }
                    None => exec(tx, "DELETE FROM records WHERE collection = $1 AND key = $2", &[&collection, &key]).await?,
                };
                Ok(n > 0)
            })
        })
        .await
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

async fn put_events(tx: &Transaction<'_>, events: &[OutboxEvent]) -> Result<()> {
    for e in events {
        exec(
            tx,
            "INSERT INTO outbox (next_at, data) VALUES ($1, $2)",
            &[&e.next_at, &to_json(e)?],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn add_events(&self, events: Vec<OutboxEvent>) -> Result<()> {
        self.write(move |tx| {
            let events = events.clone();
            Box::pin(async move { put_events(tx, &events).await })
        })
        .await
    }

    async fn due_events(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT seq, data FROM outbox WHERE next_at <= $1 ORDER BY seq LIMIT $2",
                &[&now_ms, &limit],
            )
            .await?;
            r.iter()
                .map(|row| {
                    Ok(OutboxEntry {
                        seq: row.get::<_, i64>(0) as u64,
                        event: json(row, 1)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn remove_event(&self, seq: u64) -> Result<()> {
        let seq = seq as i64;
        self.write(move |tx| {
            Box::pin(async move {
                exec(tx, "DELETE FROM outbox WHERE seq = $1", &[&seq]).await?;
                Ok(())
            })
        })
        .await
    }

    async fn retry_event(&self, seq: u64, event: OutboxEvent) -> Result<()> {
        let seq = seq as i64;
        self.write(move |tx| {
            let event = event.clone();
            Box::pin(async move {
                exec(
                    tx,
                    "UPDATE outbox SET next_at = $2, data = $3 WHERE seq = $1",
                    &[&seq, &event.next_at, &to_json(&event)?],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        self.read(|c| async move {
            let r = one(&c, "SELECT count(*), min((data->>'created_at')::bigint) FROM outbox", &[]).await?;
            Ok(OutboxStats {
                depth: r.get::<_, i64>(0).max(0) as u64,
                oldest_created_at: r.get::<_, Option<i64>>(1),
            })
        })
        .await
    }
}
