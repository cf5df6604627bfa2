//! An in-memory copy of the watched rows, shared by reconcilers.

use std::sync::{Arc, RwLock};

use dora_store::{ObjectKey, Row};
use foldhash::{HashMap, HashMapExt};
use tokio::sync::watch as signal;
use tokio_util::sync::CancellationToken;

use crate::{Source, Target, WatchConfig, WatchEvent, watch};

/// A cache of `target` in `source` kept current by its own watcher until `stop` is
/// cancelled; the receiver turns true once the first full list has been applied.
pub fn reflect(
    source: impl Into<Source>,
    target: Target,
    config: WatchConfig,
    stop: CancellationToken,
) -> (Cache, signal::Receiver<bool>) {
    let cache = Cache::default();
    let (synced_tx, synced) = signal::channel(false);
    let mut events = watch(source, target, config, stop);
    let filled = cache.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            filled.apply(&event);
            if matches!(event, WatchEvent::Listed(_)) {
                synced_tx.send_replace(true);
            }
        }
    });
    (cache, synced)
}

/// The rows of one watched kind, kept current by a watcher. Cheap to clone.
#[derive(Clone, Default)]
pub struct Cache {
    rows: Arc<RwLock<HashMap<ObjectKey, Arc<Row>>>>,
}

impl Cache {
    /// The row under `key`, if present.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Row>> {
        self.read().get(key).cloned()
    }

    /// Every row, in no particular order.
    pub fn list(&self) -> Vec<Arc<Row>> {
        self.read().values().cloned().collect()
    }

    /// How many rows are cached.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Applies what a watcher saw; returns the keys whose row changed (a full list reports
    /// every key it added, changed or removed).
    pub fn apply(&self, event: &WatchEvent) -> Vec<ObjectKey> {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        match event {
            WatchEvent::Applied(row) => {
                let stale = rows.get(&row.key).is_some_and(|old| newer(old, row));
                if stale {
                    return Vec::new();
                }
                rows.insert(row.key.clone(), row.clone());
                vec![row.key.clone()]
            }
            WatchEvent::Deleted(key) => rows.remove(key).map(|_| key.clone()).into_iter().collect(),
            WatchEvent::Listed(listed) => {
                let mut fresh: HashMap<ObjectKey, Arc<Row>> = HashMap::with_capacity(listed.len());
                let mut touched = Vec::new();
                for row in listed {
                    if rows
                        .get(&row.key)
                        .is_none_or(|old| old.as_ref() != row.as_ref())
                    {
                        touched.push(row.key.clone());
                    }
                    fresh.insert(row.key.clone(), row.clone());
                }
                touched.extend(rows.keys().filter(|k| !fresh.contains_key(*k)).cloned());
                *rows = fresh;
                touched
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectKey, Arc<Row>>> {
        self.rows.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `old` is a later state of the same row than `new` (a get that raced a write).
fn newer(old: &Row, new: &Row) -> bool {
    old.uid == new.uid
        && (old.version > new.version
            || old.computed_version > new.computed_version
            || old.observed_version > new.observed_version)
        && old.version >= new.version
        && old.computed_version >= new.computed_version
        && old.observed_version >= new.observed_version
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;

    use super::*;

    fn row(name: &str, version: u64) -> Arc<Row> {
        Arc::new(Row {
            version,
            ..Row::new(ObjectKey::new(Kind::Node, "z", "", name), "u")
        })
    }

    #[test]
    fn an_older_state_does_not_replace_a_newer_one() {
        let cache = Cache::default();
        assert_eq!(cache.apply(&WatchEvent::Applied(row("a", 2))).len(), 1);
        assert!(cache.apply(&WatchEvent::Applied(row("a", 1))).is_empty());
        assert_eq!(cache.get(&row("a", 0).key).unwrap().version, 2);
    }

    #[test]
    fn a_list_replaces_everything_and_reports_what_changed() {
        let cache = Cache::default();
        cache.apply(&WatchEvent::Applied(row("a", 1)));
        cache.apply(&WatchEvent::Applied(row("b", 1)));
        let touched = cache.apply(&WatchEvent::Listed(vec![row("a", 1), row("c", 1)]));
        let mut names: Vec<_> = touched.iter().map(|k| k.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(cache.len(), 2);
    }
}
