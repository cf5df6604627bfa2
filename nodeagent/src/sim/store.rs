//! Hollow nodes that write their rows straight to the store, leaving the API server out: for
//! measuring the scheduler alone.

use std::sync::Arc;

use dora_crds::Kind;
use dora_crds::spec::NodeSpec;
use dora_crds::status::{ContainerReport, NodeReport, Placement};
use dora_runtime::{Target, WatchEvent, watch};
use dora_store::{ObjectKey, Precondition, Row, SpecWrite, StatusColumn, Store, StoreError};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CONCURRENT_WRITES, Instance, Reported, Seen, SimConfig, Update, script};

fn encode<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    dora_crds::encode(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) async fn register(store: &dyn Store, config: &SimConfig) -> anyhow::Result<()> {
    let spec = encode(&NodeSpec::default())?;
    let report = encode(&config.report())?;
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(0..config.nodes)
        .map(|i| {
            let key = ObjectKey::new(Kind::Node, &config.zone, "", &config.name(i));
            let write = SpecWrite {
                key: key.clone(),
                precondition: Precondition::Absent,
                owner: "sim".into(),
                labels: Default::default(),
                meta: Default::default(),
                spec_hash: dora_crds::spec_hash(Kind::Node, &spec),
                spec: spec.clone(),
                desired: serde_json::Value::Null,
                computed: None,
                fence: None,
            };
            let report = report.clone();
            async move {
                match store.put_spec(write).await {
                    Ok(_) | Err(StoreError::AlreadyExists) => {}
                    Err(e) => return Err(e),
                }
                store
                    .put_status(&key, StatusColumn::Observed, None, report, None)
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(())
}

pub(super) async fn heartbeat(
    store: &dyn Store,
    config: &SimConfig,
    i: usize,
    report: &NodeReport,
) -> anyhow::Result<()> {
    let key = ObjectKey::new(Kind::Node, &config.zone, "", &config.name(i));
    store
        .put_status(&key, StatusColumn::Observed, None, encode(report)?, None)
        .await?;
    Ok(())
}

pub(super) async fn report(
    store: &dyn Store,
    key: &ObjectKey,
    report: &ContainerReport,
) -> Reported {
    // Encoded per try: retries are rare, and a copy of the encoded tree costs as much.
    let written = match encode(report) {
        Ok(value) => {
            store
                .put_status(key, StatusColumn::Observed, None, value, None)
                .await
        }
        Err(e) => Err(e),
    };
    match written {
        Ok(_) | Err(StoreError::NotFound) => Reported::Done,
        Err(e @ StoreError::Unavailable(_)) => Reported::Again(e.to_string()),
        Err(e) => Reported::Failed(e.to_string()),
    }
}

/// The placement of a container row (default: unbound).
fn placement(row: &Row) -> Placement {
    dora_crds::decode_written(&row.computed).unwrap_or_default()
}

fn seen(row: &Row) -> Seen {
    let place = placement(row);
    let current = dora_crds::decode_written::<ContainerReport>(&row.observed)
        .filter(|report| report.is_of(&place));
    let script = Seen::may_start(&place, current.as_ref())
        .then(|| script(&row.resource))
        .flatten();
    Seen {
        key: row.key.clone(),
        uid: row.uid.clone(),
        place,
        current,
        script,
    }
}

/// One watch of the zone's containers, those bound to other nodes left out.
pub(super) fn updates(
    store: Arc<dyn Store>,
    config: SimConfig,
    stop: CancellationToken,
) -> mpsc::Receiver<Update> {
    let (sender, receiver) = mpsc::channel(1024);
    let mut events = watch(
        store,
        Target::new(Kind::Container, &config.zone),
        config.watch,
        stop,
    );
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let updates = match event {
                WatchEvent::Applied(row) => vec![Update::Seen(Box::new(seen(&row)))],
                WatchEvent::Deleted(key) => vec![Update::Gone(key)],
                WatchEvent::Listed(rows) => rows
                    .iter()
                    .map(|row| Update::Seen(Box::new(seen(row))))
                    .collect(),
            };
            for update in updates {
                if sender.send(update).await.is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

pub(super) async fn is_bound(
    store: &dyn Store,
    key: &ObjectKey,
    copy: &Instance,
) -> anyhow::Result<bool> {
    let row = store.get(key).await?;
    Ok(row.is_some_and(|row| {
        let place = placement(&row);
        row.uid == copy.uid
            && place.node.as_deref() == Some(copy.node.as_str())
            && place.epoch == copy.epoch
    }))
}
