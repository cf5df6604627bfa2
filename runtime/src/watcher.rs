//! A stream of changes to one kind in one zone: an initial list, then the change feed, then a
//! periodic re-list that heals anything missed; reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use dora_store::{Change, ChangeFilter, ListQuery, ObjectKey, Row, Store, StoreError};
use foldhash::{HashMap, HashMapExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{FeedReader, KindRef, Source};

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
        let filter = ChangeFilter::all(&self.target.kind.name, self.target.zone.clone());
        loop {
            let mut feed =
                FeedReader::new(self.store.clone(), filter.clone(), self.store.head().await?)
                    .early(true)
                    .page(self.config.page)
                    .poll(self.config.poll)
                    .gather(self.config.gather);
            let rows = self.list().await?;
            self.listed = true;
            if self.tx.send(WatchEvent::Listed(rows)).await.is_err() {
                return Ok(());
            }
            let relist_at = Instant::now() + self.config.relist;
            while Instant::now() < relist_at {
                let changes = feed.read().await?;
                if changes.is_empty() {
                    feed.wait().await;
                    continue;
                }
                for event in self.events(changes).await? {
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

    /// Changes as events, each key once with its current state.
    async fn events(&self, changes: Vec<Change>) -> Result<Vec<WatchEvent>, StoreError> {
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
    use dora_store::{ChangeOp, Columns, Cursor};

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
