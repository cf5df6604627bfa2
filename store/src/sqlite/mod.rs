//! The embedded backend: one SQLite file in WAL mode. All writes go through one writer thread
//! that commits whatever is queued in a single transaction (group commit), each write inside
//! its own savepoint so that one refused write does not undo the others. Reads use a pool of
//! read-only connections.

mod ops;
mod schema;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::{
    ActionRecord, Change, ChangeFilter, Cursor, Event, EventQuery, Fence, Lease, ListQuery,
    ObjectKey, Page, Precondition, Row, SpecOutcome, SpecWrite, StatusColumn, Store, StoreError,
    VersionRecord,
};

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;
/// How often the writer prunes expired feed entries, events and actions.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

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
}

/// How many rows [`Recent`] keeps.
const RECENT_ROWS: usize = 4_096;

/// The rows this process wrote last, newest per key, updated in commit order. Watchers read
/// rows back right after they are written; answering those reads from memory spares a query
/// and the decoding of three JSON columns per change.
#[derive(Default)]
struct Recent {
    rows: HashMap<ObjectKey, Arc<Row>>,
    /// Keys in the order they came in, for eviction (a key may stand twice; evicting early
    /// only costs a query).
    order: VecDeque<ObjectKey>,
}

impl Recent {
    fn put(&mut self, row: &Row) {
        if self
            .rows
            .insert(row.key.clone(), Arc::new(row.clone()))
            .is_none()
        {
            self.order.push_back(row.key.clone());
        }
        while self.order.len() > RECENT_ROWS {
            if let Some(old) = self.order.pop_front() {
                self.rows.remove(&old);
            }
        }
    }

    /// The row of `change` if the one kept is at least as new as the change.
    fn after(&self, change: &Change) -> Option<Arc<Row>> {
        let row = self.rows.get(&change.key)?;
        let version = match change.columns {
            crate::Columns::Spec => row.version,
            crate::Columns::Computed => row.computed_version,
            crate::Columns::Observed => row.observed_version,
        };
        (version >= change.version).then(|| row.clone())
    }
}

fn lock(recent: &Mutex<Recent>) -> MutexGuard<'_, Recent> {
    recent.lock().unwrap_or_else(PoisonError::into_inner)
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Retention::default())
    }

    /// Opens the database with explicit retention settings.
    pub fn open_with(path: impl AsRef<Path>, retention: Retention) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        conn.execute_batch(&schema::ddl()).map_err(backend)?;
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (notify_tx, notify_rx) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("dora-sqlite-writer".into())
            .spawn(move || writer_loop(conn, job_rx, notify_tx, retention))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                jobs: Mutex::new(job_tx),
                readers: Mutex::new(Vec::new()),
                notify: notify_rx,
                retention,
                recent: Arc::default(),
            }),
        })
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.write_then(f, |_, _| {}).await
    }

    /// A write whose result `committed` sees on the writer thread, in commit order, once it
    /// is committed: the place to keep [`Recent`] in step.
    async fn write_then<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        committed: impl FnOnce(&mut Recent, &R) + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let recent = self.inner.recent.clone();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit: Result<(), StoreError>| {
                if let (Ok(()), Ok(value)) = (&commit, &result) {
                    committed(&mut lock(&recent), value);
                }
                let _ = tx.send(commit.and(result));
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

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT write").map_err(backend)?;
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE write"
    } else {
        "ROLLBACK TO write; RELEASE write"
    };
    conn.execute_batch(end).map_err(backend)?;
    result
}

fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    notify: watch::Sender<u64>,
    retention: Retention,
) {
    let mut last_maintenance = Instant::now();
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
        let completions: Vec<Completion> = match &began {
            Ok(()) => batch.into_iter().map(|job| job(&conn)).collect(),
            Err(_) => Vec::new(),
        };
        let committed = began.and_then(|()| {
            conn.execute_batch("COMMIT").map_err(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                backend(e)
            })
        });
        if committed.is_ok() {
            notify.send_modify(|n| *n += 1);
        } else {
            tracing::error!(error = ?committed, "sqlite commit failed");
        }
        for complete in completions {
            complete(committed.clone());
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

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.read(|conn| ops::list(conn, query))
    }

    async fn put_spec(&self, write: SpecWrite) -> Result<SpecOutcome, StoreError> {
        let keep = self.inner.retention.versions;
        self.write_then(
            move |conn| ops::put_spec(conn, write, keep),
            |recent, outcome: &SpecOutcome| recent.put(outcome.row()),
        )
        .await
    }

    async fn put_status(
        &self,
        key: &ObjectKey,
        column: StatusColumn,
        expected: Option<u64>,
        value: Value,
        fence: Option<&Fence>,
    ) -> Result<Row, StoreError> {
        let key = key.clone();
        let fence = fence.cloned();
        self.write_then(
            move |conn| ops::put_status(conn, &key, column, expected, &value, fence.as_ref()),
            |recent, row: &Row| recent.put(row),
        )
        .await
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<Row, StoreError> {
        let key = key.clone();
        self.write_then(
            move |conn| ops::delete(conn, &key, precondition),
            |recent, row: &Row| {
                recent.rows.remove(&row.key);
            },
        )
        .await
    }

    async fn versions(&self, key: &ObjectKey) -> Result<Vec<VersionRecord>, StoreError> {
        self.read(|conn| ops::versions(conn, key))
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        self.read(ops::head)
    }

    async fn changes(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.read(|conn| ops::changes(conn, filter, after, limit))
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.notify.clone()
    }

    async fn append_event(&self, event: Event) -> Result<(), StoreError> {
        self.write(move |conn| ops::append_event(conn, &event))
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
        self.write(move |conn| ops::acquire_lease(conn, &zone, &component, &holder, ttl))
            .await
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
            spec_hash: dora_crds::spec_hash(Kind::Workload, &spec),
            spec,
            desired: Value::Null,
            computed: None,
            fence: None,
        }
    }

    /// Rows kept in memory never stand in for a newer write, even one by another process.
    #[tokio::test]
    async fn rows_read_after_a_change_are_at_least_as_new_as_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dora.db");
        let ours = SqliteStore::open(&path).unwrap();
        let theirs = SqliteStore::open(&path).unwrap();
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
        let filter = ChangeFilter {
            kind: "Workload".into(),
            zone: "z".into(),
            workspace: None,
            name: None,
        };
        let changes = ours.changes(&filter, &start, 10).await.unwrap();
        assert_eq!(changes.len(), 3);
        let last = ours.get_after(&changes[2]).await.unwrap().unwrap();
        assert_eq!(last.computed, json!({"n": 2}), "the other process's write");
        assert_eq!(last.computed_version, 2);
        // For an earlier change, the row kept may be older than the newest, never older than
        // the change: the newer write's own change follows.
        let first = ours.get_after(&changes[0]).await.unwrap().unwrap();
        assert!(first.version >= 1);
        ours.delete(&key, Precondition::None).await.unwrap();
        assert!(ours.get_after(&changes[2]).await.unwrap().is_none());
    }
}
