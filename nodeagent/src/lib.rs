//! The node agent: hardware discovery, drivers (docker, process, sim), reconciliation of the
//! containers bound to a node, and the node API. Filled by the node-agent issue.
