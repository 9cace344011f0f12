//! Log output that a client cannot forge or flood: every field of every event (text and JSON)
//! has its control characters escaped (`\n`, `\r`, `\t`, `\x1b` → `\u{1b}` …) and is cut to
//! `MAX_FIELD` characters plus "…", here in the formatter, so no call site has to remember it.
//! Numbers and booleans stay what they are (JSON readers rely on `status`, `ms`).
//! Also the one shape of an internal failure in the log: `internal` gives it a request id and
//! logs its whole chain of causes (`chain`), for the admin API and the device endpoints alike.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Longest field value written, in characters.
pub const MAX_FIELD: usize = 256;

/// `s` with control characters escaped, cut to `MAX_FIELD` characters (then "…").
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_FIELD + 8));
    for (n, c) in s.chars().enumerate() {
        if n >= MAX_FIELD {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text fields: `message key=value …`, every value cleaned.
#[derive(Debug, Default, Clone, Copy)]
pub struct SafeFields;

struct TextVisitor<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn put(&mut self, field: &Field, value: &str) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.w, "{sep}{}", clean(value))
        } else {
            write!(self.w, "{sep}{}={}", field.name(), clean(value))
        };
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format!("{value:?}"));
    }
}

impl<'w> FormatFields<'w> for SafeFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor {
            w: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

/// JSON lines: `timestamp`, `level`, `target`, the event's fields flattened (strings cleaned,
/// numbers and booleans as such) and the names of the spans it is in.
#[derive(Debug, Default, Clone, Copy)]
pub struct SafeJson;

struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl JsonVisitor {
    fn put(&mut self, field: &Field, v: serde_json::Value) {
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_owned(), v);
        }
    }
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, clean(value).into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(
            field,
            serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, serde_json::Value::Number),
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, clean(&format!("{value:?}")).into());
    }
}

impl<S, N> FormatEvent<S, N> for SafeJson
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &tracing::Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut v = JsonVisitor(serde_json::Map::new());
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        v.0.insert("timestamp".into(), ts.into());
        v.0.insert("level".into(), meta.level().as_str().into());
        event.record(&mut v);
        v.0.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope.from_root().map(|s| serde_json::json!({"name": s.name()})).collect();
            if !spans.is_empty() {
                v.0.insert("spans".into(), spans.into());
            }
        }
        let line = serde_json::to_string(&v.0).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Install the process's subscriber: `json` lines or text, on stderr, filtered by `MDMD_LOG`.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MDMD_LOG").unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .event_format(SafeJson)
            .fmt_fields(SafeFields)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .fmt_fields(SafeFields)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

/// The header carrying the id of a failed request (admin API and device endpoints).
pub const REQUEST_ID: &str = "x-request-id";

/// A short random id for one failed request (12 hex digits).
pub fn request_id() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// An error and its causes, outermost first, joined by ": " (a cause
/// whose text its wrapper already shows is not repeated).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Log an internal failure with a fresh request id; returns the id.
pub fn internal(what: &str, source: &(dyn std::error::Error + 'static)) -> String {
    let id = request_id();
    tracing::error!(request_id = %id, what, error = %chain(source), "internal error");
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans() {
        assert_eq!(clean("a\nb\x1b[31m\r\t"), "a\\nb\\u{1b}[31m\\r\\t");
        let long = "x".repeat(100_000);
        let c = clean(&long);
        assert_eq!(c.chars().count(), MAX_FIELD + 1);
        assert!(c.ends_with('…'));
        assert_eq!(clean("plain ü"), "plain ü");
    }
}
