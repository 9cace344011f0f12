//! PostgreSQL group commit: writer tasks take every write waiting in the
//! queue and run them in one transaction with one COMMIT; a failed batch is
//! retried write by write, a deadlock or serialization failure a few times.
//!
//! `PgStore::write` is the one way a write gets there: its body is an `async
//! fn (tx, args)` that may run more than once (a failed batch is retried
//! write by write), each time on its own copy of `args`.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;

use super::*;

const MAX_BATCH: usize = 256;

type AnyBox = Box<dyn Any + Send>;
type TxFuture<'a> = Pin<Box<dyn Future<Output = Result<AnyBox>> + Send + 'a>>;
type TxFn = Box<dyn for<'a> Fn(&'a Transaction<'a>) -> TxFuture<'a> + Send + Sync>;
/// A write's result on its way back.
type Reply = oneshot::Sender<Result<AnyBox>>;

pub(super) struct Job {
    run: TxFn,
    reply: Reply,
}

/// Deadlock or serialization failure with another writer: try again.
fn retryable(e: &StoreError) -> bool {
    matches!(e.sql_state(), Some(s) if *s == SqlState::T_R_DEADLOCK_DETECTED || *s == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// The body of a write: an `async fn(&Transaction, A) -> Result<T>`.
pub(super) trait TxBody<'a, A, T>: Send + Sync + 'static {
    type Fut: Future<Output = Result<T>> + Send + 'a;
    fn call(&self, tx: &'a Transaction<'a>, args: A) -> Self::Fut;
}

impl<'a, A, T, F, Fut> TxBody<'a, A, T> for F
where
    F: Fn(&'a Transaction<'a>, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'a,
{
    type Fut = Fut;
    fn call(&self, tx: &'a Transaction<'a>, args: A) -> Fut {
        self(tx, args)
    }
}

impl PgStore {
    /// Run `body(tx, args)` in the next group-commit transaction; resolves
    /// after COMMIT. `body` may run more than once, each time on a copy of `args`.
    pub(super) async fn write<A, T, B>(&self, args: A, body: B) -> Result<T>
    where
        A: Clone + Send + Sync + 'static,
        T: Send + 'static,
        B: for<'a> TxBody<'a, A, T>,
    {
        let run: TxFn = Box::new(move |tx| {
            let fut = body.call(tx, args.clone());
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

pub(super) async fn writer(pool: Pool, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>, op_timeout: Duration) {
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
        let mut c = pool.get().await?;
        round_trip();
        let tx = c.transaction().await?;
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            out.push((j.run)(&tx).await?);
        }
        round_trip();
        tx.commit().await?;
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
