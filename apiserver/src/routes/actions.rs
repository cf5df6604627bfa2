//! `POST /v1/.../{name}/{action}`: imperative requests to the scheduler (pause and resume a
//! workload, drain and uncordon a node), kept in the `actions` table until they expire; and
//! the POSTs of node agents (certificate) and of container commands (exec).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::Verb;
use dora_store::{ActionRecord, Event, EventType, ObjectKey, now_millis};
use serde_json::json;

use super::params::{NoParams, Params};
use super::{agents, json_response, path_rejection, proxy};
use crate::path::{self, Part};
use crate::state::AppState;
use crate::{ApiError, render};

/// How long an action waits for its component.
const ACTION_TTL_MS: i64 = 24 * 3_600_000;

const ACTIONS: [&str; 4] = ["pause", "resume", "drain", "uncordon"];

/// The verb an action needs, for the kinds that have actions.
fn verb_of(kind: Kind, action: &str) -> Option<Verb> {
    match (kind, action) {
        (Kind::Workload, "pause") => Some(Verb::Pause),
        (Kind::Workload, "resume") => Some(Verb::Resume),
        (Kind::Node, "drain" | "uncordon") => Some(Verb::Apply),
        _ => None,
    }
}

pub(super) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    params: Result<Params<NoParams>, ApiError>,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    let Path(path) = path.map_err(path_rejection)?;
    params?;
    if let Ok(target) = path::parse(&path) {
        match target.part {
            Part::Certificate => return agents::certificate(state, identity, target, body).await,
            Part::Credential => return agents::credential(state, identity, target).await,
            Part::Exec => return proxy::exec(state, identity, target, body).await,
            _ => {}
        }
    }
    let not_found = || {
        ApiError::not_found(
            "no such action; POST .../workloads/NAME/pause|resume or .../nodes/NAME/drain|uncordon",
        )
    };
    let (resource, action) = match path.trim_end_matches('/').rsplit_once('/') {
        Some((resource, action)) if ACTIONS.contains(&action) => (resource, action),
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "POST here is only for actions (.../NAME/pause|resume|drain|uncordon); apply with PUT or POST /v1/apply",
            ));
        }
    };
    let target = path::parse(resource)?;
    let (Some(name), Part::Object) = (&target.name, target.part) else {
        return Err(not_found());
    };
    let verb = verb_of(target.kind, action).ok_or_else(not_found)?;
    let key = ObjectKey::new(
        target.kind,
        &target.zone,
        target.workspace.as_deref().unwrap_or_default(),
        name,
    );
    let service = &state.service;
    service.authorize(&identity, verb, target.kind, &key.zone, &key.workspace)?;
    let Some(row) = service.store.get(&key).await? else {
        return Err(ApiError::not_found(format!("{key} not found")));
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
