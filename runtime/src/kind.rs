//! A kind as the runtime knows it: by name and scope, with the plural of its API paths. A
//! controller of a kind this process has never heard of needs nothing more.

use dora_crds::{Kind, Scope};
use dora_store::ObjectKey;

use crate::Resource;

/// A kind by name and scope (what caches, queues and watches are keyed by), and its plural.
/// Built-in and learnt kinds convert from [`Kind`]; typed kinds from [`KindRef::of`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindRef {
    /// The name written in `kind:` (`Workload`, `Sweep`).
    pub name: String,
    /// Where its objects live.
    pub scope: Scope,
    /// The lowercase plural of its API paths (`workloads`, `sweeps`).
    pub plural: String,
}

impl KindRef {
    /// The kind `name` of `scope`, whose API paths use `plural`.
    pub fn new(name: impl Into<String>, plural: impl Into<String>, scope: Scope) -> Self {
        KindRef {
            name: name.into(),
            scope,
            plural: plural.into(),
        }
    }

    /// The kind of the typed resource `R`.
    pub fn of<R: Resource>() -> Self {
        KindRef::new(R::KIND, R::PLURAL, R::SCOPE)
    }

    /// Whether this is one of Dora's own kinds rather than one defined at run time.
    pub fn is_built_in(&self) -> bool {
        Kind::parse(&self.name).is_some_and(|kind| !kind.is_defined())
    }

    /// The key of this kind's object `name` in `zone` and `workspace` (dropped where the scope
    /// has none).
    pub fn key(&self, zone: &str, workspace: &str, name: &str) -> ObjectKey {
        ObjectKey::custom(&self.name, self.scope, zone, workspace, name)
    }

    /// Whether `key` is of this kind.
    pub fn holds(&self, key: &ObjectKey) -> bool {
        key.kind == self.name && key.scope == self.scope
    }

    /// The API path of its objects in `zone` and `workspace`; every workspace's when
    /// `workspace` is `None`.
    pub fn collection_path(&self, zone: &str, workspace: Option<&str>) -> String {
        self.scope.collection_path(&self.plural, zone, workspace)
    }

    /// The API path of the object `key` names.
    pub fn object_path(&self, key: &ObjectKey) -> String {
        let workspace = self.scope.has_workspace().then_some(key.workspace.as_str());
        self.scope
            .object_path(&self.plural, &key.zone, workspace, &key.name)
    }
}

impl From<Kind> for KindRef {
    fn from(kind: Kind) -> Self {
        KindRef::new(kind.name(), kind.plural(), kind.scope())
    }
}

impl From<&KindRef> for KindRef {
    fn from(kind: &KindRef) -> Self {
        kind.clone()
    }
}

impl std::fmt::Display for KindRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_unknown_to_the_process_has_keys_and_paths() {
        let gizmos = KindRef::new("Gizmo", "gizmos", Scope::ZonedWorkspaced);
        assert_eq!(Kind::parse("gizmos"), None);
        assert!(!gizmos.is_built_in());
        let key = gizmos.key("z", "w", "g1");
        assert!(gizmos.holds(&key));
        assert_eq!(
            gizmos.object_path(&key),
            "/v1/zones/z/workspaces/w/gizmos/g1"
        );
        let workloads = KindRef::from(Kind::Workload);
        assert!(workloads.is_built_in() && !workloads.holds(&key));
        assert_eq!(
            workloads.key("z", "w", "a"),
            ObjectKey::new(Kind::Workload, "z", "w", "a")
        );
    }
}
