//! The console's app catalog (issue 28). `/ui/apps`: the apps (kind, version, licences free of
//! total, devices installed/pending/failed), the Apps and Books content tokens (expiry marked
//! like ADE's server tokens), a form to add an App Store app by its id and a Sync button.
//! `/ui/apps/{id}`: one app, its licences and its state on every device, with Install and
//! Remove forms and a Remove button per device.
//!
//! Every read and every form is one admin-API request as the signed-in account, so the API
//! enforces roles; forms the role may not use are not shown. Content tokens and in-house
//! `.ipa` files are uploaded with `mdmd apps` (or the API), not here.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::pages::{back_to, csrf, layout, s_of, text, Flash, FlashQuery};
use super::{access, access_post, seg, urlencoding, Access, Console, Session};
use crate::api::permissions::allowed;

type Shared = Arc<Console>;

/// An app's id as text (the API may give a number or a string).
fn id_of(app: &Value) -> String {
    match &app["id"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn kind(app: &Value) -> &str {
    match s_of(app, "kind") {
        "app_store" => "App Store",
        "in_house" => "in-house",
        other => other,
    }
}

/// The class of a device state: done, in flight, or failed.
fn state_class(state: &str) -> Option<&'static str> {
    match state {
        "installed" => Some("good"),
        "failed" | "rejected" => Some("bad"),
        "queued" | "installing" | "update_available" | "removing" => Some("warn"),
        _ => None,
    }
}

/// `free / total`, marked when none is free; `—` for an app without licences.
fn licences_cell(app: &Value) -> Markup {
    let l = &app["licences"];
    html! {
        @if l.is_object() {
            span class=[(n(&l["available"]) == 0).then_some("bad")] { (n(&l["available"])) " / " (n(&l["total"])) }
        } @else { "—" }
    }
}

/// The catalog's table.
pub(super) fn catalog_table(v: &Value) -> Markup {
    html! {
        @match v["apps"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "App" } th { "Kind" } th { "Version" } th { "Licences free / total" } th { "Installed / pending / failed" } } }
                    tbody { @for a in l {
                        @let d = &a["devices"];
                        tr {
                            td { a href=(format!("/ui/apps/{}", seg(&id_of(a)))) { (text(&a["name"])) } br; code { (s_of(a, "bundle_id")) } }
                            td { (kind(a)) }
                            td { (text(&a["version"])) }
                            td { (licences_cell(a)) }
                            td { span.good { (n(&d["installed"])) } " / " span.warn { (n(&d["pending"])) } " / " span.bad { (n(&d["failed"])) } }
                        }
                    } } }
            }
            _ => { p { "No apps yet: add an App Store app below, or an in-house app with " code { "mdmd apps add FILE.ipa" } "." } }
        }
    }
}

/// The content tokens' table.
pub(super) fn tokens_table(v: &Value) -> Markup {
    html! {
        @match v["tokens"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Name" } th { "Organisation" } th { "Location" } th { "Expires" } th { "Apps" } th { "Last sync" } th { "Last error" } } }
                    tbody { @for t in l { tr {
                        td { (s_of(t, "name")) }
                        td { (text(&t["org_name"])) }
                        td { (text(&t["location"])) @if !t["country"].is_null() { " (" (text(&t["country"])) ")" } }
                        td class=[if t["expired"] == true { Some("bad") } else if t["expires_soon"] == true { Some("warn") } else { None }] {
                            (text(&t["expires_at"]))
                            @if t["expired"] == true { " (expired)" } @else if t["expires_soon"] == true { " (renew soon)" }
                        }
                        td { (text(&t["apps"])) }
                        td { (text(&t["synced_at"])) }
                        td.bad { (text(&t["last_error"])) }
                    } } } }
            }
            _ => { p { "No content token yet: download one in Apple Business Manager (Preferences → Payments and Billing), then "
                code { "mdmd apps tokens add NAME FILE.vpptoken" } "." } }
        }
    }
}

/// The form that adds an App Store app, with the tokens to choose from.
fn add_form(s: &Session, tokens: &Value) -> Markup {
    let names: Vec<&str> = tokens["tokens"].as_array().into_iter().flatten().map(|t| s_of(t, "name")).collect();
    html! {
        form method="post" action="/ui/apps" {
            (csrf(s))
            input type="hidden" name="action" value="add";
            label for="itunes_store_id" { "App Store id (the number at the end of the app's apps.apple.com address)" }
            input id="itunes_store_id" name="itunes_store_id" inputmode="numeric" pattern="[0-9]+" required;
            @if !names.is_empty() {
                label for="token" { "Content token whose licences it uses" }
                select id="token" name="token" {
                    option value="" { "let the server choose" }
                    @for t in &names { option value=(t) { (t) } }
                }
            }
            label for="bundle_id" { "Bundle id (optional: learned from Apple otherwise)" }
            input id="bundle_id" name="bundle_id";
            label for="configuration" { "Managed app configuration (optional: a JSON object, or the vendor's AppConfig key=value lines)" }
            textarea id="configuration" name="configuration" rows="3" {}
            label.check { input type="checkbox" name="remove_on_unenroll" checked; "Remove the app when the device unenrolls" }
            label.check { input type="checkbox" name="prevent_backup" checked; "Keep its data out of device backups" }
            button type="submit" { "Add to the catalog" }
        }
    }
}

pub async fn page(State(c): State<Shared>, h: HeaderMap, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, "/ui/apps");
    let (apps, tokens) = tokio::join!(c.get(&s, "/v1/apps"), c.get(&s, "/v1/apps-and-books/tokens"));
    let can_add = allowed(s.role, &Method::POST, "/v1/apps");
    let can_sync = allowed(s.role, &Method::POST, "/v1/apps-and-books/sync");
    let body = html! {
        p { "App Store apps are licensed through Apple's Apps and Books content tokens; in-house apps are uploaded with "
            code { "mdmd apps add FILE.ipa" } ". Open an app to install it on devices." }
        h2 { "Catalog" }
        @if !apps.ok() { p.bad { (apps.error()) } }
        (catalog_table(&apps.body))
        @if can_add {
            details { summary { "Add an App Store app" } (add_form(&s, &tokens.body)) }
        }
        h2 { "Content tokens" }
        @if !tokens.ok() { p.bad { (tokens.error()) } }
        (tokens_table(&tokens.body))
        @if can_sync {
            form method="post" action="/ui/apps" {
                (csrf(&s))
                input type="hidden" name="action" value="sync";
                button type="submit" { "Sync with Apple now" }
            }
        }
    };
    layout(&s, "Apps", fq.flash().as_ref(), body)
}

#[derive(Deserialize, Default)]
pub struct CatalogForm {
    csrf: Option<String>,
    #[serde(default)]
    action: String,
    #[serde(default)]
    itunes_store_id: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    bundle_id: String,
    #[serde(default)]
    configuration: String,
    /// A checkbox: present ("on") when ticked.
    remove_on_unenroll: Option<String>,
    prevent_backup: Option<String>,
}

/// `POST /v1/apps`'s body from the add form, or what is wrong with the form.
fn add_body(f: &CatalogForm) -> Result<Value, String> {
    let id: u64 = f
        .itunes_store_id
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("The App Store id is a number, not {:?}.", f.itunes_store_id.trim()))?;
    let mut b = json!({
        "itunes_store_id": id,
        "remove_on_unenroll": f.remove_on_unenroll.is_some(),
        "prevent_backup": f.prevent_backup.is_some(),
    });
    if !f.token.trim().is_empty() {
        b["token"] = json!(f.token.trim());
    }
    if !f.bundle_id.trim().is_empty() {
        b["bundle_id"] = json!(f.bundle_id.trim());
    }
    if !f.configuration.trim().is_empty() {
        match crate::profiles::appconfig::parse(&f.configuration) {
            Ok(i) => b["configuration"] = Value::Object(i.configuration),
            Err(e) => return Err(format!("The managed app configuration (a JSON object or key=value lines): {e}.")),
        }
    }
    Ok(b)
}

/// What a sync did, as a flash (an error when a token failed).
fn sync_outcome(v: &Value) -> Result<String, String> {
    let done = format!(
        "Synced {} token(s): {} asset(s), {} licence(s) released.",
        n(&v["tokens"]),
        n(&v["assets"]),
        n(&v["released"])
    );
    let errors: Vec<String> = v["errors"].as_array().into_iter().flatten().map(text).collect();
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(format!("{done} Errors: {}", errors.join("; ")))
    }
}

/// The catalog's forms: add an App Store app, or sync.
pub async fn catalog_action(State(c): State<Shared>, h: HeaderMap, axum::Form(f): axum::Form<CatalogForm>) -> Response {
    let s = posted!(c, h, f.csrf.as_deref());
    if f.action == "sync" {
        let r = c.api(&s, Method::POST, "/v1/apps-and-books/sync", None).await;
        return back_to("/ui/apps", if r.ok() { sync_outcome(&r.body) } else { Err(r.error()) });
    }
    let body = match add_body(&f) {
        Ok(b) => b,
        Err(e) => return back_to("/ui/apps", Err(e)),
    };
    let r = c.post_json(&s, "/v1/apps", &body).await;
    if !r.ok() {
        return back_to("/ui/apps", Err(r.error()));
    }
    tracing::info!(account = %s.name, app = %id_of(&r.body), "console: app added to the catalog");
    let done = format!("Added {} {} to the catalog.", text(&r.body["name"]), text(&r.body["version"]));
    let id = id_of(&r.body);
    if id.is_empty() {
        return back_to("/ui/apps", Ok(done));
    }
    Redirect::to(&format!("/ui/apps/{}?done={}", seg(&id), urlencoding(&done))).into_response()
}

/// One app's details.
pub(super) fn details(a: &Value) -> Markup {
    let l = &a["licences"];
    let d = &a["devices"];
    html! {
        table.kv { tbody {
            tr { th { "Kind" } td { (kind(a)) } }
            tr { th { "Bundle id" } td { code { (s_of(a, "bundle_id")) } } }
            tr { th { "Version" } td { (text(&a["version"])) } }
            @if !a["itunes_store_id"].is_null() { tr { th { "App Store id" } td { (text(&a["itunes_store_id"])) } } }
            @if !a["token"].is_null() { tr { th { "Content token" } td { (text(&a["token"])) } } }
            @if !a["minimum_os"].is_null() { tr { th { "Minimum OS" } td { (text(&a["minimum_os"])) } } }
            @if let Some(b) = a["size"].as_u64() { tr { th { "Size" } td { (format!("{:.1} MB", b as f64 / 1e6)) } } }
            @if l.is_object() {
                tr { th { "Licences" } td {
                    span class=[(n(&l["available"]) == 0).then_some("bad")] { (n(&l["available"])) " free" }
                    " of " (n(&l["total"])) " (" (n(&l["assigned"])) " assigned)"
                } }
            }
            tr { th { "Devices" } td {
                span.good { (n(&d["installed"])) " installed" } ", " span.warn { (n(&d["pending"])) " pending" } ", "
                span.bad { (n(&d["failed"])) " failed" }
            } }
            tr { th { "Remove on unenroll" } td { (text(&a["remove_on_unenroll"])) } }
            tr { th { "Prevent backup" } td { (text(&a["prevent_backup"])) } }
            tr { th { "Updated" } td { (text(&a["updated_at"])) } }
        } }
        @if a["configuration"].is_object() {
            details { summary { "Managed app configuration" }
                pre { (serde_json::to_string_pretty(&a["configuration"]).unwrap_or_default()) } }
        }
    }
}

/// The app's state on each device; with a Remove button per device when `remove` has the
/// session to sign the form with.
pub(super) fn device_states(a: &Value, remove: Option<&Session>) -> Markup {
    let action = format!("/ui/apps/{}/remove", seg(&id_of(a)));
    html! {
        @match a["device_states"].as_array() {
            Some(l) if !l.is_empty() => {
                table { thead { tr { th { "Device" } th { "Serial" } th { "State" } th { "Version" } th { "Licence" } th { "Updated" } th { "Error" }
                        @if remove.is_some() { th { "" } } } }
                    tbody { @for d in l {
                        @let e = s_of(d, "enrollment");
                        @let state = s_of(d, "state");
                        tr {
                            td { a href=(format!("/ui/devices/{}", seg(e))) { code { (e) } } }
                            td { (text(&d["serial"])) }
                            td class=[state_class(state)] { (state.replace('_', " ")) }
                            td { (text(&d["version"])) }
                            td { (text(&d["licence"])) }
                            td { (text(&d["updated_at"])) }
                            td.bad { (text(&d["error"])) }
                            @if let Some(s) = remove {
                                td { @if !matches!(state, "removed" | "removing") {
                                    form method="post" action=(action) {
                                        (csrf(s))
                                        input type="hidden" name="targets" value=(e);
                                        button.danger type="submit" aria-label=(format!("Remove from {e}")) { "Remove" }
                                    }
                                } }
                            }
                        }
                    } } }
            }
            _ => { p { "Not on any device yet." } }
        }
    }
}

pub async fn app(State(c): State<Shared>, h: HeaderMap, Path(id): Path<String>, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, &format!("/ui/apps/{}", seg(&id)));
    let r = c.get(&s, &format!("/v1/apps/{}", seg(&id))).await;
    if !r.ok() {
        return layout(
            &s,
            "App",
            Some(&Flash::error(r.error())),
            html! { p { a href="/ui/apps" { "All apps" } } },
        );
    }
    let a = &r.body;
    let here = format!("/ui/apps/{}", seg(&id));
    let can_install = allowed(s.role, &Method::POST, &format!("/v1/apps/{}/install", seg(&id)));
    let can_remove = allowed(s.role, &Method::POST, &format!("/v1/apps/{}/remove", seg(&id)));
    let body = html! {
        p.sub { a href="/ui/apps" { "All apps" } " · " code { (id) } }
        (details(a))
        @if can_install || can_remove {
            div.actgrid {
                @if can_install {
                    form method="post" action=(format!("{here}/install")) {
                        (csrf(&s))
                        label for="install-targets" { "Install on devices (enrollment ids, one per line)" }
                        textarea id="install-targets" name="targets" rows="4" required {}
                        button type="submit" { "Install" }
                    }
                }
                @if can_remove {
                    form method="post" action=(format!("{here}/remove")) {
                        (csrf(&s))
                        label for="remove-targets" { "Remove from devices (enrollment ids, one per line)" }
                        textarea id="remove-targets" name="targets" rows="4" required {}
                        button.danger type="submit" { "Remove" }
                    }
                }
            }
        }
        h2 { "On devices" }
        (device_states(a, can_remove.then_some(&s)))
    };
    let title = if s_of(a, "name").is_empty() {
        "App".to_owned()
    } else {
        s_of(a, "name").to_owned()
    };
    layout(&s, &title, fq.flash().as_ref(), body)
}

#[derive(Deserialize)]
pub struct TargetsForm {
    csrf: Option<String>,
    #[serde(default)]
    targets: String,
}

/// Enrollment ids from a textarea: one per line (or separated by spaces or commas).
fn parse_targets(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in text.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

/// What an install or removal did, as a flash (an error when a target failed).
fn fan_out_outcome(action: &str, v: &Value) -> Result<String, String> {
    let done = if action == "install" {
        format!(
            "Install queued for {} device(s); {} licence(s) associated.",
            n(&v["queued"]),
            n(&v["licences_associated"])
        )
    } else {
        format!(
            "Removal queued for {} device(s); {} licence(s) released.",
            n(&v["queued"]),
            n(&v["licences_released"])
        )
    };
    let failed: Vec<String> = v["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{}: {}", s_of(f, "target"), s_of(f, "error")))
        .collect();
    if failed.is_empty() {
        Ok(done)
    } else {
        Err(format!("{done} Failed: {}", failed.join("; ")))
    }
}

async fn fan_out(c: &Console, h: &HeaderMap, id: &str, action: &str, f: TargetsForm) -> Response {
    let s = match access_post(c, h, f.csrf.as_deref()).await {
        Access::In(s) => s,
        Access::Out(r) => return r,
    };
    let page = format!("/ui/apps/{}", seg(id));
    let targets = parse_targets(&f.targets);
    if targets.is_empty() {
        return back_to(&page, Err("Name at least one device (its enrollment id).".into()));
    }
    let r = c
        .post_json(&s, &format!("/v1/apps/{}/{action}", seg(id)), &json!({ "targets": targets }))
        .await;
    if r.ok() {
        tracing::info!(account = %s.name, app = %id, action, targets = targets.len(), "console: app action");
    }
    back_to(&page, if r.ok() { fan_out_outcome(action, &r.body) } else { Err(r.error()) })
}

pub async fn install(State(c): State<Shared>, h: HeaderMap, Path(id): Path<String>, axum::Form(f): axum::Form<TargetsForm>) -> Response {
    fan_out(&c, &h, &id, "install", f).await
}

pub async fn remove(State(c): State<Shared>, h: HeaderMap, Path(id): Path<String>, axum::Form(f): axum::Form<TargetsForm>) -> Response {
    fan_out(&c, &h, &id, "remove", f).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::access::accounts::Role;

    fn session() -> Session {
        Session {
            name: "ops".into(),
            role: Role::Operator,
            csrf: "CSRF-TOKEN".into(),
            expires_at: 0,
            account_created_at: 0,
            idp: false,
        }
    }

    fn pages() -> Value {
        json!({
            "id": 7, "kind": "app_store", "name": "Pages <b>", "bundle_id": "com.apple.Pages", "version": "14.2",
            "itunes_store_id": 361309726, "token": "main", "size": 512_300_000u64,
            "licences": {"total": 10, "assigned": 10, "available": 0},
            "devices": {"installed": 5, "pending": 1, "failed": 2},
            "remove_on_unenroll": true, "prevent_backup": false,
            "configuration": {"Theme": "dark"}, "updated_at": "2026-01-01T00:00:00Z",
            "device_states": [
                {"enrollment": "UDID 1", "serial": "C02X", "state": "installed", "version": "14.2", "licence": true, "updated_at": "2026-01-01T00:00:00Z"},
                {"enrollment": "UDID-2", "state": "update_available", "licence": true, "updated_at": "2026-01-01T00:00:00Z"},
                {"enrollment": "UDID-3", "state": "removed", "licence": false, "updated_at": "2026-01-01T00:00:00Z"},
                {"enrollment": "UDID-4", "state": "failed", "error": "License not found", "licence": false, "updated_at": "2026-01-01T00:00:00Z"}
            ]
        })
    }

    #[test]
    fn the_catalog_links_each_app_and_marks_licences_running_out() {
        let field = json!({"id": "ab/c", "kind": "in_house", "name": "Field", "bundle_id": "com.example.field", "version": "2.0",
                           "devices": {"installed": 1, "pending": 0, "failed": 0}});
        let h = catalog_table(&json!({"apps": [pages(), field]})).into_string();
        assert!(h.contains(r#"href="/ui/apps/7""#) && h.contains(r#"href="/ui/apps/ab%2Fc""#), "{h}");
        assert!(h.contains("Pages &lt;b&gt;") && !h.contains("Pages <b>"), "names are escaped: {h}");
        assert!(h.contains("App Store") && h.contains("in-house"), "{h}");
        assert!(h.contains(r#"<span class="bad">0 / 10</span>"#), "no licence free: {h}");
        assert!(
            h.contains(r#"<span class="good">5</span> / <span class="warn">1</span> / <span class="bad">2</span>"#),
            "{h}"
        );
        assert!(catalog_table(&json!({"apps": []})).into_string().contains("No apps yet"));
    }

    #[test]
    fn tokens_show_their_expiry_like_ade() {
        let h = tokens_table(&json!({"tokens": [
            {"name": "main", "org_name": "Example", "location": "HQ", "country": "US", "expires_at": "2020-01-01T00:00:00Z",
             "expired": true, "expires_soon": true, "apps": 3, "last_error": "expired"},
            {"name": "eu", "org_name": "Example", "location": "Paris", "expires_at": "2099-01-01T00:00:00Z",
             "expired": false, "expires_soon": true, "apps": 0}
        ]}))
        .into_string();
        assert!(h.contains(r#"<td class="bad">2020-01-01T00:00:00Z (expired)</td>"#), "{h}");
        assert!(h.contains(r#"<td class="warn">2099-01-01T00:00:00Z (renew soon)</td>"#), "{h}");
        assert!(h.contains("HQ (US)") && h.contains("<td>Paris</td>"), "{h}");
        assert!(tokens_table(&json!({})).into_string().contains("mdmd apps tokens add"));
    }

    #[test]
    fn one_app_and_its_devices() {
        let s = session();
        let h = details(&pages()).into_string();
        assert!(h.contains(r#"<span class="bad">0 free</span> of 10 (10 assigned)"#), "{h}");
        assert!(
            h.contains("512.3 MB") && h.contains("361309726") && h.contains("&quot;Theme&quot;: &quot;dark&quot;"),
            "{h}"
        );
        let h = device_states(&pages(), Some(&s)).into_string();
        assert!(h.contains(r#"href="/ui/devices/UDID%201""#), "{h}");
        assert!(
            h.contains(r#"<td class="warn">update available</td>"#) && h.contains("License not found"),
            "{h}"
        );
        assert_eq!(
            h.matches(r#"action="/ui/apps/7/remove""#).count(),
            3,
            "no button for a removed app: {h}"
        );
        assert_eq!(h.matches(r#"value="CSRF-TOKEN""#).count(), 3, "{h}");
        assert!(h.contains(r#"name="targets" value="UDID-4""#), "{h}");
        let read_only = device_states(&pages(), None).into_string();
        assert!(!read_only.contains("<form") && !read_only.contains("CSRF"), "{read_only}");
        assert!(device_states(&json!({"id": 1, "device_states": []}), Some(&s))
            .into_string()
            .contains("Not on any device"));
    }

    #[test]
    fn the_add_form_becomes_the_apis_body() {
        let mut f = CatalogForm {
            itunes_store_id: " 361309726 ".into(),
            remove_on_unenroll: Some("on".into()),
            ..CatalogForm::default()
        };
        assert_eq!(
            add_body(&f).unwrap(),
            json!({"itunes_store_id": 361309726, "remove_on_unenroll": true, "prevent_backup": false})
        );
        f.token = "main".into();
        f.bundle_id = "com.apple.Pages".into();
        f.configuration = r#"{"Theme": "dark"}"#.into();
        let b = add_body(&f).unwrap();
        assert_eq!(
            (b["token"].as_str(), b["bundle_id"].as_str()),
            (Some("main"), Some("com.apple.Pages"))
        );
        assert_eq!(b["configuration"], json!({"Theme": "dark"}));
        f.configuration = "[1]".into();
        assert!(add_body(&f).unwrap_err().contains("JSON object"));
        f.configuration = "{".into();
        assert!(add_body(&f).unwrap_err().contains("not JSON"));
        for bad in ["", "pages", "-3", "0"] {
            f.itunes_store_id = bad.into();
            assert!(add_body(&f).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_and_outcomes() {
        assert_eq!(parse_targets("A\r\nB, C\n\nA\n"), ["A", "B", "C"]);
        assert!(parse_targets(" \n ").is_empty());
        assert_eq!(
            fan_out_outcome("install", &json!({"queued": 2, "licences_associated": 2, "failed": []})),
            Ok("Install queued for 2 device(s); 2 licence(s) associated.".into())
        );
        assert_eq!(
            fan_out_outcome(
                "remove",
                &json!({"queued": 0, "licences_released": 0, "failed": [{"target": "X", "error": "not enrolled"}]})
            ),
            Err("Removal queued for 0 device(s); 0 licence(s) released. Failed: X: not enrolled".into())
        );
        assert_eq!(
            sync_outcome(&json!({"tokens": 1, "assets": 4, "released": 1, "errors": []})),
            Ok("Synced 1 token(s): 4 asset(s), 1 licence(s) released.".into())
        );
        assert!(sync_outcome(&json!({"tokens": 1, "errors": ["main: expired"]}))
            .unwrap_err()
            .ends_with("Errors: main: expired"));
    }
}
