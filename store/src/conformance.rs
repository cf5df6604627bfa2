//! The behaviour every [`Store`] backend must show. A backend's test file runs all cases with
//! [`conformance_tests!`](crate::conformance_tests), giving an expression that makes a fresh,
//! empty store (anything that dereferences to a `Store`).

use std::collections::BTreeMap;
use std::time::Duration;

use dora_crds::{Kind, Scope};
use serde_json::{Value, json};

use crate::{
    ActionRecord, ChangeFilter, ChangeOp, Columns, Deletion, Event, EventQuery, EventType,
    ListQuery, MetaWrite, ObjectKey, Precondition, SpecOutcome, SpecWrite, StatusColumn, Store,
    StoreError, now_millis,
};

/// Generates one `#[tokio::test]` per conformance case. `$make` is an expression (evaluated
/// once per test) whose value is a future resolving to a fresh store or a guard that derefs
/// to one; the optional `$teardown` is an async function given that value after the case.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!($make, $crate::conformance::no_teardown);
    };
    ($make:expr, $teardown:path) => {
        $crate::conformance_tests!(@cases $make, $teardown;
            create_then_get,
            create_refuses_existing_row,
            spec_writes_together_each_succeed_or_fail_alone,
            identical_write_changes_nothing,
            spec_change_bumps_generation_and_keeps_previous_spec,
            label_change_keeps_generation,
            stale_version_is_refused,
            status_columns_leave_the_spec_alone,
            status_compare_and_set,
            concurrent_writes_to_one_partition_apply_once,
            every_table_round_trips,
            list_pages_through_a_partition,
            a_workspaced_kind_lists_across_workspaces,
            delete_returns_the_row_and_checks_version,
            change_feed_records_writes_in_order,
            early_changes_show_a_write_at_once,
            subscribers_wake_on_writes,
            lease_has_one_holder_and_fences_the_old_one,
            a_controller_creates_rows_placed_and_fenced,
            events_are_kept_in_order,
            actions_expire,
            hostile_names_and_values_round_trip,
            meta_round_trips_and_is_kept_when_left_out,
            a_delete_waits_for_finalizers,
        );
    };
    (@cases $make:expr, $teardown:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $make.await;
                $crate::conformance::$case(&*store).await;
                $teardown(store).await;
            }
        )*
    };
}

/// The teardown of backends that need none.
pub async fn no_teardown<T>(_store: T) {}

/// The key of a workload.
pub fn workload(zone: &str, workspace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Workload, zone, workspace, name)
}

/// An apply of `spec` to `key` by alice.
pub fn write(key: &ObjectKey, spec: Value, precondition: Precondition) -> SpecWrite {
    SpecWrite {
        key: key.clone(),
        precondition,
        owner: "alice".into(),
        labels: BTreeMap::new(),
        meta: Default::default(),
        spec_hash: dora_crds::spec_hash(Kind::Workload, &spec),
        spec,
        desired: Value::Null,
        computed: None,
        fence: None,
    }
}

/// Changes after `after`, waiting (up to 10 s) until there are at least `count`: a backend may
/// hold back the newest entries for a short skew allowance.
async fn changes_at_least(
    store: &dyn Store,
    filter: &ChangeFilter,
    after: &crate::Cursor,
    count: usize,
) -> Vec<crate::Change> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let changes = store.changes(filter, after, 100).await.unwrap();
        if changes.len() >= count || tokio::time::Instant::now() >= deadline {
            return changes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A workload spec.
pub fn spec(count: u32, image: &str) -> Value {
    json!({"replica": {"count": count}, "image": {"image": image}})
}

fn query(kind: Kind, zone: &str, workspace: Option<&str>, limit: usize) -> ListQuery {
    ListQuery {
        kind: kind.name().into(),
        scope: kind.scope(),
        zone: zone.into(),
        workspace: workspace.map(str::to_string),
        after: None,
        limit,
    }
}

pub async fn create_then_get(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    assert_eq!(store.get(&key).await.unwrap(), None);
    let outcome = store
        .put_spec(write(&key, spec(1, "a"), Precondition::Absent))
        .await
        .unwrap();
    let SpecOutcome::Created(row) = outcome else {
        panic!("expected Created, got {outcome:?}")
    };
    assert_eq!((row.version, row.generation), (1, 1));
    assert_eq!(row.owner, "alice");
    assert!(!row.uid.is_empty());
    assert!(row.created > 0 && row.updated >= row.created);
    assert_eq!(*row.resource, spec(1, "a"));
    assert_eq!(*row.computed, Value::Null);
    assert_eq!(store.get(&key).await.unwrap(), Some((*row).clone()));
}

pub async fn create_refuses_existing_row(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::Absent))
        .await
        .unwrap();
    let err = store
        .put_spec(write(&key, spec(2, "b"), Precondition::Absent))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists);
    assert_eq!(
        *store.get(&key).await.unwrap().unwrap().resource,
        spec(1, "a")
    );
}

pub async fn spec_writes_together_each_succeed_or_fail_alone(store: &dyn Store) {
    assert!(store.put_specs(Vec::new()).await.is_empty());
    let taken = workload("z1", "ws", "taken");
    let kept = workload("z1", "ws", "kept");
    for key in [&taken, &kept] {
        store
            .put_spec(write(key, spec(1, "old"), Precondition::Absent))
            .await
            .unwrap();
    }
    let new: Vec<ObjectKey> = (0..3)
        .map(|i| workload("z1", "ws", &format!("new{i}")))
        .collect();
    let results = store
        .put_specs(vec![
            write(&new[0], spec(1, "a"), Precondition::Absent),
            write(&taken, spec(2, "b"), Precondition::Absent),
            write(&new[1], spec(3, "c"), Precondition::Absent),
            write(&kept, spec(4, "d"), Precondition::Version(7)),
            write(&new[2], spec(5, "e"), Precondition::None),
        ])
        .await;
    assert_eq!(results.len(), 5);
    let created = [
        (0, &new[0], "a", 1),
        (2, &new[1], "c", 3),
        (4, &new[2], "e", 5),
    ];
    for (at, key, image, count) in created {
        let Ok(SpecOutcome::Created(row)) = &results[at] else {
            panic!("write {at}: expected Created, got {:?}", results[at])
        };
        assert_eq!(&row.key, key);
        assert_eq!(*row.resource, spec(count, image));
        assert_eq!(store.get(key).await.unwrap(), Some((**row).clone()));
    }
    assert_eq!(results[1], Err(StoreError::AlreadyExists));
    assert_eq!(
        results[3],
        Err(StoreError::Conflict {
            expected: 7,
            actual: 1
        })
    );
    for key in [&taken, &kept] {
        assert_eq!(
            *store.get(key).await.unwrap().unwrap().resource,
            spec(1, "old")
        );
    }
}

pub async fn identical_write_changes_nothing(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    let outcome = store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    assert!(
        matches!(outcome, SpecOutcome::Unchanged(ref row) if row.version == 1),
        "{outcome:?}"
    );
    let filter = ChangeFilter::all(key.kind.clone(), "z1");
    // A later write to another row shows when the feed has caught up. The create may still be
    // there (a backend's head may lag by its skew allowance); the identical write must not be.
    let marker = workload("z1", "ws", "marker");
    store
        .put_spec(write(&marker, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let changes = loop {
        let changes = store.changes(&filter, &head, 100).await.unwrap();
        if changes.iter().any(|c| c.key == marker) || tokio::time::Instant::now() >= deadline {
            break changes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(changes.iter().any(|c| c.key == marker), "{changes:?}");
    let of_train: Vec<_> = changes.iter().filter(|c| c.key == key).collect();
    assert!(
        of_train.len() <= 1,
        "the identical write added a change: {of_train:?}"
    );
    assert!(store.versions(&key).await.unwrap().is_empty());
}

pub async fn spec_change_bumps_generation_and_keeps_previous_spec(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let outcome = store
        .put_spec(write(&key, spec(1, "b"), Precondition::Version(1)))
        .await
        .unwrap();
    let SpecOutcome::Configured(row) = outcome else {
        panic!("expected Configured, got {outcome:?}")
    };
    assert_eq!((row.version, row.generation), (2, 2));
    assert_eq!(*row.resource, spec(1, "b"));
    store
        .put_spec(write(&key, spec(3, "c"), Precondition::None))
        .await
        .unwrap();
    let versions = store.versions(&key).await.unwrap();
    let kept: Vec<(u64, Value)> = versions
        .into_iter()
        .map(|v| (v.generation, v.spec))
        .collect();
    assert_eq!(kept, vec![(1, spec(1, "a")), (2, spec(1, "b"))]);
}

pub async fn label_change_keeps_generation(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let mut labelled = write(&key, spec(1, "a"), Precondition::None);
    labelled.labels.insert("team".into(), "vision".into());
    let outcome = store.put_spec(labelled).await.unwrap();
    let SpecOutcome::Configured(row) = outcome else {
        panic!("expected Configured, got {outcome:?}")
    };
    assert_eq!((row.version, row.generation), (2, 1));
    assert_eq!(row.labels.get("team").map(String::as_str), Some("vision"));
    assert!(store.versions(&key).await.unwrap().is_empty());
}

pub async fn stale_version_is_refused(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    store
        .put_spec(write(&key, spec(1, "b"), Precondition::Version(1)))
        .await
        .unwrap();
    let err = store
        .put_spec(write(&key, spec(1, "c"), Precondition::Version(1)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 1,
            actual: 2
        }
    );
    assert_eq!(
        *store.get(&key).await.unwrap().unwrap().resource,
        spec(1, "b")
    );
    let missing = workload("z1", "ws", "missing");
    let err = store
        .put_spec(write(&missing, spec(1, "a"), Precondition::Version(1)))
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound);
}

pub async fn status_columns_leave_the_spec_alone(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let row = store
        .put_status(
            &key,
            StatusColumn::Computed,
            Some(0),
            json!({"phase": "Scheduled"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (row.version, row.computed_version, row.observed_version),
        (1, 1, 0)
    );
    let row = store
        .put_status(
            &key,
            StatusColumn::Observed,
            None,
            json!({"state": "Running"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(row.observed_version, 1);
    // A later spec write keeps what the scheduler and the node wrote.
    let outcome = store
        .put_spec(write(&key, spec(2, "a"), Precondition::None))
        .await
        .unwrap();
    let row = outcome.row();
    assert_eq!(*row.computed, json!({"phase": "Scheduled"}));
    assert_eq!(*row.observed, json!({"state": "Running"}));
    let missing = workload("z1", "ws", "missing");
    let err = store
        .put_status(&missing, StatusColumn::Computed, None, json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound);
}

pub async fn status_compare_and_set(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    store
        .put_status(&key, StatusColumn::Computed, Some(0), json!({"n": 1}), None)
        .await
        .unwrap();
    let err = store
        .put_status(&key, StatusColumn::Computed, Some(0), json!({"n": 2}), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 0,
            actual: 1
        }
    );
    assert_eq!(
        *store.get(&key).await.unwrap().unwrap().computed,
        json!({"n": 1})
    );
}

/// Many writers at once in one partition, some racing for the same row: each compare-and-set
/// applies exactly once, and the rows read back for the changes are as of each change or later.
pub async fn concurrent_writes_to_one_partition_apply_once(store: &dyn Store) {
    const RACERS: usize = 3;
    let keys: Vec<ObjectKey> = (0..40)
        .map(|i| workload("z1", "ws", &format!("w{i}")))
        .collect();
    let start = store.head().await.unwrap();
    let creates = keys.iter().flat_map(|key| {
        (0..RACERS).map(|_| store.put_spec(write(key, spec(1, "a"), Precondition::Absent)))
    });
    let outcomes = futures::future::join_all(creates).await;
    for (key, outcomes) in keys.iter().zip(outcomes.chunks(RACERS)) {
        let created = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(SpecOutcome::Created(_))))
            .count();
        assert_eq!(created, 1, "{key}: {outcomes:?}");
        assert!(
            outcomes.iter().all(|o| matches!(
                o,
                Ok(SpecOutcome::Created(_)) | Err(StoreError::AlreadyExists)
            )),
            "{key}: {outcomes:?}"
        );
    }
    let sets = keys.iter().flat_map(|key| {
        (0..RACERS).map(move |n| {
            store.put_status(key, StatusColumn::Observed, Some(0), json!({"n": n}), None)
        })
    });
    let results = futures::future::join_all(sets).await;
    for (key, results) in keys.iter().zip(results.chunks(RACERS)) {
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{key}: {results:?}");
        let lost = StoreError::Conflict {
            expected: 0,
            actual: 1,
        };
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().err().is_none_or(|e| *e == lost)),
            "{key}: {results:?}"
        );
        let row = store.get(key).await.unwrap().unwrap();
        assert_eq!((row.observed_version, &row.observed), (1, &won[0].observed));
    }
    let filter = ChangeFilter::all(Kind::Workload.name(), "z1");
    let changes = changes_at_least(store, &filter, &start, 2 * keys.len()).await;
    assert_eq!(changes.len(), 2 * keys.len());
    let rows = store.rows_after(&changes).await.unwrap();
    for (change, row) in changes.iter().zip(&rows) {
        let row = row.as_ref().expect("no row was deleted");
        let version = match change.columns {
            Columns::Spec => row.version,
            Columns::Computed => row.computed_version,
            Columns::Observed => row.observed_version,
        };
        assert_eq!(row.key, change.key);
        assert!(version >= change.version, "{change:?} got {row:?}");
    }
}

pub async fn every_table_round_trips(store: &dyn Store) {
    let keys = [
        ObjectKey::new(Kind::User, "ignored", "ignored", "alice"),
        ObjectKey::custom("Notebook", Scope::Workspaced, "", "ws", "nb"),
        ObjectKey::new(Kind::Node, "z1", "", "gpu-01"),
        ObjectKey::new(Kind::Volume, "z1", "ws", "data"),
        ObjectKey::new(Kind::Container, "z1", "ws", "train.0"),
    ];
    for key in &keys {
        let body = json!({"workload": "train", "of": key.kind});
        store
            .put_spec(write(key, body.clone(), Precondition::Absent))
            .await
            .unwrap();
        let row = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} was not stored"));
        assert_eq!(&row.key, key);
        assert_eq!(*row.resource, body);
    }
    assert_eq!(keys[0].zone, "", "cluster-scoped keys carry no zone");
    let container = store
        .put_status(
            &keys[4],
            StatusColumn::Computed,
            None,
            json!({"node": "gpu-01"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(container.computed["node"], "gpu-01");
}

pub async fn list_pages_through_a_partition(store: &dyn Store) {
    for i in 0..25 {
        let workspace = if i % 2 == 0 { "even" } else { "odd" };
        let key = workload("z1", workspace, &format!("w{i:02}"));
        store
            .put_spec(write(&key, spec(1, "a"), Precondition::None))
            .await
            .unwrap();
    }
    store
        .put_spec(write(
            &workload("z2", "even", "elsewhere"),
            spec(1, "a"),
            Precondition::None,
        ))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut q = query(Kind::Workload, "z1", None, 10);
    let mut pages = 0;
    loop {
        let page = store.list(&q).await.unwrap();
        pages += 1;
        assert!(page.rows.len() <= 10);
        seen.extend(
            page.rows
                .iter()
                .map(|r| (r.key.workspace.clone(), r.key.name.clone())),
        );
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25, "every row once: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in key order");
    let odd = store
        .list(&query(Kind::Workload, "z1", Some("odd"), 100))
        .await
        .unwrap();
    assert_eq!(odd.rows.len(), 12);
    assert!(odd.rows.iter().all(|r| r.key.workspace == "odd"));
    let other_zone = store
        .list(&query(Kind::Workload, "z2", None, 100))
        .await
        .unwrap();
    assert_eq!(other_zone.rows.len(), 1);
    let other_kind = store
        .list(&query(Kind::Volume, "z1", None, 100))
        .await
        .unwrap();
    assert!(other_kind.rows.is_empty());
}

pub async fn a_workspaced_kind_lists_across_workspaces(store: &dyn Store) {
    for workspace in ["a", "b", "c"] {
        let key = ObjectKey::new(Kind::Workspace, "", "", workspace);
        store
            .put_spec(write(&key, json!({}), Precondition::None))
            .await
            .unwrap();
    }
    let notebook = |workspace: &str, name: &str| {
        ObjectKey::custom("Notebook", Scope::Workspaced, "", workspace, name)
    };
    for (workspace, name) in [("c", "n3"), ("a", "n2"), ("c", "n1"), ("a", "n1")] {
        store
            .put_spec(write(
                &notebook(workspace, name),
                json!({}),
                Precondition::None,
            ))
            .await
            .unwrap();
    }
    let other = ObjectKey::custom("Gadget", Scope::Workspaced, "", "a", "g1");
    store
        .put_spec(write(&other, json!({}), Precondition::None))
        .await
        .unwrap();
    let mut q = ListQuery {
        kind: "Notebook".into(),
        scope: Scope::Workspaced,
        zone: String::new(),
        workspace: None,
        after: None,
        limit: 2,
    };
    let mut pages = Vec::new();
    loop {
        let page = store.list(&q).await.unwrap();
        let keys: Vec<String> = page
            .rows
            .iter()
            .map(|r| format!("{}/{}", r.key.workspace, r.key.name))
            .collect();
        pages.push(keys);
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["a/n1", "a/n2"], vec!["c/n1", "c/n3"]],
        "every workspace in order; the last page has no continue token"
    );
    q.after = Some("no-slash".into());
    assert!(matches!(
        store.list(&q).await,
        Err(StoreError::BadCursor(_))
    ));
}

pub async fn delete_returns_the_row_and_checks_version(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let err = store
        .delete(&key, Precondition::Version(2))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 2,
            actual: 1
        }
    );
    store
        .put_spec(write(&key, spec(1, "b"), Precondition::None))
        .await
        .unwrap();
    assert_eq!(store.versions(&key).await.unwrap().len(), 1);
    let err = store
        .delete(&key, Precondition::Version(7))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            expected: 7,
            actual: 2
        }
    );
    let deleted = store.delete(&key, Precondition::Version(2)).await.unwrap();
    assert_eq!(*deleted.resource, spec(1, "b"));
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(
        store.delete(&key, Precondition::None).await.unwrap_err(),
        StoreError::NotFound
    );
    // A re-created row starts over, without the history of the deleted one.
    let outcome = store
        .put_spec(write(&key, spec(1, "z"), Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(outcome.row().generation, 1);
    assert!(store.versions(&key).await.unwrap().is_empty());
}

pub async fn change_feed_records_writes_in_order(store: &dyn Store) {
    let start = store.head().await.unwrap();
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    store
        .put_spec(write(
            &workload("z2", "ws", "other-zone"),
            spec(1, "a"),
            Precondition::None,
        ))
        .await
        .unwrap();
    store
        .put_spec(write(
            &ObjectKey::new(Kind::Volume, "z1", "ws", "vol"),
            spec(1, "a"),
            Precondition::None,
        ))
        .await
        .unwrap();
    store
        .put_status(
            &key,
            StatusColumn::Observed,
            None,
            json!({"state": "Running"}),
            None,
        )
        .await
        .unwrap();
    let filter = ChangeFilter::all("Workload", "z1");
    let changes = changes_at_least(store, &filter, &start, 2).await;
    let seen: Vec<(ChangeOp, Columns, u64)> = changes
        .iter()
        .map(|c| (c.op, c.columns, c.version))
        .collect();
    assert_eq!(
        seen,
        vec![
            (ChangeOp::Put, Columns::Spec, 1),
            (ChangeOp::Put, Columns::Observed, 1)
        ]
    );
    assert!(changes.iter().all(|c| c.key == key));
    // Resuming from a cursor sees only what came after it.
    let resume = changes[0].cursor.clone();
    store.delete(&key, Precondition::None).await.unwrap();
    let later = changes_at_least(store, &filter, &resume, 2).await;
    let ops: Vec<ChangeOp> = later.iter().map(|c| c.op).collect();
    assert_eq!(ops, vec![ChangeOp::Put, ChangeOp::Delete]);
    let by_name = ChangeFilter {
        name: Some("nope".into()),
        ..filter
    };
    assert!(
        store
            .changes(&by_name, &start, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let limited = store
        .changes(
            &ChangeFilter {
                name: None,
                ..by_name
            },
            &start,
            1,
        )
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
}

/// `changes_early` shows a write as soon as it is made; the final feed shows the same entry.
pub async fn early_changes_show_a_write_at_once(store: &dyn Store) {
    let start = store.head().await.unwrap();
    let key = workload("z1", "ws", "early");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::Absent))
        .await
        .unwrap();
    let filter = ChangeFilter::all(Kind::Workload.name(), "z1");
    let early = store.changes_early(&filter, &start, 10).await.unwrap();
    assert_eq!(early.len(), 1, "{early:?}");
    assert_eq!(early[0].key, key);
    let settled = changes_at_least(store, &filter, &start, 1).await;
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].cursor, early[0].cursor);
}

pub async fn subscribers_wake_on_writes(store: &dyn Store) {
    let mut rx = store.subscribe();
    rx.borrow_and_update();
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a write wakes subscribers")
        .unwrap();
}

pub async fn lease_has_one_holder_and_fences_the_old_one(store: &dyn Store) {
    let ttl = Duration::from_millis(300);
    let a = store
        .acquire_lease("z1", "scheduler", "a", ttl)
        .await
        .unwrap()
        .expect("a takes the free lease");
    let stored = store.lease("z1", "scheduler").await.unwrap().unwrap();
    assert_eq!((stored.holder.as_str(), stored.epoch), ("a", a.epoch));
    assert!(store.lease("z1", "creditsys").await.unwrap().is_none());
    assert!(
        store
            .acquire_lease("z1", "scheduler", "b", ttl)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .acquire_lease("z2", "scheduler", "b", ttl)
            .await
            .unwrap()
            .is_some(),
        "zones are independent"
    );
    let renewed = store
        .acquire_lease("z1", "scheduler", "a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, a.epoch);
    let key = workload("z1", "ws", "train");
    store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    store
        .put_status(
            &key,
            StatusColumn::Computed,
            None,
            json!({"by": "a"}),
            Some(&a.fence()),
        )
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let b = store
        .acquire_lease("z1", "scheduler", "b", ttl)
        .await
        .unwrap()
        .expect("b takes over an expired lease");
    assert!(b.epoch > a.epoch);
    let err = store
        .put_status(
            &key,
            StatusColumn::Computed,
            None,
            json!({"by": "a"}),
            Some(&a.fence()),
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::Fenced { epoch: a.epoch });
    assert_eq!(
        *store.get(&key).await.unwrap().unwrap().computed,
        json!({"by": "a"})
    );
    store.release_lease(&b).await.unwrap();
    let c = store
        .acquire_lease("z1", "scheduler", "c", ttl)
        .await
        .unwrap()
        .expect("a released lease is free");
    assert!(c.epoch > b.epoch);
}

/// A controller may create a system row with its computed columns in the same write, fenced by
/// its lease; the computed columns are ignored when the row exists.
pub async fn a_controller_creates_rows_placed_and_fenced(store: &dyn Store) {
    let lease = store
        .acquire_lease("z1", "scheduler", "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let key = ObjectKey::new(Kind::Container, "z1", "ws", "train.0");
    let mut create = write(
        &key,
        json!({"workload": "train", "index": 0}),
        Precondition::Absent,
    );
    create.computed = Some(json!({"node": "n1", "epoch": 1}));
    create.fence = Some(lease.fence());
    let row = store.put_spec(create.clone()).await.unwrap().row().clone();
    assert_eq!(*row.computed, json!({"node": "n1", "epoch": 1}));
    assert_eq!(row.computed_version, 1);
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (stored.computed, stored.computed_version),
        (row.computed.clone(), 1)
    );
    assert_eq!(
        store.put_spec(create).await.unwrap_err(),
        StoreError::AlreadyExists
    );
    let mut stale = write(
        &ObjectKey::new(Kind::Container, "z1", "ws", "train.1"),
        json!({"workload": "train", "index": 1}),
        Precondition::Absent,
    );
    stale.fence = Some(crate::Fence {
        epoch: lease.epoch + 1,
        ..lease.fence()
    });
    assert!(matches!(
        store.put_spec(stale).await.unwrap_err(),
        StoreError::Fenced { .. }
    ));
    assert!(
        store
            .get(&ObjectKey::new(Kind::Container, "z1", "ws", "train.1"))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn events_are_kept_in_order(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    let other = workload("z1", "ws", "other");
    for (i, k) in [&key, &other, &key].into_iter().enumerate() {
        store
            .append_event(Event::new(
                k,
                EventType::Normal,
                "Applied",
                format!("step {i}"),
                "apiserver",
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let volume = ObjectKey::new(Kind::Volume, "z1", "ws", "v");
    store
        .append_events(vec![
            Event::new(&volume, EventType::Warning, "Full", "x", "node"),
            Event::new(&volume, EventType::Normal, "Freed", "y", "node"),
        ])
        .await
        .unwrap();
    let q = EventQuery {
        zone: "z1".into(),
        kind: Some("Workload".into()),
        name: Some("train".into()),
        limit: 10,
        ..Default::default()
    };
    let events = store.events(&q).await.unwrap();
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, vec!["step 0", "step 2"]);
    let all = store
        .events(&EventQuery {
            zone: "z1".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let reasons: Vec<&str> = all.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["Applied", "Applied", "Applied", "Full", "Freed"]
    );
    let newest = store
        .events(&EventQuery {
            zone: "z1".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        vec!["x", "y"]
    );
    let after = store
        .events(&EventQuery {
            after: Some(events[0].id.clone()),
            ..q
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].message, "step 2");
    assert!(
        store
            .events(&EventQuery {
                zone: "z9".into(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn actions_expire(store: &dyn Store) {
    let key = workload("z1", "ws", "train");
    let now = now_millis();
    for (action, ttl) in [("pause", 60_000), ("resume", -1)] {
        store
            .put_action(ActionRecord {
                id: uuid::Uuid::now_v7().to_string(),
                key: key.clone(),
                destination: "scheduler".into(),
                action: action.into(),
                payload: json!({}),
                created: now,
                expires: now + ttl,
            })
            .await
            .unwrap();
    }
    let actions = store.actions("z1", "Workload", None).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action, "pause");
    assert_eq!(actions[0].key, key);
    assert!(
        store
            .actions("z1", "Workload", Some(&actions[0].id))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn hostile_names_and_values_round_trip(store: &dyn Store) {
    // CQL keywords as key parts, quotes and statement fragments as values: all bound, never
    // spliced into a statement, so they come back unchanged.
    let key = workload("select", "from", "where.drop-table");
    let hostile = "'); DROP TABLE resources; -- \" \\ $$ ; \u{0}";
    let mut w = write(
        &key,
        json!({"image": {"image": hostile}, "quote": "it's"}),
        Precondition::Absent,
    );
    w.owner = hostile.into();
    w.labels.insert("team".into(), hostile.into());
    store.put_spec(w).await.unwrap();
    let row = store
        .get(&key)
        .await
        .unwrap()
        .expect("stored under its keyword-named key");
    assert_eq!(row.resource["image"]["image"], hostile);
    assert_eq!(row.resource["quote"], "it's");
    assert_eq!(row.owner, hostile);
    assert_eq!(row.labels["team"], hostile);
    let mut event = Event::new(&key, EventType::Warning, "Odd'Reason", hostile, "test");
    event.message = hostile.into();
    store.append_event(event).await.unwrap();
    let q = EventQuery {
        zone: "select".into(),
        kind: Some("Workload".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.events(&q).await.unwrap()[0].message, hostile);
    let listed = store
        .list(&query(Kind::Workload, "select", Some("from"), 10))
        .await
        .unwrap();
    assert_eq!(listed.rows.len(), 1);
    assert!(
        store
            .get(&workload("z1", "ws", "other"))
            .await
            .unwrap()
            .is_none(),
        "the tables are intact"
    );
}

/// A write of `spec` to `key` with finalizers, annotations and an owner.
fn with_meta(key: &ObjectKey, finalizers: &[&str]) -> SpecWrite {
    SpecWrite {
        meta: MetaWrite {
            annotations: Some(BTreeMap::from([("note".into(), "it's \"quoted\"".into())])),
            owner_references: Some(vec![dora_crds::OwnerReference {
                api_version: "v1".into(),
                kind: "Workload".into(),
                name: "parent".into(),
                uid: "0b0f-uid".into(),
                controller: true,
                block_owner_deletion: false,
            }]),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            delete: false,
        },
        ..write(key, spec(1, "a"), Precondition::None)
    }
}

pub async fn meta_round_trips_and_is_kept_when_left_out(store: &dyn Store) {
    let key = workload("z1", "ws", "child");
    let created = store
        .put_spec(with_meta(&key, &["example.com/a"]))
        .await
        .unwrap();
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.meta, created.row().meta);
    assert_eq!(stored.meta.annotations["note"], "it's \"quoted\"");
    assert_eq!(stored.meta.owner_references[0].name, "parent");
    assert!(stored.meta.owner_references[0].controller);
    assert_eq!(stored.meta.finalizers, ["example.com/a"]);
    assert_eq!(stored.meta.deletion_timestamp, None);
    let outcome = store
        .put_spec(write(&key, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    assert!(matches!(outcome, SpecOutcome::Unchanged(_)), "{outcome:?}");
    let cleared = SpecWrite {
        meta: MetaWrite {
            annotations: Some(BTreeMap::new()),
            ..MetaWrite::default()
        },
        ..write(&key, spec(1, "a"), Precondition::None)
    };
    let outcome = store.put_spec(cleared).await.unwrap();
    let SpecOutcome::Configured(row) = outcome else {
        panic!("expected Configured, got {outcome:?}")
    };
    assert_eq!((row.version, row.generation), (2, 1));
    let stored = store.get(&key).await.unwrap().unwrap();
    assert!(stored.meta.annotations.is_empty());
    assert_eq!(stored.meta.finalizers, ["example.com/a"], "kept");
    assert_eq!(stored.meta.owner_references.len(), 1, "kept");
}

pub async fn a_delete_waits_for_finalizers(store: &dyn Store) {
    let plain = workload("z1", "ws", "plain");
    store
        .put_spec(write(&plain, spec(1, "a"), Precondition::None))
        .await
        .unwrap();
    let deleted = store
        .delete_or_finalize(&plain, Precondition::None)
        .await
        .unwrap();
    assert!(matches!(deleted, Deletion::Deleted(_)), "{deleted:?}");
    assert_eq!(store.get(&plain).await.unwrap(), None);

    let key = workload("z1", "ws", "guarded");
    store
        .put_spec(with_meta(&key, &["example.com/a", "example.com/b"]))
        .await
        .unwrap();
    let Deletion::Pending(row) = store
        .delete_or_finalize(&key, Precondition::None)
        .await
        .unwrap()
    else {
        panic!("a row with finalizers is only marked")
    };
    let since = row.meta.deletion_timestamp.expect("marked");
    assert_eq!(store.get(&key).await.unwrap().as_ref(), Some(&*row));
    let Deletion::Pending(again) = store
        .delete_or_finalize(&key, Precondition::None)
        .await
        .unwrap()
    else {
        panic!("still pending")
    };
    assert_eq!(again.version, row.version, "a second delete writes nothing");
    let added = store
        .put_spec(with_meta(&key, &["example.com/a", "example.com/c"]))
        .await
        .unwrap_err();
    assert!(
        matches!(added, StoreError::Invalid { ref field, .. } if field == "metadata.finalizers"),
        "{added:?}"
    );
    let outcome = store
        .put_spec(with_meta(&key, &["example.com/b"]))
        .await
        .unwrap();
    assert_eq!(outcome.row().meta.deletion_timestamp, Some(since));
    assert_eq!(
        store.delete_if_finalized(outcome.row()).await.unwrap(),
        None
    );
    let outcome = store.put_spec(with_meta(&key, &[])).await.unwrap();
    assert!(outcome.row().meta.finalized());
    let gone = store.delete_if_finalized(outcome.row()).await.unwrap();
    assert_eq!(gone.map(|row| row.version), Some(outcome.row().version));
    assert_eq!(store.get(&key).await.unwrap(), None);
}
