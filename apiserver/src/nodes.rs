//! Calls to node agents, over mutual TLS: the node's certificate must chain to the cluster
//! CA, and the API server presents its client certificate (issued by the proxy CA). Both the
//! API server over a store and the forwarding one of a zone without a store reach their
//! nodes through this.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, Pki};

/// 503 for a node that cannot be reached.
pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NodeUnavailable", message)
}

/// A WebSocket session opened on a node.
pub(crate) type NodeSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The way to the nodes: the cluster PKI and the HTTPS client made from it on first use.
pub(crate) struct Nodes {
    pki: Option<Pki>,
    client: OnceLock<Result<reqwest::Client, String>>,
}

const NO_PKI: &str =
    "this API server was started without the cluster PKI, so it cannot reach nodes";

impl Nodes {
    pub fn new(pki: Option<Pki>) -> Self {
        Nodes {
            pki,
            client: OnceLock::new(),
        }
    }

    /// The client that calls node agents: it trusts the cluster CA only and presents the API
    /// server's client certificate.
    pub fn client(&self) -> Result<&reqwest::Client, ApiError> {
        let built = self.client.get_or_init(|| {
            let pki = self.pki.as_ref().ok_or(NO_PKI)?;
            pki.node_client()
                .map_err(|e| format!("cannot set up the client for nodes: {e:#}"))
        });
        built.as_ref().map_err(|message| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoAuthority",
                message.clone(),
            )
        })
    }

    /// Sends `request` to the node at `endpoint` and relays its answer, streamed.
    pub async fn call(
        &self,
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

    /// Opens the node's side of a session at `url` (`https://NODE/...`), over mutual TLS.
    pub async fn connect(&self, url: &reqwest::Url) -> Result<NodeSocket, ApiError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let pki = self.pki.as_ref().ok_or_else(|| unavailable(NO_PKI))?;
        let tls = pki
            .node_tls()
            .map_err(|e| unavailable(format!("cannot set up TLS to nodes: {e:#}")))?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let unreachable = |e: &dyn std::fmt::Display| {
            unavailable(format!("cannot reach the node at {host}:{port}: {e}"))
        };
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable(&e))?;
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
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
                let status = StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
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

/// Relays messages of a session both ways until either side closes.
pub(crate) async fn relay_socket(client: WebSocket, node: NodeSocket) {
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
