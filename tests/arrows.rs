//! The arrow check: imports between the rooms of `src/` point one way
//! (docs/ARCHITECTURE.md; issue 24). `make test` runs it; each violation is
//! printed as `file:line: room -> room`.
//!
//! Rules:
//! - `protocol` imports nothing of ours: no path into another room.
//! - `pki`, `store`, `push`, `profiles`, `ops`, `ade`, `vpp` never import `service`, `http`, `api`,
//!   `console`, `server`, `cli`, `app` or `config`.
//! - HTTP server types (`axum::`) only in `http`, `api`, `console`, `server`.
//! - `#![deny(unsafe_code)]` at the crate root (src/lib.rs); `unsafe` and
//!   `allow(unsafe_code)` only in src/pki/ossl.rs.
//!
//! A small tokenizer (comments, string and char literals dropped) finds every
//! path that starts with `crate`, `self` or `super` — in `use` trees with their
//! `{…}` groups, and inline such as `crate::service::now()`, also split over
//! lines — and resolves it against the file's module (inline `mod x { … }`
//! included) to the room it reaches. The binary's own files (src/main.rs and
//! the modules it declares, e.g. src/cli/) reach the library as `mdmd::…`,
//! which is exempt; only the axum and unsafe rules apply to them.
//! No dependency: the check is ~300 lines, and neither cargo-modules nor
//! cargo-deny can express per-module rules like these.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Rooms that must not reach the application and HTTP layers.
const LOWER: &[&str] = &["pki", "store", "push", "profiles", "ops", "ade", "vpp", "outbound"];
const UPPER: &[&str] = &["service", "http", "api", "console", "server", "cli", "app", "config"];
/// Rooms where axum (HTTP server types) belongs.
const HTTP_ROOMS: &[&str] = &["http", "api", "console", "server"];
/// The one file allowed `unsafe`.
const UNSAFE_FILE: &str = "pki/ossl.rs";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// Path relative to the src root, with `/`.
    pub file: String,
    pub line: usize,
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "src/{}:{}: {} -> {}", self.file, self.line, self.from, self.to)
    }
}

// ---------------------------------------------------------------- tokenizer

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tok {
    text: String,
    line: usize,
    ident: bool,
}

/// Identifiers and punctuation (`::` as one token) with their line; comments,
/// string/char literals and numbers dropped.
fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1usize);
    let is_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let is_cont = |ch: char| ch.is_alphanumeric() || ch == '_';
    // Skip a "…" string whose opening quote is at `i`; returns the index after it.
    let skip_str = |mut i: usize, line: &mut usize| {
        i += 1;
        while i < c.len() {
            match c[i] {
                '\\' => {
                    if c.get(i + 1) == Some(&'\n') {
                        *line += 1;
                    }
                    i += 2;
                }
                '"' => return i + 1,
                '\n' => {
                    *line += 1;
                    i += 1
                }
                _ => i += 1,
            }
        }
        i
    };
    // Skip r#"…"# whose first `#` or `"` is at `i`.
    let skip_raw = |mut i: usize, line: &mut usize| {
        let mut hashes = 0;
        while c.get(i) == Some(&'#') {
            hashes += 1;
            i += 1;
        }
        i += 1; // the opening quote
        while i < c.len() {
            if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                return i + 1 + hashes;
            }
            if c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_str(i, &mut line);
        } else if ch == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                // An escaped char literal: '\n', '\'', '\u{1F600}'.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3; // 'a'
            } else {
                i += 1; // a lifetime or label: its name follows as an identifier
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && is_cont(c[i]) {
                i += 1;
            }
        } else if is_start(ch) {
            let start = i;
            while i < c.len() && is_cont(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied();
            match (word.as_str(), next) {
                ("r" | "br" | "cr", Some('"')) => i = skip_raw(i, &mut line),
                ("r" | "br" | "cr", Some('#')) if matches!(c.get(i + 1), Some('#' | '"')) => i = skip_raw(i, &mut line),
                ("b" | "c", Some('"')) => i = skip_str(i, &mut line),
                ("b", Some('\'')) => {} // b'x': the char literal is skipped next round
                ("r", Some('#')) => {
                    // A raw identifier: r#type.
                    let s = i + 1;
                    i = s;
                    while i < c.len() && is_cont(c[i]) {
                        i += 1;
                    }
                    out.push(Tok {
                        text: c[s..i].iter().collect(),
                        line,
                        ident: true,
                    });
                }
                _ => out.push(Tok {
                    text: word,
                    line,
                    ident: true,
                }),
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok {
                text: "::".into(),
                line,
                ident: false,
            });
            i += 2;
        } else {
            out.push(Tok {
                text: ch.to_string(),
                line,
                ident: false,
            });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------- paths

/// One path segment and the line it is on.
type Seg = (String, usize);

/// Expand a `use` tree (the tokens between `use` and `;`) into full paths.
/// A glob ends its path with `*`.
fn use_paths(toks: &[Tok]) -> Vec<Vec<Seg>> {
    fn tree(toks: &[Tok], i: &mut usize, prefix: &[Seg], out: &mut Vec<Vec<Seg>>) {
        let mut path = prefix.to_vec();
        loop {
            let Some(t) = toks.get(*i) else { break };
            match t.text.as_str() {
                "::" => *i += 1,
                "{" => {
                    *i += 1;
                    loop {
                        match toks.get(*i).map(|t| t.text.as_str()) {
                            None => return,
                            Some("}") => {
                                *i += 1;
                                return;
                            }
                            Some(",") => *i += 1,
                            _ => tree(toks, i, &path, out),
                        }
                    }
                }
                "*" => {
                    *i += 1;
                    path.push(("*".into(), t.line));
                    out.push(path);
                    return;
                }
                "as" => {
                    *i += 2; // the alias
                    out.push(path);
                    return;
                }
                "," | "}" => {
                    out.push(path);
                    return;
                }
                _ if t.ident => {
                    path.push((t.text.clone(), t.line));
                    *i += 1;
                }
                _ => *i += 1,
            }
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        tree(toks, &mut i, &[], &mut out);
    }
    out
}

/// Where a file sits: its module path and whether it belongs to the binary.
#[derive(Debug, Clone)]
struct FileMod {
    rel: String,
    module: Vec<String>,
    bin: bool,
}

impl FileMod {
    fn room(&self) -> String {
        match self.module.first() {
            Some(r) => r.clone(),
            None if self.bin => "main".into(),
            None => "lib".into(),
        }
    }
}

/// The module path of `rel` (e.g. `pki/ca.rs` -> [pki, ca], `pki/mod.rs` -> [pki]).
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.len() >= 2 && parts[0] == "bin" {
        parts.drain(..2);
    }
    match parts.last().map(String::as_str) {
        Some("mod" | "lib" | "main") => {
            parts.pop();
        }
        _ => {}
    }
    parts
}

/// The absolute module path a path reaches, as (room, line of the segment that
/// names it), or None if it is not ours (an external crate, `mdmd::` from the
/// binary) or does not leave the crate root.
fn resolve(segs: &[Seg], here: &[String]) -> Option<(String, usize)> {
    let (first, line) = segs.first()?;
    let rest = &segs[1..];
    let (base, rest): (Vec<String>, &[Seg]) = match first.as_str() {
        "crate" => (Vec::new(), rest),
        "self" => (here.to_vec(), rest),
        "super" => {
            let mut base = here.to_vec();
            base.pop()?;
            let mut k = 0;
            while rest.get(k).is_some_and(|(s, _)| s == "super") {
                base.pop()?;
                k += 1;
            }
            (base, &rest[k..])
        }
        _ => return None,
    };
    match base.first() {
        Some(room) => Some((room.clone(), *line)),
        None => match rest.first() {
            Some((s, _)) if s == "*" => Some(("lib".into(), *line)),
            Some((s, l)) if s != "self" => Some((s.clone(), *l)),
            _ => None,
        },
    }
}

// ---------------------------------------------------------------- the check

fn check_file(f: &FileMod, src: &str, out: &mut Vec<Violation>) {
    let toks = tokenize(src);
    let from = f.room();
    let mut push = |line: usize, to: &str| {
        out.push(Violation {
            file: f.rel.clone(),
            line,
            from: from.clone(),
            to: to.to_owned(),
        })
    };
    let judge = |to: &str| -> bool {
        if f.bin || to == from {
            return false;
        }
        (from == "protocol")
            || (LOWER.contains(&from.as_str()) && UPPER.contains(&to))
            // The device routes and the admin API sit side by side; `server` composes them.
            || (from == "http" && to == "api")
            || (from == "api" && to == "http")
    };
    let axum_ok = HTTP_ROOMS.contains(&from.as_str()) && !f.bin;
    let unsafe_ok = f.rel == UNSAFE_FILE;

    // Inline modules: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod: Option<String> = None;
    let here = |inline: &[(String, usize)]| {
        let mut m = f.module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let prev = i.checked_sub(1).map(|k| toks[k].text.as_str());
        match t.text.as_str() {
            "{" => {
                depth += 1;
                if let Some(n) = pending_mod.take() {
                    inline.push((n, depth));
                }
            }
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            ";" => pending_mod = None,
            "mod" if t.ident => {
                if let Some(n) = toks.get(i + 1).filter(|n| n.ident) {
                    pending_mod = Some(n.text.clone());
                }
            }
            "use" if t.ident => {
                let end = (i + 1..toks.len()).find(|&k| toks[k].text == ";").unwrap_or(toks.len());
                let h = here(&inline);
                for p in use_paths(&toks[i + 1..end]) {
                    if p.first().is_some_and(|(s, _)| s == "axum") && !axum_ok {
                        push(p[0].1, "axum");
                    }
                    if let Some((to, line)) = resolve(&p, &h) {
                        if judge(&to) {
                            push(line, &to);
                        }
                    }
                }
                i = end;
            }
            "unsafe" if t.ident && !unsafe_ok => push(t.line, "unsafe"),
            "allow" | "expect" if t.ident && !unsafe_ok && toks.get(i + 1).is_some_and(|n| n.text == "(") => {
                let close = (i + 1..toks.len()).find(|&k| toks[k].text == ")").unwrap_or(toks.len());
                if toks[i + 1..close].iter().any(|x| x.text == "unsafe_code") {
                    push(t.line, "unsafe");
                }
            }
            // `axum::…`, or `::axum::…` (a leading `::`, not `x::axum`).
            "axum" if t.ident && !axum_ok && (prev != Some("::") || i < 2 || !(toks[i - 2].ident || toks[i - 2].text == ">")) => {
                push(t.line, "axum")
            }
            "crate" | "self" | "super" if t.ident && prev != Some("::") && toks.get(i + 1).is_some_and(|n| n.text == "::") => {
                let mut segs: Vec<Seg> = vec![(t.text.clone(), t.line)];
                let mut k = i + 1;
                while toks.get(k).is_some_and(|n| n.text == "::") && toks.get(k + 1).is_some_and(|n| n.ident) {
                    segs.push((toks[k + 1].text.clone(), toks[k + 1].line));
                    k += 2;
                }
                if let Some((to, line)) = resolve(&segs, &here(&inline)) {
                    if judge(&to) {
                        push(line, &to);
                    }
                }
                i = k;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Does src/lib.rs carry `#![deny(unsafe_code)]`?
fn denies_unsafe(lib: &str) -> bool {
    let t = tokenize(lib);
    t.windows(4).enumerate().any(|(k, w)| {
        w[0].text == "#"
            && w[1].text == "!"
            && w[2].text == "["
            && w[3].text == "deny"
            && t[k + 4..].iter().take_while(|x| x.text != "]").any(|x| x.text == "unsafe_code")
    })
}

/// Check a source tree given as (path relative to the src root, text).
pub fn check_sources(files: &[(String, String)]) -> Vec<Violation> {
    // The binary's modules: what src/main.rs declares with `mod name;`.
    let mut bin_mods = BTreeSet::new();
    if let Some((_, main)) = files.iter().find(|(p, _)| p == "main.rs") {
        let t = tokenize(main);
        for w in t.windows(3) {
            if w[0].text == "mod" && w[1].ident && w[2].text == ";" {
                bin_mods.insert(w[1].text.clone());
            }
        }
    }
    let mut out = Vec::new();
    for (rel, text) in files {
        let top = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
        let bin = rel == "main.rs" || rel.starts_with("bin/") || bin_mods.contains(&top);
        let f = FileMod {
            rel: rel.clone(),
            module: module_of(rel),
            bin,
        };
        check_file(&f, text, &mut out);
    }
    match files.iter().find(|(p, _)| p == "lib.rs") {
        Some((_, lib)) if !denies_unsafe(lib) => out.push(Violation {
            file: "lib.rs".into(),
            line: 1,
            from: "lib".into(),
            to: "unsafe (no #![deny(unsafe_code)])".into(),
        }),
        _ => {}
    }
    out.sort();
    out.dedup(); // `use crate::service::{now, Topic}` is one arrow
    out
}

/// Check every `.rs` file under `root` (normally `src/`).
pub fn check(root: &Path) -> Vec<Violation> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src dir").flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    let files: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(p).expect("read source"))
        })
        .collect();
    check_sources(&files)
}

#[test]
fn src_imports_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let v = check(&root);
    assert!(
        v.is_empty(),
        "{} import(s) point the wrong way (docs/ARCHITECTURE.md):\n{}",
        v.len(),
        v.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------- the checker's own tests

#[cfg(test)]
mod checker {
    use super::*;

    fn run(files: &[(&str, &str)]) -> Vec<String> {
        let mut all: Vec<(String, String)> = files.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect();
        if !files.iter().any(|(p, _)| *p == "lib.rs") {
            all.push(("lib.rs".into(), "#![deny(unsafe_code)]\npub mod pki;\n".into()));
        }
        check_sources(&all).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_clean_tree_passes() {
        let v = run(&[
            (
                "pki/ca.rs",
                "use crate::store::Store;\nuse super::tls;\nfn f() { crate::protocol::x(); }\n",
            ),
            ("service/mod.rs", "use crate::pki::ca;\nuse axum_extra::X;\n"),
            ("http/mod.rs", "use axum::Router;\nuse crate::service::now;\n"),
            (
                "protocol/mod.rs",
                "use self::ids::Udid;\nuse crate::protocol::json;\nuse serde::Serialize;\n",
            ),
            ("protocol/ids.rs", "use super::json::X;\n"),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_plain_use_into_a_higher_room() {
        assert_eq!(
            run(&[("pki/ca.rs", "\nuse crate::service::now;\n")]),
            ["src/pki/ca.rs:2: pki -> service"]
        );
    }

    #[test]
    fn http_and_api_sit_side_by_side() {
        assert_eq!(
            run(&[
                ("http/mdm.rs", "fn f() { crate::api::error::internal(); }\n"),
                ("api/mod.rs", "use crate::http::listener;\n"),
                ("ops/lease.rs", "use crate::service::Mdm;\n"),
            ]),
            [
                "src/api/mod.rs:1: api -> http",
                "src/http/mdm.rs:1: http -> api",
                "src/ops/lease.rs:1: ops -> service"
            ]
        );
    }

    #[test]
    fn a_group_hides_the_room() {
        assert_eq!(
            run(&[("push/mod.rs", "use crate::{store::Store, service::now};\n")]),
            ["src/push/mod.rs:1: push -> service"]
        );
        assert_eq!(
            run(&[(
                "store/mod.rs",
                "use crate::{\n    protocol,\n    http::{\n        listener,\n    },\n};\n"
            )]),
            ["src/store/mod.rs:3: store -> http"]
        );
        assert_eq!(
            run(&[("profiles/mod.rs", "pub use crate::{app::{self as a}, config::*};\n")]),
            [
                "src/profiles/mod.rs:1: profiles -> app",
                "src/profiles/mod.rs:1: profiles -> config"
            ]
        );
    }

    #[test]
    fn a_path_split_over_lines() {
        assert_eq!(
            run(&[(
                "pki/tls.rs",
                "fn f() {\n    let t = crate::\n        service\n        ::now();\n}\n"
            )]),
            ["src/pki/tls.rs:3: pki -> service"]
        );
        assert_eq!(
            run(&[("pki/tls.rs", "use crate\n  ::api\n  ::Thing;\n")]),
            ["src/pki/tls.rs:2: pki -> api"]
        );
    }

    #[test]
    fn an_inline_call() {
        assert_eq!(
            run(&[("pki/ca.rs", "fn f() -> i64 {\n    crate::service::now() + 1\n}\n")]),
            ["src/pki/ca.rs:2: pki -> service"]
        );
        assert_eq!(
            run(&[("store/redb.rs", "fn f(x: std::sync::Arc<crate::server::State>) {}\n")]),
            ["src/store/redb.rs:1: store -> server"]
        );
    }

    #[test]
    fn super_climbing_out_of_a_room() {
        // pki/ca.rs is pki::ca: super is pki, super::super the crate root.
        assert_eq!(
            run(&[("pki/ca.rs", "use super::super::service::now;\n")]),
            ["src/pki/ca.rs:1: pki -> service"]
        );
        // pki/mod.rs is pki itself: one super leaves the room.
        assert_eq!(
            run(&[("pki/mod.rs", "fn f() { super::http::x(); }\n")]),
            ["src/pki/mod.rs:1: pki -> http"]
        );
        assert_eq!(
            run(&[("pki/mod.rs", "use super::{service, store};\n")]),
            ["src/pki/mod.rs:1: pki -> service"]
        );
        // Inside an inline module super stays in the file's module.
        assert!(run(&[("pki/mod.rs", "mod tests {\n    use super::*;\n    use super::ca;\n}\n")]).is_empty());
        assert_eq!(
            run(&[("pki/mod.rs", "mod tests {\n    use super::super::service;\n}\n")]),
            ["src/pki/mod.rs:2: pki -> service"]
        );
        // Staying inside the room is fine.
        assert!(run(&[("pki/scep/fast.rs", "use super::super::ca;\nuse super::cms;\n")]).is_empty());
    }

    #[test]
    fn protocol_imports_nothing_of_ours() {
        assert_eq!(
            run(&[(
                "protocol/checkin.rs",
                "use crate::pki::cert_sha256;\nfn f() { super::super::metrics::inc(); }\n"
            )]),
            [
                "src/protocol/checkin.rs:1: protocol -> pki",
                "src/protocol/checkin.rs:2: protocol -> metrics"
            ]
        );
        assert_eq!(
            run(&[("protocol/mod.rs", "use crate::*;\n")]),
            ["src/protocol/mod.rs:1: protocol -> lib"]
        );
        // Other crates and its own modules are fine.
        assert!(run(&[("protocol/mod.rs", "use plist::Value;\nuse crate::protocol::ids;\nmod ids;\n")]).is_empty());
    }

    #[test]
    fn lower_rooms_may_use_each_other_and_protocol() {
        assert!(run(&[(
            "push/mod.rs",
            "use crate::{store::Store, pki::ca, protocol::Udid, metrics, logfmt};\n"
        )])
        .is_empty());
    }

    #[test]
    fn axum_only_in_the_http_rooms() {
        assert_eq!(
            run(&[
                ("service/netpolicy.rs", "use axum::http::HeaderMap;\n"),
                ("service/accounts.rs", "fn allows(m: &axum::http::Method) {}\n"),
                ("store/mod.rs", "use ::axum::Json;\n"),
                ("api/mod.rs", "use axum::Router;\n"),
                ("console/mod.rs", "fn r() -> axum::Router { todo!() }\n"),
                ("push/client.rs", "fn f() { let j = ::axum::Json(1); }\n"),
                ("server.rs", "use axum::{Router, routing::get};\n"),
                ("http/mdm.rs", "#[axum::debug_handler]\nasync fn h() {}\n"),
                ("main.rs", "mod cli;\nfn main() {\n    let r = axum::Router::new();\n}\n"),
            ]),
            [
                "src/main.rs:3: main -> axum",
                "src/push/client.rs:1: push -> axum",
                "src/service/accounts.rs:1: service -> axum",
                "src/service/netpolicy.rs:1: service -> axum",
                "src/store/mod.rs:1: store -> axum",
            ]
        );
        // A path that merely ends in axum, or a word in a string, is not axum.
        assert!(run(&[("service/x.rs", "use other::axum;\nconst S: &str = \"axum::Router\";\n")]).is_empty());
    }

    #[test]
    fn unsafe_only_in_ossl() {
        assert!(run(&[("pki/ossl.rs", "#![allow(unsafe_code)]\nfn f() { unsafe { g() } }\n")]).is_empty());
        assert_eq!(
            run(&[(
                "store/redb.rs",
                "fn f() {\n    unsafe { g() }\n}\n#[allow(dead_code, unsafe_code)]\nfn h() {}\n"
            )]),
            ["src/store/redb.rs:2: store -> unsafe", "src/store/redb.rs:4: store -> unsafe"]
        );
        assert_eq!(
            run(&[("cli/mod.rs", "unsafe fn f() {}\n"), ("main.rs", "mod cli;\n")]),
            ["src/cli/mod.rs:1: cli -> unsafe"]
        );
        // unsafe_code in deny/forbid is the point, not a violation.
        assert!(run(&[("service/mod.rs", "#![deny(unsafe_code)]\n#![forbid(unsafe_code)]\n")]).is_empty());
    }

    #[test]
    fn the_crate_root_denies_unsafe() {
        assert_eq!(
            run(&[("lib.rs", "//! mdmd\n// #![deny(unsafe_code)]\npub mod pki;\n")]),
            ["src/lib.rs:1: lib -> unsafe (no #![deny(unsafe_code)])"]
        );
        assert!(run(&[("lib.rs", "//! mdmd\n#![deny(missing_docs, unsafe_code)]\npub mod pki;\n")]).is_empty());
    }

    #[test]
    fn comments_and_strings_are_not_code() {
        let src = r####"
//! Unlike `crate::service::now`, this is fine.
/// use crate::service::now;
/* use crate::http::x; /* nested crate::api */ still a comment: crate::server */
fn f() {
    let a = "use crate::service::now; unsafe { }";
    let b = r#"crate::service::now() "quoted" unsafe"#;
    let c = b"crate::api";
    let d = br##"axum::Router "# still raw"##;
    let e = 'x';
    let f = '\'';
    let g = "escaped \" crate::service::now()";
    let r#type = 1;
}
fn lt<'a>(x: &'a str) -> &'a str { x }
"####;
        assert!(run(&[("pki/ca.rs", src)]).is_empty(), "{:?}", run(&[("pki/ca.rs", src)]));
        // And the tokenizer keeps counting lines through all of that.
        let after = format!("{src}fn late() {{ crate::service::now(); }}\n");
        let line = src.lines().count() + 1;
        assert_eq!(run(&[("pki/ca.rs", &after)]), [format!("src/pki/ca.rs:{line}: pki -> service")]);
    }

    #[test]
    fn the_binary_reaches_the_library_as_mdmd() {
        let v = run(&[
            (
                "main.rs",
                "mod cli;\nmod table;\nuse mdmd::service::now;\nfn main() { cli::run(); }\n",
            ),
            ("cli/mod.rs", "use mdmd::server;\nuse crate::table;\n"),
            ("cli/devices.rs", "use super::super::table::render;\n"),
            ("table.rs", "use mdmd::api;\n"),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn the_src_root_is_a_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("pki")).unwrap();
        std::fs::create_dir_all(src.join("http")).unwrap();
        std::fs::write(src.join("lib.rs"), "#![deny(unsafe_code)]\npub mod pki;\npub mod http;\n").unwrap();
        std::fs::write(src.join("pki/mod.rs"), "//! PKI\nuse crate::http::serve;\n").unwrap();
        std::fs::write(src.join("http/mod.rs"), "use crate::pki;\nuse axum::Router;\n").unwrap();
        let v: Vec<String> = check(&src).iter().map(ToString::to_string).collect();
        assert_eq!(v, ["src/pki/mod.rs:2: pki -> http"]);
    }

    #[test]
    fn tokenizer_basics() {
        let t: Vec<String> = tokenize("a::b /* x */ 'c' 1.5 \"s\" r#\"r\"# e")
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(t, ["a", "::", "b", ".", "e"]);
    }
}
