//! Devices talking to us: the check-in endpoint's messages (here), the
//! command loop (`connect`: Idle, Acknowledged, Error, NotNow), and what
//! devices report about themselves (`inventory`: facts kept as current
//! state, refreshed on a schedule, with compliance evaluated from them).
//!
//! Check-in messages: Authenticate, TokenUpdate, CheckOut and the rest.

pub mod connect;
pub mod inventory;

use crate::clock::now;
use crate::protocol::checkin::{CheckinMessage, CheckinRequest};
use crate::protocol::EnrollmentKind;
use crate::service::enroll::identity::Admission;
use crate::service::{Mdm, ServiceError};
use crate::store::{AuthOutcome, DeviceInfo, Enrollment, PushInfo, TokenUpdateRecord};

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
    /// 404: no such thing for this enrollment (a declaration it no longer has).
    NotFound(String),
}

/// The device identity a request was made with, already verified to chain
/// to our CA (see `pki::Identity`); `None` if it presented none.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// SHA-256 (hex) of the identity certificate.
    pub cert_hash: Option<String>,
    pub serial: Option<String>,
    pub not_after: Option<i64>,
}

impl Mdm {
    fn seal(&self, id: &str, field: &'static str, plain: &[u8]) -> Result<String, ServiceError> {
        self.secrets
            .seal(plain, &crate::pki::secrets::aad(id, field))
            .map_err(|e| ServiceError::Internal {
                what: "sealing a token",
                source: format!("the {field} token: {e}").into(),
            })
    }

    fn check_topic(&self, topic: Option<&str>) -> Result<String, ServiceError> {
        match topic {
            Some(t) if *t == *self.topic.get() => Ok(t.to_owned()),
            Some(t) => Err(ServiceError::Rejected(format!("topic {t:?} is not this server's push topic"))),
            None => Err(ServiceError::Rejected("missing Topic".into())),
        }
    }

    pub async fn checkin(&self, req: CheckinRequest, caller: &Caller) -> Result<CheckinReply, ServiceError> {
        self.checkin_raw(req, &[], caller).await
    }

    /// A check-in with its raw body, which goes out in the webhook event:
    /// TokenUpdate's event is stored with it; the others' before the device
    /// hears back (a device that gets no answer sends its message again).
    pub async fn checkin_raw(&self, req: CheckinRequest, raw: &[u8], caller: &Caller) -> Result<CheckinReply, ServiceError> {
        let events = match self.webhooks() {
            Some(w) => w.checkin_event(
                &format!("mdm.{}", req.message.name()),
                req.ids.udid.as_deref(),
                req.ids.enrollment_id.as_deref(),
                raw,
            ),
            None => Vec::new(),
        };
        let with_state = matches!(req.message, CheckinMessage::TokenUpdate { .. });
        let (now_events, later) = if with_state { (events, Vec::new()) } else { (Vec::new(), events) };
        let reply = self.checkin_inner(req, caller, now_events).await?;
        if let (Some(w), false) = (self.webhooks(), later.is_empty()) {
            w.emit(later).await?;
        }
        Ok(reply)
    }

    async fn checkin_inner(
        &self,
        req: CheckinRequest,
        caller: &Caller,
        events: Vec<crate::store::OutboxEvent>,
    ) -> Result<CheckinReply, ServiceError> {
        let id = req.enrollment.id.clone();
        let t = now();
        // The identity's record is read once: Authenticate's admission uses it again.
        // Every other message must come from the identity bound to the device channel.
        let (hash, cert) = if matches!(req.message, CheckinMessage::Authenticate(_)) {
            self.identity_record(caller).await?
        } else {
            (self.check_identity_and_binding(caller, &req.enrollment.device).await?.0, None)
        };
        match req.message {
            CheckinMessage::Authenticate(f) => {
                let topic = self.check_topic(req.topic.as_deref())?;
                let old = self.store.enrollment(&id).await?;
                if let Some(o) = &old {
                    if req.enrollment.kind == EnrollmentKind::User && o.cert_hash.as_deref() != Some(hash.as_str()) {
                        return Err(ServiceError::Forbidden(format!("{id}: certificate is not the device's identity")));
                    }
                }
                // An ADE identity is for one serial: the device says that one, and only one
                // enrollment has it (`service::ade::enroll`).
                let ade = cert
                    .as_ref()
                    .and_then(|c| c.ade.clone())
                    .filter(|_| req.enrollment.kind == EnrollmentKind::Device);
                if let Some(a) = &ade {
                    if f.serial_number.as_deref().is_some_and(|s| s != a.serial) {
                        return Err(ServiceError::Forbidden(format!(
                            "{id}: this identity was issued for serial {}",
                            a.serial
                        )));
                    }
                    if let Some(other) = crate::service::ade::enroll::serial_enrolled_elsewhere(self.store.as_ref(), &a.serial, &id).await?
                    {
                        return Err(ServiceError::Forbidden(format!(
                            "{id}: serial {} is enrolled as another device ({other})",
                            a.serial
                        )));
                    }
                }
                let info = DeviceInfo {
                    serial_number: ade.as_ref().map(|a| a.serial.clone()).or(f.serial_number),
                    product_name: f.product_name,
                    os_version: f.os_version,
                    build_version: f.build_version,
                    imei: f.imei,
                    meid: f.meid,
                    device_name: f.device_name,
                    model: f.model,
                    model_name: f.model_name,
                    ..DeviceInfo::default()
                };
                let info = match &old {
                    Some(o) => {
                        let mut merged = o.info.clone();
                        merged.merge(info);
                        merged
                    }
                    None => info,
                };
                // Who signed in for this identity (a renewal's inherits it). A user channel
                // (a macOS user) shares the device's identity but is not who enrolled it.
                let signed_in = cert
                    .as_ref()
                    .and_then(|c| c.user.clone())
                    .filter(|_| req.enrollment.kind == EnrollmentKind::Device);
                let admission = self.admit(&id, &req.ids, old.as_ref(), &hash, cert).await?;
                // The current identity again (re-sent or replayed) or its renewal keeps the
                // channel, escrow and queue; a (re-)enrollment waits for TokenUpdate.
                let same = admission == Admission::Same;
                let keep = same || admission == Admission::Renewal;
                let rec = Enrollment {
                    id: id.clone(),
                    device: req.enrollment.device.clone(),
                    kind: req.enrollment.kind,
                    udid: req.ids.udid.clone(),
                    user_enrollment_id: if req.ids.udid.is_none() {
                        req.ids.enrollment_id.clone()
                    } else {
                        None
                    },
                    user_short_name: req.ids.user_short_name.clone(),
                    user_long_name: req.ids.user_long_name.clone(),
                    topic,
                    info,
                    push: if keep { old.as_ref().and_then(|o| o.push.clone()) } else { None },
                    unlock_token: if keep {
                        old.as_ref().and_then(|o| o.unlock_token.clone())
                    } else {
                        None
                    },
                    bootstrap_token: old.as_ref().and_then(|o| o.bootstrap_token.clone()),
                    attributes: old.as_ref().map(|o| o.attributes.clone()).unwrap_or_default(),
                    active: keep,
                    awaiting_configuration: same && old.as_ref().is_some_and(|o| o.awaiting_configuration),
                    cert_hash: Some(hash.clone()),
                    identity_not_after: caller.not_after,
                    renewal_requested_at: if same {
                        old.as_ref().and_then(|o| o.renewal_requested_at)
                    } else {
                        None
                    },
                    enrolled_at: t,
                    authenticated_at: t,
                    token_updated_at: if keep {
                        old.as_ref().and_then(|o| o.token_updated_at)
                    } else {
                        None
                    },
                    checked_out_at: None,
                    last_checkin_at: t,
                    last_seen_at: t,
                    refused_reenroll_at: old.as_ref().and_then(|o| o.refused_reenroll_at),
                    refused_reenroll_count: old.as_ref().map_or(0, |o| o.refused_reenroll_count),
                    // The same identity or its renewal keeps who enrolled it; a (re-)enrollment
                    // records who signed in for its identity, or nobody.
                    user: if keep {
                        signed_in.or_else(|| old.as_ref().and_then(|o| o.user.clone()))
                    } else {
                        signed_in
                    },
                    // The same for how it enrolled (ADE).
                    ade: if keep {
                        ade.or_else(|| old.as_ref().and_then(|o| o.ade.clone()))
                    } else {
                        ade
                    },
                };
                if self.store.authenticate(rec, keep).await? == AuthOutcome::CertBoundElsewhere {
                    return Err(ServiceError::Forbidden(format!(
                        "certificate {hash} is bound to another enrollment"
                    )));
                }
                let renewal = admission == Admission::Renewal;
                tracing::info!(enrollment = %id, renewal, same_identity = same, "Authenticate");
                if renewal {
                    // Before the device hears back: it asks for its next command right after.
                    self.identity_changed(&id).await;
                }
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::TokenUpdate {
                token,
                push_magic,
                unlock_token,
                awaiting_configuration,
            } => {
                let topic = self.check_topic(req.topic.as_deref())?;
                let rec = TokenUpdateRecord {
                    events,
                    push: PushInfo::new(hex::encode(&token), push_magic, topic, t),
                    unlock_token: match unlock_token.filter(|_| req.enrollment.kind == EnrollmentKind::Device) {
                        Some(u) => Some(self.seal(&id, "unlock", &u)?),
                        None => None,
                    },
                    awaiting_configuration,
                    user_short_name: req.ids.user_short_name.clone(),
                    user_long_name: req.ids.user_long_name.clone(),
                    now: t,
                };
                // The first TokenUpdate of a device channel completes an enrollment: take its
                // inventory, and turn declarative management on.
                let before = if id == req.enrollment.device {
                    self.store.enrollment(&id).await?.filter(|e| e.token_updated_at.is_none())
                } else {
                    None
                };
                let first = self.inventory_interval > 0 && before.is_some();
                let mut rec = rec;
                if let (Some(b), Some(w)) = (&before, self.webhooks.as_ref()) {
                    // Stored with the TokenUpdate that completes the enrollment.
                    rec.events.extend(w.own_event(
                        "mdmd.Enrolled",
                        serde_json::json!({
                            "enrollment": id,
                            "udid": b.udid,
                            "enrollment_id": b.user_enrollment_id,
                            "serial": b.info.serial_number,
                            "ade": b.ade.as_ref().map(|a| serde_json::json!({"server": a.server, "supervised": a.supervised})),
                            "user": b.user.as_ref().map(|u| serde_json::json!({
                                "username": u.username,
                                "email": u.email,
                                "full_name": u.full_name,
                                "groups": u.groups,
                                "method": u.method,
                                "managed_apple_id": u.managed_apple_id,
                            })),
                        }),
                    ));
                }
                let token_hex = rec.push.token.clone();
                match self.store.token_update(&id, &req.enrollment.device, rec).await? {
                    None => Err(ServiceError::Rejected(format!(
                        "TokenUpdate for unknown enrollment {id} (Authenticate first)"
                    ))),
                    Some(pending) => {
                        tracing::info!(enrollment = %id, pending, "TokenUpdate");
                        self.waker.token_updated(&token_hex);
                        if awaiting_configuration && id == req.enrollment.device {
                            // In Setup Assistant until DeviceConfigured (`service::ade::setup`).
                            // Only an ADE enrollment is in Setup Assistant for us to release.
                            if let Some(e) = self.store.enrollment(&id).await?.filter(|e| e.ade.is_some()) {
                                crate::service::ade::setup::note_awaiting(self.store.as_ref(), &id, e.enrolled_at).await?;
                            }
                        }
                        if before.is_some() {
                            // Blueprints first: what the device should have is queued
                            // before its inventory and anything else.
                            self.nudges.enrolled(&id, std::time::Duration::from_secs(10)).await;
                        }
                        if let (Some(e), Some(ddm)) = (&before, self.ddm()) {
                            ddm.enrolled(&id, e.info.os_version.as_deref()).await;
                        }
                        if first {
                            // Queued (and pushed) now; answered at the device's first poll.
                            if let Err(e) = self.request_inventory(vec![id.clone()]).await {
                                tracing::warn!(enrollment = %id, error = %e, "could not queue the first inventory");
                            }
                        } else if pending {
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
                self.fact_changed(&id);
                self.observe_left(&id);
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::UserAuthenticate { digest_response } => {
                // We do not manage network users: decline on the first message (410),
                // as the protocol allows; a second message (with a digest) is acknowledged.
                self.require_known(&req.enrollment.device).await?;
                Ok(if digest_response.is_none() {
                    CheckinReply::Gone
                } else {
                    CheckinReply::Empty
                })
            }
            CheckinMessage::SetBootstrapToken { token } => {
                let escrowed = token.is_some();
                let sealed = match token {
                    Some(tok) => Some(self.seal(&id, "bootstrap", &tok)?),
                    None => None,
                };
                if !self.store.set_bootstrap_token(&id, sealed, t).await? {
                    return Err(ServiceError::Rejected(format!("SetBootstrapToken for unknown enrollment {id}")));
                }
                tracing::info!(enrollment = %id, escrowed, "SetBootstrapToken");
                Ok(CheckinReply::Empty)
            }
            CheckinMessage::GetBootstrapToken => {
                let e = self.require_known(&id).await?;
                self.mark_seen(&id);
                let token = match &e.bootstrap_token {
                    Some(t) => self
                        .secrets
                        .open(t, &crate::pki::secrets::aad(&id, "bootstrap"))
                        .map_err(|e| crate::store::StoreError::Corrupt(format!("bootstrap token: {e}")))?,
                    None => Vec::new(),
                };
                let mut d = plist::Dictionary::new();
                d.insert("BootstrapToken".into(), plist::Value::Data(token));
                Ok(CheckinReply::Plist(crate::protocol::to_xml(&d)))
            }
            CheckinMessage::GetToken { service_type } => {
                self.require_known(&id).await?;
                Ok(CheckinReply::Unsupported(format!(
                    "GetToken service {service_type:?} is not offered by this server"
                )))
            }
            CheckinMessage::DeclarativeManagement { endpoint, data } => {
                self.require_known(&id).await?;
                self.mark_seen(&id);
                let Some(ddm) = self.ddm() else {
                    return declarative(&endpoint);
                };
                match ddm.endpoint(&id, &endpoint, data.as_deref()).await {
                    Ok(Some(b)) if b.is_empty() => Ok(CheckinReply::Empty),
                    Ok(Some(b)) => Ok(CheckinReply::Json(b)),
                    Ok(None) => Ok(CheckinReply::NotFound(format!("no {endpoint} for this enrollment"))),
                    Err(crate::service::ddm::DdmError::Store(e)) => Err(e.into()),
                    Err(e) => Ok(CheckinReply::Unsupported(e.to_string())),
                }
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

    /// May this identity (`hash`) Authenticate as `id`? The rule is
    /// `identity::admission`; here the admin's approval is used up when it is
    /// needed, and a refusal noted (403, never 401: the enrolled device keeps
    /// working).
    /// `cert` is the record of `hash` (from `identity_record`).
    async fn admit(
        &self,
        id: &str,
        ids: &crate::protocol::Ids,
        old: Option<&Enrollment>,
        hash: &str,
        cert: Option<crate::store::IssuedCert>,
    ) -> Result<Admission, ServiceError> {
        let current = match old.and_then(|o| o.cert_hash.as_deref()).filter(|c| *c != hash) {
            Some(c) => self.store.cert_by_hash(c).await?,
            None => None,
        };
        let verdict = crate::service::enroll::identity::admission(
            cert.as_ref(),
            hash,
            id,
            ids.udid.as_deref(),
            old,
            current.as_ref(),
            self.strict_reenroll,
        )
        .map_err(|r| ServiceError::Forbidden(r.to_string()))?;
        if verdict != Admission::NeedsApproval {
            if verdict == Admission::Fresh && old.is_some_and(|o| o.active && o.checked_out_at.is_none()) {
                tracing::info!(enrollment = %id, "re-enrollment with a new identity");
            }
            return Ok(verdict);
        }
        use crate::store::{Consumed, SecretKind};
        let approval = self
            .store
            .consume_secret(SecretKind::ReenrollApproval, &crate::pki::sha256_hex(id), now())
            .await?;
        if let Consumed::Ok(_) = approval {
            tracing::info!(enrollment = %id, "re-enrollment approved by an admin");
            return Ok(Admission::Fresh);
        }
        self.store.note_refused_reenroll(id, now()).await?;
        tracing::warn!(enrollment = %id, "re-enrollment with another identity refused: the device is enrolled and active (approve with `mdmd devices approve-reenroll`)");
        Err(ServiceError::Forbidden(format!(
            "{id} is enrolled under another identity: re-enrollment needs the device's check-out, an attested enrollment or an admin's approval"
        )))
    }

    /// The request must carry an identity that our CA issued and has not
    /// revoked: its hash, and its record (None: not one we issued and recorded).
    async fn identity_record(&self, caller: &Caller) -> Result<(String, Option<crate::store::IssuedCert>), ServiceError> {
        let hash = presented(caller)?;
        let cert = self.store.cert_by_hash(&hash).await?;
        admit_identity(hash, cert)
    }

    /// `identity_record`, and the identity must be the one bound to the device
    /// channel at Authenticate: both from one store read, what every request
    /// after Authenticate checks first.
    pub(crate) async fn check_identity_and_binding(&self, caller: &Caller, device: &str) -> Result<(String, Enrollment), ServiceError> {
        let hash = presented(caller)?;
        let (cert, e) = self.store.identity_and_enrollment(&hash, device).await?;
        let (hash, _) = admit_identity(hash, cert)?;
        let e = bound(device, &hash, e)?;
        Ok((hash, e))
    }

    pub(crate) async fn require_known(&self, id: &str) -> Result<Enrollment, ServiceError> {
        active_or_rejected(id, self.store.enrollment(id).await?)
    }

    pub(crate) fn wake(&self, ids: Vec<String>) {
        self.waker.wake(ids)
    }
}

/// The hash of the identity the request carries, if it carries a live one.
fn presented(caller: &Caller) -> Result<String, ServiceError> {
    let Some(hash) = caller.cert_hash.clone() else {
        return Err(ServiceError::Forbidden(
            "no device identity: Mdm-Signature or TLS client certificate required".into(),
        ));
    };
    if caller.not_after.is_some_and(|na| na < now()) {
        return Err(ServiceError::Forbidden(format!("identity {hash} has expired")));
    }
    Ok(hash)
}

/// An identity we recorded must be unrevoked and issued as an MDM identity.
fn admit_identity(
    hash: String,
    cert: Option<crate::store::IssuedCert>,
) -> Result<(String, Option<crate::store::IssuedCert>), ServiceError> {
    {
        if let Some(c) = &cert {
            if c.revoked_at.is_some() {
                return Err(ServiceError::Forbidden(format!("identity serial {} is revoked", c.serial)));
            }
            if let Some(p) = c.purpose.as_deref().filter(|p| !crate::service::enroll::identity::is_mdm(Some(p))) {
                return Err(ServiceError::Forbidden(format!(
                    "certificate serial {} was issued for {p}, not as an MDM identity",
                    c.serial
                )));
            }
        }
    }
    Ok((hash, cert))
}

/// The device channel's enrollment, if `hash` is the identity bound to it at Authenticate.
fn bound(device: &str, hash: &str, e: Option<Enrollment>) -> Result<Enrollment, ServiceError> {
    match e {
        Some(e) if e.cert_hash.as_deref() == Some(hash) => Ok(e),
        Some(_) => Err(ServiceError::Forbidden(format!(
            "certificate {hash} does not belong to enrollment {device}"
        ))),
        None => Err(ServiceError::Rejected(format!("unknown enrollment {device}"))),
    }
}

/// Declarative management with no declarations: a valid, empty answer.
fn declarative(endpoint: &str) -> Result<CheckinReply, ServiceError> {
    const TOKEN: &str = "mdmd-empty-0";
    let body = match endpoint {
        "tokens" => {
            serde_json::json!({"SyncTokens": {"DeclarationsToken": TOKEN, "Timestamp": "2026-01-01T00:00:00Z"}})
        }
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

/// An enrollment that exists and has not checked out.
pub(crate) fn active_or_rejected(id: &str, e: Option<Enrollment>) -> Result<Enrollment, ServiceError> {
    match e {
        Some(e) if e.checked_out_at.is_none() => Ok(e),
        Some(_) => Err(ServiceError::Rejected(format!("enrollment {id} has checked out"))),
        None => Err(ServiceError::Rejected(format!("unknown enrollment {id}"))),
    }
}
