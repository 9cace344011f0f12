//! Declarative management through the server stack but the socket: a sync
//! (tokens, declaration-items, one declaration) and a status report, each a
//! signed check-in of the enrolled device (redb; signing outside the loop).

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use support::{dict, send_signed, UDID};

fn checkin(endpoint: &str, data: Option<Vec<u8>>) -> Vec<u8> {
    let mut pairs = vec![
        ("MessageType", plist::Value::from("DeclarativeManagement")),
        ("UDID", UDID.into()),
        ("Endpoint", endpoint.into()),
    ];
    if let Some(d) = data {
        pairs.push(("Data", plist::Value::Data(d)));
    }
    dict(&pairs)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, router) = support::app(&rt, dir.path(), &[]);
    let ident = support::enrolled(&rt, &app, &router);
    let ddm = app.mdm.ddm().expect("ddm").clone();
    rt.block_on(async {
        ddm.put_declaration(
            &serde_json::json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "pc",
            "Payload": {"RequirePasscode": true, "MinimumLength": 6}}),
        )
        .await
        .expect("pc");
        ddm.put_declaration(&serde_json::json!({"Type": "com.apple.activation.simple", "Identifier": "act",
            "Payload": {"StandardConfigurations": ["pc"]}}))
            .await
            .expect("act");
        ddm.set_add("staff", "pc").await.expect("set");
        ddm.set_add("staff", "act").await.expect("set");
        ddm.assign(UDID, "staff", true).await.expect("assign");
    });
    let signed = |body: Vec<u8>| {
        let sig = ident.sign(&body).expect("sign");
        (sig, body)
    };
    let tokens = signed(checkin("tokens", None));
    let items = signed(checkin("declaration-items", None));
    let one = signed(checkin("declaration/configuration/pc", None));
    c.bench_function("ddm: sync (tokens + declaration-items + one declaration: 3 requests)", |b| {
        b.iter(|| {
            rt.block_on(async {
                for (sig, body) in [&tokens, &items, &one] {
                    let (s, out) = send_signed(&router, sig, body.clone()).await;
                    assert!(s == 200 && !out.is_empty());
                }
            })
        })
    });
    let report = serde_json::json!({"StatusItems": {
        "device": {"operating-system": {"version": "18.1", "build-version": "22B83"},
                   "model": {"family": "iPhone", "identifier": "iPhone16,1"}},
        "passcode": {"is-compliant": true, "is-present": true},
        "softwareupdate": {"install-state": "none"},
        "management": {"declarations": {
            "activations": [{"identifier": "act", "server-token": "x", "active": true, "valid": "valid"}],
            "configurations": [{"identifier": "pc", "server-token": "y", "active": true, "valid": "valid"}],
            "assets": [], "management": []}}},
        "Errors": [], "FullReport": false});
    let status = signed(checkin("status", Some(report.to_string().into_bytes())));
    c.bench_function("ddm: status report (9 items, one store write)", |b| {
        b.iter(|| rt.block_on(async { assert_eq!(send_signed(&router, &status.0, status.1.clone()).await.0, 200) }))
    });
    // Server CPU (user + system, every thread of the process) per operation:
    // criterion's times include waiting for fsync.
    let cpu = || {
        let (u, s) = mdmd::api::cpu_time();
        u + s
    };
    let n = 2000;
    let c0 = cpu();
    rt.block_on(async {
        for _ in 0..n {
            for (sig, body) in [&tokens, &items, &one] {
                send_signed(&router, sig, body.clone()).await;
            }
        }
    });
    let sync_ms = (cpu() - c0) * 1000.0 / n as f64;
    let c0 = cpu();
    rt.block_on(async {
        for _ in 0..n {
            send_signed(&router, &status.0, status.1.clone()).await;
        }
    });
    let status_ms = (cpu() - c0) * 1000.0 / n as f64;
    println!("server CPU per DDM sync (3 requests): {sync_ms:.3} ms; per status report: {status_ms:.3} ms ({n} each)");
}

criterion_group!(benches, bench);
criterion_main!(benches);
