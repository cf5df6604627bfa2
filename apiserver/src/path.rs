//! Resource paths: `/v1/{plural}[/{name}]` for cluster kinds, `/v1/workspaces/{ws}/...` for
//! workspaced kinds, `/v1/zones/{zone}/...` for zoned kinds and
//! `/v1/zones/{zone}/workspaces/{ws}/...` for zoned+workspaced kinds. Listing a zoned+workspaced
//! kind without a workspace lists every workspace of the zone; listing a workspaced kind
//! without one (`/v1/{plural}`) lists every workspace.

use dora_crds::{Kind, Scope};

use crate::ApiError;

/// What a resource path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub zone: String,
    /// `None` when the kind has no workspace, or when listing all workspaces.
    pub workspace: Option<String>,
    /// `None` for the collection.
    pub name: Option<String>,
    /// What of the resource the path addresses.
    pub part: Part,
    /// The path inside a volume, for [`Part::Files`].
    pub file: String,
}

/// The resource itself, or something under it: `/v1/.../{name}/{part}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Object,
    /// Spec history (`GET`).
    Versions,
    /// A node agent's report of a node or container (`PUT`).
    Report,
    /// A node's serving certificate from the cluster CA (`POST`).
    Certificate,
    /// A new node's credential, for a join token (`POST`).
    Credential,
    /// A container's output (`GET`, proxied to its node).
    Logs,
    /// A command in a container (`POST`, or a WebSocket `GET` for a terminal).
    Exec,
    /// CPU and memory use of a container or node (`GET`).
    Top,
    /// The volumes a container mounts, resolved to where they live (`GET`, for its node).
    Mounts,
    /// A file or folder inside a volume: `.../volumes/NAME/files/PATH` (`GET`, `PUT`).
    Files,
    /// The status a defined kind's controller writes (`PUT` replaces, `PATCH` merges).
    Status,
}

impl Part {
    fn parse(text: &str) -> Option<Part> {
        Some(match text {
            "versions" => Part::Versions,
            "report" => Part::Report,
            "certificate" => Part::Certificate,
            "credential" => Part::Credential,
            "logs" => Part::Logs,
            "exec" => Part::Exec,
            "top" => Part::Top,
            "mounts" => Part::Mounts,
            "files" => Part::Files,
            "status" => Part::Status,
            _ => return None,
        })
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn kind_of(plural: &str) -> Result<Kind, ApiError> {
    Kind::parse(plural).ok_or_else(|| {
        ApiError::not_found(format!("no resource kind {plural:?} (see /openapi.json)"))
    })
}

/// Parses the part of a path after `/v1`.
pub fn parse(path: &str) -> Result<Target, ApiError> {
    let parts = segments(path);
    let (zone, workspace, rest): (&str, Option<&str>, &[&str]) = match parts.as_slice() {
        ["zones", zone, "workspaces", ws, rest @ ..] if !rest.is_empty() => (zone, Some(ws), rest),
        ["zones", zone, rest @ ..] if !rest.is_empty() && rest[0] != "versions" => {
            (zone, None, rest)
        }
        ["workspaces", ws, rest @ ..] if !rest.is_empty() && rest[0] != "versions" => {
            ("", Some(ws), rest)
        }
        rest => ("", None, rest),
    };
    let no_such_path = || ApiError::not_found(format!("no such path /v1/{}", parts.join("/")));
    let mut file = String::new();
    let (plural, name, part) = match rest {
        [plural] => (*plural, None, Part::Object),
        [plural, name] => (*plural, Some(*name), Part::Object),
        [plural, name, "files", tail @ ..] => {
            file = tail.join("/");
            (*plural, Some(*name), Part::Files)
        }
        [plural, name, part] => (
            *plural,
            Some(*name),
            Part::parse(part).ok_or_else(no_such_path)?,
        ),
        _ => return Err(no_such_path()),
    };
    let kind = kind_of(plural)?;
    let scope = kind.scope();
    let wrong_scope = match scope {
        Scope::Cluster => !zone.is_empty() || workspace.is_some(),
        Scope::Workspaced => !zone.is_empty() || (workspace.is_none() && name.is_some()),
        Scope::Zoned => zone.is_empty() || workspace.is_some(),
        Scope::ZonedWorkspaced => zone.is_empty() || (workspace.is_none() && name.is_some()),
    };
    if wrong_scope {
        let example =
            kind.collection_path("{zone}", scope.has_workspace().then_some("{workspace}"));
        return Err(ApiError::not_found(format!(
            "{kind} resources live at {example}"
        )));
    }
    Ok(Target {
        kind,
        zone: zone.to_string(),
        workspace: workspace.map(str::to_string),
        name: name.map(str::to_string),
        part,
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scope() {
        let t = parse("/users/alice").unwrap();
        assert_eq!((t.kind, t.name.as_deref()), (Kind::User, Some("alice")));
        let t = parse("/zones/z1").unwrap();
        assert_eq!(
            (t.kind, t.name.as_deref(), t.zone.as_str()),
            (Kind::Zone, Some("z1"), "")
        );
        let t = parse("/zones/z1/versions").unwrap();
        assert!(t.part == Part::Versions && t.kind == Kind::Zone);
        let t = parse("/zones/z1/nodes").unwrap();
        assert_eq!((t.kind, t.zone.as_str(), t.name), (Kind::Node, "z1", None));
        let t = parse("/zones/z1/workspaces/ws/workloads/train/versions").unwrap();
        assert_eq!(
            (t.kind, t.workspace.as_deref(), t.name.as_deref(), t.part),
            (Kind::Workload, Some("ws"), Some("train"), Part::Versions)
        );
        let t = parse("/zones/z1/workloads").unwrap();
        assert_eq!((t.kind, t.workspace), (Kind::Workload, None));
        let t = parse("/workspaces/ws").unwrap();
        assert_eq!((t.kind, t.name.as_deref()), (Kind::Workspace, Some("ws")));
    }

    #[test]
    fn wrong_scope_says_where_the_kind_lives() {
        let err = parse("/workloads/train").unwrap_err();
        assert!(
            err.message
                .contains("/v1/zones/{zone}/workspaces/{workspace}/workloads"),
            "{}",
            err.message
        );
        assert!(parse("/zones/z1/users").is_err());
        assert!(parse("/zones/z1/workloads/train").is_err());
        assert!(parse("/pods").is_err());
    }

    #[test]
    fn collection_paths_parse_back() {
        for kind in Kind::ALL {
            let path = kind.collection_path("z1", kind.scope().has_workspace().then_some("ws"));
            let target = parse(path.trim_start_matches("/v1")).unwrap();
            assert_eq!(target.kind, kind, "{path}");
        }
    }
}
