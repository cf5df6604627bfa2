//! What each reconcile came to, written into the object's status over the API, so that a user
//! sees it with `dora get -w` and `dora describe` without access to the controller's machine:
//! `observedGeneration` (the spec generation reconciled) and a `Reconciled` condition.

use dora_client::Client;
use dora_crds::Kind;
use dora_crds::status::Condition;
use dora_store::{ObjectKey, Row};
use serde_json::{Value, json};

/// The condition the runtime keeps.
const RECONCILED: &str = "Reconciled";

/// Writes reconcile outcomes of a defined kind's objects into their status.
pub(crate) struct Reporter {
    client: Client,
}

impl Reporter {
    /// A reporter over `client` for `kind`, when its objects have a status.
    pub(crate) fn new(client: &Client, kind: Kind) -> Option<Reporter> {
        let definition = dora_crds::registry::definition(kind)?;
        definition.status.then(|| Reporter {
            client: client.clone(),
        })
    }

    /// Records that reconciling `row` came to `outcome` (an error's text), unless its status
    /// says so already: a write would wake the controller for nothing.
    pub(crate) async fn record(&self, row: &Row, outcome: Result<(), String>) {
        let Some(patch) = patch(row, &outcome, &now()) else {
            return;
        };
        let path = object_path(&row.key);
        if let Err(e) = self.client.patch_status(&path, &patch).await {
            // Deleted meanwhile, or not allowed: the reconcile itself is what matters.
            tracing::debug!(error = %e, "cannot record the reconcile in the status");
        }
    }
}

/// The API path of the object `key` names.
fn object_path(key: &ObjectKey) -> String {
    let kind = Kind::parse(&key.kind);
    let workspace = kind
        .filter(|kind| kind.scope().has_workspace())
        .map(|_| key.workspace.as_str());
    let collection = kind
        .map(|kind| kind.collection_path(&key.zone, workspace))
        .unwrap_or_default();
    format!("{collection}/{}", key.name)
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The merge patch recording `outcome` at `now` into `row`'s status, or `None` when it holds
/// that already. The condition's transition time moves only when its status changes.
fn patch(row: &Row, outcome: &Result<(), String>, now: &str) -> Option<Value> {
    let status = &row.computed;
    let before: Option<Condition> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::from_value::<Condition>(c.clone()).ok())
        .find(|c| c.kind == RECONCILED);
    let (truth, reason, message) = match outcome {
        Ok(()) => ("True", "Succeeded", String::new()),
        Err(e) => ("False", "Failed", e.clone()),
    };
    let since = before
        .as_ref()
        .filter(|c| c.status == truth)
        .map_or(now.to_string(), |c| c.last_transition_time.clone());
    let condition = Condition {
        kind: RECONCILED.into(),
        status: truth.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
    };
    let observed = status["observedGeneration"].as_u64();
    if observed == Some(row.generation) && before.as_ref() == Some(&condition) {
        return None;
    }
    let mut conditions: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] != RECONCILED)
        .cloned()
        .collect();
    conditions.push(json!(condition));
    Some(json!({"observedGeneration": row.generation, "conditions": conditions}))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn row(generation: u64, status: Value) -> Row {
        Row {
            key: ObjectKey::new(Kind::Workload, "z", "w", "a"),
            uid: String::new(),
            version: 1,
            generation,
            spec_hash: String::new(),
            owner: String::new(),
            labels: Default::default(),
            created: 0,
            updated: 0,
            resource: Arc::new(Value::Null),
            desired: Arc::new(Value::Null),
            computed: Arc::new(status),
            computed_version: 0,
            observed: Arc::new(Value::Null),
            observed_version: 0,
        }
    }

    #[test]
    fn a_reconcile_is_recorded_once_and_its_transition_time_moves_only_on_a_change() {
        let first = patch(&row(1, Value::Null), &Ok(()), "t1").unwrap();
        assert_eq!(first["observedGeneration"], 1);
        assert_eq!(first["conditions"][0]["status"], "True");
        assert_eq!(first["conditions"][0]["lastTransitionTime"], "t1");
        assert!(
            patch(&row(1, first.clone()), &Ok(()), "t2").is_none(),
            "nothing new"
        );
        let newer = patch(&row(2, first.clone()), &Ok(()), "t2").unwrap();
        assert_eq!(newer["observedGeneration"], 2);
        assert_eq!(newer["conditions"][0]["lastTransitionTime"], "t1");
        let failed = patch(&row(2, newer), &Err("no quota".into()), "t3").unwrap();
        assert_eq!(failed["conditions"][0]["status"], "False");
        assert_eq!(failed["conditions"][0]["reason"], "Failed");
        assert_eq!(failed["conditions"][0]["message"], "no quota");
        assert_eq!(failed["conditions"][0]["lastTransitionTime"], "t3");
    }

    #[test]
    fn other_conditions_are_kept() {
        let status = json!({"conditions": [{"type": "Ready", "status": "True",
            "reason": "Up", "lastTransitionTime": "t0"}]});
        let patch = patch(&row(1, status), &Ok(()), "t1").unwrap();
        let types: Vec<&str> = patch["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "Reconciled"]);
    }
}
