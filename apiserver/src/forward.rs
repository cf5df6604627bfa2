//! The API server of a zone without a store of its own (`dora up --upstream`): it forwards
//! every request to the API server of the zone that holds its data, its upstream, and makes
//! itself the requests that must reach its zone's nodes, which only it reaches.
//!
//! Both hops check. The IP filter and rate limits run here and there (the upstream, trusting
//! this server as a proxy, reads the client's address from `X-Forwarded-For`). The bearer
//! token is decrypted here, so a bad or expired one is a 401 here, counted by this server's IP
//! filter, and sent on unchanged: the upstream authenticates and authorizes the caller again
//! (revocations, deleted users, role bindings). This server adds no rights of its own.

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use rustls::ServerConfig;

use crate::guard::{ClientAddress, Guard};
use crate::nodes::{Nodes, relay_socket};
use crate::routes::bans;
use crate::routes::proxy::{LOCATE, LOCATION};
use crate::token::VerifiedTokens;
use crate::{ApiError, Identity, Options, TokenKey};

/// A running-to-be forwarding API server.
pub struct Forwarder {
    state: Arc<Forwarding>,
}

struct Forwarding {
    /// `https://HOST:PORT` of the upstream, without a trailing slash.
    upstream: String,
    http: reqwest::Client,
    tokens: TokenKey,
    verified: VerifiedTokens,
    guard: Arc<Guard>,
    nodes: Nodes,
}

impl Forwarder {
    /// A server forwarding to `upstream` (`https://HOST:PORT`), whose certificate must chain
    /// to the CA in `upstream_ca`; `secret` is the cluster secret, `options.pki` the cluster
    /// PKI through which it reaches its nodes. Must be called within a Tokio runtime.
    pub fn new(
        upstream: &str,
        upstream_ca: &Path,
        secret: &[u8],
        options: Options,
    ) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(upstream)
            .map_err(|e| anyhow::anyhow!("--upstream {upstream:?}: {e}; give https://HOST:PORT"))?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            anyhow::bail!("--upstream {upstream:?}: give the upstream as https://HOST:PORT");
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::client_tls(upstream_ca)?)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let state = Forwarding {
            upstream: upstream.trim_end_matches('/').to_string(),
            http,
            tokens: TokenKey::from_secret(secret)?,
            verified: VerifiedTokens::default(),
            guard: Guard::start(&options.guard),
            nodes: Nodes::new(options.pki),
        };
        Ok(Forwarder {
            state: Arc::new(state),
        })
    }

    /// Every path, behind the IP filter and the address rate limit.
    pub fn router(&self) -> Router {
        let guard = middleware::from_fn_with_state(self.state.guard.clone(), crate::guard::filter);
        Router::new()
            .fallback(forward)
            .with_state(self.state.clone())
            .layer(guard)
    }

    /// Serves HTTPS on `listener` until `shutdown` completes, then drains for a few seconds.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        crate::state::serve(self.router(), listener, tls, shutdown).await
    }
}

async fn forward(State(state): State<Arc<Forwarding>>, request: Request) -> Response {
    match state.handle(request).await {
        Ok(response) | Err(response) => response,
    }
}

impl Forwarding {
    async fn handle(&self, request: Request) -> Result<Response, Response> {
        let (mut parts, body) = request.into_parts();
        let identity = self
            .authenticate(&parts.headers)
            .map_err(|e| e.into_response())?;
        if let Some(identity) = &identity {
            self.guard.admit(identity).map_err(|e| e.into_response())?;
        }
        if let Some(ban) = ban_request(&parts) {
            // This server's own IP filter, once the upstream says the caller may see it.
            self.authorized(&parts).await?;
            let user = identity.map(|i| i.user).unwrap_or_default();
            return match ban {
                None => Ok(bans::listed(&self.guard.bans)),
                Some(address) => {
                    bans::lifted(&self.guard.bans, address, &user).map_err(|e| e.into_response())
                }
            };
        }
        if !node_bound(parts.uri.path()) {
            return Ok(self.pass_on(&parts, Some(body)).await);
        }
        let session = parts.method == Method::GET && parts.uri.path().ends_with("/exec");
        let upgrade = if session {
            match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(upgrade) => Some(upgrade),
                // Not a session: the upstream says what to do instead.
                Err(_) => return Ok(self.pass_on(&parts, None).await),
            }
        } else {
            None
        };
        let url = self.locate(&parts).await?;
        let fail = |e: ApiError| e.into_response();
        if let Some(upgrade) = upgrade {
            let node = self.nodes.connect(&url).await.map_err(fail)?;
            return Ok(upgrade.on_upgrade(move |socket| relay_socket(socket, node)));
        }
        let mut request = self
            .nodes
            .client()
            .map_err(fail)?
            .request(parts.method.clone(), url.clone())
            .body(stream(body));
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.nodes
            .call(request, url.origin().ascii_serialization().as_str())
            .await
            .map_err(fail)
    }

    /// The caller, when the request carries a token: decrypted and checked here, only to
    /// refuse what no server would take and to count the caller's rate; the upstream
    /// authenticates it again.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Identity>, ApiError> {
        let Some(verified) = self.verified.bearer(&self.tokens, headers) else {
            return Ok(None);
        };
        let verified = verified?;
        Ok(Some(Identity {
            user: verified.subject,
            zone: verified.claims.zone,
            workspace: verified.claims.workspace,
            expires: Some(verified.expires),
            system: false,
            node: verified.claims.node,
            joining: verified.claims.join,
            token: Some(verified.token_id),
        }))
    }

    /// The request as the upstream gets it: the same method, path, query and headers (the
    /// caller's token among them), less those of this hop, and the client's address in
    /// `X-Forwarded-For`; `body` streamed, if any. The caller's own forwarding headers are
    /// dropped: this server's IP filter already read them, trusting only its trusted proxies.
    fn upstream_request(&self, parts: &Parts, body: Option<Body>) -> reqwest::RequestBuilder {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            let ours = name == header::HOST
                || name == header::FORWARDED
                || name.as_str() == "x-forwarded-for"
                || name.as_str() == LOCATE
                || name.as_str().starts_with("sec-websocket-")
                || (body.is_none() && name == header::CONTENT_LENGTH);
            if !ours && !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(ClientAddress(client)) = parts.extensions.get::<ClientAddress>()
            && let Ok(client) = HeaderValue::try_from(client.to_string())
        {
            headers.insert("x-forwarded-for", client);
        }
        if let Some(origin) = upstream_origin(parts, &self.upstream) {
            headers.insert(header::ORIGIN, origin);
        }
        let request = self
            .http
            .request(parts.method.clone(), format!("{}{path}", self.upstream))
            .headers(headers);
        match body {
            Some(body) => request.body(stream(body)),
            None => request,
        }
    }

    /// The upstream's answer to the request, relayed.
    async fn pass_on(&self, parts: &Parts, body: Option<Body>) -> Response {
        match self.send(self.upstream_request(parts, body)).await {
            Ok(response) => relay(response),
            Err(e) => e.into_response(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        request.send().await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UpstreamUnavailable",
                format!(
                    "cannot reach this zone's upstream API server {}: {e}; retry in a few seconds",
                    self.upstream
                ),
            )
        })
    }

    /// Whether the upstream authorizes the caller for this request, without its making it
    /// (its refusal is relayed).
    async fn authorized(&self, parts: &Parts) -> Result<(), Response> {
        let request = self.upstream_request(parts, None).header(LOCATE, "1");
        let response = self.send(request).await.map_err(|e| e.into_response())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(relay(response))
        }
    }

    /// Where on its node a node-bound request goes: the upstream authorizes it as if it were
    /// made and answers with the node's URL, or refuses it, which is relayed. The body stays
    /// here, for the node.
    async fn locate(&self, parts: &Parts) -> Result<reqwest::Url, Response> {
        let request = self.upstream_request(parts, None).header(LOCATE, "1");
        let response = self.send(request).await.map_err(|e| e.into_response())?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(reqwest::Url::parse);
        match location {
            Some(Ok(url)) if response.status().is_success() => Ok(url),
            _ if !response.status().is_success() => Err(relay(response)),
            _ => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "UpstreamUnlocated",
                format!(
                    "the upstream API server {} did not say where this request goes on the node; does its --trusted-proxies name this server's address?",
                    self.upstream
                ),
            )
            .into_response()),
        }
    }
}

/// The web console's pages come from this server, so a request of theirs carries this
/// server's origin, which the upstream would refuse as another site's (see
/// [`crate::session::check_origin`]): checked here, it goes on as the upstream's own. Any
/// other origin goes on unchanged, for the upstream to refuse.
fn upstream_origin(parts: &Parts, upstream: &str) -> Option<HeaderValue> {
    if !parts.headers.contains_key(header::ORIGIN) || !crate::session::same_origin(parts) {
        return None;
    }
    HeaderValue::from_str(upstream).ok()
}

/// What a request of `dora ban` asks of this server's IP filter: `Some(None)` its bans,
/// `Some(Some(ADDRESS))` to lift one.
fn ban_request(parts: &Parts) -> Option<Option<&str>> {
    let path = parts.uri.path();
    match parts.method {
        Method::GET if path == "/v1/bans" => Some(None),
        Method::DELETE => path.strip_prefix("/v1/bans/").map(Some),
        _ => None,
    }
}

/// Whether a request must reach a node: a container's logs, top or exec, a node's top, a
/// volume's files (`/v1[/zones/Z][/workspaces/W]/PLURAL/NAME/SUB...`).
fn node_bound(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Some(mut rest) = segments.strip_prefix(&["v1"]) else {
        return false;
    };
    for scope in ["zones", "workspaces"] {
        if rest.len() > 2 && rest[0] == scope {
            rest = &rest[2..];
        }
    }
    matches!(
        rest,
        ["containers", _, "logs" | "top" | "exec"]
            | ["nodes", _, "top"]
            | ["volumes", _, "files", ..]
    )
}

/// Headers of one connection, never forwarded (RFC 9110, section 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn stream(body: Body) -> reqwest::Body {
    reqwest::Body::wrap_stream(body.into_data_stream())
}

/// The upstream's answer, streamed: its status and headers, less those of its hop.
fn relay(response: reqwest::Response) -> Response {
    let mut relayed = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if !hop_by_hop(name) {
            relayed = relayed.header(name, value);
        }
    }
    relayed
        .body(Body::from_stream(response.bytes_stream()))
        .unwrap_or_else(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "BadUpstreamAnswer",
                format!("the upstream's answer cannot be relayed: {e}"),
            )
            .into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consoles_origin_becomes_the_upstreams() {
        let parts = |origin: &str| {
            axum::http::Request::builder()
                .uri("/v1/apply")
                .header(header::HOST, "b.example:7443")
                .header(header::ORIGIN, origin)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let upstream = "https://a.example:7443";
        assert_eq!(
            upstream_origin(&parts("https://b.example:7443"), upstream).unwrap(),
            upstream
        );
        assert_eq!(
            upstream_origin(&parts("https://evil.example"), upstream),
            None
        );
    }

    #[test]
    fn node_bound_requests_are_told_apart() {
        for path in [
            "/v1/zones/b/workspaces/w/containers/c.0/logs",
            "/v1/zones/b/workspaces/w/containers/c.0/exec",
            "/v1/zones/b/nodes/n1/top",
            "/v1/zones/b/workspaces/w/volumes/v/files",
            "/v1/zones/b/workspaces/w/volumes/v/files/a/b.txt",
        ] {
            assert!(node_bound(path), "{path}");
        }
        for path in [
            "/v1/zones/b/workspaces/w/containers/c.0",
            "/v1/zones/b/workspaces/w/containers",
            "/v1/zones/b/workspaces/containers/workloads/logs",
            "/v1/zones/b/nodes/n1/report",
            "/v1/apply",
            "/healthz",
        ] {
            assert!(!node_bound(path), "{path}");
        }
    }
}
