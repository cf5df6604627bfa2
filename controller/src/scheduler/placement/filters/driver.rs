use super::{Demand, Filter, NodeInfo, Usage};

/// The node runs the workload's driver.
pub struct HasDriver;

impl Filter for HasDriver {
    fn reason(&self) -> &'static str {
        "without the workload's driver"
    }

    fn admits(&self, demand: &Demand, node: &NodeInfo, _: &Usage) -> bool {
        node.runs(demand.driver)
    }
}
