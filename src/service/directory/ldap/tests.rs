use super::*;
use std::time::Instant;

fn ldap(url: &str) -> Ldap {
    Ldap::new(LdapConfig::new(url, "dc=example,dc=org")).expect("config")
}

/// A loopback port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn escaping_follows_rfc_4515() {
    assert_eq!(escape_filter_value("alice"), "alice");
    assert_eq!(escape_filter_value("*"), "\\2a");
    assert_eq!(escape_filter_value("("), "\\28");
    assert_eq!(escape_filter_value(")"), "\\29");
    assert_eq!(escape_filter_value("\\"), "\\5c");
    assert_eq!(escape_filter_value("\0"), "\\00");
    assert_eq!(escape_filter_value("a)(uid=*"), "a\\29\\28uid=\\2a");
    assert_eq!(escape_filter_value("jöhn.o'neil@x"), "jöhn.o'neil@x");
}

#[test]
fn filters_keep_the_user_name_a_literal() {
    let cfg = LdapConfig::new("ldap://h", "dc=x");
    for (user, want) in [
        ("*", "(uid=\\2a)"),
        ("a)(uid=*", "(uid=a\\29\\28uid=\\2a)"),
        ("x)(|(objectClass=*", "(uid=x\\29\\28|\\28objectClass=\\2a)"),
    ] {
        let f = cfg.user_filter.replace("{user}", &escape_filter_value(user));
        assert_eq!(f, want);
        // Still one equality filter, as ldap3 reads it.
        assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
    }
    // The DN in group filters too: RFC 4514 escapes become literal backslashes.
    let dn = "cn=Smith\\, J (ops)*,ou=people,dc=x";
    let f = cfg.group_filter.replace("{dn}", &escape_filter_value(dn));
    assert_eq!(
        f,
        "(|(member=cn=Smith\\5c, J \\28ops\\29\\2a,ou=people,dc=x)(uniqueMember=cn=Smith\\5c, J \\28ops\\29\\2a,ou=people,dc=x))"
    );
    assert!(ldap3::parse_filter(&f).is_ok());
}

#[tokio::test]
async fn empty_password_or_bad_user_name_is_refused_without_network() {
    // Port 1 on loopback refuses connections: any network attempt would be Unavailable.
    let l = ldap("ldap://127.0.0.1:1");
    let long = "a".repeat(MAX_USERNAME_BYTES + 1);
    let cases: &[(&str, &str)] = &[
        ("alice", ""),
        ("alice", "\0"),
        ("alice", "\0\0\0"),
        ("alice", " \t\r\n"),
        ("alice", "\u{7f}"),
        ("alice", "pw\0rest"),
        ("", "pw"),
        ("   ", "pw"),
        (&long, "pw"),
        ("ali\0ce", "pw"),
        ("alice\n", "pw"),
        ("ali\u{1b}ce", "pw"),
    ];
    for (user, pw) in cases {
        let r = l.authenticate(user, pw).await;
        assert!(matches!(r, Err(DirectoryError::BadCredentials)), "{user:?}/{pw:?}: {r:?}");
    }
    let too_long = "p".repeat(MAX_PASSWORD_BYTES + 1);
    assert!(matches!(
        l.authenticate("alice", &too_long).await,
        Err(DirectoryError::BadCredentials)
    ));
    // The same with a usable pair does reach for the network.
    let r = l.authenticate("alice", "pw").await;
    assert!(matches!(r, Err(DirectoryError::Unavailable(_))), "{r:?}");
    // 256 bytes is still a name.
    assert!(check_user_name(&"a".repeat(MAX_USERNAME_BYTES)).is_ok());
}

#[tokio::test]
async fn unreachable_directory_is_unavailable_within_the_timeout() {
    for scheme in ["ldap", "ldaps"] {
        let url = format!("{scheme}://127.0.0.1:{}", closed_port());
        let mut cfg = LdapConfig::new(&url, "dc=example,dc=org");
        cfg.timeout = Duration::from_secs(2);
        cfg.bind_dn = Some("cn=mdmd,dc=example,dc=org".into());
        cfg.bind_password = Secret::new("service-pw");
        let l = Ldap::new(cfg).expect("config");
        let start = Instant::now();
        let r = l.authenticate("alice", "alice-pw").await;
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        match r {
            Err(DirectoryError::Unavailable(m)) => assert!(m.contains(&url), "{m}"),
            r => panic!("{url}: {r:?}"),
        }
        assert!(matches!(l.check().await, Err(DirectoryError::Unavailable(_))));
    }
}

#[tokio::test]
async fn silent_directory_is_unavailable_within_the_timeout() {
    // Accepts TCP connections, never says a word: the bind (ldap) or the
    // TLS handshake (ldaps, starttls) must give up after `timeout`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    for (url, starttls) in [
        (format!("ldap://127.0.0.1:{port}"), false),
        (format!("ldap://127.0.0.1:{port}"), true),
        (format!("ldaps://127.0.0.1:{port}"), false),
    ] {
        let mut cfg = LdapConfig::new(&url, "dc=example,dc=org");
        cfg.starttls = starttls;
        cfg.timeout = Duration::from_millis(500);
        let l = Ldap::new(cfg).expect("config");
        let start = Instant::now();
        let r = l.authenticate("alice", "alice-pw").await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(3000),
            "{url}: took {took:?}"
        );
        match r {
            Err(DirectoryError::Unavailable(m)) => assert!(m.contains(&url) && m.contains("0.5 s"), "{m}"),
            r => panic!("{url}: {r:?}"),
        }
    }
    hold.abort();
}

#[tokio::test]
async fn malformed_answer_is_unavailable_not_a_panic() {
    // A "directory" answering the service bind (message 1) with a
    // BindResponse whose diagnostic message is not UTF-8: ldap3 panics
    // decoding it; the sign-in must say Unavailable.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let answer = [
                0x30, 0x0d, 0x02, 0x01, 0x01, 0x61, 0x08, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x01, 0xff,
            ];
            let _ = s.write_all(&answer).await;
            let _ = s.read(&mut buf).await;
        }
    });
    let mut cfg = LdapConfig::new(format!("ldap://127.0.0.1:{port}"), "dc=example,dc=org");
    cfg.bind_dn = Some("cn=mdmd,dc=example,dc=org".into());
    cfg.bind_password = Secret::new("service-pw");
    cfg.timeout = Duration::from_secs(2);
    let l = Ldap::new(cfg).expect("config");
    let r = l.authenticate("alice", "alice-pw").await;
    assert!(matches!(r, Err(DirectoryError::Unavailable(_))), "{r:?}");
    assert!(matches!(l.check().await, Err(DirectoryError::Unavailable(_))));
    server.abort();
}

#[test]
fn bad_configuration_is_config() {
    let bad_urls = [
        "http://127.0.0.1",
        "ldapi:///var/run/slapd.sock",
        "127.0.0.1:389",
        "ldap://",
        "ldap:///",
        "ldap://:389",
        "ldap://host:0",
        "ldap://host:65536",
        "ldap://host:x",
        "ldap://user@host",
        "ldap://host/dc=example,dc=org",
        "ldap://host?x",
        "ldap://[::1",
        "ldap://[nope]:389",
        "ldap://ho st",
        "ldap://::1:389",
    ];
    for url in bad_urls {
        let r = Ldap::new(LdapConfig::new(url, "dc=x"));
        assert!(matches!(r, Err(DirectoryError::Config(_))), "{url}: {r:?}");
    }
    let with = |f: &dyn Fn(&mut LdapConfig)| {
        let mut c = LdapConfig::new("ldaps://ldap.example.org", "dc=x");
        f(&mut c);
        Ldap::new(c)
    };
    type Change = dyn Fn(&mut LdapConfig);
    let bad: &[(&str, &Change)] = &[
        ("filter without {user}", &|c| c.user_filter = "(uid=alice)".into()),
        ("unparsable filter", &|c| c.user_filter = "(uid={user}".into()),
        ("group filter without {dn}", &|c| {
            c.group_filter = "(objectClass=groupOfNames)".into()
        }),
        ("not PEM", &|c| c.ca_pem = Some(b"not a certificate".to_vec())),
        ("empty PEM", &|c| c.ca_pem = Some(Vec::new())),
        ("zero timeout", &|c| c.timeout = Duration::ZERO),
        ("empty attribute", &|c| c.username_attr = String::new()),
        ("odd attribute", &|c| c.name_attrs = vec!["cn)(x".into()]),
        ("service DN, no password", &|c| c.bind_dn = Some("cn=mdmd,dc=x".into())),
        ("empty bind DN", &|c| c.bind_dn = Some(String::new())),
        ("empty group", &|c| c.required_group = Some(" ".into())),
    ];
    for (what, f) in bad {
        assert!(matches!(with(f), Err(DirectoryError::Config(_))), "{what}");
    }

    for (url, normal) in [
        ("ldap://LDAP.example.org", "ldap://ldap.example.org:389"),
        ("LDAPS://ldap.example.org/", "ldaps://ldap.example.org:636"),
        ("ldap://10.0.0.1:1389", "ldap://10.0.0.1:1389"),
        ("ldaps://[::1]:6360", "ldaps://[::1]:6360"),
    ] {
        assert_eq!(check_url(url).expect(url).1, normal);
    }
    let ok = with(&|c| {
        c.bind_dn = Some("cn=mdmd,dc=x".into());
        c.bind_password = Secret::new("s3cr3t-service-pw");
        c.user_filter = "(&(objectClass=person)(|(uid={user})(mail={user})))".into();
    })
    .expect("valid");
    assert_eq!(ok.config().base_dn, "dc=x");
    assert!(
        !format!("{:?} {ok:?}", ok.config()).contains("s3cr3t"),
        "the password must not show in Debug"
    );
}

#[test]
fn futures_are_send() {
    // The server runs sign-ins on a multi-threaded runtime: the futures must be Send.
    fn send<T: Send>(_: &T) {}
    let l = ldap("ldap://127.0.0.1:1");
    send(&l.authenticate("alice", "pw"));
    send(&l.check());
    fn shared<T: Send + Sync>() {}
    shared::<Ldap>();
}

/// A self-signed CA certificate, PEM.
fn ca_pem(cn: &str) -> Vec<u8> {
    use openssl::{asn1::Asn1Time, bn::BigNum, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap()).unwrap();
    b.append_extension(x509::extension::BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

#[test]
fn ca_bundles_are_read() {
    let mut bundle = ca_pem("one");
    bundle.extend_from_slice(b"\n# a comment between certificates\n");
    bundle.extend(ca_pem("two"));
    for starttls in [false, true] {
        let url = if starttls {
            "ldap://ldap.example.org"
        } else {
            "ldaps://ldap.example.org"
        };
        let mut c = LdapConfig::new(url, "dc=x");
        c.starttls = starttls;
        c.ca_pem = Some(bundle.clone());
        let l = Ldap::new(c).expect("bundle");
        assert!(l.0.tls && l.0.connector.is_some());
    }
    let mut broken = ca_pem("one");
    broken.extend_from_slice(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
    let mut c = LdapConfig::new("ldaps://ldap.example.org", "dc=x");
    c.ca_pem = Some(broken);
    assert!(matches!(Ldap::new(c), Err(DirectoryError::Config(_))));
}

#[test]
fn rdn_values_are_unescaped() {
    assert_eq!(first_rdn_value("cn=Staff,ou=Groups,dc=example,dc=org").as_deref(), Some("Staff"));
    assert_eq!(first_rdn_value("CN=Smith\\, J,OU=x").as_deref(), Some("Smith, J"));
    assert_eq!(first_rdn_value("cn=caf\\c3\\a9 \\2b more,dc=x").as_deref(), Some("café + more"));
    assert_eq!(first_rdn_value("cn=a+uid=b,dc=x").as_deref(), Some("a"));
    assert_eq!(first_rdn_value("cn=trailing\\").as_deref(), Some("trailing\\"));
    assert_eq!(first_rdn_value("no equals sign"), None);
    assert_eq!(first_rdn_value("cn=,dc=x"), None);
    assert_eq!(first_rdn_value("cn=\\ff\\fe,dc=x"), None, "not UTF-8");
}

#[test]
fn values_are_bounded() {
    assert_eq!(clip("  Alice\u{0}\r\n Archer "), "Alice Archer");
    assert_eq!(clip(&"é".repeat(1000)).chars().count(), MAX_VALUE_CHARS);
    let groups = keep_groups((0..1000).map(|i| format!("g{}", i % 600)).chain(["g1".to_string()]));
    assert_eq!(groups.len(), MAX_GROUPS);
    assert_eq!(groups[0], "g0");
    assert_eq!(
        keep_groups(["a", "b", "a", " ", "b\n"].into_iter().map(String::from)),
        vec!["a", "b"]
    );
}

fn p(id: u64, bytes: &str) -> StructureTag {
    StructureTag {
        class: ldap3::asn1::TagClass::Universal,
        id,
        payload: PL::P(bytes.as_bytes().to_vec()),
    }
}
fn c(id: u64, inner: Vec<StructureTag>) -> StructureTag {
    StructureTag {
        class: ldap3::asn1::TagClass::Universal,
        id,
        payload: PL::C(inner),
    }
}

#[test]
fn entries_are_decoded_without_panics() {
    let mut entry = c(
        4,
        vec![
            p(4, "uid=alice,ou=people,dc=x"),
            c(
                16,
                vec![
                    c(16, vec![p(4, "UID"), c(17, vec![p(4, "Alice"), p(4, "alice")])]),
                    c(16, vec![p(4, "memberOf"), c(17, vec![p(4, "cn=staff,dc=x")])]),
                ],
            ),
        ],
    );
    entry.class = ldap3::asn1::TagClass::Application;
    let e = Entry::decode(entry.clone()).expect("decoded");
    assert_eq!(e.dn, "uid=alice,ou=people,dc=x");
    assert_eq!(e.values("uid").unwrap(), ["Alice", "alice"]);
    assert_eq!(e.first("MEMBEROF"), Some("cn=staff,dc=x"));
    assert_eq!(pick_username(&e, "uid", "ALICE"), "Alice");
    assert_eq!(
        pick_username(&e, "uid", "alice"),
        "Alice",
        "the first equal value, in the directory's spelling"
    );
    assert_eq!(pick_username(&e, "sAMAccountName", "alice"), "alice");

    // Odd shapes: None, not a panic.
    for odd in [
        p(4, "not constructed"),
        c(5, vec![]),
        c(4, vec![]),
        c(4, vec![c(4, vec![])]),
        c(4, vec![p(4, "dn")]),
        c(4, vec![p(4, "dn"), c(16, vec![p(4, "attr")])]),
        c(4, vec![p(4, "dn"), c(16, vec![c(16, vec![p(4, "a")])])]),
        c(
            4,
            vec![
                StructureTag {
                    class: ldap3::asn1::TagClass::Universal,
                    id: 4,
                    payload: PL::P(vec![0xff]),
                },
                c(16, vec![]),
            ],
        ),
    ] {
        assert_eq!(Entry::decode(odd.clone()), None, "{odd:?}");
    }
    // Non-UTF-8 values are skipped, the rest kept.
    let e = Entry::decode(c(
        4,
        vec![
            p(4, "cn=x"),
            c(
                16,
                vec![c(
                    16,
                    vec![
                        p(4, "cn"),
                        c(
                            17,
                            vec![
                                StructureTag {
                                    class: ldap3::asn1::TagClass::Universal,
                                    id: 4,
                                    payload: PL::P(vec![0xff]),
                                },
                                p(4, "ok"),
                            ],
                        ),
                    ],
                )],
            ),
        ],
    ))
    .expect("decoded");
    assert_eq!(e.values("cn").unwrap(), ["ok"]);
}

#[test]
fn result_codes_are_described() {
    assert_eq!(describe(49, ""), "rc=49 (invalidCredentials)");
    assert_eq!(
        describe(49, "80090308: LdapErr: DSID-0C09044E, data 533\0"),
        "rc=49 (invalidCredentials): 80090308: LdapErr: DSID-0C09044E, data 533"
    );
}
