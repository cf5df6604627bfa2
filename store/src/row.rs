use std::collections::BTreeMap;
use std::sync::Arc;

use dora_crds::Scope;
use serde_json::Value;

use crate::{Fence, KeyParts, MetaWrite, ObjectKey, RowMeta, StoreError, Table};

/// The column groups of a resource row and who owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Columns {
    /// `resource` (the spec), `desired`, labels, `meta`: written only by the api server.
    Spec,
    /// `computed`: written by the scheduler (and creditsys for credit rows).
    Computed,
    /// `observed`: written by node agents, through the api server.
    Observed,
}

/// A status column group, written by compare-and-set on its own version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusColumn {
    Computed,
    Observed,
}

impl From<StatusColumn> for Columns {
    fn from(column: StatusColumn) -> Self {
        match column {
            StatusColumn::Computed => Columns::Computed,
            StatusColumn::Observed => Columns::Observed,
        }
    }
}

/// One resource row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: ObjectKey,
    pub uid: String,
    /// Version of the spec column group; bumped by every write of it.
    pub version: u64,
    /// Number of spec changes (starts at 1).
    pub generation: u64,
    pub spec_hash: String,
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    /// Annotations, owner references, finalizers and deletion time.
    pub meta: RowMeta,
    /// Unix milliseconds.
    pub created: i64,
    /// Unix milliseconds of the last spec-group write.
    pub updated: i64,
    /// The spec; shared, since status writes copy the row and specs are the largest column.
    pub resource: Arc<Value>,
    /// The three status column groups are shared like the spec: a write of one copies the
    /// row without copying the other two.
    pub desired: Arc<Value>,
    pub computed: Arc<Value>,
    pub computed_version: u64,
    pub observed: Arc<Value>,
    pub observed_version: u64,
}

/// What a compare-and-set expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Whatever is there (create or update).
    None,
    /// Nothing: a pure create.
    Absent,
    /// The row at exactly this spec version.
    Version(u64),
}

/// An api-server write of the spec column group.
#[derive(Debug, Clone)]
pub struct SpecWrite {
    pub key: ObjectKey,
    pub precondition: Precondition,
    /// Recorded on create only.
    pub owner: String,
    pub labels: BTreeMap<String, String>,
    /// Changes to annotations, owner references and finalizers, or a request to delete.
    pub meta: MetaWrite,
    pub spec: Value,
    pub spec_hash: String,
    pub desired: Value,
    /// `computed` columns to create the row with (a controller making a system row, such as
    /// a container created already placed); ignored when the row exists.
    pub computed: Option<Value>,
    /// With a fence, the write is refused unless the lease epoch is still current.
    pub fence: Option<Fence>,
}

/// What a spec write did, with the row as stored after it (shared with the store's own
/// copy, so that a write does not copy the row's JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum SpecOutcome {
    Created(Arc<Row>),
    /// The spec, labels, meta or desired state changed.
    Configured(Arc<Row>),
    /// Identical to what was stored; nothing was written.
    Unchanged(Arc<Row>),
}

impl SpecOutcome {
    /// The row as stored after the write.
    pub fn row(&self) -> &Arc<Row> {
        match self {
            SpecOutcome::Created(row)
            | SpecOutcome::Configured(row)
            | SpecOutcome::Unchanged(row) => row,
        }
    }

    /// `created`, `configured` or `unchanged`, as `dora apply` prints it.
    pub fn verb(&self) -> &'static str {
        match self {
            SpecOutcome::Created(_) => "created",
            SpecOutcome::Configured(_) => "configured",
            SpecOutcome::Unchanged(_) => "unchanged",
        }
    }
}

/// One page of a partition.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub kind: String,
    pub scope: Scope,
    /// Required for zoned scopes.
    pub zone: String,
    /// `None` lists every workspace of the partition.
    pub workspace: Option<String>,
    /// Continue token from the previous page.
    pub after: Option<String>,
    pub limit: usize,
}

/// A page of rows in key order, and the token for the next one.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<Row>,
    pub next: Option<String>,
}

impl Precondition {
    /// Checks the precondition against what is stored.
    pub fn check(self, existing: Option<&Row>) -> Result<(), StoreError> {
        match (self, existing) {
            (Precondition::Absent, Some(_)) => Err(StoreError::AlreadyExists),
            (Precondition::Version(_), None) => Err(StoreError::NotFound),
            (Precondition::Version(expected), Some(row)) if row.version != expected => {
                Err(StoreError::Conflict {
                    expected,
                    actual: row.version,
                })
            }
            _ => Ok(()),
        }
    }
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    let text = if text.is_empty() { "null" } else { text };
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SpecWrite {
    /// Whether this write would leave `row` as it is.
    pub fn unchanged(&self, row: &Row, meta: &RowMeta) -> bool {
        *row.resource == self.spec
            && row.labels == self.labels
            && *row.desired == self.desired
            && row.meta == *meta
    }
}

impl Row {
    /// A row of `key` as first created: version and generation 1, every column empty.
    pub fn new(key: ObjectKey, uid: impl Into<String>) -> Row {
        Row {
            key,
            uid: uid.into(),
            version: 1,
            generation: 1,
            spec_hash: String::new(),
            owner: String::new(),
            labels: BTreeMap::new(),
            meta: RowMeta::default(),
            created: 0,
            updated: 0,
            resource: Arc::new(Value::Null),
            desired: Arc::new(Value::Null),
            computed: Arc::new(Value::Null),
            computed_version: 0,
            observed: Arc::new(Value::Null),
            observed_version: 0,
        }
    }

    /// Decodes a row read as the table's key columns followed by the common columns (`uid,
    /// version, generation, spec_hash, owner, labels, created, updated, resource, desired,
    /// computed, computed_version, observed, observed_version, meta`), given readers of text and
    /// integer columns by position.
    pub(crate) fn decode(
        table: Table,
        scope: dora_crds::Scope,
        text: impl Fn(usize) -> Result<String, StoreError>,
        int: impl Fn(usize) -> Result<i64, StoreError>,
    ) -> Result<Row, StoreError> {
        let columns = table.key_columns();
        let mut key = KeyParts {
            kind: String::new(),
            scope,
            zone: String::new(),
            workspace: String::new(),
            name: String::new(),
        };
        for (i, column) in columns.iter().enumerate() {
            let value = text(i)?;
            match *column {
                "kind" => key.kind = value,
                "zone" => key.zone = value,
                "workspace" => key.workspace = value,
                _ => key.name = value,
            }
        }
        let at = columns.len();
        let t = |i: usize| text(at + i);
        let n = |i: usize| int(at + i);
        Ok(Row {
            key: key.into(),
            uid: t(0)?,
            version: n(1)? as u64,
            generation: n(2)? as u64,
            spec_hash: t(3)?,
            owner: t(4)?,
            labels: json(&t(5)?)?,
            created: n(6)?,
            updated: n(7)?,
            resource: Arc::new(json(&t(8)?)?),
            desired: Arc::new(json(&t(9)?)?),
            computed: Arc::new(json(&t(10)?)?),
            computed_version: n(11)? as u64,
            observed: Arc::new(json(&t(12)?)?),
            observed_version: n(13)? as u64,
            meta: json::<Option<RowMeta>>(&t(14)?)?.unwrap_or_default(),
        })
    }
}
