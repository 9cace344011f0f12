//! PostgreSQL: profile templates and each profile's state on each
//! enrollment (`ProfileStore`).

use super::*;

pub(super) async fn put_device_profile(tx: &Transaction<'_>, id: &str, identifier: &str, dp: &DeviceProfile) -> Result<()> {
    exec(
        tx,
        "INSERT INTO device_profiles (enrollment, identifier, data) VALUES ($1, $2, $3) ON CONFLICT (enrollment, identifier) DO UPDATE SET data = EXCLUDED.data",
        &[&id, &identifier, &to_json(dp)?],
    )
    .await?;
    Ok(())
}

pub(super) async fn profile_result(tx: &Transaction<'_>, id: &str, tag: &ProfileTag, uuid: &str, d: &Delivery) -> Result<()> {
    let Some(r) = opt(
        tx,
        "SELECT data FROM device_profiles WHERE enrollment = $1 AND identifier = $2 FOR UPDATE",
        &[&id, &tag.identifier],
    )
    .await?
    else {
        return Ok(());
    };
    let mut dp: DeviceProfile = json(&r, 0)?;
    if !dp.apply_result(tag, uuid, d) {
        return Ok(());
    }
    put_device_profile(tx, id, &tag.identifier, &dp).await
}

async fn put_template_tx(tx: &Transaction<'_>, t: ProfileTemplate) -> Result<Option<ProfileTemplate>> {
    let old: Option<ProfileTemplate> =
        match opt(tx, "SELECT data FROM templates WHERE identifier = $1 FOR UPDATE", &[&t.identifier]).await? {
            Some(r) => Some(json(&r, 0)?),
            None => None,
        };
    let t = t.replacing(old.as_ref());
    exec(
        tx,
        "INSERT INTO templates (identifier, data) VALUES ($1, $2) ON CONFLICT (identifier) DO UPDATE SET data = EXCLUDED.data",
        &[&t.identifier, &to_json(&t)?],
    )
    .await?;
    Ok(old)
}

async fn delete_template_tx(tx: &Transaction<'_>, identifier: String) -> Result<bool> {
    Ok(exec(tx, "DELETE FROM templates WHERE identifier = $1", &[&identifier]).await? > 0)
}

async fn reconcile_profiles_tx(tx: &Transaction<'_>, (enrollment, installed, now): (String, Vec<String>, i64)) -> Result<u64> {
    let current = rows(
        tx,
        "SELECT enrollment, identifier, data FROM device_profiles WHERE enrollment = $1 ORDER BY identifier FOR UPDATE",
        &[&enrollment],
    )
    .await?;
    let mut n = 0;
    for r in &current {
        let mut dp = device_profile_row(r)?;
        if dp.reconcile(&installed, now) {
            let ident = dp.identifier.clone();
            put_device_profile(tx, &enrollment, &ident, &dp).await?;
            n += 1;
        }
    }
    Ok(n)
}

#[async_trait]
impl ProfileStore for PgStore {
    async fn put_template(&self, t: ProfileTemplate) -> Result<Option<ProfileTemplate>> {
        self.write(t, put_template_tx).await
    }

    async fn template(&self, identifier: &str) -> Result<Option<ProfileTemplate>> {
        self.read(|c| async move {
            opt(&c, "SELECT data FROM templates WHERE identifier = $1", &[&identifier])
                .await?
                .map(|r| json(&r, 0))
                .transpose()
        })
        .await
    }

    async fn templates(&self) -> Result<Vec<ProfileTemplate>> {
        self.read(|c| async move {
            let r = rows(&c, "SELECT data FROM templates ORDER BY identifier", &[]).await?;
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }

    async fn delete_template(&self, identifier: &str) -> Result<bool> {
        let identifier = identifier.to_owned();
        self.write(identifier, delete_template_tx).await
    }

    async fn device_profiles(&self, enrollment: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT enrollment, identifier, data FROM device_profiles WHERE enrollment = $1 ORDER BY identifier",
                &[&enrollment],
            )
            .await?;
            r.iter().map(device_profile_row).collect()
        })
        .await
    }

    async fn profile_devices(&self, identifier: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|c| async move {
            let r = rows(
                &c,
                "SELECT enrollment, identifier, data FROM device_profiles WHERE identifier = $1 ORDER BY enrollment",
                &[&identifier],
            )
            .await?;
            r.iter().map(device_profile_row).collect()
        })
        .await
    }

    async fn reconcile_profiles(&self, enrollment: &str, installed: Vec<String>, now: i64) -> Result<u64> {
        let enrollment = enrollment.to_owned();
        self.write((enrollment, installed, now), reconcile_profiles_tx).await
    }
}

pub(super) fn device_profile_row(r: &tokio_postgres::Row) -> Result<DeviceProfile> {
    let mut dp: DeviceProfile = json(r, 2)?;
    dp.enrollment = r.try_get(0)?;
    dp.identifier = r.try_get(1)?;
    Ok(dp)
}
