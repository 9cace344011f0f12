//! The embedded store on redb, with group commit, split by role: one file per
//! role trait of `store` (`checkin`, `queue`, `pki`, `profiles`, `lease`,
//! `settings`, `inventory`, `records`, `outbox`, `copy`), the tables in
//! `tables`, and the writer thread in `writer`. The rules every backend
//! applies are in `store::model`; these files only read and write rows.
//!
//! One writer thread owns all write transactions. Requests hand it jobs; it
//! runs every job that is waiting in one transaction, commits once (one fsync,
//! `Durability::Immediate`) and only then answers each job. So nothing is
//! acknowledged before it is on disk, and under load one fsync serves many
//! requests. Jobs validate before they write, so a job's "no" writes nothing;
//! a storage error aborts the whole batch and every job in it gets the error.
//! Reads use their own read transactions and never wait for the writer.

mod checkin;
mod copy;
mod inventory;
mod lease;
mod outbox;
mod pki;
mod profiles;
mod queue;
mod records;
mod settings;
mod tables;
mod writer;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use ::redb::{Database, ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::*;
use checkin::*;
use copy::*;
use outbox::*;
use queue::*;
use tables::*;
use writer::*;

pub use crate::store::FanoutPolicy;

/// Page cache when none is configured.
pub const DEFAULT_CACHE: usize = 256 << 20;

pub struct RedbStore {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    fanout: FanoutPolicy,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE)
    }

    /// Open with a page cache of `cache_bytes` (redb's own default is 1 GiB,
    /// which a large fleet's store would fill).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = Arc::new(Database::builder().set_cache_size(cache_bytes).create(path)?);
        tables::create(&db)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("mdmd-store-writer".into())
            .spawn(move || writer(wdb, rx))
            .map_err(StoreError::Io)?;
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
