//! redb: small versioned records in named collections (`RecordStore`).

use super::*;

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
            if !Record::expect_holds(have, expect) {
                return Ok(None);
            }
            let rec = Record::next(have, value, now);
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
                Some(r) if Record::expect_holds(r.version, expect) => {
                    t.remove((collection.as_str(), key.as_str()))?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn records_after(&self, collection: &str, after: Option<String>, limit: usize) -> Result<Vec<(String, Record)>> {
        self.read(|txn| {
            let t = txn.open_table(RECORDS)?;
            let mut out = Vec::new();
            let start = after.as_deref().unwrap_or("");
            for item in t.range((collection, start)..)? {
                let (k, v) = item?;
                let (c, key) = k.value();
                if c != collection || out.len() >= limit {
                    break;
                }
                if after.is_some() && key == start {
                    continue;
                }
                out.push((key.to_owned(), dec(v.value())?));
            }
            Ok(out)
        })
    }

    async fn records_of(&self, collection: &str, keys: Vec<String>) -> Result<Vec<Option<Record>>> {
        self.read(|txn| {
            let t = txn.open_table(RECORDS)?;
            keys.iter().map(|k| dec_opt(t.get((collection, k.as_str()))?)).collect()
        })
    }

    async fn put_records(&self, writes: Vec<RecordWrite>, now: i64) -> Result<Vec<Option<u64>>> {
        self.write(move |txn| {
            let mut t = txn.open_table(RECORDS)?;
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                let cur: Option<Record> = dec_opt(t.get((w.collection.as_str(), w.key.as_str()))?)?;
                let have = cur.as_ref().map_or(0, |r| r.version);
                if !Record::expect_holds(have, w.expect) {
                    out.push(None);
                    continue;
                }
                let rec = Record::next(have, w.value, now);
                t.insert((w.collection.as_str(), w.key.as_str()), enc(&rec)?.as_slice())?;
                out.push(Some(rec.version));
            }
            Ok(out)
        })
        .await
    }
}
