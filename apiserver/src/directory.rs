//! An in-memory copy of the cluster-scoped rows every request consults (users, roles, zones,
//! workspaces), so that authentication and authorization cost no store reads. It is updated at
//! once by this server's own writes and follows the change feed for other servers' writes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dora_crds::spec::{RoleSpec, UserSpec, Verb};
use dora_crds::{Kind, Scope};
use dora_store::{ChangeFilter, Cursor, ListQuery, Row, Store, StoreError};

const KINDS: [Kind; 4] = [Kind::User, Kind::Role, Kind::Zone, Kind::Workspace];
/// How often other servers' writes are looked for when this process wrote nothing.
const POLL: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Entries {
    users: HashMap<String, UserSpec>,
    roles: HashMap<String, RoleSpec>,
    zones: BTreeSet<String>,
    workspaces: BTreeSet<String>,
}

/// Users, roles, zones and workspaces.
#[derive(Clone, Default)]
pub struct Directory {
    entries: Arc<RwLock<Entries>>,
}

impl Directory {
    /// Loads every row of the four kinds.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let directory = Directory::default();
        for kind in KINDS {
            directory.reload(store, kind).await?;
        }
        Ok(directory)
    }

    async fn reload(&self, store: &dyn Store, kind: Kind) -> Result<(), StoreError> {
        let mut rows = Vec::new();
        let mut query = ListQuery {
            kind: kind.name().into(),
            scope: Scope::Cluster,
            zone: String::new(),
            workspace: None,
            after: None,
            limit: 500,
        };
        loop {
            let page = store.list(&query).await?;
            rows.extend(page.rows);
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match kind {
            Kind::User => entries.users.clear(),
            Kind::Role => entries.roles.clear(),
            Kind::Zone => entries.zones.clear(),
            _ => entries.workspaces.clear(),
        }
        for row in rows {
            entries.put(&row);
        }
        Ok(())
    }

    /// Records a row this server just wrote.
    pub fn put(&self, row: &Row) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .put(row);
    }

    /// Forgets a row this server just deleted.
    pub fn remove(&self, kind: Kind, name: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match kind {
            Kind::User => drop(entries.users.remove(name)),
            Kind::Role => drop(entries.roles.remove(name)),
            Kind::Zone => drop(entries.zones.remove(name)),
            Kind::Workspace => drop(entries.workspaces.remove(name)),
            _ => {}
        }
    }

    /// Follows the change feed and reloads a kind whenever another writer changed it.
    pub async fn follow(self, store: Arc<dyn Store>) {
        let mut cursor = store.head().await.unwrap_or(Cursor("0".into()));
        let mut wake = store.subscribe();
        loop {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            for kind in KINDS {
                let filter = ChangeFilter {
                    kind: kind.name().into(),
                    zone: String::new(),
                    workspace: None,
                    name: None,
                };
                match store.changes(&filter, &cursor, 1).await {
                    Ok(changes) if changes.is_empty() => {}
                    Ok(_) | Err(StoreError::Expired(_)) => {
                        if let Err(e) = self.reload(store.as_ref(), kind).await {
                            tracing::warn!(error = %e, %kind, "reloading the directory failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the change feed failed"),
                }
            }
            // Every kind has now been read up to at least this point.
            if let Ok(head) = store.head().await {
                cursor = head;
            }
        }
    }

    /// Whether the user exists.
    pub fn has_user(&self, name: &str) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .users
            .contains_key(name)
    }

    /// A user's default zone and workspace; `None` when the user does not exist.
    pub fn defaults(&self, name: &str) -> Option<(Option<String>, Option<String>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let default = entries.users.get(name)?.default.as_ref();
        Some((
            default.and_then(|d| d.zone.clone()),
            default.and_then(|d| d.workspace.clone()),
        ))
    }

    /// Whether the zone exists.
    pub fn has_zone(&self, zone: &str) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .zones
            .contains(zone)
    }

    /// Whether the workspace exists.
    pub fn has_workspace(&self, workspace: &str) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .workspaces
            .contains(workspace)
    }

    /// Names of the existing zones, for error messages.
    pub fn zones(&self) -> Vec<String> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .zones
            .iter()
            .cloned()
            .collect()
    }

    /// Names of the existing workspaces, for error messages.
    pub fn workspaces(&self) -> Vec<String> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .workspaces
            .iter()
            .cloned()
            .collect()
    }

    /// Whether `user` may do `verb` on `kind` in `zone` and `workspace` (empty where the kind
    /// has no zone or workspace). A binding must cover the kind, the zone and the workspace the
    /// request touches, and its role must grant the verb on the kind.
    pub fn allows(&self, user: &str, verb: Verb, kind: Kind, zone: &str, workspace: &str) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let Some(spec) = entries.users.get(user) else {
            return false;
        };
        spec.resources.iter().any(|binding| {
            binding.covers(kind, zone, workspace)
                && entries
                    .roles
                    .get(&binding.role)
                    .is_some_and(|role| role.allows(kind, verb))
        })
    }

    /// Whether any binding of `user` could allow `verb` on `kind` in `zone` for some workspace.
    pub fn allows_somewhere(&self, user: &str, verb: Verb, kind: Kind, zone: &str) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let Some(spec) = entries.users.get(user) else {
            return false;
        };
        spec.resources.iter().any(|binding| {
            binding.covers(kind, zone, "")
                && entries
                    .roles
                    .get(&binding.role)
                    .is_some_and(|role| role.allows(kind, verb))
        })
    }
}

impl Entries {
    fn put(&mut self, row: &Row) {
        let name = row.key.name.clone();
        match Kind::parse(&row.key.kind) {
            Some(Kind::User) => match serde_json::from_value(row.resource.clone()) {
                Ok(spec) => drop(self.users.insert(name, spec)),
                Err(e) => {
                    tracing::warn!(user = %name, error = %e, "ignoring a user whose spec does not parse")
                }
            },
            Some(Kind::Role) => match serde_json::from_value(row.resource.clone()) {
                Ok(spec) => drop(self.roles.insert(name, spec)),
                Err(e) => {
                    tracing::warn!(role = %name, error = %e, "ignoring a role whose spec does not parse")
                }
            },
            Some(Kind::Zone) => drop(self.zones.insert(name)),
            Some(Kind::Workspace) => drop(self.workspaces.insert(name)),
            _ => {}
        }
    }
}
