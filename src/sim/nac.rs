//! Fleet-sized figures for network access control: seed a store with N
//! devices as inventory would leave them (no enrollment traffic), and query
//! the Cisco ISE API the way ISE does, timing each answer.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::EnrollmentKind;
use crate::store::{ComplianceRecord, ComplianceState, CopyStore, DeviceInfo, Enrollment, InventoryItem, Row};

/// The Wi-Fi MAC of seeded device `i` (12 hex digits).
pub fn seeded_mac(i: usize) -> String {
    format!("f05c77{:06x}", i & 0xff_ffff)
}

fn seeded(i: usize, now: i64) -> Vec<Row> {
    let udid = format!("00008101-{i:016X}");
    let mac = seeded_mac(i);
    let e = Enrollment {
        udid: Some(udid.clone()),
        active: true,
        info: DeviceInfo {
            serial_number: Some(format!("F{i:010}")),
            product_name: Some("iPhone16,1".into()),
            os_version: Some("18.1".into()),
            build_version: Some("22B83".into()),
            imei: Some(format!("35{i:013}")),
            device_name: Some(format!("iPhone {i}")),
            model_name: Some("iPhone".into()),
            wifi_mac: Some(format!(
                "{}:{}:{}:{}:{}:{}",
                &mac[0..2],
                &mac[2..4],
                &mac[4..6],
                &mac[6..8],
                &mac[8..10],
                &mac[10..12]
            )),
            phone_number: Some(format!("+1555{:07}", i % 10_000_000)),
            ..DeviceInfo::default()
        },
        token_updated_at: Some(now),
        identity_not_after: Some(now + 365 * 86_400),
        ..Enrollment::blank(&udid, &udid, EnrollmentKind::Device, "com.apple.mgmt.External.seed", now)
    };
    let compliant = i % 10 != 0;
    vec![
        Row::Enrollment(e),
        Row::Inventory {
            enrollment: udid.clone(),
            item: InventoryItem {
                kind: "SecurityInfo".into(),
                reported_at: now,
                data: serde_json::json!({"SecurityInfo": {
                    "HardwareEncryptionCaps": if compliant { 3 } else { 1 },
                    "PasscodePresent": compliant,
                    "PasscodeCompliant": compliant,
                    "PasscodeCompliantWithProfiles": compliant,
                }}),
            },
        },
        Row::Compliance {
            enrollment: udid,
            record: ComplianceRecord {
                state: if compliant {
                    ComplianceState::Compliant
                } else {
                    ComplianceState::NonCompliant
                },
                reasons: if compliant { vec![] } else { vec!["no passcode set".into()] },
                evaluated_at: now,
                policy: "seed".into(),
                recheck_at: None,
            },
        },
    ]
}

/// Devices written per transaction by [`seed`]: each is four statements on
/// PostgreSQL, so a batch stays a few thousand round trips, well inside the
/// store's per-commit bound even on a loaded machine.
const SEED_BATCH: usize = 1000;

/// Write `n` devices (enrollment with facts, SecurityInfo, compliance) in
/// batches of [`SEED_BATCH`]; returns the seconds it took.
pub async fn seed(store: &dyn CopyStore, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let now = crate::clock::now();
    let mut batch = Vec::with_capacity(3 * SEED_BATCH);
    for i in 0..n {
        batch.extend(seeded(i, now));
        if batch.len() >= 3 * SEED_BATCH {
            store.import(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        store.import(batch).await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

#[derive(Debug, serde::Serialize)]
pub struct IseBench {
    pub requests: usize,
    pub found: usize,
    pub seconds: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// `requests` device queries by MAC (random seeded devices), `concurrency` at
/// a time, over one keep-alive client as ISE polls; latency per answer.
pub async fn ise_bench(
    client: reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    devices: usize,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<IseBench> {
    use rand::Rng as _;
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for _ in 0..requests {
        let i = rand::thread_rng().gen_range(0..devices.max(1));
        let url = format!(
            "{}/ciscoise/mdm/api/v3/devices/?paging=0&querycriteria=macaddress&value={}&filter=all",
            base.trim_end_matches('/'),
            seeded_mac(i).to_uppercase()
        );
        let (client, sem, user, password) = (client.clone(), sem.clone(), user.to_owned(), password.to_owned());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            let t = Instant::now();
            let r = client.get(&url).basic_auth(&user, Some(&password)).send().await?;
            let status = r.status();
            let body = r.text().await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
            anyhow::Ok((ms, body.contains("<udid>")))
        }));
    }
    let mut lat = Vec::with_capacity(requests);
    let mut found = 0;
    for t in tasks {
        let (ms, f) = t.await??;
        lat.push(ms);
        found += f as usize;
    }
    let seconds = t0.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(IseBench {
        requests,
        found,
        seconds,
        median_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: lat.last().copied().unwrap_or(0.0),
    })
}
