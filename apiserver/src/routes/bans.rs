//! `GET /v1/bans` lists the addresses this API server bans, `DELETE /v1/bans/{address}` lifts
//! one ban. Both are for administrators: Get or Delete on User in every zone and workspace.
//! A forwarding API server, which has bans of its own, asks with [`super::proxy::LOCATE`] whether its
//! caller may: the answer is 204 once authorized, and nothing is listed or lifted here.

use std::net::IpAddr;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dora_crds::Kind;
use dora_crds::spec::Verb;
use serde_json::json;

use super::json_response;
use super::params::{NoParams, Params};
use super::proxy::Locate;
use crate::guard::Bans;
use crate::state::AppState;
use crate::{ApiError, Identity};

pub(super) async fn list(
    identity: Identity,
    State(state): State<AppState>,
    Locate(located): Locate,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    state
        .service
        .authorize(&identity, Verb::Get, Kind::User, "", "")?;
    if located {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(listed(&state.guard.bans))
}

pub(super) async fn lift(
    identity: Identity,
    State(state): State<AppState>,
    Locate(located): Locate,
    path: Result<Path<String>, PathRejection>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    state
        .service
        .authorize(&identity, Verb::Delete, Kind::User, "", "")?;
    if located {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let Path(address) = path.map_err(crate::path::rejection)?;
    lifted(&state.guard.bans, &address, &identity.user)
}

/// The bans of `bans`, as `GET /v1/bans` answers them.
pub(crate) fn listed(bans: &Bans) -> Response {
    json_response(StatusCode::OK, &json!({"items": bans.list()}))
}

/// Lifts the ban of `address` (as the path gives it) for `user`.
pub(crate) fn lifted(bans: &Bans, address: &str, user: &str) -> Result<Response, ApiError> {
    let parsed: IpAddr = address.parse().map_err(|_| {
        let mut error = ApiError::bad_request(format!(
            "{address:?} is not an IP address; give one as `dora ban list` shows it"
        ));
        error.field = Some("address".into());
        error
    })?;
    if !bans.lift(parsed.to_canonical()) {
        return Err(ApiError::not_found(format!(
            "address {parsed} is not banned on this API server"
        )));
    }
    tracing::info!(address = %parsed, by = %user, "ban lifted");
    Ok(json_response(
        StatusCode::OK,
        &json!({"address": parsed, "lifted": true}),
    ))
}
