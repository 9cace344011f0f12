//! `PUT /mdm/checkin`, `/mdm/connect`, `/mdm`: check-ins and command reports,
//! told apart by `MessageType`. Never answers 401 (a device may unenroll).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::listener::PeerCert;
use super::{App, Stats};
use crate::pki::Identity;
use crate::protocol::{parse_request, ProtocolError, Request};
use crate::service::checkin::Caller;
use crate::service::{CheckinReply, ServiceError};

pub fn text(status: StatusCode, msg: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

fn protocol_error(app: &App, e: ProtocolError) -> Response {
    Stats::inc(&app.stats.rejected);
    tracing::warn!(error = %e, "bad device request");
    text(StatusCode::BAD_REQUEST, format!("bad request: {e}\n"))
}

/// 500 for our own failure: the cause is logged with a request id, which
/// is all the answer says (in the body and `X-Request-Id`).
pub fn internal_error(what: &str, e: &(dyn std::error::Error + 'static)) -> Response {
    let id = crate::logfmt::internal(what, e);
    let mut r = text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error (request id {id})\n"));
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        r.headers_mut().insert(crate::logfmt::REQUEST_ID, v);
    }
    r
}

/// A device request's failure: 400/403 for what the device sent, 503 to
/// try again, 500 (with a request id) for ours.
pub fn service_error(app: &App, e: ServiceError) -> Response {
    Stats::inc(&app.stats.rejected);
    match e {
        ServiceError::Rejected(m) => {
            tracing::warn!(reason = %m, "device request rejected");
            text(StatusCode::BAD_REQUEST, format!("rejected: {m}\n"))
        }
        ServiceError::Forbidden(m) => {
            tracing::warn!(reason = %m, "device request refused");
            text(StatusCode::FORBIDDEN, format!("forbidden: {m}\n"))
        }
        ServiceError::Store(e) => {
            tracing::error!(error = %crate::logfmt::chain(&e), "storage failure");
            text(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n".into())
        }
        ServiceError::Busy(m) => {
            tracing::warn!(reason = %m, "device request deferred");
            text(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n".into())
        }
        ServiceError::Internal { what, source } => internal_error(what, source.as_ref()),
    }
}

/// Establish the device identity: `Mdm-Signature` over the raw body, else the
/// TLS client certificate, else (plain HTTP behind a proxy) RFC 9440 `Client-Cert`.
/// A signature or certificate that fails to verify is a 400/403, never 401.
pub(crate) fn identify(app: &App, headers: &HeaderMap, peer: &PeerCert, body: &[u8]) -> Result<Caller, Response> {
    let ident = if let Some(sig) = headers.get("Mdm-Signature") {
        let sig = sig
            .to_str()
            .map_err(|_| text(StatusCode::BAD_REQUEST, "Mdm-Signature is not ASCII\n".into()))?;
        Identity::from_signature(&app.pki, sig, body).map_err(|e| {
            Stats::inc(&app.stats.rejected);
            tracing::warn!(error = %e, "Mdm-Signature rejected");
            // A valid signature by a certificate we do not accept is a 403; a broken one a 400.
            let status = match e {
                crate::pki::PkiError::BadCertificate(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            text(status, format!("Mdm-Signature rejected: {e}\n"))
        })?
    } else if let Some(cert) = &peer.0 {
        Identity::from_cert(&app.pki, (**cert).clone()).map_err(|e| {
            Stats::inc(&app.stats.rejected);
            tracing::warn!(error = %e, "client certificate rejected");
            text(StatusCode::FORBIDDEN, format!("client certificate rejected: {e}\n"))
        })?
    } else if let (true, Some(h)) = (app.plain_http, headers.get("Client-Cert")) {
        let h = h.to_str().unwrap_or("");
        Identity::from_client_cert_header(&app.pki, h).map_err(|e| {
            Stats::inc(&app.stats.rejected);
            text(StatusCode::FORBIDDEN, format!("Client-Cert rejected: {e}\n"))
        })?
    } else {
        return Ok(Caller::default());
    };
    Ok(Caller {
        cert_hash: Some(ident.hash),
        serial: Some(ident.serial),
        not_after: Some(ident.not_after),
    })
}

pub async fn put(State(app): State<Arc<App>>, Extension(peer): Extension<PeerCert>, headers: HeaderMap, body: Bytes) -> Response {
    // Parse first (cheap), then verify the identity over the same raw bytes.
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return protocol_error(&app, e),
    };
    let caller = match identify(&app, &headers, &peer, &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let enrollment = match &request {
        Request::Checkin(r) => r.enrollment.id.clone(),
        Request::Report(r) => r.enrollment.id.clone(),
    };
    let mut resp = handle(&app, request, &caller, &body).await;
    resp.extensions_mut().insert(super::EnrollmentTag(enrollment));
    resp
}

async fn handle(app: &App, request: Request, caller: &Caller, body: &[u8]) -> Response {
    match request {
        Request::Checkin(req) => {
            Stats::inc(&app.stats.checkins);
            crate::metrics::get().checkin(req.message.name());
            match app.mdm.checkin_raw(req, body, caller).await {
                Ok(CheckinReply::Empty) => StatusCode::OK.into_response(),
                Ok(CheckinReply::Plist(b)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/xml")], b).into_response(),
                Ok(CheckinReply::Json(b)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], b).into_response(),
                Ok(CheckinReply::Gone) => StatusCode::GONE.into_response(),
                Ok(CheckinReply::Unsupported(m)) => text(StatusCode::BAD_REQUEST, format!("not supported: {m}\n")),
                Ok(CheckinReply::NotFound(m)) => text(StatusCode::NOT_FOUND, format!("{m}\n")),
                Err(e) => service_error(app, e),
            }
        }
        Request::Report(report) => {
            Stats::inc(&app.stats.connects);
            crate::metrics::get().command_result(report.status.as_str());
            match app.mdm.connect(report, body, caller).await {
                Ok(Some(cmd)) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/xml")], cmd).into_response(),
                Ok(None) => StatusCode::OK.into_response(),
                Err(e) => service_error(app, e),
            }
        }
    }
}

/// A declarative fetch's caller: the device identity (hash) it presented,
/// and the DDM service; or the answer to give.
fn ddm_caller<'a>(app: &'a App, headers: &HeaderMap, peer: &PeerCert) -> Result<(String, &'a Arc<crate::service::ddm::Ddm>), Response> {
    let caller = identify(app, headers, peer, b"")?;
    let Some(hash) = caller.cert_hash else {
        return Err(text(StatusCode::FORBIDDEN, "a device identity is required\n".into()));
    };
    let Some(ddm) = app.mdm.ddm() else {
        return Err(text(StatusCode::NOT_FOUND, "declarative management is off\n".into()));
    };
    Ok((hash, ddm))
}

/// The enrollment a declarative fetch is for, or the answer to give.
fn ddm_allowed(app: &App, r: Result<String, crate::service::ddm::DdmError>) -> Result<String, Response> {
    match r {
        Ok(e) => Ok(e),
        Err(crate::service::ddm::DdmError::Store(e)) => Err(service_error(app, e.into())),
        Err(crate::service::ddm::DdmError::Internal { what, source }) => Err(service_error(app, ServiceError::Internal { what, source })),
        Err(e) => Err(text(StatusCode::FORBIDDEN, format!("{e}\n"))),
    }
}

/// `GET /mdm/ddm/profiles/{template}`: the profile a declarative legacy
/// configuration points at, as this device gets it (variables filled,
/// signed, encrypted to it). The device proves who it is with its identity
/// (TLS client certificate, or `Client-Cert` behind a proxy); only a device
/// whose declarations point at the template gets it.
pub async fn ddm_profile(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    axum::extract::Path(template): axum::extract::Path<String>,
) -> Response {
    let (hash, ddm) = match ddm_caller(&app, &headers, &peer) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let enrollment = match ddm_allowed(&app, ddm.profile_fetch_allowed(&hash, &template).await) {
        Ok(e) => e,
        Err(r) => return r,
    };
    match app.commander.profile_for_device(&template, &enrollment).await {
        Ok(der) => {
            let mut r = ([(header::CONTENT_TYPE, "application/x-apple-aspen-config")], der).into_response();
            r.extensions_mut().insert(super::EnrollmentTag(enrollment));
            r
        }
        Err(crate::service::commands::CommandError::NotFound(m)) => text(StatusCode::NOT_FOUND, format!("{m}\n")),
        Err(crate::service::commands::CommandError::Service(e)) => service_error(&app, e),
        // The template cannot be made for this device (a variable without a value…): not the device's fault.
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `GET /mdm/ddm/assets/{identifier}`: a `com.apple.asset.credential.scep`
/// asset's SCEP settings for this device: mdmd's SCEP URL and a single-use
/// challenge bound to the device (identity as for profiles above).
pub async fn ddm_asset(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<PeerCert>,
    headers: HeaderMap,
    axum::extract::Path(asset): axum::extract::Path<String>,
) -> Response {
    let (hash, ddm) = match ddm_caller(&app, &headers, &peer) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let enrollment = match ddm_allowed(&app, ddm.scep_asset_allowed(&hash, &asset).await) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let purpose = format!("ddm-asset:{asset}");
    let challenge = match app
        .enroller
        .new_secret_for(crate::store::SecretKind::Challenge, &purpose, 3600, Some(enrollment.clone()), false)
        .await
    {
        Ok((c, _)) => c,
        Err(e) => return service_error(&app, e),
    };
    let org = &app.enroller.cfg.organization;
    let body = serde_json::json!({
        "URL": format!("{}/scep", app.enroller.cfg.public_url.trim_end_matches('/')),
        "Challenge": challenge,
        // Within the SCEP subject policy (`pki::scep::policy`: 64 characters an attribute).
        "Subject": [[["O", org.chars().take(crate::pki::scep::policy::MAX_ATTR_CHARS).collect::<String>()]], [["CN", format!("{asset} {enrollment}").chars().take(crate::pki::scep::policy::MAX_ATTR_CHARS).collect::<String>()]]],
        "Keysize": 2048,
        "KeyType": "RSA",
        "KeyUsage": 5,
    });
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    r.extensions_mut().insert(super::EnrollmentTag(enrollment));
    r
}
