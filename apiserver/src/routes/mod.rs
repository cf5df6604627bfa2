//! HTTP routes: a route per scope and sub-resource of every kind (see [`crate::path`]).

mod access;
mod actions;
mod agents;
mod apply;
pub(crate) mod bans;
mod console;
mod events;
mod kinds;
mod params;
pub(crate) mod proxy;
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
use axum::extract::{FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};

use crate::state::AppState;
use crate::{ApiError, Identity};

/// The query parameters each handler reads, as the OpenAPI document states them: one source
/// for both.
pub(crate) mod queries {
    pub(crate) use super::apply::ApplyParams as Apply;
    pub(crate) use super::events::EventParams as Events;
    pub(crate) use super::params::NoParams as Nothing;
    pub(crate) use super::proxy::{LogParams as Logs, TerminalParams as Terminal};
    pub(crate) use super::resources::{
        DeleteParams as Delete, ListParams as List, ObjectParams as Object,
        RollbackParams as Rollback,
    };
    pub(crate) use super::tokens::ListParams as Tokens;
    pub(crate) use super::volumes::{
        DownloadParams as Download, RemoveParams as Remove, UploadParams as Upload,
    };
}

/// The largest page a list returns.
pub(crate) const MAX_PAGE: usize = 5000;

/// Where each scope's resources begin: cluster, workspaced, zoned, zoned+workspaced.
const SCOPES: [&str; 4] = [
    "/v1",
    "/v1/workspaces/{workspace}",
    "/v1/zones/{zone}",
    "/v1/zones/{zone}/workspaces/{workspace}",
];

/// The routes, behind the IP filter and the address rate limit: those run before routing, so
/// that a refused request costs a table lookup.
pub(crate) fn router(state: AppState) -> Router {
    let guard = middleware::from_fn_with_state(state.guard.clone(), crate::guard::filter);
    Router::new().fallback_service(routes(state)).layer(guard)
}

fn routes(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/v1/apply", post(apply::apply))
        .route("/v1/bans", get(bans::list))
        .route("/v1/bans/{address}", delete(bans::lift))
        .route("/v1/console/login", post(console::login))
        .route("/v1/console/logout", post(console::logout))
        .route("/v1/console/session", get(console::session))
        .route("/v1/console/codes", post(console::code))
        .route("/v1/events", get(events::events).post(events::post))
        .route("/v1/kinds", get(kinds::kinds))
        .route("/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/v1/tokens/{id}", get(tokens::one).delete(tokens::revoke))
        .route("/v1/whoami", get(tokens::whoami))
        .route("/v1/zones/{zone}/queue", get(queue::queue))
        // The zoned and workspaced prefixes are also the Zone's and the Workspace's own paths.
        .route("/v1/zones/{zone}", object())
        .route("/v1/zones/{zone}/versions", get(resources::versions))
        .route("/v1/zones/{zone}/rollback", post(resources::rollback))
        .route("/v1/workspaces/{workspace}", object())
        .route(
            "/v1/workspaces/{workspace}/versions",
            get(resources::versions),
        )
        .route(
            "/v1/workspaces/{workspace}/rollback",
            post(resources::rollback),
        );
    for scope in SCOPES {
        let one = format!("{scope}/{{plural}}/{{name}}");
        let files = get(volumes::download)
            .put(volumes::upload)
            .delete(volumes::remove);
        router = router
            .route(&format!("{scope}/{{plural}}"), get(resources::list))
            .route(&one, object())
            .route(&format!("{one}/versions"), get(resources::versions))
            .route(&format!("{one}/rollback"), post(resources::rollback))
            .route(
                &format!("{one}/status"),
                put(status::replace).patch(status::merge),
            )
            .route(&format!("{one}/report"), put(agents::report))
            .route(&format!("{one}/certificate"), post(agents::certificate))
            .route(&format!("{one}/credential"), post(agents::credential))
            .route(&format!("{one}/logs"), get(proxy::logs))
            .route(&format!("{one}/top"), get(proxy::top))
            .route(
                &format!("{one}/exec"),
                get(proxy::terminal).post(proxy::exec),
            )
            .route(&format!("{one}/mounts"), get(volumes::mounts))
            .route(&format!("{one}/files"), files.clone())
            .route(&format!("{one}/files/"), files.clone())
            .route(&format!("{one}/files/{{*path}}"), files)
            .route(&format!("{one}/pause"), post(actions::pause))
            .route(&format!("{one}/resume"), post(actions::resume))
            .route(&format!("{one}/drain"), post(actions::drain))
            .route(&format!("{one}/uncordon"), post(actions::uncordon));
    }
    router
        .merge(dora_console::router())
        .fallback(|| async { ApiError::not_found("no such path; see /openapi.json") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::method_not_allowed(method.as_str())
        })
        .layer(middleware::from_fn(record_metrics))
        .with_state(state)
}

/// `GET /metrics` alone and without a token, for a listener the operator chose.
pub(crate) fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { system::exposition(&state) }),
        )
        .with_state(state)
}

/// One object: get (or watch) it, apply it, delete it.
fn object() -> MethodRouter<AppState> {
    get(resources::get)
        .put(resources::put)
        .delete(resources::delete)
}

/// The caller, from the request's bearer token or console session: the first argument of every handler that
/// needs one, so that a request without valid credentials gets 401 before anything else,
/// and one past its user's (or node's) rate limit 429.
impl FromRequestParts<AppState> for Identity {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let verified = state.verify(parts).map_err(IntoResponse::into_response)?;
        state.learn_user(&verified).await;
        let identity = state
            .identify(verified)
            .map_err(IntoResponse::into_response)?;
        state
            .guard
            .admit(&identity)
            .map_err(IntoResponse::into_response)?;
        Ok(identity)
    }
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Labels come from a fixed set: a client inventing methods cannot grow the metrics.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("dora_api_requests_total", "method" => method, "status" => status)
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

pub(crate) fn json_response<T: serde::Serialize>(
    status: axum::http::StatusCode,
    value: &T,
) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    crate::error::add_status_headers(&mut response);
    response
}
