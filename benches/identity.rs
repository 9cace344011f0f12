//! Cost of checking a device's identity on every request (Mdm-Signature).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use mdmd::pki::{CaConfig, Identity, Pki};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::load_or_create(&CaConfig {
        certs_dir: dir.path().to_owned(),
        public_host: "localhost".into(),
        ..Default::default()
    })
    .expect("pki");
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("key");
    let mut n = openssl::x509::X509NameBuilder::new().expect("name");
    n.append_entry_by_text("CN", "bench device").expect("cn");
    let n = n.build();
    let cert = pki
        .issue_identity(
            &key.public_key_to_der()
                .and_then(|d| openssl::pkey::PKey::public_key_from_der(&d))
                .expect("pub"),
            &n,
            365,
        )
        .expect("issue");
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/nanomdm-device-captures/DeviceInformation.1.plist"
    ))
    .expect("fixture");
    let sig = mdmd::pki::cms::sign_detached(&cert, &key, &body).expect("sign");
    use base64::Engine as _;
    let header = base64::engine::general_purpose::STANDARD.encode(&sig);
    c.bench_function("Mdm-Signature: verify + chain (full)", |b| {
        b.iter(|| Identity::from_signature(&pki, black_box(&header), black_box(&body)).expect("ok"))
    });
    c.bench_function("Mdm-Signature: PKCS#7 parse only", |b| {
        b.iter(|| openssl::pkcs7::Pkcs7::from_der(black_box(&sig)).expect("parse"))
    });
    c.bench_function("Mdm-Signature: detached verify (no chain)", |b| {
        b.iter(|| mdmd::pki::cms::verify_detached(black_box(&sig), black_box(&body)).expect("ok"))
    });
    c.bench_function("certificate chain check", |b| {
        b.iter(|| pki.verify_chain(black_box(&cert)).expect("ok"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
