use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Kind, ValidationError};

fn all() -> String {
    super::ALL.to_string()
}

/// A zone: a failure and scheduling domain with its own scheduler and credit system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    /// The zone's API URL, when another api server owns its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A workspace groups workloads and volumes; it has no settings of its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {}

/// Verbs a role may grant on a kind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Verb {
    Apply,
    Delete,
    Get,
    GetOne,
    Describe,
    Event,
    Version,
    Shell,
    Token,
    Log,
    Use,
    Upload,
    Download,
    Ls,
    Sync,
    Clone,
    Credits,
    Create,
    Pause,
    Resume,
    Report,
}

/// A role: kind (or `All`) → verbs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Verbs granted per kind; the key `All` grants them on every kind.
    pub permission: BTreeMap<String, Vec<Verb>>,
}

impl RoleSpec {
    pub(crate) fn check(&self) -> Result<(), ValidationError> {
        for kind in self.permission.keys() {
            if kind != super::ALL && Kind::parse(kind).is_none() {
                return Err(ValidationError::new(
                    format!("spec.permission.{kind}"),
                    "unknown kind; expected a kind name such as Workload, or All",
                ));
            }
        }
        Ok(())
    }

    /// Whether the role grants `verb` on `kind`.
    pub fn allows(&self, kind: Kind, verb: Verb) -> bool {
        self.permission.iter().any(|(key, verbs)| {
            (key == super::ALL || Kind::parse(key) == Some(kind)) && verbs.contains(&verb)
        })
    }
}

/// Where a user's commands go when they name no zone or workspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserDefault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// Binds a role to a kind, zone and workspace (each may be `All`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    #[serde(default = "all")]
    pub kind: String,
    #[serde(default = "all")]
    pub zone: String,
    #[serde(default = "all")]
    pub workspace: String,
    /// Name of a Role.
    pub role: String,
}

impl RoleBinding {
    /// Whether this binding covers `kind` in `zone` and `workspace` (empty = not scoped).
    pub fn covers(&self, kind: Kind, zone: &str, workspace: &str) -> bool {
        let matches = |pattern: &str, value: &str| pattern == super::ALL || pattern == value;
        (self.kind == super::ALL || Kind::parse(&self.kind) == Some(kind))
            && (zone.is_empty() || matches(&self.zone, zone))
            && (workspace.is_empty() || matches(&self.workspace, workspace))
    }
}

/// A weekly credit limit in one zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCredit {
    pub zone: String,
    /// Credits the user may spend per week in this zone.
    #[schemars(range(min = 0))]
    pub weekly: f64,
}

/// A person or service account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<UserDefault>,
    /// Role bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<RoleBinding>,
    /// Weekly credit limits per zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credits: Vec<UserCredit>,
}

impl UserSpec {
    pub(crate) fn check(&self) -> Result<(), ValidationError> {
        for (i, binding) in self.resources.iter().enumerate() {
            if binding.kind != super::ALL && Kind::parse(&binding.kind).is_none() {
                return Err(ValidationError::new(
                    format!("spec.resources[{i}].kind"),
                    format!(
                        "unknown kind {:?}; expected a kind name or All",
                        binding.kind
                    ),
                ));
            }
        }
        Ok(())
    }
}
