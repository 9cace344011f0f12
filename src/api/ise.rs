//! Cisco ISE's MDM API (versions 2 and 3): XML over HTTPS, HTTP basic with
//! a `nac` account (see docs/ise.md).
//!
//! - `GET /ciscoise/mdminfo/?ise_api_version=N`: where the API lives.
//! - `GET {api_path}/devices/?paging=0&querycriteria=…&value=…&filter=…`
//! - `POST {api_path}/batchdevices/?paging=0&filter=…` with a device list.
//! - `POST {api_path}/action/?actionType=full_wipe|corporate_wipe|pin_lock`
//!   with an identifier.
//!
//! Answers come from local state (the lookup index, inventory and
//! compliance), never from asking devices. An unknown device is an empty
//! `deviceList`, not an error.
//!
//! Paging (Cisco's MDM API: ISE's first call says `paging=0`; an MDM with
//! more than `query_max_size` devices to return designs its own scheme and
//! answers `paging_info`, which ISE puts in its next call; `0`, or none,
//! means everything was returned). `paging_info` is an integer in Cisco's
//! schema, so mdmd's is the number of the next page: page `n` is the
//! `n`-th run of `query_max_size` devices in the store's order (each page
//! computed afresh: a device enrolled meanwhile may shift a later page by
//! one). Single-device queries and batches are one page.
//!
//! No XML crate writes these: the documents are small and fixed, so they
//! are built with escaping here; requests are read with roxmltree.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::service::access::nac::Posture;
use crate::service::commands::nac::NacContext;
use crate::store::{ComplianceState, LookupKey};

/// Devices per answer; ISE pages with `paging` beyond it.
pub const QUERY_MAX_SIZE: usize = 5000;
/// Devices one action request may name (ISE asks one device at a time): a
/// body naming more queues nothing.
pub const ACTION_MAX_SIZE: usize = 100;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

fn el(out: &mut String, name: &str, v: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&esc(v));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

fn error_xml(status: StatusCode, name: &str, version: u32, msg: &str) -> Response {
    let mut s = String::from("<ise_api>");
    el(&mut s, "name", name);
    el(&mut s, "api_version", &version.to_string());
    el(&mut s, "error", msg);
    s.push_str("</ise_api>");
    xml(status, s)
}

fn version_of(v: &str) -> Option<u32> {
    match v {
        "v2" => Some(2),
        "v3" => Some(3),
        _ => None,
    }
}

fn b(v: bool) -> &'static str {
    if v {
        "true"
    } else {
        "false"
    }
}

/// Which attributes a `filter` asks for (`all`, or names joined by `+`),
/// as the element names mdmd writes (lower case). ISE's own names for the
/// compliance block (`compliance_status` in Cisco's examples, the MDM
/// dictionary's `compliant_status`) and the spellings without underscores
/// are taken too.
fn wanted(filter: Option<&str>) -> Option<Vec<String>> {
    let f = filter.unwrap_or("all").trim();
    if f.is_empty() || f.eq_ignore_ascii_case("all") {
        return None;
    }
    Some(
        f.split(['+', ' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.to_ascii_lowercase();
                match s.as_str() {
                    "compliance_status" | "compliant_status" | "compliancestatus" | "compliantstatus" => "compliance".to_owned(),
                    "registerstatus" => "register_status".to_owned(),
                    "diskencryptionon" => "disk_encryption_on".to_owned(),
                    "pinlockon" => "pin_lock_on".to_owned(),
                    "jailbroken" => "jail_broken".to_owned(),
                    "serialnumber" => "serial_number".to_owned(),
                    "osversion" => "os_version".to_owned(),
                    "phonenumber" => "phone_number".to_owned(),
                    _ => s,
                }
            })
            .collect(),
    )
}

fn device_xml(out: &mut String, p: &Posture, version: u32, filter: &Option<Vec<String>>) {
    let want = |n: &str| filter.as_ref().is_none_or(|f| f.iter().any(|x| x == n));
    out.push_str("<device>");
    el(out, "macaddress", &p.mac);
    out.push_str("<attributes>");
    if want("register_status") {
        el(out, "register_status", b(p.registered));
    }
    if want("compliance") {
        out.push_str("<compliance>");
        el(out, "status", b(p.compliant));
        el(out, "failure_reason", &p.failure_reason);
        el(out, "remediation", &p.remediation);
        out.push_str("</compliance>");
    }
    let simple: [(&str, &str); 11] = [
        ("disk_encryption_on", b(p.disk_encryption_on)),
        ("pin_lock_on", b(p.pin_lock_on)),
        ("jail_broken", b(p.jail_broken)),
        ("manufacturer", p.manufacturer),
        ("model", &p.model),
        ("imei", &p.imei),
        ("meid", &p.meid),
        ("udid", &p.udid),
        ("serial_number", &p.serial_number),
        ("os_version", &p.os_version),
        ("phone_number", &p.phone_number),
    ];
    for (n, v) in simple {
        if want(n) {
            el(out, n, v);
        }
    }
    if version >= 3 {
        if want("guid") {
            el(out, "guid", &p.guid);
        }
        if want("lastcheckintimestamp") {
            el(out, "lastCheckinTimeStamp", &(p.last_checkin * 1000).to_string());
        }
    }
    out.push_str("</attributes></device>");
}

fn device_list(version: u32, devices: &[Posture], filter: &Option<Vec<String>>, paging: &str) -> Response {
    let mut s = String::from("<ise_api>");
    el(&mut s, "name", "attributes");
    el(&mut s, "api_version", &version.to_string());
    el(&mut s, "paging_info", paging);
    s.push_str("<deviceList>");
    for p in devices {
        device_xml(&mut s, p, version, filter);
    }
    s.push_str("</deviceList></ise_api>");
    xml(StatusCode::OK, s)
}

/// `querycriteria` → lookup key (ISE's names).
fn criteria(c: &str) -> Option<LookupKey> {
    Some(match c.to_ascii_lowercase().as_str() {
        "macaddress" | "mac" => LookupKey::WifiMac,
        "udid" | "uid" => LookupKey::Udid,
        "imei" => LookupKey::Imei,
        "meid" => LookupKey::Meid,
        "serialnumber" | "serial_number" => LookupKey::Serial,
        "username" => LookupKey::User,
        "guid" => LookupKey::Guid,
        "phonenumber" | "phone_number" => LookupKey::Phone,
        _ => return None,
    })
}

/// A device listing ISE pages through.
#[derive(Debug, Clone, Copy)]
enum Listing {
    /// Every device (device channels).
    All,
    /// The devices in one compliance state.
    Compliance(ComplianceState),
}

/// `paging` as a page number: `0` (or nothing) is the first.
fn page_number(paging: &str) -> Option<u64> {
    if paging.is_empty() {
        return Some(0);
    }
    if paging.len() > 12 || !paging.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    paging.parse().ok()
}

/// Page `page` (0-based) of `size` device ids of a listing, in the store's
/// order, and whether any device follows it.
async fn page_of(
    store: &dyn crate::store::Store,
    listing: Listing,
    page: u64,
    size: usize,
) -> Result<(Vec<String>, bool), crate::store::StoreError> {
    const BATCH: usize = 1000;
    let skip = page.saturating_mul(size as u64);
    let mut seen = 0u64;
    let mut out = Vec::with_capacity(size.min(BATCH));
    let mut after: Option<String> = None;
    loop {
        let (ids, last, full) = match listing {
            Listing::All => {
                let batch = store.enrollments(after.clone(), BATCH).await?;
                let last = batch.last().map(|e| e.id.clone());
                let full = batch.len() == BATCH;
                (
                    batch.into_iter().filter(|e| e.id == e.device).map(|e| e.id).collect::<Vec<_>>(),
                    last,
                    full,
                )
            }
            Listing::Compliance(state) => {
                let batch = store.by_compliance(state, after.clone(), BATCH).await?;
                let last = batch.last().cloned();
                let full = batch.len() == BATCH;
                (batch, last, full)
            }
        };
        for id in ids {
            if seen < skip {
                seen += 1;
                continue;
            }
            if out.len() == size {
                return Ok((out, true));
            }
            out.push(id);
        }
        if !full || last.is_none() {
            return Ok((out, false));
        }
        after = last;
    }
}

pub async fn mdminfo(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let asked: u32 = q.get("ise_api_version").and_then(|v| v.trim().parse().ok()).unwrap_or(2);
    let version = asked.clamp(2, 3);
    let public = app.commander.cfg.public_url.trim_end_matches('/').to_owned();
    let mut s = String::from("<ise_api>");
    el(&mut s, "name", "mdminfo");
    el(&mut s, "api_version", &version.to_string());
    el(&mut s, "api_path", &format!("/ciscoise/mdm/api/v{version}"));
    el(&mut s, "redirect_url", &format!("{public}/mdm/enroll"));
    el(&mut s, "query_max_size", &QUERY_MAX_SIZE.to_string());
    el(&mut s, "messaging_support", "false");
    el(&mut s, "vendor", "mdmd");
    el(&mut s, "product_name", "mdmd");
    el(&mut s, "product_version", env!("CARGO_PKG_VERSION"));
    s.push_str("</ise_api>");
    xml(StatusCode::OK, s)
}

pub async fn devices(State(app): State<Arc<App>>, Path(ver): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(version) = version_of(&ver) else {
        return (StatusCode::NOT_FOUND, "no such API version\n").into_response();
    };
    let filter = wanted(q.get("filter").map(String::as_str));
    let paging = q.get("paging").map(|p| p.trim()).unwrap_or("0");
    let Some(page) = page_number(paging) else {
        return error_xml(
            StatusCode::BAD_REQUEST,
            "attributes",
            version,
            &format!(
                "paging {:?}: a page number (0 for the first), as paging_info said",
                crate::outbound::bounded(paging, 40)
            ),
        );
    };
    let crit = q.get("querycriteria").map(String::as_str).unwrap_or("");
    let value = q.get("value").map(String::as_str).unwrap_or("");
    let err = |e: crate::service::ServiceError| match e {
        crate::service::ServiceError::Store(e) => {
            tracing::error!(error = %super::error::chain(&e), "ISE query failed");
            error_xml(StatusCode::SERVICE_UNAVAILABLE, "attributes", version, "storage unavailable")
        }
        e => {
            let id = super::error::internal("an ISE query", &e);
            error_xml(
                StatusCode::INTERNAL_SERVER_ERROR,
                "attributes",
                version,
                &format!("internal error (request id {id})"),
            )
        }
    };
    let listing = if crit.eq_ignore_ascii_case("compliance") {
        Some(if value.eq_ignore_ascii_case("true") {
            Listing::Compliance(ComplianceState::Compliant)
        } else {
            Listing::Compliance(ComplianceState::NonCompliant)
        })
    } else if crit.is_empty() {
        Some(Listing::All)
    } else {
        None
    };
    if let Some(listing) = listing {
        let (ids, more) = match page_of(app.mdm.store.as_ref(), listing, page, QUERY_MAX_SIZE).await {
            Ok(p) => p,
            Err(e) => return err(e.into()),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            match app.mdm.posture_of(id).await {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(e) => return err(e),
            }
        }
        let next = if more { (page + 1).to_string() } else { "0".to_owned() };
        return device_list(version, &out, &filter, &next);
    }
    let Some(key) = criteria(crit) else {
        return error_xml(
            StatusCode::BAD_REQUEST,
            "attributes",
            version,
            &format!(
                "unknown querycriteria {:?}: macaddress, udid, imei, meid, serialnumber, username, phonenumber, guid, compliance",
                crate::outbound::bounded(crit, 40)
            ),
        );
    };
    match app.mdm.postures(key, value).await {
        Ok(list) => device_list(version, &list, &filter, "0"),
        Err(e) => err(e),
    }
}

/// Why a request body names no device.
#[derive(Debug, thiserror::Error)]
enum BadBody {
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("the XML nests deeper than {0} elements")]
    TooDeep(usize),
    #[error("body is not XML: {0}")]
    NotXml(#[source] roxmltree::Error),
    #[error("no device identifier (macaddress, udid, guid, imei, meid, serialnumber) in the body")]
    NoIdentifier,
}

/// The identifiers in a request body: (criteria, value) per device.
fn identifiers(body: &[u8]) -> Result<Vec<(LookupKey, String)>, BadBody> {
    let text = std::str::from_utf8(body).map_err(|_| BadBody::NotUtf8)?;
    // roxmltree recurses once per element: measure the nesting first.
    let most = crate::protocol::limits::MAX_DEPTH;
    if crate::protocol::limits::xml_too_deep(body, most) {
        return Err(BadBody::TooDeep(most));
    }
    let doc = roxmltree::Document::parse(text).map_err(BadBody::NotXml)?;
    let mut out = Vec::new();
    for node in doc
        .descendants()
        .filter(|n| n.has_tag_name("device") || n.has_tag_name("identifier"))
    {
        for c in node.children().filter(|c| c.is_element()) {
            if let (Some(k), Some(v)) = (criteria(c.tag_name().name()), c.text()) {
                if !v.trim().is_empty() {
                    out.push((k, v.trim().to_owned()));
                    break;
                }
            }
        }
    }
    if out.is_empty() {
        return Err(BadBody::NoIdentifier);
    }
    Ok(out)
}

pub async fn batch(
    State(app): State<Arc<App>>,
    Path(ver): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(version) = version_of(&ver) else {
        return (StatusCode::NOT_FOUND, "no such API version\n").into_response();
    };
    let filter = wanted(q.get("filter").map(String::as_str));
    let ids = match identifiers(&body) {
        Ok(ids) => ids,
        Err(e) => return error_xml(StatusCode::BAD_REQUEST, "attributes", version, &e.to_string()),
    };
    if ids.len() > QUERY_MAX_SIZE {
        return error_xml(StatusCode::BAD_REQUEST, "attributes", version, "more devices than query_max_size");
    }
    let mut out = Vec::new();
    for (k, v) in ids {
        match app.mdm.postures(k, &v).await {
            Ok(list) => {
                for p in list {
                    if !out.iter().any(|o: &Posture| o.udid == p.udid) {
                        out.push(p);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ISE batch query failed");
                return error_xml(StatusCode::SERVICE_UNAVAILABLE, "attributes", version, "storage unavailable");
            }
        }
    }
    device_list(version, &out, &filter, "0")
}

pub async fn action(
    State(app): State<Arc<App>>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(version) = params.get("ver").and_then(|v| version_of(v)) else {
        return (StatusCode::NOT_FOUND, "no such API version\n").into_response();
    };
    let kind = params
        .get("action")
        .or_else(|| q.get("actionType"))
        .or_else(|| q.get("actiontype"))
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(kind.as_str(), "full_wipe" | "corporate_wipe" | "pin_lock") {
        return error_xml(
            StatusCode::BAD_REQUEST,
            "action",
            version,
            &format!("actionType {kind:?}: full_wipe, corporate_wipe or pin_lock"),
        );
    }
    let ids = match identifiers(&body) {
        Ok(ids) => ids,
        Err(e) => return error_xml(StatusCode::BAD_REQUEST, "action", version, &e.to_string()),
    };
    if ids.len() > ACTION_MAX_SIZE {
        tracing::warn!(action = %kind, devices = ids.len(), "ISE action naming too many devices refused");
        return error_xml(
            StatusCode::BAD_REQUEST,
            "action",
            version,
            &format!("more than {ACTION_MAX_SIZE} devices in one action"),
        );
    }
    // A device named twice (by the same or another identifier) is acted on once.
    let mut done: HashMap<String, (bool, String)> = HashMap::new();
    let enrollment_profile = app.enroller.profile_identifier();
    let mut s = String::from("<ise_api>");
    el(&mut s, "name", "action");
    el(&mut s, "api_version", &version.to_string());
    s.push_str("<deviceList>");
    for (k, v) in ids {
        let found = match app.mdm.store.find(k, &v).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "ISE action lookup failed");
                return error_xml(StatusCode::SERVICE_UNAVAILABLE, "action", version, "storage unavailable");
            }
        };
        let (ok, reason) = match found.as_slice() {
            [] => (false, "device not found".to_owned()),
            [id] if done.contains_key(id) => done.get(id).cloned().unwrap_or_default(),
            [id] => {
                let ctx = NacContext {
                    apps: &app.apps,
                    enrollment_profile: &enrollment_profile,
                };
                let r = match app.commander.nac_action(&kind, id, &ctx).await {
                    Ok(o) if o.applied() => {
                        tracing::info!(
                            action = %kind,
                            enrollment = %id,
                            commands = o.queued.len(),
                            queued = %o.summary(),
                            warnings = ?o.warnings,
                            "NAC action queued"
                        );
                        (true, String::new())
                    }
                    Ok(o) => {
                        tracing::info!(action = %kind, enrollment = %id, warnings = ?o.warnings, "NAC action: nothing queued");
                        (false, o.why_nothing())
                    }
                    Err(crate::service::commands::CommandError::Service(e)) => {
                        let id = super::error::internal("a NAC action", &e);
                        (false, format!("internal error (request id {id})"))
                    }
                    Err(e) => (false, e.to_string()),
                };
                done.insert(id.clone(), r.clone());
                r
            }
            _ => (false, "the identifier matches more than one device".to_owned()),
        };
        s.push_str("<device>");
        if k == LookupKey::WifiMac {
            el(&mut s, "macaddress", &LookupKey::WifiMac.normalize(&v).to_uppercase());
        } else {
            el(&mut s, "macaddress", "");
        }
        if version >= 3 {
            if let [id] = found.as_slice() {
                if let Ok(Some(p)) = app.mdm.posture_of(id).await {
                    el(&mut s, "guid", &p.guid);
                }
            }
        }
        s.push_str("<result>");
        el(&mut s, "action_status", b(ok));
        el(&mut s, "failure_reason", &reason);
        s.push_str("</result></device>");
    }
    s.push_str("</deviceList></ise_api>");
    xml(StatusCode::OK, s)
}
