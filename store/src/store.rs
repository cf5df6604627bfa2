use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    ActionRecord, Change, ChangeFilter, ChangeOp, Cursor, Deletion, Event, EventQuery, Fence,
    Lease, ListQuery, ObjectKey, Page, Precondition, Row, SpecOutcome, SpecWrite, StatusColumn,
    StoreError, VersionRecord,
};

/// Rows read at once by the default [`Store::rows_after`].
const CONCURRENT_GETS: usize = 32;

/// Everything Dora keeps. Backends: [`crate::sqlite`] (embedded) and CQL (ScyllaDB/Cassandra).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One row.
    async fn get(&self, key: &ObjectKey) -> Result<Option<Row>, StoreError>;

    /// One page of a partition, in key order.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// Writes the spec column group under `write.precondition`. A spec that differs from the
    /// stored one bumps the generation and keeps the previous spec as a version; an identical
    /// write changes nothing.
    async fn put_spec(&self, write: SpecWrite) -> Result<SpecOutcome, StoreError>;

    /// Several spec writes, each as [`Store::put_spec`] makes it, all under way at once; the
    /// results come in the order of `writes`. A backend may hand them to its writer together.
    async fn put_specs(&self, writes: Vec<SpecWrite>) -> Vec<Result<SpecOutcome, StoreError>> {
        futures::future::join_all(writes.into_iter().map(|write| self.put_spec(write))).await
    }

    /// Compare-and-set of a status column group on its own version (`None`: any); the spec
    /// columns are not touched. With a fence, the write is refused unless the lease epoch is
    /// still current. Returns the row as stored after the write.
    async fn put_status(
        &self,
        key: &ObjectKey,
        column: StatusColumn,
        expected: Option<u64>,
        value: Value,
        fence: Option<&Fence>,
    ) -> Result<Arc<Row>, StoreError>;

    /// Deletes a row, if its spec version matches the precondition; returns what was deleted.
    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<Row, StoreError>;

    /// Deletes a row as a person asks for it, if its spec version matches the precondition: a
    /// row with finalizers is only marked as being deleted (its `meta.deletion_timestamp`
    /// set) and stays until they are removed; see [`Store::delete_if_finalized`].
    async fn delete_or_finalize(
        &self,
        key: &ObjectKey,
        precondition: Precondition,
    ) -> Result<Deletion, StoreError> {
        crate::deletion::delete_or_finalize(self, key, precondition).await
    }

    /// Deletes `row`, as it was read, if it is being deleted and has no finalizer left; the
    /// deleted row, or `None` when there was nothing to do.
    async fn delete_if_finalized(&self, row: &Row) -> Result<Option<Row>, StoreError> {
        crate::deletion::delete_if_finalized(self, row).await
    }

    /// Previous specs of a row, oldest first.
    async fn versions(&self, key: &ObjectKey) -> Result<Vec<VersionRecord>, StoreError>;

    /// The newest position of the change feed: watching from it sees only later writes.
    async fn head(&self) -> Result<Cursor, StoreError>;

    /// The row a change is about, as of that change or later; `None` once it is deleted. A
    /// backend may answer from the rows it wrote itself last, which watchers read back by the
    /// thousand right after writing them.
    async fn get_after(&self, change: &Change) -> Result<Option<Arc<Row>>, StoreError> {
        Ok(self.get(&change.key).await?.map(Arc::new))
    }

    /// For each change, what [`Store::get_after`] gives (`None` for a delete), in order. A
    /// backend may read many rows of one partition at once.
    async fn rows_after(&self, changes: &[Change]) -> Result<Vec<Option<Arc<Row>>>, StoreError> {
        futures::stream::iter(changes.iter().cloned())
            .map(|change| async move {
                match change.op {
                    ChangeOp::Delete => Ok(None),
                    ChangeOp::Put => self.get_after(&change).await,
                }
            })
            .buffered(CONCURRENT_GETS)
            .try_collect()
            .await
    }

    /// Refuses a cursor the feed has not reached ([`StoreError::Ahead`]) or that is not one of
    /// this backend's ([`StoreError::BadCursor`]); reading changes after such a cursor would
    /// wait for nothing or skip what comes.
    async fn check_reached(&self, cursor: &Cursor) -> Result<(), StoreError>;

    /// Changes after `after` that match `filter`, oldest first, at most `limit`.
    async fn changes(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;

    /// Like [`Store::changes`], with the entries too young to be final as well: a backend whose
    /// feed can still gain entries among its newest ones (written by clients with late clocks)
    /// holds those back from `changes`. A watcher shows them at once and still reads the final
    /// feed for entries that arrive late.
    async fn changes_early(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.changes(filter, after, limit).await
    }

    /// Whether [`Store::changes_early`] can show entries that [`Store::changes`] holds back;
    /// readers of a feed whose entries are final when written need not ask it.
    fn has_young_entries(&self) -> bool {
        false
    }

    /// How far behind a reader's cursor entries of this backend's feed can still appear, later
    /// than [`Store::changes`] would have read them (written by a client whose clock is behind
    /// by more than the skew allowance, replicated late from another datacenter): readers look
    /// there with [`Store::changes_behind`]. `None` (the default) for a feed whose entries are
    /// final when written. A backend with a look-back stamps each [`Change::at`] with the time
    /// its id is ordered by.
    fn lookback(&self) -> Option<Duration> {
        None
    }

    /// Changes that match `filter` with ids after `after` and up to `cursor`, and no further
    /// behind `cursor` than [`Store::lookback`] (by [`Change::at`]): the entries a reader at
    /// `cursor` that started at `after` may not have seen, oldest first, at most `limit`. It
    /// reads every entry of the window again, so readers call it sparingly. None by default.
    async fn changes_behind(
        &self,
        _filter: &ChangeFilter,
        _after: &Cursor,
        _cursor: &Cursor,
        _limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }

    /// A receiver that is marked changed whenever this process writes; backends written to by
    /// other processes too are polled by watchers as well.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Records an event.
    async fn append_event(&self, event: Event) -> Result<(), StoreError>;

    /// Records several events; a backend may write them together.
    async fn append_events(&self, events: Vec<Event>) -> Result<(), StoreError> {
        for event in events {
            self.append_event(event).await?;
        }
        Ok(())
    }

    /// Events, oldest first.
    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError>;

    /// Records an action for a component; it expires at `action.expires`.
    async fn put_action(&self, action: ActionRecord) -> Result<(), StoreError>;

    /// Unexpired actions of one zone and kind after the id `after`, oldest first.
    async fn actions(
        &self,
        zone: &str,
        kind: &str,
        after: Option<&str>,
    ) -> Result<Vec<ActionRecord>, StoreError>;

    /// Takes or renews the lease of `component` in `zone` for `holder`. `None` when another
    /// holder's lease is still valid.
    async fn acquire_lease(
        &self,
        zone: &str,
        component: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// The lease of `component` in `zone` as stored, expired or not; `None` if nobody ever
    /// held it.
    async fn lease(&self, zone: &str, component: &str) -> Result<Option<Lease>, StoreError>;

    /// Gives a lease up early so that a standby takes over at once.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;
}
