//! The periodic inventory and compliance sweep at fleet size (redb): the
//! full pass every device used to get every 15 minutes, beside the sweep
//! that reads only the schedule's due entries, same store, same run.

mod support;

use criterion::{criterion_group, criterion_main, Criterion};

const DEVICES: usize = 20_000;
const INTERVAL: i64 = 4 * 3600;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.toml");
    // Time-based rules, so compliance has re-evaluations to schedule.
    std::fs::write(&policy, "passcode_required = true\nmax_hours_since_checkin = 72\n").expect("policy");
    let (app, _router) = support::app(&rt, dir.path(), &["--compliance-policy", policy.to_str().expect("utf-8")]);
    let mdm = app.mdm.clone();
    let secs = rt.block_on(mdmd::sim::nac::seed(&*app.mdm.store, DEVICES)).expect("seed");
    eprintln!("sweep: {DEVICES} devices seeded in {secs:.1} s");
    // The first sweep on a store without the schedule is the full pass that fills it; it asks
    // every device for its inventory (none reported DeviceInformation), so afterwards each has
    // commands queued and no sweep asks again: what follows is the cost of looking.
    let t = std::time::Instant::now();
    let (asked, evaluated) = rt.block_on(mdm.inventory_sweep(INTERVAL)).expect("first sweep");
    eprintln!(
        "sweep: first run (full pass, schedule filled): {asked} asked, {evaluated} evaluated, {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut before = Vec::new();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (asked, evaluated) = rt.block_on(mdm.full_sweep(INTERVAL)).expect("full pass");
        assert_eq!((asked, evaluated), (0, DEVICES));
        before.push(format!("{:.3}", t.elapsed().as_secs_f64()));
    }
    eprintln!("sweep: every device read (as before), s: {}", before.join(", "));
    c.bench_function(&format!("sweep: due entries only, {DEVICES} devices, none due"), |b| {
        b.iter(|| {
            let (asked, evaluated) = rt.block_on(mdm.inventory_sweep(INTERVAL)).expect("sweep");
            assert_eq!((asked, evaluated), (0, 0));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
