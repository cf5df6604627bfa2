//! An in-memory copy of the cluster-scoped rows every request consults (users, roles, zones,
//! workspaces, definitions, the ids of revoked tokens), so that authentication, authorization and the kinds' registry
//! cost no store reads. It is updated at once by this server's own writes and follows the
//! change feed (through the runtime's `FeedReader`) for other servers' writes: a kind defined
//! through another API server becomes usable here within a poll, without a restart.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use dora_crds::spec::{DefinitionSpec, RoleBinding, RoleSpec, UserSpec, Verb};
use dora_crds::{Kind, Scope, registry};
use dora_runtime::FeedReader;
use dora_store::{ChangeFilter, Cursor, ListQuery, Row, Store, StoreError};

const KINDS: [Kind; 6] = [
    Kind::User,
    Kind::Role,
    Kind::Zone,
    Kind::Workspace,
    Kind::Definition,
    Kind::Token,
];
/// How often other servers' writes are looked for when this process wrote nothing: a token
/// revoked through another server is refused here within this.
const POLL: Duration = Duration::from_millis(500);
/// How often every kind is read again whatever the change feed says, so that a missed change
/// heals.
const FULL_RELOAD: Duration = Duration::from_secs(30);

/// A user as the directory keeps it.
struct User {
    spec: UserSpec,
    /// Unix milliseconds of the row's creation: older tokens belong to an earlier user of the
    /// same name.
    created: i64,
}

/// A write this server made while a reload of its kind was reading the store.
enum LocalWrite {
    Put(Box<Row>),
    Remove(String),
}

#[derive(Default)]
struct Entries {
    users: HashMap<String, User>,
    roles: HashMap<String, RoleSpec>,
    zones: BTreeSet<String>,
    workspaces: BTreeSet<String>,
    /// The stored Definitions by name, with their creation times; the registry of kinds holds
    /// what they declare.
    definitions: HashMap<String, (DefinitionSpec, i64)>,
    /// The ids of revoked tokens (until their records are removed, after they expire).
    revoked: HashSet<String>,
    /// Local writes per kind being reloaded, replayed over the reload's result so that a
    /// reload never brings back a row this server has just deleted (or undoes a write).
    during_reload: HashMap<Kind, Vec<LocalWrite>>,
    /// Kinds whose last reload replayed local writes over rows that may be newer: read again
    /// on the next round.
    stale: BTreeSet<Kind>,
}

/// Users, roles, zones and workspaces.
#[derive(Clone, Default)]
pub struct Directory {
    entries: Arc<RwLock<Entries>>,
}

impl Directory {
    /// Loads every row of the four kinds. Also returns the change-feed position read before
    /// loading: [`Directory::follow`] starts there, so that no write made meanwhile is missed.
    pub async fn load(store: &dyn Store) -> Result<(Self, Cursor), StoreError> {
        let cursor = store.head().await?;
        let directory = Directory::default();
        for kind in KINDS {
            directory.reload(store, kind).await?;
        }
        Ok((directory, cursor))
    }

    fn write(&self) -> RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every row of `kind`, page by page.
    async fn list_all(store: &dyn Store, kind: Kind) -> Result<Vec<Row>, StoreError> {
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
                None => return Ok(rows),
            }
        }
    }

    /// Replaces the entries of `kind` with what the store holds. Writes this server makes while
    /// the store is read are replayed over the result.
    async fn reload(&self, store: &dyn Store, kind: Kind) -> Result<(), StoreError> {
        self.write().during_reload.insert(kind, Vec::new());
        let listed = Self::list_all(store, kind).await;
        self.finish_reload(kind, listed)
    }

    /// The second half of [`Directory::reload`]: puts the rows read in place of the kind's
    /// entries, then replays the local writes made meanwhile.
    fn finish_reload(
        &self,
        kind: Kind,
        listed: Result<Vec<Row>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut entries = self.write();
        let local = entries.during_reload.remove(&kind).unwrap_or_default();
        let rows = listed?;
        let defined_before: Vec<DefinitionSpec> = entries
            .definitions
            .values()
            .map(|(spec, _)| spec.clone())
            .collect();
        entries.clear(kind);
        for row in &rows {
            entries.put(row);
        }
        // The rows read may be newer than a replayed write: read the kind again next round.
        if local.is_empty() {
            entries.stale.remove(&kind);
        } else {
            entries.stale.insert(kind);
        }
        for write in local {
            match write {
                LocalWrite::Put(row) => entries.put(&row),
                LocalWrite::Remove(name) => entries.remove(kind, &name),
            }
        }
        // The kinds of definitions that are gone are forgotten; the registry is process-wide,
        // so only those this directory defined.
        if kind == Kind::Definition {
            let gone: Vec<DefinitionSpec> = defined_before
                .into_iter()
                .filter(|spec| !entries.definitions.contains_key(&spec.names.plural))
                .collect();
            entries.settle(&gone);
        }
        Ok(())
    }

    /// Records a row this server just wrote.
    pub fn put(&self, row: &Row) {
        let mut entries = self.write();
        if let Some(kind) = Kind::parse(&row.key.kind)
            && let Some(local) = entries.during_reload.get_mut(&kind)
        {
            local.push(LocalWrite::Put(Box::new(row.clone())));
        }
        entries.put(row);
        if row.key.kind == Kind::Definition.name() {
            entries.settle(&[]);
        }
    }

    /// Forgets a row this server just deleted.
    pub fn remove(&self, kind: Kind, name: &str) {
        let mut entries = self.write();
        if let Some(local) = entries.during_reload.get_mut(&kind) {
            local.push(LocalWrite::Remove(name.to_string()));
        }
        entries.remove(kind, name);
    }

    /// Follows the change feed from `cursor` (as returned by [`Directory::load`]) and reloads a
    /// kind whenever another writer changed it; every kind is reloaded every 30 s regardless.
    pub async fn follow(self, store: Arc<dyn Store>, cursor: Cursor) {
        let mut feeds: Vec<(Kind, FeedReader)> = KINDS
            .into_iter()
            .map(|kind| {
                let feed = FeedReader::new(store.clone(), Self::filter(kind), cursor.clone())
                    .page(1)
                    .poll(POLL);
                (kind, feed)
            })
            .collect();
        let mut full_at = Instant::now() + FULL_RELOAD;
        loop {
            // Every reader is woken by the same writes; one waits for them all.
            feeds[0].1.wait().await;
            let full = Instant::now() >= full_at;
            let mut complete = true;
            for (kind, feed) in &mut feeds {
                if let Err(e) = self.refresh(*kind, feed, full).await {
                    tracing::warn!(error = %e, %kind, "refreshing the directory failed");
                    complete = false;
                }
            }
            if full && complete {
                full_at = Instant::now() + FULL_RELOAD;
            }
        }
    }

    /// Reloads `kind` when `full`, when its last reload raced with local writes or failed, or
    /// when `feed` shows it changed; the feed then starts again from before the reload.
    async fn refresh(
        &self,
        kind: Kind,
        feed: &mut FeedReader,
        full: bool,
    ) -> Result<(), StoreError> {
        let stale = self.write().stale.contains(&kind);
        let changed = full
            || stale
            || match feed.read().await {
                Ok(changes) => !changes.is_empty(),
                Err(StoreError::Expired(_)) => true,
                Err(e) => return Err(e),
            };
        if !changed {
            return Ok(());
        }
        let store = feed.store().clone();
        // Read before the reload: whatever is written meanwhile lies after it.
        let reloaded = match store.head().await {
            Ok(head) => self.reload(store.as_ref(), kind).await.map(|()| head),
            Err(e) => Err(e),
        };
        match reloaded {
            Ok(head) => {
                feed.skip_to(head);
                Ok(())
            }
            Err(e) => {
                // The change that was read is not applied: read the kind next round.
                self.write().stale.insert(kind);
                Err(e)
            }
        }
    }

    fn filter(kind: Kind) -> ChangeFilter {
        ChangeFilter::all(kind.name(), String::new())
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
        let default = entries.users.get(name)?.spec.default.as_ref();
        Some((
            default.and_then(|d| d.zone.clone()),
            default.and_then(|d| d.workspace.clone()),
        ))
    }

    /// When the user's row was created (Unix milliseconds); `None` when the user does not
    /// exist.
    pub fn user_created(&self, name: &str) -> Option<i64> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .users
            .get(name)
            .map(|user| user.created)
    }

    /// Whether the token of id `id` was revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revoked
            .contains(id)
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

    /// Names of the existing zones, in order.
    pub fn zones(&self) -> Vec<String> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .zones
            .iter()
            .cloned()
            .collect()
    }

    /// Names of the existing workspaces, in order.
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
    /// has no zone or workspace): one binding must cover them as [`RoleBinding::covers`] says
    /// (a binding limited to a zone or workspace grants nothing cluster-wide, reads of zones,
    /// workspaces and zoned kinds aside), and its role must grant the verb on the kind.
    ///
    /// [`RoleBinding::covers`]: dora_crds::spec::RoleBinding::covers
    pub fn allows(&self, user: &str, verb: Verb, kind: Kind, zone: &str, workspace: &str) -> bool {
        self.any_binding(user, kind, verb, |binding| {
            binding.covers(kind, verb, zone, workspace)
        })
    }

    /// Whether some binding of `user` covers `kind` in `zone` for at least one workspace, with a
    /// role that grants `verb` on it. A read across the workspaces of a zone may start then; its
    /// rows must still be filtered with [`Directory::allows`].
    pub fn allows_somewhere(&self, user: &str, verb: Verb, kind: Kind, zone: &str) -> bool {
        self.any_binding(user, kind, verb, |binding| {
            binding.covers_some_workspace(kind, verb, zone)
        })
    }

    /// Whether `user` may do `verb` on `kind` in every workspace of `zone` at once: one binding
    /// with workspace `All` must cover it. Reading another user's Usercredit takes this.
    pub fn allows_zone_wide(&self, user: &str, verb: Verb, kind: Kind, zone: &str) -> bool {
        self.any_binding(user, kind, verb, |binding| {
            binding.covers_every_workspace(kind, zone)
        })
    }

    /// Whether one of `user`'s bindings passes `covers` and has a role granting `verb` on `kind`.
    fn any_binding(
        &self,
        user: &str,
        kind: Kind,
        verb: Verb,
        covers: impl Fn(&RoleBinding) -> bool,
    ) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let Some(user) = entries.users.get(user) else {
            return false;
        };
        user.spec.resources.iter().any(|binding| {
            covers(binding)
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
            Some(Kind::User) => match dora_crds::decode(&row.resource) {
                Ok(spec) => drop(self.users.insert(
                    name,
                    User {
                        spec,
                        created: row.created,
                    },
                )),
                Err(e) => {
                    tracing::warn!(user = %name, error = %e, "ignoring a user whose spec does not parse")
                }
            },
            Some(Kind::Role) => match dora_crds::decode(&row.resource) {
                Ok(spec) => drop(self.roles.insert(name, spec)),
                Err(e) => {
                    tracing::warn!(role = %name, error = %e, "ignoring a role whose spec does not parse")
                }
            },
            Some(Kind::Zone) => drop(self.zones.insert(name)),
            Some(Kind::Workspace) => drop(self.workspaces.insert(name)),
            Some(Kind::Definition) => match dora_crds::decode::<DefinitionSpec>(&row.resource) {
                // Served once settled with the others: see `Entries::settle`.
                Ok(spec) => drop(self.definitions.insert(name, (spec, row.created))),
                Err(e) => {
                    tracing::warn!(definition = %name, error = %e, "ignoring a definition whose spec does not parse")
                }
            },
            Some(Kind::Token) => {
                if row.resource.get("revoked").is_some_and(|at| !at.is_null()) {
                    self.revoked.insert(name);
                } else {
                    self.revoked.remove(&name);
                }
            }
            _ => {}
        }
    }

    fn remove(&mut self, kind: Kind, name: &str) {
        match kind {
            Kind::User => drop(self.users.remove(name)),
            Kind::Role => drop(self.roles.remove(name)),
            Kind::Zone => drop(self.zones.remove(name)),
            Kind::Workspace => drop(self.workspaces.remove(name)),
            Kind::Token => drop(self.revoked.remove(name)),
            Kind::Definition => {
                if let Some((spec, _)) = self.definitions.remove(name) {
                    self.settle(&[spec]);
                }
            }
            _ => {}
        }
    }

    /// Serves the kinds of the stored definitions as [`registry::settle`] decides, forgetting
    /// those of `gone`; logs each definition refused.
    fn settle(&self, gone: &[DefinitionSpec]) {
        let stored = self
            .definitions
            .values()
            .map(|(spec, created)| (spec, *created));
        for (definition, error) in registry::settle(stored, gone) {
            tracing::warn!(%definition, %error, "not serving a definition");
        }
    }

    fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::User => self.users.clear(),
            Kind::Role => self.roles.clear(),
            Kind::Zone => self.zones.clear(),
            Kind::Workspace => self.workspaces.clear(),
            // The registry forgets the kinds that are gone once the reload is complete.
            Kind::Definition => self.definitions.clear(),
            Kind::Token => self.revoked.clear(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use dora_store::sqlite::SqliteStore;
    use dora_store::{ObjectKey, Precondition, SpecWrite};
    use serde_json::json;

    use super::*;

    fn user_row(name: &str, created: i64) -> Row {
        Row {
            key: ObjectKey::new(Kind::User, "", "", name),
            uid: name.into(),
            version: 1,
            generation: 1,
            spec_hash: String::new(),
            owner: "admin".into(),
            labels: Default::default(),
            meta: Default::default(),
            created,
            updated: created,
            resource: Arc::new(json!({})),
            desired: Default::default(),
            computed: Default::default(),
            computed_version: 0,
            observed: Default::default(),
            observed_version: 0,
        }
    }

    #[test]
    fn a_reload_does_not_bring_back_a_user_deleted_meanwhile() {
        let directory = Directory::default();
        directory.put(&user_row("bob", 1));
        directory
            .write()
            .during_reload
            .insert(Kind::User, Vec::new());
        // Deleted while the reload was reading a store that still had bob.
        directory.remove(Kind::User, "bob");
        directory.put(&user_row("carol", 2));
        directory
            .finish_reload(Kind::User, Ok(vec![user_row("bob", 1)]))
            .unwrap();
        assert!(!directory.has_user("bob"));
        assert_eq!(directory.user_created("carol"), Some(2));
        assert!(
            directory.write().stale.contains(&Kind::User),
            "read again next round"
        );
        directory
            .write()
            .during_reload
            .insert(Kind::User, Vec::new());
        directory
            .finish_reload(Kind::User, Ok(vec![user_row("carol", 2)]))
            .unwrap();
        assert!(!directory.write().stale.contains(&Kind::User));
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..100 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} did not happen within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follows_writes_made_behind_its_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("d.db")).unwrap());
        let (directory, cursor) = Directory::load(store.as_ref()).await.unwrap();
        tokio::spawn(directory.clone().follow(store.clone(), cursor));
        let key = ObjectKey::new(Kind::User, "", "", "eve");
        let write = SpecWrite {
            key: key.clone(),
            precondition: Precondition::None,
            owner: "other-server".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec: json!({}),
            spec_hash: String::new(),
            desired: serde_json::Value::Null,
            computed: None,
            fence: None,
        };
        store.put_spec(write).await.unwrap();
        eventually("seeing eve", || directory.has_user("eve")).await;
        store.delete(&key, Precondition::None).await.unwrap();
        eventually("forgetting eve", || !directory.has_user("eve")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn learns_definitions_written_behind_its_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("d.db")).unwrap());
        let (directory, cursor) = Directory::load(store.as_ref()).await.unwrap();
        tokio::spawn(directory.clone().follow(store.clone(), cursor));
        let key = ObjectKey::new(Kind::Definition, "", "", "followedthings");
        let spec = json!({"names": {"kind": "Followedthing", "plural": "followedthings"}, "scope": "zoned", "schema": {"type": "object"}});
        let write = SpecWrite {
            key: key.clone(),
            precondition: Precondition::None,
            owner: "other-server".into(),
            labels: Default::default(),
            meta: Default::default(),
            spec,
            spec_hash: String::new(),
            desired: serde_json::Value::Null,
            computed: None,
            fence: None,
        };
        assert_eq!(Kind::parse("followedthings"), None);
        store.put_spec(write).await.unwrap();
        eventually("defining the kind", || {
            Kind::parse("followedthings").is_some_and(|k| k.scope() == Scope::Zoned)
        })
        .await;
        store.delete(&key, Precondition::None).await.unwrap();
        eventually("forgetting the kind", || {
            Kind::parse("followedthings").is_none()
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_colliding_definitions_the_older_is_served_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("d.db")).unwrap());
        let (directory, cursor) = Directory::load(store.as_ref()).await.unwrap();
        tokio::spawn(directory.clone().follow(store.clone(), cursor));
        // Written through two API servers at once, each unaware of the other's: both name `cl`.
        let definition = |kind: &str, plural: &str| {
            let key = ObjectKey::new(Kind::Definition, "", "", plural);
            let spec = json!({"names": {"kind": kind, "plural": plural, "aliases": ["cl"]},
                "scope": "zoned", "schema": {"type": "object"}});
            (
                key.clone(),
                SpecWrite {
                    key,
                    precondition: Precondition::None,
                    owner: "another-server".into(),
                    labels: Default::default(),
                    meta: Default::default(),
                    spec,
                    spec_hash: String::new(),
                    desired: serde_json::Value::Null,
                    computed: None,
                    fence: None,
                },
            )
        };
        let (older, write) = definition("Clash", "clashes");
        store.put_spec(write).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (_, write) = definition("Collision", "collisions");
        store.put_spec(write).await.unwrap();
        eventually("the older served, the younger refused", || {
            Kind::parse("cl").is_some_and(|k| k.name() == "Clash")
                && registry::refusal("collisions").is_some()
        })
        .await;
        let refused = store
            .get(&ObjectKey::new(Kind::Definition, "", "", "collisions"))
            .await
            .unwrap()
            .unwrap();
        let shown = crate::render::resource(&refused).status.unwrap();
        assert_eq!(shown["phase"], "Refused");
        assert!(
            shown["message"]
                .as_str()
                .unwrap()
                .contains("older Definition clashes"),
            "{shown}"
        );
        store.delete(&older, Precondition::None).await.unwrap();
        eventually("the younger served once the older is gone", || {
            Kind::parse("cl").is_some_and(|k| k.name() == "Collision")
                && registry::refusal("collisions").is_none()
        })
        .await;
    }
}
