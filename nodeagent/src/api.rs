//! The agent's client of the API server: it registers and heartbeats the node, lists and
//! watches the containers bound to it, and reports their states, with a node credential over
//! HTTPS that trusts the cluster CA only.

use std::time::Duration;

use anyhow::Context;
use dora_client::{Client, Event};
use dora_crds::Resource;
use dora_crds::status::{ContainerReport, NodeReport};
use dora_store::ObjectKey;
use futures::{Stream, StreamExt};
use reqwest::Method;
use serde::Deserialize;

/// The most a call to the API may take, answer included; a watch's head must come within it,
/// and then it may stay silent for 90 s (three bookmarks).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    client: Client,
    zone: String,
    node: String,
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

/// A client of the API as node agents call it: their deadline and user agent.
pub fn connect(config: ApiConfig) -> anyhow::Result<Client> {
    let mut settings = dora_client::Config::new(config.url, config.ca, config.token);
    settings.timeout = REQUEST_TIMEOUT;
    settings.user_agent = concat!("dora-node/", env!("CARGO_PKG_VERSION")).into();
    Ok(Client::new(settings)?)
}

impl ApiClient {
    /// A client acting for `node` of `zone`.
    pub fn new(config: ApiConfig, zone: &str, node: &str) -> anyhow::Result<Self> {
        Ok(Self::sharing(&connect(config)?, zone, node))
    }

    /// A client acting for `node` of `zone` over `client`'s connections, as `client`'s token
    /// (the node's credential).
    pub fn sharing(client: &Client, zone: &str, node: &str) -> Self {
        ApiClient {
            client: client.clone(),
            zone: zone.to_string(),
            node: node.to_string(),
        }
    }

    /// The node it acts for.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn node_path(&self) -> String {
        format!("/v1/zones/{}/nodes/{}", self.zone, self.node)
    }

    /// Registers the node (when new) and heartbeats it.
    pub async fn report_node(&self, report: &NodeReport) -> anyhow::Result<()> {
        let request = self
            .client
            .request(Method::PUT, &format!("{}/report", self.node_path()))
            .json(report);
        self.client.call(request).await?;
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
        let request = self.client.request(Method::PUT, &path).json(report);
        match self.client.call(request).await {
            Ok(_) => Ok(Reported::Recorded),
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(Reported::Stale),
            Err(e) => Err(e.into()),
        }
    }

    /// The volumes a container bound here mounts, resolved.
    pub async fn mounts(&self, key: &ObjectKey) -> anyhow::Result<Vec<crate::driver::Mount>> {
        let path = format!(
            "/v1/zones/{}/workspaces/{}/containers/{}/mounts",
            key.zone, key.workspace, key.name
        );
        let mounts = self.client.json(Method::GET, &path, &[], None).await?;
        serde_json::from_value(mounts).context("unreadable mounts")
    }

    /// Exchanges a join token (this client's token) for the node's own credential.
    pub async fn join(&self) -> anyhow::Result<String> {
        let path = format!("{}/credential", self.node_path());
        let issued = self.client.json(Method::POST, &path, &[], None).await?;
        issued["token"]
            .as_str()
            .map(str::to_string)
            .context("the API sent no credential")
    }

    /// A serving certificate for the names the node's API answers on.
    pub async fn certificate(&self, names: &[String]) -> anyhow::Result<NodeCertificate> {
        let request = self
            .client
            .request(Method::POST, &format!("{}/certificate", self.node_path()))
            .json(&serde_json::json!({ "names": names }));
        let response = self.client.call(request).await?;
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
        let query = [("node", self.node.clone())];
        let list = self.client.list(&self.containers_path(), &query).await?;
        Ok((list.items, list.resource_version))
    }

    /// The changes to the node's containers after `version`, until the stream breaks.
    pub async fn watch(
        &self,
        version: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Change>> + use<>> {
        let query = [("node", self.node.clone())];
        let events = self
            .client
            .watch(&self.containers_path(), &query, version)
            .await?;
        Ok(events.map(|event| {
            Ok(match event? {
                Event::Added { object, .. } | Event::Modified { object, .. } => {
                    Change::Applied(object)
                }
                Event::Deleted { object, .. } => Change::Gone(key_of(&object)),
                Event::Bookmark { version } => Change::Bookmark(version),
            })
        }))
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
    /// When to ask for a new certificate (RFC 3339).
    pub renew_after: String,
}

impl NodeCertificate {
    /// When to ask for a new certificate.
    pub fn renew_after(&self) -> anyhow::Result<std::time::SystemTime> {
        let at = time::OffsetDateTime::parse(
            &self.renew_after,
            &time::format_description::well_known::Rfc3339,
        )
        .with_context(|| {
            format!(
                "the API sent {:?} as the certificate's renewAfter",
                self.renew_after
            )
        })?;
        Ok(at.into())
    }
}
