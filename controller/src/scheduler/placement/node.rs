//! Nodes as placement sees them, what is taken on them, and what a container gets there.

use std::collections::BTreeSet;

use dora_crds::spec::{Driver, NodeSpec};
use dora_crds::status::{NodeReport, Placement};

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

impl Booking {
    /// What a placement holds; `None` when it binds to no node.
    pub fn of(placement: Placement) -> Option<Booking> {
        Some(Booking {
            node: placement.node?,
            gpus: placement.gpus,
            gpu_product: placement.gpu_product,
            cpus: placement.cpus,
            millicpu: placement.millicpu,
            cpu_product: placement.cpu_product,
            memory: placement.memory_bytes,
        })
    }

    /// The placement that binds a container to this booking at `bound_at`, one epoch after
    /// its `previous` placement.
    pub fn into_placement(self, previous: &Placement, bound_at: i64) -> Placement {
        Placement {
            node: Some(self.node),
            epoch: previous.epoch + 1,
            restarts: previous.restarts,
            gpus: self.gpus,
            gpu_product: self.gpu_product,
            cpus: self.cpus,
            millicpu: self.millicpu,
            cpu_product: self.cpu_product,
            memory_bytes: self.memory,
            bound_at,
            not_before: None,
            stop: None,
        }
    }
}

impl Usage {
    /// Nothing taken.
    pub const EMPTY: Usage = Usage {
        gpus: BTreeSet::new(),
        cpus: BTreeSet::new(),
        shared_millicpu: 0,
        memory: 0,
        containers: 0,
    };

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
    pub(super) fn free_cores(&self, total: u32) -> u32 {
        let shared = self.shared_millicpu.div_ceil(1000) as u32;
        total.saturating_sub(self.cpus.len() as u32 + shared)
    }

    /// Millicores neither pinned nor taken by shared containers.
    pub(super) fn free_millicpu(&self, total: u32) -> u64 {
        let unpinned = (total as u64).saturating_sub(self.cpus.len() as u64) * 1000;
        unpinned.saturating_sub(self.shared_millicpu)
    }
}
