//! Seed 003 (MaaS360 PIV-D with Entrust): the derived credentials as the
//! identity of an Exchange ActiveSync account and as its S/MIME signing and
//! encryption certificates, as the certificate of an IKEv2 VPN and of Wi-Fi
//! EAP-TLS. On the simulated device, which decrypts the delivered profile
//! and imports its PKCS#12 payloads, every reference resolves to a payload
//! holding the credential of the right usage, key included.

mod common;

use common::derived::{cert_of, derived_p12, identity_of, payload, post_as, wifi_eap_tls};
use common::{b64, device_profile, template, Server};
use openssl::x509::X509;
use serde_json::json;

const PROFILE: &str = "com.agency.pivd.mail-vpn";

/// Three PKCS#12 payloads (one per usage), an Exchange account, an IKEv2 VPN and Wi-Fi.
fn pivd_profile() -> Vec<u8> {
    let eas = payload(
        "com.apple.eas.account",
        "EAS-1",
        "<key>EmailAddress</key><string>alice@agency.example</string><key>Host</key><string>mail.agency.example</string>\
<key>SSL</key><true/><key>UserName</key><string>alice</string>\
<key>PayloadCertificateUUID</key><string>DC-AUTH</string>\
<key>SMIMESigningEnabled</key><true/><key>SMIMESigningCertificateUUID</key><string>DC-SIGN</string>\
<key>SMIMEEncryptionEnabled</key><true/><key>SMIMEEncryptionCertificateUUID</key><string>DC-ENC</string>",
    );
    let vpn = payload(
        "com.apple.vpn.managed",
        "VPN-1",
        "<key>UserDefinedName</key><string>Agency VPN</string><key>VPNType</key><string>IKEv2</string>\
<key>IKEv2</key><dict><key>RemoteAddress</key><string>vpn.agency.example</string>\
<key>LocalIdentifier</key><string>alice@agency.example</string><key>RemoteIdentifier</key><string>vpn.agency.example</string>\
<key>AuthenticationMethod</key><string>Certificate</string><key>PayloadCertificateUUID</key><string>DC-AUTH</string></dict>",
    );
    template(
        PROFILE,
        &format!(
            "{}{}{}{eas}{vpn}{}",
            derived_p12("DC-AUTH", "authentication"),
            derived_p12("DC-SIGN", "signing"),
            derived_p12("DC-ENC", "encryption"),
            wifi_eap_tls("WIFI-1", "DC-AUTH")
        ),
    )
}

/// The payload of `d`'s copy of the profile with this UUID.
fn payload_on(d: &mdmd::sim::SimDevice, uuid: &str) -> plist::Dictionary {
    d.profiles[PROFILE]
        .payloads
        .iter()
        .find(|p| p.get("PayloadUUID").and_then(plist::Value::as_string) == Some(uuid))
        .cloned()
        .unwrap_or_else(|| panic!("no payload {uuid}"))
}

/// Follow a reference on the device: the UUID names a PKCS#12 payload of the
/// same profile, whose identity is `want` with its own private key.
fn resolves_to(d: &mdmd::sim::SimDevice, reference: &str, want: &X509, what: &str) {
    let p = payload_on(d, reference);
    assert_eq!(
        p.get("PayloadType").and_then(plist::Value::as_string),
        Some("com.apple.security.pkcs12"),
        "{what}: {reference} is not a PKCS#12 payload"
    );
    assert!(p.get("PayloadContent").and_then(plist::Value::as_data).is_some(), "{what}: no data");
    let id = identity_of(d, PROFILE, reference);
    assert_eq!(
        id.cert.to_der().unwrap(),
        want.to_der().unwrap(),
        "{what}: not the credential of its usage"
    );
    assert!(
        id.cert.public_key().unwrap().public_eq(&id.key),
        "{what}: the key is not the certificate's"
    );
}

fn reference(p: &plist::Dictionary, path: &[&str]) -> String {
    let mut v = p.get(path[0]).unwrap_or_else(|| panic!("no {}", path[0]));
    for k in &path[1..] {
        v = v.as_dictionary().and_then(|d| d.get(k)).unwrap_or_else(|| panic!("no {k}"));
    }
    v.as_string().unwrap().to_owned()
}

#[tokio::test]
async fn exchange_smime_vpn_and_wifi_carry_the_derived_credential_of_each_usage() {
    let srv = Server::start();
    let admin = srv.admin();
    let issuer = srv.account("entrust", "issuer");
    let piv_ca = mdmd::sim::pki::test_ca("Agency PIV-D CA").unwrap();

    let (s, v) = admin.call_bytes("/v1/profiles", pivd_profile()).await.unwrap();
    assert!(s == 200 || s == 201, "{s} {v}");
    assert!(!v.to_string().contains("is not the PayloadUUID"), "{v}");

    // Alice's phone: her authentication credential is the device's own, her
    // signing and encryption credentials are posted for her as a user.
    let mut d = srv.enrolled().await;
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/devices/{}/attributes", d.udid),
            Some(json!({"USERNAME": "alice"})),
        )
        .await
        .unwrap();
    let b = admin
        .post(&format!("/v1/profiles/{PROFILE}/install"), json!({"targets": [d.udid]}))
        .await
        .unwrap();
    assert_eq!(b["waiting"], json!([d.udid]), "{b}");
    let waiting = device_profile(&srv, &d.udid, PROFILE).await;
    assert_eq!(waiting["state"], "waiting for derived credential");
    assert_eq!(waiting["usages"], json!(["authentication", "encryption", "signing"]), "{waiting}");

    let pw = "pin-2468";
    let auth = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (PIV Authentication)", 365, pw).unwrap();
    let sign = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (Digital Signature)", 365, pw).unwrap();
    let enc = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (Key Management)", 365, pw).unwrap();
    let post = |owner: serde_json::Value, usage: &str, p12: &[u8]| {
        let mut body = json!({"usage": usage, "pkcs12": b64(p12), "password": pw});
        body.as_object_mut().unwrap().extend(owner.as_object().unwrap().clone());
        body
    };
    // Each credential that arrives narrows what the profile waits for; the last one sends it.
    let (s, v) = post_as(&srv, &issuer, post(json!({"device": d.udid}), "authentication", &auth)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["profiles_sent"], json!({}), "{v}");
    let (s, v) = post_as(&srv, &issuer, post(json!({"user": "alice"}), "signing", &sign)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["profiles_sent"], json!({}), "{v}");
    assert_eq!(device_profile(&srv, &d.udid, PROFILE).await["usages"], json!(["encryption"]));
    assert!(d.session().await.unwrap().is_empty(), "nothing is sent while a usage is missing");
    let (s, v) = post_as(&srv, &issuer, post(json!({"user": "alice"}), "encryption", &enc)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["profiles_sent"][&d.udid], json!([PROFILE]), "{v}");

    let handled = d.session().await.unwrap();
    assert!(
        handled
            .iter()
            .any(|h| h.request_type == "InstallProfile" && h.status == mdmd::protocol::Status::Acknowledged),
        "{handled:?}"
    );
    assert!(
        d.profiles[PROFILE].encrypted,
        "a profile with credentials goes encrypted to the device"
    );
    let (auth_c, sign_c, enc_c) = (cert_of(&auth, pw), cert_of(&sign, pw), cert_of(&enc, pw));

    // Exchange: identity = authentication; S/MIME signing and encryption, each its own credential.
    let eas = payload_on(&d, "EAS-1");
    assert_eq!(eas.get("SMIMESigningEnabled").and_then(plist::Value::as_boolean), Some(true));
    assert_eq!(eas.get("SMIMEEncryptionEnabled").and_then(plist::Value::as_boolean), Some(true));
    resolves_to(&d, &reference(&eas, &["PayloadCertificateUUID"]), &auth_c, "Exchange identity");
    resolves_to(&d, &reference(&eas, &["SMIMESigningCertificateUUID"]), &sign_c, "S/MIME signing");
    resolves_to(
        &d,
        &reference(&eas, &["SMIMEEncryptionCertificateUUID"]),
        &enc_c,
        "S/MIME encryption",
    );
    // VPN: IKEv2 with certificate authentication.
    let vpn = payload_on(&d, "VPN-1");
    assert_eq!(reference(&vpn, &["IKEv2", "AuthenticationMethod"]), "Certificate");
    resolves_to(&d, &reference(&vpn, &["IKEv2", "PayloadCertificateUUID"]), &auth_c, "VPN");
    // Wi-Fi EAP-TLS.
    resolves_to(
        &d,
        &reference(&payload_on(&d, "WIFI-1"), &["PayloadCertificateUUID"]),
        &auth_c,
        "Wi-Fi",
    );
    // The password that opened each PKCS#12 came inside the encrypted profile.
    assert_eq!(payload_on(&d, "DC-ENC").get("Password").and_then(plist::Value::as_string), Some(pw));

    let dev = admin.get(&format!("/v1/devices/{}", d.udid)).await.unwrap();
    let creds = dev["derived_credentials"].as_array().unwrap();
    let owners: Vec<(String, String)> = creds
        .iter()
        .map(|c| {
            (
                c["usage"].as_str().unwrap().to_owned(),
                c["owner"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        owners,
        vec![
            ("authentication".into(), "device".into()),
            ("signing".into(), "user".into()),
            ("encryption".into(), "user".into())
        ]
    );

    // A new encryption credential (key rollover) re-installs the profile: only the
    // encryption identity changes.
    let enc2 = mdmd::sim::pki::issue_pkcs12(&piv_ca, "Alice Agent (Key Management 2)", 365, "pin-1357").unwrap();
    let (s, v) = post_as(
        &srv,
        &issuer,
        json!({"user": "alice", "usage": "encryption", "pkcs12": b64(&enc2), "password": "pin-1357"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["profiles_sent"][&d.udid], json!([PROFILE]), "{v}");
    d.session().await.unwrap();
    let eas = payload_on(&d, "EAS-1");
    resolves_to(
        &d,
        &reference(&eas, &["SMIMEEncryptionCertificateUUID"]),
        &cert_of(&enc2, "pin-1357"),
        "renewed encryption",
    );
    resolves_to(&d, &reference(&eas, &["SMIMESigningCertificateUUID"]), &sign_c, "signing unchanged");
    resolves_to(&d, &reference(&eas, &["PayloadCertificateUUID"]), &auth_c, "identity unchanged");
}

/// A reference to an identity that is not in the profile, or to a payload
/// that is not an identity, is refused when the template is uploaded.
#[tokio::test]
async fn exchange_references_must_resolve_when_the_template_is_uploaded() {
    let srv = Server::start();
    let admin = srv.admin();
    for (smime_enc, why) in [("NOPE", "is not the PayloadUUID"), ("VPN-1", "expected an identity payload")] {
        let eas = payload(
            "com.apple.eas.account",
            "EAS-1",
            &format!(
                "<key>Host</key><string>mail.agency.example</string><key>PayloadCertificateUUID</key><string>DC-AUTH</string>\
<key>SMIMEEncryptionEnabled</key><true/><key>SMIMEEncryptionCertificateUUID</key><string>{smime_enc}</string>"
            ),
        );
        let vpn = payload(
            "com.apple.vpn.managed",
            "VPN-1",
            "<key>UserDefinedName</key><string>Agency VPN</string><key>VPNType</key><string>IKEv2</string>\
<key>IKEv2</key><dict><key>RemoteAddress</key><string>vpn.agency.example</string>\
<key>LocalIdentifier</key><string>a</string><key>RemoteIdentifier</key><string>b</string>\
<key>AuthenticationMethod</key><string>Certificate</string><key>PayloadCertificateUUID</key><string>DC-AUTH</string></dict>",
        );
        let t = template("com.agency.bad", &format!("{}{eas}{vpn}", derived_p12("DC-AUTH", "authentication")));
        let (s, v) = admin.call_bytes("/v1/profiles", t).await.unwrap();
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(why), "{why}: {v}");
        assert!(v.to_string().contains("SMIMEEncryptionCertificateUUID"), "{v}");
    }
}
