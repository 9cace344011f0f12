//! The console's enrollment page (the profile, invitations with their QR code) and issued
//! certificates (list, revoke).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{access, access_post, seg, urlencoding, Access, Console, Session};

type Shared = Arc<Console>;

use super::pages::*;

// ---- Enrollment

pub async fn enrollment(State(c): State<Shared>, h: HeaderMap) -> Response {
    let s = signed_in!(c, h, "/ui/enrollment");
    enrollment_page(&c, &s, None, None).await
}

async fn enrollment_page(c: &Console, s: &Session, invitation: Option<&Value>, flash: Option<Flash>) -> Response {
    let (ca, push) = tokio::join!(c.get(s, "/v1/ca"), c.get(s, "/v1/push-cert"));
    let can_invite = crate::api::permissions::allowed(s.role, &Method::POST, "/v1/enrollments/invitations");
    let users: Vec<&str> = c.app.enroll_users.iter().map(|(u, _)| u.as_str()).collect();
    let p = &push.body;
    let body = html! {
        @if let Some(inv) = invitation {
            section.invitation aria-label="Invitation" {
                h2 { "Invitation" }
                p { "Scan with the device's camera, or open the link on the device. Single use; expires " (s_of(inv, "expires_at")) "." }
                img.qr alt="QR code of the invitation link" width="256" height="256"
                    src=(format!("data:image/png;base64,{}", s_of(inv, "qr_png_base64")));
                p { a id="invitation-url" href=(s_of(inv, "url")) { (s_of(inv, "url")) } }
            }
        }
        @if can_invite {
            form method="post" action="/ui/enrollment/invitations" {
                (csrf(s))
                label for="days" { "Valid for (days)" }
                input id="days" name="days" type="number" min="1" max="90" value="7";
                label for="invite-user" { "For user (optional: the enrollment records them)" }
                input id="invite-user" name="user" autocomplete="off";
                button type="submit" { "Create an invitation" }
            }
        }
        h2 { "Enrollment profile" }
        p { "Devices can also enroll at " code { (s_of(&ca.body, "public_url")) "/mdm/enroll" } " with an enrollment user's name and password." }
        h3 { "Who may enroll" }
        @if let Some(l) = c.app.directory.ldap.as_ref() {
            p { "Directory users (LDAP " code { (l.config().url) } ")"
                @if let Some(g) = &l.config().required_group { " in " code { (g) } } "." }
        }
        @if c.app.directory.oidc.is_some() {
            p { "People who sign in at " (c.app.directory.idp_name)
                @if let Some(g) = &c.app.directory.oidc_required_group { " and are in " code { (g) } } "." }
        }
        @if !c.app.directory.account_driven.is_empty() {
            p { "Account-driven enrollment: " (c.app.directory.account_driven.join(", ")) " (Settings → Sign in to Work or School Account)." }
        }
        @if users.is_empty() {
            @if !c.app.directory.enabled() { p { "No enrollment users configured (" code { "--enroll-user" } ", " code { "--ldap-url" } " or " code { "--oidc-issuer" } ")." } }
        }
        @else { p { "Enrollment users: " (users.join(", ")) } }
        h2 { "Push certificate" }
        @if p["configured"] == json!(true) {
            table.kv { tbody {
                tr { th { "Topic" } td { code { (s_of(p, "topic")) } } }
                tr { th { "Subject" } td { (text(&p["subject"])) } }
                tr { th { "Expires" } td class=(days_class(p["days_left"].as_i64())) { (text(&p["not_after"])) " (" (text(&p["days_left"])) " days)" } }
            } }
            h3 { "Renewing it" }
            ol {
                li { "In Apple's Push Certificates Portal, choose " strong { "Renew" } " on the certificate with this topic — not " em { "Create" } ": a new certificate has a new topic, and every enrolled device would have to re-enroll." }
                li { "Upload the CSR mdmd's operator gives you, download the renewed certificate." }
                li { "Set it: " code { "mdmd push-cert set renewed.pem --key push.key" } " (or PUT /v1/push-cert). mdmd refuses a certificate whose topic differs from the enrolled devices' unless told to strand them." }
            }
        } @else {
            p.bad { "No push certificate: devices cannot be woken, so commands wait until a device checks in by itself." }
            h3 { "Creating one" }
            ol {
                li { "Make the push key and the signed request with your MDM vendor certificate (no server needed): "
                     code { "mdmd push-cert request --vendor-cert vendor.pem --vendor-key vendor.key --out-dir push/" } "." }
                li { "At Apple's Push Certificates Portal (identity.apple.com/pushcert), sign in with the organisation's Apple Account, choose " strong { "Create a Certificate" } " and upload " code { "push/push-request.b64" } "." }
                li { "Download the certificate and set it: " code { "mdmd push-cert set MDM_Certificate.pem --key push/push-request.key" } " (or PUT /v1/push-cert)." }
                li { "Devices that enrolled under another topic would have to re-enroll: mdmd refuses such a certificate unless told to strand them (" code { "--force" } ")." }
            }
        }
    };
    layout(s, "Enrollment", flash.as_ref(), body)
}

#[derive(Deserialize)]
pub struct InviteForm {
    csrf: Option<String>,
    days: Option<i64>,
    user: Option<String>,
}

pub async fn invite(State(c): State<Shared>, h: HeaderMap, axum::Form(f): axum::Form<InviteForm>) -> Response {
    let s = posted!(c, h, f.csrf.as_deref());
    let days = f.days.unwrap_or(7).clamp(1, 90);
    let user = f.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let r = c
        .post_json(
            &s,
            "/v1/enrollments/invitations",
            &json!({"expires_in": days * 86_400, "user": user}),
        )
        .await;
    if r.ok() {
        tracing::info!(account = %s.name, "console invitation created");
        enrollment_page(&c, &s, Some(&r.body), None).await
    } else {
        enrollment_page(&c, &s, None, Some(Flash::from_reply(&r, ""))).await
    }
}

// ---- Certificates

#[derive(Deserialize, Default)]
pub struct CertQuery {
    q: Option<String>,
    after: Option<String>,
    done: Option<String>,
    error: Option<String>,
}

pub async fn certificates(State(c): State<Shared>, h: HeaderMap, Query(q): Query<CertQuery>) -> Response {
    let s = signed_in!(c, h, "/ui/certificates");
    let mut flash = FlashQuery {
        done: q.done.clone(),
        error: q.error.clone(),
    }
    .flash();
    let query = q.q.as_deref().map(str::trim).filter(|v| !v.is_empty());
    let mut next = None;
    let rows: Vec<Value> = match query {
        Some(v) => {
            let r = c.get(&s, &format!("/v1/certificates/{}", seg(v))).await;
            if r.ok() {
                vec![r.body]
            } else {
                flash = Some(Flash::error(format!("No certificate with serial {v:?}.")));
                vec![]
            }
        }
        None => {
            let mut url = "/v1/certificates?limit=50".to_owned();
            if let Some(a) = &q.after {
                url.push_str(&format!("&after={}", urlencoding(a)));
            }
            let r = c.get(&s, &url).await;
            next = r.body["next"].as_str().map(str::to_owned);
            r.body["certificates"].as_array().cloned().unwrap_or_default()
        }
    };
    let can_revoke = crate::api::permissions::allowed(s.role, &Method::POST, "/v1/certificates/x/revoke");
    let body = html! {
        form.search method="get" action="/ui/certificates" role="search" {
            label for="q" { "Serial" }
            input id="q" name="q" type="search" value=(query.unwrap_or(""));
            button type="submit" { "Find" }
        }
        table {
            thead { tr { th { "Serial" } th { "Subject" } th { "Device" } th { "Purpose" } th { "Expires" } th { "State" } @if can_revoke { th { "" } } } }
            tbody {
                @for cert in &rows {
                    tr {
                        td { code { (s_of(cert, "serial")) } }
                        td { (s_of(cert, "subject")) }
                        td { @if let Some(e) = cert["enrollment"].as_str() { a href=(format!("/ui/devices/{}", seg(e))) { code { (e) } } } @else { "—" } }
                        td { (s_of(cert, "purpose")) }
                        td { (text(&cert["not_after"])) }
                        td { @if cert["revoked"] == json!(true) { span.bad { "revoked" } } @else { "valid" } }
                        @if can_revoke {
                            td {
                                @if cert["revoked"] != json!(true) {
                                    form method="post" action=(format!("/ui/certificates/{}/revoke", seg(s_of(cert, "serial")))) {
                                        (csrf(&s))
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next { p { a rel="next" href=(format!("/ui/certificates?after={}", urlencoding(&n))) { "Next page →" } } }
    };
    layout(&s, "Certificates", flash.as_ref(), body)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn revoke(State(c): State<Shared>, h: HeaderMap, Path(serial): Path<String>, axum::Form(f): axum::Form<CsrfForm>) -> Response {
    let s = posted!(c, h, f.csrf.as_deref());
    let r = c
        .api(&s, Method::POST, &format!("/v1/certificates/{}/revoke", seg(&serial)), None)
        .await;
    if r.ok() {
        tracing::info!(account = %s.name, %serial, "console revoke");
    }
    back_to(
        "/ui/certificates",
        if r.ok() { Ok(format!("Revoked {serial}")) } else { Err(r.error()) },
    )
}
