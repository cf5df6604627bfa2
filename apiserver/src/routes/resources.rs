//! `GET`, `PUT` and `DELETE` under `/v1/...` for every kind.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use dora_crds::spec::Verb;
use dora_crds::{Kind, Selector, parse_documents};
use dora_store::{ListQuery, ObjectKey};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    agents, flag, json_response, params, parse_limit, path_rejection, proxy, read_text, status,
    views, volumes, watch,
};
use crate::path::{self, Part, Target};
use crate::state::AppState;
use crate::{ApiError, Deleted, Identity, render};
use params::{NoParams, Params};

const DEFAULT_PAGE: usize = 500;
pub(super) const MAX_PAGE: usize = 5000;

/// `GET` of a collection: a page of it, or a watch.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    limit: Option<String>,
    #[serde(rename = "continue")]
    after: Option<String>,
    watch: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    /// Only the containers on this node: bound to it, or waiting to restart after their last
    /// run there ([`on_node`]).
    node: Option<String>,
    /// Only the objects whose labels match, in kubectl's syntax.
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
}

/// `GET` of one object, or a watch of it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ObjectParams {
    watch: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

/// `GET .../logs`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsParams {
    follow: Option<String>,
    tail: Option<String>,
    /// The output of the run before the current one.
    previous: Option<String>,
}

/// `GET .../files/PATH`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileGetParams {
    stat: Option<String>,
    upload: Option<String>,
}

/// `GET .../exec`: a shell session.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecParams {
    tty: Option<String>,
    /// A command as a JSON list.
    command: Option<String>,
}

/// `PUT .../files/PATH`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PutParams {
    offset: Option<u64>,
    size: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteParams {
    version: Option<u64>,
    /// Deleting a Definition: also delete the objects of its kind.
    cascade: Option<String>,
}

/// Parses `labelSelector=`; a malformed one is a 400 naming it and what is wrong.
fn selector(text: Option<&str>) -> Result<Option<Selector>, ApiError> {
    text.map(|text| Selector::parse(text).map_err(|e| ApiError::bad_request(e.to_string())))
        .transpose()
        .map(|selector| selector.filter(|s| !s.is_empty()))
}

fn describe_place(target: &Target) -> String {
    let mut place = String::new();
    if !target.zone.is_empty() {
        place.push_str(&format!(" in zone {}", target.zone));
    }
    if let Some(workspace) = &target.workspace {
        place.push_str(&format!(" in workspace {workspace}"));
    }
    place
}

fn key_of(target: &Target, name: &str) -> ObjectKey {
    ObjectKey::new(
        target.kind,
        &target.zone,
        target.workspace.as_deref().unwrap_or_default(),
        name,
    )
}

/// 405 for a part of a resource that does not take `method`.
pub(super) fn not_allowed(method: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed on this path; see /openapi.json"),
    )
}

/// Checks that the target's zone exists, so that a typo is a 404 rather than an empty list.
fn check_zone(state: &AppState, target: &Target) -> Result<(), ApiError> {
    if target.kind.scope().has_zone() && !state.service.directory.has_zone(&target.zone) {
        return Err(ApiError::not_found(format!(
            "zone {:?} does not exist",
            target.zone
        )));
    }
    Ok(())
}

/// Authorizes a read of the target: a collection across workspaces needs the verb in at least
/// one workspace (the items are then filtered), anything else needs it where it points.
pub(super) fn authorize_read(
    state: &AppState,
    identity: &Identity,
    verb: Verb,
    target: &Target,
) -> Result<(), ApiError> {
    let all_workspaces = target.kind.scope().has_workspace() && target.workspace.is_none();
    if all_workspaces && !identity.system {
        if state
            .service
            .directory
            .allows_somewhere(&identity.user, verb, target.kind, &target.zone)
        {
            return Ok(());
        }
        return Err(ApiError::forbidden(format!(
            "user {} may not {verb:?} {} in zone {}",
            identity.user, target.kind, target.zone
        )));
    }
    let workspace = target.workspace.as_deref().unwrap_or_default();
    state
        .service
        .authorize(identity, verb, target.kind, &target.zone, workspace)
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

/// Whether a container row is on `node`: bound to it, or bound nowhere while it waits to
/// restart after its last run there, whose output the node keeps.
pub(super) fn on_node(row: &dora_store::Row, node: &str) -> bool {
    match row.computed.get("node").and_then(Value::as_str) {
        Some(bound) => bound == node,
        None => row.observed.get("node").and_then(Value::as_str) == Some(node),
    }
}

/// Whether a row of a cross-workspace read may be shown: a node credential has been limited
/// to its own containers before it gets here.
pub(super) fn visible(state: &AppState, identity: &Identity, verb: Verb, key: &ObjectKey) -> bool {
    let Some(kind) = Kind::parse(&key.kind) else {
        return false;
    };
    let directory = &state.service.directory;
    identity.system
        || identity.node.is_some()
        || (directory.allows(&identity.user, verb, kind, &key.zone, &key.workspace)
            && (kind != Kind::Usercredit || own_account(state, identity, key)))
}

/// Whether a Usercredit row is the caller's own, or the caller may read every account of
/// its zone: a user's credit use is theirs to see unless their role allows more.
fn own_account(state: &AppState, identity: &Identity, key: &ObjectKey) -> bool {
    key.name == identity.user
        || state.service.directory.allows_zone_wide(
            &identity.user,
            Verb::Get,
            Kind::Usercredit,
            &key.zone,
        )
}

pub(super) async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    let Path(path) = path.map_err(path_rejection)?;
    let target = path::parse(&path)?;
    check_zone(&state, &target)?;
    if target.kind.is_view() {
        params::parse::<NoParams>(&uri)?;
        return views::get(&state, &identity, &target).await;
    }
    match target.part {
        Part::Object => {}
        Part::Versions => {
            params::parse::<NoParams>(&uri)?;
            return versions(&state, &identity, &target).await;
        }
        Part::Logs => {
            let params: LogsParams = params::parse(&uri)?;
            let options = proxy::LogOptions {
                follow: flag(params.follow.as_deref())?,
                tail: params.tail,
                previous: flag(params.previous.as_deref())?,
            };
            return proxy::logs(state, identity, target, options).await;
        }
        Part::Top => {
            params::parse::<NoParams>(&uri)?;
            return proxy::top(state, identity, target).await;
        }
        Part::Mounts => {
            params::parse::<NoParams>(&uri)?;
            return volumes::mounts(state, identity, target).await;
        }
        Part::Files => {
            let params: FileGetParams = params::parse(&uri)?;
            let params = volumes::FileParams {
                stat: params.stat,
                upload: params.upload,
                ..Default::default()
            };
            return volumes::files(state, identity, target, params, None).await;
        }
        Part::Exec => {
            let params: ExecParams = params::parse(&uri)?;
            let upgrade = upgrade.map_err(|_| {
                ApiError::bad_request(
                    "GET .../exec opens a WebSocket session; POST runs one command to its end",
                )
            })?;
            let tty = flag(params.tty.as_deref())?;
            let command = params.command.unwrap_or_else(|| r#"["sh"]"#.into());
            return proxy::terminal(state, identity, target, upgrade, tty, command).await;
        }
        Part::Report | Part::Certificate | Part::Credential | Part::Status => {
            return Err(not_allowed("GET"));
        }
    }
    let Some(name) = &target.name else {
        let params: ListParams = params::parse(&uri)?;
        authorize_list(&state, &identity, &target, params.node.as_deref())?;
        let selector = selector(params.label_selector.as_deref())?;
        if flag(params.watch.as_deref())? {
            let filter = watch::RowFilter {
                node: params.node,
                selector,
            };
            return watch::resources(state, identity, target, params.resource_version, filter)
                .await;
        }
        return list(&state, &identity, &target, &params, selector.as_ref()).await;
    };
    let params: ObjectParams = params::parse(&uri)?;
    if flag(params.watch.as_deref())? {
        authorize_read(&state, &identity, Verb::Get, &target)?;
        let filter = watch::RowFilter::default();
        return watch::resources(state, identity, target, params.resource_version, filter).await;
    }
    state.service.authorize(
        &identity,
        Verb::GetOne,
        target.kind,
        &target.zone,
        target.workspace.as_deref().unwrap_or_default(),
    )?;
    let row = state
        .service
        .store
        .get(&key_of(&target, name))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{} {name:?} not found{}",
                target.kind,
                describe_place(&target)
            ))
        })?;
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

async fn list(
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

async fn versions(
    state: &AppState,
    identity: &Identity,
    target: &Target,
) -> Result<Response, ApiError> {
    let workspace = target.workspace.as_deref().unwrap_or_default();
    state.service.authorize(
        identity,
        Verb::Version,
        target.kind,
        &target.zone,
        workspace,
    )?;
    let name = target.name.as_deref().unwrap_or_default();
    let key = key_of(target, name);
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
            return Err(ApiError::not_found(format!("{} {name:?} not found{}", target.kind, describe_place(target))));
        }
        None => {}
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": dora_crds::API_VERSION, "kind": "VersionList", "items": items}),
    ))
}

/// `PUT` of one document at its own path.
/// `PATCH .../{name}/status`: merges into the status of an object of a defined kind.
pub(super) async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    let Path(path) = path.map_err(path_rejection)?;
    let target = path::parse(&path)?;
    params::parse::<NoParams>(&uri)?;
    match (&target.name, target.part) {
        (Some(_), Part::Status) => status::write(state, identity, target, body, true).await,
        _ => Err(not_allowed("PATCH")),
    }
}

pub(super) async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    let Path(path) = path.map_err(path_rejection)?;
    let target = path::parse(&path)?;
    let name = target.name.clone().ok_or_else(|| {
        ApiError::bad_request(
            "PUT needs a resource path ending in its name; use POST /v1/apply for manifests",
        )
    })?;
    match target.part {
        Part::Object => {
            params::parse::<NoParams>(&uri)?;
        }
        Part::Report => {
            params::parse::<NoParams>(&uri)?;
            return agents::put(state, identity, target, body).await;
        }
        Part::Status => {
            params::parse::<NoParams>(&uri)?;
            return status::write(state, identity, target, body, false).await;
        }
        Part::Files => {
            let put: PutParams = params::parse(&uri)?;
            let params = volumes::FileParams {
                offset: put.offset,
                size: put.size,
                ..Default::default()
            };
            return volumes::files(state, identity, target, params, Some(body)).await;
        }
        _ => return Err(not_allowed("PUT")),
    }
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
    let row = state.service.store.get(&key_of(&target, &name)).await?;
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
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    params: Result<Params<DeleteParams>, ApiError>,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    let Path(path) = path.map_err(path_rejection)?;
    let target = path::parse(&path)?;
    let Params(params) = params?;
    let name = target
        .name
        .clone()
        .ok_or_else(|| ApiError::bad_request("DELETE needs a resource path ending in its name"))?;
    if target.kind.is_view() || target.part != Part::Object {
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
            &key_of(&target, &name),
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
