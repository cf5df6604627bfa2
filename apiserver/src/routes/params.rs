//! Query parameters. Every request declares the parameters it takes (a struct with
//! `deny_unknown_fields`); any other parameter is refused with 400 naming it and those
//! accepted, so that a typo or an unsupported option is never silently ignored.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::Uri;
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The query parameters of a request, as `T`.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse(&parts.uri).map(Params)
    }
}

/// For requests that take no query parameters.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParams {}

/// Reads the query of `uri` as `T`, for handlers whose parameters depend on the path.
pub(crate) fn parse<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(params)| params)
        .map_err(rejection)
}

/// serde words an unknown field as "x: unknown field `x`, expected one of `a`, `b`" (or
/// "there are no fields"); this says the same of query parameters.
fn rejection(e: QueryRejection) -> ApiError {
    let text = e.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    let Some((_, rest)) = detail.split_once("unknown field ") else {
        return ApiError::bad_request(format!("invalid query string: {detail}"));
    };
    let message = match rest.split_once(", ") {
        Some((name, "there are no fields")) => {
            format!("unknown query parameter {name}: this request takes no query parameters")
        }
        Some((name, expected)) => format!(
            "unknown query parameter {name}: this request takes {}",
            expected.trim_start_matches("expected ")
        ),
        None => format!("unknown query parameter {rest}"),
    };
    ApiError::bad_request(message)
}
