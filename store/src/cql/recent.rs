//! Rows read lately for watchers, shared by every watcher of this process. Each watcher reads
//! the row of each change it sees; several of them in one process (scheduler, credit system,
//! hollow nodes, API watches) would otherwise read the same row once each.
//!
//! A row read is "as of a change or later" when the read began after the change was written:
//! when it was read for that very change, which its reader had seen in the feed; or when it
//! began at least the skew allowance after the change's time, which comes from the writer's
//! clock (the same allowance the change feed itself trusts).

use std::sync::{Arc, Mutex, PoisonError};

use foldhash::HashMap;

use crate::{Change, Cursor, ObjectKey, Row, StatusColumn};

/// Rows kept per generation; two generations are kept.
const GENERATION: usize = 32_768;

/// A read: the row then, or `None` when there was none.
#[derive(Clone)]
struct Read {
    began: i64,
    /// The change it was read for.
    change: Cursor,
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

    /// The row as read after `change`, if such a read is kept; `Some(None)` when that read
    /// found no row.
    pub(super) fn after(&self, change: &Change) -> Option<Option<Arc<Row>>> {
        let reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let key = &change.key;
        let read = reads.current.get(key).or_else(|| reads.previous.get(key))?;
        let after = read.change == change.cursor || read.began >= change.at + self.skew_millis;
        after.then(|| read.row.clone())
    }

    /// The row as last read (or written by this process), however long ago: a guess for a
    /// compare-and-set to start from, which its condition checks.
    pub(super) fn latest(&self, key: &ObjectKey) -> Option<Arc<Row>> {
        let reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let read = reads.current.get(key).or_else(|| reads.previous.get(key))?;
        read.row.clone()
    }

    /// Brings the kept read of `row` up to this process's own status write of `column`,
    /// leaving the rest of it as read: the next write's read starts from it.
    pub(super) fn wrote(&self, row: &Row, column: StatusColumn) {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        let Generations { current, previous } = &mut *reads;
        let Some(Read {
            row: Some(kept), ..
        }) = current
            .get_mut(&row.key)
            .or_else(|| previous.get_mut(&row.key))
        else {
            return;
        };
        if kept.uid != row.uid {
            return;
        }
        let updated = match column {
            StatusColumn::Computed if kept.computed_version < row.computed_version => Row {
                computed: row.computed.clone(),
                computed_version: row.computed_version,
                ..Row::clone(kept)
            },
            StatusColumn::Observed if kept.observed_version < row.observed_version => Row {
                observed: row.observed.clone(),
                observed_version: row.observed_version,
                ..Row::clone(kept)
            },
            _ => return,
        };
        *kept = Arc::new(updated);
    }

    /// Keeps what a read for `change` that began at `began` found, unless a later read is kept
    /// already.
    pub(super) fn keep(&self, change: &Change, began: i64, row: Option<Arc<Row>>) {
        let key = &change.key;
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
        let change = change.cursor.clone();
        reads
            .current
            .insert(key.clone(), Read { began, change, row });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangeOp, Columns};
    use dora_crds::Scope;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::custom("Container", Scope::ZonedWorkspaced, "z", "w", name)
    }

    /// A change of `name` at `at`, with a cursor that names both.
    fn change(name: &str, at: i64) -> Change {
        Change {
            cursor: Cursor(format!("{name}@{at}")),
            key: key(name),
            op: ChangeOp::Put,
            columns: Columns::Observed,
            version: 1,
            at,
        }
    }

    #[test]
    fn serves_only_reads_begun_a_skew_after_the_change() {
        let recent = Recent::new(250);
        recent.keep(&change("a", 990), 1_000, None);
        assert_eq!(
            recent.after(&change("a", 750)).map(|r| r.is_none()),
            Some(true)
        );
        assert!(recent.after(&change("a", 751)).is_none());
        assert!(recent.after(&change("b", 0)).is_none());
        assert!(
            recent.after(&change("a", 990)).is_some(),
            "a read for the very change it is asked about"
        );
    }

    fn row(name: &str, uid: &str, computed: u64, observed: u64) -> Row {
        Row {
            computed: Arc::new(computed.into()),
            computed_version: computed,
            observed: Arc::new(observed.into()),
            observed_version: observed,
            ..Row::new(key(name), uid)
        }
    }

    #[test]
    fn own_status_writes_move_the_kept_row_forward_only() {
        let recent = Recent::new(0);
        recent.keep(&change("a", 0), 1_000, Some(Arc::new(row("a", "u1", 3, 1))));
        recent.wrote(&row("a", "u1", 9, 2), StatusColumn::Observed);
        let kept = recent.latest(&key("a")).unwrap();
        assert_eq!((kept.computed_version, kept.observed_version), (3, 2));
        assert_eq!(*kept.observed, serde_json::json!(2));
        recent.wrote(&row("a", "u1", 0, 1), StatusColumn::Observed);
        recent.wrote(&row("a", "u2", 0, 7), StatusColumn::Observed);
        assert_eq!(recent.latest(&key("a")).unwrap().observed_version, 2);
        assert_eq!(
            recent
                .after(&change("a", 1_000))
                .flatten()
                .map(|r| r.computed_version),
            Some(3)
        );
    }

    #[test]
    fn keeps_the_latest_read_and_two_generations() {
        let recent = Recent::new(0);
        recent.keep(&change("a", 0), 2_000, None);
        recent.keep(&change("a", 0), 1_000, None);
        assert!(
            recent.after(&change("a", 1_500)).is_some(),
            "an older read replaced a newer one"
        );
        for i in 0..GENERATION {
            recent.keep(&change(&format!("n{i}"), 0), 3_000, None);
        }
        assert!(
            recent.after(&change("a", 1)).is_some(),
            "the previous generation was lost early"
        );
        for i in 0..GENERATION {
            recent.keep(&change(&format!("m{i}"), 0), 3_000, None);
        }
        assert!(
            recent.after(&change("a", 1)).is_none(),
            "memory grows without bound"
        );
    }
}
