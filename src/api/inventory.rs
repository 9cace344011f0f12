//! Admin API for inventory and compliance: search devices by what they
//! reported, refresh inventory now, the fleet's compliance at a glance.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{views, ApiError, ApiResult};
use crate::app::App;
use crate::store::{ComplianceRecord, ComplianceState, InventoryItem, LookupKey};

pub fn inventory_view(items: &[InventoryItem]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for i in items {
        m.insert(i.kind.clone(), json!({"reported_at": views::time(i.reported_at), "data": i.data}));
    }
    serde_json::Value::Object(m)
}

pub fn compliance_view(c: Option<&ComplianceRecord>) -> serde_json::Value {
    match c {
        Some(c) => json!({
            "status": c.state.as_str(),
            "reasons": c.reasons,
            "evaluated_at": views::time(c.evaluated_at),
            "policy": c.policy,
        }),
        None => json!({"status": "unknown", "reasons": ["not evaluated yet"]}),
    }
}

/// `GET /v1/devices?serial=…` (or udid, imei, meid, mac, phone, user): the devices found.
pub async fn search(app: &App, key: LookupKey, value: &str) -> ApiResult {
    let ids = app.mdm.store.find(key, value).await?;
    let mut devices = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(e) = app.mdm.store.enrollment(&id).await? {
            let c = app.mdm.store.compliance(&id).await?;
            let mut v = views::enrollment(&e, None);
            if let Some(o) = v.as_object_mut() {
                o.insert("compliance".into(), compliance_view(c.as_ref()));
            }
            devices.push(v);
        }
    }
    Ok(Json(json!({"devices": devices, "next": null})).into_response())
}

/// `POST /v1/devices/{id}/inventory`: queue an inventory refresh now.
pub async fn refresh(State(app): State<Arc<App>>, Path(id): Path<String>) -> ApiResult {
    let e = super::enrollment(&app, &id).await?;
    if e.id != e.device {
        return Err(ApiError::bad_request("inventory is kept per device channel, not per user channel"));
    }
    let n = app.mdm.request_inventory(vec![id.clone()]).await?;
    Ok(Json(json!({"enrollment": id, "queued": n > 0, "commands": crate::service::checkin::inventory::KINDS})).into_response())
}

#[derive(serde::Deserialize)]
pub struct ComplianceQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/compliance`: counts by status and the devices in one status
/// (default: non-compliant) with their reasons, paged.
pub async fn summary(State(app): State<Arc<App>>, Query(q): Query<ComplianceQuery>) -> ApiResult {
    let state = match q.status.as_deref() {
        None => ComplianceState::NonCompliant,
        Some(s) => {
            ComplianceState::parse(s).ok_or_else(|| ApiError::bad_request(format!("status {s:?}: compliant, non_compliant or unknown")))?
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut counts = serde_json::Map::new();
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
        counts.insert(s.as_str().into(), json!(n));
    }
    let ids = app.mdm.store.by_compliance(state, q.after, limit).await?;
    let mut devices = Vec::new();
    for id in &ids {
        let c = app.mdm.store.compliance(id).await?;
        devices.push(json!({"enrollment": id, "compliance": compliance_view(c.as_ref())}));
    }
    let next = if ids.len() == limit { ids.last().cloned() } else { None };
    let (_, version) = app.mdm.policy.get();
    Ok(Json(json!({
        "policy": {"file": app.mdm.policy.path().map(|p| p.display().to_string()), "version": version},
        "counts": counts,
        "status": state.as_str(),
        "devices": devices,
        "next": next,
    }))
    .into_response())
}
