//! Predicates: a stage between a controller's watches and its queue that decides which changes
//! of a kind are worth a reconcile, as kube-runtime's `predicate_filter` does.

use dora_store::Row;

/// Whether a change of a row, from its previous cached state (`None`: new to the cache) to
/// `new`, is passed on to the queue. Deletions are always passed on.
pub trait Predicate: Send + Sync + 'static {
    fn passes(&self, old: Option<&Row>, new: &Row) -> bool;
}

impl<F> Predicate for F
where
    F: Fn(Option<&Row>, &Row) -> bool + Send + Sync + 'static,
{
    fn passes(&self, old: Option<&Row>, new: &Row) -> bool {
        self(old, new)
    }
}

/// Passes changes of the spec (its generation) and ignores status-only writes, which a
/// controller writing its kind's status would otherwise be woken by. A new object, a new
/// object under an old name, a delete being asked for and a change of finalizers pass too:
/// they are not spec changes, but a controller with finalizers must see them.
pub fn generation_changed(old: Option<&Row>, new: &Row) -> bool {
    old.is_none_or(|old| {
        old.generation != new.generation
            || old.uid != new.uid
            || old.meta.deletion_timestamp != new.meta.deletion_timestamp
            || old.meta.finalizers != new.meta.finalizers
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dora_crds::Kind;
    use dora_store::ObjectKey;
    use serde_json::json;

    use super::*;

    #[test]
    fn status_only_changes_do_not_pass_the_generation_predicate() {
        let old = Row {
            generation: 1,
            ..Row::new(ObjectKey::new(Kind::Workload, "z", "w", "a"), "u1")
        };
        assert!(generation_changed(None, &old), "new to the cache");
        let status = Row {
            computed: Arc::new(json!({"phase": "Running"})),
            computed_version: 1,
            ..old.clone()
        };
        assert!(!generation_changed(Some(&old), &status));
        let spec = Row {
            generation: 2,
            ..old.clone()
        };
        assert!(generation_changed(Some(&old), &spec));
        let mut deleting = old.clone();
        deleting.meta.deletion_timestamp = Some(1);
        assert!(generation_changed(Some(&old), &deleting));
        let recreated = Row {
            uid: "u2".into(),
            ..old.clone()
        };
        assert!(generation_changed(Some(&old), &recreated));
    }
}
