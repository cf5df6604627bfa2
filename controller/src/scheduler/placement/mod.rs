//! Placement as a pipeline, after Nomad's stack: [`filters`] decide whether a node can take a
//! container, [`scorers`] rank the nodes that can, and [`allocate`] picks the GPUs and cores on
//! the chosen one. [`FILTERS`] and [`Stack::for_affinity`] are where the stages are listed: a
//! new filter or scorer is a file in `filters/` or `scorers/` and one line there.

mod allocate;
mod demand;
pub mod filters;
mod node;
pub mod scorers;

use std::ops::Bound;

use dora_crds::spec::Affinity;
use foldhash::HashMap;

pub use allocate::allocate;
pub use demand::Demand;
pub use filters::Filter;
pub use node::{Booking, NodeInfo, Usage};
pub use scorers::{Candidate, Scorer};

use super::Ledger;

/// The filters every node must pass, in the order they run; a refused node is counted under
/// the first that refuses it, and reasons are listed in this order.
pub static FILTERS: &[&dyn Filter] = &[
    &filters::Ready,
    &filters::Cordon,
    &filters::Allow,
    &filters::Pin,
    &filters::HasDriver,
    &filters::GpuModel,
    &filters::GpuCount,
    &filters::CpuModel,
    &filters::CpuCores,
    &filters::Millicores,
    &filters::Memory,
];

/// Why a node cannot take a container: the filter that refused it, by its place in the stack.
#[derive(Clone, Copy)]
pub struct Misfit {
    stage: usize,
    filter: &'static dyn Filter,
}

impl Misfit {
    /// The reason users see, e.g. "not ready".
    pub fn reason(&self) -> &'static str {
        self.filter.reason()
    }
}

impl std::fmt::Debug for Misfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Where a search that follows name order goes on for one demand: the nodes before it are
/// known not to fit.
#[derive(Debug, Clone, Default)]
pub enum Resume {
    #[default]
    FirstNode,
    At(String),
    PastLastNode,
}

/// The stages one container goes through.
pub struct Stack {
    scorers: Vec<(f64, &'static dyn Scorer)>,
}

impl Stack {
    /// [`FILTERS`], then `scorers` by weight.
    pub fn new(scorers: Vec<(f64, &'static dyn Scorer)>) -> Stack {
        Stack { scorers }
    }

    /// The stack of a workload's `affinity`: its one scorer, of weight 1.
    pub fn for_affinity(affinity: Affinity) -> Stack {
        let scorer: &'static dyn Scorer = match affinity {
            Affinity::First => &scorers::First,
            Affinity::Fill => &scorers::Fill,
            Affinity::Distribute => &scorers::Distribute,
            Affinity::Random => &scorers::Random,
        };
        Stack::new(vec![(1.0, scorer)])
    }

    /// Places one container of `demand` among the ledger's nodes: filters, then scorers, then
    /// allocation on the best node. `spread` counts the workload's containers per node;
    /// `resume` is where a search in name order goes on from the previous choice for the same
    /// demand. Returns the booking, or the reason of every node refused.
    pub fn choose(
        &self,
        ledger: &Ledger,
        demand: &Demand,
        spread: &HashMap<String, u32>,
        resume: &mut Resume,
    ) -> Result<Booking, Vec<Misfit>> {
        let mut misfits = Vec::new();
        if self.scorers.iter().all(|(_, s)| s.follows_name_order()) {
            let from = match resume {
                Resume::FirstNode => Bound::Unbounded,
                Resume::At(name) => Bound::Included(name.as_str()),
                Resume::PastLastNode => return Err(misfits),
            };
            for (node, usage) in ledger.nodes_from(from) {
                match refusal(demand, node, usage) {
                    None => {
                        *resume = Resume::At(node.name.clone());
                        return allocate(node, usage, demand).ok_or(misfits);
                    }
                    Some(misfit) => misfits.push(misfit),
                }
            }
            *resume = Resume::PastLastNode;
            return Err(misfits);
        }
        let nodes = ledger.node_count();
        let mut best: Option<(&NodeInfo, &Usage, f64)> = None;
        for (rank, (node, usage)) in ledger.nodes_from(Bound::Unbounded).enumerate() {
            if let Some(misfit) = refusal(demand, node, usage) {
                misfits.push(misfit);
                continue;
            }
            let candidate = Candidate {
                demand,
                node,
                usage,
                rank,
                nodes,
                spread,
            };
            let score = self
                .scorers
                .iter()
                .map(|(weight, scorer)| weight * scorer.score(&candidate))
                .sum();
            if best.is_none_or(|(_, _, s)| score > s) {
                best = Some((node, usage, score));
            }
        }
        best.and_then(|(node, usage, _)| allocate(node, usage, demand))
            .ok_or(misfits)
    }
}

/// The first filter that refuses `node`, with `usage` taken, for `demand`.
pub fn refusal(demand: &Demand, node: &NodeInfo, usage: &Usage) -> Option<Misfit> {
    FILTERS
        .iter()
        .position(|filter| !filter.admits(demand, node, usage))
        .map(|stage| Misfit {
            stage,
            filter: FILTERS[stage],
        })
}

/// Whether `node` could ever take `demand` were it empty.
pub fn could_fit(node: &NodeInfo, demand: &Demand) -> bool {
    refusal(demand, node, &Usage::EMPTY).is_none()
}

/// Why no node fits, from the reason each node gave: `0/5 nodes fit: 3 not ready, 2 ...`.
/// Filters of one reason count together, listed where the first of them stands.
pub fn explain(nodes: usize, misfits: &[Misfit]) -> String {
    if nodes == 0 {
        return "no nodes in the zone".into();
    }
    // (first stage, reason, nodes): a handful of entries.
    let mut counts: Vec<(usize, &str, usize)> = Vec::new();
    for misfit in misfits {
        match counts.iter_mut().find(|(_, r, _)| *r == misfit.reason()) {
            Some((stage, _, n)) => {
                *stage = (*stage).min(misfit.stage);
                *n += 1;
            }
            None => counts.push((misfit.stage, misfit.reason(), 1)),
        }
    }
    counts.sort_unstable();
    let parts: Vec<String> = counts
        .iter()
        .map(|(_, reason, n)| format!("{n} {reason}"))
        .collect();
    format!("0/{nodes} nodes fit: {}", parts.join(", "))
}

#[cfg(test)]
mod tests;
