//! Bounded cost for credential checks and for secrets created without credentials.
//!
//! `CredentialLimiter` counts *failed* credential checks (admin API key or account secret, console
//! sign-in, enrollment password) in fixed windows, per source address (IPv6 by /64) and per
//! account name. A source over its limit gets 429 with `Retry-After`. The per-account limit only
//! refuses sources that have failed recently themselves: a guesser spread over many addresses is
//! slowed to one failure per window per address, while the owner (a source with no failures) is
//! never locked out by someone else's guesses. Device routes never pass through here.
//!
//! `SourceBudget` bounds how many single-use secrets one source can have the server create
//! without credentials of an admin (enrollment profiles, phase-1 profile-service answers).
//!
//! Both keep their state in memory, bounded: at `max_entries` the expired entries go first, then
//! the oldest eighth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits for failed credential checks (`--auth-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    /// Failed checks allowed per source address per window.
    pub per_source: u32,
    /// Failed checks per account name per window after which sources that failed too are refused.
    pub per_account: u32,
    pub window: Duration,
    /// Entries kept per table (sources, accounts).
    pub max_entries: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            per_source: 10,
            per_account: 20,
            window: Duration::from_secs(300),
            max_entries: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    start: Instant,
}

/// Counters in fixed windows, bounded in number.
struct Windows {
    map: HashMap<String, Entry>,
    window: Duration,
    max_entries: usize,
}

impl Windows {
    fn new(window: Duration, max_entries: usize) -> Windows {
        Windows {
            map: HashMap::new(),
            window,
            max_entries: max_entries.max(16),
        }
    }

    /// The live count of `key` and the seconds until its window ends.
    fn get(&self, key: &str) -> (u32, u64) {
        match self.map.get(key) {
            Some(e) if e.start.elapsed() < self.window => {
                let left = self.window.saturating_sub(e.start.elapsed());
                (e.count, left.as_secs() + 1)
            }
            _ => (0, 0),
        }
    }

    fn add(&mut self, key: &str) -> u32 {
        if !self.map.contains_key(key) && self.map.len() >= self.max_entries {
            self.evict();
        }
        let window = self.window;
        let e = self.map.entry(key.to_owned()).or_insert(Entry {
            count: 0,
            start: Instant::now(),
        });
        if e.start.elapsed() >= window {
            *e = Entry {
                count: 0,
                start: Instant::now(),
            };
        }
        e.count = e.count.saturating_add(1);
        e.count
    }

    fn sub(&mut self, key: &str) {
        if let Some(e) = self.map.get_mut(key) {
            e.count = e.count.saturating_sub(1);
        }
    }

    fn evict(&mut self) {
        let window = self.window;
        self.map.retain(|_, e| e.start.elapsed() < window);
        if self.map.len() < self.max_entries {
            return;
        }
        // Still full of live entries: drop the oldest eighth (amortised: once per many inserts).
        let mut starts: Vec<Instant> = self.map.values().map(|e| e.start).collect();
        let k = (starts.len() / 8).max(1);
        let (_, cut, _) = starts.select_nth_unstable(k - 1);
        let cut = *cut;
        self.map.retain(|_, e| e.start > cut);
    }
}

/// The TCP peer of a request (a request extension set by the listener, readable by every room).
#[derive(Debug, Clone, Copy)]
pub struct TcpPeer(pub std::net::SocketAddr);

/// The client's address: the TCP peer, or the forwarded address behind a trusted proxy
/// (`NetPolicy::client_ip`: `forwarded(name)` gives the values of the request's header
/// `name`); unspecified if the request came from no listener (in process).
pub fn client_ip<'a, I>(
    policy: &crate::service::enroll::netpolicy::NetPolicy,
    peer: Option<&TcpPeer>,
    forwarded: impl FnOnce(&'static str) -> I,
) -> IpAddr
where
    I: IntoIterator<Item = &'a str>,
{
    match peer {
        Some(p) => policy.client_ip(p.0.ip(), forwarded),
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    }
}

/// The key of a source: the address, or its /64 for IPv6 (one host usually owns a whole /64).
pub fn source_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// An account name as a key: no longer than any valid name needs.
fn bounded(name: &str) -> &str {
    match name.char_indices().nth(80) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// A refusal: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

pub struct CredentialLimiter {
    cfg: LimitConfig,
    sources: Mutex<Windows>,
    accounts: Mutex<Windows>,
}

impl CredentialLimiter {
    pub fn new(cfg: LimitConfig) -> CredentialLimiter {
        CredentialLimiter {
            cfg,
            sources: Mutex::new(Windows::new(cfg.window, cfg.max_entries)),
            accounts: Mutex::new(Windows::new(cfg.window, cfg.max_entries)),
        }
    }

    /// Begin a credential check for this account from this source, before any work: refused
    /// (429) over the limits; otherwise the attempt counts as a failure, at once (so concurrent
    /// attempts cannot slip past the limit), until `Attempt::succeeded` takes it back.
    pub fn begin(&self, source: IpAddr, account: &str) -> Result<Attempt<'_>, RetryAfter> {
        let account = bounded(account).to_owned();
        if self.cfg.per_source == 0 {
            return Ok(Attempt {
                limiter: self,
                source: String::new(),
                account,
                counted: false,
            });
        }
        let source = source_key(source);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let (failed, left) = sources.get(&source);
        if failed >= self.cfg.per_source {
            return Err(RetryAfter(left.max(1)));
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if failed > 0 {
            let (acct, acct_left) = accounts.get(&account);
            if acct >= self.cfg.per_account.max(1) {
                return Err(RetryAfter(acct_left.min(left).max(1)));
            }
        }
        sources.add(&source);
        accounts.add(&account);
        Ok(Attempt {
            limiter: self,
            source,
            account,
            counted: true,
        })
    }

    /// Entries held (sources, accounts): for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        (
            self.sources.lock().unwrap_or_else(|p| p.into_inner()).map.len(),
            self.accounts.lock().unwrap_or_else(|p| p.into_inner()).map.len(),
        )
    }
}

/// One credential check in progress: a failure unless `succeeded` is called.
pub struct Attempt<'a> {
    limiter: &'a CredentialLimiter,
    source: String,
    account: String,
    counted: bool,
}

impl Attempt<'_> {
    /// The credentials were right (or the check could not be made): it does not count.
    pub fn succeeded(mut self) {
        if std::mem::take(&mut self.counted) {
            self.limiter.sources.lock().unwrap_or_else(|p| p.into_inner()).sub(&self.source);
            self.limiter.accounts.lock().unwrap_or_else(|p| p.into_inner()).sub(&self.account);
        }
    }
}

/// How many secret-creating requests one source may make per window.
pub struct SourceBudget {
    per_source: u32,
    windows: Mutex<Windows>,
}

impl SourceBudget {
    pub fn new(per_source: u32, window: Duration, max_entries: usize) -> SourceBudget {
        SourceBudget {
            per_source,
            windows: Mutex::new(Windows::new(window, max_entries)),
        }
    }

    /// Take one from this source's budget (0: unlimited).
    pub fn take(&self, source: IpAddr) -> Result<(), RetryAfter> {
        if self.per_source == 0 {
            return Ok(());
        }
        let key = source_key(source);
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (n, left) = w.get(&key);
        if n >= self.per_source {
            return Err(RetryAfter(left.max(1)));
        }
        w.add(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_limited_and_the_owner_is_not() {
        let l = CredentialLimiter::new(LimitConfig {
            per_source: 3,
            per_account: 3,
            window: Duration::from_secs(60),
            max_entries: 100,
        });
        for _ in 0..3 {
            drop(l.begin(ip("10.0.0.1"), "admin").unwrap());
        }
        let r = l.begin(ip("10.0.0.1"), "admin").err().unwrap();
        assert!(r.0 >= 1 && r.0 <= 61, "{r:?}");
        // Another source that never failed: still allowed for the attacked account, again and again.
        for _ in 0..10 {
            l.begin(ip("10.0.0.2"), "admin").unwrap().succeeded();
        }
        // A second attacker source that failed once is refused for the attacked account…
        drop(l.begin(ip("10.0.0.3"), "other").unwrap());
        assert!(l.begin(ip("10.0.0.3"), "admin").is_err());
        // …but not for an account under no attack.
        l.begin(ip("10.0.0.3"), "other").unwrap().succeeded();
        // IPv6 by /64.
        for _ in 0..3 {
            drop(l.begin(ip("2001:db8::1"), "x").unwrap());
        }
        assert!(l.begin(ip("2001:db8::ffff"), "y").is_err());
        assert!(l.begin(ip("2001:db8:0:1::1"), "y").is_ok());
    }

    #[test]
    fn state_is_bounded() {
        let l = CredentialLimiter::new(LimitConfig {
            per_source: 3,
            per_account: 3,
            window: Duration::from_secs(60),
            max_entries: 64,
        });
        for i in 0..10_000u32 {
            drop(l.begin(IpAddr::from(i.to_be_bytes()), &format!("name{i}")).unwrap());
        }
        let (s, a) = l.len();
        assert!(s <= 64 && a <= 64, "{s} {a}");
    }

    #[test]
    fn budget() {
        let b = SourceBudget::new(2, Duration::from_secs(60), 100);
        assert!(b.take(ip("10.0.0.1")).is_ok());
        assert!(b.take(ip("10.0.0.1")).is_ok());
        assert!(b.take(ip("10.0.0.1")).is_err());
        assert!(b.take(ip("10.0.0.2")).is_ok());
    }
}
