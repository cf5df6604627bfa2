//! Feasibility: one type per check a node must pass to take a container. A refused node is
//! counted under its filter's reason in `0/5 nodes fit: 3 not ready, ...`.

mod allow;
mod cordon;
mod cpu_cores;
mod cpu_model;
mod driver;
pub(super) mod gpu_count;
mod gpu_model;
mod memory;
mod millicores;
mod pin;
mod ready;

pub use allow::Allow;
pub use cordon::Cordon;
pub use cpu_cores::CpuCores;
pub use cpu_model::CpuModel;
pub use driver::HasDriver;
pub use gpu_count::GpuCount;
pub use gpu_model::GpuModel;
pub use memory::Memory;
pub use millicores::Millicores;
pub use pin::Pin;
pub use ready::Ready;

use super::{Demand, NodeInfo, Usage};

/// One check of whether a node can take one container.
pub trait Filter: Sync {
    /// How a node this filter refuses is counted in the reason users see, e.g. "not ready".
    fn reason(&self) -> &'static str;

    /// Whether `node`, with `usage` taken, can take one container of `demand`.
    fn admits(&self, demand: &Demand, node: &NodeInfo, usage: &Usage) -> bool;
}
