//! A kind's collection and its objects: list or watch, get, apply with `PUT`, delete, the
//! spec history (`versions`) and a return to an earlier spec (`rollback`), for every kind.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use dora_crds::spec::Verb;
use dora_crds::{Kind, Selector, parse_documents, parse_resource};
use dora_store::{Cursor, ListQuery};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::{authorize_read, check_zone, on_node, own_account, visible};
use super::params::{self, NoParams, Params};
use super::{MAX_PAGE, flag, json_response, parse_limit, read_text, views, watch};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Deleted, Identity, render};

const DEFAULT_PAGE: usize = 500;

/// `GET` of a collection: a page of it, or a watch.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Most objects in one page.
    #[schemars(with = "Option<u32>", range(min = 1, max = super::MAX_PAGE))]
    limit: Option<String>,
    /// Where the previous page ended: its `metadata.continue`, as it was given.
    #[serde(rename = "continue")]
    after: Option<String>,
    /// Stream changes as NDJSON.
    #[schemars(with = "Option<bool>")]
    watch: Option<String>,
    /// Watch from this change-feed position (a list's or an event's `resourceVersion`); one
    /// ahead of the newest change is refused (400).
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    /// Only the containers on this node: bound to it, or waiting to restart after their last
    /// run there ([`on_node`]).
    node: Option<String>,
    /// Only the objects whose labels match, in kubectl's syntax.
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
    /// End a watch cleanly after this many seconds, changes or not.
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

/// `GET` of one object, or a watch of it.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ObjectParams {
    /// Stream the object's changes as NDJSON.
    #[schemars(with = "Option<bool>")]
    watch: Option<String>,
    /// Watch from this change-feed position.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    /// End a watch cleanly after this many seconds, changes or not.
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteParams {
    /// Delete only at this spec version (409 otherwise).
    version: Option<u64>,
    /// Deleting a Definition: also delete the objects of its kind; without it, a definition
    /// whose kind has objects is not deleted (409).
    #[schemars(with = "Option<bool>")]
    cascade: Option<String>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackParams {
    /// The generation whose spec to apply again, as `versions` lists it (default: the newest
    /// earlier spec that differs from the current one).
    generation: Option<u64>,
}

/// Parses `labelSelector=`; a malformed one is a 400 naming it and what is wrong.
fn selector(text: Option<&str>) -> Result<Option<Selector>, ApiError> {
    text.map(|text| Selector::parse(text).map_err(|e| ApiError::bad_request(e.to_string())))
        .transpose()
        .map(|selector| selector.filter(|s| !s.is_empty()))
}

/// Authorizes listing or watching a collection, optionally only the containers bound to
/// `node`. A node credential may read only that: its own node's containers.
fn authorize_list(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    node: Option<&str>,
) -> Result<(), ApiError> {
    if node.is_some() && target.kind != Kind::Container {
        return Err(ApiError::bad_request(
            "node= filters containers only: GET /v1/zones/ZONE/containers?node=NAME",
        ));
    }
    if let Some(own) = &identity.node {
        let own_zone = identity.zone.as_deref() == Some(target.zone.as_str());
        if node == Some(own.as_str()) && own_zone && target.workspace.is_none() {
            return Ok(());
        }
        return Err(ApiError::forbidden(format!(
            "node {own}'s credential reads only its containers: GET /v1/zones/{}/containers?node={own}",
            identity.zone.as_deref().unwrap_or_default()
        )));
    }
    authorize_read(state, identity, Verb::Get, target)
}

/// `GET` of a collection: a page of it, or a watch with `watch=true`.
pub(super) async fn list(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    uri: Uri,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    if target.kind.is_view() {
        params::parse::<NoParams>(&uri)?;
        return views::get(&state, &identity, &target).await;
    }
    let params: ListParams = params::parse(&uri)?;
    authorize_list(&state, &identity, &target, params.node.as_deref())?;
    let selector = selector(params.label_selector.as_deref())?;
    check_reached(&state, params.resource_version.as_deref()).await?;
    if flag(params.watch.as_deref())? {
        let filter = watch::RowFilter {
            node: params.node,
            selector,
        };
        let (from, ends) = (params.resource_version, params.timeout_seconds);
        return watch::resources(state, identity, target, from, filter, ends).await;
    }
    page(&state, &identity, &target, &params, selector.as_ref()).await
}

/// Refuses a `resourceVersion` the change feed has not reached: a list "as of" it cannot be
/// served, and a watch from it would skip every change up to it.
async fn check_reached(state: &AppState, resource_version: Option<&str>) -> Result<(), ApiError> {
    if let Some(version) = resource_version {
        let cursor = Cursor(version.to_string());
        state.service.store.check_reached(&cursor).await?;
    }
    Ok(())
}

/// `GET` of one object, or a watch of it with `watch=true`.
pub(super) async fn get(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    uri: Uri,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    if target.kind.is_view() {
        params::parse::<NoParams>(&uri)?;
        return views::get(&state, &identity, &target).await;
    }
    let params: ObjectParams = params::parse(&uri)?;
    if flag(params.watch.as_deref())? {
        authorize_read(&state, &identity, Verb::Get, &target)?;
        check_reached(&state, params.resource_version.as_deref()).await?;
        let filter = watch::RowFilter::default();
        let (from, ends) = (params.resource_version, params.timeout_seconds);
        return watch::resources(state, identity, target, from, filter, ends).await;
    }
    state.service.authorize(
        &identity,
        Verb::GetOne,
        target.kind,
        &target.zone,
        target.workspace.as_deref().unwrap_or_default(),
    )?;
    let key = target.key();
    let row = state
        .service
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::object_not_found(&key))?;
    if target.kind == Kind::Usercredit
        && !identity.system
        && !own_account(&state, &identity, &row.key)
    {
        return Err(ApiError::forbidden(format!(
            "user {} may read only their own credit use (Usercredit {}); reading others' takes a role binding for Usercredit with workspace All",
            identity.user, row.key.name
        )));
    }
    Ok(json_response(StatusCode::OK, &render::resource(&row)))
}

async fn page(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    params: &ListParams,
    selector: Option<&Selector>,
) -> Result<Response, ApiError> {
    let store = &state.service.store;
    let head = store.head().await?;
    let query = ListQuery {
        kind: target.kind.name().into(),
        scope: target.kind.scope(),
        zone: target.zone.clone(),
        workspace: target.workspace.clone(),
        after: params.after.clone(),
        limit: parse_limit(params.limit.as_deref(), DEFAULT_PAGE, MAX_PAGE)?,
    };
    let page = state.service.store.list(&query).await?;
    let items: Vec<Value> = page
        .rows
        .iter()
        .filter(|row| visible(state, identity, Verb::Get, &row.key))
        .filter(|row| params.node.as_deref().is_none_or(|node| on_node(row, node)))
        .filter(|row| selector.is_none_or(|s| s.matches(&row.labels)))
        .map(|row| json!(render::resource(row)))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": dora_crds::API_VERSION,
            "kind": format!("{}List", target.kind),
            "metadata": {"continue": page.next, "resourceVersion": head},
            "items": items,
        }),
    ))
}

/// `GET .../{name}/versions`: the spec history of one object, oldest first, then the
/// current spec.
pub(super) async fn versions(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let workspace = target.workspace.as_deref().unwrap_or_default();
    state.service.authorize(
        &identity,
        Verb::Version,
        target.kind,
        &target.zone,
        workspace,
    )?;
    let key = target.key();
    let store = &state.service.store;
    let current = store.get(&key).await?;
    let mut items: Vec<Value> = store
        .versions(&key)
        .await?
        .into_iter()
        .map(|v| json!({"generation": v.generation, "specHash": v.spec_hash, "replaced": render::timestamp(v.time), "current": false, "spec": v.spec}))
        .collect();
    match current {
        Some(row) => items.push(json!({"generation": row.generation, "specHash": row.spec_hash, "updated": render::timestamp(row.updated), "current": true, "spec": &*row.resource})),
        None if items.is_empty() => {
            return Err(ApiError::object_not_found(&key));
        }
        None => {}
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": dora_crds::API_VERSION, "kind": "VersionList", "items": items}),
    ))
}

/// `POST .../{name}/rollback`: applies the spec of an earlier generation again, as a new
/// generation, so that the history keeps every spec. Checked and answered as a `PUT` of that
/// spec with the object's current labels is.
pub(super) async fn rollback(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(params): Params<RollbackParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let workspace = target.workspace.as_deref().unwrap_or_default();
    state.service.authorize(
        &identity,
        Verb::Version,
        target.kind,
        &target.zone,
        workspace,
    )?;
    let key = target.key();
    let store = &state.service.store;
    let current = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::object_not_found(&key))?;
    let history = store.versions(&key).await?;
    let spec = match params.generation {
        Some(generation) if generation == current.generation => (*current.resource).clone(),
        Some(generation) => {
            let Some(version) = history.into_iter().find(|v| v.generation == generation) else {
                return Err(ApiError::invalid(
                    "generation",
                    format!(
                        "{key} has no generation {generation}; `dora versions` lists them (1 to {})",
                        current.generation
                    ),
                ));
            };
            version.spec
        }
        None => {
            let Some(version) = history
                .into_iter()
                .rev()
                .find(|v| v.spec_hash != current.spec_hash)
            else {
                return Err(ApiError::invalid(
                    "generation",
                    format!("{key} has no earlier spec to roll back to"),
                ));
            };
            version.spec
        }
    };
    let mut metadata = json!({"name": key.name, "labels": current.labels});
    if target.kind.scope().has_zone() {
        metadata["zone"] = json!(target.zone);
    }
    if let Some(workspace) = &target.workspace {
        metadata["workspace"] = json!(workspace);
    }
    let document = parse_resource(json!({
        "apiVersion": dora_crds::API_VERSION,
        "kind": target.kind.name(),
        "metadata": metadata,
        "spec": spec,
    }))
    .map_err(ApiError::from)?;
    let applied = state.service.apply(&identity, document).await?;
    let row = state.service.store.get(&key).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"outcome": applied.outcome, "object": row.as_ref().map(render::resource)}),
    ))
}

/// `PUT` of one document at its own path.
pub(super) async fn put(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = target.name().to_string();
    let text = read_text(body, state.options.max_body_bytes).await?;
    let mut documents = parse_documents(&text);
    if documents.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "PUT takes exactly one document, got {}",
            documents.len()
        )));
    }
    let mut document = documents.remove(0).map_err(ApiError::from)?;
    let mismatch = |field: &str, got: &str, want: &str| {
        ApiError::invalid(
            field,
            format!("the document says {got:?} but the path says {want:?}"),
        )
    };
    if document.kind != target.kind {
        return Err(mismatch("kind", document.kind.name(), target.kind.name()));
    }
    if document.metadata.name != name {
        return Err(mismatch("metadata.name", &document.metadata.name, &name));
    }
    if target.kind.scope().has_zone() {
        match &document.metadata.zone {
            Some(zone) if *zone != target.zone => {
                return Err(mismatch("metadata.zone", zone, &target.zone));
            }
            _ => document.metadata.zone = Some(target.zone.clone()),
        }
    }
    if let Some(path_workspace) = &target.workspace {
        match &document.metadata.workspace {
            Some(ws) if ws != path_workspace => {
                return Err(mismatch("metadata.workspace", ws, path_workspace));
            }
            _ => document.metadata.workspace = Some(path_workspace.clone()),
        }
    }
    let applied = state.service.apply(&identity, document).await?;
    let row = state.service.store.get(&target.key()).await?;
    let status = if applied.outcome == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &json!({"outcome": applied.outcome, "object": row.as_ref().map(render::resource)}),
    ))
}

pub(super) async fn delete(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(params): Params<DeleteParams>,
) -> Result<Response, ApiError> {
    if target.kind.is_view() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "this path is read-only",
        ));
    }
    check_zone(&state, &target)?;
    let deleted = state
        .service
        .delete(
            &identity,
            &target.key(),
            params.version,
            flag(params.cascade.as_deref())?,
        )
        .await?;
    Ok(match deleted {
        Deleted::Gone(resource) => json_response(StatusCode::OK, &resource),
        // Still there, marked with its deletionTimestamp: the delete completes later.
        Deleted::Pending(resource) => json_response(StatusCode::ACCEPTED, &resource),
    })
}
