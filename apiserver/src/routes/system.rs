use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dora_crds::Kind;
use dora_crds::spec::Verb;
use serde_json::json;

use super::params::{NoParams, Params};
use crate::state::AppState;
use crate::{ApiError, Identity};

pub(super) async fn healthz(_: Params<NoParams>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(
    State(state): State<AppState>,
    _: Params<NoParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.service.store.head().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotReady",
            format!("the store is not reachable: {e}"),
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /metrics`: what the API server measured, for a caller that may describe every zone
/// (an `admin`, or a monitoring user bound to a role with `Zone: [Describe]` in zone and
/// workspace `All`). `dora up --metrics-listen` serves the same without a token on a
/// listener of the operator's choice.
pub(super) async fn metrics(
    identity: Identity,
    State(state): State<AppState>,
    _: Params<NoParams>,
) -> Result<Response, ApiError> {
    state
        .service
        .authorize(&identity, Verb::Describe, Kind::Zone, "", "")?;
    Ok(exposition(&state))
}

/// The metrics in Prometheus' text format.
pub(crate) fn exposition(state: &AppState) -> Response {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub(super) async fn openapi(_: Params<NoParams>) -> Json<serde_json::Value> {
    Json(serde_json::Value::clone(&crate::openapi::document()))
}
