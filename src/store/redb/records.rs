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
}
