//! One device request through the whole server stack but the socket:
//! router → Mdm-Signature check → identity binding → queue (redb, fsync).

mod support;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use support::{dict, send, send_signed};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, router) = support::app(&rt, dir.path(), &[]);
    let ident = support::enrolled(&rt, &app, &router);
    let udid = support::UDID;
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
