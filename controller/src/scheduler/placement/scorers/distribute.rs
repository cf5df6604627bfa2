use super::{Candidate, Scorer};

/// The node with the fewest of the workload's containers, then the fewest containers at all:
/// minus the first count, minus the second as a fraction below one.
pub struct Distribute;

/// Above any container count: the second count never outweighs one of the first.
const TIE_BREAK: f64 = u32::MAX as f64 + 1.0;

impl Scorer for Distribute {
    fn score(&self, candidate: &Candidate<'_>) -> f64 {
        let own = candidate
            .spread
            .get(&candidate.node.name)
            .copied()
            .unwrap_or(0);
        -(own as f64 + candidate.usage.containers as f64 / TIE_BREAK)
    }
}
