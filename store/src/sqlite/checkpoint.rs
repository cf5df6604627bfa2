//! Checkpoints of the write-ahead log on a thread of their own. Copying the log into the
//! database, and syncing both, would otherwise stall every write queued behind the commit that
//! made the log long enough.

use std::os::raw::c_int;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use super::backend;
use crate::StoreError;

/// Log length, in pages, from which a checkpoint is due: SQLite's own default.
const DUE_PAGES: c_int = 1000;

/// Has `writer`'s commits start a checkpoint, on a connection of its own, whenever the log
/// reaches [`DUE_PAGES`]. The thread ends with the writer's connection.
pub(super) fn hand_off(writer: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    let (due, wake) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("dora-sqlite-checkpoint".into())
        .spawn(move || {
            while wake.recv().is_ok() {
                // Passive: it copies what no reader still needs and never blocks the writer.
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(e) = done {
                    tracing::warn!(error = %e, "checkpointing the SQLite log failed");
                }
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
    // The hook replaces SQLite's automatic checkpoint on the writer's own thread.
    writer
        .wal_hook(Some(move |_: &mut Wal, pages: c_int| {
            if pages >= DUE_PAGES {
                let _ = due.try_send(());
            }
            Ok(())
        }))
        .map_err(backend)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use dora_crds::Kind;
    use serde_json::json;

    use crate::sqlite::SqliteStore;
    use crate::{ObjectKey, Precondition, SpecWrite, Store};

    /// Only a checkpoint copies pages from the log into the database file, so the file grows
    /// once the log has passed the threshold.
    #[tokio::test]
    async fn a_long_log_is_copied_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dora.db");
        let store = SqliteStore::open(&path).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // About 8 MB of specs: twice the threshold's 1,000 pages of 4 KiB.
        let filler = "x".repeat(4000);
        let writes = (0..2000).map(|i| {
            let spec = json!({"filler": filler});
            store.put_spec(SpecWrite {
                key: ObjectKey::new(Kind::Workload, "z", "w", &format!("w{i}")),
                precondition: Precondition::Absent,
                owner: "test".into(),
                labels: Default::default(),
                meta: Default::default(),
                spec_hash: dora_crds::spec_hash(Kind::Workload, &spec),
                spec,
                desired: serde_json::Value::Null,
                computed: None,
                fence: None,
            })
        });
        for written in futures::future::join_all(writes).await {
            written.unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let after = loop {
            let after = std::fs::metadata(&path).unwrap().len();
            if after > before + 4_000_000 || Instant::now() > deadline {
                break after;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(
            after > before + 4_000_000,
            "the database file grew from {before} to {after} bytes only"
        );
    }
}
