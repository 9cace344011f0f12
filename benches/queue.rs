//! Queue operations on each store: enqueue fan-out, report + next, reads.
//! redb always; PostgreSQL too when `MDMD_BENCH_DATABASE_URL` names a server
//! (or one answers on 127.0.0.1:5432), in a database made for the run.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use mdmd::protocol::EnrollmentKind;
use mdmd::store::redb::RedbStore;
use mdmd::store::{CommandRecord, DeliveryStatus, Enrollment, ReportRecord, Store};

fn enrollment(id: &str) -> Enrollment {
    Enrollment {
        udid: Some(id.into()),
        active: true,
        ..Enrollment::blank(id, id, EnrollmentKind::Device, "com.apple.mgmt.External.bench", 0)
    }
}

fn command() -> CommandRecord {
    let mut d = plist::Dictionary::new();
    d.insert("RequestType".into(), "SecurityInfo".into());
    let c = mdmd::protocol::Command::new(d).expect("command");
    CommandRecord::new(&c, 0, None)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("bench.redb")).expect("open"));
    bench_store(c, &rt, "redb", store);
    if let Some(base) = pg_base() {
        // Before and after in the same run: first with a delivery row per target (no command
        // fans out: the layout before fan-outs), then with the default policy.
        let before = mdmd::store::FanoutPolicy {
            min_targets: usize::MAX,
            ..Default::default()
        };
        for (label, policy) in [("postgres, a row per target", before), ("postgres", Default::default())] {
            let name = format!("mdmd_bench_{}", std::process::id());
            rt.block_on(admin(&base, &format!("CREATE DATABASE {name}")));
            let url = format!("{}/{name}", base.rsplit_once('/').map_or(base.as_str(), |(h, _)| h));
            let pg = rt
                .block_on(mdmd::store::postgres::PgStore::connect(mdmd::store::postgres::PgConfig::new(&url)))
                .expect("PostgreSQL")
                .with_fanout(policy);
            bench_store(c, &rt, label, Arc::new(pg));
            rt.block_on(admin(&base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
        }
    } else {
        eprintln!("PostgreSQL: none (set MDMD_BENCH_DATABASE_URL): skipped");
    }
}

fn pg_base() -> Option<String> {
    if let Ok(u) = std::env::var("MDMD_BENCH_DATABASE_URL") {
        return Some(u);
    }
    std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().ok()?, std::time::Duration::from_millis(300))
        .ok()
        .map(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn admin(base: &str, sql: &str) {
    let (c, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await.expect("connect");
    let h = tokio::spawn(conn);
    c.batch_execute(sql).await.expect(sql);
    drop(c);
    let _ = h.await;
}

fn bench_store(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: &str, store: Arc<dyn Store>) {
    let n = 100_000;
    let ids: Vec<String> = (0..n).map(|i| format!("00008101-{i:016X}")).collect();
    rt.block_on(async {
        // Seed 100,000 enrollments concurrently: group commit batches them.
        let mut tasks = Vec::new();
        for chunk in ids.chunks(n / 64) {
            let s = store.clone();
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                for id in chunk {
                    s.authenticate(enrollment(&id), false).await.expect("seed");
                }
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
    });
    // The figure the issue asks for: one command to all 100,000, on a store that holds only the
    // enrollments and then with more and more already pending on every one of them (nobody
    // answers). redb keeps each as an open fan-out; past `FanoutPolicy::max_open` (32) a new
    // one first settles the oldest, whose 100,000 pending entries are then written one by one.
    let rounds = match backend {
        "redb" => 35,
        "postgres" => 35,
        _ => 12,
    };
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let out = rt.block_on(store.enqueue(command(), ids.clone())).expect("enqueue");
        assert_eq!(out.queued, n as u64);
        times.push(t.elapsed().as_secs_f64());
    }
    let show = |r: std::ops::Range<usize>| {
        r.filter(|i| *i < times.len())
            .map(|i| format!("#{} {:.3}", i + 1, times[i]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "{backend}: enqueue one command to {n} enrollments (one transaction, durable), s: {}",
        show(0..12)
    );
    if rounds > 30 {
        eprintln!("{backend}: … #30-#35 (past 32 open fan-outs): {}", show(29..35));
    } else if rounds > 12 {
        eprintln!("{backend}: … #13-#{rounds}: {}", show(12..rounds));
    }
    // A device that has answered everything still checks each open fan-out on every poll.
    rt.block_on(async {
        while let Some(q) = store.next_command(&ids[2], false).await.expect("next") {
            let rec = ReportRecord {
                events: vec![],
                command_uuid: q.uuid,
                status: DeliveryStatus::Acknowledged,
                error_chain: vec![],
                raw: b"<plist/>".to_vec(),
                now: 0,
            };
            store.report(&ids[2], rec).await.expect("report");
        }
    });
    c.bench_function(
        &format!("{backend}: next_command, queue drained, every open fan-out answered (read)"),
        |b| b.iter(|| rt.block_on(store.next_command(&ids[2], false)).expect("next")),
    );
    let one = vec![ids[0].clone()];
    c.bench_function(&format!("{backend}: enqueue + report + next (one enrollment, durable each)"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let cmd = command();
                let uuid = cmd.uuid.clone();
                store.enqueue(cmd, one.clone()).await.expect("enqueue");
                let rec = ReportRecord {
                    events: vec![],
                    command_uuid: uuid,
                    status: DeliveryStatus::Acknowledged,
                    error_chain: vec![],
                    raw: b"<plist/>".to_vec(),
                    now: 0,
                };
                store.report(&one[0], rec).await.expect("report")
            })
        })
    });
    c.bench_function(&format!("{backend}: next_command (read)"), |b| {
        b.iter(|| rt.block_on(store.next_command(&ids[1], false)).expect("next"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
