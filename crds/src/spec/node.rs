use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The classes of workload a node accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadClass {
    #[serde(rename = "CPUWorkload")]
    Cpu,
    #[serde(rename = "GPUWorkload")]
    Gpu,
}

/// A machine running a node agent. Hardware is reported by the agent, not written here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// The agent's HTTPS URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Workload classes this node accepts.
    #[serde(default = "both_classes")]
    pub allow: Vec<WorkloadClass>,
    /// Cordon: no new containers are placed here.
    #[serde(default)]
    pub scheduling_disabled: bool,
}

fn both_classes() -> Vec<WorkloadClass> {
    vec![WorkloadClass::Cpu, WorkloadClass::Gpu]
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self {
            endpoint: None,
            allow: both_classes(),
            scheduling_disabled: false,
        }
    }
}
