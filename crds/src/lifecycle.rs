//! What controllers keep in `metadata`: annotations, owner references and finalizers, and the
//! checks on them. Errors name the field (`metadata.ownerReferences[0].uid`).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{API_VERSION, Kind, Metadata, Scope, ValidationError, validate_name};

/// Largest total size of an object's annotations (keys and values), as in Kubernetes.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

const OWNER_FIELDS: [&str; 6] = [
    "apiVersion",
    "kind",
    "name",
    "uid",
    "controller",
    "blockOwnerDeletion",
];

/// An object another one belongs to, shaped as in Kubernetes: the dependent is deleted in the
/// background once none of its owners exists (matched by uid).
///
/// The owner is found where the dependent is, as far as the owner's kind has a zone and a
/// workspace: a Workload may be owned by a cluster-wide object, or by an object of its own zone
/// and workspace, never by one of another zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// The owner's `metadata.uid`: an owner deleted and made again under its name is another
    /// object.
    #[serde(default)]
    pub uid: String,
    /// Whether this owner is the controller that manages the object; at most one is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
    /// Kept for Kubernetes manifests; Dora deletes dependents in the background, after their
    /// owner, so nothing waits on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block_owner_deletion: bool,
}

fn api_version() -> String {
    API_VERSION.to_string()
}

impl OwnerReference {
    /// The kind of the owner, if it is known now.
    pub fn owner_kind(&self) -> Option<Kind> {
        Kind::parse(&self.kind)
    }
}

/// Checks the raw `metadata.ownerReferences` before it is decoded, so that a malformed entry
/// is reported with its index and field rather than as the whole of `metadata`.
pub(crate) fn check_raw_owners(metadata: &Value) -> Result<(), ValidationError> {
    let Some(owners) = metadata.get("ownerReferences") else {
        return Ok(());
    };
    let Value::Array(owners) = owners else {
        return Err(ValidationError::new(
            "metadata.ownerReferences",
            format!("expected a list of {{kind, name, uid}}, got {owners}"),
        ));
    };
    for (i, owner) in owners.iter().enumerate() {
        let field = format!("metadata.ownerReferences[{i}]");
        let Value::Object(fields) = owner else {
            return Err(ValidationError::new(
                field,
                format!("expected a mapping with kind, name and uid, got {owner}"),
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !OWNER_FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                format!("{field}.{unknown}"),
                format!("unknown field; expected one of {}", OWNER_FIELDS.join(", ")),
            ));
        }
        for (name, value) in fields {
            let ok = match name.as_str() {
                "controller" | "blockOwnerDeletion" => value.is_boolean(),
                _ => value.is_string(),
            };
            if !ok {
                return Err(ValidationError::new(
                    format!("{field}.{name}"),
                    format!("unexpected value {value}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks annotations, owner references and finalizers of an object of `kind`, and writes
/// owner kinds by their canonical name. `deletionTimestamp` is the server's: it is dropped.
pub(crate) fn check(kind: Kind, metadata: &mut Metadata) -> Result<(), ValidationError> {
    metadata.deletion_timestamp = None;
    if let Some(annotations) = &metadata.annotations {
        check_annotations(annotations)?;
    }
    if let Some(owners) = &mut metadata.owner_references {
        check_owners(kind.scope(), owners)?;
    }
    if let Some(finalizers) = &metadata.finalizers {
        check_finalizers(finalizers)?;
    }
    Ok(())
}

fn check_annotations(annotations: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let mut size = 0;
    for (key, value) in annotations {
        let key_ok = !key.is_empty()
            && key.len() <= 253
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        if !key_ok {
            return Err(ValidationError::new(
                format!("metadata.annotations.{key}"),
                "invalid annotation key; use at most 253 letters, digits, '.', '_', '-' or '/'",
            ));
        }
        size += key.len() + value.len();
    }
    if size > MAX_ANNOTATIONS_BYTES {
        return Err(ValidationError::new(
            "metadata.annotations",
            format!(
                "annotations take {size} bytes; at most {MAX_ANNOTATIONS_BYTES} are allowed: keep large data in the spec"
            ),
        ));
    }
    Ok(())
}

fn check_owners(scope: Scope, owners: &mut [OwnerReference]) -> Result<(), ValidationError> {
    let mut uids = HashSet::new();
    let mut controller = None;
    for (i, owner) in owners.iter_mut().enumerate() {
        let field = |name: &str| format!("metadata.ownerReferences[{i}].{name}");
        if owner.api_version != API_VERSION {
            return Err(ValidationError::new(
                field("apiVersion"),
                format!("expected \"{API_VERSION}\", got {:?}", owner.api_version),
            ));
        }
        if owner.kind.is_empty() {
            return Err(ValidationError::new(
                field("kind"),
                "required field is missing; give the owner's kind",
            ));
        }
        let kind = owner.owner_kind().ok_or_else(|| {
            ValidationError::new(
                field("kind"),
                format!(
                    "unknown kind {:?}; an owner is of a kind Dora knows",
                    owner.kind
                ),
            )
        })?;
        if kind.is_view() {
            return Err(ValidationError::new(
                field("kind"),
                format!("{kind} is a view of node hardware and cannot own objects"),
            ));
        }
        let owner_scope = kind.scope();
        if (owner_scope.has_zone() && !scope.has_zone())
            || (owner_scope.has_workspace() && !scope.has_workspace())
        {
            return Err(ValidationError::new(
                field("kind"),
                format!(
                    "a {kind} ({} scope) cannot own an object of {} scope: the owner must be found in the object's own zone and workspace",
                    owner_scope.as_str(),
                    scope.as_str()
                ),
            ));
        }
        owner.kind = kind.name().to_string();
        if owner.name.is_empty() {
            return Err(ValidationError::new(
                field("name"),
                "required field is missing; give the owner's name",
            ));
        }
        validate_name(&field("name"), &owner.name)?;
        let uid_ok = !owner.uid.is_empty()
            && owner.uid.len() <= 64
            && owner
                .uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !uid_ok {
            return Err(ValidationError::new(
                field("uid"),
                "required: the owner's metadata.uid (as `dora get KIND NAME -o yaml` shows it)",
            ));
        }
        if !uids.insert(owner.uid.clone()) {
            return Err(ValidationError::new(
                field("uid"),
                "this owner is listed twice; list each owner once",
            ));
        }
        if owner.controller {
            if let Some(first) = controller {
                return Err(ValidationError::new(
                    field("controller"),
                    format!(
                        "ownerReferences[{first}] is the controller already; at most one owner is"
                    ),
                ));
            }
            controller = Some(i);
        }
    }
    Ok(())
}

fn check_finalizers(finalizers: &[String]) -> Result<(), ValidationError> {
    let mut seen = HashSet::new();
    for (i, finalizer) in finalizers.iter().enumerate() {
        let ok = !finalizer.is_empty()
            && finalizer.len() <= 253
            && finalizer
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
        if !ok {
            return Err(ValidationError::new(
                format!("metadata.finalizers[{i}]"),
                format!(
                    "invalid finalizer {finalizer:?}; use at most 253 lowercase letters, digits, '.', '_', '-' or '/', such as example.com/cleanup"
                ),
            ));
        }
        if !seen.insert(finalizer) {
            return Err(ValidationError::new(
                format!("metadata.finalizers[{i}]"),
                format!("{finalizer:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::parse_resource;

    fn metadata_error(metadata: serde_json::Value) -> (String, String) {
        let err = parse_resource(json!({
            "apiVersion": "v1",
            "kind": "Workload",
            "metadata": metadata,
            "spec": {"replica": {"count": 1}, "image": {"image": "busybox"}, "config": {"cmd": ["true"]}},
        }))
        .unwrap_err();
        (err.field, err.message)
    }

    const UID: &str = "3f2b7e58-7c4e-4d8e-9a55-0e6d3c1f2a10";

    #[test]
    fn annotations_owners_and_finalizers_are_kept_and_owner_kinds_made_canonical() {
        let document = parse_resource(json!({
            "apiVersion": "v1",
            "kind": "Workload",
            "metadata": {
                "name": "child", "zone": "z", "workspace": "w",
                "annotations": {"example.com/note": "hello"},
                "ownerReferences": [{"kind": "wk", "name": "parent", "uid": UID, "controller": true}],
                "finalizers": ["example.com/cleanup"],
                "deletionTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"replica": {"count": 1}, "image": {"image": "busybox"}, "config": {"cmd": ["true"]}},
        }))
        .unwrap();
        let metadata = document.metadata;
        assert_eq!(
            metadata.annotations.unwrap()["example.com/note"],
            "hello".to_string()
        );
        let owners = metadata.owner_references.unwrap();
        assert_eq!(owners[0].kind, "Workload");
        assert_eq!(owners[0].api_version, "v1");
        assert!(owners[0].controller);
        assert_eq!(metadata.finalizers.unwrap(), vec!["example.com/cleanup"]);
        assert_eq!(metadata.deletion_timestamp, None, "read-only");
    }

    #[test]
    fn bad_owner_references_name_their_field() {
        let cases = [
            (
                json!([{"kind": "Workload", "name": "p"}]),
                "metadata.ownerReferences[0].uid",
            ),
            (
                json!([{"kind": "Workload", "name": "p", "uid": UID}, {"kind": "Pod", "name": "q", "uid": "x"}]),
                "metadata.ownerReferences[1].kind",
            ),
            (
                json!([{"kind": "Workload", "name": "P", "uid": UID}]),
                "metadata.ownerReferences[0].name",
            ),
            (
                json!([{"kind": "Workload", "name": "p", "uid": UID, "colour": 1}]),
                "metadata.ownerReferences[0].colour",
            ),
            (
                json!([{"kind": "Workload", "name": "p", "uid": 7}]),
                "metadata.ownerReferences[0].uid",
            ),
            (
                json!([{"apiVersion": "apps/v1", "kind": "Workload", "name": "p", "uid": UID}]),
                "metadata.ownerReferences[0].apiVersion",
            ),
            (
                json!([{"kind": "Zone", "name": "p", "uid": UID, "controller": true}, {"kind": "Workload", "name": "q", "uid": "u2", "controller": true}]),
                "metadata.ownerReferences[1].controller",
            ),
            (
                json!([{"kind": "Zone", "name": "p", "uid": UID}, {"kind": "Zone", "name": "q", "uid": UID}]),
                "metadata.ownerReferences[1].uid",
            ),
            (json!({"kind": "Zone"}), "metadata.ownerReferences"),
        ];
        for (owners, field) in cases {
            let (got, message) = metadata_error(json!({"name": "a", "ownerReferences": owners}));
            assert_eq!(got, field, "{message}");
        }
    }

    #[test]
    fn an_owner_must_be_found_in_the_dependents_partition() {
        let err = parse_resource(json!({
            "apiVersion": "v1", "kind": "Zone",
            "metadata": {"name": "z", "ownerReferences": [{"kind": "Workload", "name": "p", "uid": UID}]},
        }))
        .unwrap_err();
        assert_eq!(err.field, "metadata.ownerReferences[0].kind");
        assert!(err.message.contains("cannot own"), "{err}");
    }

    #[test]
    fn bad_finalizers_and_annotations_name_their_field() {
        let (field, _) = metadata_error(json!({"name": "a", "finalizers": ["ok/one", "Bad Name"]}));
        assert_eq!(field, "metadata.finalizers[1]");
        let (field, _) = metadata_error(json!({"name": "a", "finalizers": ["x/y", "x/y"]}));
        assert_eq!(field, "metadata.finalizers[1]");
        let (field, _) = metadata_error(json!({"name": "a", "annotations": {"bad key": "v"}}));
        assert_eq!(field, "metadata.annotations.bad key");
        let big = "x".repeat(super::MAX_ANNOTATIONS_BYTES);
        let (field, _) = metadata_error(json!({"name": "a", "annotations": {"k": big}}));
        assert_eq!(field, "metadata.annotations");
    }
}
