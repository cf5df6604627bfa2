use std::collections::BTreeMap;

use dora_crds::Scope;
use serde_json::Value;

use crate::ObjectKey;

/// The column groups of a resource row and who owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Columns {
    /// `resource` (the spec), `desired`, labels: written only by the api server.
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
    /// Unix milliseconds.
    pub created: i64,
    /// Unix milliseconds of the last spec-group write.
    pub updated: i64,
    /// The spec.
    pub resource: Value,
    pub desired: Value,
    pub computed: Value,
    pub computed_version: u64,
    pub observed: Value,
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
    pub spec: Value,
    pub spec_hash: String,
    pub desired: Value,
}

/// What a spec write did.
#[derive(Debug, Clone, PartialEq)]
pub enum SpecOutcome {
    Created(Row),
    /// The spec, labels or desired state changed.
    Configured(Row),
    /// Identical to what was stored; nothing was written.
    Unchanged(Row),
}

impl SpecOutcome {
    /// The row as stored after the write.
    pub fn row(&self) -> &Row {
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
