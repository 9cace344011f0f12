//! iOS app archives (.ipa) and the manifests `InstallApplication`'s
//! `ManifestURL` points to: pure parsing and building, no I/O beyond the
//! reader handed in.
//!
//! An .ipa is a zip holding exactly one `Payload/<Name>.app/` with its
//! `Info.plist` (binary or XML): `read_ipa` finds it and reads what an MDM
//! server needs (bundle id, versions, name, minimum OS). Untrusted input,
//! bounded throughout: at most `MAX_ENTRIES` entries (the zip reader itself
//! keeps its central directory within the archive's size), the Info.plist
//! decompressed through `take` to at most `MAX_INFO_PLIST` bytes whatever
//! its header claims, parsed by `limits` (depth, values, expansion); nothing
//! else is decompressed. Every problem is an `IpaError` that says what is
//! wrong; no input panics.
//!
//! `manifest` writes the XML plist iOS downloads before the app
//! (`{items: [{assets: [{kind: software-package, url}], metadata:
//! {bundle-identifier, bundle-version, kind: software, title}}]}`),
//! `parse_manifest` reads one back (the simulated device), `build_ipa` makes
//! a small valid archive (tests, the simulator).

use std::io::{Read, Seek};

use plist::{Dictionary, Value};
use thiserror::Error;

/// The most entries an archive may hold (real apps hold a few thousand).
pub const MAX_ENTRIES: usize = 200_000;
/// The largest Info.plist read, decompressed.
pub const MAX_INFO_PLIST: u64 = 1024 * 1024;
/// The largest manifest read.
pub const MAX_MANIFEST: usize = 1024 * 1024;
/// Apple's bound on a bundle identifier.
pub const MAX_BUNDLE_ID: usize = 155;
/// The longest version, name or URL kept.
const MAX_VERSION: usize = 64;
const MAX_NAME: usize = 256;
const MAX_URL: usize = 4096;

/// What an .ipa says of its app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpaInfo {
    /// `CFBundleIdentifier`.
    pub bundle_id: String,
    /// `CFBundleShortVersionString`, else `CFBundleVersion`.
    pub version: String,
    /// `CFBundleVersion`.
    pub build: Option<String>,
    /// `CFBundleDisplayName`, else `CFBundleName`, else the bundle id.
    pub name: String,
    /// `MinimumOSVersion`.
    pub minimum_os: Option<String>,
    /// The archive's size in bytes (as handed to `read_ipa`).
    pub size: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IpaError {
    #[error("not an iOS app archive (.ipa): {0}")]
    NotAnArchive(String),
    #[error("not an iOS app archive (.ipa): it has {0} entries, more than {MAX_ENTRIES}")]
    TooManyEntries(usize),
    #[error("not an iOS app archive (.ipa): there is no Payload/<Name>.app/Info.plist in it")]
    NoApp,
    #[error("not an iOS app archive (.ipa): Payload/ holds more than one app ({0} and {1})")]
    SeveralApps(String, String),
    #[error("the archive is encrypted ({0}): upload the .ipa as exported, without a password")]
    Encrypted(String),
    #[error("{0} is larger than {MAX_INFO_PLIST} bytes uncompressed: not an app's Info.plist")]
    InfoPlistTooBig(String),
    #[error("{0} could not be read from the archive: {1}")]
    Read(String, String),
    #[error("the app's Info.plist is not a property list: {0}")]
    InfoPlist(String),
    #[error("the app's Info.plist is not a dictionary")]
    NotADictionary,
    #[error("the app's CFBundleIdentifier {0}")]
    BundleId(String),
    #[error("the app's Info.plist has no version (CFBundleShortVersionString or CFBundleVersion)")]
    NoVersion,
    #[error("a macOS app, not an iOS app (CFBundleSupportedPlatforms: {0})")]
    NotIos(String),
    #[error("not an app manifest: {0}")]
    Manifest(String),
}

/// Why `id` is not a bundle identifier (ASCII letters, digits, `.` and `-`,
/// reverse-DNS: at least two non-empty parts, at most `MAX_BUNDLE_ID`).
pub fn bundle_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if id.len() > MAX_BUNDLE_ID {
        return Some(format!("is {} characters long (at most {MAX_BUNDLE_ID})", id.len()));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-')) {
        return Some(format!(
            "{:?} contains {c:?}: only ASCII letters, digits, '.' and '-' are allowed",
            crate_bounded(id, 80)
        ));
    }
    if !id.contains('.') || id.split('.').any(str::is_empty) {
        return Some(format!("{id:?} is not a reverse-DNS identifier (like com.example.app)"));
    }
    None
}

/// `s` cut to at most `max` bytes on a character boundary (protocol imports nothing of ours).
fn crate_bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A string value, trimmed, without control characters, cut to `max`; none when empty.
fn text(d: &Dictionary, key: &str, max: usize) -> Option<String> {
    let s = d.get(key)?.as_string()?.trim();
    if s.is_empty() || s.chars().any(char::is_control) {
        return None;
    }
    Some(crate_bounded(s, max).to_owned())
}

/// Read an .ipa (`size`: its length in bytes, reported back as is).
pub fn read_ipa<R: Read + Seek>(r: R, size: u64) -> Result<IpaInfo, IpaError> {
    let mut zip = zip::ZipArchive::new(r).map_err(|e| IpaError::NotAnArchive(crate_bounded(&e.to_string(), 200).to_owned()))?;
    if zip.len() > MAX_ENTRIES {
        return Err(IpaError::TooManyEntries(zip.len()));
    }
    let mut app: Option<String> = None;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_data(i)
            .map_err(|e| IpaError::NotAnArchive(crate_bounded(&e.to_string(), 200).to_owned()))?;
        let name = String::from_utf8_lossy(entry.name_raw());
        if entry.encrypted() {
            return Err(IpaError::Encrypted(crate_bounded(&name, 200).to_owned()));
        }
        // `Payload/<Name>.app/…`: one app directly under Payload/.
        let Some(rest) = name.strip_prefix("Payload/") else { continue };
        let Some((dir, _)) = rest.split_once('/') else { continue };
        if !dir.ends_with(".app") || dir.len() <= 4 {
            continue;
        }
        match &app {
            None => app = Some(dir.to_owned()),
            Some(a) if a != dir => {
                return Err(IpaError::SeveralApps(
                    crate_bounded(a, 100).to_owned(),
                    crate_bounded(dir, 100).to_owned(),
                ))
            }
            Some(_) => {}
        }
    }
    let app = app.ok_or(IpaError::NoApp)?;
    let path = format!("Payload/{app}/Info.plist");
    let index = zip.index_for_name(&path).ok_or(IpaError::NoApp)?;
    let shown = crate_bounded(&path, 200).to_owned();
    let mut bytes = Vec::new();
    {
        let file = zip
            .by_index(index)
            .map_err(|e| IpaError::Read(shown.clone(), crate_bounded(&e.to_string(), 200).to_owned()))?;
        if file.is_dir() {
            return Err(IpaError::NoApp);
        }
        // The header's size is the sender's claim: read at most one byte past the bound.
        file.take(MAX_INFO_PLIST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| IpaError::Read(shown.clone(), crate_bounded(&e.to_string(), 200).to_owned()))?;
    }
    if bytes.len() as u64 > MAX_INFO_PLIST {
        return Err(IpaError::InfoPlistTooBig(shown));
    }
    let info = match super::limits::parse_value(&bytes) {
        Ok(Value::Dictionary(d)) => d,
        Ok(_) => return Err(IpaError::NotADictionary),
        Err(e) => return Err(IpaError::InfoPlist(crate_bounded(&e.to_string(), 200).to_owned())),
    };
    info_of(&info, size)
}

/// What an Info.plist says, checked.
fn info_of(info: &Dictionary, size: u64) -> Result<IpaInfo, IpaError> {
    let bundle_id = match info.get("CFBundleIdentifier") {
        None => return Err(IpaError::BundleId("is missing".into())),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(IpaError::BundleId("is not a string".into())),
    };
    if let Some(p) = bundle_id_problem(&bundle_id) {
        return Err(IpaError::BundleId(p));
    }
    if let Some(platforms) = info.get("CFBundleSupportedPlatforms") {
        let list: Vec<&str> = platforms
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_string).collect())
            .unwrap_or_default();
        if !list.contains(&"iPhoneOS") {
            let shown = list.join(", ");
            return Err(IpaError::NotIos(if shown.is_empty() {
                "none".into()
            } else {
                crate_bounded(&shown, 100).to_owned()
            }));
        }
    }
    let build = text(info, "CFBundleVersion", MAX_VERSION);
    let version = text(info, "CFBundleShortVersionString", MAX_VERSION)
        .or_else(|| build.clone())
        .ok_or(IpaError::NoVersion)?;
    let name = text(info, "CFBundleDisplayName", MAX_NAME)
        .or_else(|| text(info, "CFBundleName", MAX_NAME))
        .unwrap_or_else(|| bundle_id.clone());
    Ok(IpaInfo {
        bundle_id,
        version,
        build,
        name,
        minimum_os: text(info, "MinimumOSVersion", MAX_VERSION),
        size,
    })
}

fn dict(pairs: Vec<(&str, Value)>) -> Dictionary {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The manifest (XML plist) that `InstallApplication`'s `ManifestURL`
/// serves for the app at `ipa_url`.
pub fn manifest(info: &IpaInfo, ipa_url: &str) -> Vec<u8> {
    let item = dict(vec![
        (
            "assets",
            Value::Array(vec![Value::Dictionary(dict(vec![
                ("kind", "software-package".into()),
                ("url", ipa_url.into()),
            ]))]),
        ),
        (
            "metadata",
            Value::Dictionary(dict(vec![
                ("bundle-identifier", info.bundle_id.clone().into()),
                ("bundle-version", info.version.clone().into()),
                ("kind", "software".into()),
                ("title", info.name.clone().into()),
            ])),
        ),
    ]);
    super::to_xml(&dict(vec![("items", Value::Array(vec![Value::Dictionary(item)]))]))
}

/// A manifest's first item: (the .ipa's URL, bundle id, version).
pub fn parse_manifest(bytes: &[u8]) -> Result<(String, String, String), IpaError> {
    if bytes.len() > MAX_MANIFEST {
        return Err(IpaError::Manifest(format!("it is larger than {MAX_MANIFEST} bytes")));
    }
    let top = match super::limits::parse_value(bytes) {
        Ok(Value::Dictionary(d)) => d,
        Ok(_) => return Err(IpaError::Manifest("the root is not a dictionary".into())),
        Err(e) => return Err(IpaError::Manifest(crate_bounded(&e.to_string(), 200).to_owned())),
    };
    let item = top
        .get("items")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_dictionary)
        .ok_or_else(|| IpaError::Manifest("no items".into()))?;
    let url = item
        .get("assets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_dictionary)
        .find(|a| a.get("kind").and_then(Value::as_string) == Some("software-package"))
        .and_then(|a| a.get("url"))
        .and_then(Value::as_string)
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= MAX_URL && !u.chars().any(char::is_control))
        .ok_or_else(|| IpaError::Manifest("no software-package asset with a URL".into()))?
        .to_owned();
    let meta = item
        .get("metadata")
        .and_then(Value::as_dictionary)
        .ok_or_else(|| IpaError::Manifest("no metadata".into()))?;
    let bundle_id = text(meta, "bundle-identifier", MAX_BUNDLE_ID + 1).ok_or_else(|| IpaError::Manifest("no bundle-identifier".into()))?;
    if let Some(p) = bundle_id_problem(&bundle_id) {
        return Err(IpaError::Manifest(format!("the bundle-identifier {p}")));
    }
    let version = text(meta, "bundle-version", MAX_VERSION).ok_or_else(|| IpaError::Manifest("no bundle-version".into()))?;
    Ok((url, bundle_id, version))
}

/// A small valid .ipa: `Payload/<Name>.app/` with an Info.plist (the
/// identifier, `version` as both versions, `name`, MinimumOSVersion 16.0,
/// iPhoneOS) and a stand-in executable.
pub fn build_ipa(bundle_id: &str, version: &str, name: &str) -> Vec<u8> {
    let info = dict(vec![
        ("CFBundleIdentifier", bundle_id.into()),
        ("CFBundleShortVersionString", version.into()),
        ("CFBundleVersion", version.into()),
        ("CFBundleName", name.into()),
        ("CFBundleExecutable", executable_name(name).into()),
        ("CFBundlePackageType", "APPL".into()),
        ("MinimumOSVersion", "16.0".into()),
        ("CFBundleSupportedPlatforms", Value::Array(vec!["iPhoneOS".into()])),
    ]);
    zip_of(&[
        (&format!("Payload/{}.app/Info.plist", executable_name(name)), &super::to_xml(&info)),
        (
            &format!("Payload/{0}.app/{0}", executable_name(name)),
            &[0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01],
        ),
    ])
}

/// The app's directory and executable name: the name's letters and digits.
fn executable_name(name: &str) -> String {
    let n: String = name.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
    if n.is_empty() {
        "App".into()
    } else {
        n
    }
}

/// A zip of (path, bytes), deflated, its directories first. Writing to
/// memory cannot fail; if it did, the archive is empty (and unreadable).
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let build = || -> zip::result::ZipResult<Vec<u8>> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut dirs: Vec<String> = Vec::new();
        for (path, _) in files {
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                let d = &path[..at + i + 1];
                if !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_owned());
                }
                at += i + 1;
            }
        }
        for d in &dirs {
            w.add_directory(d.as_str(), opts)?;
        }
        for (path, bytes) in files {
            w.start_file(*path, opts)?;
            w.write_all(bytes)?;
        }
        Ok(w.finish()?.into_inner())
    };
    build().unwrap_or_default()
}

#[cfg(test)]
mod tests;
