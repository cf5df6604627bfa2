//! Ranking: one type per preference among the nodes that passed every filter. A stack adds
//! their scores, each times its weight, and takes the highest (the first in name order on a
//! tie).

mod distribute;
mod fill;
mod first;
mod random;

pub use distribute::Distribute;
pub use fill::Fill;
pub use first::First;
pub use random::Random;

use foldhash::HashMap;

use super::{Demand, NodeInfo, Usage};

/// A node that can take the container, as a scorer sees it.
pub struct Candidate<'a> {
    pub demand: &'a Demand,
    pub node: &'a NodeInfo,
    pub usage: &'a Usage,
    /// The node's place among all nodes, in name order (0 first).
    pub rank: usize,
    /// How many nodes there are.
    pub nodes: usize,
    /// How many of the workload's containers each node holds.
    pub spread: &'a HashMap<String, u32>,
}

/// One preference among nodes that fit.
pub trait Scorer: Sync {
    /// How much the container prefers `candidate`: higher is better.
    fn score(&self, candidate: &Candidate<'_>) -> f64;

    /// Whether scores only fall with the node's place in name order: a stack of such scorers
    /// takes the first node that fits and looks no further.
    fn follows_name_order(&self) -> bool {
        false
    }
}
