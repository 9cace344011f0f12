//! Response types of the admin API's areas (apps, ADE, fleet, declarative
//! management, access, credentials, PKI, push, health). See `schema`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::protocol::ErrorChainItem;
use crate::service::credentials::derived::CredentialView;
use crate::service::credentials::ended::EndedView;
use crate::service::credentials::orgca::{CaView, OrgCert};
use crate::service::fleet::model::{AppSpec, Blueprint, Group};

// ---- Apps and Books, the app catalog ----

/// An Apps and Books content token (never its secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppTokenView {
    pub name: String,
    pub org_name: Option<String>,
    pub location: Option<String>,
    pub country: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub expired: bool,
    pub expires_soon: bool,
    #[schema(format = DateTime)]
    pub uploaded_at: Option<String>,
    #[schema(format = DateTime)]
    pub synced_at: Option<String>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub last_error_at: Option<String>,
    /// Catalog apps on this token's licences.
    pub apps: u64,
}

/// `GET /v1/apps-and-books/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppTokenList {
    pub tokens: Vec<AppTokenView>,
}

/// Devices per state of one app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppDeviceCounts {
    pub installed: u64,
    pub pending: u64,
    pub failed: u64,
}

/// An App Store app's licences.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LicenceCounts {
    pub total: i64,
    pub assigned: i64,
    pub available: i64,
}

/// One enrollment's state of a catalog app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceAppView {
    pub app: String,
    pub enrollment: String,
    pub serial: Option<String>,
    /// `queued`, `installing`, `installed`, `update_available`, `removing`, `failed`, `rejected`, …
    pub state: String,
    pub version: Option<String>,
    pub error: Option<String>,
    /// A licence is associated with the device's serial number for this app.
    pub licence: bool,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// The app's name (one enrollment's apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The catalog's version (one enrollment's apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<String>,
}

/// A catalog app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    pub id: String,
    /// `app_store` or `in_house`.
    pub kind: String,
    pub name: Option<String>,
    pub bundle_id: Option<String>,
    pub version: Option<String>,
    pub remove_on_unenroll: bool,
    pub prevent_backup: bool,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    pub devices: AppDeviceCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itunes_store_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_os: Option<String>,
    /// In-house apps: the .ipa's size and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licences: Option<LicenceCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::apple::configuration)]
    pub configuration: Option<Value>,
    /// One app's view: every device's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_states: Option<Vec<DeviceAppView>>,
    /// A new in-house build: devices it was offered to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_to: Option<u64>,
}

/// `GET /v1/apps`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppList {
    pub apps: Vec<AppView>,
}

/// `GET /v1/devices/{id}/apps`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceApps {
    pub apps: Vec<DeviceAppView>,
}

// ---- ADE ----

/// An ADE server token (never its secrets).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeTokenView {
    pub name: String,
    /// The first characters of the consumer key, then `…`.
    pub consumer_key: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub expired: bool,
    pub expires_soon: bool,
    #[schema(format = DateTime)]
    pub uploaded_at: Option<String>,
    pub server_name: Option<String>,
    pub org_name: Option<String>,
    #[schema(format = DateTime)]
    pub fetched_at: Option<String>,
    #[schema(format = DateTime)]
    pub synced_at: Option<String>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub last_error_at: Option<String>,
    /// An upload Apple has not confirmed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `GET /v1/ade/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdeTokenList {
    pub tokens: Vec<AdeTokenView>,
}

/// `PUT /v1/ade/profiles/{name}`: Apple's profile JSON (`profile_name`, `url`, …), as Apple defines it.
pub struct AppleAdeProfile;

impl utoipa::PartialSchema for AppleAdeProfile {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        super::openapi::apple::ade_profile().into()
    }
}

impl ToSchema for AppleAdeProfile {}

/// An ADE profile and where Apple knows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeProfileView {
    pub name: String,
    #[schema(schema_with = super::openapi::apple::ade_profile)]
    pub profile: Value,
    /// ABM server → the profile's UUID there.
    pub uuids: BTreeMap<String, String>,
    pub default: bool,
    pub servers: Vec<String>,
    pub rule: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    /// `PUT`: devices that had it and got the new definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassigned: Option<u64>,
    /// `PUT`: what Apple or mdmd warned about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// `GET /v1/ade/profiles`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdeProfileList {
    pub profiles: Vec<AdeProfileView>,
}

/// `POST /v1/ade/profiles/{name}/assign`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeAssigned {
    pub profile: String,
    pub assigned: u64,
}

/// The enrollment of an ADE device, once it enrolled.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeEnrolled {
    pub id: String,
    pub active: bool,
    pub ade: bool,
    pub supervised: bool,
    pub awaiting_configuration: bool,
    #[schema(format = DateTime)]
    pub enrolled_at: Option<String>,
}

/// A device ABM assigned to this server.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeDevice {
    pub serial: String,
    /// The ABM server (token) it is assigned to.
    pub server: String,
    /// Apple's last operation on it (`added`, `modified`, `deleted`).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_assign_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_date: Option<String>,
    /// Our profile's name, when we assigned it (or recognise its UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What Apple answered when we last assigned a profile, if not SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_error: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
    pub enrolled: bool,
    pub enrollment: Option<AdeEnrolled>,
}

/// `GET /v1/ade/devices`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeDevices {
    pub devices: Vec<AdeDevice>,
    pub next: Option<String>,
}

/// `POST /v1/ade/sync` (502 when a token's sync failed: see its `error`).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdeSyncReports {
    pub tokens: Vec<crate::service::ade::SyncReport>,
}

/// A device waiting in Setup Assistant (or released).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdeWaiting {
    pub enrollment: String,
    /// `waiting` or `released`.
    pub state: String,
    #[schema(format = DateTime)]
    pub since: Option<String>,
    pub waiting_seconds: i64,
    /// The DeviceConfigured command's uuid, once sent.
    pub command: Option<String>,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub released_at: Option<String>,
    pub warning: Option<String>,
}

/// `GET /v1/ade/waiting`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdeWaitingList {
    pub devices: Vec<AdeWaiting>,
}

/// `POST /v1/ade/waiting/{id}/release`.
pub type AdeReleased = AdeWaiting;

// ---- Fleet ----

/// `GET /v1/groups`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<Group>,
}

/// `GET /v1/groups/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub name: String,
    /// `static` or `dynamic`.
    pub kind: String,
    pub rule: Option<String>,
    pub members: Vec<String>,
    /// Enrollments in it now.
    pub current_members: Vec<String>,
    pub truncated: bool,
    /// Blueprints that use it.
    pub blueprints: Vec<String>,
    #[schema(format = DateTime)]
    pub updated_at: Option<String>,
}

/// `PUT /v1/groups/{name}`: static members or a rule.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupBody {
    /// UDIDs or serial numbers.
    pub members: Option<Vec<String>>,
    /// A CEL rule over the device's facts.
    pub rule: Option<String>,
}

/// `PUT /v1/groups/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupPut {
    pub group: Group,
    pub note: String,
}

/// A blueprint: what its groups' devices get.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlueprintView {
    pub name: String,
    pub groups: Vec<String>,
    pub profiles: Vec<String>,
    pub apps: Vec<AppSpec>,
    pub declaration_sets: Vec<String>,
    /// Commands sent once at enrollment (Apple's keys).
    #[schema(schema_with = super::openapi::apple::commands)]
    pub enrollment_commands: Vec<Value>,
    /// `api` or the file it was loaded from.
    pub source: String,
    /// Unix seconds.
    pub updated_at: i64,
}

impl From<Blueprint> for BlueprintView {
    fn from(b: Blueprint) -> Self {
        BlueprintView {
            name: b.name,
            groups: b.spec.groups,
            profiles: b.spec.profiles,
            apps: b.spec.apps,
            declaration_sets: b.spec.declaration_sets,
            enrollment_commands: b.spec.enrollment_commands,
            source: b.source,
            updated_at: b.updated_at,
        }
    }
}

/// `GET /v1/blueprints`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlueprintList {
    pub blueprints: Vec<BlueprintView>,
}

/// `GET /v1/blueprints/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlueprintOne {
    pub blueprint: BlueprintView,
}

/// `PUT /v1/blueprints/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlueprintSaved {
    pub blueprint: BlueprintView,
    pub changed: bool,
}

/// `PUT /v1/blueprints/{name}`: saved, or (`?dry_run=true`) the plan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BlueprintPut {
    Saved(BlueprintSaved),
    Plan(BlueprintPlan),
}

/// An item a blueprint installs or removes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanItem {
    /// `profile`, `app`, `declaration_set`, `command`.
    pub kind: String,
    pub item: String,
    /// The blueprints that want it (installs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprints: Option<Vec<String>>,
}

/// One device's part of a plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanDevice {
    pub enrollment: String,
    pub install: Vec<PlanItem>,
    pub remove: Vec<PlanItem>,
    pub conflicts: Vec<String>,
}

/// `GET /v1/blueprints/{name}/plan`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlueprintPlan {
    pub blueprint: String,
    pub devices_affected: u64,
    pub installs: u64,
    pub removals: u64,
    pub devices: Vec<PlanDevice>,
    pub truncated: bool,
}

/// An item not converged on a device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusItem {
    /// `profile`, `app`, …, or `conflict`.
    pub kind: String,
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_chain: Option<Vec<ErrorChainItem>>,
}

/// One device's state for a blueprint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlueprintDeviceStatus {
    pub enrollment: String,
    /// `converged`, `pending` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<StatusItem>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<StatusItem>>,
}

/// `GET /v1/blueprints/{name}/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlueprintStatus {
    pub blueprint: String,
    /// Devices per state.
    pub counts: BTreeMap<String, u64>,
    pub devices: Vec<BlueprintDeviceStatus>,
    pub truncated: bool,
}

/// A blueprint's state on one device.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceBlueprint {
    pub name: String,
    pub state: String,
    pub items: Vec<StatusItem>,
}

/// A device's groups and blueprints.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceFleet {
    pub groups: Vec<String>,
    pub blueprints: Vec<DeviceBlueprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub reconciled_at: Option<String>,
}

/// `POST /v1/reconcile`: one device (`enrollment`, `commands`) or every device.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reconciled {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<u64>,
    pub commands: u64,
    /// Devices skipped because another reconcile had them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<u64>,
}

// ---- Access tokens ----

/// A shared access token (its value only to the admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessTokenView {
    pub id: String,
    /// Null with `value_hidden` for other roles.
    pub value: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub effective_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    pub active: bool,
    pub effective: bool,
    pub status: String,
    pub carried: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hidden: Option<bool>,
}

/// A token and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenSince {
    pub id: String,
    #[schema(format = DateTime)]
    pub since: Option<String>,
}

/// A token and from when.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenFrom {
    pub id: String,
    #[schema(format = DateTime)]
    pub from: Option<String>,
}

/// Which token the identity provider should require, and the next.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenSchedule {
    pub required: Option<TokenSince>,
    pub next: Option<TokenFrom>,
    pub carried: Option<String>,
    pub summary: String,
}

/// `GET /v1/access-tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessTokenList {
    pub tokens: Vec<AccessTokenView>,
    pub schedule: TokenSchedule,
}

/// `DELETE /v1/access-tokens/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessTokenRevoked {
    pub revoked: String,
    /// With `?replace=true`: the token generated in its place.
    pub replacement: Option<AccessTokenView>,
}

/// A JSON Web Key (RFC 7517): `kty`, `crv`, `x`, `y`, `kid`, `alg`, `use`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// `GET /.well-known/jwks.json` (RFC 7517).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

// ---- Organisation CAs, derived credentials ----

/// `GET /v1/cas`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaList {
    pub cas: Vec<CaView>,
}

/// `POST /v1/cas/renewals`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenewalsQueued {
    pub renewals_queued: u64,
}

/// `DELETE /v1/cas/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaRemoved {
    pub removed: String,
}

/// `GET /v1/cas/{name}/certificates`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaCertificates {
    pub ca: String,
    pub certificates: Vec<OrgCert>,
}

/// `GET /v1/derived-credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DerivedList {
    pub derived_credentials: Vec<CredentialView>,
    pub ended: Vec<EndedView>,
}

/// `POST /v1/derived-credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DerivedPosted {
    #[serde(flatten)]
    pub credential: CredentialView,
    /// The credential this one replaced.
    pub replaced: Option<String>,
    /// Profile → enrollments it was sent to.
    pub profiles_sent: BTreeMap<String, Vec<String>>,
}

/// `DELETE /v1/derived-credentials/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DerivedDeleted {
    pub deleted: String,
    /// Profile → enrollments it was removed from.
    pub profiles_removed: BTreeMap<String, Vec<String>>,
    /// Profile → enrollments it was re-sent to (with another credential).
    pub profiles_reinstalled: BTreeMap<String, Vec<String>>,
}

/// `POST /v1/derived-credentials/revocations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DerivedRevoked {
    pub revoked: EndedView,
    /// Set when it had ended before (`revoked` or `expired`): nothing more done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles_removed: Option<BTreeMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles_reinstalled: Option<BTreeMap<String, Vec<String>>>,
}
