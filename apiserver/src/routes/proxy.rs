//! Container operations proxied to the node that runs the container: logs, top, one-off
//! commands and shell sessions (WebSocket). The API finds the node from the container's binding
//! (for logs, while it waits to restart, from its last report) and the node's endpoint from
//! its row, never from anything the client sends, and calls it over mutual TLS
//! ([`crate::nodes`]). A forwarding API server, which alone reaches its zone's nodes, asks
//! with [`LOCATE`] instead: the request is authorized as if it were made, and the answer says
//! where it goes.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use dora_crds::Kind;
use dora_crds::spec::Verb;
use dora_crds::status::{ContainerReport, NodeReport, Placement};
use dora_store::ObjectKey;
use schemars::JsonSchema;
use serde::Deserialize;

use super::access::check_zone;
use super::params::{NoParams, Params};
use super::{flag, read_text};
use crate::nodes::{relay_socket, unavailable};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity};

/// Bodies of one-off commands.
const MAX_EXEC_BYTES: usize = 64 << 10;

/// The request header with which a forwarding API server asks where a node-bound request goes
/// instead of having it made: the answer is 204 with the node's URL in [`LOCATION`].
pub(crate) const LOCATE: &str = "dora-locate";
/// The header of the answer to [`LOCATE`]: the URL on the node, query included.
pub(crate) const LOCATION: &str = "dora-location";

/// Whether the caller asked where the request goes rather than to have it made ([`LOCATE`]).
/// Only a trusted proxy (`--trusted-proxies`: a forwarding API server) is answered so; the
/// header of anyone else is ignored.
#[derive(Clone, Copy)]
pub(super) struct Locate(pub bool);

impl FromRequestParts<AppState> for Locate {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let proxy = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(peer)| state.guard.is_proxy(peer.ip()));
        Ok(Locate(proxy && parts.headers.contains_key(LOCATE)))
    }
}

/// Sends `request` to the node at `endpoint` and relays its answer or, when located, answers
/// where it goes.
pub(super) async fn send(
    state: &AppState,
    locate: Locate,
    request: reqwest::RequestBuilder,
    endpoint: &str,
) -> Result<Response, ApiError> {
    if !locate.0 {
        return state.nodes.call(request, endpoint).await;
    }
    let request = request
        .build()
        .map_err(|e| unavailable(format!("bad request for the node at {endpoint}: {e}")))?;
    Ok(location(request.url()))
}

fn location(url: &reqwest::Url) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(LOCATION, url.as_str().to_string())],
    )
        .into_response()
}

/// The endpoint of the node a container is bound to, and the container's path on that node.
async fn node_of(state: &AppState, key: &ObjectKey) -> Result<(String, String), ApiError> {
    let row = container_row(state, key).await?;
    let placement: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
    let node = placement.node.ok_or_else(|| not_placed(key))?;
    at_node(state, key, &node).await
}

async fn container_row(state: &AppState, key: &ObjectKey) -> Result<dora_store::Row, ApiError> {
    state
        .service
        .store
        .get(key)
        .await?
        .ok_or_else(|| ApiError::object_not_found(key))
}

fn not_placed(key: &ObjectKey) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "NotPlaced",
        format!(
            "{key} is not placed on a node yet; see `dora describe c {}`",
            key.name
        ),
    )
}

/// The endpoint of `node` and the container's path on it.
async fn at_node(
    state: &AppState,
    key: &ObjectKey,
    node: &str,
) -> Result<(String, String), ApiError> {
    let endpoint = node_endpoint(state, &key.zone, node).await?;
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
            "node {node} serves no API (a hollow node, or an agent started without --node-listen)"
        ))
    })
}

/// What `GET .../containers/NAME/logs` asks for.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    /// Keep sending output as it comes.
    #[schemars(with = "Option<bool>")]
    follow: Option<String>,
    /// Only the last lines: a number.
    #[schemars(with = "Option<u32>")]
    tail: Option<String>,
    /// The output of the run before the current one.
    #[schemars(with = "Option<bool>")]
    previous: Option<String>,
}

/// `GET .../containers/NAME/exec`: a session.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TerminalParams {
    /// A terminal: sizes and control characters pass through.
    #[schemars(with = "Option<bool>")]
    tty: Option<String>,
    /// A command as a JSON list; `["sh"]` when left out.
    command: Option<String>,
}

/// `GET .../containers/NAME/logs`. The output is on the node the container is bound to or,
/// while it waits to restart, on the node of its last run, which keeps that run's output
/// and the one before it.
pub(super) async fn logs(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    Params(params): Params<LogParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    if target.kind != Kind::Container {
        return Err(ApiError::method_not_allowed("GET"));
    }
    let key = target.key();
    state.service.authorize(
        &identity,
        Verb::Log,
        Kind::Container,
        &key.zone,
        &key.workspace,
    )?;
    let mut query = Vec::new();
    if flag(params.follow.as_deref())? {
        query.push(("follow", "true".to_string()));
    }
    if let Some(tail) = params.tail {
        let lines: u32 = tail.parse().map_err(|_| {
            ApiError::bad_request(format!("tail must be a number of lines, got {tail:?}"))
        })?;
        query.push(("tail", lines.to_string()));
    }
    let row = container_row(&state, &key).await?;
    let placement: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
    let report: Option<ContainerReport> = dora_crds::decode(&row.observed).ok();
    if flag(params.previous.as_deref())? {
        if report.as_ref().is_none_or(|r| r.restarts == 0) {
            return Err(ApiError::not_found(format!(
                "container {} has not restarted; no previous run",
                key.name
            )));
        }
        query.push(("previous", "true".to_string()));
    }
    let node = placement
        .node
        .or(report.map(|r| r.node))
        .ok_or_else(|| not_placed(&key))?;
    let (endpoint, path) = at_node(&state, &key, &node).await?;
    let client = state.nodes.client()?;
    send(
        &state,
        locate,
        client.get(format!("{endpoint}{path}/logs")).query(&query),
        &endpoint,
    )
    .await
}

/// `GET .../containers/NAME/top` and `GET .../nodes/NAME/top`.
pub(super) async fn top(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let client = state.nodes.client()?;
    match target.kind {
        Kind::Container => {
            let key = target.key();
            state.service.authorize(
                &identity,
                Verb::GetOne,
                Kind::Container,
                &key.zone,
                &key.workspace,
            )?;
            let (endpoint, path) = node_of(&state, &key).await?;
            let request = client.get(format!("{endpoint}{path}/top"));
            send(&state, locate, request, &endpoint).await
        }
        Kind::Node => {
            let name = target.name.as_deref().unwrap_or_default();
            state
                .service
                .authorize(&identity, Verb::GetOne, Kind::Node, &target.zone, "")?;
            let endpoint = node_endpoint(&state, &target.zone, name).await?;
            let request = client.get(format!("{endpoint}/v1/top"));
            send(&state, locate, request, &endpoint).await
        }
        _ => Err(ApiError::method_not_allowed("GET")),
    }
}

/// The container `target` names, once `identity` may open a shell in it (`method`: the one
/// refused for other kinds).
fn shell_target(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    method: &str,
) -> Result<ObjectKey, ApiError> {
    if target.kind != Kind::Container {
        return Err(ApiError::method_not_allowed(method));
    }
    let key = target.key();
    state.service.authorize(
        identity,
        Verb::Shell,
        Kind::Container,
        &key.zone,
        &key.workspace,
    )?;
    Ok(key)
}

/// `POST .../containers/NAME/exec` with `{"command": [...]}`: runs it to its end and answers
/// `{"exitCode", "output"}`.
pub(super) async fn exec(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = shell_target(&state, &identity, &target, "POST")?;
    let text = read_text(body, MAX_EXEC_BYTES).await?;
    let (endpoint, path) = node_of(&state, &key).await?;
    let client = state.nodes.client()?;
    let request = client
        .post(format!("{endpoint}{path}/exec"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(text);
    send(&state, locate, request, &endpoint).await
}

/// `GET .../containers/NAME/exec` as a WebSocket: a session with `command` (a JSON list) in
/// the container, relayed to and from its node. Located, it is a plain GET.
pub(super) async fn terminal(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    locate: Locate,
    Params(params): Params<TerminalParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let upgrade = match upgrade {
        Ok(upgrade) => Some(upgrade),
        Err(_) if locate.0 => None,
        Err(_) => {
            return Err(ApiError::bad_request(
                "GET .../exec opens a WebSocket session; POST runs one command to its end",
            ));
        }
    };
    let tty = flag(params.tty.as_deref())?;
    let command = params.command.unwrap_or_else(|| r#"["sh"]"#.into());
    let key = shell_target(&state, &identity, &target, "GET")?;
    let parsed: Vec<String> = serde_json::from_str(&command).map_err(|_| {
        ApiError::invalid(
            "command",
            "a JSON list of strings, like [\"sh\",\"-c\",\"ls\"]",
        )
    })?;
    if parsed.is_empty() {
        return Err(ApiError::invalid("command", "give a command to run"));
    }
    let (endpoint, path) = node_of(&state, &key).await?;
    let url = reqwest::Url::parse_with_params(
        &format!("{endpoint}{path}/attach"),
        &[("tty", tty.to_string()), ("command", command)],
    )
    .map_err(|e| unavailable(format!("bad node endpoint {endpoint}: {e}")))?;
    let Some(upgrade) = upgrade else {
        return Ok(location(&url));
    };
    let node = state.nodes.connect(&url).await?;
    Ok(upgrade.on_upgrade(move |socket| relay_socket(socket, node)))
}
