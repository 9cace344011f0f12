//! redb: leases for background work (`LeaseStore`).

use super::*;

#[async_trait]
impl LeaseStore for RedbStore {
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |txn| {
            let mut t = txn.open_table(LEASES)?;
            let cur: Option<(String, i64)> = dec_opt(t.get(name.as_str())?)?;
            let free = lease_available(cur.as_ref().map(|(h, exp)| (h.as_str(), *exp)), &holder, now_ms);
            if free {
                t.insert(name.as_str(), enc(&(holder.as_str(), now_ms + ttl_ms))?.as_slice())?;
            }
            Ok(free)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |txn| {
            let mut t = txn.open_table(LEASES)?;
            let cur: Option<(String, i64)> = dec_opt(t.get(name.as_str())?)?;
            if cur.is_some_and(|(h, _)| h == holder) {
                t.remove(name.as_str())?;
            }
            Ok(())
        })
        .await
    }
}
