//! redb: the command queue (`QueueStore`): per-enrollment queue and history
//! entries, the deliveries, and open fan-outs for commands to many
//! enrollments (`FanoutPolicy`).

use ::redb::{ReadableTable, WriteTransaction};

use super::*;

/// An open fan-out: its command and how many of its targets still have it pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FanOut {
    targets: u64,
    pub(super) pending: u64,
    uuid: String,
}

impl FanOut {
    fn enc(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.uuid.len());
        v.extend_from_slice(&self.targets.to_le_bytes());
        v.extend_from_slice(&self.pending.to_le_bytes());
        v.extend_from_slice(self.uuid.as_bytes());
        v
    }

    pub(super) fn dec(b: &[u8]) -> Result<Self> {
        let bad = || StoreError::Corrupt("fan-out record".into());
        if b.len() < 16 {
            return Err(bad());
        }
        let (t, rest) = b.split_at(8);
        let (p, u) = rest.split_at(8);
        Ok(FanOut {
            targets: u64::from_le_bytes(t.try_into().map_err(|_| bad())?),
            pending: u64::from_le_bytes(p.try_into().map_err(|_| bad())?),
            uuid: std::str::from_utf8(u).map_err(|_| bad())?.to_owned(),
        })
    }

    fn settles(&self, p: FanoutPolicy) -> bool {
        self.pending <= p.settle_at.max(self.targets / 4)
    }
}

/// A delivery record; an empty value is a pending delivery as enqueued.
pub(super) fn delivery_from(bytes: &[u8], cmd: Option<&CommandRecord>) -> Result<Delivery> {
    if !bytes.is_empty() {
        return dec(bytes);
    }
    let c = cmd.ok_or_else(|| StoreError::Corrupt("pending delivery without its command".into()))?;
    Ok(Delivery::enqueued(c))
}

pub(super) fn queue_value(not_now: bool, uuid: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(uuid.len() + 1);
    v.push(not_now as u8);
    v.extend_from_slice(uuid.as_bytes());
    v
}

fn split_queue_value(v: &[u8]) -> (bool, &str) {
    match v.split_first() {
        Some((flag, rest)) => (*flag == 1, std::str::from_utf8(rest).unwrap_or("")),
        None => (false, ""),
    }
}

pub(super) fn load_command<T: ReadableTable<&'static str, &'static [u8]>>(t: &T, uuid: &str) -> Result<Option<CommandRecord>> {
    match t.get(uuid)? {
        Some(v) => Ok(Some(dec(v.value())?)),
        None => Ok(None),
    }
}

/// Where an enrollment stands with an open fan-out: `None` when the command is not pending
/// there (not a target, finished, cleared), else whether it answered NotNow.
fn fanout_state<H, D>(history: &H, deliveries: &D, f: &FanOut, seq: u64, id: &str) -> Result<Option<bool>>
where
    H: ReadableTable<(&'static str, u64), &'static str>,
    D: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    // Finished and cleared enrollments have their history entry; the pending ones do not.
    if history.get((id, seq))?.is_some() {
        return Ok(None);
    }
    let Some(v) = deliveries.get((f.uuid.as_str(), id))? else {
        return Ok(None);
    };
    if v.value().is_empty() {
        return Ok(Some(false));
    }
    let d: Delivery = dec(v.value())?;
    Ok(d.status.is_pending().then_some(d.status == DeliveryStatus::NotNow))
}

/// The tables that hold an enrollment's queue, for reading it (in a read or a write transaction).
pub(super) struct QueueView<'a, Q, C, H, D, F> {
    queue: &'a Q,
    commands: &'a C,
    history: &'a H,
    deliveries: &'a D,
    fanouts: &'a F,
}

impl<Q, C, H, D, F> QueueView<'_, Q, C, H, D, F>
where
    Q: ReadableTable<(&'static str, u64), &'static [u8]>,
    C: ReadableTable<&'static str, &'static [u8]>,
    H: ReadableTable<(&'static str, u64), &'static str>,
    D: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    F: ReadableTable<u64, &'static [u8]>,
{
    /// (seq, command uuid) of the first pending command, from the queue or an open fan-out.
    pub(super) fn first(&self, id: &str, skip_not_now: bool) -> Result<Option<(u64, String)>> {
        let mut best: Option<(u64, String)> = None;
        for item in self.queue.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, v) = item?;
            let (not_now, uuid) = split_queue_value(v.value());
            if skip_not_now && not_now {
                continue;
            }
            best = Some((k.value().1, uuid.to_owned()));
            break;
        }
        let until = best.as_ref().map_or(u64::MAX, |b| b.0);
        for item in self.fanouts.range(..until)? {
            let (k, v) = item?;
            let f = FanOut::dec(v.value())?;
            match fanout_state(self.history, self.deliveries, &f, k.value(), id)? {
                Some(not_now) if !(skip_not_now && not_now) => return Ok(Some((k.value(), f.uuid))),
                _ => {}
            }
        }
        Ok(best)
    }

    fn first_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
        let Some((_, uuid)) = self.first(id, skip_not_now)? else {
            return Ok(None);
        };
        Ok(load_command(self.commands, &uuid)?.map(|c| QueuedCommand {
            uuid: c.uuid,
            request_type: c.request_type,
            body: c.body,
        }))
    }

    /// The newest `limit` commands ever queued to the enrollment, oldest first: (seq, uuid).
    fn history(&self, id: &str, limit: usize) -> Result<Vec<(u64, String)>> {
        let mut out = Vec::new();
        for item in self.history.range((id, 0u64)..=(id, u64::MAX))?.rev().take(limit) {
            let (k, uuid) = item?;
            out.push((k.value().1, uuid.value().to_owned()));
        }
        for item in self.fanouts.iter()? {
            let (k, v) = item?;
            let f = FanOut::dec(v.value())?;
            if fanout_state(self.history, self.deliveries, &f, k.value(), id)?.is_some() {
                out.push((k.value(), f.uuid));
            }
        }
        out.sort_unstable_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        out.truncate(limit);
        out.reverse();
        Ok(out)
    }
}

/// Split targets into known enrollments and unknown ids.
fn split_known(txn: &WriteTransaction, targets: Vec<String>) -> Result<(Vec<String>, Vec<String>)> {
    let enrollments = txn.open_table(ENROLLED)?;
    let mut known = Vec::with_capacity(targets.len());
    let mut unknown = Vec::new();
    for t in targets {
        if enrollments.get(t.as_str())?.is_some() {
            known.push(t);
        } else {
            unknown.push(t);
        }
    }
    Ok((known, unknown))
}

/// The tables the queue writes, opened once per transaction.
pub(super) struct QueueTables<'t> {
    meta: ::redb::Table<'t, &'static str, u64>,
    commands: ::redb::Table<'t, &'static str, &'static [u8]>,
    queue: ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    history: ::redb::Table<'t, (&'static str, u64), &'static str>,
    deliveries: ::redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    fanouts: ::redb::Table<'t, u64, &'static [u8]>,
    device_profiles: ::redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    profile_devices: ::redb::Table<'t, (&'static str, &'static str), ()>,
    policy: FanoutPolicy,
}

pub(super) type WriteView<'a, 't> = QueueView<
    'a,
    ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    ::redb::Table<'t, &'static str, &'static [u8]>,
    ::redb::Table<'t, (&'static str, u64), &'static str>,
    ::redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    ::redb::Table<'t, u64, &'static [u8]>,
>;

impl<'t> QueueTables<'t> {
    pub(super) fn open(txn: &'t WriteTransaction, policy: FanoutPolicy) -> Result<Self> {
        Ok(QueueTables {
            meta: txn.open_table(META)?,
            commands: txn.open_table(COMMANDS)?,
            queue: txn.open_table(QUEUE)?,
            history: txn.open_table(HISTORY)?,
            deliveries: txn.open_table(DELIVERIES)?,
            fanouts: txn.open_table(FANOUTS)?,
            device_profiles: txn.open_table(DEVICE_PROFILES)?,
            profile_devices: txn.open_table(PROFILE_DEVICES)?,
            policy,
        })
    }

    pub(super) fn view(&self) -> WriteView<'_, 't> {
        QueueView {
            queue: &self.queue,
            commands: &self.commands,
            history: &self.history,
            deliveries: &self.deliveries,
            fanouts: &self.fanouts,
        }
    }

    fn next_seq(&mut self) -> Result<u64> {
        let seq = self.meta.get("seq")?.map(|v| v.value()).unwrap_or(0) + 1;
        self.meta.insert("seq", seq)?;
        Ok(seq)
    }

    /// Store a command and queue it for known enrollments (sorted): as a fan-out when the
    /// policy says so, else with per-enrollment queue entries.
    fn enqueue(&mut self, rec: &mut CommandRecord, known: &[String]) -> Result<()> {
        rec.targets = known.len() as u64;
        rec.seq = self.next_seq()?;
        self.commands.insert(rec.uuid.as_str(), enc(&*rec)?.as_slice())?;
        if rec.profile.is_none() && rec.supersede.is_none() && !known.is_empty() && known.len() >= self.policy.min_targets {
            use ::redb::ReadableTableMetadata as _;
            while self.fanouts.len()? as usize >= self.policy.max_open.max(1) {
                let oldest = match self.fanouts.first()? {
                    Some((k, v)) => (k.value(), FanOut::dec(v.value())?),
                    None => break,
                };
                self.settle(oldest.0, &oldest.1)?;
            }
            for id in known {
                self.deliveries.insert((rec.uuid.as_str(), id.as_str()), &[][..])?;
            }
            let f = FanOut {
                targets: rec.targets,
                pending: rec.targets,
                uuid: rec.uuid.clone(),
            };
            self.fanouts.insert(rec.seq, f.enc().as_slice())?;
            return Ok(());
        }
        for id in known {
            self.queue_one(rec, id)?;
        }
        Ok(())
    }

    /// Queue a stored command for one known enrollment.
    fn queue_one(&mut self, rec: &CommandRecord, id: &str) -> Result<()> {
        if let Some(tag) = &rec.profile {
            self.track_profile(rec, tag, id)?;
        }
        if let Some(key) = &rec.supersede {
            self.supersede(rec, key, id)?;
        }
        self.queue.insert((id, rec.seq), queue_value(false, &rec.uuid).as_slice())?;
        self.history.insert((id, rec.seq), rec.uuid.as_str())?;
        // Empty: pending as enqueued (see `delivery_from`).
        self.deliveries.insert((rec.uuid.as_str(), id), &[][..])?;
        Ok(())
    }

    /// The open fan-out a delivery belongs to, if any.
    fn fanout_of(&self, seq: u64, uuid: &str) -> Result<Option<FanOut>> {
        let f = match self.fanouts.get(seq)? {
            Some(v) => FanOut::dec(v.value())?,
            None => return Ok(None),
        };
        Ok((f.uuid == uuid).then_some(f))
    }

    /// One enrollment of an open fan-out is no longer pending (its delivery is already
    /// updated): record it in the enrollment's history and settle the fan-out when due.
    fn fanout_done(&mut self, seq: u64, mut f: FanOut, id: &str) -> Result<()> {
        self.history.insert((id, seq), f.uuid.as_str())?;
        f.pending = f.pending.saturating_sub(1);
        if f.settles(self.policy) {
            self.settle(seq, &f)
        } else {
            self.fanouts.insert(seq, f.enc().as_slice())?;
            Ok(())
        }
    }

    /// Give the enrollments still pending on a fan-out ordinary queue and history entries, and close it.
    fn settle(&mut self, seq: u64, f: &FanOut) -> Result<()> {
        let mut rest = Vec::new();
        for item in self.deliveries.range((f.uuid.as_str(), "")..)? {
            let (k, v) = item?;
            let (uuid, id) = k.value();
            if uuid != f.uuid {
                break;
            }
            if self.history.get((id, seq))?.is_some() {
                continue;
            }
            let not_now = if v.value().is_empty() {
                false
            } else {
                let d: Delivery = dec(v.value())?;
                if !d.status.is_pending() {
                    continue;
                }
                d.status == DeliveryStatus::NotNow
            };
            rest.push((id.to_owned(), not_now));
        }
        for (id, not_now) in &rest {
            self.queue.insert((id.as_str(), seq), queue_value(*not_now, &f.uuid).as_slice())?;
            self.history.insert((id.as_str(), seq), f.uuid.as_str())?;
        }
        self.fanouts.remove(seq)?;
        Ok(())
    }

    /// Clear the pending commands of one enrollment. Returns how many.
    fn clear(&mut self, id: &str, now: i64) -> Result<u64> {
        let mut drained: Vec<(u64, String, Option<FanOut>)> = self
            .queue
            .range((id, 0u64)..=(id, u64::MAX))?
            .map(|r| r.map(|(k, v)| (k.value().1, split_queue_value(v.value()).1.to_owned(), None)))
            .collect::<std::result::Result<_, _>>()?;
        for item in self.fanouts.iter()? {
            let (k, v) = item?;
            let f = FanOut::dec(v.value())?;
            if fanout_state(&self.history, &self.deliveries, &f, k.value(), id)?.is_some() {
                drained.push((k.value(), f.uuid.clone(), Some(f)));
            }
        }
        let n = drained.len() as u64;
        for (seq, uuid, fanout) in drained {
            self.queue.remove((id, seq))?;
            let updated = match self.deliveries.get((uuid.as_str(), id))? {
                Some(v) => {
                    let mut d = delivery_from(v.value(), load_command(&self.commands, &uuid)?.as_ref())?;
                    d.withdraw(DeliveryStatus::Cleared, now);
                    Some(enc(&d)?)
                }
                None => None,
            };
            if let Some(b) = updated {
                self.deliveries.insert((uuid.as_str(), id), b.as_slice())?;
            }
            if let Some(f) = fanout {
                // Re-read: settling an earlier fan-out does not touch this one, but keep the count exact.
                let f = self.fanout_of(seq, &f.uuid)?.unwrap_or(f);
                self.fanout_done(seq, f, id)?;
            }
        }
        Ok(n)
    }

    /// Withdraw the enrollment's pending commands queued with replacement
    /// key `key` (`Superseded`). The enrollment's queue is walked: it holds
    /// what the device has not answered, short unless it stays away, and keyed
    /// commands never fan out, so none hides in a fan-out.
    fn supersede(&mut self, rec: &CommandRecord, key: &str, id: &str) -> Result<()> {
        let queued: Vec<(u64, String)> = self
            .queue
            .range((id, 0u64)..=(id, u64::MAX))?
            .map(|r| r.map(|(k, v)| (k.value().1, split_queue_value(v.value()).1.to_owned())))
            .collect::<std::result::Result<_, _>>()?;
        for (seq, uuid) in queued {
            let Some(old) = load_command(&self.commands, &uuid)? else {
                continue;
            };
            if old.supersede.as_deref() != Some(key) {
                continue;
            }
            let pending = match self.deliveries.get((uuid.as_str(), id))? {
                Some(v) => Some(delivery_from(v.value(), Some(&old))?).filter(|d| d.status.is_pending()),
                None => None,
            };
            self.queue.remove((id, seq))?;
            if let Some(mut d) = pending {
                d.withdraw(DeliveryStatus::Superseded, rec.created_at);
                self.deliveries.insert((uuid.as_str(), id), enc(&d)?.as_slice())?;
            }
        }
        Ok(())
    }

    /// A newer command for a profile supersedes the pending one, and the
    /// profile is pending (install or removal) on the enrollment.
    fn track_profile(&mut self, rec: &CommandRecord, tag: &ProfileTag, id: &str) -> Result<()> {
        let key = (id, tag.identifier.as_str());
        let old: Option<DeviceProfile> = dec_opt(self.device_profiles.get(key)?)?;
        if let Some(old_uuid) = old.as_ref().and_then(|o| o.command_uuid.clone()) {
            let pending = {
                match self.deliveries.get((old_uuid.as_str(), id))? {
                    Some(v) => {
                        let cmd = load_command(&self.commands, &old_uuid)?;
                        Some(delivery_from(v.value(), cmd.as_ref())?).filter(|d| d.status.is_pending())
                    }
                    None => None,
                }
            };
            if let Some(mut d) = pending {
                self.queue.remove((id, d.seq))?;
                d.withdraw(DeliveryStatus::Superseded, rec.created_at);
                self.deliveries.insert((old_uuid.as_str(), id), enc(&d)?.as_slice())?;
            }
        }
        let dp = DeviceProfile::queued(rec, tag, old);
        self.device_profiles.insert(key, enc(&dp)?.as_slice())?;
        self.profile_devices.insert((tag.identifier.as_str(), id), ())?;
        Ok(())
    }

    /// A profile command finished: record the profile's new state, unless a
    /// newer command for the profile was queued since.
    fn profile_result(&mut self, id: &str, tag: &ProfileTag, uuid: &str, d: &Delivery) -> Result<()> {
        let key = (id, tag.identifier.as_str());
        let cur: Option<DeviceProfile> = dec_opt(self.device_profiles.get(key)?)?;
        let Some(mut dp) = cur else { return Ok(()) };
        if !dp.apply_result(tag, uuid, d) {
            return Ok(());
        }
        self.device_profiles.insert(key, enc(&dp)?.as_slice())?;
        Ok(())
    }
}

/// Clear the pending queue of one enrollment inside a write transaction.
pub(super) fn clear_pending(txn: &WriteTransaction, policy: FanoutPolicy, id: &str, now: i64) -> Result<u64> {
    QueueTables::open(txn, policy)?.clear(id, now)
}

#[async_trait]
impl QueueStore for RedbStore {
    async fn enqueue(&self, cmd: CommandRecord, targets: Vec<String>) -> Result<EnqueueOutcome> {
        let mut targets = targets;
        // Sorted: B-tree lookups and inserts walk the trees in order.
        targets.sort_unstable();
        targets.dedup();
        let policy = self.fanout;
        self.write(move |txn| {
            let (known, unknown) = split_known(txn, targets)?;
            // No command is stored for nobody.
            if !known.is_empty() {
                let mut t = QueueTables::open(txn, policy)?;
                let mut rec = cmd;
                t.enqueue(&mut rec, &known)?;
            }
            Ok(EnqueueOutcome {
                queued: known.len() as u64,
                unknown,
            })
        })
        .await
    }

    async fn enqueue_each(
        &self,
        items: Vec<(CommandRecord, String)>,
        secrets: Vec<(SecretKind, String, OneTimeSecret)>,
    ) -> Result<EnqueueOutcome> {
        let mut items = items;
        items.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let policy = self.fanout;
        self.write(move |txn| {
            let (known, unknown) = split_known(txn, items.iter().map(|(_, t)| t.clone()).collect())?;
            let known: std::collections::HashSet<String> = known.into_iter().collect();
            {
                let mut st = txn.open_table(SECRETS)?;
                for (kind, hash, rec) in &secrets {
                    if rec.is_for_any(&known) {
                        st.insert((*kind as u8, hash.as_str()), enc(rec)?.as_slice())?;
                    }
                }
            }
            let mut t = QueueTables::open(txn, policy)?;
            let mut queued = 0;
            for (mut rec, target) in items {
                if !known.contains(&target) {
                    continue;
                }
                t.enqueue(&mut rec, std::slice::from_ref(&target))?;
                queued += 1;
            }
            Ok(EnqueueOutcome { queued, unknown })
        })
        .await
    }

    async fn next_command(&self, id: &str, skip_not_now: bool) -> Result<Option<QueuedCommand>> {
        self.read(|txn| {
            let queue = txn.open_table(QUEUE)?;
            let commands = txn.open_table(COMMANDS)?;
            let fanouts = txn.open_table(FANOUTS)?;
            let history = txn.open_table(HISTORY)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            QueueView {
                queue: &queue,
                commands: &commands,
                history: &history,
                deliveries: &deliveries,
                fanouts: &fanouts,
            }
            .first_command(id, skip_not_now)
        })
    }

    async fn report(&self, id: &str, mut r: ReportRecord) -> Result<(ReportOutcome, Option<QueuedCommand>)> {
        let id = id.to_owned();
        let events = std::mem::take(&mut r.events);
        let policy = self.fanout;
        self.write(move |txn| {
            // Also for a report already applied: the device sends it again when it got no answer.
            put_events(txn, &events)?;
            let mut t = QueueTables::open(txn, policy)?;
            let current = match t.deliveries.get((r.command_uuid.as_str(), id.as_str()))? {
                Some(v) => {
                    let cmd = load_command(&t.commands, &r.command_uuid)?;
                    let d = delivery_from(v.value(), cmd.as_ref())?;
                    Some((d, cmd))
                }
                None => None,
            };
            let outcome = match current {
                Some((mut d, cmd)) => match d.apply_report(r.status, r.error_chain, r.raw, r.now) {
                    Some(DeliveryChange::NotNow) => {
                        if t.fanout_of(d.seq, &r.command_uuid)?.is_none() {
                            t.queue
                                .insert((id.as_str(), d.seq), queue_value(true, &r.command_uuid).as_slice())?;
                        }
                        t.deliveries.insert((r.command_uuid.as_str(), id.as_str()), enc(&d)?.as_slice())?;
                        ReportOutcome::NotNowRecorded
                    }
                    Some(DeliveryChange::Finished) => {
                        let fanout = t.fanout_of(d.seq, &r.command_uuid)?;
                        t.queue.remove((id.as_str(), d.seq))?;
                        t.deliveries.insert((r.command_uuid.as_str(), id.as_str()), enc(&d)?.as_slice())?;
                        if let Some(f) = fanout {
                            t.fanout_done(d.seq, f, &id)?;
                        }
                        if let Some(tag) = cmd.as_ref().and_then(|c| c.profile.as_ref()) {
                            t.profile_result(&id, tag, &r.command_uuid, &d)?;
                        }
                        ReportOutcome::Finished {
                            request_type: cmd.map(|c| c.request_type).unwrap_or_default(),
                        }
                    }
                    Some(DeliveryChange::Late) => {
                        // Off the queue (and out of any fan-out's count) already.
                        t.deliveries.insert((r.command_uuid.as_str(), id.as_str()), enc(&d)?.as_slice())?;
                        if let Some(tag) = cmd.as_ref().and_then(|c| c.profile.as_ref()) {
                            t.profile_result(&id, tag, &r.command_uuid, &d)?;
                        }
                        ReportOutcome::Finished {
                            request_type: cmd.map(|c| c.request_type).unwrap_or_default(),
                        }
                    }
                    None => ReportOutcome::NotPending,
                },
                None => ReportOutcome::NotPending,
            };
            let next = t.view().first_command(&id, true)?;
            Ok((outcome, next))
        })
        .await
    }

    async fn clear_queue(&self, id: &str, now: i64) -> Result<u64> {
        let id = id.to_owned();
        let policy = self.fanout;
        self.write(move |txn| clear_pending(txn, policy, &id, now)).await
    }

    async fn device_commands(&self, id: &str, limit: usize) -> Result<Vec<DeviceCommand>> {
        self.read(|txn| {
            let queue = txn.open_table(QUEUE)?;
            let history = txn.open_table(HISTORY)?;
            let deliveries = txn.open_table(DELIVERIES)?;
            let commands = txn.open_table(COMMANDS)?;
            let fanouts = txn.open_table(FANOUTS)?;
            let view = QueueView {
                queue: &queue,
                commands: &commands,
                history: &history,
                deliveries: &deliveries,
                fanouts: &fanouts,
            };
            let mut out = Vec::new();
            for (_, uuid) in view.history(id, limit)? {
                let Some(d) = deliveries.get((uuid.as_str(), id))? else {
                    continue;
                };
                let cmd = load_command(&commands, &uuid)?;
                let mut delivery = delivery_from(d.value(), cmd.as_ref())?;
                delivery.enrollment = id.to_owned();
                let request_type = cmd.map(|c| c.request_type).unwrap_or_default();
                out.push(DeviceCommand {
                    command_uuid: uuid,
                    request_type,
                    delivery,
                });
            }
            Ok(out)
        })
    }

    async fn command(&self, uuid: &str) -> Result<Option<(CommandRecord, Vec<Delivery>)>> {
        self.read(|txn| {
            let commands = txn.open_table(COMMANDS)?;
            let Some(rec) = load_command(&commands, uuid)? else {
                return Ok(None);
            };
            let deliveries = txn.open_table(DELIVERIES)?;
            let mut out = Vec::new();
            for item in deliveries.range((uuid, "")..)? {
                let (k, v) = item?;
                if k.value().0 != uuid {
                    break;
                }
                let mut d = delivery_from(v.value(), Some(&rec))?;
                d.enrollment = k.value().1.to_owned();
                out.push(d);
            }
            Ok(Some((rec, out)))
        })
    }
}
