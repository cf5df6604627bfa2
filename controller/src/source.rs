//! Where a controller reads its objects: the store (the built-in controllers, inside the
//! cluster) or the HTTPS API with a token (controllers anywhere, limited by their role).

use std::sync::Arc;
use std::time::Duration;

use dora_client::{Client, Event};
use dora_crds::Resource;
use dora_store::{ObjectKey, Row, RowMeta, Store};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::watcher::{Target, WatchEvent, retry_delays};

/// Where a controller reads its objects.
#[derive(Clone)]
pub enum Source {
    /// The store, with its change feed.
    Store(Arc<dyn Store>),
    /// The API: a list, then a watch that resumes from the last version it saw.
    Api(Client),
}

impl From<Arc<dyn Store>> for Source {
    fn from(store: Arc<dyn Store>) -> Self {
        Source::Store(store)
    }
}

impl From<Client> for Source {
    fn from(client: Client) -> Self {
        Source::Api(client)
    }
}

/// The row an object of the API stands for: the status of a defined kind is its `computed`
/// group, a built-in kind's status holds its groups by name. The versions of the status
/// groups are not in the object: they read as 0.
pub fn row_of(target: &Target, resource: Resource) -> Row {
    let meta = resource.metadata;
    let status = resource.status.unwrap_or(Value::Null);
    let column = |name: &str| {
        let value = match target.kind.is_defined() {
            true if name == "computed" => status.clone(),
            true => Value::Null,
            false if name == "computed" => built_in_computed(&status),
            false => status.get(name).cloned().unwrap_or(Value::Null),
        };
        Arc::new(value)
    };
    Row {
        meta: RowMeta::of(&meta, meta.deletion_timestamp.as_deref().map(millis)),
        key: ObjectKey::new(
            target.kind,
            meta.zone.as_deref().unwrap_or_default(),
            meta.workspace.as_deref().unwrap_or_default(),
            &meta.name,
        ),
        uid: meta.uid.unwrap_or_default(),
        version: meta.version.unwrap_or_default(),
        generation: meta.generation.unwrap_or_default(),
        spec_hash: meta.spec_hash.unwrap_or_default(),
        owner: meta.owner.unwrap_or_default(),
        labels: meta.labels,
        created: meta.created.as_deref().map(millis).unwrap_or_default(),
        updated: meta.updated.as_deref().map(millis).unwrap_or_default(),
        resource: Arc::new(resource.spec),
        desired: column("desired"),
        computed: column("computed"),
        computed_version: 0,
        observed: column("observed"),
        observed_version: 0,
    }
}

/// A built-in kind's `computed` group: the API shows what its controller records of its
/// reconciles (`observedGeneration`, `conditions`) at the top of the status.
fn built_in_computed(status: &Value) -> Value {
    let mut computed = status.get("computed").cloned().unwrap_or(Value::Null);
    if let Value::Object(group) = &mut computed {
        for field in ["observedGeneration", "conditions"] {
            if let Some(value) = status.get(field) {
                group.insert(field.into(), value.clone());
            }
        }
    }
    computed
}

/// Unix milliseconds of an RFC 3339 time; 0 when it does not read.
fn millis(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or_default()
}

/// Follows `target` over the API until the receiver is gone: lists, watches from the list's
/// version, resumes from the last version seen when the stream breaks, and lists again when
/// the API no longer has that version.
pub(crate) async fn follow_api(client: Client, target: Target, tx: mpsc::Sender<WatchEvent>) {
    let path = target.kind.collection_path(&target.zone, None);
    let mut backoff = retry_delays();
    let mut version: Option<String> = None;
    loop {
        let result = match &version {
            None => list(&client, &path, &target, &tx).await,
            Some(from) => watch(&client, &path, &target, &tx, from).await,
        };
        match result {
            // The receiver is gone.
            Ok(None) => return,
            Ok(Some(next)) => {
                version = Some(next);
                backoff = retry_delays();
            }
            Err((e, last)) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(
                    kind = %target.kind, zone = %target.zone, error = %e,
                    "watch over the API failed; again in {delay:?}"
                );
                // A version the API no longer keeps (410) needs a new list.
                version = last.filter(|_| e.status() != Some(410));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

type Failed = (dora_client::Error, Option<String>);

/// Lists the target; its version, or `None` when the receiver is gone.
async fn list(
    client: &Client,
    path: &str,
    target: &Target,
    tx: &mpsc::Sender<WatchEvent>,
) -> Result<Option<String>, Failed> {
    let list = client.list(path, &[]).await.map_err(|e| (e, None))?;
    let rows = list
        .items
        .into_iter()
        .map(|item| Arc::new(row_of(target, item)))
        .collect();
    if tx.send(WatchEvent::Listed(rows)).await.is_err() {
        return Ok(None);
    }
    Ok(Some(list.resource_version))
}

/// Watches from `from` until the stream breaks (an error with the last version seen) or the
/// receiver is gone (`None`).
async fn watch(
    client: &Client,
    path: &str,
    target: &Target,
    tx: &mpsc::Sender<WatchEvent>,
    from: &str,
) -> Result<Option<String>, Failed> {
    let mut last = from.to_string();
    let events = client
        .watch(path, &[], from)
        .await
        .map_err(|e| (e, Some(last.clone())))?;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| (e, Some(last.clone())))?;
        last = event.version().to_string();
        let seen = match event {
            Event::Added { object, .. } | Event::Modified { object, .. } => {
                WatchEvent::Applied(Arc::new(row_of(target, *object)))
            }
            Event::Deleted { object, .. } => WatchEvent::Deleted(row_of(target, *object).key),
            Event::Bookmark { .. } => continue,
        };
        if tx.send(seen).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some(last))
}
