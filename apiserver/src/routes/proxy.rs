//! Container operations proxied to the node that runs the container: logs, top and one-off
//! commands. The API finds the node from the container's binding and the node's endpoint from
//! its row, never from anything the client sends, and calls it over mutual TLS: the node's
//! certificate must chain to the cluster CA, and the API presents its client certificate.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dora_crds::Kind;
use dora_crds::spec::Verb;
use dora_crds::status::{NodeReport, Placement};
use dora_store::ObjectKey;

use super::read_text;
use super::resources::not_allowed;
use crate::path::{Part, Target};
use crate::state::AppState;
use crate::{ApiError, Identity};

/// Bodies of one-off commands.
const MAX_EXEC_BYTES: usize = 64 << 10;

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NodeUnavailable", message)
}

/// The endpoint of the node a container runs on, and the container's path on that node.
async fn locate(state: &AppState, key: &ObjectKey) -> Result<(String, String), ApiError> {
    let store = &state.service.store;
    let row = store
        .get(key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("{key} not found")))?;
    let placement: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
    let node = placement.node.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "NotPlaced",
            format!(
                "{key} is not placed on a node yet; see `dora describe c {}`",
                key.name
            ),
        )
    })?;
    let endpoint = node_endpoint(state, &key.zone, &node).await?;
    Ok((
        endpoint,
        format!("/v1/containers/{}/{}", key.workspace, key.name),
    ))
}

async fn node_endpoint(state: &AppState, zone: &str, node: &str) -> Result<String, ApiError> {
    let key = ObjectKey::new(Kind::Node, zone, "", node);
    let row = state
        .service
        .store
        .get(&key)
        .await?
        .ok_or_else(|| unavailable(format!("node {node} is not registered")))?;
    let from_spec = row
        .resource
        .get("endpoint")
        .and_then(|e| e.as_str())
        .map(str::to_string);
    let report: NodeReport = dora_crds::decode(&row.observed).unwrap_or_default();
    from_spec.or(report.endpoint).ok_or_else(|| {
        unavailable(format!(
            "node {node} serves no API (a hollow node, or an agent without --listen)"
        ))
    })
}

/// Relays the node's answer: status, content type and body, streamed.
fn relay(response: reqwest::Response) -> Response {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, content_type)],
        Body::from_stream(response.bytes_stream()),
    )
        .into_response()
}

pub(super) async fn call(
    request: reqwest::RequestBuilder,
    endpoint: &str,
) -> Result<Response, ApiError> {
    let response = request.send().await.map_err(|e| {
        unavailable(format!(
            "cannot reach the node at {endpoint}: {e}; is its agent running?"
        ))
    })?;
    Ok(relay(response))
}

fn container_key(target: &Target) -> ObjectKey {
    ObjectKey::new(
        Kind::Container,
        &target.zone,
        target.workspace.as_deref().unwrap_or_default(),
        target.name.as_deref().unwrap_or_default(),
    )
}

/// `GET .../containers/NAME/logs|top` and `GET .../nodes/NAME/top`.
pub(super) async fn get(
    state: AppState,
    identity: Identity,
    target: Target,
    follow: bool,
    tail: Option<&str>,
) -> Result<Response, ApiError> {
    let client = state.node_client()?;
    match (target.kind, target.part) {
        (Kind::Container, part) if target.workspace.is_some() => {
            let key = container_key(&target);
            let verb = if part == Part::Logs {
                Verb::Log
            } else {
                Verb::GetOne
            };
            state
                .service
                .authorize(&identity, verb, Kind::Container, &key.zone, &key.workspace)?;
            let (endpoint, path) = locate(&state, &key).await?;
            let request = if part == Part::Logs {
                let mut query = Vec::new();
                if follow {
                    query.push(("follow", "true".to_string()));
                }
                if let Some(tail) = tail {
                    let tail: u32 = tail.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "tail must be a number of lines, got {tail:?}"
                        ))
                    })?;
                    query.push(("tail", tail.to_string()));
                }
                client.get(format!("{endpoint}{path}/logs")).query(&query)
            } else {
                client.get(format!("{endpoint}{path}/top"))
            };
            call(request, &endpoint).await
        }
        (Kind::Node, Part::Top) => {
            let name = target.name.as_deref().unwrap_or_default();
            state
                .service
                .authorize(&identity, Verb::GetOne, Kind::Node, &target.zone, "")?;
            let endpoint = node_endpoint(&state, &target.zone, name).await?;
            call(client.get(format!("{endpoint}/v1/top")), &endpoint).await
        }
        _ => Err(not_allowed("GET")),
    }
}

/// `POST .../containers/NAME/exec` with `{"command": [...]}`: runs it to its end and answers
/// `{"exitCode", "output"}`.
pub(super) async fn exec(
    state: AppState,
    identity: Identity,
    target: Target,
    body: Body,
) -> Result<Response, ApiError> {
    if target.kind != Kind::Container {
        return Err(not_allowed("POST"));
    }
    let key = container_key(&target);
    state.service.authorize(
        &identity,
        Verb::Shell,
        Kind::Container,
        &key.zone,
        &key.workspace,
    )?;
    let text = read_text(body, MAX_EXEC_BYTES).await?;
    let (endpoint, path) = locate(&state, &key).await?;
    let client = state.node_client()?;
    let request = client
        .post(format!("{endpoint}{path}/exec"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(text);
    call(request, &endpoint).await
}
