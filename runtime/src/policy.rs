//! Error policies: what a controller does when a reconcile fails, the caller's choice as in
//! kube-runtime. The default, [`Backoff::default`], retries each object 100 ms after its first
//! failure, doubling up to 10 s, with jitter, until it succeeds.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use dora_store::ObjectKey;

/// Decides, after the `failures`-th failed reconcile of `key` in a row (1 for the first),
/// when it runs again: after the returned delay, or, for `None`, only once it or a related
/// object changes. A success resets the count.
pub trait ErrorPolicy: Send + Sync + 'static {
    fn retry(&self, key: &ObjectKey, error: &str, failures: u32) -> Option<Duration>;
}

impl<F> ErrorPolicy for F
where
    F: Fn(&ObjectKey, &str, u32) -> Option<Duration> + Send + Sync + 'static,
{
    fn retry(&self, key: &ObjectKey, error: &str, failures: u32) -> Option<Duration> {
        self(key, error, failures)
    }
}

/// Exponential backoff with jitter per object: `min` after the first failure, doubling up to
/// `max`; forever, or until [`Backoff::give_up_after`] failures in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// `min` after the first failure, doubling up to `max`, retrying forever.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempts: None,
        }
    }

    /// Stops retrying after `failures` failures in a row: the object waits for a change.
    pub fn give_up_after(mut self, failures: u32) -> Self {
        self.attempts = Some(failures);
        self
    }
}

impl ErrorPolicy for Backoff {
    fn retry(&self, _key: &ObjectKey, _error: &str, failures: u32) -> Option<Duration> {
        if self.attempts.is_some_and(|attempts| failures >= attempts) {
            return None;
        }
        let doublings = failures.saturating_sub(1).min(32) as usize;
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(doublings)
    }
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;

    use super::*;

    #[test]
    fn the_default_backs_off_to_its_cap_and_a_limit_gives_up() {
        let key = ObjectKey::new(Kind::Workload, "z", "w", "a");
        let backoff = Backoff::default();
        let first = backoff.retry(&key, "e", 1).unwrap();
        let third = backoff.retry(&key, "e", 3).unwrap();
        assert!(third > first, "{third:?} should exceed {first:?}");
        // Jitter adds at most the delay again.
        assert!(backoff.retry(&key, "e", 1000).unwrap() <= Duration::from_secs(20));
        let limited = backoff.give_up_after(2);
        assert!(limited.retry(&key, "e", 1).is_some());
        assert_eq!(limited.retry(&key, "e", 2), None);
    }
}
