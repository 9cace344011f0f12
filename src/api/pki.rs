//! Admin API for the CA: what is in use, issued certificates, revocation,
//! enrollment profiles and invitations, identity renewal.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiQuery;
use super::{schema, ApiError, ApiResult};
use crate::app::App;
use crate::clock::{now, rfc3339};
use crate::pki::ca::describe;
use crate::store::{IssuedCert, SecretKind};

fn cert_view(c: &IssuedCert) -> schema::IssuedCertView {
    schema::IssuedCertView {
        serial: c.serial.clone(),
        sha256: c.sha256.clone(),
        subject: c.subject.clone(),
        not_before: rfc3339(c.not_before),
        not_after: rfc3339(c.not_after),
        issued_at: rfc3339(c.issued_at),
        enrollment: c.enrollment.clone(),
        purpose: c.purpose.as_deref().unwrap_or("mdm").into(),
        udid: c.udid.clone(),
        vouched: c.vouched,
        renewed_from: c.renewed_from.clone(),
        revoked: c.revoked_at.is_some(),
        revoked_at: c.revoked_at.and_then(rfc3339),
    }
}

fn described(c: &openssl::x509::X509Ref) -> Result<schema::CertDescription, ApiError> {
    super::views::typed(describe(c), "describing a certificate")
}

pub async fn ca_show(State(app): State<Arc<App>>) -> ApiResult {
    Ok(Json(schema::CaShow {
        ca: described(&app.pki.ca.cert)?,
        tls: described(&super::health::served_tls(&app))?,
        signer: described(&app.pki.signer.cert)?,
        public_url: app.enroller.cfg.public_url.clone(),
        identity_days: app.enroller.cfg.identity_days as i64,
        renew_before_days: app.enroller.cfg.renew_before_days,
    })
    .into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertPage {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list_certs(State(app): State<Arc<App>>, ApiQuery(p): ApiQuery<CertPage>) -> ApiResult {
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let list = app.mdm.store.certs(p.after, limit).await?;
    let next = if list.len() == limit {
        list.last().map(|c| c.serial.clone())
    } else {
        None
    };
    Ok(Json(schema::CertList {
        certificates: list.iter().map(cert_view).collect(),
        next,
    })
    .into_response())
}

pub async fn get_cert(State(app): State<Arc<App>>, Path(serial): Path<String>) -> ApiResult {
    let c = app
        .mdm
        .store
        .cert_by_serial(&serial.to_uppercase())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no certificate with serial {serial}")))?;
    Ok(Json(cert_view(&c)).into_response())
}

pub async fn revoke(State(app): State<Arc<App>>, Path(serial): Path<String>) -> ApiResult {
    let serial = serial.to_uppercase();
    if !app.mdm.store.revoke_cert(&serial, now()).await? {
        return Err(ApiError::not_found(format!("no certificate with serial {serial}")));
    }
    tracing::info!(%serial, "certificate revoked");
    if let Some(w) = app.mdm.webhooks() {
        let enrollment = app
            .mdm
            .store
            .cert_by_serial(&serial)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.enrollment);
        let ev = w.own_event("mdmd.CertificateRevoked", json!({"serial": serial, "enrollment": enrollment}));
        w.emit(ev).await?;
    }
    Ok(Json(schema::CertRevoked { serial, revoked: true }).into_response())
}

pub async fn enrollment_profile(State(app): State<Arc<App>>) -> ApiResult {
    let der = app
        .enroller
        .signed_profile("admin-download", app.enroller.cfg.challenge_ttl.max(7 * 86_400), None)
        .await?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-apple-aspen-config")], der).into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct InviteBody {
    /// Seconds until the invitation expires (default 7 days).
    expires_in: Option<i64>,
    /// The person it is for: the enrollment records them (`$USERNAME` …).
    user: Option<String>,
    email: Option<String>,
    full_name: Option<String>,
}

/// A field of an invitation's user: at most 256 characters, no control characters.
fn user_field(what: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v.filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > 256 || v.chars().any(char::is_control) => Err(ApiError::bad_request(format!(
            "{what}: at most 256 characters, no control characters"
        ))),
        v => Ok(v),
    }
}

pub async fn invite(State(app): State<Arc<App>>, body: Option<Json<InviteBody>>) -> ApiResult {
    let b = body.map(|b| b.0).unwrap_or_default();
    let ttl = b.expires_in.unwrap_or(7 * 86_400).clamp(60, 90 * 86_400);
    let user = match user_field("user", b.user)? {
        Some(username) => Some(crate::store::EnrollUser {
            username,
            email: user_field("email", b.email)?,
            full_name: user_field("full_name", b.full_name)?,
            groups: Vec::new(),
            method: "invitation".into(),
            signed_in_at: crate::clock::now(),
            managed_apple_id: None,
            enrollment_mode: None,
        }),
        None if b.email.is_some() || b.full_name.is_some() => {
            return Err(ApiError::bad_request("email and full_name describe a user: give `user` too"))
        }
        None => None,
    };
    let for_user = user.as_ref().map(|u| u.username.clone());
    let (token, expires) = app
        .enroller
        .new_secret_with(
            SecretKind::Invitation,
            "invitation",
            ttl,
            crate::service::enroll::SecretFor::user(user),
        )
        .await?;
    let url = format!("{}/mdm/enroll?invite={token}", app.enroller.cfg.public_url);
    let (svg, png) = qr(&url).map_err(|e| ApiError::internal("drawing the invitation's QR code", e))?;
    Ok(Json(schema::Invitation {
        url,
        user: for_user,
        expires_at: rfc3339(expires),
        qr_svg: svg,
        qr_png_base64: base64::engine::general_purpose::STANDARD.encode(png),
    })
    .into_response())
}

/// The invitation URL as a QR code: SVG text and PNG bytes.
pub fn qr(url: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let code = qrcode::QrCode::new(url.as_bytes())?;
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(256, 256).build();
    let img = code.render::<image::Luma<u8>>().min_dimensions(256, 256).build();
    let mut png = Vec::new();
    image::DynamicImage::ImageLuma8(img).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok((svg, png))
}

pub async fn renew_now(State(app): State<Arc<App>>) -> ApiResult {
    let ids = app.enroller.renewal_sweep(&app.mdm).await?;
    Ok(Json(schema::RenewalRequested { renewal_requested: ids }).into_response())
}
