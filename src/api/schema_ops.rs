//! Response types of declarative management, PKI, push and health. See `schema`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

// ---- Declarative management ----

/// `PUT /v1/declarations`: a declaration (Apple's keys).
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeclarationBody {
    #[serde(rename = "Type")]
    pub r#type: String,
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "Payload")]
    #[schema(schema_with = super::openapi::apple::payload)]
    pub payload: Value,
    /// Set by mdmd when absent.
    #[serde(rename = "ServerToken")]
    pub server_token: Option<String>,
}

/// A declaration as stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeclarationView {
    #[serde(rename = "Type")]
    pub r#type: String,
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "ServerToken")]
    pub server_token: String,
    #[serde(rename = "Payload")]
    #[schema(schema_with = super::openapi::apple::payload)]
    pub payload: Value,
    /// `configuration`, `activation`, `asset` or `management`.
    pub kind: String,
    /// Null for mdmd's built-in declarations.
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// `PUT /v1/declarations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationPut {
    #[serde(rename = "Type")]
    pub r#type: String,
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "ServerToken")]
    pub server_token: String,
    #[serde(rename = "Payload")]
    #[schema(schema_with = super::openapi::apple::payload)]
    pub payload: Value,
    pub kind: String,
    pub changed: bool,
}

/// `GET /v1/declarations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationList {
    pub declarations: Vec<DeclarationView>,
}

/// A set and its declarations' identifiers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetEntry {
    pub set: String,
    pub declarations: Vec<String>,
}

/// `GET /v1/sets`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetList {
    pub sets: Vec<SetEntry>,
}

/// A reference from one declaration to another that is not in the set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MissingReference {
    pub from: String,
    pub to: String,
}

/// `GET /v1/sets/{set}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetView {
    pub set: String,
    pub declarations: Vec<DeclarationView>,
    pub enrollments: Vec<String>,
    /// Configurations no activation in the set names.
    pub unreferenced_configurations: Vec<String>,
    pub missing_references: Vec<MissingReference>,
}

/// `PUT`/`DELETE /v1/sets/{set}/declarations/{identifier}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetChanged {
    pub set: String,
    pub declaration: String,
    pub changed: bool,
}

/// `PUT`/`DELETE /v1/devices/{id}/sets/{set}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetAssigned {
    pub enrollment: String,
    pub set: String,
    pub changed: bool,
}

/// What the device said about a declaration (its status channel).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationDeviceStatus {
    pub active: Option<bool>,
    pub valid: Option<String>,
    pub server_token: Option<String>,
    /// The device has the current version.
    pub current: bool,
    #[schema(schema_with = super::openapi::apple::status_value)]
    pub reasons: Value,
    #[schema(format = DateTime)]
    pub reported_at: Option<String>,
}

/// An effective declaration of an enrollment.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectiveDeclaration {
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "Type")]
    pub r#type: String,
    pub kind: String,
    #[serde(rename = "ServerToken")]
    pub server_token: String,
    pub device_status: Option<DeclarationDeviceStatus>,
}

/// The DeclarationsToken a device is told, and when it changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncTokens {
    #[serde(rename = "DeclarationsToken")]
    pub declarations_token: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: Option<String>,
}

/// `GET /v1/devices/{id}/declarations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDeclarations {
    pub enrollment: String,
    pub sets: Vec<String>,
    pub sync_tokens: SyncTokens,
    pub declarations: Vec<EffectiveDeclaration>,
}

/// A status item's latest value.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusItemValue {
    #[schema(schema_with = super::openapi::apple::status_value)]
    pub value: Value,
    #[schema(format = DateTime)]
    pub reported_at: Option<String>,
}

/// `GET /v1/devices/{id}/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceStatus {
    pub enrollment: String,
    /// Item name (`device.operating-system.version`, …) → latest value.
    pub items: BTreeMap<String, StatusItemValue>,
    /// Declaration identifier → what the device said about it.
    pub declarations: BTreeMap<String, crate::service::ddm::DeclarationStatus>,
    /// Errors the device reported (Apple's shape).
    #[schema(schema_with = super::openapi::apple::status_errors)]
    pub errors: Vec<Value>,
    pub reports: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// `POST /v1/devices/{id}/ddm/sync`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DdmSynced {
    pub enrollment: String,
    pub queued: u64,
}

/// An enrollment whose status item matched.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusMatch {
    pub enrollment: String,
    #[schema(schema_with = super::openapi::apple::status_value)]
    pub value: Value,
    #[schema(format = DateTime)]
    pub reported_at: Option<String>,
}

/// `GET /v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusMatches {
    pub item: String,
    pub op: String,
    pub value: String,
    pub enrollments: Vec<StatusMatch>,
}

/// One device's software update state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SoftwareUpdateDevice {
    pub enrollment: String,
    /// `installed`, `failed`, `downloading`, `installing`, `pending` or `unknown`.
    pub state: String,
    pub os_version: Option<String>,
    pub install_state: Option<String>,
    #[schema(schema_with = super::openapi::apple::status_value)]
    pub pending_version: Value,
    #[schema(schema_with = super::openapi::apple::status_value)]
    pub failure_reason: Value,
    pub declaration: Option<crate::service::ddm::DeclarationStatus>,
}

/// `GET /v1/software-updates/{set}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SoftwareUpdates {
    pub set: String,
    pub target_os_version: Option<String>,
    pub deadline: Option<String>,
    pub devices: Vec<SoftwareUpdateDevice>,
    /// `PUT`: a deadline already past.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// `PUT /v1/software-updates/{set}`.
pub type OsRequired = SoftwareUpdates;

// ---- PKI, enrollment ----

/// A certificate mdmd holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertDescription {
    pub subject: String,
    pub serial: Option<String>,
    /// As OpenSSL prints it (`Dec  5 21:00:00 2026 GMT`).
    pub not_before: String,
    pub not_after: String,
    pub sha256: String,
}

/// `GET /v1/ca`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaShow {
    pub ca: CertDescription,
    pub tls: CertDescription,
    pub signer: CertDescription,
    pub public_url: String,
    pub identity_days: i64,
    pub renew_before_days: i64,
}

/// An issued certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedCertView {
    pub serial: String,
    pub sha256: String,
    pub subject: String,
    #[schema(format = DateTime)]
    pub not_before: Option<String>,
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    #[schema(format = DateTime)]
    pub issued_at: Option<String>,
    pub enrollment: Option<String>,
    /// `mdm` (device identity) or another purpose.
    pub purpose: String,
    pub udid: Option<String>,
    pub vouched: bool,
    pub renewed_from: Option<String>,
    pub revoked: bool,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

/// `GET /v1/certificates`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertList {
    pub certificates: Vec<IssuedCertView>,
    pub next: Option<String>,
}

/// `POST /v1/certificates/{serial}/revoke`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertRevoked {
    pub serial: String,
    pub revoked: bool,
}

/// `POST /v1/enrollments/invitations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    pub url: String,
    pub user: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub qr_svg: String,
    pub qr_png_base64: String,
}

/// `POST /v1/identities/renew`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalRequested {
    /// Enrollments asked to renew their identity.
    pub renewal_requested: Vec<String>,
}

// ---- Push ----

/// `GET /v1/push-cert`: the push certificate and its health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushHealth {
    pub configured: bool,
    pub topic: String,
    /// Without a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiring_soon: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// `PUT /v1/push-cert`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushCertSet {
    pub topic: String,
    /// Enrolled devices on another topic (they must re-enroll).
    pub stranded_devices: u64,
    pub push: PushHealth,
}

/// The outcome of one push.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushOutcome {
    #[schema(format = DateTime)]
    pub at: Option<String>,
    pub outcome: String,
    pub accepted: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub token_disabled: bool,
}

/// `POST /v1/push`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushResults {
    /// Enrollment → what APNs said.
    pub results: BTreeMap<String, PushOutcome>,
}

/// Push counters of this instance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushCountersView {
    pub requested: u64,
    pub accepted: u64,
    pub retried: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// Webhook delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookState {
    pub receivers: u64,
    pub outbox_depth: u64,
    pub oldest_waiting_seconds: Option<i64>,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub given_up: u64,
}

// ---- Health, ACME ----

/// A certificate's expiry.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertExpiry {
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
}

/// The push certificate's expiry.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushExpiry {
    pub configured: bool,
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
}

/// mdmd's certificates.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthCertificates {
    pub ca: CertExpiry,
    pub tls: CertExpiry,
    pub signing: CertExpiry,
    pub push: PushExpiry,
}

/// `GET /v1/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Health {
    /// `ok` or `warning`.
    pub status: String,
    pub warnings: Vec<String>,
    pub certificates: HealthCertificates,
    pub store: String,
}

/// The push part of `/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthPush {
    pub configured: bool,
    pub topic: Option<String>,
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub expiring_soon: Option<bool>,
    pub certificate_error: Option<String>,
}

/// `GET /health` (503 with `unavailable` when the store does not answer).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `warning` or `unavailable`.
    pub status: String,
    pub warnings: Vec<String>,
    pub store: String,
    pub push: HealthPush,
}

/// `GET /readyz` (503 with `problems` when not ready).
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// The ACME certificate in use.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AcmeCertificate {
    pub serial: String,
    pub domains: Vec<String>,
    #[schema(format = DateTime)]
    pub not_after: Option<String>,
    #[schema(format = DateTime)]
    pub issued_at: Option<String>,
    #[schema(format = DateTime)]
    pub renew_at: Option<String>,
}

/// `GET /v1/acme`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AcmeStatus {
    pub domains: Vec<String>,
    pub directory: String,
    pub certificate: Option<AcmeCertificate>,
    #[schema(format = DateTime)]
    pub last_attempt: Option<String>,
    pub last_error: Option<String>,
    pub failures: u64,
    /// Unix seconds.
    pub next_attempt: Option<i64>,
    pub renewal_requested: bool,
}
