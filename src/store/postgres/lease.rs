//! PostgreSQL: leases for background work (`LeaseStore`).

use super::*;

#[async_trait]
impl LeaseStore for PgStore {
    async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        // Not batched: a lease is a promise about time, answered at once.
        // The WHERE is `model::lease_available`.
        self.read(|c| async move {
            let r = opt(
                &c,
                "INSERT INTO leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at_ms = EXCLUDED.expires_at_ms WHERE leases.holder = EXCLUDED.holder OR leases.expires_at_ms <= $4 RETURNING holder",
                &[&name, &holder, &(now_ms + ttl_ms), &now_ms],
            )
            .await?;
            Ok(r.is_some())
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.read(|c| async move {
            exec(&c, "DELETE FROM leases WHERE name = $1 AND holder = $2", &[&name, &holder]).await?;
            Ok(())
        })
        .await
    }
}
