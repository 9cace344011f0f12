//! Admin API for inventory and compliance: search devices by what they
//! reported, refresh inventory now, the fleet's compliance at a glance.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use std::collections::BTreeMap;

use super::error::ApiQuery;
use super::{schema, views, ApiError, ApiResult};
use crate::app::App;
use crate::store::{ComplianceRecord, ComplianceState, InventoryItem, LookupKey};

pub fn inventory_view(items: &[InventoryItem]) -> BTreeMap<String, schema::InventoryEntry> {
    items
        .iter()
        .map(|i| {
            (
                i.kind.clone(),
                schema::InventoryEntry {
                    reported_at: crate::clock::rfc3339(i.reported_at),
                    data: serde_json::to_value(&i.data).unwrap_or_default(),
                },
            )
        })
        .collect()
}

pub fn compliance_view(c: Option<&ComplianceRecord>) -> schema::ComplianceView {
    match c {
        Some(c) => schema::ComplianceView {
            status: c.state.as_str().into(),
            reasons: c.reasons.clone(),
            evaluated_at: crate::clock::rfc3339(c.evaluated_at),
            policy: Some(c.policy.clone()),
        },
        None => schema::ComplianceView {
            status: "unknown".into(),
            reasons: vec!["not evaluated yet".into()],
            evaluated_at: None,
            policy: None,
        },
    }
}

/// `GET /v1/devices?serial=…` (or udid, imei, meid, mac, phone, user): the devices found.
pub async fn search(app: &App, key: LookupKey, value: &str, model: Option<&str>, os: Option<&str>) -> ApiResult {
    let ids = app.mdm.store.find(key, value).await?;
    let mut devices = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(e) = app.mdm.store.enrollment(&id).await? {
            if !matches_model_os(&e.info, model, os) {
                continue;
            }
            let c = app.mdm.store.compliance(&id).await?;
            devices.push(schema::DeviceSummary {
                enrollment: views::enrollment(&e, None),
                compliance: compliance_view(c.as_ref()),
            });
        }
    }
    Ok(Json(schema::DeviceList { devices, next: None }).into_response())
}

/// A registration match (SphereShield's user + device type + OS version):
/// `model` any of the product name, model or model name (any case); `os`
/// the version or a prefix of whole parts.
pub fn matches_model_os(i: &crate::store::DeviceInfo, model: Option<&str>, os: Option<&str>) -> bool {
    let model_ok = model.is_none_or(|m| {
        let m = m.trim();
        [&i.product_name, &i.model, &i.model_name]
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(m)))
    });
    let os_ok = os.is_none_or(|want| {
        let want = want.trim();
        i.os_version
            .as_deref()
            .is_some_and(|v| v == want || v.strip_prefix(want).is_some_and(|rest| rest.starts_with('.')))
    });
    model_ok && os_ok
}

/// `POST /v1/devices/{id}/inventory`: queue an inventory refresh now.
pub async fn refresh(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let e = super::enrollment(&app, &id).await?;
    if e.id != e.device {
        return Err(ApiError::bad_request("inventory is kept per device channel, not per user channel"));
    }
    let n = app.mdm.request_inventory(vec![id.clone()]).await?;
    Ok(Json(schema::InventoryQueued {
        enrollment: id,
        queued: n > 0,
        commands: crate::service::checkin::inventory::KINDS.iter().map(|k| k.to_string()).collect(),
    })
    .into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ComplianceQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/compliance`: counts by status and the devices in one status
/// (default: non-compliant) with their reasons, paged.
pub async fn summary(State(app): State<Arc<App>>, ApiQuery(q): ApiQuery<ComplianceQuery>) -> ApiResult {
    let state = match q.status.as_deref() {
        None => ComplianceState::NonCompliant,
        Some(s) => {
            ComplianceState::parse(s).ok_or_else(|| ApiError::bad_request(format!("status {s:?}: compliant, non_compliant or unknown")))?
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut counts = BTreeMap::new();
    for s in [ComplianceState::Compliant, ComplianceState::NonCompliant, ComplianceState::Unknown] {
        let mut n = 0u64;
        let mut after = None;
        loop {
            let page = app.mdm.store.by_compliance(s, after.clone(), 10_000).await?;
            n += page.len() as u64;
            if page.len() < 10_000 {
                break;
            }
            after = page.last().cloned();
        }
        counts.insert(s.as_str().to_owned(), n);
    }
    let ids = app.mdm.store.by_compliance(state, q.after, limit).await?;
    let mut devices = Vec::new();
    for id in &ids {
        let c = app.mdm.store.compliance(id).await?;
        devices.push(schema::ComplianceDevice {
            enrollment: id.clone(),
            compliance: compliance_view(c.as_ref()),
        });
    }
    let next = if ids.len() == limit { ids.last().cloned() } else { None };
    let (_, version) = app.mdm.policy.get();
    Ok(Json(schema::ComplianceSummary {
        policy: schema::PolicyRef {
            file: app.mdm.policy.path().map(|p| p.display().to_string()),
            version,
        },
        counts,
        status: state.as_str().into(),
        devices,
        next,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::matches_model_os;
    use crate::store::DeviceInfo;

    #[test]
    fn registration_match() {
        let i = DeviceInfo {
            product_name: Some("iPhone16,1".into()),
            model_name: Some("iPhone".into()),
            os_version: Some("17.4.1".into()),
            ..Default::default()
        };
        assert!(matches_model_os(&i, None, None));
        assert!(matches_model_os(&i, Some("iphone16,1"), Some("17")));
        assert!(matches_model_os(&i, Some("iPhone"), Some("17.4")));
        assert!(matches_model_os(&i, None, Some("17.4.1")));
        assert!(!matches_model_os(&i, Some("iPad"), None));
        assert!(!matches_model_os(&i, None, Some("1")), "a prefix of whole parts only");
        assert!(!matches_model_os(&i, None, Some("17.4.")));
        assert!(!matches_model_os(&i, None, Some("16")));
        assert!(!matches_model_os(&DeviceInfo::default(), Some("iPhone"), None));
    }
}
