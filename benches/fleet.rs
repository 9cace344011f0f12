//! What a fact change costs the blueprint reconciler: evaluating a device's
//! dynamic groups (the device object built, ten CEL rules run), and one
//! device reconciled through the service and the store (redb) with ten
//! dynamic groups and a blueprint it already has — nothing to queue.

mod support;

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion};
use mdmd::service::fleet::rules::{context, device_object, to_cel, DeviceFacts, Rule};
use serde_json::json;

const RULES: [&str; 10] = [
    r#"device.attributes.DEPARTMENT == "sales""#,
    r#"device.model == "iPhone16,1" && !device.supervised"#,
    r#"version_cmp(device.os_version, "17.9") > 0"#,
    r#"device.compliance == "non_compliant""#,
    r#"device.user.email.endsWith("@example.com")"#,
    r#"has(device.attributes.TEAM) && device.attributes.TEAM in ["a", "b", "c"]"#,
    r#"device.os[0] >= 17"#,
    r#"device.serial.startsWith("F2L")"#,
    r#"device.ddm["device.operating-system.version"] == "18.1""#,
    r#"device.enrolled && !device.awaiting_configuration"#,
];

fn bench(c: &mut Criterion) {
    let rules: Vec<Rule> = RULES.iter().map(|r| Rule::compile(r).expect("rule")).collect();
    let mut e = mdmd::store::Enrollment::blank("D", "D", mdmd::protocol::EnrollmentKind::Device, "t", 0);
    e.info.product_name = Some("iPhone16,1".into());
    e.info.os_version = Some("17.10".into());
    e.info.serial_number = Some("F2LXK0ABCD12".into());
    e.attributes.insert("DEPARTMENT".into(), "sales".into());
    e.attributes.insert("EMAIL".into(), "ann@example.com".into());
    let mut ddm = BTreeMap::new();
    ddm.insert("device.operating-system.version".to_owned(), json!("18.1"));
    c.bench_function("fleet/ten dynamic groups for one device", |b| {
        b.iter(|| {
            let obj = to_cel(&device_object(&DeviceFacts {
                enrollment: &e,
                inventory: &[],
                compliance: None,
                ddm: ddm.clone(),
            }));
            let ctx = context(&obj);
            rules.iter().filter(|r| r.matches_in(&ctx)).count()
        })
    });

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let none = dir.path().join("none").display().to_string();
    let (app, router) = support::app(&rt, dir.path(), &["--blueprints-dir", &none]);
    let _ident = support::enrolled(&rt, &app, &router);
    let id = support::UDID.to_owned();
    rt.block_on(async {
        for (i, r) in RULES.iter().enumerate() {
            app.fleet.put_group(&format!("g{i}"), &json!({ "rule": r })).await.expect("group");
        }
        app.fleet
            .put_blueprint(
                "b",
                &json!({"groups": ["g0"], "enrollment_commands": [{"RequestType": "SecurityInfo"}]}),
                "bench",
            )
            .await
            .expect("blueprint");
        app.mdm
            .store
            .set_attributes(&id, [("DEPARTMENT".to_owned(), "sales".to_owned())].into_iter().collect())
            .await
            .expect("attributes");
        let first = app.fleet.reconcile(vec![id.clone()]).await.expect("reconcile");
        assert_eq!(first.commands, 1);
    });
    c.bench_function("fleet/one device reconciled after a fact change (nothing to queue)", |b| {
        b.iter(|| {
            let s = rt.block_on(app.fleet.reconcile(vec![id.clone()])).expect("reconcile");
            assert_eq!(s.commands, 0);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
