//! The fleet summary behind the dashboard's chart and the device list's OS, last-check-in and
//! name filters: one compact row per enrollment (id, name, OS, times), built by paging through the
//! store. A small fleet's summary is rebuilt on the request that finds check-ins since it was
//! built; a large one's in the background when it is older than a minute (or check-ins happened
//! and it is older than a few seconds), while pages keep answering from the last one. At 100,000
//! enrollments it is ~10 MB and a rebuild takes well under a second.
//! (The admin API has no query for these, and a per-request scan of the fleet would be linear.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::App;
use crate::store::Enrollment;

const MAX_AGE: Duration = Duration::from_secs(60);
const MIN_AGE: Duration = Duration::from_secs(5);
const PAGE: usize = 2000;
/// Fleets below this size are summarised again on the request that finds them changed.
const SMALL: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub os: String,
    pub enrolled_at: i64,
    pub last_checkin_at: i64,
}

#[derive(Debug)]
pub struct Fleet {
    /// Ordered by id.
    pub rows: Vec<Row>,
    pub built: Instant,
    pub build_ms: u128,
    versions: Vec<(String, usize)>,
    /// The server's check-in count when it was built: a change means enrollments changed.
    checkins: u64,
}

impl Fleet {
    /// OS versions with how many devices run each, newest first.
    pub fn os_versions(&self) -> &[(String, usize)] {
        &self.versions
    }

    fn count_versions(rows: &[Row]) -> Vec<(String, usize)> {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for r in rows {
            *m.entry(r.os.clone()).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|b| std::cmp::Reverse(version_key(&b.0)));
        v
    }

    /// Enrollments and last check-ins per day for the last `days` days (oldest first).
    pub fn per_day(&self, now: i64, days: i64) -> Vec<(i64, u64, u64)> {
        let today = now.div_euclid(86_400);
        let mut out: Vec<(i64, u64, u64)> = (0..days).map(|i| ((today - days + 1 + i) * 86_400, 0, 0)).collect();
        let first = today - days + 1;
        for r in &self.rows {
            let e = r.enrolled_at.div_euclid(86_400) - first;
            if (0..days).contains(&e) {
                out[e as usize].1 += 1;
            }
            let c = r.last_checkin_at.div_euclid(86_400) - first;
            if (0..days).contains(&c) {
                out[c as usize].2 += 1;
            }
        }
        out
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn row(e: &Enrollment) -> Row {
    Row {
        id: e.id.clone(),
        name: e.info.device_name.clone().unwrap_or_default(),
        os: e.info.os_version.clone().unwrap_or_default(),
        enrolled_at: e.enrolled_at,
        last_checkin_at: e.last_checkin_at,
    }
}

#[derive(Default)]
pub struct FleetCache {
    current: Mutex<Option<Arc<Fleet>>>,
    refreshing: std::sync::atomic::AtomicBool,
}

impl FleetCache {
    /// The summary: built now if there is none, else the last one (a stale one starts a rebuild).
    pub async fn get(self: &Arc<Self>, app: &Arc<App>) -> Option<Arc<Fleet>> {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match cur {
            None => {
                let f = Arc::new(build(app).await?);
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
                Some(f)
            }
            Some(f) => {
                use std::sync::atomic::Ordering::SeqCst;
                let changed = app.stats.checkins.load(SeqCst) != f.checkins;
                if changed && f.rows.len() < SMALL {
                    let n = Arc::new(build(app).await?);
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(n.clone());
                    return Some(n);
                }
                let due = f.built.elapsed() > MAX_AGE || (changed && f.built.elapsed() > MIN_AGE);
                if due && !self.refreshing.swap(true, SeqCst) {
                    let me = self.clone();
                    let app = app.clone();
                    tokio::spawn(async move {
                        if let Some(n) = build(&app).await {
                            *me.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(n));
                        }
                        me.refreshing.store(false, SeqCst);
                    });
                }
                Some(f)
            }
        }
    }
}

async fn build(app: &App) -> Option<Fleet> {
    let t = Instant::now();
    let checkins = app.stats.checkins.load(std::sync::atomic::Ordering::SeqCst);
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = match app.mdm.store.enrollments(after.clone(), PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "console: cannot read the fleet summary");
                return None;
            }
        };
        rows.extend(page.iter().filter(|e| e.id == e.device).map(row));
        if page.len() < PAGE {
            break;
        }
        after = page.last().map(|e| e.id.clone());
    }
    Some(Fleet {
        versions: Fleet::count_versions(&rows),
        rows,
        built: Instant::now(),
        build_ms: t.elapsed().as_millis(),
        checkins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, os: &str, enrolled_at: i64, last: i64) -> Row {
        Row {
            id: id.into(),
            name: String::new(),
            os: os.into(),
            enrolled_at,
            last_checkin_at: last,
        }
    }

    #[test]
    fn days_and_versions() {
        let day = 86_400;
        let now = 50 * day + 10;
        let rows = vec![
            r("a", "18.1", 50 * day, 50 * day + 5),
            r("b", "17.6", 49 * day, 50 * day),
            r("c", "18.1", 10 * day, 20 * day),
        ];
        let f = Fleet {
            versions: Fleet::count_versions(&rows),
            rows,
            built: Instant::now(),
            build_ms: 0,
            checkins: 0,
        };
        let d = f.per_day(now, 3);
        assert_eq!(d.len(), 3);
        assert_eq!(d[2], (50 * day, 1, 2), "today: one enrolled, two checked in");
        assert_eq!(d[1], (49 * day, 1, 0));
        assert_eq!(f.os_versions(), &[("18.1".to_owned(), 2), ("17.6".to_owned(), 1)]);
    }
}
