//! Records kept by the store. Serialised as JSON inside the embedded store.

use serde::{Deserialize, Serialize};

use crate::protocol::{EnrollmentKind, ErrorChainItem};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bluetooth_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

impl DeviceInfo {
    /// Take every fact `newer` has, keep the rest.
    pub fn merge(&mut self, newer: DeviceInfo) {
        macro_rules! take {
            ($($f:ident),*) => {$( if newer.$f.is_some() { self.$f = newer.$f; } )*};
        }
        take!(
            serial_number,
            product_name,
            os_version,
            build_version,
            imei,
            meid,
            device_name,
            model,
            model_name,
            wifi_mac,
            bluetooth_mac,
            phone_number
        );
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushInfo {
    /// Hex of the raw APNs token.
    pub token: String,
    pub push_magic: String,
    pub topic: String,
    /// When the TokenUpdate that brought this token arrived.
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_at: Option<i64>,
    /// `accepted`, or what APNs (or the network) said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push_outcome: Option<String>,
    /// Pushes to this token stopped (Unregistered, BadDeviceToken,
    /// DeviceTokenNotForTopic) until a newer TokenUpdate replaces this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
}

impl PushInfo {
    pub fn new(token: String, push_magic: String, topic: String, updated_at: i64) -> PushInfo {
        PushInfo {
            token,
            push_magic,
            topic,
            updated_at,
            last_push_at: None,
            last_push_outcome: None,
            disabled: None,
        }
    }
}

/// The outcome of a push to an enrollment's token.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRecord {
    pub id: String,
    /// The token pushed to: nothing is recorded if the enrollment has another by now.
    pub token: String,
    pub at: i64,
    pub outcome: String,
    /// Stop pushing to this token until a newer TokenUpdate.
    pub disable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub id: String,
    /// The device channel this belongs to (== id for a device channel).
    pub device: String,
    pub kind: EnrollmentKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_enrollment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_short_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_long_name: Option<String>,
    pub topic: String,
    #[serde(default)]
    pub info: DeviceInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushInfo>,
    /// The UnlockToken (device channel, for ClearPasscode), sealed by
    /// `pki::secrets` (legacy records: plain base64, resealed at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_token: Option<String>,
    /// The escrowed bootstrap token, sealed like `unlock_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<String>,
    /// Admin-set attributes (USERNAME, EMAIL, …) used by profile variables.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// TokenUpdate received and not checked out: may be pushed to.
    pub active: bool,
    #[serde(default)]
    pub awaiting_configuration: bool,
    /// SHA-256 (hex) of the identity certificate bound at Authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_hash: Option<String>,
    /// Expiry of the bound identity certificate (for renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_not_after: Option<i64>,
    /// We re-sent the enrollment profile to renew the identity; the next
    /// Authenticate with a new certificate is a renewal, not a re-enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_requested_at: Option<i64>,
    pub enrolled_at: i64,
    pub authenticated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_out_at: Option<i64>,
    pub last_checkin_at: i64,
    pub last_seen_at: i64,
    /// Refused attempts to re-enroll this device with another identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_reenroll_at: Option<i64>,
    #[serde(default)]
    pub refused_reenroll_count: u32,
}

impl Enrollment {
    /// A fresh, inactive enrollment with no facts, tokens or identity.
    pub fn blank(id: &str, device: &str, kind: EnrollmentKind, topic: &str, now: i64) -> Enrollment {
        Enrollment {
            id: id.to_owned(),
            device: device.to_owned(),
            kind,
            udid: None,
            user_enrollment_id: None,
            user_short_name: None,
            user_long_name: None,
            topic: topic.to_owned(),
            info: DeviceInfo::default(),
            push: None,
            unlock_token: None,
            bootstrap_token: None,
            attributes: Default::default(),
            active: false,
            awaiting_configuration: false,
            cert_hash: None,
            identity_not_after: None,
            renewal_requested_at: None,
            enrolled_at: now,
            authenticated_at: now,
            token_updated_at: None,
            checked_out_at: None,
            last_checkin_at: now,
            last_seen_at: now,
            refused_reenroll_at: None,
            refused_reenroll_count: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenUpdateRecord {
    /// Webhook events stored in the same transaction.
    pub events: Vec<OutboxEvent>,
    pub push: PushInfo,
    pub unlock_token: Option<String>,
    pub awaiting_configuration: bool,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub uuid: String,
    pub request_type: String,
    pub created_at: i64,
    /// The exact XML body handed to devices.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    #[serde(default)]
    pub targets: u64,
    /// Queue position, the same for every target.
    #[serde(default)]
    pub seq: u64,
    /// Set on InstallProfile/RemoveProfile commands: the profile whose state
    /// on each target this command changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileTag>,
}

impl CommandRecord {
    /// The record of a command about to be queued (`targets` and `seq` are set by the store).
    pub fn new(cmd: &crate::protocol::Command, created_at: i64, profile: Option<ProfileTag>) -> CommandRecord {
        CommandRecord {
            uuid: cmd.uuid.clone(),
            request_type: cmd.request_type.clone(),
            created_at,
            body: cmd.to_xml(),
            targets: 0,
            seq: 0,
            profile,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileAction {
    Install,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileTag {
    /// The profile's PayloadIdentifier.
    pub identifier: String,
    pub action: ProfileAction,
    /// The template version (SHA-256) being installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A profile template uploaded by an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileTemplate {
    pub identifier: String,
    pub uuid: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub payload_types: Vec<String>,
    #[serde(default)]
    pub variables: Vec<String>,
    /// The template as XML (unsigned, variables unfilled).
    #[serde(with = "b64")]
    pub xml: Vec<u8>,
    pub sha256: String,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// "api" or the file it was loaded from.
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a profile stands on one enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileState {
    /// InstallProfile queued.
    Pending,
    Installed,
    /// The device refused InstallProfile (see error_chain).
    Failed,
    /// RemoveProfile queued.
    RemovePending,
    Removed,
    RemoveFailed,
    /// We installed it, but the device's ProfileList no longer shows it (the user removed it).
    Missing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Filled from the key on read.
    #[serde(default, skip_serializing)]
    pub enrollment: String,
    /// Filled from the key on read.
    #[serde(default, skip_serializing)]
    pub identifier: String,
    pub state: ProfileState,
    /// The last InstallProfile/RemoveProfile for this profile on this enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_uuid: Option<String>,
    /// Template version of that command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_chain: Vec<ErrorChainItem>,
}

/// Replace sealed tokens (key rotation, legacy records), only where the
/// stored value is still `old`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reseal {
    pub id: String,
    pub unlock_token: Option<(String, String)>,
    pub bootstrap_token: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueuedCommand {
    pub uuid: String,
    pub request_type: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    NotNow,
    Acknowledged,
    Error,
    CommandFormatError,
    /// Removed from the queue by an admin or by re-enrollment.
    Cleared,
    /// Replaced by a newer InstallProfile/RemoveProfile of the same profile before delivery.
    Superseded,
}

impl DeliveryStatus {
    pub fn is_pending(self) -> bool {
        matches!(self, DeliveryStatus::Pending | DeliveryStatus::NotNow)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Filled from the key on read; not stored in the value.
    #[serde(default, skip_serializing)]
    pub enrollment: String,
    pub seq: u64,
    pub status: DeliveryStatus,
    pub queued_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub not_now_count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_chain: Vec<ErrorChainItem>,
    /// The device's full report (XML plist), for final statuses.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub result: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCommand {
    pub command_uuid: String,
    pub request_type: String,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportRecord {
    /// Webhook events stored in the same transaction.
    pub events: Vec<OutboxEvent>,
    pub command_uuid: String,
    pub status: DeliveryStatus,
    pub error_chain: Vec<ErrorChainItem>,
    pub raw: Vec<u8>,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The command (of this RequestType) finished.
    Finished {
        request_type: String,
    },
    NotNowRecorded,
    /// Unknown, another enrollment's, or already finished: nothing changed.
    NotPending,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueueOutcome {
    pub queued: u64,
    pub unknown: Vec<String>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

mod opt_b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// A certificate our CA issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Hex serial number.
    pub serial: String,
    pub sha256: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    /// The enrollment (device channel) it was bound to at Authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// What it is for (`service::identity`): `mdm` for an MDM identity (also
    /// `None`, on records from before purposes were always written);
    /// `profile-service` (phase-1 identity), `profile:<identifier>/<payload
    /// identifier>` (Wi-Fi, VPN … identities), `ddm-asset:<asset>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The certificate (DER), to encrypt profiles to its device.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_b64")]
    pub der: Option<Vec<u8>>,
    /// The device (UDID / enrollment id) it was issued for, when known at
    /// issuance: `Authenticate` must name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    /// Issued through a path that proves the device is that device: an
    /// attested profile-service phase 1, a renewal profile encrypted to its
    /// current identity, or a SCEP RenewalReq signed by it. Such an identity
    /// may replace an active enrollment's identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vouched: bool,
    /// The SHA-256 of the identity this one renews (the signer of a SCEP
    /// RenewalReq, or the identity a renewal profile was encrypted to): it may
    /// replace that identity at `Authenticate` while that one is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_from: Option<String>,
}

/// A single-use secret: a SCEP challenge or an enrollment invitation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneTimeSecret {
    pub created_at: i64,
    pub expires_at: i64,
    /// What it was issued for (e.g. "enroll-profile", "renewal:UDID", "invitation").
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<i64>,
    /// The enrollment it was made for (challenges in per-device profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    /// The challenge went only to that device (see `IssuedCert::vouched`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vouched: bool,
    /// A renewal challenge: the SHA-256 of the identity it was sent
    /// (encrypted) to; the certificate it yields renews that identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretKind {
    Challenge,
    Invitation,
    /// An admin's approval to re-enroll a device (keyed by the SHA-256 of its id).
    ReenrollApproval,
    /// The challenge of a profile-service (phase 1) request.
    ProfileService,
    /// A SCEP proxy token: lets one device, for one profile install, reach
    /// an organisation CA through mdmd; used once a certificate came back.
    ScepProxy,
    /// A provider app's token to upload one device's derived credentials
    /// (valid until it expires; not used up).
    DerivedUpload,
}

impl SecretKind {
    pub fn from_u8(v: u8) -> Option<SecretKind> {
        Some(match v {
            0 => SecretKind::Challenge,
            1 => SecretKind::Invitation,
            2 => SecretKind::ReenrollApproval,
            3 => SecretKind::ProfileService,
            4 => SecretKind::ScepProxy,
            5 => SecretKind::DerivedUpload,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Consumed {
    Ok(OneTimeSecret),
    Unknown,
    AlreadyUsed,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Stored,
    /// The certificate is already bound to another enrollment.
    CertBoundElsewhere,
}

/// A small shared value (the push certificate, the topic), the same for
/// every instance on one database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    pub updated_at: i64,
    /// Bumped on every change: instances reload when it moves.
    pub version: u64,
}

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

/// One kind of a device's inventory: the answer to one query command, as last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryItem {
    /// The RequestType that reported it (DeviceInformation, SecurityInfo,
    /// CertificateList, ProfileList, InstalledApplicationList).
    pub kind: String,
    pub reported_at: i64,
    /// The answer without its envelope (CommandUUID, Status, UDID), as JSON.
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplianceState {
    Compliant,
    NonCompliant,
    /// Not enough inventory to decide yet.
    Unknown,
}

impl ComplianceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceState::Compliant => "compliant",
            ComplianceState::NonCompliant => "non_compliant",
            ComplianceState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<ComplianceState> {
        Some(match s {
            "compliant" => ComplianceState::Compliant,
            "non_compliant" | "noncompliant" | "non-compliant" => ComplianceState::NonCompliant,
            "unknown" => ComplianceState::Unknown,
            _ => return None,
        })
    }
}

/// A device's compliance as last evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplianceRecord {
    pub state: ComplianceState,
    /// The failing (or undecidable) rules, in words.
    #[serde(default)]
    pub reasons: Vec<String>,
    pub evaluated_at: i64,
    /// Version (SHA-256 prefix) of the policy it was evaluated against.
    #[serde(default)]
    pub policy: String,
}

/// What devices can be found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupKey {
    Udid,
    Serial,
    Imei,
    Meid,
    WifiMac,
    Phone,
    User,
    /// The device GUID (`Enrollment::device_guid`) NACs know devices by.
    Guid,
}

impl LookupKey {
    pub const ALL: [LookupKey; 8] = [
        LookupKey::Udid,
        LookupKey::Serial,
        LookupKey::Imei,
        LookupKey::Meid,
        LookupKey::WifiMac,
        LookupKey::Phone,
        LookupKey::User,
        LookupKey::Guid,
    ];

    pub fn parse(s: &str) -> Option<LookupKey> {
        Some(match s.to_ascii_lowercase().as_str() {
            "udid" => LookupKey::Udid,
            "serial" | "serialnumber" | "serial_number" => LookupKey::Serial,
            "imei" => LookupKey::Imei,
            "meid" => LookupKey::Meid,
            "mac" | "macaddress" | "wifi_mac" | "wifimac" => LookupKey::WifiMac,
            "phone" | "phone_number" | "phonenumber" => LookupKey::Phone,
            "user" | "username" => LookupKey::User,
            "guid" => LookupKey::Guid,
            _ => return None,
        })
    }

    /// The form values are indexed and searched in: MACs as 12 lowercase hex
    /// digits, phone numbers and IMEI/MEID as their digits (MEID: hex,
    /// lowercase), the rest trimmed and lowercased.
    pub fn normalize(self, v: &str) -> String {
        match self {
            LookupKey::WifiMac | LookupKey::Meid => v.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect(),
            LookupKey::Phone | LookupKey::Imei => v.chars().filter(char::is_ascii_digit).collect(),
            _ => v.trim().to_lowercase(),
        }
    }
}

impl Enrollment {
    /// A stable GUID for the device channel (from its id), in the upper-case
    /// 8-4-4-4-12 form Cisco ISE uses.
    pub fn device_guid(&self) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(format!("mdmd-device-guid:{}", self.device).as_bytes());
        let x = hex::encode_upper(&h[..16]);
        format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
    }

    /// The lookup entries this record contributes: (key, normalised value,
    /// the device channel found by it). User channels contribute their user.
    pub fn lookup_keys(&self) -> Vec<(LookupKey, String, String)> {
        let mut out = Vec::new();
        let mut add = |k: LookupKey, v: Option<&String>| {
            if let Some(v) = v {
                let n = k.normalize(v);
                if !n.is_empty() && !out.iter().any(|(k2, v2, _): &(LookupKey, String, String)| *k2 == k && *v2 == n) {
                    out.push((k, n, self.device.clone()));
                }
            }
        };
        if self.id == self.device {
            add(LookupKey::Udid, self.udid.as_ref().or(Some(&self.id)));
            add(LookupKey::Serial, self.info.serial_number.as_ref());
            add(LookupKey::Imei, self.info.imei.as_ref());
            add(LookupKey::Meid, self.info.meid.as_ref());
            add(LookupKey::WifiMac, self.info.wifi_mac.as_ref());
            add(LookupKey::Phone, self.info.phone_number.as_ref());
            add(LookupKey::Guid, Some(&self.device_guid()));
            add(LookupKey::User, self.attributes.get("USERNAME"));
            add(LookupKey::User, self.attributes.get("EMAIL"));
        }
        add(LookupKey::User, self.user_short_name.as_ref());
        out
    }
}

/// A small typed record in a named collection (API accounts, access tokens),
/// versioned for compare-and-set across instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub value: serde_json::Value,
    /// 1 on creation, bumped on every change.
    pub version: u64,
    pub updated_at: i64,
}

// ---- The rules both backends apply inside their transactions (one copy).

impl Enrollment {
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

/// An event waiting for one webhook receiver (the durable outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub event_id: String,
    pub topic: String,
    /// The receiver's URL.
    pub sink: String,
    /// The JSON body exactly as it is posted.
    pub body: String,
    /// Unix seconds.
    pub created_at: i64,
    #[serde(default)]
    pub attempts: u32,
    /// Not before (unix milliseconds).
    #[serde(default)]
    pub next_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub seq: u64,
    pub event: OutboxEvent,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub depth: u64,
    /// Unix seconds of the oldest waiting event.
    pub oldest_created_at: Option<i64>,
}
