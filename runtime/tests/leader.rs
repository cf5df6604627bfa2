//! Components started with `run_leader` over a real store (SQLite): one replica per zone leads.

use std::sync::Arc;
use std::time::Duration;

use dora_runtime::{Leader, LeaseConfig, run_leader};
use dora_store::sqlite::SqliteStore;
use dora_store::{Fence, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Replica {
    name: &'static str,
    lease: LeaseConfig,
    leading: mpsc::UnboundedSender<(&'static str, u64)>,
}

impl Leader for Replica {
    const COMPONENT: &'static str = "replica";

    fn zone(&self) -> &str {
        "z"
    }

    fn lease(&self) -> &LeaseConfig {
        &self.lease
    }

    async fn lead(self, _store: Arc<dyn Store>, fence: Fence, lost: CancellationToken) {
        let _ = self.leading.send((self.name, fence.epoch));
        lost.cancelled().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("l.db")).unwrap());
    let (tx, mut leading) = mpsc::unbounded_channel();
    let replica = |name| Replica {
        name,
        lease: LeaseConfig {
            holder: name.to_string(),
            ttl: Duration::from_secs(1),
        },
        leading: tx.clone(),
    };
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), leading.recv())
            .await
            .expect("a leader within 10 s")
            .unwrap()
    };
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = tokio::spawn(run_leader(store.clone(), replica("a"), stop_a.clone()));
    let (first, epoch) = next().await;
    assert_eq!(first, "a");
    tokio::spawn(run_leader(store.clone(), replica("b"), stop_b.clone()));
    stop_a.cancel();
    a.await.unwrap();
    let (second, later) = next().await;
    assert_eq!(
        second, "b",
        "the standby leads once the leader gives the lease up"
    );
    assert!(later > epoch, "a new epoch fences the old leader's writes");
    stop_b.cancel();
}
