//! PostgreSQL: the webhook outbox (`OutboxStore`).

use super::*;

pub(super) async fn put_events(tx: &Transaction<'_>, events: &[OutboxEvent]) -> Result<()> {
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

async fn add_events_tx(tx: &Transaction<'_>, events: Vec<OutboxEvent>) -> Result<()> {
    put_events(tx, &events).await
}

async fn remove_event_tx(tx: &Transaction<'_>, seq: i64) -> Result<()> {
    exec(tx, "DELETE FROM outbox WHERE seq = $1", &[&seq]).await?;
    Ok(())
}

async fn retry_event_tx(tx: &Transaction<'_>, (seq, event): (i64, OutboxEvent)) -> Result<()> {
    exec(
        tx,
        "UPDATE outbox SET next_at = $2, data = $3 WHERE seq = $1",
        &[&seq, &event.next_at, &to_json(&event)?],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn add_events(&self, events: Vec<OutboxEvent>) -> Result<()> {
        self.write(events, add_events_tx).await
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
        self.write(seq, remove_event_tx).await
    }

    async fn retry_event(&self, seq: u64, event: OutboxEvent) -> Result<()> {
        let seq = seq as i64;
        self.write((seq, event), retry_event_tx).await
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
