//! A controller over a real store (SQLite): of a kind known only by name and scope.

use std::sync::Arc;
use std::time::Duration;

use dora_crds::Scope;
use dora_runtime::{Action, Controller, KindRef, Request};
use dora_store::sqlite::SqliteStore;
use dora_store::{ObjectKey, Precondition, SpecWrite, Store};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn gizmos() -> KindRef {
    KindRef::new("Gizmo", "gizmos", Scope::Zoned)
}

fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runtime.db")).unwrap();
    (dir, Arc::new(store))
}

async fn put(store: &dyn Store, key: &ObjectKey, spec: Value) {
    let write = SpecWrite {
        key: key.clone(),
        precondition: Precondition::None,
        owner: "test".into(),
        labels: Default::default(),
        meta: Default::default(),
        spec,
        spec_hash: String::new(),
        desired: Value::Null,
        computed: None,
        fence: None,
    };
    store.put_spec(write).await.unwrap();
}

/// The next name reconciled, within 10 s.
async fn next(seen: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("a reconcile within 10 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_known_only_by_name_and_scope_is_reconciled() {
    let (_dir, store) = store();
    let key = gizmos().key("z", "", "g1");
    assert_eq!(
        dora_crds::Kind::parse("gizmos"),
        None,
        "unknown to this process"
    );
    put(store.as_ref(), &key, json!({"size": 1})).await;

    let (tx, mut seen) = mpsc::unbounded_channel();
    let reconcile = move |request: Request| {
        let tx = tx.clone();
        async move {
            let size = request.object.map(|row| row.resource["size"].clone());
            let _ = tx.send(format!("{} {}", request.key.name, size.unwrap_or_default()));
            Ok::<_, String>(Action::await_change())
        }
    };
    let stop = CancellationToken::new();
    let controller = Controller::new("gizmos", store.clone(), gizmos(), "z");
    let cache = controller.cache(gizmos());
    tokio::spawn(controller.run(reconcile, stop.clone()));
    assert_eq!(next(&mut seen).await, "g1 1");
    put(store.as_ref(), &key, json!({"size": 2})).await;
    assert_eq!(next(&mut seen).await, "g1 2");
    assert_eq!(cache.get(&key).unwrap().resource["size"], 2);
    store.delete(&key, Precondition::None).await.unwrap();
    assert_eq!(next(&mut seen).await, "g1 null");
    stop.cancel();
}
