//! Bounded parsing of property lists from outside bytes (device requests,
//! profile uploads, signed content, stored bodies).
//!
//! `plist::Value::from_reader` builds its value iteratively, but everything
//! that follows is recursive: dropping a `Value`, cloning it, serde's
//! `from_bytes`/`from_value`, and our own walks (validators, `$VARIABLE`
//! filling, plist → JSON). A body 40,000 arrays deep overflows a worker's
//! stack and aborts the process. So every plist that comes from outside is
//! built here, from `plist`'s event stream, with three bounds checked as each
//! event arrives — before any recursion can happen:
//!
//! * nesting: at most [`MAX_DEPTH`] arrays/dictionaries (the root counts as
//!   one). Apple's real payloads nest fewer than ten. A command made from admin
//!   JSON (which `serde_json` bounds at 128) is held to the same bound with
//!   [`dict_depth`] before it is queued, and the admin API's JSON views of
//!   stored plists (a few levels of envelope around them) stay well under
//!   `serde_json`'s 128, so every client can read them.
//! * values: at most [`MAX_VALUES`] values and keys in all. A binary plist may
//!   reference one object many times (the reader expands each reference), so
//!   a 1 KB "fan-in" document can stand for 2⁶⁰ values: it is refused after
//!   `MAX_VALUES` events, in bounded time — sooner for a small input, which may
//!   hold at most [`VALUES_PER_BYTE`] values per byte (plus 4,096). Cycles are
//!   refused by the reader.
//! * bytes: the strings, keys and data read may add up to at most
//!   [`MAX_EXPANSION`] times the input plus 1 MiB (shared references to one
//!   large string are expanded once per reference).
//!
//! Anything over a bound is an error; nothing partial is returned.
//!
//! Other parsers: `roxmltree` (Cisco ISE's XML) recurses once per element with
//! no bound of its own, so [`xml_too_deep`] measures element nesting first.
//! `serde_json` refuses nesting past 128 before it recurses. OpenSSL's ASN.1
//! decoder bounds constructed nesting (30) itself, and the RustCrypto `der`
//! types we decode (`cms`, `x509-cert`) are not recursive; `tests/hostile.rs`
//! sends 10⁵-deep inputs to each. Depends on nothing of ours.

use plist::stream::{Event, Reader};
use plist::{Dictionary, Value};
use thiserror::Error;

/// The deepest nesting of arrays and dictionaries accepted (the root is 1).
pub const MAX_DEPTH: usize = 64;
/// The most values (keys included) one property list may hold, once expanded.
pub const MAX_VALUES: usize = 1 << 20;
/// Values allowed per input byte (plus 4,096), below [`MAX_VALUES`]: a plist
/// without shared references has fewer values than bytes, so a small body
/// cannot make the reader expand a million references before any identity
/// check.
pub const VALUES_PER_BYTE: usize = 16;
/// Strings and data may add up to this many times the input, plus 1 MiB.
pub const MAX_EXPANSION: usize = 16;

/// Why outside bytes were not accepted as a property list.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlistError {
    #[error("{0}")]
    Syntax(String),
    #[error("nested deeper than {MAX_DEPTH} arrays and dictionaries")]
    TooDeep,
    #[error("more values than {VALUES_PER_BYTE} per input byte (at most {MAX_VALUES})")]
    TooManyValues,
    #[error("strings and data expand to more than {MAX_EXPANSION} times the input")]
    TooLarge,
}

enum Frame {
    Array(Vec<Value>),
    Dict(Dictionary, Option<String>),
}

/// Parse XML, binary or ASCII plist bytes into a `Value`, within the bounds
/// above. Never recurses, never panics.
pub fn parse_value(bytes: &[u8]) -> Result<Value, PlistError> {
    let budget = bytes.len().saturating_mul(MAX_EXPANSION).saturating_add(1 << 20);
    let mut spent = 0usize;
    let mut values = 0usize;
    let max_values = MAX_VALUES.min(bytes.len().saturating_mul(VALUES_PER_BYTE).saturating_add(4096));
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    for event in Reader::new(std::io::Cursor::new(bytes)) {
        let event = event.map_err(|e| PlistError::Syntax(e.to_string()))?;
        if root.is_some() {
            return Err(PlistError::Syntax("content after the root value".into()));
        }
        if !matches!(event, Event::EndCollection) {
            values += 1;
            if values > max_values {
                return Err(PlistError::TooManyValues);
            }
        }
        let value = match event {
            Event::StartArray(len) | Event::StartDictionary(len) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(PlistError::TooDeep);
                }
                // The length is the sender's claim: never reserve much on it.
                let hint = len.and_then(|n| usize::try_from(n).ok()).unwrap_or(0).min(64);
                stack.push(match event {
                    Event::StartArray(_) => Frame::Array(Vec::with_capacity(hint)),
                    _ => Frame::Dict(Dictionary::new(), None),
                });
                continue;
            }
            Event::EndCollection => match stack.pop() {
                Some(Frame::Array(a)) => Value::Array(a),
                Some(Frame::Dict(d, None)) => Value::Dictionary(d),
                Some(Frame::Dict(_, Some(k))) => return Err(PlistError::Syntax(format!("dictionary key {k:?} has no value"))),
                None => return Err(PlistError::Syntax("unbalanced end of a collection".into())),
            },
            Event::Boolean(b) => Value::Boolean(b),
            Event::Data(d) => {
                spend(&mut spent, budget, d.len())?;
                Value::Data(d.into_owned())
            }
            Event::Date(d) => Value::Date(d),
            Event::Integer(i) => Value::Integer(i),
            Event::Real(r) => Value::Real(r),
            Event::String(s) => {
                spend(&mut spent, budget, s.len())?;
                Value::String(s.into_owned())
            }
            Event::Uid(u) => Value::Uid(u),
            _ => return Err(PlistError::Syntax("an unknown kind of value".into())),
        };
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Array(a)) => a.push(value),
            Some(Frame::Dict(d, key)) => match key.take() {
                Some(k) => {
                    d.insert(k, value);
                }
                None => match value {
                    Value::String(k) => *key = Some(k),
                    _ => return Err(PlistError::Syntax("a dictionary key is not a string".into())),
                },
            },
        }
    }
    if !stack.is_empty() {
        return Err(PlistError::Syntax("the document ends inside a collection".into()));
    }
    root.ok_or_else(|| PlistError::Syntax("no value".into()))
}

/// [`parse_value`], whose root must be a dictionary.
pub fn parse_dictionary(bytes: &[u8]) -> Result<Dictionary, PlistError> {
    match parse_value(bytes)? {
        Value::Dictionary(d) => Ok(d),
        _ => Err(PlistError::Syntax("the root is not a dictionary".into())),
    }
}

/// [`parse_value`], then serde into `T` (whose recursion is now bounded).
pub fn from_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PlistError> {
    plist::from_value(&parse_value(bytes)?).map_err(|e| PlistError::Syntax(e.to_string()))
}

/// How deeply a dictionary nests arrays and dictionaries (itself counted as
/// 1), measured without recursion.
pub fn dict_depth(d: &Dictionary) -> usize {
    let mut max = 1;
    let mut stack: Vec<(&Value, usize)> = d.values().map(|v| (v, 2)).collect();
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(depth);
                stack.extend(a.iter().map(|c| (c, depth + 1)));
            }
            Value::Dictionary(m) => {
                max = max.max(depth);
                stack.extend(m.values().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    max
}

/// Does XML text nest elements deeper than `max`? Measured without recursion,
/// stopping as soon as it does. Comments, CDATA, processing instructions,
/// declarations and quoted attribute values are skipped, so what they hide
/// is not counted; anything odd counts as deeper, never shallower (the parser
/// refuses it anyway). For `roxmltree`, which recurses per element.
pub fn xml_too_deep(text: &[u8], max: usize) -> bool {
    let find = |from: usize, pat: &[u8]| {
        text.get(from..)
            .and_then(|t| t.windows(pat.len()).position(|w| w == pat))
            .map(|p| from + p)
    };
    let (mut i, mut depth) = (0usize, 0usize);
    while let Some(p) = text.get(i..).and_then(|t| t.iter().position(|&b| b == b'<')) {
        i += p;
        let rest = &text[i..];
        let skip_to = |pat: &[u8], from: usize| find(i + from, pat).map(|e| e + pat.len());
        let next = if rest.starts_with(b"<!--") {
            skip_to(b"-->", 4)
        } else if rest.starts_with(b"<![CDATA[") {
            skip_to(b"]]>", 9)
        } else if rest.starts_with(b"<?") {
            skip_to(b"?>", 2)
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            skip_to(b">", 2)
        } else if rest.starts_with(b"<!") {
            skip_to(b">", 2)
        } else {
            // An opening tag: to its '>' outside quotes; "/>" closes it at once.
            let mut quote = None;
            let mut end = None;
            for (k, &b) in rest.iter().enumerate().skip(1) {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, b'>') => {
                        end = Some(k);
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(k) = end {
                if rest[k - 1] != b'/' {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
            }
            end.map(|k| i + k + 1)
        };
        match next {
            Some(n) => i = n,
            None => return false, // unterminated: the parser refuses it
        }
    }
    false
}

fn spend(spent: &mut usize, budget: usize, n: usize) -> Result<(), PlistError> {
    *spent = spent.saturating_add(n);
    if *spent > budget {
        return Err(PlistError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml_nested(depth: usize) -> Vec<u8> {
        let mut s = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">"#);
        for _ in 0..depth - 1 {
            s.push_str("<array>");
        }
        s.push_str("<dict><key>k</key><string>v</string></dict>");
        for _ in 0..depth - 1 {
            s.push_str("</array>");
        }
        s.push_str("</plist>");
        s.into_bytes()
    }

    /// A binary plist by hand: objects (already encoded) and the root index.
    fn bplist(objects: &[Vec<u8>], root: u64) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for o in objects {
            offsets.push(out.len() as u64);
            out.extend_from_slice(o);
        }
        let table = out.len() as u64;
        for o in &offsets {
            out.extend_from_slice(&(*o as u32).to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.push(4); // offset size
        out.push(4); // ref size
        out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
        out.extend_from_slice(&root.to_be_bytes());
        out.extend_from_slice(&table.to_be_bytes());
        out
    }

    /// An array object of 4-byte refs.
    fn barray(refs: &[u32]) -> Vec<u8> {
        let mut o = Vec::new();
        if refs.len() < 15 {
            o.push(0xa0 | refs.len() as u8);
        } else {
            o.push(0xaf);
            o.push(0x12); // a 4-byte integer follows
            o.extend_from_slice(&(refs.len() as u32).to_be_bytes());
        }
        for r in refs {
            o.extend_from_slice(&r.to_be_bytes());
        }
        o
    }

    /// Object i (i ≥ 1) is an array holding object i-1 `fan` times; object 0 is a string.
    fn bplist_chain(levels: usize, fan: usize) -> Vec<u8> {
        let mut objects = vec![b"\x51x".to_vec()];
        for i in 1..=levels {
            objects.push(barray(&vec![(i - 1) as u32; fan]));
        }
        bplist(&objects, levels as u64)
    }

    #[test]
    fn depth_exactly_at_the_bound_passes_and_one_more_fails() {
        let v = parse_value(&xml_nested(MAX_DEPTH)).unwrap();
        assert!(matches!(v, Value::Array(_)));
        assert_eq!(parse_value(&xml_nested(MAX_DEPTH + 1)), Err(PlistError::TooDeep));
        // Binary: a chain of one-element arrays ending in a string.
        assert!(parse_value(&bplist_chain(MAX_DEPTH, 1)).is_ok());
        assert_eq!(parse_value(&bplist_chain(MAX_DEPTH + 1, 1)), Err(PlistError::TooDeep));
    }

    #[test]
    fn a_hundred_thousand_deep_is_refused_without_overflowing() {
        // On a small stack, as a worker would be: the refusal must not recurse.
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let ascii = format!("{}{}", "(".repeat(100_000), ")".repeat(100_000));
                [
                    parse_value(&xml_nested(100_000)),
                    parse_value(&bplist_chain(100_000, 1)),
                    parse_value(ascii.as_bytes()),
                ]
            })
            .unwrap();
        assert_eq!(
            t.join().unwrap(),
            [Err(PlistError::TooDeep), Err(PlistError::TooDeep), Err(PlistError::TooDeep)]
        );
    }

    #[test]
    fn a_small_body_may_not_stand_for_many_values() {
        // 4 levels of 16 references: ~70,000 values from a few hundred bytes — under
        // MAX_VALUES, but far more than 16 per byte.
        let doc = bplist_chain(4, 16);
        assert!(doc.len() < 1024, "{}", doc.len());
        assert_eq!(parse_value(&doc), Err(PlistError::TooManyValues));
        // Without sharing, the same shape is within the budget.
        assert!(parse_value(&bplist_chain(4, 1)).is_ok());
    }

    #[test]
    fn binary_fan_in_is_refused_quickly() {
        // 60 levels of two references each: 2^60 values once expanded, 1 KB on the wire.
        let doc = bplist_chain(60, 2);
        assert!(doc.len() < 2048);
        let t = std::time::Instant::now();
        assert_eq!(parse_value(&doc), Err(PlistError::TooManyValues));
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "took {:?}", t.elapsed());
    }

    #[test]
    fn shared_large_string_is_refused_by_the_byte_budget() {
        // One 64 KiB string referenced 4,000 times: 256 MiB expanded from ~80 KB.
        let mut s = vec![0x5f, 0x12];
        s.extend_from_slice(&(65_536u32).to_be_bytes());
        s.extend(std::iter::repeat_n(b'a', 65_536));
        let doc = bplist(&[s, barray(&[0; 4000])], 1);
        assert_eq!(parse_value(&doc), Err(PlistError::TooLarge));
    }

    #[test]
    fn a_cycle_is_refused() {
        // Object 0 is an array that holds itself.
        let doc = bplist(&[barray(&[0])], 0);
        assert!(matches!(parse_value(&doc), Err(PlistError::Syntax(_))));
    }

    #[test]
    fn the_same_value_as_plist_builds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/nanomdm-device-captures");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            let theirs = plist::Value::from_reader(std::io::Cursor::new(&bytes));
            let ours = parse_value(&bytes);
            match theirs {
                Ok(v) => assert_eq!(ours.as_ref().ok(), Some(&v), "{}", e.path().display()),
                Err(_) => assert!(ours.is_err(), "{}", e.path().display()),
            }
            n += 1;
        }
        assert!(n > 0);
        // Binary round trip of a real capture.
        let d = crate::protocol::parse_dict(&std::fs::read(format!("{dir}/{}", first_plist(dir))).unwrap()).unwrap();
        let mut bin = Vec::new();
        Value::Dictionary(d.clone()).to_writer_binary(&mut bin).unwrap();
        assert_eq!(parse_dictionary(&bin).unwrap(), d);
    }

    fn first_plist(dir: &str) -> String {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".plist"))
            .collect();
        names.sort();
        names.remove(0)
    }

    #[test]
    fn dictionaries_need_string_keys_and_values() {
        let bad = br#"<plist><dict><key>a</key></dict></plist>"#;
        assert!(parse_value(bad).is_err());
        assert!(parse_value(b"").is_err());
        assert!(parse_value(b"garbage").is_err());
    }

    #[test]
    fn xml_depth_is_measured_without_recursion() {
        let nest = |n: usize| {
            format!(
                "<?xml version=\"1.0\"?><a>{}{}</a>",
                "<b x='>' y=\"/>\">".repeat(n - 1),
                "</b>".repeat(n - 1)
            )
        };
        assert!(!xml_too_deep(nest(MAX_DEPTH).as_bytes(), MAX_DEPTH));
        assert!(xml_too_deep(nest(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH));
        assert!(xml_too_deep(nest(100_000).as_bytes(), MAX_DEPTH));
        // Siblings, self-closing tags and hidden markup do not add up.
        let flat = format!(
            "<r>{}<!-- <a><a><a> --><![CDATA[<a><a>]]><?pi <a>?></r>",
            "<a/><b></b>".repeat(1000)
        );
        assert!(!xml_too_deep(flat.as_bytes(), 2));
        let doc = "<r><a><b/></a></r>";
        assert!(!xml_too_deep(doc.as_bytes(), 2));
        assert!(xml_too_deep(doc.as_bytes(), 1));
    }

    #[test]
    fn dict_depth_counts_containers() {
        let d = parse_dictionary(
            b"<plist><dict><key>a</key><array><dict/><string>x</string></array><key>b</key><integer>1</integer></dict></plist>",
        )
        .unwrap();
        assert_eq!(dict_depth(&d), 3);
        assert_eq!(dict_depth(&Dictionary::new()), 1);
        let Value::Array(a) = parse_value(&xml_nested(MAX_DEPTH)).unwrap() else {
            panic!()
        };
        let mut top = Dictionary::new();
        top.insert("a".into(), Value::Array(a));
        assert_eq!(dict_depth(&top), MAX_DEPTH + 1);
    }
}
