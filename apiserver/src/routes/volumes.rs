//! Volumes: where they live, for the nodes that mount them (`GET .../containers/NAME/mounts`),
//! and their files for people (`GET|PUT|DELETE .../volumes/NAME/files/PATH`), served by a node of
//! the zone. The API resolves a volume to its folder from the Volume and Storage rows; the
//! node confines every path to that folder.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::{ContainerSpec, StorageKind, StorageSpec, Verb, VolumePolicy, VolumeSpec};
use dora_crds::status::{NodeCondition, NodeReport, Placement};
use dora_store::{ListQuery, ObjectKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::access::check_zone;
use super::params::{NoParams, Params};
use super::proxy::Locate;
use super::{flag, json_response};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity};

/// A volume resolved to where its data lives.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Mount {
    pub name: String,
    /// The folder on the node (or on the NFS server's export, for NFS).
    pub source: String,
    /// Where the container sees it.
    pub target: String,
    pub read_only: bool,
    /// `Local` or `NFS`.
    pub kind: &'static str,
    /// The NFS server, for NFS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The folder on the NFS server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
}

fn invalid_row(key: &ObjectKey, e: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "Malformed",
        format!("{key} cannot be read: {e}; apply it again"),
    )
}

/// A subpath inside a volume: relative, without `..`.
fn check_subpath(subpath: &str) -> Result<&str, ApiError> {
    let trimmed = subpath.trim_matches('/');
    if trimmed.split('/').any(|part| part == "..") || trimmed.contains('\0') {
        return Err(ApiError::invalid(
            "spec.volumes[].subpath",
            format!("{subpath:?} leaves the volume; use a folder inside it"),
        ));
    }
    Ok(trimmed)
}

/// Where volume `name` of `workspace` lives, from its Volume and Storage rows.
async fn resolve(
    state: &AppState,
    zone: &str,
    workspace: &str,
    name: &str,
) -> Result<(VolumeSpec, StorageSpec, String), ApiError> {
    let store = &state.service.store;
    let key = ObjectKey::new(Kind::Volume, zone, workspace, name);
    let row = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::object_not_found(&key).with_hint("apply a Volume first"))?;
    let volume: VolumeSpec = dora_crds::decode(&row.resource).map_err(|e| invalid_row(&key, e))?;
    let storage_key = ObjectKey::new(Kind::Storage, zone, "", &volume.storage);
    let storage_row = store.get(&storage_key).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "volume {name} names storage {:?}, which does not exist in zone {zone}",
            volume.storage
        ))
    })?;
    let storage: StorageSpec =
        dora_crds::decode(&storage_row.resource).map_err(|e| invalid_row(&storage_key, e))?;
    let mountpath = storage.mountpath.trim_end_matches('/');
    let folder = match &volume.local_path {
        Some(path) if path.starts_with('/') => path.trim_end_matches('/').to_string(),
        Some(path) => format!("{mountpath}/{}", check_subpath(path)?),
        None => format!("{mountpath}/{workspace}/{name}"),
    };
    Ok((volume, storage, folder))
}

/// `GET .../containers/NAME/mounts`: for the node the container is bound to.
pub(super) async fn mounts(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    if target.kind != Kind::Container {
        return Err(ApiError::method_not_allowed("GET"));
    }
    let key = target.key();
    let row = state
        .service
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::object_not_found(&key))?;
    let placement: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
    let node = placement.node.unwrap_or_default();
    state.service.authorize_node(&identity, &key.zone, &node)?;
    let spec: ContainerSpec = dora_crds::decode(&row.resource).map_err(|e| invalid_row(&key, e))?;
    let mut mounts = Vec::new();
    for volume in &spec.template.volumes {
        let workspace = volume.workspace.as_deref().unwrap_or(&key.workspace);
        let (resolved, storage, folder) =
            resolve(&state, &key.zone, workspace, &volume.name).await?;
        let source = match volume.subpath.as_deref().map(check_subpath).transpose()? {
            Some(sub) if !sub.is_empty() => format!("{folder}/{sub}"),
            _ => folder,
        };
        let (kind, server, export) = match storage.kind {
            StorageKind::Local => ("Local", None, None),
            StorageKind::Nfs => {
                let endpoint = storage.endpoint.clone().unwrap_or_default();
                let (host, base) = endpoint.split_once(':').unwrap_or((&endpoint, "/"));
                let relative = source
                    .strip_prefix(storage.mountpath.trim_end_matches('/'))
                    .unwrap_or(&source);
                let export = format!("{}{relative}", base.trim_end_matches('/'));
                ("NFS", Some(host.to_string()), Some(export))
            }
        };
        mounts.push(Mount {
            name: volume.name.clone(),
            source,
            target: volume
                .target
                .clone()
                .unwrap_or_else(|| format!("/{}", volume.name)),
            read_only: resolved.policy == VolumePolicy::Readonly,
            kind,
            server,
            export,
        });
    }
    Ok(json_response(StatusCode::OK, &mounts))
}

/// `GET .../files/PATH`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DownloadParams {
    /// `true`: the file's details only.
    #[schemars(with = "Option<bool>")]
    stat: Option<String>,
    /// `true`: how much of an interrupted upload arrived.
    #[schemars(with = "Option<bool>")]
    upload: Option<String>,
    /// `true`: a folder's whole tree, each entry named by its path from the folder.
    #[schemars(with = "Option<bool>")]
    recursive: Option<String>,
    /// Where in the file the contents start (resuming a download).
    offset: Option<u64>,
}

/// `PUT .../files/PATH`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadParams {
    /// Where the body goes in the file (resuming an upload).
    offset: Option<u64>,
    /// The whole file's size; the upload completes when it is reached.
    size: Option<u64>,
    /// Unix milliseconds: the modification time the file gets when complete.
    mtime: Option<i64>,
}

/// `DELETE .../files/PATH`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoveParams {
    /// `true`: a folder is removed with everything in it.
    #[schemars(with = "Option<bool>")]
    recursive: Option<String>,
}

/// The path inside a volume of `.../volumes/NAME/files/PATH`, without empty segments; empty
/// for the volume's top folder (`.../files` or `.../files/`).
pub(super) struct FilePath(String);

impl<S: Send + Sync> FromRequestParts<S> for FilePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Segments {
            path: Option<String>,
        }
        let Path(Segments { path }) = Path::<Segments>::from_request_parts(parts, state)
            .await
            .map_err(crate::path::rejection)?;
        let path = path.unwrap_or_default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        Ok(FilePath(segments.join("/")))
    }
}

/// What a file request asks of the node.
enum FileRequest {
    Download {
        stat: bool,
        partial: bool,
        recursive: bool,
        offset: Option<u64>,
    },
    Upload {
        body: Body,
        offset: u64,
        size: Option<u64>,
        mtime: Option<i64>,
    },
    Remove {
        recursive: bool,
    },
}

/// `GET .../volumes/NAME/files/PATH`: a folder's entries or a file's contents.
pub(super) async fn download(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    FilePath(file): FilePath,
    Params(params): Params<DownloadParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let request = FileRequest::Download {
        stat: flag(params.stat.as_deref())?,
        partial: flag(params.upload.as_deref())?,
        recursive: flag(params.recursive.as_deref())?,
        offset: params.offset,
    };
    files(state, identity, target, file, request, locate).await
}

/// `PUT .../volumes/NAME/files/PATH`: an upload, resumable from `offset`.
pub(super) async fn upload(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    FilePath(file): FilePath,
    Params(params): Params<UploadParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let request = FileRequest::Upload {
        body,
        offset: params.offset.unwrap_or(0),
        size: params.size,
        mtime: params.mtime,
    };
    files(state, identity, target, file, request, locate).await
}

/// `DELETE .../volumes/NAME/files/PATH`: removes a file, or a folder (`?recursive=true` when
/// it holds anything).
pub(super) async fn remove(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    FilePath(file): FilePath,
    Params(params): Params<RemoveParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let request = FileRequest::Remove {
        recursive: flag(params.recursive.as_deref())?,
    };
    files(state, identity, target, file, request, locate).await
}

/// A Ready node of the zone with a node API, to serve a volume's files.
async fn file_server(state: &AppState, zone: &str) -> Result<String, ApiError> {
    let query = ListQuery {
        kind: Kind::Node.name().into(),
        scope: Kind::Node.scope(),
        zone: zone.to_string(),
        workspace: None,
        after: None,
        limit: 1000,
    };
    let page = state.service.store.list(&query).await?;
    let now = dora_store::now_millis();
    page.rows
        .iter()
        .find_map(|row| {
            let report: NodeReport = dora_crds::decode(&row.observed).unwrap_or_default();
            let condition: NodeCondition = dora_crds::decode(&row.computed).unwrap_or_default();
            // Ready, or heartbeating before the scheduler has said so.
            let fresh = report.is_fresh(now, NodeReport::GRACE);
            if !(condition.ready || fresh) {
                return None;
            }
            let from_spec = row.resource.get("endpoint").and_then(|e| e.as_str());
            from_spec.map(str::to_string).or(report.endpoint)
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NodeUnavailable",
                format!("no Ready node with a node API in zone {zone} to serve the volume"),
            )
        })
}

/// `GET`, `PUT` and `DELETE .../volumes/NAME/files/PATH`.
/// Serves a file request from a node of the volume's zone.
async fn files(
    state: AppState,
    identity: Identity,
    target: Target,
    file: String,
    request: FileRequest,
    locate: Locate,
) -> Result<Response, ApiError> {
    if target.kind != Kind::Volume {
        let method = match request {
            FileRequest::Upload { .. } => "PUT",
            FileRequest::Download { .. } => "GET",
            FileRequest::Remove { .. } => "DELETE",
        };
        return Err(ApiError::method_not_allowed(method));
    }
    let workspace = target.workspace.as_deref().unwrap_or_default();
    let name = target.name();
    let allowed = |verb| {
        state
            .service
            .authorize(&identity, verb, Kind::Volume, &target.zone, workspace)
    };
    // A folder is listed (Ls), a file downloaded (Download); only the node knows which the
    // path is, so a caller with Ls alone is served listings only.
    let list_only = match &request {
        FileRequest::Upload { .. } | FileRequest::Remove { .. } => {
            allowed(Verb::Upload)?;
            false
        }
        FileRequest::Download {
            stat,
            partial,
            recursive,
            ..
        } if *stat || *partial || *recursive || file.is_empty() => {
            allowed(Verb::Ls)?;
            false
        }
        FileRequest::Download { .. } => match allowed(Verb::Download) {
            Ok(()) => false,
            Err(refused) => {
                allowed(Verb::Ls).map_err(|_| refused)?;
                true
            }
        },
    };
    let (_, _, folder) = resolve(&state, &target.zone, workspace, name).await?;
    let endpoint = file_server(&state, &target.zone).await?;
    let client = state.nodes.client()?;
    let url = format!("{endpoint}/v1/files/{file}");
    let mut query = vec![("root", folder)];
    if list_only {
        query.push(("list_only", "true".into()));
    }
    let request = match request {
        FileRequest::Upload {
            body,
            offset,
            size,
            mtime,
        } => {
            let size = size.ok_or_else(|| {
                ApiError::invalid("size", "an upload names the whole file's size: ?size=BYTES")
            })?;
            query.push(("size", size.to_string()));
            query.push(("offset", offset.to_string()));
            if let Some(mtime) = mtime {
                query.push(("mtime", mtime.to_string()));
            }
            client
                .put(url)
                .query(&query)
                .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        }
        FileRequest::Download {
            stat,
            partial,
            recursive,
            offset,
        } => {
            for (key, on) in [
                ("stat", stat),
                ("upload", partial),
                ("recursive", recursive),
            ] {
                if on {
                    query.push((key, "true".into()));
                }
            }
            if let Some(offset) = offset {
                query.push(("offset", offset.to_string()));
            }
            client.get(url).query(&query)
        }
        FileRequest::Remove { recursive } => {
            if recursive {
                query.push(("recursive", "true".into()));
            }
            client.delete(url).query(&query)
        }
    };
    super::proxy::send(&state, locate, request, &endpoint).await
}
