//! Who may read what: the checks shared by lists, watches, the queue and the views.

use dora_crds::Kind;
use dora_crds::spec::{Reach, Verb, reach_needed};
use dora_store::ObjectKey;
use serde_json::Value;

use crate::path::Target;
use crate::service::refused;
use crate::state::AppState;
use crate::{ApiError, Identity};

/// Checks that the target's zone exists, so that a typo is a 404 rather than an empty list.
pub(super) fn check_zone(state: &AppState, target: &Target) -> Result<(), ApiError> {
    if target.kind.scope().has_zone() && !state.service.directory.has_zone(&target.zone) {
        return Err(ApiError::object_not_found(&ObjectKey::new(
            Kind::Zone,
            "",
            "",
            &target.zone,
        )));
    }
    Ok(())
}

/// Authorizes a read of the target: a collection across workspaces needs the verb in at least
/// one workspace (the items are then filtered), anything else needs it where it points.
pub(super) fn authorize_read(
    state: &AppState,
    identity: &Identity,
    verb: Verb,
    target: &Target,
) -> Result<(), ApiError> {
    let all_workspaces = target.kind.scope().has_workspace() && target.workspace.is_none();
    if all_workspaces && !identity.system {
        if state
            .service
            .directory
            .allows_somewhere(&identity.user, verb, target.kind, &target.zone)
        {
            return Ok(());
        }
        let (zone, _) = reach_needed(target.kind, verb, &target.zone, "");
        let mut place = vec!["any workspace".to_string()];
        if !target.zone.is_empty() {
            place.insert(0, format!("zone {}", target.zone));
        }
        return Err(refused(
            &identity.user,
            verb,
            target.kind,
            &place.join(", "),
            (zone, Reach::Any),
        ));
    }
    let workspace = target.workspace.as_deref().unwrap_or_default();
    state
        .service
        .authorize(identity, verb, target.kind, &target.zone, workspace)
}

/// Whether a container row is on `node`: bound to it, or bound nowhere while it waits to
/// restart after its last run there, whose output the node keeps.
pub(super) fn on_node(row: &dora_store::Row, node: &str) -> bool {
    match row.computed.get("node").and_then(Value::as_str) {
        Some(bound) => bound == node,
        None => row.observed.get("node").and_then(Value::as_str) == Some(node),
    }
}

/// Whether a row of a cross-workspace read may be shown: a node credential has been limited
/// to its own containers before it gets here.
pub(super) fn visible(state: &AppState, identity: &Identity, verb: Verb, key: &ObjectKey) -> bool {
    // Checked first: every node's watch asks this of every change in its zone.
    if identity.system || identity.node.is_some() {
        return true;
    }
    let Some(kind) = Kind::parse(&key.kind) else {
        return false;
    };
    state
        .service
        .directory
        .allows(&identity.user, verb, kind, &key.zone, &key.workspace)
        && (kind != Kind::Usercredit || own_account(state, identity, key))
}

/// Whether a Usercredit row is the caller's own, or the caller may read every account of
/// its zone: a user's credit use is theirs to see unless their role allows more.
pub(super) fn own_account(state: &AppState, identity: &Identity, key: &ObjectKey) -> bool {
    key.name == identity.user
        || state.service.directory.allows_zone_wide(
            &identity.user,
            Verb::Get,
            Kind::Usercredit,
            &key.zone,
        )
}
