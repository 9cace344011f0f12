//! `mdmd apps`' answers for people: the catalog, one app with its devices, content tokens, one
//! device's apps, and what a sync, an install or a removal did. Each takes the API's JSON as it
//! came; a missing member shows as `-`.

use serde_json::Value;

use crate::cli::table::{relative, table};

/// A value as a cell: `-` for nothing.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) if x.is_empty() => "-".into(),
        Value::String(x) => x.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `app_store` / `in_house` in words.
fn kind(app: &Value) -> String {
    match app["kind"].as_str() {
        Some("app_store") => "App Store".into(),
        Some("in_house") => "in-house".into(),
        Some(other) => other.into(),
        None => "-".into(),
    }
}

/// `free/total`, or `-` for an app without licences (in-house).
fn licences(app: &Value) -> String {
    let l = &app["licences"];
    if l.is_object() {
        format!("{}/{}", n(&l["available"]), n(&l["total"]))
    } else {
        "-".into()
    }
}

/// Bytes as kB / MB / GB (decimal, as Apple shows sizes).
fn size(v: &Value) -> String {
    let Some(b) = v.as_u64() else { return "-".into() };
    let f = b as f64;
    match b {
        0..=999 => format!("{b} bytes"),
        1_000..=999_999 => format!("{:.1} kB", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", f / 1e6),
        _ => format!("{:.2} GB", f / 1e9),
    }
}

/// When a token expires, relative, with its warning.
fn expiry(t: &Value) -> String {
    let mark = if t["expired"] == true {
        " (expired: upload a new one)"
    } else if t["expires_soon"] == true {
        " (renew soon)"
    } else {
        ""
    };
    format!("{}{mark}", relative(&t["expires_at"]))
}

fn kv(out: &mut String, k: &str, v: impl AsRef<str>) {
    out.push_str(&format!("{k:<22}{}\n", v.as_ref()));
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key].as_array().into_iter().flatten()
}

/// `GET /v1/apps-and-books/tokens`.
pub fn tokens(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "tokens")
        .map(|t| {
            vec![
                cell(&t["name"]),
                cell(&t["org_name"]),
                cell(&t["location"]),
                expiry(t),
                cell(&t["apps"]),
                relative(&t["synced_at"]),
                cell(&t["last_error"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No content token yet: mdmd apps tokens add NAME FILE.vpptoken\n".into();
    }
    table(
        &["NAME", "ORGANISATION", "LOCATION", "EXPIRES", "APPS", "SYNCED", "LAST ERROR"],
        &rows,
    )
}

/// One token's view (after an upload).
pub fn token(t: &Value) -> String {
    let mut out = String::new();
    kv(&mut out, "Content token", cell(&t["name"]));
    kv(&mut out, "Organisation", cell(&t["org_name"]));
    kv(&mut out, "Location", format!("{} ({})", cell(&t["location"]), cell(&t["country"])));
    kv(&mut out, "Expires", format!("{} — {}", cell(&t["expires_at"]), expiry(t)));
    kv(&mut out, "Apps", cell(&t["apps"]));
    kv(&mut out, "Uploaded", relative(&t["uploaded_at"]));
    kv(&mut out, "Synced", relative(&t["synced_at"]));
    if !t["last_error"].is_null() {
        kv(&mut out, "Last error", cell(&t["last_error"]));
    }
    out
}

/// `POST /v1/apps-and-books/sync`.
pub fn synced(v: &Value) -> String {
    let mut out = format!(
        "Synced {} token(s): {} asset(s), {} licence(s) released.\n",
        n(&v["tokens"]),
        n(&v["assets"]),
        n(&v["released"])
    );
    let errors: Vec<String> = list(v, "errors").map(cell).collect();
    if !errors.is_empty() {
        out.push_str("Errors:\n");
        for e in errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

/// `POST /v1/apps`: a new app, or a new version of an in-house one (`offered_to`).
pub fn added(app: &Value) -> String {
    let id = cell(&app["id"]);
    if !app["offered_to"].is_null() {
        return format!(
            "New version {} of {} ({}), app {id}: offered to {} device(s).\n",
            cell(&app["version"]),
            cell(&app["name"]),
            cell(&app["bundle_id"]),
            n(&app["offered_to"])
        );
    }
    let mut out = format!(
        "Added app {id}: {} {} ({}, {}).\n",
        cell(&app["name"]),
        cell(&app["version"]),
        cell(&app["bundle_id"]),
        kind(app)
    );
    if app["licences"].is_object() {
        out.push_str(&format!(
            "Licences: {} free of {}.\n",
            n(&app["licences"]["available"]),
            n(&app["licences"]["total"])
        ));
    }
    out.push_str(&format!("Install it: mdmd apps install {id} UDID…\n"));
    out
}

/// `GET /v1/apps`: the catalog.
pub fn apps(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "apps")
        .map(|a| {
            let d = &a["devices"];
            vec![
                cell(&a["id"]),
                kind(a),
                cell(&a["name"]),
                cell(&a["version"]),
                licences(a),
                n(&d["installed"]).to_string(),
                n(&d["pending"]).to_string(),
                n(&d["failed"]).to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No apps yet: mdmd apps add --itunes-id N (App Store), or mdmd apps add FILE.ipa (in-house).\n".into();
    }
    let mut out = table(
        &[
            "ID",
            "KIND",
            "NAME",
            "VERSION",
            "LICENCES FREE/TOTAL",
            "INSTALLED",
            "PENDING",
            "FAILED",
        ],
        &rows,
    );
    out.push_str("\nOne app and its devices: mdmd apps show ID\n");
    out
}

/// `GET /v1/apps/{id}` (and `PUT`'s answer): details, then the state on each device.
pub fn app(a: &Value) -> String {
    let mut out = String::new();
    kv(&mut out, "App", cell(&a["id"]));
    kv(&mut out, "Name", cell(&a["name"]));
    kv(&mut out, "Kind", kind(a));
    kv(&mut out, "Bundle id", cell(&a["bundle_id"]));
    kv(&mut out, "Version", cell(&a["version"]));
    if !a["itunes_store_id"].is_null() {
        kv(&mut out, "App Store id", cell(&a["itunes_store_id"]));
    }
    if !a["token"].is_null() {
        kv(&mut out, "Content token", cell(&a["token"]));
    }
    kv(&mut out, "Minimum OS", cell(&a["minimum_os"]));
    if !a["size"].is_null() {
        kv(&mut out, "Size", size(&a["size"]));
    }
    let l = &a["licences"];
    if l.is_object() {
        kv(
            &mut out,
            "Licences",
            format!("{} free of {} ({} assigned)", n(&l["available"]), n(&l["total"]), n(&l["assigned"])),
        );
    }
    let d = &a["devices"];
    kv(
        &mut out,
        "Devices",
        format!(
            "{} installed, {} pending, {} failed",
            n(&d["installed"]),
            n(&d["pending"]),
            n(&d["failed"])
        ),
    );
    kv(&mut out, "Remove on unenroll", cell(&a["remove_on_unenroll"]));
    kv(&mut out, "Prevent backup", cell(&a["prevent_backup"]));
    kv(
        &mut out,
        "Configuration",
        match &a["configuration"] {
            Value::Null => "none".to_owned(),
            c => c.to_string(),
        },
    );
    kv(&mut out, "Updated", relative(&a["updated_at"]));
    if let Some(states) = a["device_states"].as_array() {
        out.push('\n');
        let rows: Vec<Vec<String>> = states
            .iter()
            .map(|s| {
                vec![
                    cell(&s["enrollment"]),
                    cell(&s["serial"]),
                    cell(&s["state"]),
                    cell(&s["version"]),
                    if s["licence"] == true { "yes".into() } else { "no".into() },
                    relative(&s["updated_at"]),
                    cell(&s["error"]),
                ]
            })
            .collect();
        if rows.is_empty() {
            out.push_str(&format!("Not on any device yet: mdmd apps install {} UDID…\n", cell(&a["id"])));
        } else {
            out.push_str(&table(
                &["ENROLLMENT", "SERIAL", "STATE", "VERSION", "LICENCE", "UPDATED", "ERROR"],
                &rows,
            ));
        }
    }
    out
}

fn failures(v: &Value, out: &mut String) {
    let rows: Vec<Vec<String>> = list(v, "failed").map(|f| vec![cell(&f["target"]), cell(&f["error"])]).collect();
    if !rows.is_empty() {
        out.push_str(&format!("{} target(s) failed:\n", rows.len()));
        out.push_str(&table(&["TARGET", "ERROR"], &rows));
    }
}

/// `POST /v1/apps/{id}/install`.
pub fn installed(v: &Value) -> String {
    let mut out = format!(
        "Install queued for {} device(s); {} licence(s) associated.\n",
        n(&v["queued"]),
        n(&v["licences_associated"])
    );
    failures(v, &mut out);
    out
}

/// `POST /v1/apps/{id}/remove`.
pub fn removed(v: &Value) -> String {
    let mut out = format!(
        "Removal queued for {} device(s); {} licence(s) released.\n",
        n(&v["queued"]),
        n(&v["licences_released"])
    );
    failures(v, &mut out);
    out
}

/// `GET /v1/devices/{id}/apps`.
pub fn device_apps(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "apps")
        .map(|a| {
            vec![
                cell(&a["app"]),
                cell(&a["name"]),
                cell(&a["state"]),
                cell(&a["version"]),
                if a["licence"] == true { "yes".into() } else { "no".into() },
                relative(&a["updated_at"]),
                cell(&a["error"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "No app from the catalog on this device.\n".into();
    }
    table(&["APP", "NAME", "STATE", "VERSION", "LICENCE", "UPDATED", "ERROR"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pages() -> Value {
        json!({
            "id": "7", "kind": "app_store", "name": "Pages", "bundle_id": "com.apple.Pages", "version": "14.2",
            "itunes_store_id": 361309726, "token": "main", "minimum_os": "17.0", "size": 512_300_000u64,
            "licences": {"total": 10, "assigned": 7, "available": 3},
            "devices": {"installed": 5, "pending": 1, "failed": 1},
            "remove_on_unenroll": true, "prevent_backup": false,
            "configuration": {"Theme": "dark"}, "updated_at": "2026-01-01T00:00:00Z"
        })
    }

    fn field() -> Value {
        json!({
            "id": "8", "kind": "in_house", "name": "Field", "bundle_id": "com.example.field", "version": "2.0",
            "devices": {"installed": 0, "pending": 0, "failed": 0},
            "remove_on_unenroll": true, "prevent_backup": true, "updated_at": "2026-01-01T00:00:00Z"
        })
    }

    #[test]
    fn the_catalog_shows_licences_and_device_counts() {
        let t = apps(&json!({"apps": [pages(), field()]}));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  KIND") && lines[0].contains("LICENCES FREE/TOTAL"), "{t}");
        assert!(
            lines[1].contains("App Store") && lines[1].contains("Pages") && lines[1].contains("3/10"),
            "{t}"
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&cols[cols.len() - 3..], ["5", "1", "1"], "{t}");
        assert!(
            lines[2].contains("in-house") && lines[2].contains(" - "),
            "no licences for in-house: {t}"
        );
        assert!(apps(&json!({"apps": []})).starts_with("No apps yet"));
        assert!(
            apps(&json!({})).starts_with("No apps yet"),
            "a body without the list reads as empty"
        );
    }

    #[test]
    fn one_app_with_its_devices() {
        let mut a = pages();
        a["device_states"] = json!([
            {"enrollment": "UDID-1", "serial": "C02X", "state": "installed", "version": "14.2", "licence": true, "updated_at": "2026-01-01T00:00:00Z"},
            {"enrollment": "UDID-2", "state": "failed", "error": "License not found", "licence": false, "updated_at": "2026-01-01T00:00:00Z"}
        ]);
        let t = app(&a);
        for want in [
            "3 free of 10 (7 assigned)",
            "5 installed, 1 pending, 1 failed",
            "512.3 MB",
            "{\"Theme\":\"dark\"}",
            "App Store id          361309726",
            "ENROLLMENT",
            "License not found",
        ] {
            assert!(t.contains(want), "{want} in\n{t}");
        }
        let row = t.lines().find(|l| l.starts_with("UDID-2")).unwrap();
        assert!(row.contains(" - ") && row.contains("failed") && row.contains(" no "), "{row}");
        let mut f = field();
        f["device_states"] = json!([]);
        let t = app(&f);
        assert!(
            t.contains("Configuration         none") && t.contains("Not on any device yet: mdmd apps install 8"),
            "{t}"
        );
        assert!(!t.contains("Licences") && !t.contains("App Store id"), "{t}");
        assert!(!app(&field()).contains("ENROLLMENT"), "PUT's answer has no device states");
    }

    #[test]
    fn tokens_warn_before_they_expire() {
        let v = json!({"tokens": [
            {"name": "main", "org_name": "Example Corp", "location": "HQ", "country": "US",
             "expires_at": "2020-01-01T00:00:00Z", "expired": true, "expires_soon": true,
             "uploaded_at": "2019-01-01T00:00:00Z", "apps": 12, "last_error": "token expired"},
            {"name": "eu", "org_name": "Example Corp", "location": "Paris", "country": "FR",
             "expires_at": "2099-01-01T00:00:00Z", "expired": false, "expires_soon": true,
             "uploaded_at": "2019-01-01T00:00:00Z", "synced_at": null, "apps": 0}
        ]});
        let t = tokens(&v);
        let main = t.lines().find(|l| l.starts_with("main")).unwrap();
        assert!(
            main.contains("ago (expired: upload a new one)") && main.contains("token expired"),
            "{t}"
        );
        let eu = t.lines().find(|l| l.starts_with("eu")).unwrap();
        assert!(eu.contains("(renew soon)") && eu.trim_end().ends_with('-'), "{t}");
        assert!(tokens(&json!({"tokens": []})).contains("mdmd apps tokens add"));
        let one = token(&v["tokens"][1]);
        assert!(
            one.contains("Paris (FR)") && one.contains("2099-01-01T00:00:00Z") && !one.contains("Last error"),
            "{one}"
        );
    }

    #[test]
    fn what_an_action_did() {
        assert_eq!(
            installed(&json!({"queued": 2, "licences_associated": 2, "failed": []})),
            "Install queued for 2 device(s); 2 licence(s) associated.\n"
        );
        let t = removed(&json!({"queued": 1, "licences_released": 1, "failed": [{"target": "X", "error": "not enrolled"}]}));
        assert!(
            t.contains("1 licence(s) released") && t.contains("1 target(s) failed") && t.contains("X       not enrolled"),
            "{t}"
        );
        let t = synced(&json!({"tokens": 2, "assets": 14, "released": 3, "errors": ["eu: token expired"]}));
        assert_eq!(
            t,
            "Synced 2 token(s): 14 asset(s), 3 licence(s) released.\nErrors:\n  eu: token expired\n"
        );
        let t = added(&pages());
        assert!(
            t.starts_with("Added app 7: Pages 14.2 (com.apple.Pages, App Store)") && t.contains("3 free of 10"),
            "{t}"
        );
        let mut v = field();
        v["offered_to"] = json!(4);
        assert_eq!(
            added(&v),
            "New version 2.0 of Field (com.example.field), app 8: offered to 4 device(s).\n"
        );
    }

    #[test]
    fn a_devices_apps() {
        let t = device_apps(&json!({"apps": [
            {"app": "7", "name": "Pages", "state": "update_available", "version": "14.1", "licence": true, "updated_at": "2026-01-01T00:00:00Z"}
        ]}));
        assert!(t.lines().nth(1).unwrap().starts_with("7    Pages  update_available  14.1"), "{t}");
        assert_eq!(device_apps(&json!({"apps": []})), "No app from the catalog on this device.\n");
        assert_eq!(size(&json!(999)), "999 bytes");
        assert_eq!(size(&json!(1_500)), "1.5 kB");
        assert_eq!(size(&json!(2_340_000_000u64)), "2.34 GB");
    }
}
