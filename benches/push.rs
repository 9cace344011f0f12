//! Pushes per second: 100,000 enrollments with push tokens, all woken at
//! once, through the real Pusher and APNs client (HTTP/2, TLS with client
//! certificate) to the APNs stand-in on 127.0.0.1, which checks every
//! request as Apple does. Client and stand-in share this machine's cores.
//! One-shot timing, printed (see docs/performance.md).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mdmd::protocol::EnrollmentKind;
use mdmd::push::client::{ApnsClient, ApnsConfig};
use mdmd::push::{PushConfig, Pusher};
use mdmd::push::{Topic, Waker as _};
use mdmd::store::redb::RedbStore;
use mdmd::store::{CheckinStore, Enrollment, PushInfo};

fn ca() -> (openssl::x509::X509, openssl::pkey::PKey<openssl::pkey::Private>) {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", "bench push CA").unwrap();
    let n = n.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(2).unwrap()).unwrap();
    b.append_extension(openssl::x509::extension::BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

fn push_cert(ca: &(openssl::x509::X509, openssl::pkey::PKey<openssl::pkey::Private>), topic: &str) -> Vec<u8> {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut n = openssl::x509::X509NameBuilder::new().unwrap();
    n.append_entry_by_text("UID", topic).unwrap();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&n.build()).unwrap();
    b.set_issuer_name(ca.0.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(2).unwrap()).unwrap();
    b.sign(&ca.1, openssl::hash::MessageDigest::sha256()).unwrap();
    let mut pem = b.build().to_pem().unwrap();
    pem.extend(key.private_key_to_pem_pkcs8().unwrap());
    pem
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`
    }
    let n: usize = std::env::var("PUSH_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let topic = format!("com.apple.mgmt.External.{}", uuid::Uuid::new_v4());
        let ca = ca();
        let standin = mdmd::sim::apns::StandIn::start("127.0.0.1:0", vec![ca.0.clone()]).await.unwrap();
        std::fs::write(dir.path().join("standin.pem"), standin.server_cert.to_pem().unwrap()).unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("bench.redb")).unwrap());
        let ids: Vec<String> = (0..n).map(|i| format!("00008101-{i:016X}")).collect();
        let mut rxs = Vec::with_capacity(n);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for chunk in ids.chunks(n.div_ceil(32)) {
            let (s, chunk, topic) = (store.clone(), chunk.to_vec(), topic.clone());
            tasks.push(tokio::spawn(async move {
                for id in chunk {
                    let e = Enrollment {
                        udid: Some(id.clone()),
                        active: true,
                        push: Some(PushInfo::new(format!("{:064x}", u128::from_str_radix(&id[9..], 16).unwrap()), format!("magic-{id}"), topic.clone(), 0)),
                        ..Enrollment::blank(&id, &id, EnrollmentKind::Device, &topic, 0)
                    };
                    s.authenticate(e, true).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for id in &ids {
            let token = format!("{:064x}", u128::from_str_radix(&id[9..], 16).unwrap());
            rxs.push(standin.register(&token, &topic));
        }
        eprintln!("seeded {n} enrollments in {:.1} s", t.elapsed().as_secs_f64());
        let client = ApnsClient::new(ApnsConfig {
            base_url: standin.url(),
            extra_ca: Some(dir.path().join("standin.pem")),
            expiration_secs: 86_400,
            timeout: Duration::from_secs(30),
        })
        .unwrap();
        let pusher = Pusher::new(
            client,
            store.clone(),
            Arc::new(mdmd::pki::secrets::SecretBox::ephemeral()),
            Topic::new(topic.clone()),
            mdmd::push::cert::PushCertFiles::in_dir(dir.path()),
            PushConfig {
                coalesce: Duration::from_millis(10),
                max_attempts: 5,
                backoff_base: Duration::from_millis(200),
                max_in_flight: 1000,
                repush_after: 0,
                repush_every: Duration::from_secs(3600),
                instance: "bench".into(),
                cert_refresh: Duration::from_secs(3600),
            },
            None,
        );
        let pc = mdmd::push::cert::PushCert::from_pem(&push_cert(&ca, &topic), None).unwrap();
        pusher.set_certificate(pc, true).await.unwrap();
        pusher.start().await.unwrap();
        let cpu0 = cpu();
        let t = Instant::now();
        pusher.wake(ids.clone());
        loop {
            let c = pusher.counters();
            if c.accepted + c.failed + c.skipped >= n as u64 {
                break;
            }
            if t.elapsed() > Duration::from_secs(300) {
                eprintln!("gave up: {c:?}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let c = pusher.counters();
        eprintln!(
            "push/{n} devices: {secs:.2} s, {:.0} pushes/s, accepted {}, failed {}, retried {}, stand-in saw {} (rejected {}), CPU (pusher + stand-in) {:.1} µs per push",
            c.accepted as f64 / secs,
            c.accepted,
            c.failed,
            c.retried,
            standin.stats.requests.load(Relaxed),
            standin.stats.rejected.load(Relaxed),
            (cpu() - cpu0) * 1e6 / n as f64
        );
        drop(rxs);
    });
}

fn cpu() -> f64 {
    let (u, s) = mdmd::api::cpu_time();
    u + s
}
