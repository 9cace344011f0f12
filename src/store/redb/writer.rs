//! The writer thread: group commit. Jobs waiting together run in one write
//! transaction and are answered after its one commit.

use std::sync::mpsc;
use std::sync::Arc;

use ::redb::{Database, ReadableDatabase as _, WriteTransaction};
use tokio::sync::oneshot;

use super::*;

const MAX_BATCH: usize = 512;

pub(super) type Finisher = Box<dyn FnOnce(Option<&Arc<StoreError>>) + Send>;
pub(super) type Job = Box<dyn FnOnce(&WriteTransaction) -> std::result::Result<Finisher, StoreError> + Send>;

pub(super) fn writer(db: Arc<Database>, rx: mpsc::Receiver<Job>) {
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
    }
    .map(Arc::new);
    if let Some(e) = &result {
        tracing::error!(error = %e, jobs = n, "write batch failed");
    } else {
        crate::metrics::get().commit("redb", n, started.elapsed());
    }
    for f in finishers {
        f(result.as_ref());
    }
}

impl RedbStore {
    /// Run `f` in the next group-commit transaction; resolves after the commit.
    pub async fn write<T: Send + 'static>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |txn| {
            let r = f(txn)?;
            Ok(Box::new(move |commit_err: Option<&Arc<StoreError>>| {
                let _ = tx.send(match commit_err {
                    None => Ok(r),
                    Some(e) => Err(StoreError::Shared(e.clone())),
                });
            }))
        });
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) fn read<T>(&self, f: impl FnOnce(&::redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read()?;
        f(&txn)
    }
}
