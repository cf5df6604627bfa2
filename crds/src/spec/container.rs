use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkloadSpec;

/// One replica of a workload, made by the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The workload this container belongs to.
    pub workload: String,
    /// Replica index.
    pub index: u32,
    /// Hash of the workload spec this container was made from.
    pub hash: String,
    /// A copy of the workload spec.
    pub template: WorkloadSpec,
}
