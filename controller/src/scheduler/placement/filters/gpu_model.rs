use super::{Demand, Filter, NodeInfo, Usage};

/// The node has a GPU of the requested model.
pub struct GpuModel;

impl Filter for GpuModel {
    fn reason(&self) -> &'static str {
        "without a GPU of the requested model"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        let Some((model, _)) = &demand.gpu else {
            return true;
        };
        node.report
            .gpus
            .iter()
            .any(|gpu| model.matches(&gpu.product_name))
    }
}
