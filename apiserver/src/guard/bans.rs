//! The IP filter: addresses that fail authentication too often within a window are banned
//! for a while. Both tables are capped, and entries expire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// When to ban, for how long, and how many addresses to track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BanPolicy {
    /// Failures within `window` that ban an address; 0 turns the filter off.
    pub after: u32,
    pub window: Duration,
    pub time: Duration,
    /// The most addresses held with recent failures, and the most held banned.
    pub capacity: usize,
}

struct Ban {
    until: Instant,
    /// When it was banned and until when, in Unix milliseconds, for listing.
    since_ms: i64,
    until_ms: i64,
}

/// A banned address, as listed to administrators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BanEntry {
    pub address: IpAddr,
    /// RFC 3339.
    pub since: String,
    pub until: String,
    /// Seconds left.
    pub remaining: u64,
}

/// Failures per address and the ban list.
pub(crate) struct Bans {
    policy: BanPolicy,
    /// The instants of an address's last failures, at most `after` of them.
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    banned: RwLock<HashMap<IpAddr, Ban>>,
    /// How many bans are held: requests skip the ban list while there are none.
    held: AtomicUsize,
    /// Whether a full table was reported since the last sweep: once per sweep, not per request.
    full_told: AtomicBool,
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Bans {
    pub fn new(policy: BanPolicy) -> Self {
        Bans {
            policy,
            failures: Mutex::default(),
            banned: RwLock::default(),
            held: AtomicUsize::new(0),
            full_told: AtomicBool::new(false),
        }
    }

    /// How long `address` stays banned, if it is.
    pub fn check(&self, address: IpAddr) -> Option<Duration> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let banned = self.banned.read().unwrap_or_else(PoisonError::into_inner);
        let left = banned
            .get(&address)?
            .until
            .checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Records a failed authentication from `address`, and bans it when it is one too many.
    pub fn fail(&self, address: IpAddr) {
        let policy = self.policy;
        if policy.after == 0 {
            return;
        }
        let now = Instant::now();
        let recent = |at: &Instant| now.duration_since(*at) < policy.window;
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if !failures.contains_key(&address) && failures.len() >= policy.capacity {
            failures.retain(|_, times| times.last().is_some_and(recent));
            if failures.len() >= policy.capacity {
                self.tell_full("failed authentications");
                return;
            }
        }
        let times = failures.entry(address).or_default();
        times.retain(recent);
        times.push(now);
        if times.len() < policy.after as usize {
            return;
        }
        failures.remove(&address);
        drop(failures);
        self.ban(address, now);
    }

    fn ban(&self, address: IpAddr, now: Instant) {
        let policy = self.policy;
        let mut banned = self.banned.write().unwrap_or_else(PoisonError::into_inner);
        if !banned.contains_key(&address) && banned.len() >= policy.capacity {
            banned.retain(|_, ban| ban.until > now);
            if banned.len() >= policy.capacity {
                self.tell_full("bans");
                return;
            }
        }
        let wall = SystemTime::now();
        banned.insert(
            address,
            Ban {
                until: now + policy.time,
                since_ms: unix_ms(wall),
                until_ms: unix_ms(wall + policy.time),
            },
        );
        self.held.store(banned.len(), Ordering::Relaxed);
        metrics::gauge!("dora_api_banned_addresses").set(banned.len() as f64);
        drop(banned);
        metrics::counter!("dora_api_bans_total").increment(1);
        tracing::warn!(
            %address,
            failures = policy.after,
            window = ?policy.window,
            ban = ?policy.time,
            "address banned after failed authentications"
        );
    }

    fn tell_full(&self, table: &str) {
        if !self.full_told.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                capacity = self.policy.capacity,
                "the IP filter's table of {table} is full; new addresses are not tracked until entries expire"
            );
        }
    }

    /// The bans in force, soonest to end first.
    pub fn list(&self) -> Vec<BanEntry> {
        let now = Instant::now();
        let banned = self.banned.read().unwrap_or_else(PoisonError::into_inner);
        let mut entries: Vec<BanEntry> = banned
            .iter()
            .filter(|(_, ban)| ban.until > now)
            .map(|(address, ban)| BanEntry {
                address: *address,
                since: crate::render::timestamp(ban.since_ms),
                until: crate::render::timestamp(ban.until_ms),
                remaining: ban.until.duration_since(now).as_secs_f64().ceil() as u64,
            })
            .collect();
        entries.sort_by(|a, b| (&a.until, a.address).cmp(&(&b.until, b.address)));
        entries
    }

    /// Lifts the ban of `address`; whether it was banned. Its failures are forgotten too.
    pub fn lift(&self, address: IpAddr) -> bool {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&address);
        let mut banned = self.banned.write().unwrap_or_else(PoisonError::into_inner);
        let was = banned
            .remove(&address)
            .is_some_and(|ban| ban.until > Instant::now());
        self.held.store(banned.len(), Ordering::Relaxed);
        metrics::gauge!("dora_api_banned_addresses").set(banned.len() as f64);
        was
    }

    /// Drops expired bans (logging each) and failures older than the window.
    pub fn sweep(&self) {
        let now = Instant::now();
        let window = self.policy.window;
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, times| {
                times
                    .last()
                    .is_some_and(|at| now.duration_since(*at) < window)
            });
        let mut banned = self.banned.write().unwrap_or_else(PoisonError::into_inner);
        let before = banned.len();
        banned.retain(|address, ban| {
            let keep = ban.until > now;
            if !keep {
                tracing::info!(%address, "ban expired");
            }
            keep
        });
        if banned.len() != before {
            self.held.store(banned.len(), Ordering::Relaxed);
            metrics::gauge!("dora_api_banned_addresses").set(banned.len() as f64);
        }
        drop(banned);
        self.full_told.store(false, Ordering::Relaxed);
    }

    /// How many addresses the filter holds (failures, bans).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (
            self.failures.lock().unwrap().len(),
            self.banned.read().unwrap().len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(after: u32, window_ms: u64, time_ms: u64, capacity: usize) -> BanPolicy {
        BanPolicy {
            after,
            window: Duration::from_millis(window_ms),
            time: Duration::from_millis(time_ms),
            capacity,
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_nth_failure_within_the_window_bans_until_the_ban_ends() {
        let bans = Bans::new(policy(3, 60_000, 200, 100));
        bans.fail(ip(1));
        bans.fail(ip(1));
        assert_eq!(bans.check(ip(1)), None);
        bans.fail(ip(1));
        assert!(bans.check(ip(1)).is_some());
        assert_eq!(bans.check(ip(2)), None);
        assert_eq!(bans.list().len(), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(bans.check(ip(1)), None);
        bans.sweep();
        assert_eq!(bans.sizes(), (0, 0));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_ban() {
        let bans = Bans::new(policy(2, 50, 60_000, 100));
        bans.fail(ip(1));
        std::thread::sleep(Duration::from_millis(80));
        bans.fail(ip(1));
        assert_eq!(bans.check(ip(1)), None);
        bans.fail(ip(1));
        assert!(bans.check(ip(1)).is_some());
    }

    #[test]
    fn a_lifted_ban_ends_and_its_failures_are_forgotten() {
        let bans = Bans::new(policy(2, 60_000, 60_000, 100));
        bans.fail(ip(1));
        bans.fail(ip(1));
        assert!(bans.lift(ip(1)));
        assert!(!bans.lift(ip(1)));
        assert_eq!(bans.check(ip(1)), None);
        bans.fail(ip(1));
        assert_eq!(bans.check(ip(1)), None);
    }

    #[test]
    fn the_tables_stay_within_their_capacity() {
        let bans = Bans::new(policy(2, 60_000, 60_000, 10));
        for n in 0..1000 {
            bans.fail(ip(n));
        }
        assert_eq!(bans.sizes(), (10, 0));
        for n in 0..10 {
            bans.fail(ip(n));
        }
        assert_eq!(bans.sizes(), (0, 10));
        for n in 100..1000 {
            bans.fail(ip(n));
            bans.fail(ip(n));
        }
        let (failures, banned) = bans.sizes();
        assert!(failures <= 10 && banned == 10, "{failures} {banned}");
    }

    #[test]
    fn a_zero_threshold_turns_the_filter_off() {
        let bans = Bans::new(policy(0, 60_000, 60_000, 10));
        for _ in 0..10 {
            bans.fail(ip(1));
        }
        assert_eq!(bans.check(ip(1)), None);
        assert_eq!(bans.sizes(), (0, 0));
    }
}
