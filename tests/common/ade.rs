//! Helpers of the ADE tests: a server pointed at an ADE API stand-in, its
//! public key, a server token uploaded as ABM would hand it over, a sync,
//! and device certificates from a stand-in of Apple's device CA.

use serde_json::Value;

use super::{push::TestCa, Server, API_KEY};
use mdmd::sim::ade_api::AdeStandIn;
use mdmd::sim::pki::SimIdentity;

fn args<'a>(abm: &AdeStandIn, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--ade-url", abm.url().leak() as &str, "--ade-sync-interval", "3600"];
    args.extend_from_slice(extra);
    args
}

/// A server whose ADE client talks to `abm` (no periodic sync during a test).
pub fn start(abm: &AdeStandIn, extra: &[&str]) -> Server {
    Server::start_with(&args(abm, extra))
}

/// The same, its debug log kept (`log_text`).
pub fn start_logged(abm: &AdeStandIn, extra: &[&str]) -> Server {
    Server::start_logged(&args(abm, extra))
}

/// The certificate ABM encrypts server tokens to.
pub async fn public_key(srv: &Server) -> openssl::x509::X509 {
    let pem = srv
        .client()
        .get(format!("{}/v1/ade/public-key", srv.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    openssl::x509::X509::from_pem(&pem).expect("the public key is a PEM certificate")
}

/// `PUT /v1/ade/tokens/{name}` with `key`: (status, body as text).
pub async fn put_token(srv: &Server, key: &str, name: &str, file: Vec<u8>) -> (u16, String) {
    let resp = srv
        .client()
        .put(format!("{}/v1/ade/tokens/{name}", srv.base))
        .bearer_auth(key)
        .header("content-type", "application/pkcs7-mime")
        .body(file)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Upload the stand-in's token, encrypted to the server's key as ABM does.
pub async fn connect(srv: &Server, abm: &AdeStandIn, name: &str) {
    let cert = public_key(srv).await;
    let file = mdmd::sim::ade::seal_token_file(&abm.token, &cert).unwrap();
    let (s, v) = put_token(srv, API_KEY, name, file).await;
    assert_eq!(s, 200, "{v}");
}

/// `POST /v1/ade/sync`.
pub async fn sync(srv: &Server) -> (u16, Value) {
    srv.admin().call(reqwest::Method::POST, "/v1/ade/sync", None).await.unwrap()
}

/// Apple's device CA, as a test CA: a device's certificate, named by its UDID.
pub fn device_cert(ca: &TestCa, udid: &str) -> SimIdentity {
    use openssl::asn1::Asn1Time;
    let key = super::pool_key();
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", udid).unwrap();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&mdmd::pki::ca::random_serial().unwrap()).unwrap();
    b.set_subject_name(&n.build()).unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b.sign(&ca.key, openssl::hash::MessageDigest::sha256()).unwrap();
    SimIdentity { cert: b.build(), key }
}
