//! The embedded store on redb, with group commit.
//!
//! One writer thread owns all write transactions. Requests hand it jobs; it
//! runs every job that is waiting in one transaction, commits once (one fsync,
//! `Durability::Immediate`) and only then answers each job. So nothing is
//! acknowledged before it is on disk, and under load one fsync serves many
//! requests. Jobs validate before they write, so a job's "no" writes nothing;
//! a storage error aborts the whole batch and every job in it gets the error.
//! Reads use their own read transactions and never wait for the writer.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use async_trait::async_trait;
use tokio::sync::oneshot;

use super::*;

const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollments");
/// enrollment -> (): which enrollments exist, small enough to stay in the page cache when
/// ENROLLMENTS (whole records) does not; a fan-out checks its targets here.
const ENROLLED: TableDefinition<&str, ()> = TableDefinition::new("enrolled");
/// (enrollment, seq) -> [not_now flag] ++ command uuid; pending commands only.
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// (enrollment, seq) -> command uuid; every command ever queued to the enrollment.
const HISTORY: TableDefinition<(&str, u64), &str> = TableDefinition::new("history");
/// (command uuid, enrollment) -> Delivery (JSON), or empty while untouched
/// since enqueue (then everything is in the command record: seq, time).
const DELIVERIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("deliveries");
const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
/// seq -> open fan-out (`FanOut`): a command whose per-enrollment queue state is only in DELIVERIES.
const FANOUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("fanouts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// sha256 -> IssuedCert (JSON).
const CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("certs");
/// serial (hex) -> sha256.
const CERT_SERIALS: TableDefinition<&str, &str> = TableDefinition::new("cert_serials");
/// (kind, sha256 of the secret) -> OneTimeSecret (JSON).
const SECRETS: TableDefinition<(u8, &str), &[u8]> = TableDefinition::new("secrets");
/// identifier -> ProfileTemplate (JSON).
const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");
/// (enrollment, profile identifier) -> DeviceProfile (JSON).
const DEVICE_PROFILES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("device_profiles");
/// (profile identifier, enrollment) -> (): the index by profile.
const PROFILE_DEVICES: TableDefinition<(&str, &str), ()> = TableDefinition::new("profile_devices");

/// name -> Setting (JSON).
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// name -> (holder, expires at ms) as JSON.
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// (enrollment, kind) -> InventoryItem (JSON).
const INVENTORY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("inventory");
/// enrollment -> ComplianceRecord (JSON).
const COMPLIANCE: TableDefinition<&str, &[u8]> = TableDefinition::new("compliance");
/// (lookup key, normalised value, source enrollment) -> device channel found by it.
const LOOKUPS: TableDefinition<(u8, &str, &str), &str> = TableDefinition::new("lookups");

/// (collection, key) -> Record (JSON).
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// Webhook outbox: seq -> OutboxEvent (JSON).
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Bump when `Enrollment::lookup_keys` changes: the index is rebuilt at open.
const LOOKUPS_VERSION: u64 = 2;
/// Bump when ENROLLED must be rebuilt at open (1: it exists).
const ENROLLED_VERSION: u64 = 1;

const MAX_BATCH: usize = 512;
/// Page cache when none is configured.
pub const DEFAULT_CACHE: usize = 256 << 20;

type Finisher = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> std::result::Result<Finisher, StoreError> + Send>;

pub struct RedbStore {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    fanout: FanoutPolicy,
}

/// When a command without a profile goes to many enrollments, their queue state is written only
/// to DELIVERIES, keyed (command, enrollment) and so one clustered run of the tree, instead of a
/// QUEUE and a HISTORY entry per enrollment spread over those trees: at a large fleet those
/// rewrite nearly every leaf (copy-on-write) in the one transaction. The open fan-outs are few and
/// `next_command` checks each with point lookups; an enrollment's HISTORY entry is written when it
/// finishes the command (or has it cleared). When few enrollments are still pending, the fan-out
/// *settles*: those get ordinary QUEUE and HISTORY entries and the fan-out is closed, so open
/// fan-outs are only recent or still mostly pending ones. Profile commands never fan out (they
/// keep per-enrollment profile state). Exports and imports see only deliveries either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutPolicy {
    /// Commands to at least this many known enrollments fan out.
    pub min_targets: usize,
    /// A fan-out settles when its pending enrollments fall to this or to a quarter of its targets.
    pub settle_at: u64,
    /// At most this many are open: a new one beyond it settles the oldest first, which bounds
    /// the point lookups of every `next_command` when devices stay away for long.
    pub max_open: usize,
}

impl Default for FanoutPolicy {
    fn default() -> Self {
        FanoutPolicy {
            min_targets: 256,
            settle_at: 64,
            max_open: 32,
        }
    }
}

/// An open fan-out: its command and how many of its targets still have it pending.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FanOut {
    targets: u64,
    pending: u64,
    uuid: String,
}

impl FanOut {
    fn enc(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.uuid.len());
        v.extend_from_slice(&self.targets.to_le_bytes());
        v.extend_from_slice(&self.pending.to_le_bytes());
        v.extend_from_slice(self.uuid.as_bytes());
        v
    }

    fn dec(b: &[u8]) -> Result<Self> {
        let bad = || StoreError::Corrupt("fan-out record".into());
        if b.len() < 16 {
            return Err(bad());
        }
        let (t, rest) = b.split_at(8);
        let (p, u) = rest.split_at(8);
        Ok(FanOut {
            targets: u64::from_le_bytes(t.try_into().map_err(|_| bad())?),
            pending: u64::from_le_bytes(p.try_into().map_err(|_| bad())?),
            uuid: std::str::from_utf8(u).map_err(|_| bad())?.to_owned(),
        })
    }

    fn settles(&self, p: FanoutPolicy) -> bool {
        self.pending <= p.settle_at.max(self.targets / 4)
    }
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE)
    }

    /// Open with a page cache of `cache_bytes` (redb's own default is 1 GiB,
    /// which a large fleet's store would fill).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = Arc::new(Database::builder().set_cache_size(cache_bytes).create(path)?);
        {
            let txn = db.begin_write()?;
            txn.open_table(ENROLLMENTS)?;
            txn.open_table(QUEUE)?;
            txn.open_table(HISTORY)?;
            txn.open_table(DELIVERIES)?;
            txn.open_table(COMMANDS)?;
            txn.open_table(FANOUTS)?;
            txn.open_table(META)?;
            txn.open_table(CERTS)?;
            txn.open_table(CERT_SERIALS)?;
            txn.open_table(SECRETS)?;
            txn.open_table(OUTBOX)?;
            txn.open_table(TEMPLATES)?;
            txn.open_table(DEVICE_PROFILES)?;
            txn.open_table(PROFILE_DEVICES)?;
            txn.open_table(SETTINGS)?;
            txn.open_table(LEASES)?;
            txn.open_table(INVENTORY)?;
            txn.open_table(COMPLIANCE)?;
            txn.open_table(RECORDS)?;
            // The lookup index is derived: (re)built when it is older than this code's.
            let built = txn.open_table(META)?.get("lookups_version")?.map(|v| v.value());
            if built != Some(LOOKUPS_VERSION) {
                let all: Vec<Enrollment> = {
                    let t = txn.open_table(ENROLLMENTS)?;
                    let mut v = Vec::new();
                    for item in t.range::<&str>(..)? {
                        let (_, val) = item?;
                        v.push(dec(val.value())?);
                    }
                    v
                };
                let _ = txn.delete_table(LOOKUPS)?;
                let mut l = txn.open_table(LOOKUPS)?;
                for e in &all {
                    for (k, v, target) in e.lookup_keys() {
                        l.insert((k as u8, v.as_str(), e.id.as_str()), target.as_str())?;
                    }
                }
                txn.open_table(META)?.insert("lookups_version", LOOKUPS_VERSION)?;
            }
            // So is the list of enrollment ids (stores from before it get it here, once).
            let built = txn.open_table(META)?.get("enrolled_version")?.map(|v| v.value());
            if built != Some(ENROLLED_VERSION) {
                let t = txn.open_table(ENROLLMENTS)?;
                let mut ids = txn.open_table(ENROLLED)?;
                for item in t.range::<&str>(..)? {
                    let (k, _) = item?;
                    ids.insert(k.value(), ())?;
                }
                txn.open_table(META)?.insert("enrolled_version", ENROLLED_VERSION)?;
            }
            txn.commit()?;
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("mdmd-store-writer".into())
            .spawn(move || writer(wdb, rx))
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(RedbStore {
            db,
            jobs: tx,
            fanout: FanoutPolicy::default(),
        })
    }

    /// The same store with another fan-out policy (tests exercise every path with small ones).
    pub fn with_fanout(mut self, p: FanoutPolicy) -> Self {
        self.fanout = p;
        self
    }

    /// Run `f` in the next group-commit transaction; resolves after the commit.
    pub async fn write<T: Send + 'static>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |txn| {
            let r = f(txn)?;
            Ok(Box::new(move |commit_err: Option<&StoreError>| {
                let _ = tx.send(match commit_err {
                    None => Ok(r),
                    Some(e) => Err(StoreError::Db(e.to_string())),
                });
            }))
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn read<T>(&self, f: impl FnOnce(&::redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read()?;
        f(&txn)
    }
}

fn writer(db: Arc<Database>, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        run_batch(&db, batch);
    }
}

fn run_batch(db: &Database, batch: Vec<Job>) {
    let n = batch.len();
    let started = std::time::Instant::now();
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "cannot begin write transaction");
            // Jobs never ran: dropping them drops their senders and callers see Closed.
            drop(batch);
            let _ = e;
            return;
        }
    };
    let mut finishers = Vec::with_capacity(n);
    let mut failure: Option<StoreError> = None;
    for job in batch {
        if failure.is_some() {
            break; // remaining jobs are dropped: their callers see an error
        }
        match job(&txn) {
            Ok(f) => finishers.push(f),
            Err(e) => failure = Some(e),
        }
    }
    let result = match failure {
        Some(e) => {
            let _ = txn.abort();
            Some(e)
        }
        None => txn.commit().err().map(StoreError::from),
    };
    if let Some(e) = &result {
        tracing::error!(error = %e, jobs = n, "write batch failed");
    } else {
        crate::metrics::get().commit("redb", n, started.elapsed());
    }
    for f in finishers {
        f(result.as_ref());
    }
}

/// A delivery record; an empty value is a pending delivery as enqueued.
fn delivery_from(bytes: &[u8], cmd: Option<&CommandRecord>) -> Result<Delivery> {
    if !bytes.is_empty() {
        return dec(bytes);
    }
    let c = cmd.ok_or_else(|| StoreError::Corrupt("pending delivery without its command".into()))?;
    Ok(Delivery {
        enrollment: String::new(),
        seq: c.seq,
        status: DeliveryStatus::Pending,
        queued_at: c.created_at,
        updated_at: c.created_at,
        not_now_count: 0,
        error_chain: Vec::new(),
        result: None,
    })
}

/// Decode an optional stored JSON value.
fn dec_opt<T: serde::de::DeserializeOwned>(v: Option<::redb::AccessGuard<'_, &[u8]>>) -> Result<Option<T>> {
    v.map(|v| dec(v.value())).transpose()
}

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(v)?)
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

fn queue_value(not_now: bool, uuid: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(uuid.len() + 1);
    v.push(not_now as u8);
    v.extend_from_slice(uuid.as_bytes());
    v
}

fn split_queue_value(v: &[u8]) -> (bool, &str) {
    match v.split_first() {
        Some((flag, rest)) => (*flag == 1, std::str::from_utf8(rest).unwrap_or("")),
        None => (false, ""),
    }
}

/// Upper bound of a prefix range over `id:` user channels.
fn user_channel_range(device: &str) -> (String, String) {
    (format!("{device}:"), format!("{device};"))
}

fn load_command<T: ReadableTable<&'static str, &'static [u8]>>(t: &T, uuid: &str) -> Result<Option<CommandRecord>> {
    match t.get(uuid)? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

/// Where an enrollment stands with an open fan-out: `None` when the command is not pending
/// there (not a target, finished, cleared), else whether it answered NotNow.
fn fanout_state<H, D>(history: &H, deliveries: &D, f: &FanOut, seq: u64, id: &str) -> Result<Option<bool>>
where
    H: ReadableTable<(&'static str, u64), &'static str>,
    D: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    // Finished and cleared enrollments have their history entry; the pending ones do not.
    if history.get((id, seq))?.is_some() {
        return Ok(None);
    }
    let Some(v) = deliveries.get((f.uuid.as_str(), id))? else {
        return Ok(None);
    };
    if v.value().is_empty() {
        return Ok(Some(false));
    }
    let d: Delivery = dec(v.value())?;
    Ok(d.status.is_pending().then_some(d.status == DeliveryStatus::NotNow))
}

/// The tables that hold an enrollment's queue, for reading it (in a read or a write transaction).
struct QueueView<'a, Q, C, H, D, F> {
    queue: &'a Q,
    commands: &'a C,
    history: &'a H,
    deliveries: &'a D,
    fanouts: &'a F,
}

impl<Q, C, H, D, F> QueueView<'_, Q, C, H, D, F>
where
    Q: ReadableTable<(&'static str, u64), &'static [u8]>,
    C: ReadableTable<&'static str, &'static [u8]>,
    H: ReadableTable<(&'static str, u64), &'static str>,
    D: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    F: ReadableTable<u64, &'static [u8]>,
{
    /// (seq, command uuid) of the first pending command, from the queue or an open fan-out.
    fn first(&self, id: &str, skip_not_now: bool) -> Result<Option<(u64, String)>> {
        let mut best: Option<(u64, String)> = None;
        for item in self.queue.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, v) = item?;
            let (not_now, uuid) = split_queue_value(v.value());
            if skip_not_now && not_now {
                continue;
            }
            best = Some((k.value().1, uuid.to_owned()));
            break;
        }
        let until = best.as_ref().map_or(u64::MAX, |b| b.0);
        for item in self.fanouts.range(..until)? {
            let (k, v) = item?;
            let f = FanOut::dec(v.value())?;
            match fanout_state(self.history, self.deliveries, &f, k.value(), id)? {
                Some(not_now) if !(skip_not_now && not_now) => return Ok(Some((k.value(), f.uuid))),
                _ => {}
            }
        }
        Ok(best)
    }

    fn first_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
        let Some((_, uuid)) = self.first(id, skip_not_now)? else {
            return Ok(None);
        };
        Ok(load_command(self.commands, &uuid)?.map(|c| QueuedCommand {
            uuid: c.uuid,
            request_type: c.request_type,
            body: c.body,
        }))
    }

    /// The newest `limit` commands ever queued to the enrollment, oldest first: (seq, uuid).
    fn history(&self, id: &str, limit: usize) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for item in self.history.range((id, 0u64)..=(id, u64::MAX))?.rev().take(limit) {
            let (k, uuid) = item?;
            out.push((k.value().1, uuid.value().to_owned()));
        }
        for item in self.fanouts.iter()? {
            let (k, v) = item?;
            let f = FanOut::dec(v.value())?;
            if fanout_state(self.history, self.deliveries, &f, k.value(), id)?.is_some() {
                out.push((k.value(), f.uuid));
            }
        }
        out.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }
}

/// Split targets into known enrollments and unknown ids.
fn split_known(txn: &WriteTransaction, targets: Vec<String>) -> Result<(Vec<String>, Vec<String>)> {
    let enrollments = txn.open_table(ENROLLED)?;
    let mut known = Vec::with_capacity(targets.len());
    let mut unknown = Vec::new();
    for t in targets {
        if enrollments.get(t.as_str())?.is_some() {
            known.push(t);
        } else {
            unknown.push(t);
        }
    }
    Ok((known, unknown))
}

/// The tables the queue writes, opened once per transaction.
struct QueueTables<'t> {
    meta: ::redb::Table<'t, &'static str, u64>,
    commands: ::redb::Table<'t, &'static str, &'static [u8]>,
    queue: ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    history: ::redb::Table<'t, (&'static str, u64), &'static str>,
    deliveries: ::redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    fanouts: ::redb::Table<'t, u64, &'static [u8]>,
    device_profiles: ::redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    profile_devices: ::redb::Table<'t, (&'static str, &'static str), ()>,
    policy: FanoutPolicy,
}

type WriteView<'a, 't> = QueueView<
    'a,
    ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    ::redb::Table<'t, &'static str, &'static [u8]>,
    ::redb::Table<'t, (&'static str, u64), &'static str>,
    ::redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    ::redb::Table<'t, u64, &'static [u8]>,
>;

impl<'t> QueueTables<'t> {
    fn open(txn: &'t WriteTransaction, policy: FanoutPolicy) -> Result<Self> {
        Ok(QueueTables {
            meta: txn.open_table(META)?,
            commands: txn.open_table(COMMANDS)?,
            queue: txn.open_table(QUEUE)?,
            history: txn.open_table(HISTORY)?,
            deliveries: txn.open_table(DELIVERIES)?,
            fanouts: txn.open_table(FANOUTS)?,
            device_profiles: txn.open_table(DEVICE_PROFILES)?,
            profile_devices: txn.open_table(PROFILE_DEVICES)?,
            policy,
        })
    }

    fn view(&self) -> WriteView<'_, 't> {
        QueueView {
            queue: &self.queue,
            commands: &self.commands,
            history: &self.history,
            deliveries: &self.deliveries,
            fanouts: &self.fanouts,
        }
    }

    fn next_seq(&mut self) -> Result<u64> {
        let seq = self.meta.get("seq")?.map(|v| v.value()).unwrap_or(0) + 1;
        self.meta.insert("seq", seq)?;
        Ok(seq)
    }

    /// Store a command and queue it for known enrollments (sorted): as a fan-out when the
    /// policy says so, else with per-enrollment queue entries.
    fn enqueue(&mut self, rec: &mut CommandRecord, known: &[String]) -> Result<()> {
        rec.targets = known.len() as u64;
        rec.seq = self.next_seq()?;
        self.commands.insert(rec.uuid.as_str(), enc(&*rec)?.as_slice())?;
        if rec.profile.is_none() && !known.is_empty() && known.len() >= self.policy.min_targets {
            use ::redb::ReadableTableMetadata as _;
            while self.fanouts.len()? as usize >= self.policy.max_open.max(1) {
                let oldest = match self.fanouts.first()? {
                    Some((k, v)) => (k.value(), FanOut::dec(v.value())?),
                    None => break,
                };
                self.settle(oldest.0, &oldest.1)?;
            }
            for id in known {
                self.deliveries.insert((rec.uuid.as_str(), id.as_str()), &[][..])?;
            }
            let f = FanOut {
                targets: rec.targets,
                pending: rec.targets,
                uuid: rec.uuid.clone(),
            };
            self.fanouts.insert(rec.seq, f.enc().as_slice())?;
            return Ok(());
        }
        for id in known {
            self.queue_one(rec, id)?;
        }
        Ok(())
    }

    /// Queue a stored command for one known enrollment.
    fn queue_one(&mut self, rec: &CommandRecord, id: &str) -> Result<()> {
        if let Some(tag) = &rec.profile {
            self.track_profile(rec, tag, id)?;
        }
        self.queue.insert((id, rec.seq), queue_value(false, &rec.uuid).as_slice())?;
        self.history.insert((id, rec.seq), rec.uuid.as_str())?;
        // Empty: pending as enqueued (see `delivery_from`).
        self.deliveries.insert((rec.uuid.as_str(), id), &[][..])?;
        Ok(())
    }

    /// The open fan-out a delivery belongs to, if any.
    fn fanout_of(&self, seq: u64, uuid: &str) -> Result<Option<FanOut>> {
        let f = match self.fanouts.get(seq)? {
            Some(v) => FanOut::dec(v.value())?,
            None => return Ok(None),
        };
        Ok((f.uuid == uuid).then_some(f))
    }

    /// One enrollment of an open fan-out is no longer pending (its delivery is already
    /// updated): record it in the enrollment's history and settle the fan-out when due.
    fn fanout_done(&mut self, seq: u64, mut f: FanOut, id: &str) -> Result<()> {
        self.history.insert((id, seq), f.uuid.as_str())?;
        f.pending = f.pending.saturating_sub(1);
        if f.settles(self.policy) {
            self.settle(seq, &f)
        } else {
            self.fanouts.insert(seq, f.enc().as_slice())?;
            Ok(())
        }
    }

    /// Give the enrollments still pending on a fan-out ordinary queue and history entries, and close it.
    fn settle(&mut self, seq: u64, f: &FanOut) -> Result<()> {
        let mut rest = Vec::new();
        for item in self.deliveries.range((f.uuid.as_str(), "")..)? {
            let (k, v) = item?;
            let (uuid, id) = k.value();
            if uuid != f.uuid {
                break;
            }
            if self.history.get((id, seq))?.is_some() {
                continue;
            }
            let not_now = if v.value().is_empty() {
                false
            } else {
                let d: Delivery = dec(v.value())?;
                if !d.status.is_pending() {
                    continue;
                }
                d.status == DeliveryStatus::NotNow
            };
            rest.push((id.to_owned(), not_now));
        }
        for (id, not_now) in &rest {
            self.queue.insert((id.as_str(), seq), queue_value(*not_now, &f.uuid).as_slice())?;
            self.history.insert((id.as_str(), seq), f.uuid.as_str())?;
        }
        self.fanouts.remove(seq)?;
        Ok(())
    }

    /// Clear the pending commands of one enrollment. Returns how many.
    fn clear(&mut self, id: &str, now: i64) -> Result<u64> {
        let mut drained: Vec<(u64, String, Option<FanOut>)> = self
            .queue
            .range((id, 0u64)..=(id, u64::MAX))?
            .map(|r| r.map(|(k, v)| (k.value().1, split_queue_value(v.value()).1.to_owned(), None)))
            .collect::<std::result::Result<_, _>>()?;
        for item in self.fanouts.iter()? {
            let (k, v) = item?;
            let f = FanOut::dec(v.value())?;
            if fanout_state(&self.history, &self.deliveries, &f, k.value(), id)?.is_some() {
                drained.push((k.value(), f.uuid.clone(), Some(f)));
            }
        }
        let n = drained.len() as u64;
        for (seq, uuid, fanout) in drained {
            self.queue.remove((id, seq))?;
            let updated = match self.deliveries.get((uuid.as_str(), id))? {
                Some(v) => {
                    let mut d = delivery_from(v.value(), load_command(&self.commands, &uuid)?.as_ref())?;
                    d.status = DeliveryStatus::Cleared;
                    d.updated_at = now;
                    Some(enc(&d)?)
                }
                None => None,
            };
            if let Some(b) = updated {
                self.deliveries.insert((uuid.as_str(), id), b.as_slice())?;
            }
            if let Some(f) = fanout {
                // Re-read: settling an earlier fan-out does not touch this one, but keep the count exact.
                let f = self.fanout_of(seq, &f.uuid)?.unwrap_or(f);
                self.fanout_done(seq, f, id)?;
            }
        }
        Ok(n)
    }

    /// A newer command for a profile supersedes the pending one, and the
    /// profile is pending (install or removal) on the enrollment.
    fn track_profile(&mut self, rec: &CommandRecord, tag: &ProfileTag, id: &str) -> Result<()> {
        let key = (id, tag.identifier.as_str());
        let old: Option<DeviceProfile> = dec_opt(self.device_profiles.get(key)?)?;
        if let Some(old_uuid) = old.as_ref().and_then(|o| o.command_uuid.clone()) {
            let pending = {
                match self.deliveries.get((old_uuid.as_str(), id))? {
                    Some(v) => {
                        let cmd = load_command(&self.commands, &old_uuid)?;
                        Some(delivery_from(v.value(), cmd.as_ref())?).filter(|d| d.status.is_pending())
                    }
                    None => None,
                }
            };
            if let Some(mut d) = pending {
                self.queue.remove((id, d.seq))?;
                d.status = DeliveryStatus::Superseded;
                d.updated_at = rec.created_at;
                self.deliveries.insert((old_uuid.as_str(), id), enc(&d)?.as_slice())?;
            }
        }
        let dp = DeviceProfile::queued(rec, tag, old);
        self.device_profiles.insert(key, enc(&dp)?.as_slice())?;
        self.profile_devices.insert((tag.identifier.as_str(), id), ())?;
        Ok(())
    }

    /// A profile command finished: record the profile's new state, unless a
    /// newer command for the profile was queued since.
    fn profile_result(&mut self, id: &str, tag: &ProfileTag, uuid: &str, d: &Delivery) -> Result<()> {
        let key = (id, tag.identifier.as_str());
        let cur: Option<DeviceProfile> = dec_opt(self.device_profiles.get(key)?)?;
        let Some(mut dp) = cur else { return Ok(()) };
        if !dp.apply_result(tag, uuid, d) {
            return Ok(());
        }
        self.device_profiles.insert(key, enc(&dp)?.as_slice())?;
        Ok(())
    }
}

/// Clear the pending queue of one enrollment inside a write transaction.
fn clear_pending(txn: &WriteTransaction, policy: FanoutPolicy, id: &str, now: i64) -> Result<u64> {
    QueueTables::open(txn, policy)?.clear(id, now)
}

fn get_enrollment(txn: &WriteTransaction, id: &str) -> Result<Option<Enrollment>> {
    let t = txn.open_table(ENROLLMENTS)?;
    let r = dec_opt(t.get(id)?)?;
    Ok(r)
}

/// Store an enrollment and keep the lookup index in step with it.
fn put_enrollment(txn: &WriteTransaction, e: &Enrollment) -> Result<()> {
    let old: Option<Enrollment> = {
        let mut t = txn.open_table(ENROLLMENTS)?;
        let old = dec_opt(t.get(e.id.as_str())?)?;
        t.insert(e.id.as_str(), enc(e)?.as_slice())?;
        old
    };
    if old.is_none() {
        txn.open_table(ENROLLED)?.insert(e.id.as_str(), ())?;
    }
    let before = old.map(|o| o.lookup_keys()).unwrap_or_default();
    let after = e.lookup_keys();
    if before != after {
        let mut l = txn.open_table(LOOKUPS)?;
        for (k, v, _) in &before {
            l.remove((*k as u8, v.as_str(), e.id.as_str()))?;
        }
        for (k, v, target) in &after {
            l.insert((*k as u8, v.as_str(), e.id.as_str()), target.as_str())?;
        }
    }
    Ok(())
}

#[async_trait]
impl CheckinStore for RedbStore {
    async fn authenticate(&self, rec: Enrollment, keep_queue: bool) -> Result<AuthOutcome> {
        let policy = self.fanout;
        self.write(move |txn| {
            let now = rec.authenticated_at;
            if let Some(h) = &rec.cert_hash {
                let mut certs = txn.open_table(CERTS)?;
                let existing: Option<IssuedCert> = dec_opt(certs.get(h.as_str())?)?;
                if let Some(mut c) = existing {
                    match &c.enrollment {
                        Some(other) if other != &rec.device => return Ok(AuthOutcome::CertBoundElsewhere),
                        Some(_) => {}
                        None => {
                            c.enrollment = Some(rec.device.clone());
                            certs.insert(h.as_str(), enc(&c)?.as_slice())?;
                        }
                    }
                }
            }
            let rec = match get_enrollment(txn, &rec.id)? {
                Some(old) => Enrollment {
                    enrolled_at: old.enrolled_at,
                    ..rec
                },
                None => rec,
            };
            if !keep_queue {
                clear_pending(txn, policy, &rec.id, now)?;
                let (lo, hi) = user_channel_range(&rec.id);
                let users: Vec<String> = {
                    let t = txn.open_table(ENROLLMENTS)?;
                    let v = t
                        .range(lo.as_str()..hi.as_str())?
                        .map(|r| r.map(|(k, _)| k.value().to_owned()))
                        .collect::<std::result::Result<_, _>>()?;
                    v
                };
                for u in users {
                    clear_pending(txn, policy, &u, now)?;
                    if let Some(mut ue) = get_enrollment(txn, &u)? {
                        ue.active = false;
                        put_enrollment(txn, &ue)?;
                    }
                }
            }
            put_enrollment(txn, &rec)?;
            Ok(AuthOutcome::Stored)
        })
        .await
    }

    async fn mark_renewal(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |txn| {
            if let Some(mut e) = get_enrollment(txn, &id)? {
                e.renewal_requested_at = Some(now);
                put_enrollment(txn, &e)?;
            }
            Ok(())
        })
        .await
    }

    async fn token_update(&self, id: &str, parent: &str, mut u: TokenUpdateRecord) -> Result<Option<bool>> {
        let (id, parent) = (id.to_owned(), parent.to_owned());
        let events = std::mem::take(&mut u.events);
        let policy = self.fanout;
        self.write(move |txn| {
            let mut e = match get_enrollment(txn, &id)? {
                Some(e) => e,
                None if id != parent => {
                    // First TokenUpdate of a user channel creates it, under an existing device.
                    let Some(dev) = get_enrollment(txn, &parent)? else {
                        return Ok(None);
                    };
                    dev.new_user_channel(&id, &u)
                }
                None => return Ok(None),
            };
            e.apply_token_update(u);
            put_enrollment(txn, &e)?;
            put_events(txn, &events)?;
            let pending = QueueTables::open(txn, policy)?.view().first(&id, false)?.is_some();
            Ok(Some(pending))
        })
        .await
    }

    async fn checkout(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(false);
            };
            let (lo, hi) = user_channel_range(&id);
            let users: Vec<Enrollment> = {
                let t = txn.open_table(ENROLLMENTS)?;
                let v = t
                    .range(lo.as_str()..hi.as_str())?
                    .map(|r| r.map(|(_, v)| v.value().to_vec()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                v.iter().map(|b| dec(b)).collect::<Result<_>>()?
            };
            for mut u in users {
                u.active = false;
                u.checked_out_at = Some(now);
                put_enrollment(txn, &u)?;
            }
            e.active = false;
            e.checked_out_at = Some(now);
            e.last_checkin_at = now;
            e.last_seen_at = now;
            put_enrollment(txn, &e)?;
            Ok(true)
        })
        .await
    }

    async fn set_bootstrap_token(&self, id: &str, sealed: Option<String>, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(false);
            };
            e.bootstrap_token = sealed;
            e.last_checkin_at = now;
            e.last_seen_at = now;
            put_enrollment(txn, &e)?;
            Ok(true)
        })
        .await
    }

    async fn update_info(&self, id: &str, info: DeviceInfo) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(false);
            };
            e.info.merge(info);
            put_enrollment(txn, &e)?;
            Ok(true)
        })
        .await
    }

    async fn set_attributes(
        &self,
        id: &str,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(None);
            };
            e.apply_attributes(attrs);
            put_enrollment(txn, &e)?;
            Ok(Some(e.attributes))
        })
        .await
    }

    async fn reseal_tokens(&self, updates: Vec<Reseal>) -> Result<u64> {
        self.write(move |txn| {
            let mut n = 0;
            for u in updates {
                let Some(mut e) = get_enrollment(txn, &u.id)? else { continue };
                if e.apply_reseal(u) {
                    put_enrollment(txn, &e)?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn note_refused_reenroll(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |txn| {
            if let Some(mut e) = get_enrollment(txn, &id)? {
                e.refused_reenroll_at = Some(now);
                e.refused_reenroll_count += 1;
                put_enrollment(txn, &e)?;
            }
            Ok(())
        })
        .await
    }

    async fn record_pushes(&self, records: Vec<PushRecord>) -> Result<()> {
        self.write(move |txn| {
            for r in records {
                let Some(mut e) = get_enrollment(txn, &r.id)? else { continue };
                if e.apply_push(&r) {
                    put_enrollment(txn, &e)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<()> {
        self.write(move |txn| {
            for (id, at) in seen {
                if let Some(mut e) = get_enrollment(txn, &id)? {
                    if at > e.last_seen_at {
                        e.last_seen_at = at;
                        put_enrollment(txn, &e)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn enrollment(&self, id: &str) -> Result<Option<Enrollment>> {
        self.read(|txn| {
            let t = txn.open_table(ENROLLMENTS)?;
            let r = dec_opt(t.get(id)?)?;
            Ok(r)
        })
    }

    async fn enrollments(&self, after: Option<String>, limit: usize) -> Result<Vec<Enrollment>> {
        self.read(|txn| {
            let t = txn.open_table(ENROLLMENTS)?;
            let mut out = Vec::new();
            let iter = match &after {
                Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded))?,
                None => t.range::<&str>(..)?,
            };
            for item in iter.take(limit) {
                let (_, v) = item?;
                out.push(dec(v.value())?);
            }
            Ok(out)
        })
    }

    async fn counts(&self) -> Result<StoreCounts> {
        use ::redb::ReadableTableMetadata as _;
        self.read(|txn| {
            Ok(StoreCounts {
                enrollments: txn.open_table(ENROLLMENTS)?.len()?,
                pending_commands: {
                    let mut n = txn.open_table(QUEUE)?.len()?;
                    for item in txn.open_table(FANOUTS)?.iter()? {
                        n += FanOut::dec(item?.1.value())?.pending;
                    }
                    n
                },
            })
        })
    }
}

#[async_trait]
impl QueueStore for RedbStore {
    async fn enqueue(&self, cmd: CommandRecord, targets: Vec<String>) -> Result<EnqueueOutcome> {
        let mut targets = targets;
        // Sorted: B-tree lookups and inserts walk the trees in order.
        targets.sort_unstable();
        targets.dedup();
        let policy = self.fanout;
        self.write(move |txn| {
            let (known, unknown) = split_known(txn, targets)?;
            let mut t = QueueTables::open(txn, policy)?;
            let mut rec = cmd;
            t.enqueue(&mut rec, &known)?;
            Ok(EnqueueOutcome {
                queued: known.len() as u64,
                unknown,
            })
        })
        .await
    }

    async fn enqueue_each(
        &self,
        items: Vec<(CommandRecord, String)>,
        secrets: Vec<(SecretKind, String, OneTimeSecret)>,
    ) -> Result<EnqueueOutcome> {
        let mut items = items;
        items.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let policy = self.fanout;
        self.write(move |txn| {
            let (known, unknown) = split_known(txn, items.iter().map(|(_, t)| t.clone()).collect())?;
            let known: std::collections::HashSet<String> = known.into_iter().collect();
            {
                let mut st = txn.open_table(SECRETS)?;
                for (kind, hash, rec) in &secrets {
                    if rec.enrollment.as_ref().is_none_or(|e| known.contains(e)) {
                        st.insert((*kind as u8, hash.as_str()), enc(rec)?.as_slice())?;
                    }
                }
            }
            let mut t = QueueTables::open(txn, policy)?;
            let mut queued = 0;
            for (mut rec, target) in items {
                if !known.contains(&target) {
                    continue;
                }
                t.enqueue(&mut rec, std::slice::from_ref(&target))?;
                queued += 1;
            }
            Ok(EnqueueOutcome { queued, unknown })
        })
        .await
    }

    async fn next_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
        self.read(|txn| {
            let queue = txn.open_table(QUEUE)?;
            let commands = txn.open_table(COMMANDS)?;
            let fanouts = txn.open_table(FANOUTS)?;
            let history = txn.open_table(HISTORY)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            QueueView {
                queue: &queue,
                commands: &commands,
                history: &history,
                deliveries: &deliveries,
                fanouts: &fanouts,
            }
            .first_command(id, skip_not_now)
        })
    }

    async fn report(&self, id: &str, mut r: ReportRecord) -> Result<(ReportOutcome, Option<QueuedCommand>)> {
        let id = id.to_owned();
        let events = std::mem::take(&mut r.events);
        let policy = self.fanout;
        self.write(move |txn| {
            // Also for a report already applied: the device sends it again when it got no answer.
            put_events(txn, &events)?;
            let mut t = QueueTables::open(txn, policy)?;
            let current = match t.deliveries.get((r.command_uuid.as_str(), id.as_str()))? {
                Some(v) => {
                    let cmd = load_command(&t.commands, &r.command_uuid)?;
                    let d = delivery_from(v.value(), cmd.as_ref())?;
                    Some((d, cmd))
                }
                None => None,
            };
            let outcome = match current {
                Some((mut d, cmd)) if d.status.is_pending() => {
                    d.updated_at = r.now;
                    let fanout = t.fanout_of(d.seq, &r.command_uuid)?;
                    if r.status == DeliveryStatus::NotNow {
                        d.status = DeliveryStatus::NotNow;
                        d.not_now_count += 1;
                        if fanout.is_none() {
                            t.queue
                                .insert((id.as_str(), d.seq), queue_value(true, &r.command_uuid).as_slice())?;
                        }
                        t.deliveries.insert((r.command_uuid.as_str(), id.as_str()), enc(&d)?.as_slice())?;
                        ReportOutcome::NotNowRecorded
                    } else {
                        d.status = r.status;
                        d.error_chain = r.error_chain;
                        d.result = Some(r.raw);
                        t.queue.remove((id.as_str(), d.seq))?;
                        t.deliveries.insert((r.command_uuid.as_str(), id.as_str()), enc(&d)?.as_slice())?;
                        if let Some(f) = fanout {
                            t.fanout_done(d.seq, f, &id)?;
                        }
                        if let Some(tag) = cmd.as_ref().and_then(|c| c.profile.as_ref()) {
                            t.profile_result(&id, tag, &r.command_uuid, &d)?;
                        }
                        ReportOutcome::Finished {
                            request_type: cmd.map(|c| c.request_type).unwrap_or_default(),
                        }
                    }
                }
                _ => ReportOutcome::NotPending,
            };
            let next = t.view().first_command(&id, true)?;
            Ok((outcome, next))
        })
        .await
    }

    async fn clear_queue(&self, id: &str, now: i64) -> Result<u64> {
        let id = id.to_owned();
        let policy = self.fanout;
        self.write(move |txn| clear_pending(txn, policy, &id, now)).await
    }

    async fn device_commands(&self, id: &str, limit: usize) -> Result<Vec<DeviceCommand>> {
        self.read(|txn| {
            let queue = txn.open_table(QUEUE)?;
            let history = txn.open_table(HISTORY)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            let commands = txn.open_table(COMMANDS)?;
            let fanouts = txn.open_table(FANOUTS)?;
            let view = QueueView {
                queue: &queue,
                commands: &commands,
                history: &history,
                deliveries: &deliveries,
                fanouts: &fanouts,
            };
            let mut out = Vec::new();
            for (_, uuid) in view.history(id, limit)? {
                let Some(d) = deliveries.get((uuid.as_str(), id))? else {
                    continue;
                };
                let cmd = load_command(&commands, &uuid)?;
                let mut delivery = delivery_from(d.value(), cmd.as_ref())?;
                delivery.enrollment = id.to_owned();
                let request_type = cmd.map(|c| c.request_type).unwrap_or_default();
                out.push(DeviceCommand {
                    command_uuid: uuid,
                    request_type,
                    delivery,
                });
            }
            Ok(out)
        })
    }

    async fn command(&self, uuid: &str) -> Result<Option<(CommandRecord, Vec<Delivery>)>> {
        self.read(|txn| {
            let commands = txn.open_table(COMMANDS)?;
            let Some(rec) = load_command(&commands, uuid)? else {
                return Ok(None);
            };
            let deliveries = txn.open_table(DELIVERIES)?;
            let mut out = Vec::new();
            for item in deliveries.range((uuid, "")..)? {
                let (k, v) = item?;
                if k.value().0 != uuid {
                    break;
                }
                let mut d = delivery_from(v.value(), Some(&rec))?;
                d.enrollment = k.value().1.to_owned();
                out.push(d);
            }
            Ok(Some((rec, out)))
        })
    }
}

fn consume_in(txn: &redb::WriteTransaction, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
    let mut t = txn.open_table(SECRETS)?;
    let cur: Option<OneTimeSecret> = dec_opt(t.get((kind as u8, hash))?)?;
    let outcome = OneTimeSecret::consume(cur, now);
    if let Consumed::Ok(s) = &outcome {
        t.insert((kind as u8, hash), enc(s)?.as_slice())?;
    }
    Ok(outcome)
}

#[async_trait]
impl PkiStore for RedbStore {
    async fn record_cert(&self, cert: IssuedCert) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(CERTS)?.insert(cert.sha256.as_str(), enc(&cert)?.as_slice())?;
            txn.open_table(CERT_SERIALS)?.insert(cert.serial.as_str(), cert.sha256.as_str())?;
            Ok(())
        })
        .await
    }

    async fn cert_by_hash(&self, sha256: &str) -> Result<Option<IssuedCert>> {
        self.read(|txn| {
            let t = txn.open_table(CERTS)?;
            let r = dec_opt(t.get(sha256)?)?;
            Ok(r)
        })
    }

    async fn cert_by_serial(&self, serial: &str) -> Result<Option<IssuedCert>> {
        let hash = self.read(|txn| Ok(txn.open_table(CERT_SERIALS)?.get(serial)?.map(|v| v.value().to_owned())))?;
        match hash {
            Some(h) => self.cert_by_hash(&h).await,
            None => Ok(None),
        }
    }

    async fn certs(&self, after: Option<String>, limit: usize) -> Result<Vec<IssuedCert>> {
        let hashes: Vec<String> = self.read(|txn| {
            let t = txn.open_table(CERT_SERIALS)?;
            let iter = match &after {
                Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded))?,
                None => t.range::<&str>(..)?,
            };
            iter.take(limit)
                .map(|r| r.map(|(_, v)| v.value().to_owned()).map_err(StoreError::from))
                .collect()
        })?;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            if let Some(c) = self.cert_by_hash(&h).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    async fn revoke_cert(&self, serial: &str, now: i64) -> Result<bool> {
        let serial = serial.to_owned();
        self.write(move |txn| {
            let Some(hash) = txn.open_table(CERT_SERIALS)?.get(serial.as_str())?.map(|v| v.value().to_owned()) else {
                return Ok(false);
            };
            let mut certs = txn.open_table(CERTS)?;
            let cur: Option<IssuedCert> = dec_opt(certs.get(hash.as_str())?)?;
            let Some(mut c) = cur else { return Ok(false) };
            if c.revoked_at.is_none() {
                c.revoked_at = Some(now);
                certs.insert(hash.as_str(), enc(&c)?.as_slice())?;
            }
            Ok(true)
        })
        .await
    }

    async fn add_secret(&self, kind: SecretKind, hash: &str, rec: OneTimeSecret) -> Result<()> {
        let hash = hash.to_owned();
        self.write(move |txn| {
            txn.open_table(SECRETS)?
                .insert((kind as u8, hash.as_str()), enc(&rec)?.as_slice())?;
            Ok(())
        })
        .await
    }

    async fn secret(&self, kind: SecretKind, hash: &str) -> Result<Option<OneTimeSecret>> {
        self.read(|txn| dec_opt(txn.open_table(SECRETS)?.get((kind as u8, hash))?))
    }

    async fn consume_secret(&self, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write(move |txn| consume_in(txn, kind, &hash, now)).await
    }

    async fn record_cert_consuming(&self, cert: IssuedCert, kind: SecretKind, hash: &str, now: i64) -> Result<Consumed> {
        let hash = hash.to_owned();
        self.write(move |txn| {
            let outcome = consume_in(txn, kind, &hash, now)?;
            if let Consumed::Ok(_) = &outcome {
                txn.open_table(CERTS)?.insert(cert.sha256.as_str(), enc(&cert)?.as_slice())?;
                txn.open_table(CERT_SERIALS)?.insert(cert.serial.as_str(), cert.sha256.as_str())?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn prune_secrets(&self, expired_before: i64, limit: usize) -> Result<u64> {
        // Find them with a read transaction (no writer time), delete in one write that checks again.
        let due: Vec<(u8, String)> = self.read(move |txn| {
            let t = txn.open_table(SECRETS)?;
            let mut due = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let (kind, hash) = k.value();
                if let Ok(s) = serde_json::from_slice::<OneTimeSecret>(v.value()) {
                    if s.expires_at < expired_before {
                        due.push((kind, hash.to_owned()));
                        if due.len() >= limit {
                            break;
                        }
                    }
                }
            }
            Ok(due)
        })?;
        if due.is_empty() {
            return Ok(0);
        }
        self.write(move |txn| {
            let mut t = txn.open_table(SECRETS)?;
            let mut n = 0;
            for (kind, hash) in &due {
                let cur: Option<OneTimeSecret> = dec_opt(t.get((*kind, hash.as_str()))?)?;
                if cur.is_some_and(|s| s.expires_at < expired_before) {
                    t.remove((*kind, hash.as_str()))?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl ProfileStore for RedbStore {
    async fn put_template(&self, t: ProfileTemplate) -> Result<Option<ProfileTemplate>> {
        self.write(move |txn| {
            let mut table = txn.open_table(TEMPLATES)?;
            let old: Option<ProfileTemplate> = dec_opt(table.get(t.identifier.as_str())?)?;
            let t = ProfileTemplate {
                created_at: old.as_ref().map_or(t.created_at, |o| o.created_at),
                ..t
            };
            table.insert(t.identifier.as_str(), enc(&t)?.as_slice())?;
            Ok(old)
        })
        .await
    }

    async fn template(&self, identifier: &str) -> Result<Option<ProfileTemplate>> {
        self.read(|txn| {
            let t = txn.open_table(TEMPLATES)?;
            let r = dec_opt(t.get(identifier)?)?;
            Ok(r)
        })
    }

    async fn templates(&self) -> Result<Vec<ProfileTemplate>> {
        self.read(|txn| {
            let t = txn.open_table(TEMPLATES)?;
            let mut out = Vec::new();
            for item in t.range::<&str>(..)? {
                let (_, v) = item?;
                out.push(dec(v.value())?);
            }
            Ok(out)
        })
    }

    async fn delete_template(&self, identifier: &str) -> Result<bool> {
        let identifier = identifier.to_owned();
        self.write(move |txn| Ok(txn.open_table(TEMPLATES)?.remove(identifier.as_str())?.is_some()))
            .await
    }

    async fn device_profiles(&self, enrollment: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|txn| {
            let t = txn.open_table(DEVICE_PROFILES)?;
            let mut out = Vec::new();
            for item in t.range((enrollment, "")..)? {
                let (k, v) = item?;
                let (e, ident) = k.value();
                if e != enrollment {
                    break;
                }
                let mut dp: DeviceProfile = dec(v.value())?;
                dp.enrollment = e.to_owned();
                dp.identifier = ident.to_owned();
                out.push(dp);
            }
            Ok(out)
        })
    }

    async fn profile_devices(&self, identifier: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|txn| {
            let index = txn.open_table(PROFILE_DEVICES)?;
            let t = txn.open_table(DEVICE_PROFILES)?;
            let mut out = Vec::new();
            for item in index.range((identifier, "")..)? {
                let (k, _) = item?;
                let (ident, e) = k.value();
                if ident != identifier {
                    break;
                }
                if let Some(v) = t.get((e, ident))? {
                    let mut dp: DeviceProfile = dec(v.value())?;
                    dp.enrollment = e.to_owned();
                    dp.identifier = ident.to_owned();
                    out.push(dp);
                }
            }
            Ok(out)
        })
    }

    async fn reconcile_profiles(&self, enrollment: &str, installed: Vec<String>, now: i64) -> Result<u64> {
        let enrollment = enrollment.to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(DEVICE_PROFILES)?;
            let current: Vec<(String, DeviceProfile)> = t
                .range((enrollment.as_str(), "")..)?
                .map(|r| r.map(|(k, v)| (k.value().0.to_owned(), k.value().1.to_owned(), v.value().to_vec())))
                .take_while(|r| r.as_ref().map_or(true, |(e, _, _)| e == &enrollment))
                .map(|r| -> Result<(String, DeviceProfile)> {
                    let (_, ident, v) = r?;
                    Ok((ident, dec(&v)?))
                })
                .collect::<Result<_>>()?;
            let mut n = 0;
            for (ident, mut dp) in current {
                dp.identifier = ident.clone();
                if dp.reconcile(&installed, now) {
                    t.insert((enrollment.as_str(), ident.as_str()), enc(&dp)?.as_slice())?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl LeaseStore for RedbStore {
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |txn| {
            let mut t = txn.open_table(LEASES)?;
            let cur: Option<(String, i64)> = dec_opt(t.get(name.as_str())?)?;
            let free = match &cur {
                None => true,
                Some((h, exp)) => h == &holder || *exp <= now_ms,
            };
            if free {
                t.insert(name.as_str(), enc(&(holder.as_str(), now_ms + ttl_ms))?.as_slice())?;
            }
            Ok(free)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |txn| {
            let mut t = txn.open_table(LEASES)?;
            let cur: Option<(String, i64)> = dec_opt(t.get(name.as_str())?)?;
            if cur.is_some_and(|(h, _)| h == holder) {
                t.remove(name.as_str())?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SettingsStore for RedbStore {
    async fn setting(&self, name: &str) -> Result<Option<Setting>> {
        self.read(|txn| {
            let t = txn.open_table(SETTINGS)?;
            let r = dec_opt(t.get(name)?)?;
            Ok(r)
        })
    }

    async fn put_setting(&self, name: &str, value: Vec<u8>, now: i64) -> Result<u64> {
        let name = name.to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let cur: Option<Setting> = dec_opt(t.get(name.as_str())?)?;
            let version = cur.map_or(0, |c| c.version) + 1;
            let s = Setting {
                value,
                updated_at: now,
                version,
            };
            t.insert(name.as_str(), enc(&s)?.as_slice())?;
            Ok(version)
        })
        .await
    }

    async fn setting_or_insert(&self, name: &str, value: Vec<u8>, now: i64) -> Result<Setting> {
        let name = name.to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let cur: Option<Setting> = dec_opt(t.get(name.as_str())?)?;
            if let Some(c) = cur {
                return Ok(c);
            }
            let s = Setting {
                value,
                updated_at: now,
                version: 1,
            };
            t.insert(name.as_str(), enc(&s)?.as_slice())?;
            Ok(s)
        })
        .await
    }
}

/// `(lower bound, skip-equal)` for a paged scan over string keys.
fn after_bound(after: &Option<String>) -> std::ops::Bound<&str> {
    match after {
        Some(a) => std::ops::Bound::Excluded(a.as_str()),
        None => std::ops::Bound::Unbounded,
    }
}

#[async_trait]
impl CopyStore for RedbStore {
    async fn export(&self, table: Table, after: Option<String>, limit: usize) -> Result<Vec<Row>> {
        self.read(|txn| {
            let mut out = Vec::new();
            // Tables keyed by one string.
            let simple = |def: TableDefinition<&str, &[u8]>, out: &mut Vec<Row>, f: &dyn Fn(&str, &[u8]) -> Result<Row>| -> Result<()> {
                let t = txn.open_table(def)?;
                for item in t.range::<&str>((after_bound(&after), std::ops::Bound::Unbounded))?.take(limit) {
                    let (k, v) = item?;
                    out.push(f(k.value(), v.value())?);
                }
                Ok(())
            };
            match table {
                Table::Settings => simple(SETTINGS, &mut out, &|k, v| {
                    Ok(Row::Setting {
                        name: k.to_owned(),
                        setting: dec(v)?,
                    })
                })?,
                Table::Certs => simple(CERTS, &mut out, &|_, v| Ok(Row::Cert(dec(v)?)))?,
                Table::Enrollments => simple(ENROLLMENTS, &mut out, &|_, v| Ok(Row::Enrollment(dec(v)?)))?,
                Table::Templates => simple(TEMPLATES, &mut out, &|_, v| Ok(Row::Template(dec(v)?)))?,
                Table::Commands => simple(COMMANDS, &mut out, &|_, v| Ok(Row::Command(dec(v)?)))?,
                Table::Secrets => {
                    let t = txn.open_table(SECRETS)?;
                    let start: (u8, String) = match &after {
                        Some(a) => {
                            let (k, h) = split_cursor(a);
                            (k.parse().unwrap_or(0), h.to_owned())
                        }
                        None => (0, String::new()),
                    };
                    for item in t.range((start.0, start.1.as_str())..)? {
                        let (k, v) = item?;
                        let (kind, hash) = k.value();
                        if after.is_some() && (kind, hash) == (start.0, start.1.as_str()) {
                            continue;
                        }
                        let Some(kind) = SecretKind::from_u8(kind) else { continue };
                        out.push(Row::Secret {
                            kind,
                            hash: hash.to_owned(),
                            secret: dec(v.value())?,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::Deliveries => {
                    let t = txn.open_table(DELIVERIES)?;
                    let commands = txn.open_table(COMMANDS)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    let mut cmd: Option<CommandRecord> = None;
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (uuid, enrollment) = k.value();
                        if after.is_some() && (uuid, enrollment) == start {
                            continue;
                        }
                        if cmd.as_ref().is_none_or(|c| c.uuid != uuid) {
                            cmd = load_command(&commands, uuid)?;
                        }
                        let mut delivery = delivery_from(v.value(), cmd.as_ref())?;
                        delivery.enrollment = enrollment.to_owned();
                        out.push(Row::Delivery {
                            command_uuid: uuid.to_owned(),
                            enrollment: enrollment.to_owned(),
                            delivery,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::Compliance => simple(COMPLIANCE, &mut out, &|k, v| {
                    Ok(Row::Compliance {
                        enrollment: k.to_owned(),
                        record: dec(v)?,
                    })
                })?,
                Table::Records => {
                    let t = txn.open_table(RECORDS)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (collection, key) = k.value();
                        if after.is_some() && (collection, key) == start {
                            continue;
                        }
                        out.push(Row::Record {
                            collection: collection.to_owned(),
                            key: key.to_owned(),
                            record: dec(v.value())?,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::Inventory => {
                    let t = txn.open_table(INVENTORY)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (enrollment, kind) = k.value();
                        if after.is_some() && (enrollment, kind) == start {
                            continue;
                        }
                        out.push(Row::Inventory {
                            enrollment: enrollment.to_owned(),
                            item: dec(v.value())?,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Table::DeviceProfiles => {
                    let t = txn.open_table(DEVICE_PROFILES)?;
                    let start = after.as_deref().map(split_cursor).unwrap_or(("", ""));
                    for item in t.range(start..)? {
                        let (k, v) = item?;
                        let (enrollment, identifier) = k.value();
                        if after.is_some() && (enrollment, identifier) == start {
                            continue;
                        }
                        let mut profile: DeviceProfile = dec(v.value())?;
                        profile.enrollment = enrollment.to_owned();
                        profile.identifier = identifier.to_owned();
                        out.push(Row::DeviceProfile {
                            enrollment: enrollment.to_owned(),
                            identifier: identifier.to_owned(),
                            profile,
                        });
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    async fn import(&self, rows: Vec<Row>) -> Result<()> {
        self.write(move |txn| {
            let mut max_seq = 0;
            for row in rows {
                match row {
                    Row::Setting { name, setting } => {
                        txn.open_table(SETTINGS)?.insert(name.as_str(), enc(&setting)?.as_slice())?;
                    }
                    Row::Cert(c) => {
                        txn.open_table(CERTS)?.insert(c.sha256.as_str(), enc(&c)?.as_slice())?;
                        txn.open_table(CERT_SERIALS)?.insert(c.serial.as_str(), c.sha256.as_str())?;
                    }
                    Row::Secret { kind, hash, secret } => {
                        txn.open_table(SECRETS)?
                            .insert((kind as u8, hash.as_str()), enc(&secret)?.as_slice())?;
                    }
                    Row::Enrollment(e) => put_enrollment(txn, &e)?,
                    Row::Template(t) => {
                        txn.open_table(TEMPLATES)?.insert(t.identifier.as_str(), enc(&t)?.as_slice())?;
                    }
                    Row::Command(c) => {
                        max_seq = max_seq.max(c.seq);
                        txn.open_table(COMMANDS)?.insert(c.uuid.as_str(), enc(&c)?.as_slice())?;
                    }
                    Row::Delivery {
                        command_uuid,
                        enrollment,
                        delivery,
                    } => {
                        let key = (enrollment.as_str(), delivery.seq);
                        txn.open_table(HISTORY)?.insert(key, command_uuid.as_str())?;
                        if delivery.status.is_pending() {
                            let nn = delivery.status == DeliveryStatus::NotNow;
                            txn.open_table(QUEUE)?.insert(key, queue_value(nn, &command_uuid).as_slice())?;
                        }
                        txn.open_table(DELIVERIES)?
                            .insert((command_uuid.as_str(), enrollment.as_str()), enc(&delivery)?.as_slice())?;
                    }
                    Row::DeviceProfile {
                        enrollment,
                        identifier,
                        profile,
                    } => {
                        txn.open_table(DEVICE_PROFILES)?
                            .insert((enrollment.as_str(), identifier.as_str()), enc(&profile)?.as_slice())?;
                        txn.open_table(PROFILE_DEVICES)?
                            .insert((identifier.as_str(), enrollment.as_str()), ())?;
                    }
                    Row::Inventory { enrollment, item } => {
                        txn.open_table(INVENTORY)?
                            .insert((enrollment.as_str(), item.kind.as_str()), enc(&item)?.as_slice())?;
                    }
                    Row::Compliance { enrollment, record } => {
                        txn.open_table(COMPLIANCE)?.insert(enrollment.as_str(), enc(&record)?.as_slice())?;
                    }
                    Row::Record { collection, key, record } => {
                        txn.open_table(RECORDS)?
                            .insert((collection.as_str(), key.as_str()), enc(&record)?.as_slice())?;
                    }
                }
            }
            if max_seq > 0 {
                let mut meta = txn.open_table(META)?;
                let cur = meta.get("seq")?.map(|v| v.value()).unwrap_or(0);
                if max_seq > cur {
                    meta.insert("seq", max_seq)?;
                }
            }
            Ok(())
        })
        .await
    }

    fn describe(&self) -> String {
        "redb".into()
    }
}

#[async_trait]
impl InventoryStore for RedbStore {
    async fn put_inventory(&self, id: &str, item: InventoryItem) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            if txn.open_table(ENROLLMENTS)?.get(id.as_str())?.is_none() {
                return Ok(false);
            }
            txn.open_table(INVENTORY)?
                .insert((id.as_str(), item.kind.as_str()), enc(&item)?.as_slice())?;
            Ok(true)
        })
        .await
    }

    async fn inventory(&self, id: &str) -> Result<Vec<InventoryItem>> {
        self.read(|txn| {
            let t = txn.open_table(INVENTORY)?;
            let mut out = Vec::new();
            for item in t.range((id, "")..)? {
                let (k, v) = item?;
                if k.value().0 != id {
                    break;
                }
                out.push(dec(v.value())?);
            }
            Ok(out)
        })
    }

    async fn find(&self, key: LookupKey, value: &str) -> Result<Vec<String>> {
        let v = key.normalize(value);
        if v.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|txn| {
            let t = txn.open_table(LOOKUPS)?;
            let mut out: Vec<String> = Vec::new();
            for item in t.range((key as u8, v.as_str(), "")..)? {
                let (k, target) = item?;
                let (kk, vv, _) = k.value();
                if kk != key as u8 || vv != v {
                    break;
                }
                let target = target.value().to_owned();
                if !out.contains(&target) {
                    out.push(target);
                }
            }
            out.sort();
            Ok(out)
        })
    }

    async fn set_compliance(&self, id: &str, rec: ComplianceRecord) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            if txn.open_table(ENROLLMENTS)?.get(id.as_str())?.is_none() {
                return Ok(false);
            }
            txn.open_table(COMPLIANCE)?.insert(id.as_str(), enc(&rec)?.as_slice())?;
            Ok(true)
        })
        .await
    }

    async fn compliance(&self, id: &str) -> Result<Option<ComplianceRecord>> {
        self.read(|txn| {
            let t = txn.open_table(COMPLIANCE)?;
            let r = dec_opt(t.get(id)?)?;
            Ok(r)
        })
    }

    async fn by_compliance(&self, state: ComplianceState, after: Option<String>, limit: usize) -> Result<Vec<String>> {
        self.read(|txn| {
            let t = txn.open_table(COMPLIANCE)?;
            let mut out = Vec::new();
            for item in t.range::<&str>((after_bound(&after), std::ops::Bound::Unbounded))? {
                let (k, v) = item?;
                let rec: ComplianceRecord = dec(v.value())?;
                if rec.state == state {
                    out.push(k.value().to_owned());
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }
}

#[async_trait]
impl RecordStore for RedbStore {
    async fn record(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        self.read(|txn| {
            let t = txn.open_table(RECORDS)?;
            let r = dec_opt(t.get((collection, key))?)?;
            Ok(r)
        })
    }

    async fn records(&self, collection: &str) -> Result<Vec<(String, Record)>> {
        self.read(|txn| {
            let t = txn.open_table(RECORDS)?;
            let mut out = Vec::new();
            for item in t.range((collection, "")..)? {
                let (k, v) = item?;
                if k.value().0 != collection {
                    break;
                }
                out.push((k.value().1.to_owned(), dec(v.value())?));
            }
            Ok(out)
        })
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
        self.write(move |txn| {
            let mut t = txn.open_table(RECORDS)?;
            let cur: Option<Record> = dec_opt(t.get((collection.as_str(), key.as_str()))?)?;
            let have = cur.as_ref().map_or(0, |r| r.version);
            if expect.is_some_and(|e| e != have) {
                return Ok(None);
            }
            let rec = Record {
                value,
                version: have + 1,
                updated_at: now,
            };
            t.insert((collection.as_str(), key.as_str()), enc(&rec)?.as_slice())?;
            Ok(Some(rec.version))
        })
        .await
    }

    async fn delete_record(&self, collection: &str, key: &str, expect: Option<u64>) -> Result<bool> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        self.write(move |txn| {
            let mut t = txn.open_table(RECORDS)?;
            let cur: Option<Record> = dec_opt(t.get((collection.as_str(), key.as_str()))?)?;
            match cur {
                Some(r) if expect.is_none_or(|e| e == r.version) => {
                    t.remove((collection.as_str(), key.as_str()))?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }
}

fn put_events(txn: &::redb::WriteTransaction, events: &[OutboxEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(META)?;
    let mut seq = meta.get("outbox_seq")?.map(|v| v.value()).unwrap_or(0);
    let mut t = txn.open_table(OUTBOX)?;
    for e in events {
        seq += 1;
        t.insert(seq, enc(e)?.as_slice())?;
    }
    meta.insert("outbox_seq", seq)?;
    Ok(())
}

#[async_trait]
impl OutboxStore for RedbStore {
    async fn add_events(&self, events: Vec<OutboxEvent>) -> Result<()> {
        self.write(move |txn| put_events(txn, &events)).await
    }

    async fn due_events(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.read(|txn| {
            let t = txn.open_table(OUTBOX)?;
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                let event: OutboxEvent = dec(v.value())?;
                if event.next_at <= now_ms {
                    out.push(OutboxEntry { seq: k.value(), event });
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    async fn remove_event(&self, seq: u64) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(OUTBOX)?.remove(seq)?;
            Ok(())
        })
        .await
    }

    async fn retry_event(&self, seq: u64, event: OutboxEvent) -> Result<()> {
        self.write(move |txn| {
            let mut t = txn.open_table(OUTBOX)?;
            if t.get(seq)?.is_some() {
                t.insert(seq, enc(&event)?.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats> {
        use ::redb::ReadableTableMetadata as _;
        self.read(|txn| {
            let t = txn.open_table(OUTBOX)?;
            let depth = t.len()?;
            let oldest = match t.first()? {
                Some((_, v)) => Some(dec::<OutboxEvent>(v.value())?.created_at),
                None => None,
            };
            Ok(OutboxStats {
                depth,
                oldest_created_at: oldest,
            })
        })
    }
}
