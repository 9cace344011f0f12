//! Records kept by the store, as plain data: serialised as JSON inside the
//! embedded store and in PostgreSQL's jsonb columns. `rules` holds every rule
//! both backends apply to them inside their transactions (one copy), `lookup`
//! what devices are found by, `rows` what `db copy` moves.

mod lookup;
mod rows;
mod rules;

pub use lookup::*;
pub use rows::*;
pub use rules::*;

use serde::{Deserialize, Serialize};

use crate::protocol::{EnrollmentKind, ErrorChainItem};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// What DeviceInformation last said of `IsSupervised`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_supervised: Option<bool>,
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
            phone_number,
            is_supervised
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

/// The person an enrollment was made for: who signed in to download the
/// enrollment profile (the directory, the identity provider, an invitation
/// issued to them), carried from the single-use challenge to the identity
/// certificate to the enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollUser {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    /// Directory or identity-provider groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How they signed in: `ldap`, `oidc`, `invitation`, `account-driven` …
    pub method: String,
    pub signed_in_at: i64,
    /// The Managed Apple Account of an account-driven enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_apple_id: Option<String>,
    /// The `EnrollmentMode` (`BYOD`, `ADDE`) its account-driven profile said: renewals say it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_mode: Option<String>,
}

/// An Automated Device Enrollment: Apple Business Manager assigned the
/// device (by serial) to one of our ADE server tokens, and the device's
/// machine info named it. Carried like `EnrollUser`: challenge → identity
/// certificate → enrollment; a renewal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AdeOrigin {
    /// The server token (one ABM server) the device is assigned to.
    pub server: String,
    pub serial: String,
    /// The ADE profile it enrolled with (its UUID at Apple), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    /// The profile's `is_supervised` (every ADE iPhone since iOS 13 is).
    pub supervised: bool,
    /// The profile's `await_device_configured`: Setup Assistant waits for `DeviceConfigured`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub await_configured: bool,
    /// The machine info was signed by a device certificate from `--device-attestation-ca`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attested: bool,
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
    /// Who enrolled it (see `EnrollUser`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EnrollUser>,
    /// Enrolled through Automated Device Enrollment (see `AdeOrigin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ade: Option<AdeOrigin>,
}

impl Enrollment {
    /// Is the device supervised? `Some(true)` when its ADE profile made it so or
    /// it said so; `Some(false)` for a User Enrollment (never supervised) or when
    /// it said it is not; `None` before it has said.
    pub fn supervised(&self) -> Option<bool> {
        if self.is_user_enrollment() {
            return Some(false);
        }
        if self.ade.as_ref().is_some_and(|a| a.supervised) {
            return Some(true);
        }
        self.info.is_supervised
    }

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
            user: None,
            ade: None,
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
    /// A replacement key: queuing a command with this key withdraws
    /// (`Superseded`) every still-pending command with the same key on the
    /// same enrollment, so an offline device finds at most one (e.g. one
    /// DeclarativeManagement sync, however many changes were made). Such a
    /// command never fans out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersede: Option<String>,
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
            supersede: None,
        }
    }

    /// The same record, replacing pending commands queued with `key` (see `supersede`).
    pub fn superseding(mut self, key: &str) -> CommandRecord {
        self.supersede = Some(key.to_owned());
        self
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum DeliveryStatus {
    Pending,
    NotNow,
    Acknowledged,
    Error,
    CommandFormatError,
    /// Removed from the queue by an admin or by re-enrollment.
    Cleared,
    /// Replaced by a newer command of the same profile (or replacement key)
    /// before the device answered it.
    Superseded,
}

impl DeliveryStatus {
    pub fn is_pending(self) -> bool {
        matches!(self, DeliveryStatus::Pending | DeliveryStatus::NotNow)
    }

    /// A device's final answer: Acknowledged, Error or CommandFormatError.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Acknowledged | DeliveryStatus::Error | DeliveryStatus::CommandFormatError
        )
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
    /// Who signed in for it (from the challenge it was issued against, or the identity it renews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EnrollUser>,
    /// Issued for an Automated Device Enrollment (from the challenge, or the identity it renews).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ade: Option<AdeOrigin>,
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
    /// Who signed in for it: the certificate it yields, and its enrollment, record them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EnrollUser>,
    /// An ADE enrollment's origin: the certificate it yields, and its enrollment, record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ade: Option<AdeOrigin>,
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
    /// The access token an account-driven enrollment's web sign-in hands the
    /// device (`Authorization: Bearer`): used once, for one enrollment profile.
    AccountDriven,
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
            6 => SecretKind::AccountDriven,
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
    /// When it is evaluated again with no new fact (a time-based rule may
    /// change its verdict then): the sweep's schedule entry. None: only a new
    /// fact (a report, a check-in, a policy) can change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_at: Option<i64>,
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
