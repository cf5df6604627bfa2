use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::OwnerReference;

/// `metadata` of every resource. Server-set fields are ignored on input, except `version`,
/// which, when given, makes an update conditional on the stored version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The workspace; `group` is accepted as an alias, as in the original manifests.
    #[serde(default, alias = "group", skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Notes of people and controllers; not interpreted by Dora. Left out of an apply, the
    /// stored ones are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The objects this one belongs to: it is deleted once none of them exists. Left out of an
    /// apply, the stored ones are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<Vec<OwnerReference>>,
    /// What must happen before a delete completes: a delete only sets `deletionTimestamp`
    /// until controllers have removed every entry. Left out of an apply, the stored ones are
    /// kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Vec<String>>,
    /// RFC 3339 time a delete was asked for while finalizers remained; set by the server only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Revision of the spec columns; bumped by every write of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Number of spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Hash of the spec fields that restart containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// The user who created the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// RFC 3339 time of the last spec write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

/// A resource as the API returns it: the document plus server-set metadata and `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
    /// Assembled from the `desired`, `computed` and `observed` columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}
