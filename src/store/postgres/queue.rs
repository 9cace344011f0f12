//! PostgreSQL: the command queue (`QueueStore`): commands, and one
//! delivery row per command and enrollment whose status says whether it is
//! still queued (`deliveries_pending` makes the queue an index scan).
//!
//! **Fan-outs** (the counterpart of redb's): a command without a profile or a
//! replacement key to at least `FanoutPolicy::min_targets` enrollments is
//! stored as one `fanouts` row and its sorted targets in `fanout_targets`
//! rows of `CHUNK` ids each, instead of a delivery row (and three index
//! entries) per target. A target with no delivery row for the command is
//! pending as enqueued; its first answer (or a clear) writes its row, so a
//! row, once there, is the truth. A poll checks each open fan-out with one
//! index probe into the chunks and one into `deliveries_by_command`. A
//! fan-out *settles* (every target still without a row gets a `Pending` one,
//! and the fan-out is closed) when more than `max_open` are open, the oldest
//! first, and `SETTLE_AFTER` seconds after it was queued (`settle_fanouts`,
//! a leased periodic task): by then the devices that are online have
//! answered. No counter is kept per fan-out: one row updated by every answer
//! would serialise a fleet's answers on its lock. Exports settle first, so
//! they see only deliveries, as on redb.

use super::*;

/// SQL: whether enrollment `$e` is a target of the fan-out aliased `f` (the
/// one chunk whose range can hold it, then its array).
macro_rules! member {
    ($e:literal) => {
        concat!(
            $e,
            " = ANY((SELECT t.ids FROM fanout_targets t WHERE t.command_uuid = f.command_uuid AND t.first_id <= ",
            $e,
            " ORDER BY t.first_id DESC LIMIT 1)::text[])"
        )
    };
}

/// SQL: the open fan-outs pending as enqueued for enrollment `$e` (a target without a delivery row).
macro_rules! fanout_pending {
    ($e:literal) => {
        concat!(
            "fanouts f JOIN commands c ON c.uuid = f.command_uuid WHERE ",
            member!($e),
            " AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.command_uuid = f.command_uuid AND x.enrollment = ",
            $e,
            ")"
        )
    };
}

/// `Delivery::withdraw(Cleared)` on every pending delivery of `ids`, in one
/// statement, and a `Cleared` row for each open fan-out they are pending on.
pub(super) async fn clear_pending(tx: &Transaction<'_>, ids: &[String], now: i64) -> Result<u64> {
    let rows = exec(
        tx,
        "UPDATE deliveries SET status = 'Cleared', updated_at = $2 WHERE enrollment = ANY($1) AND status IN ('Pending', 'NotNow')",
        &[&ids, &now],
    )
    .await?;
    let fanned = exec(
        tx,
        concat!(
            "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at) SELECT e.id, f.seq, f.command_uuid, 'Cleared', c.created_at, $2 FROM unnest($1::text[]) AS e(id) CROSS JOIN fanouts f JOIN commands c ON c.uuid = f.command_uuid WHERE ",
            member!("e.id"),
            " ON CONFLICT DO NOTHING"
        ),
        &[&ids, &now],
    )
    .await?;
    Ok(rows + fanned)
}

/// Targets per `fanout_targets` row: a row stays below PostgreSQL's TOAST
/// threshold (~2 kB), so a membership check reads one small in-line array.
const CHUNK: i64 = 64;

/// Seconds after which a fan-out settles (`settle_fanouts`).
pub const SETTLE_AFTER: i64 = 600;

/// The first pending command of `$1` by queue position: its own rows, then open fan-outs.
const FIRST_PENDING: &str = concat!(
    "SELECT uuid, request_type, body FROM ((SELECT d.seq, c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 AND d.status = 'Pending' ORDER BY d.seq LIMIT 1) UNION ALL (SELECT f.seq, c.uuid, c.request_type, c.body FROM ",
    fanout_pending!("$1"),
    " ORDER BY f.seq LIMIT 1)) q ORDER BY seq LIMIT 1"
);

/// `FIRST_PENDING`, commands that got NotNow included.
const FIRST_PENDING_ANY: &str = concat!(
    "SELECT uuid, request_type, body FROM ((SELECT d.seq, c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 AND d.status IN ('Pending', 'NotNow') ORDER BY d.seq LIMIT 1) UNION ALL (SELECT f.seq, c.uuid, c.request_type, c.body FROM ",
    fanout_pending!("$1"),
    " ORDER BY f.seq LIMIT 1)) q ORDER BY seq LIMIT 1"
);

/// Whether `$1` has anything pending.
pub(super) const HAS_PENDING: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE enrollment = $1 AND status IN ('Pending', 'NotNow')) OR EXISTS (SELECT 1 FROM ",
    fanout_pending!("$1"),
    ")"
);

/// Enrollments, and commands pending across them: rows, and fan-out targets without one.
pub(super) const COUNTS: &str = "SELECT (SELECT count(*) FROM enrollments), (SELECT count(*) FROM deliveries WHERE status IN ('Pending', 'NotNow')) + coalesce((SELECT sum(f.targets - (SELECT count(*) FROM deliveries x WHERE x.command_uuid = f.command_uuid)) FROM fanouts f), 0)::bigint";

pub(super) async fn first_pending<C: GenericClient>(c: &C, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
    let sql = if skip_not_now { FIRST_PENDING } else { FIRST_PENDING_ANY };
    match opt(c, sql, &[&id]).await? {
        Some(r) => Ok(Some(QueuedCommand {
            uuid: r.try_get(0)?,
            request_type: r.try_get(1)?,
            body: r.try_get(2)?,
        })),
        None => Ok(None),
    }
}

/// Store a fan-out: its record and its sorted targets in chunks.
async fn insert_fanout(tx: &Transaction<'_>, rec: &CommandRecord, known: &[&str]) -> Result<()> {
    exec(
        tx,
        "INSERT INTO fanouts (seq, command_uuid, targets) VALUES ($1, $2, $3)",
        &[&(rec.seq as i64), &rec.uuid, &(rec.targets as i64)],
    )
    .await?;
    exec(
        tx,
        // `known` is sorted, so each chunk is a contiguous range (found by its first id); the
        // order inside a chunk does not matter (`= ANY`), so the aggregate sorts nothing.
        "INSERT INTO fanout_targets (command_uuid, first_id, ids) SELECT $1, min(id COLLATE \"C\"), array_agg(id) FROM unnest($2::text[]) WITH ORDINALITY AS x(id, n) GROUP BY (n - 1) / $3",
        &[&rec.uuid, &known, &CHUNK],
    )
    .await?;
    Ok(())
}

/// Close fan-out `seq`: every target still without a delivery row gets a
/// `Pending` one (rows already there, answered or cleared, stay). Returns the
/// rows written.
async fn settle(tx: &Transaction<'_>, seq: i64) -> Result<u64> {
    let n = exec(
        tx,
        "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at) SELECT x.id, f.seq, f.command_uuid, 'Pending', c.created_at, c.created_at FROM fanouts f JOIN commands c ON c.uuid = f.command_uuid JOIN fanout_targets t ON t.command_uuid = f.command_uuid CROSS JOIN LATERAL unnest(t.ids) AS x(id) WHERE f.seq = $1 ON CONFLICT DO NOTHING",
        &[&seq],
    )
    .await?;
    exec(
        tx,
        "WITH gone AS (DELETE FROM fanouts WHERE seq = $1 RETURNING command_uuid) DELETE FROM fanout_targets WHERE command_uuid IN (SELECT command_uuid FROM gone)",
        &[&seq],
    )
    .await?;
    Ok(n)
}

async fn settle_tx(tx: &Transaction<'_>, seq: i64) -> Result<u64> {
    settle(tx, seq).await
}

/// A fan-out target's delivery row as enqueued, if `id` is a target of open
/// fan-out `uuid` without one (before a write that reads the row locked).
async fn materialize(tx: &Transaction<'_>, uuid: &str, id: &str) -> Result<u64> {
    exec(
        tx,
        concat!(
            "INSERT INTO deliveries (enrollment, seq, command_uuid, status, queued_at, updated_at) SELECT $2, f.seq, f.command_uuid, 'Pending', c.created_at, c.created_at FROM fanouts f JOIN commands c ON c.uuid = f.command_uuid WHERE f.command_uuid = $1 AND ",
            member!("$2"),
            " ON CONFLICT DO NOTHING"
        ),
        &[&uuid, &id],
    )
    .await
}

/// The targets that are enrollments, in order (`targets` sorted and without
/// duplicates, as `enqueue` leaves them): the database returns the unknown
/// ones, usually none, rather than every known id.
async fn known_ids(tx: &Transaction<'_>, targets: &[String]) -> Result<Vec<String>> {
    let r = rows(
        tx,
        "SELECT t.id FROM unnest($1::text[]) AS t(id) WHERE NOT EXISTS (SELECT 1 FROM enrollments e WHERE e.id = t.id)",
        &[&targets],
    )
    .await?;
    let unknown: std::collections::HashSet<String> = r.iter().map(|r| r.get(0)).collect();
    let mut known: Vec<String> = targets.iter().filter(|t| !unknown.contains(*t)).cloned().collect();
    known.sort_unstable();
    known.dedup();
    Ok(known)
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

async fn enqueue_tx(tx: &Transaction<'_>, (cmd, targets, policy): (CommandRecord, Vec<String>, FanoutPolicy)) -> Result<EnqueueOutcome> {
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
    let ids: Vec<&str> = known.iter().map(String::as_str).collect();
    let n = ids.len();
    if rec.profile.is_none() && rec.supersede.is_none() && n >= policy.min_targets.max(1) {
        // Beyond `max_open`, the oldest open fan-outs settle first.
        let open = rows(
            tx,
            "SELECT seq FROM fanouts ORDER BY seq DESC OFFSET $1",
            &[&(policy.max_open.max(1) as i64 - 1)],
        )
        .await?;
        for r in open.iter().rev() {
            settle(tx, r.try_get(0)?).await?;
        }
        insert_commands(tx, std::slice::from_ref(&rec)).await?;
        insert_fanout(tx, &rec, &ids).await?;
        return Ok(EnqueueOutcome { queued: n as u64, unknown });
    }
    if let Some(key) = &rec.supersede {
        supersede(tx, &ids, key, rec.created_at).await?;
    }
    insert_commands(tx, std::slice::from_ref(&rec)).await?;
    if let Some(tag) = &rec.profile {
        for id in &known {
            track_profile(tx, &rec, tag, id).await?;
        }
    }
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
    let mut current = opt(tx, &sql, &[&r.command_uuid, &id]).await?;
    if current.is_none() && materialize(tx, &r.command_uuid, &id).await? > 0 {
        current = opt(tx, &sql, &[&r.command_uuid, &id]).await?;
    }
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
/// or withdrawn and answered finally), or, for a fan-out target without a
/// row, one INSERT of the row as the report leaves it (`ON CONFLICT … DO
/// UPDATE`: a settle that wrote the row since this statement's snapshot was
/// taken is updated instead), and the next `Pending` command read beside it
/// (the statement's snapshot still shows the reported command as pending, so
/// it is left out by uuid).
/// A command that tracks a profile is left alone (the first column says so):
/// its result also updates the profile's record, in `report_tx`.
const REPORT_AT_ONCE: &str = concat!(
    "WITH cur AS (
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
), fan AS (
    SELECT f.seq, c.request_type, c.created_at FROM fanouts f JOIN commands c ON c.uuid = f.command_uuid
    WHERE f.command_uuid = $1 AND ",
    member!("$2"),
    "
      AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.command_uuid = $1 AND x.enrollment = $2)
), ins AS (
    INSERT INTO deliveries AS d (enrollment, seq, command_uuid, status, queued_at, updated_at, not_now_count, error_chain, result)
    SELECT $2, fan.seq, $1, $3::text, fan.created_at, $6::bigint,
        CASE WHEN $3::text = 'NotNow' THEN 1 ELSE 0 END,
        CASE WHEN $3::text = 'NotNow' THEN NULL ELSE $4::jsonb END,
        CASE WHEN $3::text = 'NotNow' THEN NULL ELSE $5::bytea END
    FROM fan
    ON CONFLICT (command_uuid, enrollment) DO UPDATE SET
        status = EXCLUDED.status,
        not_now_count = d.not_now_count + EXCLUDED.not_now_count,
        error_chain = CASE WHEN EXCLUDED.status = 'NotNow' THEN d.error_chain ELSE EXCLUDED.error_chain END,
        result = CASE WHEN EXCLUDED.status = 'NotNow' THEN d.result ELSE EXCLUDED.result END,
        updated_at = EXCLUDED.updated_at
    WHERE d.status IN ('Pending', 'NotNow') OR (EXCLUDED.status <> 'NotNow' AND d.status IN ('Superseded', 'Cleared'))
    RETURNING 1
), nxt AS (
    SELECT uuid, request_type, body FROM (
        (SELECT d.seq, c.uuid, c.request_type, c.body FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid
         WHERE d.enrollment = $2 AND d.status = 'Pending' AND d.command_uuid <> $1 ORDER BY d.seq LIMIT 1)
        UNION ALL
        (SELECT f.seq, c.uuid, c.request_type, c.body FROM ",
    fanout_pending!("$2"),
    " AND f.command_uuid <> $1 ORDER BY f.seq LIMIT 1)
    ) q ORDER BY seq LIMIT 1
)
SELECT coalesce((SELECT bool_or(tagged) FROM cur), false),
    coalesce((SELECT request_type FROM upd LIMIT 1), (SELECT fan.request_type FROM fan WHERE EXISTS (SELECT 1 FROM ins))),
    nxt.uuid, nxt.request_type, nxt.body
FROM (SELECT 1) AS one LEFT JOIN nxt ON true"
);

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
        self.write((cmd, targets, self.fanout), enqueue_tx).await
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
            // Its rows, and the open fan-outs it is a target of without one.
            const SQL: &str = concat!(
                "SELECT * FROM (SELECT d.enrollment, d.seq, d.status, d.queued_at, d.updated_at, d.not_now_count, d.error_chain, d.result, d.command_uuid, c.request_type FROM deliveries d JOIN commands c ON c.uuid = d.command_uuid WHERE d.enrollment = $1 UNION ALL SELECT $1, f.seq, 'Pending', c.created_at, c.created_at, 0, NULL::jsonb, NULL::bytea, f.command_uuid, c.request_type FROM ",
                fanout_pending!("$1"),
                ") q ORDER BY seq DESC LIMIT $2"
            );
            let r = rows(&c, SQL, &[&id, &limit]).await?;
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
            // Its rows, and (an open fan-out) its targets without one, pending as enqueued.
            let sql = format!(
                "SELECT * FROM (SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.command_uuid = $1 UNION ALL SELECT x.id, f.seq, 'Pending', c.created_at, c.created_at, 0, NULL::jsonb, NULL::bytea FROM fanouts f JOIN commands c ON c.uuid = f.command_uuid JOIN fanout_targets t ON t.command_uuid = f.command_uuid CROSS JOIN LATERAL unnest(t.ids) AS x(id) WHERE f.command_uuid = $1 AND NOT EXISTS (SELECT 1 FROM deliveries y WHERE y.command_uuid = $1 AND y.enrollment = x.id)) q ORDER BY q.enrollment COLLATE \"C\""
            );
            let ds = rows(&c, &sql, &[&uuid]).await?;
            let ds = ds.iter().map(|r| delivery_row(r, 0)).collect::<Result<Vec<_>>>()?;
            Ok(Some((rec, ds)))
        })
        .await
    }

    async fn settle_fanouts(&self, queued_before: i64) -> Result<u64> {
        let due = self
            .read(|c| async move {
                let r = rows(
                    &c,
                    "SELECT f.seq FROM fanouts f JOIN commands c ON c.uuid = f.command_uuid WHERE c.created_at < $1 ORDER BY f.seq",
                    &[&queued_before],
                )
                .await?;
                r.iter().map(|r| Ok(r.try_get::<_, i64>(0)?)).collect::<Result<Vec<i64>>>()
            })
            .await?;
        let mut settled = 0;
        for seq in due {
            self.write(seq, settle_tx).await?;
            settled += 1;
        }
        Ok(settled)
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
