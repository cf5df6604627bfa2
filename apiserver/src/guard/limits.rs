//! Rate limits: per client address before authentication, then per user, or per node for
//! requests made with a node credential (agents' reports and heartbeats have their own,
//! larger budget, so a busy user cannot starve the cluster).

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::Refusal;
use crate::Identity;

/// A sustained rate with a burst allowance; a rate of 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests that may come at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(self.per_second)).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests/s, bursts of {}",
            self.per_second,
            self.burst.max(self.per_second)
        )
    }
}

/// One keyed limit: a name for refusals and metrics, and its limiter.
struct Limit<K: Hash + Eq + Clone> {
    name: &'static str,
    rate: Rate,
    limiter: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(name: &'static str, rate: Rate) -> Option<Self> {
        Some(Limit {
            name,
            rate,
            limiter: RateLimiter::keyed(rate.quota()?),
        })
    }

    fn check(&self, key: &K, whose: impl FnOnce() -> String) -> Result<(), Refusal> {
        let Err(not_until) = self.limiter.check_key(key) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(self.limiter.clock().now());
        metrics::counter!("dora_api_refused_total", "reason" => "rate_limited", "limit" => self.name)
            .increment(1);
        Err(Refusal::rate_limited(
            format!(
                "the {} rate limit of {} ({}) is used up; slow down and retry in {} s",
                self.name,
                whose(),
                self.rate,
                retry_after_secs(wait)
            ),
            wait,
        ))
    }

    /// Forgets keys whose budget is full again: only keys that were busy recently stay.
    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The limits of one API server.
pub(crate) struct Limits {
    address: Option<Limit<IpAddr>>,
    user: Option<Limit<String>>,
    node: Option<Limit<String>>,
}

impl Limits {
    pub fn new(address: Rate, user: Rate, node: Rate) -> Self {
        Limits {
            address: Limit::new("address", address),
            user: Limit::new("user", user),
            node: Limit::new("node", node),
        }
    }

    /// Counts a request from `address`, before its credentials are read.
    pub fn admit_address(&self, address: IpAddr) -> Result<(), Refusal> {
        match &self.address {
            Some(limit) => limit.check(&address, || format!("address {address}")),
            None => Ok(()),
        }
    }

    /// Counts a request of `identity`: against its node's budget for a node credential, else
    /// its user's.
    pub fn admit(&self, identity: &Identity) -> Result<(), Refusal> {
        match (&identity.node, &self.node, &self.user) {
            (Some(node), Some(limit), _) => limit.check(node, || format!("node {node}")),
            (Some(_), None, _) | (None, _, None) => Ok(()),
            (None, _, Some(limit)) => {
                limit.check(&identity.user, || format!("user {}", identity.user))
            }
        }
    }

    pub fn sweep(&self) {
        if let Some(limit) = &self.address {
            limit.sweep();
        }
        if let Some(limit) = &self.user {
            limit.sweep();
        }
        if let Some(limit) = &self.node {
            limit.sweep();
        }
    }

    /// How many keys the limiters hold (address, user, node).
    #[cfg(test)]
    fn sizes(&self) -> [usize; 3] {
        [
            self.address.as_ref().map_or(0, |l| l.limiter.len()),
            self.user.as_ref().map_or(0, |l| l.limiter.len()),
            self.node.as_ref().map_or(0, |l| l.limiter.len()),
        ]
    }
}

/// How long until a refused request may be retried, in whole seconds for `Retry-After`.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Identity {
        Identity {
            user: name.into(),
            zone: None,
            workspace: None,
            expires: None,
            system: false,
            node: None,
            joining: false,
            token: None,
        }
    }

    fn node(name: &str) -> Identity {
        Identity {
            user: format!("node:{name}"),
            zone: Some("z".into()),
            node: Some(name.into()),
            ..user("")
        }
    }

    #[test]
    fn each_user_and_node_has_its_own_budget() {
        let limits = Limits::new(
            Rate::UNLIMITED,
            Rate {
                per_second: 1,
                burst: 3,
            },
            Rate {
                per_second: 1,
                burst: 5,
            },
        );
        for _ in 0..3 {
            limits.admit(&user("ann")).unwrap();
        }
        let refusal = limits.admit(&user("ann")).unwrap_err();
        assert!(refusal.error.message.contains("user ann"), "{refusal:?}");
        assert!(refusal.error.message.contains("1 requests/s, bursts of 3"));
        assert!(refusal.retry_after > Duration::ZERO);
        limits.admit(&user("bob")).unwrap();
        // A node's credential draws on the node budget, whatever its users do.
        for _ in 0..5 {
            limits.admit(&node("n1")).unwrap();
        }
        assert!(limits.admit(&node("n1")).is_err());
        limits.admit(&node("n2")).unwrap();
    }

    #[test]
    fn addresses_have_a_budget_and_zero_means_no_limit() {
        let limits = Limits::new(
            Rate {
                per_second: 2,
                burst: 2,
            },
            Rate::UNLIMITED,
            Rate::UNLIMITED,
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        limits.admit_address(a).unwrap();
        limits.admit_address(a).unwrap();
        assert!(limits.admit_address(a).is_err());
        limits.admit_address("192.0.2.2".parse().unwrap()).unwrap();
        for _ in 0..100 {
            limits.admit(&user("ann")).unwrap();
        }
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let limits = Limits::new(
            Rate {
                per_second: 1000,
                burst: 1000,
            },
            Rate::UNLIMITED,
            Rate::UNLIMITED,
        );
        for n in 0..500u32 {
            limits
                .admit_address(IpAddr::from(std::net::Ipv4Addr::from(n)))
                .unwrap();
        }
        assert_eq!(limits.sizes(), [500, 0, 0]);
        std::thread::sleep(Duration::from_millis(20));
        limits.sweep();
        assert_eq!(limits.sizes(), [0, 0, 0]);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }
}
