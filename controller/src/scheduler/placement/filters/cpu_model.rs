use super::{Demand, Filter, NodeInfo, Usage};

/// The node's CPU is of the requested model.
pub struct CpuModel;

impl Filter for CpuModel {
    fn reason(&self) -> &'static str {
        "without the requested CPU model"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        demand
            .cpu
            .as_ref()
            .is_none_or(|(model, _)| model.matches(&node.report.cpu.product_name))
    }
}
