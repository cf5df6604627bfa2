//! The embedded backend: one SQLite file in WAL mode. All writes go through one writer thread
//! that commits whatever is queued in a single transaction (group commit). A refused write
//! (precondition, version, fence) changes nothing, because every operation checks before it
//! writes, so it does not undo the others; a write that fails half-way rolls the whole
//! transaction back. Reads use a pool of read-only connections.

mod checkpoint;
mod committed;
mod ops;
mod schema;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use self::committed::{Feed, Held, Recent, lock};
use crate::{
    ActionRecord, Change, ChangeFilter, ChangeOp, Cursor, Event, EventQuery, Fence, Lease,
    ListQuery, ObjectKey, Page, Precondition, Row, SpecOutcome, SpecWrite, StatusColumn, Store,
    StoreError, VersionRecord,
};

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;
/// Prepared statements kept per connection: more than the writer's distinct statements, so
/// that none is prepared again on every write.
const STATEMENT_CACHE: usize = 128;
/// How often the writer prunes expired feed entries, events and actions.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How often a reader that has every change this process wrote asks SQLite for changes of
/// other processes. Readers are woken by each local commit; without this, every wake-up would
/// query SQLite for what memory already answers.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A write's answer to its caller, sent once its transaction's feed entries are kept.
type Reply = Box<dyn FnOnce() + Send>;
/// What the writer does with a write once its transaction ended: keeps its row in [`Recent`]
/// and readies the reply.
type Completion = Box<dyn FnOnce(Result<(), StoreError>, &mut Recent) -> Reply + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> Completion + Send>;

/// One transaction of the writer thread: its connection, and the feed entries its writes have
/// appended so far.
struct Tx<'c> {
    conn: &'c Connection,
    changes: Vec<ops::PendingChange>,
    /// Set by a write that failed after changing rows: the transaction must not commit.
    poisoned: Option<StoreError>,
    /// The rows this writer committed last, each as stored: the writer empties it whenever
    /// another connection has committed since its previous transaction.
    recent: &'c Mutex<Recent>,
    /// Rows as this transaction's writes left them (`None`: deleted), newer than [`Recent`].
    rows: foldhash::HashMap<ObjectKey, Option<Arc<Row>>>,
    /// Fences found current in this transaction; a new lease epoch forgets its own.
    fences: Vec<Fence>,
}

impl<'c> Tx<'c> {
    fn new(conn: &'c Connection, recent: &'c Mutex<Recent>) -> Self {
        Tx {
            conn,
            changes: Vec::new(),
            poisoned: None,
            recent,
            rows: Default::default(),
            fences: Vec::new(),
        }
    }
}

/// Retention of the rows that would otherwise grow without bound.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// How long change-feed entries are kept; older cursors get [`StoreError::Expired`].
    pub changes: Duration,
    /// How long events are kept.
    pub events: Duration,
    /// How many previous specs are kept per resource.
    pub versions: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            changes: Duration::from_secs(3600),
            events: Duration::from_secs(7 * 86_400),
            versions: 50,
        }
    }
}

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    jobs: Mutex<mpsc::Sender<Job>>,
    readers: Mutex<Vec<Connection>>,
    notify: watch::Receiver<u64>,
    retention: Retention,
    recent: Arc<Mutex<Recent>>,
    feed: Arc<Mutex<Feed>>,
    /// When each filter last asked SQLite for changes of other processes.
    probes: Mutex<HashMap<ChangeFilter, Instant>>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Creates the database file at `path` readable by its owner only, or makes an existing one
/// (and its journal files) so.
fn keep_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unavailable = |e: std::io::Error| {
        StoreError::Unavailable(format!("cannot keep {} private: {e}", path.display()))
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(unavailable)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_os_string();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(unavailable(e)),
            _ => {}
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Retention::default())
    }

    /// Opens the database with explicit retention settings.
    ///
    /// The database and its journal files (which SQLite creates with the database's mode) are
    /// readable by their owner only: they hold every object, secrets included.
    pub fn open_with(path: impl AsRef<Path>, retention: Retention) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        keep_private(&path)?;
        let mut conn = Connection::open(&path).map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        conn.execute_batch(&schema::ddl()).map_err(backend)?;
        schema::upgrade(&conn).map_err(backend)?;
        checkpoint::hand_off(&mut conn, &path)?;
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (notify_tx, notify_rx) = watch::channel(0u64);
        let feed: Arc<Mutex<Feed>> = Arc::default();
        let recent: Arc<Mutex<Recent>> = Arc::default();
        let kept = Kept {
            feed: feed.clone(),
            recent: recent.clone(),
        };
        std::thread::Builder::new()
            .name("dora-sqlite-writer".into())
            .spawn(move || writer_loop(conn, job_rx, notify_tx, kept, retention))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                jobs: Mutex::new(job_tx),
                readers: Mutex::new(Vec::new()),
                notify: notify_rx,
                retention,
                recent,
                feed,
                probes: Mutex::default(),
            }),
        })
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write_then(move |tx| f(tx.conn), |_, _| {}).await
    }

    /// A write whose result `committed` sees on the writer thread, in commit order, once it
    /// is committed: the place to keep [`Recent`] in step.
    async fn write_then<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError> + Send + 'static,
        committed: impl FnOnce(&mut Recent, &R) + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |transaction| {
            let result = guarded(transaction, f);
            Box::new(move |commit: Result<(), StoreError>, recent: &mut Recent| {
                if let (Ok(()), Ok(value)) = (&commit, &result) {
                    committed(recent, value);
                }
                Box::new(move || {
                    let _ = tx.send(commit.and(result));
                })
            })
        });
        self.inner
            .jobs
            .lock()
            .map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?
            .send(job)
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }

    /// Whether `filter` is due to ask SQLite for other processes' changes; if so, its next
    /// turn starts now.
    fn probe_due(&self, filter: &ChangeFilter) -> bool {
        let mut probes = lock(&self.inner.probes);
        let now = Instant::now();
        if probes
            .get(filter)
            .is_some_and(|last| now.duration_since(*last) < PROBE_INTERVAL)
        {
            return false;
        }
        if probes.len() >= 1024 {
            probes.retain(|_, last| now.duration_since(*last) < PROBE_INTERVAL);
        }
        probes.insert(filter.clone(), now);
        true
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let pooled = self
            .inner
            .readers
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(backend)?;
                conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
                conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
                conn
            }
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.inner.readers.lock() {
            pool.push(conn);
        }
        result
    }
}

/// Runs one write in the writer's transaction. A write that fails without changing a row
/// leaves the transaction as it was; one that fails after changing rows poisons it. This spares
/// a savepoint per write, which SQLite pays for with a journal of every page the write touches.
fn guarded<R>(
    tx: &mut Tx<'_>,
    f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let changed = tx.conn.total_changes();
    let appended = tx.changes.len();
    let result = f(tx);
    if let Err(e) = &result
        && (tx.conn.total_changes() != changed || tx.changes.len() != appended)
    {
        tx.poisoned.get_or_insert_with(|| e.clone());
    }
    result
}

/// What the writer keeps in memory of its commits.
struct Kept {
    feed: Arc<Mutex<Feed>>,
    recent: Arc<Mutex<Recent>>,
}

fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    notify: watch::Sender<u64>,
    kept: Kept,
    retention: Retention,
) {
    let mut last_maintenance = Instant::now();
    // `PRAGMA data_version` as of this writer's last transaction: it moves only when another
    // connection commits.
    let mut seen_version = None;
    loop {
        let first = match jobs.recv_timeout(MAINTENANCE_INTERVAL) {
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
            if let Err(e) = ops::prune(&conn, &retention) {
                tracing::warn!(error = %e, "pruning the change feed and events failed");
            }
            last_maintenance = Instant::now();
        }
        let Some(first) = first else { continue };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let began = conn.execute_batch("BEGIN IMMEDIATE").map_err(backend);
        let version = began
            .as_ref()
            .ok()
            .and_then(|()| ops::data_version(&conn).ok());
        if version.is_none() || version != seen_version {
            // Another process wrote: any row kept may be older than what is stored.
            lock(&kept.recent).clear();
            seen_version = version;
        }
        let mut tx = Tx::new(&conn, &kept.recent);
        let completions: Vec<Completion> = match &began {
            Ok(()) => batch.into_iter().map(|job| job(&mut tx)).collect(),
            Err(_) => Vec::new(),
        };
        // The feed stays locked from the commit until its entries are kept, and `head` reads
        // under the same lock: no reader sees a head that the feed in memory has not caught up
        // with (a watcher would take the entries between for none and skip them).
        let mut feed = lock(&kept.feed);
        let committed = began.and_then(|()| {
            let changes = match tx.poisoned.take() {
                Some(e) => Err(StoreError::Unavailable(format!(
                    "a write failed half-way, so its whole transaction was rolled back: {e}"
                ))),
                None => ops::write_changes(&conn, std::mem::take(&mut tx.changes)),
            };
            let committed = changes.and_then(|changes| {
                conn.execute_batch("COMMIT").map_err(backend)?;
                Ok(changes)
            });
            if committed.is_err() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            committed
        });
        // Rows are kept before their feed entries: a reader that finds an entry in memory
        // finds its row there too. Replies go last, so a writer reads its own change back.
        let outcome = committed.as_ref().map(drop).map_err(Clone::clone);
        let replies: Vec<Reply> = {
            let mut recent = lock(&kept.recent);
            completions
                .into_iter()
                .map(|complete| complete(outcome.clone(), &mut recent))
                .collect()
        };
        match committed {
            Ok(changes) => feed.extend(changes),
            Err(e) => tracing::error!(error = %e, "sqlite commit failed"),
        }
        drop(feed);
        for reply in replies {
            reply();
        }
        // Woken watchers find the new rows and feed entries already kept.
        if outcome.is_ok() {
            notify.send_modify(|n| *n += 1);
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Row>, StoreError> {
        self.read(|conn| ops::get(conn, key))
    }

    async fn get_after(&self, change: &Change) -> Result<Option<Arc<Row>>, StoreError> {
        if let Some(row) = lock(&self.inner.recent).after(change) {
            return Ok(Some(row));
        }
        Ok(self.get(&change.key).await?.map(Arc::new))
    }

    async fn rows_after(&self, changes: &[Change]) -> Result<Vec<Option<Arc<Row>>>, StoreError> {
        let mut rows: Vec<Option<Arc<Row>>> = {
            let recent = lock(&self.inner.recent);
            changes
                .iter()
                .map(|change| match change.op {
                    ChangeOp::Put => recent.after(change),
                    ChangeOp::Delete => None,
                })
                .collect()
        };
        let unread: Vec<usize> = changes
            .iter()
            .zip(&rows)
            .enumerate()
            .filter(|(_, (change, row))| change.op == ChangeOp::Put && row.is_none())
            .map(|(i, _)| i)
            .collect();
        if !unread.is_empty() {
            self.read(|conn| {
                for i in unread {
                    rows[i] = ops::get(conn, &changes[i].key)?.map(Arc::new);
                }
                Ok(())
            })?;
        }
        Ok(rows)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.read(|conn| ops::list(conn, query))
    }

    async fn put_spec(&self, write: SpecWrite) -> Result<SpecOutcome, StoreError> {
        let keep = self.inner.retention.versions;
        let encoded = ops::EncodedSpec::new(write)?;
        let (outcome, row) = self
            .write_then(
                move |tx| ops::put_spec(tx, encoded, keep),
                |recent, (_, row): &ops::Written| recent.put(row),
            )
            .await?;
        Ok(outcome(row))
    }

    /// One job for the writer, whose writes each succeed or fail alone.
    async fn put_specs(&self, writes: Vec<SpecWrite>) -> Vec<Result<SpecOutcome, StoreError>> {
        let keep = self.inner.retention.versions;
        let count = writes.len();
        let encoded: Vec<Result<ops::EncodedSpec, StoreError>> =
            writes.into_iter().map(ops::EncodedSpec::new).collect();
        let written = self
            .write_then(
                move |tx| {
                    Ok(encoded
                        .into_iter()
                        .map(|write| {
                            write.and_then(|w| guarded(tx, |tx| ops::put_spec(tx, w, keep)))
                        })
                        .collect::<Vec<_>>())
                },
                |recent, written: &Vec<Result<ops::Written, StoreError>>| {
                    for (_, row) in written.iter().flatten() {
                        recent.put(row);
                    }
                },
            )
            .await;
        match written {
            Ok(written) => written
                .into_iter()
                .map(|w| w.map(|(outcome, row)| outcome(row)))
                .collect(),
            Err(e) => vec![Err(e); count],
        }
    }

    async fn put_status(
        &self,
        key: &ObjectKey,
        column: StatusColumn,
        expected: Option<u64>,
        value: Value,
        fence: Option<&Fence>,
    ) -> Result<Arc<Row>, StoreError> {
        let key = key.clone();
        let fence = fence.cloned();
        let text = serde_json::to_string(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write_then(
            move |tx| ops::put_status(tx, &key, column, expected, (value, text), fence.as_ref()),
            |recent, row: &Arc<Row>| recent.put(row),
        )
        .await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<Row, StoreError> {
        let key = key.clone();
        self.write_then(
            move |tx| ops::delete(tx, &key, precondition),
            |recent, row: &Row| recent.remove(&row.key),
        )
        .await
    }

    async fn versions(&self, key: &ObjectKey) -> Result<Vec<VersionRecord>, StoreError> {
        self.read(|conn| ops::versions(conn, key))
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        // See the writer: a commit under way is either not seen or already in the feed.
        let mut feed = lock(&self.inner.feed);
        let head = self.read(ops::head)?;
        feed.saw_head(ops::parse_cursor(&head)?);
        Ok(head)
    }

    async fn check_reached(&self, cursor: &Cursor) -> Result<(), StoreError> {
        let seq = ops::parse_cursor(cursor)?;
        let head = self.head().await?;
        if seq > ops::parse_cursor(&head)? {
            return Err(StoreError::Ahead {
                cursor: cursor.0.clone(),
                head: head.0,
            });
        }
        Ok(())
    }

    async fn changes(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let after_seq = ops::parse_cursor(after)?;
        let held = lock(&self.inner.feed).read(filter, after_seq, limit.max(1));
        match held {
            Held::Changes(changes) => return Ok(changes),
            Held::NoneOfOurs if !self.probe_due(filter) => return Ok(Vec::new()),
            Held::NoneOfOurs | Held::Unknown => {}
        }
        self.read(|conn| ops::changes(conn, filter, after, limit))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.notify.clone()
    }

    async fn append_event(&self, event: Event) -> Result<(), StoreError> {
        self.write(move |conn| ops::append_event(conn, &event))
            .await
    }

    async fn append_events(&self, events: Vec<Event>) -> Result<(), StoreError> {
        self.write(move |conn| events.iter().try_for_each(|e| ops::append_event(conn, e)))
            .await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        self.read(|conn| ops::events(conn, query))
    }

    async fn put_action(&self, action: ActionRecord) -> Result<(), StoreError> {
        self.write(move |conn| ops::put_action(conn, &action)).await
    }

    async fn actions(
        &self,
        zone: &str,
        kind: &str,
        after: Option<&str>,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        self.read(|conn| ops::actions(conn, zone, kind, after))
    }

    async fn acquire_lease(
        &self,
        zone: &str,
        component: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (zone, component, holder) =
            (zone.to_string(), component.to_string(), holder.to_string());
        self.write_then(
            move |tx| ops::acquire_lease(tx, &zone, &component, &holder, ttl),
            |_, _| {},
        )
        .await
    }

    async fn lease(&self, zone: &str, component: &str) -> Result<Option<Lease>, StoreError> {
        self.read(|conn| ops::lease(conn, zone, component))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.write(move |conn| ops::release_lease(conn, &lease))
            .await
    }
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;
    use serde_json::json;

    use super::*;
    use crate::{ChangeFilter, StatusColumn};

    fn spec(key: &ObjectKey) -> SpecWrite {
        let spec = json!({"replica": {"count": 1}});
        SpecWrite {
            key: key.clone(),
            precondition: Precondition::Absent,
            owner: "test".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec_hash: dora_crds::spec_hash(Kind::Workload, &spec),
            spec,
            desired: Value::Null,
            computed: None,
            fence: None,
        }
    }

    /// A database with Dora's tables, and a connection to drive its transactions by hand.
    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dora.db");
        SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        (dir, conn)
    }

    /// Two stores on one database file, as two processes would open it.
    fn two_processes() -> (tempfile::TempDir, SqliteStore, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dora.db");
        let ours = SqliteStore::open(&path).unwrap();
        let theirs = SqliteStore::open(&path).unwrap();
        (dir, ours, theirs)
    }

    /// A refused write leaves the transaction to the others; one that fails after changing
    /// rows keeps it from committing.
    #[test]
    fn only_a_write_that_failed_half_way_poisons_its_transaction() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let recent = Mutex::default();
        let mut tx = Tx::new(&conn, &recent);
        let refused: Result<(), _> = guarded(&mut tx, |_| Err(StoreError::NotFound));
        assert!(refused.is_err());
        assert!(tx.poisoned.is_none());
        let written = guarded(&mut tx, |tx| {
            tx.conn
                .execute("INSERT INTO t VALUES (1)", [])
                .map_err(backend)
        });
        assert_eq!(written, Ok(1));
        assert!(tx.poisoned.is_none());
        let half_way: Result<(), _> = guarded(&mut tx, |tx| {
            tx.conn
                .execute("INSERT INTO t VALUES (2)", [])
                .map_err(backend)?;
            Err(StoreError::Unavailable("disk full".into()))
        });
        assert!(half_way.is_err());
        assert_eq!(
            tx.poisoned,
            Some(StoreError::Unavailable("disk full".into()))
        );
    }

    /// A reader that has read every change of this process from memory still finds the next
    /// change of another process.
    #[tokio::test]
    async fn a_reader_caught_up_with_ours_finds_another_process_s_changes() {
        let (_dir, ours, theirs) = two_processes();
        let key = ObjectKey::new(Kind::Workload, "z", "w", "train");
        let filter = ChangeFilter::all("Workload", "z");
        let start = ours.head().await.unwrap();
        ours.put_spec(spec(&key)).await.unwrap();
        let mine = ours.changes(&filter, &start, 10).await.unwrap();
        assert_eq!(mine.len(), 1);
        let cursor = mine[0].cursor.clone();
        assert!(ours.changes(&filter, &cursor, 10).await.unwrap().is_empty());
        theirs
            .put_status(&key, StatusColumn::Computed, None, json!({"n": 1}), None)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            let found = ours.changes(&filter, &cursor, 10).await.unwrap();
            if !found.is_empty() || Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(found.len(), 1, "the other process's change");
        assert_eq!(found[0].columns, crate::Columns::Computed);
    }

    /// Pruning drops old feed entries, so that reading from before them is refused, but keeps
    /// the newest: sequence numbers go on from the head, never back.
    #[tokio::test]
    async fn pruning_keeps_the_newest_feed_entry_and_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dora.db");
        let store = SqliteStore::open(&path).unwrap();
        let filter = ChangeFilter::all("Workload", "z");
        let start = store.head().await.unwrap();
        for name in ["a", "b", "c"] {
            let key = ObjectKey::new(Kind::Workload, "z", "w", name);
            store.put_spec(spec(&key)).await.unwrap();
        }
        let head = store.head().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let conn = Connection::open(&path).unwrap();
        let retention = Retention {
            changes: Duration::ZERO,
            ..Retention::default()
        };
        ops::prune(&conn, &retention).unwrap();
        assert!(matches!(
            ops::changes(&conn, &filter, &start, 10),
            Err(StoreError::Expired(_))
        ));
        let kept = conn
            .query_row("SELECT COUNT(*), MAX(seq) FROM changes", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.to_string()))
            })
            .unwrap();
        assert_eq!(kept, (1, head.0.clone()), "the newest entry stays");
        assert_eq!(ops::head(&conn).unwrap(), head);
        // Pruned again, the newest still stays; the next write follows the head.
        ops::prune(&conn, &retention).unwrap();
        assert_eq!(ops::head(&conn).unwrap(), head);
        let key = ObjectKey::new(Kind::Workload, "z", "w", "d");
        store.put_spec(spec(&key)).await.unwrap();
        let next = ops::changes(&conn, &filter, &head, 10).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].key, key);
        assert!(ops::parse_cursor(&next[0].cursor).unwrap() > ops::parse_cursor(&head).unwrap());
    }

    /// A reader that reads the head, then the changes after its cursor, and moves to the head
    /// when there are none (as a watcher does), never skips another process's write: the
    /// changes are read from SQLite, however recently the last reader looked there.
    #[tokio::test]
    async fn no_change_is_skipped_up_to_a_head_read_before() {
        let (_dir, ours, theirs) = two_processes();
        let filter = ChangeFilter::all("Workload", "z");
        let start = ours.head().await.unwrap();
        ours.put_spec(spec(&ObjectKey::new(Kind::Workload, "z", "w", "a")))
            .await
            .unwrap();
        let ours_read = ours.changes(&filter, &start, 10).await.unwrap();
        assert_eq!(ours_read.len(), 1);
        let cursor = ours_read[0].cursor.clone();
        // This reader's look at SQLite: nothing yet; the next is not due for a while.
        assert!(ours.changes(&filter, &cursor, 10).await.unwrap().is_empty());
        let theirs_key = ObjectKey::new(Kind::Workload, "z", "w", "b");
        theirs.put_spec(spec(&theirs_key)).await.unwrap();
        let head = ours.head().await.unwrap();
        let found = ours.changes(&filter, &cursor, 10).await.unwrap();
        assert_eq!(
            found.iter().map(|c| &c.key).collect::<Vec<_>>(),
            [&theirs_key],
            "the other process's write, before the head {head:?}"
        );
    }

    /// Rows kept in memory never stand in for a newer write, even one by another process.
    #[tokio::test]
    async fn rows_read_after_a_change_are_at_least_as_new_as_it() {
        let (_dir, ours, theirs) = two_processes();
        let key = ObjectKey::new(Kind::Workload, "z", "w", "train");
        let start = ours.head().await.unwrap();
        ours.put_spec(spec(&key)).await.unwrap();
        ours.put_status(&key, StatusColumn::Computed, None, json!({"n": 1}), None)
            .await
            .unwrap();
        theirs
            .put_status(&key, StatusColumn::Computed, None, json!({"n": 2}), None)
            .await
            .unwrap();
        let filter = ChangeFilter::all("Workload", "z");
        // Our two writes come from memory, which stops short of the other process's write;
        // reading on from there finds it.
        let mut changes = ours.changes(&filter, &start, 10).await.unwrap();
        assert_eq!(changes.len(), 2);
        let rest = ours.changes(&filter, &changes[1].cursor, 10).await.unwrap();
        changes.extend(rest);
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[2].columns, crate::Columns::Computed);
        let last = ours.get_after(&changes[2]).await.unwrap().unwrap();
        assert_eq!(*last.computed, json!({"n": 2}), "the other process's write");
        assert_eq!(last.computed_version, 2);
        // For an earlier change, the row kept may be older than the newest, never older than
        // the change: the newer write's own change follows.
        let first = ours.get_after(&changes[0]).await.unwrap().unwrap();
        assert!(first.version >= 1);
        ours.delete(&key, Precondition::None).await.unwrap();
        assert!(ours.get_after(&changes[2]).await.unwrap().is_none());
    }

    /// A writer's memory of its own rows never hides another process's newer write from a
    /// compare-and-set.
    #[tokio::test]
    async fn a_write_after_another_process_s_write_checks_against_it() {
        let (_dir, ours, theirs) = two_processes();
        let key = ObjectKey::new(Kind::Workload, "z", "w", "train");
        ours.put_spec(spec(&key)).await.unwrap();
        ours.put_status(&key, StatusColumn::Computed, Some(0), json!(1), None)
            .await
            .unwrap();
        theirs
            .put_status(&key, StatusColumn::Computed, Some(1), json!(2), None)
            .await
            .unwrap();
        assert_eq!(
            ours.put_status(&key, StatusColumn::Computed, Some(1), json!(3), None)
                .await
                .unwrap_err(),
            StoreError::Conflict {
                expected: 1,
                actual: 2
            }
        );
        let row = ours
            .put_status(&key, StatusColumn::Computed, Some(2), json!(3), None)
            .await
            .unwrap();
        assert_eq!((row.computed_version, row.version), (2 + 1, 1));
        let mut changed = spec(&key);
        changed.precondition = Precondition::Version(1);
        changed.spec = json!({"replica": {"count": 2}});
        theirs.put_spec(changed.clone()).await.unwrap();
        assert_eq!(
            ours.put_spec(changed).await.unwrap_err(),
            StoreError::Conflict {
                expected: 1,
                actual: 2
            }
        );
        assert_eq!(
            ours.put_spec(spec(&key)).await.unwrap_err(),
            StoreError::AlreadyExists
        );
    }

    /// Writes to one row in one transaction each start from what the one before left.
    #[test]
    fn writes_in_one_transaction_follow_each_other() {
        let (_dir, conn) = database();
        let recent = Mutex::default();
        let key = ObjectKey::new(Kind::Workload, "z", "w", "train");
        let status = |tx: &mut Tx<'_>, expected, n: u64| {
            ops::put_status(
                tx,
                &key,
                StatusColumn::Computed,
                Some(expected),
                (json!(n), n.to_string()),
                None,
            )
        };
        let create = |tx: &mut Tx<'_>| {
            ops::put_spec(tx, ops::EncodedSpec::new(spec(&key)).unwrap(), 10).map(|(_, row)| row)
        };
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let created = create(&mut Tx::new(&conn, &recent)).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        // Kept as the writer keeps what it committed: older than what comes next.
        lock(&recent).put(&created);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut tx = Tx::new(&conn, &recent);
        assert_eq!(status(&mut tx, 0, 1).unwrap().computed_version, 1);
        assert_eq!(status(&mut tx, 1, 2).unwrap().computed_version, 2);
        assert_eq!(
            status(&mut tx, 1, 3).unwrap_err(),
            StoreError::Conflict {
                expected: 1,
                actual: 2
            }
        );
        assert_eq!(create(&mut tx).unwrap_err(), StoreError::AlreadyExists);
        ops::delete(&mut tx, &key, Precondition::None).unwrap();
        assert_eq!(status(&mut tx, 2, 3).unwrap_err(), StoreError::NotFound);
        let again = create(&mut tx).unwrap();
        assert_eq!((again.version, again.computed_version), (1, 0));
        conn.execute_batch("COMMIT").unwrap();
        // A new transaction that has no copy of the row learns from its insert that it is there.
        lock(&recent).clear();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut tx = Tx::new(&conn, &recent);
        assert_eq!(create(&mut tx).unwrap_err(), StoreError::AlreadyExists);
        assert_eq!(status(&mut tx, 0, 1).unwrap().computed_version, 1);
        conn.execute_batch("COMMIT").unwrap();
    }

    /// A transaction's feed entries go in with a few inserts; the sequence numbers kept in
    /// memory are the ones stored, in the same order.
    #[test]
    fn feed_entries_written_together_keep_their_order_and_numbers() {
        let (_dir, conn) = database();
        let recent = Mutex::default();
        let filter = ChangeFilter::all("Workload", "z");
        let start = ops::head(&conn).unwrap();
        // 64 + 8 + 3 rows: every size of insert.
        let names: Vec<String> = (0..75).map(|i| format!("w{i:02}")).collect();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut tx = Tx::new(&conn, &recent);
        for name in &names {
            let key = ObjectKey::new(Kind::Workload, "z", "w", name);
            ops::put_spec(&mut tx, ops::EncodedSpec::new(spec(&key)).unwrap(), 10).unwrap();
        }
        let written = ops::write_changes(&conn, std::mem::take(&mut tx.changes)).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let stored = ops::changes(&conn, &filter, &start, 1000).unwrap();
        let kept: Vec<(String, String)> = written
            .iter()
            .map(|(seq, change)| {
                assert_eq!(change.cursor.0, seq.to_string());
                (change.cursor.0.clone(), change.key.name.clone())
            })
            .collect();
        let read: Vec<(String, String)> = stored
            .iter()
            .map(|change| (change.cursor.0.clone(), change.key.name.clone()))
            .collect();
        assert_eq!(kept, read);
        let in_order: Vec<&String> = read.iter().map(|(_, name)| name).collect();
        assert_eq!(in_order, names.iter().collect::<Vec<_>>());
    }

    /// A fence found current early in a transaction is refused once a new holder takes the
    /// lease later in the same transaction.
    #[test]
    fn a_lease_taken_over_in_a_transaction_fences_its_later_writes() {
        let (_dir, conn) = database();
        let recent = Mutex::default();
        let key = ObjectKey::new(Kind::Workload, "z", "w", "train");
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut tx = Tx::new(&conn, &recent);
        let ttl = Duration::from_secs(60);
        let lease = ops::acquire_lease(&mut tx, "z", "scheduler", "a", ttl)
            .unwrap()
            .unwrap();
        let fence = lease.fence();
        ops::put_spec(&mut tx, ops::EncodedSpec::new(spec(&key)).unwrap(), 10).unwrap();
        let status = |tx: &mut Tx<'_>| {
            ops::put_status(
                tx,
                &key,
                StatusColumn::Computed,
                None,
                (json!(1), "1".into()),
                Some(&fence),
            )
        };
        status(&mut tx).unwrap();
        ops::release_lease(&conn, &lease).unwrap();
        let taken = ops::acquire_lease(&mut tx, "z", "scheduler", "b", ttl)
            .unwrap()
            .unwrap();
        assert_eq!(taken.epoch, lease.epoch + 1);
        assert_eq!(
            status(&mut tx).unwrap_err(),
            StoreError::Fenced { epoch: lease.epoch }
        );
        conn.execute_batch("COMMIT").unwrap();
    }
}
