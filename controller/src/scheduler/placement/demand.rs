//! What one container asks of a node.

use dora_crds::spec::{Affinity, Driver, ProductName, WorkloadClass, WorkloadSpec};

/// What one container needs, from its workload's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub class: WorkloadClass,
    pub gpu: Option<(ProductName, u32)>,
    pub cpu: Option<(ProductName, u64)>,
    pub memory: u64,
    /// Pinned to this node.
    pub node: Option<String>,
    pub affinity: Affinity,
    pub driver: Driver,
}

impl Demand {
    /// The demand of one replica of `spec`.
    pub fn of(spec: &WorkloadSpec) -> Demand {
        let selectors = &spec.selectors;
        Demand {
            class: if spec.is_cpu_workload() {
                WorkloadClass::Cpu
            } else {
                WorkloadClass::Gpu
            },
            gpu: selectors
                .gpu
                .as_ref()
                .filter(|gpu| gpu.count.0 > 0)
                .map(|gpu| (gpu.product_name.clone(), (gpu.count.0 / 1000) as u32)),
            cpu: selectors
                .cpu
                .as_ref()
                .filter(|cpu| cpu.count.0 > 0)
                .map(|cpu| (cpu.product_name.clone(), cpu.count.0)),
            memory: selectors.memory.map_or(0, |m| m.0),
            node: selectors
                .node
                .as_ref()
                .map(|n| n.name.clone())
                .filter(|name| name != dora_crds::spec::ALL),
            affinity: spec.config.affinity,
            driver: spec.driver,
        }
    }
}
