use super::{Demand, Filter, NodeInfo, Usage};

/// The node has the requested memory free.
pub struct Memory;

impl Filter for Memory {
    fn reason(&self) -> &'static str {
        "without enough free memory"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, usage: &Usage) -> bool {
        demand.memory == 0 || node.report.memory_bytes.saturating_sub(usage.memory) >= demand.memory
    }
}
