use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::Verb;
use serde::Deserialize;
use serde_json::json;

use super::{json_response, read_text};
use crate::state::AppState;
use crate::{ApiError, Identity, TokenClaims};

const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenRequest {
    /// Defaults to the caller.
    user: Option<String>,
    /// `<n>s|m|h|d`.
    expires_in: Option<String>,
    zone: Option<String>,
    workspace: Option<String>,
    /// Mints a node credential for this node of `zone` instead of a user token.
    node: Option<String>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    let text = read_text(body, state.options.max_body_bytes).await?;
    let request: TokenRequest = if text.trim().is_empty() {
        TokenRequest::default()
    } else {
        serde_json::from_str(&text)
            .map_err(|e| ApiError::bad_request(format!("invalid token request: {e}")))?
    };
    if request.node.is_some() {
        return node_token(&state, &identity, request);
    }
    let user = request.user.unwrap_or_else(|| identity.user.clone());
    // Minting for someone else, or for longer than one's own token lasts, is an
    // administrator's act: it needs Token on User through a binding with zone and workspace All.
    let everywhere = identity.system
        || state
            .service
            .directory
            .allows(&identity.user, Verb::Token, Kind::User, "All", "All");
    if user != identity.user && !everywhere {
        return Err(ApiError::forbidden(format!(
            "user {} may only create tokens for itself; minting for {user} needs Token on User in all zones and workspaces",
            identity.user
        )));
    }
    if !state.service.directory.has_user(&user) {
        return Err(ApiError::invalid(
            "user",
            format!("no user {user:?}; apply a User first"),
        ));
    }
    let mut lifetime = lifetime(request.expires_in.as_deref(), &state)?;
    if !everywhere && let Some(expires) = identity.expires {
        // A token may not outlive the one that minted it.
        let left = expires.saturating_sub(crate::token::now_secs());
        if left == 0 {
            return Err(ApiError::unauthorized(
                "your token expires now; log in again before creating another",
            ));
        }
        lifetime = lifetime.min(Duration::from_secs(left));
    }
    let claims = TokenClaims {
        zone: request.zone,
        workspace: request.workspace,
        node: None,
    };
    let issued = state
        .tokens
        .issue(&user, lifetime, claims)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", e.to_string()))?;
    Ok(json_response(StatusCode::CREATED, &issued))
}

/// A credential for one node's agent; minting it needs `Token` on Node in its zone.
fn node_token(
    state: &AppState,
    identity: &Identity,
    request: TokenRequest,
) -> Result<Response, ApiError> {
    let node = request.node.unwrap_or_default();
    if request.user.is_some() || request.workspace.is_some() {
        return Err(ApiError::invalid(
            "node",
            "a node credential belongs to no user or workspace; leave out user and workspace",
        ));
    }
    dora_crds::validate_name("node", &node)?;
    let zone = request
        .zone
        .or_else(|| identity.zone.clone())
        .ok_or_else(|| ApiError::invalid("zone", "name the node's zone"))?;
    if !state.service.directory.has_zone(&zone) {
        return Err(ApiError::invalid("zone", format!("unknown zone {zone:?}")));
    }
    state
        .service
        .authorize(identity, Verb::Token, Kind::Node, &zone, "")?;
    let lifetime = lifetime(request.expires_in.as_deref(), state)?;
    let claims = TokenClaims {
        zone: Some(zone),
        workspace: None,
        node: Some(node.clone()),
    };
    let issued = state
        .tokens
        .issue(&format!("node:{node}"), lifetime, claims)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal", e.to_string()))?;
    Ok(json_response(StatusCode::CREATED, &issued))
}

/// The requested lifetime (`expiresIn`), or the default; at most the configured maximum.
fn lifetime(expires_in: Option<&str>, state: &AppState) -> Result<Duration, ApiError> {
    let lifetime = match expires_in {
        None => DEFAULT_LIFETIME,
        Some(text) => dora_crds::Duration::parse(text)
            .map(|d| d.0)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ApiError::invalid(
                    "expiresIn",
                    format!("expected a duration like 12h or 30d, got {text:?}"),
                )
            })?,
    };
    if lifetime > state.options.max_token_lifetime {
        return Err(ApiError::invalid(
            "expiresIn",
            format!(
                "at most {} days",
                state.options.max_token_lifetime.as_secs() / 86_400
            ),
        ));
    }
    Ok(lifetime)
}

pub(super) async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let identity = state.authenticate(&headers)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"user": identity.user, "zone": identity.zone, "workspace": identity.workspace}),
    ))
}
