//! Supervised-only: which part of a command or a profile only a supervised iOS device
//! accepts, from the schemas' flags (commands, Settings items, payloads, payload keys).

use super::*;


impl Schema {
    /// The first part of a command (`{RequestType, …}`) that only a supervised
    /// iOS device accepts, as a path for people: the command itself
    /// (`RestartDevice`), a Settings item (`Settings[0] (DeviceName)`) or a
    /// key. None: nothing in it needs supervision (the common case).
    pub fn supervised_only_command(&self, d: &plist::Dictionary) -> Option<String> {
        let rt = d.get("RequestType").and_then(plist::Value::as_string)?;
        let cs = self.command(rt)?;
        if cs.supervised {
            return Some(rt.to_owned());
        }
        let mut found = Vec::new();
        supervised_in_dict(&cs.req, d, "", false, &mut found, 1);
        found.pop()
    }

    /// The first part of a configuration profile that only a supervised iOS
    /// device accepts: a top-level key (`PayloadRemovalDisallowed`), a payload
    /// type (`a com.apple.app.lock payload`) or a payload's key
    /// (`com.apple.applicationaccess: allowAppInstallation`). A key left at
    /// Apple's default (a restriction not restricting, `PayloadRemovalDisallowed`
    /// false) is not counted: an unsupervised device has it so anyway. None:
    /// nothing needs supervision.
    pub fn supervised_only_profile(&self, profile: &plist::Dictionary) -> Option<String> {
        self.supervised_only_parts(profile, 1).pop()
    }

    /// Every part of a profile only a supervised iOS device accepts (as
    /// [`Schema::supervised_only_profile`] names them), at most `max`.
    pub fn supervised_only_parts(&self, profile: &plist::Dictionary, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let top: plist::Dictionary = profile
            .iter()
            .filter(|(k, _)| k.as_str() != "PayloadContent")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        supervised_in_dict(&self.profile_top, &top, "", true, &mut out, max);
        let payloads = profile
            .get("PayloadContent")
            .and_then(plist::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(plist::Value::as_dictionary);
        for p in payloads {
            if out.len() >= max {
                break;
            }
            let Some(pt) = p.get("PayloadType").and_then(plist::Value::as_string) else {
                continue;
            };
            let Some(ps) = self.payload(pt) else { continue };
            if ps.supervised {
                out.push(format!("a {pt} payload"));
                continue;
            }
            let mut keys = Vec::new();
            supervised_in_dict(&ps.keys, p, "", true, &mut keys, max - out.len());
            out.extend(keys.into_iter().map(|k| format!("{pt}: {k}")));
        }
        out
    }
}

/// Does a plist value equal a default from the table?
fn same_as(v: &plist::Value, d: &Json) -> bool {
    use plist::Value as P;
    match (v, d) {
        (P::Boolean(a), Json::Bool(b)) => a == b,
        (P::Integer(a), Json::Number(b)) => a.as_signed().is_some_and(|a| b.as_i64() == Some(a)),
        (P::Real(a), Json::Number(b)) => b.as_f64() == Some(*a),
        (P::String(a), Json::String(b)) => a == b,
        _ => false,
    }
}

/// The supervised-only keys present in `d` (walking its dictionaries and
/// arrays of dictionaries), into `out` until it holds `max`. With
/// `at_default_ok`, a key set to Apple's default does not count.
fn supervised_in_dict(specs: &[KeySpec], d: &plist::Dictionary, path: &str, at_default_ok: bool, out: &mut Vec<String>, max: usize) {
    if specs.is_empty() {
        return;
    }
    let any_spec = specs.iter().find(|s| s.name == "ANY");
    for (k, v) in d {
        if out.len() >= max {
            return;
        }
        let Some(spec) = specs.iter().find(|s| &s.name == k).or(any_spec) else {
            continue;
        };
        let p = join(path, k);
        if spec.supervised && !(at_default_ok && spec.default.as_ref().is_some_and(|x| same_as(v, x))) {
            out.push(p);
            continue;
        }
        supervised_in_value(spec, v, &p, at_default_ok, out, max);
    }
}

fn supervised_in_value(spec: &KeySpec, v: &plist::Value, path: &str, at_default_ok: bool, out: &mut Vec<String>, max: usize) {
    use plist::Value as P;
    match (spec.ty.as_str(), v) {
        ("D", P::Dictionary(d)) => supervised_in_dict(&spec.sub, d, path, at_default_ok, out, max),
        ("a", P::Array(items)) => {
            // Several item specs (Settings): alternatives, named by the item's `Item`.
            let alternatives = spec.sub.len() > 1 && spec.sub.iter().all(|s| s.ty == "D");
            for (i, item) in items.iter().enumerate() {
                if out.len() >= max {
                    return;
                }
                // Only dictionaries hold request keys (not a string item's value names).
                let P::Dictionary(d) = item else { continue };
                let p = format!("{path}[{i}]");
                let alt = if alternatives {
                    alternative(&spec.sub, item)
                } else {
                    spec.sub.first()
                };
                let Some(alt) = alt.filter(|a| a.ty == "D") else { continue };
                if alt.supervised {
                    out.push(if alternatives { format!("{p} ({})", alt.name) } else { p });
                    continue;
                }
                supervised_in_dict(&alt.sub, d, &p, at_default_ok, out, max);
            }
        }
        _ => {}
    }
}

/// The alternative an array item is: the one its `Item` names, else the
/// first it fits without errors (as `Findings::check_value` chooses).
fn alternative<'a>(alts: &'a [KeySpec], item: &plist::Value) -> Option<&'a KeySpec> {
    let named = item
        .as_dictionary()
        .and_then(|d| d.get("Item"))
        .and_then(plist::Value::as_string)
        .and_then(|n| alts.iter().find(|a| a.name == n));
    named.or_else(|| {
        alts.iter().find(|alt| {
            let mut f = Findings::default();
            f.check_value(alt, item, "");
            f.errors.is_empty()
        })
    })
}
