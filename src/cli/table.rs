//! The CLI's answers for people: aligned tables and short summaries with
//! relative times, used when stdout is a terminal (or with `-o table`).
//! Scripts get the API's JSON (`-o json`, the default when piped).

use serde_json::Value;

/// `2026-11-24T20:00:00Z` → "3 min ago" / "in 12 days".
pub fn relative(v: &Value) -> String {
    let Some(s) = v.as_str() else { return "-".into() };
    let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) else {
        return s.to_owned();
    };
    let d = t.unix_timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    let a = d.unsigned_abs();
    if a < 60 {
        return "just now".into();
    }
    let span = match a {
        60..=3_599 => format!("{} min", a / 60),
        3_600..=172_799 => format!("{} h", a / 3_600),
        _ => format!("{} days", a / 86_400),
    };
    if d < 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) if x.is_empty() => "-".into(),
        Value::String(x) => x.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(w[i] - c.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// An enrollment's state in a word.
fn state(d: &Value) -> &'static str {
    if d["checked_out"] == true {
        "checked out"
    } else if d["active"] == true {
        "active"
    } else {
        "enrolling"
    }
}

pub fn devices(v: &Value) -> String {
    let list = v["devices"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "No devices enrolled yet. Enroll one: mdmd invite (QR code), or try mdmd sim enroll.\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                s(&d["id"]),
                s(&d["info"]["serial_number"]),
                s(&d["info"]["device_name"]),
                s(&d["info"]["os_version"]),
                state(d).into(),
                relative(&d["last_seen_at"]),
                d["compliance"]["status"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    let mut out = table(&["ID", "SERIAL", "NAME", "OS", "STATE", "LAST SEEN", "COMPLIANCE"], &rows);
    if let Some(n) = v["next"].as_str() {
        out.push_str(&format!("… more: mdmd devices list --after {n}\n"));
    }
    out
}

pub fn device(d: &Value) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<22}{v}\n"));
    kv("Device", s(&d["id"]));
    kv("Name", s(&d["info"]["device_name"]));
    kv("Serial", s(&d["info"]["serial_number"]));
    kv("Model", format!("{} ({})", s(&d["info"]["product_name"]), s(&d["info"]["model"])));
    kv("OS", s(&d["info"]["os_version"]));
    kv("State", state(d).into());
    kv("Enrolled", relative(&d["enrolled_at"]));
    kv("Last seen", relative(&d["last_seen_at"]));
    kv("Pending commands", s(&d["pending_commands"]));
    let push = if d["push"].is_null() {
        "no token yet".to_owned()
    } else if !d["push"]["disabled"].is_null() && d["push"]["disabled"] != false {
        format!("disabled ({})", s(&d["push"]["disabled"]))
    } else {
        format!(
            "token {}; last push {} ({})",
            relative(&d["push"]["token_updated_at"]),
            relative(&d["push"]["last_push_at"]),
            s(&d["push"]["last_push_outcome"])
        )
    };
    kv("Push", push);
    if let Some(c) = d["compliance"].as_object() {
        let reasons: Vec<String> = c
            .get("reasons")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        let status = c.get("status").map(s).unwrap_or_default();
        kv(
            "Compliance",
            if reasons.is_empty() {
                status
            } else {
                format!("{status}: {}", reasons.join("; "))
            },
        );
    }
    for c in d["derived_credentials"].as_array().into_iter().flatten() {
        kv(
            "Derived credential",
            format!(
                "{} — {} (expires {}{})",
                s(&c["usage"]),
                s(&c["subject"]),
                relative(&crate_time(&c["not_after"])),
                if c["expiring"] == true { ", renew soon" } else { "" }
            ),
        );
    }
    for w in d["waiting_for_derived_credential"].as_array().into_iter().flatten() {
        kv("Waiting", format!("{} for a {} credential", s(&w["profile"]), s(&w["usages"])));
    }
    out.push_str("\nJSON: mdmd devices show ID -o json; commands: mdmd devices commands ID\n");
    out
}

/// Unix seconds (as the credential views have them) as RFC 3339.
fn crate_time(v: &Value) -> Value {
    match v.as_i64().and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) {
        Some(t) => t
            .format(&time::format_description::well_known::Rfc3339)
            .map(Value::String)
            .unwrap_or(Value::Null),
        None => v.clone(),
    }
}

pub fn command(c: &Value) -> String {
    let mut out = format!(
        "{} {} (queued {})\n\n",
        s(&c["request_type"]),
        s(&c["command_uuid"]),
        relative(&c["created_at"])
    );
    let rows: Vec<Vec<String>> = c["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let err = d["error_chain"]
                .as_array()
                .and_then(|a| a.first())
                .map(|e| {
                    e["LocalizedDescription"]
                        .as_str()
                        .or(e["localized_description"].as_str())
                        .unwrap_or("")
                        .to_owned()
                })
                .unwrap_or_default();
            vec![
                s(&d["enrollment"]),
                s(&d["status"]),
                relative(&d["updated_at"]),
                if d["not_now_count"].as_u64().unwrap_or(0) > 0 {
                    format!("NotNow ×{}", d["not_now_count"])
                } else {
                    String::new()
                },
                err,
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("No targets.\n");
    } else {
        out.push_str(&table(&["TARGET", "STATUS", "UPDATED", "", "ERROR"], &rows));
    }
    out.push_str("\nEach target's full answer: mdmd cmd show UUID -o json\n");
    out
}

pub fn certificates(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["serial"]),
                s(&c["subject"]),
                s(&c["purpose"]),
                s(&c["enrollment"]),
                relative(&c["not_after"]),
                if c["revoked"] == true { "revoked".into() } else { String::new() },
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No certificates issued yet.\n".into();
    }
    table(&["SERIAL", "SUBJECT", "PURPOSE", "ENROLLMENT", "EXPIRES", ""], &rows)
}

/// One cell: RFC 3339 times as relative ones, lists joined, nothing as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::String(x) if x.len() >= 20 && x.ends_with('Z') && x.as_bytes().get(10) == Some(&b'T') => relative(v),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(", "),
        other => s(other),
    }
}

/// The list under `key` as a table: one column per (header, JSON pointer
/// into each item); `empty` when there is nothing.
pub fn list(v: &Value, key: &str, cols: &[(&str, &str)], empty: &str) -> String {
    let items = v[key].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return format!("{empty}\n");
    }
    let header: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|it| cols.iter().map(|(_, p)| cell(it.pointer(p).unwrap_or(&Value::Null))).collect())
        .collect();
    table(&header, &rows)
}

/// `mdmd compliance`: the counts, then the devices in the status asked for.
pub fn compliance(v: &Value) -> String {
    let c = &v["counts"];
    let mut out = format!(
        "compliant {}   non-compliant {}   unknown {}   (policy {}{})\n\n",
        s(&c["compliant"]),
        s(&c["non_compliant"]),
        s(&c["unknown"]),
        s(&v["policy"]["version"]),
        v["policy"]["file"].as_str().map(|f| format!(", {f}")).unwrap_or_default()
    );
    let status = v["status"].as_str().unwrap_or("non_compliant");
    out.push_str(&list(
        v,
        "devices",
        &[
            ("DEVICE", "/enrollment"),
            ("REASONS", "/compliance/reasons"),
            ("EVALUATED", "/compliance/evaluated_at"),
        ],
        &format!("No devices are {status}."),
    ));
    if let Some(n) = v["next"].as_str() {
        out.push_str(&format!("… more: mdmd compliance --status {status} --after {n}\n"));
    }
    out
}

/// `mdmd push-cert show`.
pub fn push_cert(v: &Value) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, x: String| out.push_str(&format!("{k:<14}{x}\n"));
    if v["configured"] != true {
        kv("Push", "no certificate: devices cannot be woken".into());
        kv("Topic", s(&v["topic"]));
        kv(
            "Create one",
            "mdmd push-cert request --vendor-cert vendor.pem --vendor-key vendor.key --out-dir push/ (README: Push)".into(),
        );
        return out;
    }
    kv("Topic", s(&v["topic"]));
    kv("Subject", s(&v["subject"]));
    kv("Serial", s(&v["serial"]));
    kv("Expires", format!("{} ({})", s(&v["not_after"]), relative(&v["not_after"])));
    if !v["certificate_error"].is_null() {
        kv("APNs refused", s(&v["certificate_error"]));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        kv("Warning", s(w));
    }
    out
}

/// `mdmd devices commands ID`: one line a command, no results (`cmd show` has them).
pub fn device_commands(v: &Value) -> String {
    list(
        v,
        "commands",
        &[
            ("COMMAND", "/command_uuid"),
            ("TYPE", "/request_type"),
            ("STATUS", "/status"),
            ("QUEUED", "/queued_at"),
            ("UPDATED", "/updated_at"),
        ],
        "No commands.",
    )
}

/// `mdmd profiles list`.
pub fn profiles(v: &Value) -> String {
    list(
        v,
        "profiles",
        &[
            ("IDENTIFIER", "/identifier"),
            ("NAME", "/display_name"),
            ("PAYLOADS", "/payload_types"),
            ("VARIABLES", "/variables"),
            ("UPDATED", "/updated_at"),
        ],
        "No profile templates. Add one: mdmd profiles add FILE.mobileconfig",
    )
}

/// `mdmd access-tokens list` (values stay in the JSON: `-o json`).
pub fn access_tokens(v: &Value) -> String {
    list(
        v,
        "tokens",
        &[
            ("ID", "/id"),
            ("STATUS", "/status"),
            ("CARRIED", "/carried"),
            ("EFFECTIVE", "/effective_at"),
            ("CREATED", "/created_at"),
        ],
        "No access tokens. Make one: mdmd access-tokens generate",
    )
}

/// `mdmd accounts list`.
pub fn accounts(v: &Value) -> String {
    list(
        v,
        "accounts",
        &[("NAME", "/name"), ("ROLE", "/role"), ("CREATED", "/created_at")],
        "No accounts. Add one: mdmd accounts add NAME --role operator",
    )
}

/// `mdmd cas list`.
pub fn cas(v: &Value) -> String {
    list(
        v,
        "cas",
        &[("NAME", "/name"), ("SCEP URL", "/scep_url"), ("CREATED", "/created_at")],
        "No organisation CAs.",
    )
}

/// `mdmd derived-credentials list`: active ones, then those that ended.
pub fn derived(v: &Value) -> String {
    let mut out = list(
        v,
        "derived_credentials",
        &[
            ("ID", "/id"),
            ("USAGE", "/usage"),
            ("SUBJECT", "/subject"),
            ("EXPIRES", "/not_after"),
            ("REVOCATION", "/revocation_check/status"),
        ],
        "No derived credentials.",
    );
    if v["ended"].as_array().is_some_and(|e| !e.is_empty()) {
        out.push_str("\nEnded:\n");
        out.push_str(&list(
            v,
            "ended",
            &[("ID", "/id"), ("STATUS", "/status"), ("BY", "/by"), ("ENDED", "/ended_at")],
            "",
        ));
    }
    out
}

/// `mdmd ddm list`.
pub fn declarations(v: &Value) -> String {
    list(
        v,
        "declarations",
        &[
            ("IDENTIFIER", "/Identifier"),
            ("TYPE", "/Type"),
            ("KIND", "/kind"),
            ("UPDATED", "/updated_at"),
        ],
        "No declarations.",
    )
}

/// `mdmd ddm sets`.
pub fn sets(v: &Value) -> String {
    list(
        v,
        "sets",
        &[("SET", "/set"), ("DECLARATIONS", "/declarations")],
        "No sets. Make one: mdmd ddm set-add SET DECLARATION…",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_times_read() {
        let t = table(&["A", "LONGER"], &[vec!["xxxx".into(), "y".into()], vec!["z".into(), "w".into()]]);
        assert_eq!(t, "A     LONGER\nxxxx  y\nz     w\n");
        let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
        let v = Value::String(past.format(&time::format_description::well_known::Rfc3339).unwrap());
        assert_eq!(relative(&v), "5 min ago");
        assert_eq!(relative(&Value::Null), "-");
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(
            relative(&Value::String(now.format(&time::format_description::well_known::Rfc3339).unwrap())),
            "just now"
        );
        let later = now + time::Duration::days(3) + time::Duration::hours(1);
        assert_eq!(
            relative(&Value::String(
                later.format(&time::format_description::well_known::Rfc3339).unwrap()
            )),
            "in 3 days"
        );
    }
}
