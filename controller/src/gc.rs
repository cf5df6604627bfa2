//! The garbage collector of one zone: deletes, in the background, the objects whose owners
//! (`metadata.ownerReferences`, matched by uid) are all gone, as Kubernetes' default cascade
//! does, and completes the deletes whose last finalizer was removed. It follows every kind
//! people apply, built-in or defined (the zone's partitions and the cluster-wide ones), and
//! keeps an index from owner to dependents, so a deleted owner leads straight to its
//! dependents without a scan.
//!
//! Dependents are deleted as a person's delete is: one with finalizers is only marked, and
//! goes when its controllers have removed them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dora_crds::spec::DefinitionSpec;
use dora_crds::{Kind, OwnerReference, registry};
use dora_store::{
    Deletion, Event, EventType, Fence, ObjectKey, Precondition, Row, Store, StoreError,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use dora_runtime::{Leader, LeaseConfig, Target, WatchConfig, WatchEvent, watch};

/// The component name in leases and events.
pub const COMPONENT: &str = "gc";

/// Garbage collector settings.
#[derive(Debug, Clone)]
pub struct GcConfig {
    pub zone: String,
    pub lease: LeaseConfig,
    pub watch: WatchConfig,
    /// How often the kinds defined at run time are looked for, to follow new ones.
    pub rescan: Duration,
}

impl GcConfig {
    /// Defaults for `zone`.
    pub fn new(zone: &str) -> Self {
        GcConfig {
            zone: zone.to_string(),
            lease: LeaseConfig::default(),
            watch: WatchConfig::default(),
            rescan: Duration::from_secs(1),
        }
    }
}

/// The garbage collector of `zone` runs with [`dora_runtime::run_leader`].
impl Leader for GcConfig {
    const COMPONENT: &'static str = COMPONENT;

    fn zone(&self) -> &str {
        &self.zone
    }

    fn lease(&self) -> &LeaseConfig {
        &self.lease
    }

    fn lead(
        self,
        store: Arc<dyn Store>,
        _fence: Fence,
        lost: CancellationToken,
    ) -> impl Future<Output = ()> + Send {
        collect(store, self, lost)
    }
}

/// Whether objects of `kind` may own or depend on others: every kind people apply. Views are
/// not stored, and the rows Dora makes itself (containers, credit accounts) carry no owners.
fn followed(kind: Kind) -> bool {
    !kind.is_view() && !kind.is_system()
}

async fn collect(store: Arc<dyn Store>, config: GcConfig, lost: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<(Kind, WatchEvent)>(256);
    let mut followed_kinds = HashSet::new();
    let mut index = Index::default();
    let mut rescan = tokio::time::interval(config.rescan);
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            _ = rescan.tick() => {
                for kind in Kind::known().into_iter().filter(|k| followed(*k)) {
                    if followed_kinds.insert(kind) {
                        follow(&store, &config, kind, tx.clone(), lost.clone());
                    }
                }
            }
            Some((kind, event)) = rx.recv() => {
                learn_kinds(kind, &event);
                let mut due = index.apply(kind, event);
                while let Ok((kind, event)) = rx.try_recv() {
                    learn_kinds(kind, &event);
                    due.extend(index.apply(kind, event));
                }
                for key in due {
                    if let Err(e) = check(&*store, &key).await {
                        tracing::warn!(%key, error = %e, "garbage collection failed; trying again on the next change or list");
                    }
                }
            }
        }
    }
}

/// Makes the kinds that Definitions declare known in this process, so that a collector that
/// runs on its own (`dora gc`, without an API server beside it) follows them and finds owners
/// of those kinds; the next rescan starts following them.
fn learn_kinds(kind: Kind, event: &WatchEvent) {
    if kind != Kind::Definition {
        return;
    }
    let rows = match event {
        WatchEvent::Applied(row) => std::slice::from_ref(row),
        WatchEvent::Listed(rows) => rows.as_slice(),
        WatchEvent::Deleted(_) => return,
    };
    for row in rows {
        let defined = dora_crds::decode::<DefinitionSpec>(&row.resource)
            .map_err(|e| e.to_string())
            .and_then(|spec| registry::define(&spec).map_err(|e| e.to_string()));
        if let Err(error) = defined {
            tracing::warn!(definition = %row.key.name, %error, "cannot follow the kind this Definition declares");
        }
    }
}

/// Forwards the events of a watcher of `kind` (in the zone, or cluster-wide for kinds
/// without one) to the collector.
fn follow(
    store: &Arc<dyn Store>,
    config: &GcConfig,
    kind: Kind,
    tx: mpsc::Sender<(Kind, WatchEvent)>,
    lost: CancellationToken,
) {
    let zone = if kind.scope().has_zone() {
        config.zone.as_str()
    } else {
        ""
    };
    let mut events = watch(store.clone(), Target::new(kind, zone), config.watch, lost);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if tx.send((kind, event)).await.is_err() {
                return;
            }
        }
    });
}

/// Where the owner `reference` of the object at `dependent` is: in the dependent's zone and
/// workspace, as far as the owner's kind has them. `None` when the kind is not known here.
pub fn owner_key(dependent: &ObjectKey, reference: &OwnerReference) -> Option<ObjectKey> {
    let kind = reference.owner_kind()?;
    Some(ObjectKey::custom(
        kind.name(),
        kind.scope(),
        &dependent.zone,
        &dependent.workspace,
        &reference.name,
    ))
}

/// An owner as a dependent names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    key: ObjectKey,
    uid: String,
}

/// The followed objects that have owners, by owner.
#[derive(Debug, Default)]
struct Index {
    /// Each dependent's owners.
    owners: HashMap<ObjectKey, Vec<Owner>>,
    /// Each owner's dependents.
    dependents: HashMap<ObjectKey, HashSet<ObjectKey>>,
    /// Dependents naming an owner of a kind not known yet, looked at again on every list:
    /// a kind becomes known before its first list.
    unresolved: HashMap<ObjectKey, Arc<Row>>,
}

impl Index {
    /// Takes in what the watcher of `kind` saw; returns the objects to check: dependents that
    /// may have lost an owner, and objects whose delete waits on nothing any more.
    fn apply(&mut self, kind: Kind, event: WatchEvent) -> Vec<ObjectKey> {
        let mut due = Vec::new();
        match event {
            WatchEvent::Applied(row) => self.applied(&row, &mut due),
            WatchEvent::Deleted(key) => {
                self.unresolved.remove(&key);
                self.set(&key, Vec::new());
                due.extend(self.dependents_of(&key));
            }
            WatchEvent::Listed(rows) => {
                let listed: HashSet<&ObjectKey> = rows.iter().map(|row| &row.key).collect();
                let gone: Vec<ObjectKey> = self
                    .owners
                    .keys()
                    .filter(|key| key.kind == kind.name() && !listed.contains(key))
                    .cloned()
                    .collect();
                for key in gone {
                    self.set(&key, Vec::new());
                }
                self.unresolved
                    .retain(|key, _| key.kind != kind.name() || listed.contains(key));
                let retried: Vec<Arc<Row>> = self.unresolved.values().cloned().collect();
                for row in rows.iter().chain(&retried) {
                    self.applied(row, &mut due);
                }
                // Owners of this kind deleted while nobody watched.
                due.extend(
                    self.dependents
                        .iter()
                        .filter(|(owner, _)| owner.kind == kind.name() && !listed.contains(owner))
                        .flat_map(|(_, dependents)| dependents.iter().cloned()),
                );
            }
        }
        due.sort();
        due.dedup();
        due
    }

    fn applied(&mut self, row: &Arc<Row>, due: &mut Vec<ObjectKey>) {
        let owners: Vec<Owner> = row
            .meta
            .owner_references
            .iter()
            .filter_map(|reference| {
                Some(Owner {
                    key: owner_key(&row.key, reference)?,
                    uid: reference.uid.clone(),
                })
            })
            .collect();
        if owners.len() < row.meta.owner_references.len() {
            self.unresolved.insert(row.key.clone(), row.clone());
        } else {
            self.unresolved.remove(&row.key);
        }
        let changed = self.owners.get(&row.key).map_or(&[][..], Vec::as_slice) != owners;
        if (changed && !owners.is_empty()) || row.meta.finalized() {
            due.push(row.key.clone());
        }
        if changed {
            self.set(&row.key, owners);
        }
        // An owner deleted and made again under its name is another object.
        if let Some(dependents) = self.dependents.get(&row.key) {
            due.extend(
                dependents
                    .iter()
                    .filter(|dependent| {
                        self.owners[*dependent]
                            .iter()
                            .any(|owner| owner.key == row.key && owner.uid != row.uid)
                    })
                    .cloned(),
            );
        }
    }

    /// Records the owners of `dependent` (none: forgets it).
    fn set(&mut self, dependent: &ObjectKey, owners: Vec<Owner>) {
        for owner in self.owners.remove(dependent).into_iter().flatten() {
            if let Some(dependents) = self.dependents.get_mut(&owner.key) {
                dependents.remove(dependent);
                if dependents.is_empty() {
                    self.dependents.remove(&owner.key);
                }
            }
        }
        if owners.is_empty() {
            return;
        }
        for owner in &owners {
            self.dependents
                .entry(owner.key.clone())
                .or_default()
                .insert(dependent.clone());
        }
        self.owners.insert(dependent.clone(), owners);
    }

    fn dependents_of(&self, owner: &ObjectKey) -> Vec<ObjectKey> {
        self.dependents
            .get(owner)
            .map(|dependents| dependents.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Reads the object at `key` as stored now: completes its delete if its last finalizer is
/// gone, and deletes it if none of its owners exists any more.
async fn check(store: &dyn Store, key: &ObjectKey) -> Result<(), StoreError> {
    let Some(row) = store.get(key).await? else {
        return Ok(());
    };
    if store.delete_if_finalized(&row).await?.is_some() {
        tracing::info!(kind = %key.kind, zone = %key.zone, workspace = %key.workspace, name = %key.name, "deleted once its finalizers were removed");
        return Ok(());
    }
    if row.meta.owner_references.is_empty() || row.meta.terminating() {
        return Ok(());
    }
    for reference in &row.meta.owner_references {
        // An owner of a kind not known here is taken as present: nothing is deleted on a guess.
        let Some(owner) = owner_key(key, reference) else {
            return Ok(());
        };
        if store
            .get(&owner)
            .await?
            .is_some_and(|found| found.uid == reference.uid)
        {
            return Ok(());
        }
    }
    let owners: Vec<String> = row
        .meta
        .owner_references
        .iter()
        .map(|owner| format!("{} {}", owner.kind, owner.name))
        .collect();
    let owners = owners.join(", ");
    let (reason, message) = match store
        .delete_or_finalize(key, Precondition::Version(row.version))
        .await
    {
        Ok(Deletion::Deleted(_)) => (
            "GarbageCollected",
            format!("deleted: its owner {owners} is gone"),
        ),
        Ok(Deletion::Pending(row)) => (
            "GarbageCollecting",
            format!(
                "its owner {owners} is gone; deletion pending on finalizers {}",
                row.meta.finalizers.join(", ")
            ),
        ),
        // Changed or gone meanwhile: the watcher brings the new state.
        Err(StoreError::Conflict { .. } | StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    tracing::info!(kind = %key.kind, zone = %key.zone, workspace = %key.workspace, name = %key.name, %owners, reason, "garbage collected");
    store
        .append_event(Event::new(
            key,
            EventType::Normal,
            reason,
            message,
            COMPONENT,
        ))
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dora_store::RowMeta;

    use super::*;

    fn row(kind: Kind, name: &str, uid: &str, owners: &[(&str, &str)]) -> Arc<Row> {
        Arc::new(Row {
            meta: RowMeta {
                owner_references: owners
                    .iter()
                    .map(|(name, uid)| OwnerReference {
                        api_version: "v1".into(),
                        kind: "Workload".into(),
                        name: name.to_string(),
                        uid: uid.to_string(),
                        controller: false,
                        block_owner_deletion: false,
                    })
                    .collect(),
                ..RowMeta::default()
            },
            ..Row::new(ObjectKey::new(kind, "z", "w", name), uid)
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Workload, "z", "w", name)
    }

    #[test]
    fn owners_are_found_in_the_dependents_partition_as_far_as_their_scope_goes() {
        let dependent = key("child");
        let mut reference = OwnerReference {
            api_version: "v1".into(),
            kind: "wk".into(),
            name: "parent".into(),
            uid: "u".into(),
            controller: false,
            block_owner_deletion: false,
        };
        assert_eq!(owner_key(&dependent, &reference), Some(key("parent")));
        reference.kind = "Zone".into();
        assert_eq!(
            owner_key(&dependent, &reference),
            Some(ObjectKey::new(Kind::Zone, "", "", "parent"))
        );
        reference.kind = "NoSuchKind".into();
        assert_eq!(owner_key(&dependent, &reference), None);
    }

    #[test]
    fn a_deleted_owner_leads_to_its_dependents_only() {
        let mut index = Index::default();
        let due = index.apply(
            Kind::Workload,
            WatchEvent::Listed(vec![
                row(Kind::Workload, "parent", "p1", &[]),
                row(Kind::Workload, "child", "c1", &[("parent", "p1")]),
                row(Kind::Workload, "other", "o1", &[("elsewhere", "e1")]),
            ]),
        );
        assert_eq!(
            due,
            vec![key("child"), key("other")],
            "new dependents are checked once"
        );
        assert!(
            index
                .apply(
                    Kind::Workload,
                    WatchEvent::Applied(row(Kind::Workload, "child", "c1", &[("parent", "p1")]))
                )
                .is_empty(),
            "an unchanged dependent needs no check"
        );
        assert_eq!(
            index.apply(Kind::Workload, WatchEvent::Deleted(key("parent"))),
            vec![key("child")]
        );
        assert!(
            index
                .apply(Kind::Workload, WatchEvent::Deleted(key("nobody")))
                .is_empty()
        );
    }

    #[test]
    fn an_owner_made_again_under_its_name_is_another_object() {
        let mut index = Index::default();
        index.apply(
            Kind::Workload,
            WatchEvent::Applied(row(Kind::Workload, "child", "c1", &[("parent", "p1")])),
        );
        assert!(
            index
                .apply(
                    Kind::Workload,
                    WatchEvent::Applied(row(Kind::Workload, "parent", "p1", &[]))
                )
                .is_empty()
        );
        assert_eq!(
            index.apply(
                Kind::Workload,
                WatchEvent::Applied(row(Kind::Workload, "parent", "p2", &[]))
            ),
            vec![key("child")]
        );
    }

    #[test]
    fn a_list_finds_owners_deleted_while_nobody_watched_and_forgets_deleted_dependents() {
        let mut index = Index::default();
        index.apply(
            Kind::Workload,
            WatchEvent::Listed(vec![
                row(Kind::Workload, "parent", "p1", &[]),
                row(Kind::Workload, "child", "c1", &[("parent", "p1")]),
            ]),
        );
        let due = index.apply(
            Kind::Workload,
            WatchEvent::Listed(vec![row(
                Kind::Workload,
                "child",
                "c1",
                &[("parent", "p1")],
            )]),
        );
        assert_eq!(due, vec![key("child")]);
        index.apply(Kind::Workload, WatchEvent::Listed(Vec::new()));
        assert!(index.owners.is_empty() && index.dependents.is_empty());
    }

    /// A collector on its own, with no API server in the process to define kinds: it learns
    /// a defined kind from its Definition, and deletes the dependents of an owner of that kind
    /// once the owner is deleted, not before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collector_on_its_own_learns_defined_kinds_and_collects_their_dependents() {
        use dora_store::sqlite::SqliteStore;
        use dora_store::{MetaWrite, Precondition, SpecWrite};
        use serde_json::json;

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("db")).unwrap());
        let put = |key: ObjectKey, spec: serde_json::Value, meta: MetaWrite| SpecWrite {
            key,
            precondition: Precondition::None,
            owner: "test".into(),
            labels: Default::default(),
            meta,
            spec_hash: String::new(),
            spec,
            desired: serde_json::Value::Null,
            computed: None,
            fence: None,
        };
        let definition =
            json!({"names": {"kind": "Gcsolo", "plural": "gcsolos"}, "scope": "zoned"});
        store
            .put_spec(put(
                ObjectKey::new(Kind::Definition, "", "", "gcsolos"),
                definition,
                MetaWrite::default(),
            ))
            .await
            .unwrap();
        let owner_key = ObjectKey::custom("Gcsolo", dora_crds::Scope::Zoned, "z", "", "boss");
        let owner = store
            .put_spec(put(owner_key.clone(), json!({}), MetaWrite::default()))
            .await
            .unwrap();
        let dependent = key("worker");
        let reference = OwnerReference {
            api_version: "v1".into(),
            kind: "Gcsolo".into(),
            name: "boss".into(),
            uid: owner.row().uid.clone(),
            controller: true,
            block_owner_deletion: false,
        };
        store
            .put_spec(put(
                dependent.clone(),
                json!({}),
                MetaWrite {
                    owner_references: Some(vec![reference]),
                    ..MetaWrite::default()
                },
            ))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let mut config = GcConfig::new("z");
        config.rescan = Duration::from_millis(50);
        tokio::spawn(dora_runtime::run_leader(
            store.clone(),
            config,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            store.get(&dependent).await.unwrap().is_some(),
            "its owner exists"
        );
        store.delete(&owner_key, Precondition::None).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.get(&dependent).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the dependent stays"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
    }

    #[test]
    fn a_delete_whose_finalizers_are_all_removed_is_due() {
        let mut index = Index::default();
        let mut finalized = Arc::unwrap_or_clone(row(Kind::Workload, "done", "d1", &[]));
        finalized.meta.deletion_timestamp = Some(1);
        assert_eq!(
            index.apply(Kind::Workload, WatchEvent::Applied(Arc::new(finalized))),
            vec![key("done")]
        );
    }
}
