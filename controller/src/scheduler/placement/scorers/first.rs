use super::{Candidate, Scorer};

/// The first node in name order: 1 for the first node, falling towards 0 for the last.
pub struct First;

impl Scorer for First {
    fn score(&self, candidate: &Candidate<'_>) -> f64 {
        1.0 - candidate.rank as f64 / candidate.nodes.max(1) as f64
    }

    fn follows_name_order(&self) -> bool {
        true
    }
}
