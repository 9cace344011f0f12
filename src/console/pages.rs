//! The console's pages: each reads what it shows from the admin API (as the signed-in account)
//! and renders it with `maud`; each form posts back here and becomes one API request.

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{access, access_post, seg, urlencoding, Access, ApiReply, Console, Session};

type Shared = Arc<Console>;

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · mdmd" }
            link rel="stylesheet" href="/ui/console.css";
        }
    }
}

/// A page for a signed-in person: navigation, who they are, sign-out, then the content.
pub(super) fn layout(s: &Session, title: &str, flash: Option<&Flash>, body: Markup) -> Response {
    let nav = [
        ("/ui/", "Dashboard"),
        ("/ui/devices", "Devices"),
        ("/ui/profiles", "Profiles"),
        ("/ui/groups", "Groups"),
        ("/ui/blueprints", "Blueprints"),
        ("/ui/apps", "Apps"),
        ("/ui/enrollment", "Enrollment"),
        ("/ui/ade", "ADE"),
        ("/ui/access-tokens", "Access tokens"),
        ("/ui/certificates", "Certificates"),
    ];
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        span.brand { "mdmd" }
                        @for (href, label) in nav {
                            a href=(href) aria-current=[(label == title).then_some("page")] { (label) }
                        }
                    }
                    form.who method="post" action="/ui/logout" {
                        span { (s.name) " (" (s.role.as_str()) ")" }
                        (csrf(s))
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(f) = flash { (f.render()) }
                    (body)
                }
            }
        }
    };
    page.into_response()
}

/// A message above a page: what an action did or why it failed.
pub struct Flash {
    ok: bool,
    text: String,
    problems: Vec<(String, String)>,
}

impl Flash {
    fn from_reply(r: &ApiReply, ok_text: impl Into<String>) -> Flash {
        if r.ok() {
            return Flash {
                ok: true,
                text: ok_text.into(),
                problems: vec![],
            };
        }
        let problems = r.body["problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["path"].as_str().unwrap_or("").to_owned(),
                            p["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Flash {
            ok: false,
            text: r.error(),
            problems,
        }
    }

    pub(super) fn error(text: impl Into<String>) -> Flash {
        Flash {
            ok: false,
            text: text.into(),
            problems: vec![],
        }
    }

    fn render(&self) -> Markup {
        html! {
            div class=(if self.ok { "flash ok" } else { "flash error" }) role=(if self.ok { "status" } else { "alert" }) {
                p { (self.text) }
                @if !self.problems.is_empty() {
                    table.problems {
                        thead { tr { th { "Key" } th { "Problem" } } }
                        tbody {
                            @for (k, m) in &self.problems {
                                tr { td { code { (k) } } td { (m) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A page for anyone (errors, refusals), with its status.
pub fn plain(status: StatusCode, title: &str, text: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" {
                    h1 { (title) }
                    p { (text) }
                    p { a href="/ui/" { "Back to the console" } }
                }
            }
        }
    };
    (status, page).into_response()
}

pub fn login_page(token: &str, next: &str, error: Option<&str>, idp: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main id="main" .narrow {
                    h1 { "mdmd · sign in" }
                    @if error.is_some() {
                        div.flash.error role="alert" { p { "Wrong name or secret." } }
                    }
                    @if let Some(name) = idp {
                        p { a.button id="sso" href={ "/ui/sso?next=" (super::urlencoding(next)) } { "Sign in with " (name) } }
                        p { "Or with an mdmd account:" }
                    }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="csrf" value=(token);
                        input type="hidden" name="next" value=(next);
                        label for="name" { "Account" }
                        input id="name" name="name" autocomplete="username" required autofocus;
                        label for="secret" { "Secret (the account's secret, or the admin API key for admin)" }
                        input id="secret" name="secret" type="password" autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

pub(super) fn s_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A JSON value as short text for a table cell.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn days_class(days: Option<i64>) -> &'static str {
    match days {
        Some(d) if d < 14 => "bad",
        Some(d) if d < 30 => "warn",
        Some(_) => "good",
        None => "",
    }
}

// ---- Dashboard

pub async fn dashboard(State(c): State<Shared>, h: HeaderMap) -> Response {
    let s = signed_in!(c, h, "/ui/");
    let (stats, health, compliance) = tokio::join!(c.get(&s, "/v1/stats"), c.get(&s, "/v1/health"), c.get(&s, "/v1/compliance?limit=1"));
    let counts = &compliance.body["counts"];
    let n = |k: &str| counts.get(k).and_then(Value::as_u64).unwrap_or(0);
    let certs = &health.body["certificates"];
    let fleet = if crate::api::permissions::allowed(s.role, &Method::GET, "/v1/devices") {
        c.fleet.get(&c.app).await
    } else {
        None
    };
    let webhooks = &stats.body["webhooks"];
    let body = html! {
        section.cards aria-label="Fleet" {
            div.card { h2 { "Enrolled" } p.big { (text(&stats.body["enrollments"])) } p { a href="/ui/devices" { "All devices" } } }
            div.card { h2 { "Compliant" } p.big.good { (n("compliant")) } }
            div.card { h2 { "Non-compliant" } p.big.bad { (n("non_compliant")) } p { a href="/ui/devices?compliance=non_compliant" { "See them" } } }
            div.card { h2 { "Unknown" } p.big { (n("unknown")) } }
            div.card { h2 { "Commands pending" } p.big { (text(&stats.body["pending_commands"])) } }
            div.card { h2 { "Failed, last 24 h" } p.big.bad { (text(&stats.body["commands_last_day"]["failed"])) }
                p { small { (text(&stats.body["commands_last_day"]["acknowledged"])) " acknowledged (this instance)" } } }
            div.card { h2 { "Webhook backlog" }
                @if webhooks.is_null() { p.big { "off" } p { small { "no receivers configured" } } }
                @else { p.big { (text(&webhooks["outbox_depth"])) } p { small { "oldest waiting " (text(&webhooks["oldest_waiting_seconds"])) " s" } } } }
        }
        @if !compliance.ok() { (Flash::error(compliance.error()).render()) }
        @if let Some(f) = &fleet {
            h2 { "Enrollments and check-ins, last 30 days" }
            (chart(&f.per_day(crate::clock::now(), 30)))
            p.sub { small { "From the fleet summary: " (f.rows.len()) " devices, read " (f.built.elapsed().as_secs()) " s ago in " (f.build_ms) " ms." } }
        }
        h2 { "Certificates" }
        table {
            thead { tr { th { "Certificate" } th { "Expires" } th { "Days left" } } }
            tbody {
                @for (k, label) in [("ca", "Device CA"), ("tls", "Server TLS"), ("signing", "Profile signing"), ("push", "APNs push")] {
                    @let c = &certs[k];
                    @let days = c["days_left"].as_i64();
                    tr {
                        td { (label) }
                        td { (text(&c["not_after"])) }
                        td class=(days_class(days)) { (days.map_or("not set".to_owned(), |d| d.to_string())) }
                    }
                }
            }
        }
        h2 { "Warnings" }
        @match health.body["warnings"].as_array() {
            Some(w) if !w.is_empty() => { ul.warnings { @for x in w { li { (text(x)) } } } }
            _ => { p { "None." } }
        }
    };
    layout(&s, "Dashboard", None, body)
}

/// Two bar series per day as an inline SVG (no script, no external asset): new enrollments and
/// devices whose last check-in fell on that day.
fn chart(days: &[(i64, u64, u64)]) -> Markup {
    let max = days.iter().map(|d| d.1.max(d.2)).max().unwrap_or(0).max(1) as f64;
    let (w, h, pad) = (900.0f64, 180.0f64, 20.0f64);
    let slot = (w - pad) / days.len().max(1) as f64;
    let bar = (slot / 2.0 - 1.0).max(1.0);
    let label = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(|d| format!("{:02}-{:02}", u8::from(d.month()), d.day()))
            .unwrap_or_default()
    };
    let total_e: u64 = days.iter().map(|d| d.1).sum();
    let total_c: u64 = days.iter().map(|d| d.2).sum();
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {w} {}", h + 24.0)) role="img" aria-label="Enrollments and last check-ins per day" {
                @for (i, (day, enrolled, checked)) in days.iter().enumerate() {
                    @let x = pad + i as f64 * slot;
                    @let he = (*enrolled as f64 / max) * h;
                    @let hc = (*checked as f64 / max) * h;
                    rect x=(format!("{x:.1}")) y=(format!("{:.1}", h - he)) width=(format!("{bar:.1}")) height=(format!("{he:.1}")) fill="#0b57d0" {
                        title { (label(*day)) ": " (enrolled) " enrolled" }
                    }
                    rect x=(format!("{:.1}", x + bar + 1.0)) y=(format!("{:.1}", h - hc)) width=(format!("{bar:.1}")) height=(format!("{hc:.1}")) fill="#1a7f37" {
                        title { (label(*day)) ": " (checked) " last checked in" }
                    }
                    @if i % 5 == 0 {
                        text x=(format!("{x:.1}")) y=(format!("{:.1}", h + 16.0)) font-size="11" fill="#57606a" { (label(*day)) }
                    }
                }
                line x1=(pad) y1=(h) x2=(w) y2=(h) stroke="#d0d7de" {}
                text x="0" y="12" font-size="11" fill="#57606a" { (max as u64) }
            }
            figcaption {
                span.key.enrolled { "■" } " enrolled that day, "
                span.key.checked { "■" } " last check-in that day · "
                (total_e) " enrolled and " (total_c) " checked in within 30 days"
            }
        }
    }
}

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

#[derive(Deserialize, Default)]
pub struct FlashQuery {
    done: Option<String>,
    error: Option<String>,
}

impl FlashQuery {
    pub(super) fn flash(&self) -> Option<Flash> {
        if let Some(e) = &self.error {
            return Some(Flash::error(e.clone()));
        }
        self.done.as_ref().map(|d| Flash {
            ok: true,
            text: d.clone(),
            problems: vec![],
        })
    }
}

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

/// Keys and values of an object, nested ones as their own small tables.
fn kv_table(v: &Value) -> Markup {
    match v.as_object() {
        Some(o) if !o.is_empty() => html! {
            table.kv { tbody { @for (k, x) in o { tr { th { (k) } td { (value_view(x)) } } } } }
        },
        _ => html! { p { "Not reported yet." } },
    }
}

pub(super) fn value_view(v: &Value) -> Markup {
    match v {
        Value::Object(_) => kv_table(v),
        Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
            html! { (a.iter().map(text).collect::<Vec<_>>().join(", ")) }
        }
        Value::Array(a) => html! { ol { @for x in a { li { (value_view(x)) } } } },
        other => html! { (text(other)) },
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

/// Back to a page after a form, with what happened above it (`done=` or `error=`).
pub(super) fn back_to(page: &str, outcome: Result<String, String>) -> Response {
    let q = match outcome {
        Ok(t) => format!("done={}", urlencoding(&t)),
        Err(e) => format!("error={}", urlencoding(&e)),
    };
    Redirect::to(&format!("{page}?{q}")).into_response()
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
