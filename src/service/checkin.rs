//! Check-in messages: Authenticate, TokenUpdate, CheckOut and the rest.

use base64::Engine as _;

use super::{now, Mdm, ServiceError};
use crate::protocol::checkin::{CheckinMessage, CheckinRequest};
use crate::protocol::EnrollmentKind;
use crate::store::{DeviceInfo, Enrollment, PushInfo, TokenUpdateRecord};

/// What to answer a device's check-in with.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckinReply {
    /// 200 with an empty body.
    Empty,
    /// 200 with an XML plist body.
    Plist(Vec<u8>),
    /// 200 with a JSON body (declarative management).
    Json(Vec<u8>),
    /// 410: decline (UserAuthenticate).
    Gone,
    /// 400 with a reason: a message we understand but do not support.
    Unsupported(String),
}

/// What the caller established about the request's identity (see `pki`).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// SHA-256 (hex) of the device identity certificate, once identities are checked.
    pub cert_hash: Option<String>,
    /// Authenticate is renewing an active enrollment's identity: keep its queue.
    pub renewal: bool,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Mdm {
    fn check_topic(&self, topic: Option<&str>) -> Result<String, ServiceError> {
        match topic {
            Some(t) if t == self.topic => Ok(t.to_owned()),
            Some(t) => Err(ServiceError::Rejected(format!("topic {t:?} is not this server's push topic"))),
            None => Err(ServiceError::Rejected("missing Topic".into())),
        }
    }

    pub async fn checkin(&self, req: CheckinRequest, caller: &Caller) -> Result<CheckinReply, ServiceError> {
        let id = req.enrollment.id.clone();
        let t = now();
        match req.message {
            CheckinMessage::Authenticate(f) => {
                let topic = self.check_topic(req.topic.as_deref())?;
                let old = self.store.enrollment(&id).await?;
                let info = DeviceInfo {
                    serial_number: f.serial_number,
                    product_name: f.product_name,
                    os_version: f.os_version,
                    build_version: f.build_version,
                    imei: f.imei,
                    meid: f.meid,
                    device_name: f.device_name,
                    model: f.model,
                    model_name: f.model_name,
                };
                let keep = caller.renewal && old.as_ref().is_some_and(|o| o.active);
                let rec = Enrollment {
                    id: id.clone(),
                    device: req.enrollment.device.clone(),
                    kind: req.enrollment.kind,
                    udid: req.ids.udid.clone(),
                    user_enrollment_id: if req.ids.udid.is_none() { req.ids.enrollment_id.clone() } else { None },
                    user_short_name: req.ids.user_short_name.clone(),
                    user_long_name: req.ids.user_long_name.clone(),
                    topic,
                    info,
                    // A renewal keeps the channel live; a (re-)enrollment waits for TokenUpdate.
                    push: if keep { old.as_ref().and_then(|o| o.push.clone()) } else { None },
                    unlock_token: if keep { old.as_ref().and_then(|o| o.unlock_token.clone()) } else { None },
                    bootstrap_token: old.as_ref().and_then(|o| o.bootstrap_token.clone()),
                    active: keep,
                    awaiting_configuration: false,
                    cert_hash: caller.cert_hash.clone().or_else(|| old.as_ref().and_then(|o| o.cert_hash.clone())),
                    enrolled_at: t,
                    authenticated_at: t,
                    token_updated_at: if keep { old.as_ref().and_then(|o| o.token_updated_at) } else { None },
                    checked_out_at: None,
                    last_checkin_at: t,
                    last_seen_at: t,
                };
                self.store.authenticate(rec, keep).await?;
                tracing::info!(enrollment = %id, renewal = keep, "Authenticate");
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::TokenUpdate { token, push_magic, unlock_token, awaiting_configuration } => {
                let topic = self.check_topic(req.topic.as_deref())?;
                let rec = TokenUpdateRecord {
                    push: PushInfo { token: hex::encode(&token), push_magic, topic, updated_at: t },
                    unlock_token: unlock_token.filter(|_| req.enrollment.kind == EnrollmentKind::Device).map(|u| b64(&u)),
                    awaiting_configuration,
                    user_short_name: req.ids.user_short_name.clone(),
                    user_long_name: req.ids.user_long_name.clone(),
                    now: t,
                };
                match self.store.token_update(&id, &req.enrollment.device, rec).await? {
                    None => Err(ServiceError::Rejected(format!("TokenUpdate for unknown enrollment {id} (Authenticate first)"))),
                    Some(pending) => {
                        tracing::info!(enrollment = %id, pending, "TokenUpdate");
                        if pending {
                            self.wake(vec![id]);
                        }
                        Ok(CheckinReply::Empty)
                    }
                }
            }
            CheckinMessage::CheckOut => {
                if !self.store.checkout(&id, t).await? {
                    return Err(ServiceError::Rejected(format!("CheckOut for unknown enrollment {id}")));
                }
                tracing::info!(enrollment = %id, "CheckOut");
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::UserAuthenticate { digest_response } => {
                // We do not manage network users: decline on the first message (410),
                // as the protocol allows; a second message (with a digest) is acknowledged.
                self.require_known(&req.enrollment.device).await?;
                Ok(if digest_response.is_none() { CheckinReply::Gone } else { CheckinReply::Empty })
            }
            CheckinMessage::SetBootstrapToken { token } => {
                let escrowed = token.is_some();
                if !self.store.set_bootstrap_token(&id, token, t).await? {
                    return Err(ServiceError::Rejected(format!("SetBootstrapToken for unknown enrollment {id}")));
                }
                tracing::info!(enrollment = %id, escrowed, "SetBootstrapToken");
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::GetBootstrapToken => {
                let e = self.require_known(&id).await?;
                self.mark_seen(&id);
                let token = match e.bootstrap_token {
                    Some(t) => base64::engine::general_purpose::STANDARD
                        .decode(t)
                        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?,
                    None => Vec::new(),
                };
                let mut d = plist::Dictionary::new();
                d.insert("BootstrapToken".into(), plist::Value::Data(token));
                Ok(CheckinReply::Plist(crate::protocol::to_xml(&d)))
            }
            CheckinMessage::GetToken { service_type } => {
                self.require_known(&id).await?;
                Ok(CheckinReply::Unsupported(format!("GetToken service {service_type:?} is not offered by this server")))
            }
            CheckinMessage::DeclarativeManagement { endpoint, .. } => {
                self.require_known(&id).await?;
                self.mark_seen(&id);
                declarative(&endpoint)
            }
            CheckinMessage::ReturnToService => {
                self.require_known(&id).await?;
                let mut inner = plist::Dictionary::new();
                inner.insert("Enabled".into(), plist::Value::Boolean(false));
                let mut d = plist::Dictionary::new();
                d.insert("ReturnToService".into(), plist::Value::Dictionary(inner));
                Ok(CheckinReply::Plist(crate::protocol::to_xml(&d)))
            }
        }
    }

    pub(crate) async fn require_known(&self, id: &str) -> Result<Enrollment, ServiceError> {
        match self.store.enrollment(id).await? {
            Some(e) if e.checked_out_at.is_none() => Ok(e),
            Some(_) => Err(ServiceError::Rejected(format!("enrollment {id} has checked out"))),
            None => Err(ServiceError::Rejected(format!("unknown enrollment {id}"))),
        }
    }

    pub(crate) fn wake(&self, ids: Vec<String>) {
        self.waker.wake(ids)
    }
}

/// Declarative management with no declarations: a valid, empty answer.
fn declarative(endpoint: &str) -> Result<CheckinReply, ServiceError> {
    const TOKEN: &str = "mdmd-empty-0";
    let body = match endpoint {
        "tokens" => serde_json::json!({"SyncTokens": {"DeclarationsToken": TOKEN, "Timestamp": "2026-01-01T00:00:00Z"}}),
        "declaration-items" => serde_json::json!({
            "Declarations": {"Activations": [], "Assets": [], "Configurations": [], "Management": []},
            "DeclarationsToken": TOKEN
        }),
        "status" => return Ok(CheckinReply::Empty),
        other if other.starts_with("declaration/") => {
            return Ok(CheckinReply::Unsupported(format!("no declaration {other:?}")));
        }
        other => return Ok(CheckinReply::Unsupported(format!("unknown declarative endpoint {other:?}"))),
    };
    Ok(CheckinReply::Json(body.to_string().into_bytes()))
}
