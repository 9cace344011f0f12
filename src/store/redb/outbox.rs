//! redb: the webhook outbox (`OutboxStore`).

use super::*;

pub(super) fn put_events(txn: &WriteTransaction, events: &[OutboxEvent]) -> Result<()> {
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
