//! Typed specs of the built-in kinds, in the manifest format of the original system.

mod cluster;
mod container;
mod credit;
mod definition;
mod node;
mod storage;
mod token;
mod workload;

pub use cluster::{
    Reach, RoleBinding, RoleSpec, UserCredit, UserDefault, UserSpec, Verb, WorkspaceSpec, ZoneSpec,
    reach_needed,
};
pub use container::ContainerSpec;
pub use credit::{CreditPer, CreditRate, ResourcecreditSpec, UsercreditSpec};
pub use definition::{ColumnFormat, DefinitionNames, DefinitionSpec, PrinterColumn};
pub use node::{NodeSpec, WorkloadClass};
pub use storage::{StorageKind, StorageSpec, VolumePolicy, VolumeSpec};
pub use token::{TokenPurpose, TokenSpec};
pub use workload::{
    Affinity, Command, DeviceSelector, Driver, Image, Network, NetworkMode, NodeSelector, Port,
    PortKind, ProductName, Protocol, PullPolicy, QueueRank, Replica, RestartPolicy, Scheduling,
    Selectors, Strategy, VolumeMount, WorkloadConfig, WorkloadSpec,
};

/// Field names that are `All` in role bindings and selectors: a wildcard.
pub const ALL: &str = "All";
