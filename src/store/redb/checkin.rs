//! redb: the enrollment lifecycle (`CheckinStore`), and the one way an
//! enrollment is written (`put_enrollment`, which keeps the lookup index and
//! the enrollment list in step).

use super::*;

/// Upper bound of a prefix range over `id:` user channels.
fn user_channel_range(device: &str) -> (String, String) {
    (format!("{device}:"), format!("{device};"))
}

pub(super) fn get_enrollment(txn: &WriteTransaction, id: &str) -> Result<Option<Enrollment>> {
    let t = txn.open_table(ENROLLMENTS)?;
    let r = dec_opt(t.get(id)?)?;
    Ok(r)
}

/// Store an enrollment and keep the lookup index in step with it.
pub(super) fn put_enrollment(txn: &WriteTransaction, e: &Enrollment) -> Result<()> {
    let old: Option<Enrollment> = {
        let mut t = txn.open_table(ENROLLMENTS)?;
        let old = dec_opt(t.get(e.id.as_str())?)?;
        t.insert(e.id.as_str(), enc(e)?.as_slice())?;
        old
    };
    if old.is_none() {
        txn.open_table(ENROLLED)?.insert(e.id.as_str(), ())?;
    }
    let before = old.map(|o| o.lookup_keys()).unwrap_or_default();
    let after = e.lookup_keys();
    if before != after {
        let mut l = txn.open_table(LOOKUPS)?;
        for (k, v, _) in &before {
            l.remove((*k as u8, v.as_str(), e.id.as_str()))?;
        }
        for (k, v, target) in &after {
            l.insert((*k as u8, v.as_str(), e.id.as_str()), target.as_str())?;
        }
    }
    Ok(())
}

#[async_trait]
impl CheckinStore for RedbStore {
    async fn authenticate(&self, rec: Enrollment, keep_queue: bool) -> Result<AuthOutcome> {
        let policy = self.fanout;
        self.write(move |txn| {
            let now = rec.authenticated_at;
            if let Some(h) = &rec.cert_hash {
                let mut certs = txn.open_table(CERTS)?;
                let existing: Option<IssuedCert> = dec_opt(certs.get(h.as_str())?)?;
                if let Some(mut c) = existing {
                    match c.bind_to(&rec.device) {
                        CertBinding::Elsewhere => return Ok(AuthOutcome::CertBoundElsewhere),
                        CertBinding::Unchanged => {}
                        CertBinding::Bound => {
                            certs.insert(h.as_str(), enc(&c)?.as_slice())?;
                        }
                    }
                }
            }
            let old = get_enrollment(txn, &rec.id)?;
            let rec = rec.reauthenticated(old.as_ref());
            if !keep_queue {
                clear_pending(txn, policy, &rec.id, now)?;
                let (lo, hi) = user_channel_range(&rec.id);
                let users: Vec<String> = {
                    let t = txn.open_table(ENROLLMENTS)?;
                    let v = t
                        .range(lo.as_str()..hi.as_str())?
                        .map(|r| r.map(|(k, _)| k.value().to_owned()))
                        .collect::<std::result::Result<_, _>>()?;
                    v
                };
                for u in users {
                    clear_pending(txn, policy, &u, now)?;
                    if let Some(mut ue) = get_enrollment(txn, &u)? {
                        ue.deactivate();
                        put_enrollment(txn, &ue)?;
                    }
                }
            }
            put_enrollment(txn, &rec)?;
            Ok(AuthOutcome::Stored)
        })
        .await
    }

    async fn mark_renewal(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |txn| {
            if let Some(mut e) = get_enrollment(txn, &id)? {
                e.mark_renewal(now);
                put_enrollment(txn, &e)?;
            }
            Ok(())
        })
        .await
    }

    async fn token_update(&self, id: &str, parent: &str, mut u: TokenUpdateRecord) -> Result<Option<bool>> {
        let (id, parent) = (id.to_owned(), parent.to_owned());
        let events = std::mem::take(&mut u.events);
        let policy = self.fanout;
        self.write(move |txn| {
            let mut e = match get_enrollment(txn, &id)? {
                Some(e) => e,
                None if id != parent => {
                    // First TokenUpdate of a user channel creates it, under an existing device.
                    let Some(dev) = get_enrollment(txn, &parent)? else {
                        return Ok(None);
                    };
                    dev.new_user_channel(&id, &u)
                }
                None => return Ok(None),
            };
            e.apply_token_update(u);
            put_enrollment(txn, &e)?;
            put_events(txn, &events)?;
            let pending = QueueTables::open(txn, policy)?.view().first(&id, false)?.is_some();
            Ok(Some(pending))
        })
        .await
    }

    async fn checkout(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(false);
            };
            let (lo, hi) = user_channel_range(&id);
            let users: Vec<Enrollment> = {
                let t = txn.open_table(ENROLLMENTS)?;
                let v = t
                    .range(lo.as_str()..hi.as_str())?
                    .map(|r| r.map(|(_, v)| v.value().to_vec()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                v.iter().map(|b| dec(b)).collect::<Result<_>>()?
            };
            for mut u in users {
                u.check_out_with_device(now);
                put_enrollment(txn, &u)?;
            }
            e.check_out(now);
            put_enrollment(txn, &e)?;
            Ok(true)
        })
        .await
    }

    async fn set_bootstrap_token(&self, id: &str, sealed: Option<String>, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(false);
            };
            e.apply_bootstrap_token(sealed, now);
            put_enrollment(txn, &e)?;
            Ok(true)
        })
        .await
    }

    async fn update_info(&self, id: &str, info: DeviceInfo) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(false);
            };
            e.merge_facts(info);
            put_enrollment(txn, &e)?;
            Ok(true)
        })
        .await
    }

    async fn set_attributes(
        &self,
        id: &str,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        let id = id.to_owned();
        self.write(move |txn| {
            let Some(mut e) = get_enrollment(txn, &id)? else {
                return Ok(None);
            };
            e.apply_attributes(attrs);
            put_enrollment(txn, &e)?;
            Ok(Some(e.attributes))
        })
        .await
    }

    async fn reseal_tokens(&self, updates: Vec<Reseal>) -> Result<u64> {
        self.write(move |txn| {
            let mut n = 0;
            for u in updates {
                let Some(mut e) = get_enrollment(txn, &u.id)? else { continue };
                if e.apply_reseal(u) {
                    put_enrollment(txn, &e)?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    async fn note_refused_reenroll(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_owned();
        self.write(move |txn| {
            if let Some(mut e) = get_enrollment(txn, &id)? {
                e.note_refused_reenroll(now);
                put_enrollment(txn, &e)?;
            }
            Ok(())
        })
        .await
    }

    async fn record_pushes(&self, records: Vec<PushRecord>) -> Result<()> {
        self.write(move |txn| {
            for r in records {
                let Some(mut e) = get_enrollment(txn, &r.id)? else { continue };
                if e.apply_push(&r) {
                    put_enrollment(txn, &e)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<()> {
        self.write(move |txn| {
            for (id, at) in seen {
                if let Some(mut e) = get_enrollment(txn, &id)? {
                    if e.apply_seen(at) {
                        put_enrollment(txn, &e)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn identity_and_enrollment(&self, cert_sha256: &str, id: &str) -> Result<(Option<IssuedCert>, Option<Enrollment>)> {
        self.read(|txn| {
            let cert = dec_opt(txn.open_table(CERTS)?.get(cert_sha256)?)?;
            let e = dec_opt(txn.open_table(ENROLLMENTS)?.get(id)?)?;
            Ok((cert, e))
        })
    }

    async fn enrollment(&self, id: &str) -> Result<Option<Enrollment>> {
        self.read(|txn| {
            let t = txn.open_table(ENROLLMENTS)?;
            let r = dec_opt(t.get(id)?)?;
            Ok(r)
        })
    }

    async fn enrollments(&self, after: Option<String>, limit: usize) -> Result<Vec<Enrollment>> {
        self.read(|txn| {
            let t = txn.open_table(ENROLLMENTS)?;
            let mut out = Vec::new();
            let iter = match &after {
                Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded))?,
                None => t.range::<&str>(..)?,
            };
            for item in iter.take(limit) {
                let (_, v) = item?;
                out.push(dec(v.value())?);
            }
            Ok(out)
        })
    }

    async fn counts(&self) -> Result<StoreCounts> {
        use ::redb::ReadableTableMetadata as _;
        self.read(|txn| {
            Ok(StoreCounts {
                enrollments: txn.open_table(ENROLLMENTS)?.len()?,
                pending_commands: {
                    let mut n = txn.open_table(QUEUE)?.len()?;
                    for item in txn.open_table(FANOUTS)?.iter()? {
                        n += FanOut::dec(item?.1.value())?.pending;
                    }
                    n
                },
            })
        })
    }
}
