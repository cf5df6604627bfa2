//! The Rust client of Dora's HTTPS API, used by the CLI and the node agent: it trusts only the cluster CA, authenticates with a token, gives every
//! call a deadline, and turns error answers into [`Error`]s that say what to do.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = dora_client::Client::new(dora_client::Config::new(
//!     "https://127.0.0.1:7443",
//!     std::fs::read_to_string("ca.pem")?,
//!     "TOKEN",
//! ))?;
//! let list = client.list("/v1/zones/default/workspaces/default/workloads", &[]).await?;
//! println!("{} workloads at version {}", list.items.len(), list.resource_version);
//! # Ok(())
//! # }
//! ```

mod error;
pub mod profile;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use dora_crds::Resource;
use dora_crds::spec::DefinitionSpec;
use futures::{Stream, StreamExt};
use reqwest::{Method, Response};
use serde::Deserialize;
use serde_json::Value;

pub use error::{Error, Failure};
pub use reqwest;
pub use stream::{Event, idle_deadline};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection is probed, so that a stream whose peer vanished without a word
/// (a quiet watch, a followed log) ends.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// The most objects one page of a list holds.
const PAGE: usize = 1000;

/// Where the API is and who calls it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host:port`.
    pub url: String,
    /// The cluster CA (PEM): the only certificate the client trusts.
    pub ca: String,
    /// A bearer token (`dora token create`).
    pub token: String,
    /// The most a call may take, its answer included; a stream's head must come within it.
    pub timeout: Duration,
    /// Sent as `User-Agent`.
    pub user_agent: String,
}

impl Config {
    /// The settings of the CLI profile `name` (the current one when `None`), as `dora up`
    /// writes it for its cluster: see [`profile`].
    pub fn from_profile(name: Option<&str>) -> Result<Config, Error> {
        let profiles = profile::Profiles::load()?;
        let profile = profiles.profile(name)?;
        let ca = profile.ca.clone().ok_or_else(|| {
            Error::Config(format!(
                "profile {:?} has no CA certificate",
                profiles.profile_name(name).unwrap_or_default()
            ))
        })?;
        Ok(Config::new(&profile.api_server, ca, &profile.token))
    }

    /// The settings a program's command line names: `--api-server URL --ca CA.pem --token
    /// TOKEN` (or `DORA_API_SERVER`, `DORA_CA`, `DORA_TOKEN`), else the CLI profile
    /// `--profile NAME` (the current one when not named).
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Config, Error> {
        let args: Vec<String> = args.into_iter().collect();
        let value = |flag: &str, variable: &str| {
            let given = args.iter().position(|a| a == flag);
            given
                .and_then(|i| args.get(i + 1).cloned())
                .or_else(|| std::env::var(variable).ok())
        };
        let url = value("--api-server", "DORA_API_SERVER");
        let token = value("--token", "DORA_TOKEN");
        let (url, token) = match (url, token) {
            (Some(url), Some(token)) => (url, token),
            (None, None) => {
                let profile = args.iter().position(|a| a == "--profile");
                let name = profile.and_then(|i| args.get(i + 1));
                return Config::from_profile(name.map(String::as_str));
            }
            _ => {
                return Err(Error::Config(
                    "give both --api-server and --token, or neither to use the CLI profile".into(),
                ));
            }
        };
        let path = value("--ca", "DORA_CA")
            .ok_or_else(|| Error::Config("--api-server needs --ca CA.pem".into()))?;
        let ca = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("cannot read --ca {path}: {e}")))?;
        Ok(Config::new(url, ca, token))
    }

    /// Settings for `url` trusting `ca`, as `token`, with a 30 s deadline.
    pub fn new(url: impl Into<String>, ca: impl Into<String>, token: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            ca: ca.into(),
            token: token.into(),
            timeout: Duration::from_secs(30),
            user_agent: concat!("dora-client/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// A connection to one API server as one token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The TLS settings of `http`, for WebSocket connections.
    tls: Arc<rustls::ClientConfig>,
    base: Arc<str>,
    token: Arc<str>,
    timeout: Duration,
}

/// A WebSocket to the API server.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A whole list, every page of it.
#[derive(Debug, Clone)]
pub struct List {
    pub items: Vec<Resource>,
    /// Where a watch of the same objects starts so that it misses nothing.
    pub resource_version: String,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Resource>,
    metadata: PageMeta,
}

#[derive(Deserialize)]
struct PageMeta {
    #[serde(rename = "continue")]
    next: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

/// An event a controller tells about an object.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// One word for what happened (`ReconcileFailed`).
    pub reason: &'a str,
    pub message: &'a str,
    /// Who tells it.
    pub component: &'a str,
    /// The object: its kind, zone and workspace (empty where its kind has none), name.
    pub kind: &'a str,
    pub zone: &'a str,
    pub workspace: &'a str,
    pub name: &'a str,
}

/// A rustls client configuration trusting the PEM certificates in `ca` only.
pub fn tls_config(ca: &str) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let cert = cert.map_err(|e| Error::Config(format!("the cluster CA is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("the cluster CA is not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Config("the cluster CA holds no certificate".into()));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| Error::Config(e.to_string()))
}

/// The error an unsuccessful answer carries.
pub async fn failure(response: Response) -> Error {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Error::Api(Box::new(Failure::new(status, &body)))
}

impl Client {
    /// A client with `config`.
    pub fn new(config: Config) -> Result<Client, Error> {
        let tls = tls_config(&config.ca)?;
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent)
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(KEEPALIVE)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTPS client: {e}")))?;
        Ok(Client {
            http,
            tls: Arc::new(tls),
            base: config.url.trim_end_matches('/').into(),
            token: config.token.into(),
            timeout: config.timeout,
        })
    }

    /// The same connections, calling as `token`: many callers in one process (hollow nodes)
    /// share one pool.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: token.into(),
            ..self.clone()
        }
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the client's token, to finish and send with
    /// [`Client::call`], [`Client::send_request`] or [`Client::send_streaming`].
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&*self.token)
    }

    fn unreachable(&self, source: reqwest::Error) -> Error {
        if source.is_timeout() && !source.is_connect() {
            return self.timed_out();
        }
        Error::Unreachable {
            url: self.base.to_string(),
            source,
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            url: self.base.to_string(),
            after: self.timeout,
        }
    }

    /// Sends `request` within the deadline and returns its answer, whatever its status.
    pub async fn send_request(&self, request: reqwest::RequestBuilder) -> Result<Response, Error> {
        request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// Sends `request` whose body takes as long as it takes (an upload), whatever the answer's
    /// status: no deadline for the whole call, but the connection's keep-alive notices a
    /// vanished server.
    pub async fn send_streaming(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Response, Error> {
        request.send().await.map_err(|e| self.unreachable(e))
    }

    /// Sends `request` within the deadline; an answer other than success is an error.
    pub async fn call(&self, request: reqwest::RequestBuilder) -> Result<Response, Error> {
        let response = self.send_request(request).await?;
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        Ok(response)
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.request(method, path).query(query);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(body);
        }
        request
    }

    /// Sends a request with a YAML (or JSON) `body` within the deadline and returns its
    /// answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Response, Error> {
        self.send_request(self.build(method, path, query, body))
            .await
    }

    /// Sends a request and decodes its successful JSON answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Value, Error> {
        let response = self.call(self.build(method, path, query, body)).await?;
        response.json().await.map_err(|e| self.unreachable(e))
    }

    /// Sends a request whose answer streams (a watch, a followed log, a download) and returns
    /// it, whatever its status, once its head has come within the deadline; its body has no
    /// deadline (see [`idle_deadline`]).
    pub async fn open(&self, path: &str, query: &[(&str, String)]) -> Result<Response, Error> {
        let request = self.build(Method::GET, path, query, None).send();
        match tokio::time::timeout(self.timeout, request).await {
            Ok(response) => response.map_err(|e| self.unreachable(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Follows an NDJSON answer, one JSON value per line; it ends with an error when the API
    /// falls silent past its bookmarks.
    pub async fn lines(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<impl Stream<Item = Result<Value, Error>> + use<>, Error> {
        let response = self.open(path, query).await?;
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        Ok(stream::ndjson(response.bytes_stream()))
    }

    /// Every object of the collection at `path` matching `query` (a label selector, a node),
    /// page by page, and the version a watch of them starts from.
    pub async fn list(&self, path: &str, query: &[(&str, String)]) -> Result<List, Error> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = query.to_vec();
            query.push(("limit", PAGE.to_string()));
            if let Some(after) = after.take() {
                query.push(("continue", after));
            }
            let value = self.json(Method::GET, path, &query, None).await?;
            let page: Page = serde_json::from_value(value).map_err(|source| Error::Decode {
                what: "list",
                source,
            })?;
            items.extend(page.items);
            match page.metadata.next {
                Some(next) => after = Some(next),
                None => {
                    return Ok(List {
                        items,
                        resource_version: page.metadata.resource_version,
                    });
                }
            }
        }
    }

    /// The changes to the collection at `path` matching `query` after `version` (from a
    /// [`List`] or the last [`Event`]), until the stream breaks: then list again, or watch
    /// again from the last version seen.
    pub async fn watch(
        &self,
        path: &str,
        query: &[(&str, String)],
        version: &str,
    ) -> Result<impl Stream<Item = Result<Event, Error>> + use<>, Error> {
        let mut query = query.to_vec();
        query.push(("watch", "true".into()));
        query.push(("resourceVersion", version.to_string()));
        // The API ends a watch only by failing: an end is an error too.
        let closed = futures::stream::once(async {
            Err(Error::Stream("the API server closed the watch".into()))
        });
        let lines = self.lines(path, &query).await?;
        Ok(lines.chain(closed).map(|line| line.and_then(Event::parse)))
    }

    /// Creates or updates the objects of a YAML or JSON document stream, as `dora apply`
    /// does, and returns the API's answer: what each document came to.
    pub async fn apply(&self, documents: String) -> Result<Value, Error> {
        self.json(Method::POST, "/v1/apply", &[], Some(documents))
            .await
    }

    /// Learns the kinds defined on the cluster (`GET /v1/kinds`), so that they parse and
    /// place like built-in ones in this process.
    pub async fn learn_kinds(&self) -> Result<(), Error> {
        let list = self.json(Method::GET, "/v1/kinds", &[], None).await?;
        let definitions = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("definition"));
        for definition in definitions {
            let spec: DefinitionSpec =
                serde_json::from_value(definition.clone()).map_err(|source| Error::Decode {
                    what: "kind definition",
                    source,
                })?;
            dora_crds::registry::define(&spec)
                .map_err(|e| Error::Config(format!("cannot use kind {}: {e}", spec.names.kind)))?;
        }
        Ok(())
    }

    /// Replaces the status of the object at `path` (of a defined kind whose controller
    /// writes one: the caller needs the `Report` verb on it), and returns the object.
    pub async fn put_status(&self, path: &str, status: &Value) -> Result<Resource, Error> {
        self.status(Method::PUT, path, status).await
    }

    /// Merges `patch` (a JSON merge patch: `null` removes a field) into the status of the
    /// object at `path`, and returns the object.
    pub async fn patch_status(&self, path: &str, patch: &Value) -> Result<Resource, Error> {
        self.status(Method::PATCH, path, patch).await
    }

    async fn status(&self, method: Method, path: &str, body: &Value) -> Result<Resource, Error> {
        let request = self.request(method, &format!("{path}/status")).json(body);
        let response = self.call(request).await?;
        let value: Value = response.json().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_value(value).map_err(|source| Error::Decode {
            what: "object",
            source,
        })
    }

    /// Records an event about an object (`POST /v1/events`; the `Report` verb on its kind).
    pub async fn record_event(&self, event: &NewEvent<'_>) -> Result<(), Error> {
        let body = serde_json::json!({
            "type": if event.warning { "Warning" } else { "Normal" },
            "reason": event.reason,
            "message": event.message,
            "component": event.component,
            "involvedObject": {
                "kind": event.kind,
                "zone": event.zone,
                "workspace": event.workspace,
                "name": event.name,
            },
        });
        let request = self.request(Method::POST, "/v1/events").json(&body);
        self.call(request).await.map(drop)
    }

    /// Opens a WebSocket to `path` with `query`, over TLS trusting the cluster CA.
    pub async fn websocket(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<WebSocket, Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let bad = |e: &dyn std::fmt::Display| Error::Config(format!("bad WebSocket address: {e}"));
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| bad(&e))?;
        let host = url
            .host_str()
            .ok_or_else(|| bad(&"the API server URL names no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let mut request = url
            .as_str()
            .replacen("https://", "wss://", 1)
            .into_client_request()
            .map_err(|e| bad(&e))?;
        let bearer = format!("Bearer {}", self.token)
            .parse()
            .map_err(|e| bad(&e))?;
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, bearer);
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| bad(&e))?;
        let unreachable = |e: std::io::Error| {
            Error::Stream(format!("cannot reach the API server at {}: {e}", self.base))
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(unreachable)?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(unreachable)?;
            Ok::<_, Error>(tokio_tungstenite::client_async(request, tls).await)
        };
        let upgraded = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| self.timed_out())??;
        match upgraded {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body: Value = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err(Error::Api(Box::new(Failure::new(
                    response.status().as_u16(),
                    &body,
                ))))
            }
            Err(e) => Err(Error::Stream(format!(
                "the API server refused the session: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_command_line_names_the_server_and_its_ca_or_a_profile() {
        let ca = std::env::temp_dir().join(format!("dora-client-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "PEM").unwrap();
        let given = format!("x --api-server https://h:1 --token T --ca {}", ca.display());
        let config = Config::from_args(args(&given)).unwrap();
        assert_eq!(
            (config.url.as_str(), config.ca.as_str()),
            ("https://h:1", "PEM")
        );
        assert_eq!(config.token, "T");
        let half = Config::from_args(args("x --api-server https://h:1")).unwrap_err();
        assert!(
            half.to_string().contains("both --api-server and --token"),
            "{half}"
        );
        let no_ca = Config::from_args(args("x --api-server https://h:1 --token T")).unwrap_err();
        assert!(no_ca.to_string().contains("--ca"), "{no_ca}");
        std::fs::remove_file(ca).unwrap();
    }
}
