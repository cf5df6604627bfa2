//! The conformance suite on a real Apache Cassandra (or ScyllaDB), each test in a fresh
//! keyspace. `scripts/test` starts Cassandra and sets `DORA_CQL_URL`; under `CI=true` a missing
//! cluster fails these tests.

use dora_store::cql::{CqlConfig, CqlStore};

async fn fresh() -> Box<CqlStore> {
    Box::new(
        CqlStore::connect(fresh_config())
            .await
            .expect("a CQL cluster: run `scripts/cassandra start`"),
    )
}

/// The cluster's config with a keyspace of its own.
fn fresh_config() -> CqlConfig {
    let url = match std::env::var("DORA_CQL_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but DORA_CQL_URL is not set: Cassandra must run")
        }
        Err(_) => "cql://127.0.0.1:9042/dora".into(),
    };
    let keyspace = format!(
        "conformance_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    CqlConfig::from_url(&url)
        .unwrap()
        .with_keyspace(&keyspace)
        .unwrap()
}

async fn drop_keyspace(store: Box<CqlStore>) {
    store
        .drop_keyspace()
        .await
        .expect("the test keyspace drops");
}

dora_store::conformance_tests!(fresh(), drop_keyspace);

#[tokio::test]
async fn an_unreachable_cluster_is_a_clear_error_after_retries() {
    let config = CqlConfig {
        nodes: vec!["127.0.0.1:1".into()],
        connect_attempts: 2,
        ..CqlConfig::default()
    };
    let started = std::time::Instant::now();
    let error = CqlStore::connect(config)
        .await
        .err()
        .expect("nothing listens on port 1");
    let message = error.to_string();
    assert!(
        message.contains("cannot reach the CQL cluster at 127.0.0.1:1"),
        "{message}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(400),
        "it retried with a pause first"
    );
}

/// A node's report starts from the row as this process last saw it; when another process has
/// written the row since, the compare-and-set fails, the write reads afresh and still applies
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_a_stale_view_applies_once() {
    use dora_crds::Kind;
    use dora_store::conformance::{spec, workload, write};
    use dora_store::{ChangeFilter, Precondition, StatusColumn, Store};
    use serde_json::json;

    let config = fresh_config();
    let ours = Box::new(CqlStore::connect(config.clone()).await.unwrap());
    let theirs = CqlStore::connect(config).await.unwrap();
    let key = workload("z1", "ws", "w");
    ours.put_spec(write(&key, spec(1, "a"), Precondition::Absent))
        .await
        .unwrap();
    let report = |n: u32| json!({"report": n});
    let start = ours.head().await.unwrap();
    ours.put_status(&key, StatusColumn::Observed, None, report(1), None)
        .await
        .unwrap();
    // Our view, as a watcher here reads it: observed version 1.
    let filter = ChangeFilter::all(Kind::Workload.name(), "z1");
    let changes = ours.changes_early(&filter, &start, 10).await.unwrap();
    let rows = ours.rows_after(&changes).await.unwrap();
    assert_eq!(rows.last().unwrap().as_ref().unwrap().observed_version, 1);
    // Another process writes twice; our view is now stale.
    for n in 2..=3 {
        theirs
            .put_status(&key, StatusColumn::Observed, None, report(n), None)
            .await
            .unwrap();
    }
    let row = ours
        .put_status(&key, StatusColumn::Observed, None, report(4), None)
        .await
        .unwrap();
    assert_eq!((row.observed_version, &*row.observed), (4, &report(4)));
    let stored = theirs.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (stored.observed_version, &*stored.observed),
        (4, &report(4))
    );
    ours.put_status(&key, StatusColumn::Observed, None, report(5), None)
        .await
        .unwrap();
    assert_eq!(theirs.get(&key).await.unwrap().unwrap().observed_version, 5);
    drop(theirs);
    drop_keyspace(ours).await;
}

/// An entry that becomes visible behind a reader's cursor by more than the skew allowance (its
/// writer's clock ran behind, or it was replicated late from another datacenter) is skipped by
/// the feed read forward from the cursor; the look-back finds it within the window only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_entry_is_found_behind_the_cursor_within_the_window() {
    use dora_crds::Kind;
    use dora_store::conformance::workload;
    use dora_store::{ChangeFilter, ChangeOp, Columns, Store, now_millis};

    let config = fresh_config();
    let store = Box::new(CqlStore::connect(config.clone()).await.unwrap());
    let key = workload("z1", "ws", "late");
    let entry = |version, ago: u64| {
        let millis = now_millis() as u64 - ago;
        store.append_change_at(&key, ChangeOp::Put, Columns::Observed, version, millis)
    };
    // Where a reader started a minute ago, and where it is now, past everything written.
    let start = entry(1, 60_000).await.unwrap();
    let cursor = store.head().await.unwrap();
    let late = entry(2, 5_000).await.unwrap();
    let too_old = entry(3, 40_000).await.unwrap();
    let filter = ChangeFilter::all(Kind::Workload.name(), "z1");
    assert!(
        store
            .changes(&filter, &cursor, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.lookback(), Some(std::time::Duration::from_secs(30)));
    let behind = store
        .changes_behind(&filter, &start, &cursor, 10)
        .await
        .unwrap();
    let cursors: Vec<_> = behind.iter().map(|c| &c.cursor).collect();
    assert_eq!(cursors, [&late], "{too_old} is beyond the 30 s window");
    // Nothing at or before where a reader started is its to show.
    let after_it = store.changes_behind(&filter, &late, &cursor, 10).await;
    assert!(after_it.unwrap().is_empty());
    let off = CqlConfig {
        lookback: std::time::Duration::ZERO,
        ..config
    };
    let off = CqlStore::connect(off).await.unwrap();
    assert_eq!(off.lookback(), None);
    let behind = off.changes_behind(&filter, &start, &cursor, 10).await;
    assert!(behind.unwrap().is_empty());
    drop(off);
    drop_keyspace(store).await;
}
