//! What each reconcile came to, written into the object's status over the API, so that a user
//! sees it with `dora get -w` and `dora describe` without access to the controller's machine:
//! `observedGeneration` (the spec generation reconciled) and a `Reconciled` condition; and a
//! failing reconcile as a `ReconcileFailed` warning event, at most once per
//! [`WARNING_INTERVAL`] per object and error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dora_client::{Client, NewEvent};
use dora_crds::status::Condition;
use dora_store::{ObjectKey, Row};

use crate::KindRef;
use serde_json::{Value, json};

/// The condition the runtime keeps.
const RECONCILED: &str = "Reconciled";
/// The least time between two warnings of the same failure of an object.
const WARNING_INTERVAL: Duration = Duration::from_secs(300);

/// Writes reconcile outcomes of a kind's objects over the API.
pub(crate) struct Reporter {
    client: Client,
    /// The controller's name, as the events' component.
    component: String,
    kind: KindRef,
    /// Whether the kind's objects have a status to record the outcome in: as its Definition
    /// says when this process knows it, else until the API refuses a status write (405).
    status: AtomicBool,
    warned: Warnings,
}

/// The last warning told per object: its error and when.
#[derive(Default)]
struct Warnings(Mutex<HashMap<ObjectKey, (String, Instant)>>);

impl Warnings {
    /// Whether `error` of `key` is worth a warning now, noting it when it is.
    fn fresh(&self, key: &ObjectKey, error: &str) -> bool {
        let mut warned = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let fresh = warned
            .get(key)
            .is_none_or(|(last, at)| last != error || now.duration_since(*at) >= WARNING_INTERVAL);
        if fresh {
            warned.insert(key.clone(), (error.to_string(), now));
        }
        fresh
    }

    /// Forgets `key`'s failure: it reconciled.
    fn forget(&self, key: &ObjectKey) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

impl Reporter {
    /// A reporter over `client` for the controller `component` of `kind`.
    pub(crate) fn new(client: &Client, component: &str, kind: &KindRef) -> Reporter {
        let status = match dora_crds::Kind::parse(&kind.name) {
            Some(known) => dora_crds::registry::definition(known).is_some_and(|d| d.status),
            None => true,
        };
        Reporter {
            client: client.clone(),
            component: component.to_string(),
            kind: kind.clone(),
            status: AtomicBool::new(status),
            warned: Warnings::default(),
        }
    }

    /// Records that reconciling `row` came to `outcome` (an error's text): in its status
    /// unless it says so already (a write would wake the controller for nothing), and as a
    /// warning event unless the same one was told lately.
    pub(crate) async fn record(&self, row: &Row, outcome: Result<(), String>) {
        if outcome.is_ok() {
            self.warned.forget(&row.key);
        }
        if let Err(error) = &outcome
            && self.warned.fresh(&row.key, error)
        {
            let event = NewEvent {
                warning: true,
                reason: "ReconcileFailed",
                message: error,
                component: &self.component,
                kind: &row.key.kind,
                zone: &row.key.zone,
                workspace: &row.key.workspace,
                name: &row.key.name,
            };
            if let Err(e) = self.client.record_event(&event).await {
                tracing::debug!(error = %e, "cannot record the failed reconcile as an event");
            }
        }
        if !self.status.load(Ordering::Relaxed) {
            return;
        }
        let Some(patch) = patch(row, &outcome, &crate::time::now()) else {
            return;
        };
        let path = self.kind.object_path(&row.key);
        if let Err(e) = self.client.patch_status(&path, &patch).await {
            if e.status() == Some(405) {
                self.status.store(false, Ordering::Relaxed);
            }
            // Deleted meanwhile, or not allowed: the reconcile itself is what matters.
            tracing::debug!(error = %e, "cannot record the reconcile in the status");
        }
    }
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

    use dora_crds::Kind;

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
            meta: Default::default(),
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
    fn a_failure_is_told_once_until_it_changes() {
        let warnings = Warnings::default();
        let key = ObjectKey::new(Kind::Workload, "z", "w", "a");
        assert!(warnings.fresh(&key, "broken"));
        assert!(!warnings.fresh(&key, "broken"), "told already");
        assert!(warnings.fresh(&key, "broken otherwise"));
        let other = ObjectKey::new(Kind::Workload, "z", "w", "b");
        assert!(warnings.fresh(&other, "broken"));
        warnings.forget(&key);
        assert!(
            warnings.fresh(&key, "broken otherwise"),
            "a new failure after a success"
        );
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
