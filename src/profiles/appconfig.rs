//! Managed app configuration as app vendors hand it over: a JSON object, or
//! an AppConfig text file of `key=value` lines (SphereShield's `AppConfig`,
//! and many others). The result is the JSON object mdmd keeps and sends as
//! the app's `Configuration`; values are taken literally (strings, from the
//! text form), and mdmd's variables in them (`$UDID`, `$USERNAME`,
//! `$ACCESS_TOKEN` …) are filled per device when sent.
//!
//! No crate reads this informal format (it is not INI: no sections, and a
//! value may hold `=`, `;` or `#`), so it is read here, strictly: a line
//! that is not `key=value`, a repeated key or an odd key is an error naming
//! the line, never a silent guess.

use serde_json::{Map, Value};

/// The largest configuration file taken.
pub const MAX_TEXT: usize = 256 * 1024;
/// The most keys taken.
pub const MAX_KEYS: usize = 2000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AppConfigError {
    #[error("the configuration is {0} bytes (at most {MAX_TEXT})")]
    TooLarge(usize),
    #[error("the configuration is empty")]
    Empty,
    #[error("not JSON: {0}")]
    Json(String),
    #[error("the JSON form must be an object ({{\"key\": value, …}})")]
    NotAnObject,
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("more than {MAX_KEYS} keys")]
    TooManyKeys,
}

/// A configuration and what is worth telling about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub configuration: Map<String, Value>,
    /// Values that look like another MDM's placeholders (`{DeviceUid}`,
    /// `%udid%`, `$DEVICE_UDID$`), which mdmd sends literally.
    pub warnings: Vec<String>,
}

/// Read a configuration in either form: JSON when it starts with `{`,
/// `key=value` lines otherwise (blank lines and lines starting with `#`,
/// `;` or `//` are comments; a value may be quoted).
pub fn parse(text: &str) -> Result<Imported, AppConfigError> {
    if text.len() > MAX_TEXT {
        return Err(AppConfigError::TooLarge(text.len()));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(AppConfigError::Empty);
    }
    let configuration = if trimmed.starts_with('{') {
        // serde_json refuses nesting past 128 levels on its own.
        let mut de = serde_json::Deserializer::from_str(trimmed);
        let read = <Strict as serde::Deserialize>::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        match read {
            Ok(Strict(Value::Object(o))) => {
                unsendable_keys(&o, "")?;
                o
            }
            Ok(_) => return Err(AppConfigError::NotAnObject),
            Err(e) => return Err(AppConfigError::Json(e.to_string())),
        }
    } else {
        lines(text)?
    };
    if configuration.len() > MAX_KEYS {
        return Err(AppConfigError::TooManyKeys);
    }
    let mut warnings = Vec::new();
    for (k, v) in &configuration {
        if let Some(s) = v.as_str().filter(|s| foreign_placeholder(s)) {
            warnings.push(format!(
                "{k} = {s:?} looks like another MDM's placeholder and is sent as written: mdmd's are $UDID, $SERIAL_NUMBER, $USERNAME, $EMAIL … (docs/apps.md)"
            ));
        }
    }
    Ok(Imported { configuration, warnings })
}

fn lines(text: &str) -> Result<Map<String, Value>, AppConfigError> {
    let mut out = Map::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') || l.starts_with("//") {
            continue;
        }
        let err = |why: String| AppConfigError::Line { line, why };
        let Some((k, v)) = l.split_once('=') else {
            return Err(err("expected key=value".into()));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(err("the key is empty".into()));
        }
        if let Some(c) = k.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Err(err(format!("the key {k:?} contains {c:?} (letters, digits, '_', '-' and '.')")));
        }
        if out.len() >= MAX_KEYS {
            return Err(AppConfigError::TooManyKeys);
        }
        let v = unquote(v.trim());
        if v.chars().any(|c| (c.is_control() && c != '\t') || not_xml(c)) {
            return Err(err(format!("the value of {k} contains a control character")));
        }
        if out.insert(k.to_owned(), Value::String(v.to_owned())).is_some() {
            return Err(err(format!("{k} is given twice")));
        }
    }
    if out.is_empty() {
        return Err(AppConfigError::Empty);
    }
    Ok(out)
}

/// U+FFFE and U+FFFF: not characters XML (the plist sent) can carry.
fn not_xml(c: char) -> bool {
    matches!(c, '\u{fffe}' | '\u{ffff}')
}

/// A key or string of the JSON form the device could not read (control
/// characters other than tab, newline and CR; U+FFFE, U+FFFF), named with
/// where it is. Depth is bounded by serde_json (128).
fn unsendable(v: &Value, at: &str) -> Result<(), AppConfigError> {
    let bad = |s: &str| {
        s.chars()
            .any(|c| (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || not_xml(c))
    };
    let here = |k: &str| if at.is_empty() { k.to_owned() } else { format!("{at}.{k}") };
    match v {
        Value::String(s) if bad(s) => Err(AppConfigError::Json(format!(
            "{}: a control character (or U+FFFE/U+FFFF) in the value",
            if at.is_empty() { "the configuration" } else { at }
        ))),
        Value::Array(a) => a.iter().enumerate().try_for_each(|(i, x)| unsendable(x, &here(&i.to_string()))),
        Value::Object(o) => unsendable_keys(o, at),
        _ => Ok(()),
    }
}

/// [`unsendable`] for an object's keys and values.
fn unsendable_keys(o: &Map<String, Value>, at: &str) -> Result<(), AppConfigError> {
    o.iter().try_for_each(|(k, x)| {
        let here = if at.is_empty() { k.to_owned() } else { format!("{at}.{k}") };
        if k.chars().any(|c| c.is_control() || not_xml(c)) {
            return Err(AppConfigError::Json(format!("the key {here:?} contains a control character")));
        }
        unsendable(x, &here)
    })
}

/// A JSON value read strictly: a key given twice in one object is an error
/// (serde_json's `Value` keeps the last one silently).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = a.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        use serde::de::Error as _;
        let mut out = Map::new();
        while let Some(k) = a.next_key::<String>()? {
            let Strict(v) = a.next_value()?;
            if out.contains_key(&k) {
                return Err(A::Error::custom(format!("the key {k:?} is given twice")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// `"…"` or `'…'` around a whole value come off.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// `{DeviceUid}`, `{{deviceid}}`, `%udid%`, `$DEVICE_UDID$`: placeholders of
/// other MDMs (mdmd's variables are `$NAME` / `${NAME}`).
fn foreign_placeholder(s: &str) -> bool {
    let word = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    // `{Name}` / `{{Name}}`, but not mdmd's `${NAME}`.
    let braced = s
        .match_indices('{')
        .any(|(i, _)| !s[..i].ends_with('$') && s[i + 1..].trim_start_matches('{').split_once('}').is_some_and(|(t, _)| word(t)));
    // `%name%` and `$NAME$`: a word between two of the same sign.
    let between = |sign: char| {
        let parts: Vec<&str> = s.split(sign).collect();
        parts.len() >= 3 && parts[1..parts.len() - 1].iter().any(|t| word(t))
    };
    braced || between('%') || between('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_lines_as_sphereshield_ships_them() {
        let text = "\u{feff}# SphereShield AppConfig\r\ndeviceId=$UDID\r\ndeviceIdType = UDID\r\nusername=$USERNAME\r\n\r\ncompanyName=\"Example Corp\"\r\ndefaultHost=https://lyncdiscover.example.com/?a=b\r\npackageKey=abc=def;ghi\r\n";
        let i = parse(text).unwrap();
        let c = &i.configuration;
        assert_eq!(c["deviceId"], "$UDID");
        assert_eq!(c["deviceIdType"], "UDID");
        assert_eq!(c["companyName"], "Example Corp");
        assert_eq!(c["defaultHost"], "https://lyncdiscover.example.com/?a=b");
        assert_eq!(c["packageKey"], "abc=def;ghi");
        assert_eq!(c.len(), 6);
        assert!(i.warnings.is_empty(), "{:?}", i.warnings);
    }

    #[test]
    fn the_json_form_keeps_types_and_nesting() {
        let i = parse(r#" {"companyName": "X", "port": 443, "flags": {"a": true}, "hosts": ["a", "b"]} "#).unwrap();
        assert_eq!(i.configuration["port"], 443);
        assert_eq!(i.configuration["flags"]["a"], true);
        assert_eq!(
            parse("[1]"),
            Err(AppConfigError::Line {
                line: 1,
                why: "expected key=value".into()
            })
        );
        assert_eq!(
            parse("{\"a\": 1"),
            Err(AppConfigError::Json("EOF while parsing an object at line 1 column 7".into()))
        );
        assert!(matches!(
            parse(&format!("{}{}", "{\"a\":".repeat(200), "1")),
            Err(AppConfigError::Json(_))
        ));
        assert!(matches!(parse(r#"{"a": 1, "b": {"c": 2, "c": 3}}"#), Err(AppConfigError::Json(e)) if e.contains("\"c\" is given twice")));
        assert!(matches!(parse("{\"a\": \"x\\u0001\"}"), Err(AppConfigError::Json(_))));
        assert_eq!(
            parse("{\"a\": \"1\\n2\", \"n\": null, \"f\": 1.5}").unwrap().configuration["a"],
            "1\n2"
        );
    }

    #[test]
    fn bad_lines_are_named_never_guessed() {
        assert_eq!(
            parse("a=1\nno equals here\n"),
            Err(AppConfigError::Line {
                line: 2,
                why: "expected key=value".into()
            })
        );
        assert_eq!(
            parse("a=1\na=2"),
            Err(AppConfigError::Line {
                line: 2,
                why: "a is given twice".into()
            })
        );
        assert!(matches!(parse("=1"), Err(AppConfigError::Line { line: 1, .. })));
        assert!(matches!(parse("a b=1"), Err(AppConfigError::Line { line: 1, .. })));
        assert!(matches!(parse("a=x\u{7}y"), Err(AppConfigError::Line { line: 1, .. })));
        assert_eq!(parse("  \n# only a comment\n"), Err(AppConfigError::Empty));
        assert_eq!(parse(""), Err(AppConfigError::Empty));
        assert!(matches!(parse(&"a".repeat(MAX_TEXT + 1)), Err(AppConfigError::TooLarge(_))));
        let many: String = (0..=MAX_KEYS).map(|i| format!("k{i}=v\n")).collect();
        assert_eq!(parse(&many), Err(AppConfigError::TooManyKeys));
    }

    #[test]
    fn other_mdms_placeholders_are_warned_about() {
        for v in ["{DeviceUid}", "{{deviceid}}", "%udid%", "$DEVICE_UDID$", "user-{UserEmail}"] {
            let i = parse(&format!("deviceId={v}")).unwrap();
            assert_eq!(i.warnings.len(), 1, "{v}: {:?}", i.warnings);
        }
        for v in ["$UDID", "${SERIAL_NUMBER}", "plain", "50%", "a{b c}", "$5 and $6", "${UDID}-$EMAIL"] {
            let i = parse(&format!("deviceId={v}")).unwrap();
            assert!(i.warnings.is_empty(), "{v}: {:?}", i.warnings);
        }
    }
}
