use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Bytes, Count, Duration, MilliCpu, ValidationError};

/// How many replicas to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    pub count: Count,
}

/// What runs the containers on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Driver {
    #[default]
    Docker,
    Process,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    #[default]
    IfNotPresent,
    Always,
    /// Use only an image already on the node.
    Never,
}

/// Container image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub image: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

/// A command: one string split on spaces, or a list of arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Line(String),
    Args(Vec<String>),
}

impl Command {
    /// The argument vector.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Line(line) => line.split_whitespace().map(str::to_string).collect(),
            Command::Args(args) => args.clone(),
        }
    }
}

impl JsonSchema for Command {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Command".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A command line (split on spaces) or a list of arguments.",
            "type": ["string", "array"],
            "items": {"type": "string"}
        })
    }
}

/// When a finished container is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

/// How replicas are spread over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Affinity {
    /// The first node that fits, in name order.
    #[default]
    First,
    /// A random node that fits.
    Random,
    /// Spread over as many nodes as possible.
    Distribute,
    /// Pack onto the fullest node that fits.
    Fill,
}

/// Process settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Command>,
    /// Environment as `NAME=value` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub affinity: Affinity,
    /// Size of /dev/shm in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// Stop the container this long after it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_time: Option<Duration>,
}

/// One model, a list of models, or `All`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProductName {
    One(String),
    Any(Vec<String>),
}

impl ProductName {
    /// Whether a device of model `product` matches.
    pub fn matches(&self, product: &str) -> bool {
        match self {
            ProductName::One(name) => name == super::ALL || name == product,
            ProductName::Any(names) => names.iter().any(|n| n == super::ALL || n == product),
        }
    }
}

impl Default for ProductName {
    fn default() -> Self {
        ProductName::One(super::ALL.to_string())
    }
}

impl JsonSchema for ProductName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProductName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A device model as nodes report it, a list of models, or All.",
            "type": ["string", "array"],
            "items": {"type": "string"}
        })
    }
}

/// Which devices, and how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSelector {
    #[serde(default)]
    pub product_name: ProductName,
    /// GPUs: a whole number. CPUs: cores (2) or millicores ("500m").
    pub count: MilliCpu,
}

/// Pin to one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSelector {
    /// A node name, or `All`.
    pub name: String,
}

/// Hardware the workload needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<DeviceSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<DeviceSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeSelector>,
    /// Memory each replica needs on its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
}

/// Queueing and placement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scheduling {
    /// Higher runs first when the zone is full (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Place all replicas at once or none of them.
    #[serde(default)]
    pub gang: bool,
}

impl Scheduling {
    fn is_default(&self) -> bool {
        *self == Scheduling::default()
    }

    /// Where a waiting workload with this scheduling, made at `created`, stands in its zone's
    /// queue.
    pub fn rank<'a>(&self, created: i64, workspace: &'a str, name: &'a str) -> QueueRank<'a> {
        QueueRank {
            priority: std::cmp::Reverse(self.priority),
            created,
            workspace,
            name,
        }
    }
}

/// How a spec change replaces running containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Strategy {
    /// How many replicas may be down at once during a rolling update (default 1).
    pub max_unavailable: Count,
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy {
            max_unavailable: Count(1),
        }
    }
}

impl Strategy {
    fn is_default(&self) -> bool {
        *self == Strategy::default()
    }
}

/// A volume mounted into the containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// Name of a Volume.
    pub name: String,
    /// Mount point in the container; defaults to `/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The workspace holding the volume, when it is not the workload's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// A folder inside the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// Container networking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    #[default]
    Bridge,
    Host,
}

/// How a port is exposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PortKind {
    #[default]
    NodePort,
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A port exposed on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    pub name: String,
    #[serde(default)]
    pub kind: PortKind,
    #[serde(default)]
    pub protocol: Protocol,
    #[schemars(range(min = 1))]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub node_port: Option<u16>,
}

/// Network settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub mode: NetworkMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
}

/// The order of a zone's waiting workloads: higher priority first, then older, then by
/// workspace and name. The scheduler places in this order and `dora queue` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueRank<'a> {
    priority: std::cmp::Reverse<i32>,
    created: i64,
    workspace: &'a str,
    name: &'a str,
}

/// A workload: replicas of one container spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub replica: Replica,
    #[serde(default)]
    pub driver: Driver,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    #[serde(default)]
    pub config: WorkloadConfig,
    #[serde(default)]
    pub selectors: Selectors,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Scheduling::is_default")]
    pub scheduling: Scheduling,
    #[serde(default, skip_serializing_if = "Strategy::is_default")]
    pub strategy: Strategy,
}

impl WorkloadSpec {
    /// A workload with a CPU selector is a CPU workload; every other one is a GPU workload.
    pub fn is_cpu_workload(&self) -> bool {
        self.selectors.cpu.is_some()
    }

    pub(crate) fn check(&self) -> Result<(), ValidationError> {
        match self.driver {
            Driver::Docker
                if self
                    .image
                    .as_ref()
                    .is_none_or(|i| i.image.trim().is_empty()) =>
            {
                return Err(ValidationError::new(
                    "spec.image.image",
                    "the Docker driver needs an image; set spec.image.image (or use driver: Process)",
                ));
            }
            Driver::Process if self.config.cmd.as_ref().is_none_or(|c| c.argv().is_empty()) => {
                return Err(ValidationError::new(
                    "spec.config.cmd",
                    "the Process driver needs a command; set spec.config.cmd",
                ));
            }
            _ => {}
        }
        for (i, entry) in self.config.env.iter().enumerate() {
            let valid = entry.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
            if !valid {
                return Err(ValidationError::new(
                    format!("spec.config.env[{i}]"),
                    format!(
                        "expected NAME=value with NAME of letters, digits and '_', got {entry:?}"
                    ),
                ));
            }
        }
        if let Some(gpu) = &self.selectors.gpu
            && !gpu.count.0.is_multiple_of(1000)
        {
            return Err(ValidationError::new(
                "spec.selectors.gpu.count",
                "expected a whole number of GPUs",
            ));
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            crate::validate_name(&format!("spec.volumes[{i}].name"), &volume.name)?;
            if let Some(target) = &volume.target
                && !target.starts_with('/')
            {
                return Err(ValidationError::new(
                    format!("spec.volumes[{i}].target"),
                    format!("expected an absolute path, got {target:?}"),
                ));
            }
            if let Some(subpath) = &volume.subpath
                && (subpath.starts_with('/') || subpath.split('/').any(|part| part == ".."))
            {
                return Err(ValidationError::new(
                    format!("spec.volumes[{i}].subpath"),
                    "expected a relative path inside the volume, without '..'",
                ));
            }
        }
        Ok(())
    }
}
