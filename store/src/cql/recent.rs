//! Rows read lately for watchers, shared by every watcher of this process. Each watcher reads
//! the row of each change it sees; several of them in one process (scheduler, credit system,
//! hollow nodes, API watches) would otherwise read the same row once each.
//!
//! A row read is "as of a change or later" when the read began after the change was written.
//! A change's time comes from the writer's clock, so a read counts only when it began at least
//! the skew allowance after it, the same allowance the change feed itself trusts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::{ObjectKey, Row};

/// Rows kept per generation; two generations are kept.
const GENERATION: usize = 32_768;

/// A read: the row then, or `None` when there was none.
#[derive(Clone)]
struct Read {
    began: i64,
    row: Option<Arc<Row>>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<ObjectKey, Read>,
    previous: HashMap<ObjectKey, Read>,
}

/// The newest read of each row, for the last reads.
pub(super) struct Recent {
    skew_millis: i64,
    reads: Mutex<Generations>,
}

impl Recent {
    pub(super) fn new(skew_millis: i64) -> Self {
        Recent {
            skew_millis,
            reads: Mutex::default(),
        }
    }

    /// The row as read after a change at `at` (Unix milliseconds), if such a read is kept;
    /// `Some(None)` when that read found no row.
    pub(super) fn after(&self, key: &ObjectKey, at: i64) -> Option<Option<Arc<Row>>> {
        let reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let read = reads.current.get(key).or_else(|| reads.previous.get(key))?;
        (read.began >= at + self.skew_millis).then(|| read.row.clone())
    }

    /// Keeps what a read that began at `began` found, unless a later read is kept already.
    pub(super) fn keep(&self, key: &ObjectKey, began: i64, row: Option<Arc<Row>>) {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let newer_kept = reads
            .current
            .get(key)
            .or_else(|| reads.previous.get(key))
            .is_some_and(|read| read.began > began);
        if newer_kept {
            return;
        }
        if reads.current.len() >= GENERATION && !reads.current.contains_key(key) {
            reads.previous = std::mem::take(&mut reads.current);
        }
        reads.current.insert(key.clone(), Read { began, row });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dora_crds::Scope;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::custom("Container", Scope::ZonedWorkspaced, "z", "w", name)
    }

    #[test]
    fn serves_only_reads_begun_a_skew_after_the_change() {
        let recent = Recent::new(250);
        recent.keep(&key("a"), 1_000, None);
        assert_eq!(
            recent.after(&key("a"), 750).map(|r| r.is_none()),
            Some(true)
        );
        assert!(recent.after(&key("a"), 751).is_none());
        assert!(recent.after(&key("b"), 0).is_none());
    }

    #[test]
    fn keeps_the_latest_read_and_two_generations() {
        let recent = Recent::new(0);
        recent.keep(&key("a"), 2_000, None);
        recent.keep(&key("a"), 1_000, None);
        assert!(
            recent.after(&key("a"), 1_500).is_some(),
            "an older read replaced a newer one"
        );
        for i in 0..GENERATION {
            recent.keep(&key(&format!("n{i}")), 3_000, None);
        }
        assert!(
            recent.after(&key("a"), 0).is_some(),
            "the previous generation was lost early"
        );
        for i in 0..GENERATION {
            recent.keep(&key(&format!("m{i}")), 3_000, None);
        }
        assert!(
            recent.after(&key("a"), 0).is_none(),
            "memory grows without bound"
        );
    }
}
