//! A stream of changes to one kind in one zone: an initial list, then the change feed, then a
//! periodic re-list that heals anything missed; reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use dora_store::{Change, ChangeFilter, Cursor, ListQuery, ObjectKey, Row, Store, StoreError};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{KindRef, Source};

/// What a watcher follows: one kind in one zone (every workspace of it; the zone is ignored by
/// kinds without one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub kind: KindRef,
    pub zone: String,
}

impl Target {
    /// `kind` ([`Kind`](dora_crds::Kind) or [`KindRef`]) in `zone`.
    pub fn new(kind: impl Into<KindRef>, zone: &str) -> Self {
        Target {
            kind: kind.into(),
            zone: zone.to_string(),
        }
    }
}

/// Something a watcher saw.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A row was created or changed; this is its state now.
    Applied(Arc<Row>),
    /// A row was deleted.
    Deleted(ObjectKey),
    /// A full list: every row of the target, replacing whatever was known.
    Listed(Vec<Arc<Row>>),
}

/// How a watcher polls.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// How often the feed is read when this process has not written: other processes' writes
    /// are seen within this.
    pub poll: Duration,
    /// How often the whole partition is listed again.
    pub relist: Duration,
    /// Rows per page and changes per read.
    pub page: usize,
    /// After being woken by a write, how long to wait for more before reading: under a
    /// stream of writes, one read then takes many changes.
    pub gather: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            poll: Duration::from_millis(250),
            relist: Duration::from_secs(300),
            page: 1000,
            gather: Duration::from_millis(10),
        }
    }
}

/// Starts a watcher on `target` in `source`; events arrive on the returned channel until
/// `stop` is cancelled or the receiver is dropped. `config` applies to a store's feed.
pub fn watch(
    source: impl Into<Source>,
    target: Target,
    config: WatchConfig,
    stop: CancellationToken,
) -> mpsc::Receiver<WatchEvent> {
    let (tx, rx) = mpsc::channel(64);
    let source = source.into();
    tokio::spawn(async move {
        let follow = async move {
            match source {
                Source::Store(store) => {
                    let mut watcher = Watcher {
                        store,
                        target,
                        config,
                        tx,
                        listed: false,
                    };
                    watcher.run().await;
                }
                Source::Api(client) => crate::source::follow_api(client, target, tx).await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => {}
            () = follow => {}
        }
    });
    rx
}

struct Watcher {
    store: Arc<dyn Store>,
    target: Target,
    config: WatchConfig,
    tx: mpsc::Sender<WatchEvent>,
    /// Whether a list succeeded since the last failure (which resets the backoff).
    listed: bool,
}

impl Watcher {
    async fn run(&mut self) {
        let mut backoff = retry_delays();
        loop {
            match self.follow().await {
                Ok(()) => return,
                Err(e) => {
                    if std::mem::take(&mut self.listed) {
                        backoff = retry_delays();
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(
                        kind = %self.target.kind, zone = %self.target.zone, error = %e,
                        "watch failed; listing again in {delay:?}"
                    );
                    metrics::counter!("dora_watch_errors_total", "kind" => self.target.kind.name.clone())
                        .increment(1);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Lists, then follows the feed until the next re-list is due; returns `Ok` only when the
    /// receiver is gone.
    async fn follow(&mut self) -> Result<(), StoreError> {
        let mut wake = self.store.subscribe();
        loop {
            let mut position = Position::from(self.store.head().await?);
            let rows = self.list().await?;
            self.listed = true;
            if self.tx.send(WatchEvent::Listed(rows)).await.is_err() {
                return Ok(());
            }
            let relist_at = Instant::now() + self.config.relist;
            while Instant::now() < relist_at {
                let changes = self.read(&mut position).await?;
                if changes.is_empty() {
                    tokio::select! {
                        _ = wake.changed() => tokio::time::sleep(self.config.gather).await,
                        () = tokio::time::sleep(self.config.poll) => {}
                    }
                    continue;
                }
                for event in changes {
                    if self.tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn list(&self) -> Result<Vec<Arc<Row>>, StoreError> {
        let mut query = ListQuery {
            kind: self.target.kind.name.clone(),
            scope: self.target.kind.scope,
            zone: self.target.zone.clone(),
            workspace: None,
            after: None,
            limit: self.config.page,
        };
        let mut rows = Vec::new();
        loop {
            let page = self.store.list(&query).await?;
            rows.extend(page.rows.into_iter().map(Arc::new));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(rows),
            }
        }
    }

    /// The next batch of changes as events, each key once with its current state: final
    /// entries not shown yet, then, once caught up, the entries too young to be final.
    async fn read(&self, position: &mut Position) -> Result<Vec<WatchEvent>, StoreError> {
        let filter = ChangeFilter::all(&self.target.kind.name, self.target.zone.clone());
        let page = self.config.page;
        let settled = self.store.changes(&filter, &position.settled, page).await?;
        let caught_up = settled.len() < page;
        let mut changes = position.settle(settled);
        if caught_up && self.store.has_young_entries() {
            let after = position.front.as_ref().unwrap_or(&position.settled);
            let early = self.store.changes_early(&filter, after, page).await?;
            changes.extend(position.early(early));
        }
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let last = last_per_key(changes);
        let rows = self.store.rows_after(&last).await?;
        Ok(last
            .into_iter()
            .zip(rows)
            .map(|(change, row)| match row {
                Some(row) => WatchEvent::Applied(row),
                None => WatchEvent::Deleted(change.key),
            })
            .collect())
    }
}

/// The last change of each key, in feed order.
fn last_per_key(mut changes: Vec<Change>) -> Vec<Change> {
    let mut last: HashMap<&ObjectKey, usize> = HashMap::with_capacity(changes.len());
    for (i, change) in changes.iter().enumerate() {
        last.insert(&change.key, i);
    }
    if last.len() == changes.len() {
        return changes;
    }
    let keep: Vec<bool> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| last.get(&change.key) == Some(&i))
        .collect();
    let mut keep = keep.into_iter();
    changes.retain(|_| keep.next() == Some(true));
    changes
}

/// Where a watcher stands in the feed: every final entry up to `settled` is shown; after it,
/// the entries in `shown` were shown before they were final, the newest of them at `front`.
struct Position {
    settled: Cursor,
    front: Option<Cursor>,
    shown: HashSet<Cursor>,
}

impl From<Cursor> for Position {
    fn from(cursor: Cursor) -> Self {
        Position {
            settled: cursor,
            front: None,
            shown: HashSet::new(),
        }
    }
}

impl Position {
    /// Takes final entries, oldest first; returns those not shown early (late arrivals).
    fn settle(&mut self, changes: Vec<Change>) -> Vec<Change> {
        if let Some(last) = changes.last() {
            self.settled = last.cursor.clone();
        }
        let fresh = changes
            .into_iter()
            .filter(|change| !self.shown.remove(&change.cursor))
            .collect();
        if self.shown.is_empty() {
            self.front = None;
        }
        fresh
    }

    /// Takes entries after the front, young ones included: all are shown now.
    fn early(&mut self, changes: Vec<Change>) -> Vec<Change> {
        if let Some(last) = changes.last() {
            self.front = Some(last.cursor.clone());
        }
        self.shown
            .extend(changes.iter().map(|change| change.cursor.clone()));
        changes
    }
}

/// Delays between attempts after store errors: 100 ms doubling to 10 s, with jitter.
pub(crate) fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;
    use dora_store::{ChangeOp, Columns};

    use super::*;

    fn change(id: &str) -> Change {
        Change {
            cursor: Cursor(id.into()),
            key: ObjectKey::new(Kind::Container, "z", "w", id),
            op: ChangeOp::Put,
            columns: Columns::Observed,
            version: 1,
            at: 0,
        }
    }

    fn ids(changes: &[Change]) -> Vec<&str> {
        changes.iter().map(|c| c.cursor.0.as_str()).collect()
    }

    #[test]
    fn early_entries_show_once_and_late_ones_still_show() {
        let mut position = Position::from(Cursor("0".into()));
        assert_eq!(
            ids(&position.early(vec![change("2"), change("3")])),
            ["2", "3"]
        );
        assert_eq!(position.front, Some(Cursor("3".into())));
        // "1" was written by a client with a late clock: it shows when it is final.
        assert_eq!(ids(&position.settle(vec![change("1"), change("2")])), ["1"]);
        assert_eq!(position.settled, Cursor("2".into()));
        assert_eq!(position.front, Some(Cursor("3".into())), "3 is still early");
        assert!(position.settle(vec![change("3")]).is_empty());
        assert_eq!(position.front, None, "everything shown is final");
        assert_eq!(ids(&position.settle(vec![change("4")])), ["4"]);
    }

    #[test]
    fn each_key_keeps_its_last_change_in_feed_order() {
        let of = |id: &str, name: &str| Change {
            key: ObjectKey::new(Kind::Container, "z", "w", name),
            ..change(id)
        };
        let changes = vec![
            of("1", "a"),
            of("2", "b"),
            of("3", "a"),
            of("4", "c"),
            of("5", "b"),
        ];
        assert_eq!(ids(&last_per_key(changes)), ["3", "4", "5"]);
        assert_eq!(
            ids(&last_per_key(vec![of("1", "a"), of("2", "b")])),
            ["1", "2"]
        );
    }
}
