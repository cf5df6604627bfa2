//! `PUT` and `PATCH .../{name}/status`: the status of an object of a defined kind, written by
//! the kind's controller (the `computed` column). `PUT` replaces it, `PATCH` merges a JSON
//! merge patch (RFC 7386) into it, so that a controller and its runtime (which adds
//! `observedGeneration` and `conditions`) each write their own fields. Writing needs the
//! `Report` verb on the kind. Built-in kinds' status belongs to Dora's own components.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::spec::Verb;
use dora_store::{StatusColumn, StoreError};
use serde_json::Value;

use super::params::{NoParams, Params};
use super::{json_response, read_text};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity, render};

/// How many times a merge is tried again when another write came in between.
const MERGE_ATTEMPTS: usize = 5;

/// `PUT .../{name}/status`: replaces the status.
pub(super) async fn replace(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    write(state, identity, target, body, false).await
}

/// `PATCH .../{name}/status`: merges a JSON merge patch into the status.
pub(super) async fn merge(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    write(state, identity, target, body, true).await
}

/// Writes the status of the object `target` names: the whole of it, or merged when `merge`.
async fn write(
    state: AppState,
    identity: Identity,
    target: Target,
    body: Body,
    merge: bool,
) -> Result<Response, ApiError> {
    let kind = target.kind;
    let has_status = dora_crds::registry::definition(kind).map(|definition| definition.status);
    match has_status {
        None => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("the status of {kind} objects is written by Dora itself"),
            ));
        }
        Some(false) => {
            return Err(ApiError::invalid(
                "status",
                format!("{kind} has no status: its Definition says `status: false`"),
            ));
        }
        Some(true) => {}
    }
    let workspace = target.workspace.as_deref().unwrap_or_default();
    state
        .service
        .authorize(&identity, Verb::Report, kind, &target.zone, workspace)?;
    let text = read_text(body, state.options.max_body_bytes).await?;
    let status: Value = dora_crds::from_yaml(&text)
        .map_err(|e| ApiError::invalid("status", format!("not a JSON or YAML mapping: {e}")))?;
    if !status.is_object() {
        return Err(ApiError::invalid(
            "status",
            "the status must be a mapping of fields",
        ));
    }
    let key = target.key();
    let store = &state.service.store;
    for _ in 0..MERGE_ATTEMPTS {
        let row = store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::object_not_found(&key))?;
        let (expected, value) = if merge {
            let mut merged = Value::clone(&row.computed);
            merge_patch(&mut merged, &status);
            (Some(row.computed_version), merged)
        } else {
            (None, status.clone())
        };
        match store
            .put_status(&key, StatusColumn::Computed, expected, value, None)
            .await
        {
            Ok(row) => {
                return Ok(json_response(StatusCode::OK, &render::resource(&row)));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the status changed under every attempt to merge into it; try again",
    ))
}

/// Applies a JSON merge patch (RFC 7386): a mapping merges field by field, `null` removes a
/// field, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(existing) = target {
        for (name, value) in fields {
            if value.is_null() {
                existing.remove(name);
            } else {
                merge_patch(existing.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_merges_mappings_removes_nulls_and_replaces_the_rest() {
        let mut status = json!({"running": 2, "points": {"a": 1, "b": 2}, "list": [1, 2]});
        merge_patch(
            &mut status,
            &json!({"running": null, "points": {"b": 3, "c": 4}, "list": [9], "new": "x"}),
        );
        assert_eq!(
            status,
            json!({"points": {"a": 1, "b": 3, "c": 4}, "list": [9], "new": "x"})
        );
        let mut empty = Value::Null;
        merge_patch(&mut empty, &json!({"a": {"b": null, "c": 1}}));
        assert_eq!(empty, json!({"a": {"c": 1}}));
    }
}
