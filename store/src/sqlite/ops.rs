//! The SQL behind each store operation, run on one connection. Every write checks its
//! preconditions before it changes a row, so a refused write has changed nothing.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dora_crds::Scope;
use rusqlite::types::{ToSqlOutput, Value as Sql};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::committed::lock;
use super::schema::COMMON_COLUMNS;
use super::{Retention, Tx, backend};
use crate::{
    ActionRecord, Change, ChangeFilter, ChangeOp, Columns, Cursor, Event, EventQuery, EventType,
    Fence, Lease, ListQuery, ObjectKey, Page, Precondition, Row, RowMeta, SpecOutcome, SpecWrite,
    StatusColumn, StoreError, Table, VersionRecord, now_millis,
};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(corrupt)
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(corrupt)
}

/// `kind = ? AND ... AND name = ?`, to be bound with [`key_params`] after any other values.
fn key_where(table: Table) -> String {
    table
        .key_columns()
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn key_params(key: &ObjectKey) -> impl Iterator<Item = &str> {
    key.table().key_columns().iter().map(|c| key.column(c))
}

fn select_sql(table: Table) -> String {
    format!(
        "SELECT {}, {COMMON_COLUMNS} FROM {}",
        table.key_columns().join(", "),
        table.name()
    )
}

/// The per-row statements of one table, written out once.
struct TableSql {
    get: String,
    /// Inserts a row unless one is there under its key.
    insert: String,
    update_spec: String,
    update_computed: String,
    update_observed: String,
    delete: String,
}

impl TableSql {
    fn new(table: Table) -> Self {
        let name = table.name();
        let keys = table.key_columns();
        let by_key = key_where(table);
        let containers = table == Table::Containers;
        let (insert_extra, insert_extra_values, update_extra, node) = if containers {
            (", workload, node", ", ?, ?", ", workload = ?", ", node = ?")
        } else {
            ("", "", "", "")
        };
        let placeholders = vec!["?"; keys.len() + 13].join(", ");
        TableSql {
            get: format!("{} WHERE {by_key}", select_sql(table)),
            insert: format!(
                "INSERT INTO {name} ({}, uid, version, generation, spec_hash, owner, labels, created, updated, resource, desired, computed, computed_version, meta{insert_extra}) VALUES ({placeholders}{insert_extra_values}) ON CONFLICT DO NOTHING",
                keys.join(", "),
            ),
            update_spec: format!(
                "UPDATE {name} SET version = version + 1, generation = ?, spec_hash = ?, labels = ?, updated = ?, resource = ?, desired = ?, meta = ?{update_extra} WHERE {by_key}"
            ),
            update_computed: format!(
                "UPDATE {name} SET computed = ?, computed_version = computed_version + 1{node} WHERE {by_key}"
            ),
            update_observed: format!(
                "UPDATE {name} SET observed = ?, observed_version = observed_version + 1 WHERE {by_key}"
            ),
            delete: format!("DELETE FROM {name} WHERE {by_key}"),
        }
    }
}

fn sql(table: Table) -> &'static TableSql {
    static SQL: LazyLock<[TableSql; 5]> = LazyLock::new(|| Table::ALL.map(TableSql::new));
    // `Table::ALL` lists the tables in declaration order.
    &SQL[table as usize]
}

fn read_row(table: Table, scope: Scope, r: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    Row::decode(
        table,
        scope,
        |i| r.get::<_, String>(i).map_err(backend),
        |i| r.get::<_, i64>(i).map_err(backend),
    )
}

pub(super) fn get(conn: &Connection, key: &ObjectKey) -> Result<Option<Row>, StoreError> {
    let table = key.table();
    let mut stmt = conn.prepare_cached(&sql(table).get).map_err(backend)?;
    let mut rows = stmt
        .query(params_from_iter(key_params(key)))
        .map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(r) => read_row(table, key.scope, r).map(Some),
        None => Ok(None),
    }
}

/// What memory knows of the row of `key`: as this transaction's writes left it, or as this
/// writer last committed it. `None` when memory does not know.
fn known(tx: &Tx<'_>, key: &ObjectKey) -> Option<Option<Arc<Row>>> {
    if let Some(row) = tx.rows.get(key) {
        return Some(row.clone());
    }
    lock(tx.recent).kept(key).map(Some)
}

/// The row of `key` as this transaction sees it, from memory when it knows, which spares a
/// query and the decoding of three JSON columns on the writer thread.
fn current(tx: &Tx<'_>, key: &ObjectKey) -> Result<Option<Arc<Row>>, StoreError> {
    match known(tx, key) {
        Some(row) => Ok(row),
        None => Ok(get(tx.conn, key)?.map(Arc::new)),
    }
}

pub(super) fn list(conn: &Connection, query: &ListQuery) -> Result<Page, StoreError> {
    let table = Table::of(&query.kind, query.scope);
    let mut conditions = vec!["kind = ?".to_string()];
    let mut values: Vec<String> = vec![query.kind.clone()];
    if query.scope.has_zone() {
        conditions.push("zone = ?".into());
        values.push(query.zone.clone());
    }
    let by_workspace = query.scope.has_workspace();
    if let (true, Some(workspace)) = (by_workspace, &query.workspace) {
        conditions.push("workspace = ?".into());
        values.push(workspace.clone());
    }
    if let Some(after) = &query.after {
        if by_workspace && query.workspace.is_none() {
            let (workspace, name) = after
                .split_once('/')
                .ok_or_else(|| StoreError::BadCursor(after.clone()))?;
            conditions.push("(workspace, name) > (?, ?)".into());
            values.push(workspace.to_string());
            values.push(name.to_string());
        } else {
            conditions.push("name > ?".into());
            values.push(after.clone());
        }
    }
    let order = if by_workspace {
        "workspace, name"
    } else {
        "name"
    };
    let limit = query.limit.max(1);
    let sql = format!(
        "{} WHERE {} ORDER BY {order} LIMIT {}",
        select_sql(table),
        conditions.join(" AND "),
        limit + 1
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let mut cursor = stmt.query(params_from_iter(values)).map_err(backend)?;
    let mut rows = Vec::new();
    while let Some(r) = cursor.next().map_err(backend)? {
        rows.push(read_row(table, query.scope, r)?);
    }
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| {
            if by_workspace && query.workspace.is_none() {
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

/// A spec write with its JSON columns already encoded, so that the writer thread does not.
pub(super) struct EncodedSpec {
    write: SpecWrite,
    labels: String,
    spec: String,
    desired: String,
    computed: String,
}

impl EncodedSpec {
    pub(super) fn new(write: SpecWrite) -> Result<Self, StoreError> {
        Ok(EncodedSpec {
            labels: to_json(&write.labels)?,
            spec: to_json(&write.spec)?,
            desired: to_json(&write.desired)?,
            computed: to_json(write.computed.as_ref().unwrap_or(&Value::Null))?,
            write,
        })
    }
}

/// What a spec write did, and the row as stored after it.
pub(super) type Written = (fn(Arc<Row>) -> SpecOutcome, Arc<Row>);

pub(super) fn put_spec(
    tx: &mut Tx<'_>,
    encoded: EncodedSpec,
    keep_versions: usize,
) -> Result<Written, StoreError> {
    let EncodedSpec {
        write,
        labels,
        spec,
        desired,
        computed,
    } = encoded;
    let conn = tx.conn;
    let key = &write.key;
    let table = key.table();
    if let Some(fence) = &write.fence {
        check_fence(tx, fence)?;
    }
    let existing = match known(tx, key) {
        Some(row) => row,
        // A create learns from its insert whether a row is there.
        None if write.precondition == Precondition::Absent => None,
        None => get(conn, key)?.map(Arc::new),
    };
    write.precondition.check(existing.as_deref())?;
    let now = now_millis();
    let workload = write
        .spec
        .get("workload")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(old) = existing else {
        let meta = RowMeta::default().after(&write.meta, now)?;
        let meta_json = to_json(&meta)?;
        let uid = uuid::Uuid::new_v4().to_string();
        let node = write
            .computed
            .as_ref()
            .and_then(|c| c.get("node"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut values: Vec<ToSqlOutput<'_>> = key_params(key).map(ToSqlOutput::from).collect();
        values.extend([
            uid.as_str().into(),
            1.into(),
            1.into(),
            write.spec_hash.as_str().into(),
            write.owner.as_str().into(),
            labels.as_str().into(),
            now.into(),
            now.into(),
            spec.as_str().into(),
            desired.as_str().into(),
            computed.as_str().into(),
            i64::from(write.computed.is_some()).into(),
            meta_json.as_str().into(),
        ]);
        if table == Table::Containers {
            values.extend([workload.into(), node.into()]);
        }
        let inserted = conn
            .prepare_cached(&sql(table).insert)
            .map_err(backend)?
            .execute(params_from_iter(values))
            .map_err(backend)?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists);
        }
        append_change(tx, key, ChangeOp::Put, Columns::Spec, 1, now);
        // The row as the insert left it, without reading and decoding it back.
        let row = Row {
            spec_hash: write.spec_hash,
            owner: write.owner,
            labels: write.labels,
            meta,
            created: now,
            updated: now,
            resource: Arc::new(write.spec),
            desired: Arc::new(write.desired),
            computed_version: u64::from(write.computed.is_some()),
            computed: Arc::new(write.computed.unwrap_or(Value::Null)),
            ..Row::new(write.key, uid)
        };
        let row = Arc::new(row);
        tx.rows.insert(row.key.clone(), Some(row.clone()));
        return Ok((SpecOutcome::Created, row));
    };
    let meta = old.meta.after(&write.meta, now)?;
    if write.unchanged(&old, &meta) {
        return Ok((SpecOutcome::Unchanged, old));
    }
    let meta_json = to_json(&meta)?;
    let spec_changed = *old.resource != write.spec;
    let generation = if spec_changed {
        keep_version(conn, &old, now, keep_versions)?;
        old.generation + 1
    } else {
        old.generation
    };
    let mut values: Vec<ToSqlOutput<'_>> = vec![
        (generation as i64).into(),
        write.spec_hash.as_str().into(),
        labels.as_str().into(),
        now.into(),
        spec.as_str().into(),
        desired.as_str().into(),
        meta_json.as_str().into(),
    ];
    if table == Table::Containers {
        values.push(workload.into());
    }
    values.extend(key_params(key).map(ToSqlOutput::from));
    conn.prepare_cached(&sql(table).update_spec)
        .map_err(backend)?
        .execute(params_from_iter(values))
        .map_err(backend)?;
    append_change(tx, key, ChangeOp::Put, Columns::Spec, old.version + 1, now);
    let mut row = Arc::unwrap_or_clone(old);
    row.version += 1;
    row.generation = generation;
    row.spec_hash = write.spec_hash;
    row.labels = write.labels;
    row.meta = meta;
    row.updated = now;
    row.resource = Arc::new(write.spec);
    row.desired = Arc::new(write.desired);
    let row = Arc::new(row);
    tx.rows.insert(row.key.clone(), Some(row.clone()));
    Ok((SpecOutcome::Configured, row))
}

fn keep_version(conn: &Connection, row: &Row, now: i64, keep: usize) -> Result<(), StoreError> {
    let key = &row.key;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO versions (zone, resource_kind, workspace, name, generation, scope, resource, spec_hash, time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .map_err(backend)?
    .execute(params![
        key.zone,
        key.kind,
        key.workspace,
        key.name,
        row.generation as i64,
        key.scope.as_str(),
        to_json(&*row.resource)?,
        row.spec_hash,
        now
    ])
    .map_err(backend)?;
    conn.prepare_cached(
        "DELETE FROM versions WHERE zone = ?1 AND resource_kind = ?2 AND workspace = ?3 AND name = ?4 AND generation <= ?5",
    )
    .map_err(backend)?
    .execute(params![key.zone, key.kind, key.workspace, key.name, row.generation as i64 - keep as i64])
    .map_err(backend)?;
    Ok(())
}

fn check_fence(tx: &mut Tx<'_>, fence: &Fence) -> Result<(), StoreError> {
    if tx.fences.contains(fence) {
        return Ok(());
    }
    let epoch: Option<i64> = tx
        .conn
        .prepare_cached("SELECT epoch FROM leases WHERE zone = ?1 AND component = ?2")
        .map_err(backend)?
        .query_row(params![fence.zone, fence.component], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    match epoch {
        Some(epoch) if epoch as u64 == fence.epoch => {
            tx.fences.push(fence.clone());
            Ok(())
        }
        _ => Err(StoreError::Fenced { epoch: fence.epoch }),
    }
}

/// Writes a status column group; `value` comes with its JSON text, encoded off the writer
/// thread.
pub(super) fn put_status(
    tx: &mut Tx<'_>,
    key: &ObjectKey,
    column: StatusColumn,
    expected: Option<u64>,
    (value, text): (Value, String),
    fence: Option<&Fence>,
) -> Result<Arc<Row>, StoreError> {
    let conn = tx.conn;
    if let Some(fence) = fence {
        check_fence(tx, fence)?;
    }
    let row = current(tx, key)?.ok_or(StoreError::NotFound)?;
    let current = match column {
        StatusColumn::Computed => row.computed_version,
        StatusColumn::Observed => row.observed_version,
    };
    if let Some(expected) = expected
        && expected != current
    {
        return Err(StoreError::Conflict {
            expected,
            actual: current,
        });
    }
    let table = key.table();
    let (statement, node) = match column {
        StatusColumn::Computed => (
            &sql(table).update_computed,
            (table == Table::Containers).then(|| {
                value
                    .get("node")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            }),
        ),
        StatusColumn::Observed => (&sql(table).update_observed, None),
    };
    let mut values = vec![ToSqlOutput::from(text.as_str())];
    values.extend(node.map(ToSqlOutput::from));
    values.extend(key_params(key).map(ToSqlOutput::from));
    conn.prepare_cached(statement)
        .map_err(backend)?
        .execute(params_from_iter(values))
        .map_err(backend)?;
    append_change(
        tx,
        key,
        ChangeOp::Put,
        column.into(),
        current + 1,
        now_millis(),
    );
    // The row as the update left it, without reading and decoding it again.
    let mut row = Arc::unwrap_or_clone(row);
    match column {
        StatusColumn::Computed => {
            row.computed = Arc::new(value);
            row.computed_version = current + 1;
        }
        StatusColumn::Observed => {
            row.observed = Arc::new(value);
            row.observed_version = current + 1;
        }
    }
    let row = Arc::new(row);
    tx.rows.insert(key.clone(), Some(row.clone()));
    Ok(row)
}

pub(super) fn delete(
    tx: &mut Tx<'_>,
    key: &ObjectKey,
    precondition: Precondition,
) -> Result<Row, StoreError> {
    let conn = tx.conn;
    let row = get(conn, key)?.ok_or(StoreError::NotFound)?;
    precondition.check(Some(&row))?;
    conn.prepare_cached(&sql(key.table()).delete)
        .map_err(backend)?
        .execute(params_from_iter(key_params(key)))
        .map_err(backend)?;
    conn.prepare_cached(
        "DELETE FROM versions WHERE zone = ?1 AND resource_kind = ?2 AND workspace = ?3 AND name = ?4",
    )
    .map_err(backend)?
    .execute(params![key.zone, key.kind, key.workspace, key.name])
    .map_err(backend)?;
    append_change(
        tx,
        key,
        ChangeOp::Delete,
        Columns::Spec,
        row.version,
        now_millis(),
    );
    tx.rows.insert(key.clone(), None);
    Ok(row)
}

pub(super) fn versions(
    conn: &Connection,
    key: &ObjectKey,
) -> Result<Vec<VersionRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT generation, resource, spec_hash, time FROM versions
             WHERE zone = ?1 AND resource_kind = ?2 AND workspace = ?3 AND name = ?4 ORDER BY generation",
        )
        .map_err(backend)?;
    let mut rows = stmt
        .query(params![key.zone, key.kind, key.workspace, key.name])
        .map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        out.push(VersionRecord {
            key: key.clone(),
            generation: r.get::<_, i64>(0).map_err(backend)? as u64,
            spec: from_json(&r.get::<_, String>(1).map_err(backend)?)?,
            spec_hash: r.get(2).map_err(backend)?,
            time: r.get(3).map_err(backend)?,
        });
    }
    Ok(out)
}

/// A feed entry of a transaction, written with all of its others just before it commits.
pub(super) struct PendingChange {
    key: ObjectKey,
    op: ChangeOp,
    columns: Columns,
    version: u64,
    at: i64,
}

fn append_change(
    tx: &mut Tx<'_>,
    key: &ObjectKey,
    op: ChangeOp,
    columns: Columns,
    version: u64,
    at: i64,
) {
    tx.changes.push(PendingChange {
        key: key.clone(),
        op,
        columns,
        version,
        at,
    });
}

/// Rows per feed insert: a statement each, taken largest first.
const CHANGE_ROWS: [usize; 3] = [64, 8, 1];

/// The feed insert of each size in [`CHANGE_ROWS`].
fn insert_changes_sql() -> &'static [String; 3] {
    static SQL: LazyLock<[String; 3]> = LazyLock::new(|| {
        CHANGE_ROWS.map(|rows| {
            format!(
                "INSERT INTO changes (zone, kind, scope, workspace, name, op, columns, version, at) VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
            )
        })
    });
    &SQL
}

/// Writes a transaction's feed entries in order, a few statements for all of them, and returns
/// them with their sequence numbers.
pub(super) fn write_changes(
    conn: &Connection,
    pending: Vec<PendingChange>,
) -> Result<Vec<(i64, Change)>, StoreError> {
    let mut written = Vec::with_capacity(pending.len());
    let mut rest = &pending[..];
    // The last size is one row, so every entry is written.
    for (rows, sql) in CHANGE_ROWS.into_iter().zip(insert_changes_sql()) {
        while rest.len() >= rows {
            let (chunk, tail) = rest.split_at(rows);
            let mut statement = conn.prepare_cached(sql).map_err(backend)?;
            for (i, change) in chunk.iter().enumerate() {
                let op = match change.op {
                    ChangeOp::Put => "put",
                    ChangeOp::Delete => "delete",
                };
                let columns = match change.columns {
                    Columns::Spec => "spec",
                    Columns::Computed => "computed",
                    Columns::Observed => "observed",
                };
                let key = &change.key;
                let first = i * 9 + 1;
                let texts = [
                    key.zone.as_str(),
                    key.kind.as_str(),
                    key.scope.as_str(),
                    key.workspace.as_str(),
                    key.name.as_str(),
                    op,
                    columns,
                ];
                for (j, text) in texts.into_iter().enumerate() {
                    statement
                        .raw_bind_parameter(first + j, text)
                        .map_err(backend)?;
                }
                statement
                    .raw_bind_parameter(first + 7, change.version as i64)
                    .map_err(backend)?;
                statement
                    .raw_bind_parameter(first + 8, change.at)
                    .map_err(backend)?;
            }
            statement.raw_execute().map_err(backend)?;
            // The rows of one insert take consecutive sequence numbers: this writer holds the
            // database's write lock, and the newest takes the largest.
            let last = conn.last_insert_rowid();
            for (i, change) in chunk.iter().enumerate() {
                let seq = last - (rows - 1 - i) as i64;
                written.push((
                    seq,
                    Change {
                        cursor: Cursor(seq.to_string()),
                        key: change.key.clone(),
                        op: change.op,
                        columns: change.columns,
                        version: change.version,
                        at: change.at,
                    },
                ));
            }
            rest = tail;
        }
    }
    Ok(written)
}

/// A number that moves whenever another connection commits to the database.
pub(super) fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("PRAGMA data_version")
        .map_err(backend)?
        .query_row([], |r| r.get(0))
        .map_err(backend)
}

pub(super) fn parse_cursor(cursor: &Cursor) -> Result<i64, StoreError> {
    cursor
        .0
        .parse()
        .map_err(|_| StoreError::BadCursor(cursor.0.clone()))
}

fn meta(conn: &Connection, key: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .map_err(backend)?
        .query_row([key], |r| r.get(0))
        .optional()
        .map_err(backend)
        .map(Option::unwrap_or_default)
}

/// The newest sequence number. Pruning keeps the newest entry, so the next one (SQLite's
/// largest plus one) never goes back; a database from before that rule may have pruned all,
/// hence the pruned mark.
pub(super) fn head(conn: &Connection) -> Result<Cursor, StoreError> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT MAX(seq) FROM changes")
        .map_err(backend)?
        .query_row([], |r| r.get(0))
        .map_err(backend)?;
    let pruned = meta(conn, "changes_pruned_through")?;
    Ok(Cursor(seq.unwrap_or_default().max(pruned).to_string()))
}

pub(super) fn changes(
    conn: &Connection,
    filter: &ChangeFilter,
    after: &Cursor,
    limit: usize,
) -> Result<Vec<Change>, StoreError> {
    let after_seq = parse_cursor(after)?;
    if after_seq < meta(conn, "changes_pruned_through")? {
        return Err(StoreError::Expired(after.0.clone()));
    }
    let mut sql = String::from(
        "SELECT seq, zone, kind, scope, workspace, name, op, columns, version, at FROM changes
         WHERE kind = ?1 AND zone = ?2 AND seq > ?3",
    );
    let mut values = vec![
        Sql::Text(filter.kind.clone()),
        Sql::Text(filter.zone.clone()),
        Sql::Integer(after_seq),
    ];
    if let Some(workspace) = &filter.workspace {
        sql.push_str(&format!(" AND workspace = ?{}", values.len() + 1));
        values.push(Sql::Text(workspace.clone()));
    }
    if let Some(name) = &filter.name {
        sql.push_str(&format!(" AND name = ?{}", values.len() + 1));
        values.push(Sql::Text(name.clone()));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {}", limit.max(1)));
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        // Borrowed from SQLite's row buffer: a feed read by the thousand copies each text once.
        let text = |i: usize| {
            r.get_ref(i)
                .map_err(backend)?
                .as_str()
                .map_err(|e| corrupt(format!("the change feed: {e}")))
        };
        let scope =
            Scope::parse(text(3)?).ok_or_else(|| corrupt("unknown scope in the change feed"))?;
        out.push(Change {
            cursor: Cursor(r.get::<_, i64>(0).map_err(backend)?.to_string()),
            key: ObjectKey::custom(text(2)?, scope, text(1)?, text(4)?, text(5)?),
            op: if text(6)? == "delete" {
                ChangeOp::Delete
            } else {
                ChangeOp::Put
            },
            columns: match text(7)? {
                "computed" => Columns::Computed,
                "observed" => Columns::Observed,
                _ => Columns::Spec,
            },
            version: r.get::<_, i64>(8).map_err(backend)? as u64,
            at: r.get(9).map_err(backend)?,
        });
    }
    Ok(out)
}

pub(super) fn append_event(conn: &Connection, event: &Event) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO events (zone, resource_kind, id, workspace, name, type, reason, message, component, time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .map_err(backend)?
    .execute(params![
        event.zone,
        event.kind,
        event.id,
        event.workspace,
        event.name,
        event.event_type.as_str(),
        event.reason,
        event.message,
        event.component,
        event.time
    ])
    .map_err(backend)?;
    Ok(())
}

pub(super) fn events(conn: &Connection, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
    let mut sql = String::from(
        "SELECT zone, resource_kind, id, workspace, name, type, reason, message, component, time FROM events WHERE zone = ?1",
    );
    let mut values = vec![query.zone.clone()];
    for (column, value) in [
        ("resource_kind", &query.kind),
        ("workspace", &query.workspace),
        ("name", &query.name),
    ] {
        if let Some(value) = value {
            values.push(value.clone());
            sql.push_str(&format!(" AND {column} = ?{}", values.len()));
        }
    }
    let limit = query.limit.max(1);
    // Following from an id reads forward; without one, the newest `limit` events are wanted.
    match &query.after {
        Some(after) => {
            values.push(after.clone());
            sql.push_str(&format!(
                " AND id > ?{} ORDER BY id LIMIT {limit}",
                values.len()
            ));
        }
        None => sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}")),
    }
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        let text = |i: usize| r.get::<_, String>(i).map_err(backend);
        out.push(Event {
            zone: text(0)?,
            kind: text(1)?,
            id: text(2)?,
            workspace: text(3)?,
            name: text(4)?,
            event_type: if text(5)? == "Warning" {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: text(6)?,
            message: text(7)?,
            component: text(8)?,
            time: r.get(9).map_err(backend)?,
        });
    }
    if query.after.is_none() {
        out.reverse();
    }
    Ok(out)
}

pub(super) fn put_action(conn: &Connection, action: &ActionRecord) -> Result<(), StoreError> {
    let key = &action.key;
    conn.prepare_cached(
        "INSERT INTO actions (zone, resource_kind, id, scope, workspace, name, destination, action, payload, created, expires)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .map_err(backend)?
    .execute(params![
        key.zone,
        key.kind,
        action.id,
        key.scope.as_str(),
        key.workspace,
        key.name,
        action.destination,
        action.action,
        to_json(&action.payload)?,
        action.created,
        action.expires
    ])
    .map_err(backend)?;
    Ok(())
}

pub(super) fn actions(
    conn: &Connection,
    zone: &str,
    kind: &str,
    after: Option<&str>,
) -> Result<Vec<ActionRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, scope, workspace, name, destination, action, payload, created, expires FROM actions
             WHERE zone = ?1 AND resource_kind = ?2 AND id > ?3 AND expires > ?4 ORDER BY id",
        )
        .map_err(backend)?;
    let mut rows = stmt
        .query(params![zone, kind, after.unwrap_or_default(), now_millis()])
        .map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        let text = |i: usize| r.get::<_, String>(i).map_err(backend);
        let scope = Scope::parse(&text(1)?).ok_or_else(|| corrupt("unknown scope in actions"))?;
        out.push(ActionRecord {
            id: text(0)?,
            key: ObjectKey::custom(kind, scope, zone, &text(2)?, &text(3)?),
            destination: text(4)?,
            action: text(5)?,
            payload: from_json(&text(6)?)?,
            created: r.get(7).map_err(backend)?,
            expires: r.get(8).map_err(backend)?,
        });
    }
    Ok(out)
}

pub(super) fn acquire_lease(
    tx: &mut Tx<'_>,
    zone: &str,
    component: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    let now = now_millis();
    let expires = now + ttl.as_millis() as i64;
    let conn = tx.conn;
    let current: Option<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT holder, epoch, expires FROM leases WHERE zone = ?1 AND component = ?2",
        )
        .map_err(backend)?
        .query_row(params![zone, component], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(backend)?;
    let epoch = match current {
        None => 1,
        Some((current_holder, epoch, _)) if current_holder == holder => epoch,
        Some((_, epoch, current_expires)) if current_expires <= now => epoch + 1,
        Some(_) => return Ok(None),
    };
    conn.prepare_cached("INSERT OR REPLACE INTO leases (zone, component, holder, epoch, expires) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(backend)?
        .execute(params![zone, component, holder, epoch, expires])
        .map_err(backend)?;
    // A new epoch deposes the fences this transaction found current.
    tx.fences
        .retain(|fence| fence.zone != zone || fence.component != component);
    Ok(Some(Lease {
        zone: zone.to_string(),
        component: component.to_string(),
        holder: holder.to_string(),
        epoch: epoch as u64,
        expires,
    }))
}

pub(super) fn lease(
    conn: &Connection,
    zone: &str,
    component: &str,
) -> Result<Option<Lease>, StoreError> {
    conn.prepare_cached(
        "SELECT holder, epoch, expires FROM leases WHERE zone = ?1 AND component = ?2",
    )
    .map_err(backend)?
    .query_row(params![zone, component], |r| {
        Ok(Lease {
            zone: zone.to_string(),
            component: component.to_string(),
            holder: r.get(0)?,
            epoch: r.get::<_, i64>(1)? as u64,
            expires: r.get(2)?,
        })
    })
    .optional()
    .map_err(backend)
}

pub(super) fn release_lease(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    // Expire the lease but keep its epoch, so the next holder gets a greater one.
    conn.prepare_cached("UPDATE leases SET expires = 0 WHERE zone = ?1 AND component = ?2 AND holder = ?3 AND epoch = ?4")
        .map_err(backend)?
        .execute(params![lease.zone, lease.component, lease.holder, lease.epoch as i64])
        .map_err(backend)?;
    Ok(())
}

/// Drops change-feed entries, events and actions past their retention.
pub(super) fn prune(conn: &Connection, retention: &Retention) -> Result<(), StoreError> {
    let now = now_millis();
    let changes_before = now - retention.changes.as_millis() as i64;
    let events_before = now - retention.events.as_millis() as i64;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
    let result = (|| {
        // The newest entry stays whatever its age: SQLite numbers the next one from it.
        let pruned: Option<i64> = conn
            .query_row(
                "SELECT MAX(seq) FROM changes WHERE at < ?1
                 AND seq < (SELECT MAX(seq) FROM changes)",
                [changes_before],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if let Some(through) = pruned {
            conn.execute("DELETE FROM changes WHERE seq <= ?1", [through])
                .map_err(backend)?;
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('changes_pruned_through', ?1)",
                [through],
            )
            .map_err(backend)?;
        }
        conn.execute("DELETE FROM events WHERE time < ?1", [events_before])
            .map_err(backend)?;
        conn.execute("DELETE FROM actions WHERE expires <= ?1", [now])
            .map_err(backend)?;
        Ok(())
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(e) = conn.execute_batch(end) {
        // Never leave the writer's connection inside a transaction.
        let _ = conn.execute_batch("ROLLBACK");
        return Err(backend(e));
    }
    result
}
