use super::{Demand, Filter, NodeInfo, Usage};

/// A request of whole cores gets cores of its own: the node has that many free.
pub struct CpuCores;

impl Filter for CpuCores {
    fn reason(&self) -> &'static str {
        "without enough free CPU"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, usage: &Usage) -> bool {
        match demand.cpu {
            Some((_, millicpu)) if millicpu.is_multiple_of(1000) => {
                usage.free_cores(node.report.cpu.count) >= (millicpu / 1000) as u32
            }
            _ => true,
        }
    }
}
