//! Profiles: one device's copy filled, encrypted and signed (criterion), and
//! one profile install queued to 10,000 devices through the service and the
//! redb store (one-shot timing, printed; see docs/performance.md).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use mdmd::pki::secrets::SecretBox;
use mdmd::pki::{CaConfig, Pki};
use mdmd::protocol::EnrollmentKind;
use mdmd::push::NoPush;
use mdmd::service::commands::{var_value, Commander, CommanderConfig};
use mdmd::service::Mdm;
use mdmd::store::redb::RedbStore;
use mdmd::store::{CheckinStore, Enrollment, IssuedCert, PkiStore};

const URL: &str = "https://mdm.example.com";

fn pki(dir: &std::path::Path) -> Pki {
    Pki::load_or_create(&CaConfig {
        certs_dir: dir.to_owned(),
        public_host: "mdm.example.com".into(),
        ca_cert: None,
        ca_key: None,
        tls_cert: None,
        tls_key: None,
        signer_cert: None,
        signer_key: None,
        organization: "bench".into(),
    })
    .expect("pki")
}

fn device_cert(pki: &Pki) -> openssl::x509::X509 {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("key");
    let mut name = openssl::x509::X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "bench device").expect("cn");
    let public = openssl::pkey::PKey::public_key_from_der(&key.public_key_to_der().expect("der")).expect("public");
    pki.issue_identity(&public, &name.build(), 365).expect("issue")
}

fn enrollment(id: &str, hash: &str) -> Enrollment {
    let mut e = Enrollment {
        udid: Some(id.into()),
        active: true,
        cert_hash: Some(hash.into()),
        ..Enrollment::blank(id, id, EnrollmentKind::Device, "com.apple.mgmt.External.bench", 0)
    };
    e.info.serial_number = Some(format!("SN{id}"));
    e
}

/// Variables as the service fills them (a fresh challenge for SCEP payloads).
fn lookup(e: &Enrollment, name: &str) -> Option<String> {
    if name == "SCEP_CHALLENGE" {
        Some(mdmd::pki::random_token(20))
    } else {
        var_value(e, name, URL)
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Arc::new(pki(dir.path()));
    let cert = device_cert(&pki);
    let wifi = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/wifi-eap-tls.mobileconfig")).expect("wifi");
    let t = mdmd::profiles::Template::parse(&wifi).expect("template");
    let dict = mdmd::profiles::parse_stored(&t.xml).expect("parse");
    let e = enrollment("00008101-000000000000BEEF", "h");

    let mut g = c.benchmark_group("profiles");
    g.bench_function("fill + encrypt + sign one Wi-Fi profile (SCEP payload)", |b| {
        b.iter(|| {
            let mut look = |n: &str, _: &str| lookup(&e, n);
            mdmd::profiles::render(&pki, &dict, &mut look, Some(&cert)).expect("render")
        })
    });
    g.bench_function("fill + sign, not encrypted", |b| {
        b.iter(|| {
            let mut look = |n: &str, _: &str| lookup(&e, n);
            mdmd::profiles::render(&pki, &dict, &mut look, None).expect("render")
        })
    });
    g.bench_function("validate the Wi-Fi template", |b| {
        b.iter(|| mdmd::profiles::Template::parse(&wifi).expect("template"))
    });
    g.finish();

    // One install of the Wi-Fi profile (with its per-device SCEP challenge) to
    // 10,000 enrolled devices: read each enrollment and its certificate, build
    // every copy on all cores, store commands and challenges in one transaction.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = Arc::new(RedbStore::open(&dir.path().join("bench.redb")).expect("open"));
    let n = 10_000;
    let der = cert.to_der().expect("der");
    let ids: Vec<String> = (0..n).map(|i| format!("00008101-{i:016X}")).collect();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for chunk in ids.chunks(n / 32) {
            let (s, chunk, der) = (store.clone(), chunk.to_vec(), der.clone());
            tasks.push(tokio::spawn(async move {
                for id in chunk {
                    // Every device gets its own certificate record (the same DER: the
                    // encryption work per device is the same as with distinct ones).
                    let hash = format!("cert-{id}");
                    s.record_cert(IssuedCert {
                        serial: hash.clone(),
                        sha256: hash.clone(),
                        subject: "CN=bench".into(),
                        not_before: 0,
                        not_after: i64::MAX,
                        issued_at: 0,
                        enrollment: Some(id.clone()),
                        revoked_at: None,
                        purpose: None,
                        der: Some(der.clone()),
                        udid: Some(id.clone()),
                        vouched: false,
                        renewed_from: None,
                        user: None,
                        ade: None,
                    })
                    .await
                    .expect("cert");
                    s.authenticate(enrollment(&id, &hash), false).await.expect("seed");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
    });
    let mdm = Arc::new(Mdm::new(
        store.clone(),
        mdmd::push::Topic::new("com.apple.mgmt.External.bench".into()),
        Arc::new(NoPush),
        Arc::new(SecretBox::ephemeral()),
    ));
    let commander = Commander::new(
        mdm,
        pki.clone(),
        CommanderConfig {
            public_url: URL.into(),
            encrypt_profiles: true,
        },
    );
    rt.block_on(commander.upload(&wifi, "bench", false)).expect("upload");
    for round in 0..2 {
        let cpu0 = mdmd_cpu();
        let t0 = std::time::Instant::now();
        let b = rt
            .block_on(commander.install_template("com.example.mdmd.wifi", ids.clone(), false))
            .expect("install");
        let secs = t0.elapsed().as_secs_f64();
        let cpu = mdmd_cpu() - cpu0;
        assert_eq!(b.queued, n as u64, "{:?}", b.failed.first());
        eprintln!(
            "profiles/install Wi-Fi profile to {n} devices (round {round}): {secs:.2} s wall, {:.0} profiles/s, CPU {:.3} ms per profile",
            n as f64 / secs,
            cpu * 1000.0 / n as f64
        );
    }
}

/// User + system CPU seconds of this process.
fn mdmd_cpu() -> f64 {
    let (u, s) = mdmd::api::cpu_time();
    u + s
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
