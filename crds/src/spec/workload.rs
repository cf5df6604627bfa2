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

/// What a valid image reference looks like, for errors.
const IMAGE_EXAMPLES: &str = "expected an image reference [HOST[:PORT]/]PATH[:TAG][@DIGEST], such as busybox, busybox:1.36, registry.example.com:5000/team/app:v2 or app@sha256:<64 hex digits>";

impl Image {
    /// Checks that `image` is a reference Docker and OCI registries take (the grammar of
    /// `distribution/reference`): a lowercase path of components, optionally after a registry
    /// host and port, then an optional tag and digest.
    pub fn check(&self) -> Result<(), ValidationError> {
        match reference_problem(&self.image) {
            None => Ok(()),
            Some(problem) => Err(ValidationError::new(
                "spec.image.image",
                format!("{:?}: {problem}; {IMAGE_EXAMPLES}", self.image),
            )),
        }
    }
}

/// What is wrong with an image reference, if anything.
fn reference_problem(reference: &str) -> Option<String> {
    if reference.is_empty() {
        return Some("the reference is empty".into());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let valid = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
                && algorithm
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_+.".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid {
            return Some(format!("digest {digest:?} is not ALGORITHM:HEX"));
        }
    }
    // A tag follows the last ':' after the last '/'; a ':' before it is the registry's port.
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last..].rfind(':') {
        Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let valid = (1..=128).contains(&tag.len())
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Some(format!(
                "tag {tag:?} must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            ));
        }
    }
    if name.len() > 255 {
        return Some("the name is longer than 255 characters".into());
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        if let Some(problem) = host_problem(first) {
            return Some(problem);
        }
        components.remove(0);
    }
    components.into_iter().find_map(|component| {
        (!is_path_component(component)).then(|| {
            format!(
                "path component {component:?} must be lowercase letters and digits, separated by '.', '_', '__' or dashes"
            )
        })
    })
}

/// What is wrong with a registry `HOST[:PORT]`, if anything.
fn host_problem(domain: &str) -> Option<String> {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label = |part: &str| {
        !part.is_empty()
            && !part.starts_with('-')
            && !part.ends_with('-')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !host.split('.').all(label) {
        return Some(format!("registry host {host:?} is not a host name"));
    }
    if port.is_some_and(|port| port.is_empty() || !port.chars().all(|c| c.is_ascii_digit())) {
        return Some(format!("registry port in {domain:?} is not a number"));
    }
    None
}

/// Whether `component` is lowercase letters and digits, with single separators ('.', '_',
/// '__', or any run of '-') only between them.
fn is_path_component(component: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !component.starts_with(alphanumeric) || !component.ends_with(alphanumeric) {
        return false;
    }
    component
        .split(alphanumeric)
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, "." | "_" | "__") || separator.chars().all(|c| c == '-')
        })
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
        if let Some(image) = self.image.as_ref().filter(|i| !i.image.is_empty()) {
            image.check()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str) -> Result<(), ValidationError> {
        Image {
            image: reference.into(),
            pull_policy: PullPolicy::default(),
        }
        .check()
    }

    #[test]
    fn image_references_follow_the_registry_grammar() {
        for good in [
            "busybox",
            "busybox:1.36",
            "dora/busybox",
            "library/ubuntu:22.04",
            "nvcr.io/nvidia/pytorch:24.05-py3",
            "localhost:5000/team/app_x__y:v2",
            "registry.example.com/a-b.c/d--e:latest",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "app:1@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(image(good).is_ok(), "{good}: {:?}", image(good));
        }
        for bad in [
            "Busybox",
            "busy box",
            "busybox:",
            "busybox:-1",
            "a//b",
            "/busybox",
            "busybox/",
            "a..b",
            "a___b",
            "-a",
            "reg.io:port/app",
            "bad_host.io/app",
            "app@sha256:xyz",
            "app@",
        ] {
            let err = image(bad).unwrap_err();
            assert_eq!(err.field, "spec.image.image", "{bad}");
            assert!(
                err.message.contains("such as busybox"),
                "{bad}: {}",
                err.message
            );
        }
    }
}
