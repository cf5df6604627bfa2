use super::{Demand, Filter, NodeInfo, Usage};

/// A workload pinned to a node goes to that node only.
pub struct Pin;

impl Filter for Pin {
    fn reason(&self) -> &'static str {
        "not the pinned node"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        demand.node.as_ref().is_none_or(|pin| *pin == node.name)
    }
}
