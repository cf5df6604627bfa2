//! `POST .../{name}/pause|resume|drain|uncordon`: imperative requests to the scheduler
//! (pause and resume a workload, drain and uncordon a node), kept in the `actions` table until
//! they expire.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::Verb;
use dora_store::{ActionRecord, Event, EventType, now_millis};
use serde_json::json;

use super::json_response;
use super::params::{NoParams, Params};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity, render};

/// How long an action waits for its component.
const ACTION_TTL_MS: i64 = 24 * 3_600_000;

/// The verb an action needs, for the kinds that have actions.
fn verb_of(kind: Kind, action: &str) -> Option<Verb> {
    match (kind, action) {
        (Kind::Workload, "pause") => Some(Verb::Pause),
        (Kind::Workload, "resume") => Some(Verb::Resume),
        (Kind::Node, "drain" | "uncordon") => Some(Verb::Apply),
        _ => None,
    }
}

/// `POST .../workloads/{name}/pause`.
pub(super) async fn pause(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    request(state, identity, target, "pause").await
}

/// `POST .../workloads/{name}/resume`.
pub(super) async fn resume(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    request(state, identity, target, "resume").await
}

/// `POST .../nodes/{name}/drain`.
pub(super) async fn drain(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    request(state, identity, target, "drain").await
}

/// `POST .../nodes/{name}/uncordon`.
pub(super) async fn uncordon(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    request(state, identity, target, "uncordon").await
}

/// Records `action` on the target for the scheduler.
async fn request(
    state: AppState,
    identity: Identity,
    target: Target,
    action: &'static str,
) -> Result<Response, ApiError> {
    let verb = verb_of(target.kind, action).ok_or_else(|| {
        ApiError::not_found(
            "no such action; POST .../workloads/NAME/pause|resume or .../nodes/NAME/drain|uncordon",
        )
    })?;
    let key = target.key();
    let service = &state.service;
    service.authorize(&identity, verb, target.kind, &key.zone, &key.workspace)?;
    let Some(row) = service.store.get(&key).await? else {
        return Err(ApiError::object_not_found(&key));
    };
    if action == "resume"
        && let Some(account) = service.out_of_credit(&row.owner, &key.zone).await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "OutOfCredit",
            format!(
                "{}: {key} stays paused until then; ask an administrator to raise spec.credits of the user",
                crate::service::out_of_credit_message(&row.owner, &key.zone, &account)
            ),
        ));
    }
    let now = now_millis();
    let record = ActionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        key: key.clone(),
        destination: "scheduler".into(),
        action: action.to_string(),
        payload: json!({ "by": identity.user }),
        created: now,
        expires: now + ACTION_TTL_MS,
    };
    service.store.put_action(record.clone()).await?;
    let event = Event::new(
        &key,
        EventType::Normal,
        "ActionRequested",
        format!("{action} requested by {}", identity.user),
        "apiserver",
    );
    if let Err(e) = service.store.append_event(event).await {
        tracing::warn!(error = %e, "could not record an event");
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({
            "action": action,
            "id": record.id,
            "kind": key.kind,
            "name": key.name,
            "expires": render::timestamp(record.expires),
        }),
    ))
}
