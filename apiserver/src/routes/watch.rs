//! Streams of changes as NDJSON: one JSON object per line, as long as the client listens.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dora_crds::Selector;
use dora_crds::spec::Verb;
use dora_runtime::FeedReader;
use dora_store::{Change, ChangeFilter, ChangeOp, Columns, Cursor, ListQuery, ObjectKey, Row};
use serde_json::json;
use tokio::sync::watch;

use super::access::{on_node, visible};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity, render};

/// How often a watcher looks for writes made by other processes.
const POLL: Duration = Duration::from_secs(1);
/// A bookmark is sent after this long without changes, so that dead clients are noticed.
const BOOKMARK: Duration = Duration::from_secs(30);
const BATCH: usize = 256;

/// A source of NDJSON lines that is polled until it fails.
pub(super) trait Feed: Send + 'static {
    /// New lines (empty when nothing happened), or an error that ends the stream.
    fn next_lines(&mut self) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send;

    /// A line telling the client where the feed stands.
    fn bookmark(&self) -> Vec<u8>;
}

fn line(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Streams `initial` then whatever `feed` yields; wakes on local writes, polls for others.
/// The stream ends with an ERROR line: 401 once the caller's token expires or its user is
/// deleted, 503 when the server shuts down (the client watches again, elsewhere or later).
/// After `timeout` it ends without one, as Kubernetes' `timeoutSeconds` does.
pub(super) fn ndjson<F: Feed>(
    state: AppState,
    identity: Identity,
    initial: Vec<u8>,
    feed: F,
    timeout: Option<Duration>,
) -> Response {
    struct Run<F> {
        feed: F,
        state: AppState,
        identity: Identity,
        wake: watch::Receiver<u64>,
        initial: Option<Vec<u8>>,
        quiet_since: Instant,
        ends: Option<Instant>,
        done: bool,
    }
    let run = Run {
        feed,
        wake: state.service.store.subscribe(),
        state,
        identity,
        initial: Some(initial),
        quiet_since: Instant::now(),
        ends: timeout.map(|timeout| Instant::now() + timeout),
        done: false,
    };
    let stream = futures::stream::unfold(run, |mut run| async move {
        if let Some(initial) = run.initial.take().filter(|bytes| !bytes.is_empty()) {
            return Some((Ok::<_, Infallible>(Bytes::from(initial)), run));
        }
        if run.done {
            return None;
        }
        loop {
            if run.ends.is_some_and(|ends| Instant::now() >= ends) {
                return None;
            }
            run.wake.borrow_and_update();
            let lines = match run.state.recheck(&run.identity) {
                Ok(()) if run.state.stopping.is_cancelled() => Err(going_away()),
                Ok(()) => run.feed.next_lines().await,
                Err(error) => Err(error),
            };
            match lines {
                Ok(lines) if !lines.is_empty() => {
                    run.quiet_since = Instant::now();
                    return Some((Ok(Bytes::from(lines)), run));
                }
                Ok(_) => {}
                Err(error) => {
                    run.done = true;
                    let body = line(
                        &json!({"type": "ERROR", "error": error, "status": error.status.as_u16()}),
                    );
                    return Some((Ok(Bytes::from(body)), run));
                }
            }
            if run.quiet_since.elapsed() >= BOOKMARK {
                run.quiet_since = Instant::now();
                return Some((Ok(Bytes::from(run.feed.bookmark())), run));
            }
            let poll = run.ends.map_or(POLL, |ends| {
                POLL.min(ends.saturating_duration_since(Instant::now()))
            });
            tokio::select! {
                changed = run.wake.changed() => if changed.is_err() { tokio::time::sleep(poll).await },
                _ = tokio::time::sleep(poll) => {}
                () = run.state.stopping.cancelled() => {}
            }
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The error that ends the watches open when the server shuts down.
fn going_away() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ShuttingDown",
        "the API server is shutting down; watch again from the last resourceVersion",
    )
}

/// Which rows of a collection a watch wants. A row that stops matching is sent as DELETED,
/// one that starts matching as ADDED, as kubectl's watchers expect.
#[derive(Default)]
pub(super) struct RowFilter {
    /// Only containers on this node ([`on_node`]).
    pub node: Option<String>,
    /// Only rows whose labels match.
    pub selector: Option<Selector>,
}

impl RowFilter {
    fn is_empty(&self) -> bool {
        self.node.is_none() && self.selector.is_none()
    }

    fn matches(&self, row: &Row) -> bool {
        self.node.as_deref().is_none_or(|node| on_node(row, node))
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&row.labels))
    }
}

struct ResourceFeed {
    state: AppState,
    identity: Identity,
    feed: FeedReader,
    rows: RowFilter,
    /// The rows the client holds (those sent or listed that match `rows`), as last sent or
    /// listed: a DELETED event carries the object's last state, as in Kubernetes.
    known: HashMap<ObjectKey, Arc<Row>>,
    /// Column versions of the rows the initial list sent. A backend's head may lag a little
    /// behind what a list sees, so the feed can replay writes the list already showed; those
    /// are skipped.
    listed: HashMap<ObjectKey, [u64; 3]>,
}

impl ResourceFeed {
    /// Whether `change` may concern this watch, before its row is read. A node reports only
    /// containers bound to it, which its watch holds already: a report (the observed column)
    /// of any other container cannot bring it onto this node, so a node's watch reads the row
    /// of a report only for the containers it holds. Each node watches every change of its
    /// zone; this spares a row read per report per node.
    fn may_concern(&self, change: &Change) -> bool {
        self.rows.node.is_none()
            || change.columns != Columns::Observed
            || self.known.contains_key(&change.key)
    }
}

fn column_index(columns: Columns) -> usize {
    match columns {
        Columns::Spec => 0,
        Columns::Computed => 1,
        Columns::Observed => 2,
    }
}

impl Feed for ResourceFeed {
    async fn next_lines(&mut self) -> Result<Vec<u8>, ApiError> {
        let from = self.feed.cursor().clone();
        let changes = self.feed.read().await?;
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // A late change (found behind where this read started) is sent with that position as
        // its version: its own id lies behind changes sent before it, and a client resuming
        // from it would be sent those again.
        let late: HashSet<Cursor> = changes[..self.feed.late()]
            .iter()
            .map(|change| change.cursor.clone())
            .collect();
        let changes: Vec<Change> = changes
            .into_iter()
            .filter(|change| {
                let already_listed = change.op == ChangeOp::Put
                    && self.listed.get(&change.key).is_some_and(|versions| {
                        change.version <= versions[column_index(change.columns)]
                    });
                !already_listed
                    && self.may_concern(change)
                    && visible(&self.state, &self.identity, Verb::Get, &change.key)
            })
            .collect();
        let rows = self.state.service.store.rows_after(&changes).await?;
        let mut out = Vec::new();
        for (change, row) in changes.into_iter().zip(rows) {
            let (kind, object) = match change.op {
                ChangeOp::Delete => match self.known.remove(&change.key) {
                    Some(last) => ("DELETED", render::resource(&last)),
                    // Deleted before this watch listed it: its name is all there is.
                    None if self.rows.is_empty() => ("DELETED", render::tombstone(&change.key)),
                    None => continue,
                },
                ChangeOp::Put => match row {
                    // Deleted since: its own DELETED change follows.
                    None => continue,
                    Some(row) if self.rows.is_empty() => {
                        let object = render::resource(&row);
                        self.known.insert(change.key.clone(), row);
                        if change.columns == Columns::Spec && change.version == 1 {
                            ("ADDED", object)
                        } else {
                            ("MODIFIED", object)
                        }
                    }
                    Some(row) if !self.rows.matches(&row) => {
                        if self.known.remove(&change.key).is_none() {
                            continue;
                        }
                        ("DELETED", render::resource(&row))
                    }
                    Some(row) => {
                        let object = render::resource(&row);
                        match self.known.insert(change.key.clone(), row) {
                            None => ("ADDED", object),
                            Some(_) => ("MODIFIED", object),
                        }
                    }
                },
            };
            let version = if late.contains(&change.cursor) {
                &from
            } else {
                &change.cursor
            };
            out.extend(line(
                &json!({"type": kind, "object": object, "resourceVersion": version}),
            ));
        }
        Ok(out)
    }

    fn bookmark(&self) -> Vec<u8> {
        line(&json!({"type": "BOOKMARK", "resourceVersion": self.feed.cursor()}))
    }
}

/// `?watch=true` on a collection or one resource. Without `resourceVersion`, the current items
/// come first as ADDED; with it, only changes after it.
pub(super) async fn resources(
    state: AppState,
    identity: Identity,
    target: Target,
    resource_version: Option<String>,
    rows: RowFilter,
    timeout_seconds: Option<u64>,
) -> Result<Response, ApiError> {
    let store = state.service.store.clone();
    let filter = ChangeFilter {
        kind: target.kind.name().into(),
        zone: target.zone.clone(),
        workspace: target.workspace.clone(),
        name: target.name.clone(),
    };
    let mut initial = Vec::new();
    let mut listed = HashMap::new();
    let mut known = HashMap::new();
    let resume = resource_version.map(Cursor);
    if let Some(cursor) = &resume {
        // Refuse an expired or foreign cursor before the stream starts.
        store.changes(&filter, cursor, 1).await?;
    }
    let head = store.head().await?;
    // A watch from a version sends no list, but learns the rows as they are now: to tell when
    // one stops matching a filter, and what a deleted one held.
    let mut query = ListQuery {
        kind: target.kind.name().into(),
        scope: target.kind.scope(),
        zone: target.zone.clone(),
        workspace: target.workspace.clone(),
        after: None,
        limit: 1000,
    };
    loop {
        let page = state.service.store.list(&query).await?;
        for row in page.rows {
            let wanted = target
                .name
                .as_ref()
                .is_none_or(|name| *name == row.key.name)
                && rows.matches(&row);
            if !wanted || !visible(&state, &identity, Verb::Get, &row.key) {
                continue;
            }
            if resume.is_none() {
                listed.insert(
                    row.key.clone(),
                    [row.version, row.computed_version, row.observed_version],
                );
                initial.extend(line(&json!({"type": "ADDED", "object": render::resource(&row), "resourceVersion": head})));
            }
            known.insert(row.key.clone(), Arc::new(row));
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let cursor = resume.unwrap_or(head);
    let feed = ResourceFeed {
        state: state.clone(),
        identity: identity.clone(),
        feed: FeedReader::new(store, filter, cursor).page(BATCH),
        rows,
        known,
        listed,
    };
    let timeout = timeout_seconds.map(Duration::from_secs);
    Ok(ndjson(state, identity, initial, feed, timeout))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dora_store::sqlite::SqliteStore;

    use super::*;
    use crate::{ApiServer, Options};

    const BOOTSTRAP: &str = include_str!("../../../manifests/bootstrap.yaml");

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_watch_keeps_up_with_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("dora.db")).unwrap();
        let server = ApiServer::new(Arc::new(store), &[7; 32], Options::default())
            .await
            .unwrap();
        let service = server.service();
        let system = Identity::system();
        for result in service.apply_manifest(&system, BOOTSTRAP, false).await {
            result.unwrap();
        }
        let start = service.store.head().await.unwrap();
        let filter = ChangeFilter {
            kind: "Workload".into(),
            zone: "default".into(),
            workspace: Some("default".into()),
            name: None,
        };
        let mut feed = ResourceFeed {
            state: server.state(),
            identity: system.clone(),
            feed: FeedReader::new(service.store.clone(), filter, start.clone()),
            rows: RowFilter::default(),
            known: HashMap::new(),
            listed: HashMap::new(),
        };
        // Writes the watch does not want move it along all the same.
        let other = "apiVersion: v1\nkind: Workspace\nmetadata: {name: other}\n";
        service.apply_manifest(&system, other, false).await[0]
            .clone()
            .unwrap();
        assert!(feed.next_lines().await.unwrap().is_empty());
        let head = service.store.head().await.unwrap();
        assert_ne!(head, start);
        assert_eq!(feed.feed.cursor(), &head);
        let bookmark = String::from_utf8(feed.bookmark()).unwrap();
        assert!(bookmark.contains(&format!("\"{head}\"")), "{bookmark}");
        // What it wants still comes, once.
        let workload = "apiVersion: v1\nkind: Workload\nmetadata: {name: w, zone: default, workspace: default}\nspec: {replica: {count: 1}, image: {image: x}}\n";
        service.apply_manifest(&system, workload, false).await[0]
            .clone()
            .unwrap();
        let lines = String::from_utf8(feed.next_lines().await.unwrap()).unwrap();
        assert!(
            lines.contains("\"ADDED\"") && lines.lines().count() == 1,
            "{lines}"
        );
        assert!(feed.next_lines().await.unwrap().is_empty());
        // A delete carries the object as it was last, not only its name.
        let key = ObjectKey::new(dora_crds::Kind::Workload, "default", "default", "w");
        service
            .store
            .delete(&key, dora_store::Precondition::None)
            .await
            .unwrap();
        let lines = feed.next_lines().await.unwrap();
        let deleted: serde_json::Value = serde_json::from_slice(&lines).unwrap();
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(
            deleted["object"]["spec"]["image"]["image"], "x",
            "{deleted}"
        );
    }
}
