//! The rules both backends apply inside their transactions, written once as
//! plain functions over plain data: a backend reads the rows, applies the
//! rule, and writes what changed. (Where PostgreSQL applies a rule as one SQL
//! statement over many rows, to save round trips, the statement says which
//! rule it is.)

use super::*;
use crate::protocol::ErrorChainItem;

/// What an Authenticate does with the identity certificate it presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertBinding {
    /// Already bound to this device channel: nothing to store.
    Unchanged,
    /// Was bound to none, now to this device channel: store the certificate.
    Bound,
    /// Bound to another device channel: the Authenticate is refused.
    Elsewhere,
}

impl IssuedCert {
    /// Bind the certificate to the device channel `device` at Authenticate:
    /// a certificate belongs to the first enrollment that presents it.
    pub fn bind_to(&mut self, device: &str) -> CertBinding {
        match &self.enrollment {
            Some(other) if other != device => CertBinding::Elsewhere,
            Some(_) => CertBinding::Unchanged,
            None => {
                self.enrollment = Some(device.to_owned());
                CertBinding::Bound
            }
        }
    }

    /// Revoke at `now`; false (nothing to store) if it was revoked already.
    pub fn revoke(&mut self, now: i64) -> bool {
        if self.revoked_at.is_some() {
            return false;
        }
        self.revoked_at = Some(now);
        true
    }
}

impl Enrollment {
    /// Facts a device reported (DeviceInformation), merged in. An ADE
    /// enrollment keeps the serial its ADE origin pinned: ABM said which
    /// serial this identity is for, the device's word does not change it.
    pub fn merge_facts(&mut self, mut info: DeviceInfo) {
        if self.ade.is_some() {
            info.serial_number = None;
        }
        self.info.merge(info);
    }

    /// The record an Authenticate stores over `old`: a device that
    /// authenticates again keeps the time it first enrolled.
    pub fn reauthenticated(self, old: Option<&Enrollment>) -> Enrollment {
        match old {
            Some(old) => Enrollment {
                enrolled_at: old.enrolled_at,
                ..self
            },
            None => self,
        }
    }

    /// A user channel of a device that authenticates again (its queue
    /// cleared) stops being pushed to until its next TokenUpdate.
    pub fn deactivate(&mut self) {
        self.active = false;
    }

    /// CheckOut of the device channel: inactive, checked out, seen now.
    pub fn check_out(&mut self, now: i64) {
        self.active = false;
        self.checked_out_at = Some(now);
        self.last_checkin_at = now;
        self.last_seen_at = now;
    }

    /// A user channel checked out with its device.
    pub fn check_out_with_device(&mut self, now: i64) {
        self.active = false;
        self.checked_out_at = Some(now);
    }

    /// The enrollment profile was re-sent to renew the identity.
    pub fn mark_renewal(&mut self, now: i64) {
        self.renewal_requested_at = Some(now);
    }

    /// A refused attempt to re-enroll the device with another identity.
    pub fn note_refused_reenroll(&mut self, now: i64) {
        self.refused_reenroll_at = Some(now);
        self.refused_reenroll_count += 1;
    }

    /// The bootstrap token escrowed (or with `None` deleted) at a check-in.
    pub fn apply_bootstrap_token(&mut self, sealed: Option<String>, now: i64) {
        self.bootstrap_token = sealed;
        self.last_checkin_at = now;
        self.last_seen_at = now;
    }

    /// A check-in seen at `at`; false (nothing to store) unless it is later
    /// than the last one. (PostgreSQL applies this rule in `touch`'s UPDATE.)
    pub fn apply_seen(&mut self, at: i64) -> bool {
        if at <= self.last_seen_at {
            return false;
        }
        self.last_seen_at = at;
        true
    }

    /// A TokenUpdate: push info, tokens and names, active again.
    pub fn apply_token_update(&mut self, u: TokenUpdateRecord) {
        self.topic = u.push.topic.clone();
        self.push = Some(u.push);
        if u.unlock_token.is_some() {
            self.unlock_token = u.unlock_token;
        }
        self.awaiting_configuration = u.awaiting_configuration;
        if u.user_short_name.is_some() {
            self.user_short_name = u.user_short_name;
        }
        if u.user_long_name.is_some() {
            self.user_long_name = u.user_long_name;
        }
        self.active = true;
        self.checked_out_at = None;
        self.token_updated_at = Some(u.now);
        self.last_checkin_at = u.now;
        self.last_seen_at = u.now;
    }

    /// The user channel a TokenUpdate creates under this device channel.
    pub fn new_user_channel(&self, id: &str, u: &TokenUpdateRecord) -> Enrollment {
        Enrollment {
            udid: self.udid.clone(),
            cert_hash: self.cert_hash.clone(),
            identity_not_after: self.identity_not_after,
            ..Enrollment::blank(id, &self.id, crate::protocol::EnrollmentKind::User, &u.push.topic, u.now)
        }
    }

    /// Replace sealed tokens that still hold the old value; true if any changed.
    pub fn apply_reseal(&mut self, r: Reseal) -> bool {
        let mut changed = false;
        if let Some((old, new)) = r.unlock_token {
            if self.unlock_token.as_deref() == Some(old.as_str()) {
                self.unlock_token = Some(new);
                changed = true;
            }
        }
        if let Some((old, new)) = r.bootstrap_token {
            if self.bootstrap_token.as_deref() == Some(old.as_str()) {
                self.bootstrap_token = Some(new);
                changed = true;
            }
        }
        changed
    }

    /// A push outcome, only if it was for the token the enrollment still has.
    pub fn apply_push(&mut self, r: &PushRecord) -> bool {
        match self.push.as_mut().filter(|p| p.token == r.token) {
            Some(p) => {
                p.last_push_at = Some(r.at);
                p.last_push_outcome = Some(r.outcome.clone());
                if r.disable {
                    p.disabled = Some(r.outcome.clone());
                }
                true
            }
            None => false,
        }
    }

    /// Admin attributes set (or, with an empty value, removed).
    pub fn apply_attributes(&mut self, attrs: std::collections::BTreeMap<String, String>) {
        for (k, v) in attrs {
            if v.is_empty() {
                self.attributes.remove(&k);
            } else {
                self.attributes.insert(k, v);
            }
        }
    }
}

/// How a device's report changed a pending delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryChange {
    /// NotNow: still queued, skipped until the next check-in (counted).
    NotNow,
    /// Acknowledged, Error or CommandFormatError: done, with the report.
    Finished,
    /// A final report for a command withdrawn from the queue after the device
    /// got it: the result is recorded; the queue is not touched again.
    Late,
}

impl Delivery {
    /// A delivery as enqueued: pending since the command was created.
    pub fn enqueued(cmd: &CommandRecord) -> Delivery {
        Delivery {
            enrollment: String::new(),
            seq: cmd.seq,
            status: DeliveryStatus::Pending,
            queued_at: cmd.created_at,
            updated_at: cmd.created_at,
            not_now_count: 0,
            error_chain: Vec::new(),
            result: None,
        }
    }

    /// Apply a device's report at `now`. None (nothing changes) unless the
    /// delivery is pending: a report already applied, sent again, is ignored.
    /// A command withdrawn (`Superseded`, `Cleared`) while the device had it
    /// in hand still gets its final result recorded (`Late`): the device did
    /// run it, and that answer got 200. A NotNow for it changes nothing.
    pub fn apply_report(
        &mut self,
        status: DeliveryStatus,
        error_chain: Vec<ErrorChainItem>,
        raw: Vec<u8>,
        now: i64,
    ) -> Option<DeliveryChange> {
        let withdrawn = matches!(self.status, DeliveryStatus::Superseded | DeliveryStatus::Cleared);
        if withdrawn && status.is_final() {
            self.updated_at = now;
            self.status = status;
            self.error_chain = error_chain;
            self.result = Some(raw);
            return Some(DeliveryChange::Late);
        }
        if !self.status.is_pending() {
            return None;
        }
        self.updated_at = now;
        if status == DeliveryStatus::NotNow {
            self.status = DeliveryStatus::NotNow;
            self.not_now_count += 1;
            return Some(DeliveryChange::NotNow);
        }
        self.status = status;
        self.error_chain = error_chain;
        self.result = Some(raw);
        Some(DeliveryChange::Finished)
    }

    /// Taken off the queue undelivered (`Cleared` by an admin or a
    /// re-enrollment, `Superseded` by a newer command for the same profile).
    /// (PostgreSQL applies this rule as one UPDATE over the pending rows.)
    pub fn withdraw(&mut self, status: DeliveryStatus, now: i64) {
        self.status = status;
        self.updated_at = now;
    }
}

impl ProfileTemplate {
    /// The template stored over `old`: a replaced template keeps the time it
    /// was first created.
    pub fn replacing(self, old: Option<&ProfileTemplate>) -> ProfileTemplate {
        ProfileTemplate {
            created_at: old.map_or(self.created_at, |o| o.created_at),
            ..self
        }
    }
}

impl Record {
    /// Compare-and-set: does the expected version `expect` (0: absent; None:
    /// whatever it is) hold for a record at version `have` (0: absent)?
    pub fn expect_holds(have: u64, expect: Option<u64>) -> bool {
        expect.is_none_or(|e| e == have)
    }

    /// The record written over version `have` (0: absent).
    pub fn next(have: u64, value: serde_json::Value, now: i64) -> Record {
        Record {
            value,
            version: have + 1,
            updated_at: now,
        }
    }
}

impl Setting {
    /// The setting written over `cur`: its version moves on, so every
    /// instance sees the change. (PostgreSQL applies this rule in its upsert.)
    pub fn next(cur: Option<&Setting>, value: Vec<u8>, now: i64) -> Setting {
        Setting {
            value,
            updated_at: now,
            version: cur.map_or(0, |c| c.version) + 1,
        }
    }
}

impl DeviceProfile {
    /// The record of a profile command just queued (superseding `old`).
    pub fn queued(rec: &CommandRecord, tag: &ProfileTag, old: Option<DeviceProfile>) -> DeviceProfile {
        DeviceProfile {
            enrollment: String::new(),
            identifier: String::new(),
            state: match tag.action {
                ProfileAction::Install => ProfileState::Pending,
                ProfileAction::Remove => ProfileState::RemovePending,
            },
            command_uuid: Some(rec.uuid.clone()),
            sha256: tag.sha256.clone().or_else(|| old.and_then(|o| o.sha256)),
            updated_at: rec.created_at,
            error_chain: Vec::new(),
        }
    }

    /// Apply the result of command `uuid`; false (nothing changes) if a newer
    /// command for the profile was queued since.
    pub fn apply_result(&mut self, tag: &ProfileTag, uuid: &str, d: &Delivery) -> bool {
        if self.command_uuid.as_deref() != Some(uuid) {
            return false;
        }
        let ok = d.status == DeliveryStatus::Acknowledged;
        self.state = match (tag.action, ok) {
            (ProfileAction::Install, true) => ProfileState::Installed,
            (ProfileAction::Install, false) => ProfileState::Failed,
            (ProfileAction::Remove, true) => ProfileState::Removed,
            (ProfileAction::Remove, false) => ProfileState::RemoveFailed,
        };
        self.error_chain = d.error_chain.clone();
        self.updated_at = d.updated_at;
        true
    }

    /// Reconcile with the device's ProfileList; true if the state changed.
    pub fn reconcile(&mut self, installed: &[String], now: i64) -> bool {
        let has = installed.contains(&self.identifier);
        let state = match (self.state, has) {
            (ProfileState::Installed, false) => ProfileState::Missing,
            (ProfileState::Missing, true) | (ProfileState::Removed, true) => ProfileState::Installed,
            (s, _) => s,
        };
        if state == self.state {
            return false;
        }
        self.state = state;
        self.updated_at = now;
        true
    }
}

impl OneTimeSecret {
    /// Stored with per-device commands only if it is for no enrollment or for
    /// one of the `known` ones the commands went to.
    pub fn is_for_any(&self, known: &std::collections::HashSet<String>) -> bool {
        self.enrollment.as_ref().is_none_or(|e| known.contains(e))
    }

    /// Use it once at `now`: the outcome, and the record to store if used.
    pub fn consume(cur: Option<OneTimeSecret>, now: i64) -> Consumed {
        match cur {
            None => Consumed::Unknown,
            Some(s) if s.used_at.is_some() => Consumed::AlreadyUsed,
            Some(s) if s.expires_at < now => Consumed::Expired,
            Some(mut s) => {
                s.used_at = Some(now);
                Consumed::Ok(s)
            }
        }
    }
}

/// Whether `holder` may take the lease now held as `cur` (holder, expiry in
/// ms): it is free, expired, or already its own. (PostgreSQL applies this
/// rule in its upsert's WHERE.)
pub fn lease_available(cur: Option<(&str, i64)>, holder: &str, now_ms: i64) -> bool {
    match cur {
        None => true,
        Some((h, expires_at_ms)) => h == holder || expires_at_ms <= now_ms,
    }
}

/// Fan-outs. redb: when a command without a profile goes to many enrollments, their queue state is written only
/// to DELIVERIES, keyed (command, enrollment) and so one clustered run of the tree, instead of a
/// QUEUE and a HISTORY entry per enrollment spread over those trees: at a large fleet those
/// rewrite nearly every leaf (copy-on-write) in the one transaction. The open fan-outs are few and
/// `next_command` checks each with point lookups; an enrollment's HISTORY entry is written when it
/// finishes the command (or has it cleared). When few enrollments are still pending, the fan-out
/// *settles*: those get ordinary QUEUE and HISTORY entries and the fan-out is closed, so open
/// fan-outs are only recent or still mostly pending ones. Profile commands never fan out (they
/// keep per-enrollment profile state). Exports and imports see only deliveries either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutPolicy {
    /// Commands to at least this many known enrollments fan out.
    pub min_targets: usize,
    /// A fan-out settles when its pending enrollments fall to this or to a quarter of its targets.
    pub settle_at: u64,
    /// At most this many are open: a new one beyond it settles the oldest first, which bounds
    /// the point lookups of every `next_command` when devices stay away for long.
    pub max_open: usize,
}

impl Default for FanoutPolicy {
    fn default() -> Self {
        FanoutPolicy {
            min_targets: 256,
            settle_at: 64,
            max_open: 32,
        }
    }
}

// PostgreSQL (`store::postgres::queue`) keeps a fan-out's targets in chunk rows and a target's
// delivery row is written by its first answer; it settles by `max_open` and by age, not by
// `settle_at` (a pending count updated by every answer would serialise them).
