//! A controller over a real store (SQLite): of a kind known only by name and scope, with a
//! predicate stage and an error policy of its own.

use std::sync::Arc;
use std::time::Duration;

use dora_crds::Scope;
use dora_runtime::{Action, Cache, Controller, KindRef, Request, generation_changed};
use dora_store::sqlite::SqliteStore;
use dora_store::{ObjectKey, Precondition, Row, SpecWrite, StatusColumn, Store};
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

/// Runs a controller of gizmos in zone "z" whose reconciles report
/// `name generation computed trigger` and fail while the spec says `fail: true`.
fn start(
    store: &Arc<dyn Store>,
    configure: impl FnOnce(Controller) -> Controller,
) -> (mpsc::UnboundedReceiver<String>, Cache, CancellationToken) {
    let (tx, seen) = mpsc::unbounded_channel();
    let reconcile = move |request: Request| {
        let tx = tx.clone();
        async move {
            let Some(row) = request.object else {
                return Ok(Action::await_change());
            };
            let _ = tx.send(format!(
                "{} {} {} {}",
                request.key.name,
                row.generation,
                row.computed,
                request.trigger.as_str()
            ));
            match row.resource["fail"].as_bool() {
                Some(true) => Err("asked to fail".to_string()),
                _ => Ok(Action::await_change()),
            }
        }
    };
    let stop = CancellationToken::new();
    let controller = configure(Controller::new("gizmos", store.clone(), gizmos(), "z"));
    let cache = controller.cache(gizmos());
    tokio::spawn(controller.run(reconcile, stop.clone()));
    (seen, cache, stop)
}

/// Waits until the controller's cache holds `check` for `key`: the watch event has been seen
/// and whatever it queues is queued.
async fn cached(cache: &Cache, key: &ObjectKey, check: impl Fn(&Row) -> bool) {
    for _ in 0..200 {
        if cache.get(key).is_some_and(|row| check(&row)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cache did not catch up within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_predicate_keeps_status_only_writes_from_the_queue() {
    let (_dir, store) = store();
    let key = gizmos().key("z", "", "g1");
    put(store.as_ref(), &key, json!({"size": 1})).await;
    let (mut seen, cache, stop) = start(&store, |controller| {
        controller.with_predicate(gizmos(), generation_changed)
    });
    assert_eq!(next(&mut seen).await, "g1 1 null changed");
    // A status write: cached, not reconciled.
    store
        .put_status(
            &key,
            StatusColumn::Computed,
            None,
            json!({"ready": true}),
            None,
        )
        .await
        .unwrap();
    cached(&cache, &key, |row| row.computed["ready"] == true).await;
    put(store.as_ref(), &key, json!({"size": 2})).await;
    assert_eq!(
        next(&mut seen).await,
        r#"g1 2 {"ready":true} changed"#,
        "the spec change is the next reconcile, not the status write"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_policy_decides_retries_and_giving_up() {
    let (_dir, store) = store();
    let key = gizmos().key("z", "", "g1");
    put(store.as_ref(), &key, json!({"fail": true})).await;
    let (gave_up_tx, mut gave_up) = mpsc::unbounded_channel();
    let policy = move |_: &ObjectKey, error: &str, failures: u32| {
        assert_eq!(error, "asked to fail");
        if failures < 3 {
            return Some(Duration::from_millis(10));
        }
        let _ = gave_up_tx.send(failures);
        None
    };
    let (mut seen, _cache, stop) = start(&store, |controller| controller.error_policy(policy));
    assert_eq!(next(&mut seen).await, "g1 1 null changed");
    assert_eq!(next(&mut seen).await, "g1 1 null retry");
    assert_eq!(next(&mut seen).await, "g1 1 null retry");
    let failures = tokio::time::timeout(Duration::from_secs(10), gave_up.recv()).await;
    assert_eq!(failures.unwrap(), Some(3));
    // Given up: only a change runs it again.
    put(store.as_ref(), &key, json!({"fail": false})).await;
    assert_eq!(next(&mut seen).await, "g1 2 null changed");
    stop.cancel();
}
