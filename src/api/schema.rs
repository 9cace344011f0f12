//! The admin API's request and response types: the handlers build these and
//! serialize them, and the route table names them, so `/v1/openapi.json`
//! (`openapi`) describes exactly what goes over the wire. Times are RFC 3339
//! strings. Content Apple defines (a command's dictionary and result, an
//! inventory answer, a declaration's payload, an ADE profile) is a free-form
//! object (`openapi::apple`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use super::schema_ops::*;
pub use super::schema_views::*;
use crate::protocol::ids::EnrollmentKind;
use crate::protocol::ErrorChainItem;
use crate::service::commands::Batch;
use crate::store::{AdeOrigin, DeliveryStatus, DeviceInfo, ProfileState};

fn yes() -> bool {
    true
}

/// `POST /v1/commands`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EnqueueBody {
    /// Enrollment ids.
    pub targets: Vec<String>,
    /// The command: JSON (Apple's keys) or a plist XML string.
    #[schema(schema_with = super::openapi::apple::command_input)]
    pub command: Value,
    /// Wake the targets (APNs) once queued; `false` leaves them to check in.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub push: bool,
}

/// One target's delivery of a command.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub enrollment: String,
    pub status: DeliveryStatus,
    #[schema(format = DateTime)]
    pub queued_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    pub not_now_count: u32,
    pub error_chain: Vec<ErrorChainItem>,
    #[schema(schema_with = super::openapi::apple::result)]
    pub result: Value,
}

/// `GET /v1/commands/{uuid}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandView {
    pub command_uuid: String,
    pub request_type: String,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(schema_with = super::openapi::apple::command)]
    pub command: Value,
    /// Key paths of the values left out (secrets).
    pub redacted: Vec<String>,
    /// How many enrollments it was queued for.
    pub targets: u64,
    pub deliveries: Vec<DeliveryView>,
}

/// A pending or finished command of one enrollment.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceCommandView {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub command_uuid: String,
    pub request_type: String,
}

/// `GET /v1/devices/{id}/commands`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceCommands {
    pub enrollment: String,
    pub commands: Vec<DeviceCommandView>,
}

/// `DELETE /v1/devices/{id}/commands`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClearedCommands {
    pub enrollment: String,
    pub cleared: u64,
}

/// The user an enrollment was made for.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollUserView {
    pub username: String,
    pub email: Option<String>,
    pub full_name: Option<String>,
    pub groups: Vec<String>,
    pub method: String,
    #[schema(format = DateTime)]
    pub signed_in_at: Option<String>,
    pub managed_apple_id: Option<String>,
}

/// An enrollment's push state.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushView {
    #[schema(format = DateTime)]
    pub token_updated_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_push_at: Option<String>,
    pub last_push_outcome: Option<String>,
    /// Why pushes to this token stopped (APNs said it is dead).
    pub disabled: Option<String>,
}

/// An enrollment (device or user channel).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentView {
    pub id: String,
    pub device: String,
    pub kind: EnrollmentKind,
    pub udid: Option<String>,
    pub user_enrollment_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user: Option<EnrollUserView>,
    pub ade: Option<AdeOrigin>,
    /// Null until the device said.
    pub supervised: Option<bool>,
    pub topic: String,
    pub info: DeviceInfo,
    pub attributes: BTreeMap<String, String>,
    pub active: bool,
    pub checked_out: bool,
    pub push_token_present: bool,
    pub push: Option<PushView>,
    pub unlock_token_escrowed: bool,
    pub bootstrap_token_escrowed: bool,
    pub awaiting_configuration: bool,
    pub identity_certificate_sha256: Option<String>,
    #[schema(format = DateTime)]
    pub enrolled_at: Option<String>,
    #[schema(format = DateTime)]
    pub authenticated_at: Option<String>,
    #[schema(format = DateTime)]
    pub token_updated_at: Option<String>,
    #[schema(format = DateTime)]
    pub checked_out_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_checkin_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_seen_at: Option<String>,
    pub refused_reenroll_count: u32,
    #[schema(format = DateTime)]
    pub refused_reenroll_at: Option<String>,
    /// Commands not yet answered (one enrollment's view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_commands: Option<u64>,
}

/// A device's compliance with the policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceView {
    /// `compliant`, `non_compliant` or `unknown`.
    pub status: String,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub evaluated_at: Option<String>,
    /// The policy version it was evaluated against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// An enrollment with its compliance (lists and searches).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceSummary {
    #[serde(flatten)]
    pub enrollment: EnrollmentView,
    pub compliance: ComplianceView,
}

/// `GET /v1/devices`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceSummary>,
    /// Give as `after` for the next page (none: the last page).
    pub next: Option<String>,
}

/// The identity certificate an enrollment authenticates with.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityCertificate {
    pub serial: String,
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    pub revoked: bool,
}

/// One inventory answer and when it came.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryEntry {
    #[schema(format = DateTime)]
    pub reported_at: Option<String>,
    #[schema(schema_with = super::openapi::apple::inventory)]
    pub data: Value,
}

/// A profile waiting for a derived credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingForCredential {
    pub profile: String,
    pub usages: Vec<String>,
    #[schema(format = DateTime)]
    pub since: Option<String>,
}

/// `GET /v1/devices/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub enrollment: EnrollmentView,
    pub identity_certificate: Option<IdentityCertificate>,
    /// Latest answer per query kind (`DeviceInformation`, `SecurityInfo`, …).
    pub inventory: BTreeMap<String, InventoryEntry>,
    pub compliance: ComplianceView,
    /// Groups and blueprints (device channels only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<DeviceFleet>,
    /// With derived credentials set up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_credentials: Option<Vec<crate::service::credentials::derived::CredentialView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_derived_credential: Option<Vec<WaitingForCredential>>,
    /// With organisation CAs set up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_certificates: Option<Vec<crate::service::credentials::orgca::OrgCert>>,
}

/// `POST /v1/devices/{id}/inventory`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryQueued {
    pub enrollment: String,
    pub queued: bool,
    /// The queries queued.
    pub commands: Vec<String>,
}

/// A profile on one enrollment.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceProfileView {
    pub enrollment: String,
    pub identifier: String,
    pub state: ProfileState,
    pub command_uuid: Option<String>,
    pub sha256: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    pub error_chain: Vec<ErrorChainItem>,
}

/// A profile that waits for a derived credential (not sent yet).
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingProfile {
    pub identifier: String,
    /// `waiting for derived credential`.
    pub state: String,
    pub usages: Vec<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// A profile's state on an enrollment: sent, or waiting for a credential.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum DeviceProfileEntry {
    Sent(DeviceProfileView),
    Waiting(WaitingProfile),
}

/// `GET /v1/devices/{id}/profiles`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceProfiles {
    pub enrollment: String,
    pub profiles: Vec<DeviceProfileEntry>,
}

/// `PUT /v1/devices/{id}/attributes`: name → value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Attributes(pub BTreeMap<String, String>);

/// `PUT /v1/devices/{id}/attributes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttributesSet {
    pub enrollment: String,
    pub attributes: BTreeMap<String, String>,
}

/// `POST /v1/devices/{id}/approve-reenroll`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReenrollApproved {
    pub enrollment: String,
    #[schema(format = DateTime)]
    pub approved_until: Option<String>,
}

/// `POST /v1/devices/{id}/unenroll`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unenrolled {
    pub enrollment: String,
    pub command_uuid: Option<String>,
    pub queued: u64,
    /// The enrollment profile's identifier.
    pub profile: String,
}

/// A deletion by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct NameDeleted {
    pub name: String,
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `{"deleted": id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}

/// `GET /v1/compliance`: the policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyRef {
    pub file: Option<String>,
    pub version: String,
}

/// One device in a compliance status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceDevice {
    pub enrollment: String,
    pub compliance: ComplianceView,
}

/// `GET /v1/compliance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceSummary {
    pub policy: PolicyRef,
    /// Devices per status (`compliant`, `non_compliant`, `unknown`).
    pub counts: BTreeMap<String, u64>,
    pub status: String,
    pub devices: Vec<ComplianceDevice>,
    pub next: Option<String>,
}

/// An API account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub name: String,
    pub role: String,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

/// `GET /v1/accounts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// `POST /v1/accounts`: the secret is shown only now.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCreated {
    pub name: String,
    pub role: String,
    pub secret: String,
    pub note: String,
}

/// `DELETE /v1/accounts/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDeleted {
    pub deleted: String,
}

/// `GET /v1/info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub topic: String,
    pub version: String,
    pub push_configured: bool,
    pub push_warning: Option<String>,
}

/// Results of the last day (this instance).
#[derive(Debug, Serialize, ToSchema)]
pub struct DayCounts {
    pub acknowledged: u64,
    pub failed: u64,
    pub not_now: u64,
    pub scope: String,
}

/// `GET /v1/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub enrollments: u64,
    pub pending_commands: u64,
    pub commands_last_day: DayCounts,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub checkins: u64,
    pub connects: u64,
    pub rejected: u64,
    pub connections: u64,
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    /// Statements sent to PostgreSQL by this instance since it started (each
    /// one round trip; 0 on redb).
    pub db_round_trips: u64,
    pub push: PushCountersView,
    /// With webhooks set up.
    pub webhooks: Option<WebhookState>,
}

/// `GET /v1/openapi.json`: this document (its shape is OpenAPI 3.1's).
pub struct OpenApiDocument;

impl utoipa::PartialSchema for OpenApiDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        super::openapi::free_form("This OpenAPI 3.1 document (the OpenAPI Specification defines its shape)").into()
    }
}

impl ToSchema for OpenApiDocument {}

/// `POST /v1/secrets/rotate`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretsRotated {
    pub key_id: String,
    pub resealed: u64,
}

/// `GET /v1/profiles`: a profile template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub identifier: String,
    pub uuid: String,
    pub display_name: String,
    pub payload_types: Vec<String>,
    pub variables: Vec<String>,
    pub sha256: String,
    pub warnings: Vec<String>,
    pub source: String,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// `GET /v1/profiles`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileList {
    pub profiles: Vec<TemplateView>,
}

/// `GET /v1/profiles/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileDetail {
    #[serde(flatten)]
    pub view: TemplateView,
    /// The template as uploaded (XML).
    pub template: String,
    /// Enrollments per state.
    pub states: BTreeMap<String, u64>,
    pub devices: Vec<DeviceProfileView>,
}

/// `POST /v1/profiles`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileUploaded {
    #[serde(flatten)]
    pub template: TemplateView,
    pub changed: bool,
    /// With `?reinstall=true`: what was queued.
    pub reinstall: Option<Batch>,
}

/// `DELETE /v1/profiles/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileDeleted {
    pub identifier: String,
    pub deleted: bool,
    /// With `?remove=true`: the removal queued.
    pub removal: Option<Batch>,
}
