use super::{Candidate, Scorer};

/// The fullest node (bin-packing): the GPUs in use for a GPU container, else the cores in use.
pub struct Fill;

impl Scorer for Fill {
    fn score(&self, candidate: &Candidate<'_>) -> f64 {
        let usage = candidate.usage;
        if candidate.demand.gpu.is_some() {
            usage.gpus.len() as f64
        } else {
            usage.cpus.len() as f64 + usage.shared_millicpu as f64 / 1000.0
        }
    }
}
