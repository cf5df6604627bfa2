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
    /// Host-level options that reach past a container's isolation: a Workload on the host's
    /// network, a Volume at an absolute host path. No role has it unless it lists it.
    Host,
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

impl Verb {
    /// Verbs that only read what they address (`Get`, `GetOne`); some bindings that may not
    /// write a kind may still read it (see [`RoleBinding::covers`]).
    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::GetOne)
    }
}

/// What a binding's zone or workspace must be to cover a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Any zone or workspace will do.
    Any,
    /// This one, or `All`.
    Named(String),
    /// `All`: the request reaches every zone or workspace at once.
    All,
}

impl Reach {
    /// Whether a binding's `pattern` (a name or `All`) is enough.
    fn allows(&self, pattern: &str) -> bool {
        match self {
            Reach::Any => true,
            Reach::Named(name) => pattern == super::ALL || pattern == name,
            Reach::All => pattern == super::ALL,
        }
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::Any => f.write_str("any"),
            Reach::Named(name) => f.write_str(name),
            Reach::All => f.write_str(super::ALL),
        }
    }
}

/// The zone and workspace a binding needs to cover `verb` on `kind` in `zone` and `workspace`,
/// where an empty zone or workspace means the request is not confined to one: the rule of
/// [`RoleBinding::covers`], and what a refusal tells the user to ask for.
///
/// - A zone or workspace the request names must be the binding's (or the binding's `All`).
/// - One it does not name reaches every zone or workspace at once, so the binding's must be
///   `All`: a binding limited to one zone or workspace never grants writes (Apply, Delete,
///   Token, ...) on User, Role, Zone or Workspace, nor on a zoned kind (Node, Storage,
///   Resourcecredit, Usercredit, GPU, CPU) unless its workspace is `All`, nor on a workspaced
///   kind unless its zone is `All`.
/// - Except for reads (Get, GetOne): any binding of the kind lets one read Zones and
///   Workspaces, a binding whose zone matches lets one read a zoned kind in that zone whatever
///   its workspace, and a binding whose workspace matches lets one read a workspaced kind in
///   that workspace whatever its zone.
pub fn reach_needed(kind: Kind, verb: Verb, zone: &str, workspace: &str) -> (Reach, Reach) {
    let read = verb.is_read();
    if read && matches!(kind, Kind::Zone | Kind::Workspace) {
        return (Reach::Any, Reach::Any);
    }
    let scope = kind.scope();
    let reach = |value: &str, read_anywhere: bool| {
        if read && read_anywhere {
            Reach::Any
        } else if value.is_empty() {
            Reach::All
        } else {
            Reach::Named(value.to_string())
        }
    };
    (
        reach(zone, scope.has_workspace() && !scope.has_zone()),
        reach(workspace, scope.has_zone() && !scope.has_workspace()),
    )
}

impl RoleBinding {
    /// Whether the binding names `kind` (or `All`).
    pub fn covers_kind(&self, kind: Kind) -> bool {
        self.kind == super::ALL || Kind::parse(&self.kind) == Some(kind)
    }

    /// Whether this binding covers `verb` on `kind` in `zone` and `workspace`, where an empty
    /// zone or workspace means the kind is not scoped by it (cluster kinds have neither, zoned
    /// kinds have no workspace, workspaced kinds no zone): the binding's kind is `All` or
    /// `kind`, and its zone and workspace are as [`reach_needed`] says.
    pub fn covers(&self, kind: Kind, verb: Verb, zone: &str, workspace: &str) -> bool {
        let (zone, workspace) = reach_needed(kind, verb, zone, workspace);
        self.covers_kind(kind) && zone.allows(&self.zone) && workspace.allows(&self.workspace)
    }

    /// Whether this binding covers `kind` in `zone` for every workspace at once (its workspace
    /// is `All`): what reading other users' accounts of a zone (Usercredit) takes.
    pub fn covers_every_workspace(&self, kind: Kind, zone: &str) -> bool {
        let (zone, _) = reach_needed(kind, Verb::Apply, zone, "");
        self.covers_kind(kind) && zone.allows(&self.zone) && self.workspace == super::ALL
    }

    /// Whether this binding covers `verb` on `kind` in `zone` for at least one workspace: the
    /// zone is checked as in [`RoleBinding::covers`], the workspace not at all. Used to let a
    /// read across the workspaces of a zone start; what it returns is then filtered row by row
    /// with [`RoleBinding::covers`].
    pub fn covers_some_workspace(&self, kind: Kind, verb: Verb, zone: &str) -> bool {
        let (zone, _) = reach_needed(kind, verb, zone, "");
        self.covers_kind(kind) && zone.allows(&self.zone)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(kind: &str, zone: &str, workspace: &str) -> RoleBinding {
        RoleBinding {
            kind: kind.into(),
            zone: zone.into(),
            workspace: workspace.into(),
            role: "admin".into(),
        }
    }

    const WRITES: [Verb; 3] = [Verb::Apply, Verb::Delete, Verb::Token];

    #[test]
    fn a_workspace_binding_grants_nothing_cluster_wide() {
        let scoped = binding("All", "default", "team-a");
        for kind in [Kind::User, Kind::Role, Kind::Zone, Kind::Workspace] {
            for verb in WRITES {
                assert!(!scoped.covers(kind, verb, "", ""), "{verb:?} {kind}");
            }
        }
        assert!(!scoped.covers(Kind::User, Verb::Get, "", ""));
        assert!(!scoped.covers(Kind::Role, Verb::GetOne, "", ""));
        let zone_only = binding("All", "default", "All");
        assert!(!zone_only.covers(Kind::User, Verb::Apply, "", ""));
        let workspace_only = binding("All", "All", "team-a");
        assert!(!workspace_only.covers(Kind::Role, Verb::Apply, "", ""));
        let everywhere = binding("All", "All", "All");
        for verb in WRITES {
            assert!(everywhere.covers(Kind::User, verb, "", ""));
        }
    }

    #[test]
    fn zones_and_workspaces_are_readable_by_any_binding_of_the_kind() {
        let scoped = binding("All", "default", "team-a");
        for kind in [Kind::Zone, Kind::Workspace] {
            assert!(scoped.covers(kind, Verb::Get, "", ""));
            assert!(scoped.covers(kind, Verb::GetOne, "", ""));
            assert!(!scoped.covers(kind, Verb::Describe, "", ""));
        }
        assert!(!binding("Workload", "All", "All").covers(Kind::Zone, Verb::Get, "", ""));
    }

    #[test]
    fn zoned_kinds_need_the_zone_to_read_and_every_workspace_to_write() {
        let scoped = binding("All", "default", "team-a");
        for kind in [Kind::Node, Kind::Storage, Kind::Gpu, Kind::Resourcecredit] {
            assert!(scoped.covers(kind, Verb::Get, "default", ""), "{kind}");
            assert!(scoped.covers(kind, Verb::GetOne, "default", ""), "{kind}");
            assert!(!scoped.covers(kind, Verb::Get, "other", ""), "{kind}");
            assert!(!scoped.covers(kind, Verb::Apply, "default", ""), "{kind}");
            assert!(!scoped.covers(kind, Verb::Delete, "default", ""), "{kind}");
        }
        let zone_admin = binding("All", "default", "All");
        assert!(zone_admin.covers(Kind::Node, Verb::Apply, "default", ""));
        assert!(!zone_admin.covers(Kind::Node, Verb::Apply, "other", ""));
    }

    #[test]
    fn workspaced_kinds_need_both_to_match() {
        let scoped = binding("All", "default", "team-a");
        assert!(scoped.covers(Kind::Workload, Verb::Apply, "default", "team-a"));
        assert!(!scoped.covers(Kind::Workload, Verb::Apply, "default", "team-b"));
        assert!(!scoped.covers(Kind::Workload, Verb::Get, "other", "team-a"));
        // A request that does not name its workspace reaches them all.
        assert!(!scoped.covers(Kind::Workload, Verb::Get, "default", ""));
        assert!(scoped.covers_some_workspace(Kind::Workload, Verb::Get, "default"));
        assert!(!scoped.covers_some_workspace(Kind::Workload, Verb::Get, "other"));
        assert!(!binding("Volume", "All", "All").covers(Kind::Workload, Verb::Get, "z", "w"));
    }

    /// A workspaced kind has no zone: a binding of its workspace reads it whatever its zone
    /// (as a binding of a zone reads a zoned kind), and writing it takes zone `All`.
    #[test]
    fn workspaced_kinds_are_read_by_their_workspace_and_written_with_every_zone() {
        let value = serde_json::json!({
            "names": {"kind": "Coverthing", "plural": "coverthings"},
            "scope": "workspaced",
            "schema": {"type": "object"},
        });
        let kind = crate::registry::define(&crate::decode(&value).unwrap()).unwrap();
        let scoped = binding("All", "default", "team-a");
        for verb in [Verb::Get, Verb::GetOne] {
            assert!(scoped.covers(kind, verb, "", "team-a"), "{verb:?}");
            assert!(!scoped.covers(kind, verb, "", "team-b"), "{verb:?}");
            assert!(!scoped.covers(kind, verb, "", ""), "{verb:?}");
        }
        assert!(scoped.covers_some_workspace(kind, Verb::Get, ""));
        assert!(!scoped.covers_some_workspace(kind, Verb::Apply, ""));
        assert!(!scoped.covers(kind, Verb::Apply, "", "team-a"));
        assert_eq!(
            reach_needed(kind, Verb::Apply, "", "team-a"),
            (Reach::All, Reach::Named("team-a".into()))
        );
        assert!(binding("All", "All", "team-a").covers(kind, Verb::Apply, "", "team-a"));
        assert!(!binding("Workload", "All", "All").covers(kind, Verb::Get, "", "team-a"));
    }

    #[test]
    fn some_workspace_still_needs_every_zone_for_cluster_kinds() {
        let scoped = binding("All", "default", "team-a");
        assert!(!scoped.covers_some_workspace(Kind::User, Verb::Event, ""));
        assert!(scoped.covers_some_workspace(Kind::Zone, Verb::Get, ""));
        assert!(binding("All", "All", "team-a").covers_some_workspace(Kind::User, Verb::Event, ""));
    }
}
