//! redb: inventory, lookups and compliance (`InventoryStore`).

use super::*;

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

    async fn schedule(&self, kind: &str, items: Vec<(String, Option<i64>)>) -> Result<()> {
        let kind = kind.to_owned();
        let items = schedule_items(items);
        self.write(move |txn| {
            let mut at = txn.open_table(SCHEDULED)?;
            let mut by = txn.open_table(SCHEDULE)?;
            for (id, due) in &items {
                let old = at.get((kind.as_str(), id.as_str()))?.map(|v| v.value());
                if let Some(old) = old {
                    by.remove((kind.as_str(), old, id.as_str()))?;
                }
                match due {
                    Some(d) => {
                        at.insert((kind.as_str(), id.as_str()), *d)?;
                        by.insert((kind.as_str(), *d, id.as_str()), ())?;
                    }
                    None => {
                        at.remove((kind.as_str(), id.as_str()))?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn due(&self, kind: &str, now: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        self.read(|txn| {
            let t = txn.open_table(SCHEDULE)?;
            let mut out = Vec::new();
            for item in t.range((kind, i64::MIN, "")..)? {
                let (k, _) = item?;
                let (kk, due, id) = k.value();
                if kk != kind || due > now || out.len() >= limit {
                    break;
                }
                out.push((id.to_owned(), due));
            }
            Ok(out)
        })
    }
}
