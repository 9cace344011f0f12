//! PostgreSQL: inventory, lookups and compliance (`InventoryStore`).

use super::*;

pub(super) async fn put_inventory_row(tx: &Transaction<'_>, id: &str, item: &InventoryItem) -> Result<()> {
    exec(
        tx,
        "INSERT INTO inventory (enrollment, kind, reported_at, data) VALUES ($1, $2, $3, $4) ON CONFLICT (enrollment, kind) DO UPDATE SET reported_at = EXCLUDED.reported_at, data = EXCLUDED.data",
        &[&id, &item.kind, &item.reported_at, &to_json(item)?],
    )
    .await?;
    Ok(())
}

pub(super) async fn put_compliance_row(tx: &Transaction<'_>, id: &str, rec: &ComplianceRecord) -> Result<()> {
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

async fn put_inventory_tx(tx: &Transaction<'_>, (id, item): (String, InventoryItem)) -> Result<bool> {
    if !enrollment_exists(tx, &id).await? {
        return Ok(false);
    }
    put_inventory_row(tx, &id, &item).await?;
    Ok(true)
}

async fn set_compliance_tx(tx: &Transaction<'_>, (id, rec): (String, ComplianceRecord)) -> Result<bool> {
    if !enrollment_exists(tx, &id).await? {
        return Ok(false);
    }
    put_compliance_row(tx, &id, &rec).await?;
    Ok(true)
}

#[async_trait]
impl InventoryStore for PgStore {
    async fn put_inventory(&self, id: &str, item: InventoryItem) -> Result<bool> {
        let id = id.to_owned();
        self.write((id, item), put_inventory_tx).await
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
        self.write((id, rec), set_compliance_tx).await
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

    async fn schedule(&self, kind: &str, items: Vec<(String, Option<i64>)>) -> Result<()> {
        let items = schedule_items(items);
        self.write((kind.to_owned(), items), schedule_tx).await
    }

    async fn due(&self, kind: &str, now: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT id, due_at FROM schedule WHERE kind = $1 AND due_at <= $2 ORDER BY due_at, id LIMIT $3",
                &[&kind, &now, &limit],
            )
            .await?;
            r.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
        })
        .await
    }
}

async fn schedule_tx(tx: &Transaction<'_>, (kind, items): (String, Vec<(String, Option<i64>)>)) -> Result<()> {
    let (set, clear): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, d)| d.is_some());
    if !set.is_empty() {
        let ids: Vec<&str> = set.iter().map(|(i, _)| i.as_str()).collect();
        let due: Vec<i64> = set.iter().map(|(_, d)| d.unwrap_or_default()).collect();
        exec(
            tx,
            "INSERT INTO schedule (kind, id, due_at) SELECT $1, i, d FROM unnest($2::text[], $3::bigint[]) AS x(i, d) ON CONFLICT (kind, id) DO UPDATE SET due_at = EXCLUDED.due_at",
            &[&kind, &ids, &due],
        )
        .await?;
    }
    if !clear.is_empty() {
        let ids: Vec<&str> = clear.iter().map(|(i, _)| i.as_str()).collect();
        exec(tx, "DELETE FROM schedule WHERE kind = $1 AND id = ANY($2)", &[&kind, &ids]).await?;
    }
    Ok(())
}
