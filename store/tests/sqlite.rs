//! The conformance suite on the embedded SQLite backend.

use std::ops::Deref;

use dora_store::sqlite::SqliteStore;

struct Fixture {
    _dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Deref for Fixture {
    type Target = SqliteStore;

    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("dora.db")).unwrap();
    Fixture { _dir: dir, store }
}

dora_store::conformance_tests!(fresh());
