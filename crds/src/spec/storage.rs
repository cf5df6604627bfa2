use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where volume data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StorageKind {
    #[serde(rename = "NFS")]
    Nfs,
    Local,
}

/// A storage backend in a zone; volumes are folders under its mount path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub kind: StorageKind,
    /// NFS server (`host:/export`), for `kind: NFS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where the storage is mounted on nodes.
    pub mountpath: String,
}

/// Whether containers may write to a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumePolicy {
    #[default]
    Rw,
    Readonly,
}

/// A folder `<mountpath>/<workspace>/<volume>` on a Storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Name of a Storage in the same zone.
    pub storage: String,
    #[serde(default)]
    pub policy: VolumePolicy,
    /// Overrides the folder on the storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
}
