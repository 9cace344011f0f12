//! plist values as JSON for the admin API: `<data>` becomes base64, `<date>` RFC 3339.

use base64::Engine as _;
use serde_json::Value as Json;

pub fn plist_to_json(v: &plist::Value) -> Json {
    use plist::Value as P;
    match v {
        P::String(s) => Json::String(s.clone()),
        P::Boolean(b) => Json::Bool(*b),
        P::Integer(i) => match i.as_signed() {
            Some(s) => Json::from(s),
            None => Json::from(i.as_unsigned().unwrap_or_default()),
        },
        P::Real(r) => serde_json::Number::from_f64(*r).map(Json::Number).unwrap_or(Json::Null),
        P::Data(d) => Json::String(base64::engine::general_purpose::STANDARD.encode(d)),
        P::Date(d) => Json::String(d.to_xml_format()),
        P::Array(a) => Json::Array(a.iter().map(plist_to_json).collect()),
        P::Dictionary(d) => Json::Object(d.iter().map(|(k, v)| (k.clone(), plist_to_json(v))).collect()),
        P::Uid(u) => Json::from(u.get()),
        _ => Json::Null,
    }
}
