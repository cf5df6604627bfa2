//! What a resource route addresses. Each scope has its own prefix (see `routes/mod.rs`):
//! `/v1/{plural}` for cluster kinds, `/v1/workspaces/{workspace}/{plural}` for workspaced kinds,
//! `/v1/zones/{zone}/{plural}` for zoned kinds and `/v1/zones/{zone}/workspaces/{workspace}/{plural}`
//! for zoned+workspaced kinds, then `/{name}` and `/{name}/{sub-resource}`. Listing a
//! zoned+workspaced kind without a workspace lists every workspace of the zone; listing a
//! workspaced kind without one (`/v1/{plural}`) lists every workspace. `/v1/zones/{zone}` and
//! `/v1/workspaces/{workspace}` (and their `/versions`) are the Zone and the Workspace themselves.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use dora_crds::{Kind, Scope};
use dora_store::ObjectKey;
use serde::Deserialize;

use crate::ApiError;

/// What a resource path addresses: a collection, or one object when `name` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub zone: String,
    /// `None` when the kind has no workspace, or when listing all workspaces.
    pub workspace: Option<String>,
    /// `None` for the collection.
    pub name: Option<String>,
}

impl Target {
    /// The key of the object addressed (of no name for a collection).
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(
            self.kind,
            &self.zone,
            self.workspace.as_deref().unwrap_or_default(),
            self.name.as_deref().unwrap_or_default(),
        )
    }

    /// The target's name, for the routes that address one object.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// The parameters the resource routes name; each route names those of its scope.
#[derive(Deserialize)]
struct Segments {
    zone: Option<String>,
    workspace: Option<String>,
    plural: Option<String>,
    name: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(segments) = Path::<Segments>::from_request_parts(parts, state)
            .await
            .map_err(rejection)?;
        segments.target()
    }
}

/// A path that does not decode (bad percent-encoding, not UTF-8) as a JSON error.
pub(crate) fn rejection(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", e.body_text()))
}

impl Segments {
    fn target(self) -> Result<Target, ApiError> {
        let Segments {
            zone,
            workspace,
            plural,
            name,
        } = self;
        let Some(plural) = plural else {
            // `/v1/zones/{zone}` and `/v1/workspaces/{workspace}`: the Zone or Workspace itself.
            let (kind, name) = match (zone, workspace) {
                (Some(zone), None) => (Kind::Zone, zone),
                (None, Some(workspace)) => (Kind::Workspace, workspace),
                _ => return Err(ApiError::not_found("no such path; see /openapi.json")),
            };
            return Ok(Target {
                kind,
                zone: String::new(),
                workspace: None,
                name: Some(name),
            });
        };
        let kind = Kind::parse(&plural)
            .filter(|kind| *kind != Kind::Token)
            .ok_or_else(|| {
                ApiError::not_found(format!("no resource kind {plural:?} (see /openapi.json)"))
            })?;
        let scope = kind.scope();
        let wrong_scope = match scope {
            Scope::Cluster => zone.is_some() || workspace.is_some(),
            Scope::Workspaced => zone.is_some() || (workspace.is_none() && name.is_some()),
            Scope::Zoned => zone.is_none() || workspace.is_some(),
            Scope::ZonedWorkspaced => zone.is_none() || (workspace.is_none() && name.is_some()),
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
            zone: zone.unwrap_or_default(),
            workspace,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &[(&str, &str)]) -> Result<Target, ApiError> {
        let value = |key| {
            path.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        Segments {
            zone: value("zone"),
            workspace: value("workspace"),
            plural: value("plural"),
            name: value("name"),
        }
        .target()
    }

    #[test]
    fn each_scope_resolves() {
        let t = target(&[("plural", "users"), ("name", "alice")]).unwrap();
        assert_eq!((t.kind, t.name.as_deref()), (Kind::User, Some("alice")));
        let t = target(&[("zone", "z1")]).unwrap();
        assert_eq!(
            (t.kind, t.name.as_deref(), t.zone.as_str()),
            (Kind::Zone, Some("z1"), "")
        );
        let t = target(&[("zone", "z1"), ("plural", "nodes")]).unwrap();
        assert_eq!((t.kind, t.zone.as_str(), t.name), (Kind::Node, "z1", None));
        let t = target(&[
            ("zone", "z1"),
            ("workspace", "ws"),
            ("plural", "workloads"),
            ("name", "train"),
        ])
        .unwrap();
        assert_eq!(
            (t.kind, t.workspace.as_deref(), t.name.as_deref()),
            (Kind::Workload, Some("ws"), Some("train"))
        );
        let t = target(&[("zone", "z1"), ("plural", "workloads")]).unwrap();
        assert_eq!((t.kind, t.workspace), (Kind::Workload, None));
        let t = target(&[("workspace", "ws")]).unwrap();
        assert_eq!((t.kind, t.name.as_deref()), (Kind::Workspace, Some("ws")));
    }

    #[test]
    fn wrong_scope_says_where_the_kind_lives() {
        let err = target(&[("plural", "workloads"), ("name", "train")]).unwrap_err();
        assert!(
            err.message
                .contains("/v1/zones/{zone}/workspaces/{workspace}/workloads"),
            "{}",
            err.message
        );
        assert!(target(&[("zone", "z1"), ("plural", "users")]).is_err());
        assert!(target(&[("zone", "z1"), ("plural", "workloads"), ("name", "t")]).is_err());
        assert!(target(&[("plural", "pods")]).is_err());
    }
}
