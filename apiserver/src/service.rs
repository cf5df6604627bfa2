//! What the API does, independent of HTTP: apply and delete documents for an identity. The
//! bootstrap of `dora up` uses it too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use dora_crds::spec::{
    DefinitionSpec, NetworkMode, Reach, Verb, VolumeSpec, WorkloadSpec, reach_needed,
};
use dora_crds::split_documents;
use dora_crds::status::CreditAccount;
use dora_crds::{Document, Kind, Resource, Scope, parse_resource, registry, spec_hash};
use dora_store::{
    Deletion, Event, EventType, ListQuery, MetaWrite, ObjectKey, Precondition, Row, SpecOutcome,
    SpecWrite, Store, StoreError, now_millis,
};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::{ApiError, Directory, render};

/// The finalizer a Definition deleted with `cascade` keeps while objects of its kind wait on
/// theirs: the kind stays defined, so that their controllers can still remove them.
pub(crate) const OBJECTS_FINALIZER: &str = "dora/objects";

/// How many documents of one manifest are applied at once.
const CONCURRENT_DOCUMENTS: usize = 16;

/// 403 for `verb` on `kind` in `place` (empty: everywhere), naming the binding that would
/// allow it, so that the user knows what to ask for.
pub(crate) fn refused(
    user: &str,
    verb: Verb,
    kind: Kind,
    place: &str,
    (zone, workspace): (Reach, Reach),
) -> ApiError {
    let place = if place.is_empty() {
        String::new()
    } else {
        format!(" in {place}")
    };
    ApiError::forbidden(format!(
        "user {user} may not {verb:?} {kind}{place}; that needs a role binding with kind: {kind}, zone: {zone}, workspace: {workspace} (All in place of a name does too) whose role grants {verb:?}; ask an administrator for one"
    ))
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    /// Zone used when a request names none.
    pub zone: Option<String>,
    /// Workspace used when a request names none.
    pub workspace: Option<String>,
    /// When the caller's token expires (Unix seconds); `None` for Dora itself.
    pub expires: Option<u64>,
    /// Dora itself (bootstrap): not subject to role checks.
    pub system: bool,
    /// The node of a node credential (in `zone`): it may act only for that node.
    pub node: Option<String>,
    /// A join token of `zone`: it may only obtain the credential of a new node.
    pub joining: bool,
    /// The id of the token presented; `None` for Dora itself.
    pub token: Option<String>,
}

impl Identity {
    /// The identity of Dora's own bootstrap.
    pub fn system() -> Self {
        Identity {
            user: "system".into(),
            zone: None,
            workspace: None,
            expires: None,
            system: true,
            node: None,
            joining: false,
            token: None,
        }
    }
}

/// The outcome of one document of an apply.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub index: usize,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// `created`, `configured` or `unchanged`.
    pub outcome: &'static str,
    pub version: u64,
    pub generation: u64,
    /// What the caller should know although the apply succeeded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Of a dry run only: the spec stored now and the one the apply would write.
    #[serde(rename = "dryRun", skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
}

/// What a dry run found: the apply was checked as a real one is, and wrote nothing.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The stored spec; `null` for an object the apply would create.
    pub current: Option<Value>,
    /// The spec the apply would write, normalized as it would be stored.
    pub applied: Value,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; this is what it held.
    Gone(Resource),
    /// The object has finalizers: it is marked with `deletionTimestamp` and stays until
    /// controllers have removed them.
    Pending(Resource),
}

/// Apply, delete and the checks they share.
#[derive(Clone)]
pub struct Service {
    pub store: Arc<dyn Store>,
    pub directory: Directory,
    /// Per zone, until when its scheduler's lease was last seen held (Unix milliseconds).
    pub schedulers: Arc<Mutex<HashMap<String, i64>>>,
}

/// Resolved partition of a request.
pub struct Place {
    pub zone: String,
    pub workspace: String,
}

impl Service {
    /// Checks that `identity` is the agent of node `name` in `zone`, or Dora itself, or a user
    /// who may `Report` for nodes there.
    pub fn authorize_node(
        &self,
        identity: &Identity,
        zone: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        match &identity.node {
            Some(node) if node == name && identity.zone.as_deref() == Some(zone) => Ok(()),
            Some(node) => Err(ApiError::forbidden(format!(
                "this credential is node {node}'s; it may not act for node {name} in zone {zone}"
            ))),
            None => self.authorize(identity, Verb::Report, Kind::Node, zone, ""),
        }
    }

    /// Checks that `identity` may do `verb` on `kind` in the given zone and workspace.
    pub fn authorize(
        &self,
        identity: &Identity,
        verb: Verb,
        kind: Kind,
        zone: &str,
        workspace: &str,
    ) -> Result<(), ApiError> {
        if identity.system
            || self
                .directory
                .allows(&identity.user, verb, kind, zone, workspace)
        {
            return Ok(());
        }
        let mut place = Vec::new();
        if !zone.is_empty() {
            place.push(format!("zone {zone}"));
        }
        if !workspace.is_empty() {
            place.push(format!("workspace {workspace}"));
        }
        let needed = reach_needed(kind, verb, zone, workspace);
        Err(refused(
            &identity.user,
            verb,
            kind,
            &place.join(", "),
            needed,
        ))
    }

    /// Checks the options of a Workload or a Volume that take more than `Apply`: mounting
    /// another workspace's volume takes `Use` on Volumes there, and the host's network or an
    /// absolute host path takes `Host`, which the `user` role does not grant.
    fn check_reach(
        &self,
        identity: &Identity,
        kind: Kind,
        place: &Place,
        spec: &Value,
    ) -> Result<(), ApiError> {
        let decode_error = |e: serde_json::Error| ApiError::invalid("spec", e.to_string());
        let needs = |verb, kind, workspace: &str, field: String, what: String| {
            self.authorize(identity, verb, kind, &place.zone, workspace)
                .map_err(|mut refused| {
                    refused.message = format!("{what}: {}", refused.message);
                    refused.field = Some(field);
                    refused
                })
        };
        match kind {
            Kind::Workload => {
                let spec: WorkloadSpec = dora_crds::decode(spec).map_err(decode_error)?;
                if spec
                    .network
                    .as_ref()
                    .is_some_and(|network| network.mode == NetworkMode::Host)
                {
                    needs(
                        Verb::Host,
                        Kind::Workload,
                        &place.workspace,
                        "spec.network.mode".into(),
                        "the host's network".into(),
                    )?;
                }
                for (index, mount) in spec.volumes.iter().enumerate() {
                    if let Some(workspace) = mount
                        .workspace
                        .as_deref()
                        .filter(|workspace| *workspace != place.workspace)
                    {
                        needs(
                            Verb::Use,
                            Kind::Volume,
                            workspace,
                            format!("spec.volumes[{index}].workspace"),
                            format!("volume {:?} of workspace {workspace}", mount.name),
                        )?;
                    }
                }
            }
            Kind::Volume => {
                let spec: VolumeSpec = dora_crds::decode(spec).map_err(decode_error)?;
                if let Some(path) = spec.local_path.filter(|path| path.starts_with('/')) {
                    needs(
                        Verb::Host,
                        Kind::Volume,
                        &place.workspace,
                        "spec.localPath".into(),
                        format!("host path {path:?}"),
                    )?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Fills in the zone and workspace a document or request leaves out, and checks they exist.
    pub fn place(
        &self,
        identity: &Identity,
        kind: Kind,
        zone: Option<&str>,
        workspace: Option<&str>,
    ) -> Result<Place, ApiError> {
        let scope = kind.scope();
        let mut place = Place {
            zone: String::new(),
            workspace: String::new(),
        };
        if scope.has_zone() {
            let zone = zone.or(identity.zone.as_deref()).ok_or_else(|| {
                ApiError::invalid(
                    "metadata.zone",
                    "no zone given and no default zone; set metadata.zone or pass -z ZONE",
                )
            })?;
            if !self.directory.has_zone(zone) {
                return Err(ApiError::invalid(
                    "metadata.zone",
                    format!(
                        "unknown zone {zone:?}; existing zones: {}",
                        self.directory.zones().join(", ")
                    ),
                ));
            }
            place.zone = zone.to_string();
        }
        if scope.has_workspace() {
            let workspace = workspace.or(identity.workspace.as_deref()).ok_or_else(|| {
                ApiError::invalid("metadata.workspace", "no workspace given and no default workspace; set metadata.workspace or pass -g WORKSPACE")
            })?;
            if !self.directory.has_workspace(workspace) {
                return Err(ApiError::invalid(
                    "metadata.workspace",
                    format!(
                        "unknown workspace {workspace:?}; existing workspaces: {}",
                        self.directory.workspaces().join(", ")
                    ),
                ));
            }
            place.workspace = workspace.to_string();
        }
        Ok(place)
    }

    /// Applies every document of a manifest in order; each document is applied whole or not at
    /// all, and one failing document does not stop the others. With `dry_run`, each document
    /// is checked as for a real apply and nothing is written ([`Service::preview`]).
    pub async fn apply_manifest(
        &self,
        identity: &Identity,
        text: &str,
        dry_run: bool,
    ) -> Vec<Result<Applied, ApiError>> {
        let apply = |document| async move {
            if dry_run {
                self.preview(identity, document).await
            } else {
                self.apply(identity, document).await
            }
        };
        let mut results: Vec<Option<Result<Applied, ApiError>>> = Vec::new();
        let mut namespaced = Vec::new();
        let mut later = Vec::new();
        // Cluster-scoped documents (zones, workspaces, users, roles, definitions) go first and
        // in order: the others may be placed in what they create. A document of a kind not
        // known yet is parsed after them, when a definition among them may have declared it.
        // The rest only depend on those, so they are applied concurrently.
        for (index, raw) in split_documents(text).into_iter().enumerate() {
            results.push(None);
            let unknown_kind = raw.as_ref().is_ok_and(|value| {
                value["kind"]
                    .as_str()
                    .is_some_and(|kind| Kind::parse(kind).is_none())
            });
            if unknown_kind {
                later.push((index, raw));
                continue;
            }
            match parse_at(index, raw) {
                Ok(document) if document.kind.scope() == Scope::Cluster => {
                    results[index] = Some(apply(document).await.map_err(|e| e.in_document(index)));
                }
                Ok(document) => namespaced.push((index, document)),
                Err(e) => results[index] = Some(Err(ApiError::from(e))),
            }
        }
        for (index, raw) in later {
            match parse_at(index, raw) {
                Ok(document) if document.kind.scope() == Scope::Cluster => {
                    results[index] = Some(apply(document).await.map_err(|e| e.in_document(index)));
                }
                Ok(document) => namespaced.push((index, document)),
                Err(e) => results[index] = Some(Err(ApiError::from(e))),
            }
        }
        let applied: Vec<(usize, Result<Applied, ApiError>)> = futures::stream::iter(namespaced)
            .map(|(index, document)| async move {
                (
                    index,
                    apply(document).await.map_err(|e| e.in_document(index)),
                )
            })
            .buffer_unordered(CONCURRENT_DOCUMENTS)
            .collect()
            .await;
        for (index, result) in applied {
            results[index] = Some(result);
        }
        results.into_iter().flatten().collect()
    }

    /// The checks an apply of `document` passes before it writes: what may be applied, where,
    /// by whom, within reach and credits. Answers the object's key.
    async fn check_apply(
        &self,
        identity: &Identity,
        document: &Document,
    ) -> Result<ObjectKey, ApiError> {
        let kind = document.kind;
        if kind.is_system() && !identity.system {
            return Err(ApiError::invalid(
                "kind",
                format!(
                    "{kind} resources are made by Dora itself; apply a Workload (or a User for credits) instead"
                ),
            ));
        }
        let metadata = &document.metadata;
        let place = self.place(
            identity,
            kind,
            metadata.zone.as_deref(),
            metadata.workspace.as_deref(),
        )?;
        self.authorize(identity, Verb::Apply, kind, &place.zone, &place.workspace)?;
        let key = ObjectKey::new(kind, &place.zone, &place.workspace, &metadata.name);
        self.check_reach(identity, kind, &place, &document.spec)?;
        if kind == Kind::Workload {
            self.check_credits(identity, &key, &document.spec).await?;
        }
        if kind == Kind::Definition {
            self.check_stored_objects(&document.spec).await?;
        }
        Ok(key)
    }

    /// What an apply of one validated document would do, after the same checks, writing
    /// nothing.
    pub async fn preview(
        &self,
        identity: &Identity,
        document: Document,
    ) -> Result<Applied, ApiError> {
        let key = self.check_apply(identity, &document).await?;
        let row = self.store.get(&key).await?;
        if let (Some(row), Some(version)) = (&row, document.metadata.version)
            && row.version != version
        {
            return Err(StoreError::Conflict {
                expected: version,
                actual: row.version,
            }
            .into());
        }
        let outcome = match &row {
            None => "created",
            Some(row)
                if row.spec_hash == spec_hash(document.kind, &document.spec)
                    && row.labels == document.metadata.labels =>
            {
                "unchanged"
            }
            Some(_) => "configured",
        };
        Ok(Applied {
            index: document.index,
            kind: document.kind.name().into(),
            name: key.name.clone(),
            zone: (!key.zone.is_empty()).then(|| key.zone.clone()),
            workspace: (!key.workspace.is_empty()).then(|| key.workspace.clone()),
            outcome,
            version: row.as_ref().map_or(0, |row| row.version),
            generation: row.as_ref().map_or(0, |row| row.generation),
            warnings: Vec::new(),
            preview: Some(Preview {
                current: row.map(|row| (*row.resource).clone()),
                applied: document.spec,
            }),
        })
    }

    /// Applies one validated document.
    pub async fn apply(
        &self,
        identity: &Identity,
        document: Document,
    ) -> Result<Applied, ApiError> {
        let key = self.check_apply(identity, &document).await?;
        let kind = document.kind;
        let metadata = &document.metadata;
        let write = SpecWrite {
            key: key.clone(),
            precondition: metadata
                .version
                .map_or(Precondition::None, Precondition::Version),
            owner: identity.user.clone(),
            labels: metadata.labels.clone(),
            meta: MetaWrite {
                annotations: metadata.annotations.clone(),
                owner_references: metadata.owner_references.clone(),
                finalizers: metadata.finalizers.clone(),
                delete: false,
            },
            spec_hash: spec_hash(kind, &document.spec),
            spec: document.spec,
            desired: Value::Null,
            computed: None,
            fence: None,
        };
        let outcome = self.store.put_spec(write).await?;
        let row = outcome.row();
        // The apply removed the last finalizer of an object being deleted: the delete completes
        // (unless the garbage collector was first), and so may that of its kind's Definition,
        // which waits on the objects of its kind.
        let deleted = self.store.delete_if_finalized(row).await?;
        if let Some(deleted) = &deleted {
            self.deleted(identity, kind, deleted).await;
        }
        if row.meta.finalized() && kind.is_defined() {
            self.finish_definition(identity, kind).await?;
        }
        if let Some(deleted) = deleted {
            return Ok(Applied {
                index: document.index,
                kind: kind.name().into(),
                name: key.name.clone(),
                zone: (!key.zone.is_empty()).then(|| key.zone.clone()),
                workspace: (!key.workspace.is_empty()).then(|| key.workspace.clone()),
                outcome: "deleted",
                version: deleted.version,
                generation: deleted.generation,
                warnings: Vec::new(),
                preview: None,
            });
        }
        if kind.scope() == dora_crds::Scope::Cluster {
            self.directory.put(row);
        }
        let reason = match &outcome {
            SpecOutcome::Created(_) => Some(("Created", format!("created by {}", identity.user))),
            SpecOutcome::Configured(row) => Some((
                "Configured",
                format!(
                    "configured by {} (generation {})",
                    identity.user, row.generation
                ),
            )),
            SpecOutcome::Unchanged(_) => None,
        };
        if let Some((reason, message)) = reason {
            self.record(Event::new(
                &key,
                EventType::Normal,
                reason,
                message,
                "apiserver",
            ))
            .await;
        }
        let mut warnings = Vec::new();
        if kind == Kind::Workload
            && outcome.verb() != "unchanged"
            && let Some(why) = self.unscheduled(&key.zone).await
        {
            self.record(Event::new(
                &key,
                EventType::Warning,
                "NoScheduler",
                why.clone(),
                "apiserver",
            ))
            .await;
            warnings.push(why);
        }
        Ok(Applied {
            index: document.index,
            kind: kind.name().into(),
            name: key.name.clone(),
            zone: (!key.zone.is_empty()).then(|| key.zone.clone()),
            workspace: (!key.workspace.is_empty()).then(|| key.workspace.clone()),
            outcome: outcome.verb(),
            version: row.version,
            generation: row.generation,
            warnings,
            preview: None,
        })
    }

    /// Deletes one resource; with `version`, only if the stored version still matches. A
    /// Definition whose kind still has objects is deleted only with `cascade`, which deletes
    /// them first. A resource with finalizers is only marked as being deleted: it goes when the
    /// last one is removed.
    pub async fn delete(
        &self,
        identity: &Identity,
        key: &ObjectKey,
        version: Option<u64>,
        cascade: bool,
    ) -> Result<Deleted, ApiError> {
        let kind = Kind::parse(&key.kind).ok_or_else(|| ApiError::not_found("unknown kind"))?;
        self.authorize(identity, Verb::Delete, kind, &key.zone, &key.workspace)?;
        if kind == Kind::Definition {
            if self.delete_objects_of(identity, &key.name, cascade).await? {
                return self.wait_for_objects(identity, key).await;
            }
            self.release(key, OBJECTS_FINALIZER).await?;
        }
        if kind == Kind::User && key.name == identity.user {
            return Err(ApiError::invalid(
                "metadata.name",
                "you cannot delete your own user; ask another administrator",
            ));
        }
        let precondition = version.map_or(Precondition::None, Precondition::Version);
        let deletion = self
            .store
            .delete_or_finalize(key, precondition)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::object_not_found(key),
                other => other.into(),
            })?;
        match deletion {
            Deletion::Deleted(row) => {
                self.deleted(identity, kind, &row).await;
                Ok(Deleted::Gone(render::resource(&row)))
            }
            Deletion::Pending(row) => {
                let waiting = row.meta.finalizers.join(", ");
                self.record(Event::new(
                    key,
                    EventType::Normal,
                    "DeletionPending",
                    format!(
                        "{} asked to delete it; waiting on finalizers {waiting}",
                        identity.user
                    ),
                    "apiserver",
                ))
                .await;
                Ok(Deleted::Pending(render::resource(&row)))
            }
        }
    }

    /// What follows the delete of `row`: the directory forgets it and an event says who.
    async fn deleted(&self, identity: &Identity, kind: Kind, row: &Row) {
        if kind.scope() == dora_crds::Scope::Cluster {
            self.directory.remove(kind, &row.key.name);
        }
        if kind == Kind::Node
            && let Err(e) = crate::issued::revoke_node(self, &row.key.zone, &row.key.name).await
        {
            tracing::warn!(node = %row.key.name, error = %e.message, "revoking a deleted node's credentials failed");
        }
        self.record(Event::new(
            &row.key,
            EventType::Normal,
            "Deleted",
            format!("deleted by {}", identity.user),
            "apiserver",
        ))
        .await;
    }

    /// Every object of `kind`, in every partition of its scope.
    pub async fn objects(&self, kind: Kind) -> Result<Vec<Row>, ApiError> {
        let scope = kind.scope();
        let zones = if scope.has_zone() {
            self.directory.zones()
        } else {
            vec![String::new()]
        };
        let mut rows = Vec::new();
        for zone in zones {
            let mut query = ListQuery {
                kind: kind.name().into(),
                scope,
                zone,
                workspace: None,
                after: None,
                limit: 1000,
            };
            loop {
                let page = self.store.list(&query).await?;
                rows.extend(page.rows);
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
        }
        Ok(rows)
    }

    /// Refuses a definition whose schema some stored object of its kind fails: objects are
    /// never left invalid by a schema change. The error names the first such object and field.
    async fn check_stored_objects(&self, spec: &serde_json::Value) -> Result<(), ApiError> {
        let spec: DefinitionSpec =
            dora_crds::decode(spec).map_err(|e| ApiError::invalid("spec", e.to_string()))?;
        let Some(kind) = Kind::parse(&spec.names.kind).filter(|kind| kind.is_defined()) else {
            return Ok(());
        };
        if registry::definition(kind).is_some_and(|current| current.schema == spec.schema) {
            return Ok(());
        }
        let check = dora_crds::spec_checker(&spec.schema)?;
        for row in self.objects(kind).await? {
            if let Some(error) = check(&row.resource) {
                return Err(ApiError::invalid(
                    "spec.schema",
                    format!(
                        "the new schema refuses the stored {kind} {}: {error}; change or delete that object first",
                        describe_key(&row.key)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Before Definition `name` goes: refuses when its kind still has objects, unless
    /// `cascade`, which deletes them as a delete of each does (as the caller, who must be
    /// allowed to): one with finalizers is only marked. Whether some still wait on finalizers.
    async fn delete_objects_of(
        &self,
        identity: &Identity,
        name: &str,
        cascade: bool,
    ) -> Result<bool, ApiError> {
        let Some(kind) = Kind::known()
            .into_iter()
            .find(|kind| kind.is_defined() && kind.plural() == name)
        else {
            return Ok(false);
        };
        let objects = self.objects(kind).await?;
        if objects.is_empty() {
            return Ok(false);
        }
        if !cascade {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "HasObjects",
                format!(
                    "Definition {name} still has {} {kind} object(s); delete them first, or delete the definition with --cascade (?cascade=true) to delete them too",
                    objects.len()
                ),
            ));
        }
        for row in &objects {
            self.authorize(
                identity,
                Verb::Delete,
                kind,
                &row.key.zone,
                &row.key.workspace,
            )?;
        }
        let mut waiting = false;
        for row in objects {
            let deletion = match self
                .store
                .delete_or_finalize(&row.key, Precondition::None)
                .await
            {
                Ok(deletion) => deletion,
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let (reason, message) = match deletion {
                Deletion::Deleted(_) => ("Deleted", "deleted"),
                Deletion::Pending(_) => {
                    waiting = true;
                    if row.meta.terminating() {
                        // Marked by an earlier delete, which said so.
                        continue;
                    }
                    ("DeletionPending", "waiting on its finalizers to be deleted")
                }
            };
            self.record(Event::new(
                &row.key,
                EventType::Normal,
                reason,
                format!("{message} with Definition {name} by {}", identity.user),
                "apiserver",
            ))
            .await;
        }
        Ok(waiting)
    }

    /// Marks Definition `key` as being deleted once its objects are: it keeps
    /// [`OBJECTS_FINALIZER`] until none of them waits on a finalizer any more.
    async fn wait_for_objects(
        &self,
        identity: &Identity,
        key: &ObjectKey,
    ) -> Result<Deleted, ApiError> {
        let row = self
            .store
            .get(key)
            .await?
            .ok_or_else(|| ApiError::object_not_found(key))?;
        if row.meta.terminating() {
            return Ok(Deleted::Pending(render::resource(&row)));
        }
        let mut finalizers = row.meta.finalizers.clone();
        finalizers.push(OBJECTS_FINALIZER.to_string());
        let write = SpecWrite {
            key: key.clone(),
            precondition: Precondition::Version(row.version),
            owner: row.owner.clone(),
            labels: row.labels.clone(),
            meta: MetaWrite {
                finalizers: Some(finalizers),
                delete: true,
                ..MetaWrite::default()
            },
            spec: Value::clone(&row.resource),
            spec_hash: row.spec_hash.clone(),
            desired: Value::clone(&row.desired),
            computed: None,
            fence: None,
        };
        let outcome = self.store.put_spec(write).await?;
        self.record(Event::new(
            key,
            EventType::Normal,
            "DeletionPending",
            format!(
                "{} asked to delete it; waiting on its objects' finalizers",
                identity.user
            ),
            "apiserver",
        ))
        .await;
        Ok(Deleted::Pending(render::resource(outcome.row())))
    }

    /// Completes the delete of the Definition of `kind` if it waits on its objects and none of
    /// them keeps a finalizer: what is left of them goes, then the Definition.
    async fn finish_definition(&self, identity: &Identity, kind: Kind) -> Result<(), ApiError> {
        let key = ObjectKey::new(Kind::Definition, "", "", kind.plural());
        let Some(definition) = self.store.get(&key).await? else {
            return Ok(());
        };
        if !definition
            .meta
            .finalizers
            .iter()
            .any(|f| f == OBJECTS_FINALIZER)
        {
            return Ok(());
        }
        let objects = self.objects(kind).await?;
        if !objects.iter().all(|row| row.meta.finalized()) {
            return Ok(());
        }
        for row in &objects {
            self.store.delete_if_finalized(row).await?;
        }
        if let Some(row) = self.release(&key, OBJECTS_FINALIZER).await?
            && let Some(deleted) = self.store.delete_if_finalized(&row).await?
        {
            self.deleted(identity, Kind::Definition, &deleted).await;
        }
        Ok(())
    }

    /// Removes `finalizer` from the object at `key` if it holds it; the object as it is then.
    async fn release(&self, key: &ObjectKey, finalizer: &str) -> Result<Option<Row>, ApiError> {
        let Some(row) = self.store.get(key).await? else {
            return Ok(None);
        };
        if !row.meta.finalizers.iter().any(|f| f == finalizer) {
            return Ok(Some(row));
        }
        let finalizers = row
            .meta
            .finalizers
            .iter()
            .filter(|f| *f != finalizer)
            .cloned()
            .collect();
        let write = SpecWrite {
            key: key.clone(),
            precondition: Precondition::Version(row.version),
            owner: row.owner.clone(),
            labels: row.labels.clone(),
            meta: MetaWrite {
                finalizers: Some(finalizers),
                ..MetaWrite::default()
            },
            spec: Value::clone(&row.resource),
            spec_hash: row.spec_hash.clone(),
            desired: Value::clone(&row.desired),
            computed: None,
            fence: None,
        };
        Ok(Some(Row::clone(self.store.put_spec(write).await?.row())))
    }

    /// Why nothing places workloads of `zone` now, if so: no scheduler holds its lease.
    async fn unscheduled(&self, zone: &str) -> Option<String> {
        let now = now_millis();
        let seen = |schedulers: &Mutex<HashMap<String, i64>>| {
            let schedulers = schedulers.lock().unwrap_or_else(PoisonError::into_inner);
            schedulers.get(zone).is_some_and(|until| *until > now)
        };
        if seen(&self.schedulers) {
            return None;
        }
        let lease = match self.store.lease(zone, "scheduler").await {
            Ok(lease) => lease,
            // Not knowing is no reason to warn.
            Err(_) => return None,
        };
        match lease {
            Some(lease) if lease.expires > now => {
                self.schedulers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(zone.to_string(), lease.expires);
                None
            }
            Some(lease) => Some(format!(
                "no scheduler serves zone {zone} (the last one stopped renewing its lease at {}): the workload waits until one runs (`dora scheduler --zone {zone}`, or `dora up --zone {zone}`)",
                render::timestamp(lease.expires)
            )),
            None => Some(format!(
                "no scheduler has ever served zone {zone}: the workload waits until one runs (`dora scheduler --zone {zone}`, or `dora up --zone {zone}`)"
            )),
        }
    }

    /// The credit account of `user` in `zone` when it is out of credits.
    pub(crate) async fn out_of_credit(
        &self,
        user: &str,
        zone: &str,
    ) -> Result<Option<CreditAccount>, ApiError> {
        let key = ObjectKey::new(Kind::Usercredit, zone, "", user);
        let Some(row) = self.store.get(&key).await? else {
            return Ok(None);
        };
        Ok(dora_crds::decode_written::<CreditAccount>(&row.computed).filter(|a| a.out_of_credit))
    }

    /// Refuses a workload apply that would start more replicas while its user is out of
    /// credits in the zone (until the credit system's weekly reset).
    async fn check_credits(
        &self,
        identity: &Identity,
        key: &ObjectKey,
        spec: &Value,
    ) -> Result<(), ApiError> {
        let replicas = |spec: &Value| spec["replica"]["count"].as_u64().unwrap_or(0);
        let wanted = replicas(spec);
        if wanted == 0 {
            return Ok(());
        }
        let Some(account) = self.out_of_credit(&identity.user, &key.zone).await? else {
            return Ok(());
        };
        let running = self
            .store
            .get(key)
            .await?
            .map_or(0, |row| replicas(&row.resource));
        if wanted <= running {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "{}; this apply would start more replicas. Lower spec.replica.count, wait for the reset, or ask an administrator to raise spec.credits of the user",
            out_of_credit_message(&identity.user, &key.zone, &account)
        )))
    }

    /// Records an event; one that cannot be written is logged, never an error for the caller.
    pub(crate) async fn record(&self, event: Event) {
        if let Err(e) = self.store.append_event(event).await {
            tracing::warn!(error = %e, "could not record an event");
        }
    }
}

/// Parses document `index` of a manifest.
fn parse_at(
    index: usize,
    raw: Result<Value, dora_crds::ValidationError>,
) -> Result<Document, dora_crds::ValidationError> {
    raw.and_then(parse_resource)
        .map(|document| Document { index, ..document })
        .map_err(|e| e.in_document(index))
}

/// `ws/name`, `zone/ws/name` or `name`: where an object is, for messages.
fn describe_key(key: &ObjectKey) -> String {
    [key.zone.as_str(), key.workspace.as_str(), key.name.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// `alice is out of credits in zone z (used 12.50 of 10.00 this week) until <reset>`.
pub(crate) fn out_of_credit_message(user: &str, zone: &str, account: &CreditAccount) -> String {
    format!(
        "{user} is out of credits in zone {zone} (used {:.2} of {:.2} this week) until {}",
        account.weekly,
        account.limit.unwrap_or_default(),
        render::timestamp(account.reset),
    )
}
