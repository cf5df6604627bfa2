use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use dora_crds::{Kind, Scope};

/// The table a kind's rows live in, decided by its scope (containers have their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `(kind), name`
    Resources,
    /// `(kind, workspace), name`
    WorkspacedResources,
    /// `(kind, zone), name`
    ZonedResources,
    /// `(kind, zone), workspace, name`
    ZonedWorkspacedResources,
    /// `(kind, zone), workspace, name`, indexed on workload and node.
    Containers,
}

impl Table {
    /// Every resource table.
    pub const ALL: [Table; 5] = [
        Table::Resources,
        Table::WorkspacedResources,
        Table::ZonedResources,
        Table::ZonedWorkspacedResources,
        Table::Containers,
    ];

    /// The table holding `kind` of `scope`.
    pub fn of(kind: &str, scope: Scope) -> Table {
        match scope {
            _ if kind == Kind::Container.name() => Table::Containers,
            Scope::Cluster => Table::Resources,
            Scope::Workspaced => Table::WorkspacedResources,
            Scope::Zoned => Table::ZonedResources,
            Scope::ZonedWorkspaced => Table::ZonedWorkspacedResources,
        }
    }

    /// The key columns, partition key first.
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            Table::Resources => &["kind", "name"],
            Table::WorkspacedResources => &["kind", "workspace", "name"],
            Table::ZonedResources => &["kind", "zone", "name"],
            Table::ZonedWorkspacedResources | Table::Containers => {
                &["kind", "zone", "workspace", "name"]
            }
        }
    }

    /// Whether its rows are written from every zone (users, roles, zones, workspaces,
    /// definitions, tokens...) rather than by one zone's components: their compare-and-sets
    /// must be ordered across datacenters, not within one.
    pub fn is_cluster_wide(self) -> bool {
        matches!(self, Table::Resources | Table::WorkspacedResources)
    }

    /// The table's name in the database.
    pub fn name(self) -> &'static str {
        match self {
            Table::Resources => "resources",
            Table::WorkspacedResources => "workspaced_resources",
            Table::ZonedResources => "zoned_resources",
            Table::ZonedWorkspacedResources => "zoned_workspaced_resources",
            Table::Containers => "containers",
        }
    }
}

/// Identifies one resource row. Zone and workspace are empty when the scope has none.
///
/// Keys are shared: every cache, queue and index of a controller holds the keys of the rows
/// it follows, so a clone is a reference count, not four strings. A key hashes its parts once,
/// when made, since those maps hash it on every lookup.
#[derive(Clone)]
pub struct ObjectKey(Arc<Hashed>);

/// A key's parts and their hash.
struct Hashed {
    parts: KeyParts,
    hash: u64,
}

/// Seeds key hashes at random per process, as the maps' own hashers are, so that names cannot
/// be chosen to collide.
static SEED: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// The parts of an [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyParts {
    pub kind: String,
    pub scope: Scope,
    pub zone: String,
    pub workspace: String,
    pub name: String,
}

impl Deref for ObjectKey {
    type Target = KeyParts;

    fn deref(&self) -> &KeyParts {
        &self.0.parts
    }
}

impl PartialEq for ObjectKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.parts == other.0.parts)
    }
}

impl Eq for ObjectKey {}

impl Hash for ObjectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.parts.cmp(&other.0.parts)
    }
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let KeyParts {
            kind,
            scope,
            zone,
            workspace,
            name,
        } = &**self;
        f.debug_struct("ObjectKey")
            .field("kind", kind)
            .field("scope", scope)
            .field("zone", zone)
            .field("workspace", workspace)
            .field("name", name)
            .finish()
    }
}

impl From<KeyParts> for ObjectKey {
    fn from(parts: KeyParts) -> Self {
        let hash = SEED.hash_one(&parts);
        ObjectKey(Arc::new(Hashed { parts, hash }))
    }
}

impl ObjectKey {
    /// A key of a built-in kind; zone and workspace are dropped where the scope has none.
    pub fn new(kind: Kind, zone: &str, workspace: &str, name: &str) -> Self {
        Self::custom(kind.name(), kind.scope(), zone, workspace, name)
    }

    /// A key of any kind, given its scope.
    pub fn custom(kind: &str, scope: Scope, zone: &str, workspace: &str, name: &str) -> Self {
        KeyParts {
            kind: kind.to_string(),
            scope,
            zone: if scope.has_zone() {
                zone.to_string()
            } else {
                String::new()
            },
            workspace: if scope.has_workspace() {
                workspace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
        .into()
    }

    /// The value of one key column.
    pub fn column(&self, column: &str) -> &str {
        match column {
            "kind" => &self.kind,
            "zone" => &self.zone,
            "workspace" => &self.workspace,
            _ => &self.name,
        }
    }

    /// The values of the table's key columns, in order.
    pub fn key_values(&self) -> Vec<String> {
        self.table()
            .key_columns()
            .iter()
            .map(|c| self.column(c).to_string())
            .collect()
    }

    /// The table holding this row.
    pub fn table(&self) -> Table {
        Table::of(&self.kind, self.scope)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.zone.is_empty() {
            write!(f, " in zone {}", self.zone)?;
        }
        if !self.workspace.is_empty() {
            write!(f, " workspace {}", self.workspace)?;
        }
        write!(f, " {:?}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Keys made apart are equal, hash alike and sort by their parts, as keys of four strings
    /// did.
    #[test]
    fn keys_made_apart_behave_as_one() {
        let a = ObjectKey::new(Kind::Container, "z", "w", "train.0");
        let b = ObjectKey::new(Kind::Container, "z", "w", "train.0");
        let c = ObjectKey::new(Kind::Container, "z", "w", "train.1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a < c);
        let set: HashSet<ObjectKey> = [a.clone(), b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&a.clone()));
        assert!(format!("{a:?}").starts_with("ObjectKey { kind: \"Container\""));
    }
}
