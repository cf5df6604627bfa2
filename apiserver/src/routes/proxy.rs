//! Container operations proxied to the node that runs the container: logs, top, one-off
//! commands and shell sessions (WebSocket). The API finds the node from the container's binding
//! (for logs, while it waits to restart, from its last report) and the node's endpoint from
//! its row, never from anything the client sends, and calls it over mutual TLS: the node's
//! certificate must chain to the cluster CA, and the API presents its client certificate.

use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
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
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity};

/// Bodies of one-off commands.
const MAX_EXEC_BYTES: usize = 64 << 10;

fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NodeUnavailable", message)
}

/// The endpoint of the node a container is bound to, and the container's path on that node.
async fn locate(state: &AppState, key: &ObjectKey) -> Result<(String, String), ApiError> {
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
    let client = state.node_client()?;
    call(
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
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let client = state.node_client()?;
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
            let (endpoint, path) = locate(&state, &key).await?;
            call(client.get(format!("{endpoint}{path}/top")), &endpoint).await
        }
        Kind::Node => {
            let name = target.name.as_deref().unwrap_or_default();
            state
                .service
                .authorize(&identity, Verb::GetOne, Kind::Node, &target.zone, "")?;
            let endpoint = node_endpoint(&state, &target.zone, name).await?;
            call(client.get(format!("{endpoint}/v1/top")), &endpoint).await
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
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let key = shell_target(&state, &identity, &target, "POST")?;
    let text = read_text(body, MAX_EXEC_BYTES).await?;
    let (endpoint, path) = locate(&state, &key).await?;
    let client = state.node_client()?;
    let request = client
        .post(format!("{endpoint}{path}/exec"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(text);
    call(request, &endpoint).await
}

/// `GET .../containers/NAME/exec` as a WebSocket: a session with `command` (a JSON list) in
/// the container, relayed to and from its node.
pub(super) async fn terminal(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(params): Params<TerminalParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_zone(&state, &target)?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::bad_request(
            "GET .../exec opens a WebSocket session; POST runs one command to its end",
        )
    })?;
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
    let (endpoint, path) = locate(&state, &key).await?;
    let upstream = connect_node(&state, &endpoint, &path, tty, &command).await?;
    Ok(upgrade.on_upgrade(move |socket| relay_socket(socket, upstream)))
}

type NodeSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens the node's side of a session, over mutual TLS.
async fn connect_node(
    state: &AppState,
    endpoint: &str,
    path: &str,
    tty: bool,
    command: &str,
) -> Result<NodeSocket, ApiError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let pki = state.options.pki.as_ref().ok_or_else(|| {
        unavailable("this API server was started without the cluster PKI, so it cannot reach nodes")
    })?;
    let tls = pki
        .node_tls()
        .map_err(|e| unavailable(format!("cannot set up TLS to nodes: {e:#}")))?;
    let url = reqwest::Url::parse_with_params(
        &format!("{endpoint}{path}/attach"),
        &[("tty", tty.to_string()), ("command", command.to_string())],
    )
    .map_err(|e| unavailable(format!("bad node endpoint {endpoint}: {e}")))?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let unreachable = |e: &dyn std::fmt::Display| {
        unavailable(format!("cannot reach the node at {endpoint}: {e}"))
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(&e))?;
    let request = url
        .as_str()
        .replacen("https://", "wss://", 1)
        .into_client_request()
        .map_err(|e| unreachable(&e))?;
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let message = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("the node answered {status}"));
            Err(ApiError::new(status, "NodeError", message))
        }
        Err(e) => Err(unreachable(&e)),
    }
}

/// Relays messages both ways until either side closes.
async fn relay_socket(client: WebSocket, node: NodeSocket) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as NodeMessage;
    let (mut to_client, mut from_client) = client.split();
    let (mut to_node, mut from_node) = node.split();
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            let message = match message {
                Message::Binary(bytes) => NodeMessage::Binary(bytes),
                Message::Text(text) => NodeMessage::Text(text.as_str().into()),
                Message::Close(_) => break,
                _ => continue,
            };
            if to_node.send(message).await.is_err() {
                break;
            }
        }
        let _ = to_node.close().await;
    };
    let downstream = async {
        while let Some(Ok(message)) = from_node.next().await {
            let message = match message {
                NodeMessage::Binary(bytes) => Message::Binary(bytes),
                NodeMessage::Text(text) => Message::Text(text.as_str().into()),
                NodeMessage::Close(_) => break,
                _ => continue,
            };
            if to_client.send(message).await.is_err() {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    // The session ends when the node's side does; what the client still sends is moot.
    tokio::select! {
        () = downstream => {}
        () = async { upstream.await; std::future::pending::<()>().await } => {}
    }
}
