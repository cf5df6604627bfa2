//! Reading the store's change feed from a position on: the one reader of it that watchers, the
//! API's watch streams and the API server's directory are built on.

use std::sync::Arc;
use std::time::Duration;

use dora_store::{Change, ChangeFilter, Cursor, Store, StoreError};
use foldhash::{HashSet, HashSetExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a quiet reader moves to the store's head at most: every reader of every kind is
/// woken by each write, and most find nothing.
const ADVANCE: Duration = Duration::from_secs(1);

/// Reads the changes one [`ChangeFilter`] selects, batch by batch, from a position on; wakes
/// at once on this process's writes and polls for other processes'.
pub struct FeedReader {
    store: Arc<dyn Store>,
    filter: ChangeFilter,
    position: Position,
    wake: watch::Receiver<u64>,
    page: usize,
    early: bool,
    poll: Duration,
    gather: Duration,
    /// When the head was last read.
    advanced: Option<Instant>,
}

impl FeedReader {
    /// A reader of the changes `filter` selects after `from` (a store's head, or a cursor a
    /// client resumes from: [`FeedReader::read`] fails with [`StoreError::Expired`] once the
    /// store no longer keeps it).
    pub fn new(store: Arc<dyn Store>, filter: ChangeFilter, from: Cursor) -> Self {
        FeedReader {
            wake: store.subscribe(),
            store,
            filter,
            position: Position::from(from),
            page: 1000,
            early: false,
            poll: Duration::from_millis(250),
            gather: Duration::from_millis(10),
            advanced: None,
        }
    }

    /// At most `n` changes per read (default 1000).
    pub fn page(mut self, n: usize) -> Self {
        self.page = n.max(1);
        self
    }

    /// Also shows entries too young to be final (default: not), as soon as they are written;
    /// those that arrive late among them are still shown once final. A reader whose position
    /// clients resume from leaves this off: the position only ever covers final entries, but
    /// entries shown early may be shown again after it.
    pub fn early(mut self, early: bool) -> Self {
        self.early = early;
        self
    }

    /// How long [`FeedReader::wait`] waits for other processes' writes (default 250 ms).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// After being woken by a write of this process, how long [`FeedReader::wait`] waits for
    /// more (default 10 ms): under a stream of writes, one read then takes many changes.
    pub fn gather(mut self, gather: Duration) -> Self {
        self.gather = gather;
        self
    }

    /// The store read.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where the reader stands: every final change up to here has been read. A quiet reader
    /// moves with the store's head (on its first read, then at most once a second), so that
    /// its position stays one the feed keeps.
    pub fn cursor(&self) -> &Cursor {
        &self.position.settled
    }

    /// Starts again after `cursor` (a head read before the caller read the store whole).
    pub fn skip_to(&mut self, cursor: Cursor) {
        self.position = Position::from(cursor);
        self.advanced = Some(Instant::now());
    }

    /// The next changes, oldest first (empty when there are none): the final ones not read
    /// yet, then, when reading early and caught up, the ones too young to be final.
    pub async fn read(&mut self) -> Result<Vec<Change>, StoreError> {
        // Writes from now on wake the next wait.
        self.wake.borrow_and_update();
        // Read before the changes: nothing the query below misses can lie before it.
        let head = match self.advanced {
            Some(at) if at.elapsed() < ADVANCE => None,
            _ => {
                self.advanced = Some(Instant::now());
                Some(self.store.head().await?)
            }
        };
        let settled = self
            .store
            .changes(&self.filter, &self.position.settled, self.page)
            .await?;
        let caught_up = settled.len() < self.page;
        if let Some(head) = head
            && settled.is_empty()
            && self.position.shown.is_empty()
        {
            self.position.settled = head;
        }
        let mut changes = self.position.settle(settled);
        if self.early && caught_up && self.store.has_young_entries() {
            let after = self
                .position
                .front
                .as_ref()
                .unwrap_or(&self.position.settled);
            let early = self
                .store
                .changes_early(&self.filter, after, self.page)
                .await?;
            changes.extend(self.position.early(early));
        }
        Ok(changes)
    }

    /// Waits until this process writes (and then a little more) or the poll interval passes.
    pub async fn wait(&mut self) {
        tokio::select! {
            changed = self.wake.changed() => match changed {
                Ok(()) => tokio::time::sleep(self.gather).await,
                Err(_) => tokio::time::sleep(self.poll).await,
            },
            () = tokio::time::sleep(self.poll) => {}
        }
    }
}

/// Where a reader stands in the feed: every final entry up to `settled` is shown; after it,
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

#[cfg(test)]
mod tests {
    use dora_crds::Kind;
    use dora_store::sqlite::SqliteStore;
    use dora_store::{ChangeOp, Columns, ObjectKey, Precondition, SpecWrite};
    use serde_json::json;

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

    async fn put(store: &dyn Store, key: &ObjectKey) {
        let write = SpecWrite {
            key: key.clone(),
            precondition: Precondition::None,
            owner: "test".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec: json!({}),
            spec_hash: String::new(),
            desired: serde_json::Value::Null,
            computed: None,
            fence: None,
        };
        store.put_spec(write).await.unwrap();
    }

    #[tokio::test]
    async fn a_quiet_reader_keeps_up_with_the_head_and_reads_what_it_wants_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("f.db")).unwrap());
        let start = store.head().await.unwrap();
        let filter = ChangeFilter::all(Kind::Workload.name(), "z");
        let mut reader = FeedReader::new(store.clone(), filter, start.clone()).page(2);
        // Writes the reader does not want move it along all the same.
        put(store.as_ref(), &ObjectKey::new(Kind::Node, "z", "", "n")).await;
        assert!(reader.read().await.unwrap().is_empty());
        let head = store.head().await.unwrap();
        assert_ne!(head, start);
        assert_eq!(reader.cursor(), &head);
        for name in ["a", "b", "c"] {
            put(
                store.as_ref(),
                &ObjectKey::new(Kind::Workload, "z", "w", name),
            )
            .await;
        }
        let names = |changes: Vec<Change>| -> Vec<String> {
            changes.iter().map(|c| c.key.name.clone()).collect()
        };
        assert_eq!(names(reader.read().await.unwrap()), ["a", "b"], "a page");
        assert_eq!(names(reader.read().await.unwrap()), ["c"]);
        assert!(reader.read().await.unwrap().is_empty());
    }
}
