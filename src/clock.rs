//! The one clock: Unix seconds for every room (certificates' validity,
//! leases, the queue, tokens, webhooks). It sits below everything and
//! imports nothing of ours.
//!
//! Tests move it with [`advance`] (a process-wide offset) instead of
//! waiting; production never sets it. Reading it is one relaxed atomic load
//! beside the system clock: it is on the hot paths (every check-in).

use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds added to the system clock (tests only; zero in production).
static OFFSET: AtomicI64 = AtomicI64::new(0);

/// Now, in Unix seconds (0 if the system clock is before 1970).
pub fn now() -> i64 {
    let sys = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    sys + OFFSET.load(Ordering::Relaxed)
}

/// Unix seconds as RFC 3339 (`2026-12-03T17:54:09Z`); None outside the representable range.
pub fn rfc3339(t: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
}

/// A time for JSON answers: RFC 3339 (UTC), or null when out of range.
pub fn json_time(t: i64) -> serde_json::Value {
    rfc3339(t).map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// Move the clock by `secs` (negative: back) for the whole process. For
/// tests that need time to pass; returns the new offset.
pub fn advance(secs: i64) -> i64 {
    OFFSET.fetch_add(secs, Ordering::Relaxed) + secs
}

/// Put the clock back on the system time.
pub fn reset() {
    OFFSET.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    #[test]
    fn follows_the_system_clock() {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        assert!((super::now() - sys).abs() <= 1);
    }
}
