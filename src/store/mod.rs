//! Storage: small role traits (check-in state, command queue, certificates,
//! profiles, leases, settings, inventory, records, the webhook outbox, copy)
//! and their two backends, `redb` (embedded) and `postgres` (several
//! instances on one database), each a folder with one file per role. Every
//! trait method is one transaction; nothing relies on in-process locks for
//! queue order. The rules both backends apply are written once in `model`;
//! the backends only read and write rows. `tests/store.rs` is the contract.

pub mod copy;
pub mod model;
pub mod postgres;
pub mod redb;

pub use model::*;

use async_trait::async_trait;
use thiserror::Error;

/// A storage failure, with its cause. Callers show it as "storage
/// unavailable" (HTTP 503) and log it with its chain of sources.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A failure described in words, without an underlying error (the
    /// database did not answer in time, a compare-and-set kept losing).
    #[error("database error: {0}")]
    Db(String),
    /// The embedded database (redb) failed.
    #[error("database error: {0}")]
    Redb(#[from] ::redb::Error),
    /// PostgreSQL failed: the server's own message and code when it sent one.
    #[error("database error: {}", postgres_message(.0))]
    Postgres(#[source] tokio_postgres::Error),
    /// No connection to PostgreSQL could be had from the pool.
    #[error("database unavailable: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),
    /// The store could not be set up (a bad URL, TLS, the pool): what, and why.
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The operating system refused (e.g. starting the writer thread).
    #[error("database error: {0}")]
    Io(#[source] std::io::Error),
    /// A stored record does not decode (or a value does not encode).
    #[error("stored record is corrupt: {0}")]
    Codec(#[from] serde_json::Error),
    /// A stored record is not what it should be, in words.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The failure of a group commit, shared by every write in it.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    #[error("store is shutting down")]
    Closed,
}

impl StoreError {
    /// The PostgreSQL SQLSTATE of the failure, if the server sent one.
    pub fn sql_state(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            StoreError::Postgres(e) => e.code(),
            StoreError::Shared(e) => e.sql_state(),
            _ => None,
        }
    }
}

/// The server's own message and code are more useful than "db error".
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(e)
    }
}

macro_rules! redb_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Redb(e.into()) }
        }
    )*};
}
redb_err!(
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError
);

pub type Result<T> = std::result::Result<T, StoreError>;

/// Enrollment lifecycle: Authenticate, TokenUpdate, CheckOut, bootstrap token.
#[async_trait]
pub trait CheckinStore: Send + Sync {
    /// Create or reset an enrollment. Unless `keep_queue`, pending commands of
    /// the device and all of its user channels are cleared.
    /// If `rec.cert_hash` is set, the certificate is bound to this enrollment in
    /// the same transaction, unless it is bound to another one already.
    async fn authenticate(&self, rec: Enrollment, keep_queue: bool) -> Result<AuthOutcome>;
    /// Note that the enrollment profile was re-sent to renew the identity.
    async fn mark_renewal(&self, id: &str, now: i64) -> Result<()>;
    /// Store push info and mark the channel active. Returns whether commands are pending.
    /// A device channel must exist (Authenticate first); a user channel is created.
    async fn token_update(&self, id: &str, parent: &str, update: TokenUpdateRecord) -> Result<Option<bool>>;
    /// Mark the enrollment (and its user channels) checked out. Returns false if unknown.
    async fn checkout(&self, id: &str, now: i64) -> Result<bool>;
    /// Escrow (or with `None` delete) the bootstrap token (already sealed). Returns false if unknown.
    async fn set_bootstrap_token(&self, id: &str, sealed: Option<String>, now: i64) -> Result<bool>;
    /// Merge facts a device reported (DeviceInformation). Returns false if unknown.
    async fn update_info(&self, id: &str, info: DeviceInfo) -> Result<bool>;
    /// Set (or with an empty value remove) admin attributes. Returns the result, or None if unknown.
    async fn set_attributes(
        &self,
        id: &str,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>>;
    /// Replace sealed tokens where they still hold the old value. Returns how many changed.
    async fn reseal_tokens(&self, updates: Vec<Reseal>) -> Result<u64>;
    /// Note a refused attempt to re-enroll the device with another identity.
    async fn note_refused_reenroll(&self, id: &str, now: i64) -> Result<()>;
    /// Record push outcomes (batched), each only where the token is still current.
    async fn record_pushes(&self, records: Vec<PushRecord>) -> Result<()>;
    /// Record a check-in that changes nothing else (last check-in time).
    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<()>;
    async fn enrollment(&self, id: &str) -> Result<Option<Enrollment>>;
    /// What every device request checks first, read together (one read
    /// transaction on redb, one round trip on PostgreSQL): the record of the
    /// certificate with this SHA-256 and the enrollment `id`.
    async fn identity_and_enrollment(&self, cert_sha256: &str, id: &str) -> Result<(Option<IssuedCert>, Option<Enrollment>)>;
    /// Enrollments ordered by id, strictly after `after`.
    async fn enrollments(&self, after: Option<String>, limit: usize) -> Result<Vec<Enrollment>>;
    /// Enrollments on record and commands pending across all of them (metrics).
    async fn counts(&self) -> Result<StoreCounts>;
}

/// Sizes for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub enrollments: u64,
    pub pending_commands: u64,
}

/// The per-enrollment command queue and results.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Store one command and queue it for every known target, in one transaction.
    /// A command with a profile tag supersedes a still-pending command of the
    /// same profile on each target and records the profile as pending there.
    async fn enqueue(&self, cmd: CommandRecord, targets: Vec<String>) -> Result<EnqueueOutcome>;
    /// Store per-device commands (each for its one target) and the single-use
    /// secrets they carry, all in one transaction, with the same profile rules.
    async fn enqueue_each(
        &self,
        items: Vec<(CommandRecord, String)>,
        secrets: Vec<(SecretKind, String, OneTimeSecret)>,
    ) -> Result<EnqueueOutcome>;
    /// The first pending command; with `skip_not_now`, commands that got NotNow are skipped.
    async fn next_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>>;
    /// Apply a device's report and return the next command (NotNow'ed ones skipped), in one transaction.
    async fn report(&self, id: &str, report: ReportRecord) -> Result<(ReportOutcome, Option<QueuedCommand>)>;
    /// Clear pending commands of one enrollment. Returns how many.
    async fn clear_queue(&self, id: &str, now: i64) -> Result<u64>;
    async fn device_commands(&self, id: &str, limit: usize) -> Result<Vec<DeviceCommand>>;
    async fn command(&self, uuid: &str) -> Result<Option<(CommandRecord, Vec<Delivery>)>>;
    /// Settle the open fan-outs queued before `queued_before` (Unix seconds):
    /// their still-pending targets get ordinary queue entries. Nothing a
    /// device or an admin sees changes. Returns how many settled. A backend
    /// that settles as it goes (redb) has nothing to do here.
    async fn settle_fanouts(&self, queued_before: i64) -> Result<u64> {
        let _ = queued_before;
        Ok(0)
    }
}

/// Issued certificates, SCEP challenges and enrollment invitations.
#[async_trait]
pub trait PkiStore: Send + Sync {
    async fn record_cert(&self, cert: IssuedCert) -> Result<()>;
    async fn cert_by_hash(&self, sha256: &str) -> Result<Option<IssuedCert>>;
    async fn cert_by_serial(&self, serial: &str) -> Result<Option<IssuedCert>>;
    async fn certs(&self, after: Option<String>, limit: usize) -> Result<Vec<IssuedCert>>;
    /// Returns false if no such certificate.
    async fn revoke_cert(&self, serial: &str, now: i64) -> Result<bool>;
    /// Store a single-use secret by the SHA-256 of its value.
    async fn add_secret(&self, kind: SecretKind, hash: &str, rec: OneTimeSecret) -> Result<()>;
    /// Read a secret without using it.
    async fn secret(&self, kind: SecretKind, hash: &str) -> Result<Option<OneTimeSecret>>;
    /// Use a secret once: durable before it returns `Ok`.
    async fn consume_secret(&self, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed>;
    /// Use the secret that authorized `cert` and record the certificate, in one
    /// durable transaction (a SCEP issuance is one commit): `Consumed::Ok` with
    /// both written, or the secret's outcome with nothing written.
    async fn record_cert_consuming(&self, cert: IssuedCert, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed>;
    /// Delete up to `limit` single-use secrets of any kind that expired before
    /// `expired_before`; returns how many were deleted.
    async fn prune_secrets(&self, expired_before: i64, limit: usize) -> Result<u64>;
}

/// Profile templates and the state of each profile on each enrollment.
/// (State changes from command results happen inside `QueueStore::report`,
/// in the same transaction as the result.)
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// Store (or replace) a template by identifier; returns the previous one.
    async fn put_template(&self, t: ProfileTemplate) -> Result<Option<ProfileTemplate>>;
    async fn template(&self, identifier: &str) -> Result<Option<ProfileTemplate>>;
    async fn templates(&self) -> Result<Vec<ProfileTemplate>>;
    /// Returns false if no such template.
    async fn delete_template(&self, identifier: &str) -> Result<bool>;
    /// Every profile mdmd tracks on one enrollment.
    async fn device_profiles(&self, enrollment: &str) -> Result<Vec<DeviceProfile>>;
    /// Every enrollment a profile is tracked on.
    async fn profile_devices(&self, identifier: &str) -> Result<Vec<DeviceProfile>>;
    /// Apply a device's ProfileList (the identifiers it has installed):
    /// installed profiles it no longer has become Missing, missing ones it has
    /// again become Installed. Returns how many changed.
    async fn reconcile_profiles(&self, enrollment: &str, installed: Vec<String>, now: i64) -> Result<u64>;
}

/// Leases: background work (renewal sweep, re-push) runs on one instance at
/// a time, and moves to another when the holder stops renewing.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Take or extend the lease `name` for `holder` until `now_ms + ttl_ms`.
    /// True if `holder` holds it now (it was free, expired, or already its own).
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool>;
    /// Give the lease up early (only if `holder` holds it).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}

/// Small shared settings (push certificate, topic), the same on every instance.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    async fn setting(&self, name: &str) -> Result<Option<Setting>>;
    /// Store a value; returns its new version.
    async fn put_setting(&self, name: &str, value: Vec<u8>, now: i64) -> Result<u64>;
    /// Store `value` unless the setting exists; returns what is stored.
    async fn setting_or_insert(&self, name: &str, value: Vec<u8>, now: i64) -> Result<Setting>;
}

/// Inventory, lookups and compliance: what NAC systems and identity providers ask about.
#[async_trait]
pub trait InventoryStore: Send + Sync {
    /// Replace one kind of an enrollment's inventory. False if the enrollment is unknown.
    async fn put_inventory(&self, id: &str, item: InventoryItem) -> Result<bool>;
    async fn inventory(&self, id: &str) -> Result<Vec<InventoryItem>>;
    /// Device channels whose `key` equals `value` (normalised with `LookupKey::normalize`).
    /// The index follows every enrollment write.
    async fn find(&self, key: LookupKey, value: &str) -> Result<Vec<String>>;
    /// False if the enrollment is unknown.
    async fn set_compliance(&self, id: &str, rec: ComplianceRecord) -> Result<bool>;
    async fn compliance(&self, id: &str) -> Result<Option<ComplianceRecord>>;
    /// Enrollments in a compliance state, ordered by id, strictly after `after`.
    async fn by_compliance(&self, state: ComplianceState, after: Option<String>, limit: usize) -> Result<Vec<String>>;
    /// Set (`Some`) or clear (`None`) when each enrollment is next due for
    /// `kind` (an inventory refresh, a compliance re-evaluation): what a
    /// periodic sweep reads instead of every enrollment. Derived state, not
    /// exported by `db copy` (a sweep rebuilds it). One transaction.
    async fn schedule(&self, kind: &str, items: Vec<(String, Option<i64>)>) -> Result<()>;
    /// Up to `limit` (enrollment, due) of `kind` due at or before `now`, earliest first.
    async fn due(&self, kind: &str, now: i64, limit: usize) -> Result<Vec<(String, i64)>>;
}

/// `InventoryStore::schedule`'s items, each enrollment once (the last wins), in id order.
pub fn schedule_items(items: Vec<(String, Option<i64>)>) -> Vec<(String, Option<i64>)> {
    let m: std::collections::BTreeMap<String, Option<i64>> = items.into_iter().collect();
    m.into_iter().collect()
}

/// Small records in named collections (API accounts, access tokens), each
/// versioned so that instances change them with compare-and-set.
#[async_trait]
pub trait RecordStore: Send + Sync {
    async fn record(&self, collection: &str, key: &str) -> Result<Option<Record>>;
    /// Every record of a collection, ordered by key.
    async fn records(&self, collection: &str) -> Result<Vec<(String, Record)>>;
    /// Write `value` if the record's version is `expect` (0: it must not
    /// exist; None: whatever it is). Returns the new version, or None if
    /// `expect` did not hold (nothing written).
    async fn put_record(&self, collection: &str, key: &str, value: serde_json::Value, now: i64, expect: Option<u64>)
        -> Result<Option<u64>>;
    /// Delete (with the same `expect` rule). False if absent or `expect` did not hold.
    async fn delete_record(&self, collection: &str, key: &str, expect: Option<u64>) -> Result<bool>;
    /// Up to `limit` records of a collection whose keys sort strictly after `after`, in key order.
    async fn records_after(&self, collection: &str, after: Option<String>, limit: usize) -> Result<Vec<(String, Record)>>;
    /// The records of these keys (None where absent), in the order asked.
    async fn records_of(&self, collection: &str, keys: Vec<String>) -> Result<Vec<Option<Record>>>;
    /// Several `put_record`s in one transaction, each with its own `expect`:
    /// the new version of each, or None where its `expect` did not hold
    /// (that one is not written; the others are).
    async fn put_records(&self, writes: Vec<RecordWrite>, now: i64) -> Result<Vec<Option<u64>>>;
}

/// One compare-and-set write of `RecordStore::put_records`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    pub collection: String,
    pub key: String,
    pub value: serde_json::Value,
    /// As `put_record`'s `expect`.
    pub expect: Option<u64>,
}

/// The webhook outbox: events are written with the state change they report
/// (`ReportRecord::events`, `TokenUpdateRecord::events`) or on their own, and
/// removed once delivered.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    async fn add_events(&self, events: Vec<OutboxEvent>) -> Result<()>;
    /// Up to `limit` events whose `next_at` has come, oldest first.
    async fn due_events(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// Delivered (or given up): remove it.
    async fn remove_event(&self, seq: u64) -> Result<()>;
    /// Store a failed attempt: attempts, next time, error.
    async fn retry_event(&self, seq: u64, event: OutboxEvent) -> Result<()>;
    async fn outbox_stats(&self) -> Result<OutboxStats>;
}

/// Moving an installation between backends (`mdmd db copy`).
#[async_trait]
pub trait CopyStore: Send + Sync {
    /// Up to `limit` rows of `table` whose cursor (`Row::cursor`) sorts after
    /// `after` (byte order), in that order.
    async fn export(&self, table: Table, after: Option<String>, limit: usize) -> Result<Vec<Row>>;
    /// Write rows exactly as exported, in one transaction (queues, indexes and
    /// sequences follow). Meant for an empty target.
    async fn import(&self, rows: Vec<Row>) -> Result<()>;
    /// Which backend this is, for messages.
    fn describe(&self) -> String;
}

/// Everything mdmd needs from storage.
pub trait Store:
    CheckinStore + QueueStore + PkiStore + ProfileStore + LeaseStore + SettingsStore + InventoryStore + RecordStore + OutboxStore + CopyStore
{
}
impl<T> Store for T where
    T: CheckinStore
        + QueueStore
        + PkiStore
        + ProfileStore
        + LeaseStore
        + SettingsStore
        + InventoryStore
        + RecordStore
        + OutboxStore
        + CopyStore
{
}
