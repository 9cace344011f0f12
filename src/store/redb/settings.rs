//! redb: small shared settings (`SettingsStore`).

use super::*;

#[async_trait]
impl SettingsStore for RedbStore {
    async fn setting(&self, name: &str) -> Result<Option<Setting>> {
        self.read(|txn| {
            let t = txn.open_table(SETTINGS)?;
            let r = dec_opt(t.get(name)?)?;
            Ok(r)
        })
    }

    async fn put_setting(&self, name: &str, value: Vec<u8>, now: i64) -> Result<u64> {
        let name = name.to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let cur: Option<Setting> = dec_opt(t.get(name.as_str())?)?;
            let s = Setting::next(cur.as_ref(), value, now);
            t.insert(name.as_str(), enc(&s)?.as_slice())?;
            Ok(s.version)
        })
        .await
    }

    async fn setting_or_insert(&self, name: &str, value: Vec<u8>, now: i64) -> Result<Setting> {
        let name = name.to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let cur: Option<Setting> = dec_opt(t.get(name.as_str())?)?;
            if let Some(c) = cur {
                return Ok(c);
            }
            let s = Setting::next(None, value, now);
            t.insert(name.as_str(), enc(&s)?.as_slice())?;
            Ok(s)
        })
        .await
    }
}
