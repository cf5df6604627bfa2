//! The HTTPS client of the API, trusting only the profile's cluster CA.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dora_crds::Kind;
use dora_crds::spec::DefinitionSpec;
use futures::{Stream, StreamExt};
use reqwest::{Method, Response};
use serde_json::Value;

use crate::args::Global;
use crate::config::{Config, Profile};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection is probed, so that a stream whose peer vanished without a word
/// (a followed log of a quiet container, an upload) ends.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// The most a stream the API keeps busy may stay silent: a watch gets a bookmark every 30 s,
/// a download its bytes.
const STREAM_IDLE: Duration = Duration::from_secs(90);

/// A connection to one API server as one user.
pub struct Client {
    http: reqwest::Client,
    /// The most a call may take, answer included (`--request-timeout`).
    timeout: Duration,
    /// The TLS settings of `http`, for WebSocket connections.
    tls: Arc<rustls::ClientConfig>,
    base: String,
    token: String,
    zone: Option<String>,
    workspace: Option<String>,
}

/// A WebSocket to the API server.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Where a command acts.
pub struct Place {
    pub zone: String,
    /// `None` when the kind has no workspace or all workspaces are wanted.
    pub workspace: Option<String>,
}

/// A rustls client configuration trusting the PEM certificates in `ca` only.
pub fn tls_config(ca: &str) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.context("the profile's CA is not valid PEM")?)?;
    }
    if roots.is_empty() {
        bail!("the profile's CA holds no certificate");
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The error an unsuccessful answer carries, as one line.
pub async fn failure(response: Response) -> anyhow::Error {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::anyhow!("{}", describe_error(status, &body))
}

/// Turns an API error body into one line a person can act on.
pub fn describe_error(status: reqwest::StatusCode, body: &Value) -> String {
    let error = &body["error"];
    let Some(message) = error["message"].as_str() else {
        return format!("the API answered {status}");
    };
    let mut text = String::new();
    if let Some(index) = error["document"].as_u64()
        && !message.starts_with("document ")
    {
        text.push_str(&format!("document {}: ", index + 1));
    }
    if let Some(field) = error["field"].as_str()
        && !message.contains(field)
    {
        text.push_str(&format!("{field}: "));
    }
    text.push_str(message);
    text
}

impl Client {
    /// A client for the chosen profile, with `-z`/`-g` overriding its defaults.
    pub fn new(global: &Global) -> anyhow::Result<Client> {
        let config = Config::load()?;
        let profile = config.profile(global.profile.as_deref())?.clone();
        Self::for_profile(&profile, global)
    }

    fn for_profile(profile: &Profile, global: &Global) -> anyhow::Result<Client> {
        let tls = match &profile.ca {
            Some(ca) => tls_config(ca)?,
            None => bail!(
                "the profile has no CA certificate; recreate it with `dora config profile init ... --ca CA.pem`"
            ),
        };
        let builder = reqwest::Client::builder()
            .user_agent(concat!("dora/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(tls.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(KEEPALIVE);
        Ok(Client {
            http: builder.build().context("cannot build the HTTPS client")?,
            timeout: global.request_timeout,
            tls: Arc::new(tls),
            base: profile.api_server.trim_end_matches('/').to_string(),
            token: profile.token.clone(),
            zone: global.zone.clone().or(profile.zone.clone()),
            workspace: global.workspace.clone().or(profile.workspace.clone()),
        })
    }

    /// The zone and workspace a command on `kind` acts in.
    pub async fn place(&mut self, kind: Kind, all_workspaces: bool) -> anyhow::Result<Place> {
        self.place_with(kind, None, None, all_workspaces).await
    }

    /// Where the command acts and the API path of the object `name` of `kind` there.
    pub async fn object_path(&mut self, kind: Kind, name: &str) -> anyhow::Result<(Place, String)> {
        let place = self.place(kind, false).await?;
        let collection =
            dora_apiserver::collection_path(kind, &place.zone, place.workspace.as_deref());
        Ok((place, format!("{collection}/{name}")))
    }

    /// The zone and workspace a command on `kind` acts in: `zone` and `workspace` where given
    /// (by a document), the defaults only for what they leave out.
    pub async fn place_with(
        &mut self,
        kind: Kind,
        zone: Option<&str>,
        workspace: Option<&str>,
        all_workspaces: bool,
    ) -> anyhow::Result<Place> {
        let scope = kind.scope();
        let wants_zone = scope.has_zone() && zone.is_none();
        let wants_workspace = scope.has_workspace() && !all_workspaces && workspace.is_none();
        if (wants_zone && self.zone.is_none()) || (wants_workspace && self.workspace.is_none()) {
            let me = self.json(Method::GET, "/v1/whoami", &[], None).await?;
            self.zone = self.zone.take().or(me["zone"].as_str().map(str::to_string));
            self.workspace = self
                .workspace
                .take()
                .or(me["workspace"].as_str().map(str::to_string));
        }
        let zone = match (scope.has_zone(), zone.or(self.zone.as_deref())) {
            (false, _) => String::new(),
            (true, Some(zone)) => zone.to_string(),
            (true, None) => bail!(
                "{kind} lives in a zone and none is set; pass -z ZONE or run `dora config use-zone ZONE`"
            ),
        };
        let workspace = match (
            scope.has_workspace() && !all_workspaces,
            workspace.or(self.workspace.as_deref()),
        ) {
            (false, _) => None,
            (true, Some(ws)) => Some(ws.to_string()),
            (true, None) => bail!(
                "{kind} lives in a workspace and none is set; pass -g WORKSPACE or run `dora config use-workspace WORKSPACE`"
            ),
        };
        Ok(Place { zone, workspace })
    }

    /// The default zone and workspace, for apply.
    pub fn defaults(&self) -> (Option<&str>, Option<&str>) {
        (self.zone.as_deref(), self.workspace.as_deref())
    }

    /// A request to `path` with the caller's credentials, to finish and send with
    /// [`Client::send_request`].
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request built with [`Client::request`] whose body takes as long as it takes
    /// (an upload), whatever the answer's status: no deadline for the whole call, but the
    /// connection's keep-alive notices a vanished server.
    pub async fn send_request(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.with_context(|| {
            format!(
                "cannot reach the API server at {}; is `dora up` running?",
                self.base
            )
        })
    }

    /// Sends a request and returns the raw response, whatever its status, all within
    /// `--request-timeout`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> anyhow::Result<Response> {
        let request = self.build(method, path, query, body).timeout(self.timeout);
        self.send_request(request)
            .await
            .map_err(|e| self.timed_out(e))
    }

    /// Sends a request whose answer streams (a followed log, a download, a watch) and returns
    /// it once its head has come, within `--request-timeout`; its body has no deadline (see
    /// [`idle_deadline`]).
    pub async fn open(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Response> {
        let request = self.build(Method::GET, path, query, None);
        match tokio::time::timeout(self.timeout, self.send_request(request)).await {
            Ok(response) => response,
            Err(_) => Err(self.deadline_missed()),
        }
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

    /// `error`, or when it is a missed deadline, which one.
    fn timed_out(&self, error: anyhow::Error) -> anyhow::Error {
        let timed_out = error
            .chain()
            .filter_map(|e| e.downcast_ref::<reqwest::Error>())
            .any(|e| e.is_timeout() && !e.is_connect());
        if timed_out {
            self.deadline_missed()
        } else {
            error
        }
    }

    fn deadline_missed(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "the API server at {} did not answer within {:?} (--request-timeout)",
            self.base,
            self.timeout
        )
    }

    /// Opens a WebSocket to `path` with `query`, over TLS trusting the profile's CA.
    pub async fn websocket(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<WebSocket> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)?;
        let host = url
            .host_str()
            .context("the API server URL names no host")?
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let mut request = url
            .as_str()
            .replacen("https://", "wss://", 1)
            .into_client_request()?;
        request.headers_mut().insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse()?,
        );
        let unreachable = || {
            format!(
                "cannot reach the API server at {}; is `dora up` running?",
                self.base
            )
        };
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
                .await
                .with_context(unreachable)?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .with_context(unreachable)?;
            anyhow::Ok(tokio_tungstenite::client_async(request, tls).await)
        };
        let upgraded = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| self.deadline_missed())??;
        match upgraded {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status();
                let body: Value = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                let status = reqwest::StatusCode::from_u16(status.as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
                bail!("{}", describe_error(status, &body))
            }
            Err(e) => Err(e).context("the API server refused the session"),
        }
    }

    /// Learns the kinds defined on the cluster (`GET /v1/kinds`), so that they parse, place
    /// and print like built-in ones in this process.
    pub async fn learn_kinds(&self) -> anyhow::Result<()> {
        let list = self.json(Method::GET, "/v1/kinds", &[], None).await?;
        let definitions = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("definition"));
        for definition in definitions {
            let spec: DefinitionSpec = serde_json::from_value(definition.clone())
                .context("the API server sent a definition this CLI does not understand")?;
            dora_crds::registry::define(&spec)
                .with_context(|| format!("cannot use kind {}", spec.names.kind))?;
        }
        Ok(())
    }

    /// Sends a request and decodes a successful JSON answer; errors carry the API's message.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let response = self.send(method, path, query, body).await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{}", describe_error(status, &value));
        }
        Ok(value)
    }

    /// Follows an NDJSON stream, one JSON value per line; it ends with an error when the API
    /// falls silent past its bookmarks.
    pub async fn lines(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Value>> + use<>> {
        let response = self.open(path, query).await?;
        let status = response.status();
        if !status.is_success() {
            let value: Value = response.json().await.unwrap_or(Value::Null);
            bail!("{}", describe_error(status, &value));
        }
        let mut buffer = Vec::new();
        Ok(
            idle_deadline(response.bytes_stream()).flat_map(move |chunk| {
                let mut out = Vec::new();
                match chunk {
                    Ok(bytes) => {
                        buffer.extend_from_slice(&bytes);
                        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buffer.drain(..=end).collect();
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            out.push(
                                serde_json::from_slice(&line)
                                    .context("the watch stream sent invalid JSON"),
                            );
                        }
                    }
                    Err(e) => out.push(Err(e.context("the watch stream broke"))),
                }
                futures::stream::iter(out)
            }),
        )
    }
}

/// `body`, ending with an error when nothing comes for longer than a stream the API keeps busy
/// may stay silent.
pub fn idle_deadline<B: Send + 'static>(
    body: impl Stream<Item = reqwest::Result<B>> + Unpin + Send + 'static,
) -> futures::stream::BoxStream<'static, anyhow::Result<B>> {
    let stream = futures::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match tokio::time::timeout(STREAM_IDLE, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(anyhow::Error::new(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(anyhow::anyhow!(
                    "the API server sent nothing for {} s",
                    STREAM_IDLE.as_secs()
                )),
                None,
            )),
        }
    });
    stream.boxed()
}
