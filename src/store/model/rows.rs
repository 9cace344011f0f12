//! The tables and rows `db copy` moves between backends, keys included.

use serde::{Deserialize, Serialize};

use super::*;

/// The tables `db copy` moves, in the order it moves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Settings,
    Certs,
    Secrets,
    Enrollments,
    Templates,
    Commands,
    Deliveries,
    DeviceProfiles,
    Inventory,
    Compliance,
    Records,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Settings,
        Table::Certs,
        Table::Secrets,
        Table::Enrollments,
        Table::Templates,
        Table::Commands,
        Table::Deliveries,
        Table::DeviceProfiles,
        Table::Inventory,
        Table::Compliance,
        Table::Records,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Settings => "settings",
            Table::Certs => "certs",
            Table::Secrets => "secrets",
            Table::Enrollments => "enrollments",
            Table::Templates => "templates",
            Table::Commands => "commands",
            Table::Deliveries => "deliveries",
            Table::DeviceProfiles => "device_profiles",
            Table::Inventory => "inventory",
            Table::Compliance => "compliance",
            Table::Records => "records",
        }
    }
}

/// One record as `db copy` moves it between backends, keys included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum Row {
    Setting {
        name: String,
        setting: Setting,
    },
    Cert(IssuedCert),
    Secret {
        kind: SecretKind,
        hash: String,
        secret: OneTimeSecret,
    },
    Enrollment(Enrollment),
    Template(ProfileTemplate),
    Command(CommandRecord),
    Delivery {
        command_uuid: String,
        enrollment: String,
        delivery: Delivery,
    },
    DeviceProfile {
        enrollment: String,
        identifier: String,
        profile: DeviceProfile,
    },
    Inventory {
        enrollment: String,
        item: InventoryItem,
    },
    Compliance {
        enrollment: String,
        record: ComplianceRecord,
    },
    Record {
        collection: String,
        key: String,
        record: Record,
    },
}

impl Row {
    pub fn table(&self) -> Table {
        match self {
            Row::Setting { .. } => Table::Settings,
            Row::Cert(_) => Table::Certs,
            Row::Secret { .. } => Table::Secrets,
            Row::Enrollment(_) => Table::Enrollments,
            Row::Template(_) => Table::Templates,
            Row::Command(_) => Table::Commands,
            Row::Delivery { .. } => Table::Deliveries,
            Row::DeviceProfile { .. } => Table::DeviceProfiles,
            Row::Inventory { .. } => Table::Inventory,
            Row::Compliance { .. } => Table::Compliance,
            Row::Record { .. } => Table::Records,
        }
    }

    /// The paging cursor of this row (its key; parts joined by NUL).
    pub fn cursor(&self) -> String {
        match self {
            Row::Setting { name, .. } => name.clone(),
            Row::Cert(c) => c.sha256.clone(),
            Row::Secret { kind, hash, .. } => format!("{}\0{hash}", *kind as u8),
            Row::Enrollment(e) => e.id.clone(),
            Row::Template(t) => t.identifier.clone(),
            Row::Command(c) => c.uuid.clone(),
            Row::Delivery {
                command_uuid, enrollment, ..
            } => format!("{command_uuid}\0{enrollment}"),
            Row::DeviceProfile {
                enrollment, identifier, ..
            } => format!("{enrollment}\0{identifier}"),
            Row::Inventory { enrollment, item } => format!("{enrollment}\0{}", item.kind),
            Row::Compliance { enrollment, .. } => enrollment.clone(),
            Row::Record { collection, key, .. } => format!("{collection}\0{key}"),
        }
    }

    /// A digest of the row's full content, the same on every backend.
    pub fn digest(&self) -> u64 {
        use sha2::Digest as _;
        let json = serde_json::to_vec(self).unwrap_or_default();
        let h = sha2::Sha256::digest(&json);
        u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
    }
}

/// Split a two-part cursor.
pub fn split_cursor(c: &str) -> (&str, &str) {
    c.split_once('\0').unwrap_or((c, ""))
}
