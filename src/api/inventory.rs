//! Admin API for inventory and compliance: search devices by what they
//! reported, refresh inventory now, the fleet's compliance at a glance.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{error, store_error, views};
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
pub async fn search(app: &App, key: LookupKey, value: &str) -> Response {
    let ids = match app.mdm.store.find(key, value).await {
        Ok(ids) => ids,
        Err(e) => return store_error(e),
    };
    let mut devices = Vec::with_capacity(ids.len());
    for id in ids {
        match app.mdm.store.enrollment(&id).await {
            Ok(Some(e)) => {
                let c = match app.mdm.store.compliance(&id).await {
                    Ok(c) => c,
                    Err(e) => return store_error(e),
                };
                let mut v = views::enrollment(&e, None);
                if let Some(o) = v.as_object_mut() {
                    o.insert("compliance".into(), compliance_view(c.as_ref()));
                }
                devices.push(v);
            }
            Ok(None) => {}
            Err(e) => return store_error(e),
        }
    }
    Json(json!({"devices": devices, "next": null})).into_response()
}

/// `POST /v1/devices/{id}/inventory`: queue an inventory refresh now.
pub async fn refresh(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.mdm.store.enrollment(&id).await {
        Ok(Some(e)) if e.id == e.device => {}
        Ok(Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "inventory is kept per device channel, not per user channel",
            )
        }
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no enrollment {id}")),
        Err(e) => return store_error(e),
    }
    match app.mdm.request_inventory(vec![id.clone()]).await {
        Ok(n) => Json(json!({"enrollment": id, "queued": n > 0, "commands": crate::service::checkin::inventory::KINDS})).into_response(),
        Err(crate::service::ServiceError::Store(e)) => store_error(e),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
pub struct ComplianceQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/compliance`: counts by status and the devices in one status
/// (default: non-compliant) with their reasons, paged.
pub async fn summary(State(app): State<Arc<App>>, Query(q): Query<ComplianceQuery>) -> Response {
    let state = match q.status.as_deref() {
        None => ComplianceState::NonCompliant,
        Some(s) => match ComplianceState::parse(s) {
            Some(s) => s,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("status {s:?}: compliant, non_compliant or unknown"),
                )
            }
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut counts = serde_json::Map::new();
    for s in [ComplianceState::Compliant, ComplianceState::NonCompliant, ComplianceState::Unknown] {
        let mut n = 0u64;
        let mut after = None;
        loop {
            let page = match app.mdm.store.by_compliance(s, after.clone(), 10_000).await {
                Ok(p) => p,
                Err(e) => return store_error(e),
            };
            n += page.len() as u64;
            if page.len() < 10_000 {
                break;
            }
            after = page.last().cloned();
        }
        counts.insert(s.as_str().into(), json!(n));
    }
    let ids = match app.mdm.store.by_compliance(state, q.after, limit).await {
        Ok(ids) => ids,
        Err(e) => return store_error(e),
    };
    let mut devices = Vec::new();
    for id in &ids {
        match app.mdm.store.compliance(id).await {
            Ok(c) => devices.push(json!({"enrollment": id, "compliance": compliance_view(c.as_ref())})),
            Err(e) => return store_error(e),
        }
    }
    let next = if ids.len() == limit { ids.last().cloned() } else { None };
    let (_, version) = app.mdm.policy.get();
    Json(json!({
        "policy": {"file": app.mdm.policy.path().map(|p| p.display().to_string()), "version": version},
        "counts": counts,
        "status": state.as_str(),
        "devices": devices,
        "next": next,
    }))
    .into_response()
}
