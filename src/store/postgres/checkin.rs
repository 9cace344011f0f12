//! PostgreSQL: the enrollment lifecycle (`CheckinStore`), and the one way an
//! enrollment is written (`put_enrollment`, which keeps the lookup index in
//! step).

use super::*;

async fn get_enrollment<C: GenericClient>(c: &C, id: &str, lock: bool) -> Result<Option<Enrollment>> {
    let sql = if lock {
        "SELECT data FROM enrollments WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT data FROM enrollments WHERE id = $1"
    };
    match opt(c, sql, &[&id]).await? {
        Some(r) => Ok(Some(json(&r, 0)?)),
        None => Ok(None),
    }
}

/// Store an enrollment and keep the lookup index in step with it.
pub(super) async fn put_enrollment(tx: &Transaction<'_>, e: &Enrollment) -> Result<()> {
    exec(
        tx,
        "INSERT INTO enrollments (id, device, data) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET device = EXCLUDED.device, data = EXCLUDED.data",
        &[&e.id, &e.device, &to_json(e)?],
    )
    .await?;
    put_lookups(tx, e).await
}

pub(super) async fn put_lookups<C: GenericClient>(c: &C, e: &Enrollment) -> Result<()> {
    let keys = e.lookup_keys();
    let k: Vec<i16> = keys.iter().map(|(k, _, _)| *k as i16).collect();
    let v: Vec<&str> = keys.iter().map(|(_, v, _)| v.as_str()).collect();
    let t: Vec<&str> = keys.iter().map(|(_, _, t)| t.as_str()).collect();
    // One statement: replace this record's entries unless they are already exactly these.
    exec(
        c,
        "WITH gone AS (DELETE FROM lookups WHERE source = $1 AND (key, value, enrollment) NOT IN (SELECT * FROM unnest($2::smallint[], $3::text[], $4::text[]))) INSERT INTO lookups (key, value, source, enrollment) SELECT k, v, $1, t FROM unnest($2::smallint[], $3::text[], $4::text[]) AS x(k, v, t) ON CONFLICT (key, value, source) DO UPDATE SET enrollment = EXCLUDED.enrollment",
        &[&e.id, &k, &v, &t],
    )
    .await?;
    Ok(())
}

/// Lock, change and store one enrollment; None if unknown.
async fn modify<R>(tx: &Transaction<'_>, id: &str, f: impl FnOnce(&mut Enrollment) -> (bool, R)) -> Result<Option<R>> {
    let Some(mut e) = get_enrollment(tx, id, true).await? else {
        return Ok(None);
    };
    let (changed, r) = f(&mut e);
    if changed {
        put_enrollment(tx, &e).await?;
    }
    Ok(Some(r))
}

async fn authenticate_tx(tx: &Transaction<'_>, (rec, keep_queue): (Enrollment, bool)) -> Result<AuthOutcome> {
    let now = rec.authenticated_at;
    if let Some(h) = &rec.cert_hash {
        if let Some(r) = opt(tx, "SELECT data FROM certs WHERE sha256 = $1 FOR UPDATE", &[h]).await? {
            let mut c: IssuedCert = json(&r, 0)?;
            match c.bind_to(&rec.device) {
                CertBinding::Elsewhere => return Ok(AuthOutcome::CertBoundElsewhere),
                CertBinding::Unchanged => {}
                CertBinding::Bound => {
                    exec(tx, "UPDATE certs SET data = $2 WHERE sha256 = $1", &[h, &to_json(&c)?]).await?;
                }
            }
        }
    }
    let old = get_enrollment(tx, &rec.id, true).await?;
    let rec = rec.reauthenticated(old.as_ref());
    if !keep_queue {
        let users: Vec<String> = rows(
            tx,
            "SELECT id FROM enrollments WHERE device = $1 AND id <> $1 ORDER BY id FOR UPDATE",
            &[&rec.id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut all = users.clone();
        all.push(rec.id.clone());
        clear_pending(tx, &all, now).await?;
        if !users.is_empty() {
            // `Enrollment::deactivate` on every user channel, in one statement.
            exec(
                tx,
                "UPDATE enrollments SET data = jsonb_set(data, '{active}', 'false') WHERE id = ANY($1)",
                &[&users],
            )
            .await?;
        }
    }
    put_enrollment(tx, &rec).await?;
    Ok(AuthOutcome::Stored)
}

async fn token_update_tx(tx: &Transaction<'_>, (id, parent, mut u): (String, String, TokenUpdateRecord)) -> Result<Option<bool>> {
    let events = std::mem::take(&mut u.events);
    let mut e = match get_enrollment(tx, &id, true).await? {
        Some(e) => e,
        None if id != parent => {
            let Some(dev) = get_enrollment(tx, &parent, false).await? else {
                return Ok(None);
            };
            dev.new_user_channel(&id, &u)
        }
        None => return Ok(None),
    };
    e.apply_token_update(u);
    put_enrollment(tx, &e).await?;
    put_events(tx, &events).await?;
    let pending: bool = one(tx, HAS_PENDING, &[&id]).await?.try_get(0)?;
    Ok(Some(pending))
}

async fn checkout_tx(tx: &Transaction<'_>, (id, now): (String, i64)) -> Result<bool> {
    let Some(mut e) = get_enrollment(tx, &id, true).await? else {
        return Ok(false);
    };
    let users = rows(
        tx,
        "SELECT data FROM enrollments WHERE device = $1 AND id <> $1 ORDER BY id FOR UPDATE",
        &[&id],
    )
    .await?;
    for r in users {
        let mut u: Enrollment = json(&r, 0)?;
        u.check_out_with_device(now);
        put_enrollment(tx, &u).await?;
    }
    e.check_out(now);
    put_enrollment(tx, &e).await?;
    Ok(true)
}

async fn mark_renewal_tx(tx: &Transaction<'_>, (id, now): (String, i64)) -> Result<()> {
    modify(tx, &id, |e| (true, e.mark_renewal(now))).await?;
    Ok(())
}

async fn set_bootstrap_token_tx(tx: &Transaction<'_>, (id, sealed, now): (String, Option<String>, i64)) -> Result<bool> {
    let r = modify(tx, &id, |e| (true, e.apply_bootstrap_token(sealed, now))).await?;
    Ok(r.is_some())
}

async fn update_info_tx(tx: &Transaction<'_>, (id, info): (String, DeviceInfo)) -> Result<bool> {
    let r = modify(tx, &id, |e| (true, e.merge_facts(info))).await?;
    Ok(r.is_some())
}

async fn set_attributes_tx(tx: &Transaction<'_>, (id, attrs): (String, Attributes)) -> Result<Option<Attributes>> {
    modify(tx, &id, |e| {
        e.apply_attributes(attrs);
        (true, e.attributes.clone())
    })
    .await
}

async fn reseal_tokens_tx(tx: &Transaction<'_>, updates: Vec<Reseal>) -> Result<u64> {
    let mut n = 0;
    for u in updates {
        let id = u.id.clone();
        let changed = modify(tx, &id, |e| {
            let changed = e.apply_reseal(u);
            (changed, changed)
        })
        .await?;
        if changed == Some(true) {
            n += 1;
        }
    }
    Ok(n)
}

async fn note_refused_reenroll_tx(tx: &Transaction<'_>, (id, now): (String, i64)) -> Result<()> {
    modify(tx, &id, |e| (true, e.note_refused_reenroll(now))).await?;
    Ok(())
}

async fn record_pushes_tx(tx: &Transaction<'_>, records: Vec<PushRecord>) -> Result<()> {
    for r in records {
        modify(tx, &r.id, |e| (e.apply_push(&r), ())).await?;
    }
    Ok(())
}

/// `Enrollment::apply_seen` for many enrollments in one statement.
async fn touch_tx(tx: &Transaction<'_>, (ids, at): (Vec<String>, Vec<i64>)) -> Result<()> {
    exec(
        tx,
        "UPDATE enrollments e SET data = jsonb_set(e.data, '{last_seen_at}', to_jsonb(v.at)) FROM unnest($1::text[], $2::bigint[]) AS v(id, at) WHERE e.id = v.id AND (e.data->>'last_seen_at')::bigint < v.at",
        &[&ids, &at],
    )
    .await?;
    Ok(())
}

type Attributes = std::collections::BTreeMap<String, String>;

#[async_trait]
impl CheckinStore for PgStore {
    async fn authenticate(&self, rec: Enrollment, keep_queue: bool) -> Result<AuthOutcome> {
        self.write((rec, keep_queue), authenticate_tx).await
    }

    async fn mark_renewal(&self, id: &str, now: i64) -> Result<()> {
        self.write((id.to_owned(), now), mark_renewal_tx).await
    }

    async fn token_update(&self, id: &str, parent: &str, u: TokenUpdateRecord) -> Result<Option<bool>> {
        self.write((id.to_owned(), parent.to_owned(), u), token_update_tx).await
    }

    async fn checkout(&self, id: &str, now: i64) -> Result<bool> {
        self.write((id.to_owned(), now), checkout_tx).await
    }

    async fn set_bootstrap_token(&self, id: &str, sealed: Option<String>, now: i64) -> Result<bool> {
        self.write((id.to_owned(), sealed, now), set_bootstrap_token_tx).await
    }

    async fn update_info(&self, id: &str, info: DeviceInfo) -> Result<bool> {
        self.write((id.to_owned(), info), update_info_tx).await
    }

    async fn set_attributes(&self, id: &str, attrs: Attributes) -> Result<Option<Attributes>> {
        self.write((id.to_owned(), attrs), set_attributes_tx).await
    }

    async fn reseal_tokens(&self, updates: Vec<Reseal>) -> Result<u64> {
        self.write(updates, reseal_tokens_tx).await
    }

    async fn note_refused_reenroll(&self, id: &str, now: i64) -> Result<()> {
        self.write((id.to_owned(), now), note_refused_reenroll_tx).await
    }

    async fn record_pushes(&self, records: Vec<PushRecord>) -> Result<()> {
        let mut records = records;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        self.write(records, record_pushes_tx).await
    }

    async fn touch(&self, seen: Vec<(String, i64)>) -> Result<()> {
        let mut seen = seen;
        seen.sort();
        let ids: Vec<String> = seen.iter().map(|(i, _)| i.clone()).collect();
        let at: Vec<i64> = seen.iter().map(|(_, a)| *a).collect();
        self.write((ids, at), touch_tx).await
    }

    async fn enrollment(&self, id: &str) -> Result<Option<Enrollment>> {
        self.read(|c| async move { get_enrollment(&c, id, false).await }).await
    }

    async fn identity_and_enrollment(&self, cert_sha256: &str, id: &str) -> Result<(Option<IssuedCert>, Option<Enrollment>)> {
        self.read(|c| async move {
            let r = one(
                &c,
                "SELECT (SELECT data FROM certs WHERE sha256 = $1), (SELECT data FROM enrollments WHERE id = $2)",
                &[&cert_sha256, &id],
            )
            .await?;
            Ok((opt_json(&r, 0)?, opt_json(&r, 1)?))
        })
        .await
    }

    async fn counts(&self) -> Result<StoreCounts> {
        self.read(|c| async move {
            let r = one(&c, COUNTS, &[]).await?;
            Ok(StoreCounts {
                enrollments: r.get::<_, i64>(0).max(0) as u64,
                pending_commands: r.try_get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .await
    }

    async fn enrollments(&self, after: Option<String>, limit: usize) -> Result<Vec<Enrollment>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let r = match &after {
                Some(a) => rows(&c, "SELECT data FROM enrollments WHERE id > $1 ORDER BY id LIMIT $2", &[a, &limit]).await?,
                None => rows(&c, "SELECT data FROM enrollments ORDER BY id LIMIT $1", &[&limit]).await?,
            };
            r.iter().map(|r| json(r, 0)).collect()
        })
        .await
    }
}
