use super::{Demand, Filter, NodeInfo, Usage};

/// The node is neither cordoned nor drained.
pub struct Cordon;

impl Filter for Cordon {
    fn reason(&self) -> &'static str {
        "cordoned"
    }

    fn admits(&self, _: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        !node.spec.scheduling_disabled
    }
}
