//! The console's Automated Device Enrollment page: server tokens (expiry,
//! last error), devices waiting in Setup Assistant (with a Release button),
//! and the devices ABM assigned to this server. Role-checked like every
//! page, through the API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::pages::{back_to, csrf, layout, s_of, text, FlashQuery};
use super::{access, access_post, seg, Access, Console};

type Shared = Arc<Console>;

pub async fn page(State(c): State<Shared>, h: HeaderMap, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, "/ui/ade");
    let flash = fq.flash();
    let (tokens, waiting, devices) = tokio::join!(
        c.get(&s, "/v1/ade/tokens"),
        c.get(&s, "/v1/ade/waiting"),
        c.get(&s, "/v1/ade/devices?limit=200")
    );
    let body = html! {
        p { "Automated Device Enrollment with Apple Business Manager: docs/ade.md. Tokens and profiles are set with "
            code { "mdmd ade" } " or the API." }
        h2 { "Server tokens" }
        @if !tokens.ok() { p.bad { (tokens.error()) } }
        @match tokens.body["tokens"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Name" } th { "ABM server" } th { "Expires" } th { "Last sync" } th { "Last error" } } }
                    tbody { @for t in l { tr {
                        td { (s_of(t, "name")) }
                        td { (text(&t["server_name"])) }
                        td class=[if t["expired"] == true { Some("bad") } else if t["expires_soon"] == true { Some("warn") } else { None }] {
                            (text(&t["expires_at"]))
                            @if t["expired"] == true { " (expired)" } @else if t["expires_soon"] == true { " (renew soon)" }
                        }
                        td { (text(&t["synced_at"])) }
                        td.bad { (text(&t["last_error"])) }
                    } } } }
            }
            _ => { p { "No server token yet: " code { "mdmd ade public-key" } ", then " code { "mdmd ade upload-token" } "." } }
        }
        h2 { "In Setup Assistant" }
        @if !waiting.ok() { p.bad { (waiting.error()) } }
        @match waiting.body["devices"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Device" } th { "State" } th { "Waiting (s)" } th { "Reason" } th { "Warning" } th { "" } } }
                    tbody { @for w in l { tr {
                        td { a href=(format!("/ui/devices/{}", seg(s_of(w, "enrollment")))) { (s_of(w, "enrollment")) } }
                        td { (s_of(w, "state")) }
                        td { (text(&w["waiting_seconds"])) }
                        td { (text(&w["reason"])) }
                        td.warn { (text(&w["warning"])) }
                        td { @if s_of(w, "state") == "waiting" {
                            form method="post" action=(format!("/ui/ade/waiting/{}/release", seg(s_of(w, "enrollment")))) {
                                (csrf(&s))
                                button type="submit" { "Release" }
                            }
                        } }
                    } } } }
            }
            _ => { p { "No device is waiting." } }
        }
        h2 { "Devices assigned in ABM" }
        @if !devices.ok() { p.bad { (devices.error()) } }
        @match devices.body["devices"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Serial" } th { "Model" } th { "Token" } th { "ABM" } th { "Profile" } th { "Enrolled" } } }
                    tbody { @for d in l { tr {
                        td { (s_of(d, "serial")) }
                        td { (text(&d["model"])) }
                        td { (text(&d["server"])) }
                        td { (text(&d["op"])) }
                        td { (text(&d["profile_status"])) " " (text(&d["profile"])) }
                        td { @if d["enrolled"] == true {
                            a href=(format!("/ui/devices/{}", seg(s_of(&d["enrollment"], "id")))) { "yes" }
                        } @else { "no" } }
                    } } } }
            }
            _ => { p { "No devices synced yet." } }
        }
    };
    layout(&s, "ADE", flash.as_ref(), body)
}

#[derive(Deserialize)]
pub struct ReleaseForm {
    csrf: Option<String>,
}

pub async fn release(State(c): State<Shared>, h: HeaderMap, Path(id): Path<String>, axum::Form(f): axum::Form<ReleaseForm>) -> Response {
    let s = posted!(c, h, f.csrf.as_deref());
    let r = c
        .post_json(&s, &format!("/v1/ade/waiting/{}/release", seg(&id)), &serde_json::json!({}))
        .await;
    back_to(
        "/ui/ade",
        if r.ok() {
            Ok(format!("DeviceConfigured queued for {id}"))
        } else {
            Err(r.error())
        },
    )
}
