//! PostgreSQL: small shared settings (`SettingsStore`).

use super::*;

async fn put_setting_tx(tx: &Transaction<'_>, (name, value, now): (String, Vec<u8>, i64)) -> Result<u64> {
    let r = one(
        tx,
        "INSERT INTO settings (name, value, updated_at, version) VALUES ($1, $2, $3, 1) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, version = settings.version + 1 RETURNING version",
        &[&name, &value, &now],
    )
    .await?;
    Ok(r.get::<_, i64>(0) as u64)
}

async fn setting_or_insert_tx(tx: &Transaction<'_>, (name, value, now): (String, Vec<u8>, i64)) -> Result<Setting> {
    exec(
        tx,
        "INSERT INTO settings (name, value, updated_at, version) VALUES ($1, $2, $3, 1) ON CONFLICT (name) DO NOTHING",
        &[&name, &value, &now],
    )
    .await?;
    let r = one(tx, "SELECT value, updated_at, version FROM settings WHERE name = $1", &[&name]).await?;
    Ok(Setting {
        value: r.get(0),
        updated_at: r.get(1),
        version: r.get::<_, i64>(2) as u64,
    })
}

#[async_trait]
impl SettingsStore for PgStore {
    async fn setting(&self, name: &str) -> Result<Option<Setting>> {
        self.read(|c| async move {
            let r = opt(&c, "SELECT value, updated_at, version FROM settings WHERE name = $1", &[&name]).await?;
            Ok(r.map(|r| Setting {
                value: r.get(0),
                updated_at: r.get(1),
                version: r.get::<_, i64>(2) as u64,
            }))
        })
        .await
    }

    async fn put_setting(&self, name: &str, value: Vec<u8>, now: i64) -> Result<u64> {
        let name = name.to_owned();
        self.write((name, value, now), put_setting_tx).await
    }

    async fn setting_or_insert(&self, name: &str, value: Vec<u8>, now: i64) -> Result<Setting> {
        let name = name.to_owned();
        self.write((name, value, now), setting_or_insert_tx).await
    }
}
