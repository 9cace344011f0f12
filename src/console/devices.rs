//! The console's device pages: the searchable list, one device (facts, inventory, commands,
//! profiles, actions) and the actions an operator takes on it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{access, access_post, seg, urlencoding, Access, Console, Session};

type Shared = Arc<Console>;

use super::pages::*;

// ---- Devices

#[derive(Deserialize, Default)]
pub struct DeviceQuery {
    q: Option<String>,
    compliance: Option<String>,
    /// An OS version, or a prefix of one ("17" matches 17.x).
    os: Option<String>,
    /// Last check-in: "1", "7", "30" (within that many days) or "stale7", "stale30" (not since).
    seen: Option<String>,
    after: Option<String>,
}

/// Does a device's last check-in match the `seen` filter?
fn seen_matches(seen: &str, last: i64, now: i64) -> bool {
    let (stale, days) = match seen.strip_prefix("stale") {
        Some(d) => (true, d),
        None => (false, seen),
    };
    let Ok(days) = days.parse::<i64>() else { return true };
    let within = now - last <= days * 86_400;
    within != stale
}

fn os_matches(filter: &str, os: &str) -> bool {
    os == filter || os.strip_prefix(filter).is_some_and(|rest| rest.starts_with('.'))
}

pub async fn devices(State(c): State<Shared>, h: HeaderMap, Query(q): Query<DeviceQuery>) -> Response {
    let here = format!("/ui/devices?q={}", urlencoding(q.q.as_deref().unwrap_or("")));
    let s = signed_in!(c, h, &here);
    let query = q.q.as_deref().map(str::trim).filter(|v| !v.is_empty());
    let mut flash = None;
    let mut next = None;
    let mut rows: Vec<Value> = Vec::new();
    if let Some(v) = query {
        // An enrollment id (UDID) first, then every lookup key the API knows.
        let one = c.get(&s, &format!("/v1/devices/{}", seg(v))).await;
        if one.ok() {
            rows.push(one.body);
        } else {
            for key in ["serial", "imei", "mac", "user", "phone", "meid"] {
                let r = c.get(&s, &format!("/v1/devices?{key}={}", urlencoding(v))).await;
                if let Some(list) = r.body["devices"].as_array() {
                    for d in list {
                        if !rows.iter().any(|x| x["id"] == d["id"]) {
                            rows.push(d.clone());
                        }
                    }
                }
            }
        }
        // Then device names (from the fleet summary), when the lookups found nothing.
        if rows.is_empty() {
            if let Some(f) = c.fleet.get(&c.app).await {
                let needle = v.to_lowercase();
                let ids: Vec<String> = f
                    .rows
                    .iter()
                    .filter(|r| r.name.to_lowercase().contains(&needle))
                    .take(50)
                    .map(|r| r.id.clone())
                    .collect();
                rows = fetch_devices(&c, &s, &ids).await;
            }
        }
        if rows.is_empty() {
            flash = Some(Flash::error(format!(
                "No device matches {v:?} (UDID, serial, IMEI, MEID, MAC, phone, user or name)."
            )));
        }
    } else if q.os.as_deref().is_some_and(|v| !v.is_empty()) || q.seen.as_deref().is_some_and(|v| !v.is_empty()) {
        let (os, seen) = (q.os.clone().unwrap_or_default(), q.seen.clone().unwrap_or_default());
        match c.fleet.get(&c.app).await {
            Some(f) => {
                let t = crate::clock::now();
                let after = q.after.clone().unwrap_or_default();
                let ids: Vec<String> = f
                    .rows
                    .iter()
                    .filter(|r| r.id > after)
                    .filter(|r| os.is_empty() || os_matches(&os, &r.os))
                    .filter(|r| seen.is_empty() || seen_matches(&seen, r.last_checkin_at, t))
                    .take(50)
                    .map(|r| r.id.clone())
                    .collect();
                if ids.len() == 50 {
                    next = ids.last().cloned();
                }
                rows = fetch_devices(&c, &s, &ids).await;
            }
            None => flash = Some(Flash::error("The fleet summary is unavailable (storage); try again.")),
        }
    } else if let Some(state) = q.compliance.as_deref().filter(|v| !v.is_empty()) {
        let mut url = format!("/v1/compliance?status={}&limit=50", urlencoding(state));
        if let Some(a) = &q.after {
            url.push_str(&format!("&after={}", urlencoding(a)));
        }
        let r = c.get(&s, &url).await;
        if !r.ok() {
            flash = Some(Flash::error(r.error()));
        }
        for d in r.body["devices"].as_array().into_iter().flatten() {
            let id = s_of(d, "enrollment");
            let one = c.get(&s, &format!("/v1/devices/{}", seg(id))).await;
            if one.ok() {
                rows.push(one.body);
            }
        }
        if rows.len() == 50 {
            next = rows.last().map(|d| s_of(d, "id").to_owned());
        }
    } else {
        let mut url = "/v1/devices?limit=50".to_owned();
        if let Some(a) = &q.after {
            url.push_str(&format!("&after={}", urlencoding(a)));
        }
        let r = c.get(&s, &url).await;
        if !r.ok() {
            flash = Some(Flash::error(r.error()));
        }
        rows = r.body["devices"].as_array().cloned().unwrap_or_default();
        next = r.body["next"].as_str().map(str::to_owned);
    }
    let compliance = q.compliance.clone().unwrap_or_default();
    let (os, seen) = (q.os.clone().unwrap_or_default(), q.seen.clone().unwrap_or_default());
    let versions = match c.fleet.get(&c.app).await {
        Some(f) if crate::api::permissions::allowed(s.role, &Method::GET, "/v1/devices") => f.os_versions().to_vec(),
        _ => vec![],
    };
    let filters = format!(
        "&compliance={}&os={}&seen={}",
        urlencoding(&compliance),
        urlencoding(&os),
        urlencoding(&seen)
    );
    let body = html! {
        form.search method="get" action="/ui/devices" role="search" {
            label for="q" { "Search" }
            input id="q" name="q" type="search" value=(query.unwrap_or("")) placeholder="UDID, serial, IMEI, MAC, user";
            label for="compliance" { "Compliance" }
            select id="compliance" name="compliance" {
                @for (v, l) in [("", "any"), ("compliant", "compliant"), ("non_compliant", "non-compliant"), ("unknown", "unknown")] {
                    option value=(v) selected[compliance == v] { (l) }
                }
            }
            label for="os" { "OS" }
            select id="os" name="os" {
                option value="" { "any" }
                @for (v, n) in &versions { option value=(v) selected[os == *v] { (v) " (" (n) ")" } }
            }
            label for="seen" { "Last check-in" }
            select id="seen" name="seen" {
                @for (v, l) in [("", "any time"), ("1", "within a day"), ("7", "within 7 days"), ("30", "within 30 days"), ("stale7", "not for 7 days"), ("stale30", "not for 30 days")] {
                    option value=(v) selected[seen == v] { (l) }
                }
            }
            button type="submit" { "Find" }
        }
        (device_table(&rows))
        @if let Some(n) = next {
            p { a rel="next" href=(format!("/ui/devices?after={}{filters}", urlencoding(&n))) { "Next page →" } }
        }
    };
    layout(&s, "Devices", flash.as_ref(), body)
}

/// The API's view of each of these devices (missing ones left out).
async fn fetch_devices(c: &Console, s: &Session, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let r = c.get(s, &format!("/v1/devices/{}", seg(id))).await;
        if r.ok() {
            out.push(r.body);
        }
    }
    out
}

fn device_table(rows: &[Value]) -> Markup {
    html! {
        table.devices {
            thead { tr { th { "Device" } th { "Serial" } th { "OS" } th { "Model" } th { "Last check-in" } th { "Enrolled" } } }
            tbody {
                @for d in rows {
                    @let id = s_of(d, "id");
                    @let info = &d["info"];
                    tr {
                        td { a href=(format!("/ui/devices/{}", seg(id))) { (device_name(d)) } br; small { code { (id) } } }
                        td { (text(&info["serial_number"])) }
                        td { (text(&info["os_version"])) }
                        td { (text(&info["model_name"])) }
                        td { (text(&d["last_checkin_at"])) }
                        td { (text(&d["enrolled_at"])) }
                    }
                }
            }
        }
    }
}

fn device_name(d: &Value) -> String {
    let info = &d["info"];
    for k in ["device_name", "DeviceName", "product_name", "model_name"] {
        if let Some(n) = info.get(k).and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return n.to_owned();
        }
    }
    s_of(d, "id").to_owned()
}

// ---- One device

pub async fn device(State(c): State<Shared>, h: HeaderMap, Path(id): Path<String>, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, &format!("/ui/devices/{}", seg(&id)));
    let p = seg(&id);
    let (u1, u2, u3) = (
        format!("/v1/devices/{p}"),
        format!("/v1/devices/{p}/commands"),
        format!("/v1/devices/{p}/profiles"),
    );
    let u4 = format!("/v1/devices/{p}/declarations");
    let (d, cmds, profiles, templates, declarations) = tokio::join!(
        c.get(&s, &u1),
        c.get(&s, &u2),
        c.get(&s, &u3),
        c.get(&s, "/v1/profiles"),
        c.get(&s, &u4)
    );
    if !d.ok() {
        let title = if d.status == StatusCode::NOT_FOUND {
            "No such device"
        } else {
            "Device"
        };
        return layout(
            &s,
            title,
            Some(&Flash::error(d.error())),
            html! { p { a href="/ui/devices" { "All devices" } } },
        );
    }
    let dv = &d.body;
    let name = device_name(dv);
    let can_act = crate::api::permissions::allowed(s.role, &Method::POST, "/v1/commands");
    let mut history: Vec<Value> = cmds.body["commands"].as_array().cloned().unwrap_or_default();
    history.reverse();
    let flash = fq.flash();
    let body = html! {
        p.sub { code { (id) } " · " (text(&dv["kind"])) @if dv["active"] == json!(false) { " · " strong.bad { "inactive" } } }
        div.grid {
            section {
                h2 { "Facts" }
                (kv_table(&dv["info"]))
            }
            section {
                h2 { "Compliance" }
                @let comp = &dv["compliance"];
                p { "Status: " strong class=(match s_of(comp, "status") { "compliant" => "good", "non_compliant" => "bad", _ => "" }) { (text(&comp["status"])) }
                    @if !comp["evaluated_at"].is_null() { " (evaluated " (text(&comp["evaluated_at"])) ")" } }
                @if let Some(reasons) = comp["reasons"].as_array().filter(|r| !r.is_empty()) {
                    ul { @for r in reasons { li { (text(r)) } } }
                }
                h2 { "Push and identity" }
                table {
                    tbody {
                        tr { th { "Push token" } td { (text(&dv["push_token_present"])) } }
                        tr { th { "Last push" } td { @if dv["push"]["last_push_at"].is_null() { "never" } @else { (text(&dv["push"]["last_push_at"])) " " (text(&dv["push"]["last_push_outcome"])) } } }
                        tr { th { "Last check-in" } td { (text(&dv["last_checkin_at"])) } }
                        tr { th { "Enrolled" } td { (text(&dv["enrolled_at"])) } }
                        tr { th { "Enrolled by" } td #enrolled-by {
                            @let u = &dv["user"];
                            @if u.is_null() { "—" } @else {
                                (s_of(u, "username"))
                                @if !u["full_name"].is_null() { " (" (s_of(u, "full_name")) ")" }
                                @if !u["email"].is_null() { " · " (s_of(u, "email")) }
                                " · " (s_of(u, "method")) " · " (text(&u["signed_in_at"]))
                                @if let Some(g) = u["groups"].as_array().filter(|g| !g.is_empty()) {
                                    br; "Groups: " (g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                                }
                            }
                        } }
                        tr { th { "Identity certificate" } td {
                            @let ic = &dv["identity_certificate"];
                            @if ic.is_null() { "—" } @else {
                                a href=(format!("/ui/certificates?q={}", urlencoding(s_of(ic, "serial")))) { code { (s_of(ic, "serial")) } }
                                " until " (text(&ic["not_after"]))
                                @if ic["revoked"] == json!(true) { " " strong.bad { "revoked" } }
                            }
                        } }
                        tr { th { "Pending commands" } td { (text(&dv["pending_commands"])) } }
                        tr { th { "Unlock token escrowed" } td { (text(&dv["unlock_token_escrowed"])) } }
                    }
                }
            }
        }
        @if can_act {
            section.actions aria-label="Actions" {
                h2 { "Actions" }
                div.actgrid {
                    (action_form(&s, &id, "information", "Refresh inventory (DeviceInformation)", html! {}))
                    (action_form(&s, &id, "push", "Push now", html! {}))
                    (action_form(&s, &id, "lock", "Lock", html! {
                        label for="lock-message" { "Message" } input id="lock-message" name="message" maxlength="200";
                        label for="lock-phone" { "Phone number" } input id="lock-phone" name="phone" maxlength="40";
                    }))
                    (action_form(&s, &id, "clear-passcode", "Clear passcode", html! {}))
                    (action_form(&s, &id, "erase", "Erase", html! {
                        label for="erase-confirm" { "Type the device name (" strong { (name) } ") to confirm" }
                        input id="erase-confirm" name="confirm" required autocomplete="off";
                    }))
                    @if let Some(list) = templates.body["profiles"].as_array().filter(|l| !l.is_empty()) {
                        form method="post" action=(format!("/ui/devices/{}/actions", seg(&id))) {
                            (csrf(&s))
                            label for="profile-pick" { "Profile" }
                            select id="profile-pick" name="profile" {
                                @for t in list { option value=(s_of(t, "identifier")) { (s_of(t, "display_name")) " (" (s_of(t, "identifier")) ")" } }
                            }
                            button name="action" value="install" type="submit" { "Install profile" }
                            button name="action" value="remove" type="submit" { "Remove profile" }
                        }
                    }
                }
            }
        }
        h2 { "Inventory" }
        @match dv["inventory"].as_object() {
            Some(inv) if !inv.is_empty() => {
                @for (kind, item) in inv {
                    details.inventory { summary { (kind) } (value_view(item)) }
                }
            }
            _ => { p { "No inventory collected yet." } }
        }
        @if let Some(decl) = declarations.body["declarations"].as_array().filter(|d| !d.is_empty()) {
            h2 { "Declarations" }
            (value_view(&Value::Array(decl.clone())))
        }
        @if dv["fleet"].is_object() {
            h2 { "Groups and blueprints" }
            p { "Groups: "
                @match dv["fleet"]["groups"].as_array().filter(|g| !g.is_empty()) {
                    Some(gs) => { @for (i, g) in gs.iter().enumerate() { @if i > 0 { ", " } a href=(format!("/ui/groups/{}", seg(g.as_str().unwrap_or("")))) { (text(g)) } } }
                    None => { "none" }
                }
            }
            @if let Some(bs) = dv["fleet"]["blueprints"].as_array().filter(|b| !b.is_empty()) {
                table { thead { tr { th { "Blueprint" } th { "State" } th { "Items" } } }
                    tbody { @for b in bs { tr {
                        td { a href=(format!("/ui/blueprints/{}", seg(s_of(b, "name")))) { (s_of(b, "name")) } }
                        td { span class=(super::policy::state_class(s_of(b, "state"))) { (s_of(b, "state")) } }
                        td { (super::policy::items_text(&b["items"])) }
                    } } } }
            }
        }
        h2 { "Profiles" }
        @match profiles.body["profiles"].as_array() {
            Some(list) if !list.is_empty() => {
                table { thead { tr { th { "Identifier" } th { "State" } th { "Updated" } } }
                    tbody { @for pr in list { tr { td { (s_of(pr, "identifier")) } td { (text(&pr["state"])) } td { (text(&pr["updated_at"])) } } } } }
            }
            _ => { p { "None installed or pending." } }
        }
        h2 { "Commands" }
        @if history.is_empty() { p { "No commands yet." } }
        @for cmd in &history {
            details.command open[history.first() == Some(cmd)] {
                summary {
                    strong { (s_of(cmd, "request_type")) } " · "
                    span class=(status_class(s_of(cmd, "status"))) { (s_of(cmd, "status")) }
                    " · " (s_of(cmd, "updated_at"))
                }
                p { small { "Command " code { (s_of(cmd, "command_uuid")) } ", queued " (s_of(cmd, "queued_at")) } }
                @if let Some(chain) = cmd["error_chain"].as_array().filter(|c| !c.is_empty()) {
                    ul.bad { @for e in chain { li { (text(&e["LocalizedDescription"])) " (" (text(&e["ErrorDomain"])) " " (text(&e["ErrorCode"])) ")" } } }
                }
                @if !cmd["result"].is_null() {
                    (result_view(&cmd["result"]))
                }
            }
        }
    };
    layout(&s, &name, flash.as_ref(), body)
}

fn status_class(s: &str) -> &'static str {
    match s {
        "Acknowledged" => "good",
        "Error" | "CommandFormatError" => "bad",
        "NotNow" | "Pending" => "warn",
        _ => "",
    }
}

fn action_form(s: &Session, id: &str, action: &str, label: &str, fields: Markup) -> Markup {
    html! {
        form method="post" action=(format!("/ui/devices/{}/actions", seg(id))) {
            (csrf(s))
            input type="hidden" name="action" value=(action);
            (fields)
            button type="submit" class=(if action == "erase" { "danger" } else { "" }) { (label) }
        }
    }
}

/// A command's result as the device sent it (the API decodes the plist to JSON).
fn result_view(r: &Value) -> Markup {
    let shown = match r {
        Value::Object(o) => {
            let mut o = o.clone();
            for k in ["CommandUUID", "Status", "UDID"] {
                o.remove(k);
            }
            Value::Object(o)
        }
        other => other.clone(),
    };
    html! { div.result { (value_view(&shown)) } }
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    action: String,
    message: Option<String>,
    phone: Option<String>,
    confirm: Option<String>,
    profile: Option<String>,
}

pub async fn device_action(
    State(c): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ActionForm>,
) -> Response {
    let s = posted!(c, h, f.csrf.as_deref());
    let page = format!("/ui/devices/{}", seg(&id));
    let back = |flash: Result<String, String>| back_to(&page, flash);
    let command = |rt: &str, extra: Value| -> Value {
        let mut cmd = json!({"RequestType": rt});
        if let (Some(o), Value::Object(e)) = (cmd.as_object_mut(), extra) {
            o.extend(e);
        }
        json!({"targets": [id], "command": cmd})
    };
    let (label, reply) = match f.action.as_str() {
        "information" => (
            "DeviceInformation queued",
            c.post_json(
                &s,
                "/v1/commands",
                &command(
                    "DeviceInformation",
                    json!({"Queries": [
                        "DeviceName", "OSVersion", "BuildVersion", "ModelName", "Model", "ProductName", "SerialNumber",
                        "IMEI", "MEID", "WiFiMAC", "BluetoothMAC", "DeviceCapacity", "AvailableDeviceCapacity", "BatteryLevel",
                        "IsSupervised", "IsActivationLockEnabled"
                    ]}),
                ),
            )
            .await,
        ),
        "lock" => {
            let mut extra = serde_json::Map::new();
            if let Some(m) = f.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                extra.insert("Message".into(), json!(m));
            }
            if let Some(p) = f.phone.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
                extra.insert("PhoneNumber".into(), json!(p));
            }
            (
                "DeviceLock queued",
                c.post_json(&s, "/v1/commands", &command("DeviceLock", Value::Object(extra))).await,
            )
        }
        "clear-passcode" => (
            "ClearPasscode queued",
            c.post_json(&s, "/v1/commands", &command("ClearPasscode", json!({}))).await,
        ),
        "erase" => {
            let d = c.get(&s, &format!("/v1/devices/{}", seg(&id))).await;
            if !d.ok() {
                return back(Err(d.error()));
            }
            let name = device_name(&d.body);
            if f.confirm.as_deref().map(str::trim) != Some(name.as_str()) {
                return back(Err(format!("Not erased: type the device name {name:?} exactly to confirm.")));
            }
            (
                "EraseDevice queued",
                c.post_json(&s, "/v1/commands", &command("EraseDevice", json!({}))).await,
            )
        }
        "push" => ("Pushed", c.post_json(&s, "/v1/push", &json!({"targets": [id]})).await),
        "install" | "remove" => {
            let Some(p) = f.profile.as_deref().filter(|p| !p.is_empty()) else {
                return back(Err("Choose a profile.".into()));
            };
            let path = format!("/v1/profiles/{}/{}", seg(p), f.action);
            let label = if f.action == "install" {
                "InstallProfile queued"
            } else {
                "RemoveProfile queued"
            };
            (label, c.post_json(&s, &path, &json!({"targets": [id]})).await)
        }
        other => return back(Err(format!("Unknown action {other:?}."))),
    };
    if reply.ok() {
        tracing::info!(account = %s.name, enrollment = %id, action = %f.action, "console action");
        back(Ok(label.to_owned()))
    } else {
        back(Err(reply.error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_check_in_and_os_filters() {
        let now = 100 * 86_400;
        assert!(seen_matches("1", now - 3600, now));
        assert!(!seen_matches("1", now - 2 * 86_400, now));
        assert!(seen_matches("stale7", now - 8 * 86_400, now));
        assert!(!seen_matches("stale7", now - 86_400, now));
        assert!(seen_matches("nonsense", 0, now), "an unknown filter filters nothing");
        assert!(os_matches("18", "18.1") && os_matches("18.1", "18.1") && os_matches("18.1", "18.1.2"));
        assert!(!os_matches("18.1", "18.10") && !os_matches("1", "18.1"));
    }
}
