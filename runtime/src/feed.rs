//! Reading the store's change feed from a position on: the one reader of it that watchers, the
//! API's watch streams and the API server's directory are built on.

use std::sync::Arc;
use std::time::Duration;

use dora_store::{Change, ChangeFilter, Cursor, Store, StoreError};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a quiet reader moves to the store's head at most: every reader of every kind is
/// woken by each write, and most find nothing.
const ADVANCE: Duration = Duration::from_secs(1);

/// How often a reader looks back behind its cursor at most, on a store whose entries can appear
/// there late ([`Store::lookback`]; never on SQLite). Each look-back reads every entry of the
/// window for the reader's kind and zone again: with a feed of R entries a second and a window
/// of W seconds, R × W / 5 rows a second per reader (6 R at the CQL store's default 30 s), on
/// top of the R it reads going forward; and it keeps the ids of the R × (W + 5) entries it
/// showed last.
/// A late entry shows at most this long after it becomes visible.
const LOOK_BACK: Duration = Duration::from_secs(5);

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
    /// When the reader last looked back behind its cursor.
    looked_back: Instant,
    /// How many of the changes the last read returned were late.
    late: usize,
}

impl FeedReader {
    /// A reader of the changes `filter` selects after `from` (a store's head, or a cursor a
    /// client resumes from: [`FeedReader::read`] fails with [`StoreError::Expired`] once the
    /// store no longer keeps it).
    pub fn new(store: Arc<dyn Store>, filter: ChangeFilter, from: Cursor) -> Self {
        FeedReader {
            wake: store.subscribe(),
            position: Position::new(from, store.lookback()),
            store,
            filter,
            page: 1000,
            early: false,
            poll: Duration::from_millis(250),
            gather: Duration::from_millis(10),
            advanced: None,
            looked_back: Instant::now(),
            late: 0,
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
    /// its position stays one the feed keeps. On a store with a look-back, entries that appear
    /// behind it later, within the window, are still shown, once.
    pub fn cursor(&self) -> &Cursor {
        &self.position.settled
    }

    /// Starts again after `cursor` (a head read before the caller read the store whole).
    pub fn skip_to(&mut self, cursor: Cursor) {
        self.position = Position::new(cursor, self.store.lookback());
        self.advanced = Some(Instant::now());
    }

    /// The next changes, oldest first (empty when there are none): late ones found behind the
    /// position (see [`LOOK_BACK`]), the final ones not read yet, then, when reading early and
    /// caught up, the ones too young to be final. Each entry is shown once.
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
        // Before the position moves: what the look-back finds lies behind where this read
        // started.
        let mut changes = self.look_back().await?;
        self.late = changes.len();
        let caught_up = settled.len() < self.page;
        if let Some(head) = head
            && settled.is_empty()
            && self.position.shown.is_empty()
        {
            self.position.settled = head;
        }
        changes.extend(self.position.settle(settled));
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

    /// How many of the changes the last [`FeedReader::read`] returned, at their front, were
    /// late: found behind the position that read started from. Their own cursors lie behind
    /// changes shown before them, so a client resuming after one of them resumes from that
    /// position instead (it has seen everything up to it; the reader shows nothing behind
    /// where it starts).
    pub fn late(&self) -> usize {
        self.late
    }

    /// The entries behind the position not shown yet: read at most every [`LOOK_BACK`], and
    /// only from a store with a look-back.
    async fn look_back(&mut self) -> Result<Vec<Change>, StoreError> {
        let Some(behind) = &self.position.behind else {
            return Ok(Vec::new());
        };
        if self.looked_back.elapsed() < LOOK_BACK {
            return Ok(Vec::new());
        }
        self.looked_back = Instant::now();
        let mut after = behind.floor.clone();
        let mut found = Vec::new();
        loop {
            let page = self
                .store
                .changes_behind(&self.filter, &after, &self.position.settled, self.page)
                .await?;
            let more = page.len() >= self.page;
            if let Some(last) = page.last() {
                after = last.cursor.clone();
            }
            found.extend(page);
            if !more {
                return Ok(self.position.late(found));
            }
        }
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
/// With a look-back, `behind` holds what was shown at or behind `settled`.
struct Position {
    settled: Cursor,
    front: Option<Cursor>,
    shown: HashSet<Cursor>,
    behind: Option<Behind>,
}

/// The entries a reader showed within a store's look-back window behind its position: those
/// a look-back finds again.
struct Behind {
    /// Where the reader started: nothing at or before it is shown.
    floor: Cursor,
    /// The window, in the milliseconds of [`Change::at`].
    window: i64,
    /// Ids shown, with their times.
    shown: HashMap<Cursor, i64>,
    /// The newest of those times: an entry more than the window older lies behind every
    /// look-back from here on, and is forgotten.
    newest: i64,
}

impl Behind {
    fn record(&mut self, changes: &[Change]) {
        for change in changes {
            self.newest = self.newest.max(change.at);
            self.shown.insert(change.cursor.clone(), change.at);
        }
    }
}

impl Position {
    /// At `cursor`, looking back over `lookback` behind it as it moves (if at all).
    fn new(cursor: Cursor, lookback: Option<Duration>) -> Self {
        Position {
            behind: lookback.map(|window| Behind {
                floor: cursor.clone(),
                window: window.as_millis() as i64,
                shown: HashMap::new(),
                newest: i64::MIN,
            }),
            settled: cursor,
            front: None,
            shown: HashSet::new(),
        }
    }

    /// Takes final entries, oldest first; returns those not shown early (late arrivals).
    fn settle(&mut self, changes: Vec<Change>) -> Vec<Change> {
        if let Some(last) = changes.last() {
            self.settled = last.cursor.clone();
        }
        if let Some(behind) = &mut self.behind {
            behind.record(&changes);
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

    /// Takes the entries a look-back found at or behind `settled`; returns those never shown,
    /// and forgets those that no later look-back can reach.
    fn late(&mut self, changes: Vec<Change>) -> Vec<Change> {
        let Some(behind) = &mut self.behind else {
            return Vec::new();
        };
        let mut late: Vec<Change> = changes
            .into_iter()
            .filter(|change| !behind.shown.contains_key(&change.cursor))
            .collect();
        behind.record(&late);
        let horizon = behind.newest.saturating_sub(behind.window);
        behind.shown.retain(|_, at| *at >= horizon);
        // Shown early, then passed by a final read that did not see it yet.
        late.retain(|change| !self.shown.remove(&change.cursor));
        if self.shown.is_empty() {
            self.front = None;
        }
        late
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
        let mut position = Position::new(Cursor("0".into()), None);
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

    fn change_at(id: &str, at: i64) -> Change {
        Change { at, ..change(id) }
    }

    #[test]
    fn late_entries_behind_the_cursor_show_once_and_are_forgotten_past_the_window() {
        let window = Duration::from_millis(1000);
        let mut position = Position::new(Cursor("0".into()), Some(window));
        let settled = position.settle(vec![change_at("10", 10), change_at("30", 30)]);
        assert_eq!(ids(&settled), ["10", "30"]);
        // A look-back finds "20", which appeared after the reader passed it: it shows once.
        let behind = || {
            vec![
                change_at("10", 10),
                change_at("20", 20),
                change_at("30", 30),
            ]
        };
        assert_eq!(ids(&position.late(behind())), ["20"]);
        assert!(position.late(behind()).is_empty());
        assert_eq!(position.settled, Cursor("30".into()), "the position stays");
        // "40" was shown early, then a final read passed it before it saw it there.
        assert_eq!(ids(&position.early(vec![change_at("40", 40)])), ["40"]);
        assert_eq!(ids(&position.settle(vec![change_at("50", 50)])), ["50"]);
        assert!(position.late(vec![change_at("40", 40)]).is_empty());
        assert_eq!(
            position.front, None,
            "everything shown early is accounted for"
        );
        // Ids more than the window older than the newest shown are forgotten.
        assert_eq!(
            ids(&position.settle(vec![change_at("1045", 1045)])),
            ["1045"]
        );
        assert!(position.late(Vec::new()).is_empty());
        let mut kept: Vec<&str> = position
            .behind
            .as_ref()
            .unwrap()
            .shown
            .keys()
            .map(|c| c.0.as_str())
            .collect();
        kept.sort();
        assert_eq!(kept, ["1045", "50"]);
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
