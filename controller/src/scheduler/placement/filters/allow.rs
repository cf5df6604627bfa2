use super::{Demand, Filter, NodeInfo, Usage};

/// The node's `allow` list has the workload's class.
pub struct Allow;

impl Filter for Allow {
    fn reason(&self) -> &'static str {
        "not allowing this workload class"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        node.spec.allow.contains(&demand.class)
    }
}
