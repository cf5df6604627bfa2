use super::{Candidate, Scorer};

/// A random node: a uniform draw in [0, 1) per node, so each is as likely to score highest.
pub struct Random;

impl Scorer for Random {
    fn score(&self, _: &Candidate<'_>) -> f64 {
        rand::random()
    }
}
