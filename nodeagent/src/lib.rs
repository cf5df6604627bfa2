//! The node agent: hardware discovery, drivers (docker, process), reconciliation of the
//! containers bound to a node through the API, and the node API that the API server calls
//! for logs, shells and usage. [`sim`] runs hollow nodes for scale tests.

pub mod agent;
pub mod api;
pub mod driver;
pub mod files;
pub mod hardware;
pub mod previous;
pub mod server;
pub mod sim;
pub mod user;

pub use agent::{AgentConfig, DockerUse, run};
pub use api::ApiConfig;
