//! Drivers make bound containers real: [`docker`] through the Docker Engine API, [`process`]
//! as child processes. The agent decides what runs; a driver only starts, finds, stops and
//! inspects what it was asked to run, and tells the agent when something ends.

pub mod docker;
pub mod logfile;
pub mod process;

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use dora_crds::spec::ContainerSpec;
use dora_crds::status::{ContainerState, Placement};
use dora_store::ObjectKey;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Labels (Docker) and metadata (process) that mark a container as Dora's.
pub mod label {
    /// Tells clusters sharing a Docker Engine apart (a hash of the cluster CA).
    pub const CLUSTER: &str = "dora.cluster";
    pub const NODE: &str = "dora.node";
    pub const ZONE: &str = "dora.zone";
    pub const WORKSPACE: &str = "dora.workspace";
    pub const NAME: &str = "dora.name";
    pub const EPOCH: &str = "dora.epoch";
    pub const RESTARTS: &str = "dora.restarts";
}

/// A binding to make real: the container, its binding's epoch and what it runs with.
#[derive(Debug, Clone)]
pub struct Run {
    pub key: ObjectKey,
    pub epoch: u64,
    pub spec: ContainerSpec,
    pub placement: Placement,
    /// Its volumes, resolved by the API.
    pub mounts: Vec<Mount>,
}

/// A volume resolved to where it lives, as the API tells the node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub name: String,
    /// The folder on the node.
    pub source: String,
    /// Where the container sees it.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// `Local` or `NFS`.
    pub kind: String,
    /// The NFS server.
    #[serde(default)]
    pub server: Option<String>,
    /// The folder on the NFS server.
    #[serde(default)]
    pub export: Option<String>,
}

impl Run {
    /// The environment a container gets, the same for every driver, and nothing of the
    /// agent's own: `HOSTNAME` (the node's name), then the workload's variables (which may
    /// override it), then Dora's identity of the container (`DORA_ZONE`, `DORA_WORKSPACE`,
    /// `DORA_WORKLOAD`, `DORA_REPLICA`, `DORA_CONTAINER`, `DORA_NODE`), its devices and its
    /// volumes. A driver adds what its runtime lacks before these ([`Run::env_over`]).
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_over(Vec::new())
    }

    /// [`Run::env`] over `defaults`: a default the workload sets again is replaced.
    pub fn env_over(&self, defaults: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut env = Env(defaults);
        let node = self.placement.node.clone().unwrap_or_default();
        env.set("HOSTNAME", node.clone());
        for pair in &self.spec.template.config.env {
            match pair.split_once('=') {
                Some((name, value)) => env.set(name, value.to_string()),
                None => env.set(pair, String::new()),
            }
        }
        env.set("DORA_ZONE", self.key.zone.clone());
        env.set("DORA_WORKSPACE", self.key.workspace.clone());
        env.set("DORA_WORKLOAD", self.spec.workload.clone());
        env.set("DORA_REPLICA", self.spec.index.to_string());
        env.set("DORA_CONTAINER", self.key.name.clone());
        env.set("DORA_NODE", node);
        if !self.placement.gpus.is_empty() {
            let gpus = join(&self.placement.gpus);
            env.set("CUDA_VISIBLE_DEVICES", gpus.clone());
            env.set("NVIDIA_VISIBLE_DEVICES", gpus);
        }
        if !self.placement.cpus.is_empty() {
            env.set("DORA_CPUS", join(&self.placement.cpus));
        }
        for mount in &self.mounts {
            let name: String = mount
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            env.set(&format!("DORA_VOLUME_{name}"), mount.source.clone());
        }
        env.0
    }

    /// The command, as argv.
    pub fn argv(&self) -> Vec<String> {
        self.spec
            .template
            .config
            .cmd
            .as_ref()
            .map(|cmd| cmd.argv())
            .unwrap_or_default()
    }

    /// Labels marking the container as this binding's, on `node` of `cluster`.
    pub fn labels(&self, cluster: &str, node: &str) -> HashMap<String, String> {
        HashMap::from([
            (label::CLUSTER.into(), cluster.to_string()),
            (label::NODE.into(), node.to_string()),
            (label::ZONE.into(), self.key.zone.clone()),
            (label::WORKSPACE.into(), self.key.workspace.clone()),
            (label::NAME.into(), self.key.name.clone()),
            (label::EPOCH.into(), self.epoch.to_string()),
            (label::RESTARTS.into(), self.placement.restarts.to_string()),
        ])
    }
}

/// An environment in which each name appears once, keeping the order names were first set.
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name.to_string(), value)),
        }
    }
}

/// Creates a file only the agent's user can read (a container's output may hold secrets),
/// replacing any at `path`.
pub async fn private_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
}

/// Comma-separated numbers, as CUDA_VISIBLE_DEVICES and cpusets want them.
pub fn join(numbers: &[u32]) -> String {
    numbers
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A container a driver runs or ran, as found by its labels or files.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The driver's own id (Docker container id, process folder).
    pub id: String,
    pub key: ObjectKey,
    pub epoch: u64,
    pub restarts: u32,
    pub state: ContainerState,
    pub exit_code: Option<i32>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
}

impl Instance {
    /// A container that has just started.
    pub fn started(id: String, run: &Run, started_at: i64) -> Self {
        Instance {
            id,
            key: run.key.clone(),
            epoch: run.epoch,
            restarts: run.placement.restarts,
            state: ContainerState::Running,
            exit_code: None,
            started_at: Some(started_at),
            finished_at: None,
            reason: None,
        }
    }

    /// Records how it ended: exit code 0 succeeds, anything else fails.
    pub fn ended(&mut self, exit: &Exit) {
        self.state = if exit.code == Some(0) {
            ContainerState::Succeeded
        } else {
            ContainerState::Failed
        };
        self.exit_code = exit.code;
        self.finished_at = Some(exit.finished_at);
        if exit.reason.is_some() {
            self.reason = exit.reason.clone();
        }
    }
}

/// A container that ended by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub id: String,
    /// `None` when the code could not be learned (it ended while the agent was away).
    pub code: Option<i32>,
    /// Unix milliseconds.
    pub finished_at: i64,
    pub reason: Option<String>,
}

/// Where a driver sends the ends of its containers.
pub type Exits = mpsc::UnboundedSender<Exit>;

/// What a container uses now.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Percent of one core.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub processes: u32,
}

/// The output of a command run in a container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOutput {
    pub exit_code: i32,
    /// Standard output then standard error, as text (invalid UTF-8 replaced).
    pub output: String,
}

/// Output of a container: chunks of bytes, ending when the container does (when followed).
pub type LogStream = BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// A command running in a container with its input and output attached: a shell.
pub struct Session {
    /// What the caller types.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// What the command prints (standard output and error together).
    pub output: LogStream,
    pub control: Box<dyn SessionControl>,
}

/// What can be done to a running session besides typing.
#[async_trait]
pub trait SessionControl: Send + Sync {
    /// The terminal's new size.
    async fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()>;

    /// The command's exit code, once its output has ended.
    async fn exit_code(&self) -> anyhow::Result<i32>;
}

/// What the agent needs of a driver.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The workload driver this one serves.
    fn kind(&self) -> dora_crds::spec::Driver;

    /// Dora's containers of this node, ended ones included.
    async fn list(&self) -> anyhow::Result<Vec<Instance>>;

    /// Starts `run`; `pulling` is called before a long image pull.
    async fn start(
        &self,
        run: &Run,
        pulling: &(dyn Fn() + Send + Sync),
    ) -> anyhow::Result<Instance>;

    /// Stops a container (TERM, then KILL after a grace period); how it ended, if it ran.
    async fn stop(&self, instance: &Instance) -> anyhow::Result<Option<Exit>>;

    /// Stops and deletes a container and what it leaves behind.
    async fn remove(&self, instance: &Instance) -> anyhow::Result<()>;

    /// The container's output: the last `tail` lines, then what follows when `follow`.
    async fn logs(
        &self,
        instance: &Instance,
        follow: bool,
        tail: Option<usize>,
    ) -> anyhow::Result<LogStream>;

    /// Writes the container's output so far to a new file at `path`, before the container is
    /// removed; the agent keeps it as the output of the container's previous run.
    async fn save_output(&self, instance: &Instance, path: &Path) -> anyhow::Result<()> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let mut output = self.logs(instance, false, None).await?;
        let mut file = private_file(path).await?;
        while let Some(chunk) = output.next().await {
            file.write_all(&chunk?).await?;
        }
        file.flush().await?;
        Ok(())
    }

    /// Runs `command` inside the container to its end.
    async fn exec(&self, instance: &Instance, command: &[String]) -> anyhow::Result<ExecOutput>;

    /// CPU and memory the container uses now.
    async fn top(&self, instance: &Instance) -> anyhow::Result<Usage>;

    /// Starts `command` in the container with its input and output attached, on a terminal
    /// when `tty`.
    async fn attach(
        &self,
        instance: &Instance,
        command: &[String],
        tty: bool,
    ) -> anyhow::Result<Session>;
}

#[cfg(test)]
mod tests {
    use dora_crds::status::Placement;

    use super::*;

    #[test]
    fn a_workload_overrides_defaults_but_not_the_containers_identity() {
        let mut spec = ContainerSpec {
            workload: "train".into(),
            index: 2,
            hash: "h".into(),
            template: Default::default(),
        };
        spec.template.config.env = [
            "PATH=/opt/bin",
            "HOSTNAME=mine",
            "DORA_NODE=forged",
            "EMPTY",
        ]
        .map(String::from)
        .to_vec();
        let run = Run {
            key: ObjectKey::new(dora_crds::Kind::Container, "z", "w", "train.2"),
            epoch: 3,
            spec,
            placement: Placement {
                node: Some("gpu-01".into()),
                ..Placement::default()
            },
            mounts: Vec::new(),
        };
        let env = run.env_over(vec![
            ("PATH".into(), "/usr/bin".into()),
            ("HOME".into(), "/work".into()),
        ]);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("PATH", "/opt/bin"),
                ("HOME", "/work"),
                ("HOSTNAME", "mine"),
                ("DORA_NODE", "gpu-01"),
                ("EMPTY", ""),
                ("DORA_ZONE", "z"),
                ("DORA_WORKSPACE", "w"),
                ("DORA_WORKLOAD", "train"),
                ("DORA_REPLICA", "2"),
                ("DORA_CONTAINER", "train.2"),
            ]
        );
    }
}
