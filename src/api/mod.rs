//! The admin API (`/v1/*`): JSON over HTTP, `Authorization: Bearer <api key>`.
//! A missing or wrong key gets 401 (admins are not devices).

mod access;
mod accounts;
mod ade;
mod apps;
mod credentials;
mod ddm;
pub mod error;
mod fleet;
mod health;
mod inventory;
mod ise;
pub mod openapi;
pub mod permissions;
mod pki;
mod profiles;
mod push;
pub mod schema;
mod schema_ops;
mod schema_views;
mod views;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::clock::now;
use crate::service::ServiceError;
pub use error::{ApiError, ApiJson, ApiQuery, ErrorBody};
pub use openapi::{Body, Reply};

/// What a handler answers: its response, or the error's.
pub type ApiResult = Result<Response, ApiError>;

/// One admin-API operation: the router and the OpenAPI description are both
/// built from this table (`routes!`), so neither can forget one. Each names
/// its request body, its success answer and its query parameters by type
/// (`openapi`), and the handlers serialize those same types.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// What the request body is: none, JSON of a type, or a media type.
    pub body: Body,
    /// What a success answers.
    pub reply: Reply,
    /// The statuses a success answers with (200, 201, 204; 502 or 503 with the same body).
    pub statuses: &'static [u16],
    /// The query parameters, from the handler's `Query<T>` (`IntoParams`).
    pub query: Option<fn() -> Vec<utoipa::openapi::path::Parameter>>,
    /// Described in `/v1/openapi.json` (the /v1 API and the health routes).
    pub public_doc: bool,
}

macro_rules! body {
    (none) => {
        Body::None
    };
    ((json $t:ty)) => {
        Body::Json(openapi::component::<$t>)
    };
    ((raw $m:literal)) => {
        Body::Raw($m)
    };
    ((json $t:ty | raw $m:literal)) => {
        Body::JsonOrRaw(openapi::component::<$t>, $m)
    };
}

macro_rules! reply {
    (empty) => {
        Reply::Empty
    };
    ((json $t:ty)) => {
        Reply::Json(openapi::component::<$t>)
    };
    ((raw $m:literal)) => {
        Reply::Raw($m)
    };
}

macro_rules! statuses {
    ($s:literal) => {
        &[$s]
    };
    (($($s:literal)+)) => {
        &[$($s),+]
    };
}

macro_rules! query {
    () => {
        None
    };
    ($q:path) => {
        Some(|| <$q as utoipa::IntoParams>::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query)))
    };
}

macro_rules! routes {
    ($( $m:ident $path:literal $([$q:path])? $h:path, $tag:literal, $body:tt => $st:tt $reply:tt, $summary:literal; )*) => {
        vec![ $( (
            Operation {
                method: stringify!($m),
                path: $path,
                tag: $tag,
                summary: $summary,
                body: body!($body),
                reply: reply!($reply),
                statuses: statuses!($st),
                query: query!($($q)?),
                public_doc: !$path.starts_with("/ciscoise"),
            },
            axum::routing::$m($h),
        ) ),* ]
    };
}

/// Every admin-API operation with its handler.
fn table() -> Vec<(Operation, axum::routing::MethodRouter<Arc<App>>)> {
    use crate::service::access::tokens::Verdict;
    use crate::service::apps::catalog::{AppSettings, StoreAppRequest};
    use crate::service::apps::install::{InstallReport, RemoveReport, SyncReport as AppsSyncReport};
    use crate::service::commands::Batch;
    use crate::service::credentials::orgca::CaView;
    use crate::service::fleet::model::BlueprintSpec;
    use schema as S;
    routes![
        post "/v1/commands" profiles::post_command, "commands", (json S::EnqueueBody) => 200 (json Batch), "Queue a command (validated against Apple's schema) for devices";
        get "/v1/commands/{uuid}" get_command, "commands", none => 200 (json S::CommandView), "A command and its result on every target";
        get "/v1/devices" [Page] list_devices, "devices", none => 200 (json S::DeviceList), "Enrollments, paged; or devices found by serial, IMEI, MAC, phone, user (narrowed by model=, os=)";
        get "/v1/devices/{id}" get_device, "devices", none => 200 (json S::DeviceDetail), "One enrollment: facts, inventory, compliance, push, credentials";
        get "/v1/devices/{id}/commands" device_commands, "devices", none => 200 (json S::DeviceCommands), "Pending and finished commands of an enrollment";
        delete "/v1/devices/{id}/commands" clear_device_commands, "devices", none => 200 (json S::ClearedCommands), "Clear pending commands";
        post "/v1/devices/{id}/inventory" inventory::refresh, "devices", none => 200 (json S::InventoryQueued), "Queue an inventory refresh";
        get "/v1/devices/{id}/profiles" profiles::device_profiles, "profiles", none => 200 (json S::DeviceProfiles), "The state of every profile on an enrollment";
        put "/v1/devices/{id}/attributes" profiles::set_attributes, "devices", (json S::Attributes) => 200 (json S::AttributesSet), "Set attributes ($USERNAME, $EMAIL)";
        post "/v1/devices/{id}/approve-reenroll" approve_reenroll, "devices", (json Approve) => 200 (json S::ReenrollApproved), "Allow one re-enrollment with a new identity";
        post "/v1/devices/{id}/unenroll" unenroll, "devices", none => 200 (json S::Unenrolled), "End management: remove the enrollment profile (the device then checks out)";
        get "/v1/apps-and-books/tokens" apps::list_tokens, "apps", none => 200 (json S::AppTokenList), "Apps and Books content tokens (never their secrets): location, expiry, last sync and error";
        get "/v1/apps-and-books/tokens/{name}" apps::get_token, "apps", none => 200 (json S::AppTokenView), "One content token";
        put "/v1/apps-and-books/tokens/{name}" apps::put_token, "apps", (raw "text/plain") => (200 201) (json S::AppTokenView), "Upload a content token (the .vpptoken file from Apple Business Manager, as is); checked with Apple first";
        delete "/v1/apps-and-books/tokens/{name}" apps::delete_token, "apps", none => 204 empty, "Forget a content token (refused while catalog apps use it)";
        post "/v1/apps-and-books/sync" apps::sync, "apps", none => 200 (json AppsSyncReport), "Refresh licence counts and versions, release licences of devices that left";
        get "/v1/apps" apps::list, "apps", none => 200 (json S::AppList), "The app catalog with licence counts and device counts";
        post "/v1/apps" [apps::UploadQuery] apps::add, "apps", (json StoreAppRequest | raw "application/octet-stream") => (200 201) (json S::AppView), "Add an app: JSON {\"itunes_store_id\": N, …} (App Store, on licences) or an .ipa as application/octet-stream (in-house; a known bundle id is a new version)";
        get "/v1/apps/{id}" apps::get, "apps", none => 200 (json S::AppView), "One app and every device's state of it";
        put "/v1/apps/{id}" apps::set, "apps", (json AppSettings) => 200 (json S::AppView), "Change an app's managed configuration or flags: {\"configuration\"?, \"remove_on_unenroll\"?, \"prevent_backup\"?}";
        delete "/v1/apps/{id}" apps::delete, "apps", none => 204 empty, "Remove an app from the catalog (refused while devices have it)";
        post "/v1/apps/{id}/install" apps::install, "apps", (json apps::AppTargets) => 200 (json InstallReport), "Install on devices: {\"targets\": [enrollment id…]}; App Store apps get a licence first (refused when too few)";
        post "/v1/apps/{id}/remove" apps::remove, "apps", (json apps::AppTargets) => 200 (json RemoveReport), "Remove from devices and release their licences: {\"targets\": […]}";
        get "/v1/devices/{id}/apps" apps::device_apps, "apps", none => 200 (json S::DeviceApps), "One enrollment's catalog apps and their states";
        get "/v1/ade/public-key" ade::public_key, "ade", none => 200 (raw "application/x-pem-file"), "The certificate to upload to Apple Business Manager (PEM): server tokens are encrypted to it";
        get "/v1/ade/tokens" ade::list_tokens, "ade", none => 200 (json S::AdeTokenList), "ADE server tokens (never their secrets): expiry, ABM server, last sync and error";
        get "/v1/ade/tokens/{name}" ade::get_token, "ade", none => 200 (json S::AdeTokenView), "One ADE server token";
        put "/v1/ade/tokens/{name}" ade::put_token, "ade", (raw "application/pkcs7-mime") => 200 (json S::AdeTokenView), "Upload the server token file from Apple Business Manager (S/MIME, encrypted to the public key)";
        delete "/v1/ade/tokens/{name}" ade::delete_token, "ade", none => 200 (json S::NameDeleted), "Forget an ADE server token";
        get "/v1/ade/profiles" ade::list_profiles, "ade", none => 200 (json S::AdeProfileList), "ADE profiles with their UUID at each ABM server";
        get "/v1/ade/profiles/{name}" ade::get_profile, "ade", none => 200 (json S::AdeProfileView), "One ADE profile";
        put "/v1/ade/profiles/{name}" [ade::ProfileQuery] ade::put_profile, "ade", (json S::AppleAdeProfile) => 200 (json S::AdeProfileView), "Define an ADE profile at Apple (Apple's profile JSON; ?default=true assigns it to new devices, &server=, &rule=CEL)";
        delete "/v1/ade/profiles/{name}" ade::delete_profile, "ade", none => 200 (json S::NameDeleted), "Forget an ADE profile";
        post "/v1/ade/profiles/{name}/assign" ade::assign_profile, "ade", (json ade::AssignBody) => 200 (json S::AdeAssigned), "Assign an ADE profile to devices now: {\"devices\": [serial…]}";
        get "/v1/ade/devices" [ade::DevicesQuery] ade::devices, "ade", none => 200 (json S::AdeDevices), "Devices ABM assigned to this server: ABM state, profile, whether enrolled (?after=&limit=&server=)";
        post "/v1/ade/sync" ade::sync, "ade", none => (200 502) (json S::AdeSyncReports), "Sync devices with Apple now (every token)";
        get "/v1/ade/waiting" ade::waiting, "ade", none => 200 (json S::AdeWaitingList), "Devices waiting in Setup Assistant (and recently released)";
        post "/v1/ade/waiting/{id}/release" ade::release, "ade", none => 200 (json S::AdeReleased), "Send DeviceConfigured now: Setup Assistant goes on";
        get "/v1/groups" fleet::list_groups, "fleet", none => 200 (json S::GroupList), "Groups (static members or a CEL rule)";
        get "/v1/groups/{name}" [fleet::LimitQuery] fleet::get_group, "fleet", none => 200 (json S::GroupView), "A group with its current members and the blueprints that use it";
        put "/v1/groups/{name}" fleet::put_group, "fleet", (json S::GroupBody) => 200 (json S::GroupPut), "Create or replace a group: {\"members\": [UDID or serial…]} or {\"rule\": CEL}";
        delete "/v1/groups/{name}" fleet::delete_group, "fleet", none => 200 (json S::NameDeleted), "Delete a group no blueprint uses";
        get "/v1/blueprints" fleet::list_blueprints, "fleet", none => 200 (json S::BlueprintList), "Blueprints";
        get "/v1/blueprints/{name}" fleet::get_blueprint, "fleet", none => 200 (json S::BlueprintOne), "One blueprint";
        put "/v1/blueprints/{name}" [fleet::PutQuery] fleet::put_blueprint, "fleet", (json BlueprintSpec) => 200 (json S::BlueprintPut), "Create or replace a blueprint (?dry_run=true: only the plan)";
        delete "/v1/blueprints/{name}" fleet::delete_blueprint, "fleet", none => 200 (json S::NameDeleted), "Delete a blueprint (what it installed is removed)";
        get "/v1/blueprints/{name}/plan" [fleet::LimitQuery] fleet::plan, "fleet", none => 200 (json S::BlueprintPlan), "Per device, what applying the blueprint would install and remove";
        get "/v1/blueprints/{name}/status" [fleet::LimitQuery] fleet::status, "fleet", none => 200 (json S::BlueprintStatus), "Per device: converged, pending (with what) or failed";
        post "/v1/reconcile" [fleet::ReconcileQuery] fleet::reconcile, "fleet", none => 200 (json S::Reconciled), "Reconcile one device (?device=) or every device now (?sweep=true: by digest, as the periodic sweep)";
        get "/v1/compliance" [inventory::ComplianceQuery] inventory::summary, "devices", none => 200 (json S::ComplianceSummary), "Compliance counts and devices in one status";
        get "/v1/accounts" accounts::list, "accounts", none => 200 (json S::AccountList), "API accounts";
        post "/v1/accounts" accounts::create, "accounts", (json accounts::NewAccount) => 201 (json S::AccountCreated), "Create an API account (the secret is shown once)";
        delete "/v1/accounts/{name}" accounts::delete, "accounts", none => 200 (json S::AccountDeleted), "Delete an API account";
        get "/v1/access-tokens" access::list, "access", none => 200 (json S::AccessTokenList), "Shared access tokens";
        post "/v1/access-tokens" access::create, "access", (json access::NewToken) => 201 (json S::AccessTokenView), "Add or generate a shared access token";
        put "/v1/access-tokens/{id}" access::edit, "access", (json access::EditToken) => 200 (json S::AccessTokenView), "Change a token's value or effective date";
        delete "/v1/access-tokens/{id}" [access::RevokeQuery] access::revoke, "access", none => 200 (json S::AccessTokenRevoked), "Revoke a shared access token";
        post "/v1/access/verify" access::verify, "access", (json access::VerifyRequest) => 200 (json Verdict), "Is this token accepted now?";
        get "/.well-known/jwks.json" access::jwks, "access", none => 200 (json S::Jwks), "Public keys of per-device tokens";
        get "/v1/cas" credentials::list_cas, "credentials", none => 200 (json S::CaList), "Organisation CAs";
        post "/v1/cas" credentials::add_ca, "credentials", (json credentials::NewCa) => 201 (json CaView), "Add an organisation CA (checked at once)";
        post "/v1/cas/renewals" credentials::renew, "credentials", none => 200 (json S::RenewalsQueued), "Re-install profiles whose organisation certificates expire soon";
        get "/v1/cas/{name}" credentials::show_ca, "credentials", none => 200 (json CaView), "One organisation CA with its chain";
        delete "/v1/cas/{name}" credentials::remove_ca, "credentials", none => 200 (json S::CaRemoved), "Remove an organisation CA";
        get "/v1/cas/{name}/certificates" credentials::ca_certificates, "credentials", none => 200 (json S::CaCertificates), "Certificates an organisation CA issued to devices";
        get "/v1/derived-credentials" credentials::list_credentials, "credentials", none => 200 (json S::DerivedList), "Derived credentials";
        post "/v1/derived-credentials" credentials::post_credential, "credentials", (json credentials::NewCredential) => 201 (json S::DerivedPosted), "Post a derived credential (PKCS#12)";
        delete "/v1/derived-credentials/{id}" credentials::delete_credential, "credentials", none => 200 (json S::DerivedDeleted), "Delete a derived credential; dependent profiles are removed";
        post "/v1/derived-credentials/revocations" credentials::revoke_credential, "credentials", (json credentials::NewRevocation) => 200 (json S::DerivedRevoked), "The provider revokes a derived credential: {\"id\"} or {\"serial\", \"issuer\"?}, \"reason\"?; dependent profiles are removed, an audit record kept";
        get "/v1/declarations" ddm::list_declarations, "declarative", none => 200 (json S::DeclarationList), "Declarations (with mdmd's own status subscription)";
        put "/v1/declarations" ddm::put_declaration, "declarative", (json S::DeclarationBody) => 200 (json S::DeclarationPut), "Create or replace a declaration (validated against Apple's schema)";
        get "/v1/declarations/{id}" ddm::get_declaration, "declarative", none => 200 (json S::DeclarationView), "One declaration with its ServerToken";
        delete "/v1/declarations/{id}" ddm::delete_declaration, "declarative", none => 200 (json S::Deleted), "Delete a declaration (it leaves every set)";
        get "/v1/sets" ddm::list_sets, "declarative", none => 200 (json S::SetList), "Declaration sets";
        get "/v1/sets/{set}" ddm::get_set, "declarative", none => 200 (json S::SetView), "A set: declarations, enrollments, unreferenced configurations";
        put "/v1/sets/{set}/declarations/{identifier}" ddm::set_put, "declarative", none => 200 (json S::SetChanged), "Add a declaration to a set";
        delete "/v1/sets/{set}/declarations/{identifier}" ddm::set_delete, "declarative", none => 200 (json S::SetChanged), "Remove a declaration from a set";
        put "/v1/devices/{id}/sets/{set}" ddm::assign, "declarative", none => 200 (json S::SetAssigned), "Assign a set to an enrollment";
        delete "/v1/devices/{id}/sets/{set}" ddm::unassign, "declarative", none => 200 (json S::SetAssigned), "Unassign a set from an enrollment";
        get "/v1/devices/{id}/declarations" ddm::device_declarations, "declarative", none => 200 (json S::DeviceDeclarations), "Effective declarations with tokens and device status";
        get "/v1/devices/{id}/status" ddm::device_status, "declarative", none => 200 (json S::DeviceStatus), "The status channel: latest item values, declaration status";
        post "/v1/devices/{id}/ddm/sync" ddm::sync_now, "declarative", none => 200 (json S::DdmSynced), "Send the DeclarativeManagement sync command now";
        get "/v1/status" [ddm::StatusQuery] ddm::find_status, "declarative", none => 200 (json S::StatusMatches), "Enrollments by a status item's value (?item=&op=&value=)";
        get "/v1/software-updates/{set}" ddm::software_updates, "declarative", none => 200 (json S::SoftwareUpdates), "OS requirement of a set and each device's update state";
        put "/v1/software-updates/{set}" ddm::require_os, "declarative", (json ddm::OsRequirement) => 200 (json S::OsRequired), "Require an OS version by a deadline for a set";
        get "/v1/stats" stats, "operations", none => 200 (json S::Stats), "Counters, CPU time, push and webhook state";
        get "/v1/info" info, "operations", none => 200 (json S::Info), "Topic and version";
        get "/v1/health" health::v1_health, "operations", none => 200 (json S::V1Health), "Warnings: certificates expiring, disk, credentials";
        get "/v1/acme" health::acme_status, "operations", none => 200 (json S::AcmeStatus), "The ACME certificate: names, expiry, last attempt and error";
        post "/v1/acme/renew" health::acme_renew, "operations", none => 200 (json S::AcmeStatus), "Order a new ACME certificate now";
        get "/v1/openapi.json" openapi_json, "operations", none => 200 (json S::OpenApiDocument), "This description";
        get "/v1/ca" pki::ca_show, "pki", none => 200 (json S::CaShow), "CA, TLS and signing certificates";
        get "/v1/certificates" [pki::CertPage] pki::list_certs, "pki", none => 200 (json S::CertList), "Issued certificates, paged";
        get "/v1/certificates/{serial}" pki::get_cert, "pki", none => 200 (json S::IssuedCertView), "One issued certificate";
        post "/v1/certificates/{serial}/revoke" pki::revoke, "pki", none => 200 (json S::CertRevoked), "Revoke a certificate";
        get "/v1/enrollments/profile" pki::enrollment_profile, "enrollment", none => 200 (raw "application/x-apple-aspen-config"), "The signed enrollment profile";
        post "/v1/enrollments/invitations" pki::invite, "enrollment", (json pki::InviteBody) => 200 (json S::Invitation), "A single-use enrollment invitation with its QR code";
        post "/v1/identities/renew" pki::renew_now, "enrollment", none => 200 (json S::RenewalRequested), "Renew device identities that are due now";
        get "/v1/profiles" profiles::list, "profiles", none => 200 (json S::ProfileList), "Profile templates";
        post "/v1/profiles" [profiles::UploadQuery] profiles::upload, "profiles", (raw "application/x-apple-aspen-config") => 201 (json S::ProfileUploaded), "Upload a .mobileconfig template (validated)";
        get "/v1/profiles/{id}" profiles::show, "profiles", none => 200 (json S::ProfileDetail), "A template and its state on every device";
        delete "/v1/profiles/{id}" [profiles::DeleteQuery] profiles::delete, "profiles", none => 200 (json S::ProfileDeleted), "Delete a template";
        post "/v1/profiles/{id}/install" profiles::install, "profiles", (json profiles::ProfileTargets) => 200 (json Batch), "Install a template on devices";
        post "/v1/profiles/{id}/remove" profiles::remove, "profiles", (json profiles::ProfileTargets) => 200 (json Batch), "Remove a profile from devices";
        post "/v1/secrets/rotate" profiles::rotate_secrets, "operations", none => 200 (json S::SecretsRotated), "Rotate the key that seals secrets at rest";
        get "/v1/push-cert" push::show, "push", none => 200 (json S::PushHealth), "The push certificate";
        put "/v1/push-cert" [push::SetQuery] push::set, "push", (raw "application/x-pem-file") => 200 (json S::PushCertSet), "Set the push certificate (PEM or PKCS#12)";
        post "/v1/push" push::push, "push", (json push::PushTargets) => 200 (json S::PushResults), "Push to devices now";
        get "/health" push::health, "operations", none => (200 503) (json S::Health), "Combined health (no credentials)";
        get "/healthz" health::healthz, "operations", none => 200 (raw "text/plain"), "Alive (no credentials)";
        get "/readyz" health::readyz, "operations", none => (200 503) (json S::Ready), "Ready: store writable, certificates in date (no credentials)";
        get "/metrics" health::metrics, "operations", none => 200 (raw "application/openmetrics-text"), "Prometheus metrics (admin key or metrics token)";
        get "/ciscoise/mdminfo/" ise::mdminfo, "ise", none => 200 (raw "application/xml"), "Cisco ISE: MDM server info";
        get "/ciscoise/mdminfo" ise::mdminfo, "ise", none => 200 (raw "application/xml"), "Cisco ISE: MDM server info";
        get "/ciscoise/mdm/api/{ver}/devices/" ise::devices, "ise", none => 200 (raw "application/xml"), "Cisco ISE: device query";
        get "/ciscoise/mdm/api/{ver}/devices" ise::devices, "ise", none => 200 (raw "application/xml"), "Cisco ISE: device query";
        post "/ciscoise/mdm/api/{ver}/batchdevices/" ise::batch, "ise", (raw "application/xml") => 200 (raw "application/xml"), "Cisco ISE: batch query";
        post "/ciscoise/mdm/api/{ver}/batchdevices" ise::batch, "ise", (raw "application/xml") => 200 (raw "application/xml"), "Cisco ISE: batch query";
        post "/ciscoise/mdm/api/{ver}/action/" ise::action, "ise", (raw "application/xml") => 200 (raw "application/xml"), "Cisco ISE: action";
        post "/ciscoise/mdm/api/{ver}/action" ise::action, "ise", (raw "application/xml") => 200 (raw "application/xml"), "Cisco ISE: action";
        post "/ciscoise/mdm/api/{ver}/action/{action}" ise::action, "ise", (raw "application/xml") => 200 (raw "application/xml"), "Cisco ISE: action";
    ]
}

pub fn router() -> Router<Arc<App>> {
    table()
        .into_iter()
        .fold(Router::new(), |r, (op, mr)| r.route(op.path, mr))
        .layer(axum::middleware::from_fn(no_control_characters))
}

/// A path or query with a control character (`%00` …) names nothing: 400
/// before any handler (a store would refuse a NUL in a key, and a log line
/// must not carry one).
async fn no_control_characters(req: Request, next: Next) -> Response {
    let raw = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("");
    let bytes = raw.as_bytes();
    let encoded_control = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_uppercase(), w[2].to_ascii_uppercase()),
                (b'0' | b'1', b'0'..=b'9' | b'A'..=b'F') | (b'7', b'F')
            )
    });
    if encoded_control || bytes.iter().any(|b| b.is_ascii_control()) {
        return ApiError::bad_request("the path or query has a control character").into_response();
    }
    next.run(req).await
}

/// Every operation (for the OpenAPI description and its test).
pub fn operations() -> Vec<Operation> {
    table().into_iter().map(|(op, _)| op).collect()
}

/// The OpenAPI 3.1 description of the admin API, built from `table()` (`openapi`).
pub fn openapi() -> serde_json::Value {
    serde_json::to_value(openapi::document(&operations())).unwrap_or_default()
}

async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

/// Who is calling, for handlers that care (set by `auth`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: crate::service::access::accounts::Role,
}

/// The credentials in a request: (name, secret). The admin key is `admin`.
fn credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    if let Some(token) = v.strip_prefix("Bearer ") {
        let token = token.trim();
        // Account secrets are NAME.RANDOM; anything else can only be the admin key.
        let name = match token.split_once('.') {
            Some((n, _)) => n,
            None => "admin",
        };
        return Some((name.to_owned(), token.to_owned()));
    }
    let b64 = v.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (n, p) = s.split_once(':')?;
    Some((n.to_owned(), p.to_owned()))
}

/// The admin API and the NAC API: the admin key or an account (bearer or
/// basic), then the account's role against the request. 401 for missing or
/// wrong credentials, 403 for a role that may not do this.
pub async fn auth(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/v1/") && !path.starts_with("/ciscoise/") {
        return next.run(req).await;
    }
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"mdmd\", charset=\"UTF-8\"")],
            Json(ErrorBody::new(
                "missing or wrong credentials (Authorization: Bearer <admin key or account secret>, or Basic NAME:SECRET)",
            )),
        )
            .into_response()
    };
    let Some((name, secret)) = credentials(req.headers()) else {
        return unauthorized();
    };
    let source = crate::service::access::limits::client_ip(
        &app.enroll_networks,
        req.extensions().get::<crate::service::access::limits::TcpPeer>(),
        |name| req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()),
    );
    // A derived-credential provider's app, with its per-device upload token:
    // only this one request, checked by the handler.
    if secret.starts_with(crate::service::credentials::derived::TOKEN_PREFIX)
        && path == "/v1/derived-credentials"
        && req.method() == axum::http::Method::POST
    {
        req.extensions_mut().insert(credentials::UploadToken(secret));
        return next.run(req).await;
    }
    // Failed checks are limited per source and per account before any work is done.
    let is_admin_key = !secret.is_empty() && bool::from(secret.as_bytes().ct_eq(app.api_key.as_bytes()));
    let account = if is_admin_key { "admin" } else { name.as_str() };
    let attempt = match app.limiter.begin(source, account) {
        Ok(a) => a,
        Err(wait) => {
            crate::metrics::get().credential_check("refused");
            tracing::warn!(account = %account, client = %source, "admin API credential check refused: too many failures");
            return too_many(wait);
        }
    };
    let role = if is_admin_key {
        attempt.succeeded();
        crate::service::access::accounts::Role::Admin
    } else if name == "admin" {
        tracing::info!(client = %source, "admin API: wrong admin key");
        return unauthorized();
    } else {
        match app.accounts.verify(&name, &secret).await {
            Ok(Some(r)) => {
                attempt.succeeded();
                r
            }
            Ok(None) => {
                tracing::info!(account = %name, client = %source, "admin API: wrong credentials");
                return unauthorized();
            }
            Err(e @ (ServiceError::Store(_) | ServiceError::Internal { .. })) => {
                attempt.succeeded();
                return ApiError::from(e).into_response();
            }
            Err(e) => {
                attempt.succeeded();
                tracing::warn!(error = %e, "admin API credential check unavailable");
                return ApiError::busy(e.to_string()).into_response();
            }
        }
    };
    if !permissions::allowed(role, req.method(), &path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("account {name} ({}) may not {} {path}", role.as_str(), req.method()),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller { name, role });
    next.run(req).await
}

/// 429 with `Retry-After` for a source (or account) with too many failed credential checks.
pub fn too_many(wait: crate::service::access::limits::RetryAfter) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, wait.0.max(1).to_string())],
        Json(ErrorBody::new(format!(
            "too many failed credential checks; try again in {} s",
            wait.0.max(1)
        ))),
    )
        .into_response()
}

async fn get_command(State(app): State<Arc<App>>, Path(uuid): Path<String>) -> ApiResult {
    let (rec, deliveries) = app
        .mdm
        .store
        .command(&uuid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no command {uuid}")))?;
    let mut v = views::command(&app.mdm.secrets, &rec, &deliveries);
    if v.request_type == APP_CONFIG_ECHO {
        redact_app_configs(&app, v.deliveries.iter_mut().map(|d| &mut d.result).collect()).await;
    }
    Ok(Json(v).into_response())
}

/// Managed app configurations a device echoes back (`ManagedApplicationConfiguration`)
/// carry what mdmd filled in: the values its token variables became are
/// redacted like the command's own (every role), using the configurations
/// mdmd remembers for token rotation, and any value equal to a live shared token.
async fn redact_app_configs(app: &App, results: Vec<&mut serde_json::Value>) {
    if results.is_empty() {
        return;
    }
    let Some(access) = app.commander.access() else { return };
    let mut paths: std::collections::HashMap<String, Vec<crate::service::commands::sealed::KeyPath>> = Default::default();
    let mut configs: Vec<(String, String)> = Vec::new();
    if let Ok(list) = access.app_configs().await {
        configs.extend(list.into_iter().map(|(bundle, c)| (bundle, c.configuration)));
    }
    if let Ok(list) = access.device_app_configs().await {
        configs.extend(list.into_iter().map(|d| (d.identifier, d.configuration)));
    }
    for (bundle, xml) in configs {
        if let Ok(plist::Value::Dictionary(d)) = plist::Value::from_reader_xml(std::io::Cursor::new(xml.as_bytes())) {
            paths
                .entry(bundle)
                .or_default()
                .extend(crate::service::commands::sealed::secret_paths(&d));
        }
    }
    let live: Vec<String> = access
        .list()
        .await
        .map(|l| l.into_iter().map(|t| t.value).filter(|t| !t.is_empty()).collect())
        .unwrap_or_default();
    for v in results {
        views::redact_echoed_configs(v, &paths, &live);
    }
}

/// Only answers to ManagedApplicationConfiguration echo configurations.
const APP_CONFIG_ECHO: &str = "ManagedApplicationConfiguration";

/// The enrollment, or 404 `no enrollment {id}`.
pub(crate) async fn enrollment(app: &App, id: &str) -> Result<crate::store::Enrollment, ApiError> {
    app.mdm
        .store
        .enrollment(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no enrollment {id}")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
    udid: Option<String>,
    serial: Option<String>,
    imei: Option<String>,
    meid: Option<String>,
    mac: Option<String>,
    phone: Option<String>,
    user: Option<String>,
    /// Narrows a search: the product name (`iPhone16,1`), model (`MU663LL/A`) or model name (`iPhone`), any case.
    model: Option<String>,
    /// Narrows a search: the OS version (`17.4.1`), or a prefix of whole parts (`17`, `17.4`).
    os: Option<String>,
}

async fn list_devices(State(app): State<Arc<App>>, ApiQuery(p): ApiQuery<Page>) -> ApiResult {
    use crate::store::LookupKey as K;
    let search = [
        (K::Udid, &p.udid),
        (K::Serial, &p.serial),
        (K::Imei, &p.imei),
        (K::Meid, &p.meid),
        (K::WifiMac, &p.mac),
        (K::Phone, &p.phone),
        (K::User, &p.user),
    ];
    if let Some((k, Some(v))) = search.iter().find(|(_, v)| v.is_some()) {
        return inventory::search(&app, *k, v, p.model.as_deref(), p.os.as_deref()).await;
    }
    if p.model.is_some() || p.os.is_some() {
        return Err(ApiError::bad_request(
            "model and os narrow a search: give user (or udid, serial, imei, meid, mac, phone) too",
        ));
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let list = app.mdm.store.enrollments(p.after, limit).await?;
    let next = if list.len() == limit {
        list.last().map(|e| e.id.clone())
    } else {
        None
    };
    // Each device's compliance beside it (a few lookups at a time).
    use futures_util::StreamExt as _;
    let store = app.mdm.store.clone();
    let ids: Vec<String> = list.iter().map(|e| e.device.clone()).collect();
    let comps: Vec<_> = futures_util::stream::iter(ids)
        .map(move |id| {
            let store = store.clone();
            async move { store.compliance(&id).await }
        })
        .buffered(8)
        .collect()
        .await;
    let mut devices = Vec::with_capacity(list.len());
    for (e, c) in list.iter().zip(comps) {
        devices.push(schema::DeviceSummary {
            enrollment: views::enrollment(e, None),
            compliance: inventory::compliance_view(c?.as_ref()),
        });
    }
    Ok(Json(schema::DeviceList { devices, next }).into_response())
}

async fn get_device(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let e = enrollment(&app, &id).await?;
    let pending = app
        .mdm
        .store
        .device_commands(&id, usize::MAX)
        .await?
        .iter()
        .filter(|c| c.delivery.status.is_pending())
        .count();
    let (inv, comp) = (app.mdm.store.inventory(&e.device).await, app.mdm.store.compliance(&e.device).await);
    let (inv, comp) = (inv?, comp?);
    let creds = credentials::device_view(&app, &e).await?;
    let identity = match &e.cert_hash {
        Some(h) => app.mdm.store.cert_by_hash(h).await?,
        None => None,
    };
    let mut enrollment = views::enrollment(&e, Some(pending));
    // The latest push may not be flushed to the store yet.
    if let (Some(s), Some(p)) = (app.pusher.latest(&id), enrollment.push.as_mut()) {
        p.last_push_at = crate::clock::rfc3339(s.at);
        p.last_push_outcome = Some(s.outcome.clone());
        if s.token_disabled {
            p.disabled = Some(s.outcome);
        }
    }
    let fleet = if e.id == e.device {
        Some(
            serde_json::from_value(app.fleet.device_view(&e.id).await?)
                .map_err(|e| ApiError::internal("reading a device's fleet state", e))?,
        )
    } else {
        None
    };
    let v = schema::DeviceDetail {
        enrollment,
        identity_certificate: identity.map(|c| schema::IdentityCertificate {
            serial: c.serial,
            not_after: crate::clock::rfc3339(c.not_after),
            revoked: c.revoked_at.is_some(),
        }),
        inventory: inventory::inventory_view(&inv),
        compliance: inventory::compliance_view(comp.as_ref()),
        fleet,
        derived_credentials: creds.derived_credentials,
        waiting_for_derived_credential: creds.waiting_for_derived_credential,
        org_certificates: creds.org_certificates,
    };
    Ok(views::timed(&v))
}

async fn device_commands(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    enrollment(&app, &id).await?;
    let list = app.mdm.store.device_commands(&id, 1000).await?;
    let mut v = schema::DeviceCommands {
        enrollment: id,
        commands: list.iter().map(views::device_command).collect(),
    };
    let echoes: Vec<_> = v
        .commands
        .iter_mut()
        .filter(|c| c.request_type == APP_CONFIG_ECHO)
        .map(|c| &mut c.delivery.result)
        .collect();
    redact_app_configs(&app, echoes).await;
    Ok(Json(v).into_response())
}

async fn clear_device_commands(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    enrollment(&app, &id).await?;
    let n = app.mdm.store.clear_queue(&id, now()).await?;
    Ok(Json(schema::ClearedCommands {
        enrollment: id,
        cleared: n as u64,
    })
    .into_response())
}

/// End the MDM relationship (Apple's deployment guide): `RemoveProfile` of
/// mdmd's enrollment profile, on the device channel. The device removes what
/// came with it and checks out; check-out releases its licences.
async fn unenroll(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let e = enrollment(&app, &id).await?;
    if e.device != e.id {
        return Err(ApiError::bad_request(format!(
            "{id} is a user channel: unenroll the device ({})",
            e.device
        )));
    }
    if !e.active || e.checked_out_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{id} is not enrolled (checked out or never finished)"),
        ));
    }
    let identifier = app.enroller.profile_identifier();
    let b = app.commander.remove_profile(&identifier, vec![id.clone()], true).await?;
    tracing::info!(enrollment = %id, "unenroll queued (RemoveProfile of the enrollment profile)");
    Ok(Json(schema::Unenrolled {
        enrollment: id,
        command_uuid: b.command_uuid,
        queued: b.queued,
        profile: identifier,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
struct Approve {
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Let the next Authenticate of this device with a new identity re-enroll it
/// (once, within `expires_in` seconds, default one hour).
async fn approve_reenroll(State(app): State<Arc<App>>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult {
    let a: Approve = if body.is_empty() {
        Approve { expires_in: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body must be {{\"expires_in\": seconds}}: {e}")))?
    };
    enrollment(&app, &id).await?;
    let ttl = a.expires_in.unwrap_or(3600).clamp(60, 7 * 86_400);
    let t = now();
    let rec = crate::store::OneTimeSecret {
        created_at: t,
        expires_at: t + ttl,
        purpose: "reenroll-approval".into(),
        used_at: None,
        enrollment: Some(id.clone()),
        vouched: false,
        renews: None,
        user: None,
        ade: None,
    };
    let hash = crate::pki::sha256_hex(&id);
    app.mdm
        .store
        .add_secret(crate::store::SecretKind::ReenrollApproval, &hash, rec)
        .await?;
    tracing::info!(enrollment = %id, ttl, "re-enrollment approved");
    Ok(Json(schema::ReenrollApproved {
        enrollment: id,
        approved_until: crate::clock::rfc3339(t + ttl),
    })
    .into_response())
}

async fn info(State(app): State<Arc<App>>) -> ApiResult {
    let push = push::health_view(&app)?;
    Ok(Json(schema::Info {
        topic: app.mdm.topic.get(),
        version: env!("CARGO_PKG_VERSION").into(),
        push_configured: push.configured,
        push_warning: push.warning,
    })
    .into_response())
}

/// Process accounting, so load tests can measure the server's own CPU per request.
async fn stats(State(app): State<Arc<App>>) -> ApiResult {
    use std::sync::atomic::Ordering::Relaxed;
    let (user, sys) = cpu_time();
    let day = crate::metrics::get().results_last_day();
    let counts = app.mdm.store.counts().await?;
    let c = app.pusher.counters();
    let webhooks = match app.mdm.webhooks() {
        Some(w) => Some(serde_json::from_value(w.state().await).map_err(|e| ApiError::internal("reading the webhook state", e))?),
        None => None,
    };
    Ok(Json(schema::Stats {
        enrollments: counts.enrollments as u64,
        pending_commands: counts.pending_commands as u64,
        commands_last_day: schema::DayCounts {
            acknowledged: day.0,
            failed: day.1,
            not_now: day.2,
            scope: "this instance since it started".into(),
        },
        cpu_user_seconds: user,
        cpu_system_seconds: sys,
        checkins: app.stats.checkins.load(Relaxed),
        connects: app.stats.connects.load(Relaxed),
        rejected: app.stats.rejected.load(Relaxed),
        connections: crate::app::CONNECTIONS.load(Relaxed),
        tls_handshakes: crate::app::HANDSHAKES.load(Relaxed),
        tls_resumed: crate::app::RESUMED.load(Relaxed),
        db_round_trips: crate::store::postgres::round_trips(),
        push: schema::PushCountersView {
            requested: c.requested,
            accepted: c.accepted,
            retried: c.retried,
            failed: c.failed,
            skipped: c.skipped,
        },
        webhooks,
    })
    .into_response())
}

/// User and system CPU seconds of this process, from /proc/self/stat
/// (clock ticks of 1/100 s, the Linux USER_HZ).
pub fn cpu_time() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (tick(11), tick(12))
}
