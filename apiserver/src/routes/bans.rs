//! `GET /v1/bans` lists the addresses this API server bans, `DELETE /v1/bans/{address}` lifts
//! one ban. Both are for administrators: Get or Delete on User in every zone and workspace.

use std::net::IpAddr;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use dora_crds::Kind;
use dora_crds::spec::Verb;
use serde_json::json;

use super::json_response;
use super::params::{NoParams, Params};
use crate::state::AppState;
use crate::{ApiError, Identity};

pub(super) async fn list(
    identity: Identity,
    State(state): State<AppState>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    state
        .service
        .authorize(&identity, Verb::Get, Kind::User, "", "")?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": state.guard.bans.list()}),
    ))
}

pub(super) async fn lift(
    identity: Identity,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Params(NoParams {}): Params<NoParams>,
) -> Result<Response, ApiError> {
    state
        .service
        .authorize(&identity, Verb::Delete, Kind::User, "", "")?;
    let Path(address) = path.map_err(crate::path::rejection)?;
    let parsed: IpAddr = address.parse().map_err(|_| {
        let mut error = ApiError::bad_request(format!(
            "{address:?} is not an IP address; give one as `dora ban list` shows it"
        ));
        error.field = Some("address".into());
        error
    })?;
    if !state.guard.bans.lift(parsed.to_canonical()) {
        return Err(ApiError::not_found(format!(
            "address {parsed} is not banned on this API server"
        )));
    }
    tracing::info!(address = %parsed, by = %identity.user, "ban lifted");
    Ok(json_response(
        StatusCode::OK,
        &json!({"address": parsed, "lifted": true}),
    ))
}
