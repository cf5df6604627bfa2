use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::{TokenSpec, Verb};
use dora_store::Row;
use serde::Deserialize;
use serde_json::json;

use super::params::{NoParams, Params};
use super::{json_response, read_text};
use crate::state::AppState;
use crate::{ApiError, Identity, IssuedToken, TokenClaims, issued, render};

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
    /// Mints a join token for `zone`: new nodes exchange it for their own credential.
    join: Option<bool>,
}

pub(super) async fn create(
    identity: Identity,
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let text = read_text(body, state.options.max_body_bytes).await?;
    let request: TokenRequest = if text.trim().is_empty() {
        TokenRequest::default()
    } else {
        serde_json::from_str(&text)
            .map_err(|e| ApiError::bad_request(format!("invalid token request: {e}")))?
    };
    if request.node.is_some() || request.join == Some(true) {
        return agent_token(&state, &identity, request).await;
    }
    let user = request.user.unwrap_or_else(|| identity.user.clone());
    // Minting for someone else, or for longer than one's own token lasts, is an
    // administrator's act: it needs Token on User through a binding with zone and workspace All.
    let everywhere = issued::is_token_admin(&state.service, &identity);
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
        ..TokenClaims::default()
    };
    let issued = state.issue(&user, lifetime, claims).await?;
    Ok(json_response(StatusCode::CREATED, &issued))
}

/// A credential for one node's agent, or a join token that new nodes exchange for theirs;
/// minting either needs `Token` on Node in its zone.
async fn agent_token(
    state: &AppState,
    identity: &Identity,
    request: TokenRequest,
) -> Result<Response, ApiError> {
    let join = request.join == Some(true);
    if request.user.is_some() || request.workspace.is_some() || (join && request.node.is_some()) {
        return Err(ApiError::invalid(
            "node",
            "a node credential or join token belongs to no user or workspace, and a join token to no node; leave those out",
        ));
    }
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
    let issued = match request.node {
        Some(node) => node_credential(state, &zone, &node, lifetime).await?,
        None => {
            let claims = TokenClaims {
                zone: Some(zone.clone()),
                join: true,
                ..TokenClaims::default()
            };
            state
                .issue(&format!("join:{zone}"), lifetime, claims)
                .await?
        }
    };
    Ok(json_response(StatusCode::CREATED, &issued))
}

/// A credential for node `node` of `zone`.
pub(super) async fn node_credential(
    state: &AppState,
    zone: &str,
    node: &str,
    lifetime: Duration,
) -> Result<IssuedToken, ApiError> {
    dora_crds::validate_name("node", node)?;
    let claims = TokenClaims {
        zone: Some(zone.to_string()),
        node: Some(node.to_string()),
        ..TokenClaims::default()
    };
    state.issue(&format!("node:{node}"), lifetime, claims).await
}

/// The query of `GET /v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    /// Only the tokens of this subject (a user, `node:NAME`, `join:ZONE`).
    user: Option<String>,
    /// Most records in one answer.
    limit: Option<String>,
    /// Where the previous page ended, as its `metadata.continue` said.
    #[serde(rename = "continue")]
    after: Option<String>,
}

/// `GET /v1/tokens`: the records of the tokens the caller may manage: its own, and for an
/// administrator everyone's (node credentials and join tokens of the zones it may mint them
/// for), newest first, in pages.
pub(super) async fn list(
    identity: Identity,
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let mut rows: Vec<Row> = state
        .service
        .objects(Kind::Token)
        .await?
        .into_iter()
        .filter(|row| {
            dora_crds::decode::<TokenSpec>(&row.resource).is_ok_and(|spec| {
                params.user.as_ref().is_none_or(|user| *user == spec.user)
                    && issued::may_manage(&state.service, &identity, &spec)
            })
        })
        .collect();
    rows.sort_by_key(|row| (std::cmp::Reverse(row.created), row.key.name.clone()));
    let limit = super::parse_limit(params.limit.as_deref(), super::MAX_PAGE, super::MAX_PAGE)?;
    let start = match params.after.as_deref() {
        None => 0,
        Some(after) => after.parse::<usize>().map_err(|_| {
            ApiError::invalid(
                "continue",
                "not a continue token of this list; list again from the start",
            )
        })?,
    };
    let page: Vec<_> = rows
        .iter()
        .skip(start)
        .take(limit)
        .map(render::resource)
        .collect();
    let next = (start + page.len() < rows.len()).then(|| (start + page.len()).to_string());
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": dora_crds::API_VERSION,
            "kind": "TokenList",
            "metadata": {"continue": next},
            "items": page,
        }),
    ))
}

/// `GET /v1/tokens/{id}`: one token's record, to those who may manage it.
pub(super) async fn one(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    let (row, spec) = issued::read(&state.service, &id).await?;
    if !issued::may_manage(&state.service, &identity, &spec) {
        return Err(ApiError::object_not_found(&row.key));
    }
    Ok(json_response(StatusCode::OK, &render::resource(&row)))
}

/// `DELETE /v1/tokens/{id}`: revokes the token on every API server; its record stays, saying
/// when and by whom, until the token would have expired.
pub(super) async fn revoke(
    identity: Identity,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    let row = issued::revoke(&state.service, &identity, &id).await?;
    Ok(json_response(StatusCode::OK, &render::resource(&row)))
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
    identity: Identity,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &json!({"user": identity.user, "zone": identity.zone, "workspace": identity.workspace}),
    ))
}
