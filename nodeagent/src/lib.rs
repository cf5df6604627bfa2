//! The node agent: hardware discovery, drivers (docker, process, sim), reconciliation of the
//! containers bound to a node, and the node API. The real agent comes with the node-agent
//! issue; [`sim`] runs hollow nodes for scale tests.

pub mod sim;
