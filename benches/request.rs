//! One device request through the whole server stack but the socket:
//! router → Mdm-Signature check → identity binding → queue (redb, fsync).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use mdmd::http::listener::PeerCert;
use mdmd::sim::pki::SimIdentity;

fn dict(pairs: &[(&str, plist::Value)]) -> Vec<u8> {
    let d: plist::Dictionary = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    mdmd::protocol::to_xml(&d)
}

async fn send(router: &axum::Router, ident: &SimIdentity, body: Vec<u8>) -> (u16, Vec<u8>) {
    let sig = ident.sign(&body).expect("sign");
    send_signed(router, &sig, body).await
}

/// The device's RSA signing is the client's cost: benches sign outside the timed loop.
async fn send_signed(router: &axum::Router, sig: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let mut req = Request::put("/mdm/connect")
        .header("Mdm-Signature", sig)
        .body(Body::from(body))
        .expect("request");
    req.extensions_mut().insert(PeerCert(None));
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = <mdmd::config::ServeConfig as clap::FromArgMatches>::from_arg_matches(
        &<mdmd::config::ServeConfig as clap::Args>::augment_args(clap::Command::new("x")).get_matches_from([
            "x",
            "--data-dir",
            &dir.path().join("d").to_string_lossy(),
            "--certs-dir",
            &dir.path().join("c").to_string_lossy(),
            "--api-key",
            "k",
            "--public-url",
            "https://localhost:8443",
        ]),
    )
    .expect("config");
    let app = rt.block_on(mdmd::server::build(&cfg)).expect("app");
    let router = mdmd::server::router(app.clone());
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("key");
    let mut n = openssl::x509::X509NameBuilder::new().expect("name");
    n.append_entry_by_text("CN", "bench").expect("cn");
    let n = n.build();
    let public = openssl::pkey::PKey::public_key_from_der(&key.public_key_to_der().expect("der")).expect("pub");
    let ident = SimIdentity {
        cert: app.pki.issue_identity(&public, &n, 365).expect("issue"),
        key,
    };
    let udid = "00008101-0000000000BE7C11";
    let topic = app.mdm.topic.get();
    rt.block_on(async {
        let auth = dict(&[
            ("MessageType", "Authenticate".into()),
            ("UDID", udid.into()),
            ("Topic", topic.clone().into()),
        ]);
        assert_eq!(send(&router, &ident, auth).await.0, 200);
        let tu = dict(&[
            ("MessageType", "TokenUpdate".into()),
            ("UDID", udid.into()),
            ("Topic", topic.clone().into()),
            ("Token", plist::Value::Data(vec![7; 32])),
            ("PushMagic", "magic".into()),
        ]);
        assert_eq!(send(&router, &ident, tu).await.0, 200);
    });
    let idle = dict(&[("UDID", udid.into()), ("Status", "Idle".into())]);
    let idle_sig = ident.sign(&idle).expect("sign");
    c.bench_function("request: Idle, empty queue (signature + binding + queue read)", |b| {
        b.iter(|| rt.block_on(async { assert_eq!(send_signed(&router, &idle_sig, idle.clone()).await, (200, vec![])) }))
    });
    c.bench_function("request: enqueue + Idle + Acknowledged (two device requests, two commits)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (uuid, _) = app
                    .mdm
                    .enqueue_json(&serde_json::json!({"RequestType": "SecurityInfo"}), vec![udid.to_owned()])
                    .await
                    .map_err(|e| format!("{e:?}"))
                    .expect("enqueue");
                let (s, cmd) = send_signed(&router, &idle_sig, idle.clone()).await;
                assert!(s == 200 && !cmd.is_empty());
                let ack = dict(&[
                    ("UDID", udid.into()),
                    ("Status", "Acknowledged".into()),
                    ("CommandUUID", uuid.into()),
                ]);
                assert_eq!(send(&router, &ident, ack).await, (200, vec![]));
            })
        })
    });
    let _ = Arc::strong_count(&app);
}

criterion_group!(benches, bench);
criterion_main!(benches);
