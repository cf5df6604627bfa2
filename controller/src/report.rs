//! What each reconcile came to, written into the object's status over the API, so that a user
//! sees it with `dora get -w` and `dora describe` without access to the controller's machine:
//! `observedGeneration` (the spec generation reconciled) and a `Reconciled` condition; and a
//! failing reconcile as a `ReconcileFailed` warning event, at most once per
//! [`WARNING_INTERVAL`] per object and error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dora_client::NewEvent;
use dora_crds::Kind;
use dora_crds::status::Condition;
use dora_store::{Event, EventType, ObjectKey, Row};
use serde_json::{Value, json};

use crate::Source;

/// The condition the runtime keeps.
const RECONCILED: &str = "Reconciled";
/// The reason of the warning event a failed reconcile raises.
const FAILED: &str = "ReconcileFailed";
/// The least time between two warnings of the same failure of an object.
const WARNING_INTERVAL: Duration = Duration::from_secs(300);

/// Records reconcile outcomes of a kind's objects where its controller reads them: over the
/// API, the status and warning events; over the store (the built-in controllers, which keep
/// `observedGeneration` and conditions in the typed status they write), warning events.
pub(crate) struct Reporter {
    source: Source,
    /// The controller's name, as the events' component.
    component: String,
    /// Whether the runtime writes the outcome into the objects' status: over the API, for a
    /// kind whose objects have a status.
    status: bool,
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
    /// A reporter over `source` for the controller `component` of `kind`.
    pub(crate) fn new(source: &Source, component: &str, kind: Kind) -> Reporter {
        let status = matches!(source, Source::Api(_))
            && dora_crds::registry::definition(kind).is_some_and(|d| d.status);
        Reporter {
            source: source.clone(),
            component: component.to_string(),
            status,
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
            self.warn(&row.key, error).await;
        }
        if !self.status {
            return;
        }
        let Some(patch) = patch(row, &outcome, &now()) else {
            return;
        };
        let Source::Api(client) = &self.source else {
            return;
        };
        let path = object_path(&row.key);
        if let Err(e) = client.patch_status(&path, &patch).await {
            // Deleted meanwhile, or not allowed: the reconcile itself is what matters.
            tracing::debug!(error = %e, "cannot record the reconcile in the status");
        }
    }

    /// Raises a `ReconcileFailed` warning event about `key`.
    async fn warn(&self, key: &ObjectKey, error: &str) {
        let recorded = match &self.source {
            Source::Api(client) => {
                let event = NewEvent {
                    warning: true,
                    reason: FAILED,
                    message: error,
                    component: &self.component,
                    kind: &key.kind,
                    zone: &key.zone,
                    workspace: &key.workspace,
                    name: &key.name,
                };
                client.record_event(&event).await.map_err(|e| e.to_string())
            }
            Source::Store(store) => {
                let event = Event::new(key, EventType::Warning, FAILED, error, &self.component);
                store.append_event(event).await.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = recorded {
            tracing::debug!(error = %e, "cannot record the failed reconcile as an event");
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
    let condition = match outcome {
        Ok(()) => Condition::new(RECONCILED, true, "Succeeded", ""),
        Err(e) => Condition::new(RECONCILED, false, "Failed", e.as_str()),
    }
    .since(before.as_slice(), now);
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

    #[tokio::test]
    async fn over_the_store_a_failing_reconcile_raises_one_warning_event() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn dora_store::Store> =
            Arc::new(dora_store::sqlite::SqliteStore::open(dir.path().join("d.db")).unwrap());
        let reporter = Reporter::new(&Source::Store(store.clone()), "scheduler", Kind::Workload);
        let failing = row(1, Value::Null);
        for _ in 0..3 {
            reporter
                .record(&failing, Err("store unreachable".into()))
                .await;
        }
        let query = dora_store::EventQuery {
            zone: "z".into(),
            kind: Some("Workload".into()),
            workspace: Some("w".into()),
            name: Some("a".into()),
            after: None,
            limit: 10,
        };
        let events = store.events(&query).await.unwrap();
        assert_eq!(events.len(), 1, "one warning for three retries: {events:?}");
        assert_eq!(events[0].reason, FAILED);
        assert_eq!(events[0].event_type, EventType::Warning);
        assert_eq!(events[0].message, "store unreachable");
        assert_eq!(events[0].component, "scheduler");
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
