//! JSON views of stored records. Secrets (unlock and bootstrap tokens) are
//! shown only as present or absent; a command's secrets (filled in by the
//! service, or secret by Apple's key name) and secrets in a device's answers
//! are redacted for every role (`service::commands::sealed`).

use serde_json::Value;

use crate::pki::secrets::SecretBox;
use crate::protocol::json::plist_to_json;
use crate::service::commands::sealed;
use crate::store::{CommandRecord, Delivery, DeviceCommand, Enrollment};

use super::schema::{CommandView, DeliveryView, DeviceCommandView, EnrollUserView, EnrollmentView, PushView};

pub fn time(t: i64) -> Value {
    crate::clock::rfc3339(t).map_or(Value::Null, Value::String)
}

/// Times in a view serialised from a stored type (Unix seconds there): every
/// integer under a key ending in `_at`, or named `not_before` / `not_after`,
/// becomes RFC 3339, at any depth, so the API speaks one time format.
pub fn rfc3339_times(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    let timed = k.ends_with("_at") || k == "not_before" || k == "not_after";
                    match x.as_i64() {
                        Some(t) if timed => *x = time(t),
                        _ => walk(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// `v` as JSON with [`rfc3339_times`]: for views that embed service types
/// whose times are Unix seconds in Rust (their schemas say RFC 3339).
pub fn timed<T: serde::Serialize>(v: &T) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    axum::Json(rfc3339_times(serde_json::to_value(v).unwrap_or_default())).into_response()
}

/// A service's JSON view read into the API's type for it (a view that does
/// not fit is our failure, and `tests/openapi.rs` checks every one).
pub fn typed<T: serde::de::DeserializeOwned>(v: Value, what: &'static str) -> Result<T, super::ApiError> {
    serde_json::from_value(v).map_err(|e| super::ApiError::internal(what, e))
}

fn t(at: i64) -> Option<String> {
    crate::clock::rfc3339(at)
}

pub fn enrollment(e: &Enrollment, pending: Option<usize>) -> EnrollmentView {
    EnrollmentView {
        id: e.id.clone(),
        device: e.device.clone(),
        kind: e.kind,
        udid: e.udid.clone(),
        user_enrollment_id: e.user_enrollment_id.clone(),
        user_short_name: e.user_short_name.clone(),
        user: e.user.as_ref().map(|u| EnrollUserView {
            username: u.username.clone(),
            email: u.email.clone(),
            full_name: u.full_name.clone(),
            groups: u.groups.clone(),
            method: u.method.clone(),
            signed_in_at: t(u.signed_in_at),
            managed_apple_id: u.managed_apple_id.clone(),
        }),
        ade: e.ade.clone(),
        supervised: e.supervised(),
        topic: e.topic.clone(),
        info: e.info.clone(),
        attributes: e.attributes.clone(),
        active: e.active,
        checked_out: e.checked_out_at.is_some(),
        push_token_present: e.push.is_some(),
        push: e.push.as_ref().map(|p| PushView {
            token_updated_at: t(p.updated_at),
            last_push_at: p.last_push_at.and_then(t),
            last_push_outcome: p.last_push_outcome.clone(),
            disabled: p.disabled.clone(),
        }),
        unlock_token_escrowed: e.unlock_token.is_some(),
        bootstrap_token_escrowed: e.bootstrap_token.is_some(),
        awaiting_configuration: e.awaiting_configuration,
        identity_certificate_sha256: e.cert_hash.clone(),
        enrolled_at: t(e.enrolled_at),
        authenticated_at: t(e.authenticated_at),
        token_updated_at: e.token_updated_at.and_then(t),
        checked_out_at: e.checked_out_at.and_then(t),
        last_checkin_at: t(e.last_checkin_at),
        last_seen_at: t(e.last_seen_at),
        refused_reenroll_count: e.refused_reenroll_count,
        refused_reenroll_at: e.refused_reenroll_at.and_then(t),
        pending_commands: pending.map(|p| p as u64),
    }
}

fn result_json(d: &Delivery) -> Value {
    match &d.result {
        Some(raw) => match crate::protocol::limits::parse_value(raw) {
            Ok(mut v) => {
                sealed::redact_result(&mut v);
                plist_to_json(&v)
            }
            Err(_) => Value::Null,
        },
        None => Value::Null,
    }
}

pub fn delivery(d: &Delivery) -> DeliveryView {
    DeliveryView {
        enrollment: d.enrollment.clone(),
        status: d.status,
        queued_at: t(d.queued_at),
        updated_at: t(d.updated_at),
        not_now_count: d.not_now_count,
        error_chain: d.error_chain.clone(),
        result: result_json(d),
    }
}

pub fn device_command(c: &DeviceCommand) -> DeviceCommandView {
    DeviceCommandView {
        delivery: delivery(&c.delivery),
        command_uuid: c.command_uuid.clone(),
        request_type: c.request_type.clone(),
    }
}

/// A command with its secrets redacted (`redacted`: the key paths left out).
pub fn command(secrets: &SecretBox, rec: &CommandRecord, deliveries: &[Delivery]) -> CommandView {
    let (command, redacted) = match sealed::redacted_command(secrets, &rec.uuid, &rec.body) {
        Some((d, paths)) => (plist_to_json(&plist::Value::Dictionary(d)), paths),
        None => (Value::Null, Vec::new()),
    };
    CommandView {
        command_uuid: rec.uuid.clone(),
        request_type: rec.request_type.clone(),
        created_at: t(rec.created_at),
        command,
        redacted,
        targets: rec.targets,
        deliveries: deliveries.iter().map(delivery).collect(),
    }
}

/// In every `ApplicationConfigurations` array of `v` (a device's echo of
/// managed app configurations), redact the values at `paths[Identifier]`
/// (the secret paths of the configuration mdmd sent that app) and any string
/// equal to one of `live` (shared access tokens).
pub fn redact_echoed_configs(v: &mut Value, paths: &std::collections::HashMap<String, Vec<sealed::KeyPath>>, live: &[String]) {
    fn strings(v: &mut Value, live: &[String]) {
        match v {
            Value::String(s) if live.iter().any(|t| t == s) => *s = sealed::REDACTED.into(),
            Value::Array(a) => a.iter_mut().for_each(|x| strings(x, live)),
            Value::Object(o) => o.values_mut().for_each(|x| strings(x, live)),
            _ => {}
        }
    }
    fn at<'a>(v: &'a mut Value, p: &[sealed::Step]) -> Option<&'a mut Value> {
        let mut cur = v;
        for step in p {
            cur = match step {
                sealed::Step::Key(k) => cur.get_mut(k.as_str())?,
                sealed::Step::Index(i) => cur.get_mut(*i)?,
            };
        }
        Some(cur)
    }
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "ApplicationConfigurations" {
                    for item in x.as_array_mut().into_iter().flatten() {
                        let id = item.get("Identifier").and_then(Value::as_str).unwrap_or_default().to_owned();
                        if let Some(conf) = item.get_mut("Configuration") {
                            for p in paths.get(&id).into_iter().flatten() {
                                if let Some(slot) = at(conf, p) {
                                    *slot = Value::String(sealed::REDACTED.into());
                                }
                            }
                            strings(conf, live);
                        }
                    }
                } else {
                    redact_echoed_configs(x, paths, live);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_echoed_configs(x, paths, live)),
        _ => {}
    }
}
