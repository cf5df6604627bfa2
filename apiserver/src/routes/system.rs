use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::params::{NoParams, Params};
use crate::ApiError;
use crate::state::AppState;

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

pub(super) async fn metrics(State(state): State<AppState>, _: Params<NoParams>) -> Response {
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
