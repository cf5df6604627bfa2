//! What this process committed last, kept in memory in commit order: the newest rows it wrote
//! and its change-feed entries. Watchers in the same process read both right after the writes;
//! answering from memory spares a query and the decoding of every row and change. Neither ever
//! hides a write by another process: a kept row serves only reads it is new enough for, and the
//! feed serves only runs of sequence numbers it holds whole.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use foldhash::HashMap;

use crate::{Change, ChangeFilter, Columns, ObjectKey, Row};

/// How many rows [`Recent`] keeps.
const RECENT_ROWS: usize = 32_768;
/// How many feed entries [`Feed`] keeps per partition.
const FEED_ENTRIES: usize = 65_536;
/// How many separate runs of sequence numbers [`Feed`] remembers.
const FEED_RUNS: usize = 1_024;

pub(super) fn lock<T>(kept: &Mutex<T>) -> MutexGuard<'_, T> {
    kept.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The rows this process wrote last, newest per key.
#[derive(Default)]
pub(super) struct Recent {
    rows: HashMap<ObjectKey, Arc<Row>>,
    /// Keys in the order they came in, for eviction (a key may stand twice; evicting early
    /// only costs a query).
    order: VecDeque<ObjectKey>,
}

impl Recent {
    pub fn put(&mut self, row: &Arc<Row>) {
        if self.rows.insert(row.key.clone(), row.clone()).is_none() {
            self.order.push_back(row.key.clone());
        }
        while self.order.len() > RECENT_ROWS {
            if let Some(old) = self.order.pop_front() {
                self.rows.remove(&old);
            }
        }
    }

    pub fn remove(&mut self, key: &ObjectKey) {
        self.rows.remove(key);
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.order.clear();
    }

    /// The newest row of `key` this process wrote, if still kept.
    pub fn kept(&self, key: &ObjectKey) -> Option<Arc<Row>> {
        self.rows.get(key).cloned()
    }

    /// The row of `change` if the one kept is at least as new as the change.
    pub fn after(&self, change: &Change) -> Option<Arc<Row>> {
        let row = self.rows.get(&change.key)?;
        let version = match change.columns {
            Columns::Spec => row.version,
            Columns::Computed => row.computed_version,
            Columns::Observed => row.observed_version,
        };
        (version >= change.version).then(|| row.clone())
    }
}

/// The feed entries this process committed, per partition, with the runs of sequence numbers
/// they cover. Entries of other processes' writes fall into the gaps between runs.
#[derive(Default)]
pub(super) struct Feed {
    /// Entries by kind, then zone, in sequence order.
    partitions: HashMap<String, HashMap<String, Partition>>,
    /// Runs of consecutive sequence numbers committed here, `(first, last)`, oldest first.
    runs: VecDeque<(i64, i64)>,
    /// The newest sequence number a read of the head found in SQLite. Past the last run, it
    /// is another process's: a reader that moves to a head it read must not be told there is
    /// nothing before it.
    head: i64,
}

/// What [`Feed::read`] knows.
#[derive(Debug)]
pub(super) enum Held {
    /// Changes that follow on without a gap: every change from the cursor on up to the last
    /// of them.
    Changes(Vec<Change>),
    /// No change of this process follows the cursor, nor any other process's that a read of
    /// the head has seen; another process's newer ones may.
    NoneOfOurs,
    /// Changes of other processes may lie between: ask SQLite.
    Unknown,
}

#[derive(Default)]
struct Partition {
    entries: VecDeque<(i64, Change)>,
    /// The newest sequence number evicted: reads from before it go to SQLite.
    evicted_through: i64,
}

impl Feed {
    /// Adds the entries of one committed transaction, in sequence order.
    pub fn extend(&mut self, entries: Vec<(i64, Change)>) {
        for (seq, change) in entries {
            match self.runs.back_mut() {
                Some((_, last)) if *last + 1 == seq => *last = seq,
                _ => self.runs.push_back((seq, seq)),
            }
            if self.runs.len() > FEED_RUNS {
                self.runs.pop_front();
            }
            let partition = self
                .partitions
                .entry(change.key.kind.clone())
                .or_default()
                .entry(change.key.zone.clone())
                .or_default();
            partition.entries.push_back((seq, change));
            if partition.entries.len() > FEED_ENTRIES
                && let Some((evicted, _)) = partition.entries.pop_front()
            {
                partition.evicted_through = evicted;
            }
        }
    }

    /// What this feed knows of the changes after `after` that match `filter`.
    pub fn read(&self, filter: &ChangeFilter, after: i64, limit: usize) -> Held {
        let last = self.runs.back().map_or(0, |&(_, last)| last);
        if after >= last {
            return self.none_of_ours(after);
        }
        let Some(covered_to) = self.covered_to(after + 1) else {
            return Held::Unknown;
        };
        // Every sequence number from `after` on is ours and kept: what is not here is nowhere.
        let whole = covered_to == last;
        let Some(partition) = self
            .partitions
            .get(&filter.kind)
            .and_then(|zones| zones.get(&filter.zone))
        else {
            return if whole {
                self.none_of_ours(last)
            } else {
                Held::Unknown
            };
        };
        if after < partition.evicted_through {
            return Held::Unknown;
        }
        let start = partition.entries.partition_point(|(seq, _)| *seq <= after);
        let mut changes = Vec::with_capacity(limit.min(partition.entries.len() - start));
        changes.extend(
            partition
                .entries
                .range(start..)
                .take_while(|(seq, _)| *seq <= covered_to)
                .map(|(_, change)| change)
                .filter(|change| {
                    filter
                        .workspace
                        .as_ref()
                        .is_none_or(|w| *w == change.key.workspace)
                        && filter.name.as_ref().is_none_or(|n| *n == change.key.name)
                })
                .take(limit)
                .cloned(),
        );
        match (changes.is_empty(), whole) {
            (false, _) => Held::Changes(changes),
            (true, true) => self.none_of_ours(last),
            (true, false) => Held::Unknown,
        }
    }

    /// Notes a head read from SQLite: `seq` and everything before it is committed.
    pub fn saw_head(&mut self, seq: i64) {
        self.head = self.head.max(seq);
    }

    /// Nothing of ours follows `through`: nothing at all as far as the heads seen tell.
    fn none_of_ours(&self, through: i64) -> Held {
        if self.head > through {
            Held::Unknown
        } else {
            Held::NoneOfOurs
        }
    }

    /// The last sequence number of the run holding `seq`, if one does.
    fn covered_to(&self, seq: i64) -> Option<i64> {
        let run = self.runs.partition_point(|(_, last)| *last < seq);
        let (first, last) = self.runs.get(run)?;
        (*first <= seq).then_some(*last)
    }
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;

    use super::*;
    use crate::{ChangeOp, Cursor};

    fn change(seq: i64, name: &str) -> (i64, Change) {
        let change = Change {
            cursor: Cursor(seq.to_string()),
            key: ObjectKey::new(Kind::Container, "z", "w", name),
            op: ChangeOp::Put,
            columns: Columns::Spec,
            version: 1,
            at: 0,
        };
        (seq, change)
    }

    fn names(held: Held) -> Vec<String> {
        match held {
            Held::Changes(changes) => changes.into_iter().map(|c| c.key.name.clone()).collect(),
            other => panic!("expected changes, got {other:?}"),
        }
    }

    #[test]
    fn the_feed_answers_only_runs_it_holds_whole() {
        let filter = ChangeFilter::all(Kind::Container.name(), "z");
        let mut feed = Feed::default();
        assert!(matches!(feed.read(&filter, 0, 10), Held::NoneOfOurs));
        feed.extend(vec![change(3, "a"), change(4, "b")]);
        // Sequence 5 is another process's write; 6 and 7 are ours again.
        feed.extend(vec![change(6, "c"), change(7, "d")]);
        assert_eq!(
            names(feed.read(&filter, 2, 10)),
            ["a", "b"],
            "stops at the gap"
        );
        assert_eq!(names(feed.read(&filter, 3, 1)), ["b"]);
        assert!(
            matches!(feed.read(&filter, 4, 10), Held::Unknown),
            "5 is not held"
        );
        assert_eq!(names(feed.read(&filter, 5, 10)), ["c", "d"]);
        assert!(
            matches!(feed.read(&filter, 1, 10), Held::Unknown),
            "2 is not held"
        );
        assert!(matches!(feed.read(&filter, 7, 10), Held::NoneOfOurs));
        let other = ChangeFilter {
            zone: "y".into(),
            ..filter.clone()
        };
        assert!(
            matches!(feed.read(&other, 2, 10), Held::Unknown),
            "5 may be of zone y"
        );
        assert!(matches!(feed.read(&other, 5, 10), Held::NoneOfOurs));
        let one = |name: &str| ChangeFilter {
            name: Some(name.into()),
            ..filter.clone()
        };
        assert_eq!(names(feed.read(&one("d"), 5, 10)), ["d"]);
        assert!(matches!(feed.read(&one("c"), 6, 10), Held::NoneOfOurs));
        assert!(matches!(feed.read(&one("b"), 4, 10), Held::Unknown));
    }

    #[test]
    fn a_head_seen_past_our_entries_is_another_process_s_write() {
        let filter = ChangeFilter::all(Kind::Container.name(), "z");
        let mut feed = Feed::default();
        feed.saw_head(2);
        assert!(matches!(feed.read(&filter, 0, 10), Held::Unknown));
        feed.extend(vec![change(3, "a")]);
        assert!(matches!(feed.read(&filter, 3, 10), Held::NoneOfOurs));
        feed.saw_head(4);
        assert!(
            matches!(feed.read(&filter, 3, 10), Held::Unknown),
            "4 is another process's"
        );
        let other = ChangeFilter {
            zone: "y".into(),
            ..filter.clone()
        };
        assert!(matches!(feed.read(&other, 2, 10), Held::Unknown));
        assert!(matches!(feed.read(&filter, 4, 10), Held::NoneOfOurs));
        feed.saw_head(3);
        assert!(matches!(feed.read(&filter, 4, 10), Held::NoneOfOurs));
    }
}
