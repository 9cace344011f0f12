//! The console's groups and blueprints pages: lists, a group's members, a
//! blueprint's plan and its state on every device. Read-only (groups and
//! blueprints are written with the CLI or the API); role-checked like every
//! page, through the API.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::pages::{layout, s_of, text, value_view};
use super::{access, seg, Access, Console};

type Shared = Arc<Console>;

pub fn state_class(s: &str) -> &'static str {
    match s {
        "converged" => "good",
        "failed" => "bad",
        "pending" => "warn",
        _ => "",
    }
}

/// `kind item; …` for pending or failed items.
pub fn items_text(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|i| format!("{} {}", s_of(i, "kind"), s_of(i, "item")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn error(r: &super::ApiReply) -> Markup {
    html! { p.bad { (r.error()) } }
}

pub async fn groups(State(c): State<Shared>, h: HeaderMap) -> Response {
    let s = signed_in!(c, h, "/ui/groups");
    let r = c.get(&s, "/v1/groups").await;
    let body = html! {
        p { "Groups are written with " code { "mdmd groups set" } " or " code { "PUT /v1/groups/{name}" } "; rules are explained in docs/groups.md." }
        @if !r.ok() { (error(&r)) }
        @match r.body["groups"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Group" } th { "Kind" } th { "Definition" } th { "Updated" } } }
                    tbody { @for g in l { tr {
                        td { a href=(format!("/ui/groups/{}", seg(s_of(g, "name")))) { (s_of(g, "name")) } }
                        td { @if g["rule"].is_string() { "dynamic" } @else { "static" } }
                        td { @if let Some(r) = g["rule"].as_str() { code { (r) } } @else { (g["members"].as_array().map_or(0, Vec::len)) " members" } }
                        td { (text(&g["updated_at"])) }
                    } } } }
            }
            _ => { p { "No groups yet." } }
        }
    };
    layout(&s, "Groups", None, body)
}

pub async fn group(State(c): State<Shared>, h: HeaderMap, Path(name): Path<String>) -> Response {
    let s = signed_in!(c, h, &format!("/ui/groups/{}", seg(&name)));
    let r = c.get(&s, &format!("/v1/groups/{}?limit=500", seg(&name))).await;
    let g = &r.body;
    let body = html! {
        @if !r.ok() { (error(&r)) } @else {
            table { tbody {
                tr { th { "Kind" } td { (s_of(g, "kind")) } }
                @if let Some(rule) = g["rule"].as_str() { tr { th { "Rule" } td { code { (rule) } } } }
                @else { tr { th { "Listed members" } td { (value_view(&g["members"])) } } }
                tr { th { "Blueprints" } td {
                    @for b in g["blueprints"].as_array().into_iter().flatten() {
                        a href=(format!("/ui/blueprints/{}", seg(b.as_str().unwrap_or("")))) { (text(b)) } " "
                    }
                } }
            } }
            h2 { "Current members" }
            @match g["current_members"].as_array() {
                Some(m) if !m.is_empty() => {
                    ul { @for id in m { li { a href=(format!("/ui/devices/{}", seg(id.as_str().unwrap_or("")))) { code { (text(id)) } } } } }
                    @if g["truncated"] == Value::Bool(true) { p { "(the first 500)" } }
                }
                _ => { p { "No device is in this group." } }
            }
        }
    };
    layout(&s, &format!("Group {name}"), None, body)
}

pub async fn blueprints(State(c): State<Shared>, h: HeaderMap) -> Response {
    let s = signed_in!(c, h, "/ui/blueprints");
    let r = c.get(&s, "/v1/blueprints").await;
    let n = |b: &Value, k: &str| b[k].as_array().map_or(0, Vec::len);
    let body = html! {
        p { "Blueprints are written with " code { "mdmd blueprints apply FILE" } " (plan first with " code { "mdmd blueprints plan FILE" } ")." }
        @if !r.ok() { (error(&r)) }
        @match r.body["blueprints"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Blueprint" } th { "Groups" } th { "Profiles" } th { "Apps" } th { "Sets" } th { "Commands" } } }
                    tbody { @for b in l { tr {
                        td { a href=(format!("/ui/blueprints/{}", seg(s_of(b, "name")))) { (s_of(b, "name")) } }
                        td { (b["groups"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
                        td { (n(b, "profiles")) } td { (n(b, "apps")) } td { (n(b, "declaration_sets")) } td { (n(b, "enrollment_commands")) }
                    } } } }
            }
            _ => { p { "No blueprints yet." } }
        }
    };
    layout(&s, "Blueprints", None, body)
}

#[derive(Debug, Deserialize)]
pub struct BlueprintQuery {
    #[serde(default)]
    plan: bool,
}

pub async fn blueprint(State(c): State<Shared>, h: HeaderMap, Path(name): Path<String>, Query(q): Query<BlueprintQuery>) -> Response {
    let s = signed_in!(c, h, &format!("/ui/blueprints/{}", seg(&name)));
    let b = c.get(&s, &format!("/v1/blueprints/{}", seg(&name))).await;
    let st = c.get(&s, &format!("/v1/blueprints/{}/status?limit=500", seg(&name))).await;
    let plan = if q.plan {
        Some(c.get(&s, &format!("/v1/blueprints/{}/plan?limit=500", seg(&name))).await)
    } else {
        None
    };
    let body = html! {
        @if !b.ok() { (error(&b)) } @else {
            h2 { "Definition" }
            (value_view(&b.body["blueprint"]))
            h2 { "State on each device" }
            @if !st.ok() { (error(&st)) } @else {
                p { @for (k, v) in st.body["counts"].as_object().into_iter().flatten() { span class=(state_class(k)) { (k) ": " (text(v)) } " " } }
                table { thead { tr { th { "Device" } th { "State" } th { "Pending or failed" } } }
                    tbody { @for d in st.body["devices"].as_array().into_iter().flatten() { tr {
                        td { a href=(format!("/ui/devices/{}", seg(s_of(d, "enrollment")))) { code { (s_of(d, "enrollment")) } } }
                        td { span class=(state_class(s_of(d, "state"))) { (s_of(d, "state")) } }
                        td { (items_text(&d["pending"])) (items_text(&d["failed"])) }
                    } } } }
            }
            h2 { "Plan" }
            @match &plan {
                None => { p { a href=(format!("/ui/blueprints/{}?plan=true", seg(&name))) { "Show what applying it now would install and remove" } } }
                Some(p) if !p.ok() => { (error(p)) }
                Some(p) => {
                    p { (text(&p.body["devices_affected"])) " devices affected: " (text(&p.body["installs"])) " installs, " (text(&p.body["removals"])) " removals." }
                    table { thead { tr { th { "Device" } th { "Install" } th { "Remove" } } }
                        tbody { @for d in p.body["devices"].as_array().into_iter().flatten() { tr {
                            td { code { (s_of(d, "enrollment")) } }
                            td { (items_text(&d["install"])) }
                            td { (items_text(&d["remove"])) }
                        } } } }
                }
            }
        }
    };
    layout(&s, &format!("Blueprint {name}"), None, body)
}
