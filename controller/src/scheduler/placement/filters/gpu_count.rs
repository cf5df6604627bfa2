use dora_crds::spec::ProductName;

use super::{Demand, Filter, NodeInfo, Usage};

/// The node has enough free GPUs of one requested model.
pub struct GpuCount;

impl Filter for GpuCount {
    fn reason(&self) -> &'static str {
        "without enough free GPUs"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, usage: &Usage) -> bool {
        match &demand.gpu {
            Some((model, count)) => product_with_free(node, usage, model, *count).is_some(),
            None => true,
        }
    }
}

/// All GPUs of one container are of one model: the first of `model`'s products on the node,
/// in device order, with `count` free GPUs.
pub(in crate::scheduler::placement) fn product_with_free<'a>(
    node: &'a NodeInfo,
    usage: &Usage,
    model: &ProductName,
    count: u32,
) -> Option<&'a str> {
    let gpus = &node.report.gpus;
    gpus.iter()
        .enumerate()
        .filter(|(i, gpu)| {
            model.matches(&gpu.product_name)
                && !gpus[..*i]
                    .iter()
                    .any(|seen| seen.product_name == gpu.product_name)
        })
        .map(|(_, gpu)| gpu.product_name.as_str())
        .find(|product| {
            gpus.iter()
                .filter(|g| g.product_name == *product && !usage.gpus.contains(&g.minor))
                .take(count as usize)
                .count()
                == count as usize
        })
}
