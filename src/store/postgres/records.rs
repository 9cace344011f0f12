//! PostgreSQL: small versioned records in named collections (`RecordStore`).

use super::*;

pub(super) fn record_row(r: &tokio_postgres::Row, at: usize) -> Result<Record> {
    Ok(Record {
        version: r.try_get::<_, i64>(at)? as u64,
        updated_at: r.try_get(at + 1)?,
        value: r.try_get(at + 2)?,
    })
}

async fn put_record_tx(
    tx: &Transaction<'_>,
    (collection, key, value, now, expect): (String, String, serde_json::Value, i64, Option<u64>),
) -> Result<Option<u64>> {
    let have = opt(
        tx,
        "SELECT version FROM records WHERE collection = $1 AND key = $2 FOR UPDATE",
        &[&collection, &key],
    )
    .await?
    .map_or(0, |r| r.get::<_, i64>(0) as u64);
    if !Record::expect_holds(have, expect) {
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
}

async fn put_records_tx(tx: &Transaction<'_>, (writes, now): (Vec<RecordWrite>, i64)) -> Result<Vec<Option<u64>>> {
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        out.push(put_record_tx(tx, (w.collection, w.key, w.value, now, w.expect)).await?);
    }
    Ok(out)
}

async fn delete_record_tx(tx: &Transaction<'_>, (collection, key, expect): (String, String, Option<u64>)) -> Result<bool> {
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
            .map(|r| Ok((r.try_get(0)?, record_row(r, 1)?)))
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
        self.write((collection, key, value, now, expect), put_record_tx).await
    }

    async fn delete_record(&self, collection: &str, key: &str, expect: Option<u64>) -> Result<bool> {
        let (collection, key) = (collection.to_owned(), key.to_owned());
        self.write((collection, key, expect), delete_record_tx).await
    }

    async fn records_after(&self, collection: &str, after: Option<String>, limit: usize) -> Result<Vec<(String, Record)>> {
        let after = after.unwrap_or_default();
        let limit = limit.min(100_000) as i64;
        self.read(|c| async move {
            rows(
                &c,
                "SELECT key, version, updated_at, value FROM records WHERE collection = $1 AND key > $2 ORDER BY key LIMIT $3",
                &[&collection, &after, &limit],
            )
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, record_row(r, 1)?)))
            .collect()
        })
        .await
    }

    async fn records_of(&self, collection: &str, keys: Vec<String>) -> Result<Vec<Option<Record>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: std::collections::HashMap<String, Record> = self
            .read(|c| {
                let keys = keys.clone();
                async move {
                    rows(
                        &c,
                        "SELECT key, version, updated_at, value FROM records WHERE collection = $1 AND key = ANY($2)",
                        &[&collection, &keys],
                    )
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, record_row(r, 1)?)))
                    .collect::<Result<_>>()
                }
            })
            .await?;
        let mut found = found;
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    async fn put_records(&self, writes: Vec<RecordWrite>, now: i64) -> Result<Vec<Option<u64>>> {
        self.write((writes, now), put_records_tx).await
    }
}
