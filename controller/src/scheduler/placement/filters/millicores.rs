use super::{Demand, Filter, NodeInfo, Usage};

/// A request of a fraction of cores shares the cores no one pinned: the node has that many
/// millicores free.
pub struct Millicores;

impl Filter for Millicores {
    fn reason(&self) -> &'static str {
        "without enough free CPU"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, usage: &Usage) -> bool {
        match demand.cpu {
            Some((_, millicpu)) if !millicpu.is_multiple_of(1000) => {
                usage.free_millicpu(node.report.cpu.count) >= millicpu
            }
            _ => true,
        }
    }
}
