//! PostgreSQL: the command queue (`QueueStore`): commands, and one
//! delivery row per command and enrollment whose status says whether it is
//! still queued (`deliveries_pending` makes the queue an index scan).

use super::*;

/// `Delivery::withdraw(Cleared)` on every pending delivery of `ids`, in one statement.
pub(super) async fn clear_pending(tx: &Transaction<'_>, ids: &[String], now: i64) -> Result<u64> {
    exec(
        tx,
        "UPDATE deliveries SET status = 'Cleared', updated_at = $2 WHERE enrollment = ANY($1) AND status IN ('Pending', 'NotNow')",
        &[&ids, &now],
    )
    .await
}

pub(super) async fn first_pending<C: GenericClient>(c: &C, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
    let sql = if skip_not_now {
        "SELECT c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 AND d.status = 'Pending' ORDER BY d.seq LIMIT 1"
    } else {
        "SELECT c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 AND d.status IN ('Pending', 'NotNow') ORDER BY d.seq LIMIT 1"
    };
    match opt(c, sql, &[&id]).await? {
        Some(r) => Ok(Some(QueuedCommand {
            uuid: r.try_get(0)?,
            request_type: r.try_get(1)?,
            body: r.try_get(2)?,
        })),
        None => Ok(None),
    }
}

async fn known_ids(tx: &Transaction<'_>, targets: &[String]) -> Result<Vec<String>> {
    let r = rows(tx, "SELECT id FROM enrollments WHERE id = ANY($1) ORDER BY id", &[&targets]).await?;
    Ok(r.iter().map(|r| r.get(0)).collect())
}

/// Allocate `n` queue positions.
async fn next_seqs(tx: &Transaction<'_>, n: usize) -> Result<Vec<i64>> {
    let n = n as i64;
    let r = rows(tx, "SELECT nextval('command_seq') FROM generate_series(1, $1::bigint)", &[&n]).await?;
    let mut v: Vec<i64> = r.iter().map(|r| r.get(0)).collect();
    v.sort_unstable();
    Ok(v)
}

pub(super) async fn insert_commands(tx: &Transaction<'_>, recs: &[CommandRecord]) -> Result<()> {
    let uuids: Vec<&str> = recs.iter().map(|r| r.uuid.as_str()).collect();
    let seqs: Vec<i64> = recs.iter().map(|r| r.seq as i64).collect();
    let types: Vec<&str> = recs.iter().map(|r| r.request_type.as_str()).collect();
    let created: Vec<i64> = recs.iter().map(|r| r.created_at).collect();
    let targets: Vec<i64> = recs.iter().map(|r| r.targets as i64).collect();
    let profiles: Vec<Option<serde_json::Value>> = recs
        .iter()
        .map(|r| r.profile.as_ref().map(to_json).transpose())
        .collect::<Result<_>>()?;
    let bodies: Vec<&[u8]> = recs.iter().map(|r| r.body.as_slice()).collect();
    let keys: Vec<Option<&str>> = recs.iter().map(|r| r.supersede.as_deref()).collect();
    exec(
        tx,
        "INSERT INTO commands (uuid, seq, request_type, created_at, targets, profile, body, supersede) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::jsonb[], $7::bytea[], $8::text[])",
        &[&uuids, &seqs, &types, &created, &targets, &profiles, &bodies, &keys],
    )
    .await?;
    Ok(())
}

/// Pending deliveries as enqueued: (enrollment, seq, command uuid, queued at).
async fn insert_deliveries(tx: &Transaction<'_>, ids: &[&str], seqs: &[i64], uuids: &[&str], at: &[i64]) -> Result<()> {
    exec(
        tx,
        "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at) SELECT e, s, u, 'Pending', t, t FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS x(e, s, u, t)",
        &[&ids, &seqs, &uuids, &at],
    )
    .await?;
    Ok(())
}

/// A newer command for a profile supersedes the pending one, and the
/// profile is pending (install or removal) on the enrollment.
async fn track_profile(tx: &Transaction<'_>, rec: &CommandRecord, tag: &ProfileTag, id: &str) -> Result<()> {
    let old: Option<DeviceProfile> = match opt(
        tx,
        "SELECT data FROM device_profiles WHERE enrollment = $1 AND identifier = $2 FOR UPDATE",
        &[&id, &tag.identifier],
    )
    .await?
    {
        Some(r) => Some(json(&r, 0)?),
        None => None,
    };
    if let Some(old_uuid) = old.as_ref().and_then(|o| o.command_uuid.clone()) {
        // `Delivery::withdraw(Superseded)`, if it is still pending.
        exec(
            tx,
            "UPDATE deliveries SET status = 'Superseded', updated_at = $3 WHERE command_uuid = $1 AND enrollment = $2 AND status IN ('Pending', 'NotNow')",
            &[&old_uuid, &id, &rec.created_at],
        )
        .await?;
    }
    let dp = DeviceProfile::queued(rec, tag, old);
    put_device_profile(tx, id, &tag.identifier, &dp).await
}

/// Withdraw (`Superseded`) the pending commands of `ids` queued with
/// replacement key `key`: one statement over the pending-queue index.
async fn supersede(tx: &Transaction<'_>, ids: &[&str], key: &str, now: i64) -> Result<u64> {
    exec(
        tx,
        "UPDATE deliveries d SET status = 'Superseded', updated_at = $3 FROM commands c WHERE d.enrollment = ANY($1) AND d.status IN ('Pending', 'NotNow') AND c.uuid = d.command_uuid AND c.supersede = $2",
        &[&ids, &key, &now],
    )
    .await
}

async fn enqueue_tx(tx: &Transaction<'_>, (cmd, targets): (CommandRecord, Vec<String>)) -> Result<EnqueueOutcome> {
    let known = known_ids(tx, &targets).await?;
    let unknown: Vec<String> = {
        let k: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
        targets.iter().filter(|t| !k.contains(t.as_str())).cloned().collect()
    };
    if known.is_empty() {
        // No command is stored for nobody.
        return Ok(EnqueueOutcome { queued: 0, unknown });
    }
    let mut rec = cmd;
    rec.targets = known.len() as u64;
    rec.seq = next_seqs(tx, 1).await?.first().copied().unwrap_or(0) as u64;
    if let Some(key) = &rec.supersede {
        let ids: Vec<&str> = known.iter().map(String::as_str).collect();
        supersede(tx, &ids, key, rec.created_at).await?;
    }
    insert_commands(tx, std::slice::from_ref(&rec)).await?;
    if let Some(tag) = &rec.profile {
        for id in &known {
            track_profile(tx, &rec, tag, id).await?;
        }
    }
    let ids: Vec<&str> = known.iter().map(String::as_str).collect();
    let n = ids.len();
    insert_deliveries(
        tx,
        &ids,
        &vec![rec.seq as i64; n],
        &vec![rec.uuid.as_str(); n],
        &vec![rec.created_at; n],
    )
    .await?;
    Ok(EnqueueOutcome { queued: n as u64, unknown })
}

type Secrets = Vec<(SecretKind, String, OneTimeSecret)>;

async fn enqueue_each_tx(tx: &Transaction<'_>, (items, secrets): (Vec<(CommandRecord, String)>, Secrets)) -> Result<EnqueueOutcome> {
    let targets: Vec<String> = items.iter().map(|(_, t)| t.clone()).collect();
    let known: std::collections::HashSet<String> = known_ids(tx, &targets).await?.into_iter().collect();
    let unknown: Vec<String> = targets.into_iter().filter(|t| !known.contains(t)).collect();
    for (kind, hash, rec) in &secrets {
        if rec.is_for_any(&known) {
            put_secret(tx, *kind, hash, rec).await?;
        }
    }
    let mut recs: Vec<(CommandRecord, String)> = items.into_iter().filter(|(_, t)| known.contains(t)).collect();
    let seqs = next_seqs(tx, recs.len()).await?;
    for ((rec, _), seq) in recs.iter_mut().zip(&seqs) {
        rec.targets = 1;
        rec.seq = *seq as u64;
    }
    for (rec, target) in &recs {
        if let Some(key) = &rec.supersede {
            supersede(tx, &[target.as_str()], key, rec.created_at).await?;
        }
    }
    let only: Vec<CommandRecord> = recs.iter().map(|(r, _)| r.clone()).collect();
    insert_commands(tx, &only).await?;
    for (rec, target) in &recs {
        if let Some(tag) = &rec.profile {
            track_profile(tx, rec, tag, target).await?;
        }
    }
    let ids: Vec<&str> = recs.iter().map(|(_, t)| t.as_str()).collect();
    let uuids: Vec<&str> = recs.iter().map(|(r, _)| r.uuid.as_str()).collect();
    let at: Vec<i64> = recs.iter().map(|(r, _)| r.created_at).collect();
    insert_deliveries(tx, &ids, &seqs, &uuids, &at).await?;
    Ok(EnqueueOutcome {
        queued: recs.len() as u64,
        unknown,
    })
}

async fn report_tx(tx: &Transaction<'_>, (id, r): (String, ReportRecord)) -> Result<(ReportOutcome, Option<QueuedCommand>)> {
    // Also for a report already applied: the device sends it again when it got no answer.
    put_events(tx, &r.events).await?;
    let sql = format!(
        "SELECT {DELIVERY_COLS}, c.request_type, c.profile FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.command_uuid = $1 AND d.enrollment = $2 FOR UPDATE OF d"
    );
    let current = opt(tx, &sql, &[&r.command_uuid, &id]).await?;
    let outcome = match current {
        Some(row) => {
            let mut d = delivery_row(&row, 0)?;
            let request_type: String = row.try_get(8)?;
            let tag: Option<ProfileTag> = opt_json(&row, 9)?;
            match d.apply_report(r.status, r.error_chain, r.raw, r.now) {
                Some(DeliveryChange::NotNow) => {
                    exec(
                        tx,
                        "UPDATE deliveries SET status = 'NotNow', not_now_count = $3, updated_at = $4 WHERE enrollment = $1 AND seq = $2",
                        &[&id, &(d.seq as i64), &(d.not_now_count as i32), &d.updated_at],
                    )
                    .await?;
                    ReportOutcome::NotNowRecorded
                }
                Some(DeliveryChange::Finished | DeliveryChange::Late) => {
                    let chain = if d.error_chain.is_empty() {
                        None
                    } else {
                        Some(to_json(&d.error_chain)?)
                    };
                    exec(
                        tx,
                        "UPDATE deliveries SET status = $3, error_chain = $4, result = $5, updated_at = $6 WHERE enrollment = $1 AND seq = $2",
                        &[&id, &(d.seq as i64), &status_str(d.status), &chain, &d.result, &d.updated_at],
                    )
                    .await?;
                    if let Some(tag) = &tag {
                        profile_result(tx, &id, tag, &r.command_uuid, &d).await?;
                    }
                    ReportOutcome::Finished { request_type }
                }
                None => ReportOutcome::NotPending,
            }
        }
        None => ReportOutcome::NotPending,
    };
    let next = first_pending(tx, &id, true).await?;
    Ok((outcome, next))
}

/// A report and the next command in one statement (one round trip, its own
/// commit): `Delivery::apply_report` as one UPDATE of the delivery (pending,
/// or withdrawn and answered finally),
/// and the next `Pending` command read beside it (the statement's snapshot
/// still shows the reported delivery as pending, so it is left out by uuid).
/// A command that tracks a profile is left alone (the first column says so):
/// its result also updates the profile's record, in `report_tx`.
const REPORT_AT_ONCE: &str = "WITH cur AS (
    SELECT d.enrollment, d.seq, c.request_type, c.profile IS NOT NULL AS tagged
    FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid
    WHERE d.command_uuid = $1 AND d.enrollment = $2
      AND (d.status IN ('Pending', 'NotNow') OR ($3::text <> 'NotNow' AND d.status IN ('Superseded', 'Cleared')))
), upd AS (
    UPDATE deliveries d SET
        status = $3::text,
        not_now_count = d.not_now_count + CASE WHEN $3::text = 'NotNow' THEN 1 ELSE 0 END,
        error_chain = CASE WHEN $3::text = 'NotNow' THEN d.error_chain ELSE $4::jsonb END,
        result = CASE WHEN $3::text = 'NotNow' THEN d.result ELSE $5::bytea END,
        updated_at = $6::bigint
    FROM cur
    WHERE d.enrollment = cur.enrollment AND d.seq = cur.seq AND NOT cur.tagged
      AND (d.status IN ('Pending', 'NotNow') OR ($3::text <> 'NotNow' AND d.status IN ('Superseded', 'Cleared')))
    RETURNING cur.request_type
), nxt AS (
    SELECT c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid
    WHERE d.enrollment = $2 AND d.status = 'Pending' AND d.command_uuid <> $1 ORDER BY d.seq LIMIT 1
)
SELECT coalesce((SELECT bool_or(tagged) FROM cur), false), (SELECT request_type FROM upd LIMIT 1), nxt.uuid, nxt.request_type, nxt.body
FROM (SELECT 1) AS one LEFT JOIN nxt ON true";

/// `REPORT_AT_ONCE`: None when the command tracks a profile (`report_tx` then).
async fn report_at_once<C: GenericClient>(c: &C, id: &str, r: &ReportRecord) -> Result<Option<(ReportOutcome, Option<QueuedCommand>)>> {
    let chain = if r.error_chain.is_empty() || r.status == DeliveryStatus::NotNow {
        None
    } else {
        Some(to_json(&r.error_chain)?)
    };
    let row = one(
        c,
        REPORT_AT_ONCE,
        &[&r.command_uuid, &id, &status_str(r.status), &chain, &r.raw, &r.now],
    )
    .await?;
    let tagged: bool = row.try_get(0)?;
    if tagged {
        return Ok(None);
    }
    let outcome = match row.try_get::<_, Option<String>>(1)? {
        None => ReportOutcome::NotPending,
        Some(_) if r.status == DeliveryStatus::NotNow => ReportOutcome::NotNowRecorded,
        Some(request_type) => ReportOutcome::Finished { request_type },
    };
    let next = match row.try_get::<_, Option<String>>(2)? {
        Some(uuid) => Some(QueuedCommand {
            uuid,
            request_type: row.try_get(3)?,
            body: row.try_get(4)?,
        }),
        None => None,
    };
    Ok(Some((outcome, next)))
}

async fn clear_queue_tx(tx: &Transaction<'_>, (ids, now): (Vec<String>, i64)) -> Result<u64> {
    clear_pending(tx, &ids, now).await
}

#[async_trait]
impl QueueStore for PgStore {
    async fn enqueue(&self, cmd: CommandRecord, targets: Vec<String>) -> Result<EnqueueOutcome> {
        let mut targets = targets;
        targets.sort_unstable();
        targets.dedup();
        self.write((cmd, targets), enqueue_tx).await
    }

    async fn enqueue_each(
        &self,
        items: Vec<(CommandRecord, String)>,
        secrets: Vec<(SecretKind, String, OneTimeSecret)>,
    ) -> Result<EnqueueOutcome> {
        let mut items = items;
        items.sort_by(|a, b| a.1.cmp(&b.1));
        self.write((items, secrets), enqueue_each_tx).await
    }

    async fn next_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
        self.read(|c| async move { first_pending(&c, id, skip_not_now).await }).await
    }

    async fn report(&self, id: &str, report: ReportRecord) -> Result<(ReportOutcome, Option<QueuedCommand>)> {
        // Most results (no webhook events to store beside them, no profile to
        // track) are one statement, committed on its own: no group-commit
        // transaction around it (BEGIN and COMMIT would be two more round trips).
        if report.events.is_empty() {
            let r = &report;
            if let Some(done) = self.read(|c| async move { report_at_once(&c, id, r).await }).await? {
                return Ok(done);
            }
        }
        self.write((id.to_owned(), report), report_tx).await
    }

    async fn clear_queue(&self, id: &str, now: i64) -> Result<u64> {
        self.write((vec![id.to_owned()], now), clear_queue_tx).await
    }

    async fn device_commands(&self, id: &str, limit: usize) -> Result<Vec<DeviceCommand>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(|c| async move {
            let sql = format!(
                "SELECT {DELIVERY_COLS}, d.command_uuid, c.request_type FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 ORDER BY d.seq DESC LIMIT $2"
            );
            let r = rows(&c, &sql, &[&id, &limit]).await?;
            let mut out = r
                .iter()
                .map(|r| {
                    Ok(DeviceCommand {
                        delivery: delivery_row(r, 0)?,
                        command_uuid: r.try_get(8)?,
                        request_type: r.try_get(9)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn command(&self, uuid: &str) -> Result<Option<(CommandRecord, Vec<Delivery>)>> {
        self.read(|c| async move {
            let Some(r) = opt(
                &c,
                "SELECT uuid, seq, request_type, created_at, targets, profile, body, supersede FROM commands WHERE uuid = $1",
                &[&uuid],
            )
            .await?
            else {
                return Ok(None);
            };
            let rec = command_row(&r)?;
            let sql = format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.command_uuid = $1 ORDER BY d.enrollment");
            let ds = rows(&c, &sql, &[&uuid]).await?;
            let ds = ds.iter().map(|r| delivery_row(r, 0)).collect::<Result<Vec<_>>>()?;
            Ok(Some((rec, ds)))
        })
        .await
    }
}

pub(super) fn command_row(r: &tokio_postgres::Row) -> Result<CommandRecord> {
    let seq: i64 = r.try_get(1)?;
    let targets: i64 = r.try_get(4)?;
    Ok(CommandRecord {
        uuid: r.try_get(0)?,
        seq: seq as u64,
        request_type: r.try_get(2)?,
        created_at: r.try_get(3)?,
        targets: targets as u64,
        profile: opt_json(r, 5)?,
        body: r.try_get(6)?,
        supersede: r.try_get(7)?,
    })
}
