//! Turning stored rows into the documents the API returns.

use std::collections::BTreeMap;

use dora_crds::status::NodeCondition;
use dora_crds::{API_VERSION, Kind, Metadata, Resource, decode_written, phase};
use dora_store::{ObjectKey, Row};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `status.phase` of an object whose delete waits on finalizers.
pub const TERMINATING: &str = "Terminating";

/// RFC 3339 text of a Unix-milliseconds instant.
pub fn timestamp(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

/// The resource a row holds, with `status` assembled from the column groups; the status of
/// a defined kind is what its controller wrote (the `computed` group) as it is. An object
/// whose delete waits on finalizers is `Terminating`, saying on which.
pub fn resource(row: &Row) -> Resource {
    let mut status = if Kind::parse(&row.key.kind).is_some_and(Kind::is_defined) {
        match &*row.computed {
            Value::Object(written) => written.clone(),
            _ => Map::new(),
        }
    } else {
        let mut status = Map::new();
        for (name, value) in [
            ("desired", &row.desired),
            ("computed", &row.computed),
            ("observed", &row.observed),
        ] {
            if !value.is_null() {
                status.insert(name.into(), Value::clone(value));
            }
        }
        lift_reconcile_state(&mut status);
        summarize(row, &mut status);
        status
    };
    if row.meta.terminating() {
        status.insert("phase".into(), TERMINATING.into());
        if !row.meta.finalizers.is_empty() {
            let waiting = row.meta.finalizers.join(", ");
            status.insert(
                "message".into(),
                format!("deletion pending on finalizers {waiting}").into(),
            );
        }
    }
    let status = (!status.is_empty()).then_some(Value::Object(status));
    Resource {
        api_version: API_VERSION.into(),
        kind: row.key.kind.clone(),
        metadata: Metadata {
            name: row.key.name.clone(),
            zone: non_empty(&row.key.zone),
            workspace: non_empty(&row.key.workspace),
            labels: row.labels.clone(),
            annotations: non_empty_map(&row.meta.annotations),
            owner_references: (!row.meta.owner_references.is_empty())
                .then(|| row.meta.owner_references.clone()),
            finalizers: (!row.meta.finalizers.is_empty()).then(|| row.meta.finalizers.clone()),
            deletion_timestamp: row.meta.deletion_timestamp.map(timestamp),
            uid: Some(row.uid.clone()),
            version: Some(row.version),
            generation: Some(row.generation),
            spec_hash: Some(row.spec_hash.clone()),
            owner: non_empty(&row.owner),
            created: Some(timestamp(row.created)),
            updated: Some(timestamp(row.updated)),
        },
        spec: Value::clone(&row.resource),
        status,
    }
}

/// Moves what a built-in controller records of its reconciles (`observedGeneration`,
/// `conditions`) from the `computed` group to the top of the status, where the controllers
/// of defined kinds write them: clients read both kinds of objects the same way.
fn lift_reconcile_state(status: &mut Map<String, Value>) {
    let Some(Value::Object(computed)) = status.get_mut("computed") else {
        return;
    };
    let lifted: Vec<(String, Value)> = ["observedGeneration", "conditions"]
        .into_iter()
        .filter_map(|field| {
            computed
                .remove(field)
                .map(|value| (field.to_string(), value))
        })
        .collect();
    status.extend(lifted);
}

/// Adds the words a person reads first (`status.phase`, `status.message`, and when a restart
/// waits, `status.nextRetry`) to the kinds that have them.
fn summarize(row: &Row, status: &mut Map<String, Value>) {
    let phase = match Kind::parse(&row.key.kind) {
        Some(Kind::Workload) => {
            let replicas = row.resource["replica"]["count"].as_u64().unwrap_or(0);
            phase::workload(
                decode_written(&row.computed).as_ref(),
                u32::try_from(replicas).unwrap_or(u32::MAX),
            )
        }
        Some(Kind::Container) => phase::container(
            decode_written(&row.computed).as_ref(),
            decode_written(&row.observed).as_ref(),
        ),
        Some(Kind::Node) => {
            let condition: Option<NodeCondition> = decode_written(&row.computed);
            let cordoned = row.resource["schedulingDisabled"].as_bool() == Some(true);
            status.insert(
                "scheduling".into(),
                phase::node_scheduling(cordoned, condition.as_ref()).into(),
            );
            phase::node(condition.as_ref())
        }
        _ => return,
    };
    status.insert("phase".into(), phase.word.into());
    if let Some(message) = phase.message {
        status.insert("message".into(), message.into());
    }
    if let Some(at) = phase.next_retry {
        status.insert("nextRetry".into(), timestamp(at).into());
    }
}

/// A deleted resource as watchers see it: its key only.
pub fn tombstone(key: &ObjectKey) -> Resource {
    Resource {
        api_version: API_VERSION.into(),
        kind: key.kind.clone(),
        metadata: Metadata {
            name: key.name.clone(),
            zone: non_empty(&key.zone),
            workspace: non_empty(&key.workspace),
            ..Default::default()
        },
        spec: Value::Null,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(1_500), "1970-01-01T00:00:01.5Z");
    }
}
