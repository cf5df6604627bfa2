//! HTTP routes.

mod actions;
mod agents;
mod apply;
mod events;
mod kinds;
mod params;
mod proxy;
mod queue;
mod resources;
mod status;
mod system;
mod tokens;
mod views;
mod volumes;
mod watch;

use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::ApiError;
use crate::state::AppState;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/v1/apply", post(apply::apply))
        .route("/v1/events", get(events::events).post(events::post))
        .route("/v1/kinds", get(kinds::kinds))
        .route("/v1/tokens", post(tokens::create))
        .route("/v1/whoami", get(tokens::whoami))
        .route("/v1/zones/{zone}/queue", get(queue::queue))
        .route(
            "/v1/{*path}",
            get(resources::get)
                .put(resources::put)
                .patch(resources::patch)
                .post(actions::post)
                .delete(resources::delete),
        )
        .fallback(|| async { ApiError::not_found("no such path; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed on this path; see /openapi.json",
            )
        })
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("dora_api_requests_total", "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("dora_api_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Reads a request body up to the configured limit, as UTF-8 text.
pub(crate) async fn read_text(body: Body, limit: usize) -> Result<String, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!("the request body is larger than {limit} bytes; split the manifest into smaller files"),
        )
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text"))
}

/// Parses `limit=` with a default and a ceiling.
pub(crate) fn parse_limit(
    value: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {max}, got {text:?}"
            ))),
        },
    }
}

/// Parses a boolean query flag (`watch=true`, `watch=1`, `watch`).
pub(crate) fn flag(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "expected true or false, got {other:?}"
        ))),
    }
}

/// A path that does not decode (bad percent-encoding, not UTF-8) as a JSON error.
pub(crate) fn path_rejection(e: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", e.body_text()))
}

pub(crate) fn json_response<T: serde::Serialize>(
    status: axum::http::StatusCode,
    value: &T,
) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    crate::error::add_status_headers(&mut response);
    response
}
