//! The console's pages: each reads what it shows from the admin API (as the signed-in account)
//! and renders it with `maud`; each form posts back here and becomes one API request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;

use super::{access, urlencoding, Access, ApiReply, Console, Session};

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
    pub(super) fn from_reply(r: &ApiReply, ok_text: impl Into<String>) -> Flash {
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

pub(super) fn days_class(days: Option<i64>) -> &'static str {
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

#[derive(Deserialize, Default)]
pub struct FlashQuery {
    pub(super) done: Option<String>,
    pub(super) error: Option<String>,
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

/// Back to a page after a form, with what happened above it (`done=` or `error=`).
pub(super) fn back_to(page: &str, outcome: Result<String, String>) -> Response {
    let q = match outcome {
        Ok(t) => format!("done={}", urlencoding(&t)),
        Err(e) => format!("error={}", urlencoding(&e)),
    };
    Redirect::to(&format!("{page}?{q}")).into_response()
}

/// Keys and values of an object, nested ones as their own small tables.
pub(super) fn kv_table(v: &Value) -> Markup {
    match v.as_object() {
        Some(o) if !o.is_empty() => html! {
            table.kv { tbody { @for (k, x) in o { tr { th { (k) } td { (value_view(x)) } } } } }
        },
        _ => html! { p { "Not reported yet." } },
    }
}
