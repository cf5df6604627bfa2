//! The `Store` operations over CQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dora_crds::{Kind, Scope};
use futures::{StreamExt, TryStreamExt};
use scylla::value::{CqlValue, Row as CqlRow};
use serde_json::Value;
use tokio::sync::watch;

use super::schema::COMMON_COLUMNS;
use super::{CqlStore, big, column_int, column_text, text};
use crate::{
    ActionRecord, Change, ChangeFilter, ChangeOp, Columns, Cursor, Event, EventQuery, EventType,
    Fence, Lease, ListQuery, ObjectKey, Page, Precondition, Row, RowMeta, SpecOutcome, SpecWrite,
    StatusColumn, Store, StoreError, Table, VersionRecord, now_millis,
};

/// Width of one change-feed partition in time.
const BUCKET_MILLIS: i64 = 60_000;
/// Names in one multi-row read.
const NAMES_PER_READ: usize = 100;
/// Multi-row reads in flight at once.
const CONCURRENT_READS: usize = 8;
/// How often a compare-and-set that lost a race is tried again before giving up.
const CAS_ATTEMPTS: usize = 16;
/// How often a conditional write whose outcome is unknown (its coordinator was lost) is tried
/// again.
const LOST_WRITE_RETRIES: usize = 3;

/// Whether a failed conditional write may be tried again, after a pause. Its outcome is
/// unknown (the coordinator may have been lost mid-write), and every loop below re-reads the
/// row at SERIAL consistency before writing again, so a write that did apply is seen, not
/// repeated.
async fn may_retry(error: &StoreError, failures: &mut usize) -> bool {
    if !matches!(error, StoreError::Unavailable(_)) || *failures >= LOST_WRITE_RETRIES {
        return false;
    }
    *failures += 1;
    tracing::warn!(%error, attempt = *failures, "a conditional write failed; re-reading and trying again");
    tokio::time::sleep(Duration::from_millis(200 * *failures as u64)).await;
    true
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    if text.is_empty() {
        return serde_json::from_str("null").map_err(corrupt);
    }
    serde_json::from_str(text).map_err(corrupt)
}

fn key_values(key: &ObjectKey) -> Vec<CqlValue> {
    key.key_values().iter().map(|v| text(v)).collect()
}

fn decode(table: Table, scope: Scope, row: &CqlRow) -> Result<Row, StoreError> {
    Row::decode(
        table,
        scope,
        |i| column_text(row, i),
        |i| column_int(row, i),
    )
}

/// The smallest (or greatest) change id of one millisecond: ids are UUIDv7 text, whose first
/// 48 bits are the Unix milliseconds, so text order is time order.
fn bound_id(millis: i64, greatest: bool) -> String {
    let millis = millis.max(0) as u64;
    let tail = if greatest {
        "7fff-bfff-ffffffffffff"
    } else {
        "7000-8000-000000000000"
    };
    format!("{:08x}-{:04x}-{tail}", millis >> 16, millis & 0xffff)
}

/// A cursor in the one text form ids are stored in (lowercase, hyphenated), so that text
/// comparison is time order.
fn normalized(cursor: &Cursor) -> Result<String, StoreError> {
    let id =
        uuid::Uuid::parse_str(&cursor.0).map_err(|_| StoreError::BadCursor(cursor.0.clone()))?;
    Ok(id.hyphenated().to_string())
}

fn cursor_millis(cursor: &Cursor) -> Result<i64, StoreError> {
    let id =
        uuid::Uuid::parse_str(&cursor.0).map_err(|_| StoreError::BadCursor(cursor.0.clone()))?;
    if id.get_version_num() != 7 {
        return Err(StoreError::BadCursor(cursor.0.clone()));
    }
    let bytes = id.as_bytes();
    Ok(bytes[..6]
        .iter()
        .fold(0i64, |acc, b| (acc << 8) | i64::from(*b)))
}

fn contention(key: &ObjectKey) -> StoreError {
    StoreError::Unavailable(format!(
        "{key} is written by too many clients at once; try again"
    ))
}

impl CqlStore {
    /// A page of a workspaced kind across every workspace, in (workspace, name) order. Its
    /// table is partitioned by workspace, so the partitions of the cluster's Workspaces are
    /// read one after the other; the continue token is `WORKSPACE/NAME`, as on SQLite.
    async fn list_every_workspace(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let (first, mut after) = match query.after.as_deref() {
            None => (String::new(), None),
            Some(token) => match token.split_once('/') {
                Some((workspace, name)) => (workspace.to_string(), Some(name.to_string())),
                None => return Err(StoreError::BadCursor(token.to_string())),
            },
        };
        let limit = query.limit.max(1);
        let mut workspaces = ListQuery {
            kind: Kind::Workspace.name().into(),
            scope: Scope::Cluster,
            zone: String::new(),
            workspace: None,
            after: None,
            limit: 1000,
        };
        let mut rows: Vec<Row> = Vec::new();
        // One row more than asked tells whether another page follows.
        'workspaces: loop {
            let page = self.list(&workspaces).await?;
            for workspace in page.rows.iter().map(|row| &row.key.name) {
                if *workspace < first {
                    continue;
                }
                let partition = ListQuery {
                    workspace: Some(workspace.clone()),
                    after: after.take().filter(|_| *workspace == first),
                    limit: limit + 1 - rows.len(),
                    ..query.clone()
                };
                rows.extend(self.list(&partition).await?.rows);
                if rows.len() > limit {
                    break 'workspaces;
                }
            }
            match page.next {
                Some(next) => workspaces.after = Some(next),
                None => break,
            }
        }
        let next = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            rows.last()
                .map(|last| format!("{}/{}", last.key.workspace, last.key.name))
                .unwrap_or_default()
        });
        Ok(Page { rows, next })
    }

    fn table(&self, table: Table) -> &super::statements::TableStatements {
        &self.inner.statements.tables[&table]
    }

    /// The row to base a compare-and-set on: the first attempt reads at the normal consistency
    /// (the write's condition catches a stale read), a retry after a lost race or an unknown
    /// outcome reads at SERIAL, which sees every committed compare-and-set.
    async fn get_for_write(
        &self,
        key: &ObjectKey,
        attempt: usize,
    ) -> Result<Option<Row>, StoreError> {
        if attempt == 0 {
            self.get(key).await
        } else {
            self.get_serial(key).await
        }
    }

    async fn get_serial(&self, key: &ObjectKey) -> Result<Option<Row>, StoreError> {
        let rows = self
            .read(&self.table(key.table()).get_serial, &key_values(key))
            .await?;
        rows.first()
            .map(|row| decode(key.table(), key.scope, row))
            .transpose()
    }

    async fn append_change(
        &self,
        key: &ObjectKey,
        op: ChangeOp,
        columns: Columns,
        version: u64,
    ) -> Result<(), StoreError> {
        let id = uuid::Uuid::now_v7();
        self.insert_change(id, key, op, columns, version).await?;
        self.wake();
        Ok(())
    }

    /// Appends a feed entry for a write of `key` whose id is from the clock reading `millis`
    /// (Unix milliseconds), and returns its cursor: a late entry when `millis` lies behind
    /// readers' cursors, as a writer whose clock runs behind, or a write replicated late from
    /// another datacenter, makes one. For tests of the feed's readers.
    pub async fn append_change_at(
        &self,
        key: &ObjectKey,
        op: ChangeOp,
        columns: Columns,
        version: u64,
        millis: u64,
    ) -> Result<Cursor, StoreError> {
        let clock = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1000,
            (millis % 1000) as u32 * 1_000_000,
        );
        let id = uuid::Uuid::new_v7(clock);
        self.insert_change(id, key, op, columns, version).await?;
        Ok(Cursor(id.to_string()))
    }

    async fn insert_change(
        &self,
        id: uuid::Uuid,
        key: &ObjectKey,
        op: ChangeOp,
        columns: Columns,
        version: u64,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        // Bucket and time come from the id itself, so an entry is always in the bucket its id
        // sorts into, whatever the clock does between two reads of it.
        let at = cursor_millis(&Cursor(id.clone()))?;
        let values = [
            text(&key.zone),
            text(&key.kind),
            big(at / BUCKET_MILLIS),
            text(&id),
            text(key.scope.as_str()),
            text(&key.workspace),
            text(&key.name),
            text(if op == ChangeOp::Delete {
                "delete"
            } else {
                "put"
            }),
            text(match columns {
                Columns::Spec => "spec",
                Columns::Computed => "computed",
                Columns::Observed => "observed",
            }),
            big(version as i64),
            big(at),
        ];
        self.write_idempotent(&self.inner.statements.insert_change, &values)
            .await
    }

    /// Feed entries after `after` and up to `upto` (an entry's id or a bound), oldest first.
    async fn read_feed(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        upto: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let from = cursor_millis(after)?;
        let after_id = normalized(after)?;
        if from < now_millis() - self.inner.config.changes_ttl.as_millis() as i64 {
            return Err(StoreError::Expired(after.0.clone()));
        }
        let mut out = Vec::new();
        let until = cursor_millis(upto)?;
        let upper = normalized(upto)?;
        if after_id >= upper {
            return Ok(out);
        }
        for bucket in from / BUCKET_MILLIS..=until / BUCKET_MILLIS {
            let values = vec![
                text(&filter.zone),
                text(&filter.kind),
                big(bucket),
                text(&after_id),
                text(&upper),
            ];
            let mut failure = None;
            self.read_pages(&self.inner.statements.changes, values, |row| {
                match decode_change(filter, &row) {
                    Ok(Some(change)) => out.push(change),
                    Ok(None) => {}
                    Err(e) => failure = Some(e),
                }
                failure.is_none() && out.len() < limit
            })
            .await?;
            if let Some(e) = failure {
                return Err(e);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn keep_version(&self, row: &Row, now: i64) -> Result<(), StoreError> {
        let key = &row.key;
        let object = [
            text(&key.zone),
            text(&key.kind),
            text(&key.workspace),
            text(&key.name),
        ];
        let mut values = object.to_vec();
        values.extend([
            big(row.generation as i64),
            text(key.scope.as_str()),
            text(&to_json(&*row.resource)?),
            text(&row.spec_hash),
            big(now),
        ]);
        self.write_idempotent(&self.inner.statements.insert_version, &values)
            .await?;
        let oldest_kept = row.generation as i64 - self.inner.config.versions as i64;
        if oldest_kept > 0 {
            let mut values = object.to_vec();
            values.push(big(oldest_kept));
            self.write_idempotent(&self.inner.statements.trim_versions, &values)
                .await?;
        }
        Ok(())
    }

    async fn create(
        &self,
        write: &SpecWrite,
        uid: &str,
        now: i64,
    ) -> Result<Option<Row>, StoreError> {
        let key = &write.key;
        let row = Row {
            spec_hash: write.spec_hash.clone(),
            owner: write.owner.clone(),
            labels: write.labels.clone(),
            meta: RowMeta::default().after(&write.meta, now)?,
            created: now,
            updated: now,
            resource: Arc::new(write.spec.clone()),
            desired: Arc::new(write.desired.clone()),
            computed: Arc::new(write.computed.clone().unwrap_or(Value::Null)),
            computed_version: u64::from(write.computed.is_some()),
            ..Row::new(key.clone(), uid)
        };
        let mut values = key_values(key);
        values.extend([
            text(&row.uid),
            big(1),
            big(1),
            text(&row.spec_hash),
            text(&row.owner),
            text(&to_json(&row.labels)?),
            big(now),
            big(now),
            text(&to_json(&*row.resource)?),
            text(&to_json(&*row.desired)?),
            text(&to_json(&*row.computed)?),
            big(row.computed_version as i64),
            text("null"),
            big(0),
            text(&to_json(&row.meta)?),
        ]);
        debug_assert_eq!(values.len(), key.key_values().len() + COMMON_COLUMNS.len());
        if key.table() == Table::Containers {
            values.push(text(
                write
                    .spec
                    .get("workload")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ));
            values.push(text(
                row.computed
                    .get("node")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ));
        }
        Ok(self
            .cas(
                key,
                &self.table(key.table()).insert,
                values,
                write.fence.as_ref(),
            )
            .await?
            .then_some(row))
    }

    async fn update_spec(
        &self,
        write: &SpecWrite,
        row: &Row,
        meta: RowMeta,
        now: i64,
    ) -> Result<Option<Row>, StoreError> {
        let key = &write.key;
        let spec_changed = *row.resource != write.spec;
        let generation = if spec_changed {
            row.generation + 1
        } else {
            row.generation
        };
        let mut values = vec![
            big(row.version as i64 + 1),
            big(generation as i64),
            text(&write.spec_hash),
            text(&to_json(&write.labels)?),
            big(now),
            text(&to_json(&write.spec)?),
            text(&to_json(&write.desired)?),
            text(&to_json(&meta)?),
        ];
        if key.table() == Table::Containers {
            values.push(text(
                write
                    .spec
                    .get("workload")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ));
        }
        values.extend(key_values(key));
        values.push(big(row.version as i64));
        values.push(text(&row.uid));
        if !self
            .cas(
                key,
                &self.table(key.table()).update_spec,
                values,
                write.fence.as_ref(),
            )
            .await?
        {
            return Ok(None);
        }
        if spec_changed {
            self.keep_version(row, now).await?;
        }
        Ok(Some(Row {
            version: row.version + 1,
            generation,
            spec_hash: write.spec_hash.clone(),
            labels: write.labels.clone(),
            meta,
            updated: now,
            resource: Arc::new(write.spec.clone()),
            desired: Arc::new(write.desired.clone()),
            ..row.clone()
        }))
    }

    /// What follows a delete: the history goes, and the feed says so.
    async fn after_delete(&self, key: &ObjectKey, row: &Row) -> Result<(), StoreError> {
        let object = [
            text(&key.zone),
            text(&key.kind),
            text(&key.workspace),
            text(&key.name),
        ];
        self.write_idempotent(&self.inner.statements.delete_versions, &object)
            .await?;
        self.append_change(key, ChangeOp::Delete, Columns::Spec, row.version)
            .await
    }
}

#[async_trait]
impl Store for CqlStore {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Row>, StoreError> {
        let rows = self
            .read(&self.table(key.table()).get, &key_values(key))
            .await?;
        rows.first()
            .map(|row| decode(key.table(), key.scope, row))
            .transpose()
    }

    async fn get_after(&self, change: &Change) -> Result<Option<Arc<Row>>, StoreError> {
        let mut rows = self.rows_after(std::slice::from_ref(change)).await?;
        Ok(rows.pop().flatten())
    }

    async fn rows_after(&self, changes: &[Change]) -> Result<Vec<Option<Arc<Row>>>, StoreError> {
        let recent = &self.inner.recent;
        let began = now_millis();
        let mut answers: HashMap<&ObjectKey, Option<Arc<Row>>> = HashMap::new();
        // The rows still to read, by everything in their key but the name: one read per group.
        let mut groups: HashMap<(Table, Scope, Vec<String>), Vec<&str>> = HashMap::new();
        for change in changes.iter().filter(|c| c.op == ChangeOp::Put) {
            let key = &change.key;
            if let Some(row) = recent.after(change) {
                answers.insert(key, row);
                continue;
            }
            let mut siblings = key.key_values();
            siblings.pop();
            groups
                .entry((key.table(), key.scope, siblings))
                .or_default()
                .push(&key.name);
        }
        let mut reads = Vec::new();
        for ((table, scope, siblings), names) in groups {
            for names in names.chunks(NAMES_PER_READ) {
                let mut values: Vec<CqlValue> = siblings.iter().map(|v| text(v)).collect();
                values.push(CqlValue::List(names.iter().map(|n| text(n)).collect()));
                reads.push((table, scope, values));
            }
        }
        let found: HashMap<ObjectKey, Arc<Row>> = futures::stream::iter(reads)
            .map(|(table, scope, values)| async move {
                let rows = self.read(&self.table(table).get_many, &values).await?;
                rows.iter()
                    .map(|row| {
                        decode(table, scope, row).map(|row| (row.key.clone(), Arc::new(row)))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .buffer_unordered(CONCURRENT_READS)
            .try_fold(HashMap::new(), |mut found, rows| async move {
                found.extend(rows);
                Ok(found)
            })
            .await?;
        Ok(changes
            .iter()
            .map(|change| {
                let key = &change.key;
                match change.op {
                    ChangeOp::Delete => None,
                    ChangeOp::Put => answers.get(key).cloned().unwrap_or_else(|| {
                        let row = found.get(key).cloned();
                        recent.keep(change, began, row.clone());
                        row
                    }),
                }
            })
            .collect())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        if query.scope == Scope::Workspaced && query.workspace.is_none() {
            return self.list_every_workspace(query).await;
        }
        let table = Table::of(&query.kind, query.scope);
        let statements = self.table(table);
        let limit = query.limit.clamp(1, 10_000);
        let mut values = vec![text(&query.kind)];
        match query.scope {
            Scope::Cluster => {}
            Scope::Workspaced => values.push(text(query.workspace.as_deref().unwrap_or_default())),
            Scope::Zoned | Scope::ZonedWorkspaced => values.push(text(&query.zone)),
        }
        let all_workspaces = query.scope == Scope::ZonedWorkspaced && query.workspace.is_none();
        let after = query.after.clone().unwrap_or_default();
        let statement = if all_workspaces {
            let (workspace, name) = match &query.after {
                Some(after) => after
                    .split_once('/')
                    .ok_or_else(|| StoreError::BadCursor(after.clone()))?,
                None => ("", ""),
            };
            values.extend([text(workspace), text(name)]);
            statements
                .list_all_workspaces
                .as_ref()
                .ok_or_else(|| corrupt("no cross-workspace listing for this table"))?
        } else {
            if query.scope == Scope::ZonedWorkspaced {
                values.push(text(query.workspace.as_deref().unwrap_or_default()));
            }
            values.push(text(&after));
            &statements.list
        };
        values.push(CqlValue::Int((limit + 1) as i32));
        let mut rows = self
            .read(statement, &values)
            .await?
            .iter()
            .map(|row| decode(table, query.scope, row))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| {
                if all_workspaces {
                    format!("{}/{}", last.key.workspace, last.key.name)
                } else {
                    last.key.name.clone()
                }
            })
        } else {
            None
        };
        Ok(Page { rows, next })
    }

    async fn put_spec(&self, write: SpecWrite) -> Result<SpecOutcome, StoreError> {
        let mut failures = 0;
        let uid = uuid::Uuid::new_v4().to_string();
        // The row an update of unknown outcome started from; a create of unknown outcome is
        // recognised by its uid.
        let mut lost_update: Option<Row> = None;
        for attempt in 0..CAS_ATTEMPTS {
            // A create that must find no row needs no read first: its condition checks that.
            let existing = if attempt == 0 && write.precondition == Precondition::Absent {
                None
            } else {
                self.get_for_write(&write.key, attempt).await?
            };
            let now = now_millis();
            if let Some(row) = &existing {
                let ours = row
                    .meta
                    .after(&write.meta, row.updated)
                    .ok()
                    .is_some_and(|meta| write.unchanged(row, &meta));
                if failures > 0 && row.uid == uid {
                    self.append_change(&write.key, ChangeOp::Put, Columns::Spec, row.version)
                        .await?;
                    return Ok(SpecOutcome::Created(Arc::new(row.clone())));
                }
                if let Some(from) = lost_update.take()
                    && ours
                    && row.uid == from.uid
                    && row.version == from.version + 1
                {
                    if *from.resource != write.spec {
                        self.keep_version(&from, now).await?;
                    }
                    self.append_change(&write.key, ChangeOp::Put, Columns::Spec, row.version)
                        .await?;
                    return Ok(SpecOutcome::Configured(Arc::new(row.clone())));
                }
            }
            write.precondition.check(existing.as_ref())?;
            let Some(row) = existing else {
                let created = match self.create(&write, &uid, now).await {
                    Ok(created) => created,
                    Err(e) if may_retry(&e, &mut failures).await => continue,
                    Err(e) => return Err(e),
                };
                match created {
                    Some(row) => {
                        self.append_change(&write.key, ChangeOp::Put, Columns::Spec, 1)
                            .await?;
                        return Ok(SpecOutcome::Created(Arc::new(row)));
                    }
                    None if write.precondition == Precondition::Absent => {
                        return Err(StoreError::AlreadyExists);
                    }
                    None => continue,
                }
            };
            let meta = row.meta.after(&write.meta, now)?;
            if write.unchanged(&row, &meta) {
                return Ok(SpecOutcome::Unchanged(Arc::new(row)));
            }
            let updated = match self.update_spec(&write, &row, meta, now).await {
                Ok(updated) => updated,
                Err(e) if may_retry(&e, &mut failures).await => {
                    lost_update = Some(row);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match updated {
                Some(updated) => {
                    self.append_change(&write.key, ChangeOp::Put, Columns::Spec, updated.version)
                        .await?;
                    return Ok(SpecOutcome::Configured(Arc::new(updated)));
                }
                None => {
                    if let Precondition::Version(expected) = write.precondition {
                        let current = self
                            .get_serial(&write.key)
                            .await?
                            .ok_or(StoreError::NotFound)?;
                        return Err(StoreError::Conflict {
                            expected,
                            actual: current.version,
                        });
                    }
                }
            }
        }
        Err(contention(&write.key))
    }

    async fn put_status(
        &self,
        key: &ObjectKey,
        column: StatusColumn,
        expected: Option<u64>,
        value: Value,
        fence: Option<&Fence>,
    ) -> Result<Arc<Row>, StoreError> {
        let statements = self.table(key.table());
        let mut failures = 0;
        // The version a status write of unknown outcome started from.
        let mut lost_from: Option<u64> = None;
        for attempt in 0..CAS_ATTEMPTS {
            // A write that expects no version starts from the row as last seen here, if any:
            // its condition catches a stale one, and the next attempt reads afresh.
            let cached = match (attempt, expected) {
                (0, None) => self.inner.recent.latest(key),
                _ => None,
            };
            let row = match cached {
                Some(row) => Row::clone(&row),
                None => self
                    .get_for_write(key, attempt)
                    .await?
                    .ok_or(StoreError::NotFound)?,
            };
            let (current, stored) = match column {
                StatusColumn::Computed => (row.computed_version, &row.computed),
                StatusColumn::Observed => (row.observed_version, &row.observed),
            };
            if lost_from
                .take()
                .is_some_and(|from| current == from + 1 && **stored == value)
            {
                self.append_change(key, ChangeOp::Put, column.into(), current)
                    .await?;
                return Ok(Arc::new(row));
            }
            if let Some(expected) = expected
                && expected != current
            {
                return Err(StoreError::Conflict {
                    expected,
                    actual: current,
                });
            }
            let mut values = vec![text(&to_json(&value)?), big(current as i64 + 1)];
            let statement = match column {
                StatusColumn::Computed => {
                    if key.table() == Table::Containers {
                        values.push(text(
                            value
                                .get("node")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        ));
                    }
                    &statements.update_computed
                }
                StatusColumn::Observed => &statements.update_observed,
            };
            values.extend(key_values(key));
            values.push(big(current as i64));
            values.push(text(&row.uid));
            let applied = match self.cas(key, statement, values, fence).await {
                Ok(applied) => applied,
                Err(e) if may_retry(&e, &mut failures).await => {
                    lost_from = Some(current);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if applied {
                self.append_change(key, ChangeOp::Put, column.into(), current + 1)
                    .await?;
                let mut row = row;
                match column {
                    StatusColumn::Computed => {
                        (row.computed, row.computed_version) = (Arc::new(value), current + 1)
                    }
                    StatusColumn::Observed => {
                        (row.observed, row.observed_version) = (Arc::new(value), current + 1)
                    }
                }
                self.inner.recent.wrote(&row, column);
                return Ok(Arc::new(row));
            }
        }
        Err(contention(key))
    }

    async fn delete(&self, key: &ObjectKey, precondition: Precondition) -> Result<Row, StoreError> {
        let mut failures = 0;
        // The row an attempt of unknown outcome was deleting: if it is gone now, that was us.
        let mut attempted: Option<Row> = None;
        for attempt in 0..CAS_ATTEMPTS {
            let Some(row) = self.get_for_write(key, attempt).await? else {
                let deleted = attempted.ok_or(StoreError::NotFound)?;
                self.after_delete(key, &deleted).await?;
                return Ok(deleted);
            };
            precondition.check(Some(&row))?;
            let mut values = key_values(key);
            values.push(big(row.version as i64));
            values.push(text(&row.uid));
            let applied = match self
                .cas(key, &self.table(key.table()).delete, values, None)
                .await
            {
                Ok(applied) => applied,
                Err(e) if may_retry(&e, &mut failures).await => {
                    attempted = Some(row);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if applied {
                self.after_delete(key, &row).await?;
                return Ok(row);
            }
        }
        Err(contention(key))
    }

    async fn versions(&self, key: &ObjectKey) -> Result<Vec<VersionRecord>, StoreError> {
        let values = [
            text(&key.zone),
            text(&key.kind),
            text(&key.workspace),
            text(&key.name),
        ];
        let rows = self.read(&self.inner.statements.versions, &values).await?;
        rows.iter()
            .map(|r| {
                Ok(VersionRecord {
                    key: key.clone(),
                    generation: column_int(r, 0)? as u64,
                    spec: from_json(&column_text(r, 1)?)?,
                    spec_hash: column_text(r, 2)?,
                    time: column_int(r, 3)?,
                })
            })
            .collect()
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        Ok(Cursor(bound_id(
            now_millis() - self.inner.config.skew.as_millis() as i64,
            false,
        )))
    }

    async fn check_reached(&self, cursor: &Cursor) -> Result<(), StoreError> {
        // Entries are as young as the clock of the client that wrote them, which may run up to
        // the skew ahead of this one; a cursor later than that is no entry's.
        let newest = now_millis() + self.inner.config.skew.as_millis() as i64;
        if cursor_millis(cursor)? > newest {
            return Err(StoreError::Ahead {
                cursor: cursor.0.clone(),
                head: self.head().await?.0,
            });
        }
        Ok(())
    }

    async fn changes(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let settled = now_millis() - self.inner.config.skew.as_millis() as i64;
        self.read_feed(filter, after, &Cursor(bound_id(settled, true)), limit)
            .await
    }

    async fn changes_early(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let now = Cursor(bound_id(now_millis(), true));
        self.read_feed(filter, after, &now, limit).await
    }

    fn has_young_entries(&self) -> bool {
        true
    }

    fn lookback(&self) -> Option<Duration> {
        let lookback = self.inner.config.lookback;
        (!lookback.is_zero()).then_some(lookback)
    }

    async fn changes_behind(
        &self,
        filter: &ChangeFilter,
        after: &Cursor,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let Some(lookback) = self.lookback() else {
            return Ok(Vec::new());
        };
        // The greatest id of the millisecond before the window: every id after it is within.
        let window = Cursor(bound_id(
            cursor_millis(cursor)? - lookback.as_millis() as i64 - 1,
            true,
        ));
        let after = if normalized(after)? > window.0 {
            after
        } else {
            &window
        };
        self.read_feed(filter, after, cursor, limit).await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.notify.subscribe()
    }

    async fn append_event(&self, event: Event) -> Result<(), StoreError> {
        let values = [
            text(&event.zone),
            text(&event.kind),
            text(&event.id),
            text(&event.workspace),
            text(&event.name),
            text(event.event_type.as_str()),
            text(&event.reason),
            text(&event.message),
            text(&event.component),
            big(event.time),
        ];
        self.write_idempotent(&self.inner.statements.insert_event, &values)
            .await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let limit = query.limit.max(1);
        let kinds: Vec<String> = match &query.kind {
            Some(kind) => vec![kind.clone()],
            None => Kind::known().iter().map(|k| k.name().to_string()).collect(),
        };
        let mut out = Vec::new();
        for kind in kinds {
            let (statement, mut values) = match &query.after {
                Some(after) => (
                    &self.inner.statements.events_after,
                    vec![text(&query.zone), text(&kind), text(after)],
                ),
                None => (
                    &self.inner.statements.events_newest,
                    vec![text(&query.zone), text(&kind)],
                ),
            };
            values.shrink_to_fit();
            let mut taken = 0;
            let mut failure = None;
            self.read_pages(statement, values, |row| {
                match decode_event(&row) {
                    Ok(event) => {
                        let wanted = query
                            .workspace
                            .as_ref()
                            .is_none_or(|w| *w == event.workspace)
                            && query.name.as_ref().is_none_or(|n| *n == event.name);
                        if wanted {
                            out.push(event);
                            taken += 1;
                        }
                    }
                    Err(e) => failure = Some(e),
                }
                failure.is_none() && taken < limit
            })
            .await?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        if query.after.is_some() {
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out.truncate(limit);
        } else {
            out.sort_by(|a, b| b.id.cmp(&a.id));
            out.truncate(limit);
            out.reverse();
        }
        Ok(out)
    }

    async fn put_action(&self, action: ActionRecord) -> Result<(), StoreError> {
        let key = &action.key;
        let ttl = ((action.expires - now_millis() + 999) / 1000).clamp(1, i32::MAX as i64) as i32;
        let values = [
            text(&key.zone),
            text(&key.kind),
            text(&action.id),
            text(key.scope.as_str()),
            text(&key.workspace),
            text(&key.name),
            text(&action.destination),
            text(&action.action),
            text(&to_json(&action.payload)?),
            big(action.created),
            big(action.expires),
            CqlValue::Int(ttl),
        ];
        self.write_idempotent(&self.inner.statements.insert_action, &values)
            .await
    }

    async fn actions(
        &self,
        zone: &str,
        kind: &str,
        after: Option<&str>,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let rows = self
            .read(
                &self.inner.statements.actions,
                &[text(zone), text(kind), text(after.unwrap_or_default())],
            )
            .await?;
        let now = now_millis();
        let mut out = Vec::new();
        for r in &rows {
            let expires = column_int(r, 8)?;
            if expires <= now {
                continue;
            }
            let scope = Scope::parse(&column_text(r, 1)?)
                .ok_or_else(|| corrupt("unknown scope in actions"))?;
            out.push(ActionRecord {
                id: column_text(r, 0)?,
                key: ObjectKey::custom(kind, scope, zone, &column_text(r, 2)?, &column_text(r, 3)?),
                destination: column_text(r, 4)?,
                action: column_text(r, 5)?,
                payload: from_json(&column_text(r, 6)?)?,
                created: column_int(r, 7)?,
                expires,
            });
        }
        Ok(out)
    }

    async fn acquire_lease(
        &self,
        zone: &str,
        component: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let s = &self.inner.statements;
        let now = now_millis();
        let expires = now + ttl.as_millis() as i64;
        let current = self.read(&s.lease, &[text(zone), text(component)]).await?;
        let current = current
            .first()
            .map(|r| {
                Ok::<_, StoreError>((column_text(r, 0)?, column_int(r, 1)?, column_int(r, 2)?))
            })
            .transpose()?;
        let (applied, epoch) = match current {
            None => (
                self.lwt(
                    &s.lease_create,
                    &[
                        text(zone),
                        text(component),
                        text(holder),
                        big(1),
                        big(expires),
                    ],
                )
                .await?,
                1,
            ),
            Some((current_holder, epoch, _)) if current_holder == holder => (
                self.lwt(
                    &s.lease_renew,
                    &[
                        big(expires),
                        text(zone),
                        text(component),
                        text(holder),
                        big(epoch),
                    ],
                )
                .await?,
                epoch,
            ),
            Some((current_holder, epoch, current_expires)) if current_expires <= now => (
                self.lwt(
                    &s.lease_take_over,
                    &[
                        text(holder),
                        big(epoch + 1),
                        big(expires),
                        text(zone),
                        text(component),
                        text(&current_holder),
                        big(epoch),
                        big(current_expires),
                    ],
                )
                .await?,
                epoch + 1,
            ),
            Some(_) => (false, 0),
        };
        Ok(applied.then(|| Lease {
            zone: zone.to_string(),
            component: component.to_string(),
            holder: holder.to_string(),
            epoch: epoch as u64,
            expires,
        }))
    }

    async fn lease(&self, zone: &str, component: &str) -> Result<Option<Lease>, StoreError> {
        let rows = self
            .read(&self.inner.statements.lease, &[text(zone), text(component)])
            .await?;
        rows.first()
            .map(|r| {
                Ok(Lease {
                    zone: zone.to_string(),
                    component: component.to_string(),
                    holder: column_text(r, 0)?,
                    epoch: column_int(r, 1)? as u64,
                    expires: column_int(r, 2)?,
                })
            })
            .transpose()
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let values = [
            big(0),
            text(&lease.zone),
            text(&lease.component),
            text(&lease.holder),
            big(lease.epoch as i64),
        ];
        self.lwt(&self.inner.statements.lease_release, &values)
            .await
            .map(drop)
    }
}

fn decode_change(filter: &ChangeFilter, row: &CqlRow) -> Result<Option<Change>, StoreError> {
    let workspace = column_text(row, 2)?;
    let name = column_text(row, 3)?;
    if filter.workspace.as_ref().is_some_and(|w| *w != workspace)
        || filter.name.as_ref().is_some_and(|n| *n != name)
    {
        return Ok(None);
    }
    let scope = Scope::parse(&column_text(row, 1)?)
        .ok_or_else(|| corrupt("unknown scope in the change feed"))?;
    Ok(Some(Change {
        cursor: Cursor(column_text(row, 0)?),
        key: ObjectKey::custom(&filter.kind, scope, &filter.zone, &workspace, &name),
        op: if column_text(row, 4)? == "delete" {
            ChangeOp::Delete
        } else {
            ChangeOp::Put
        },
        columns: match column_text(row, 5)?.as_str() {
            "computed" => Columns::Computed,
            "observed" => Columns::Observed,
            _ => Columns::Spec,
        },
        version: column_int(row, 6)? as u64,
        at: column_int(row, 7)?,
    }))
}

fn decode_event(row: &CqlRow) -> Result<Event, StoreError> {
    Ok(Event {
        zone: column_text(row, 0)?,
        kind: column_text(row, 1)?,
        id: column_text(row, 2)?,
        workspace: column_text(row, 3)?,
        name: column_text(row, 4)?,
        event_type: if column_text(row, 5)? == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: column_text(row, 6)?,
        message: column_text(row, 7)?,
        component: column_text(row, 8)?,
        time: column_int(row, 9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_order_like_uuid_v7_ids() {
        let id = uuid::Uuid::now_v7().to_string();
        let millis = cursor_millis(&Cursor(id.clone())).unwrap();
        assert!(bound_id(millis, false) <= id && id <= bound_id(millis, true));
        assert!(bound_id(millis - 1, true) < id && id < bound_id(millis + 1, false));
        assert_eq!(
            cursor_millis(&Cursor(bound_id(millis, false))).unwrap(),
            millis
        );
        assert!(cursor_millis(&Cursor("7".into())).is_err());
    }
}
