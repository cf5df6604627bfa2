//! The last stage: which GPUs (by minor number) and which cores the container gets on the
//! node the scorers chose.

use super::filters::gpu_count::product_with_free;
use super::{Booking, Demand, NodeInfo, Usage};

/// What one container of `demand` gets on `node`; `None` when the filters would refuse it.
pub fn allocate(node: &NodeInfo, usage: &Usage, demand: &Demand) -> Option<Booking> {
    let mut booking = Booking {
        node: node.name.clone(),
        memory: demand.memory,
        ..Booking::default()
    };
    if let Some((model, count)) = &demand.gpu {
        let product = product_with_free(node, usage, model, *count)?;
        booking.gpus = node
            .report
            .gpus
            .iter()
            .filter(|g| g.product_name == product && !usage.gpus.contains(&g.minor))
            .map(|g| g.minor)
            .take(*count as usize)
            .collect();
        booking.gpu_product = Some(product.to_string());
    }
    if let Some((_, millicpu)) = demand.cpu {
        let cpu = &node.report.cpu;
        if millicpu.is_multiple_of(1000) {
            booking.cpus = (0..cpu.count)
                .filter(|c| !usage.cpus.contains(c))
                .take((millicpu / 1000) as usize)
                .collect();
        }
        booking.millicpu = millicpu;
        booking.cpu_product = Some(cpu.product_name.clone());
    }
    Some(booking)
}
