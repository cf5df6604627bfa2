use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `credit.per.hour`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditRate {
    pub per: CreditPer,
}

/// Credits per unit of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditPer {
    /// Credits per hour of one unit of the product.
    #[schemars(range(min = 0))]
    pub hour: f64,
}

/// The price of one product (a GPU model as nodes report it, or a CPU core).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcecreditSpec {
    pub product_name: String,
    pub credit: CreditRate,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A user's credit account in one zone, kept by the credit system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsercreditSpec {
    /// The user this account belongs to.
    pub user: String,
}
