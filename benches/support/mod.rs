//! What the benches share: a server app built in a temp dir, and one
//! enrolled device whose requests go through the router (no socket).
#![allow(dead_code)]

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use mdmd::http::listener::PeerCert;
use mdmd::sim::pki::SimIdentity;

pub const UDID: &str = "00008101-0000000000BE7C11";

pub fn dict(pairs: &[(&str, plist::Value)]) -> Vec<u8> {
    let d: plist::Dictionary = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    mdmd::protocol::to_xml(&d)
}

pub async fn send(router: &axum::Router, ident: &SimIdentity, body: Vec<u8>) -> (u16, Vec<u8>) {
    let sig = ident.sign(&body).expect("sign");
    send_signed(router, &sig, body).await
}

/// The device's RSA signing is the client's cost: benches sign outside the timed loop.
pub async fn send_signed(router: &axum::Router, sig: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut req = Request::put("/mdm/connect")
        .header("Mdm-Signature", sig)
        .body(Body::from(body))
        .expect("request");
    req.extensions_mut().insert(PeerCert(None));
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
}

/// The app (and its router) for `extra` serve flags, in `dir`.
pub fn app(rt: &tokio::runtime::Runtime, dir: &std::path::Path, extra: &[&str]) -> (std::sync::Arc<mdmd::app::App>, axum::Router) {
    let d = dir.join("d").to_string_lossy().into_owned();
    let c = dir.join("c").to_string_lossy().into_owned();
    let mut args = vec![
        "x",
        "--data-dir",
        &d,
        "--certs-dir",
        &c,
        "--api-key",
        "bench-key-0123456789abcdefgh",
        "--public-url",
        "https://localhost:8443",
        // No automatic inventory or DDM after enrollment: the benches count what they queue.
        "--inventory-interval",
        "0",
        "--ddm-enable",
        "false",
    ];
    args.extend_from_slice(extra);
    let cfg = <mdmd::config::ServeConfig as clap::FromArgMatches>::from_arg_matches(
        &<mdmd::config::ServeConfig as clap::Args>::augment_args(clap::Command::new("x")).get_matches_from(args),
    )
    .expect("config");
    let app = rt.block_on(mdmd::server::build(&cfg)).expect("app");
    let router = mdmd::server::router(app.clone());
    (app, router)
}

/// An identity from the app's CA, enrolled as `UDID` (Authenticate + TokenUpdate).
pub fn enrolled(rt: &tokio::runtime::Runtime, app: &mdmd::app::App, router: &axum::Router) -> SimIdentity {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("key");
    let mut n = openssl::x509::X509NameBuilder::new().expect("name");
    n.append_entry_by_text("CN", "bench").expect("cn");
    let n = n.build();
    let public = openssl::pkey::PKey::public_key_from_der(&key.public_key_to_der().expect("der")).expect("pub");
    let ident = SimIdentity {
        cert: app.pki.issue_identity(&public, &n, 365).expect("issue"),
        key,
    };
    let topic = app.mdm.topic.get();
    rt.block_on(async {
        let auth = dict(&[
            ("MessageType", "Authenticate".into()),
            ("UDID", UDID.into()),
            ("Topic", topic.clone().into()),
            ("OSVersion", "18.1".into()),
        ]);
        assert_eq!(send(router, &ident, auth).await.0, 200);
        let tu = dict(&[
            ("MessageType", "TokenUpdate".into()),
            ("UDID", UDID.into()),
            ("Topic", topic.clone().into()),
            ("Token", plist::Value::Data(vec![7; 32])),
            ("PushMagic", "magic".into()),
        ]);
        assert_eq!(send(router, &ident, tu).await.0, 200);
    });
    ident
}
