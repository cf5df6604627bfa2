use super::{Demand, Filter, NodeInfo, Usage};

/// The node's heartbeat is fresh.
pub struct Ready;

impl Filter for Ready {
    fn reason(&self) -> &'static str {
        "not ready"
    }

    fn admits(&self, _: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        node.ready
    }
}
