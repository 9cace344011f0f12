//! Validation of configuration profiles against Apple's schemas (the table
//! `tools/gen_schema.py` generates from the device-management YAML): the
//! outer keys, every payload's keys, types, required keys, allowed values and
//! ranges, unique PayloadUUIDs, and certificate references that resolve
//! inside the profile. Every problem is reported with its key path.

use std::collections::{BTreeMap, BTreeSet};

use plist::{Dictionary, Value};

use super::vars;
use crate::protocol::schema::{Findings, Schema};

/// Payload types that provide an identity (certificate with private key).
pub const IDENTITY_TYPES: &[&str] = &[
    "com.apple.security.scep",
    "com.apple.security.pkcs12",
    "com.apple.security.acme",
    "com.apple.ADCertificate.managed",
];

/// Payload types that provide a certificate (trust anchors).
pub const CERTIFICATE_TYPES: &[&str] = &[
    "com.apple.security.root",
    "com.apple.security.pkcs1",
    "com.apple.security.pem",
    "com.apple.security.pkcs12",
];

/// Keys whose value names another payload's PayloadUUID: (key, wants an identity).
const REFERENCES: &[(&str, bool)] = &[
    ("PayloadCertificateUUID", true),
    ("IdentityCertificateUUID", true),
    ("SMIMESigningCertificateUUID", true),
    ("SMIMEEncryptionCertificateUUID", true),
    ("PayloadCertificateAnchorUUID", false),
    ("ServerURLPinningCertificateUUIDs", false),
    ("CheckInURLPinningCertificateUUIDs", false),
];

/// Validate a profile's outer dictionary. `Findings::errors` empty means it
/// may be installed; warnings are worth showing the admin.
pub fn validate(top: &Dictionary) -> Findings {
    let schema = Schema::get();
    let mut f = Findings::default();
    f.check_dict(&schema.profile_top, top, "", &["PayloadContent"]);
    if top.contains_key("EncryptedPayloadContent") {
        f.error(
            "EncryptedPayloadContent",
            "upload the template unencrypted: mdmd encrypts each copy to its device",
        );
    }
    let items = match top.get("PayloadContent") {
        Some(Value::Array(a)) => a.as_slice(),
        Some(other) => {
            f.error(
                "PayloadContent",
                format!("expected array, got {}", crate::protocol::schema::plist_kind(other)),
            );
            &[]
        }
        None => {
            f.error("PayloadContent", "is required");
            &[]
        }
    };
    let mut uuids: BTreeMap<String, (String, String)> = BTreeMap::new(); // uuid -> (path, type)
    if let Some(Value::String(u)) = top.get("PayloadUUID") {
        uuids.insert(u.clone(), ("PayloadUUID".into(), "Configuration".into()));
    }
    let mut types_seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("PayloadContent[{i}]");
        let Some(d) = item.as_dictionary() else {
            f.error(&path, "expected dictionary (a payload)");
            continue;
        };
        let ty = match d.get("PayloadType") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => {
                f.error(&format!("{path}.PayloadType"), "expected string");
                continue;
            }
            None => {
                f.error(&format!("{path}.PayloadType"), "is required");
                continue;
            }
        };
        *types_seen.entry(ty.clone()).or_default() += 1;
        // A derived credential stands for the PKCS#12 data: check the
        // payload as if the data were there.
        let placeholder;
        let d = match derived_usage(&ty, d) {
            Some(_) => {
                let mut c = d.clone();
                c.insert("PayloadContent".into(), Value::Data(Vec::new()));
                placeholder = c;
                &placeholder
            }
            None => d,
        };
        match schema.payload(&ty) {
            Some(ps) => {
                // The common keys and the payload's own, in one pass (some
                // payload files repeat common keys: the common spec wins).
                let common = &schema.profile_common;
                let mut specs = common.clone();
                specs.extend(ps.keys.iter().filter(|k| !common.iter().any(|c| c.name == k.name)).cloned());
                f.check_dict(&specs, d, &path, &[]);
                if !ps.ios {
                    f.warn(&format!("{path}.PayloadType"), format!("{ty} is not supported on iOS"));
                }
                if ps.ios && !ps.multiple && types_seen[&ty] == 2 {
                    f.error(&format!("{path}.PayloadType"), format!("only one {ty} payload is allowed"));
                }
            }
            None => {
                // Only the common keys can be checked.
                let common: Vec<&str> = schema.profile_common.iter().map(|k| k.name.as_str()).collect();
                let other: Vec<&str> = d.keys().map(String::as_str).filter(|k| !common.contains(k)).collect();
                f.check_dict(&schema.profile_common, d, &path, &other);
                f.warn(
                    &format!("{path}.PayloadType"),
                    format!("unknown payload type {ty:?} (not in Apple's schema): accepted as is"),
                );
            }
        }
        if let Some(Value::String(u)) = d.get("PayloadUUID") {
            if let Some((other, _)) = uuids.get(u) {
                f.error(&format!("{path}.PayloadUUID"), format!("{u} is also the PayloadUUID of {other}"));
            } else {
                uuids.insert(u.clone(), (format!("{path}"), ty.clone()));
            }
        }
        check_placement(&mut f, &ty, item, &path);
    }
    // References, after every UUID is known.
    for (i, item) in items.iter().enumerate() {
        let mut refs = Vec::new();
        collect_refs(item, &format!("PayloadContent[{i}]"), &mut refs);
        for (path, uuid, identity) in refs {
            if uuid.contains('$') {
                continue;
            }
            match uuids.get(&uuid) {
                None => f.error(&path, format!("{uuid} is not the PayloadUUID of any payload in this profile")),
                Some((_, ty)) => {
                    let ok = if identity {
                        IDENTITY_TYPES.contains(&ty.as_str())
                    } else {
                        CERTIFICATE_TYPES.contains(&ty.as_str())
                    };
                    if !ok {
                        let want = if identity {
                            "an identity payload (SCEP, PKCS#12, ACME)"
                        } else {
                            "a certificate payload"
                        };
                        f.error(&path, format!("{uuid} is a {ty} payload, expected {want}"));
                    }
                }
            }
        }
    }
    let mut used = BTreeSet::new();
    vars::used(&Value::Dictionary(top.clone()), &mut used);
    if used.iter().any(|n| vars::split(n).0 == "SCEP_CHALLENGE") && !types_seen.contains_key("com.apple.security.scep") {
        f.error("PayloadContent", "$SCEP_CHALLENGE is used but the profile has no SCEP payload");
    }
    // Supervised-only parts: a device that is not supervised refuses the
    // whole profile, so mdmd will not send it to one (it says which at install).
    for part in schema.supervised_only_parts(top, 20) {
        f.warn(
            &part,
            "supervised-only (Apple's schema): devices that are not supervised refuse this profile, and mdmd refuses to send it to them",
        );
    }
    f
}

/// The usage of a PKCS#12 payload whose whole PayloadContent is
/// `$DERIVED_CREDENTIAL:usage` (the device's derived credential).
pub fn derived_usage<'a>(ty: &str, payload: &'a Dictionary) -> Option<&'a str> {
    if ty != "com.apple.security.pkcs12" {
        return None;
    }
    let s = payload.get("PayloadContent")?.as_string()?.trim();
    let name = s
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .or_else(|| s.strip_prefix('$'))?;
    match vars::split(name) {
        ("DERIVED_CREDENTIAL", Some(u)) => Some(u),
        _ => None,
    }
}

/// Where the variables that only make sense in one place may appear:
/// `$SCEP_CHALLENGE[:CA]` as a SCEP payload's Challenge, `$SCEP_PROXY_URL:CA`
/// as its URL (naming the same CA), `$DERIVED_CREDENTIAL:usage` as the whole
/// PayloadContent of a PKCS#12 payload.
fn check_placement(f: &mut Findings, ty: &str, item: &Value, path: &str) {
    let scep = ty == "com.apple.security.scep";
    let mut found = Vec::new();
    find_vars(item, path, &mut found);
    let mut cas: BTreeMap<String, String> = BTreeMap::new(); // CA -> where
    for (p, name) in found {
        let (base, q) = vars::split(&name);
        match base {
            "SCEP_CHALLENGE" => {
                if !(scep && p == format!("{path}.PayloadContent.Challenge")) {
                    f.error(&p, "$SCEP_CHALLENGE may only be the Challenge of a SCEP payload");
                }
                if let Some(ca) = q {
                    cas.insert(ca.to_owned(), p.clone());
                }
            }
            "SCEP_PROXY_URL" => {
                if q.is_none() {
                    f.error(&p, "$SCEP_PROXY_URL needs the organisation CA's name: $SCEP_PROXY_URL:NAME");
                } else if !(scep && p == format!("{path}.PayloadContent.URL")) {
                    f.error(&p, "$SCEP_PROXY_URL:NAME may only be the URL of a SCEP payload");
                }
                if let Some(ca) = q {
                    cas.insert(ca.to_owned(), p.clone());
                }
            }
            "DERIVED_CREDENTIAL" => match q {
                None => f.error(
                    &p,
                    format!("$DERIVED_CREDENTIAL needs a usage: one of {}", vars::DERIVED_USAGES.join(", ")),
                ),
                Some(u) if !vars::DERIVED_USAGES.contains(&u) => f.error(
                    &p,
                    format!("unknown derived credential usage {u:?}: one of {}", vars::DERIVED_USAGES.join(", ")),
                ),
                Some(_) => {
                    let whole = item.as_dictionary().and_then(|d| derived_usage(ty, d)).is_some();
                    if !(whole && p == format!("{path}.PayloadContent")) {
                        f.error(
                            &p,
                            "$DERIVED_CREDENTIAL:usage may only be the whole PayloadContent of a com.apple.security.pkcs12 payload",
                        );
                    } else if item.as_dictionary().is_some_and(|d| d.contains_key("Password")) {
                        f.warn(&format!("{path}.Password"), "replaced by the derived credential's own password");
                    }
                }
            },
            _ => {}
        }
    }
    if cas.len() > 1 {
        let names: Vec<&str> = cas.keys().map(String::as_str).collect();
        f.error(
            &format!("{path}.PayloadContent"),
            format!("the SCEP URL and challenge name different CAs ({})", names.join(", ")),
        );
    }
    if scep {
        let url_proxy = item
            .as_dictionary()
            .and_then(|d| d.get("PayloadContent"))
            .and_then(Value::as_dictionary)
            .and_then(|c| c.get("URL"))
            .and_then(Value::as_string)
            .is_some_and(|u| vars::in_str(u).iter().any(|n| n.starts_with("SCEP_PROXY_URL:")));
        let challenge_org = cas.values().any(|p| p.ends_with(".Challenge"));
        if challenge_org && !url_proxy {
            f.error(
                &format!("{path}.PayloadContent.Challenge"),
                "$SCEP_CHALLENGE:NAME goes with $SCEP_PROXY_URL:NAME as the URL (the challenge is the organisation CA's)",
            );
        }
    }
}

/// Every (path, variable) below a value.
fn find_vars(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.extend(vars::in_str(s).into_iter().map(|n| (path.to_owned(), n))),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| find_vars(x, &format!("{path}[{i}]"), out)),
        Value::Dictionary(d) => d.iter().for_each(|(k, x)| find_vars(x, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// Every (path, referenced uuid, wants identity) below a payload.
fn collect_refs(v: &Value, path: &str, out: &mut Vec<(String, String, bool)>) {
    let Value::Dictionary(d) = v else {
        if let Value::Array(a) = v {
            for (i, x) in a.iter().enumerate() {
                collect_refs(x, &format!("{path}[{i}]"), out);
            }
        }
        return;
    };
    for (k, x) in d {
        let p = format!("{path}.{k}");
        match REFERENCES.iter().find(|(name, _)| name == k) {
            Some((_, identity)) => match x {
                Value::String(u) => out.push((p, u.clone(), *identity)),
                Value::Array(a) => {
                    for (i, u) in a.iter().enumerate() {
                        if let Value::String(u) = u {
                            out.push((format!("{p}[{i}]"), u.clone(), *identity));
                        }
                    }
                }
                _ => {}
            },
            None => collect_refs(x, &p, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Dictionary {
        plist::from_bytes(xml.as_bytes()).unwrap()
    }

    fn wrap(payloads: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string><key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>com.example.p</string><key>PayloadUUID</key><string>TOP</string>
<key>PayloadContent</key><array>{payloads}</array></dict></plist>"#
        )
    }

    fn payload(ty: &str, uuid: &str, extra: &str) -> String {
        format!(
            "<dict><key>PayloadType</key><string>{ty}</string><key>PayloadVersion</key><integer>1</integer>\
<key>PayloadIdentifier</key><string>com.example.p.{uuid}</string><key>PayloadUUID</key><string>{uuid}</string>{extra}</dict>"
        )
    }

    #[test]
    fn a_good_profile_passes() {
        let p = wrap(&payload(
            "com.apple.mobiledevice.passwordpolicy",
            "A",
            "<key>minLength</key><integer>6</integer><key>forcePIN</key><true/>",
        ));
        let f = validate(&parse(&p));
        assert!(f.is_ok(), "{f:?}");
        assert!(f.warnings.is_empty(), "{f:?}");
    }

    #[test]
    fn supervised_only_keys_are_warned_about() {
        let p = wrap(
            &[
                payload(
                    "com.apple.applicationaccess",
                    "R",
                    // allowAppRemoval is supervised-only; allowCamera is not; allowAirDrop left at Apple's default.
                    "<key>allowAppRemoval</key><false/><key>allowCamera</key><false/><key>allowAirDrop</key><true/>",
                ),
                payload(
                    "com.apple.app.lock",
                    "L",
                    "<key>App</key><dict><key>Identifier</key><string>com.example.kiosk</string></dict>",
                ),
            ]
            .concat(),
        );
        let f = validate(&parse(&p));
        assert!(f.is_ok(), "{f:?}");
        let paths: Vec<&str> = f.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            ["com.apple.applicationaccess: allowAppRemoval", "a com.apple.app.lock payload"],
            "{f:?}"
        );
        assert!(f.warnings[0].to_string().contains("supervised-only"), "{f:?}");
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let p = wrap(
            &[
                payload(
                    "com.apple.mobiledevice.passwordpolicy",
                    "A",
                    "<key>minLength</key><string>six</string><key>maxFailedAttempts</key><integer>50</integer>",
                ),
                payload("com.apple.webClip.managed", "A", "<key>Label</key><string>x</string>"),
                payload(
                    "com.apple.wifi.managed",
                    "W",
                    "<key>SSID_STR</key><string>corp</string><key>EncryptionType</key><string>WPA9</string>\
<key>PayloadCertificateUUID</key><string>NOPE</string>",
                ),
                payload("com.example.future", "F", ""),
            ]
            .concat(),
        );
        let f = validate(&parse(&p));
        let errs: Vec<String> = f.errors.iter().map(|e| e.to_string()).collect();
        let has = |s: &str| errs.iter().any(|e| e.contains(s));
        assert!(has("PayloadContent[0].minLength: expected integer, got string"), "{errs:#?}");
        assert!(has("PayloadContent[0].maxFailedAttempts: value 50 is outside"), "{errs:#?}");
        assert!(has("PayloadContent[1].URL: is required"), "{errs:#?}");
        assert!(
            has("PayloadContent[1].PayloadUUID: A is also the PayloadUUID of PayloadContent[0]"),
            "{errs:#?}"
        );
        assert!(has("PayloadContent[2].EncryptionType: value \"WPA9\""), "{errs:#?}");
        assert!(
            has("PayloadContent[2].PayloadCertificateUUID: NOPE is not the PayloadUUID"),
            "{errs:#?}"
        );
        assert!(f.warnings.iter().any(|w| w.path == "PayloadContent[3].PayloadType"), "{f:?}");
        assert_eq!(errs.len(), 6, "{errs:#?}");
    }

    #[test]
    fn references_must_point_at_the_right_kind_and_challenge_only_in_scep() {
        let p = wrap(
            &[
                payload(
                    "com.apple.webClip.managed",
                    "C",
                    "<key>URL</key><string>https://x</string><key>Label</key><string>$SCEP_CHALLENGE</string>",
                ),
                payload(
                    "com.apple.wifi.managed",
                    "W",
                    "<key>SSID_STR</key><string>corp</string><key>PayloadCertificateUUID</key><string>C</string>",
                ),
            ]
            .concat(),
        );
        let f = validate(&parse(&p));
        let errs: Vec<String> = f.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            errs.iter()
                .any(|e| e.contains("PayloadCertificateUUID: C is a com.apple.webClip.managed payload")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("PayloadContent[0].Label: $SCEP_CHALLENGE may only be")),
            "{errs:#?}"
        );
    }

    #[test]
    fn organisation_ca_and_derived_credential_placement() {
        let scep = |url: &str, challenge: &str| {
            payload(
                "com.apple.security.scep",
                "S",
                &format!("<key>PayloadContent</key><dict><key>URL</key><string>{url}</string><key>Challenge</key><string>{challenge}</string></dict>"),
            )
        };
        let dc = |content: &str| {
            payload(
                "com.apple.security.pkcs12",
                "D",
                &format!("<key>PayloadContent</key><string>{content}</string>"),
            )
        };
        let errs = |p: String| -> Vec<String> { validate(&parse(&wrap(&p))).errors.iter().map(|e| e.to_string()).collect() };
        assert!(errs(scep("$SCEP_PROXY_URL:corp", "$SCEP_CHALLENGE:corp")).is_empty());
        assert!(errs(dc("$DERIVED_CREDENTIAL:signing")).is_empty());
        assert!(errs(dc("${DERIVED_CREDENTIAL:encryption}")).is_empty());
        let cases = [
            (scep("$SCEP_PROXY_URL:corp", "$SCEP_CHALLENGE:other"), "name different CAs"),
            (
                scep("https://ca.example/scep", "$SCEP_CHALLENGE:corp"),
                "goes with $SCEP_PROXY_URL:NAME",
            ),
            (scep("$SCEP_PROXY_URL", "x"), "needs the organisation CA's name"),
            (scep("https://x/", "$SCEP_PROXY_URL:corp"), "may only be the URL of a SCEP payload"),
            (dc("$DERIVED_CREDENTIAL"), "needs a usage"),
            (dc("$DERIVED_CREDENTIAL:flying"), "unknown derived credential usage"),
            (dc("x $DERIVED_CREDENTIAL:signing"), "whole PayloadContent"),
        ];
        for (p, want) in cases {
            let e = errs(p);
            assert!(e.iter().any(|x| x.contains(want)), "{want}: {e:#?}");
        }
    }
}

#[cfg(test)]
mod shipped {
    /// The examples in `profiles/` are valid and warning-free.
    #[test]
    fn shipped_examples_validate_cleanly() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "mobileconfig") {
                let t = crate::profiles::Template::parse(&std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(t.warnings.is_empty(), "{}: {:?}", p.display(), t.warnings);
                n += 1;
            }
        }
        assert_eq!(n, 5);
    }
}
