//! Hollow nodes that reach the cluster as node agents do: each registers, heartbeats, lists and
//! watches its containers and reports their states through the API with a credential of its
//! own, with the agent's client ([`ApiClient`]). The API server checks each report against the
//! container's binding, as it does a real agent's.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dora_client::Client;
use dora_crds::Resource;
use dora_crds::status::{ContainerReport, NodeReport, Placement};
use dora_store::ObjectKey;
use futures::StreamExt;
use reqwest::Method;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CONCURRENT_WRITES, Instance, Reported, Seen, SimConfig, Update, script};
use crate::api::{self, ApiClient, Change};

/// How long hollow nodes' credentials last.
const CREDENTIAL_LIFETIME: &str = "30d";

/// The API clients of the hollow nodes, node `i` at `i`.
pub(super) struct ApiNodes {
    nodes: Vec<ApiClient>,
    /// What the nodes' names start with.
    prefix: String,
}

impl ApiNodes {
    /// Mints a credential for each node through `client` (`POST /v1/tokens`, as `dora token
    /// create --node` does) and makes its client, over `client`'s connections.
    pub(super) async fn connect(client: &Client, config: &SimConfig) -> anyhow::Result<Self> {
        let minted: Vec<anyhow::Result<ApiClient>> = futures::stream::iter(0..config.nodes)
            .map(|i| {
                let (client, zone, name) = (client.clone(), config.zone.clone(), config.name(i));
                mint(client, zone, name)
            })
            .buffered(CONCURRENT_WRITES)
            .collect()
            .await;
        Ok(ApiNodes {
            nodes: minted.into_iter().collect::<anyhow::Result<_>>()?,
            prefix: config.prefix.clone(),
        })
    }

    pub(super) async fn register(&self, config: &SimConfig) -> anyhow::Result<()> {
        let report = config.report();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(self.nodes.clone())
            .map(|node| {
                let report = report.clone();
                async move { node.report_node(&report).await }
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    pub(super) async fn heartbeat(&self, i: usize, report: &NodeReport) -> anyhow::Result<()> {
        self.nodes[i].report_node(report).await
    }

    pub(super) async fn report(&self, key: &ObjectKey, report: &ContainerReport) -> Reported {
        let Some(node) = self.node(&report.node) else {
            return Reported::Failed(format!("{} is not a hollow node here", report.node));
        };
        match node.report_container(key, report).await {
            // A stale report is the API's refusal of a copy the watch will tell to stop.
            Ok(api::Reported::Recorded | api::Reported::Stale) => Reported::Done,
            Err(e) => Reported::Again(format!("{e:#}")),
        }
    }

    /// The client of the node named `name`.
    fn node(&self, name: &str) -> Option<&ApiClient> {
        let i: usize = name.strip_prefix(&self.prefix)?.parse().ok()?;
        self.nodes.get(i).filter(|node| node.node() == name)
    }

    /// One list and watch per node, as each agent follows its own containers.
    pub(super) fn updates(
        self: Arc<Self>,
        config: &SimConfig,
        stop: CancellationToken,
    ) -> mpsc::Receiver<Update> {
        let (sender, receiver) = mpsc::channel(1024);
        for i in 0..config.nodes {
            tokio::spawn(self.clone().follow(i, sender.clone(), stop.clone()));
        }
        receiver
    }

    /// Lists, then watches, node `i`'s containers until `stop`; starts over when the watch
    /// breaks.
    async fn follow(
        self: Arc<Self>,
        i: usize,
        sender: mpsc::Sender<Update>,
        stop: CancellationToken,
    ) {
        let node = &self.nodes[i];
        let mut delay = Duration::from_millis(200);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                followed = list_and_watch(node, &sender) => match followed {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(node = node.node(), error = %format!("{e:#}"), "watching containers failed; starting over"),
                },
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    pub(super) async fn is_bound(&self, key: &ObjectKey, copy: &Instance) -> anyhow::Result<bool> {
        let node = self
            .node(&copy.node)
            .with_context(|| format!("{} is not a hollow node here", copy.node))?;
        let (containers, _) = node.list().await?;
        Ok(containers.iter().any(|container| {
            let seen = seen(container);
            seen.key == *key
                && seen.uid == copy.uid
                && seen.place.node.as_deref() == Some(copy.node.as_str())
                && seen.place.epoch == copy.epoch
        }))
    }
}

/// Sends what the node's list and then its watch tell, until the watch breaks (an error) or
/// nobody listens (`Ok`).
async fn list_and_watch(node: &ApiClient, sender: &mpsc::Sender<Update>) -> anyhow::Result<()> {
    let (containers, version) = node.list().await?;
    for container in &containers {
        if sender
            .send(Update::Seen(Box::new(seen(container))))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    let mut changes = Box::pin(node.watch(&version).await?);
    while let Some(change) = changes.next().await {
        let update = match change? {
            Change::Applied(container) => Update::Seen(Box::new(seen(&container))),
            Change::Gone(key) => Update::Gone(key),
            Change::Bookmark(_) => continue,
        };
        if sender.send(update).await.is_err() {
            return Ok(());
        }
    }
    anyhow::bail!("the watch ended")
}

fn seen(container: &Resource) -> Seen {
    let status = container.status.as_ref();
    let field = |name: &str| status.and_then(|status| status.get(name));
    let place: Placement = field("computed")
        .and_then(|computed| dora_crds::decode(computed).ok())
        .unwrap_or_default();
    let current = field("observed")
        .and_then(|observed| dora_crds::decode::<ContainerReport>(observed).ok())
        .filter(|report| report.is_of(&place));
    let script = Seen::may_start(&place, current.as_ref())
        .then(|| script(&container.spec))
        .flatten();
    Seen {
        key: api::key_of(container),
        uid: container.metadata.uid.clone().unwrap_or_default(),
        place,
        current,
        script,
    }
}

/// Mints node `name`'s credential through `client` and makes its client.
async fn mint(client: Client, zone: String, name: String) -> anyhow::Result<ApiClient> {
    let request = client
        .request(Method::POST, "/v1/tokens")
        .json(&serde_json::json!({"node": name, "zone": zone, "expiresIn": CREDENTIAL_LIFETIME}));
    let issued: serde_json::Value = client
        .call(request)
        .await
        .with_context(|| format!("cannot mint a credential for hollow node {name}"))?
        .json()
        .await?;
    let token = issued["token"]
        .as_str()
        .context("the API sent no credential")?;
    Ok(ApiClient::sharing(&client.with_token(token), &zone, &name))
}
