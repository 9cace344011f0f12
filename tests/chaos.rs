//! Chaos, bounded for CI (`make chaos` runs it at 1,000 devices): `mdmd sim
//! chaos` starts the instances itself, kills and restarts them while a fleet
//! polls and answers a stream of commands, and checks from outside that no
//! result answered 200 was lost or stored twice, nothing was delivered again
//! after its result got 200, no command was lost and every device converged
//! on its blueprint. redb: one instance; `MDMD_TEST_STORE=postgres`: two
//! instances on one database, and PostgreSQL itself restarted once when
//! `MDMD_TEST_PG_RESTART` names the command that does it (.ci/run sets it
//! when it may restart the machine's PostgreSQL).

mod common;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_under_a_polling_fleet_lose_nothing_and_the_fleet_converges() {
    let work = tempfile::tempdir().unwrap();
    let db = if common::on_postgres() {
        Some(common::pg::TestDb::create().await.expect("MDMD_TEST_STORE=postgres needs a PostgreSQL server"))
    } else {
        None
    };
    let dir = work.path().to_string_lossy().into_owned();
    // Commands to the whole fleet are fan-outs here (at 100 devices they would not be by default).
    let mut args = vec![
        "sim",
        "chaos",
        "-n",
        "100",
        "--kills",
        "3",
        "--interval",
        "5",
        "--settle",
        "120",
        "--work",
        &dir,
        "--fanout-min-targets",
        "20",
    ];
    let restart = std::env::var("MDMD_TEST_PG_RESTART").ok();
    if let Some(db) = &db {
        args.extend(["--database-url", &db.url, "--instances", "2"]);
        if let Some(cmd) = &restart {
            args.extend(["--pg-restart", cmd]);
        }
    }
    let (ok, out, err) = common::mdmd(&args);
    assert!(ok, "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["devices"], 100);
    assert_eq!(r["kills"], 3);
    assert_eq!(r["instances"], if db.is_some() { 2 } else { 1 });
    if db.is_some() && restart.is_some() {
        assert_eq!(r["pg_restarts"], 1);
    }
    // The run did what it claims: commands flowed, results were answered, some sessions were cut.
    assert!(r["commands"].as_u64().unwrap() >= 5, "{r:#}");
    assert!(r["results_acked"].as_u64().unwrap() >= 100 * 5, "{r:#}");
    for empty in ["redelivered_after_200", "lost_results", "duplicates", "undelivered", "unconverged"] {
        assert_eq!(r[empty], serde_json::json!([]), "{empty}: {r:#}");
    }
}
