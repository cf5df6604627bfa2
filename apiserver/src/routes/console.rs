//! The web console's sessions: log in with a token or a `dora console` login code (the
//! answer sets the session cookie), log out, and make a login code.

use axum::body::Body;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dora_crds::Kind;
use dora_crds::spec::Verb;
use serde::Deserialize;
use serde_json::json;

use super::params::{NoParams, Params};
use super::{json_response, read_text};
use crate::session::{self, Login};
use crate::state::AppState;
use crate::{ApiError, Identity, TokenClaims, issued};

/// The most places (zone and workspace) a session answer offers to switch to.
const MAX_PLACES: usize = 200;

/// Largest login request: a token is well under this.
const MAX_LOGIN_BYTES: usize = 16 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    token: Option<String>,
    code: Option<String>,
}

/// `POST /v1/console/login` with `{"token": ...}` or `{"code": ...}`: a session for the
/// token's (or code's) user in a cookie, and who that is. A refused token counts as a failed
/// authentication for the IP filter, as on any other route.
pub(super) async fn login(
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
    body: Body,
) -> Response {
    match log_in(&state, body).await {
        Ok(response) | Err(response) => response,
    }
}

async fn log_in(state: &AppState, body: Body) -> Result<Response, Response> {
    let text = read_text(body, MAX_LOGIN_BYTES)
        .await
        .map_err(IntoResponse::into_response)?;
    let request: LoginRequest = serde_json::from_str(&text).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"token\": \"...\"}} or {{\"code\": \"...\"}}: {e}"
        ))
        .into_response()
    })?;
    let login = match (request.token, request.code) {
        (Some(token), None) => {
            login_of_token(state, token.trim()).map_err(IntoResponse::into_response)?
        }
        (None, Some(code)) => state.login_codes.redeem(&code).ok_or_else(|| {
            ApiError::unauthorized(
                "this login link was used already or is older than 60 s; run `dora console` again",
            )
            .into_response()
        })?,
        _ => {
            return Err(
                ApiError::invalid("token", "give either a token or a login code").into_response(),
            );
        }
    };
    let claims = TokenClaims {
        zone: login.claims.zone,
        workspace: login.claims.workspace,
        node: None,
        join: false,
    };
    let issued = state
        .issue(&login.user, session::LIFETIME, claims)
        .await
        .map_err(IntoResponse::into_response)?;
    let verified = state
        .verified
        .verify(&state.tokens, &issued.token)
        .ok_or_else(|| ApiError::unauthorized("the new session does not verify").into_response())?;
    let identity = state
        .identify(verified)
        .map_err(IntoResponse::into_response)?;
    state
        .guard
        .admit(&identity)
        .map_err(IntoResponse::into_response)?;
    let cookie = session::set_cookie(&issued.token).map_err(IntoResponse::into_response)?;
    let mut response = json_response(StatusCode::OK, &whoami(state, &identity));
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// The login of a user's token; a node's or a join token is refused.
fn login_of_token(state: &AppState, token: &str) -> Result<Login, ApiError> {
    let verified = state.verified.verify(&state.tokens, token).ok_or_else(|| {
        ApiError::unauthorized(
            "this token is not valid or has expired; check that it was copied whole, or get a new one with `dora token create`",
        )
    })?;
    if verified.claims.node.is_some() || verified.claims.join {
        return Err(ApiError::unauthorized(
            "a node credential or join token cannot log in to the console; use a user's token",
        ));
    }
    let claims = verified.claims.clone();
    let identity = state.identify(verified)?;
    Ok(Login {
        user: identity.user,
        claims,
    })
}

/// `GET /v1/console/session`: who the session cookie logs in, or `{"user": null}` without a
/// session: the page asks this first, and a visitor not logged in is no failed authentication.
pub(super) async fn session(
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
    request: Parts,
) -> Response {
    let identity = match state.authenticate(&request) {
        Ok(identity) => identity,
        Err(_) => return json_response(StatusCode::OK, &json!({"user": null})),
    };
    match state.guard.admit(&identity) {
        Ok(()) => json_response(StatusCode::OK, &whoami(&state, &identity)),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /v1/console/logout`: revokes the session's token and clears its cookie.
pub(super) async fn logout(
    identity: Identity,
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::bad_request(
            "logout ends a console session (its cookie); revoke a token with `dora token revoke ID`",
        ));
    }
    if let Some(id) = &identity.token {
        issued::revoke(&state.service, &identity, id).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    Ok(response)
}

/// `POST /v1/console/codes`: a code that logs the caller in to the console once, within 60 s
/// (`dora console` opens `/ui/#login=CODE`; the fragment never reaches a server or its logs).
pub(super) async fn code(
    identity: Identity,
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    if identity.node.is_some() || identity.joining {
        return Err(ApiError::forbidden(
            "a node credential or join token cannot log in to the console",
        ));
    }
    let code = state.login_codes.create(Login {
        claims: TokenClaims {
            zone: identity.zone.clone(),
            workspace: identity.workspace.clone(),
            ..TokenClaims::default()
        },
        user: identity.user,
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"code": code, "expiresIn": session::CODE_LIFETIME.as_secs(), "path": format!("{}#login={code}", dora_console::PATH)}),
    ))
}

/// Who the session is, the places (zone and workspace) whose workloads it may read, which the
/// page offers to switch to, and the zones whose credit accounts it may read (the credits view
/// watches each; asking for another would be refused).
fn whoami(state: &AppState, identity: &Identity) -> serde_json::Value {
    let directory = &state.service.directory;
    let may = |kind: Kind, zone: &str, workspace: &str| {
        identity.system || directory.allows(&identity.user, Verb::Get, kind, zone, workspace)
    };
    let zones = directory.zones();
    let workspaces = directory.workspaces();
    let places: Vec<_> = zones
        .iter()
        .flat_map(|zone| workspaces.iter().map(move |workspace| (zone, workspace)))
        .filter(|(zone, workspace)| may(Kind::Workload, zone, workspace))
        .take(MAX_PLACES)
        .map(|(zone, workspace)| json!({"zone": zone, "workspace": workspace}))
        .collect();
    let credit_zones: Vec<&String> = zones
        .iter()
        .filter(|zone| may(Kind::Usercredit, zone, ""))
        .collect();
    json!({
        "user": identity.user,
        "zone": identity.zone,
        "workspace": identity.workspace,
        "places": places,
        "creditZones": credit_zones,
    })
}
