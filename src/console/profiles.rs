//! The console's profile pages: templates, uploading one, one template's state on every device
//! and installing or removing it.

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::{access, access_post, seg, urlencoding, Access, Console, Session};

type Shared = Arc<Console>;

use super::pages::*;

// ---- Profiles

pub async fn profiles(State(c): State<Shared>, h: HeaderMap, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, "/ui/profiles");
    profiles_page(&c, &s, fq.flash()).await
}

async fn profiles_page(c: &Console, s: &Session, flash: Option<Flash>) -> Response {
    let list = c.get(s, "/v1/profiles").await;
    let can_upload = crate::api::permissions::allowed(s.role, &Method::POST, "/v1/profiles");
    let body = html! {
        @if can_upload {
            form.upload method="post" action="/ui/profiles" enctype="multipart/form-data" {
                (csrf(s))
                label for="file" { "Upload a .mobileconfig template" }
                input id="file" name="file" type="file" accept=".mobileconfig,application/x-apple-aspen-config" required;
                button type="submit" { "Upload and validate" }
            }
        }
        @match list.body["profiles"].as_array() {
            Some(l) if !l.is_empty() => {
                table {
                    thead { tr { th { "Profile" } th { "Identifier" } th { "Payloads" } th { "Updated" } } }
                    tbody {
                        @for t in l {
                            tr {
                                td { a href=(format!("/ui/profiles/{}", seg(s_of(t, "identifier")))) { (s_of(t, "display_name")) } }
                                td { code { (s_of(t, "identifier")) } }
                                td { (value_view(&t["payload_types"])) }
                                td { (text(&t["updated_at"])) }
                            }
                        }
                    }
                }
            }
            _ => { p { "No profiles yet." } }
        }
    };
    layout(s, "Profiles", flash.as_ref(), body)
}

pub async fn upload_profile(State(c): State<Shared>, h: HeaderMap, mut form: Multipart) -> Response {
    let mut token = None;
    let mut file = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some("csrf") => token = field.text().await.ok(),
                Some("file") => file = field.bytes().await.ok(),
                _ => {}
            },
            Ok(None) => break,
            Err(e) => return plain(StatusCode::BAD_REQUEST, "Bad upload", &e.to_string()),
        }
    }
    let s = posted!(c, h, token.as_deref());
    let Some(bytes) = file.filter(|b| !b.is_empty()) else {
        return profiles_page(&c, &s, Some(Flash::error("Choose a .mobileconfig file."))).await;
    };
    let r = c
        .api(
            &s,
            Method::POST,
            "/v1/profiles",
            Some(("application/x-apple-aspen-config", bytes.to_vec())),
        )
        .await;
    if r.ok() {
        tracing::info!(account = %s.name, profile = s_of(&r.body, "identifier"), "console profile upload");
        let text = format!("Uploaded {} ({})", s_of(&r.body, "display_name"), s_of(&r.body, "identifier"));
        return Redirect::to(&format!(
            "/ui/profiles/{}?done={}",
            seg(s_of(&r.body, "identifier")),
            urlencoding(&text)
        ))
        .into_response();
    }
    let mut resp = profiles_page(&c, &s, Some(Flash::from_reply(&r, ""))).await;
    *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    resp
}

pub async fn profile(State(c): State<Shared>, h: HeaderMap, Path(id): Path<String>, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, &format!("/ui/profiles/{}", seg(&id)));
    let url = format!("/v1/profiles/{}", seg(&id));
    let (r, sets) = tokio::join!(c.get(&s, &url), c.get(&s, "/v1/sets"));
    if !r.ok() {
        return layout(&s, "Profile", Some(&Flash::error(r.error())), html! {});
    }
    let set_names: Vec<String> = sets.body["sets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["set"].as_str().map(str::to_owned))
        .collect();
    let t = &r.body;
    let can_act = crate::api::permissions::allowed(s.role, &Method::POST, &format!("/v1/profiles/{id}/install"));
    let body = html! {
        p.sub { code { (id) } }
        table.kv { tbody {
            tr { th { "Payloads" } td { (value_view(&t["payload_types"])) } }
            tr { th { "Variables" } td { (value_view(&t["variables"])) } }
            tr { th { "Warnings" } td { (value_view(&t["warnings"])) } }
            tr { th { "States" } td { (value_view(&t["states"])) } }
        } }
        @if can_act {
            form method="post" action=(format!("/ui/profiles/{}/actions", seg(&id))) {
                (csrf(&s))
                label for="targets" { "Devices (UDIDs, one per line)" }
                textarea id="targets" name="targets" rows="4" {}
                @if !set_names.is_empty() {
                    label for="set" { "and/or every device in a set" }
                    select id="set" name="set" {
                        option value="" { "no set" }
                        @for n in &set_names { option value=(n) { (n) } }
                    }
                }
                button name="action" value="install" type="submit" { "Install" }
                button name="action" value="remove" type="submit" { "Remove" }
            }
        }
        h2 { "Where it is" }
        @match t["devices"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Device" } th { "State" } th { "Updated" } } }
                    tbody { @for d in l { tr {
                        td { a href=(format!("/ui/devices/{}", seg(s_of(d, "enrollment")))) { code { (s_of(d, "enrollment")) } } }
                        td { (text(&d["state"])) }
                        td { (text(&d["updated_at"])) }
                    } } } }
            }
            _ => { p { "Not installed anywhere." } }
        }
        details { summary { "Template" } pre { (s_of(t, "template")) } }
    };
    layout(&s, s_of(t, "display_name"), fq.flash().as_ref(), body)
}

#[derive(Deserialize)]
pub struct ProfileActionForm {
    csrf: Option<String>,
    action: String,
    #[serde(default)]
    targets: String,
    set: Option<String>,
}

pub async fn profile_action(
    State(c): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ProfileActionForm>,
) -> Response {
    let s = posted!(c, h, f.csrf.as_deref());
    let page = format!("/ui/profiles/{}", seg(&id));
    let mut targets: Vec<String> = f
        .targets
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(set) = f.set.as_deref().filter(|v| !v.is_empty()) {
        let r = c.get(&s, &format!("/v1/sets/{}", seg(set))).await;
        if !r.ok() {
            return back_to(&page, Err(r.error()));
        }
        for e in r.body["enrollments"].as_array().into_iter().flatten() {
            if let Some(e) = e.as_str().or_else(|| e["enrollment"].as_str()) {
                if !targets.iter().any(|t| t == e) {
                    targets.push(e.to_owned());
                }
            }
        }
    }
    if targets.is_empty() {
        return back_to(&page, Err("Name at least one device, or a set with devices.".into()));
    }
    let action = if f.action == "remove" { "remove" } else { "install" };
    let r = c
        .post_json(&s, &format!("/v1/profiles/{}/{action}", seg(&id)), &json!({"targets": targets}))
        .await;
    let done = format!("{action}: queued for {} device(s)", targets.len());
    back_to(&page, if r.ok() { Ok(done) } else { Err(r.error()) })
}
