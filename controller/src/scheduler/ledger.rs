//! What is booked where. Bookings come from the container rows the scheduler watches; a
//! binding this scheduler wrote but has not yet seen come back through the feed is kept as
//! "in flight" and wins over the older cached row, so a lagging cache never frees resources
//! twice. Per-node usage is an index over the bookings by container, never a free counter.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use dora_crds::spec::Affinity;
use dora_store::ObjectKey;
use rand::Rng;

use super::fit::{Booking, Demand, Misfit, NodeInfo, Usage, fit, fullness};

/// How long an unconfirmed binding is trusted over the cache.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(120);

struct InFlight {
    uid: String,
    computed_version: u64,
    booking: Option<Booking>,
    since: Instant,
}

/// Nodes and the bookings on them.
#[derive(Default)]
pub struct Ledger {
    nodes: BTreeMap<String, NodeInfo>,
    usage: HashMap<String, Usage>,
    /// The booking each cached container row holds, with its uid and computed version.
    cached: HashMap<ObjectKey, (String, u64, Option<Booking>)>,
    in_flight: HashMap<ObjectKey, InFlight>,
    /// What counts: the in-flight booking of a key, else its cached one.
    effective: HashMap<ObjectKey, Booking>,
}

impl Ledger {
    /// Adds or replaces a node.
    pub fn set_node(&mut self, node: NodeInfo) {
        self.usage.entry(node.name.clone()).or_default();
        self.nodes.insert(node.name.clone(), node);
    }

    /// Removes a node; its bookings stay until their containers move.
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// The nodes, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// Records what the cached row of a container books (`None`: nothing).
    pub fn set_cached(
        &mut self,
        key: &ObjectKey,
        uid: &str,
        computed_version: u64,
        booking: Option<Booking>,
    ) {
        if let Some((cached_uid, version, _)) = self.cached.get(key)
            && cached_uid == uid
            && *version > computed_version
        {
            return;
        }
        if let Some(flight) = self.in_flight.get(key)
            && flight.uid == uid
            && computed_version >= flight.computed_version
        {
            self.in_flight.remove(key);
        }
        self.cached
            .insert(key.clone(), (uid.to_string(), computed_version, booking));
        self.refresh(key);
    }

    /// Forgets a deleted container row.
    pub fn remove_cached(&mut self, key: &ObjectKey) {
        self.cached.remove(key);
        self.refresh(key);
    }

    /// Forgets every cached row (before a full list is applied).
    pub fn clear_cached(&mut self) {
        let keys: Vec<ObjectKey> = self.cached.keys().cloned().collect();
        self.cached.clear();
        for key in keys {
            self.refresh(&key);
        }
    }

    /// Records a binding this scheduler is writing (or has written) for row `uid`, which will
    /// have `computed_version` once stored.
    pub fn set_in_flight(
        &mut self,
        key: &ObjectKey,
        uid: &str,
        computed_version: u64,
        booking: Option<Booking>,
    ) {
        self.in_flight.insert(
            key.clone(),
            InFlight {
                uid: uid.to_string(),
                computed_version,
                booking,
                since: Instant::now(),
            },
        );
        self.refresh(key);
    }

    /// Drops an in-flight binding whose write failed.
    pub fn abandon(&mut self, key: &ObjectKey) {
        self.in_flight.remove(key);
        self.refresh(key);
    }

    /// Drops in-flight bindings the cache should long have confirmed.
    pub fn expire_in_flight(&mut self) {
        let stale: Vec<ObjectKey> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.since.elapsed() > IN_FLIGHT_FOR)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.abandon(&key);
        }
    }

    /// Whether a binding of `key` is being written.
    pub fn is_in_flight(&self, key: &ObjectKey) -> bool {
        self.in_flight.contains_key(key)
    }

    /// The booking that counts for `key`.
    pub fn booking(&self, key: &ObjectKey) -> Option<&Booking> {
        self.effective.get(key)
    }

    /// Usage of a node.
    pub fn usage(&self, node: &str) -> Option<&Usage> {
        self.usage.get(node)
    }

    fn refresh(&mut self, key: &ObjectKey) {
        let now = match self.in_flight.get(key) {
            Some(flight) => flight.booking.clone(),
            None => self.cached.get(key).and_then(|(_, _, b)| b.clone()),
        };
        let before = self.effective.get(key);
        if before == now.as_ref() {
            return;
        }
        if let Some(old) = self.effective.remove(key)
            && let Some(usage) = self.usage.get_mut(&old.node)
        {
            usage.remove(&old);
        }
        if let Some(new) = now {
            self.usage.entry(new.node.clone()).or_default().add(&new);
            self.effective.insert(key.clone(), new);
        }
    }

    /// Picks a node for one container of `demand`; `spread` counts the workload's containers per
    /// node (for `Distribute`); `start` is where `First` begins (nodes before it are known not to
    /// fit this demand). Returns the booking, or the reason of every node.
    pub fn choose(
        &self,
        demand: &Demand,
        spread: &HashMap<String, u32>,
        start: &mut usize,
    ) -> Result<Booking, Vec<Misfit>> {
        let empty = Usage::default();
        let usage_of = |name: &str| self.usage.get(name).unwrap_or(&empty);
        let mut misfits = Vec::new();
        if demand.affinity == Affinity::First {
            for (i, node) in self.nodes.values().enumerate().skip(*start) {
                match fit(node, usage_of(&node.name), demand) {
                    Ok(booking) => {
                        *start = i;
                        return Ok(booking);
                    }
                    Err(misfit) => misfits.push(misfit),
                }
            }
            *start = self.nodes.len();
            return Err(misfits);
        }
        let mut best: Option<(Booking, (i64, i64))> = None;
        let mut fitting = 0u32;
        let mut rng = rand::rng();
        for node in self.nodes.values() {
            let usage = usage_of(&node.name);
            match fit(node, usage, demand) {
                Ok(booking) => {
                    fitting += 1;
                    let score: (i64, i64) = match demand.affinity {
                        Affinity::Fill => (fullness(usage, demand) as i64, 0),
                        Affinity::Distribute => (
                            -(spread.get(&node.name).copied().unwrap_or(0) as i64),
                            -(usage.containers as i64),
                        ),
                        // Reservoir sampling: each fitting node is kept with probability 1/n.
                        Affinity::Random => {
                            if rng.random_range(0..fitting) == 0 {
                                (fitting as i64, 0)
                            } else {
                                (i64::MIN, 0)
                            }
                        }
                        Affinity::First => unreachable!("handled above"),
                    };
                    if best.as_ref().is_none_or(|(_, s)| score > *s) {
                        best = Some((booking, score));
                    }
                }
                Err(misfit) => misfits.push(misfit),
            }
        }
        best.map(|(booking, _)| booking).ok_or(misfits)
    }
}
