//! `read_ipa` against valid, odd and hostile archives; manifests both ways.

use super::*;
use std::io::Cursor;

fn read(bytes: &[u8]) -> Result<IpaInfo, IpaError> {
    read_ipa(Cursor::new(bytes), bytes.len() as u64)
}

fn info_plist(pairs: Vec<(&str, Value)>) -> Vec<u8> {
    crate::protocol::to_xml(&dict(pairs))
}

fn ios(extra: Vec<(&str, Value)>) -> Vec<u8> {
    let mut pairs = vec![
        ("CFBundleIdentifier", Value::from("com.example.field")),
        ("CFBundleShortVersionString", "2.1".into()),
        ("CFBundleVersion", "2100".into()),
        ("CFBundleName", "Field".into()),
    ];
    for (k, v) in extra {
        pairs.retain(|(x, _)| *x != k);
        pairs.push((k, v));
    }
    pairs.retain(|(_, v)| v.as_string() != Some("<none>"));
    info_plist(pairs)
}

fn app_with(info: &[u8]) -> Vec<u8> {
    zip_of(&[
        ("Payload/Field.app/Info.plist", info),
        ("Payload/Field.app/Field", b"\xcf\xfa\xed\xfe"),
    ])
}

#[test]
fn a_built_archive_reads_back() {
    let ipa = build_ipa("com.example.field", "3.4.5", "Field Notes");
    let info = read(&ipa).unwrap();
    assert_eq!(
        info,
        IpaInfo {
            bundle_id: "com.example.field".into(),
            version: "3.4.5".into(),
            build: Some("3.4.5".into()),
            name: "Field Notes".into(),
            minimum_os: Some("16.0".into()),
            size: ipa.len() as u64,
        }
    );
    // A name with nothing usable for a directory still builds.
    assert_eq!(read(&build_ipa("com.example.x", "1", "  ")).unwrap().name, "com.example.x");
}

#[test]
fn fields_as_apple_defines_them() {
    // Display name first; the short version, else the build.
    let i = read(&app_with(&ios(vec![("CFBundleDisplayName", "Field Pro".into())]))).unwrap();
    assert_eq!(
        (i.name.as_str(), i.version.as_str(), i.build.as_deref()),
        ("Field Pro", "2.1", Some("2100"))
    );
    let i = read(&app_with(&ios(vec![("CFBundleShortVersionString", "<none>".into())]))).unwrap();
    assert_eq!((i.version.as_str(), i.build.as_deref()), ("2100", Some("2100")));
    let i = read(&app_with(&ios(vec![("CFBundleName", "<none>".into())]))).unwrap();
    assert_eq!(i.name, "com.example.field");
    assert_eq!(i.minimum_os, None);
    // A binary Info.plist reads the same.
    let mut bin = Vec::new();
    plist::from_bytes::<Value>(&ios(vec![]))
        .unwrap()
        .to_writer_binary(&mut bin)
        .unwrap();
    assert_eq!(read(&app_with(&bin)).unwrap().bundle_id, "com.example.field");
    // iOS among the platforms is iOS.
    let both = Value::Array(vec!["iPhoneSimulator".into(), "iPhoneOS".into()]);
    assert!(read(&app_with(&ios(vec![("CFBundleSupportedPlatforms", both)]))).is_ok());
}

#[test]
fn what_is_wrong_said_in_words() {
    let err = |info: Vec<u8>| read(&app_with(&info)).unwrap_err();
    assert_eq!(
        err(ios(vec![("CFBundleIdentifier", "<none>".into())])).to_string(),
        "the app's CFBundleIdentifier is missing"
    );
    assert!(err(ios(vec![("CFBundleIdentifier", "com.example/field".into())]))
        .to_string()
        .contains("only ASCII letters"));
    assert!(err(ios(vec![("CFBundleIdentifier", "field".into())]))
        .to_string()
        .contains("reverse-DNS"));
    assert!(err(ios(vec![("CFBundleIdentifier", "com..field".into())]))
        .to_string()
        .contains("reverse-DNS"));
    assert!(err(ios(vec![("CFBundleIdentifier", format!("com.{}", "a".repeat(160)).into())]))
        .to_string()
        .contains("characters long"));
    assert!(matches!(err(ios(vec![("CFBundleIdentifier", 7.into())])), IpaError::BundleId(_)));
    assert_eq!(
        err(ios(vec![
            ("CFBundleShortVersionString", "<none>".into()),
            ("CFBundleVersion", "<none>".into())
        ])),
        IpaError::NoVersion
    );
    let mac = Value::Array(vec!["MacOSX".into()]);
    assert_eq!(
        err(ios(vec![("CFBundleSupportedPlatforms", mac)])).to_string(),
        "a macOS app, not an iOS app (CFBundleSupportedPlatforms: MacOSX)"
    );
    let mut root_array = Vec::new();
    Value::Array(vec![1.into()]).to_writer_xml(&mut root_array).unwrap();
    assert_eq!(err(root_array), IpaError::NotADictionary);
    assert!(matches!(err(b"not a plist".to_vec()), IpaError::InfoPlist(_)));
}

#[test]
fn archives_that_are_not_apps() {
    let e = read(b"PK\x03\x04 certainly not a zip").unwrap_err();
    assert!(e.to_string().starts_with("not an iOS app archive (.ipa): "), "{e}");
    assert_eq!(read(&zip_of(&[("README.txt", b"hello")])).unwrap_err(), IpaError::NoApp);
    // A .app elsewhere, or Payload/ without the Info.plist.
    assert_eq!(
        read(&zip_of(&[("Field.app/Info.plist", &ios(vec![]))])).unwrap_err(),
        IpaError::NoApp
    );
    assert_eq!(read(&zip_of(&[("Payload/Field.app/Field", b"x")])).unwrap_err(), IpaError::NoApp);
    assert_eq!(
        read(&zip_of(&[("Payload/Field.app/Sub/Info.plist", &ios(vec![]))]))
            .map(|i| i.bundle_id)
            .unwrap_err(),
        IpaError::NoApp
    );
    let two = zip_of(&[
        ("Payload/A.app/Info.plist", &ios(vec![])),
        ("Payload/B.app/Info.plist", &ios(vec![])),
    ]);
    assert_eq!(read(&two).unwrap_err(), IpaError::SeveralApps("A.app".into(), "B.app".into()));
    // A .app directly holding the Info.plist, with __MACOSX litter beside it.
    let ok = zip_of(&[
        ("__MACOSX/Payload/._Field.app", b"x"),
        ("Payload/Field.app/Info.plist", &ios(vec![])),
    ]);
    assert!(read(&ok).is_ok());
}

#[test]
fn an_encrypted_entry_is_refused() {
    let mut ipa = build_ipa("com.example.field", "1.0", "Field");
    // Set bit 0 (encrypted) of the general purpose flags in every header.
    let mut i = 0;
    while i + 10 < ipa.len() {
        match &ipa[i..i + 4] {
            b"PK\x03\x04" => ipa[i + 6] |= 1,
            b"PK\x01\x02" => ipa[i + 8] |= 1,
            _ => {}
        }
        i += 1;
    }
    let e = read(&ipa).unwrap_err();
    assert!(matches!(e, IpaError::Encrypted(_)), "{e}");
    assert!(e.to_string().contains("encrypted"));
}

#[test]
fn a_huge_or_deep_info_plist_is_refused() {
    // 4 MiB of one string: a small archive, too big once inflated.
    let big = ios(vec![("Filler", "a".repeat(4 << 20).into())]);
    let ipa = app_with(&big);
    assert!(ipa.len() < 64 * 1024, "{}", ipa.len());
    assert_eq!(
        read(&ipa).unwrap_err(),
        IpaError::InfoPlistTooBig("Payload/Field.app/Info.plist".into())
    );
    // 20,000 arrays deep: refused by the plist bounds, without recursion.
    let deep = format!(
        "<?xml version=\"1.0\"?><plist version=\"1.0\">{}{}</plist>",
        "<array>".repeat(20_000),
        "</array>".repeat(20_000)
    );
    assert!(matches!(read(&app_with(deep.as_bytes())).unwrap_err(), IpaError::InfoPlist(_)));
}

#[test]
fn never_panics_on_garbage() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(28);
    for n in [0usize, 1, 4, 22, 100, 4096] {
        for _ in 0..50 {
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            assert!(read(&junk).is_err());
        }
    }
    let ipa = build_ipa("com.example.field", "1.0", "Field");
    // Every truncation.
    for cut in 0..ipa.len() {
        let _ = read(&ipa[..cut]);
    }
    // Random corruption: an answer or an error, never a panic.
    for _ in 0..2000 {
        let mut bad = ipa.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..bad.len());
            bad[at] = rng.gen();
        }
        let _ = read(&bad);
    }
}

#[test]
fn too_many_entries() {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..=MAX_ENTRIES {
        w.start_file(format!("{i:x}"), opts).unwrap();
    }
    w.start_file("Payload/Field.app/Info.plist", opts).unwrap();
    w.write_all(&ios(vec![])).unwrap();
    let bytes = w.finish().unwrap().into_inner();
    assert_eq!(read(&bytes).unwrap_err(), IpaError::TooManyEntries(MAX_ENTRIES + 2));
}

#[test]
fn manifests_both_ways() {
    let info = read(&build_ipa("com.example.field", "2.0", "Field & Co <1>")).unwrap();
    let m = manifest(&info, "https://mdm.example.com/apps/field.ipa?sig=a&b=c");
    let text = String::from_utf8(m.clone()).unwrap();
    assert!(text.contains("<key>software-package</key>") || text.contains("<string>software-package</string>"));
    assert!(text.contains("&amp;"), "{text}");
    assert_eq!(
        parse_manifest(&m).unwrap(),
        (
            "https://mdm.example.com/apps/field.ipa?sig=a&b=c".to_owned(),
            "com.example.field".to_owned(),
            "2.0".to_owned()
        )
    );
    let bad = |d: Dictionary| parse_manifest(&crate::protocol::to_xml(&d)).unwrap_err().to_string();
    assert!(bad(Dictionary::new()).contains("no items"));
    let item = |assets: Value, meta: Value| {
        dict(vec![(
            "items",
            Value::Array(vec![Value::Dictionary(dict(vec![("assets", assets), ("metadata", meta)]))]),
        )])
    };
    let asset = Value::Array(vec![Value::Dictionary(dict(vec![
        ("kind", "software-package".into()),
        ("url", "https://x/a.ipa".into()),
    ]))]);
    let meta = |id: &str| Value::Dictionary(dict(vec![("bundle-identifier", id.into()), ("bundle-version", "1".into())]));
    assert!(bad(item(Value::Array(vec![]), meta("com.example.a"))).contains("software-package"));
    assert!(bad(item(asset.clone(), meta("not valid"))).contains("bundle-identifier"));
    assert!(bad(item(asset.clone(), Value::Boolean(true))).contains("no metadata"));
    assert!(parse_manifest(&crate::protocol::to_xml(&item(asset, meta("com.example.a")))).is_ok());
    assert!(parse_manifest(b"\x00\x01garbage").is_err());
    assert!(parse_manifest(&vec![b' '; MAX_MANIFEST + 1])
        .unwrap_err()
        .to_string()
        .contains("larger"));
}
