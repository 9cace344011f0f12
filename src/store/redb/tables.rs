//! redb's tables (keys and values of each) and what happens to them at open:
//! every table is created, and the derived indexes (lookups, the enrollment
//! list) are rebuilt when older than this code's.

use ::redb::{Database, ReadableTable as _, TableDefinition};

use super::*;

pub(super) const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollments");
/// enrollment -> (): which enrollments exist, small enough to stay in the page cache when
/// ENROLLMENTS (whole records) does not; a fan-out checks its targets here.
pub(super) const ENROLLED: TableDefinition<&str, ()> = TableDefinition::new("enrolled");
/// (enrollment, seq) -> [not_now flag] ++ command uuid; pending commands only.
pub(super) const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// (enrollment, seq) -> command uuid; every command ever queued to the enrollment.
pub(super) const HISTORY: TableDefinition<(&str, u64), &str> = TableDefinition::new("history");
/// (command uuid, enrollment) -> Delivery (JSON), or empty while untouched
/// since enqueue (then everything is in the command record: seq, time).
pub(super) const DELIVERIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("deliveries");
pub(super) const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
/// seq -> open fan-out (`FanOut`): a command whose per-enrollment queue state is only in DELIVERIES.
pub(super) const FANOUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("fanouts");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// sha256 -> IssuedCert (JSON).
pub(super) const CERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("certs");
/// serial (hex) -> sha256.
pub(super) const CERT_SERIALS: TableDefinition<&str, &str> = TableDefinition::new("cert_serials");
/// (kind, sha256 of the secret) -> OneTimeSecret (JSON).
pub(super) const SECRETS: TableDefinition<(u8, &str), &[u8]> = TableDefinition::new("secrets");
/// identifier -> ProfileTemplate (JSON).
pub(super) const TEMPLATES: TableDefinition<&str, &[u8]> = TableDefinition::new("templates");
/// (enrollment, profile identifier) -> DeviceProfile (JSON).
pub(super) const DEVICE_PROFILES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("device_profiles");
/// (profile identifier, enrollment) -> (): the index by profile.
pub(super) const PROFILE_DEVICES: TableDefinition<(&str, &str), ()> = TableDefinition::new("profile_devices");

/// name -> Setting (JSON).
pub(super) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// name -> (holder, expires at ms) as JSON.
pub(super) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");

/// (enrollment, kind) -> InventoryItem (JSON).
pub(super) const INVENTORY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("inventory");
/// enrollment -> ComplianceRecord (JSON).
pub(super) const COMPLIANCE: TableDefinition<&str, &[u8]> = TableDefinition::new("compliance");
/// (kind, due, enrollment) -> (): what a sweep reads (`InventoryStore::due`).
pub(super) const SCHEDULE: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("schedule");
/// (kind, enrollment) -> due: the entry of SCHEDULE to replace.
pub(super) const SCHEDULED: TableDefinition<(&str, &str), i64> = TableDefinition::new("scheduled");
/// (lookup key, normalised value, source enrollment) -> device channel found by it.
pub(super) const LOOKUPS: TableDefinition<(u8, &str, &str), &str> = TableDefinition::new("lookups");

/// (collection, key) -> Record (JSON).
pub(super) const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// Webhook outbox: seq -> OutboxEvent (JSON).
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Bump when `Enrollment::lookup_keys` changes: the index is rebuilt at open.
pub(super) const LOOKUPS_VERSION: u64 = 2;
/// Bump when ENROLLED must be rebuilt at open (1: it exists).
pub(super) const ENROLLED_VERSION: u64 = 1;

/// Create every table and bring the derived indexes up to date, in one transaction.
pub(super) fn create(db: &Database) -> Result<()> {
    {
        let txn = db.begin_write()?;
        txn.open_table(ENROLLMENTS)?;
        txn.open_table(QUEUE)?;
        txn.open_table(HISTORY)?;
        txn.open_table(DELIVERIES)?;
        txn.open_table(COMMANDS)?;
        txn.open_table(FANOUTS)?;
        txn.open_table(META)?;
        txn.open_table(CERTS)?;
        txn.open_table(CERT_SERIALS)?;
        txn.open_table(SECRETS)?;
        txn.open_table(OUTBOX)?;
        txn.open_table(TEMPLATES)?;
        txn.open_table(DEVICE_PROFILES)?;
        txn.open_table(PROFILE_DEVICES)?;
        txn.open_table(SETTINGS)?;
        txn.open_table(LEASES)?;
        txn.open_table(INVENTORY)?;
        txn.open_table(COMPLIANCE)?;
        txn.open_table(SCHEDULE)?;
        txn.open_table(SCHEDULED)?;
        txn.open_table(RECORDS)?;
        // The lookup index is derived: (re)built when it is older than this code's.
        let built = txn.open_table(META)?.get("lookups_version")?.map(|v| v.value());
        if built != Some(LOOKUPS_VERSION) {
            let all: Vec<Enrollment> = {
                let t = txn.open_table(ENROLLMENTS)?;
                let mut v = Vec::new();
                for item in t.range::<&str>(..)? {
                    let (_, val) = item?;
                    v.push(dec(val.value())?);
                }
                v
            };
            let _ = txn.delete_table(LOOKUPS)?;
            let mut l = txn.open_table(LOOKUPS)?;
            for e in &all {
                for (k, v, target) in e.lookup_keys() {
                    l.insert((k as u8, v.as_str(), e.id.as_str()), target.as_str())?;
                }
            }
            txn.open_table(META)?.insert("lookups_version", LOOKUPS_VERSION)?;
        }
        // So is the list of enrollment ids (stores from before it get it here, once).
        let built = txn.open_table(META)?.get("enrolled_version")?.map(|v| v.value());
        if built != Some(ENROLLED_VERSION) {
            let t = txn.open_table(ENROLLMENTS)?;
            let mut ids = txn.open_table(ENROLLED)?;
            for item in t.range::<&str>(..)? {
                let (k, _) = item?;
                ids.insert(k.value(), ())?;
            }
            txn.open_table(META)?.insert("enrolled_version", ENROLLED_VERSION)?;
        }
        txn.commit()?;
    }
    Ok(())
}
