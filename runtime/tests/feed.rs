//! The feed reader on a real Apache Cassandra (or ScyllaDB), in a fresh keyspace, where an
//! entry can become visible behind a reader's cursor later than the skew allowance. The
//! cluster is the one of `DORA_CQL_URL`, as for the store's own CQL tests.

use std::sync::Arc;
use std::time::Duration;

use dora_crds::Kind;
use dora_runtime::FeedReader;
use dora_store::conformance::{spec, workload, write};
use dora_store::cql::{CqlConfig, CqlStore};
use dora_store::{Change, ChangeFilter, ChangeOp, Columns, Precondition, Store};
use tokio::time::Instant;

async fn fresh() -> CqlStore {
    let url = match std::env::var("DORA_CQL_URL") {
        Ok(url) => url,
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but DORA_CQL_URL is not set: Cassandra must run")
        }
        Err(_) => "cql://127.0.0.1:9042/dora".into(),
    };
    let keyspace = format!("feed_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let config = CqlConfig::from_url(&url)
        .unwrap()
        .with_keyspace(&keyspace)
        .unwrap();
    CqlStore::connect(config)
        .await
        .expect("a CQL cluster: run `scripts/cassandra start`")
}

/// Everything the reader shows until `until` has passed or, when `want` is given, it has
/// shown that many changes (or 30 s have passed).
async fn read_for(reader: &mut FeedReader, until: Duration, want: Option<usize>) -> Vec<Change> {
    let deadline = Instant::now() + want.map_or(until, |_| Duration::from_secs(30));
    let mut shown = Vec::new();
    while Instant::now() < deadline && want.is_none_or(|n| shown.len() < n) {
        let changes = reader.read().await.unwrap();
        if changes.is_empty() {
            reader.wait().await;
        }
        shown.extend(changes);
    }
    shown
}

/// Readers as the API's watch streams (final entries only) and controllers (early ones too)
/// read the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_appears_behind_the_cursor_shows_once() {
    let cql = fresh().await;
    let store: Arc<dyn Store> = Arc::new(cql.clone());
    let filter = ChangeFilter::all(Kind::Workload.name(), "z1");
    let start = store.head().await.unwrap();
    let reader = |early| {
        FeedReader::new(store.clone(), filter.clone(), start.clone())
            .poll(Duration::from_millis(50))
            .early(early)
    };
    let (mut watch, mut controller) = (reader(false), reader(true));
    // The late entry must lie after where the readers started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let key = workload("z1", "ws", "w");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::Absent))
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        read_for(&mut watch, Duration::ZERO, Some(1)),
        read_for(&mut controller, Duration::ZERO, Some(1)),
    );
    assert_eq!((a.len(), b.len()), (1, 1), "{a:?} {b:?}");
    let written = a[0].at;
    // Once the readers have passed it for good, an entry a second older than that write
    // appears: four times the skew allowance behind their cursors.
    let (a, b) = tokio::join!(
        read_for(&mut watch, Duration::from_secs(1), None),
        read_for(&mut controller, Duration::from_secs(1), None),
    );
    assert!(a.is_empty() && b.is_empty(), "{a:?} {b:?}");
    let late = cql
        .append_change_at(
            &key,
            ChangeOp::Put,
            Columns::Observed,
            1,
            (written - 1000) as u64,
        )
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        read_for(&mut watch, Duration::ZERO, Some(1)),
        read_for(&mut controller, Duration::ZERO, Some(1)),
    );
    assert_eq!(a.iter().map(|c| &c.cursor).collect::<Vec<_>>(), [&late]);
    assert_eq!(b.iter().map(|c| &c.cursor).collect::<Vec<_>>(), [&late]);
    assert_eq!(
        (watch.late(), controller.late()),
        (1, 1),
        "found behind their cursors"
    );
    // Looked back at again and again, it does not show twice.
    let (a, b) = tokio::join!(
        read_for(&mut watch, Duration::from_secs(12), None),
        read_for(&mut controller, Duration::from_secs(12), None),
    );
    assert!(a.is_empty() && b.is_empty(), "{a:?} {b:?}");
    cql.drop_keyspace().await.unwrap();
}
