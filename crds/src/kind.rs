use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Which partition a kind lives in, and so which table holds it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// One partition for the whole cluster (users, roles, zones, workspaces).
    Cluster,
    /// Partitioned by workspace.
    Workspaced,
    /// Partitioned by zone.
    Zoned,
    /// Partitioned by zone, clustered by workspace.
    ZonedWorkspaced,
}

impl Scope {
    /// The name as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Workspaced => "workspaced",
            Self::Zoned => "zoned",
            Self::ZonedWorkspaced => "zonedWorkspaced",
        }
    }

    /// The inverse of [`Scope::as_str`].
    pub fn parse(text: &str) -> Option<Scope> {
        [
            Self::Cluster,
            Self::Workspaced,
            Self::Zoned,
            Self::ZonedWorkspaced,
        ]
        .into_iter()
        .find(|scope| scope.as_str() == text)
    }

    /// Whether resources of this scope belong to a zone.
    pub fn has_zone(self) -> bool {
        matches!(self, Self::Zoned | Self::ZonedWorkspaced)
    }

    /// Whether resources of this scope belong to a workspace.
    pub fn has_workspace(self) -> bool {
        matches!(self, Self::Workspaced | Self::ZonedWorkspaced)
    }

    /// The API path of the objects of the kind `plural` of this scope in `zone` and
    /// `workspace`; every workspace's when `workspace` is `None` (the zone is ignored by scopes
    /// without one).
    pub fn collection_path(self, plural: &str, zone: &str, workspace: Option<&str>) -> String {
        match (self, workspace) {
            (Scope::Cluster, _) => format!("/v1/{plural}"),
            (Scope::Workspaced, Some(ws)) => format!("/v1/workspaces/{ws}/{plural}"),
            (Scope::Workspaced, None) => format!("/v1/{plural}"),
            (Scope::Zoned, _) | (Scope::ZonedWorkspaced, None) => {
                format!("/v1/zones/{zone}/{plural}")
            }
            (Scope::ZonedWorkspaced, Some(ws)) => {
                format!("/v1/zones/{zone}/workspaces/{ws}/{plural}")
            }
        }
    }

    /// The API path of the object `name` in `zone` and `workspace`, with the name
    /// percent-encoded (a Resourcecredit's name may hold spaces).
    pub fn object_path(
        self,
        plural: &str,
        zone: &str,
        workspace: Option<&str>,
        name: &str,
    ) -> String {
        let name = percent_encoding::utf8_percent_encode(name, PATH_SEGMENT);
        format!("{}/{name}", self.collection_path(plural, zone, workspace))
    }
}

/// What a path segment must encode: everything but RFC 3986's unreserved characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A kind of resource: one of Dora's own, or one defined at run time by a `Definition`.
///
/// Every fact about a kind (name, plural, aliases, scope, columns, schema) comes from the
/// registry ([`crate::registry`]), where the built-in kinds are entries too; a defined kind is
/// its interned name, so `Kind` stays a small `Copy` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Zone,
    Workspace,
    Role,
    User,
    Storage,
    Volume,
    Node,
    Resourcecredit,
    Usercredit,
    Workload,
    Container,
    Gpu,
    Cpu,
    /// The record of an issued token, for listing and revocation.
    Token,
    /// Declares a kind defined at run time.
    Definition,
    /// A kind declared by a `Definition`, by its interned name.
    Defined(&'static str),
}

/// The facts the registry keeps about a kind.
#[derive(Clone, Copy)]
pub(crate) struct Info {
    pub name: &'static str,
    pub plural: &'static str,
    pub aliases: &'static [&'static str],
    pub scope: Scope,
}

impl Kind {
    /// All built-in kinds, in the order `dora get` lists them.
    pub const ALL: [Kind; 15] = [
        Kind::Zone,
        Kind::Workspace,
        Kind::Role,
        Kind::User,
        Kind::Storage,
        Kind::Volume,
        Kind::Node,
        Kind::Resourcecredit,
        Kind::Usercredit,
        Kind::Workload,
        Kind::Container,
        Kind::Gpu,
        Kind::Cpu,
        Kind::Token,
        Kind::Definition,
    ];

    /// The registry entry of a built-in kind; `None` for a defined one.
    pub(crate) fn built_in(self) -> Option<Info> {
        use Scope::*;
        let (name, plural, aliases, scope): (_, _, &'static [&'static str], _) = match self {
            Kind::Zone => ("Zone", "zones", &["z"], Cluster),
            Kind::Workspace => (
                "Workspace",
                "workspaces",
                &["ws", "group", "groups"],
                Cluster,
            ),
            Kind::Role => ("Role", "roles", &[], Cluster),
            Kind::User => ("User", "users", &["u"], Cluster),
            Kind::Storage => ("Storage", "storages", &["st"], Zoned),
            Kind::Volume => ("Volume", "volumes", &["vol", "vols"], ZonedWorkspaced),
            Kind::Node => ("Node", "nodes", &["no"], Zoned),
            Kind::Resourcecredit => ("Resourcecredit", "resourcecredits", &["rc"], Zoned),
            Kind::Usercredit => ("Usercredit", "usercredits", &["uc"], Zoned),
            Kind::Workload => ("Workload", "workloads", &["wk", "wl"], ZonedWorkspaced),
            Kind::Container => ("Container", "containers", &["c", "ct"], ZonedWorkspaced),
            Kind::Gpu => ("GPU", "gpus", &[], Zoned),
            Kind::Cpu => ("CPU", "cpus", &[], Zoned),
            Kind::Token => ("Token", "tokens", &["tok"], Cluster),
            Kind::Definition => ("Definition", "definitions", &["def", "defs"], Cluster),
            Kind::Defined(_) => return None,
        };
        Some(Info {
            name,
            plural,
            aliases,
            scope,
        })
    }

    fn info(self) -> Info {
        match self {
            Kind::Defined(name) => crate::registry::info(name),
            // Every other variant is built in; the registry's placeholder stands for none.
            built_in => built_in
                .built_in()
                .unwrap_or_else(|| crate::registry::info("")),
        }
    }

    /// The canonical name, as written in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Defined(name) => name,
            _ => self.info().name,
        }
    }

    /// The lowercase plural used in API paths (`workloads`).
    pub fn plural(self) -> &'static str {
        self.info().plural
    }

    /// Short names accepted on the command line and in `kind:`.
    pub fn aliases(self) -> &'static [&'static str] {
        self.info().aliases
    }

    /// The partition scope.
    pub fn scope(self) -> Scope {
        self.info().scope
    }

    /// The API path of this kind's objects in `zone` and `workspace`; every workspace's when
    /// `workspace` is `None` (the zone is ignored by kinds without one).
    pub fn collection_path(self, zone: &str, workspace: Option<&str>) -> String {
        self.scope().collection_path(self.plural(), zone, workspace)
    }

    /// The API path of its object `name` in `zone` and `workspace`.
    pub fn object_path(self, zone: &str, workspace: Option<&str>, name: &str) -> String {
        self.scope()
            .object_path(self.plural(), zone, workspace, name)
    }

    /// Whether the kind was defined at run time rather than built into Dora.
    pub fn is_defined(self) -> bool {
        matches!(self, Kind::Defined(_))
    }

    /// Read-only views computed from other rows (GPU, CPU); never stored.
    pub fn is_view(self) -> bool {
        matches!(self, Kind::Gpu | Kind::Cpu)
    }

    /// Kinds whose rows are made by Dora's own components, not applied by people.
    pub fn is_system(self) -> bool {
        matches!(self, Kind::Container | Kind::Usercredit | Kind::Token)
    }

    /// Resolves a kind from any spelling users type: name, plural or alias, any case; built-in
    /// kinds first, then the kinds defined now.
    pub fn parse(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|kind| kind.info().answers_to(&lower))
            .or_else(|| crate::registry::find(&lower))
    }

    /// Every kind known now: the built-in ones, then the defined ones by name.
    pub fn known() -> Vec<Kind> {
        let mut kinds = Kind::ALL.to_vec();
        kinds.extend(crate::registry::defined());
        kinds
    }
}

impl Info {
    /// Whether `lower` (a lowercase word) is the kind's name, plural or one of its aliases.
    pub(crate) fn answers_to(&self, lower: &str) -> bool {
        self.name.eq_ignore_ascii_case(lower)
            || self.plural == lower
            || self.aliases.contains(&lower)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Kind {
    type Err = ValidationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::parse(text).ok_or_else(|| {
            let known: Vec<&str> = Kind::known()
                .into_iter()
                .filter(|k| !k.is_view())
                .map(Kind::name)
                .collect();
            ValidationError::new(
                "kind",
                format!(
                    "unknown kind {text:?}; expected one of {} (or a kind defined with a Definition)",
                    known.join(", ")
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_case_insensitively_and_by_alias() {
        assert_eq!(Kind::parse("workload"), Some(Kind::Workload));
        assert_eq!(Kind::parse("WORKLOADS"), Some(Kind::Workload));
        assert_eq!(Kind::parse("wk"), Some(Kind::Workload));
        assert_eq!(Kind::parse("c"), Some(Kind::Container));
        assert_eq!(Kind::parse("vol"), Some(Kind::Volume));
        assert_eq!(Kind::parse("ws"), Some(Kind::Workspace));
        assert_eq!(Kind::parse("rc"), Some(Kind::Resourcecredit));
        assert_eq!(Kind::parse("uc"), Some(Kind::Usercredit));
        assert_eq!(Kind::parse("gpu"), Some(Kind::Gpu));
        assert_eq!(Kind::parse("Cpu"), Some(Kind::Cpu));
        assert_eq!(Kind::parse("pod"), None);
        assert_eq!(Kind::parse("def"), Some(Kind::Definition));
    }

    #[test]
    fn aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for kind in Kind::ALL {
            for word in [kind.name().to_ascii_lowercase(), kind.plural().to_string()]
                .into_iter()
                .chain(kind.aliases().iter().map(|a| a.to_string()))
            {
                assert!(seen.insert(word.clone()), "{word} names two kinds");
            }
        }
    }
}
