//! What node agents call: `PUT .../nodes/NAME/report` registers a node and heartbeats it,
//! `PUT .../containers/NAME/report` reports a container's state,
//! `POST .../nodes/NAME/certificate` issues the node's serving certificate, and
//! `POST .../nodes/NAME/credential` exchanges a join token for a new node's credential. A node credential
//! acts only for its own node, and only for containers bound to it at the epoch it reports.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::{NodeSpec, Verb};
use dora_crds::status::{ContainerReport, ContainerState, NodeReport, Placement};
use dora_store::{
    Event, EventType, ObjectKey, Precondition, SpecWrite, StatusColumn, StoreError, now_millis,
};
use serde::Deserialize;
use serde_json::json;

use super::params::{NoParams, Params};
use super::{json_response, read_text};
use crate::path::Target;
use crate::state::AppState;
use crate::{ApiError, Identity};

/// Reports are small; a larger body is a mistake.
const MAX_REPORT_BYTES: usize = 256 << 10;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// `PUT .../nodes/NAME/report` and `PUT .../containers/NAME/report`.
pub(super) async fn report(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let text = read_text(body, MAX_REPORT_BYTES).await?;
    match target.kind {
        Kind::Node => node(&state, &identity, &target, &text).await,
        Kind::Container => container(&state, &identity, &target, &text).await,
        _ => Err(ApiError::method_not_allowed("PUT")),
    }
}

/// The spec of a node that registers itself: both workload classes, not cordoned.
fn new_node(key: &ObjectKey, owner: &str) -> Result<SpecWrite, ApiError> {
    let spec = dora_crds::encode(&NodeSpec::default()).map_err(internal)?;
    Ok(SpecWrite {
        key: key.clone(),
        precondition: Precondition::Absent,
        owner: owner.to_string(),
        labels: Default::default(),
        meta: Default::default(),
        spec_hash: dora_crds::spec_hash(Kind::Node, &spec),
        spec,
        desired: serde_json::Value::Null,
        computed: None,
        fence: None,
    })
}

/// Registers the node when it is new (cluster defaults: both workload classes, not cordoned)
/// and records its report. The heartbeat is the API server's clock, not the node's.
async fn node(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    text: &str,
) -> Result<Response, ApiError> {
    let key = target.key();
    state
        .service
        .authorize_node(identity, &key.zone, &key.name)?;
    let mut report: NodeReport = parse(text, "node report")?;
    report.heartbeat = now_millis();
    let store = &state.service.store;
    if store.get(&key).await?.is_none() {
        match store.put_spec(new_node(&key, &identity.user)?).await {
            Ok(_) => tracing::info!(node = %key.name, zone = %key.zone, "node registered"),
            Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let value = dora_crds::encode(&report).map_err(internal)?;
    store
        .put_status(&key, StatusColumn::Observed, None, value, None)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"heartbeat": crate::render::timestamp(report.heartbeat)}),
    ))
}

/// Records a container's state, for the binding it names; a report for a binding the
/// container no longer has is refused with 409, which tells the node to stop its copy.
async fn container(
    state: &AppState,
    identity: &Identity,
    target: &Target,
    text: &str,
) -> Result<Response, ApiError> {
    let key = target.key();
    let report: ContainerReport = parse(text, "container report")?;
    match &identity.node {
        Some(_) => state
            .service
            .authorize_node(identity, &key.zone, &report.node)?,
        None => state.service.authorize(
            identity,
            Verb::Report,
            Kind::Container,
            &key.zone,
            &key.workspace,
        )?,
    }
    let store = &state.service.store;
    let row = store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::object_not_found(&key).with_hint("stop this copy"))?;
    let placement: Placement = dora_crds::decode(&row.computed).unwrap_or_default();
    if !report.is_of(&placement) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "StaleBinding",
            format!(
                "{key} is bound to {} at epoch {}, not to {} at epoch {}; stop this copy",
                placement.node.as_deref().unwrap_or("no node"),
                placement.epoch,
                report.node,
                report.epoch
            ),
        ));
    }
    let before: Option<ContainerReport> = dora_crds::decode_written(&row.observed);
    let value = dora_crds::encode(&report).map_err(internal)?;
    let row = store
        .put_status(&key, StatusColumn::Observed, None, value, None)
        .await?;
    for event in state_change(&key, before.as_ref(), &report) {
        state.service.record(event).await;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"observedVersion": row.observed_version}),
    ))
}

/// The events a report tells when the container's state changed since the last one:
/// `Pulling`, `Started`, `Finished` or `Failed` with the exit code. A run that ended before
/// its start was reported is told as started, then ended.
fn state_change(
    key: &ObjectKey,
    before: Option<&ContainerReport>,
    report: &ContainerReport,
) -> Vec<Event> {
    let same_run = before.filter(|b| b.epoch == report.epoch && b.restarts == report.restarts);
    let before_state = same_run.map(|b| b.state);
    if before_state == Some(report.state) {
        return Vec::new();
    }
    let event = |kind, reason, message: String| Event::new(key, kind, reason, message, "apiserver");
    let started = || {
        event(
            EventType::Normal,
            "Started",
            format!("started on {}", report.node),
        )
    };
    let exit = || match (report.exit_code, &report.reason) {
        (Some(code), Some(reason)) => format!("exit code {code} ({reason})"),
        (Some(code), None) => format!("exit code {code}"),
        (None, Some(reason)) => reason.clone(),
        (None, None) => "no exit code".into(),
    };
    let mut events = Vec::new();
    match report.state {
        ContainerState::Pending => {}
        ContainerState::Pulling => events.push(event(
            EventType::Normal,
            "Pulling",
            format!("pulling its image on {}", report.node),
        )),
        ContainerState::Running => events.push(started()),
        ContainerState::Succeeded | ContainerState::Failed => {
            if before_state != Some(ContainerState::Running) && report.started_at.is_some() {
                events.push(started());
            }
            events.push(if report.state == ContainerState::Failed {
                event(EventType::Warning, "Failed", exit())
            } else {
                event(EventType::Normal, "Finished", exit())
            });
        }
    }
    events
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequest {
    /// Host names and addresses the node serves on.
    names: Vec<String>,
}

/// `POST .../nodes/NAME/certificate`: a serving certificate from the cluster CA for the
/// names the node serves on, and the CA of the API server's client certificate.
pub(super) async fn certificate(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    if target.kind != Kind::Node {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let key = target.key();
    state
        .service
        .authorize_node(&identity, &key.zone, &key.name)?;
    let request: CertificateRequest = parse(
        &read_text(body, MAX_REPORT_BYTES).await?,
        "certificate request",
    )?;
    if request.names.is_empty() || request.names.len() > 16 {
        return Err(ApiError::invalid(
            "names",
            "give the 1 to 16 host names or addresses the node serves on",
        ));
    }
    if let Some(bad) = request.names.iter().find(|name| {
        name.is_empty()
            || name.len() > 253
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    }) {
        return Err(ApiError::invalid(
            "names",
            format!("{bad:?} is not a host name or IP address"),
        ));
    }
    let pki = state.options.pki.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NoAuthority",
            "this API server was started without the cluster CA, so it cannot issue node certificates",
        )
    })?;
    let issued = pki
        .issue_node(&key.name, &request.names)
        .map_err(internal)?;
    tracing::info!(node = %key.name, zone = %key.zone, names = ?request.names, "node certificate issued");
    Ok(json_response(StatusCode::CREATED, &issued))
}

/// How long a node credential obtained with a join token lasts.
const JOINED_LIFETIME: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// `POST .../nodes/NAME/credential`: a join token of the zone (or anyone who may mint node
/// credentials there) claims the name of a new node and gets its credential. The Node row is
/// created at once, so a name is claimed only once.
pub(super) async fn credential(
    identity: Identity,
    State(state): State<AppState>,
    target: Target,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    if target.kind != Kind::Node {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let key = target.key();
    dora_crds::validate_name("node", &key.name)?;
    if identity.joining {
        if identity.zone.as_deref() != Some(key.zone.as_str()) {
            return Ok(crate::guard::refuse_credentials(ApiError::forbidden(
                format!(
                    "this join token is for zone {}, not {}",
                    identity.zone.as_deref().unwrap_or_default(),
                    key.zone
                ),
            )));
        }
    } else {
        state
            .service
            .authorize(&identity, Verb::Token, Kind::Node, &key.zone, "")?;
    }
    match state
        .service
        .store
        .put_spec(new_node(&key, &identity.user)?)
        .await
    {
        Ok(_) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!(
                    "node {} is registered already; its agent keeps its credential in its state folder, or delete the Node to join it anew",
                    key.name
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let lifetime = state.options.max_token_lifetime.min(JOINED_LIFETIME);
    let issued = super::tokens::node_credential(&state, &key.zone, &key.name, lifetime).await?;
    tracing::info!(node = %key.name, zone = %key.zone, "node joined");
    Ok(json_response(StatusCode::CREATED, &issued))
}

#[cfg(test)]
mod tests {
    use dora_crds::Kind;

    use super::*;

    fn report(state: ContainerState, restarts: u32) -> ContainerReport {
        ContainerReport {
            node: "n1".into(),
            epoch: 1,
            state,
            restarts,
            exit_code: state.is_final().then_some(3),
            started_at: Some(1),
            ..ContainerReport::default()
        }
    }

    fn reasons(before: Option<&ContainerReport>, now: &ContainerReport) -> Vec<String> {
        let key = ObjectKey::new(Kind::Container, "z", "ws", "c.0");
        state_change(&key, before, now)
            .into_iter()
            .map(|e| format!("{}: {}", e.reason, e.message))
            .collect()
    }

    #[test]
    fn reports_tell_each_change_of_a_run_once() {
        let running = report(ContainerState::Running, 0);
        let failed = report(ContainerState::Failed, 0);
        assert_eq!(reasons(None, &running), ["Started: started on n1"]);
        assert_eq!(reasons(Some(&running), &running), Vec::<String>::new());
        assert_eq!(reasons(Some(&running), &failed), ["Failed: exit code 3"]);
        assert_eq!(reasons(Some(&failed), &failed), Vec::<String>::new());
        // Ended before its start was told: both.
        assert_eq!(
            reasons(None, &failed),
            ["Started: started on n1", "Failed: exit code 3"]
        );
        // The next run of the same binding is a new story.
        let again = report(ContainerState::Running, 1);
        assert_eq!(reasons(Some(&failed), &again), ["Started: started on n1"]);
    }
}
