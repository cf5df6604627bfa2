//! What is booked where. Bookings come from the container rows the scheduler watches; a
//! binding this scheduler wrote but has not yet seen come back through the feed is kept as
//! "in flight" and wins over the older cached row, so a lagging cache never frees resources
//! twice. Per-node usage is an index over the bookings by container, never a free counter.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dora_store::ObjectKey;
use foldhash::HashMap;

use super::placement::{Booking, NodeInfo, Usage};

/// The usage of a node nothing was ever booked on.
static NO_USAGE: Usage = Usage::EMPTY;

/// How long an unconfirmed binding is trusted over the cache.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(120);

struct InFlight {
    uid: String,
    computed_version: u64,
    booking: Option<Arc<Booking>>,
    since: Instant,
}

/// Nodes and the bookings on them.
#[derive(Default)]
pub struct Ledger {
    nodes: BTreeMap<String, NodeInfo>,
    usage: HashMap<String, Usage>,
    /// The booking each cached container row holds, with its uid and computed version.
    cached: HashMap<ObjectKey, (String, u64, Option<Arc<Booking>>)>,
    in_flight: HashMap<ObjectKey, InFlight>,
    /// What counts: the in-flight booking of a key, else its cached one. Bookings are shared
    /// between the three maps: each container's passes through them several times.
    effective: HashMap<ObjectKey, Arc<Booking>>,
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
        self.cached.insert(
            key.clone(),
            (uid.to_string(), computed_version, booking.map(Arc::new)),
        );
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
                booking: booking.map(Arc::new),
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
        let now = Instant::now();
        let stale: Vec<ObjectKey> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now.duration_since(f.since) > IN_FLIGHT_FOR)
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
        self.effective.get(key).map(|booking| &**booking)
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

    /// The nodes from `from` on, in name order, with what is taken on each.
    pub fn nodes_from<'a>(
        &'a self,
        from: Bound<&str>,
    ) -> impl Iterator<Item = (&'a NodeInfo, &'a Usage)> + use<'a> {
        self.nodes
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(name, node)| (node, self.usage.get(name).unwrap_or(&NO_USAGE)))
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use foldhash::HashMapExt;

    use dora_crds::Kind;
    use dora_crds::spec::{Affinity, NodeSpec, ProductName, WorkloadClass};
    use dora_crds::status::{CpuInfo, GpuDevice, NodeReport};
    use proptest::prelude::*;

    use super::super::placement::{Demand, Resume, Stack};
    use super::*;

    const MODELS: [&str; 2] = ["A100", "H100"];

    fn node(i: usize, gpus: &[(u8, u8)], cpus: u32, memory: u64) -> NodeInfo {
        let mut devices = Vec::new();
        for (count, model) in gpus {
            for _ in 0..*count {
                devices.push(GpuDevice {
                    minor: devices.len() as u32,
                    product_name: MODELS[*model as usize % 2].into(),
                    ..GpuDevice::default()
                });
            }
        }
        NodeInfo {
            name: format!("n{i}"),
            spec: NodeSpec::default(),
            report: NodeReport {
                heartbeat: 0,
                cpu: CpuInfo {
                    count: cpus,
                    product_name: "cpu".into(),
                },
                memory_bytes: memory,
                gpus: devices,
                drivers: Vec::new(),
                version: String::new(),
                endpoint: None,
            },
            ready: true,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Place a container: GPUs (count, model or any), millicores, memory, affinity.
        Place(u32, Option<u8>, u64, u64, u8),
        /// The cache confirms the n-th placed container.
        Confirm(usize),
        /// The n-th placed container ends (its row reports it) or is deleted.
        End(usize, bool),
        /// The write of the n-th placed container failed.
        Abandon(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..3, proptest::option::of(0u8..2), prop_oneof![Just(0u64), 500u64..3000, Just(2000)], 0u64..4, 0u8..4)
                .prop_map(|(g, m, c, mem, a)| Op::Place(g, m, c, mem << 30, a)),
            2 => (0usize..64).prop_map(Op::Confirm),
            1 => (0usize..64, any::<bool>()).prop_map(|(i, d)| Op::End(i, d)),
            1 => (0usize..64).prop_map(Op::Abandon),
        ]
    }

    fn nodes() -> impl Strategy<Value = Vec<NodeInfo>> {
        proptest::collection::vec(
            (
                proptest::collection::vec((0u8..4, 0u8..2), 0..3),
                1u32..8,
                1u64..8,
            ),
            1..6,
        )
        .prop_map(|specs| {
            specs
                .iter()
                .enumerate()
                .map(|(i, (gpus, cpus, memory))| node(i, gpus, *cpus, memory << 30))
                .collect()
        })
    }

    /// Nothing is booked twice and no node holds more than it has; per-node usage is exactly
    /// what the bookings add up to.
    fn check(ledger: &Ledger) {
        let mut recomputed: HashMap<String, Usage> = HashMap::new();
        let mut gpus = HashSet::new();
        let mut cpus = HashSet::new();
        for booking in ledger.effective.values() {
            for gpu in &booking.gpus {
                assert!(
                    gpus.insert((booking.node.clone(), *gpu)),
                    "GPU {gpu} on {} twice",
                    booking.node
                );
            }
            for cpu in &booking.cpus {
                assert!(
                    cpus.insert((booking.node.clone(), *cpu)),
                    "CPU {cpu} on {} twice",
                    booking.node
                );
            }
            recomputed
                .entry(booking.node.clone())
                .or_default()
                .add(booking);
        }
        for node in ledger.nodes() {
            let usage = recomputed.remove(&node.name).unwrap_or_default();
            let indexed = ledger.usage(&node.name).cloned().unwrap_or_default();
            assert_eq!(usage, indexed, "usage index drifted on {}", node.name);
            let report = &node.report;
            assert!(usage.memory <= report.memory_bytes);
            assert!(
                usage.cpus.len() as u64 * 1000 + usage.shared_millicpu
                    <= report.cpu.count as u64 * 1000
            );
            assert!(usage.gpus.iter().all(|g| (*g as usize) < report.gpus.len()));
        }
    }

    proptest! {
        #[test]
        fn placements_never_double_book(nodes in nodes(), ops in proptest::collection::vec(op(), 1..120)) {
            let mut ledger = Ledger::default();
            for node in nodes {
                ledger.set_node(node);
            }
            // Each placement: its key, booking, and whether its write is still in flight
            // (`Some(true)`), stored (`Some(false)`) or failed / ended (`None`).
            let mut placed: Vec<(ObjectKey, Booking, Option<bool>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Place(gpus, model, millicpu, memory, affinity) => {
                        let demand = Demand {
                            class: if gpus > 0 { WorkloadClass::Gpu } else { WorkloadClass::Cpu },
                            gpu: (gpus > 0).then(|| (
                                model.map_or(ProductName::default(), |m| ProductName::One(MODELS[m as usize].into())),
                                gpus,
                            )),
                            cpu: (millicpu > 0).then(|| (ProductName::default(), millicpu)),
                            memory,
                            node: None,
                            affinity: [Affinity::First, Affinity::Fill, Affinity::Distribute, Affinity::Random][affinity as usize],
                            driver: Default::default(),
                        };
                        let mut resume = Resume::default();
                        let stack = Stack::for_affinity(demand.affinity);
                        if let Ok(booking) = stack.choose(&ledger, &demand, &HashMap::new(), &mut resume) {
                            let key = ObjectKey::new(Kind::Container, "z", "w", &format!("c{}", placed.len()));
                            ledger.set_in_flight(&key, "uid", 1, Some(booking.clone()));
                            placed.push((key, booking, Some(true)));
                        }
                    }
                    Op::Confirm(i) => if let Some((key, booking, state @ Some(true))) = placed.get_mut(i) {
                        ledger.set_cached(key, "uid", 1, Some(booking.clone()));
                        *state = Some(false);
                    },
                    Op::End(i, deleted) => if let Some((key, _, state @ Some(false))) = placed.get_mut(i) {
                        if deleted { ledger.remove_cached(key) } else { ledger.set_cached(key, "uid", 2, None) }
                        *state = None;
                    },
                    Op::Abandon(i) => if let Some((key, _, state @ Some(true))) = placed.get_mut(i) {
                        ledger.abandon(key);
                        *state = None;
                    },
                }
                check(&ledger);
            }
        }
    }
}
