//! redb: profile templates and each profile's state on each enrollment
//! (`ProfileStore`).

use super::*;

#[async_trait]
impl ProfileStore for RedbStore {
    async fn put_template(&self, t: ProfileTemplate) -> Result<Option<ProfileTemplate>> {
        self.write(move |txn| {
            let mut table = txn.open_table(TEMPLATES)?;
            let old: Option<ProfileTemplate> = dec_opt(table.get(t.identifier.as_str())?)?;
            let t = t.replacing(old.as_ref());
            table.insert(t.identifier.as_str(), enc(&t)?.as_slice())?;
            Ok(old)
        })
        .await
    }

    async fn template(&self, identifier: &str) -> Result<Option<ProfileTemplate>> {
        self.read(|txn| {
            let t = txn.open_table(TEMPLATES)?;
            let r = dec_opt(t.get(identifier)?)?;
            Ok(r)
        })
    }

    async fn templates(&self) -> Result<Vec<ProfileTemplate>> {
        self.read(|txn| {
            let t = txn.open_table(TEMPLATES)?;
            let mut out = Vec::new();
            for item in t.range::<&str>(..)? {
                let (_, v) = item?;
                out.push(dec(v.value())?);
            }
            Ok(out)
        })
    }

    async fn delete_template(&self, identifier: &str) -> Result<bool> {
        let identifier = identifier.to_owned();
        self.write(move |txn| Ok(txn.open_table(TEMPLATES)?.remove(identifier.as_str())?.is_some()))
            .await
    }

    async fn device_profiles(&self, enrollment: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|txn| {
            let t = txn.open_table(DEVICE_PROFILES)?;
            let mut out = Vec::new();
            for item in t.range((enrollment, "")..)? {
                let (k, v) = item?;
                let (e, ident) = k.value();
                if e != enrollment {
                    break;
                }
                let mut dp: DeviceProfile = dec(v.value())?;
                dp.enrollment = e.to_owned();
                dp.identifier = ident.to_owned();
                out.push(dp);
            }
            Ok(out)
        })
    }

    async fn profile_devices(&self, identifier: &str) -> Result<Vec<DeviceProfile>> {
        self.read(|txn| {
            let index = txn.open_table(PROFILE_DEVICES)?;
            let t = txn.open_table(DEVICE_PROFILES)?;
            let mut out = Vec::new();
            for item in index.range((identifier, "")..)? {
                let (k, _) = item?;
                let (ident, e) = k.value();
                if ident != identifier {
                    break;
                }
                if let Some(v) = t.get((e, ident))? {
                    let mut dp: DeviceProfile = dec(v.value())?;
                    dp.enrollment = e.to_owned();
                    dp.identifier = ident.to_owned();
                    out.push(dp);
                }
            }
            Ok(out)
        })
    }

    async fn reconcile_profiles(&self, enrollment: &str, installed: Vec<String>, now: i64) -> Result<u64> {
        let enrollment = enrollment.to_owned();
        self.write(move |txn| {
            let mut t = txn.open_table(DEVICE_PROFILES)?;
            let current: Vec<(String, DeviceProfile)> = t
                .range((enrollment.as_str(), "")..)?
                .map(|r| r.map(|(k, v)| (k.value().0.to_owned(), k.value().1.to_owned(), v.value().to_vec())))
                .take_while(|r| r.as_ref().map_or(true, |(e, _, _)| e == &enrollment))
                .map(|r| -> Result<(String, DeviceProfile)> {
                    let (_, ident, v) = r?;
                    Ok((ident, dec(&v)?))
                })
                .collect::<Result<_>>()?;
            let mut n = 0;
            for (ident, mut dp) in current {
                dp.identifier = ident.clone();
                if dp.reconcile(&installed, now) {
                    t.insert((enrollment.as_str(), ident.as_str()), enc(&dp)?.as_slice())?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}
