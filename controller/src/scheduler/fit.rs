//! Placement as a pipeline: filters decide whether a node can take a container (and which
//! GPUs and cores it gets), scorers pick among the nodes that can.

use std::collections::BTreeSet;
use std::fmt;

use dora_crds::spec::{Affinity, Driver, NodeSpec, ProductName, WorkloadClass, WorkloadSpec};
use dora_crds::status::NodeReport;

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

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub spec: NodeSpec,
    pub report: NodeReport,
    pub ready: bool,
}

impl NodeInfo {
    /// Whether the node has `driver`: hollow nodes (driver `sim`) run everything, and a node
    /// that names no drivers is taken at its word.
    pub fn runs(&self, driver: Driver) -> bool {
        let name = match driver {
            Driver::Docker => "docker",
            Driver::Process => "process",
        };
        let drivers = &self.report.drivers;
        drivers.is_empty() || drivers.iter().any(|d| d == "sim" || d == name)
    }
}

/// What is taken on a node, derived from the containers bound to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub gpus: BTreeSet<u32>,
    pub cpus: BTreeSet<u32>,
    /// Millicores of containers without a CPU set.
    pub shared_millicpu: u64,
    pub memory: u64,
    pub containers: u32,
}

/// What a container gets on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Booking {
    pub node: String,
    pub gpus: Vec<u32>,
    pub gpu_product: Option<String>,
    pub cpus: Vec<u32>,
    pub millicpu: u64,
    pub cpu_product: Option<String>,
    pub memory: u64,
}

impl Usage {
    pub fn add(&mut self, booking: &Booking) {
        self.gpus.extend(&booking.gpus);
        self.cpus.extend(&booking.cpus);
        if booking.cpus.is_empty() {
            self.shared_millicpu += booking.millicpu;
        }
        self.memory += booking.memory;
        self.containers += 1;
    }

    pub fn remove(&mut self, booking: &Booking) {
        for gpu in &booking.gpus {
            self.gpus.remove(gpu);
        }
        for cpu in &booking.cpus {
            self.cpus.remove(cpu);
        }
        if booking.cpus.is_empty() {
            self.shared_millicpu = self.shared_millicpu.saturating_sub(booking.millicpu);
        }
        self.memory = self.memory.saturating_sub(booking.memory);
        self.containers = self.containers.saturating_sub(1);
    }

    /// Whole cores not pinned and not needed by shared containers.
    fn free_cores(&self, total: u32) -> u32 {
        let shared = self.shared_millicpu.div_ceil(1000) as u32;
        total.saturating_sub(self.cpus.len() as u32 + shared)
    }
}

/// Why a node cannot take a container, by filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Misfit {
    NotReady,
    Cordoned,
    NotAllowed,
    Pinned,
    NoDriver,
    GpuModel,
    GpuCount,
    CpuModel,
    CpuCount,
    Memory,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misfit::NotReady => "not ready",
            Misfit::Cordoned => "cordoned",
            Misfit::NotAllowed => "not allowing this workload class",
            Misfit::Pinned => "not the pinned node",
            Misfit::NoDriver => "without the workload's driver",
            Misfit::GpuModel => "without a GPU of the requested model",
            Misfit::GpuCount => "without enough free GPUs",
            Misfit::CpuModel => "without the requested CPU model",
            Misfit::CpuCount => "without enough free CPU",
            Misfit::Memory => "without enough free memory",
        })
    }
}

/// Runs the filters of `demand` on `node`; on success, what the container gets there.
pub fn fit(node: &NodeInfo, usage: &Usage, demand: &Demand) -> Result<Booking, Misfit> {
    if !node.ready {
        return Err(Misfit::NotReady);
    }
    if node.spec.scheduling_disabled {
        return Err(Misfit::Cordoned);
    }
    if !node.spec.allow.contains(&demand.class) {
        return Err(Misfit::NotAllowed);
    }
    if demand.node.as_ref().is_some_and(|pin| *pin != node.name) {
        return Err(Misfit::Pinned);
    }
    if !node.runs(demand.driver) {
        return Err(Misfit::NoDriver);
    }
    let mut booking = Booking {
        node: node.name.clone(),
        memory: demand.memory,
        ..Booking::default()
    };
    if let Some((model, count)) = &demand.gpu {
        let matching: Vec<&dora_crds::status::GpuDevice> = node
            .report
            .gpus
            .iter()
            .filter(|gpu| model.matches(&gpu.product_name))
            .collect();
        if matching.is_empty() {
            return Err(Misfit::GpuModel);
        }
        // All GPUs of one container are of one model: the first model with enough free ones.
        let mut models: Vec<&str> = matching.iter().map(|g| g.product_name.as_str()).collect();
        models.dedup();
        let chosen = models.iter().find_map(|product| {
            let free: Vec<u32> = matching
                .iter()
                .filter(|g| g.product_name == *product && !usage.gpus.contains(&g.minor))
                .map(|g| g.minor)
                .take(*count as usize)
                .collect();
            (free.len() == *count as usize).then_some((product.to_string(), free))
        });
        let Some((product, minors)) = chosen else {
            return Err(Misfit::GpuCount);
        };
        booking.gpus = minors;
        booking.gpu_product = Some(product);
    }
    if let Some((model, millicpu)) = &demand.cpu {
        let cpu = &node.report.cpu;
        if !model.matches(&cpu.product_name) {
            return Err(Misfit::CpuModel);
        }
        if millicpu.is_multiple_of(1000) {
            let cores = (millicpu / 1000) as u32;
            if usage.free_cores(cpu.count) < cores {
                return Err(Misfit::CpuCount);
            }
            booking.cpus = (0..cpu.count)
                .filter(|c| !usage.cpus.contains(c))
                .take(cores as usize)
                .collect();
        } else {
            let free = (cpu.count as u64 - usage.cpus.len() as u64) * 1000;
            if free.saturating_sub(usage.shared_millicpu) < *millicpu {
                return Err(Misfit::CpuCount);
            }
        }
        booking.millicpu = *millicpu;
        booking.cpu_product = Some(cpu.product_name.clone());
    }
    if demand.memory > 0 && node.report.memory_bytes.saturating_sub(usage.memory) < demand.memory {
        return Err(Misfit::Memory);
    }
    Ok(booking)
}

/// Whether `node` could ever take `demand` were it empty: the filters that do not depend on
/// what runs there.
pub fn could_fit(node: &NodeInfo, demand: &Demand) -> bool {
    fit(node, &Usage::default(), demand).is_ok()
}

/// How full a node is, for `Fill` (higher is fuller).
pub fn fullness(usage: &Usage, demand: &Demand) -> u64 {
    if demand.gpu.is_some() {
        usage.gpus.len() as u64
    } else {
        usage.cpus.len() as u64 * 1000 + usage.shared_millicpu
    }
}

/// Why no node fits, from the reason each node gave: `0/5 nodes fit: 3 not ready, 2 ...`.
pub fn explain(nodes: usize, misfits: &[Misfit]) -> String {
    if nodes == 0 {
        return "no nodes in the zone".into();
    }
    let mut counts: std::collections::BTreeMap<Misfit, usize> = Default::default();
    for misfit in misfits {
        *counts.entry(*misfit).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(misfit, n)| format!("{n} {misfit}"))
        .collect();
    format!("0/{nodes} nodes fit: {}", parts.join(", "))
}
