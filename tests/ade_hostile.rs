//! Automated Device Enrollment under attack: an outside attacker (anyone who
//! can reach `/mdm/ade/enroll`, knows a serial number, or captured a
//! MachineInfo) and lesser admin roles (read-only, operator, nac) try to
//! launder identities, take over enrollments, leak the server token's
//! secrets, and feed hostile input to every ADE endpoint. The real server
//! runs over HTTPS on 127.0.0.1 against the ADE stand-in (`sim::ade_api`).
//!
//! Every test asserts the SAFE behaviour. The ones that fail show a
//! weakness (see the report that came with this file); the others guard
//! behaviour that is already right.

mod common;

use std::time::Duration;

use common::ade::{connect, device_cert, public_key, put_token, start, start_logged, sync};
use common::{Server, API_KEY};
use mdmd::ade::ServerToken;
use mdmd::sim::ade::{first_boot, machine_info, seal_token_file, CloudConfiguration};
use mdmd::sim::ade_api::AdeStandIn;
use mdmd::sim::pki::SimIdentity;
use mdmd::sim::SimDevice;
use reqwest::Method;
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

/// Any request to the admin API with raw bytes; (status, body as text).
async fn raw(srv: &Server, key: &str, method: Method, path: &str, body: Option<Vec<u8>>) -> (u16, String) {
    let mut r = srv.client().request(method, format!("{}{path}", srv.base)).bearer_auth(key);
    if let Some(b) = body {
        r = r.header("content-type", "application/octet-stream").body(b);
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.text().await.unwrap_or_default())
}

/// JSON call as any key (admin key or account secret).
async fn call_as(srv: &Server, key: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    mdmd::sim::load::Admin::new(&srv.base, key, srv.client())
        .call(method, path, body)
        .await
        .unwrap()
}

/// A serial number unique to this test process.
fn serial(tag: &str) -> String {
    format!("H{tag}{:05}", std::process::id() % 100_000).to_uppercase()
}

/// A "device certificate" nobody vouches for: self-signed, CN = UDID.
fn self_signed(udid: &str) -> SimIdentity {
    let key = common::pool_key();
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", udid).unwrap();
    SimIdentity {
        cert: mdmd::sim::pki::self_signed(&key, &n.build()).unwrap(),
        key,
    }
}

/// The MachineInfo an iPhone sends, as the simulator builds it.
fn mi_dict(srv: &Server, udid: &str, serial: &str) -> plist::Dictionary {
    let mut probe = SimDevice::new(&srv.base, "", srv.client());
    probe.udid = udid.to_owned();
    probe.serial = serial.to_owned();
    machine_info(&probe)
}

/// CMS SignedData of `content`, signed by `by` (what a device POSTs).
fn signed(by: &SimIdentity, content: &[u8]) -> Vec<u8> {
    mdmd::sim::pki::sign_attached(by, content).unwrap()
}

fn signed_mi(srv: &Server, udid: &str, serial: &str, by: &SimIdentity) -> Vec<u8> {
    signed(by, &mdmd::protocol::to_xml(&mi_dict(srv, udid, serial)))
}

/// The dictionary as a binary plist (which, unlike XML, can carry a NUL in a string).
fn binary_plist(d: &plist::Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    plist::to_writer_binary(&mut out, d).unwrap();
    out
}

async fn post_mi(srv: &Server, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp = srv
        .client()
        .post(format!("{}/mdm/ade/enroll", srv.base))
        .header("content-type", "application/pkcs7-signature")
        .body(body)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.bytes().await.unwrap().to_vec())
}

fn conf(srv: &Server) -> CloudConfiguration {
    CloudConfiguration {
        url: format!("{}/mdm/ade/enroll", srv.base),
        supervised: true,
        ..Default::default()
    }
}

/// The enrollment profile's SCEP run by an attacker (its own key): a device
/// holding the identity the challenge grants, not yet authenticated.
async fn scep_from(srv: &Server, profile: &[u8]) -> SimDevice {
    SimDevice::from_profile(srv.client(), profile, Some(common::pool_key()))
        .await
        .expect("SCEP with the ADE profile's challenge")
}

async fn device(srv: &Server, id: &str) -> (u16, Value) {
    srv.admin().call(Method::GET, &format!("/v1/devices/{id}"), None).await.unwrap()
}

async fn healthy(srv: &Server) {
    let (s, v) = srv.admin().call(Method::GET, "/v1/health", None).await.unwrap();
    assert_eq!(s, 200, "the server is still healthy: {v}");
}

/// One server with a token and these serials synced (every device gets the default profile).
async fn ade_server(abm: &AdeStandIn, extra: &[&str], serials: &[&str]) -> Server {
    for s in serials {
        abm.add_device(s, "iPhone 15");
    }
    let srv = start(abm, extra);
    connect(&srv, abm, "main").await;
    let (s, v) = srv
        .admin()
        .call(
            Method::PUT,
            "/v1/ade/profiles/corp?default=true",
            Some(json!({"profile_name": "Corp"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    srv
}

fn status_of(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

// ---------------------------------------------------------- minimal DER

fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![n as u8]
    } else {
        let b = (n as u64).to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count();
        let mut out = vec![0x80 | (8 - skip) as u8];
        out.extend_from_slice(&b[skip..]);
        out
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

/// A CMS SignedData that carries content (and optionally certificates) but no SignerInfo.
fn signed_data_without_signers(content: &[u8], certs: &[Vec<u8>]) -> Vec<u8> {
    const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    let encap = [tlv(0x06, DATA), tlv(0xa0, &tlv(0x04, content))].concat();
    let mut sd = [tlv(0x02, &[1]), tlv(0x31, &[]), tlv(0x30, &encap)].concat();
    if !certs.is_empty() {
        sd.extend(tlv(0xa0, &certs.concat()));
    }
    sd.extend(tlv(0x31, &[]));
    tlv(0x30, &[tlv(0x06, SIGNED_DATA), tlv(0xa0, &tlv(0x30, &sd))].concat())
}

/// A binary plist `{UDID: [[[…]]]}` nested `depth` arrays deep.
fn deep_binary_plist(depth: usize) -> Vec<u8> {
    let n = depth + 2; // dict, "UDID", arrays
    assert!(n < 65_535);
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::with_capacity(n);
    let r = |i: usize| (i as u16).to_be_bytes();
    offsets.push(out.len());
    out.push(0xD1);
    out.extend(r(1));
    out.extend(r(2));
    offsets.push(out.len());
    out.push(0x54);
    out.extend(b"UDID");
    for i in 0..depth {
        offsets.push(out.len());
        if i + 1 == depth {
            out.push(0xA0);
        } else {
            out.push(0xA1);
            out.extend(r(i + 3));
        }
    }
    let table = out.len();
    for o in &offsets {
        out.extend((*o as u32).to_be_bytes());
    }
    out.extend([0u8; 6]);
    out.push(4); // offset int size
    out.push(2); // object ref size
    out.extend((n as u64).to_be_bytes());
    out.extend(0u64.to_be_bytes());
    out.extend((table as u64).to_be_bytes());
    out
}

fn deep_xml_plist(depth: usize) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>UDID</key>{}{}</dict></plist>",
        "<array>".repeat(depth),
        "</array>".repeat(depth)
    )
    .into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    common::b64(bytes)
}

// ------------------------------------------------------------------ tests

/// Sanity: the stand-in of Apple is as strict as Apple about OAuth, so the
/// other tests' "our signatures verified" means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_refuses_forged_oauth_and_sessions() {
    let abm = AdeStandIn::start("strict").await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/session", abm.url());
    let get = |auth: Option<String>| {
        let mut r = http
            .get(&url)
            .header("User-Agent", "hostile/1")
            .header("X-Server-Protocol-Version", "3");
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    let now = mdmd::clock::now();
    // Signed with a guessed consumer secret.
    let forged = ServerToken {
        consumer_secret: "CS_guess".into(),
        ..abm.token.clone()
    };
    let a = mdmd::ade::oauth::authorization("GET", &url, &forged, now, &mdmd::ade::oauth::nonce()).unwrap();
    assert_eq!(get(Some(a)).await.unwrap().status(), 401);
    // Signed with a guessed access secret.
    let forged = ServerToken {
        access_secret: "AS_guess".into(),
        ..abm.token.clone()
    };
    let a = mdmd::ade::oauth::authorization("GET", &url, &forged, now, &mdmd::ade::oauth::nonce()).unwrap();
    assert_eq!(get(Some(a)).await.unwrap().status(), 401);
    // A tampered signature on a real header.
    let real = mdmd::ade::oauth::authorization("GET", &url, &abm.token, now, &mdmd::ade::oauth::nonce()).unwrap();
    let tampered = real.replacen("oauth_signature=\"", "oauth_signature=\"A", 1);
    assert!(get(Some(tampered)).await.unwrap().status().is_client_error());
    // No header at all.
    assert!(get(None).await.unwrap().status().is_client_error());
    // The real one works once; its replay (same nonce) does not.
    assert_eq!(get(Some(real.clone())).await.unwrap().status(), 200);
    assert_eq!(get(Some(real)).await.unwrap().status(), 401);
    // An API call with a made-up session token.
    let r = http
        .get(format!("{}/account", abm.url()))
        .header("User-Agent", "hostile/1")
        .header("X-Server-Protocol-Version", "3")
        .header("X-ADM-Auth-Session", "forged-session-token-0000000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let st = abm.stats();
    assert!(st.bad_signatures >= 4, "{st:?}");
    assert_eq!(st.sessions, 1, "{st:?}");
}

/// Hostile MachineInfo bodies: clear 4xx, never 5xx, and the server still
/// serves a real device afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_machine_info_gets_4xx_and_the_server_stays_healthy() {
    let abm = AdeStandIn::start("hostile mi").await.unwrap();
    let sn = serial("HMI");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let udid = mdmd::sim::random_udid();
    let me = self_signed(&udid);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // Nesting: deep binary and XML plists inside a valid CMS (under 64 KiB), and a 10^5-deep one.
    cases.push(("8000-deep binary plist", signed(&me, &deep_binary_plist(8000))));
    cases.push(("3500-deep XML plist", signed(&me, &deep_xml_plist(3500))));
    cases.push(("10^5-deep XML plist", signed(&me, &deep_xml_plist(100_000))));
    // Huge and wrong-typed values.
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("UDID".into(), "A".repeat(60_000).into());
    cases.push(("60 KB UDID", signed(&me, &mdmd::protocol::to_xml(&d))));
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("SERIAL".into(), "S".repeat(257).into());
    cases.push(("257-byte SERIAL", signed(&me, &mdmd::protocol::to_xml(&d))));
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("UDID".into(), plist::Value::Integer(5.into()));
    cases.push(("integer UDID", signed(&me, &mdmd::protocol::to_xml(&d))));
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("SERIAL".into(), plist::Value::Dictionary(plist::Dictionary::new()));
    cases.push(("dictionary SERIAL", signed(&me, &mdmd::protocol::to_xml(&d))));
    let mut d = mi_dict(&srv, &udid, &sn);
    d.remove("SERIAL");
    cases.push(("no SERIAL", signed(&me, &mdmd::protocol::to_xml(&d))));
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("UDID".into(), "".into());
    cases.push(("empty UDID", signed(&me, &mdmd::protocol::to_xml(&d))));
    // A NUL inside the serial number (a binary plist carries it; PostgreSQL text cannot).
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("SERIAL".into(), format!("{sn}\0X").into());
    cases.push(("NUL in SERIAL", signed(&me, &binary_plist(&d))));
    let mut d = mi_dict(&srv, &udid, &sn);
    d.insert("SERIAL".into(), "\0".into());
    cases.push(("SERIAL a lone NUL", signed(&me, &binary_plist(&d))));
    // Not UTF-8, not a dictionary, not a plist.
    let mut bad = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>UDID</key><string>".to_vec();
    bad.extend([0xff, 0xfe, 0xc3, 0x28]);
    bad.extend(format!("</string><key>SERIAL</key><string>{sn}</string><key>PRODUCT</key><string>iPhone16,1</string><key>VERSION</key><string>22B83</string></dict></plist>").as_bytes());
    cases.push(("non-UTF-8 string", signed(&me, &bad)));
    cases.push((
        "array root",
        signed(&me, b"<plist version=\"1.0\"><array><string>x</string></array></plist>"),
    ));
    cases.push(("not a plist", signed(&me, b"\x00\x01\x02 not a plist")));
    cases.push(("empty content", signed(&me, b"")));
    // CMS that is not what it should be.
    let good = signed_mi(&srv, &udid, &sn, &me);
    let content = mdmd::protocol::to_xml(&mi_dict(&srv, &udid, &sn));
    cases.push(("SignedData without signers", signed_data_without_signers(&content, &[])));
    cases.push((
        "SignedData with a certificate but no signer",
        signed_data_without_signers(&content, &[me.cert.to_der().unwrap()]),
    ));
    let mut certs = openssl::stack::Stack::new().unwrap();
    certs.push(me.cert.clone()).unwrap();
    let enveloped = openssl::pkcs7::Pkcs7::encrypt(
        &certs,
        &content,
        openssl::symm::Cipher::aes_256_cbc(),
        openssl::pkcs7::Pkcs7Flags::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    cases.push(("EnvelopedData", enveloped));
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 0xff;
    cases.push(("signature that does not verify", flipped));
    cases.push(("truncated CMS", good[..good.len() / 2].to_vec()));
    cases.push(("64 KiB + 1", {
        let mut v = good.clone();
        v.resize(64 * 1024 + 1, 0);
        v
    }));
    cases.push(("garbage", b"garbage".to_vec()));
    cases.push(("empty body", Vec::new()));
    for (what, body) in cases {
        let (s, answer) = post_mi(&srv, body).await;
        assert!(
            (400..500).contains(&s) && s != 429,
            "{what}: HTTP {s} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The GET form (macOS): missing, not base64, too large, base64 of garbage.
    let url = format!("{}/mdm/ade/enroll", srv.base);
    let client = srv.client();
    let get = |h: Option<String>| {
        let mut r = client.get(&url);
        if let Some(h) = h {
            r = r.header("x-apple-aspen-deviceinfo", h);
        }
        r.send()
    };
    for (what, h) in [
        ("no header", None),
        ("not base64", Some("!!!not*base64!!!".to_owned())),
        ("90 KB header", Some("A".repeat(90_000))),
        ("base64 of garbage", Some(b64(b"garbage"))),
        ("base64 of a deep plist in CMS", Some(b64(&signed(&me, &deep_binary_plist(8000))))),
    ] {
        let s = get(h).await.unwrap().status().as_u16();
        assert!((400..500).contains(&s) && s != 429, "GET {what}: HTTP {s}");
    }
    // A header over hyper's own limit is refused at the connection (no 5xx either).
    if let Ok(r) = get(Some("A".repeat(600_000))).await {
        assert!(r.status().is_client_error(), "GET 600 KB header: {}", r.status());
    }
    healthy(&srv).await;
    // A real device still enrolls, by either form.
    let (s, body) = post_mi(&srv, good.clone()).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let s = get(Some(b64(&good))).await.unwrap().status().as_u16();
    assert_eq!(s, 200, "the GET form with a good MachineInfo");
    let phone = first_boot(srv.client(), &conf(&srv), &udid, &sn, None)
        .await
        .expect("a real device still enrolls");
    drop(phone);
}

/// The MachineInfo's UDID becomes the identity's device and a store key:
/// it must be an enrollment identifier (what Authenticate accepts), not
/// anything up to 256 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_info_udid_must_be_an_enrollment_identifier() {
    let abm = AdeStandIn::start("udid format").await.unwrap();
    let sn = serial("FMT");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let mut wrong = Vec::new();
    for udid in [
        "../../v1/accounts",
        "A B",
        "VICTIM:USER",
        "line\nbreak",
        "\u{202e}droid",
        "x%00y",
        "NUL\0INSIDE",
    ] {
        let me = self_signed("whatever");
        let body = signed(&me, &binary_plist(&mi_dict(&srv, udid, &sn)));
        let (s, _) = post_mi(&srv, body).await;
        if s != 400 && s != 403 {
            wrong.push(format!("{udid:?} → HTTP {s}"));
        }
    }
    healthy(&srv).await;
    assert!(
        wrong.is_empty(),
        "MachineInfo UDIDs that are no enrollment id were served a profile (200) or failed the server (5xx): {wrong:?}"
    );
}

/// Unknown serials are refused (the default); so is a device ABM unassigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_abm_removed_serials_are_refused() {
    let abm = AdeStandIn::start("removed").await.unwrap();
    let (kept, gone) = (serial("KEEP"), serial("GONE"));
    let srv = ade_server(&abm, &[], &[&kept, &gone]).await;
    let udid = mdmd::sim::random_udid();
    let me = self_signed(&udid);
    let (s, _) = post_mi(&srv, signed_mi(&srv, &udid, "NEVERASSIGNED1", &me)).await;
    assert_eq!(s, 403, "a serial no sync has seen");
    // Case and whitespace games on a known serial do not reach another device's record.
    for variant in [kept.to_lowercase(), format!(" {kept}"), format!("{kept}\n")] {
        let (s, _) = post_mi(&srv, signed_mi(&srv, &udid, &variant, &me)).await;
        assert!(s == 403 || s == 400, "serial {variant:?}: HTTP {s}");
    }
    // ABM unassigns a device: after the next sync it no longer enrolls.
    let (s, _) = post_mi(&srv, signed_mi(&srv, &udid, &gone, &me)).await;
    assert_eq!(s, 200, "assigned: served");
    abm.remove_device(&gone);
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    let (s, body) = post_mi(&srv, signed_mi(&srv, &mdmd::sim::random_udid(), &gone, &me)).await;
    assert_eq!(s, 403, "a device ABM removed: {}", String::from_utf8_lossy(&body));
    // The other one still does.
    let (s, _) = post_mi(&srv, signed_mi(&srv, &mdmd::sim::random_udid(), &kept, &me)).await;
    assert_eq!(s, 200);
}

/// An admin deletes a server token (the ABM server is gone, or its token
/// leaked): the devices only that token vouched for must stop enrolling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_a_deleted_server_token_no_longer_enroll() {
    let abm = AdeStandIn::start("deleted token").await.unwrap();
    let sn = serial("ORPH");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let udid = mdmd::sim::random_udid();
    let me = self_signed(&udid);
    let (s, _) = post_mi(&srv, signed_mi(&srv, &udid, &sn, &me)).await;
    assert_eq!(s, 200);
    let (s, v) = call_as(&srv, API_KEY, Method::DELETE, "/v1/ade/tokens/main", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, body) = post_mi(&srv, signed_mi(&srv, &mdmd::sim::random_udid(), &sn, &me)).await;
    assert_eq!(
        s,
        403,
        "a serial only a deleted token knew is still served an ADE enrollment profile (supervised): {}",
        String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
    );
}

/// Under the strict re-enrollment policy (the default), a MachineInfo that
/// nobody attests cannot take over an enrolled device: not with its UDID and
/// serial, not with another serial, not with an identity issued for another
/// UDID, not by reusing a challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unattested_machine_info_cannot_take_over_an_enrolled_device() {
    let abm = AdeStandIn::start("takeover").await.unwrap();
    let (victim_sn, other_sn, ota_sn) = (serial("VIC"), serial("OTH"), serial("OTA"));
    let srv = ade_server(&abm, &[], &[&victim_sn, &other_sn]).await;
    let victim_udid = mdmd::sim::random_udid();
    let mut victim = first_boot(srv.client(), &conf(&srv), &victim_udid, &victim_sn, None).await.unwrap();
    victim.session().await.unwrap();
    let (_, before) = device(&srv, &victim_udid).await;
    let victim_hash = before["identity_certificate_sha256"].clone();
    assert_eq!(before["ade"]["serial"], victim_sn.as_str(), "{before}");

    // 1. The victim's UDID and serial, signed by the attacker's own certificate.
    let attacker = self_signed(&victim_udid);
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &victim_udid, &victim_sn, &attacker)).await;
    if s == 200 {
        let mut thief = scep_from(&srv, &profile).await;
        thief.udid = victim_udid.clone();
        thief.serial = victim_sn.clone();
        let err = thief
            .authenticate()
            .await
            .expect_err("an unvouched identity replaced an active ADE enrollment");
        assert!(status_of(&err).contains("403"), "{err:#}");
        // Its SCEP challenge is spent: a second SCEP with it is refused.
        assert!(
            SimDevice::from_profile(srv.client(), &profile, Some(common::pool_key()))
                .await
                .is_err(),
            "an ADE challenge was used twice"
        );
    } else {
        assert_eq!(s, 403, "{}", String::from_utf8_lossy(&profile));
    }
    // 2. The victim's UDID with another serial of ours.
    let (s, _) = post_mi(&srv, signed_mi(&srv, &victim_udid, &other_sn, &attacker)).await;
    assert_eq!(s, 403, "a UDID keeps its serial");
    // 3. A genuine ADE profile for a fresh UDID, its identity used to Authenticate as the victim.
    let fresh = mdmd::sim::random_udid();
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &fresh, &other_sn, &self_signed(&fresh))).await;
    assert_eq!(s, 200);
    let mut thief = scep_from(&srv, &profile).await;
    thief.udid = victim_udid.clone();
    thief.serial = victim_sn.clone();
    let err = thief
        .authenticate()
        .await
        .expect_err("an identity issued for one UDID spoke for another");
    assert!(status_of(&err).contains("403"), "{err:#}");
    // ... nor as a user channel of the victim.
    let mut d = thief.authenticate_message();
    d.insert("UserID".into(), "ATTACKER-USER".into());
    d.insert("UserShortName".into(), "attacker".into());
    assert!(
        thief.checkin(&d).await.is_err(),
        "an identity for another UDID opened a user channel on the victim"
    );

    // 4. An over-the-air enrolled device whose serial is (also) in ABM.
    let mut ota = srv.enrolled().await;
    ota.serial = ota_sn.clone();
    ota.authenticate().await.unwrap();
    abm.add_device(&ota_sn, "iPhone 15");
    assert_eq!(sync(&srv).await.0, 200);
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &ota.udid, &ota_sn, &self_signed(&ota.udid))).await;
    if s == 200 {
        let mut thief = scep_from(&srv, &profile).await;
        thief.udid = ota.udid.clone();
        thief.serial = ota_sn.clone();
        let err = thief
            .authenticate()
            .await
            .expect_err("an unvouched ADE identity replaced an active OTA enrollment");
        assert!(status_of(&err).contains("403"), "{err:#}");
    }
    let (_, o) = device(&srv, &ota.udid).await;
    assert!(o["ade"].is_null(), "the OTA device became an ADE device: {o}");

    // The victim is untouched and still works.
    let (_, after) = device(&srv, &victim_udid).await;
    assert_eq!(after["identity_certificate_sha256"], victim_hash, "{after}");
    assert_eq!(after["active"], true, "{after}");
    victim.session().await.expect("the victim still checks in");
    ota.session().await.expect("the OTA device still checks in");
}

/// An identity issued for UDID X (by the ADE challenge) must never speak for
/// another enrollment: here a channel named by an EnrollmentID (no UDID),
/// which the identity rule's UDID check skips. It would also be recorded as
/// an ADE (supervised) enrollment, so supervised-only commands go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ade_identity_cannot_speak_for_an_enrollment_id_channel() {
    let abm = AdeStandIn::start("enrollment id").await.unwrap();
    let sn = serial("EID");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let udid = mdmd::sim::random_udid();
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &udid, &sn, &self_signed(&udid))).await;
    assert_eq!(s, 200);
    let mut thief = scep_from(&srv, &profile).await;
    let other = uuid::Uuid::new_v4().to_string().to_uppercase();
    thief.udid = udid.clone();
    thief.enrollment_id = Some(other.clone());
    let r = thief.authenticate().await;
    let (_, v) = device(&srv, &other).await;
    assert!(
        r.is_err(),
        "the identity issued for {udid} authenticated as EnrollmentID {other}: ade={} supervised={}",
        v["ade"],
        v["supervised"]
    );
}

/// The ADE origin records the serial Apple's MachineInfo named; the device's
/// Authenticate must not claim another (the enrollment would pose as another
/// ABM device, in `/v1/ade/devices` and in group rules on `device.serial`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ade_identity_cannot_claim_another_serial_at_authenticate() {
    let abm = AdeStandIn::start("serial pin").await.unwrap();
    let (mine, theirs) = (serial("MINE"), serial("THEIRS"));
    let srv = ade_server(&abm, &[], &[&mine, &theirs]).await;
    let udid = mdmd::sim::random_udid();
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &udid, &mine, &self_signed(&udid))).await;
    assert_eq!(s, 200);
    let mut dev = scep_from(&srv, &profile).await;
    dev.udid = udid.clone();
    dev.serial = theirs.clone();
    let refused = dev.enroll().await.is_err();
    let (_, v) = device(&srv, &udid).await;
    let d = srv.admin().get("/v1/ade/devices").await.unwrap();
    let theirs_row = d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["serial"] == theirs.as_str())
        .cloned()
        .unwrap();
    assert!(
        refused || (v["info"]["serial_number"] == mine.as_str() && theirs_row["enrolled"] == false),
        "an ADE enrollment for {mine} now claims {theirs}: info.serial_number={} ade.serial={}; ABM row for {theirs}: enrolled={}",
        v["info"]["serial_number"],
        v["ade"]["serial"],
        theirs_row["enrolled"]
    );
}

/// Without attestation a serial number is all that authorises an ADE
/// enrollment, and serials are printed on every box. A serial already
/// enrolled (active) under one UDID must not be served again to another
/// UDID: else one leaked serial is any number of supervised "company"
/// enrollments, each posing as that ABM device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_serial_is_not_served_to_another_udid() {
    let abm = AdeStandIn::start("serial clone").await.unwrap();
    let sn = serial("CLONE");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let victim = mdmd::sim::random_udid();
    let mut phone = first_boot(srv.client(), &conf(&srv), &victim, &sn, None).await.unwrap();
    phone.session().await.unwrap();
    let clone = mdmd::sim::random_udid();
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &clone, &sn, &self_signed(&clone))).await;
    let cloned = if s == 200 {
        let mut dev = scep_from(&srv, &profile).await;
        dev.udid = clone.clone();
        dev.serial = sn.clone();
        dev.enroll().await.is_ok()
    } else {
        false
    };
    let (_, v) = device(&srv, &clone).await;
    assert!(
        !cloned,
        "serial {sn}, enrolled as {victim}, was enrolled again as {clone}: ade={} supervised={}",
        v["ade"], v["supervised"]
    );
}

/// The same rule checked only when the profile is served is a race: an
/// attacker fetches the profile for its own UDID while the serial is not
/// enrolled yet, waits for the real device to enroll, then runs SCEP and
/// Authenticate with the challenge it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_fetched_before_the_real_device_enrolls_cannot_clone_its_serial() {
    let abm = AdeStandIn::start("serial race").await.unwrap();
    let sn = serial("RACE");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let clone = mdmd::sim::random_udid();
    let (s, early) = post_mi(&srv, signed_mi(&srv, &clone, &sn, &self_signed(&clone))).await;
    assert_eq!(s, 200, "nothing enrolled yet: served");
    let victim = mdmd::sim::random_udid();
    let mut phone = first_boot(srv.client(), &conf(&srv), &victim, &sn, None).await.unwrap();
    phone.session().await.unwrap();
    let cloned = match SimDevice::from_profile(srv.client(), &early, Some(common::pool_key())).await {
        Ok(mut dev) => {
            dev.udid = clone.clone();
            dev.serial = sn.clone();
            dev.enroll().await.is_ok()
        }
        Err(_) => false,
    };
    let (_, v) = device(&srv, &clone).await;
    assert!(
        !cloned,
        "serial {sn}, enrolled as {victim}, was enrolled again as {clone} with a challenge fetched earlier: ade={} active={}",
        v["ade"], v["active"]
    );
}

/// An ADE enrollment that claims another serial at Authenticate must not
/// lock that serial's real device out of ADE ("the serial is enrolled as
/// another device"): the attacker needs one serial of ours and the victim's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_claimed_at_authenticate_does_not_lock_out_the_real_device() {
    let abm = AdeStandIn::start("serial squat").await.unwrap();
    let (mine, theirs) = (serial("SQM"), serial("SQT"));
    let srv = ade_server(&abm, &[], &[&mine, &theirs]).await;
    let squatter = mdmd::sim::random_udid();
    let (s, profile) = post_mi(&srv, signed_mi(&srv, &squatter, &mine, &self_signed(&squatter))).await;
    assert_eq!(s, 200);
    let mut dev = scep_from(&srv, &profile).await;
    dev.udid = squatter.clone();
    dev.serial = theirs.clone();
    let _ = dev.enroll().await;
    // The real device with that serial sets up.
    let real = mdmd::sim::random_udid();
    let r = first_boot(srv.client(), &conf(&srv), &real, &theirs, None).await;
    assert!(
        r.is_ok(),
        "the real device {theirs} is locked out of ADE by {squatter}'s claim: {:#}",
        r.err().unwrap()
    );
}

/// With `--device-attestation-ca`, only a device certificate for the UDID
/// claimed vouches. A captured attested MachineInfo (no nonce, no freshness)
/// replayed later must not vouch for a stranger's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_attested_machine_info_does_not_take_over_the_device() {
    let abm = AdeStandIn::start("replay").await.unwrap();
    let ca = common::push::TestCa::new("Test Apple iPhone Device CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("device-ca.pem");
    std::fs::write(&ca_file, ca.cert.to_pem().unwrap()).unwrap();
    let sn = serial("RPL");
    let srv = ade_server(&abm, &["--device-attestation-ca", ca_file.to_str().unwrap()], &[&sn]).await;
    let udid = mdmd::sim::random_udid();
    let genuine = device_cert(&ca, &udid);

    // Signer CN ≠ UDID claimed, self-signed, attested-but-other: all refused.
    let someone = mdmd::sim::random_udid();
    for (what, by) in [
        ("another device's attested certificate", device_cert(&ca, &someone)),
        ("a self-signed certificate named for the UDID", self_signed(&udid)),
    ] {
        let (s, _) = post_mi(&srv, signed_mi(&srv, &udid, &sn, &by)).await;
        assert_eq!(s, 403, "{what}");
    }

    // The real device enrolls with its MachineInfo; the bytes are captured on the way.
    let captured = signed_mi(&srv, &udid, &sn, &genuine);
    let (s, profile) = post_mi(&srv, captured.clone()).await;
    assert_eq!(s, 200);
    let mut phone = scep_from(&srv, &profile).await;
    phone.udid = udid.clone();
    phone.serial = sn.clone();
    phone.enroll().await.unwrap();
    phone.session().await.unwrap();
    let (_, before) = device(&srv, &udid).await;
    assert_eq!(before["ade"]["attested"], true, "{before}");

    // Later, a replay of the very same bytes, and SCEP with the attacker's key.
    let (s, profile) = post_mi(&srv, captured).await;
    let taken = if s == 200 {
        let mut thief = scep_from(&srv, &profile).await;
        thief.udid = udid.clone();
        thief.serial = sn.clone();
        thief.enroll().await.is_ok()
    } else {
        false
    };
    let (_, after) = device(&srv, &udid).await;
    let victim_cut_off = phone.session().await.is_err();
    assert!(
        !taken && after["identity_certificate_sha256"] == before["identity_certificate_sha256"],
        "a replayed MachineInfo vouched for the attacker's key: the enrollment's identity is now {} (was {}); the real phone is cut off: {victim_cut_off}",
        after["identity_certificate_sha256"],
        before["identity_certificate_sha256"]
    );
}

/// ADE's supervision stays with ADE enrollments: an over-the-air device is
/// not supervised in mdmd's eyes, and cannot enter the Setup Assistant wait
/// by saying `AwaitingConfiguration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ade_state_does_not_leak_to_other_enrollments() {
    let abm = AdeStandIn::start("leak").await.unwrap();
    let sn = serial("LEAK");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let ade_udid = mdmd::sim::random_udid();
    let ade_phone = first_boot(srv.client(), &conf(&srv), &ade_udid, &sn, None).await.unwrap();
    let (_, v) = device(&srv, &ade_udid).await;
    assert_eq!(v["supervised"], true, "{v}");

    let mut ota = srv.enrolled().await;
    let (_, v) = device(&srv, &ota.udid).await;
    assert!(v["ade"].is_null(), "{v}");
    assert_ne!(v["supervised"], true, "{v}");
    // The OTA device claims it is in Setup Assistant.
    ota.awaiting_configuration = true;
    ota.token_update().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = srv.admin().get("/v1/ade/waiting").await.unwrap();
    let listed = w["devices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["enrollment"] == ota.udid.as_str());
    let (_, v) = device(&srv, &ota.udid).await;
    assert!(v["ade"].is_null() && v["supervised"] != true, "{v}");
    drop(ade_phone);
    assert!(
        !listed,
        "a non-ADE enrollment put itself in the ADE Setup Assistant wait (and gets DeviceConfigured): {w}"
    );
}

/// Lesser roles: read-only and operator see tokens without secrets and may
/// not change them; read-only changes nothing under /v1/ade; nac sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lesser_roles_on_the_ade_api() {
    let abm = AdeStandIn::start("roles").await.unwrap();
    let sn = serial("ROLE");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let cert = public_key(&srv).await;
    let (ro, op, nac) = (
        srv.account("ro", "read-only"),
        srv.account("op", "operator"),
        srv.account("nacs", "nac"),
    );
    let secrets = [&abm.token.consumer_secret, &abm.token.access_secret, &abm.token.access_token];
    for key in [&ro, &op] {
        for path in ["/v1/ade/tokens", "/v1/ade/tokens/main"] {
            let (s, text) = raw(&srv, key, Method::GET, path, None).await;
            assert_eq!(s, 200, "{path}: {text}");
            for secret in secrets {
                assert!(!text.contains(secret.as_str()), "{path} shows a token secret to a lesser role");
            }
            assert!(!text.contains(&abm.token.consumer_key), "{path} shows the whole consumer key");
        }
        let (s, _) = put_token(&srv, key, "main", seal_token_file(&abm.token, &cert).unwrap()).await;
        assert_eq!(s, 403, "a lesser role replaced a server token");
        let (s, _) = put_token(&srv, key, "second", seal_token_file(&abm.token, &cert).unwrap()).await;
        assert_eq!(s, 403, "a lesser role uploaded a server token");
        let (s, _) = raw(&srv, key, Method::DELETE, "/v1/ade/tokens/main", None).await;
        assert_eq!(s, 403, "a lesser role deleted a server token");
        // Path games around the token area.
        for path in [
            "/v1/ade//tokens/main",
            "/v1/ade/./tokens/main",
            "/v1/ade/tokens/../tokens/main",
            "/v1/ADE/tokens/main",
        ] {
            let (s, _) = raw(&srv, key, Method::DELETE, path, None).await;
            assert!(s == 403 || s == 404 || s == 405, "DELETE {path}: HTTP {s}");
        }
    }
    // Read-only changes nothing under /v1/ade.
    for (m, path, body) in [
        (Method::PUT, "/v1/ade/profiles/x", Some(json!({"profile_name": "x"}))),
        (Method::DELETE, "/v1/ade/profiles/corp", None),
        (Method::POST, "/v1/ade/profiles/corp/assign", Some(json!({"devices": [sn]}))),
        (Method::POST, "/v1/ade/sync", None),
        (Method::POST, "/v1/ade/waiting/X/release", None),
    ] {
        let (s, v) = call_as(&srv, &ro, m.clone(), path, body).await;
        assert_eq!(s, 403, "read-only {m} {path}: {v}");
    }
    // nac and issuer: nothing of ADE.
    let issuer = srv.account("iss", "issuer");
    for key in [&nac, &issuer] {
        for path in ["/v1/ade/tokens", "/v1/ade/profiles", "/v1/ade/devices"] {
            let (s, _) = raw(&srv, key, Method::GET, path, None).await;
            assert_eq!(s, 403, "{path}");
        }
    }
    // Still there, unchanged.
    let (s, v) = call_as(&srv, API_KEY, Method::GET, "/v1/ade/tokens/main", None).await;
    assert_eq!(s, 200, "{v}");
}

/// An operator (devices, commands, profiles; "not keys or certificates") may
/// not point ABM's devices at another MDM server, nor make a foreign Mac a
/// supervising host: either hands every new company device, supervised, to
/// whoever runs that server or holds that key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_hand_ade_devices_to_another_server() {
    let abm = AdeStandIn::start("redirect").await.unwrap();
    let sn = serial("RED");
    let srv = ade_server(&abm, &[], &[&sn]).await;
    let op = srv.account("op", "operator");
    let host = common::push::TestCa::new("attacker's Mac");
    let host_b64 = b64(&host.cert.to_der().unwrap());
    let mut allowed = Vec::new();
    for (what, path, body) in [
        (
            "a default profile whose url is another server",
            "/v1/ade/profiles/evil?default=true",
            json!({"profile_name": "Corp", "url": "https://mdm.attacker.example/enroll"}),
        ),
        (
            "the existing default redefined to another server",
            "/v1/ade/profiles/corp?default=true",
            json!({"profile_name": "Corp", "url": "https://mdm.attacker.example/enroll"}),
        ),
        (
            "a supervising host certificate",
            "/v1/ade/profiles/pair?default=true",
            json!({"profile_name": "Corp", "supervising_host_certs": [host_b64], "allow_pairing": true}),
        ),
    ] {
        let (s, v) = call_as(&srv, &op, Method::PUT, path, Some(body)).await;
        if s == 200 {
            allowed.push(format!("{what} ({path}: {})", v["profile"]["url"]));
        }
    }
    // What a device assigned that profile would be told at activation.
    let told = abm
        .cloud_configuration(&sn)
        .and_then(|c| c.get("ConfigurationURL").cloned())
        .unwrap_or(Value::Null);
    assert!(
        allowed.is_empty(),
        "an operator was allowed: {allowed:#?}; device {sn} would enroll at {told}"
    );
}

/// No answer, error, health warning or debug log line carries the token's
/// secrets, the OAuth signature or Apple's session token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_secret_or_session_in_answers_errors_or_logs() {
    let abm = AdeStandIn::start("secrets").await.unwrap();
    let sn = serial("SEC");
    abm.add_device(&sn, "iPhone 15");
    let srv = start_logged(&abm, &[]);
    let cert = public_key(&srv).await;
    let mut seen = String::new();
    let (s, t) = put_token(&srv, API_KEY, "main", seal_token_file(&abm.token, &cert).unwrap()).await;
    assert_eq!(s, 200, "{t}");
    seen.push_str(&t);
    // A token missing a field, and one to another key: the errors.
    let mut partial = serde_json::to_value(&abm.token).unwrap();
    partial.as_object_mut().unwrap().remove("access_secret");
    let mut certs = openssl::stack::Stack::new().unwrap();
    certs.push(cert.clone()).unwrap();
    let p7 = openssl::pkcs7::Pkcs7::encrypt(
        &certs,
        partial.to_string().as_bytes(),
        openssl::symm::Cipher::aes_256_cbc(),
        openssl::pkcs7::Pkcs7Flags::BINARY,
    )
    .unwrap();
    let (s, t) = put_token(&srv, API_KEY, "partial", p7.to_der().unwrap()).await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("access_secret"), "the error names the missing field: {t}");
    seen.push_str(&t);
    let (_, t) = raw(
        &srv,
        API_KEY,
        Method::PUT,
        "/v1/ade/profiles/corp?default=true",
        Some(br#"{"profile_name":"Corp"}"#.to_vec()),
    )
    .await;
    seen.push_str(&t);
    abm.rotate_sessions(true);
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    seen.push_str(&v.to_string());
    // Apple refuses: errors recorded on the token and in health.
    abm.revoke_token();
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 502, "{v}");
    seen.push_str(&v.to_string());
    for path in [
        "/v1/ade/tokens",
        "/v1/ade/tokens/main",
        "/v1/ade/devices",
        "/v1/ade/profiles",
        "/v1/health",
        "/v1/openapi.json",
    ] {
        let (_, t) = raw(&srv, API_KEY, Method::GET, path, None).await;
        seen.push_str(&t);
    }
    let (ok, out, err) = srv.cli(&["ade", "tokens"]);
    seen.push_str(&out);
    seen.push_str(&err);
    let _ = ok;
    let log = srv.log_text();
    assert!(!log.is_empty(), "the debug log was written");
    for (name, secret) in [
        ("consumer_secret", abm.token.consumer_secret.as_str()),
        ("access_secret", abm.token.access_secret.as_str()),
        ("access_token", abm.token.access_token.as_str()),
    ] {
        assert!(!seen.contains(secret), "the {name} is in an answer");
        assert!(!log.contains(secret), "the {name} is in the debug log");
    }
    for marker in [
        "oauth_signature",
        "auth_session_token",
        "X-ADM-Auth-Session: ",
        "x-adm-auth-session\":\"",
    ] {
        assert!(!seen.contains(marker), "{marker} in an answer");
        assert!(!log.contains(marker), "{marker} in the debug log");
    }
    // No session token the stand-in handed out appears in an answer or the log
    // (an exact check: a pattern such as "48 alphanumerics" also matches
    // chance runs inside base64 values, and failed once that way).
    let issued = abm.issued_sessions();
    assert!(!issued.is_empty(), "the server opened sessions");
    for token in &issued {
        assert!(!seen.contains(token.as_str()), "an ADE session token is in an answer");
        assert!(!log.contains(token.as_str()), "an ADE session token is in the debug log");
    }
}

/// Hostile server-token uploads: refused with 4xx, nothing stored, the
/// existing token untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_token_uploads_are_refused_and_store_nothing() {
    let abm = AdeStandIn::start("uploads").await.unwrap();
    let srv = start(&abm, &[]);
    let cert = public_key(&srv).await;
    connect(&srv, &abm, "main").await;
    let (_, before) = call_as(&srv, API_KEY, Method::GET, "/v1/ade/tokens/main", None).await;
    let encrypt = |plain: &[u8]| {
        let mut certs = openssl::stack::Stack::new().unwrap();
        certs.push(cert.clone()).unwrap();
        openssl::pkcs7::Pkcs7::encrypt(
            &certs,
            plain,
            openssl::symm::Cipher::aes_256_cbc(),
            openssl::pkcs7::Pkcs7Flags::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap()
    };
    let good_json = serde_json::to_string(&abm.token).unwrap();
    let signer = self_signed("someone");
    let mut missing = serde_json::to_value(&abm.token).unwrap();
    missing.as_object_mut().unwrap().remove("consumer_key");
    let mut wrong_type = serde_json::to_value(&abm.token).unwrap();
    wrong_type["access_token"] = json!({"nested": [1, 2, 3]});
    let huge_field = good_json.replace(&abm.token.consumer_secret, &"C".repeat(40_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("64 KiB + 1 of zeros", vec![0u8; 64 * 1024 + 1]),
        ("64 KiB + 1 of a real token, padded", {
            let mut v = seal_token_file(&abm.token, &cert).unwrap();
            v.resize(64 * 1024 + 1, b'\n');
            v
        }),
        ("PKCS#7 signed-data (not enveloped)", signed(&signer, good_json.as_bytes())),
        ("signed-data as S/MIME", {
            let certs = openssl::stack::Stack::new().unwrap();
            let p7 = openssl::pkcs7::Pkcs7::sign(
                &signer.cert,
                &signer.key,
                &certs,
                good_json.as_bytes(),
                openssl::pkcs7::Pkcs7Flags::empty(),
            )
            .unwrap();
            p7.to_smime(good_json.as_bytes(), openssl::pkcs7::Pkcs7Flags::empty()).unwrap()
        }),
        (
            "a 1 MB token JSON",
            encrypt(format!("{{\"consumer_key\":\"{}\"}}", "k".repeat(1_000_000)).as_bytes()),
        ),
        ("a 40 KB consumer secret", encrypt(huge_field.as_bytes())),
        ("JSON missing consumer_key", encrypt(missing.to_string().as_bytes())),
        ("JSON with a nested access_token", encrypt(wrong_type.to_string().as_bytes())),
        (
            "20,000-deep JSON",
            encrypt(format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).as_bytes()),
        ),
        ("non-UTF-8 plaintext", encrypt(&[0xff, 0xfe, 0xfd, 0x00, 0x01])),
        ("empty plaintext", encrypt(b"")),
        ("PEM garbage", b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n".to_vec()),
        ("S/MIME headers, no body", b"Content-Type: application/pkcs7-mime\r\n\r\n".to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, body) in cases {
        let (s, t) = put_token(&srv, API_KEY, "main", body).await;
        assert!((400..500).contains(&s), "{what}: HTTP {s} {t}");
        for secret in [&abm.token.consumer_secret, &abm.token.access_secret, &abm.token.access_token] {
            assert!(!t.contains(secret.as_str()), "{what}: a secret echoed in the error");
        }
    }
    // Names: a real token under names that are not names.
    let file = seal_token_file(&abm.token, &cert).unwrap();
    let long = "n".repeat(65);
    let very_long = "n".repeat(10_000);
    for name in [
        "a%2Fb",
        "..",
        "%2E%2E",
        "..%2F..%2Fsettings",
        long.as_str(),
        very_long.as_str(),
        "t%C3%B8k",
        "t%00k",
        "a%20b",
        "main%0A",
    ] {
        let (s, t) = put_token(&srv, API_KEY, name, file.clone()).await;
        assert!((400..500).contains(&s), "name {name:?}: HTTP {s} {t}");
    }
    let (_, v) = call_as(&srv, API_KEY, Method::GET, "/v1/ade/tokens", None).await;
    let names: Vec<&str> = v["tokens"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, vec!["main"], "{v}");
    let (_, after) = call_as(&srv, API_KEY, Method::GET, "/v1/ade/tokens/main", None).await;
    assert_eq!(
        before["uploaded_at"], after["uploaded_at"],
        "the stored token was replaced: {after}"
    );
    assert_eq!(before["consumer_key"], after["consumer_key"]);
    // It still works.
    let (s, v) = sync(&srv).await;
    assert_eq!(s, 200, "{v}");
    healthy(&srv).await;
}

/// Hostile ADE profile definitions (admin): refused with 400, nothing
/// defined at Apple, nothing stored. And releasing devices that are not
/// waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_profiles_and_releases_are_refused() {
    let abm = AdeStandIn::start("profiles").await.unwrap();
    let srv = start(&abm, &[]);
    connect(&srv, &abm, "main").await;
    let defined_before = abm.stats().calls.get("POST /profile").copied().unwrap_or(0);
    let skip: Vec<String> = (0..10_000).map(|i| format!("Item{i}")).collect();
    let many_real: Vec<&str> = vec!["Siri"; 10_000];
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "http:// url",
            String::new(),
            br#"{"profile_name":"x","url":"http://mdm.example.com/enroll"}"#.to_vec(),
        ),
        (
            "ftp url",
            String::new(),
            br#"{"profile_name":"x","url":"ftp://mdm.example.com/"}"#.to_vec(),
        ),
        (
            "javascript url",
            String::new(),
            br#"{"profile_name":"x","url":"javascript:alert(1)"}"#.to_vec(),
        ),
        ("url as a number", String::new(), br#"{"profile_name":"x","url":5}"#.to_vec()),
        (
            "3000-byte url",
            String::new(),
            json!({"profile_name": "x", "url": format!("https://{}", "a".repeat(3000))})
                .to_string()
                .into_bytes(),
        ),
        (
            "10^4 unknown skip items",
            String::new(),
            json!({"profile_name": "x", "skip_setup_items": skip}).to_string().into_bytes(),
        ),
        (
            "10^4 real skip items",
            String::new(),
            json!({"profile_name": "x", "skip_setup_items": many_real}).to_string().into_bytes(),
        ),
        (
            "skip items not strings",
            String::new(),
            br#"{"profile_name":"x","skip_setup_items":[1,{"a":2}]}"#.to_vec(),
        ),
        (
            "anchor_certs garbage",
            String::new(),
            br#"{"profile_name":"x","anchor_certs":["not base64 !!"]}"#.to_vec(),
        ),
        (
            "anchor_certs base64 of junk",
            String::new(),
            json!({"profile_name": "x", "anchor_certs": [b64(b"junk")]})
                .to_string()
                .into_bytes(),
        ),
        (
            "anchor_certs not an array",
            String::new(),
            br#"{"profile_name":"x","anchor_certs":"MIIB"}"#.to_vec(),
        ),
        (
            "21 anchor certs",
            String::new(),
            json!({"profile_name": "x", "anchor_certs": vec![b64(b"x"); 21]})
                .to_string()
                .into_bytes(),
        ),
        (
            "supervising_host_certs garbage",
            String::new(),
            br#"{"profile_name":"x","supervising_host_certs":[null]}"#.to_vec(),
        ),
        ("10^5-deep JSON body", String::new(), deep_json.into_bytes()),
        (
            "profile_name 10^5 long",
            String::new(),
            json!({"profile_name": "p".repeat(100_000)}).to_string().into_bytes(),
        ),
        ("no profile_name", String::new(), br#"{"url":"https://x.example/"}"#.to_vec()),
        ("not an object", String::new(), br#"["profile_name"]"#.to_vec()),
        (
            "is_supervised a string",
            String::new(),
            br#"{"profile_name":"x","is_supervised":"false"}"#.to_vec(),
        ),
        ("not JSON", String::new(), b"\xff\xfe not json".to_vec()),
        (
            "a rule 10^5 deep",
            format!(
                "&rule={}",
                urlencoding::encode(&format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000)))
            ),
            br#"{"profile_name":"x"}"#.to_vec(),
        ),
        (
            "a rule 500 brackets deep",
            format!(
                "&rule={}",
                urlencoding::encode(&format!("{}true{}", "[".repeat(500), "]".repeat(500)))
            ),
            br#"{"profile_name":"x"}"#.to_vec(),
        ),
        (
            "a rule 1000 calls deep",
            format!(
                "&rule={}",
                urlencoding::encode(&format!("{}true{}", "size(".repeat(400), ")".repeat(400)))
            ),
            br#"{"profile_name":"x"}"#.to_vec(),
        ),
        (
            "a rule of 3000 bytes",
            format!(
                "&rule={}",
                urlencoding::encode(&format!("device.serial == \"{}\"", "S".repeat(3000)))
            ),
            br#"{"profile_name":"x"}"#.to_vec(),
        ),
        (
            "a rule that is not CEL",
            format!("&rule={}", urlencoding::encode("device.serial ==")),
            br#"{"profile_name":"x"}"#.to_vec(),
        ),
        (
            "a server that is no token",
            "&server=nope".to_owned(),
            br#"{"profile_name":"x"}"#.to_vec(),
        ),
    ];
    for (what, query, body) in bodies {
        let resp = srv
            .client()
            .put(format!("{}/v1/ade/profiles/bad?default=true{query}", srv.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match resp {
            Ok(r) => {
                let s = r.status().as_u16();
                let t = r.text().await.unwrap_or_default();
                assert!(
                    (400..500).contains(&s),
                    "{what}: HTTP {s} {}",
                    t.chars().take(300).collect::<String>()
                );
            }
            // Only a request too large for the listener may be cut off.
            Err(e) => assert!(query.len() > 100_000, "{what}: {e}"),
        }
    }
    let long_name = "n".repeat(65);
    for name in ["..", "a%2Fb", "%2E%2E", long_name.as_str()] {
        let (s, v) = call_as(
            &srv,
            API_KEY,
            Method::PUT,
            &format!("/v1/ade/profiles/{name}"),
            Some(json!({"profile_name": "x"})),
        )
        .await;
        assert!((400..500).contains(&s), "profile name {name:?}: HTTP {s} {v}");
    }
    let (_, v) = call_as(&srv, API_KEY, Method::GET, "/v1/ade/profiles", None).await;
    assert_eq!(v["profiles"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(
        abm.stats().calls.get("POST /profile").copied().unwrap_or(0),
        defined_before,
        "a refused profile was defined at Apple"
    );

    // Setup Assistant releases for ids that are not waiting.
    let long_id = "X".repeat(10_000);
    for id in ["NOT-WAITING", "..%2F..%2Fv1%2Faccounts", "%2E%2E", "a%2Fb", "%00", long_id.as_str()] {
        let (s, t) = raw(&srv, API_KEY, Method::POST, &format!("/v1/ade/waiting/{id}/release"), None).await;
        assert!(
            (400..500).contains(&s),
            "release {id:?}: HTTP {s} {}",
            t.chars().take(200).collect::<String>()
        );
    }
    // A NUL in the page cursor of ABM's device list.
    let (s, t) = raw(&srv, API_KEY, Method::GET, "/v1/ade/devices?after=%00&limit=5", None).await;
    assert!((200..500).contains(&s), "devices after NUL: HTTP {s} {t}");
    // An enrolled ADE device whose profile does not wait: nothing to release.
    let sn = serial("NOWAIT");
    abm.add_device(&sn, "iPhone 15");
    let (s, v) = call_as(
        &srv,
        API_KEY,
        Method::PUT,
        "/v1/ade/profiles/plain?default=true",
        Some(json!({"profile_name": "Plain"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(sync(&srv).await.0, 200);
    let udid = mdmd::sim::random_udid();
    let _phone = first_boot(srv.client(), &conf(&srv), &udid, &sn, None).await.unwrap();
    let (s, v) = call_as(&srv, API_KEY, Method::POST, &format!("/v1/ade/waiting/{udid}/release"), None).await;
    assert_eq!(s, 404, "{v}");
    healthy(&srv).await;
}
