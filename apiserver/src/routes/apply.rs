use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::params::Params;
use super::{flag, json_response, read_text};
use crate::state::AppState;
use crate::{ApiError, Identity};

/// The largest manifest applied without waiting for a turn (see `State::manifests`).
const SMALL_MANIFEST: usize = 64 << 10;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyParams {
    /// The zone of documents that name none (default: the caller's).
    zone: Option<String>,
    /// The workspace of documents that name none (default: the caller's).
    workspace: Option<String>,
    /// Check every document as an apply does and answer what it would write (each result's
    /// `dryRun`: the stored spec and the applied one), writing nothing.
    #[serde(rename = "dryRun")]
    #[schemars(with = "Option<bool>")]
    dry_run: Option<String>,
}

/// `POST /v1/apply`: a multi-document YAML or JSON manifest. Answers 200 with one result per
/// document when all applied; otherwise the status of the first failure, its error, and the
/// results of every document (the valid ones are applied).
pub(super) async fn apply(
    mut identity: Identity,
    State(state): State<AppState>,
    Params(params): Params<ApplyParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if params.zone.is_some() {
        identity.zone = params.zone;
    }
    if params.workspace.is_some() {
        identity.workspace = params.workspace;
    }
    // Large manifests take turns, so that many at once cannot take much memory; a small one
    // cannot cost much (the YAML parser bounds what aliases expand to).
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|length| length <= SMALL_MANIFEST);
    let _turn = if small {
        None
    } else {
        Some(state.manifests.acquire().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ShuttingDown",
                "the server is shutting down; apply again",
            )
        })?)
    };
    let dry_run = flag(params.dry_run.as_deref())?;
    let text = read_text(body, state.options.max_body_bytes).await?;
    let results = state
        .service
        .apply_manifest(&identity, &text, dry_run)
        .await;
    if results.is_empty() {
        return Err(ApiError::bad_request("the manifest holds no documents"));
    }
    let mut first_error: Option<ApiError> = None;
    let rendered: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| match result {
            Ok(applied) => json!(applied),
            Err(error) => {
                let value = json!({"index": index, "error": &error});
                first_error.get_or_insert(error);
                value
            }
        })
        .collect();
    Ok(match first_error {
        None => json_response(StatusCode::OK, &json!({"results": rendered})),
        Some(error) => json_response(
            error.status,
            &json!({"error": error, "status": error.status.as_u16(), "results": rendered}),
        ),
    })
}
