//! The agent's client of the API server: it registers and heartbeats the node, lists and
//! watches the containers bound to it, and reports their states, with a node credential over
//! HTTPS that trusts the cluster CA only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dora_crds::Resource;
use dora_crds::status::{ContainerReport, NodeReport};
use dora_store::ObjectKey;
use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// The most a call to the API may take, answer included; a watch has [`WATCH_IDLE`] instead.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a watch may stay silent: the API server sends a bookmark after 30 s without
/// changes, so a longer silence means the stream (or the path to it) is dead.
pub const WATCH_IDLE: Duration = Duration::from_secs(90);

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `https://host:port`.
    pub url: String,
    /// The cluster CA (PEM).
    pub ca: String,
    /// A node credential (`dora token create --node NAME`).
    pub token: String,
}

impl ApiConfig {
    /// A short stable name of the cluster: a hash of its CA.
    pub fn cluster_id(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.ca.trim().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A change to a container bound to this node.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added or changed: the whole resource.
    Applied(Box<Resource>),
    /// Deleted, or bound elsewhere.
    Gone(ObjectKey),
    /// Where the watch stands.
    Bookmark(String),
}

/// What a container report came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    Recorded,
    /// The container is bound elsewhere, at another epoch, or gone: stop this copy.
    Stale,
}

/// A client of the API for one node.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    config: Arc<ApiConfig>,
    zone: String,
    node: String,
}

#[derive(Deserialize)]
struct List {
    items: Vec<Resource>,
    metadata: ListMeta,
}

#[derive(Deserialize)]
struct ListMeta {
    #[serde(rename = "continue")]
    next: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}

/// The key of a container resource.
pub fn key_of(resource: &Resource) -> ObjectKey {
    ObjectKey::new(
        dora_crds::Kind::Container,
        resource.metadata.zone.as_deref().unwrap_or_default(),
        resource.metadata.workspace.as_deref().unwrap_or_default(),
        &resource.metadata.name,
    )
}

fn tls(ca: &str) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.context("the cluster CA is not valid PEM")?)?;
    }
    if roots.is_empty() {
        bail!("the cluster CA file holds no certificate");
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

async fn error_of(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or("no message");
    anyhow::anyhow!("the API answered {status}: {message}")
}

impl ApiClient {
    /// A client acting for `node` of `zone`.
    pub fn new(config: ApiConfig, zone: &str, node: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dora-node/", env!("CARGO_PKG_VERSION")))
            .use_preconfigured_tls(tls(&config.ca)?)
            .connect_timeout(Duration::from_secs(5))
            // Notices a peer that vanished without closing, on a watch that waits long.
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTPS client")?;
        Ok(ApiClient {
            http,
            config: Arc::new(config),
            zone: zone.to_string(),
            node: node.to_string(),
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}{path}", self.config.url.trim_end_matches('/')),
            )
            .bearer_auth(&self.config.token)
    }

    /// Sends `request`, to be answered within [`REQUEST_TIMEOUT`]; an answer other than
    /// success is an error carrying the API's message.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        self.check(request.timeout(REQUEST_TIMEOUT)).await
    }

    /// Sends `request` without a deadline for its whole answer: a stream, which its reader
    /// keeps to [`WATCH_IDLE`] between chunks.
    async fn open(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, self.check(request)).await;
        opened.unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the API server did not answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            ))
        })
    }

    async fn check(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .context("cannot reach the API server")?;
        if !response.status().is_success() {
            return Err(error_of(response).await);
        }
        Ok(response)
    }

    fn node_path(&self) -> String {
        format!("/v1/zones/{}/nodes/{}", self.zone, self.node)
    }

    /// Registers the node (when new) and heartbeats it.
    pub async fn report_node(&self, report: &NodeReport) -> anyhow::Result<()> {
        let request = self
            .request(Method::PUT, &format!("{}/report", self.node_path()))
            .json(report);
        self.send(request).await?;
        Ok(())
    }

    /// Reports a container's state for its binding.
    pub async fn report_container(
        &self,
        key: &ObjectKey,
        report: &ContainerReport,
    ) -> anyhow::Result<Reported> {
        let path = format!(
            "/v1/zones/{}/workspaces/{}/containers/{}/report",
            key.zone, key.workspace, key.name
        );
        let response = self
            .request(Method::PUT, &path)
            .json(report)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .context("cannot reach the API server")?;
        match response.status() {
            status if status.is_success() => Ok(Reported::Recorded),
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => Ok(Reported::Stale),
            _ => Err(error_of(response).await),
        }
    }

    /// The volumes a container bound here mounts, resolved.
    pub async fn mounts(&self, key: &ObjectKey) -> anyhow::Result<Vec<crate::driver::Mount>> {
        let path = format!(
            "/v1/zones/{}/workspaces/{}/containers/{}/mounts",
            key.zone, key.workspace, key.name
        );
        let response = self.send(self.request(Method::GET, &path)).await?;
        response.json().await.context("unreadable mounts")
    }

    /// Exchanges a join token (this client's token) for the node's own credential.
    pub async fn join(&self) -> anyhow::Result<String> {
        let request = self.request(Method::POST, &format!("{}/credential", self.node_path()));
        let issued: Value = self
            .send(request)
            .await?
            .json()
            .await
            .context("unreadable credential")?;
        issued["token"]
            .as_str()
            .map(str::to_string)
            .context("the API sent no credential")
    }

    /// A serving certificate for the names the node's API answers on.
    pub async fn certificate(&self, names: &[String]) -> anyhow::Result<NodeCertificate> {
        let response = self
            .send(
                self.request(Method::POST, &format!("{}/certificate", self.node_path()))
                    .json(&serde_json::json!({ "names": names })),
            )
            .await?;
        response
            .json()
            .await
            .context("the API sent an unreadable certificate")
    }

    fn containers_path(&self) -> String {
        format!("/v1/zones/{}/containers", self.zone)
    }

    /// Every container bound to the node, and the version to watch from.
    pub async fn list(&self) -> anyhow::Result<(Vec<Resource>, String)> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("node", self.node.clone()), ("limit", "1000".into())];
            if let Some(after) = &after {
                query.push(("continue", after.clone()));
            }
            let response = self
                .send(
                    self.request(Method::GET, &self.containers_path())
                        .query(&query),
                )
                .await?;
            let page: List = response.json().await.context("unreadable container list")?;
            items.extend(page.items);
            match page.metadata.next {
                Some(next) => after = Some(next),
                None => return Ok((items, page.metadata.resource_version)),
            }
        }
    }

    /// The changes to the node's containers after `version`, until the stream breaks.
    pub async fn watch(
        &self,
        version: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Change>> + use<>> {
        let query = [
            ("node", self.node.as_str()),
            ("watch", "true"),
            ("resourceVersion", version),
        ];
        let response = self
            .open(
                self.request(Method::GET, &self.containers_path())
                    .query(&query),
            )
            .await?;
        let lines = ndjson_lines(response.bytes_stream(), WATCH_IDLE);
        Ok(lines.map(|line| line.and_then(|line| parse_change(&line))))
    }
}

/// The node's serving certificate, as the API issues it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCertificate {
    pub certificate: String,
    pub key: String,
    pub ca: String,
    pub proxy_ca: String,
}

fn parse_change(line: &str) -> anyhow::Result<Change> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "type")]
        kind: String,
        object: Option<Resource>,
        #[serde(rename = "resourceVersion")]
        resource_version: Option<String>,
        error: Option<Value>,
    }
    let line: Line = serde_json::from_str(line).context("unreadable watch line")?;
    match (line.kind.as_str(), line.object) {
        ("ADDED" | "MODIFIED", Some(object)) => Ok(Change::Applied(Box::new(object))),
        ("DELETED", Some(object)) => Ok(Change::Gone(key_of(&object))),
        ("BOOKMARK", _) => Ok(Change::Bookmark(line.resource_version.unwrap_or_default())),
        ("ERROR", _) => bail!("the watch ended: {}", line.error.unwrap_or_default()),
        (other, _) => bail!("unexpected watch line of type {other}"),
    }
}

/// Splits a byte stream into lines; a silence longer than `idle` ends it with an error.
fn ndjson_lines<S, B>(bytes: S, idle: Duration) -> impl Stream<Item = anyhow::Result<String>>
where
    S: Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    futures::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        move |(mut bytes, mut buffer, done)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line).trim().to_string();
                    if text.is_empty() {
                        continue;
                    }
                    return Some((Ok(text), (bytes, buffer, done)));
                }
                if done {
                    return None;
                }
                let Ok(next) = tokio::time::timeout(idle, bytes.next()).await else {
                    return Some((
                        Err(anyhow::anyhow!(
                            "the watch sent nothing for {} s",
                            idle.as_secs()
                        )),
                        (bytes, Vec::new(), true),
                    ));
                };
                match next {
                    Some(Ok(chunk)) => buffer.extend_from_slice(chunk.as_ref()),
                    Some(Err(e)) => {
                        return Some((
                            Err(anyhow::Error::new(e).context("the watch broke")),
                            (bytes, buffer, true),
                        ));
                    }
                    None => {
                        return Some((
                            Err(anyhow::anyhow!("the API server closed the watch")),
                            (bytes, Vec::new(), true),
                        ));
                    }
                }
            }
        },
    )
}
