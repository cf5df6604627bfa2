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

    /// A path segment: a kind's plural or name, or arbitrary text.
    fn segment() -> impl proptest::strategy::Strategy<Value = Option<String>> {
        use proptest::prelude::*;
        let words: Vec<String> = Kind::known()
            .into_iter()
            .flat_map(|kind| {
                let mut words = vec![kind.plural().to_string(), kind.name().to_string()];
                words.extend(kind.aliases().iter().map(|alias| alias.to_string()));
                words
            })
            .collect();
        proptest::option::of(prop_oneof![
            proptest::sample::select(words),
            "[a-z0-9.-]{0,12}",
            "\\PC{0,40}",
        ])
    }

    proptest::proptest! {
        /// Whatever the segments (axum has percent-decoded them), a path resolves to a target
        /// its kind's scope allows, or to a 404 that says why.
        #[test]
        fn any_segments_resolve_or_are_refused(
            zone in segment(),
            workspace in segment(),
            plural in segment(),
            name in segment(),
        ) {
            let segments = Segments { zone, workspace, plural, name };
            let given = (segments.zone.clone(), segments.workspace.clone(), segments.plural.clone());
            match segments.target() {
                Ok(target) => {
                    let scope = target.kind.scope();
                    if given.2.is_some() {
                        proptest::prop_assert_eq!(Kind::parse(given.2.as_deref().unwrap()), Some(target.kind));
                        proptest::prop_assert_eq!(scope.has_zone(), given.0.is_some());
                        proptest::prop_assert!(scope.has_workspace() || given.1.is_none());
                    }
                    let _ = target.key();
                }
                Err(e) => proptest::prop_assert_eq!(e.status, axum::http::StatusCode::NOT_FOUND),
            }
        }
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
