//! The console's access-token page: which shared token the identity
//! provider (PingID and others) should require now and from when the next
//! one, and which one devices carry. Values are never shown here (an admin
//! reads them with `mdmd access-tokens list`); role-checked through the API.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;

use super::pages::{layout, s_of, text, FlashQuery};
use super::{access, Access, Console};

type Shared = Arc<Console>;

pub async fn page(State(c): State<Shared>, h: HeaderMap, Query(fq): Query<FlashQuery>) -> Response {
    let s = signed_in!(c, h, "/ui/access-tokens");
    let flash = fq.flash();
    let r = c.get(&s, "/v1/access-tokens").await;
    let sched = &r.body["schedule"];
    let body = html! {
        p { "Shared tokens for identity providers, put into managed apps' configuration as "
            code { "$ACCESS_TOKEN" } " (docs/access-tokens.md). A new token goes to the devices at once; "
            "give the identity provider the same effective date, from when it requires the token." }
        @if !r.ok() { p.bad { (r.error()) } }
        @else {
            h2 { "Schedule" }
            dl {
                dt { "Required now" }
                dd { @if let Some(id) = sched["required"]["id"].as_str() { code { (id) } " since " (text(&sched["required"]["since"])) }
                     @else { "none in effect yet" } }
                dt { "Next" }
                dd { @if let Some(id) = sched["next"]["id"].as_str() { code { (id) } " required from " (text(&sched["next"]["from"])) }
                     @else { "none scheduled" } }
                dt { "On the devices" }
                dd { @if let Some(id) = sched["carried"].as_str() { code { (id) } } @else { "none" } }
            }
            h2 { "Tokens" }
            @match r.body["tokens"].as_array() {
                Some(l) if !l.is_empty() => {
                    table { thead { tr { th { "Id" } th { "Status" } th { "Effective from" } th { "Created" } th { "Revoked" } th { "On devices" } } }
                        tbody { @for t in l { tr {
                            td { code { (s_of(t, "id")) } }
                            td class=[(s_of(t, "status") == "revoked").then_some("bad")] { (s_of(t, "status")) }
                            td { (text(&t["effective_at"])) }
                            td { (text(&t["created_at"])) }
                            td { (text(&t["revoked_at"])) }
                            td { @if t["carried"] == true { "yes" } @else { "no" } }
                        } } } }
                }
                _ => { p { "No token yet: " code { "mdmd access-tokens generate" } "." } }
            }
        }
    };
    layout(&s, "Access tokens", flash.as_ref(), body)
}
