use std::fmt;

use serde_json::Value;

use crate::{Columns, ObjectKey};

/// A position in the change feed. Opaque: only the backend that made it can read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub String);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub cursor: Cursor,
    pub key: ObjectKey,
    pub op: ChangeOp,
    /// The column group written (deletes carry `Spec`).
    pub columns: Columns,
    /// The version of that column group after the write.
    pub version: u64,
    /// Unix milliseconds.
    pub at: i64,
}

/// Which changes a watcher wants: one kind in one partition, optionally one workspace or name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChangeFilter {
    pub kind: String,
    pub zone: String,
    pub workspace: Option<String>,
    pub name: Option<String>,
}

impl ChangeFilter {
    /// Every change of `kind` in `zone`.
    pub fn all(kind: impl Into<String>, zone: impl Into<String>) -> Self {
        ChangeFilter {
            kind: kind.into(),
            zone: zone.into(),
            workspace: None,
            name: None,
        }
    }
}

/// `Normal` or `Warning`, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A state change worth telling a person.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Time-ordered id (UUID v7); later events have greater ids.
    pub id: String,
    pub zone: String,
    pub kind: String,
    pub workspace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub reason: String,
    pub message: String,
    pub component: String,
    /// Unix milliseconds.
    pub time: i64,
}

impl Event {
    /// A new event about `key`, stamped now.
    pub fn new(
        key: &ObjectKey,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
        component: &str,
    ) -> Self {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            zone: key.zone.clone(),
            kind: key.kind.clone(),
            workspace: key.workspace.clone(),
            name: key.name.clone(),
            event_type,
            reason: reason.to_string(),
            message: message.into(),
            component: component.to_string(),
            time: crate::now_millis(),
        }
    }
}

/// Events of one zone (empty for cluster-scoped kinds), oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub zone: String,
    /// `None`: every kind.
    pub kind: Option<String>,
    pub workspace: Option<String>,
    pub name: Option<String>,
    /// Only events with a greater id.
    pub after: Option<String>,
    pub limit: usize,
}

/// A previous spec of a resource, kept when the spec changed.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub key: ObjectKey,
    pub generation: u64,
    pub spec: Value,
    pub spec_hash: String,
    /// Unix milliseconds when this spec was replaced.
    pub time: i64,
}

/// An imperative request to a component (pause, resume, drain...), expiring by TTL.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    /// Time-ordered id (UUID v7).
    pub id: String,
    pub key: ObjectKey,
    pub destination: String,
    pub action: String,
    pub payload: Value,
    pub created: i64,
    pub expires: i64,
}

/// Leadership of one component in one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub zone: String,
    pub component: String,
    pub holder: String,
    /// Bumped whenever the holder changes; writes carry it for fencing.
    pub epoch: u64,
    /// Unix milliseconds.
    pub expires: i64,
}

impl Lease {
    /// The fence a holder attaches to its writes.
    pub fn fence(&self) -> Fence {
        Fence {
            zone: self.zone.clone(),
            component: self.component.clone(),
            epoch: self.epoch,
        }
    }
}

/// Proof of leadership carried by a controller's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub zone: String,
    pub component: String,
    pub epoch: u64,
}
